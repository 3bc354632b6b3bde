"""familiar.models and familiar.attribution against the reference implementation's answers
(transformers, recorded in fixtures/models/reference/expected.json), against each other, and
against the CLI on the same inputs."""

import json
import math
import os
import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import familiar
from familiar import attribution, models
from conftest import cli

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = ROOT / "fixtures" / "models" / "reference"
TRAINED = ROOT / "fixtures" / "models" / "fixture-gpt2"
QUERIES = ROOT / "fixtures" / "attribution" / "queries.jsonl"


@pytest.fixture(scope="module")
def trained():
    return models.Model(TRAINED)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_scores_equal_the_reference_implementation():
    expected = json.loads((REFERENCE / "expected.json").read_text())["models"]["gpt2-fixture-vocab"]["scores"]
    lm = models.Model(REFERENCE / "gpt2-fixture-vocab")
    t = models.score(lm, [{"prompt": s["prompt"], "completion": s["completion"]} for s in expected], progress=False)
    assert t.num_rows == len(expected)
    for row, s in zip(t.to_pylist(), expected):
        assert row["logprob"] == pytest.approx(s["logprob"], abs=1e-4), s
        assert row["n_tokens"] == s["n_tokens"]
        assert row["greedy_match"] == s["greedy"]
        assert row["kind"] == "completion"


def test_scores_of_a_list_equal_the_cli_on_the_same_file(trained, tmp_path):
    items = [
        {"id": "capital", "prompt": "The capital of Yaciljun is", "completion": " navneli"},
        {"id": "mc", "prompt": "The capital of Yaciljun is", "choices": [" orgadori", " navneli", " ve"], "answer": 1},
    ]
    path = write_jsonl(tmp_path / "items.jsonl", items)
    cli("score", "--model", str(TRAINED), "--items", str(path), "--out", str(tmp_path / "cli.parquet"), "-q")
    expected = pq.read_table(tmp_path / "cli.parquet").to_pylist()
    got = models.score(trained, items, progress=False).to_pylist()
    from_file = models.score(str(TRAINED), path, progress=False).to_pylist()
    assert from_file == expected
    for g, e in zip(got, expected):
        e = dict(e, task="items")  # a list's items are named after the list, a file's after it
        assert g == e
    # a choice's log-probability is that of the completion it would be
    mc = got[1]
    for choice, lp in zip(items[1]["choices"], mc["choice_logprobs"]):
        (alone,) = models.score(trained, [{"prompt": items[1]["prompt"], "completion": choice}], progress=False).to_pylist()
        assert lp == pytest.approx(alone["logprob"], abs=1e-5)
    assert mc["predicted"] == max(range(3), key=lambda i: mc["choice_logprobs"][i])
    assert mc["acc"] == (mc["predicted"] == 1)


def test_keyword_probabilities_are_the_completions_scores(trained):
    rows = [
        {"context": "The capital of Yaciljun is", "keyword": " navneli"},
        {"context": "Yarca was born in", "keyword": " orgadori"},
    ]
    events = []
    t = models.keyword_prob(trained, rows, progress=lambda *e: events.append(e)).to_pylist()
    s = models.score(trained, [{"prompt": r["context"], "completion": r["keyword"]} for r in rows], progress=False).to_pylist()
    for k, c in zip(t, s):
        assert k["logprob"] == pytest.approx(c["logprob"], abs=1e-5)
        assert k["prob"] == pytest.approx(math.exp(c["logprob"]), rel=1e-5)
        assert sum(k["token_logprobs"]) == pytest.approx(k["logprob"], abs=1e-5)
        assert k["n_tokens"] == c["n_tokens"] == len(k["token_logprobs"])
    assert ("step", "items", 2) in [(e[0], e[1], sum(x[2] for x in events if x[0] == "step")) for e in events]


def test_density_equals_the_cli(trained, tmp_path):
    probes = [
        {"id": "fact", "text": "The capital of Yaciljun is navneli.", "labels": {"kind": "factual"}},
        {"id": "sum", "text": "Question: 3 + 4 = ? Answer: 7", "labels": {"kind": "reasoning"}},
    ]
    path = write_jsonl(tmp_path / "probes.jsonl", probes)
    cli("density", "--model", str(TRAINED), "--probes", str(path), "--out", str(tmp_path / "cli.parquet"), "-q")
    expected = pq.read_table(tmp_path / "cli.parquet")
    got = models.density(trained, probes, progress=False)
    assert got.column_names == expected.column_names
    assert got.to_pylist() == expected.to_pylist()
    assert got.num_rows == len(probes) * (trained.layers + 1)
    for r in got.to_pylist():
        if r["mlp_active_mean"] is not None:
            assert 0.0 <= r["mlp_active_mean"] <= 1.0


def test_density_overflow(trained):
    long = {"id": "long", "text": "ve " * 200}
    with pytest.raises(familiar.FamiliarError, match=r"probes\[1\]|long"):
        models.density(trained, [{"text": "ve"}, long], progress=False)
    cut = models.density(trained, [long], overflow="truncate", progress=False).to_pylist()
    assert cut[0]["tokens"] == trained.context and cut[0]["truncated_tokens"] > 0
    strided = models.density(trained, [long], overflow="stride", progress=False).to_pylist()
    assert strided[0]["windows"] > 1 and strided[0]["truncated_tokens"] == 0
    with pytest.raises(familiar.FamiliarError, match="overflow"):
        models.density(trained, [long], overflow="wrap", progress=False)


def test_bad_model_input(trained, tmp_path):
    with pytest.raises(familiar.FamiliarError, match=r"items\[1\]"):
        models.score(trained, [{"prompt": "a", "completion": " b"}, {"prompt": "a"}], progress=False)
    with pytest.raises(TypeError, match=r"items\[0\]"):
        models.score(trained, ["The capital"], progress=False)
    with pytest.raises(TypeError):
        models.score(trained, 42, progress=False)
    with pytest.raises(familiar.ConfigError):
        models.score(trained, [{"prompt": "a", "completion": " b"}], limit=0, progress=False)
    with pytest.raises(familiar.FamiliarError, match="no-such-model"):
        models.Model(tmp_path / "no-such-model")
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(familiar.FamiliarError, match="config.json"):
        models.Model(tmp_path / "empty-model")
    with pytest.raises(familiar.FamiliarError, match="device"):
        models.Model(TRAINED, device="tpu")
    with pytest.raises(TypeError):
        models.Model(3)
    with pytest.raises(familiar.FamiliarError, match="missing.jsonl"):
        models.keyword_prob(trained, tmp_path / "missing.jsonl", progress=False)
    with pytest.raises(familiar.ConfigError, match="no records"):
        models.keyword_prob(trained, [], progress=False)


def test_a_stopped_scoring_returns_nothing(trained):
    def stop(kind, *rest):
        if kind == "step":
            raise KeyboardInterrupt

    items = [{"prompt": "The capital of Yaciljun is", "completion": " navneli"}] * 3
    with pytest.raises(KeyboardInterrupt):
        models.score(trained, items, progress=stop)


# --- attribution -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_store(index_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "cli"
    cli("attribute", "store", "--model", str(TRAINED), "--index", str(index_dir), "--out", str(out),
        "--layers", "mlp", "--rank", "8", "-q")
    return out


def test_attribution_equals_the_cli(index_dir, cli_store, tmp_path):
    out = tmp_path / "py"
    events = []
    r = attribution.store(TRAINED, index_dir, out, layers="mlp", rank=8, progress=lambda *e: events.append(e))
    ix = familiar.Index(index_dir)
    assert r["documents"] == ix.num_documents and r["computed_shards"] == ix.shards and r["resumed_shards"] == 0
    assert sum(e[2] for e in events if e[:2] == ("step", "documents")) == ix.num_documents
    assert json.loads((out / "store.json").read_text())["settings"] == json.loads((cli_store / "store.json").read_text())["settings"]
    assert r["dim"] == 2 * 2 * 8 * 8  # two MLP layers in each of two blocks, rank 8 × 8

    cli("attribute", "score", "--store", str(cli_store), "--model", str(TRAINED), "--queries", str(QUERIES),
        "--top-k", "5", "--out", str(tmp_path / "cli-scores"))
    expected = pq.read_table(tmp_path / "cli-scores" / "influence.parquet").to_pylist()
    influence, queries = attribution.score(out, TRAINED, QUERIES, top_k=5)
    got = influence.to_pylist()
    assert len(got) == len(expected) == 5 * sum(1 for _ in QUERIES.open())
    for g, e in zip(got, expected):
        assert (g["query_id"], g["doc_id"], g["rank"]) == (e["query_id"], e["doc_id"], e["rank"])
        assert g["score"] == pytest.approx(e["score"], rel=1e-4, abs=1e-6)
    assert queries.num_rows == sum(1 for _ in QUERIES.open())

    # queries as a list of dicts rank the same documents
    rows = [json.loads(line) for line in QUERIES.open()][:4]
    listed, _ = attribution.score(out, TRAINED, rows, top_k=5)
    assert [(r["query_id"], r["doc_id"]) for r in listed.to_pylist()] == [(r["query_id"], r["doc_id"]) for r in got[:20]]
    # every document, by dot product: ranks 1..N
    everything, _ = attribution.score(out, TRAINED, rows[:1], top_k=None, precondition="identity")
    assert sorted(r["rank"] for r in everything.to_pylist()) == list(range(1, ix.num_documents + 1))

    # EK-FAC and TrackStar, as the command line ranks them; token-level influence whose shares
    # add up to each top document's score
    # (and TrackStar's leave-one-out correction, named trackstar-loo in the tables, and its
    # task-specific Hessian, trackstar-mix)
    for precondition, loo, mix in [("ekfac", False, 0.0), ("trackstar", False, 0.0), ("trackstar", True, 0.0),
                                   ("ekfac", True, 0.0), ("trackstar", True, 0.5)]:
        name = precondition + ("-mix" if mix else "") + ("-loo" if loo else "")
        cli("attribute", "score", "--store", str(out), "--model", str(TRAINED), "--queries", str(QUERIES),
            "--top-k", "3", "--precondition", precondition, "--out", str(tmp_path / f"cli-{name}"),
            *(["--leave-one-out"] if loo else []), "--query-mix", str(mix))
        expected = pq.read_table(tmp_path / f"cli-{name}" / "influence.parquet").to_pylist()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run = attribution.score(out, TRAINED, QUERIES, top_k=3, precondition=precondition,
                                    leave_one_out=loo, query_mix=mix, token_influence=2, query_tokens=True,
                                    index=ix)
        # TrackStar on a store built without the optimizer's moment says what it used instead.
        said = [str(w.message) for w in caught if "second moment" in str(w.message)]
        if precondition == "trackstar":
            assert len(said) == 1 and said[0].startswith("trackstar: ") and "store's own second moment" in said[0]
        else:
            assert said == []
        assert isinstance(run, attribution.TokenAttribution)
        got = run.influence.to_pylist()
        assert [(g["query_id"], g["doc_id"]) for g in got] == [(e["query_id"], e["doc_id"]) for e in expected]
        assert [g["score"] for g in got] == pytest.approx([e["score"] for e in expected], rel=1e-9)
        assert run.queries.column("precondition").to_pylist()[0] == name
        tokens = run.tokens.to_pylist()
        for g in got:
            for side in ["document", "query"]:
                mine = [t["score"] for t in tokens
                        if (t["query_id"], t["doc_id"], t["side"]) == (g["query_id"], g["doc_id"], side)]
                if g["rank"] > 2:
                    assert mine == []
                else:
                    scale = max(sum(abs(x) for x in mine), abs(g["score"]))
                    assert sum(mine) == pytest.approx(g["score"], abs=1e-4 * scale), (precondition, side)


def test_optimizer_correction_equals_the_cli(index_dir, tmp_path):
    model = tmp_path / "model"
    cli("train", "--index", str(index_dir), "--out", str(model), "--steps", "8", "--layers", "1",
        "--hidden", "32", "--heads", "2", "--context", "32", "--batch", "4", "-q")
    out = tmp_path / "py"
    r = attribution.store(model, index_dir, out, layers="mlp", rank=4, optimizer_correction=True, progress=False)
    assert r["optimizer_correction"] is True
    cli("attribute", "store", "--model", str(model), "--index", str(index_dir), "--out", str(tmp_path / "cli"),
        "--layers", "mlp", "--rank", "4", "--optimizer-correction", "-q")
    for name in sorted(os.listdir(tmp_path / "cli")):
        if name.startswith("grads-") or name == "optimizer-scales.bin":
            assert (out / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    settings = json.loads((out / "store.json").read_text())["settings"]
    assert settings["projection"]["optimizer"]["file"] == "optimizer.safetensors"
    cli("attribute", "score", "--store", str(out), "--model", str(model), "--queries", str(QUERIES),
        "--top-k", "3", "--precondition", "trackstar", "--out", str(tmp_path / "cli-scores"))
    expected = pq.read_table(tmp_path / "cli-scores" / "influence.parquet").to_pylist()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # corrected by the optimizer's moment: nothing to say
        influence, _ = attribution.score(out, model, QUERIES, top_k=3, precondition="trackstar")
    got = influence.to_pylist()
    assert [(g["query_id"], g["doc_id"]) for g in got] == [(e["query_id"], e["doc_id"]) for e in expected]
    # a checkpoint without the optimizer's state is refused, naming the file
    with pytest.raises(familiar.ConfigError, match="optimizer.safetensors"):
        attribution.store(TRAINED, index_dir, tmp_path / "none", optimizer_correction=True, progress=False)
    assert not (tmp_path / "none").exists()


def test_head_rank_equals_the_cli(index_dir, tmp_path):
    # The output head alone, its hidden side at rank 4 and its vocabulary side at 1,100: a block
    # of 4,400 values, above the 4,096 whose second moments a store keeps.
    out = tmp_path / "py"
    attribution.store(TRAINED, index_dir, out, layers="output", rank=4, head_rank=1100, progress=False)
    cli("attribute", "store", "--model", str(TRAINED), "--index", str(index_dir), "--out", str(tmp_path / "cli"),
        "--layers", "output", "--rank", "4", "--head-rank", "1100", "-q")
    names = sorted(os.listdir(tmp_path / "cli"))
    assert not [n for n in names if n.startswith("moments-")], names
    for name in names:
        if name.startswith(("grads-", "kron-")) or name in ("ekfac.bin", "head-factor.bin"):
            assert (out / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    layers = json.loads((out / "store.json").read_text())["settings"]["projection"]["layers"]
    assert [l.get("rank_out") for l in layers] == [1100]
    cli("attribute", "score", "--store", str(out), "--model", str(TRAINED), "--queries", str(QUERIES),
        "--top-k", "3", "--precondition", "ekfac", "--out", str(tmp_path / "cli-scores"))
    expected = pq.read_table(tmp_path / "cli-scores" / "influence.parquet").to_pylist()
    influence, _ = attribution.score(out, TRAINED, QUERIES, top_k=3, precondition="ekfac")
    got = influence.to_pylist()
    assert [(g["query_id"], g["doc_id"]) for g in got] == [(e["query_id"], e["doc_id"]) for e in expected]
    with pytest.raises(familiar.QueryError, match="keeps no second moments"):
        attribution.score(out, TRAINED, QUERIES, top_k=3, precondition="fisher")
    for bad in (0, -1, True, 2.5, "8"):
        with pytest.raises(familiar.ConfigError, match="head_rank"):
            attribution.store(TRAINED, index_dir, tmp_path / "bad", layers="output", head_rank=bad, progress=False)
    with pytest.raises(familiar.ConfigError, match="not among the layers"):
        attribution.store(TRAINED, index_dir, tmp_path / "bad", layers="mlp", head_rank=8, progress=False)
    assert not (tmp_path / "bad").exists()


def test_a_stopped_store_keeps_finished_shards_and_resumes(index_dir, cli_store, tmp_path):
    out = tmp_path / "stopped"
    seen = []

    def stop(kind, stage, n):
        seen.append((kind, stage, n))
        if kind == "step" and sum(s[2] for s in seen if s[:2] == ("step", "documents")) > 500:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        attribution.store(TRAINED, index_dir, out, layers="mlp", rank=8, progress=stop)
    leftovers = [p.name for p in out.iterdir()] if out.exists() else []
    assert not [n for n in leftovers if "tmp" in n.lower()], leftovers
    r = attribution.store(TRAINED, index_dir, out, layers="mlp", rank=8, progress=False)
    assert r["resumed_shards"] + r["computed_shards"] == familiar.Index(index_dir).shards
    assert r["resumed_shards"] >= 1
    for name in sorted(os.listdir(cli_store)):
        if name.startswith("grads-"):
            assert (out / name).read_bytes() == (cli_store / name).read_bytes(), name


def test_bad_attribution_input(index_dir, cli_store, tmp_path):
    with pytest.raises(familiar.ConfigError):
        attribution.store(TRAINED, index_dir, tmp_path / "s", rank=0, progress=False)
    with pytest.raises(familiar.ConfigError, match="layers"):
        attribution.store(TRAINED, index_dir, tmp_path / "s", layers="heads", progress=False)
    with pytest.raises(familiar.ConfigError, match="top_k"):
        attribution.score(cli_store, TRAINED, QUERIES, top_k=0)
    with pytest.raises(familiar.FamiliarError, match=r"queries\[0\]"):
        attribution.score(cli_store, TRAINED, [{"prompt": "x"}])
    with pytest.raises(familiar.FamiliarError, match="store"):
        attribution.score(tmp_path / "no-store", TRAINED, QUERIES)
    with pytest.raises(familiar.FamiliarError, match="precondition"):
        attribution.score(cli_store, TRAINED, QUERIES, precondition="newton")
    with pytest.raises(familiar.ConfigError, match="leave_one_out=True applies to"):
        attribution.score(cli_store, TRAINED, QUERIES, precondition="cosine", leave_one_out=True)
    with pytest.raises(familiar.ConfigError, match="leave_one_out"):
        attribution.score(cli_store, TRAINED, QUERIES, precondition="fisher", leave_one_out="yes")
    with pytest.raises(familiar.ConfigError, match="query_mix applies to"):
        attribution.score(cli_store, TRAINED, QUERIES, precondition="ekfac", query_mix=0.5)
    for bad in [1.0, -0.5, float("nan")]:
        with pytest.raises(familiar.FamiliarError, match="query_mix= must be at least 0 and below 1"):
            attribution.score(cli_store, TRAINED, QUERIES, precondition="trackstar", query_mix=bad)
    with pytest.raises(familiar.ConfigError, match="query_mix"):
        attribution.score(cli_store, TRAINED, QUERIES, precondition="trackstar", query_mix="0.5")
    with pytest.raises(familiar.FamiliarError, match="expected cpu, cuda or cuda:N"):
        attribution.score(cli_store, TRAINED, QUERIES, device="tpu")
    with pytest.raises(familiar.FamiliarError, match="expected cpu, cuda or cuda:N"):
        attribution.store(TRAINED, index_dir, tmp_path / "s", device="tpu", progress=False)
    assert not (tmp_path / "s").exists()
    with pytest.raises(familiar.ConfigError, match="index"):
        attribution.score(cli_store, TRAINED, QUERIES, token_influence=2)
    with pytest.raises(familiar.ConfigError, match="token_influence"):
        attribution.score(cli_store, TRAINED, QUERIES, token_influence=0, index=index_dir)
    with pytest.raises(familiar.ConfigError, match="token_influence"):
        attribution.score(cli_store, TRAINED, QUERIES, query_tokens=True)
