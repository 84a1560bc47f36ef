#!/usr/bin/env bash
# Run the CPU-scale versions of the paper's experiments into docs/results/<name>/ and record
# the wall time of each. Usage: bash docs/reproduce.sh [NAME...]   (default: all cpu_* configs)
# DATA_ROOT (default ../shared/data) must hold MNIST/ and FashionMNIST/ in torchvision's layout,
# or be writable and online (torchvision downloads them there).
# PARALLEL=N runs each comparison's runs N at a time as Ray tasks (compare --parallel N), and
# RAY_ADDRESS=auto|host:port runs them on that running Ray cluster (docs/scale.md); the results
# are the same as one by one.
set -euo pipefail
cd "$(dirname "$0")/.."
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
CLI="${CLI:-.venv/bin/flwr-multilevel}"
DATA_ROOT="${DATA_ROOT:-../shared/data}"
names=("$@")
sweep=()
[ -n "${PARALLEL:-}" ] && sweep+=(--parallel "$PARALLEL")
[ -n "${RAY_ADDRESS:-}" ] && sweep+=(--ray-address "$RAY_ADDRESS")
if [ ${#names[@]} -eq 0 ]; then
  names=(cpu_fig1_mnist cpu_fig2_mnist cpu_fig4_mnist cpu_fig6_mnist cpu_fig1_fashion cpu_fig6_fashion
         cpu_fig2_mnist_dirichlet)
fi
timings=docs/results/timings.csv
[ -f "$timings" ] || echo "experiment,wall_s,cpu_cores" > "$timings"
for name in "${names[@]}"; do
  start=$(date +%s)
  "$CLI" compare "baselines/paper/$name.yaml" "data.root=$DATA_ROOT" --out "docs/results/$name" \
    ${sweep[@]+"${sweep[@]}"}
  echo "$name,$(( $(date +%s) - start )),$(nproc)" >> "$timings"
done
