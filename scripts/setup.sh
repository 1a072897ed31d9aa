#!/usr/bin/env bash
# One-time (idempotent) set-up: system libraries, and a Python environment outside the
# checkout that provides libtorch 2.11.0 (for tch 0.24) and, with --test, the pinned
# official SAM 2 reference used by the parity tests.
set -euo pipefail

want_ref=0
[ "${1:-}" = "--test" ] && want_ref=1

cache="${SAM2_TUI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sam2-tui}"
venv="$cache/venv"
py="${PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*" >&2; }

# --- system packages -------------------------------------------------------------------
if [ "$(uname)" = "Linux" ] && command -v apt-get >/dev/null; then
  pkgs="libavformat-dev libavcodec-dev libavutil-dev libswscale-dev libavfilter-dev
        libavdevice-dev libswresample-dev clang libclang-dev pkg-config tmux ffmpeg libturbojpeg0-dev"
  # `sam2-tui weights download` fetches with curl (tests/weights.rs: a mirror, a stall).
  pkgs="$pkgs curl"
  # The real-terminal test (tests/console_xterm.rs): xterm in sixel mode on a virtual X
  # display, a click sent by xdotool, a screenshot taken with xwd.
  [ "$want_ref" = 1 ] && pkgs="$pkgs xvfb xterm x11-apps xdotool xfonts-base"
  # `make test` starts a one-node Slurm of its own (tests/batch_slurm.rs).
  [ "$want_ref" = 1 ] && pkgs="$pkgs slurm-wlm munge"
  # The official web demo's front end in a real browser (tests/serve_browser.rs): Debian's
  # Chromium, and Node with npm to build the front end (a Node already on PATH will do).
  [ "$want_ref" = 1 ] && pkgs="$pkgs chromium"
  [ "$want_ref" = 1 ] && ! command -v node >/dev/null && pkgs="$pkgs nodejs npm"
  missing=""
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    log "installing system packages:$missing"
    sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq $missing >/dev/null
  fi
elif [ "$(uname)" = "Darwin" ]; then
  command -v brew >/dev/null || { echo "setup: Homebrew is required on macOS (https://brew.sh)" >&2; exit 1; }
  for p in ffmpeg pkg-config llvm tmux jpeg-turbo; do brew list "$p" >/dev/null 2>&1 || brew install "$p"; done
fi

# --- the style checks `make test` runs (rustup's default profile has them) --------------
if [ "$want_ref" = 1 ] && command -v rustup >/dev/null; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || { log "adding the $c component"; rustup component add "$c" >&2; }
  done
fi

# --- python environment (libtorch comes from the torch wheel) ---------------------------
if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  mkdir -p "$cache"
  "$py" -m venv "$venv"
fi
vpy="$venv/bin/python"
if ! "$vpy" -c 'import torch,sys; sys.exit(0 if torch.__version__.startswith("2.11.0") else 1)' 2>/dev/null; then
  log "installing torch==2.11.0 (large, once)"
  "$vpy" -m pip install -q --upgrade pip wheel setuptools
  "$vpy" -m pip install -q torch==2.11.0 numpy pillow
fi
# The CUDA runtime headers' crt/ part, for the CUDA-graph shim (build.rs): the torch wheel
# brings cuda_runtime.h but not crt/host_config.h. Under 1 MB; Linux CUDA builds only.
if [ -d "$("$vpy" -c 'import torch,os;print(os.path.dirname(torch.__file__))')/../nvidia/cu13/include" ] \
  && [ ! -f "$("$vpy" -c 'import torch,os;print(os.path.dirname(torch.__file__))')/../nvidia/cu13/include/crt/host_config.h" ]; then
  log "installing the CUDA crt headers (nvidia-cuda-crt, for CUDA graphs)"
  "$vpy" -m pip install -q --no-deps nvidia-cuda-crt==13.0.88
fi
if [ "$want_ref" = 1 ] && ! "$vpy" -c 'import sam2, torchvision, scipy, pycocotools, safetensors' 2>/dev/null; then
  log "installing the reference sam2==1.1.0 (parity tests)"
  "$vpy" -m pip install -q wheel numpy pillow scipy safetensors pycocotools torch==2.11.0 torchvision==0.26.0
  SAM2_BUILD_CUDA=0 "$vpy" -m pip install -q --no-build-isolation sam2==1.1.0 torch==2.11.0 torchvision==0.26.0
fi
# decord, which the reference's video predictor reads `.mp4` files with (the parity test of
# video files; the official demo pins eva-decord, the maintained build of it).
if [ "$want_ref" = 1 ] && ! "$vpy" -c 'import decord' 2>/dev/null; then
  log "installing eva-decord 0.6.1 (the reference's video-file reader)"
  "$vpy" -m pip install -q eva-decord==0.6.1
fi
echo "$venv"
