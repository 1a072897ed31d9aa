//! Media: frames in (video files through FFmpeg, frame folders, single images), the
//! reference's preprocessing, a decode-ahead prefetcher, and the outputs (RLE, palette
//! PNGs, npy logits, overlay video).
pub mod blend;
pub mod image_file;
pub mod image_frames;
pub mod npy;
pub mod output_dir;
pub mod outputs;
#[cfg(feature = "video")]
pub mod overlay;
pub mod palette;
pub mod prefetch;
pub mod preprocess;
mod turbojpeg;
#[cfg(feature = "video")]
pub mod video;

use std::path::Path;

/// The FFmpeg libraries this build decodes and encodes with, for `doctor`.
pub fn library_versions() -> Vec<(String, String)> {
    #[cfg(feature = "video")]
    return video::library_versions();
    #[cfg(not(feature = "video"))]
    vec![("ffmpeg".to_string(), "built without FFmpeg (feature `video`)".to_string())]
}

/// A video as a sequence of RGB frames, decoded on demand (streaming: sequential reads are
/// cheap, nothing is kept that was not asked for).
pub trait FrameSource: Send {
    /// Number of frames.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// (width, height) of every frame (the first frame's, as the reference does).
    fn size(&self) -> (u32, u32);
    /// Frames per second (25 for frame folders and images).
    fn fps(&self) -> f32;
    /// Decodes frame `index`.
    fn frame(&mut self, index: usize) -> anyhow::Result<image::RgbImage>;
    /// Asks for every frame also at the model's `side`×`side`, scaled as the reference's
    /// video predictor reads this kind of input, where that differs from resizing the
    /// full-size frame (a video file: decord's straight bilinear scaling, see
    /// `video.rs`). False where it does not (frame folders, images: the reference resizes
    /// those with Pillow, as the preprocessing does).
    fn scale_for_model(&mut self, _side: u32) -> bool {
        false
    }
    /// Frame `index` at the side `scale_for_model` asked for (None where it was not).
    fn model_frame(&mut self, _index: usize) -> anyhow::Result<Option<image::RgbImage>> {
        Ok(None)
    }
}

/// Opens a video file, a frame folder or a single image. What it is is decided by the
/// path: a directory is a frame folder, a `.jpg/.jpeg/.png` file a one-frame video, any
/// other file goes to FFmpeg.
///
/// Every error is bad input (exit 2): a missing or unreadable input, a FIFO or device
/// (refused before it is opened, which would block), frames of mixed sizes, a frame
/// larger than `limits::MAX_FRAME_SIDE`.
pub fn open(path: &Path) -> anyhow::Result<Box<dyn FrameSource>> {
    open_unchecked(path)
        .and_then(|source| {
            sam2_api::limits::check_frame_size(path, source.size())?;
            Ok(source)
        })
        .map_err(sam2_api::util::as_bad_input)
}

fn open_unchecked(path: &Path) -> anyhow::Result<Box<dyn FrameSource>> {
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), io_reason(&e)))?;
    if meta.is_dir() {
        return Ok(Box::new(image_frames::FrameFolder::open(path)?));
    }
    sam2_api::limits::regular_file(path, "video or image")?;
    if image_file::is_image_path(path) {
        return Ok(Box::new(image_frames::SingleImage::open(path)?));
    }
    #[cfg(feature = "video")]
    return Ok(Box::new(video::VideoFile::open(path)?));
    #[cfg(not(feature = "video"))]
    anyhow::bail!(
        "{}: cannot read video files: built without FFmpeg (feature `video`); use a frame folder or an image",
        path.display()
    )
}

/// Without FFmpeg there is no encoder: the overlay is refused in one line, up front.
#[cfg(not(feature = "video"))]
pub mod overlay {
    use std::path::{Path, PathBuf};
    pub const OVERLAY_ALPHA: f32 = 0.5;
    pub fn check_target(path: &Path) -> anyhow::Result<()> {
        Err(sam2_api::util::bad_input(format!(
            "{}: cannot write the overlay video: built without FFmpeg (feature `video`)",
            path.display()
        )))
    }
    /// Never constructed (`create` always fails), so the other methods are unreachable.
    pub struct OverlayWriter(std::convert::Infallible);
    impl OverlayWriter {
        pub fn create(path: &Path, _width: u32, _height: u32, _fps: f32) -> anyhow::Result<Self> {
            anyhow::bail!("{}: cannot write the overlay video: built without FFmpeg (feature `video`)", path.display())
        }
        pub fn write(&mut self, _frame: &image::RgbImage, _masks: &[(u32, &[u8])]) -> anyhow::Result<()> {
            match self.0 {}
        }
        pub fn frames(&self) -> usize {
            match self.0 {}
        }
        pub fn finish(self) -> anyhow::Result<PathBuf> {
            match self.0 {}
        }
    }
}

pub(crate) use sam2_api::util::io_reason;
