//! Videos made of still images: a folder of numbered frames (the SAM 2 convention,
//! `00000.jpg, 00001.jpg, …`, ordered by the number in the name) and a single image
//! (a one-frame video). Every frame is decoded when asked for; nothing is cached.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use image::RgbImage;

use super::{image_file, FrameSource};

/// Frame rate reported for stills, which have none.
pub const STILLS_FPS: f32 = 25.0;

pub struct FrameFolder {
    dir: PathBuf,
    frames: Vec<PathBuf>,
    size: (u32, u32),
}

/// The frame number in a file name: the last run of digits in the stem
/// (`00012.jpg` → 12, `frame_0007.png` → 7).
pub fn frame_number(file_name: &str) -> Option<u64> {
    let stem = Path::new(file_name).file_stem()?.to_str()?;
    let bytes = stem.as_bytes();
    let end = bytes.iter().rposition(|b| b.is_ascii_digit())? + 1;
    let start = bytes[..end].iter().rposition(|b| !b.is_ascii_digit()).map_or(0, |i| i + 1);
    // Longer than u64 is not a frame number anyone writes; refuse rather than wrap.
    stem[start..end].parse().ok()
}

impl FrameFolder {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let shown = format!("{}/", dir.display().to_string().trim_end_matches('/'));
        let entries = std::fs::read_dir(dir).map_err(|e| anyhow!("{shown}: cannot list: {}", super::io_reason(&e)))?;
        let mut numbered = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| anyhow!("{shown}: cannot list: {e}"))?;
            let path = entry.path();
            if !image_file::is_image_path(&path) || path.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(n) = frame_number(&name) else {
                bail!("{shown}: frame {name} has no number in its name (frames are ordered by it)");
            };
            numbered.push((n, name, path));
        }
        if numbered.is_empty() {
            bail!("{shown}: no .jpg/.png frames");
        }
        numbered.sort();
        if let Some(w) = numbered.windows(2).find(|w| w[0].0 == w[1].0) {
            bail!("{shown}: frames {} and {} have the same number {}", w[0].1, w[1].1, w[0].0);
        }
        let frames: Vec<PathBuf> = numbered.into_iter().map(|(_, _, p)| p).collect();
        let size = image_file::dimensions(&frames[0])?;
        // Every frame's header, now rather than when the propagation reaches it: a frame
        // of another size (or a corrupt one) is refused before any model work. Headers
        // only, a few hundred bytes a frame.
        for path in &frames[1..] {
            let other = image_file::header_dimensions(path)?;
            if other != size {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                bail!(
                    "{shown}: frame {name} is {}x{}, the first frame {}x{} (every frame must have one size)",
                    other.0,
                    other.1,
                    size.0,
                    size.1
                );
            }
        }
        Ok(FrameFolder { dir: dir.to_path_buf(), frames, size })
    }

    /// The frame files in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.frames
    }
}

impl FrameSource for FrameFolder {
    fn len(&self) -> usize {
        self.frames.len()
    }
    fn size(&self) -> (u32, u32) {
        self.size
    }
    fn fps(&self) -> f32 {
        STILLS_FPS
    }
    fn frame(&mut self, index: usize) -> anyhow::Result<RgbImage> {
        let Some(path) = self.frames.get(index) else {
            bail!("{}/: frame {index} out of range ({} frames)", self.dir.display(), self.frames.len());
        };
        let img = image_file::decode(path)?;
        check_size(path, &img, self.size)?;
        Ok(img)
    }
}

/// Every frame of a video has one size; a frame of another size would put masks and
/// overlays out of register, so it is refused by name.
fn check_size(path: &Path, img: &RgbImage, size: (u32, u32)) -> anyhow::Result<()> {
    if img.dimensions() != size {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        bail!(
            "frame {name}: size {}x{} differs from the first frame's {}x{}",
            img.width(),
            img.height(),
            size.0,
            size.1
        );
    }
    Ok(())
}

/// One image as a one-frame video.
pub struct SingleImage {
    path: PathBuf,
    size: (u32, u32),
}

impl SingleImage {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if !path.is_file() {
            bail!("{}: no such file", path.display());
        }
        let size = image_file::dimensions(path)?;
        Ok(SingleImage { path: path.to_path_buf(), size })
    }
}

impl FrameSource for SingleImage {
    fn len(&self) -> usize {
        1
    }
    fn size(&self) -> (u32, u32) {
        self.size
    }
    fn fps(&self) -> f32 {
        STILLS_FPS
    }
    fn frame(&mut self, index: usize) -> anyhow::Result<RgbImage> {
        if index != 0 {
            bail!("{}: frame {index} out of range (1 frames)", self.path.display());
        }
        let img = image_file::decode(&self.path)?;
        check_size(&self.path, &img, self.size)?;
        Ok(img)
    }
}

#[cfg(test)]
mod tests {
    use super::frame_number;

    #[test]
    fn frame_numbers_come_from_the_last_digit_run_of_the_stem() {
        assert_eq!(frame_number("00012.jpg"), Some(12));
        assert_eq!(frame_number("frame_0007.png"), Some(7));
        assert_eq!(frame_number("cam2_frame10.jpeg"), Some(10));
        assert_eq!(frame_number("cover.jpg"), None);
    }
}
