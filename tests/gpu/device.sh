#!/usr/bin/env bash
# Runs clipcanvas's GPU checks on an NVIDIA machine, with no network and no Rust: the
# PyTorch parity suites on the GPU, then `clipcanvas bench` beside
# tests/reference/bench_reference.py at 256² and 512², cutn 32, in f32 and f16, on the
# same GPU in the same run. Everything lands in $OUT (7 files):
#
#   summary.txt                 the GPU, each suite's result, the side-by-side tables
#   parity.log                  the parity suites' output
#   device.log                  everything else printed
#   clipcanvas-f32.json, clipcanvas-f16.json, pytorch-f32.json, pytorch-f16.json
#
# Needs .gpu/ from tests/gpu/pack.sh (run where Rust is), NVIDIA's driver, Python with
# PyTorch, transformers and CUDA 13's libraries (PyTorch's nvidia-* wheels). About 5
# minutes on an H100. The same steps run on the CPU, small, to check the script itself:
#
#   tests/gpu/pack.sh --cpu
#   CLIPCANVAS_GPU_DEVICE=cpu CLIPCANVAS_GPU_SIZES=32 CLIPCANVAS_GPU_ARCH=small tests/gpu/device.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
OUT="${OUT:-$root/target/gpu-out}"
mkdir -p "$OUT"
device="${CLIPCANVAS_GPU_DEVICE:-cuda}"
sizes="${CLIPCANVAS_GPU_SIZES:-256,512}"
arch="${CLIPCANVAS_GPU_ARCH:-full}"
iterations="${CLIPCANVAS_GPU_ITERATIONS:-5}"
summary="$OUT/summary.txt"
exec 3>&1 >"$OUT/device.log" 2>&1
say() { echo "$*" | tee -a "$summary" >&3; }
: > "$summary"

say "clipcanvas GPU checks, $(date -u +%Y-%m-%dT%H:%MZ), device $device"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/gpu: /' | tee -a "$summary" >&3
fi

# The packed binaries, and CUDA 13's libraries from PyTorch's wheels.
bin="$(mktemp -d)"
tar -C "$bin" -xJf .gpu/clipcanvas.tar.xz || { say "no .gpu/clipcanvas.tar.xz: run tests/gpu/pack.sh first"; exit 1; }
cudalib="$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null)"
[ -d "${cudalib:-}" ] || cudalib="$root/.gpu/cu13/lib"
export LD_LIBRARY_PATH="$cudalib:${LD_LIBRARY_PATH:-}"
# The test binaries read tests/fixtures under the folder they were built in.
built_in="$(cat "$bin/manifest_dir")"
if [ "$built_in" != "$root" ] && [ ! -e "$built_in" ]; then
  mkdir -p "$(dirname "$built_in")" && ln -s "$root" "$built_in"
fi

# 1. The PyTorch parity suites, on the device.
for t in "$bin"/tests/*; do
  name="$(basename "$t")"
  start=$SECONDS
  if CLIPCANVAS_TEST_DEVICE="$device" timeout 300 "$t" --test-threads 1 >>"$OUT/parity.log" 2>&1; then
    say "parity $name: passed ($((SECONDS - start)) s)"
  else
    say "parity $name: FAILED ($((SECONDS - start)) s; see parity.log)"
  fi
done

# 2. The speed and memory of an iteration, clipcanvas then PyTorch, per precision.
if [ -d .gpu/wheels ] && ls .gpu/wheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/clipcanvas-site .gpu/wheels/*.whl \
    && export PYTHONPATH="/tmp/clipcanvas-site:${PYTHONPATH:-}"
fi
common=(--sizes "$sizes" --cutn 32 --iterations "$iterations" --warmup 2)
for p in f32 f16; do
  timeout 240 "$bin/clipcanvas" bench --arch "$arch" --device "$device" --precision "$p" "${common[@]}" \
    --json "$OUT/clipcanvas-$p.json" || say "clipcanvas bench $p: FAILED (see device.log)"
  if [ "$arch" = full ]; then
    timeout 240 python3 tests/reference/bench_reference.py --device "$device" --precision "$p" "${common[@]}" \
      --json "$OUT/pytorch-$p.json" || say "pytorch bench $p: FAILED (see device.log)"
  fi
  if [ -f "$OUT/clipcanvas-$p.json" ]; then
    theirs=()
    [ -f "$OUT/pytorch-$p.json" ] && theirs=("$OUT/pytorch-$p.json")
    python3 - "$OUT/clipcanvas-$p.json" "${theirs[@]}" <<'PY' | tee -a "$summary" >&3
import json, sys
ours = json.load(open(sys.argv[1]))
theirs = json.load(open(sys.argv[2])) if len(sys.argv) > 2 else None
print(f"{ours['arch']} on {ours['device']}, {ours.get('precision', 'f32')}, cutn {ours['cutn']}")
for r in ours["results"]:
    t = next((x for x in (theirs or {}).get("results", []) if x["size"] == r["size"]), None)
    mb = lambda b: f"{b / 2**20:.0f} MiB" if b else "-"
    line = f"  {r['size']}²: clipcanvas {1 / r['seconds_per_iteration']:.2f} it/s, peak {mb(r.get('peak_device_bytes'))}"
    if t:
        line += (f"; pytorch {1 / t['seconds_per_iteration']:.2f} it/s, peak {mb(t.get('peak_device_bytes'))}"
                 f" (allocated {mb(t.get('peak_gpu_bytes'))}); time ratio {r['seconds_per_iteration'] / t['seconds_per_iteration']:.2f}")
    tr = r.get("transfers")
    if tr:
        line += f"; host→device {tr['uploads']} copies, {tr['upload_bytes'] / 1e6:.1f} MB an iteration"
    print(line)
PY
  fi
done
say "done in $SECONDS s"
