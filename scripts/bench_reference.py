#!/usr/bin/env python3
"""Time the official SAM 2 video predictor (PyPI sam2==1.1.0) on a frame folder.

Usage: bench_reference.py SIZE MODE FRAMES_DIR CKPT [--objects N] [--runs N] [--threads N] [--json FILE] [--masks NPZ]
  SIZE  tiny | small | base_plus | large
  MODE  cpu | cpu_bf16 | cuda_fp32 | cuda_bf16   (cuda_fp32 enables TF32, as the
        published baselines do; the *_bf16 modes run under torch.autocast(bfloat16))
  CKPT  an official-format .pt ({"model": state_dict}); if the file does not exist, a
        random-init one is written there first (torch.manual_seed(0), same shapes and cost
        as the real weights) — so sam2-tui can be handed the very same file.

What it measures, in the reference's own terms (one positive click per object on frame 0
at the points sam2-tui's bench uses — for one object on the box, for N > 1 the centres of
a grid, ceil(sqrt(N)) columns, row by row — then propagate_in_video forward over every
frame, the predictor tracking the objects one after another as it does):
  build_s        build_sam2_video_predictor (config + checkpoint load, to device)
  init_state_s   init_state (reads and resizes every frame up front)
  first_mask_s   from the start of the build to the click's mask
  whole_s        from the start of the build to the last mask of the first propagation
                 (= model build + init_state + propagation; sam2-tui's counterpart is
                 process start -> last mask written)
  process_s      the same end point measured from interpreter start (imports included)
  fps            propagation frames / seconds, median over the measured runs
                 (runs: 1 on cpu, 3 on cuda with the first a warm-up, unless --runs)
The last stdout line is one JSON object with these fields; the line before it is a
human-readable summary.
"""
import argparse
import contextlib
import json
import math
import os
import resource
import statistics
import sys
import time

PROCESS_START = time.time()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sam2.build_sam import build_sam2, build_sam2_video_predictor  # noqa: E402

CONFIGS = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}


def click_points(frames_dir, n):
    """The clicks sam2-tui's bench makes (src/bench/clip.rs `clicks`), one per object:
    for one object (210, 300) on a 960x540 frame, scaled; for more, grid cell centres."""
    from PIL import Image

    first = sorted(f for f in os.listdir(frames_dir) if f.lower().endswith((".jpg", ".jpeg")))[0]
    w, h = Image.open(os.path.join(frames_dir, first)).size
    if n == 1:
        return [np.array([[210.0 * w / 960.0, 300.0 * h / 540.0]], np.float32)]
    cols = math.ceil(math.sqrt(n))
    rows = -(-n // cols)
    return [np.array([[(i % cols + 0.5) * w / cols, (i // cols + 0.5) * h / rows]], np.float32) for i in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("size", choices=sorted(CONFIGS))
    ap.add_argument("mode", choices=["cpu", "cpu_bf16", "cuda_fp32", "cuda_bf16"])
    ap.add_argument("frames_dir")
    ap.add_argument("ckpt")
    ap.add_argument("--objects", type=int, default=1, help="objects to track, one click each on frame 0")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the result object here")
    ap.add_argument("--masks", default=None, help="after timing, propagate once more and save every frame's "
                    "binary mask (logits > 0, video resolution) here as .npz of np.packbits rows")
    a = ap.parse_args()

    cfg = f"configs/sam2.1/sam2.1_hiera_{CONFIGS[a.size]}.yaml"
    if not os.path.isdir(a.frames_dir):
        sys.exit(f"{a.frames_dir}: no such frame folder")
    if not os.path.exists(a.ckpt):
        torch.manual_seed(0)
        tmp = a.ckpt + ".partial"
        torch.save({"model": build_sam2(cfg, None, device="cpu").state_dict()}, tmp)
        os.replace(tmp, a.ckpt)

    dev = "cuda" if a.mode.startswith("cuda") else "cpu"
    bf16 = a.mode.endswith("bf16")
    if dev == "cpu":
        torch.set_num_threads(a.threads or os.cpu_count())
    else:
        # TF32 as the published baselines; REF_TF32=0 for strict fp32 (parity checks).
        tf32 = os.environ.get("REF_TF32", "1") != "0"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    runs = a.runs or (1 if dev == "cpu" else 3)
    warmup = 1 if (dev == "cuda" and runs > 1) else 0
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    points = click_points(a.frames_dir, a.objects)

    t0 = time.time()
    predictor = build_sam2_video_predictor(cfg, a.ckpt, device=dev)
    sync()
    t_build = time.time()
    autocast = torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16)
    durations, frames = [], 0
    # REF_SDPA=flash|efficient|cudnn|math: only that attention backend (parity studies:
    # which kernels the reference's own default picks matters for bf16 rounding).
    sdpa = contextlib.nullcontext()
    if os.environ.get("REF_SDPA"):
        from torch.nn.attention import SDPBackend, sdpa_kernel
        names = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                 "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
        sdpa = sdpa_kernel([names[os.environ["REF_SDPA"]]])
    with autocast, sdpa, torch.inference_mode():
        state = predictor.init_state(video_path=a.frames_dir)
        sync()
        t_init = time.time()
        for obj_id, point in enumerate(points, start=1):
            predictor.add_new_points_or_box(
                state, frame_idx=0, obj_id=obj_id, points=point, labels=np.array([1], np.int32)
            )
        sync()
        t_first = time.time()
        t_whole = None
        for r in range(runs):
            sync()
            t = time.time()
            frames = 0
            # As tools/reference_fps.py measures it: masks stay on the device.
            for _ in predictor.propagate_in_video(state):
                frames += 1
            sync()
            durations.append(time.time() - t)
            if t_whole is None:
                t_whole = time.time()
        if a.masks:
            masks = {}
            for f, ids, logits in predictor.propagate_in_video(state):
                for i, obj_id in enumerate(ids):
                    m = (logits[i, 0] > 0).cpu().numpy()
                    # Object 1 keeps the key of the one-object files.
                    key = f"{f:05d}" if obj_id == 1 else f"{f:05d}_o{obj_id}"
                    masks[key] = np.packbits(m, axis=-1)
                    masks[f"{key}_shape"] = np.array(m.shape)
            tmp = a.masks + ".partial.npz"
            np.savez_compressed(tmp, **masks)
            os.replace(tmp, a.masks)
    measured = durations[warmup:]
    fps = [frames / d for d in measured]
    result = {
        "implementation": "sam2==1.1.0 (python)",
        "size": a.size,
        "mode": a.mode,
        "objects": a.objects,
        "frames": frames,
        "runs": runs,
        "warmup_runs": warmup,
        "build_s": t_build - t0,
        "init_state_s": t_init - t_build,
        "first_mask_s": t_first - t0,
        "whole_s": t_whole - t0,
        "process_s": t_whole - PROCESS_START,
        "fps": statistics.median(fps),
        "fps_runs": [frames / d for d in durations],
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "cuda_peak_allocated_bytes": torch.cuda.max_memory_allocated() if dev == "cuda" else None,
        "device_name": torch.cuda.get_device_name() if dev == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    print(
        f"reference {a.size} {a.mode}, {a.objects} object(s): {result['fps']:.2f} FPS over {frames} frames; whole run "
        f"{result['whole_s']:.2f}s (build {result['build_s']:.2f}s, init_state {result['init_state_s']:.2f}s, "
        f"first mask {result['first_mask_s']:.2f}s)"
    )
    line = json.dumps(result)
    if a.json:
        tmp = a.json + ".partial"
        with open(tmp, "w") as f:
            f.write(line + "\n")
        os.replace(tmp, a.json)
    print(line)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


if __name__ == "__main__":
    main()
