#!/usr/bin/env bash
# A sam2-tui binary for a machine that has libtorch but no FFmpeg libraries (a rented GPU
# host, a container with only CUDA and Python): FFmpeg is built as a small set of static
# libraries and linked in, so the binary still reads video files the way the reference's
# decord does (the `decord_video` knob, which `serve` relies on to skip frame extraction)
# and writes overlay videos, and needs no libav* where it runs.
#
#   scripts/build_gpu_binary.sh [OUT_DIR]        (default: target/gpu)
#
# The FFmpeg built is the version of this machine's libavcodec-dev, so the bindings that
# ffmpeg-sys-next generates from these headers match the code they link against. Its
# source comes from Debian's archive (security pool first), else ffmpeg.org, or from
# $FFMPEG_SRC (a tarball path or URL). Only what sam2-tui reads and writes is enabled:
# the common video decoders and demuxers (H.264, HEVC, VP8/9, MPEG-1/2/4, MJPEG, PNG in
# MP4/MOV, Matroska/WebM, AVI, MPEG-TS), swscale, and the MPEG-4 encoder with the MP4
# muxer for overlay videos (libx264 is not in it). The output: OUT_DIR/sam2-tui,
# stripped; it needs libtorch (LD_LIBRARY_PATH to torch/lib), libturbojpeg and libc.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/target/gpu}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
log() { printf '[gpu-binary] %s\n' "$*" >&2; }

version="$(dpkg-query -W -f='${Version}' libavcodec-dev 2>/dev/null || true)"
[ -n "$version" ] || { echo "build_gpu_binary: libavcodec-dev is not installed (run scripts/setup.sh first)" >&2; exit 1; }
version="${version#*:}"   # the epoch
version="${version%%-*}"  # the Debian revision
command -v nasm >/dev/null || {
  log "installing nasm (FFmpeg's x86 assembly: without it decoding and scaling are slower)"
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq nasm >/dev/null
}

prefix="$out/ffmpeg-$version"
if [ ! -f "$prefix/lib/libavcodec.a" ]; then
  src="$out/src"
  mkdir -p "$src"
  tarball="$src/ffmpeg-$version.tar.xz"
  if [ ! -s "$tarball" ]; then
    candidates=("${FFMPEG_SRC:-}"
      "http://deb.debian.org/debian-security/pool/updates/main/f/ffmpeg/ffmpeg_$version.orig.tar.xz"
      "http://deb.debian.org/debian/pool/main/f/ffmpeg/ffmpeg_$version.orig.tar.xz"
      "https://ffmpeg.org/releases/ffmpeg-$version.tar.xz")
    for c in "${candidates[@]}"; do
      [ -n "$c" ] || continue
      if [ -f "$c" ]; then cp "$c" "$tarball" && break; fi
      log "fetching $c"
      curl -fsSL "$c" -o "$tarball.part" && mv "$tarball.part" "$tarball" && break
    done
    [ -s "$tarball" ] || { echo "build_gpu_binary: no FFmpeg $version source found (set FFMPEG_SRC)" >&2; exit 1; }
  fi
  rm -rf "$src/ffmpeg-$version"
  tar -xf "$tarball" -C "$src"
  log "building FFmpeg $version (static, minimal) into $prefix"
  (cd "$src/ffmpeg-$version" && ./configure --prefix="$prefix" --disable-shared --enable-static --enable-pic \
      --disable-programs --disable-doc --disable-everything --disable-autodetect --disable-network \
      --disable-avdevice --disable-avfilter --enable-swscale --enable-swresample --enable-zlib \
      --enable-decoder=h264,hevc,vp8,vp9,mpeg4,mpeg1video,mpeg2video,mjpeg,png \
      --enable-demuxer=mov,matroska,avi,mpegts,h264,hevc,m4v,mjpeg,image2 \
      --enable-parser=h264,hevc,vp8,vp9,mpeg4video,mpegvideo,mjpeg,png \
      --enable-bsf=h264_mp4toannexb,hevc_mp4toannexb,vp9_superframe_split \
      --enable-protocol=file,pipe --enable-encoder=mpeg4,png --enable-muxer=mp4,mov,matroska >"$src/configure.log" \
    && make -j"$(nproc)" install >"$src/make.log" 2>&1) \
    || { echo "build_gpu_binary: building FFmpeg failed; see $src/configure.log and $src/make.log" >&2; exit 1; }
fi

# ffmpeg-sys-next links the libraries FFMPEG_DIR holds (static ones, the only kind there);
# their own needs, zlib (static too) and libm, come after them on the link line.
zlib="$(gcc -print-file-name=libz.a)"
[ -f "$zlib" ] || { echo "build_gpu_binary: no static zlib (apt-get install zlib1g-dev)" >&2; exit 1; }
log "building sam2-tui against it"
(cd "$root" && CARGO_TARGET_DIR="$out/cargo" FFMPEG_DIR="$prefix" \
  RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=$zlib -C link-arg=-lm" cargo build --release --bin sam2-tui)
strip -o "$out/sam2-tui" "$out/cargo/release/sam2-tui"
if ldd "$out/sam2-tui" | grep -E 'lib(av|sw)[a-z]*\.so'; then
  echo "build_gpu_binary: the binary still links FFmpeg's shared libraries" >&2
  exit 1
fi
log "done: $out/sam2-tui ($(du -h "$out/sam2-tui" | cut -f1)); FFmpeg $version linked in"
