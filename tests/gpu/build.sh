#!/usr/bin/env bash
# Compiles the CUDA build for real on a machine without a GPU: installs Debian's CUDA 11.8
# toolkit (the non-free component) if nvcc is missing, then builds and lints the studio and
# the headless binary with `--features cuda`, which compiles candle's CUDA kernels to PTX.
#
#   tests/gpu/build.sh            # compute capability 8.0 (Ampere) unless CUDA_COMPUTE_CAP says
#
# Not part of CI: it installs ~3 GB and compiles every kernel (see docs/gpu.md for its time).
# It needs root for apt when nvcc is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v nvcc >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "nvcc is not on PATH and there is no apt-get to install it: install a CUDA toolkit" >&2
    exit 1
  fi
  . /etc/os-release
  cat > /etc/apt/sources.list.d/clipcanvas-cuda.sources <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: ${VERSION_CODENAME} ${VERSION_CODENAME}-updates
Components: contrib non-free non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nvidia-cuda-toolkit
fi
nvcc --version | tail -n 2

# Debian's CUDA 11.8 nvcc takes host compilers up to gcc 11 and clang 14; bookworm's
# default gcc is 12, and clang-14 comes with the toolkit. NVCC_PREPEND_FLAGS reaches every
# nvcc call (candle-kernels' static-library step ignores NVCC_CCBIN).
if [ -z "${NVCC_PREPEND_FLAGS:-}" ]; then
  probe="$(mktemp -d)"
  echo 'int main() { return 0; }' > "$probe/probe.cu"
  if ! nvcc -c "$probe/probe.cu" -o "$probe/probe.o" >/dev/null 2>&1; then
    for cc in g++-11 clang++-14; do
      if command -v "$cc" >/dev/null 2>&1; then export NVCC_PREPEND_FLAGS="-ccbin $cc"; break; fi
    done
    echo "nvcc's host compiler: ${NVCC_PREPEND_FLAGS:-none found}"
  fi
  rm -rf "$probe"
fi

# candle-kernels asks nvidia-smi for the compute capability; there is none without a GPU.
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/gpu}"
export CARGO_TERM_COLOR=never

step() {
  echo "== $*"
  local start=$SECONDS
  "$@"
  echo "== done in $((SECONDS - start)) s: $*"
}

step cargo build --release --locked --features cuda
step cargo build --release --locked --no-default-features --features cuda
step cargo clippy --locked --all-targets --features cuda -- -D warnings
step cargo clippy --locked --lib --bins --no-default-features --features cuda -- -D warnings
# The CUDA binary links libcuda.so.1 (the driver); without one it cannot start, which is
# all this machine can show of it.
for bin in "$CARGO_TARGET_DIR/release/clipcanvas"; do
  ls -l "$bin"
  ldd "$bin" | grep -E 'cuda|cublas|curand|nvrtc' || true
done
