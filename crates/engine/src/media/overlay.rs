//! The overlay video: each frame with its objects' masks blended in (see `blend`),
//! encoded by FFmpeg (libx264 when the FFmpeg build has it, else MPEG-4 part 2) into a
//! temp file next to the target, renamed into place by `finish`. Odd frame sizes are
//! padded to even ones (4:2:0 video needs even sides) by repeating the last row/column.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use ffmpeg::{codec, encoder, format, frame, software::scaling, Rational};
use ffmpeg_next as ffmpeg;
use image::RgbImage;

use super::blend::{blend_masks, object_color};

/// Opacity of the mask fill.
pub const OVERLAY_ALPHA: f32 = 0.5;

pub struct OverlayWriter {
    path: PathBuf,
    tmp: PathBuf,
    octx: format::context::Output,
    encoder: encoder::Video,
    scaler: Scaler,
    width: u32,
    height: u32,
    /// Encoded size: 4:2:0 needs even sides, so odd sizes are padded by one edge pixel.
    enc_size: (u32, u32),
    time_base: Rational,
    stream_time_base: Rational,
    frames: i64,
    finished: bool,
}

struct Scaler(scaling::Context);
// SAFETY: an SwsContext has no thread affinity and is only used through `&mut`.
unsafe impl Send for Scaler {}

fn pick_encoder() -> anyhow::Result<ffmpeg::Codec> {
    encoder::find_by_name("libx264")
        .or_else(|| encoder::find(codec::Id::MPEG4))
        .ok_or_else(|| anyhow!("FFmpeg has neither the libx264 nor the mpeg4 encoder"))
}

/// Checks an overlay target before any work: an existing target must be a regular file
/// (it is replaced), an existing parent a directory, and FFmpeg must know a container for
/// the extension (`out.mp4`, `out.mkv`, …). Otherwise the run would end, after all the
/// model work, with "cannot create the video".
pub fn check_target(path: &Path) -> anyhow::Result<()> {
    use sam2_api::util::bad_input;
    let shown = path.display();
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() {
            return Err(bad_input(format!("{shown}: exists and is not a regular file; the overlay would replace it")));
        }
    }
    let mut dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // The nearest existing ancestor must be a directory (the rest is created).
    while !dir.exists() {
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => dir = p,
            _ => break,
        }
    }
    if dir.exists() && !dir.is_dir() {
        return Err(bad_input(format!("{shown}: {} is not a directory", dir.display())));
    }
    super::video::init_ffmpeg()?;
    let name = std::ffi::CString::new(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
        .map_err(|_| bad_input(format!("{shown}: bad file name")))?;
    // SAFETY: a lookup by file name in FFmpeg's static muxer table; the name outlives it.
    let known = !unsafe { ffmpeg::ffi::av_guess_format(std::ptr::null(), name.as_ptr(), std::ptr::null()) }.is_null();
    if path.extension().is_none() || !known {
        return Err(bad_input(format!(
            "{shown}: FFmpeg knows no video container for this extension (use .mp4 or .mkv)"
        )));
    }
    Ok(())
}

impl OverlayWriter {
    pub fn create(path: &Path, width: u32, height: u32, fps: f32) -> anyhow::Result<Self> {
        super::video::init_ffmpeg()?;
        let shown = path.display();
        if width == 0 || height == 0 {
            bail!("{shown}: cannot encode a {width}x{height} video");
        }
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow!("{}: cannot create directory: {}", dir.display(), super::io_reason(&e)))?;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("mp4");
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "overlay".into());
        // Same directory (so the final rename is atomic), same extension (so FFmpeg picks
        // the container from it).
        let tmp = dir.join(format!(".{name}.{}.partial.{ext}", std::process::id()));
        let mut octx = format::output(&tmp).map_err(|e| anyhow!("{shown}: cannot create the video: {e}"))?;
        let codec = pick_encoder()?;
        let enc_size = ((width + 1) & !1, (height + 1) & !1);
        let fps = if fps.is_finite() && fps > 0.0 { fps } else { 25.0 };
        // SAFETY: pure arithmetic helper. MPEG-4 part 2 needs a denominator <= 65535.
        let rate: Rational = unsafe { ffmpeg::ffi::av_d2q(fps as f64, 65535) }.into();
        let time_base = rate.invert();

        let mut enc = codec::context::Context::new_with_codec(codec).encoder().video()?;
        enc.set_width(enc_size.0);
        enc.set_height(enc_size.1);
        enc.set_format(format::Pixel::YUV420P);
        enc.set_time_base(time_base);
        enc.set_frame_rate(Some(rate));
        if octx.format().flags().contains(format::Flags::GLOBAL_HEADER) {
            enc.set_flags(codec::Flags::GLOBAL_HEADER);
        }
        let mut opts = ffmpeg::Dictionary::new();
        if codec.name() == "libx264" {
            opts.set("preset", "veryfast");
            opts.set("crf", "20");
        } else {
            enc.set_bit_rate((enc_size.0 as usize * enc_size.1 as usize * 4).max(400_000));
        }
        let encoder =
            enc.open_with(opts).map_err(|e| anyhow!("{shown}: cannot open the {} encoder: {e}", codec.name()))?;
        {
            let mut ost = octx.add_stream(codec).map_err(|e| anyhow!("{shown}: {e}"))?;
            ost.set_parameters(&encoder);
            ost.set_time_base(time_base);
        }
        octx.write_header().map_err(|e| anyhow!("{shown}: cannot write the header: {e}"))?;
        let stream_time_base = octx.stream(0).expect("stream just added").time_base();
        let scaler = scaling::Context::get(
            format::Pixel::RGB24,
            enc_size.0,
            enc_size.1,
            format::Pixel::YUV420P,
            enc_size.0,
            enc_size.1,
            scaling::Flags::BICUBIC,
        )
        .map_err(|e| anyhow!("{shown}: cannot set up RGB to YUV conversion: {e}"))?;
        Ok(OverlayWriter {
            path: path.to_path_buf(),
            tmp,
            octx,
            encoder,
            scaler: Scaler(scaler),
            width,
            height,
            enc_size,
            time_base,
            stream_time_base,
            frames: 0,
            finished: false,
        })
    }

    /// Appends one frame with `masks` (object id, row-major 0/1 mask at the frame size).
    pub fn write(&mut self, frame: &RgbImage, masks: &[(u32, &[u8])]) -> anyhow::Result<()> {
        if frame.dimensions() != (self.width, self.height) {
            bail!(
                "{}: frame is {}x{}, the video is {}x{}",
                self.path.display(),
                frame.width(),
                frame.height(),
                self.width,
                self.height
            );
        }
        let n = (self.width * self.height) as usize;
        if let Some((id, m)) = masks.iter().find(|(_, m)| m.len() != n) {
            bail!("{}: mask of object {id} has {} pixels, the frame {n}", self.path.display(), m.len());
        }
        let colored: Vec<([u8; 3], &[u8])> = masks.iter().map(|&(id, m)| (object_color(id), m)).collect();
        let blended = blend_masks(frame, &colored, OVERLAY_ALPHA);

        let (ew, eh) = self.enc_size;
        let mut rgb = frame::Video::new(format::Pixel::RGB24, ew, eh);
        let stride = rgb.stride(0);
        let data = rgb.data_mut(0);
        let src = blended.as_raw();
        let row = self.width as usize * 3;
        for y in 0..eh as usize {
            // Padding rows/columns repeat the last real one.
            let sy = y.min(self.height as usize - 1);
            let dst = &mut data[y * stride..y * stride + ew as usize * 3];
            dst[..row].copy_from_slice(&src[sy * row..(sy + 1) * row]);
            if ew != self.width {
                let last = [src[sy * row + row - 3], src[sy * row + row - 2], src[sy * row + row - 1]];
                dst[row..row + 3].copy_from_slice(&last);
            }
        }
        let mut yuv = frame::Video::empty();
        self.scaler
            .0
            .run(&rgb, &mut yuv)
            .map_err(|e| anyhow!("{}: colour conversion failed: {e}", self.path.display()))?;
        yuv.set_pts(Some(self.frames));
        self.frames += 1;
        self.encoder.send_frame(&yuv).map_err(|e| anyhow!("{}: encode failed: {e}", self.path.display()))?;
        self.drain()
    }

    fn drain(&mut self) -> anyhow::Result<()> {
        let mut packet = ffmpeg::Packet::empty();
        while self.encoder.receive_packet(&mut packet).is_ok() {
            packet.set_stream(0);
            // One frame long: without a duration the MP4 muxer ends the edit list at the
            // last frame's start and players drop that frame.
            packet.set_duration(1);
            packet.rescale_ts(self.time_base, self.stream_time_base);
            packet
                .write_interleaved(&mut self.octx)
                .map_err(|e| anyhow!("{}: write failed: {e}", self.path.display()))?;
        }
        Ok(())
    }

    /// Number of frames written so far.
    pub fn frames(&self) -> usize {
        self.frames as usize
    }

    /// Flushes the encoder, closes the container and moves the file into place.
    pub fn finish(mut self) -> anyhow::Result<PathBuf> {
        self.encoder.send_eof().map_err(|e| anyhow!("{}: encode failed: {e}", self.path.display()))?;
        self.drain()?;
        self.octx.write_trailer().map_err(|e| anyhow!("{}: cannot finish the video: {e}", self.path.display()))?;
        std::fs::rename(&self.tmp, &self.path)
            .map_err(|e| anyhow!("{}: cannot rename into place: {e}", self.path.display()))?;
        self.finished = true;
        Ok(self.path.clone())
    }
}

impl Drop for OverlayWriter {
    fn drop(&mut self) {
        // An unfinished video is not left behind half-written.
        if !self.finished {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
