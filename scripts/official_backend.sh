#!/usr/bin/env bash
# The OFFICIAL SAM 2 web-demo backend (facebookresearch/sam2 @ 2b90b9f,
# demo/backend/server: Flask + Strawberry GraphQL under gunicorn), run on CPU as the
# reference that `sam2-tui serve` is compared against (tests/serve/conformance.py).
#
#   scripts/official_backend.sh prepare        # source, venv, data folder, checkpoint
#   scripts/official_backend.sh data           # the data folder and checkpoint only (no source needed)
#   scripts/official_backend.sh start [PORT]   # prepare, then start; prints the base URL
#   scripts/official_backend.sh stop           # stop the server started by `start`
#   scripts/official_backend.sh status         # running or not, with its URL
#   scripts/official_backend.sh env            # print the env the server runs with
#
# None of the official code is in this repository: scripts/official_source.sh says where
# it is taken from at test time ($SAM2_OFFICIAL_SRC, ../shared/vendor/
# sam2-demo-backend-2b90b9f.tar.gz, the search tool's mirror; `SAM2_OFFICIAL_SRC=none`:
# nowhere, as on a machine without it).
# Whatever the source, every file is checked against the sha256 sums below before use.
# No source found: exit 77 (the conventional "skip" code) with what was tried; the
# conformance test then compares with the official answers recorded in tests/fixtures/serve/.
#
# The model code is the pinned PyPI `sam2==1.1.0` (identical to sam2/ at 2b90b9f,
# checked file by file) from the sam2-tui venv that `scripts/setup.sh --test` makes; the
# server's own dependencies (the `interactive-demo` extra, pinned to December 2024
# releases) go into a separate venv that sees that venv's torch/sam2/pycocotools
# through a .pth file, so nothing big is downloaded twice.
#
# Environment knobs: SAM2_TUI_CACHE (default ~/.cache/sam2-tui), OFFICIAL_PORT (7263),
# OFFICIAL_SECONDS (length of the test-pattern clip, 2), OFFICIAL_FORCE_CPU (1),
# OFFICIAL_FILL_HOLES (0; 1 = give the CPU run the hole filling that the official run
# only does on CUDA, see wrapper below), OFFICIAL_THREADS (torch threads, unset = all),
# OFFICIAL_BASE (folder of the source, data, checkpoint and pid file; default
# $CACHE/official-backend), OFFICIAL_IMAGE_SIZE (the model's input size, 1024 = as
# shipped; smaller sizes are for tests on slow CPUs: our wrapper adds the hydra override
# `++model.image_size=N` that sam2's own tests and tests/fixtures use; decord then scales
# the frames to N as well).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=scripts/official_source.sh
. "$HERE/official_source.sh"
COMMIT=$OFFICIAL_COMMIT
CACHE=${SAM2_TUI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sam2-tui}
MAIN_VENV=$CACHE/venv
VENV=$CACHE/official-backend-venv
BASE=${OFFICIAL_BASE:-$CACHE/official-backend}   # a test gives its own, so it never
                                                # touches a server someone else runs
SRC=$BASE/src-${COMMIT:0:7}          # holds server/ (the official files, verified)
APP_ROOT=$BASE/app_root               # APP_ROOT/checkpoints/sam2.1_hiera_tiny.pt
DATA=$BASE/data                       # DATA_PATH: gallery/ posters/ uploads/
RUN=$BASE/run
PORT=${OFFICIAL_PORT:-7263}
SECONDS_LEN=${OFFICIAL_SECONDS:-2}
GALLERY_VIDEO=01_testsrc.mp4

log() { echo "official_backend: $*" >&2; }

# sha256 of every file of demo/backend/server at $COMMIT (paths relative to server/).
SUMS='b0d7ecb6ab8d200b04a21586d237a5b78de1d546a3302e8a47a772e4dfce3e70  app.py
9fd0a3b9668b7b28a3a31eb9fd952679fcc6806cf13cff75bfa77589e51ee2cf  app_conf.py
7e054c91787c2c9b46cb5f154c2e8f577b88a9187fa35df5744afdc8ecdc5913  data/data_types.py
4ebd83186e26d5bb07803df309dfd5cb5c2aac4f0de586f9a13326cd2c4ef2c1  data/loader.py
10d2eec01071568abee8a0600c8b909ef6340c41f9576fc92bfc1817521b29b9  data/resolver.py
d89f9b768e5b9d44ee3965738ed72fd845ad93f319ce4572887dd757d7500482  data/schema.py
e029102cb48d10ad9b43f4c2e00b457ac0264d1e6a9ec397441a9494b17bd950  data/store.py
8f4b943b8b86beb159217a95815e7898a461152810c8cf170de1245b7fcafbb0  data/transcoder.py
f977f45402248c44bed38044371cc42cffa8e213b1bd7b81f532bd6cd399cd8b  inference/data_types.py
d47cd8e6990063e460ccbba69cfc0a4a39e52560be93e4bb71b6a1c9d2aaf470  inference/multipart.py
5a084d3182d3ce7407ebd2e523cc43fbbf598c35738f02c897c6e06d8a8c8fbb  inference/predictor.py'

# The server's own requirements: setup.py's `interactive-demo` extra at $COMMIT, pinned to
# releases current when that commit landed (Dec 2024); pycocotools comes from the main venv.
REQS=(Flask==3.1.0 Flask-Cors==5.0.0 av==13.1.0 dataclasses-json==0.6.7 eva-decord==0.6.1
      gunicorn==23.0.0 imagesize==1.4.1 strawberry-graphql==0.254.0
      graphql-core==3.2.5 Werkzeug==3.1.3)
# av 13, not 14: transcoder.py reads Stream.side_data, which PyAV 14 removed (uploadVideo
# then fails with "... object has no attribute 'side_data'"). graphql-core 3.2: today's 3.3
# breaks that strawberry at import.

verify_server() { # DIR (a server/ folder) -> 0 when every file matches
    (cd "$1" && echo "$SUMS" | sha256sum --quiet -c - >/dev/null 2>&1)
}

materialise_source() {
    official_wanted  # before the cache: `none` plays a machine that never had the source
    if [ -f "$SRC/server/app.py" ] && verify_server "$SRC/server"; then return 0; fi
    rm -rf "$SRC"; mkdir -p "$SRC"
    local dest=$SRC/server
    official_fetch demo/backend/server app.py sam2-demo-backend "$dest"
    if ! verify_server "$dest"; then
        log "the official backend found does not match commit ${COMMIT:0:7}:"
        (cd "$dest" && echo "$SUMS" | sha256sum -c - 2>&1 | grep -v ': OK$' >&2) || true
        rm -rf "$SRC"; exit 1
    fi
    log "official backend source: $dest (verified against ${COMMIT:0:7})"
}

make_venv() {
    if [ ! -x "$MAIN_VENV/bin/python" ] || ! "$MAIN_VENV/bin/python" -c 'import torch, sam2, pycocotools' 2>/dev/null; then
        log "the sam2-tui venv lacks torch/sam2: running scripts/setup.sh --test"
        "$REPO/scripts/setup.sh" --test >/dev/null
    fi
    local stamp=$VENV/.sam2-tui-official-reqs want
    want="${REQS[*]} main=$MAIN_VENV"
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return 0; fi
    local base_py main_site
    base_py=$("$MAIN_VENV/bin/python" -c 'import sys; print(sys._base_executable)')
    main_site=$("$MAIN_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    log "creating $VENV (sees $main_site)"
    rm -rf "$VENV"
    "$base_py" -m venv "$VENV"
    local site; site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # Appended after the venv's own site-packages: torch, numpy, sam2, pycocotools from there.
    echo "$main_site" >"$site/zz-sam2-tui-main-venv.pth"
    "$VENV/bin/python" -m pip install -q "${REQS[@]}"
    "$VENV/bin/python" -c 'import torch, sam2, flask, flask_cors, strawberry, av, decord, gunicorn, imagesize, dataclasses_json, pycocotools'
    echo "$want" >"$stamp"
}

make_data() {
    command -v ffmpeg >/dev/null || { log "ffmpeg not found (scripts/setup.sh installs it)"; exit 1; }
    mkdir -p "$DATA/gallery" "$DATA/posters" "$DATA/uploads" "$APP_ROOT/checkpoints"
    local v=$DATA/gallery/$GALLERY_VIDEO
    local stamp=$BASE/gallery-seconds  # kept out of gallery/: servers list that folder
    if [ ! -f "$v" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$SECONDS_LEN one-thread" ]; then
        # H.264 yuv420p at 24 fps, as the demo's own transcoder writes uploads. One encoder
        # thread and bit-exact muxing: the same bytes on every machine with this ffmpeg, so
        # the recorded official answers (tests/fixtures/serve/) hold for it.
        ffmpeg -loglevel error -y -f lavfi -i "testsrc=size=320x240:rate=24:duration=$SECONDS_LEN" \
            -c:v libx264 -threads 1 -crf 23 -pix_fmt yuv420p -fflags +bitexact -flags:v +bitexact \
            "$BASE/partial.mp4"
        mv "$BASE/partial.mp4" "$v"; echo "$SECONDS_LEN one-thread" >"$stamp"
        # The poster as the official loader makes it (it rewrites it at start-up anyway).
        ffmpeg -loglevel error -y -i "$v" -pix_fmt yuv420p -frames:v 1 -update 1 -strict unofficial \
            "$DATA/posters/${GALLERY_VIDEO%.mp4}.jpg"
    fi
    local ckpt=$APP_ROOT/checkpoints/sam2.1_hiera_tiny.pt
    [ -f "$ckpt" ] && return 0
    log "writing a random-init sam2.1_hiera_tiny checkpoint with the official package"
    "$MAIN_VENV/bin/python" "$HERE/random_checkpoint.py" tiny "$ckpt"
}

# Our wrapper module (not official code): applies the opt-in CPU hole filling, then
# imports the official app unchanged. gunicorn serves `sam2_tui_official_wrapper:app`.
write_wrapper() {
    mkdir -p "$RUN"
    cat >"$RUN/sam2_tui_official_wrapper.py" <<'EOF'
"""sam2-tui: start the official SAM 2 demo backend unchanged, optionally with an exact CPU
replacement for sam2._C's connected components (the CUDA-only hole filling)."""
import os

import torch

threads = os.environ.get("OFFICIAL_THREADS")
if threads:
    torch.set_num_threads(int(threads))

image_size = int(os.environ.get("OFFICIAL_IMAGE_SIZE") or 1024)
if image_size != 1024:
    # Before the app imports it (inference/predictor.py binds the name at import).
    import sam2.build_sam as build_sam

    _build = build_sam.build_sam2_video_predictor

    def build_sam2_video_predictor(config_file, ckpt_path=None, *args, hydra_overrides_extra=(), **kwargs):
        extra = list(hydra_overrides_extra) + [f"++model.image_size={image_size}"]
        return _build(config_file, ckpt_path, *args, hydra_overrides_extra=extra, **kwargs)

    build_sam.build_sam2_video_predictor = build_sam2_video_predictor

if os.environ.get("OFFICIAL_FILL_HOLES", "0") == "1":
    import numpy as np
    import scipy.ndimage
    import sam2.utils.misc as misc

    def get_connected_components(mask):
        # Same contract as sam2._C.get_connected_componnets: 8-connectivity, per-pixel
        # labels and per-pixel component areas (0 on background), shapes (N, 1, H, W).
        m = mask.detach().to("cpu", torch.uint8).numpy()
        labels = np.zeros(m.shape, np.int32)
        counts = np.zeros(m.shape, np.int32)
        for i in range(m.shape[0]):
            lab, _ = scipy.ndimage.label(m[i, 0], structure=np.ones((3, 3), np.int32))
            area = np.bincount(lab.ravel())
            area[0] = 0
            labels[i, 0] = lab
            counts[i, 0] = area[lab]
        return torch.from_numpy(labels).to(mask.device), torch.from_numpy(counts).to(mask.device)

    misc.get_connected_components = get_connected_components

from app import app  # noqa: E402,F401  (the official Flask app, as shipped)
EOF
}

server_env() {
    cat <<EOF
APP_ROOT=$APP_ROOT
DATA_PATH=$DATA
API_URL=http://localhost:$PORT
MODEL_SIZE=tiny
DEFAULT_VIDEO_PATH=gallery/$GALLERY_VIDEO
SAM2_DEMO_FORCE_CPU_DEVICE=${OFFICIAL_FORCE_CPU:-1}
OFFICIAL_FILL_HOLES=${OFFICIAL_FILL_HOLES:-0}
OFFICIAL_IMAGE_SIZE=${OFFICIAL_IMAGE_SIZE:-1024}
PYTHONUNBUFFERED=1
EOF
}

prepare() { materialise_source; make_venv; make_data; write_wrapper; }

is_running() { [ -f "$RUN/pid" ] && kill -0 "$(cat "$RUN/pid")" 2>/dev/null; }

start() {
    [ $# -ge 1 ] && PORT=$1
    if is_running; then log "already running (pid $(cat "$RUN/pid"))"; cat "$RUN/url"; return 0; fi
    prepare
    local url=http://127.0.0.1:$PORT
    : >"$RUN/server.log"
    # The README's local command, with the Dockerfile's log flags; 2 threads so that
    # cancelPropagateInVideo can run while a stream holds the other one. The timeout is
    # raised from 60 s: on a slow CPU one propagation outlives it and gunicorn kills the worker.
    (
        cd "$RUN"
        set -a; eval "$(server_env)"; set +a
        export OFFICIAL_THREADS=${OFFICIAL_THREADS:-}
        exec setsid "$VENV/bin/gunicorn" --chdir "$SRC/server" --pythonpath "$SRC/server,$RUN" \
            --worker-class gthread sam2_tui_official_wrapper:app --workers 1 --threads 2 \
            --bind "127.0.0.1:$PORT" --timeout "${OFFICIAL_TIMEOUT:-600}" \
            --log-level info --access-logfile - >>"$RUN/server.log" 2>&1
    ) &
    echo $! >"$RUN/pid"
    echo "$url" >"$RUN/url"
    local i
    for i in $(seq 1 600); do
        if curl -fsS "$url/healthy" >/dev/null 2>&1; then echo "$url"; return 0; fi
        is_running || { log "the server died; tail of $RUN/server.log:"; tail -n 30 "$RUN/server.log" >&2; exit 1; }
        sleep 0.5
    done
    log "not healthy after 300 s; see $RUN/server.log"; stop; exit 1
}

stop() {
    if ! [ -f "$RUN/pid" ]; then log "not running"; return 0; fi
    local pid; pid=$(cat "$RUN/pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$RUN/pid"; log "stopped"
}

case "${1:-}" in
    prepare) prepare; echo "$BASE" ;;
    data) make_data; echo "$BASE" ;;
    start) shift; start "$@" ;;
    stop) stop ;;
    status) if is_running; then echo "running: $(cat "$RUN/url") (pid $(cat "$RUN/pid"), log $RUN/server.log)"; else echo "stopped"; exit 1; fi ;;
    env) server_env ;;
    *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
