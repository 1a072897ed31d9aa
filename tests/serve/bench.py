#!/usr/bin/env python3
"""Aggregate throughput of a demo backend with N sessions at once.

    bench.py http://127.0.0.1:7263 --sessions 1 4 8 [--video gallery/01_testsrc.mp4] [--settle 15]

For each N: N threads each start a session, click one object on frame 0, propagate
from frame 0 (forward only: from frame 0 there is no backward pass) and close it; prints
per N the wall time, the frames streamed in all, aggregate frames/s, the median
per-session startSession → first mask and stream frames/s, and where the wall time went:
for each phase of a session (start, click, wait for the stream's first part, stream, close)
its median and longest duration, and when the last session finished each phase (seconds
from the row's start), so a slow phase shows whichever server it is in. Works against the official
backend and `sam2-tui serve` alike (the official serialises sessions under one lock).
Standard library only, plus the conformance client's HTTP helpers.
"""
import argparse
import json
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conformance import M_ADD_POINTS, M_CLOSE, M_START, Client  # noqa: E402


PHASES = ("start", "click", "first_part", "stream", "close")


def one(c, video, out, t_row):
    t0 = time.perf_counter()
    _, _, d, _ = c.graphql(M_START, {"input": {"path": video}})
    t_started = time.perf_counter()
    sid = json.loads(d)["data"]["startSession"]["sessionId"]
    inp = {"sessionId": sid, "frameIndex": 0, "clearOldPoints": True, "objectId": 0, "labels": [1],
           "points": [[0.45, 0.55]]}
    _, _, d, dt_add = c.graphql(M_ADD_POINTS, {"input": inp})
    assert "errors" not in json.loads(d), d
    t_clicked = time.perf_counter()
    first_mask = t_clicked - t0
    res = c.stream(sid, 0)
    t_streamed = time.perf_counter()
    n = len(res["parts"])
    fps = (n - 1) / (res["parts"][-1]["t"] - res["t_first"]) if n > 1 else float("nan")
    c.graphql(M_CLOSE, {"input": {"sessionId": sid}})
    t_closed = time.perf_counter()
    first_part = res["t_first"] if res["t_first"] is not None else t_streamed - t_clicked
    phases = {"start": t_started - t0, "click": t_clicked - t_started, "first_part": first_part,
              "stream": (t_streamed - t_clicked) - first_part, "close": t_closed - t_streamed}
    ends = {"start": t_started, "click": t_clicked, "first_part": t_clicked + first_part,
            "stream": t_streamed, "close": t_closed}
    out.append({"first_mask_s": first_mask, "add_points_s": dt_add, "frames": n, "stream_fps": fps,
                "phases": phases, "ends": {k: v - t_row for k, v in ends.items()}})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base_url")
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--video", default="gallery/01_testsrc.mp4")
    ap.add_argument("--settle", type=float, default=0.0,
                    help="seconds to wait before each row (a server's spare workers load meanwhile)")
    a = ap.parse_args()
    c = Client(a.base_url, 1800)
    rows = []
    for n in a.sessions:
        time.sleep(a.settle)
        out = []
        t0 = time.perf_counter()
        threads = [threading.Thread(target=one, args=(c, a.video, out, t0)) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        frames = sum(r["frames"] for r in out)
        row = {"sessions": n, "finished": len(out), "wall_s": round(wall, 2), "frames": frames,
               "aggregate_fps": round(frames / wall, 3),
               "median_first_mask_s": round(statistics.median(r["first_mask_s"] for r in out), 3),
               "median_add_points_s": round(statistics.median(r["add_points_s"] for r in out), 3),
               "median_stream_fps": round(statistics.median(r["stream_fps"] for r in out), 3),
               # phase: [median s, longest s, last session done at s]
               "phases": {k: [round(statistics.median(r["phases"][k] for r in out), 3),
                              round(max(r["phases"][k] for r in out), 3),
                              round(max(r["ends"][k] for r in out), 3)] for k in PHASES}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return 0 if all(r["finished"] == r["sessions"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
