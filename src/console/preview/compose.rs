//! Draws masks and prompt marks over a frame, in theme colours, at the output size.
use crate::rle::Rle;
use image::{imageops, Rgb, RgbImage};

/// Everything drawn over the frame, in video pixel coordinates.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overlay {
    pub masks: Vec<(Rle, [u8; 3])>,
    /// (x, y, positive, colour)
    pub points: Vec<(f32, f32, bool, [u8; 3])>,
    pub boxes: Vec<([f32; 4], [u8; 3])>,
    pub cursor: Option<(f32, f32, [u8; 3])>,
    pub alpha: f32,
}

/// Resizes `frame` to `out_w`×`out_h` and draws the overlay on it.
pub fn compose(frame: &RgbImage, overlay: &Overlay, out_w: u32, out_h: u32) -> RgbImage {
    let (vw, vh) = frame.dimensions();
    let mut out = if (vw, vh) == (out_w, out_h) {
        frame.clone()
    } else {
        imageops::resize(frame, out_w.max(1), out_h.max(1), imageops::FilterType::Triangle)
    };
    let (sx, sy) = (out_w as f32 / vw.max(1) as f32, out_h as f32 / vh.max(1) as f32);
    let a = overlay.alpha.clamp(0.0, 1.0);
    for (rle, color) in &overlay.masks {
        let Ok(bits) = rle.decode() else { continue };
        let (mh, mw) = (rle.height(), rle.width());
        if mh == 0 || mw == 0 {
            continue;
        }
        // Nearest mask pixel for each output pixel; edges drawn solid so thin masks show.
        let inside = |x: u32, y: u32| -> bool {
            let mx = ((x as f32 + 0.5) / out_w as f32 * mw as f32) as usize;
            let my = ((y as f32 + 0.5) / out_h as f32 * mh as f32) as usize;
            bits[my.min(mh - 1) * mw + mx.min(mw - 1)] != 0
        };
        for y in 0..out_h {
            for x in 0..out_w {
                if !inside(x, y) {
                    continue;
                }
                let edge = x == 0
                    || y == 0
                    || x + 1 == out_w
                    || y + 1 == out_h
                    || !inside(x - 1, y)
                    || !inside(x + 1, y)
                    || !inside(x, y - 1)
                    || !inside(x, y + 1);
                let p = out.get_pixel_mut(x, y);
                let k = if edge { 1.0 } else { a };
                for (v, &c) in p.0.iter_mut().zip(color) {
                    *v = (*v as f32 * (1.0 - k) + c as f32 * k).round() as u8;
                }
            }
        }
    }
    let r = ((out_w.min(out_h) as f32) / 60.0).max(2.0) as i32;
    for (b, color) in &overlay.boxes {
        let (x0, y0, x1, y1) = ((b[0] * sx) as i32, (b[1] * sy) as i32, (b[2] * sx) as i32, (b[3] * sy) as i32);
        let t = (r / 2).max(1);
        for k in 0..t {
            line(&mut out, x0, y0 + k, x1, y0 + k, *color);
            line(&mut out, x0, y1 - k, x1, y1 - k, *color);
            line(&mut out, x0 + k, y0, x0 + k, y1, *color);
            line(&mut out, x1 - k, y0, x1 - k, y1, *color);
        }
    }
    for &(x, y, positive, color) in &overlay.points {
        let (cx, cy) = ((x * sx) as i32, (y * sy) as i32);
        disc(&mut out, cx, cy, r + 1, [0, 0, 0]);
        disc(&mut out, cx, cy, r, color);
        // + or − inside the dot, so the sign survives colour blindness and halfblocks.
        line(&mut out, cx - r + 1, cy, cx + r - 1, cy, [255, 255, 255]);
        if positive {
            line(&mut out, cx, cy - r + 1, cx, cy + r - 1, [255, 255, 255]);
        }
    }
    if let Some((x, y, color)) = overlay.cursor {
        let (cx, cy) = ((x * sx) as i32, (y * sy) as i32);
        let arm = r * 3;
        line(&mut out, cx - arm, cy, cx - r, cy, color);
        line(&mut out, cx + r, cy, cx + arm, cy, color);
        line(&mut out, cx, cy - arm, cx, cy - r, color);
        line(&mut out, cx, cy + r, cx, cy + arm, color);
    }
    out
}

fn set(img: &mut RgbImage, x: i32, y: i32, c: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, Rgb(c));
    }
}

fn line(img: &mut RgbImage, x0: i32, y0: i32, x1: i32, y1: i32, c: [u8; 3]) {
    let n = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
    for i in 0..=n {
        set(img, x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n, c);
    }
}

fn disc(img: &mut RgbImage, cx: i32, cy: i32, r: i32, c: [u8; 3]) {
    for dy in -r..=r {
        for dx in -r..=r {
            if dx * dx + dy * dy <= r * r {
                set(img, cx + dx, cy + dy, c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mask_tints_its_pixels_and_leaves_the_rest() {
        let frame = RgbImage::from_pixel(8, 8, Rgb([0, 0, 0]));
        let mut m = vec![0u8; 64];
        for y in 2..6 {
            for x in 2..6 {
                m[y * 8 + x] = 1;
            }
        }
        let ov = Overlay { masks: vec![(Rle::encode(&m, 8, 8), [200, 100, 0])], alpha: 0.5, ..Default::default() };
        let out = compose(&frame, &ov, 8, 8);
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(2, 2).0, [200, 100, 0], "edges are solid");
        assert_eq!(out.get_pixel(3, 3).0, [100, 50, 0], "inside is blended");
    }

    #[test]
    fn marks_are_scaled_to_the_output() {
        let frame = RgbImage::from_pixel(100, 100, Rgb([0, 0, 0]));
        let ov = Overlay { points: vec![(50.0, 50.0, true, [0, 255, 0])], alpha: 0.5, ..Default::default() };
        let out = compose(&frame, &ov, 200, 200);
        // The dot's rim (inside the disc, off the white sign) sits around (100, 100).
        assert_eq!(out.get_pixel(102, 102).0, [0, 255, 0]);
        assert_eq!(out.get_pixel(100, 100).0, [255, 255, 255]);
    }
}
