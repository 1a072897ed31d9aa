#!/usr/bin/env bash
# `make run`: open the console on the bundled demo clip with the tiny checkpoint —
# the official one when it is in weights/ or can be downloaded, otherwise a random-init
# checkpoint made here (the console then says the masks are meaningless).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./target/release/sam2-tui
ckpt=weights/sam2.1_hiera_tiny.pt
if [ ! -f "$ckpt" ]; then
  if ! "$bin" weights download tiny --dir weights 2>/dev/null; then
    ckpt=weights/sam2.1_hiera_tiny.random-init.safetensors
    if [ ! -f "$ckpt" ]; then
      echo "[demo] no network for the official weights: making a random-init checkpoint (masks will be meaningless)" >&2
      "$bin" weights init-random "$ckpt" --model tiny
    fi
  fi
fi
if [ -t 1 ]; then
  exec "$bin" assets/demo.mp4 --checkpoint "$ckpt" "$@"
else
  # No terminal (e.g. CI): run the same job headlessly.
  exec "$bin" segment assets/demo.mp4 --prompts assets/demo_prompts.json --checkpoint "$ckpt" --out target/demo-output "$@"
fi
