//! Drawing masks over a frame: a translucent fill and a one-pixel opaque outline per
//! object. Shared by the overlay video, the console preview and the `preview` command.
use image::RgbImage;

pub type RgbColor = [u8; 3];

/// The colour an object is drawn in: the one palette (`palette::OBJECT_COLORS`), so the
/// overlay video and `preview` show object 2 in the console's colour.
pub fn object_color(object_id: u32) -> RgbColor {
    super::palette::object_color(object_id)
}

/// Blends each mask (row-major 0/1 at the frame's size) over the frame in its colour with
/// opacity `alpha`, then draws its outline (mask pixels with a 4-neighbour outside the
/// mask or on the image border) in the full colour. Later masks draw over earlier ones.
pub fn blend_masks(frame: &RgbImage, masks: &[(RgbColor, &[u8])], alpha: f32) -> RgbImage {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let mut out = frame.clone();
    let a = alpha.clamp(0.0, 1.0);
    let buf: &mut [u8] = &mut out;
    for (color, mask) in masks {
        assert_eq!(mask.len(), w * h, "mask size does not match the {w}x{h} frame");
        for i in 0..w * h {
            if mask[i] == 0 {
                continue;
            }
            let (x, y) = (i % w, i / w);
            let edge = x == 0
                || y == 0
                || x + 1 == w
                || y + 1 == h
                || mask[i - 1] == 0
                || mask[i + 1] == 0
                || mask[i - w] == 0
                || mask[i + w] == 0;
            let px = &mut buf[i * 3..i * 3 + 3];
            for c in 0..3 {
                px[c] = if edge { color[c] } else { (px[c] as f32 * (1.0 - a) + color[c] as f32 * a).round() as u8 };
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_half_way_and_outline_is_solid() {
        let frame = RgbImage::from_pixel(5, 5, image::Rgb([0, 0, 0]));
        let mut mask = vec![0u8; 25];
        for y in 1..4 {
            for x in 1..4 {
                mask[y * 5 + x] = 1;
            }
        }
        let out = blend_masks(&frame, &[([200, 100, 0], &mask)], 0.5);
        assert_eq!(out.get_pixel(2, 2).0, [100, 50, 0]); // inside
        assert_eq!(out.get_pixel(1, 1).0, [200, 100, 0]); // outline
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 0]); // outside
    }
}
