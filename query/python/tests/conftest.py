"""Shared fixtures: the fixture corpus indexed by the `familiar` CLI (FAMILIAR_BIN, or the
workspace's target/debug/familiar, or CARGO_TARGET_DIR's)."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def familiar_bin() -> str:
    if os.environ.get("FAMILIAR_BIN"):
        return os.environ["FAMILIAR_BIN"]
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    path = target / "debug" / "familiar"
    if not path.exists():
        pytest.skip(f"no familiar binary at {path} (build it, or set FAMILIAR_BIN)")
    return str(path)


def cli(*args: str) -> str:
    out = subprocess.run([familiar_bin(), *args], check=True, capture_output=True, text=True)
    return out.stdout


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("index") / "idx"
    corpus = ROOT / "fixtures" / "corpus"
    cli(
        "index", "build", "--quiet",
        "--tokenizer", str(ROOT / "fixtures" / "tokenizer.json"),
        "--shard-tokens", "150000",
        "--out", str(out),
        str(corpus / "part-0000.jsonl.zst"), str(corpus / "part-0001.jsonl.gz"),
    )
    return out


