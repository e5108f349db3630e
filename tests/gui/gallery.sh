#!/usr/bin/env bash
# Measures the studio's UI frame time with the history gallery open on a library of N
# runs: the real studio under Xvfb (Mesa's software Vulkan), a library made of six
# shapes-world images copied into N run folders, the gallery opened (Ctrl+H) and
# scrolled down and back with the mouse wheel; CLIPCANVAS_UI_STATS collects the figures.
# Usage: tests/gui/gallery.sh [N] [OUT.png]   (needs: xvfb, mesa-vulkan-drivers, imagemagick, xdotool)
#   CLIPCANVAS_BIN=path uses that binary instead of building the release one.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-1000}
shot=${2:-/tmp/clipcanvas-gallery.png}
. tests/gui/lib.sh
need_display_tools
bin=$(studio_bin)
work=$(mktemp -d)
library=$work/data/clipcanvas/outputs
mkdir -p "$library" "$work/config" "$work/src"
prompts=("a big red circle on a blue background" "a yellow square on a green background"
  "a white star on a black background" "a small blue triangle on a yellow background"
  "a green ring on a white background" "a purple cross on an orange background")
for k in "${!prompts[@]}"; do
  "$bin" generate -p "${prompts[$k]}" --seed "$k" --iterations 30 -o "$work/src/$k.png" >/dev/null
done
for ((i = 0; i < n; i++)); do
  k=$((i % 6))
  # Folder names start with the time, newest first: one run every 7 minutes back.
  stamp=$(date -u -d "@$((1796640000 - 420 * i))" +%Y-%m-%d_%H-%M-%S)
  slug=$(echo "${prompts[$k]}" | tr ' ' '-')
  mkdir -p "$library/${stamp}_$slug"
  cp "$work/src/$k.png" "$library/${stamp}_$slug/final.png"
done
display=:79
Xvfb $display -screen 0 1280x820x24 >/dev/null 2>&1 &
xvfb=$!
trap 'kill $app $xvfb 2>/dev/null || true' EXIT
sleep 1
export XDG_DATA_HOME=$work/data XDG_CONFIG_HOME=$work/config CLIPCANVAS_UI_STATS=$work/stats.json
DISPLAY=$display WGPU_BACKEND=vulkan "$bin" &
app=$!
sleep 8
export DISPLAY=$display
win=$(xdotool search --name clipcanvas | head -1)
xdotool windowfocus "$win"
sleep 0.5
xdotool key ctrl+h
sleep 3
xdotool mousemove 300 300
for dir in 5 4; do
  for ((s = 0; s < 300; s++)); do
    xdotool click $dir
    sleep 0.03
  done
done
sleep 6
import -window root "$shot"
cat "$work/stats.json"
echo "library: $n runs; screenshot: $shot"
