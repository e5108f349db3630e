#!/usr/bin/env bash
# Packs what tests/gpu/device.sh needs on a GPU machine that has NVIDIA's driver, CUDA 13
# libraries (PyTorch's wheels) and Python, but no Rust toolchain and no network:
#
#   .gpu/clipcanvas.tar.xz   the headless CUDA binary and the PyTorch parity suites as test
#                            binaries, built here for compute capability 9.0 (H100/H200)
#                            and linked against CUDA 13's libraries (libcublas.so.13, ...)
#   .gpu/wheels/             the Python packages tests/reference/bench_reference.py needs
#                            beyond PyTorch and transformers (taming, open_clip, ftfy)
#
#   tests/gpu/pack.sh        # then, on the GPU machine: tests/gpu/device.sh
#   tests/gpu/pack.sh --cpu  # the same without CUDA, to rehearse device.sh on the CPU
#
# Needs nvcc (tests/gpu/build.sh installs Debian's CUDA 11.8: its PTX runs on newer
# drivers) and pip with access to PyPI for CUDA 13's libraries to link against.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
pack="$root/.gpu"
mkdir -p "$pack/cu13" "$pack/wheels"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
pip=${PIP:-pip3}
cpu=false
[ "${1:-}" = --cpu ] && cpu=true

# CUDA 13's libraries from PyPI (the wheels PyTorch cu130 uses), with the unversioned
# names the linker looks for.
if ! $cpu && [ ! -e "$pack/cu13/lib/libcublas.so" ]; then
  tmp="$(mktemp -d)"
  "$pip" download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    "nvidia-cublas>=13,<14" "nvidia-curand>=10,<11" "nvidia-cuda-nvrtc>=13,<14" "nvidia-cuda-runtime>=13,<14" -d "$tmp"
  for w in "$tmp"/*.whl; do unzip -q -o "$w" 'nvidia/cu13/lib/*' -d "$tmp/x"; done
  mkdir -p "$pack/cu13/lib"
  cp -a "$tmp"/x/nvidia/cu13/lib/* "$pack/cu13/lib/"
  (cd "$pack/cu13/lib" && for f in *.so.*; do ln -sf "$f" "${f%%.so.*}.so"; done)
  rm -rf "$tmp"
fi

# The host compiler Debian's nvcc accepts (see build.sh).
if [ -z "${NVCC_PREPEND_FLAGS:-}" ] && command -v clang++-14 >/dev/null 2>&1; then
  export NVCC_PREPEND_FLAGS="-ccbin clang++-14"
fi
suites=(clip_reference vqgan_reference gradient_reference engine_step half_reference engine_transfers)
if $cpu; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/gpu-pack-cpu}"
  features=(--locked --release --no-default-features)
else
  export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
  export CUDARC_CUDA_VERSION=13000
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/gpu-pack}"
  export RUSTFLAGS="-L native=$pack/cu13/lib"
  features=(--locked --release --no-default-features --features cuda)
fi
cargo build "${features[@]}" --bin clipcanvas
tests=$(cargo test "${features[@]}" --no-run --message-format=json $(printf -- '--test %s ' "${suites[@]}") 2>/dev/null \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])')

stage="$(mktemp -d)"
mkdir -p "$stage/tests"
cp "$CARGO_TARGET_DIR/release/clipcanvas" "$stage/"
for t in $tests; do
  name=$(basename "$t"); cp "$t" "$stage/tests/${name%-*}"
done
strip "$stage/clipcanvas" "$stage"/tests/*
# The test binaries find tests/fixtures through the path they were built in.
echo "$root" > "$stage/manifest_dir"
tar -C "$stage" -cJf "$pack/clipcanvas.tar.xz" .
rm -rf "$stage"

"$pip" download -q --no-deps --only-binary=:all: --python-version 3.12 -d "$pack/wheels" \
  taming-transformers-rom1504==0.0.6 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
du -sh "$pack/clipcanvas.tar.xz" "$pack/wheels"
echo "carry .gpu to the GPU machine and run tests/gpu/device.sh there"
