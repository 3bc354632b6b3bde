"""EleutherAI's bergson (TrackStar, gradient similarity, EK-FAC) against familiar's preconditioners
on one `familiar attribute eval` run.

Runs bergson's own attribution pipelines (as a library, on the CPU) for the model, documents,
queries and random subsets of a `familiar attribute eval` run directory, takes the linear
datamodeling score (LDS) exactly as familiar does (per query: Spearman over the measured subsets
between Σ_{d ∈ S} τ(q, d) and the log p(completion | prompt) measured by the model retrained on S;
an undefined correlation counts as 0; the mean over queries), and prints one Markdown table with
familiar's rows from RUN_DIR/lds.json and bergson's, plus the CPU time (process time, all threads)
of each bergson pipeline: its gradient collection passes, any Hessian fit and the scoring.

    python3 benches/bergson_lds.py --model DIR --index DIR --queries FILE --eval RUN_DIR \
        [--methods trackstar,trackstar-value,trackstar-noopt,cosine,dot,ekfac[,kfac]] \
        [--head off|on|both] [--projection-dim N] [--threads N] [--seed N] [--verbose] \
        [--keep DIR] [--save-scores PREFIX]

RUN_DIR needs plan.json and at least 3 subsets/subset-NNNN.json; its lds.json gives familiar's
rows. --model must be the model the run's store was built with (familiar's checkpoint directory:
config.json, model.safetensors and, for TrackStar's optimizer correction, optimizer.safetensors),
--index the index of the run, --queries the run's queries (checked against plan.json; their `kind`
splits the means). The documents, queries, subsets and LDS are read and computed by the functions
of benches/kronfluence_lds.py (imported, not copied), so both reference tools see the same data.

Installs nothing: without torch, transformers, datasets, tokenizers, numpy or bergson it says what
is missing and exits 0. Runs on the CPU only (CUDA is hidden from bergson, which would otherwise
pick the GPU and spawn one process per device).

Methods (bergson 2.5.x; each a row of the table):
- `trackstar`: `bergson.cli.trackstar.trackstar`, the TrackStar pipeline (Chang et al., 2024) as
  bergson defines it: per-module two-sided random projection of every tracked layer's per-example
  gradient to projection_dim × projection_dim (TrackstarIndexConfig's default 16), each gradient
  entry first divided by √(Adam second moment) + 1e-8 (bergson's AdamNormalizer, from
  `load_from_optimizer`), the "autocorrelation" Hessian (per module, the Gram of the projected
  gradients of the training chunks under labels sampled from the model, divided by their number)
  mixed with the same Gram on the queries by bergson's λ (`compute_lambda`,
  target_downweight_components 1000), preconditioned two-sided with its damped H^(-1/2)
  (damped_inverse, damping_factor 0.1 × mean eigenvalue) and unit-normalized (cosine). λ sets the
  mixed Hessian's pooled eigenvalue curves equal at component 1000; with few queries (a query Gram
  has rank ≤ the number of queries per module) λ comes out 1, i.e. the query Gram alone plus the
  damping: the row prints λ, and bergson's docs advise `mix_hessians=False` in that case;
- `trackstar-value`: the same without the query Hessian (`mix_hessians=False`: the training
  chunks' Hessian alone);
- `trackstar-noopt`: `trackstar` without the optimizer correction (bergson's "TrackStar (no
  optimizer)");
- `cosine`, `dot`: bergson's gradient cosine similarity and gradient dot product (`build_query` +
  `score_dataset`, projection_dim 0, no Hessian; unit_normalize true / false), as bergson's
  examples/compare_wikitext/gradient_{cosine,dot}.yaml;
- `ekfac` (and `kfac`): `bergson.hessians.pipeline.hessian_pipeline` with method kfac and
  ev_correction true (false): Kronecker factors fitted on the training chunks under sampled
  labels, eigenvalue-corrected, the damped inverse (0.1 × mean eigenvalue) applied to each query's
  full gradient, dot product with the training chunks' full gradients, as
  examples/compare_wikitext/ekfac.yaml.

Deviations from bergson's defaults (the line above the table names them too):
- TrackStar's `preprocess_cfg.unit_normalize` is true (the dataclass default is false; bergson's
  TrackStar examples and the method set it: TrackStar is a cosine);
- `token_batch_size` is the model's context (bergson refuses a token batch larger than the
  context, and its default is 2048); `distributed.nproc_per_node` is 1 (one CPU process);
- the output head: bergson hooks the supported modules of `model.base_model` (GPT-2's
  `transformer`), which holds the blocks' Conv1D layers (all eight of a two-layer model, hooked as
  Conv1D, no rewriting needed) but not `lm_head` (bergson's GPT-2 examples filter it out as well).
  familiar's and Kronfluence's rows do track the head, and on a small model it carries much of the
  signal, so `--head on` (or `both`: each method without and with it) widens bergson's view for
  the duration of its pipelines: the model class's `base_model` becomes the model itself (and
  `get_input_embeddings`, which transformers finds through it, the embedding's), so `lm_head` is
  hooked like any nn.Linear (its own use of the tied weight only), and its optimizer
  normalizer is the tied embedding's second moment. This is a change to what bergson sees, not to
  bergson's code, and the rows say "with the head lm_head"; the default (`off`) is bergson's own;
- the optimizer state: familiar writes AdamW's state as optimizer.safetensors, one
  `<param>.exp_avg_sq` tensor per parameter, in the parameter's own layout (Conv1D's [in, out]).
  bergson reads a torch `optimizer.pt` ({"state": {i: {"exp_avg_sq", "param_name"}},
  "param_groups"}); this script writes one in a temporary directory from familiar's tensors, keyed
  by the model's parameter names, and points `optimizer_state` at it, so bergson's own
  `load_from_optimizer` maps and orients them (it transposes Conv1D's to [out, in]). The moments are
  the raw exp_avg_sq, without Adam's bias correction (1 − β₂ᵗ), which is also what bergson reads
  from a torch optimizer (a uniform factor: it does not change a cosine, apart from the 1e-8).

What is matched with familiar (see kronfluence_lds.py for the details):
- documents: the index's token ids, the start token, chunks of the model's context overlapping by
  one token; bergson's training examples are the chunks (loss: the chunk's summed token NLL,
  bergson's loss_reduction "sum"), and a document's score is the sum of its chunks' scores. For
  the dot product and EK-FAC this is exactly the score of the document's summed gradient; for the
  cosines (TrackStar, cosine) it is the sum of the chunks' cosines, not the cosine of the summed
  gradient (bergson scores examples, and an example cannot be longer than the context);
- queries: tokenized as familiar does (`query_ids`), given to bergson pre-tokenized with labels
  −100 on the prompt, so the query's loss is −log p(completion | prompt), completion tokens only;
- subsets: `subset_members` (SplitMix64) for the subsets measured in RUN_DIR/subsets.

Sign convention: every bergson score here is an inner product of gradients of losses, oriented as
bergson's `higher_is_better = True` (a proponent scores high). The query side is ∇f_q with f_q =
−log p(completion | prompt) (the completion's summed NLL) and the training side ∇L_z with L_z the
chunk's summed NLL; bergson's preconditioners are positive definite and its unit normalization
divides by positive norms, so the sign of each score is that of ⟨∇f_q, P ∇L_z⟩. A gradient step on
z moves θ by −η P ∇L_z and f_q by −η ⟨∇f_q, P ∇L_z⟩: a positive score means that training on z
lowers f_q, i.e. raises log p(completion | prompt) — familiar's convention (its identity score is
⟨∇(−log p_q), ∇L_d⟩). For EK-FAC, ⟨(G + λ)⁻¹ ∇f_q, ∇L_z⟩ is Kronfluence's score, with the same
sign. No sign is flipped.
"""

import argparse
import contextlib
import io
import json
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kronfluence_lds import (  # noqa: E402 (the shared pieces; kronfluence itself is not needed)
    add_run_arguments,
    lds_of,
    load_run,
    print_table,
    query_ids,
    training_chunks,
)

METHODS = ("trackstar", "trackstar-value", "trackstar-noopt", "cosine", "dot", "ekfac", "kfac")
DEFAULT_METHODS = "trackstar,trackstar-value,trackstar-noopt,cosine,dot,ekfac"


def missing_packages():
    missing = []
    for name in ("numpy", "torch", "transformers", "tokenizers", "datasets", "safetensors",
                 "bergson"):
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 (a broken install counts as missing)
            missing.append(name)
    return missing


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# bergson's inputs: datasets on disk, the optimizer state as bergson reads it


def write_datasets(work, docs, queries, model_dir):
    """The training chunks and the queries as HF datasets on disk (pre-tokenized: bergson then
    skips its tokenizer). Returns their paths, the chunks' documents and the context."""
    import numpy as np
    from datasets import Dataset
    from tokenizers import Tokenizer
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    start = config.bos_token_id if config.bos_token_id is not None else config.eos_token_id
    context = config.n_positions
    tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))

    chunks, chunk_doc = training_chunks(docs, start, context)
    q_ids, q_labels = [], []
    for q in queries:
        ids, keep = query_ids(tokenizer, q["prompt"], q["completion"], start, context)
        q_ids.append(ids)
        # Position j ≥ keep (a completion token) is predicted from those before it.
        q_labels.append([-100] * keep + ids[keep:])

    train_dir = os.path.join(work, "data", "train")
    query_dir = os.path.join(work, "data", "queries")
    Dataset.from_dict({"input_ids": chunks}).save_to_disk(train_dir)
    Dataset.from_dict({"input_ids": q_ids, "labels": q_labels}).save_to_disk(query_dir)
    return train_dir, query_dir, np.array(chunk_doc), context


def write_optimizer_pt(work, model_dir):
    """familiar's optimizer.safetensors (`<param>.exp_avg_sq`) as the torch optimizer state dict
    bergson's `load_from_optimizer` reads, keyed by the model's parameter names (in
    `named_parameters` order). A tied output head (not a parameter of its own) gets an entry
    `lm_head.weight` with the tied embedding's second moment, which is what AdamW kept for the
    shared weight (used only with --head). Returns its path, or None (with the reason)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    path = os.path.join(model_dir, "optimizer.safetensors")
    if not os.path.exists(path):
        return None, f"{path} does not exist"
    tensors = load_file(path)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    state, params = {}, []
    for i, (name, p) in enumerate(model.named_parameters()):
        t = tensors.get(f"{name}.exp_avg_sq")
        if t is None:
            continue
        if tuple(t.shape) != tuple(p.shape):
            raise SystemExit(f"{path}: {name}.exp_avg_sq is {tuple(t.shape)}, the parameter "
                             f"{tuple(p.shape)}")
        state[i] = {"exp_avg_sq": t.float(), "param_name": name}
        params.append(i)
    if not state:
        return None, f"{path} has no <param>.exp_avg_sq tensor of the model's parameters"
    head = model.get_output_embeddings()
    if head is not None and head.weight is model.get_input_embeddings().weight:
        tied = next((n for n, q in model.named_parameters() if q is head.weight), None)
        if tied is not None and f"{tied}.exp_avg_sq" in tensors:
            i = len(list(model.parameters()))
            state[i] = {"exp_avg_sq": tensors[f"{tied}.exp_avg_sq"].float(),
                        "param_name": "lm_head.weight"}
            params.append(i)
    out = os.path.join(work, "optimizer.pt")
    torch.save({"state": state, "param_groups": [{"params": params}]}, out)
    return out, None


# ---------------------------------------------------------------------------------------------
# bergson's pipelines


@contextlib.contextmanager
def whole_model_hooked(model_class, on):
    """bergson hooks the supported modules of `model.base_model` (GPT-2: `transformer`, which does
    not hold `lm_head`). With `on`, the model class's `base_model` is the model itself while the
    pipelines run, so that the output head is tracked too (as familiar's and Kronfluence's rows
    track it); the module names then keep the `transformer.` prefix, on both the collector's and
    `load_from_optimizer`'s side."""
    if not on:
        yield
        return
    prefix = model_class.base_model_prefix
    patch = {
        "base_model": property(lambda self: self),
        # transformers finds the input embeddings through base_model.
        "get_input_embeddings": lambda self: getattr(self, prefix).get_input_embeddings(),
    }
    saved = {k: model_class.__dict__[k] for k in patch if k in model_class.__dict__}
    for k, v in patch.items():
        setattr(model_class, k, v)
    try:
        yield
    finally:
        for k in patch:
            if k in saved:
                setattr(model_class, k, saved[k])
            else:
                delattr(model_class, k)


def run_method(method, name, work, model_dir, train_dir, query_dir, context, args, optimizer_pt):
    """Runs one bergson pipeline in WORK/NAME; returns (scores: chunks × queries, notes)."""
    import numpy as np
    from pathlib import Path

    from bergson.build import build_query
    from bergson.cli.trackstar import trackstar
    from bergson.config.config import (
        DataConfig,
        DistributedConfig,
        HessianConfig,
        HessianPipelineConfig,
        IndexConfig,
        PreprocessConfig,
        QuerySetConfig,
        ScoreConfig,
        TrackstarConfig,
        TrackstarIndexConfig,
    )
    from bergson.data import load_scores
    from bergson.hessians.pipeline import hessian_pipeline
    from bergson.score.score import score_dataset

    run_path = os.path.join(work, name)
    common = dict(
        model=model_dir,
        overwrite=True,
        precision="fp32",
        token_batch_size=context,
        distributed=DistributedConfig(nnode=1, nproc_per_node=1),
        data=DataConfig(dataset=train_dir, split="train"),
    )
    query = QuerySetConfig(dataset=query_dir, split="train", aggregation="none")
    notes = {}

    if method.startswith("trackstar"):
        index_cfg = TrackstarIndexConfig(
            run_path=run_path,
            optimizer_state=(optimizer_pt or "") if method != "trackstar-noopt" else "",
            **common,
        )
        if args.projection_dim is not None:
            index_cfg.projection_dim = args.projection_dim
        ts_cfg = TrackstarConfig(
            query=query,
            preprocess_cfg=PreprocessConfig(unit_normalize=True),
            mix_hessians=method != "trackstar-value",
        )
        trackstar(index_cfg, ts_cfg)
        notes["projection_dim"] = index_cfg.projection_dim
        if ts_cfg.mix_hessians:
            from bergson.gradients import GradientProcessor
            from bergson.utils.math import compute_lambda

            q = GradientProcessor.load(f"{run_path}/query_hessian")
            v = GradientProcessor.load(f"{run_path}/value_hessian")
            notes["lambda"] = compute_lambda(q.hessians_eigen, v.hessians_eigen,
                                             ts_cfg.target_downweight_components)
        scores_path = f"{run_path}/scores"
    elif method in ("cosine", "dot"):
        preprocess = PreprocessConfig(unit_normalize=method == "cosine")
        q_cfg = IndexConfig(run_path=f"{run_path}/query", projection_dim=0, **common)
        build_query(q_cfg, query, preprocess)
        s_cfg = IndexConfig(run_path=f"{run_path}/scores", projection_dim=0, **common)
        score_dataset(s_cfg, ScoreConfig(query_path=f"{run_path}/query"), preprocess)
        scores_path = f"{run_path}/scores"
    else:  # ekfac, kfac
        index_cfg = IndexConfig(run_path=run_path, projection_dim=0, **common)
        hessian_pipeline(
            index_cfg,
            HessianConfig(method="kfac", ev_correction=method == "ekfac"),
            ScoreConfig(),
            PreprocessConfig(unit_normalize=False),
            HessianPipelineConfig(query=query),
        )
        scores_path = f"{run_path}/scores"

    scores = load_scores(Path(scores_path))
    if scores.candidates is not None or scores.offsets is not None:
        raise RuntimeError(f"{scores_path}: not one row per training chunk")
    if not scores.is_written():
        raise RuntimeError(f"{scores_path}: not every score was written")
    return np.asarray(scores[:], dtype=np.float64), notes


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(p)
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"bergson methods, comma-separated ({', '.join(METHODS)})")
    p.add_argument("--projection-dim", type=int, default=None,
                   help="TrackStar's per-module projection (default: bergson's, 16)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--head", choices=("off", "on", "both"), default="off",
                   help="also track the output head lm_head (bergson does not: it hooks "
                        "model.base_model); 'both' runs every method without and with it")
    p.add_argument("--seed", type=int, default=0,
                   help="torch seed before each method (the Hessians' sampled labels)")
    p.add_argument("--verbose", action="store_true", help="bergson's own output, to stderr")
    p.add_argument("--keep", metavar="DIR",
                   help="run bergson in DIR and keep its datasets, indexes and scores")
    p.add_argument("--save-scores", metavar="PREFIX",
                   help="write each method's document scores (queries × documents, the plan's "
                        "query order, global document ids) to PREFIX-METHOD.npy")
    args = p.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            p.error(f"--methods {m}: one of {', '.join(METHODS)}")
    if args.projection_dim is not None and args.projection_dim < 1:
        p.error("--projection-dim must be at least 1")

    # CPU only: bergson picks a visible GPU (and one process per GPU) by itself.
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if not args.verbose:
        os.environ.setdefault("TQDM_DISABLE", "1")
    missing = missing_packages()
    if missing:
        print(f"bergson_lds.py: skipped, {', '.join(missing)} not importable "
              f"(needs torch, transformers, tokenizers, datasets, safetensors, numpy and "
              f"bergson 2.5.x)")
        return 0

    import numpy as np
    import torch
    import transformers
    import bergson

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.verbose:
        import logging
        import warnings

        import datasets

        warnings.filterwarnings("ignore")
        logging.disable(logging.INFO)  # bergson's INFO loggers write to the original stderr
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
        logging.getLogger().setLevel(logging.WARNING)

    plan, results, familiar_lds, queries, docs, members, measured = load_run(args, "bergson")
    kinds = [q.get("kind") for q in queries]

    rows = []
    with contextlib.ExitStack() as stack:
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            work = args.keep
        else:
            work = stack.enter_context(tempfile.TemporaryDirectory(prefix="bergson-lds-"))
        train_dir, query_dir, chunk_doc, context = write_datasets(work, docs, queries, args.model)
        optimizer_pt, no_optimizer = write_optimizer_pt(work, args.model)
        if optimizer_pt is None:
            log(f"note: no optimizer state ({no_optimizer}): TrackStar runs without the "
                f"optimizer correction")
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(args.model)
        model_class = type(model)
        if optimizer_pt is not None:
            # What bergson will make of it: normalizers for how many of the hooked layers.
            from bergson import GradientCollector
            from bergson.utils.load_from_optimizer import load_from_optimizer

            n_normalizers = {}
            for head in (False, True):
                with whole_model_hooked(model_class, head), \
                        contextlib.redirect_stdout(io.StringIO()):
                    hooked = GradientCollector.discover_targets(model.base_model)
                    normalizers = load_from_optimizer(model, optimizer_pt)
                n_normalizers[head] = (len(set(hooked) & set(normalizers)), len(hooked))
                if n_normalizers[head][0] != len(hooked):
                    log(f"note: bergson maps familiar's optimizer state onto "
                        f"{n_normalizers[head][0]} of the {len(hooked)} hooked layers")

        runs = [(m, h) for m in methods
                for h in ((False, True) if args.head == "both" else (args.head == "on",))]
        for method, head in runs:
            log(f"bergson {method}{' with the head' if head else ''}: {len(chunk_doc)} chunks "
                f"of {len(docs)} documents, {len(queries)} queries")
            torch.manual_seed(args.seed)
            name = method + ("-head" if head else "")
            logf = os.path.join(work, f"{name}.log")
            c0, w0 = time.process_time(), time.perf_counter()
            try:
                with open(logf, "w") as out, contextlib.ExitStack() as quiet:
                    if not args.verbose:
                        quiet.enter_context(contextlib.redirect_stdout(out))
                        quiet.enter_context(contextlib.redirect_stderr(out))
                    else:
                        quiet.enter_context(contextlib.redirect_stdout(sys.stderr))
                    quiet.enter_context(whole_model_hooked(model_class, head))
                    chunk_scores, notes = run_method(method, name, work, args.model, train_dir,
                                                     query_dir, context, args, optimizer_pt)
            except Exception as e:  # noqa: BLE001 (a method that fails is reported, not fatal)
                with open(logf) as f:
                    tail = f.read()[-2000:]
                log(tail)
                msg = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                log(f"bergson {name}: failed: {msg}")
                rows.append((f"**bergson {name}**: failed ({msg})", None, None, None, "–"))
                continue
            c1, w1 = time.process_time(), time.perf_counter()
            if chunk_scores.shape != (len(chunk_doc), len(queries)):
                raise SystemExit(f"bergson {name}: scores of shape {chunk_scores.shape}, "
                                 f"expected {(len(chunk_doc), len(queries))}")
            doc_scores = np.zeros((len(queries), len(docs)))
            np.add.at(doc_scores.T, chunk_doc, chunk_scores)
            if not np.isfinite(doc_scores).all():
                raise SystemExit(f"bergson {name}: non-finite scores")
            if args.save_scores:
                np.save(f"{args.save_scores}-{name}.npy", doc_scores)
            _, mean, fact, reas = lds_of(doc_scores, members, measured, kinds)
            label = {
                "trackstar": "TrackStar (Adam-normalized, mixed Hessian)",
                "trackstar-value": "TrackStar (Adam-normalized, training Hessian only)",
                "trackstar-noopt": "TrackStar (no optimizer, mixed Hessian)",
                "cosine": "gradient cosine",
                "dot": "gradient dot product",
                "ekfac": "EK-FAC, damping 0.1 × mean eigenvalue",
                "kfac": "K-FAC, damping 0.1 × mean eigenvalue",
            }[method]
            if method.startswith("trackstar"):
                extra = [f"projection {notes['projection_dim']}²/module"]
                if method != "trackstar-noopt" and optimizer_pt is None:
                    extra.append("no optimizer state found")
                if "lambda" in notes:
                    extra.append(f"λ {notes['lambda']:.3f}")
                label += ", " + ", ".join(extra)
            if head:
                label += ", **with the head lm_head**"
            rows.append((f"**bergson {name}**: {label}", mean, fact, reas,
                         f"{c1 - c0:.1f} (wall {w1 - w0:.1f})"))

    has_kinds = any(k is not None for k in kinds)
    print(f"LDS on `{args.eval}`: {len(results)} of {plan['subsets']} subsets measured "
          f"(fraction {plan['fraction']}, seed {plan['seed']}, {plan['train']['steps']} steps), "
          f"{len(queries)} queries, {len(docs)} documents ({len(chunk_doc)} chunks of ≤ {context} "
          f"tokens).")
    if optimizer_pt is None:
        adam = "nothing (no optimizer state)"
    else:
        counts = [f"{n}/{of}" for h, (n, of) in sorted(n_normalizers.items())
                  if args.head == "both" or h == (args.head == "on")]
        adam = (f"familiar's optimizer.safetensors (raw exp_avg_sq, via load_from_optimizer: "
                f"{' and '.join(counts)} hooked layers normalized)")
    tracked = {"off": "the blocks' Conv1D layers of `model.base_model` (bergson's choice: the "
                      "output head is not tracked)",
               "on": "the blocks' Conv1D layers and the output head lm_head (tied to wte; its "
                     "own use only; bergson's base_model widened to the whole model)",
               "both": "the blocks' Conv1D layers of `model.base_model` (bergson's choice), and "
                       "in the rows marked so also the output head lm_head (tied to wte; its own "
                       "use only)"}[args.head]
    print(f"bergson {bergson.__version__} (torch {torch.__version__}, transformers "
          f"{transformers.__version__}, CPU, {torch.get_num_threads()} thread(s)): {tracked}, "
          f"weights only; bergson's defaults except token_batch_size = context ({context}), one "
          f"process, and TrackStar's unit_normalize on; TrackStar's optimizer correction from "
          f"{adam}; Hessians fitted under sampled labels; a document's score is the sum of its "
          f"chunks'.")
    print()
    print_table(familiar_lds, rows, has_kinds,
                "bergson's is process time, all threads, of each whole pipeline (gradient "
                "collection, Hessian fit, scoring).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
