#!/usr/bin/env bash
# Downloads official SAM 2 checkpoints into this folder.
#   ./weights/download.sh [tiny|small|base_plus|large|all] [--version 2.1|2.0]
# Each file goes to a temporary name first and is renamed only when complete, so an
# interrupted download never leaves a half file under the official name.
set -euo pipefail

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
size="tiny"
version="2.1"
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version="${2:?--version needs 2.1 or 2.0}"; shift 2 ;;
    --version=*) version="${1#--version=}"; shift ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) size="$1"; shift ;;
  esac
done

case "$version" in
  2.1) base="https://dl.fbaipublicfiles.com/segment_anything_2/092824"; prefix="sam2.1_hiera" ;;
  2.0|2) base="https://dl.fbaipublicfiles.com/segment_anything_2/072824"; prefix="sam2_hiera" ;;
  *) echo "download.sh: unknown version '$version' (expected 2.1 or 2.0)" >&2; exit 1 ;;
esac
case "$size" in
  all) sizes="tiny small base_plus large" ;;
  tiny|small|base_plus|large) sizes="$size" ;;
  t) sizes="tiny" ;; s) sizes="small" ;; b+|base) sizes="base_plus" ;; l) sizes="large" ;;
  *) echo "download.sh: unknown size '$size' (expected tiny, small, base_plus, large or all)" >&2; exit 1 ;;
esac
command -v curl >/dev/null || { echo "download.sh: curl is required" >&2; exit 1; }

for s in $sizes; do
  name="${prefix}_${s}.pt"
  dest="$dir/$name"
  if [ -s "$dest" ]; then
    echo "$dest already exists; delete it to download again"
    continue
  fi
  tmp="$dir/.${name}.download.pt"
  trap 'rm -f "$tmp"' EXIT
  echo "downloading $base/$name"
  if ! curl -fL --retry 2 --progress-bar -o "$tmp" "$base/$name"; then
    echo "download.sh: $base/$name: download failed (no network?)" >&2
    exit 1
  fi
  # A torch.save checkpoint is a zip archive: it starts with "PK".
  if [ "$(head -c 2 "$tmp")" != "PK" ]; then
    echo "download.sh: $base/$name: the server did not send a checkpoint" >&2
    exit 1
  fi
  mv -f "$tmp" "$dest"
  trap - EXIT
  echo "$dest"
done
