//! Reading one still image (a frame of a frame folder, or a one-frame video) as RGB8, the
//! way the reference reads it: `PIL.Image.open(p).convert("RGB")`.
use std::path::Path;

use image::RgbImage;

use super::turbojpeg;

/// Is this a frame image by its extension (`.jpg`, `.jpeg`, `.png`, any case)?
pub fn is_image_path(path: &Path) -> bool {
    kind(path).is_some()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Jpeg,
    Png,
}

fn kind(path: &Path) -> Option<Kind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => Some(Kind::Jpeg),
        "png" => Some(Kind::Png),
        _ => None,
    }
}

fn name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

/// (width, height) from the header only.
pub fn dimensions(path: &Path) -> anyhow::Result<(u32, u32)> {
    let fail = |why: String| anyhow::anyhow!("{}: cannot read image header: {why}", path.display());
    match kind(path) {
        Some(Kind::Jpeg) => {
            let bytes = std::fs::read(path).map_err(|e| fail(super::io_reason(&e)))?;
            let (w, h, _) = turbojpeg::header(&bytes).map_err(fail)?;
            Ok((w, h))
        }
        _ => image::image_dimensions(path).map_err(|e| fail(e.to_string())),
    }
}

/// (width, height) from the header, reading only the header's bytes whatever the format
/// (`dimensions` reads a whole JPEG for TurboJPEG; this is for checking many frames).
pub fn header_dimensions(path: &Path) -> anyhow::Result<(u32, u32)> {
    let fail = |why: String| anyhow::anyhow!("{}: cannot read image header: {why}", path.display());
    let reader = image::ImageReader::open(path).map_err(|e| fail(super::io_reason(&e)))?;
    reader.with_guessed_format().map_err(|e| fail(e.to_string()))?.into_dimensions().map_err(|e| fail(e.to_string()))
}

/// Decodes an image file to RGB8. JPEG goes through libjpeg-turbo (bit-identical to
/// Pillow); CMYK/YCCK JPEGs, which TurboJPEG cannot turn into RGB, and PNGs go through the
/// `image` crate (PNG decoding is lossless, so any decoder agrees on 8-bit files).
/// Errors read `frame 00007.png: decode failed: …`.
pub fn decode(path: &Path) -> anyhow::Result<RgbImage> {
    let fail = |why: String| anyhow::anyhow!("frame {}: decode failed: {why}", name(path));
    let bytes = std::fs::read(path).map_err(|e| fail(super::io_reason(&e)))?;
    if kind(path) == Some(Kind::Jpeg) || bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        let cmyk = matches!(turbojpeg::header(&bytes), Ok((_, _, cs)) if cs == turbojpeg::TJCS_CMYK || cs == turbojpeg::TJCS_YCCK);
        if !cmyk {
            let (w, h, px) = turbojpeg::decode_rgb(&bytes).map_err(fail)?;
            return RgbImage::from_raw(w, h, px).ok_or_else(|| fail("buffer size mismatch".into()));
        }
    }
    let img = image::load_from_memory(&bytes).map_err(|e| fail(e.to_string()))?;
    Ok(match img {
        // Pillow reads 16-bit colour PNGs as 8-bit by keeping the high byte; `to_rgb8`
        // would round instead.
        image::DynamicImage::ImageRgb16(im) => {
            high_bytes(im.width(), im.height(), im.pixels().map(|p| [p[0], p[1], p[2]]))
        }
        image::DynamicImage::ImageRgba16(im) => {
            high_bytes(im.width(), im.height(), im.pixels().map(|p| [p[0], p[1], p[2]]))
        }
        other => other.to_rgb8(),
    })
}

fn high_bytes(w: u32, h: u32, px: impl Iterator<Item = [u16; 3]>) -> RgbImage {
    let data: Vec<u8> = px.flat_map(|p| p.map(|v| (v >> 8) as u8)).collect();
    RgbImage::from_raw(w, h, data).expect("pixel count matches the image size")
}
