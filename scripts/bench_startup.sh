#!/usr/bin/env bash
# Start-up and memory against video length: for each frame count, one propagation of
# `sam2-tui bench` and of the official predictor (scripts/bench_reference.py) on the same
# synthetic frames and checkpoint (those of bench_side_by_side.sh), then a table of time
# to the first mask, peak device memory, peak host RSS and FPS.
#
# Usage: scripts/bench_startup.sh SIZE DEVICE COUNT...   e.g.  tiny cuda 20 200 2000
# Environment: PRECISION (bf16 | fp32, default bf16 on cuda, fp32 on cpu), SAM2_TUI, PY,
# WORK (default /tmp/sam2-startup) — as bench_side_by_side.sh.
set -euo pipefail
if [ $# -lt 3 ]; then
    sed -n '2,/^set -e/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
SIZE=$1 DEVICE=$2
shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PY:-${SAM2_TUI_PYTHON:-python3}}
BIN=${SAM2_TUI:-$(dirname "$HERE")/target/release/sam2-tui}
export WORK=${WORK:-/tmp/sam2-startup}
P=${PRECISION:-$([ "$DEVICE" = cuda ] && echo bf16 || echo fp32)}
case "$DEVICE:$P" in
    cpu:fp32) MODE=cpu ;; cpu:bf16) MODE=cpu_bf16 ;; cuda:fp32) MODE=cuda_fp32 ;; cuda:bf16) MODE=cuda_bf16 ;;
    *) echo "DEVICE/PRECISION: expected cpu or cuda and fp32 or bf16, got $DEVICE/$P" >&2; exit 2 ;;
esac
for n in "$@"; do
    read -r frames ckpt < <(PREPARE_ONLY=1 SAM2_TUI=$BIN "$HERE/bench_side_by_side.sh" "$SIZE" "$DEVICE" "$n" | tail -n 1)
    "$BIN" bench --sizes "$SIZE" --devices "$DEVICE" --frames-dir "$frames" --checkpoint "$ckpt" --precision "$P" --runs 1 --json "$WORK/ours-$SIZE-$n.json" >/dev/null 2>&1
    "$PY" "$HERE/bench_reference.py" "$SIZE" "$MODE" "$frames" "$ckpt" --runs 1 --json "$WORK/ref-$SIZE-$n.json" >/dev/null 2>&1 || echo "reference failed at $n frames" >&2
done
"$PY" - "$WORK" "$SIZE" "$@" <<'PY'
import json, os, sys
work, size, counts = sys.argv[1], sys.argv[2], sys.argv[3:]
gib = lambda b: "-" if b is None else f"{b / 2**30:.2f} GiB"
print(f"{'frames':>7}  {'first mask (ref / ours)':>24}  {'device peak (ref / ours)':>26}  {'host RSS (ref / ours)':>24}  {'FPS (ref / ours)':>17}")
for n in counts:
    o = json.load(open(f"{work}/ours-{size}-{n}.json"))["rows"][0]
    rp = f"{work}/ref-{size}-{n}.json"
    r = json.load(open(rp)) if os.path.exists(rp) else {}
    fm = lambda v: "-" if v is None else f"{v:.2f} s"
    print(f"{n:>7}  {fm(r.get('first_mask_s')):>11} / {fm(o.get('time_to_first_mask_s')):<10}  "
          f"{gib(r.get('cuda_peak_allocated_bytes')):>12} / {gib(o.get('cuda_peak_allocated_bytes')):<11}  "
          f"{gib(r.get('peak_rss_bytes')):>11} / {gib(o.get('peak_rss_bytes')):<10}  "
          f"{r.get('fps', 0):>7.1f} / {o.get('fps') or 0:<7.1f}")
PY
