"""familiar.compat.InfiniGramEngine against infini-gram's own answers on the golden index, recorded
by fixtures/infini_gram/record.py (so no infini-gram is needed here), and live where installed."""

import json
from pathlib import Path

import pytest

from familiar.compat import InfiniGramEngine

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "fixtures" / "golden-v1"
EXPECTED = json.loads((ROOT / "fixtures" / "infini_gram" / "expected.json").read_text())


@pytest.fixture(scope="module")
def engine():
    return InfiniGramEngine(index_dir=str(GOLDEN), eos_token_id=2047, vocab_size=65535)


def same_distribution(got, want):
    assert got["prompt_cnt"] == want["prompt_cnt"]
    assert got["approx"] is False
    w = {int(k): v for k, v in want["result_by_token_id"].items()}
    assert set(got["result_by_token_id"]) == set(w)
    for t, v in got["result_by_token_id"].items():
        assert v["cont_cnt"] == w[t]["cont_cnt"]
        assert v["prob"] == pytest.approx(w[t]["prob"])


def test_counts_and_probabilities(engine):
    for case in EXPECTED["count"]:
        assert engine.count(input_ids=case["input_ids"]) == case["result"], case
    for case in EXPECTED["prob"]:
        got = engine.prob(prompt_ids=case["prompt_ids"], cont_id=case["cont_id"])
        want = case["result"]
        assert (got["prompt_cnt"], got["cont_cnt"]) == (want["prompt_cnt"], want["cont_cnt"]), case
        assert got["prob"] == pytest.approx(want["prob"])
    for case in EXPECTED["infgram_prob"]:
        got = engine.infgram_prob(prompt_ids=case["prompt_ids"], cont_id=case["cont_id"])
        want = case["result"]
        assert got["suffix_len"] == want["suffix_len"], case
        assert (got["prompt_cnt"], got["cont_cnt"]) == (want["prompt_cnt"], want["cont_cnt"]), case
        assert got["prob"] == pytest.approx(want["prob"])


def test_distributions(engine):
    for case in EXPECTED["ntd"]:
        same_distribution(engine.ntd(prompt_ids=case["prompt_ids"], max_support=10), case["result"])
    for case in EXPECTED["infgram_ntd"]:
        got = engine.infgram_ntd(prompt_ids=case["prompt_ids"])
        assert got["suffix_len"] == case["result"]["suffix_len"]
        same_distribution(got, case["result"])


def test_cnf(engine):
    for case in EXPECTED["count_cnf"]:
        assert engine.count_cnf(cnf=case["cnf"]) == case["result"], case


def test_documents(engine):
    for case in EXPECTED["get_doc_by_ix"]:
        got = engine.get_doc_by_ix(doc_ix=case["doc_ix"], max_disp_len=1000)
        for k, v in case["result"].items():
            assert got[k] == v, (k, case["doc_ix"])
    for case in EXPECTED["search_docs"]:
        got = engine.search_docs(input_ids=case["input_ids"], maxnum=3, max_disp_len=20)
        assert got["cnt"] == case["cnt"] and got["approx"] is False
        # infini-gram samples occurrences; familiar lists the first ones: the same documents hold them.
        assert {d["doc_ix"] for d in got["documents"]} <= set(range(engine.get_total_doc_cnt()))
        for d in got["documents"]:
            ids = case["input_ids"]
            assert d["token_ids"][:len(ids)] == ids
    # find → get_doc_by_rank, attribute → get_doc_by_ptr: this engine's own positions round-trip.
    ids = EXPECTED["count"][0]["input_ids"]
    found = engine.find(input_ids=ids)
    assert found["cnt"] == engine.count(input_ids=ids)["count"]
    for s, (a, b) in enumerate(found["segment_by_shard"]):
        for rank in range(a, b):
            d = engine.get_doc_by_rank(s=s, rank=rank, max_disp_len=len(ids))
            assert d["token_ids"] == ids


def test_attribute(engine):
    for case in EXPECTED["attribute"]:
        got = engine.attribute(input_ids=case["input_ids"], delim_ids=[], min_len=case["min_len"],
                               max_cnt=case["max_cnt"], enforce_bow=False)
        spans = [{k: s[k] for k in ("l", "r", "length", "count")} for s in got["spans"]]
        assert spans == case["spans"], case
        for s in got["spans"]:
            for doc in s["docs"]:
                d = engine.get_doc_by_ptr(s=doc["s"], ptr=doc["ptr"], max_disp_len=s["length"])
                assert d["token_ids"] == case["input_ids"][s["l"]:s["r"]]


def test_errors_are_infini_gram_shaped(engine):
    assert "error" in engine.count(input_ids=[-1])
    assert "error" in engine.count(input_ids="abc")
    assert "error" in engine.prob(prompt_ids=[1], cont_id=10**9)
    assert "error" in engine.count_cnf(cnf=[])
    assert "error" in engine.get_doc_by_rank(s=99, rank=0)
    assert "error" in engine.get_doc_by_ix(doc_ix=10**6)


def test_live_infini_gram_if_installed(engine, tmp_path):
    ig = pytest.importorskip("infini_gram.engine", reason="infini-gram is not installed")
    import subprocess, sys
    subprocess.run([sys.executable, str(ROOT / "fixtures" / "infini_gram" / "record.py"), "--out",
                    str(tmp_path / "live.json")], check=True)
    live = json.loads((tmp_path / "live.json").read_text())
    assert live == EXPECTED
