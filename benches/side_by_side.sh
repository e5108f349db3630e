#!/usr/bin/env bash
# Runs the iteration benchmark in PyTorch (tests/reference/bench_reference.py) and in
# clipcanvas (`clipcanvas bench`) one after the other on this machine, with the same
# sizes, cutouts and iteration counts, and prints clipcanvas's table beside PyTorch's
# with the time ratio. Needs the reference venv (tests/reference/requirements.txt) and
# a built clipcanvas; nothing else may be running (both use every core).
#
#   benches/side_by_side.sh [SIZES] [ITERATIONS] [WARMUP]    # defaults: 256,512 3 1
#   CLIPCANVAS=target/release/clipcanvas PYTHON=/work/venv/bin/python benches/side_by_side.sh
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${1:-256,512}
iterations=${2:-3}
warmup=${3:-1}
python=${PYTHON:-python3}
clipcanvas=${CLIPCANVAS:-target/release/clipcanvas}
out=${OUT:-target/bench}
mkdir -p "$out"
threads=$(nproc)
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $threads cores, $(free -g | awk '/Mem:/ {print $2}') GiB" >&2
"$python" tests/reference/bench_reference.py --sizes "$sizes" --iterations "$iterations" --warmup "$warmup" \
    --threads "$threads" --json "$out/pytorch.json" >&2
"$clipcanvas" bench --sizes "$sizes" --iterations "$iterations" --warmup "$warmup" \
    --json "$out/clipcanvas.json" --compare "$out/pytorch.json"
