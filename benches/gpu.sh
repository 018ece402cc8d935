#!/usr/bin/env bash
# kiln on an NVIDIA GPU, in one run of a few minutes:
#   (a) builds kiln with --features cuda in release (the CLI, tests/cuda.rs and
#       examples/gpu_bench.rs);
#   (b) runs tests/cuda.rs with KILN_TEST_CUDA=1: random graphs, the regression
#       graphs and random convolutions (the implicit GEMM) against the interpreter on
#       the GPU (bit for bit), and the digits MLP
#       trained on the GPU to the CPU's accuracy; then `kiln bench --device cuda` on
#       the digits model as a smoke test of the command line;
#   (c) W1 sgemm, n = 1024, 2048, 4096, 8192: kiln's GPU kernel (examples/gpu_bench.rs,
#       synchronised wall time per run) against torch.matmul on cuda (cuBLAS, TF32 off,
#       timed with CUDA events; benches/gpu_torch.py), medians of repeats;
#   (d) the fused elementwise chain y = tanh(x*a + b)*c on 2^26 f32 against the card's
#       memory bandwidth (a device-to-device copy in torch);
# and prints one table at the end (also written to bench-results/gpu/table.md).
#
# Usage: benches/gpu.sh [--sgemm 1024,2048,4096,8192] [--chain 26] [--graphs N]
#                       [--no-torch]
#
#   --graphs    random graphs in the differential test (KILN_TEST_CUDA_GRAPHS, default
#               2000)
#   --no-torch  measure kiln only (no peers' venv needed)
#
# Needs an NVIDIA driver (nvidia-smi), cargo, and for torch the peers' venv ($VENV,
# default ~/.cache/kiln-bench-venv) with a CUDA build of torch: `bash ../shared/bench/run.sh`
# creates it (torch from PyPI comes with its CUDA libraries), or
# `python3 -m venv $VENV && $VENV/bin/pip install -r ../shared/bench/requirements.txt`.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed -n 's/^# \{0,1\}//p'; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$HOME/.cache/kiln-bench-venv}
PY=$VENV/bin/python
OUT=$ROOT/bench-results/gpu
sgemm=1024,2048,4096,8192
chain=26
graphs=2000
torch=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --sgemm) sgemm=$2; shift 2 ;;
    --chain) chain=$2; shift 2 ;;
    --graphs) graphs=$2; shift 2 ;;
    --no-torch) torch=no; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

# Prints each command before running it.
run() { echo "+ $*" >&2; "$@"; }
die() { echo "error: $*" >&2; exit 1; }

# Everything that could stop the run is checked before the build.
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this script needs an NVIDIA GPU and its driver"
card=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -n 1)
[ -n "$card" ] || die "nvidia-smi lists no GPU"
if [ "$torch" = yes ]; then
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    die "no peers' venv with a CUDA torch at $VENV: make it with \`bash ../shared/bench/run.sh\` (or \`python3 -m venv $VENV && $VENV/bin/pip install -r ../shared/bench/requirements.txt\`), or run with --no-torch"
  fi
fi
mkdir -p "$OUT"
cd "$ROOT"
start=$SECONDS
echo "card: $card"

# (a)
run cargo build --release --features cuda --bin kiln --example gpu_bench
run cargo test --release --features cuda --test cuda --no-run

# (b)
export KILN_TEST_CUDA=1 KILN_TEST_CUDA_GRAPHS=$graphs
echo "+ export KILN_TEST_CUDA=1 KILN_TEST_CUDA_GRAPHS=$graphs" >&2
run cargo test --release --features cuda --test cuda -- --nocapture --test-threads 1 2>&1 \
  | tee "$OUT/tests.log"
grep -q "skipped" "$OUT/tests.log" && die "a GPU test was skipped although KILN_TEST_CUDA=1"
accuracy=$(grep -o "test accuracy: cpu [0-9.]*, gpu [0-9.]*" "$OUT/tests.log" || echo "?")
differential=$(grep -o "[0-9]* graphs on the GPU, [0-9]* differ" "$OUT/tests.log" || echo "?")
convolutions=$(grep -o "[0-9]* convolutions on the GPU, [0-9]* differ" "$OUT/tests.log" || echo "?")
run target/release/kiln bench examples/models/mlp_digits.kiln --device cuda --steps 20 \
  | tee "$OUT/kiln-bench.txt"

# (c), (d)
run target/release/examples/gpu_bench --sgemm "$sgemm" --chain "$chain" | tee "$OUT/kiln.txt"
if [ "$torch" = yes ]; then
  run "$PY" benches/gpu_torch.py --sgemm "$sgemm" --chain "$chain" | tee "$OUT/torch.txt"
else
  : > "$OUT/torch.txt"
fi

# The value of KEY= on the line of FILE that starts with "KIND n=N ", or "-".
value() {
  awk -v kind="$2" -v n="$3" -v key="$4" '
    $1 == kind && $2 == "n=" n {
      for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) { print kv[2]; found = 1 } }
    }
    END { if (!found) print "-" }' "$1"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f\n", a / b }'; }

chain_n=$((1 << chain))
{
  echo "card: $card"
  echo "differential: $differential; $convolutions; digits MLP $accuracy"
  echo
  echo "| workload | kiln ms | torch ms | kiln / torch time | kiln GFLOP/s | torch GFLOP/s |"
  echo "|---|---|---|---|---|---|"
  for n in ${sgemm//,/ }; do
    k=$(value "$OUT/kiln.txt" sgemm "$n" median_ms); t=$(value "$OUT/torch.txt" sgemm "$n" median_ms)
    echo "| W1 sgemm n=$n | $k | $t | $(ratio "$k" "$t") | $(value "$OUT/kiln.txt" sgemm "$n" gflops) | $(value "$OUT/torch.txt" sgemm "$n" gflops) |"
  done
  echo
  echo "| workload | kiln ms | kiln kernels | kiln GB/s | copy GB/s (torch) | kiln / copy | torch eager ms |"
  echo "|---|---|---|---|---|---|---|"
  kg=$(value "$OUT/kiln.txt" chain "$chain_n" gbps); cg=$(value "$OUT/torch.txt" copy "$chain_n" gbps)
  echo "| tanh(x*a+b)*c, 2^$chain f32 | $(value "$OUT/kiln.txt" chain "$chain_n" median_ms) | $(value "$OUT/kiln.txt" chain "$chain_n" kernels) | $kg | $cg | $(ratio "$kg" "$cg") | $(value "$OUT/torch.txt" chain "$chain_n" median_ms) |"
  echo
  echo "GB/s counts 8 bytes per element (x read, y written once); kiln's times are wall"
  echo "time of a synchronised run (launch overhead included), torch's CUDA events."
  echo "whole script: $((SECONDS - start)) s"
} | tee "$OUT/table.md"
