#!/usr/bin/env bash
# Many videos, side by side (issue #18): N videos of F frames, one click each on frame 0,
# tracked to the end
#   * by the official predictor (sam2==1.1.0) as a user scripts it: the model built once,
#     then the videos one after another (init_state, the click, propagate_in_video);
#   * by `sam2-tui batch` (one worker, the videos one after another, the model loaded once);
#   * by `sam2-tui batch --streams K` for each K in STREAMS (K videos at once per worker).
# Prints each way's whole time (from its start to its last mask: model load, reading the
# frames and the propagations, and for sam2-tui its outputs written) with the aggregate
# frames per second, then how many pixels agree: each run with the reference, each
# --streams run with plain `batch`. The videos are the side-by-side harness's 960x540
# frames, video i starting 7*i frames in (wrapping), so no two are alike. With LENGTHS
# (frame counts, each at most FRAMES, taken in turn: "40 200 80") the videos are of mixed
# lengths, as a real manifest's are: what `--streams` gains from giving a place freed by a
# short video to the next one at once.
#
# Usage: scripts/bench_many_videos.sh [SIZE=tiny] [DEVICE=cuda] [N=8] [FRAMES=200]
# Environment: STREAMS (default "N"), LENGTHS (default: every video FRAMES), PRECISION (default bf16 on cuda, fp32 on cpu),
#   SAM2_TUI (the binary), WORK (default /tmp/sam2-many-videos), PY (default python3),
#   REFERENCE=0 (sam2-tui's ways only, for an A/B of two builds: no ratio to the reference
#   and no pixel comparison with it).
set -euo pipefail
SIZE=${1:-tiny}; DEVICE=${2:-cuda}; N=${3:-8}; FRAMES=${4:-200}
here="$(cd "$(dirname "$0")" && pwd)"
BIN=${SAM2_TUI:-$here/../target/release/sam2-tui}
PY=${PY:-python3}
WORK=${WORK:-/tmp/sam2-many-videos}
STREAMS=${STREAMS:-$N}
read -r -a LENGTHS <<< "${LENGTHS:-$FRAMES}"
if [ "$DEVICE" = cuda ]; then PRECISION=${PRECISION:-bf16}; else PRECISION=${PRECISION:-fp32}; fi
case "$DEVICE:$PRECISION" in
  cuda:bf16) REF_MODE=cuda_bf16 ;; cuda:*) REF_MODE=cuda_fp32 ;; *) REF_MODE=cpu ;;
esac
read -r BASE CKPT < <(SAM2_TUI="$BIN" PREPARE_ONLY=1 WORK="$WORK" bash "$here/bench_side_by_side.sh" "$SIZE" "$DEVICE" "$FRAMES" | tail -1)
echo '{"objects":[{"id":1,"frame":0,"points":[[210,300,1]]}]}' > "$WORK/prompts.json"
: > "$WORK/manifest.jsonl"
TOTAL=0
for i in $(seq 0 $((N - 1))); do
  d="$WORK/video$i"
  len=${LENGTHS[$((i % ${#LENGTHS[@]}))]}
  [ "$len" -le "$FRAMES" ] || { echo "LENGTHS: $len is more than FRAMES ($FRAMES)" >&2; exit 2; }
  TOTAL=$((TOTAL + len))
  rm -rf "$d"; mkdir -p "$d"
  for k in $(seq 0 $((len - 1))); do
    ln -s "$BASE/$(printf '%05d' $(((k + 7 * i) % FRAMES))).jpg" "$d/$(printf '%05d' "$k").jpg"
  done
  echo "{\"input\":\"video$i\",\"prompts\":\"prompts.json\",\"out\":\"video$i\"}" >> "$WORK/manifest.jsonl"
done
now() { date +%s.%N; }
seconds() { "$PY" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }
fps() { "$PY" -c "import sys; print(f'{$TOTAL / float(sys.argv[1]):.1f}')" "$1"; }
ratio() { "$PY" -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }

# The reference: its clock stops at its last mask; the masks are saved after that.
if [ "${REFERENCE:-1}" != 0 ]; then
t0=$(now)
"$PY" - "$SIZE" "$REF_MODE" "$CKPT" "$WORK" "$N" 2> "$WORK/reference.log" <<'PYEOF'
import contextlib, sys, time, numpy as np, torch
from sam2.build_sam import build_sam2_video_predictor
size, mode, ckpt, work, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
cfg = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}[size]
device = "cpu" if mode == "cpu" else "cuda"
if mode == "cuda_fp32":
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
amp = torch.autocast("cuda", dtype=torch.bfloat16) if mode == "cuda_bf16" else contextlib.nullcontext()
predictor = build_sam2_video_predictor(f"configs/sam2.1/sam2.1_hiera_{cfg}.yaml", ckpt, device=device)
kept = []  # the masks, left on the device until the clock stops
with torch.inference_mode(), amp:
    for i in range(n):
        state = predictor.init_state(f"{work}/video{i}")
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=[[210, 300]], labels=[1])
        kept.append({f: (logits[0, 0] > 0) for f, _, logits in predictor.propagate_in_video(state)})
    if device == "cuda":
        torch.cuda.synchronize()
print(f"{time.time():.6f}", file=open(f"{work}/ref-end", "w"))
for i, m in enumerate(kept):
    # Column-major, as COCO RLE orders a mask's pixels.
    np.savez(f"{work}/ref-video{i}.npz", **{f"{f:05d}": np.packbits(v.cpu().numpy().T.ravel()) for f, v in m.items()})
PYEOF
ref=$(seconds "$t0" "$(cat "$WORK/ref-end")")
echo "reference (sam2 1.1.0, $REF_MODE, one video after another): $N videos, $TOTAL frames in all, in $ref s, $(fps "$ref") FPS"
fi
vs_ref() { [ "${REFERENCE:-1}" = 0 ] || echo ", $(ratio "$ref" "$1")x the reference"; }

common=(--checkpoint "$CKPT" --device "$DEVICE" --precision "$PRECISION" --no-postprocess)
rm -rf "$WORK/out-1"
t0=$(now)
"$BIN" batch "$WORK/manifest.jsonl" --out "$WORK/out-1" "${common[@]}" 2> "$WORK/batch-1.log"
one=$(seconds "$t0" "$(now)")
echo "sam2-tui batch ($PRECISION, one video after another): $one s, $(fps "$one") FPS$(vs_ref "$one")"
for k in $STREAMS; do
  rm -rf "$WORK/out-$k"
  t0=$(now)
  "$BIN" batch "$WORK/manifest.jsonl" --out "$WORK/out-$k" --streams "$k" "${common[@]}" 2> "$WORK/batch-$k.log"
  s=$(seconds "$t0" "$(now)")
  echo "sam2-tui batch --streams $k ($PRECISION): $s s, $(fps "$s") FPS ($(ratio "$one" "$s")x batch$(vs_ref "$s"))"
done
[ "${REFERENCE:-1}" != 0 ] || exit 0

# Pixels agreeing over every video's frames (the side-by-side harness's RLE decoding).
"$PY" - "$WORK" "$N" "$here/bench_side_by_side.sh" 1 $STREAMS <<'PYEOF'
import json, sys
import numpy as np
work, n, harness, runs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
src = open(harness).read()
exec(src[src.index("def rle_counts(s):"):src.index("def agreement(base, other):")])
def ref(i):
    z = np.load(f"{work}/ref-video{i}.npz")
    return {(int(k), 1): z[k] for k in z.files}
def ours(run, i):
    return {k: np.packbits(v) for k, v in masks(f"{work}/out-{run}/video{i}/masks.json").items()}
def agree(a, b):
    assert sorted(a) == sorted(b), "not the same (frame, object) masks"
    diff = sum(int(np.unpackbits(a[k] ^ b[k]).sum()) for k in a)
    return 100 * (1 - diff / sum(a[k].size * 8 for k in a))
for run in runs:
    name = "batch" if run == "1" else f"batch --streams {run}"
    line = f"pixels agreeing: {name} vs the reference {np.mean([agree(ref(i), ours(run, i)) for i in range(n)]):.4f} %"
    if run != "1":
        line += f", vs batch {np.mean([agree(ours('1', i), ours(run, i)) for i in range(n)]):.4f} %"
    print(line)
PYEOF
