#!/usr/bin/env bash
# Makes README's shapes-world gallery with the built-in shapes world (no model flags):
# for each prompt, the one-step draft (draft-N.png) and the draft refined for 50
# iterations (refined-N.png), fixed seeds. (The gallery of plain `generate` from random
# codes, assets/shapes/N.png, was made by this script's earlier version: git history.)
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
  "$bin" generate -p "$prompt" --seed "$seed" --one-step -o "$out/draft-$i.png"
  "$bin" generate -p "$prompt" --seed "$seed" --one-step -i 50 --init-weight 0.5 -o "$out/refined-$i.png"
done <<'PROMPTS'
a big red circle on a blue background|1
a small yellow square on the left on a green background|1
a purple background with a big white star at the top|1
big orange triangle, right, black background|1
a tiny cyan ring in the centre on a pink background|1
a large black cross at the bottom on a yellow background|1
PROMPTS
echo "wrote $out"
