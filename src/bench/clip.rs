//! The synthetic clip: the scene `tools/reference_fps.py` draws (a blue-grey background and
//! a red 150×180 box moving right 3 px a frame, at 960×540), scaled to the asked
//! resolution, saved as JPEG frames in a folder that both implementations can read.
use anyhow::{anyhow, Context};
use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};

const BACKGROUND: Rgb<u8> = Rgb([40, 60, 80]);
const BOX: Rgb<u8> = Rgb([220, 60, 60]);

/// Frame `index` of a `width`×`height` clip.
pub fn frame(width: u32, height: u32, index: usize) -> RgbImage {
    let sx = |v: f64| (v * width as f64 / 960.0).round() as u32;
    let sy = |v: f64| (v * height as f64 / 540.0).round() as u32;
    let (box_w, y0, y1) = (sx(150.0).max(1), sy(200.0), sy(380.0).max(sy(200.0) + 1));
    // Past the right edge the box wraps round, so long clips keep it in view.
    let travel = width.saturating_sub(box_w).max(1) as f64;
    let x0 = sx((100.0 + 3.0 * index as f64) % (travel * 960.0 / width as f64));
    let mut img = RgbImage::from_pixel(width, height, BACKGROUND);
    for y in y0..y1.min(height) {
        for x in x0..(x0 + box_w).min(width) {
            img.put_pixel(x, y, BOX);
        }
    }
    img
}

/// The click on frame 0 (inside the box): (210, 300) at 960×540, scaled.
pub fn click(width: u32, height: u32) -> (f32, f32) {
    (210.0 * width as f32 / 960.0, 300.0 * height as f32 / 540.0)
}

/// One click per object on frame 0, objects 1..=`n` in order: for one object the click
/// above (on the box, as the reference benchmark clicks); for several, the centres of a
/// grid over the frame, `ceil(sqrt(n))` columns, row by row (most land on the background:
/// the cost of tracking an object does not depend on what it is).
/// `scripts/bench_reference.py` places the reference's clicks the same way.
pub fn clicks(width: u32, height: u32, n: usize) -> Vec<(f32, f32)> {
    if n == 1 {
        return vec![click(width, height)];
    }
    let cols = (n as f64).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    let (w, h) = (width as f64, height as f64);
    (0..n)
        .map(|i| {
            let x = ((i % cols) as f64 + 0.5) * w / cols as f64;
            let y = ((i / cols) as f64 + 0.5) * h / rows as f64;
            (x as f32, y as f32)
        })
        .collect()
}

/// A folder of `frames` JPEGs (`00000.jpg`, …) under `cache`, made once and reused. It is
/// built in a temp folder and renamed into place, so a half-written clip is never reused.
pub fn ensure(cache: &Path, width: u32, height: u32, frames: usize) -> anyhow::Result<PathBuf> {
    let dir = cache.join(format!("clip-{width}x{height}-{frames}"));
    if dir.join(format!("{:05}.jpg", frames.saturating_sub(1))).is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(cache).map_err(|e| anyhow!("{}: cannot create: {e}", cache.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".clip-")
        .tempdir_in(cache)
        .with_context(|| format!("{}: cannot write here", cache.display()))?;
    for i in 0..frames {
        let path = tmp.path().join(format!("{i:05}.jpg"));
        let file = std::fs::File::create(&path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        // Quality 75 is Pillow's default, which the reference script saves with.
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 75);
        enc.encode_image(&frame(width, height, i)).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(tmp.keep(), &dir).map_err(|e| anyhow!("{}: cannot rename into place: {e}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_click_lands_on_the_box_in_frame_zero_at_any_resolution() {
        for (w, h) in [(960, 540), (64, 48), (1920, 1080)] {
            let (x, y) = click(w, h);
            assert_eq!(*frame(w, h, 0).get_pixel(x as u32, y as u32), BOX, "{w}x{h}");
        }
    }

    #[test]
    fn clicks_are_the_box_for_one_object_and_a_grid_of_distinct_points_inside_the_frame_for_more() {
        assert_eq!(clicks(960, 540, 1), vec![click(960, 540)]);
        assert_eq!(clicks(960, 540, 4), vec![(240.0, 135.0), (720.0, 135.0), (240.0, 405.0), (720.0, 405.0)]);
        for n in [2, 3, 5, 16, 17, 254] {
            let c = clicks(960, 540, n);
            assert_eq!(c.len(), n);
            assert!(c.iter().all(|&(x, y)| x > 0.0 && x < 960.0 && y > 0.0 && y < 540.0), "{n}: {c:?}");
            let mut keys: Vec<(u32, u32)> = c.iter().map(|&(x, y)| (x as u32, y as u32)).collect();
            keys.sort();
            keys.dedup();
            assert_eq!(keys.len(), n, "{n} distinct clicks");
        }
    }

    #[test]
    fn the_box_moves_three_pixels_a_frame_at_960x540() {
        let (a, b) = (frame(960, 540, 0), frame(960, 540, 1));
        assert_eq!(*a.get_pixel(100, 300), BOX);
        assert_eq!(*b.get_pixel(100, 300), BACKGROUND);
        assert_eq!(*b.get_pixel(103, 300), BOX);
    }
}
