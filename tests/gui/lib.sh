# What the studio's measurement scripts share (sourced from the repository root).

# Installs Xvfb, Mesa's software Vulkan, ImageMagick and xdotool when one is missing.
need_display_tools() {
  if ! command -v Xvfb >/dev/null || ! command -v import >/dev/null || ! command -v xdotool >/dev/null; then
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get install -y -q xvfb mesa-vulkan-drivers imagemagick xdotool >/dev/null
  fi
}

# The studio binary: $CLIPCANVAS_BIN, else the release build (built now).
studio_bin() {
  if [ -n "${CLIPCANVAS_BIN:-}" ]; then
    echo "$CLIPCANVAS_BIN"
  else
    cargo build --release --quiet >&2
    echo ./target/release/clipcanvas
  fi
}
