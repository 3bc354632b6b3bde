"""infini-gram baseline for the trace bench: its `attribute` (the span search behind OLMoTrace) on
the same token stream and texts as familiar's `trace`. Run by benches/benches/trace.rs when
`FAMILIAR_BENCH_PYTHON` (default python3) imports infini_gram (`pip install infini-gram numpy`).

    python3 benches/infini_gram_baseline.py INDEX_DIR QUERIES_JSON OUT_JSON MIN_LEN MEM_GIB EOS

INDEX_DIR holds `tokenized.0` and `offset.0` in infini-gram's layout (written by the bench from
familiar's index); the suffix array (`table.0`) is built here with infini-gram's own indexer the
first time. QUERIES_JSON is a list of token-id lists. Writes to OUT_JSON, per query and per
max_cnt (10 as in OLMoTrace, and 2^40: every span), the spans (l, r, count) and the warm time
of one call (the second of two).
"""

import json
import os
import resource
import subprocess
import sys
import time


def main():
    index_dir, queries_path, out_path = sys.argv[1:4]
    min_len, mem, eos = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    build_seconds = None
    if not os.path.exists(os.path.join(index_dir, "table.0")):
        t0 = time.time()
        subprocess.run(
            [sys.executable, "-m", "infini_gram.indexing", "--data_dir", index_dir,
             "--save_dir", index_dir, "--token_dtype", "u16", "--mem", str(mem),
             "--cpus", str(os.cpu_count()),
             "--ulimit", str(resource.getrlimit(resource.RLIMIT_NOFILE)[1])],
            check=True, stdout=sys.stderr)
        build_seconds = time.time() - t0
    from infini_gram.engine import InfiniGramEngine

    engine = InfiniGramEngine(index_dir=index_dir, eos_token_id=eos, vocab_size=65535,
                              version=4, token_dtype="u16")
    with open(queries_path) as f:
        queries = json.load(f)
    results = []
    for q in queries:
        per = {}
        for max_cnt in (10, 1 << 40):
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                r = engine.attribute(input_ids=q, delim_ids=[], min_len=min_len, max_cnt=max_cnt,
                                     enforce_bow=False)
                times.append(time.perf_counter() - t0)
            if "error" in r:
                raise SystemExit(r["error"])
            per[str(max_cnt)] = {"seconds": times[-1],
                                 "spans": [[s["l"], s["r"], s["count"]] for s in r["spans"]]}
        results.append(per)
    with open(out_path, "w") as f:
        json.dump({"build_seconds": build_seconds, "attribute": results}, f)


if __name__ == "__main__":
    main()
