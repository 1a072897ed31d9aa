#!/usr/bin/env python3
"""Conformance client for backends of the official SAM 2 web demo.

Runs the calls the demo's front end makes (facebookresearch/sam2 @ 2b90b9f,
demo/frontend: Relay GraphQL on /graphql, the multipart/x-savi-stream on
/propagate_in_video, static files), in a fixed order, against a base URL, and writes a
transcript: per step the HTTP status, the headers the front end depends on, the shape of
the body (field names and JSON types, recursively), its values (volatile ones masked) and
every mask, decoded from COCO RLE (column-major) into an .npz beside the JSON. The
reference is the official backend (scripts/official_backend.sh); `compare` checks a second
server's transcript against it. See docs/serve-api.md for the API itself.

    conformance.py run  http://127.0.0.1:7263 --out official.json [--seed 0]
    conformance.py compare official.json ours.json [--min-agreement 99.99]
    conformance.py freeze official.json --out fixture.json.gz [--input KEY=VALUE ...]
    conformance.py summary official.json
    conformance.py selftest

Standard library and numpy only (pycocotools, when importable, cross-checks the RLE
decoder once per run).
"""
import argparse
import gzip
import hashlib
import http.client
import json
import os
import random
import re
import sys
import time
import urllib.parse
import uuid

import numpy as np

ORIGIN = "http://localhost:7262"  # where the demo's front end is served from
HEADERS_KEPT = (
    "content-type",
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "vary",
)
# Values that legitimately differ between two correct servers, or between two runs.
INFORMATIONAL_KEYS = {"message", "content-length", "sha256_poster", "elapsed_s", "parts_after_cancel", "json_style"}

# --- the front end's operations (same selections as its Relay documents) -------------

Q_DEFAULT_VIDEO = """query DemoPageQuery {
  defaultVideo { path posterPath url posterUrl height width }
}"""
Q_VIDEOS = """query DemoVideoGalleryQuery {
  videos { edges { node { id path posterPath url posterUrl height width posterUrl } } }
}"""
M_UPLOAD = """mutation useUploadVideoMutation($file: Upload!) {
  uploadVideo(file: $file) { id height width url path posterPath posterUrl }
}"""
M_START = """mutation SAM2ModelStartSessionMutation($input: StartSessionInput!) {
  startSession(input: $input) { sessionId }
}"""
M_CLOSE = """mutation SAM2ModelCloseSessionMutation($input: CloseSessionInput!) {
  closeSession(input: $input) { success }
}"""
_MASKS = "frameIndex rleMaskList { objectId rleMask { counts size } }"
M_ADD_POINTS = (
    "mutation SAM2ModelAddNewPointsMutation($input: AddPointsInput!) {\n"
    f"  addPoints(input: $input) {{ {_MASKS} }}\n}}"
)
M_CLEAR_FRAME = (
    "mutation SAM2ModelClearPointsInFrameMutation($input: ClearPointsInFrameInput!) {\n"
    f"  clearPointsInFrame(input: $input) {{ {_MASKS} }}\n}}"
)
M_REMOVE = (
    "mutation SAM2ModelRemoveObjectMutation($input: RemoveObjectInput!) {\n"
    f"  removeObject(input: $input) {{ {_MASKS} }}\n}}"
)
M_CLEAR_VIDEO = """mutation SAM2ModelClearPointsInVideoMutation($input: ClearPointsInVideoInput!) {
  clearPointsInVideo(input: $input) { success }
}"""
M_CANCEL = """mutation SAM2ModelCancelPropagateInVideoMutation($input: CancelPropagateInVideoInput!) {
  cancelPropagateInVideo(input: $input) { success }
}"""
# Not sent by the front end: the order field of RLEMask, which the schema declares.
M_ADD_POINTS_ORDER = (
    "mutation AddPointsWithOrder($input: AddPointsInput!) {\n"
    "  addPoints(input: $input) { frameIndex rleMaskList { objectId rleMask { counts size order } } }\n}"
)
Q_INTROSPECTION = """query Introspection {
  __schema {
    queryType { name } mutationType { name }
    types { name kind
      fields { name args { name type { ...T } } type { ...T } }
      inputFields { name type { ...T } } }
  }
}
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }"""


# --- COCO RLE ----------------------------------------------------------------------------

def rle_counts_from_string(s):
    """pycocotools' rleFrString: 6-bit chars (offset 48), 5 data bits, sign/continuation,
    counts after the second delta-coded against the count two before."""
    counts, p, m = [], 0, 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if m > 2:
            x += counts[m - 2]
        counts.append(x)
        m += 1
    return counts


def rle_decode(rle):
    """{"size": [h, w], "counts": str} -> (h, w) uint8, runs laid out column-major."""
    h, w = rle["size"]
    counts = rle_counts_from_string(rle["counts"]) if isinstance(rle["counts"], str) else list(rle["counts"])
    if sum(counts) != h * w:
        raise ValueError(f"RLE counts sum {sum(counts)} != {h}*{w}")
    flat = np.repeat(np.arange(len(counts)) % 2, counts).astype(np.uint8)
    return flat.reshape(w, h).T.copy()


def _crosscheck_rle(rle, mask):
    try:
        from pycocotools import mask as cm
    except ImportError:
        return None
    ref = cm.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    return bool(np.array_equal(ref, mask))


# --- shapes and values -------------------------------------------------------------------

def shape_of(v):
    if isinstance(v, dict):
        return {k: shape_of(v[k]) for k in sorted(v)}
    if isinstance(v, list):
        seen, out = set(), []
        for e in v:
            s = shape_of(e)
            key = json.dumps(s, sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(s)
        return {"list": out}
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    return "str"


_ORIGIN_RE = re.compile(r"^https?://[^/]+")


def values_of(v, key=None):
    if isinstance(v, dict):
        return {k: values_of(v[k], k) for k in sorted(v)}
    if isinstance(v, list):
        return [values_of(e, key) for e in v]
    if isinstance(v, str):
        if key in ("sessionId", "session_id"):
            return "<session>"
        if key == "counts":
            return "<rle>"
        return _ORIGIN_RE.sub("<origin>", v)
    return v


# --- HTTP --------------------------------------------------------------------------------

class Client:
    def __init__(self, base_url, timeout):
        u = urllib.parse.urlsplit(base_url)
        self.host, self.port = u.hostname, u.port or 80
        self.prefix = u.path.rstrip("/")
        self.timeout = timeout

    def _conn(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def request(self, method, path, body=None, headers=None):
        conn = self._conn()
        h = {"Origin": ORIGIN}
        h.update(headers or {})
        t0 = time.perf_counter()
        conn.request(method, self.prefix + path, body=body, headers=h)
        resp = conn.getresponse()
        data = resp.read()
        dt = time.perf_counter() - t0
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        conn.close()
        return resp.status, hdrs, data, dt

    def graphql(self, query, variables=None):
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        return self.request("POST", "/graphql", body, {"Content-Type": "application/json"})

    def upload(self, query, filename, content, content_type="video/mp4"):
        boundary = "----sam2tui" + uuid.uuid4().hex
        parts = []

        def field(name, value, fname=None, ctype=None):
            disp = f'form-data; name="{name}"' + (f'; filename="{fname}"' if fname else "")
            head = f"--{boundary}\r\nContent-Disposition: {disp}\r\n"
            if ctype:
                head += f"Content-Type: {ctype}\r\n"
            parts.append(head.encode() + b"\r\n" + value + b"\r\n")

        field("operations", json.dumps({"query": query, "variables": {"file": None}}).encode())
        field("map", json.dumps({"file": ["variables.file"]}).encode())
        field("file", content, filename, content_type)
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request("POST", "/graphql", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def stream(self, session_id, start_frame_index, on_part=None):
        """POST /propagate_in_video and parse the multipart/x-savi-stream as the front end's
        MultipartStream does: optional blank lines, `--<boundary>\\r\\n`, header lines,
        a blank line, exactly Content-Length bytes of body. Ends at EOF (no closing
        boundary is sent). on_part(index, part) may return "cancel" once."""
        conn = self._conn()
        body = json.dumps({"session_id": session_id, "start_frame_index": start_frame_index}).encode()
        t0 = time.perf_counter()
        conn.request("POST", self.prefix + "/propagate_in_video", body=body,
                     headers={"Origin": ORIGIN, "Content-Type": "application/json"})
        resp = conn.getresponse()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        out = {"status": resp.status, "headers": hdrs, "parts": [], "t_first": None, "error": None}
        ctype = hdrs.get("content-type", "")
        if resp.status != 200 or not ctype.startswith("multipart/x-savi-stream;"):
            out["body_text"] = resp.read().decode("utf-8", "replace")[:2000]
            out["elapsed_s"] = time.perf_counter() - t0
            conn.close()
            return out
        boundary = ("--" + ctype.split("; boundary=", 1)[1] + "\r\n").encode()
        try:
            while True:
                line = resp.readline()
                while line == b"\r\n":
                    line = resp.readline()
                if line == b"":
                    break
                if line != boundary:
                    raise ValueError(f"bad part boundary {line[:80]!r}")
                headers = []
                while True:
                    hl = resp.readline()
                    if not hl.endswith(b"\r\n"):
                        raise ValueError("truncated part header")
                    if hl == b"\r\n":
                        break
                    k, _, v = hl[:-2].decode().partition(": ")
                    headers.append([k, v])
                n = int(dict((k.lower(), v) for k, v in headers)["content-length"])
                data = resp.read(n)
                if len(data) != n:
                    raise ValueError("truncated part body")
                t = time.perf_counter() - t0
                if out["t_first"] is None:
                    out["t_first"] = t
                parsed = json.loads(data.decode("utf-8"))
                part = {"headers": headers, "json": parsed, "t": t,
                        "python_json": data == json.dumps(parsed).encode()}
                out["parts"].append(part)
                if on_part is not None:
                    on_part(len(out["parts"]) - 1, part)
        except (ValueError, http.client.HTTPException, OSError) as e:
            out["error"] = f"{type(e).__name__}: {e}"
        out["elapsed_s"] = time.perf_counter() - t0
        conn.close()
        return out


# --- the scripted sequence ---------------------------------------------------------------

class Recorder:
    def __init__(self):
        self.steps = []
        self.masks = {}
        self.rle_checked = None

    def _add_masks(self, step, entries):
        """entries: (part, frame, object, rle) -> keys in the npz, mask records in the step."""
        recs, seen = [], {}
        for part, frame, obj, rle in entries:
            occ = seen.get((frame, obj), 0)
            seen[(frame, obj)] = occ + 1
            key = f"{len(self.steps):02d}_{step['name']}_f{frame:04d}_o{obj}_{occ}"
            m = rle_decode(rle)
            if self.rle_checked is None:
                self.rle_checked = _crosscheck_rle(rle, m)
            self.masks[key] = m
            recs.append({"key": key, "part": part, "frame": frame, "object": obj, "occurrence": occ,
                         "size": list(rle["size"]), "counts": rle["counts"],
                         "foreground": round(float(m.mean()), 6)})
        step["masks"] = recs

    def http(self, name, status, hdrs, data, dt, fatal=True, text=False, **extra):
        step = {"name": name, "kind": "http", "fatal": fatal, "status": status,
                "headers": {k: hdrs[k] for k in HEADERS_KEPT if k in hdrs}, "elapsed_s": round(dt, 4)}
        if text:
            step["body_text"] = data.decode("utf-8", "replace")
        step.update(extra)
        self.steps.append(step)
        return step

    def graphql(self, name, request, status, hdrs, data, dt, fatal=True):
        step = self.http(name, status, hdrs, data, dt, fatal=fatal)
        step["kind"] = "graphql"
        step["request"] = request
        try:
            body = json.loads(data.decode("utf-8"))
        except ValueError:
            step["body_text"] = data.decode("utf-8", "replace")[:2000]
            return step, None
        step["shape"] = shape_of(body)
        step["values"] = values_of(body)
        entries = []
        for v in ((body.get("data") or {}).values() if isinstance(body, dict) else []):
            for frame_list in (v if isinstance(v, list) else [v]):
                if isinstance(frame_list, dict) and "rleMaskList" in frame_list:
                    for r in frame_list["rleMaskList"]:
                        entries.append((None, frame_list["frameIndex"], r["objectId"], r["rleMask"]))
        self._add_masks(step, entries)
        return step, body

    def stream(self, name, request, res, fatal=True, cancel_after=None):
        step = {"name": name, "kind": "stream", "fatal": fatal, "request": request, "status": res["status"],
                "headers": {k: res["headers"][k] for k in HEADERS_KEPT if k in res["headers"]},
                "elapsed_s": round(res["elapsed_s"], 4), "error": res["error"]}
        if "body_text" in res:
            step["body_text"] = res["body_text"]
        parts = res["parts"]
        if cancel_after is not None:
            step["cancel_after"] = cancel_after
            step["parts_after_cancel"] = max(0, len(parts) - cancel_after)
            parts = parts[:cancel_after]  # the rest depends on timing
        # Header names in order, values except Content-Length; one entry per distinct set.
        hsets = []
        for p in parts:
            h = [[k, "<n>" if k.lower() == "content-length" else v] for k, v in p["headers"]]
            if h not in hsets:
                hsets.append(h)
        step["part_headers"] = hsets
        # Byte style of the bodies (Python json.dumps separators): reported, not required.
        step["json_style"] = sorted({"json.dumps" if p["python_json"] else "other" for p in parts})
        step["frames"] = [p["json"].get("frame_index") for p in parts]
        step["shape"] = shape_of([p["json"] for p in parts])
        step["values"] = values_of([p["json"] for p in parts])
        entries = []
        for i, p in enumerate(res["parts"] if cancel_after is None else res["parts"][:cancel_after]):
            for r in p["json"].get("results", []):
                entries.append((i, p["json"]["frame_index"], r["object_id"], r["mask"]))
        self._add_masks(step, entries)
        self.steps.append(step)
        return step


def run(args):
    c = Client(args.base_url, args.timeout)
    rec = Recorder()
    rng = random.Random(args.seed)
    timings = {}

    def pt():
        return [round(rng.uniform(0.15, 0.85), 4), round(rng.uniform(0.15, 0.85), 4)]

    def gql(name, query, variables=None, fatal=True):
        st, h, d, dt = c.graphql(query, variables)
        return rec.graphql(name, {"query": query.split("(")[0].split("{")[0].strip(), "variables": variables},
                           st, h, d, dt, fatal=fatal)

    def log(msg):
        if not args.quiet:
            print(f"conformance: {msg}", file=sys.stderr, flush=True)

    # 1. CORS preflights the browser sends before its JSON POSTs, and /healthy.
    for path in ("/graphql", "/propagate_in_video"):
        st, h, d, dt = c.request("OPTIONS", path, headers={
            "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
        rec.http(f"preflight{path.replace('/', '_')}", st, h, d, dt)
    st, h, d, dt = c.request("GET", "/healthy")
    rec.http("healthy", st, h, d, dt, text=True)

    # 2. The gallery.
    _, body = gql("defaultVideo", Q_DEFAULT_VIDEO)
    video = body["data"]["defaultVideo"]
    gql("videos", Q_VIDEOS)
    for name, url_key in (("get_video", "url"), ("get_poster", "posterUrl")):
        path = urllib.parse.urlsplit(video[url_key]).path
        st, h, d, dt = c.request("GET", path)
        extra = {"path": path, "length": len(d)}
        extra["sha256_poster" if name == "get_poster" else "sha256"] = hashlib.sha256(d).hexdigest()
        rec.http(name, st, h, d, dt, **extra)
        if name == "get_video":
            video_bytes = d
    st, h, d, dt = c.request("GET", "/gallery/does-not-exist.mp4")
    rec.http("get_missing", st, h, d, dt)
    gql("introspection", Q_INTROSPECTION, fatal=False)

    # 3. A session with three objects, as the UI builds it (clearOldPoints is always true:
    #    the UI resends every point of the object on that frame).
    t_start = time.perf_counter()
    step, body = gql("startSession", M_START, {"input": {"path": video["path"]}})
    sid = body["data"]["startSession"]["sessionId"]
    timings["start_session_s"] = step["elapsed_s"]
    log(f"session {sid} on {video['path']} ({step['elapsed_s']:.2f} s)")

    add_times = []

    def add(name, frame, obj, points, labels, query=M_ADD_POINTS):
        inp = {"sessionId": sid, "frameIndex": frame, "clearOldPoints": True, "objectId": obj,
               "labels": labels, "points": points}
        step, body = gql(name, query, {"input": inp})
        add_times.append(step["elapsed_s"])
        return step, body

    f_other = args.other_frame
    p0, p0n, p1, p1b, p2, p2b = pt(), pt(), pt(), pt(), pt(), pt()
    add("addPoints_o0_f0", 0, 0, [p0], [1])
    timings["start_to_first_mask_s"] = round(time.perf_counter() - t_start, 4)
    add("addPoints_o0_f0_two", 0, 0, [p0, p0n], [1, 0], query=M_ADD_POINTS_ORDER)
    add("addPoints_o1_f0", 0, 1, [p1], [1])
    add("addPoints_o1_fN", f_other, 1, [p1b], [1])
    gql("clearPointsInFrame_o1_fN", M_CLEAR_FRAME, {"input": {"sessionId": sid, "frameIndex": f_other, "objectId": 1}})
    add("addPoints_o2_f0", 0, 2, [p2], [1])
    add("addPoints_o2_fN", f_other, 2, [p2b], [1])
    gql("removeObject_o2", M_REMOVE, {"input": {"sessionId": sid, "objectId": 2}})
    log(f"prompts done; addPoints {np.mean(add_times):.2f} s mean")

    # 4. Propagation: whole, cancelled, from the middle; then a click on a tracked frame.
    req = {"session_id": "<session>", "start_frame_index": 0}
    res = c.stream(sid, 0)
    st = rec.stream("propagate_from_0", req, res)
    n_frames = max(st["frames"]) + 1 if st["frames"] else 0
    if len(res["parts"]) > 1:
        timings["stream_first_part_s"] = round(res["t_first"], 4)
        timings["stream_frames_per_s"] = round((len(res["parts"]) - 1) / (res["parts"][-1]["t"] - res["t_first"]), 3)
        timings["stream_frames_per_s_incl_first"] = round(len(res["parts"]) / res["parts"][-1]["t"], 3)
    log(f"propagated {len(res['parts'])} parts over {n_frames} frames in {res['elapsed_s']:.1f} s")

    cancel_after = args.cancel_after if args.cancel_after is not None else rng.randint(2, 5)
    cancel_info = {}

    def on_part(i, part):
        if i + 1 == cancel_after:
            t = time.perf_counter()
            s2, h2, d2, dt2 = c.graphql(M_CANCEL, {"input": {"sessionId": sid}})
            cancel_info.update(step=(s2, h2, d2, dt2), t=t)

    res = c.stream(sid, 0, on_part=on_part)
    if cancel_info:
        rec.graphql("cancelPropagateInVideo", {"query": "mutation SAM2ModelCancelPropagateInVideoMutation",
                                               "variables": {"input": {"sessionId": "<session>"}}}, *cancel_info["step"])
        timings["cancel_to_stream_end_s"] = round(time.perf_counter() - cancel_info["t"], 4)
    rec.stream("propagate_cancelled", req, res, cancel_after=cancel_after)

    mid = n_frames // 2
    res = c.stream(sid, mid)
    rec.stream("propagate_from_mid", {"session_id": "<session>", "start_frame_index": mid}, res)
    add("addPoints_o0_mid_tracked", mid, 0, [pt()], [1])

    # 5. What the official does with bad input (these run last: a failed addPoints can
    #    leave half-written state behind in the official predictor).
    gql("err_addPoints_unknown_session", M_ADD_POINTS, {"input": {
        "sessionId": "no-such-session", "frameIndex": 0, "clearOldPoints": True, "objectId": 0,
        "labels": [1], "points": [[0.5, 0.5]]}})
    gql("err_removeObject_unknown_object", M_REMOVE, {"input": {"sessionId": sid, "objectId": 99}})
    gql("err_cancel_unknown_session", M_CANCEL, {"input": {"sessionId": "no-such-session"}})
    res = c.stream("no-such-session", 0)
    rec.stream("err_propagate_unknown_session", {"session_id": "no-such-session", "start_frame_index": 0}, res)
    gql("err_addPoints_frame_out_of_range", M_ADD_POINTS, {"input": {
        "sessionId": sid, "frameIndex": n_frames + 3, "clearOldPoints": True, "objectId": 0,
        "labels": [1], "points": [[0.5, 0.5]]}})
    gql("clearPointsInVideo", M_CLEAR_VIDEO, {"input": {"sessionId": sid}})
    res = c.stream(sid, 0)
    rec.stream("err_propagate_no_points", req, res)
    gql("err_startSession_missing_video", M_START, {"input": {"path": "gallery/does-not-exist.mp4"}})

    # 6. Upload (transcoded by the server), then close twice.
    if not args.no_upload:
        st, h, d, dt = c.upload(M_UPLOAD, "clip.mp4", video_bytes)
        step, body = rec.graphql("uploadVideo", {"query": "mutation useUploadVideoMutation", "variables": {"file": "<upload>"}},
                                 st, h, d, dt)
        timings["upload_s"] = step["elapsed_s"]
        # The name is the sha256 of the server's own transcode: encoder-dependent.
        step["values_informational"] = ["data.uploadVideo.id", "data.uploadVideo.path", "data.uploadVideo.url"]
    gql("closeSession", M_CLOSE, {"input": {"sessionId": sid}})
    gql("closeSession_again", M_CLOSE, {"input": {"sessionId": sid}})

    timings["add_points_s"] = [round(x, 4) for x in add_times]
    timings["add_points_mean_s"] = round(float(np.mean(add_times)), 4)
    out = os.path.abspath(args.out)
    npz = os.path.splitext(out)[0] + ".masks.npz"
    transcript = {
        "version": 1, "base_url": args.base_url, "seed": args.seed, "video": video["path"],
        "n_frames": n_frames, "other_frame": f_other, "mid_frame": mid, "cancel_after": cancel_after,
        "rle_decoder_matches_pycocotools": rec.rle_checked, "timings": timings,
        "masks_npz": os.path.basename(npz), "steps": rec.steps,
    }
    np.savez_compressed(npz, **rec.masks)
    with open(out, "w") as f:
        json.dump(transcript, f, indent=1)
    log(f"wrote {out} and {npz} ({len(rec.masks)} masks)")
    print_summary(transcript)
    return 0


# --- summary and compare -----------------------------------------------------------------

def print_summary(t, file=sys.stdout):
    p = lambda *a: print(*a, file=file)  # noqa: E731
    p(f"transcript: {t['base_url']} seed {t['seed']} video {t['video']} ({t['n_frames']} frames)")
    for i, s in enumerate(t["steps"]):
        extra = ""
        if s["kind"] == "stream":
            extra = f" parts={len(s['frames'])} frames={_ranges(s['frames'])}"
            if "cancel_after" in s:
                extra += f" (+{s['parts_after_cancel']} after cancel)"
            if s.get("error"):
                extra += f" error={s['error']}"
        elif s["kind"] == "graphql":
            v = s.get("values", {})
            if isinstance(v, dict) and v.get("errors"):
                extra = f" errors={[e.get('message') for e in v['errors']]}"
            elif isinstance(v, dict) and isinstance(v.get("data"), dict):
                extra = " " + json.dumps(v["data"])[:110]
        masks = s.get("masks") or []
        if masks:
            fg = np.mean([m["foreground"] for m in masks])
            extra += f" masks={len(masks)} fg={fg:.3f}"
        p(f"  {i:2d} {s['name']:<34} {s['status']} {s['elapsed_s']:8.3f}s{extra}")
    p("timings: " + json.dumps({k: v for k, v in t["timings"].items() if k != "add_points_s"}))


def _ranges(frames):
    """[0, 1, 2, 5, 4, 3] -> "[0..2,5..3]": runs of step +1 or -1."""
    out, i = [], 0
    while i < len(frames):
        j = i
        step = frames[i + 1] - frames[i] if i + 1 < len(frames) and abs(frames[i + 1] - frames[i]) == 1 else None
        while step is not None and j + 1 < len(frames) and frames[j + 1] - frames[j] == step:
            j += 1
        out.append(str(frames[i]) if i == j else f"{frames[i]}..{frames[j]}")
        i = j + 1
    return "[" + ",".join(out) + "]"


def _diff(a, b, path, out, informational):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            p = f"{path}.{k}" if path else k
            if k not in a:
                out.append((p, "<absent>", _short(b[k]), k in informational))
            elif k not in b:
                out.append((p, _short(a[k]), "<absent>", k in informational))
            else:
                _diff(a[k], b[k], p, out, informational | ({k} if k in INFORMATIONAL_KEYS else set()))
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append((f"{path}[len]", len(a), len(b), bool(informational)))
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{path}[{i}]", out, informational)
    elif a != b:
        out.append((path, _short(a), _short(b), bool(informational)))


def _short(v):
    s = json.dumps(v)
    return s if len(s) <= 80 else s[:77] + "..."


def compare(args):
    def load(p):
        t = load_transcript(p)
        npz = os.path.join(os.path.dirname(os.path.abspath(p)), t.get("masks_npz") or "")
        if t.get("masks_npz") and os.path.isfile(npz):
            return t, np.load(npz)
        # A frozen transcript (`freeze`) carries its masks only as the RLE strings served.
        return t, {m["key"]: rle_decode(m) for s in t["steps"] for m in s.get("masks", [])}

    (ta, ma), (tb, mb) = load(args.a), load(args.b)
    sa, sb = {s["name"]: s for s in ta["steps"]}, {s["name"]: s for s in tb["steps"]}
    fatal, info = [], []
    for name in [s["name"] for s in ta["steps"]] + [n for n in sb if n not in sa]:
        if name not in sa or name not in sb:
            fatal.append((name, "step", "present" if name in sa else "<absent>", "present" if name in sb else "<absent>"))
            continue
        a, b = sa[name], sb[name]
        is_fatal = a.get("fatal", True) and b.get("fatal", True)
        diffs = []
        for field in ("status", "headers", "shape", "part_headers", "frames", "body_text", "length", "sha256",
                      "sha256_poster", "error", "parts_after_cancel", "json_style"):
            if field in a or field in b:
                _diff(a.get(field), b.get(field), field, diffs, set())
        inf_paths = set(a.get("values_informational", [])) | set(b.get("values_informational", []))
        vd = []
        _diff(a.get("values"), b.get("values"), "values", vd, set())
        for p, x, y, inf in vd:
            diffs.append((p, x, y, inf or any(p.startswith("values." + q) for q in inf_paths)))
        failed = a.get("status", 200) >= 400 or b.get("status", 200) >= 400
        for p, x, y, inf in diffs:
            if failed and p == "body_text":
                inf = True  # error pages (gunicorn's, Flask's) need not match byte for byte
            inf = inf or p.split("[")[0] in INFORMATIONAL_KEYS
            (fatal if is_fatal and not inf else info).append((name, p, x, y))

    # Masks: matched by step, frame, object and occurrence.
    def index(t):
        return {(s["name"], m["frame"], m["object"], m["occurrence"]): m for s in t["steps"] for m in s.get("masks", [])}

    ia, ib = index(ta), index(tb)
    common = sorted(set(ia) & set(ib))
    only_a, only_b = sorted(set(ia) - set(ib)), sorted(set(ib) - set(ia))
    equal_px = total_px = rle_equal = exact_masks = 0
    worst = []
    for k in common:
        x, y = ma[ia[k]["key"]], mb[ib[k]["key"]]
        if x.shape != y.shape:
            fatal.append((k[0], f"mask f{k[1]} o{k[2]} shape", list(x.shape), list(y.shape)))
            total_px += x.size
            continue
        eq = int((x == y).sum())
        equal_px += eq
        total_px += x.size
        exact_masks += eq == x.size
        rle_equal += ia[k]["counts"] == ib[k]["counts"]
        if eq != x.size:
            worst.append((x.size - eq, k))
    for k in only_a + only_b:
        fatal.append((k[0], f"mask f{k[1]} o{k[2]} #{k[3]}", "present" if k in ia else "<absent>",
                      "present" if k in ib else "<absent>"))
    agreement = 100.0 * equal_px / total_px if total_px else 0.0

    print(f"compare: A={args.a} ({ta['base_url']})  B={args.b} ({tb['base_url']})")
    for name, p, x, y in fatal:
        print(f"  DIFF {name}: {p}: {x} != {y}")
    for name, p, x, y in info:
        print(f"  info {name}: {p}: {x} != {y}")
    print(f"masks: {len(common)} compared, {len(only_a)} only in A, {len(only_b)} only in B; "
          f"pixel agreement {agreement:.4f} % ({total_px - equal_px} of {total_px} px differ); "
          f"identical masks {exact_masks}/{len(common)}; RLE strings byte-equal {rle_equal}/{len(common)}")
    for d, k in sorted(worst, reverse=True)[:5]:
        print(f"  worst: {k[0]} frame {k[1]} object {k[2]}: {d} px differ")
    ok = not fatal and agreement >= args.min_agreement and total_px > 0
    print(f"compare: {'PASS' if ok else 'FAIL'} ({len(fatal)} differences, {len(info)} informational; "
          f"threshold {args.min_agreement} %)")
    return 0 if ok else 1


def load_transcript(path):
    """A transcript as `run` writes it, or frozen (`.json.gz`)."""
    if path.endswith(".gz"):
        with gzip.open(path, "rt") as f:
            return json.load(f)
    with open(path) as f:
        return json.load(f)


def freeze(args):
    """A transcript as a test fixture: gzipped, its masks kept only as the RLE strings the
    server sent (`compare` decodes them), the run's inputs recorded so a later comparison
    can tell a changed input from a changed server."""
    t = load_transcript(args.transcript)
    t.pop("masks_npz", None)
    t["frozen_inputs"] = dict(kv.split("=", 1) for kv in args.input)
    with gzip.open(args.out + ".partial", "wt", compresslevel=9) as f:
        json.dump(t, f, indent=0, sort_keys=True)
    os.replace(args.out + ".partial", args.out)
    print(f"froze {args.transcript} into {args.out} ({os.path.getsize(args.out)} bytes)")
    return 0


def selftest():
    """The RLE decoder against pycocotools' encoder, on random and blocky masks."""
    from pycocotools import mask as cm

    rng = np.random.default_rng(0)
    for t in range(300):
        h, w = (int(v) for v in rng.integers(1, 80, 2))
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        if t % 3 == 0:
            m = np.zeros((h, w), np.uint8)
            m[h // 3: h // 2 + 1, w // 4:] = 1
        r = cm.encode(np.asfortranarray(m))
        got = rle_decode({"size": r["size"], "counts": r["counts"].decode()})
        assert np.array_equal(got, m), f"RLE mismatch on case {t} ({h}x{w})"
    assert _ranges([0, 1, 2, 5, 4, 3, 9]) == "[0..2,5..3,9]"
    print("selftest: 1 passed, 0 failed")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the sequence against a server, write a transcript")
    r.add_argument("base_url")
    r.add_argument("--out", required=True, help="transcript .json (masks go to <out>.masks.npz)")
    r.add_argument("--seed", type=int, default=0, help="picks the prompt points (and the cancel point)")
    r.add_argument("--other-frame", type=int, default=10, help="the second prompted frame (default 10)")
    r.add_argument("--cancel-after", type=int, default=None, help="cancel after this many parts (default: from the seed, 2..5)")
    r.add_argument("--no-upload", action="store_true", help="skip uploadVideo")
    r.add_argument("--timeout", type=float, default=900.0, help="socket timeout in seconds")
    r.add_argument("--quiet", action="store_true")
    c = sub.add_parser("compare", help="compare transcript B against reference A")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--min-agreement", type=float, default=99.99, help="percent of mask pixels that must agree")
    sub.add_parser("selftest", help="check the RLE decoder against pycocotools")
    z = sub.add_parser("freeze", help="write a transcript as a gzipped test fixture (masks as RLE only)")
    z.add_argument("transcript")
    z.add_argument("--out", required=True, help="the .json.gz to write")
    z.add_argument("--input", action="append", default=[], help="KEY=VALUE recorded with it (e.g. a sha256)")
    s = sub.add_parser("summary", help="print a transcript's summary")
    s.add_argument("transcript")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        return run(args)
    if args.cmd == "compare":
        return compare(args)
    if args.cmd == "selftest":
        return selftest()
    if args.cmd == "freeze":
        return freeze(args)
    print_summary(load_transcript(args.transcript))
    return 0


if __name__ == "__main__":
    sys.exit(main())
