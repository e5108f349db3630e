#!/usr/bin/env bash
# Makes README's shapes-world gallery: `generate` with the built-in shapes world (no
# model flags, so its preset: 128x128, 150 iterations, coarse-to-fine) for a few
# prompts, fixed seeds.
#   tests/shapes/gallery.sh [OUT_DIR]     (default: assets/shapes)
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
  "$bin" generate -p "$prompt" --seed "$seed" -o "$out/$i.png"
done <<'PROMPTS'
a big red circle on a blue background|1
a big yellow square on a black background|1
a big white star on a purple background|1
a big blue ring on a yellow background|1
a big orange cross on a cyan background|1
a big green triangle on a white background|1
PROMPTS
echo "wrote $out"
