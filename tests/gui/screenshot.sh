#!/usr/bin/env bash
# Runs the real studio under Xvfb on Mesa's software Vulkan and saves a screenshot.
# Usage: tests/gui/screenshot.sh [OUT.png] [SECONDS]   (needs: xvfb, mesa-vulkan-drivers, imagemagick)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-assets/screenshot.png}
wait_s=${2:-20}
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
DISPLAY=$display WGPU_BACKEND=vulkan ./target/release/clipcanvas &
app=$!
sleep "$wait_s"
DISPLAY=$display import -window root "$out"
echo "screenshot: $out"
