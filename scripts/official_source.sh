# shellcheck shell=bash
# Where the OFFICIAL SAM 2 demo's code (facebookresearch/sam2 @ 2b90b9f) comes from at test
# time; sourced by scripts/official_backend.sh (demo/backend/server) and
# scripts/official_frontend.sh (demo/frontend). None of that code is in this repository.
# A part is taken, in order, from:
#   1. $SAM2_OFFICIAL_SRC: a checkout, the part's own folder, a git directory holding the
#      commit, or a tarball of the part (or of a checkout);
#   2. <repo>/../shared/vendor/<vendor name>-2b90b9f.tar.gz, if the team keeps one there
#      (shared/ travels to developers and CI; this repo does not);
#   3. the search tool's mirror, /work/.mirror/facebookresearch+sam2/repo (git).
# SAM2_OFFICIAL_SRC=none looks nowhere (exit 77), as on a machine without the source.
# The PyPI sdist of sam2==1.1.0 has no demo/ folder, so PyPI cannot supply it. The caller
# verifies what was found (each part has its own sums) and defines log().

OFFICIAL_COMMIT=2b90b9f5ceec907a1c18123530e92e794ad901a4
OFFICIAL_MIRROR=/work/.mirror/facebookresearch+sam2/repo

_official_from_git() { # GIT_DIR PART DEST
    git --git-dir="$1" cat-file -e "$OFFICIAL_COMMIT^{commit}" 2>/dev/null || return 1
    # File by file (a partial mirror may lack unrelated blobs, which `git archive` trips on).
    local mode type obj path rel
    git --git-dir="$1" ls-tree -r "$OFFICIAL_COMMIT" "$2" | while read -r mode type obj path; do
        rel=${path#"$2"/}
        mkdir -p "$3/$(dirname "$rel")"
        git --git-dir="$1" cat-file blob "$obj" >"$3/$rel"
    done
}

_official_from_tar() { # TARBALL PART MARKER DEST: a tarball of the part or of a checkout
    local tmp found leaf; tmp=$(mktemp -d); leaf=$(basename "$2")
    tar -xf "$1" -C "$tmp" || { rm -rf "$tmp"; return 1; }
    found=$(find "$tmp" -path "*$leaf/$3" | head -n1)
    [ -n "$found" ] || { rm -rf "$tmp"; return 1; }
    mv "$(dirname "$found")" "$4"; rm -rf "$tmp"
}

# official_wanted: exit 77 when SAM2_OFFICIAL_SRC=none.
official_wanted() {
    [ "${SAM2_OFFICIAL_SRC:-}" != none ] || { log "SAM2_OFFICIAL_SRC=none: not looking for the official source"; exit 77; }
}

# official_fetch PART MARKER VENDOR DEST: fills DEST (absent) with PART's files at the commit,
# MARKER being a file the part holds (app.py, yarn.lock). Exit 77 (the conventional "skip")
# with what was tried when no source has it.
official_fetch() {
    local part=$1 marker=$2 vendor=$3 dest=$4 tried=() cand
    local repo; repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    official_wanted
    if [ -n "${SAM2_OFFICIAL_SRC:-}" ]; then
        cand=$SAM2_OFFICIAL_SRC; tried+=("SAM2_OFFICIAL_SRC=$cand")
        if [ -f "$cand" ]; then _official_from_tar "$cand" "$part" "$marker" "$dest" || true
        elif [ -f "$cand/$marker" ]; then cp -r "$cand" "$dest"
        elif [ -f "$cand/$part/$marker" ]; then cp -r "$cand/$part" "$dest"
        elif [ -d "$cand" ]; then
            _official_from_git "$cand" "$part" "$dest" || _official_from_git "$cand/.git" "$part" "$dest" || true
        fi
    fi
    cand=$repo/../shared/vendor/$vendor-${OFFICIAL_COMMIT:0:7}.tar.gz
    if [ ! -f "$dest/$marker" ]; then
        tried+=("$cand"); [ -f "$cand" ] && { _official_from_tar "$cand" "$part" "$marker" "$dest" || true; }
    fi
    cand=$OFFICIAL_MIRROR
    if [ ! -f "$dest/$marker" ]; then
        tried+=("$cand (git)"); [ -d "$cand" ] && { _official_from_git "$cand" "$part" "$dest" || true; }
    fi
    if [ ! -f "$dest/$marker" ]; then
        log "no source of the official $part @ ${OFFICIAL_COMMIT:0:7}; tried:"
        printf '  %s\n' "${tried[@]}" >&2
        exit 77
    fi
}
