#!/usr/bin/env bash
# Makes README's drawers gallery with the built-in shapes world (no model flags): for each
# prompt, the same run (seed, 150 iterations of the shapes preset) drawn by pixel cells
# (pixel-N.png, 24×24 cells) and by the Fourier drawer (fft-N.png, colours 3: the shapes
# world's saturated colours come through better than at pixray's 1.5); a tiled image
# shown 2×2; a region prompt beside the same run without it.
#   tests/shapes/drawers.sh [OUT_DIR]     (default: assets/shapes)
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-assets/shapes}"
mkdir -p "$out"
cargo build --release --quiet
bin=target/release/clipcanvas
i=0
while IFS='|' read -r prompt seed; do
  [ -z "$prompt" ] && continue
  i=$((i + 1))
  echo "[$i] $prompt (seed $seed)"
  "$bin" generate -p "$prompt" --seed "$seed" --generator pixel --pixel-size 24x24 -o "$out/pixel-$i.png"
  "$bin" generate -p "$prompt" --seed "$seed" --generator fft --fft-colors 3 -o "$out/fft-$i.png"
done <<'PROMPTS'
a big red circle on a blue background|1
a small yellow square on the left on a green background|1
a purple background with a big white star at the top|1
PROMPTS
# --tile: the first prompt as an image that tiles, shown 2×2 (needs ImageMagick's convert).
"$bin" generate -p "a big red circle on a blue background" --seed 1 --tile -o "$out/tile.png"
convert \( "$out/tile.png" "$out/tile.png" +append \) \( "$out/tile.png" "$out/tile.png" +append \) -append \
  "$out/tile-2x2.png"
# A region prompt: "a white background" only on the left half (region-mask.png), over
# "a purple background"; region-plain.png is the same run without it.
convert -size 64x128 xc:white -size 64x128 xc:black +append "$out/region-mask.png"
"$bin" generate -p "a purple background" --seed 1 -o "$out/region-plain.png"
"$bin" generate -p "a purple background" --region "a white background" --region-mask "$out/region-mask.png" \
  --seed 1 -o "$out/region.png"
echo "wrote $out"
