#!/usr/bin/env python3
"""Where a frame's GPU time goes, from a trace that `SAM2_TUI_TRACE=FILE` recorded.

    python3 scripts/trace_summary.py TRACE.json [FRAMES] [ROWS]

Sums every kernel, copy and memset by the operator that launched it (its name, input
shapes and the kernel's name), per propagated frame (FRAMES, default 200: `bench`'s
clip). Kernels replayed from a CUDA graph cannot be traced back to an operator; they are
summed by kernel name under GRAPH, so run with `SAM2_TUI_CUDA_GRAPHS=0` to see every
kernel's operator (the kernels are the same, the launches slower).
"""
import collections
import json
import sys


def main():
    path = sys.argv[1]
    frames = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 60
    events = json.load(open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    ops = {}
    for e in events:
        if e.get("cat") == "cpu_op":
            ops.setdefault(e["args"]["External id"], e)
    launches = {e["args"]["correlation"]: e for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver")}
    time = collections.defaultdict(lambda: [0.0, 0])
    total = 0.0
    for e in events:
        if e.get("cat") not in ("kernel", "gpu_memcpy", "gpu_memset"):
            continue
        launch = launches.get(e["args"].get("correlation"))
        if launch and launch["name"] == "cudaGraphLaunch":
            key = ("GRAPH", e["name"][:70])
        else:
            op = ops.get(e["args"].get("External id") or (launch and launch["args"].get("External id")))
            if op:
                key = (op["name"], str(op["args"].get("Input Dims"))[:90], e["name"][:40])
            else:
                key = ("?", e["name"][:70])
        time[key][0] += e["dur"]
        time[key][1] += 1
        total += e["dur"]
    graphs = sum(t for k, (t, _) in time.items() if k[0] == "GRAPH")
    print(f"GPU time {total / 1e3 / frames:.2f} ms a frame ({graphs / 1e3 / frames:.2f} ms of it in graph replays)")
    for key, (t, n) in sorted(time.items(), key=lambda kv: -kv[1][0])[:rows]:
        print(f"{t / 1e3 / frames:7.3f} ms {n / frames:6.1f}/frame  {' | '.join(key)}")


if __name__ == "__main__":
    main()
