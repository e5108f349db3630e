#!/usr/bin/env bash
# Measures the studio's UI frame time and frame-to-texture latency with the engine
# running flat out: the real studio under Xvfb (Mesa's software Vulkan), the shapes world
# at 512x512 keeping every iteration's frame, CLIPCANVAS_UI_STATS collecting the figures.
# Usage: tests/gui/measure.sh [SECONDS] [OUT.png]
#   CLIPCANVAS_BIN=path uses that binary instead of building the release one.
set -euo pipefail
cd "$(dirname "$0")/../.."
run_s=${1:-120}
shot=${2:-/tmp/clipcanvas-measure.png}
. tests/gui/lib.sh
need_display_tools
bin=$(studio_bin)
work=$(mktemp -d)
cat > "$work/settings.json" <<'JSON'
{"prompts": ["a big red circle on a blue background:1"], "width": 512, "height": 512,
 "cutn": 8, "iterations": 100000, "save_every": 1, "augments": ["affine", "noise"]}
JSON
display=:78
Xvfb $display -screen 0 1280x820x24 >/dev/null 2>&1 &
xvfb=$!
trap 'kill $app $xvfb 2>/dev/null || true' EXIT
sleep 1
export XDG_DATA_HOME=$work XDG_CONFIG_HOME=$work CLIPCANVAS_UI_STATS=$work/stats.json
DISPLAY=$display WGPU_BACKEND=vulkan "$bin" --settings "$work/settings.json" --start &
app=$!
sleep "$run_s"
DISPLAY=$display import -window root "$shot"
cat "$work/stats.json"
echo "screenshot: $shot"
