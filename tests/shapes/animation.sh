#!/usr/bin/env bash
# Makes README's animation with the built-in shapes world (no model flags): a one-step
# draft of a red circle as frame 0, then a zoom that turns and sways; 36 frames at
# 12 fps, with the time taken.
#   tests/shapes/animation.sh [OUT_DIR]     (default: assets/shapes)
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-assets/shapes}"
mkdir -p "$out"
cargo build --release --quiet
bin=target/release/clipcanvas
frames=$(mktemp -d)
trap 'rm -rf "$frames"' EXIT
start=$(date +%s.%N)
"$bin" animate --one-step --seed 4 --frames 36 --iterations-per-frame 6 -p "a big red circle on a blue background" \
  --zoom "0:(1.0), 8:(1.035)" --angle 2 --translation-x "0:(1.5*sin(t/6))" --init-weight 1 \
  --frames-dir "$frames/f" --gif "$out/animation.gif"
end=$(date +%s.%N)
echo "36 frames in $(echo "$end - $start" | bc) s"
echo "wrote $out/animation.gif"
