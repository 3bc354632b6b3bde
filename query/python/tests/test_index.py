"""The Python package against brute force over the documents' own tokens and against the CLI.

Needs the `familiar` binary (FAMILIAR_BIN, or target/debug/familiar of the workspace, or of
CARGO_TARGET_DIR) to build the fixture index; `.ci/run` builds both.
"""

import json
import os
import random
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import familiar
from conftest import cli

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def index(index_dir) -> familiar.Index:
    return familiar.Index(index_dir)


@pytest.fixture(scope="session")
def docs(index):
    """Every document's tokens: the brute-force oracle's corpus."""
    return [index.doc_tokens(d) for d in range(index.num_documents)]


def brute_count(docs, pattern):
    n = len(pattern)
    return sum(1 for d in docs for i in range(len(d) - n + 1) if d[i:i + n] == pattern)


def patterns(docs, k, seed=5):
    rng = random.Random(seed)
    out = []
    while len(out) < k:
        d = docs[rng.randrange(len(docs))]
        if len(d) < 6:
            continue
        n = rng.randint(1, 5)
        i = rng.randrange(len(d) - n + 1)
        out.append(d[i:i + n])
    return out


def test_properties(index, docs):
    assert index.shards > 1
    assert index.num_documents == len(docs) == 1200
    assert index.num_tokens == sum(len(d) for d in docs)
    assert index.num_positions == index.num_tokens + index.num_documents
    assert index.tokenizer_hash.startswith("xxh3:")
    info = json.loads(cli("index", "info", str(index.path), "--json"))
    assert info["documents"] == index.num_documents
    assert "1200 documents" in repr(index)


def test_count_matches_brute_force_and_the_cli(index, docs):
    for p in patterns(docs, 40):
        assert index.count(tokens=p) == brute_count(docs, p), p
    text = " Zelxir Exoexo"
    want = json.loads(cli("count", str(index.path), text, "--json"))["count"]
    assert index.count(text) == want > 0
    assert index.count(index.tokenize(text)) == want
    assert index.decode(index.tokenize(text)) == text


def test_count_many_lists_and_arrays(index, docs):
    ps = patterns(docs, 200, seed=9) + [[1, 2, 3, 4, 5]]
    want = np.array([index.count(tokens=p) for p in ps], dtype=np.uint64)
    got = index.count_many(ps)
    assert got.dtype == np.uint64 and (got == want).all()
    threes = [p for p in patterns(docs, 300, seed=3) if len(p) == 3]
    arr = np.array(threes, dtype=np.int64)
    assert (index.count_many(arr) == np.array([brute_count(docs, p) for p in threes])).all()
    assert index.count_many([" Zelxir", [5]]).tolist() == [index.count(" Zelxir"), index.count(tokens=[5])]
    assert index.count_many(np.zeros((0, 3), dtype=np.int32)).shape == (0,)
    assert index.count_many([]).shape == (0,)


def test_count_many_in_chunks_equals_one_call(index, docs, monkeypatch):
    ps = patterns(docs, 101, seed=21)
    threes = np.array([p for p in patterns(docs, 200, seed=22) if len(p) == 3], dtype=np.int32)
    whole = index.count_many(ps), index.count_many(threes)
    monkeypatch.setattr(familiar, "COUNT_CHUNK", 7)  # 101 and len(threes) are not multiples of 7
    chunked = index.count_many(ps), index.count_many(threes)
    assert (chunked[0] == whole[0]).all() and (chunked[1] == whole[1]).all()
    assert (chunked[1] == np.array([brute_count(docs, list(p)) for p in threes])).all()
    assert chunked[0].shape == (101,) and chunked[0].dtype == np.uint64
    # a bad query in a later chunk is named by its place in the whole list
    with pytest.raises(familiar.QueryError, match=r"queries\[50\]"):
        index.count_many(ps[:50] + [[-1]])


def test_locate_pages_through_every_occurrence(index, docs):
    p = patterns(docs, 1, seed=11)[0]
    total = brute_count(docs, p)
    seen = []
    offset = 0
    while True:
        page = index.locate(tokens=p, offset=offset, limit=7)
        assert page["total"] == total
        if not page["hits"]:
            break
        for h in page["hits"]:
            d = docs[h["doc_id"]]
            assert d[h["offset_in_doc"]:h["offset_in_doc"] + len(p)] == p
        seen += [(h["doc_id"], h["offset_in_doc"]) for h in page["hits"]]
        offset += 7
    assert len(set(seen)) == total


def test_ntd_prob_and_infgram(index, docs):
    for p in patterns(docs, 15, seed=13):
        nxt = Counter()
        eod = 0
        n = len(p)
        for d in docs:
            for i in range(len(d) - n + 1):
                if d[i:i + n] == p:
                    if i + n < len(d):
                        nxt[d[i + n]] += 1
                    else:
                        eod += 1
        r = index.ntd(tokens=p)
        assert r["prefix_count"] == brute_count(docs, p)
        assert r["end_of_document"] == eod
        assert {e["token_id"]: e["count"] for e in r["next"]} == dict(nxt)
        counts = [e["count"] for e in r["next"]]
        assert counts == sorted(counts, reverse=True)
        t, c = nxt.most_common(1)[0] if nxt else (p[0], 0)
        pr = index.prob(tokens=p, next_id=t)
        assert pr["count"] == c and pr["prefix_count"] == r["prefix_count"]
        assert pr["probability"] == pytest.approx(c / r["prefix_count"])
    # The ∞-gram: the longest suffix of the prompt that occurs.
    prompt = [1, 2, 3, 999] + patterns(docs, 1, seed=17)[0]
    r = index.infgram_prob(tokens=prompt, next_id=prompt[-1])
    k = r["suffix_len"]
    assert k >= 1 and brute_count(docs, prompt[len(prompt) - k:]) == r["prompt_cnt"] > 0
    if k < len(prompt):
        assert brute_count(docs, prompt[len(prompt) - k - 1:]) == 0
    assert r["cont_cnt"] == brute_count(docs, prompt[len(prompt) - k:] + [prompt[-1]])
    d = index.infgram_ntd(tokens=prompt)
    assert d["suffix_len"] == k and d["prefix_count"] == r["prompt_cnt"]


def test_cnf_matches_brute_force(index, docs):
    a, b, c = patterns(docs, 3, seed=19)
    r = index.cnf([[a, b], [c]], list_documents=1000)

    def has(d, p):
        return any(d[i:i + len(p)] == p for i in range(len(d) - len(p) + 1))

    matching = [i for i, d in enumerate(docs) if (has(d, a) or has(d, b)) and has(d, c)]
    assert r["documents"] == len(matching)
    assert r["doc_ids"] == matching
    assert r["approximate"] is False and r["estimate"] is None
    cnf_text = index.cnf([[" Zelxir Exoexo", " Zeloxaquo Quiexozel"], [" Vexiquzyn Qenzor"]])
    out = cli("cnf", str(index.path), "--clause", " Zelxir Exoexo| Zeloxaquo Quiexozel",
              "--clause", " Vexiquzyn Qenzor", "--json")
    assert cnf_text["documents"] == json.loads(out)["documents"]


def test_documents_and_doc(index, docs):
    t = index.documents()
    assert isinstance(t, pa.Table)
    assert t.num_rows == index.num_documents
    assert t.column("doc_id").to_pylist() == list(range(index.num_documents))
    assert t.column("token_count").to_pylist() == [len(d) for d in docs]
    d = index.doc(37)
    assert d["doc_id"] == 37 and d["token_count"] == len(docs[37])
    assert d["text"] == index.decode(docs[37])
    assert [x["doc_id"] for x in index.docs([3, 1])] == [3, 1]
    assert t.to_pandas().shape[0] == index.num_documents if _has("pandas") else True


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def test_trace_spans_are_maximal_and_counted(index, docs):
    body = index.decode(docs[41][:120])
    text = body + " qqzx vvq " + body
    spans, documents = index.trace(text, min_len=4, all_spans=True, docs_per_span=3)
    assert isinstance(spans, pa.Table) and spans.num_rows >= 2
    tokens = index.tokenize(text)
    for s in spans.to_pylist():
        p = tokens[s["start"]:s["end"]]
        assert s["end"] - s["start"] >= 4
        assert s["count"] == brute_count(docs, p)
        if s["start"] > 0:
            assert brute_count(docs, tokens[s["start"] - 1:s["end"]]) == 0
        if s["end"] < len(tokens):
            assert brute_count(docs, tokens[s["start"]:s["end"] + 1]) == 0
    assert 41 in documents.column("doc_id").to_pylist()
    cli_rows = [json.loads(l) for l in cli(
        "trace", str(index.path), "--text", text, "--min-len", "4", "--all-spans",
        "--docs-per-span", "3", "--format", "jsonl").splitlines()]
    assert [(r["start"], r["end"], r["count"]) for r in cli_rows] == [
        (s["start"], s["end"], s["count"]) for s in spans.to_pylist()]


def test_trace_ranking_and_delimiters_as_the_cli(index, docs):
    body = index.decode(docs[41][:120])
    text = body + " qqzx vvq " + body
    tokens = index.tokenize(text)
    # A delimiter: the text of a token that occurs inside the document's spans.
    delimiter = next(d for d in (index.decode([t]).strip() for t in tokens[30:]) if d)
    spans, _ = index.trace(text, min_len=2, max_count=1000, max_span_density=0.3,
                           docs_per_span=0, bm25=False, ranking="length", delimiters=[delimiter])
    rows = spans.to_pylist()
    assert rows
    for s in rows:
        inner = tokens[s["start"]:s["end"] - 1]
        assert all(delimiter not in index.decode([t]) for t in inner), s
    cli_rows = [json.loads(l) for l in cli(
        "trace", str(index.path), "--text", text, "--min-len", "2", "--max-count", "1000",
        "--max-span-density", "0.3", "--docs-per-span", "0", "--no-bm25", "--ranking", "length",
        "--delimiter", delimiter, "--format", "jsonl").splitlines()]
    assert [(r["start"], r["end"]) for r in cli_rows] == [(s["start"], s["end"]) for s in rows]
    # The defaults (rarest first, no delimiters) trace the same text too.
    plain, _ = index.trace(text, min_len=2, max_count=1000, max_span_density=0.3,
                           docs_per_span=0, bm25=False)
    assert plain.num_rows > 0
    with pytest.raises(familiar.QueryError, match="ranking"):
        index.trace(text, ranking="shortest")
    with pytest.raises(TypeError):
        index.trace(text, delimiters=".")


def test_bad_input_raises_clear_exceptions(index, index_dir, tmp_path):
    with pytest.raises(familiar.QueryError, match="not a token id"):
        index.count(tokens=[-1])
    with pytest.raises(familiar.QueryError, match="not a token id"):
        index.count(tokens=[index.vocab_size])
    with pytest.raises(TypeError):
        index.count(tokens="abc")
    with pytest.raises(TypeError):
        index.count(tokens=[1.5])
    with pytest.raises(TypeError):
        index.count()
    with pytest.raises(familiar.QueryError):
        index.count(tokens=[])
    with pytest.raises(familiar.QueryError):
        index.count_many(np.array([[0, index.vocab_size]]))
    with pytest.raises(TypeError):
        index.count_many(np.array([0.5, 1.5]))
    with pytest.raises(familiar.QueryError, match="no document"):
        index.doc(10**9)
    with pytest.raises(familiar.QueryError, match="exactly one"):
        index.prob(" Zelxir", " Zelxir Exoexo")
    with pytest.raises(familiar.IndexIOError, match="not an index directory"):
        familiar.Index(tmp_path)
    with pytest.raises(TypeError):
        familiar.Index(5)
    # A corrupt index: a truncated suffix array fails to open, naming the file.
    broken = tmp_path / "broken"
    shutil.copytree(index_dir, broken)
    sa = next(broken.glob("shard-*/suffix_array.bin"))
    with open(sa, "r+b") as f:
        f.truncate(sa.stat().st_size // 2)
    with pytest.raises(familiar.CorruptIndex, match="suffix_array.bin"):
        familiar.Index(broken)
    assert issubclass(familiar.CorruptIndex, familiar.FamiliarError)
    with pytest.raises(familiar.QueryError, match="min_len= 0"):
        index.trace("some text here", min_len=0)


def test_closed_and_deleted_indexes(index_dir, tmp_path):
    with familiar.Index(index_dir) as ix:
        n = ix.count(" Zelxir")
    assert ix.closed and "closed" in repr(ix)
    for call in (lambda: ix.count(" Zelxir"), lambda: ix.num_tokens, lambda: ix.doc(0),
                 lambda: familiar.sql("SELECT 1", index=ix) and ix._native,
                 lambda: familiar.concepts.count(ix, [{"concept": "zelxir"}], progress=False)):
        with pytest.raises(familiar.IndexIOError, match="closed"):
            call()
    # An index whose directory is deleted while open answers from its memory maps, or fails
    # with an exception (never a crash).
    copy = tmp_path / "copy"
    shutil.copytree(index_dir, copy)
    ix = familiar.Index(copy)
    ids = familiar.Index(index_dir).tokenize(" Zelxir")
    shutil.rmtree(copy)
    assert ix.count(tokens=ids) == n
    for call in (lambda: ix.count(" Zelxir"), lambda: ix.doc(3), lambda: ix.documents(), lambda: ix.trace("Zelxir Exoexo ve tiriwe"),
                 lambda: ix.locate(" Zelxir", limit=3), lambda: familiar.Index(copy)):
        try:
            call()
        except familiar.FamiliarError as e:
            assert str(copy) in str(e) or "copy" in str(e), e
