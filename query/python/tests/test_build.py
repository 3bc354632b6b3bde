"""familiar.build_index against the CLI's build of the same corpus, its interruption and resumption,
and its bad input."""

import json
from pathlib import Path

import pytest

import familiar

ROOT = Path(__file__).resolve().parents[3]
CORPUS = [ROOT / "fixtures" / "corpus" / "part-0000.jsonl.zst", ROOT / "fixtures" / "corpus" / "part-0001.jsonl.gz"]
TOKENIZER = ROOT / "fixtures" / "tokenizer.json"


def shard_checksums(index_dir: Path):
    m = json.loads((index_dir / "manifest.json").read_text())
    return [s["manifest_checksum"] for s in m["shards"]]


def test_build_equals_the_cli_build(index_dir, tmp_path):
    out = tmp_path / "py-idx"
    events = []
    r = familiar.build_index(CORPUS, tokenizer=TOKENIZER, out=out, shard_tokens=150000,
                             progress=lambda *e: events.append(e))
    assert r["documents"] == 1200 and r["shards_built"] > 1 and not r["already_complete"]
    assert shard_checksums(out) == shard_checksums(index_dir)
    kinds = [e[0] for e in events]
    assert "read" in kinds and "sorting" in kinds and kinds[-1] == "done"
    reads = [e for e in events if e[0] == "read"]
    assert reads[-1][1] == reads[-1][2] == sum(p.stat().st_size for p in CORPUS)
    again = familiar.build_index(CORPUS, tokenizer=TOKENIZER, out=out, shard_tokens=150000, progress=False)
    assert again["already_complete"]
    assert familiar.Index(out).count(" Zelxir Exoexo") == 512


def test_an_interrupted_build_keeps_nothing_half_written_and_resumes(index_dir, tmp_path):
    out = tmp_path / "stopped"

    def stop(kind, *rest):
        if kind == "read":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        familiar.build_index(CORPUS, tokenizer=TOKENIZER, out=out, shard_tokens=150000, progress=stop)
    assert not (out / "manifest.json").exists()
    with pytest.raises(familiar.IndexIOError, match="not finished"):
        familiar.Index(out)
    r = familiar.build_index(CORPUS, tokenizer=TOKENIZER, out=out, shard_tokens=150000, progress=False)
    assert r["documents"] == 1200
    assert shard_checksums(out) == shard_checksums(index_dir)


def test_bad_build_input(tmp_path):
    with pytest.raises(familiar.ConfigError):
        familiar.build_index(CORPUS, tokenizer=TOKENIZER, out=tmp_path / "a", shard_tokens=0, progress=False)
    with pytest.raises(familiar.FamiliarError):
        familiar.build_index([tmp_path / "missing.jsonl"], tokenizer=TOKENIZER, out=tmp_path / "b", progress=False)
    with pytest.raises(familiar.FamiliarError, match="none.json"):
        familiar.build_index(CORPUS, tokenizer=tmp_path / "none.json", out=tmp_path / "c", progress=False)
    with pytest.raises(familiar.ConfigError):
        familiar.build_index([], tokenizer=TOKENIZER, out=tmp_path / "d", progress=False)
