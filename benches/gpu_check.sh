#!/usr/bin/env bash
# The checks of `--device cuda` that need an NVIDIA GPU (`attribute store` and `attribute score`,
# and the attribution bench's `score_all_on` row), prepared on a machine without one and run on a
# machine with one. CI never runs this; no test depends on it.
#
#   bash benches/gpu_check.sh prepare   # here: no GPU and no CUDA toolkit needed
#   bash benches/gpu_check.sh run       # on the GPU machine, from the repository root
#
# `prepare` fetches CUDA 13.0 from PyPI wheels (nvcc, cicc, the headers; cuBLAS, cuRAND and
# NVRTC to link against) into .gpu/cuda, builds `familiar` and the attribution bench in release
# with `--features cuda` (candle's kernels for compute capability CUDA_COMPUTE_CAP, default 90:
# the H100 and H200; about an hour on a 2-core machine from an empty target directory), strips both and
# compresses them (xz) into .gpu/bin (.gpu is ignored by git). The binaries load libcuda.so.1,
# libcublas.so.13, libcurand.so.10 and libcudart.so.13 when they start, so they run only where
# CUDA is (not here). The GPU machine needs neither Rust nor CUDA's compiler: its driver
# (CUDA 13.0 or newer), `python3` with pyarrow and NVIDIA's library packages (whose lib folders
# `run` puts on LD_LIBRARY_PATH), and .gpu/bin beside the checkout.
# (With this workplace's device tool: `run` with the command `bash benches/gpu_check.sh run`,
# carrying `.gpu/bin`, about 10 minutes at most; the files come back from $OUT.)
#
# `run` writes its log and tables to $OUT (else .gpu/out):
# 1. `familiar demo` on the embedded fixtures (CPU): the index of 1,200 documents and the checked-in
#    model;
# 2. `attribute store` on the CPU (the fast backward pass) and with `--device cuda` (candle's
#    autograd on the GPU), both timed; then every document scored with `--all` against the 56
#    fixture queries on the CPU under identity, ekfac and trackstar from each store: the stores
#    must give the same scores to 1e-3 relative to the largest (f32 rounding of two different
#    backward passes) and the same top document for every query;
# 3. `attribute score --device cuda` on the CPU's store under identity, cosine, ekfac and trackstar
#    (and --query-mix for trackstar) against the CPU's scores: equal to 1e-4 relative, the same top
#    document; `--leave-one-out` with cuda must be refused with a message;
# 4. the attribution bench in full mode, whose scoring table then has `score_all_on identity (cuda)`.
# FAMILIAR_GPU_DEVICE=cpu runs steps 1–3 with `--device cpu` instead, and FAMILIAR_BIN /
# FAMILIAR_BENCH_BIN name other builds (`skip`: no bench), to try the script on any machine.
set -euo pipefail
cd "$(dirname "$0")/.."
gpu_dir="${FAMILIAR_GPU_DIR:-$PWD/.gpu}"

prepare() {
  local cuda="$gpu_dir/cuda" root
  root="$cuda/nvidia/cu13"
  if [ ! -x "$root/bin/nvcc" ]; then
    # 13.0 matches the GPU machines' driver (580, CUDA 13.0): PTX from a newer nvcc may be a
    # version that driver cannot compile. cuBLAS, cuRAND and NVRTC are only linked against here;
    # the GPU machine's own copies are loaded there.
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$gpu_dir/wheels" \
      nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-runtime==13.0.96 \
      nvidia-cuda-cccl==13.0.85 nvidia-cuda-crt==13.0.88 nvidia-cublas==13.0.2.14 \
      nvidia-cuda-nvrtc==13.0.88 nvidia-curand==10.4.5.25
    mkdir -p "$cuda"
    for w in "$gpu_dir"/wheels/*.whl; do python3 -m zipfile -e "$w" "$cuda"; done
    chmod +x "$root"/bin/* "$root"/nvvm/bin/*
    local lib
    for lib in "$root"/lib/lib*.so.[0-9]*; do
      case "$lib" in *.alt.so* | *builtins*) continue ;; esac
      ln -sf "$(basename "$lib")" "${lib%%.so.*}.so"
    done
  fi
  export CUDA_ROOT="$root" CUDA_PATH="$root" PATH="$root/bin:$PATH"
  export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/cuda}" CARGO_INCREMENTAL=0
  # The library first (candle's kernels, cudarc); then a stand-in libcuda.so to link against:
  # the driver API's functions cudarc calls, empty, under the driver's soname, so that the
  # binaries load the GPU machine's real libcuda.so.1. Never put it on a library path.
  cargo build --release -p familiar-models --features cuda
  if [ ! -f "$root/lib/libcuda.so" ]; then
    local cudarc
    for cudarc in "$CARGO_TARGET_DIR"/release/deps/libcudarc-*.rlib; do
      nm "$cudarc" 2>/dev/null | awk '$1 == "U" && $2 ~ /^cu[A-Z]/ { print "void " $2 "(void) {}" }'
    done | sort -u > "$gpu_dir/libcuda-stand-in.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib/libcuda.so" "$gpu_dir/libcuda-stand-in.c"
  fi
  cargo build --release -p familiar-cli --features cuda
  local bench
  bench=$(cargo bench --no-run -p familiar-benches --bench attribution --features cuda \
    --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "attribution":
        print(m["executable"])')
  mkdir -p "$gpu_dir/bin"
  for pair in "familiar:$CARGO_TARGET_DIR/release/familiar" "attribution-bench:$bench"; do
    local name="${pair%%:*}" path="${pair#*:}"
    # xz: the stripped familiar is about 190 MB, 60 MB gzipped, 30 MB here (carried trees are
    # limited to 64 MiB).
    strip -o "$gpu_dir/bin/$name" "$path"
    xz -9 -T0 -f "$gpu_dir/bin/$name"
  done
  ls -l "$gpu_dir/bin"
  echo "prepared: run 'bash benches/gpu_check.sh run' on the GPU machine with $gpu_dir/bin beside the checkout"
}

run() {
  local out="${OUT:-$gpu_dir/out}" dev="${FAMILIAR_GPU_DEVICE:-cuda}"
  mkdir -p "$out"
  exec > >(tee "$out/gpu_check.log") 2>&1
  tmp=$(mktemp -d)
  trap 'rm -rf "${tmp:-}"' EXIT
  # FAMILIAR_BIN and FAMILIAR_BENCH_BIN: other builds (to try the script without `prepare`).
  local f bench
  f=$(binary familiar "${FAMILIAR_BIN:-}")
  bench=$(binary attribution-bench "${FAMILIAR_BENCH_BIN:-}")
  # cuBLAS, cuRAND and CUDA's runtime: the GPU machine's Python packages hold them (nvidia/*/lib).
  local libs
  libs=$(python3 -c '
import glob, os, sys
dirs = {os.path.dirname(p) for d in sys.path
        for p in glob.glob(os.path.join(d, "nvidia", "*", "lib", "lib*.so*"))}
print(":".join(sorted(dirs)))' 2>/dev/null || true)
  export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  local model=fixtures/models/fixture-gpt2 queries=fixtures/attribution/queries.jsonl
  export OMP_WAIT_POLICY=PASSIVE
  TIMEFORMAT='%R s wall, %U s user, %S s sys'
  nvidia-smi || [ "$dev" = cpu ]
  echo "== 1. the fixture index (familiar demo, CPU)"
  time "$f" demo --out "$tmp/demo" --quiet
  local index="$tmp/demo/index"
  echo "== 2. attribute store: CPU (fast backward pass), then --device $dev (candle autograd)"
  time "$f" attribute store --model "$model" --index "$index" --out "$tmp/store-cpu"
  time "$f" attribute store --model "$model" --index "$index" --out "$tmp/store-dev" --device "$dev"
  for p in identity ekfac trackstar; do
    for s in cpu dev; do
      "$f" attribute score --store "$tmp/store-$s" --model "$model" --queries "$queries" \
        --precondition "$p" --all --out "$tmp/score-$s-$p"
    done
    compare "store --device $dev, $p" "$tmp/score-cpu-$p" "$tmp/score-dev-$p" 1e-3
  done
  echo "== 3. attribute score --device $dev on the CPU's store"
  for spec in identity cosine ekfac trackstar "trackstar --query-mix 0.5"; do
    local tag="${spec// /_}"
    [ -d "$tmp/score-cpu-$tag" ] || "$f" attribute score --store "$tmp/store-cpu" --model "$model" \
      --queries "$queries" --precondition $spec --all --out "$tmp/score-cpu-$tag"
    echo "-- $spec"
    time "$f" attribute score --store "$tmp/store-cpu" --model "$model" --queries "$queries" \
      --precondition $spec --all --device "$dev" --out "$tmp/score-on-$tag"
    compare "score --device $dev, $spec" "$tmp/score-cpu-$tag" "$tmp/score-on-$tag" 1e-4
  done
  if [ "$dev" != cpu ]; then
    if "$f" attribute score --store "$tmp/store-cpu" --model "$model" --queries "$queries" \
      --precondition fisher --leave-one-out --device "$dev" --out "$tmp/loo"; then
      echo "FAILED: --leave-one-out with --device $dev was not refused"
      exit 1
    fi
    echo "ok: --leave-one-out with --device $dev refused"
  fi
  echo "== 4. the attribution bench (full mode)"
  if [ "$bench" = skip ]; then echo "skipped (FAMILIAR_BENCH_BIN=skip)"; else "$bench" --bench; fi
  echo "gpu_check: every check passed"
}

# The path of the prepared binary NAME: OVERRIDE when given, else .gpu/bin/NAME.xz unpacked
# into $tmp (with Python's lzma: the GPU machine may have no xz).
binary() {
  local name="$1" override="$2" packed="$gpu_dir/bin/$1.xz"
  if [ -n "$override" ]; then
    echo "$override"
    return
  fi
  if [ ! -f "$packed" ]; then
    echo "gpu_check: no $packed: run 'bash benches/gpu_check.sh prepare' first and carry .gpu/bin" >&2
    return 1
  fi
  python3 -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as a, open(sys.argv[2], "wb") as b:
    shutil.copyfileobj(a, b)' "$packed" "$tmp/$name"
  chmod +x "$tmp/$name"
  echo "$tmp/$name"
}

# Every query's scores of two runs (`--all`) must agree to `tol` relative to the query's largest
# absolute score, and rank the same document first.
compare() {
  "${PYTHON:-python3}" - "$@" <<'EOF'
import sys
import pyarrow.parquet as pq

what, a, b, tol = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
def load(d):
    t = pq.read_table(f"{d}/influence.parquet").to_pydict()
    out = {}
    for q, doc, s, r in zip(t["query_id"], t["doc_id"], t["score"], t["rank"]):
        out.setdefault(q, {})[doc] = (s, r)
    return out
x, y = load(a), load(b)
if x.keys() != y.keys():
    sys.exit(f"FAILED {what}: different queries")
worst, tops = 0.0, 0
for q in x:
    if x[q].keys() != y[q].keys():
        sys.exit(f"FAILED {what}: query {q} scored different documents")
    scale = max(abs(s) for s, _ in x[q].values()) or 1.0
    worst = max(worst, max(abs(x[q][d][0] - y[q][d][0]) for d in x[q]) / scale)
    first = lambda m: min(m, key=lambda d: m[d][1])
    fx, fy = first(x[q]), first(y[q])
    # A tie within the tolerance may swap the first two.
    if fx != fy and abs(x[q][fx][0] - x[q][fy][0]) > tol * scale:
        tops += 1
print(f"{what}: {len(x)} queries, largest difference {worst:.2e} of the largest score, {tops} other top documents")
if worst > tol or tops:
    sys.exit(f"FAILED {what}")
EOF
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *)
    echo "usage: bash benches/gpu_check.sh prepare|run" >&2
    exit 2
    ;;
esac
