"""Python bench: familiar's Python package against infini-gram's Python engine, same process, same
corpus (the trace bench's real-corpus index and its infini-gram copy, both under
target/bench-data; run `cargo bench -p familiar-benches --bench trace` with FAMILIAR_BENCH_PYTHON
pointing at a Python with infini-gram first). Needs `familiar` built in release
(`maturin develop --release` in query/python) and, for the baseline, `pip install infini-gram`.

    python benches/python_bench.py [INDEX_DIR [INFINI_GRAM_DIR]]

Reports: import + open time; one `count` call from Python (p50, p99 over n-grams of 1-5 tokens
drawn from the corpus) against infini-gram's `engine.count`; `count_many` of 100,000 n-grams
against infini-gram's per-call loop over the same n-grams; every answer compared.
"""

import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "target" / "bench-data"


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round((len(xs) - 1) * p))]


def fmt(s):
    return f"{s * 1e6:.1f} µs" if s < 1e-3 else f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def main():
    index_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else BENCH / "concepts-real-gpt2"
    ig_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else BENCH / "infini-gram-concepts-real-gpt2"
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo; nproc"],
                         capture_output=True, text=True).stdout.split("\n")
    print(f"python bench on {cpu[0].split(':')[-1].strip()}, nproc {cpu[1].strip()}; index {index_dir}")

    # Warm page cache for both indexes: every file read once.
    for d in (index_dir, ig_dir):
        for f in sorted(Path(d).rglob("*")):
            if f.is_file():
                with open(f, "rb") as fh:
                    while fh.read(1 << 24):
                        pass

    # Import and open, in a fresh interpreter (cold import, warm page cache).
    code = ("import time; t0 = time.perf_counter(); import familiar; "
            f"i = familiar.Index({str(index_dir)!r}); print(time.perf_counter() - t0)")
    opens = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  check=True).stdout) for _ in range(5)]
    print(f"import + open: median {fmt(percentile(opens, 0.5))} (target ≤ 50 ms)")

    import numpy as np
    import familiar

    index = familiar.Index(index_dir)
    rng = random.Random(3)
    n_docs = index.num_documents
    queries = []
    while len(queries) < 100_000:
        d = rng.randrange(n_docs)
        toks = index.doc_tokens(d, 0, 2000)
        if len(toks) < 8:
            continue
        for _ in range(10):
            n = rng.randint(1, 5)
            i = rng.randrange(len(toks) - n + 1)
            queries.append(toks[i:i + n])
    queries = queries[:100_000]

    # One call at a time.
    calls = queries[:20_000]
    for q in calls[:500]:
        index.count(tokens=q)
    times = []
    for q in calls:
        t0 = time.perf_counter()
        index.count(tokens=q)
        times.append(time.perf_counter() - t0)
    p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
    t0 = time.perf_counter()
    many = index.count_many(queries)
    t_many = time.perf_counter() - t0
    print(f"familiar count: p50 {fmt(p50)}, p99 {fmt(p99)} per call (target p50 ≤ 15 µs); "
          f"count_many of {len(queries):,}: {fmt(t_many)}")

    try:
        from infini_gram.engine import InfiniGramEngine
    except ImportError:
        print("infini-gram: SKIPPED — not installed (pip install infini-gram)")
        return
    if not (ig_dir / "table.0").exists():
        print(f"infini-gram: SKIPPED — no index at {ig_dir} (run the trace bench with infini-gram first)")
        return
    eng = InfiniGramEngine(index_dir=str(ig_dir), eos_token_id=index.vocab_size - 1,
                           vocab_size=65535, version=4, token_dtype="u16")
    for q in calls[:500]:
        eng.count(input_ids=q)
    ig_times = []
    for q in calls:
        t0 = time.perf_counter()
        r = eng.count(input_ids=q)
        ig_times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    ig_many = [eng.count(input_ids=q)["count"] for q in queries]
    t_ig_loop = time.perf_counter() - t0
    assert list(map(int, many)) == ig_many, "counts differ from infini-gram's"
    ig50 = percentile(ig_times, 0.5)
    print(f"infini-gram count: p50 {fmt(ig50)}, p99 {fmt(percentile(ig_times, 0.99))} per call; "
          f"its loop over the {len(queries):,}: {fmt(t_ig_loop)}")
    print(f"ratios: one call {ig50 / p50:.1f}× (p50); count_many {t_ig_loop / t_many:.1f}× "
          f"(target ≥ 20×); all {len(queries):,} counts equal")


if __name__ == "__main__":
    main()
