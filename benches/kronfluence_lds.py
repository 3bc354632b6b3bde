"""Kronfluence EK-FAC against familiar's preconditioners on one `familiar attribute eval` run.

Computes Kronfluence's influence scores (EK-FAC by default) for the model, documents, queries and
random subsets of a `familiar attribute eval` run directory, takes the linear datamodeling score
(LDS) exactly as familiar does (per query: Spearman over the measured subsets between
Σ_{d ∈ S} τ(q, d) and the log p(completion | prompt) measured by the model retrained on S; an
undefined correlation counts as 0; the mean over queries), and prints one Markdown table with
familiar's rows from RUN_DIR/lds.json and Kronfluence's, plus the CPU time (process time, all
threads) of Kronfluence's factor fitting and scoring.

    python3 benches/kronfluence_lds.py --model DIR --index DIR --queries FILE --eval RUN_DIR \
        [--damping heuristic|FLOAT] [--threads N] [--no-head] [--bias] [--empirical-fisher]
        [--strategy ekfac[,identity,diagonal,kfac]] [--batch N] [--seed N] [--verbose] \
        [--save-scores PREFIX] [--logprobs]

RUN_DIR needs plan.json and at least 3 subsets/subset-NNNN.json; its lds.json gives familiar's
rows. --model must be the model the run's store was built with (the run's plan records its hash,
which this script does not check), --index the index of the run, --queries the run's queries
(checked against plan.json; their `kind` splits the means).

Installs nothing: without torch, transformers or kronfluence (and their numpy and tokenizers) it
says what is missing and exits 0.

What is matched with familiar:
- documents: the index's token ids, read from its files, in global document id order; each
  document is the model's start token (bos, else eos) then its tokens, cut into chunks of the
  model's context that overlap by one token (`document_examples` in grads/build.rs), and its loss
  is the summed next-token NLL of those chunks. Kronfluence's training examples are the chunks; a
  document's score is the sum of its chunks' scores, which for pairwise scores (linear in the
  training gradient) is exactly the score of the document's summed gradient;
- queries: prompt and completion tokenized as `LanguageModel::split` does (the completion is what
  the whole text has after the prompt's tokens, else its own tokens; an empty prompt is the start
  token), the prompt cut from the left to fit the context (`LanguageModel::fit`), and the query's
  measurement is −log p(completion | prompt), completion tokens only;
- subsets: `subset_members` of attribute/eval.rs (SplitMix64, the same seed mixing), for the
  subsets measured in RUN_DIR/subsets;
- layers: every linear layer of the blocks (GPT-2's Conv1D, rewritten as nn.Linear, which is what
  Kronfluence tracks) and the output head `lm_head` (familiar's store default `--layers all`;
  `--no-head` leaves it out). Weights only, as familiar's rows are (`--bias` tracks the biases too).

Sign convention (derived from kronfluence 1.0.x's source, score/pairwise.py and score/dot_product.py):
Kronfluence backpropagates `Task.compute_measurement` for the queries, preconditions each query's
gradient by the damped inverse of its fitted curvature (EK-FAC: Q_S [(Q_Sᵀ G Q_A) ⊘ (Λ + λ)] Q_Aᵀ
per module, factor/config.py), then backpropagates `Task.compute_train_loss(sample=False)` for the
training examples and takes the dot product per module, summed over modules:
    score(q, z) = ∇f_q(θ)ᵀ (G + λ)⁻¹ ∇L_z(θ),
with no minus sign. Upweighting z by ε moves the optimum by −ε (G + λ)⁻¹ ∇L_z, so f_q changes by
−ε · score(q, z): a positive score means that training on z lowers f_q. With f_q = −log p(completion
| prompt) (the summed completion NLL, returned by `compute_measurement` below) and L_z the summed
token NLL of the chunk (`compute_train_loss` below), a positive score means that training on z
raises log p_q — familiar's convention (its identity score is ⟨∇(−log p_q), ∇L_d⟩, attribute/mod.rs),
and familiar's ekfac is the same formula on projected gradients. The LDS correlates these sums
with the measured log p of the retrained models, so a higher LDS is better for both.

What differs from familiar (the line above the table names the settings used):
- no projection: Kronfluence works on the full gradients (familiar's store projects each layer's
  input and output gradient to rank × rank, 32 by default, and fits its EK-FAC on those), and
  the head is not whitened by familiar's head factor (familiar's rows are, for every
  preconditioner);
- Kronfluence fits the true Fisher (labels sampled from the model, seeded) unless
  `--empirical-fisher`; familiar's EK-FAC is fitted on the documents' actual gradients;
- Kronfluence's Lambda (corrected eigenvalues) is averaged over chunks, familiar's over documents;
- `--damping heuristic` (the default) is Kronfluence's `damping_factor=None`: 0.1 × the mean of
  each module's corrected eigenvalues, which is what familiar's ekfac does at its default 0.1; a
  number is Kronfluence's absolute damping (its own default is 1e-8).
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time


def missing_packages():
    missing = []
    for name in ("numpy", "torch", "transformers", "tokenizers", "kronfluence"):
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 (a broken install counts as missing)
            missing.append(name)
    return missing


# ---------------------------------------------------------------------------------------------
# familiar's index files (schemas/index-format.md)

HEADER = 64


def read_array(path, kind):
    """The elements of one of an index's binary files as a numpy array (uint64 for bit-packed)."""
    import numpy as np

    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < HEADER or raw[:8] != b"FAMILIAR":
        raise SystemExit(f"{path}: not a familiar binary file")
    if raw[8:12] != kind:
        raise SystemExit(f"{path}: kind {raw[8:12]!r}, expected {kind!r}")
    width = int.from_bytes(raw[16:20], "little")
    count = int.from_bytes(raw[24:32], "little")
    aux0 = int.from_bytes(raw[32:40], "little")
    aux1 = int.from_bytes(raw[40:48], "little")
    body = raw[HEADER:]
    if len(body) != (count * width + 7) // 8:
        raise SystemExit(f"{path}: {len(body)} body bytes for {count} elements of {width} bits")
    if width in (16, 32):
        values = np.frombuffer(body, dtype="<u2" if width == 16 else "<u4", count=count)
    else:
        # Element i occupies bits i·width … (i+1)·width − 1, little-endian: read the 8 bytes from
        # its first byte as a u64, shift and mask (width ≤ 57 leaves room for the shift).
        padded = np.frombuffer(body + bytes(8), dtype=np.uint8)
        bit = np.arange(count, dtype=np.uint64) * np.uint64(width)
        byte = (bit >> np.uint64(3)).astype(np.int64)
        word = np.zeros(count, dtype=np.uint64)
        for k in range(8):
            word |= padded[byte + k].astype(np.uint64) << np.uint64(8 * k)
        values = (word >> (bit & np.uint64(7))) & np.uint64((1 << width) - 1)
    return values, aux0, aux1


def read_documents(index_dir):
    """Token ids of every document of the index, in global document id order."""
    with open(os.path.join(index_dir, "manifest.json")) as f:
        manifest = json.load(f)
    docs = []
    for shard in manifest["shards"]:
        sdir = os.path.join(index_dir, shard["dir"])
        tokens, separator, _vocab = read_array(os.path.join(sdir, "tokens.bin"), b"TOKS")
        offsets, n, first = read_array(os.path.join(sdir, "doc_offsets.bin"), b"DOCO")
        if first != shard["first_doc"] or first != len(docs) or n != len(tokens):
            raise SystemExit(f"{sdir}: document offsets do not match the shard")
        if len(offsets) != shard["documents"] + 1 or int(offsets[-1]) != len(tokens):
            raise SystemExit(f"{sdir}: {len(offsets) - 1} documents, manifest {shard['documents']}")
        for d in range(len(offsets) - 1):
            start, end = int(offsets[d]), int(offsets[d + 1])
            if tokens[end - 1] != separator:
                raise SystemExit(f"{sdir}: document {first + d} does not end with the separator")
            docs.append(tokens[start : end - 1].astype("int64"))
    if len(docs) != manifest["documents"]:
        raise SystemExit(f"{index_dir}: {len(docs)} documents read, manifest {manifest['documents']}")
    return docs


def document_chunks(tokens, start, context):
    """`document_examples` of grads/build.rs: the start token then the document, cut into chunks
    of the context overlapping by one token (every token after the first predicted once)."""
    ids = ([start] if start is not None else []) + [int(t) for t in tokens]
    context = max(context, 2)
    out, begin = [], 0
    while True:
        end = min(begin + context, len(ids))
        out.append(ids[begin:end])
        if end == len(ids):
            return out
        begin = end - 1


def training_chunks(docs, start, context):
    """Every document's chunks (`document_chunks`) with at least one predicted token, and the
    document of each."""
    chunks, chunk_doc = [], []
    for d, tokens in enumerate(docs):
        for c in document_chunks(tokens, start, context):
            if len(c) >= 2:  # a lone start token predicts nothing: its gradient is 0
                chunks.append(c)
                chunk_doc.append(d)
    return chunks, chunk_doc


# ---------------------------------------------------------------------------------------------
# familiar's subsets and LDS (attribute/eval.rs, src/rng.rs, src/stats.rs)

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK64

    def next_u64(self):
        self.state = (self.state + GOLDEN) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, n):
        return (self.next_u64() * n) >> 64


def subset_members(n, fraction, seed, m):
    """Which of the n documents subset m holds: round(fraction · n) drawn without replacement."""
    import numpy as np

    rng = SplitMix64(seed ^ (((m + 1) * GOLDEN) & MASK64))
    ids = list(range(n))
    take = min(int(math.floor(fraction * n + 0.5)), n)  # f64::round: halves away from zero
    for i in range(take):
        j = i + rng.below(n - i)
        ids[i], ids[j] = ids[j], ids[i]
    keep = np.zeros(n, dtype=bool)
    keep[ids[:take]] = True
    return keep


def average_ranks(v):
    import numpy as np

    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x, y):
    """Spearman's correlation (Pearson's on average ranks); None when undefined."""
    import numpy as np

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or len(x) != len(y) or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return None
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    sxx, syy = float(rx @ rx), float(ry @ ry)
    if sxx <= 0 or syy <= 0:
        return None
    return max(-1.0, min(1.0, float(rx @ ry) / math.sqrt(sxx * syy)))


def lds_of(doc_scores, members, measured, kinds):
    """Per-query LDS and the means: all, factual, reasoning (NaN where no query has the kind)."""
    import numpy as np

    predicted = doc_scores.astype(np.float64) @ members.T.astype(np.float64)  # queries × subsets
    per_query = [spearman(predicted[q], measured[:, q]) for q in range(len(kinds))]
    per_query = [0.0 if r is None else r for r in per_query]

    def mean(kind):
        v = [r for r, k in zip(per_query, kinds) if kind is None or k == kind]
        return sum(v) / len(v) if v else float("nan")

    return per_query, mean(None), mean("factual"), mean("reasoning")


# ---------------------------------------------------------------------------------------------
# the run: `attribute eval`'s plan, its measured subsets, familiar's LDS, the queries and documents


def add_run_arguments(p):
    """The arguments that name the run: --model, --index, --queries, --eval."""
    p.add_argument("--model", required=True,
                   help="familiar's checkpoint directory (Hugging Face GPT-2 layout)")
    p.add_argument("--index", required=True, help="the index the model and store were built from")
    p.add_argument("--queries", required=True, help="queries JSONL (id, prompt, completion, kind)")
    p.add_argument("--eval", required=True, help="the `familiar attribute eval` run directory")


def load_run(args, tool):
    """The plan, the measured subsets, familiar's lds.json, the queries (plan order), the
    documents, the subsets' membership matrix and the measured log p (subsets × queries); `tool`
    names the reference tool in a note."""
    import numpy as np

    with open(os.path.join(args.eval, "plan.json")) as f:
        plan = json.load(f)
    if plan.get("format") != "familiar-lds-eval":
        raise SystemExit(f"{args.eval}/plan.json is not an `attribute eval` plan")
    results = []
    for m in range(plan["subsets"]):
        path = os.path.join(args.eval, "subsets", f"subset-{m:04d}.json")
        if os.path.exists(path):
            with open(path) as f:
                r = json.load(f)
            if r["subset"] != m or len(r["logprobs"]) != len(plan["queries"]):
                raise SystemExit(f"{path}: not this plan's subset")
            results.append(r)
    if len(results) < 3:
        raise SystemExit(f"{args.eval}: {len(results)} subsets measured; the LDS needs 3")
    familiar_lds = {}
    lds_path = os.path.join(args.eval, "lds.json")
    if os.path.exists(lds_path):
        with open(lds_path) as f:
            familiar_lds = json.load(f)
        if familiar_lds.get("done") != len(results):
            print(f"note: lds.json was written with {familiar_lds.get('done')} subsets measured, "
                  f"{len(results)} are now: {tool}'s LDS uses all {len(results)}", file=sys.stderr)

    by_id = {q["id"]: q for q in read_queries(args.queries)}
    queries = []
    for qid, prompt, completion in plan["queries"]:
        q = by_id.get(qid)
        if q is None or q["prompt"] != prompt or q["completion"] != completion:
            raise SystemExit(f"{args.queries}: query {qid} is not the plan's")
        queries.append(q)

    with open(os.path.join(args.index, "tokenizer.json"), "rb") as f:
        index_tok = f.read()
    with open(os.path.join(args.model, "tokenizer.json"), "rb") as f:
        model_tok = f.read()
    if index_tok != model_tok:
        raise SystemExit(f"{args.model}/tokenizer.json is not the index's tokenizer")
    docs = read_documents(args.index)
    if len(docs) != plan["documents"]:
        raise SystemExit(f"the index has {len(docs)} documents, the run's plan {plan['documents']}")
    members = np.stack([subset_members(len(docs), plan["fraction"], plan["seed"], r["subset"])
                        for r in results])
    for r, keep in zip(results, members):
        if int(keep.sum()) != r["documents"]:
            raise SystemExit(f"subset {r['subset']}: {keep.sum()} members, the run says {r['documents']}")
    measured = np.array([r["logprobs"] for r in results])
    return plan, results, familiar_lds, queries, docs, members, measured


def print_table(familiar_lds, rows, has_kinds, cpu_note):
    """One Markdown table: familiar's rows from lds.json, then `rows` (name, mean, factual,
    reasoning, CPU cell); `cpu_note` says what the reference tool's CPU time covers."""

    def cell(x):
        return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"

    head = "| method | mean LDS |" + (" factual | reasoning |" if has_kinds else "") + " CPU s |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for entry in familiar_lds.get("lds", []):
        damp = f", λ {entry['damping']:g}" if entry.get("damping") is not None else ""
        cells = [cell(entry["mean"])] + ([cell(entry["factual"]), cell(entry["reasoning"])]
                                         if has_kinds else [])
        print(f"| familiar {entry['precondition']}{damp} | " + " | ".join(cells) + " | – |")
    for name, mean, fact, reas, cpu in rows:
        cells = [cell(mean)] + ([cell(fact), cell(reas)] if has_kinds else [])
        print(f"| {name} | " + " | ".join(cells) + f" | {cpu} |")
    if familiar_lds.get("lds"):
        print()
        print("familiar's CPU time is not in lds.json (`attribute store` and `attribute score` "
              "report theirs); " + cpu_note)


# ---------------------------------------------------------------------------------------------
# queries (measure/score.rs: LanguageModel::split and fit)


def query_ids(tokenizer, prompt, completion, start, window):
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False).ids  # noqa: E731
    ctx = enc(prompt)
    whole = enc(prompt + completion)
    cont = whole[len(ctx) :] if whole[: len(ctx)] == ctx else enc(completion)
    if not ctx:
        if start is None:
            raise SystemExit("an empty prompt needs a BOS or EOS token, and config.json names neither")
        ctx = [start]
    if not cont:
        raise SystemExit(f"the completion {completion!r} has no tokens")
    if len(cont) >= window:
        raise SystemExit(f"the completion has {len(cont)} tokens; the model's context holds {window}")
    keep = min(window - len(cont), len(ctx))
    return ctx[len(ctx) - keep :] + cont, keep


def read_queries(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line))
    return out


# ---------------------------------------------------------------------------------------------
# the model and Kronfluence's task


def build(args):
    import torch
    from torch import nn
    from torch.utils import data

    class BiasFree(nn.Module):
        """Conv1D as an nn.Linear without bias (what Kronfluence tracks) plus its bias, untracked:
        the same function, with only the weight in the influence computation, as familiar's rows."""

        def __init__(self, linear, bias):
            super().__init__()
            self.linear = linear
            self.bias = nn.Parameter(bias)

        def forward(self, x):
            return self.linear(x) + self.bias

    def linearize(model):
        """Replaces every transformers Conv1D (y = x W + b, W: in × out) by nn.Linear (W^T)."""
        from transformers.pytorch_utils import Conv1D

        names = []
        for name, module in list(model.named_modules()):
            if not isinstance(module, Conv1D):
                continue
            nx, nf = module.weight.shape
            linear = nn.Linear(nx, nf, bias=args.bias)
            with torch.no_grad():
                linear.weight.copy_(module.weight.t())
                if args.bias:
                    linear.bias.copy_(module.bias)
            replacement = linear if args.bias else BiasFree(linear, module.bias.detach().clone())
            parent = model.get_submodule(name.rsplit(".", 1)[0])
            setattr(parent, name.rsplit(".", 1)[1], replacement)
            names.append(name if args.bias else name + ".linear")
        return names

    class Sequences(data.Dataset):
        """Token sequences; a batch pads them at the end (positions with no mask and no target)."""

        def __init__(self, seqs, first_targets):
            self.seqs, self.first = seqs, first_targets

        def __len__(self):
            return len(self.seqs)

        def __getitem__(self, i):
            return self.seqs[i], self.first[i]

    def collate(items):
        n = max(len(s) for s, _ in items)
        ids = torch.zeros(len(items), n, dtype=torch.long)
        mask = torch.zeros(len(items), n, dtype=torch.long)
        labels = torch.full((len(items), n), -100, dtype=torch.long)
        for b, (s, first) in enumerate(items):
            t = torch.tensor(s, dtype=torch.long)
            ids[b, : len(s)] = t
            mask[b, : len(s)] = 1
            # Token j ≥ max(first, 1) is predicted from those before it (grads::Example).
            labels[b, max(first, 1) : len(s)] = t[max(first, 1) :]
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    from kronfluence.task import Task

    def summed_nll(model, batch, sample=False):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits = logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        if sample:
            # The true Fisher: labels drawn from the model's own predictions where a token is
            # predicted.
            with torch.no_grad():
                drawn = torch.multinomial(torch.softmax(logits.reshape(-1, logits.size(-1)), -1), 1)
            drawn = drawn.reshape(labels.shape)
            labels = torch.where(labels == -100, labels, drawn)
        return nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="sum"
        )

    class FamiliarTask(Task):
        def __init__(self, tracked):
            super().__init__()
            self.tracked = tracked

        def compute_train_loss(self, batch, model, sample=False):
            # L_z: the chunk's summed token NLL (a document's loss is the sum over its chunks).
            return summed_nll(model, batch, sample)

        def compute_measurement(self, batch, model):
            # f_q = −log p(completion | prompt): the completion's summed NLL (see the module doc
            # for why this gives familiar's sign).
            return summed_nll(model, batch)

        def get_influence_tracked_modules(self):
            return self.tracked

        def get_attention_mask(self, batch):
            return batch["attention_mask"]

    return linearize, Sequences, collate, FamiliarTask


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(p)
    p.add_argument("--damping", default="heuristic",
                   help="'heuristic' (0.1 × mean corrected eigenvalue per module) or Kronfluence's "
                        "absolute damping_factor")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--strategy", default="ekfac",
                   help="Kronfluence strategies, comma-separated (ekfac, kfac, diagonal, identity)")
    p.add_argument("--no-head", action="store_true", help="leave the output head (lm_head) out")
    p.add_argument("--bias", action="store_true", help="track the blocks' biases too")
    p.add_argument("--empirical-fisher", action="store_true",
                   help="fit the factors on the actual labels (Kronfluence's default samples them)")
    p.add_argument("--batch", type=int, default=32, help="training chunks per batch")
    p.add_argument("--seed", type=int, default=0, help="torch seed (the sampled Fisher labels)")
    p.add_argument("--verbose", action="store_true", help="Kronfluence's progress bars and logs")
    p.add_argument("--save-scores", metavar="PREFIX",
                   help="write each strategy's document scores (queries × documents, the plan's "
                        "query order, global document ids) to PREFIX-STRATEGY.npy")
    p.add_argument("--logprobs", action="store_true",
                   help="print each query's log p(completion | prompt) under the full model to "
                        "stderr (to compare with `familiar attribute score`'s queries.parquet)")
    p.add_argument("--familiar-scores", action="append", default=[], metavar="NAME=DIR",
                   help="also the LDS of a `familiar attribute score --all` output directory "
                        "(its influence.parquet), on the same subsets, as row NAME (repeatable: "
                        "stores of other layers or ranks, other preconditioners); needs pyarrow")
    args = p.parse_args()
    strategies = [s.strip() for s in args.strategy.split(",") if s.strip()]
    extra_runs = []
    for spec in args.familiar_scores:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            p.error(f"--familiar-scores {spec}: expected NAME=DIR")
        extra_runs.append((name, path))
    for s in strategies:
        if s not in ("ekfac", "kfac", "diagonal", "identity"):
            p.error(f"--strategy {s}: one of ekfac, kfac, diagonal, identity")
    if args.damping == "heuristic":
        damping = None
    else:
        try:
            damping = float(args.damping)
        except ValueError:
            p.error(f"--damping {args.damping}: 'heuristic' or a number")
        if not damping >= 0:
            p.error("--damping must be at least 0")

    missing = missing_packages()
    if missing:
        print(f"kronfluence_lds.py: skipped, {', '.join(missing)} not importable "
              f"(needs torch, transformers, tokenizers, numpy and kronfluence 1.0.x)")
        return 0

    import numpy as np
    import torch
    import kronfluence
    import transformers
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.utils.dataset import DataLoaderKwargs
    from tokenizers import Tokenizer
    from transformers import GPT2LMHeadModel

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.verbose:
        import logging
        import warnings

        warnings.filterwarnings("ignore", category=FutureWarning)  # kronfluence's GradScaler
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        logging.getLogger().setLevel(logging.WARNING)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731

    plan, results, familiar_lds, queries, docs, members, measured = load_run(args, "Kronfluence")
    kinds = [q.get("kind") for q in queries]

    # The model, its tokenizer, its chunks.
    model = GPT2LMHeadModel.from_pretrained(args.model).float()
    model.eval()
    config = model.config
    start = config.bos_token_id if config.bos_token_id is not None else config.eos_token_id
    context = config.n_positions
    tokenizer = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))

    chunk_seqs, chunk_doc = training_chunks(docs, start, context)
    chunk_doc = np.array(chunk_doc)
    q_seqs, q_first = zip(*(query_ids(tokenizer, q["prompt"], q["completion"], start, context)
                            for q in queries))

    linearize, Sequences, collate, FamiliarTask = build(args)
    linear_names = linearize(model)
    tracked = list(linear_names) + ([] if args.no_head else ["lm_head"])
    task = FamiliarTask(tracked)

    train_set = Sequences(chunk_seqs, [1] * len(chunk_seqs))
    query_set = Sequences(list(q_seqs), list(q_first))

    # log p(completion | prompt) of every query under the full model (to compare with the
    # `logprob` column of `familiar attribute score`'s queries.parquet).
    with torch.no_grad():
        batch = collate([query_set[i] for i in range(len(query_set))])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        lp = torch.log_softmax(logits[:, :-1].double(), -1)
        labels = batch["labels"][:, 1:]
        picked = lp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (labels != -100)
        query_logprobs = picked.sum(-1).tolist()

    model = prepare_model(model, task)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kronfluence-lds-") as out:
        analyzer = Analyzer(analysis_name="familiar_lds", model=model, task=task, cpu=True,
                            disable_tqdm=not args.verbose, output_dir=out)
        analyzer.set_dataloader_kwargs(DataLoaderKwargs(collate_fn=collate))
        for strategy in strategies:
            log(f"kronfluence {strategy}: fitting factors on {len(chunk_seqs)} chunks of "
                f"{len(docs)} documents, then scoring {len(queries)} queries")
            torch.manual_seed(args.seed)
            c0, w0 = time.process_time(), time.perf_counter()
            factor_args = FactorArguments(strategy=strategy,
                                          use_empirical_fisher=args.empirical_fisher,
                                          covariance_max_examples=None, lambda_max_examples=None)
            analyzer.fit_all_factors(factors_name=strategy, dataset=train_set,
                                     per_device_batch_size=args.batch, factor_args=factor_args,
                                     overwrite_output_dir=True)
            c1 = time.process_time()
            analyzer.compute_pairwise_scores(
                scores_name=strategy, factors_name=strategy, query_dataset=query_set,
                train_dataset=train_set, per_device_query_batch_size=len(queries),
                per_device_train_batch_size=args.batch,
                score_args=ScoreArguments(damping_factor=damping), overwrite_output_dir=True)
            c2, w2 = time.process_time(), time.perf_counter()
            chunk_scores = analyzer.load_pairwise_scores(strategy)["all_modules"].double().numpy()
            doc_scores = np.zeros((len(queries), len(docs)))
            np.add.at(doc_scores.T, chunk_doc, chunk_scores.T)
            if not np.isfinite(doc_scores).all():
                raise SystemExit(f"kronfluence {strategy}: non-finite scores")
            if args.save_scores:
                np.save(f"{args.save_scores}-{strategy}.npy", doc_scores)
            per_query, mean, fact, reas = lds_of(doc_scores, members, measured, kinds)
            damp = "" if strategy == "identity" else (
                ", damping heuristic (0.1 × mean eigenvalue)" if damping is None
                else f", damping {damping:g}")
            if strategy != "identity" and args.empirical_fisher:
                damp += ", empirical Fisher"
            if args.no_head:
                damp += ", no head"
            rows.append((f"**Kronfluence {strategy}**{damp}", mean, fact, reas,
                         f"{c2 - c0:.1f} (fit {c1 - c0:.1f}, score {c2 - c1:.1f}; wall {w2 - w0:.1f})"))

    # familiar's own score runs, on the same subsets.
    for name, path in extra_runs:
        import pyarrow.parquet as pq

        t = pq.read_table(os.path.join(path, "influence.parquet"),
                          columns=["query_id", "doc_id", "score"]).to_pydict()
        row_of = {q["id"]: i for i, q in enumerate(queries)}
        doc_scores = np.full((len(queries), len(docs)), np.nan)
        for qid, d, v in zip(t["query_id"], t["doc_id"], t["score"]):
            if qid in row_of and d < len(docs):
                doc_scores[row_of[qid], d] = v
        if np.isnan(doc_scores).any():
            raise SystemExit(f"{path}: not every (query, document) is scored: run "
                             f"`familiar attribute score --all` with the run's queries")
        per_query, mean, fact, reas = lds_of(doc_scores, members, measured, kinds)
        rows.insert(0, (f"familiar {name} ({path})", mean, fact, reas, "–"))

    has_kinds = any(k is not None for k in kinds)
    print(f"LDS on `{args.eval}`: {len(results)} of {plan['subsets']} subsets measured "
          f"(fraction {plan['fraction']}, seed {plan['seed']}, {plan['train']['steps']} steps), "
          f"{len(queries)} queries, {len(docs)} documents ({len(chunk_seqs)} chunks of ≤ {context} "
          f"tokens).")
    print(f"Kronfluence {kronfluence.__version__ if hasattr(kronfluence, '__version__') else ''} "
          f"(torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.get_num_threads()} thread(s)): {len(tracked)} modules tracked — "
          f"{len(linear_names)} block linear layers (weights{' and biases' if args.bias else ' only'})"
          f"{'' if args.no_head else ' and the output head lm_head (tied to wte; its own use only)'}"
          f"; {'empirical' if args.empirical_fisher else 'true (sampled-label)'} Fisher; no projection."
          f" Mean query log p under the full model: {sum(query_logprobs) / len(query_logprobs):.4f}.")
    print()
    print_table(familiar_lds, rows, has_kinds,
                "Kronfluence's is process time, all threads, of fitting + scoring.")
    if args.logprobs:
        for q, v in zip(queries, query_logprobs):
            print(f"logprob\t{q['id']}\t{v:.6f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
