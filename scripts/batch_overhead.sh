#!/usr/bin/env bash
# The cost of `sam2-tui batch` over running `sam2-tui segment` item by item: N clips of
# F frames, timed both ways on the CPU (same checkpoint, same model input size). Prints
# seconds per item each way and batch's overhead (negative: batch is faster, since its
# worker loads the model once for all items).
# Usage: scripts/batch_overhead.sh [N=4] [FRAMES=10] [IMAGE_SIZE=512]
set -euo pipefail
n="${1:-4}"; frames="${2:-10}"; size="${3:-512}"
bin="$(cd "$(dirname "$0")/.." && pwd)/target/release/sam2-tui"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
"$bin" weights init-random "$work/sam2.1_hiera_tiny.random-init.safetensors" >/dev/null 2>&1
echo '{"objects":[{"id":1,"frame":0,"points":[[40,30,1]]},{"id":2,"frame":0,"box":[70,10,110,50]}]}' > "$work/prompts.json"
: > "$work/manifest.jsonl"
for i in $(seq 0 $((n - 1))); do
  ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=128x64:rate=10 -vf "trim=start_frame=$((i * 3)),setpts=PTS-STARTPTS" \
    -frames:v "$frames" -pix_fmt yuv420p "$work/clip$i.mp4"
  echo "{\"input\":\"clip$i.mp4\",\"prompts\":\"prompts.json\",\"out\":\"clip$i\"}" >> "$work/manifest.jsonl"
done
common=(--checkpoint "$work/sam2.1_hiera_tiny.random-init.safetensors" --device cpu --image-size "$size")
t0=$(date +%s.%N)
for i in $(seq 0 $((n - 1))); do
  "$bin" segment "$work/clip$i.mp4" --prompts "$work/prompts.json" --out "$work/seg/clip$i" "${common[@]}" 2>/dev/null
done
t1=$(date +%s.%N)
"$bin" batch "$work/manifest.jsonl" --out "$work/batch" "${common[@]}" 2>/dev/null
t2=$(date +%s.%N)
for i in $(seq 0 $((n - 1))); do
  cmp -s <(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['frames'])" "$work/seg/clip$i/masks.json") \
         <(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['frames'])" "$work/batch/clip$i/masks.json") \
    || { echo "clip$i: batch and segment masks differ" >&2; exit 1; }
done
python3 - "$n" "$frames" "$size" "$t0" "$t1" "$t2" <<'PY'
import sys
n, frames, size = map(int, sys.argv[1:4]); t0, t1, t2 = map(float, sys.argv[4:7])
seg, bat = (t1 - t0) / n, (t2 - t1) / n
print(f"{n} items x {frames} frames, image size {size}, CPU: segment one by one {seg:.2f} s/item, "
      f"batch {bat:.2f} s/item, batch overhead {100 * (bat - seg) / seg:+.1f} % per item (masks identical)")
PY
