#!/usr/bin/env bash
# The OFFICIAL SAM 2 web demo's front end (facebookresearch/sam2 @ 2b90b9f, demo/frontend:
# React + Relay, built with Vite), built as its Dockerfile builds it, for the browser test
# (tests/serve_browser.rs) and for running it against `sam2-tui serve` by hand.
#
#   scripts/official_frontend.sh build    # source, its dependencies, the build; prints the built folder
#   scripts/official_frontend.sh driver   # the CDP driver (puppeteer-core); prints its node_modules
#   scripts/official_frontend.sh serve [PORT]  # build, then serve it statically (python3) on PORT (7262)
#
# The source comes from where scripts/official_source.sh looks (exit 77 when nowhere),
# checked against one digest of all its files. Its dependencies are installed with its own
# package manager and lock file (yarn 1 from the npm registry; three locked packages the
# registry lost are replaced, see substitute_unpublished), and the build (`yarn build`: tsc,
# then vite) is kept, keyed by the commit, in $OFFICIAL_FRONTEND_CACHE (default
# target/fixtures/official-frontend-2b90b9f): the first run downloads and builds (1 to 5
# minutes here, by the network), later runs print the folder at once; the dependencies
# themselves (~2 GB with yarn's cache) are removed once the build is made.
# Needs Node 18+ and npm (scripts/setup.sh --test installs them where they are missing).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=scripts/official_source.sh
. "$HERE/official_source.sh"
BASE=${OFFICIAL_FRONTEND_CACHE:-$REPO/target/fixtures/official-frontend-${OFFICIAL_COMMIT:0:7}}
SRC=$BASE/src
DIST=$BASE/dist
YARN_VERSION=1.22.22
# The CDP driver: a release that speaks to the Chromium Debian ships (156) and runs on Node 18+.
DRIVER_VERSION=24.43.1

log() { echo "official_frontend: $*" >&2; }

# sha256 of `sha256sum` over every file of demo/frontend at the commit, sorted by path (C
# locale), paths relative to demo/frontend/ and written "./path".
DIGEST=dc882c8851985e4afa1d99b03a95498ad6bc89ff3a14771048ba2e2810bd85ae

digest_of() { # DIR: the digest of the files the commit has (node_modules, dist left out)
    (cd "$1" && find . \( -path ./node_modules -o -path ./dist \) -prune -o -type f -print | LC_ALL=C sort \
        | xargs -d '\n' sha256sum | sha256sum | cut -d' ' -f1)
}

need_node() {
    command -v node >/dev/null && command -v npm >/dev/null \
        || { log "node and npm are needed (scripts/setup.sh --test installs them)"; exit 1; }
}

materialise_source() { # a fresh copy in $SRC: the build edits it
    rm -rf "$SRC"; mkdir -p "$BASE"
    official_fetch demo/frontend yarn.lock sam2-demo-frontend "$SRC"
    local got; got=$(digest_of "$SRC")
    if [ "$got" != "$DIGEST" ]; then
        log "the official front end found does not match commit ${OFFICIAL_COMMIT:0:7} (digest $got)"
        rm -rf "$SRC"; exit 1
    fi
    log "official front end source: $SRC (verified against ${OFFICIAL_COMMIT:0:7})"
}

# Three packages of yarn.lock are no longer on the npm registry (404 since the commit); in
# the copy verified above (never in the source it came from) their lock entries are dropped
# and package.json's dependencies name what replaces them. Every other package is the
# lock file's own version.
#   pts 0.12.8                    -> 0.12.9, the next release, same dependencies
#   vite-plugin-stylex-dev 0.5.2  -> 0.7.5, the release for @stylexjs 0.6 (the runtime's)
#   react-pts-canvas 0.5.2        -> tests/serve/browser/react-pts-canvas-compat: no release
#                                    on the registry has 0.5.2's interface (a ref with
#                                    getSpace/getForm/getCanvas) that the filmstrip uses
substitute_unpublished() {
    local shim=$REPO/tests/serve/browser/react-pts-canvas-compat
    grep -q '^react-pts-canvas@' "$SRC/yarn.lock" || return 0
    node - "$SRC" "$shim" <<'EOF_NODE'
const fs = require('fs');
const [src, shim] = process.argv.slice(2);
const pkgPath = `${src}/package.json`;
const pkg = JSON.parse(fs.readFileSync(pkgPath, 'utf8'));
pkg.dependencies.pts = '0.12.9';
pkg.dependencies['react-pts-canvas'] = `file:${shim}`;
pkg.devDependencies['vite-plugin-stylex-dev'] = '0.7.5';
fs.writeFileSync(pkgPath, JSON.stringify(pkg, null, 2) + '\n');
const lockPath = `${src}/yarn.lock`;
const gone = /^(pts|react-pts-canvas|vite-plugin-stylex-dev)@/;
const blocks = fs.readFileSync(lockPath, 'utf8').split('\n\n');
fs.writeFileSync(lockPath, blocks.filter(b => !gone.test(b.trimStart())).join('\n\n'));
EOF_NODE
    log "yarn.lock: pts 0.12.9, vite-plugin-stylex-dev 0.7.5 and a react-pts-canvas stand-in for the three packages the npm registry no longer has"
}

yarn_bin() {
    local y=$BASE/yarn/node_modules/.bin/yarn
    if [ ! -x "$y" ]; then
        need_node
        log "installing yarn@$YARN_VERSION from the npm registry"
        npm install --silent --no-audit --no-fund --prefix "$BASE/yarn" "yarn@$YARN_VERSION" >&2
    fi
    echo "$y"
}

# What the build depends on besides the commit: the react-pts-canvas stand-in and the
# package versions above (a change to either makes a new build).
build_key() {
    echo "$OFFICIAL_COMMIT $YARN_VERSION $( (cat "$REPO"/tests/serve/browser/react-pts-canvas-compat/*; \
        declare -f substitute_unpublished) | sha256sum | cut -c1-16)"
}

build() {
    local key; key=$(build_key)
    if [ -f "$DIST/.sam2-tui-build" ] && [ "$(cat "$DIST/.sam2-tui-build")" = "$key" ]; then
        echo "$DIST"; return 0
    fi
    materialise_source
    need_node
    local yarn; yarn=$(yarn_bin)
    substitute_unpublished
    log "installing the front end's dependencies (yarn.lock, once)"
    # The lock file's own versions but for the three above (so not --frozen-lockfile: the
    # substitutes' new dependencies are resolved and added).
    (cd "$SRC" && "$yarn" install --non-interactive --silent --no-progress \
        --cache-folder "$BASE/yarn-cache" >&2)
    log "building the front end (yarn build: tsc && vite build, once)"
    (cd "$SRC" && "$yarn" --silent build >&2)
    echo "$key" >"$SRC/dist/.sam2-tui-build"
    rm -rf "$DIST"; mv "$SRC/dist" "$DIST"
    # The build is all that is kept: the dependencies and their cache are ~2 GB.
    rm -rf "$SRC/node_modules" "$BASE/yarn-cache"
    echo "$DIST"
}

driver() {
    local mods=$BASE/driver/node_modules
    if [ ! -f "$mods/puppeteer-core/package.json" ] \
        || ! grep -q "\"version\": \"$DRIVER_VERSION\"" "$mods/puppeteer-core/package.json"; then
        need_node
        log "installing puppeteer-core@$DRIVER_VERSION from the npm registry"
        rm -rf "$BASE/driver"; mkdir -p "$BASE/driver"
        # No browser download: the test uses Debian's chromium.
        PUPPETEER_SKIP_DOWNLOAD=1 npm install --silent --no-audit --no-fund --prefix "$BASE/driver" \
            "puppeteer-core@$DRIVER_VERSION" >&2
    fi
    echo "$mods"
}

case "${1:-}" in
    build) build ;;
    driver) driver ;;
    serve)
        dist=$(build)
        port=${2:-7262}
        log "the front end at http://localhost:$port (its API endpoints: localhost:7263 unless set in its settings)"
        exec python3 -m http.server --bind 127.0.0.1 --directory "$dist" "$port"
        ;;
    *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
