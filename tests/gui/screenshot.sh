#!/usr/bin/env bash
# Runs the real studio under Xvfb on Mesa's software Vulkan and saves a screenshot: the
# shapes world drafting a prompt in one step and refining the draft (a settings file
# with a one-step start and 60 iterations, opened with --start).
# Usage: tests/gui/screenshot.sh [OUT.png] [SECONDS]   (needs: xvfb, mesa-vulkan-drivers, imagemagick)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-assets/screenshot.png}
wait_s=${2:-40}
if ! command -v Xvfb >/dev/null || ! command -v import >/dev/null; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get install -y -q xvfb mesa-vulkan-drivers imagemagick >/dev/null
fi
cargo build --release --quiet
display=:77
Xvfb $display -screen 0 1280x820x24 >/dev/null 2>&1 &
xvfb=$!
trap 'kill $app $xvfb 2>/dev/null || true' EXIT
sleep 1
# A fresh profile, so the screenshot shows the defaults and not a past session.
export XDG_DATA_HOME=$(mktemp -d) XDG_CONFIG_HOME=$(mktemp -d)
settings=$(mktemp --suffix .json)
cat > "$settings" <<'JSON'
{
  "prompts": ["a big white star at the top on a purple background:1"],
  "width": 128, "height": 128, "cutn": 16, "iterations": 60, "save_every": 10,
  "augments": ["affine", "noise"], "init_weight": 0.5, "seed": 3,
  "one_step": {"candidates": 8}
}
JSON
DISPLAY=$display WGPU_BACKEND=vulkan ./target/release/clipcanvas --settings "$settings" --start &
app=$!
sleep "$wait_s"
DISPLAY=$display import -window root "$out"
echo "screenshot: $out"
