//! Video files through FFmpeg (`ffmpeg-next`), decoded on demand.
//!
//! Opening runs a demux-only pre-scan of the video stream (no decoding): it yields the
//! exact frame count (containers' own counts are missing or approximate too often) and
//! each frame's presentation timestamp and whether it starts a keyframe. With that table a
//! frame index maps to a timestamp, so a backwards (or far forward) read seeks to the
//! keyframe before the frame and decodes from there. Sequential reads keep the decoder
//! open and cost one decode each. Only the last frame handed out is kept, plus, while
//! reading backwards, a small window of the frames just before it: a backwards read
//! decodes from the keyframe anyway, and keeping the last few of those frames turns
//! reverse propagation from one GOP decode per frame into one per window.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use ffmpeg::packet::Ref as _;
use ffmpeg::{codec, decoder, format, frame, media, software::scaling};
use ffmpeg_next as ffmpeg;
use image::RgbImage;

use super::FrameSource;

/// `(library, version)` of the linked FFmpeg libraries.
pub fn library_versions() -> Vec<(String, String)> {
    let v = |v: u32| format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff);
    vec![
        ("avutil".to_string(), v(ffmpeg::util::version())),
        ("avcodec".to_string(), v(codec::version())),
        ("avformat".to_string(), v(format::version())),
        ("swscale".to_string(), v(scaling::version())),
    ]
}

/// Memory for the backwards-read window (frames are also capped at `WINDOW_MAX_FRAMES`).
const WINDOW_BYTES: usize = 64 << 20;
const WINDOW_MAX_FRAMES: usize = 32;

/// Frames per second assumed when the container states none.
const DEFAULT_FPS: f32 = 25.0;

/// Initialises FFmpeg once and silences its chatter below fatal (the console owns the
/// terminal; our own errors say what went wrong).
pub(crate) fn init_ffmpeg() -> anyhow::Result<()> {
    static INIT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INIT.get_or_init(|| {
        ffmpeg::init().map_err(|e| format!("FFmpeg failed to initialise: {e}"))?;
        ffmpeg::log::set_level(ffmpeg::log::Level::Fatal);
        Ok(())
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// What the pre-scan learnt about the video stream.
struct FrameTable {
    /// Presentation timestamps in display order (one per frame), when every packet has a
    /// distinct one; `None` means frames can only be counted from the start.
    pts: Option<Vec<i64>>,
    /// Display indices of keyframes, ascending.
    keyframes: Vec<usize>,
    count: usize,
}

/// A software scaler converting decoded pictures to RGB24 of one size.
struct Rgb {
    ctx: scaling::Context,
    key: (format::Pixel, u32, u32, i32, bool, u32, u32),
}

/// A decoded frame in RGB: at the video's size and, where asked for (`scale_for_model`),
/// at the model's S×S as the reference's video predictor reads a video file: decord asks
/// FFmpeg to scale each decoded picture straight to S×S (swscale, bilinear), where frame
/// folders go through Pillow's bicubic resize of the full-size image.
struct Pictures {
    image: RgbImage,
    model: Option<RgbImage>,
}
// SAFETY: an SwsContext has no thread affinity; it is owned by one `VideoFile` and only
// ever used through `&mut`, so moving it to another thread is sound.
unsafe impl Send for Rgb {}

pub struct VideoFile {
    path: PathBuf,
    input: format::context::Input,
    stream: usize,
    decoder: decoder::Video,
    rgb: Option<Rgb>,
    /// The scaler to the model's side, and that side, once `scale_for_model` asked.
    scaled: Option<Rgb>,
    model_side: Option<u32>,
    size: (u32, u32),
    fps: f32,
    table: FrameTable,
    /// Display index of the next frame the decoder will produce, when known.
    next: Option<usize>,
    /// Decoder has been sent end-of-stream.
    draining: bool,
    last: Option<(usize, Pictures)>,
    /// Frames decoded on the way to a backwards target, kept for the reads that follow.
    window: Vec<(usize, Pictures)>,
    window_cap: usize,
}

fn open_stream(path: &Path) -> anyhow::Result<(format::context::Input, usize, decoder::Video)> {
    let shown = path.display();
    let input = format::input(path).map_err(|e| anyhow!("{shown}: not a readable video ({e})"))?;
    let stream = input.streams().best(media::Type::Video).ok_or_else(|| anyhow!("{shown}: no video stream"))?;
    let index = stream.index();
    let ctx = codec::context::Context::from_parameters(stream.parameters())
        .map_err(|e| anyhow!("{shown}: cannot set up the decoder: {e}"))?;
    let decoder = ctx.decoder().video().map_err(|e| anyhow!("{shown}: no decoder for this video codec: {e}"))?;
    Ok((input, index, decoder))
}

/// Packets the demuxer marks to be discarded (edit lists) produce no frame.
fn is_discarded(packet: &ffmpeg::Packet) -> bool {
    // SAFETY: reading a plain field of a live packet.
    unsafe { (*packet.as_ptr()).flags & ffmpeg::ffi::AV_PKT_FLAG_DISCARD != 0 }
}

fn prescan(path: &Path, stream: usize) -> anyhow::Result<FrameTable> {
    let mut input = format::input(path).map_err(|e| anyhow!("{}: not a readable video ({e})", path.display()))?;
    let mut stamps: Vec<(Option<i64>, bool)> = Vec::new();
    let mut packet = ffmpeg::Packet::empty();
    loop {
        match packet.read(&mut input) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => break,
            Err(ffmpeg::Error::InvalidData) => continue,
            Err(e) => bail!("{}: read failed while counting frames: {e}", path.display()),
        }
        if packet.stream() != stream || is_discarded(&packet) || packet.size() == 0 {
            continue;
        }
        stamps.push((packet.pts().or(packet.dts()), packet.is_key()));
    }
    let count = stamps.len();
    let mut order: Vec<usize> = (0..count).collect();
    let all_stamped = stamps.iter().all(|s| s.0.is_some());
    if !all_stamped {
        return Ok(FrameTable { pts: None, keyframes: vec![0], count });
    }
    order.sort_by_key(|&i| stamps[i].0.unwrap());
    let pts: Vec<i64> = order.iter().map(|&i| stamps[i].0.unwrap()).collect();
    if pts.windows(2).any(|w| w[0] == w[1]) {
        return Ok(FrameTable { pts: None, keyframes: vec![0], count });
    }
    let keyframes: Vec<usize> = order.iter().enumerate().filter(|(_, &i)| stamps[i].1).map(|(d, _)| d).collect();
    Ok(FrameTable { pts: Some(pts), keyframes, count })
}

impl VideoFile {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        init_ffmpeg()?;
        if !path.exists() {
            bail!("{}: no such file", path.display());
        }
        let (input, stream, decoder) = open_stream(path)?;
        let (size, fps) = {
            let st = input.stream(stream).expect("stream index from best()");
            let fps = [st.avg_frame_rate(), st.rate()]
                .into_iter()
                .find(|r| r.numerator() > 0 && r.denominator() > 0)
                .map(|r| r.numerator() as f32 / r.denominator() as f32)
                .unwrap_or(DEFAULT_FPS);
            ((decoder.width(), decoder.height()), fps)
        };
        if size.0 == 0 || size.1 == 0 {
            bail!("{}: video stream has no frame size", path.display());
        }
        let table = prescan(path, stream)?;
        if table.count == 0 {
            bail!("{}: video stream has no frames", path.display());
        }
        Ok(VideoFile {
            path: path.to_path_buf(),
            input,
            stream,
            decoder,
            rgb: None,
            scaled: None,
            model_side: None,
            size,
            fps,
            table,
            next: Some(0),
            draining: false,
            last: None,
            window: Vec::new(),
            window_cap: (WINDOW_BYTES / (size.0 as usize * size.1 as usize * 3).max(1)).clamp(1, WINDOW_MAX_FRAMES),
        })
    }

    /// Starts again from the first frame with a fresh demuxer and decoder.
    fn reopen(&mut self) -> anyhow::Result<()> {
        let (input, stream, decoder) = open_stream(&self.path)?;
        self.input = input;
        self.stream = stream;
        self.decoder = decoder;
        self.next = Some(0);
        self.draining = false;
        Ok(())
    }

    /// Seeks the demuxer to the keyframe at display index `key` and resets the decoder.
    fn seek_to_keyframe(&mut self, key: usize) -> anyhow::Result<()> {
        let ts = self.table.pts.as_ref().expect("seek needs timestamps")[key];
        // SAFETY: the context is live; seeking this stream to a timestamp of its own.
        let rc = unsafe {
            ffmpeg::ffi::avformat_seek_file(self.input.as_mut_ptr(), self.stream as i32, i64::MIN, ts, ts, 0)
        };
        if rc < 0 {
            return self.reopen();
        }
        self.decoder.flush();
        self.next = Some(key);
        self.draining = false;
        Ok(())
    }

    /// The next decoded picture and its display index (None at the end of the stream).
    fn decode_next(&mut self) -> anyhow::Result<Option<(Option<usize>, frame::Video)>> {
        let mut picture = frame::Video::empty();
        loop {
            match self.decoder.receive_frame(&mut picture) {
                Ok(()) => {
                    let index = self.index_of(&picture);
                    self.next = index.map(|i| i + 1);
                    return Ok(Some((index, picture)));
                }
                Err(ffmpeg::Error::Eof) => return Ok(None),
                Err(ffmpeg::Error::Other { errno }) if errno == libc::EAGAIN => {}
                Err(e) => bail!("{}: decode failed: {e}", self.path.display()),
            }
            if self.draining {
                return Ok(None);
            }
            self.feed()?;
        }
    }

    /// Sends the next packet of our stream to the decoder (or end-of-stream).
    fn feed(&mut self) -> anyhow::Result<()> {
        let mut packet = ffmpeg::Packet::empty();
        loop {
            match packet.read(&mut self.input) {
                Ok(()) => {
                    if packet.stream() != self.stream {
                        continue;
                    }
                    return match self.decoder.send_packet(&packet) {
                        Ok(()) | Err(ffmpeg::Error::InvalidData) => Ok(()),
                        Err(e) => Err(anyhow!("{}: decode failed: {e}", self.path.display())),
                    };
                }
                Err(ffmpeg::Error::Eof) => {
                    self.draining = true;
                    let _ = self.decoder.send_eof();
                    return Ok(());
                }
                Err(ffmpeg::Error::InvalidData) => continue,
                Err(e) => bail!("{}: read failed: {e}", self.path.display()),
            }
        }
    }

    /// Display index of a decoded picture: by timestamp when the table has them, else by
    /// counting from the last known position.
    fn index_of(&self, picture: &frame::Video) -> Option<usize> {
        match &self.table.pts {
            Some(pts) => picture.pts().or(picture.timestamp()).and_then(|t| pts.binary_search(&t).ok()),
            None => self.next,
        }
    }

    /// The picture in RGB at the video's size and, where asked for, at the model's side.
    fn convert(&mut self, picture: &frame::Video) -> anyhow::Result<Pictures> {
        let (w, h) = self.size;
        let image = to_rgb(&mut self.rgb, &self.path, picture, w, h, scaling::Flags::BICUBIC)?;
        let model = match self.model_side {
            Some(s) => Some(to_rgb(&mut self.scaled, &self.path, picture, s, s, scaling::Flags::BILINEAR)?),
            None => None,
        };
        Ok(Pictures { image, model })
    }

    /// Positions the decoder so that `index` is at or ahead of it, choosing between decoding
    /// on, seeking to a keyframe, and starting over.
    fn position_for(&mut self, index: usize) -> anyhow::Result<()> {
        let key = match self.table.keyframes.partition_point(|&k| k <= index) {
            0 => 0,
            n => self.table.keyframes[n - 1],
        };
        // (A draining decoder still holds its last few frames, so it counts as ahead too.)
        let ahead = matches!(self.next, Some(n) if n <= index);
        // Decoding on is right when no keyframe lies between here and the target.
        if ahead && self.next.unwrap() >= key {
            return Ok(());
        }
        if self.table.pts.is_some() {
            self.seek_to_keyframe(key)
        } else if ahead {
            Ok(())
        } else {
            self.reopen()
        }
    }

    /// Decodes up to frame `index`; frames from `keep_from` up to it go into the window.
    fn decode_at(&mut self, index: usize, keep_from: Option<usize>) -> anyhow::Result<Option<Pictures>> {
        self.position_for(index)?;
        while let Some((at, picture)) = self.decode_next()? {
            match at {
                Some(i) if i == index => return Ok(Some(self.convert(&picture)?)),
                // A seek that landed past the target: let the caller start over.
                Some(i) if i > index => return Ok(None),
                Some(i) if keep_from.is_some_and(|k| i >= k) => {
                    let img = self.convert(&picture)?;
                    self.window.push((i, img));
                }
                _ => {}
            }
        }
        Ok(None)
    }
}

impl FrameSource for VideoFile {
    fn len(&self) -> usize {
        self.table.count
    }
    fn size(&self) -> (u32, u32) {
        self.size
    }
    fn fps(&self) -> f32 {
        self.fps
    }
    fn frame(&mut self, index: usize) -> anyhow::Result<RgbImage> {
        Ok(self.pictures(index)?.image.clone())
    }
    fn scale_for_model(&mut self, side: u32) -> bool {
        if self.model_side != Some(side) {
            // Frames kept so far lack this side.
            self.last = None;
            self.window.clear();
            self.model_side = Some(side);
        }
        true
    }
    fn model_frame(&mut self, index: usize) -> anyhow::Result<Option<RgbImage>> {
        if self.model_side.is_none() {
            return Ok(None);
        }
        Ok(self.pictures(index)?.model.clone())
    }
}

impl VideoFile {
    /// Frame `index` in RGB, from the frames kept or decoded; kept as the last frame, so
    /// that `frame` and `model_frame` of one index decode it once and copy out only what
    /// each hands over.
    fn pictures(&mut self, index: usize) -> anyhow::Result<&Pictures> {
        if index >= self.table.count {
            bail!("{}: frame {index} out of range ({} frames)", self.path.display(), self.table.count);
        }
        if !matches!(self.last, Some((i, _)) if i == index) {
            let img = self.fetch(index)?;
            self.last = Some((index, img));
        }
        Ok(&self.last.as_ref().expect("set above").1)
    }

    /// Frame `index` from the backwards-read window or the decoder (not the last frame).
    fn fetch(&mut self, index: usize) -> anyhow::Result<Pictures> {
        if let Some(pos) = self.window.iter().position(|(i, _)| *i == index) {
            return Ok(self.window.swap_remove(pos).1);
        }
        let backward = matches!(self.last, Some((l, _)) if index < l);
        self.window.clear();
        let keep_from = backward.then(|| index.saturating_sub(self.window_cap));
        Ok(match self.decode_at(index, keep_from)? {
            Some(img) => img,
            None => {
                // The timestamp route failed (a container that seeks imprecisely, frames
                // the decoder dropped): count from the very first frame instead.
                self.table.pts = None;
                self.table.keyframes = vec![0];
                self.reopen()?;
                self.window.clear();
                self.decode_at(index, keep_from)?.ok_or_else(|| {
                    anyhow!("{}: frame {index}: the decoder produced no such frame", self.path.display())
                })?
            }
        })
    }
}

/// `picture` in RGB24 at `w`×`h` through the scaler in `slot` (made again when the
/// picture's format, size, colorspace or range, or the target size changed).
fn to_rgb(
    slot: &mut Option<Rgb>,
    path: &Path,
    picture: &frame::Video,
    w: u32,
    h: u32,
    flags: scaling::Flags,
) -> anyhow::Result<RgbImage> {
    let full_range = picture.color_range() == ffmpeg::color::Range::JPEG
        || matches!(
            picture.format(),
            format::Pixel::YUVJ420P | format::Pixel::YUVJ422P | format::Pixel::YUVJ444P | format::Pixel::YUVJ440P
        );
    let colorspace: ffmpeg::ffi::AVColorSpace = picture.color_space().into();
    let key = (picture.format(), picture.width(), picture.height(), colorspace as i32, full_range, w, h);
    if slot.as_ref().map(|r| r.key) != Some(key) {
        let mut ctx = scaling::Context::get(
            picture.format(),
            picture.width(),
            picture.height(),
            format::Pixel::RGB24,
            w,
            h,
            flags,
        )
        .map_err(|e| anyhow!("{}: cannot convert {:?} to RGB: {e}", path.display(), picture.format()))?;
        // Honour the stream's YUV matrix and range as FFmpeg's own scale filter does
        // (BT.709 HD video would otherwise be converted with BT.601 coefficients).
        // SAFETY: live context; coefficient tables are static inside swscale.
        unsafe {
            let table = ffmpeg::ffi::sws_getCoefficients(colorspace as i32);
            let out = ffmpeg::ffi::sws_getCoefficients(ffmpeg::ffi::SWS_CS_DEFAULT);
            ffmpeg::ffi::sws_setColorspaceDetails(
                ctx.as_mut_ptr(),
                table,
                full_range as i32,
                out,
                1,
                0,
                1 << 16,
                1 << 16,
            );
        }
        *slot = Some(Rgb { ctx, key });
    }
    let mut out = frame::Video::empty();
    slot.as_mut()
        .expect("made above")
        .ctx
        .run(picture, &mut out)
        .map_err(|e| anyhow!("{}: RGB conversion failed: {e}", path.display()))?;
    let stride = out.stride(0);
    let data = out.data(0);
    let row = w as usize * 3;
    let mut pixels = Vec::with_capacity(row * h as usize);
    for y in 0..h as usize {
        pixels.extend_from_slice(&data[y * stride..y * stride + row]);
    }
    Ok(RgbImage::from_raw(w, h, pixels).expect("rows of the frame size"))
}
