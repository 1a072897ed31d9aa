#!/usr/bin/env bash
# Side-by-side: the official Python predictor (sam2==1.1.0) and sam2-tui on the SAME frame
# folder and the SAME official-format .pt checkpoint, in one go, reference first and last
# (these machines are noisy: only a ratio measured side by side holds).
#
# Usage: scripts/bench_side_by_side.sh SIZE DEVICE FRAMES
#   SIZE    tiny | small | base_plus | large
#   DEVICE  cpu | cuda
#   FRAMES  number of synthetic frames (the reference benchmark's scene, 960x540 JPEGs)
# Environment (all optional):
#   PRECISIONS      sam2-tui precisions to run, e.g. "fp32 bf16"      (default: fp32)
#   REF_PRECISIONS  reference modes to run (bf16 = torch.autocast)   (default: fp32)
#   THREADS         CPU threads for both (default: all)
#   SAM2_TUI        the binary (default: target/release/sam2-tui)
#   PY              the Python with sam2 (default: $SAM2_TUI_PYTHON or python3)
#   WORK            where frames, checkpoint and outputs go (default: /tmp/sam2-side-by-side)
#   RESOLUTION      WIDTHxHEIGHT of the frames (default: 960x540)
#   OBJECTS         object counts to run, e.g. "1 4 16" (default: 1): one click per object
#                   on frame 0, on the grid of `sam2-tui bench --objects` (one object: the
#                   box; more: grid cell centres), the reference tracking them with its own
#                   per-object loop; with two or more counts, the marginal cost of one more
#                   object per frame on both sides
#   OUT_JSON        also write every figure here as JSON (by object count)
#   RUNS            propagations per process (reference and sam2-tui bench; default 3 on
#                   cuda with the first a warm-up, 1 on cpu)
#   STRICT_FP32     if 1, no TF32 on either side (SAM2_TUI_TF32=0, REF_TF32=0): a CUDA
#                   parity check rather than a speed run
#   REF_LAST        0: skip the reference's second pass (after ours); default 1
#   MASKS_FROM_PASS if set, the first reference pass also saves its masks (every object's)
#                   and every sam2-tui precision is compared pixel-wise with the reference's
#   PREPARE_ONLY    if 1, only write the frames and the checkpoint (for other harnesses)
#   REF_SDPA        flash | efficient | cudnn | math: the reference uses only that
#                   attention backend (bench_reference.py; for parity studies)
#
# Per run it reports, for the reference: whole run = model build + init_state + first
# propagation (bench_reference.py's whole_s); for sam2-tui: whole run = process start of
# `sam2-tui segment` to its exit (last mask written), and propagation FPS from
# `sam2-tui bench` on the same frames/checkpoint. Ratios are reference / ours for time and
# ours / reference for FPS (> 1 = sam2-tui faster), against the mean of the two reference
# runs. With both fp32 and bf16 in PRECISIONS, the bf16 masks are compared pixel-wise with
# the fp32 ones.
#
# Several videos at once (`sam2-tui bench --streams N`, issue #18) have no counterpart
# here: the reference has no way to track several videos in one process other than one
# after another, which is what its one-stream FPS already measures (N videos take N times
# as long). The figure to compare is `bench --streams N`'s own ratio of aggregate FPS to
# one stream, measured in one invocation on the same frames and checkpoint:
#   sam2-tui bench --sizes tiny --devices cuda --precision bf16 --streams 8 \
#       --frames-dir "$WORK/frames" --checkpoint "$WORK/<the .pt this script wrote>"
# (PREPARE_ONLY=1 writes those frames and that checkpoint).
set -euo pipefail
if [ $# -ne 3 ]; then
    sed -n '2,/^set -e/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
SIZE=$1 DEVICE=$2 FRAMES=$3
case $SIZE in tiny|small|base_plus|large) ;; *) echo "SIZE: expected tiny, small, base_plus or large, got '$SIZE'" >&2; exit 2 ;; esac
case $DEVICE in cpu|cuda) ;; *) echo "DEVICE: expected cpu or cuda, got '$DEVICE'" >&2; exit 2 ;; esac
[[ $FRAMES =~ ^[1-9][0-9]*$ ]] || { echo "FRAMES: expected a positive number, got '$FRAMES'" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
PY=${PY:-${SAM2_TUI_PYTHON:-python3}}
BIN=${SAM2_TUI:-$ROOT/target/release/sam2-tui}
WORK=${WORK:-/tmp/sam2-side-by-side}
RESOLUTION=${RESOLUTION:-960x540}
PRECISIONS=${PRECISIONS:-fp32}
REF_PRECISIONS=${REF_PRECISIONS:-fp32}
OBJECTS=${OBJECTS:-1}
for n in $OBJECTS; do
    [[ $n =~ ^[1-9][0-9]*$ ]] && [ "$n" -le 254 ] || { echo "OBJECTS: expected counts from 1 to 254, got '$n'" >&2; exit 2; }
done
W=${RESOLUTION%x*} H=${RESOLUTION#*x}
[ -x "$BIN" ] || { echo "$BIN: no sam2-tui binary (cargo build --release, or set SAM2_TUI)" >&2; exit 1; }
mkdir -p "$WORK"
FRAMES_DIR=$WORK/frames-${W}x${H}-$FRAMES
CKPT=$WORK/sam2.1_hiera_$SIZE.random-init-present.pt
LOG=$WORK/log-$SIZE-$DEVICE.txt
: >"$LOG"
THREAD_ARGS=()
RUN_ARGS=()
[ -n "${RUNS:-}" ] && RUN_ARGS=(--runs "$RUNS")
if [ "${STRICT_FP32:-0}" = 1 ]; then export SAM2_TUI_TF32=0 REF_TF32=0; fi
if [ -n "${THREADS:-}" ]; then
    THREAD_ARGS=(--threads "$THREADS")
    export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
fi

# 1. Frames (Pillow, quality 75, the scene of tools/reference_fps.py) and a random-init
#    checkpoint written by the official package itself.
"$PY" - "$FRAMES_DIR" "$FRAMES" "$W" "$H" "$CKPT" "$SIZE" "$ROOT" <<'EOF'
import os, subprocess, sys
import numpy as np
from PIL import Image
frames_dir, n, w, h, ckpt, size, root = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7]
if not os.path.isfile(os.path.join(frames_dir, f"{n - 1:05d}.jpg")):
    tmp = frames_dir + ".partial"
    os.makedirs(tmp, exist_ok=True)
    sx, sy = w / 960.0, h / 540.0
    bw = max(1, round(150 * sx))
    travel = max(1, w - bw) / sx
    for i in range(n):
        img = np.full((h, w, 3), (40, 60, 80), np.uint8)
        x = round(((100 + 3 * i) % travel) * sx)
        img[round(200 * sy):round(380 * sy), x:x + bw] = (220, 60, 60)
        Image.fromarray(img).save(f"{tmp}/{i:05d}.jpg")
    os.replace(tmp, frames_dir)
if not os.path.isfile(ckpt):
    subprocess.run([sys.executable, os.path.join(root, "scripts", "random_checkpoint.py"), size, ckpt], check=True)
EOF
[ "${PREPARE_ONLY:-0}" = 1 ] && { echo "$FRAMES_DIR $CKPT"; exit 0; }
# The prompts of `segment` for each object count: the clicks of `sam2-tui bench --objects`
# and bench_reference.py (src/bench/clip.rs `clicks`: one object on the box, more on the
# centres of a grid, ceil(sqrt(N)) columns, row by row).
for n in $OBJECTS; do
    "$PY" - "$W" "$H" "$n" "$WORK/prompts-o$n.json" <<'EOF'
import json, math, sys
import numpy as np
w, h, n, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if n == 1:
    pts = [(210.0 * w / 960.0, 300.0 * h / 540.0)]
else:
    cols = math.ceil(math.sqrt(n))
    rows = -(-n // cols)
    pts = [((i % cols + 0.5) * w / cols, (i // cols + 0.5) * h / rows) for i in range(n)]
objects = [{"id": i + 1, "frame": 0, "points": [[float(np.float32(x)), float(np.float32(y)), 1]]} for i, (x, y) in enumerate(pts)]
json.dump({"objects": objects}, open(out, "w"))
EOF
done
echo "side-by-side: $SIZE on $DEVICE, $FRAMES frames ${W}x${H} ($FRAMES_DIR), checkpoint $CKPT, objects: $OBJECTS"
echo "side-by-side: load $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) on $(nproc) CPUs before the first run"

ref_mode() { # DEVICE PRECISION -> bench_reference.py mode
    case "$1:$2" in cpu:fp32) echo cpu ;; cpu:bf16) echo cpu_bf16 ;; cuda:fp32) echo cuda_fp32 ;; cuda:bf16) echo cuda_bf16 ;; esac
}
run_reference() { # PASS PRECISION OBJECTS
    local out=$WORK/ref-$SIZE-$DEVICE-$2-o$3-$1.json
    echo "side-by-side: reference $(ref_mode "$DEVICE" "$2"), $3 object(s) (pass $1) …"
    "$PY" "$HERE/bench_reference.py" "$SIZE" "$(ref_mode "$DEVICE" "$2")" "$FRAMES_DIR" "$CKPT" --objects "$3" \
        ${THREADS:+--threads "$THREADS"} "${RUN_ARGS[@]}" --json "$out" ${MASKS_FROM_PASS:+$([ "$1" = 1 ] && echo --masks "$WORK/ref-masks-$SIZE-$DEVICE-$2-o$3.npz")} 2>>"$LOG" | sed -n 1p
}
run_ours() { # PRECISION OBJECTS
    local p=$1 n=$2 out=$WORK/out-$SIZE-$DEVICE-$1-o$2
    echo "side-by-side: sam2-tui segment --precision $p, $n object(s) …"
    local t0 t1
    t0=$(date +%s.%N)
    # A failed run of ours is a result too: say so and go on to the second reference pass.
    rm -f "$WORK/segment-$SIZE-$DEVICE-$p-o$n.json" "$WORK/bench-$SIZE-$DEVICE-$p-o$n.json"
    # --no-postprocess: the reference built without its CUDA extension (SAM2_BUILD_CUDA=0)
    # skips hole filling, so masks are compared like for like.
    if "$BIN" segment "$FRAMES_DIR" --prompts "$WORK/prompts-o$n.json" --out "$out" --checkpoint "$CKPT" \
        --device "$DEVICE" --precision "$p" --session-dir "$WORK/session-$p-o$n" --no-postprocess 2>>"$LOG"; then
        t1=$(date +%s.%N)
        "$PY" -c "import json,sys; json.dump({'whole_s': $t1 - $t0}, open(sys.argv[1], 'w'))" "$WORK/segment-$SIZE-$DEVICE-$p-o$n.json"
        echo "side-by-side: whole run $("$PY" -c "print(f'{$t1 - $t0:.2f}')") s"
    else
        echo "side-by-side: sam2-tui segment --precision $p FAILED: $(tail -n 1 "$LOG")"
    fi
    echo "side-by-side: sam2-tui bench --precision $p --objects $n …"
    "$BIN" bench --sizes "$SIZE" --devices "$DEVICE" --frames-dir "$FRAMES_DIR" --checkpoint "$CKPT" --objects "$n" \
        --precision "$p" "${THREAD_ARGS[@]}" "${RUN_ARGS[@]}" --json "$WORK/bench-$SIZE-$DEVICE-$p-o$n.json" 2>>"$LOG" | sed 's/^/    /' || true
}

# Per object count: the reference, ours, the reference again. Masks saved by an earlier
# run in this WORK (other frames) must not be compared with this run's.
rm -f "$WORK"/ref-masks-"$SIZE"-"$DEVICE"-*.npz
for n in $OBJECTS; do
    for p in $REF_PRECISIONS; do run_reference 1 "$p" "$n"; done
    for p in $PRECISIONS; do run_ours "$p" "$n"; done
    [ "${REF_LAST:-1}" = 0 ] || for p in $REF_PRECISIONS; do run_reference 2 "$p" "$n"; done
done
echo "side-by-side: load $(cut -d' ' -f1-3 /proc/loadavg) after the last run"

"$PY" - "$WORK" "$SIZE" "$DEVICE" "$FRAMES" "$PRECISIONS" "$REF_PRECISIONS" "${OUT_JSON:-}" "$OBJECTS" <<'EOF'
import json, os, sys
import numpy as np
work, size, device, frames, precs, ref_precs, out_json, counts = sys.argv[1:9]
precs, ref_precs, counts = precs.split(), ref_precs.split(), [int(n) for n in counts.split()]
load = lambda p: json.load(open(p)) if os.path.isfile(p) else None


def rle_counts(s):
    """COCO compressed RLE string -> run lengths (pycocotools' rleFrString), vectorised: the
    per-character loop took minutes for 16 objects over 200 frames."""
    c = np.frombuffer(s.encode(), np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, np.int64)
    last = (c & 0x20) == 0                      # the last character of each value
    first = np.concatenate(([True], last[:-1]))
    value = np.cumsum(first) - 1                # which value each character belongs to
    k = np.arange(c.size) - np.flatnonzero(first)[value]
    x = np.bincount(value, weights=((c & 0x1F) << (5 * k)).astype(np.float64)).astype(np.int64)
    # Sign extension: a value whose last character has 0x10 set is negative.
    ends = np.flatnonzero(last)
    neg = (c[ends] & 0x10) != 0
    x[neg] -= np.left_shift(1, 5 * (k[ends][neg] + 1))
    # Counts from the fourth on are stored as differences to the count two before.
    counts = x.copy()
    counts[3::2] = np.cumsum(x[1::2])[1:]
    counts[2::2] = np.cumsum(x[2::2])
    return counts


def masks(path):
    doc = json.load(open(path))
    out = {}
    for fr in doc["frames"]:
        for o in fr["objects"]:
            rle = o["rle"]
            h, w = rle["size"]
            counts = rle_counts(rle["counts"])
            flat = np.repeat((np.arange(counts.size) & 1).astype(np.uint8), counts)
            assert flat.size == h * w, f"{path}: frame {fr['frame']} object {o['id']}: RLE covers {flat.size} of {h * w} pixels"
            out[(fr["frame"], o["id"])] = flat
    return out


def agreement(base, other):
    keys = sorted(set(base) & set(other))
    diff = sum(int((base[k] != other[k]).sum()) for k in keys)
    total = sum(base[k].size for k in keys)
    ious = []
    for k in keys:
        a, b = base[k].astype(bool), other[k].astype(bool)
        u = (a | b).sum()
        ious.append(1.0 if u == 0 else (a & b).sum() / u)
    per_frame = [1 - int((base[k] != other[k]).sum()) / base[k].size for k in keys]
    below = [k[0] for k, a in zip(keys, per_frame) if a < 0.999]
    return {"frames": len(keys), "missing": len(set(base) ^ set(other)), "pixels_differing": diff,
            "per_frame_agreement": per_frame, "first_frame_below_99_9": below[0] if below else None,
            "pixel_agreement": 1 - diff / max(total, 1), "foreground_pixels": int(sum(base[k].sum() for k in keys)),
            "mean_iou": float(np.mean(ious)) if ious else None, "min_iou": float(np.min(ious)) if ious else None}


def ref_masks(path):
    """bench_reference.py --masks: `FFFFF` object 1, `FFFFF_oN` object N."""
    z = np.load(path)
    out = {}
    for k in z.files:
        if k.endswith("_shape"):
            continue
        frame, _, obj = k.partition("_o")
        h, w = z[k + "_shape"]
        # Column-major, as COCO RLE (and so masks() above) orders pixels.
        out[(int(frame), int(obj or 1))] = np.unpackbits(z[k], axis=-1)[:, :w].flatten(order="F").astype(np.uint8)
    return out


def mean(v):
    v = [x for x in v if x is not None]
    return sum(v) / len(v) if v else None


def figures(n):
    """Every figure of the runs with n objects."""
    summary = {"objects": n, "reference": {}, "ours": {}}
    for p in ref_precs:
        runs = [load(f"{work}/ref-{size}-{device}-{p}-o{n}-{i}.json") for i in (1, 2)]
        runs = [r for r in runs if r]
        summary["reference"][p] = {
            "whole_s": [r["whole_s"] for r in runs], "fps": [r["fps"] for r in runs],
            "first_mask_s": [r["first_mask_s"] for r in runs], "init_state_s": [r["init_state_s"] for r in runs],
            "peak_rss_bytes": [r["peak_rss_bytes"] for r in runs],
            "cuda_peak_allocated_bytes": [r["cuda_peak_allocated_bytes"] for r in runs],
            "device_name": runs[0]["device_name"] if runs else None,
        }
    for p in precs:
        seg, bench = load(f"{work}/segment-{size}-{device}-{p}-o{n}.json"), load(f"{work}/bench-{size}-{device}-{p}-o{n}.json")
        row = bench["rows"][0] if bench else {"status": "failed", "error": "bench wrote no JSON (see the log)"}
        summary["ours"][p] = {"whole_s": seg and seg["whole_s"], "fps": row.get("fps"), "fps_runs": row.get("fps_runs"),
                              "stages_ms": row.get("stages_ms"), "time_to_first_mask_s": row.get("time_to_first_mask_s"),
                              "peak_rss_bytes": row.get("peak_rss_bytes"), "cuda_peak_allocated_bytes": row.get("cuda_peak_allocated_bytes"),
                              "status": row.get("status"), "error": row.get("error"), "crashes": row.get("crashes")}
        if bench:
            summary["machine"] = bench["machine"]
    if "fp32" in precs and len(precs) > 1:
        fp32_path = f"{work}/out-{size}-{device}-fp32-o{n}/masks.json"
        base = masks(fp32_path) if os.path.isfile(fp32_path) else {}
        for p in precs:
            path = f"{work}/out-{size}-{device}-{p}-o{n}/masks.json"
            if p != "fp32" and base and os.path.isfile(path):
                summary.setdefault("agreement", {})[f"{p}_vs_fp32"] = agreement(base, masks(path))
    for p in precs:
        rp = p if p in ref_precs else "fp32"
        rpath, opath = f"{work}/ref-masks-{size}-{device}-{rp}-o{n}.npz", f"{work}/out-{size}-{device}-{p}-o{n}/masks.json"
        if os.path.isfile(rpath) and os.path.isfile(opath):
            summary.setdefault("agreement", {})[f"ours_{p}_vs_reference_{rp}"] = agreement(ref_masks(rpath), masks(opath))
    return summary


def report(summary):
    n = summary["objects"]
    print()
    print(f"== {size} on {device}, {frames} frames, {n} object(s) ==")
    for p, o in summary["ours"].items():
        ref = summary["reference"].get(p) or summary["reference"].get("fp32")
        rp = p if p in summary["reference"] else "fp32"
        rw, rf = mean(ref["whole_s"]), mean(ref["fps"])
        fmt = lambda v, f="{:.2f}": "-" if v is None else f.format(v)
        print(f"ours {p} vs reference {rp}:")
        print(f"  whole run   reference {', '.join(fmt(v) for v in ref['whole_s'])} s (mean {fmt(rw)})   ours {fmt(o['whole_s'])} s"
              f"   reference/ours {fmt(rw / o['whole_s'] if rw and o['whole_s'] else None)}x")
        print(f"  propagation reference {', '.join(fmt(v) for v in ref['fps'])} FPS (mean {fmt(rf)})   ours {fmt(o['fps'])} FPS"
              f"   ours/reference {fmt(o['fps'] / rf if rf and o['fps'] else None)}x")
        if o.get("stages_ms"):
            s = o["stages_ms"]
            print("  ours per frame (median ms): " + ", ".join(f"{k} {v:.1f}" for k, v in s.items()))
        print(f"  first mask  reference {', '.join(fmt(v) for v in ref['first_mask_s'])} s   ours {fmt(o['time_to_first_mask_s'])} s (supervisor start)")
        gib = lambda b: None if b is None else b / 2**30
        print(f"  peak RSS    reference {', '.join(fmt(gib(v)) for v in ref['peak_rss_bytes'])} GiB   ours {fmt(gib(o['peak_rss_bytes']))} GiB")
        if device == "cuda":
            print(f"  CUDA peak   reference {', '.join(fmt(gib(v)) for v in ref['cuda_peak_allocated_bytes'])} GiB   ours {fmt(gib(o['cuda_peak_allocated_bytes']))} GiB")
        if o.get("status") != "ok":
            print(f"  ours: {o.get('status')}: {o.get('error')}")
    for k, a in summary.get("agreement", {}).items():
        print(f"masks {k}: {a['pixel_agreement'] * 100:.4f}% of pixels agree over {a['frames']} (frame, object) pair(s) "
              f"({a['pixels_differing']} differ, {a.get('foreground_pixels', '?')} foreground in the first); "
              f"IoU mean {a['mean_iou']:.4f}, min {a['min_iou']:.4f}; first frame under 99.9%: {a['first_frame_below_99_9']}; "
              f"by frame: " + " ".join(f"{v * 100:.2f}" for v in a["per_frame_agreement"][::max(1, len(a["per_frame_agreement"]) // 10)]))


everything = {"size": size, "device": device, "frames": int(frames), "objects": counts,
              "by_objects": {str(n): figures(n) for n in counts}, "marginal": []}
for s in everything["by_objects"].values():
    report(s)

# One more object, per frame: the difference of the frame times (1000 / FPS) between
# consecutive object counts, divided by the difference of the counts.
ordered = sorted(counts)
for a, b in zip(ordered, ordered[1:]):
    sa, sb = everything["by_objects"][str(a)], everything["by_objects"][str(b)]
    per = lambda fa, fb: (1000 / fb - 1000 / fa) / (b - a) if fa and fb else None
    for p in precs:
        rp = p if p in ref_precs else "fp32"
        ours = per(sa["ours"][p]["fps"], sb["ours"][p]["fps"])
        ref = per(mean(sa["reference"][rp]["fps"]), mean(sb["reference"][rp]["fps"]))
        everything["marginal"].append({"precision": p, "from_objects": a, "to_objects": b,
                                       "ms_per_object": ours, "reference_ms_per_object": ref})
        fmt = lambda v: "-" if v is None else f"{v:.1f}"
        print(f"marginal cost ours {p}, {a} -> {b} objects: {fmt(ours)} ms per extra object per frame; "
              f"reference {rp} {fmt(ref)} ms (the mean of its passes)")
if out_json:
    json.dump(everything, open(out_json, "w"), indent=1)
EOF
