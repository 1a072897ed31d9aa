//! Media: frames in (video files through FFmpeg, frame folders, single images), and the
//! outputs (RLE, palette PNGs, npy logits, overlay video).
pub mod rle;

use std::path::Path;

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
}

/// Opens a video file, a frame folder or a single image.
pub fn open(_path: &Path) -> anyhow::Result<Box<dyn FrameSource>> {
    anyhow::bail!("media layer not implemented yet")
}
