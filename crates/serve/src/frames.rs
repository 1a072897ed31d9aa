//! Video frames as the official backend decodes them, so that masks match its own.
//!
//! The reference's video predictor reads an `.mp4` with decord, which scales each decoded
//! picture straight to the model's S×S input with swscale's bilinear filter
//! (`VideoReader(path, width=S, height=S)`); the engine decodes at the video's size and
//! resizes with Pillow's bicubic filter, as the reference does for JPEG folders. The two
//! inputs differ by a few levels per pixel, which moves ~1 % of mask pixels. Until the
//! engine can decode the decord way itself (see the README), `serve` does it with the
//! `ffmpeg` CLI (bit-identical to decord: `scale=S:S:flags=bilinear` to RGB24) into a
//! folder of S×S PNG frames that the engine opens as a frame folder.
//!
//! The engine then works at S×S "video" size; the masks at the video's real size come
//! from the float logits the worker writes (`SAM2_TUI_LOGITS_DIR`): those are the
//! decoder's (S/4)² low-resolution logits upsampled ×4 (bilinear, align_corners=False);
//! the sample at 4k+2 of every row and column is 7/8·x[k] + 1/8·x[k+1] (x[n-1] at the
//! end), which inverts exactly by back-substitution. The low-resolution logits are then
//! upsampled to the video's size as the reference does (`F.interpolate(…, (H, W),
//! "bilinear", align_corners=False)`, float32, the same arithmetic) and thresholded at 0.
use sam2_api::rle::Rle;
use std::path::{Path, PathBuf};

/// A session whose engine reads S×S frames; masks come back through the logits.
#[derive(Clone, Debug)]
pub struct Decoded {
    pub logits: PathBuf,
    /// The video's own size.
    pub width: u32,
    pub height: u32,
    /// The model's input size (the frames' size).
    pub side: u32,
}

/// Writes every frame of `video` into `dest` as S×S RGB PNGs, scaled as decord does.
pub async fn extract(ffmpeg: &Path, video: &Path, dest: &Path, side: u32) -> Result<usize, String> {
    tokio::fs::create_dir_all(dest).await.map_err(|e| format!("{}: {e}", dest.display()))?;
    let mut command = tokio::process::Command::new(ffmpeg);
    command
        .args(["-nostdin", "-loglevel", "error", "-i"])
        .arg(video)
        .args(["-map", "0:v:0", "-fps_mode", "passthrough", "-vf"])
        .arg(format!("scale={side}:{side}:flags=bilinear"))
        .args(["-pix_fmt", "rgb24", "-compression_level", "1", "-start_number", "0", "-f", "image2"])
        .arg(dest.join("%05d.png"));
    crate::ffmpeg::run(ffmpeg, command, "cannot decode the video").await?;
    let n = std::fs::read_dir(dest).map(|d| d.flatten().count()).unwrap_or(0);
    if n == 0 {
        return Err("cannot decode the video: it has no frames".into());
    }
    Ok(n)
}

impl Decoded {
    /// Where the worker writes `object`'s logits on `frame`.
    pub fn path(&self, object: u32, frame: usize) -> PathBuf {
        self.logits.join(object.to_string()).join(format!("{frame:05}.npy"))
    }

    /// The mask of engine object `object` on `frame` at the video's size, from the
    /// logits the worker wrote for it (None when it wrote none).
    pub fn mask(&self, object: u32, frame: usize) -> Option<Rle> {
        let bytes = std::fs::read(self.path(object, frame)).ok()?;
        let s = self.side as usize;
        let values = npy_f32(&bytes, s, s)?;
        let low = invert_upsample4(&values, s);
        let (h, w) = (self.height as usize, self.width as usize);
        let video = upsample_bilinear(&low, s / 4, s / 4, h, w);
        Some(Rle::encode_positive(&video, h, w))
    }
}

/// The float32 values of an `.npy` holding one (h, w) little-endian f32 array.
fn npy_f32(bytes: &[u8], h: usize, w: usize) -> Option<Vec<f32>> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return None;
    }
    let (start, header_len) = match bytes[6] {
        1 => (10, u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
        _ => (12, u32::from_le_bytes([*bytes.get(8)?, *bytes.get(9)?, *bytes.get(10)?, *bytes.get(11)?]) as usize),
    };
    let header = std::str::from_utf8(bytes.get(start..start + header_len)?).ok()?;
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") || !header.contains(&format!("({h}, {w})"))
    {
        return None;
    }
    let data = bytes.get(start + header_len..)?;
    if data.len() != h * w * 4 {
        return None;
    }
    Some(data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// The n×n low-resolution logits (n = s/4) whose bilinear ×4 upsampling is the s×s `y`.
fn invert_upsample4(y: &[f32], s: usize) -> Vec<f32> {
    let n = s / 4;
    // Samples at 4k+2 in both directions: Y' = A X Aᵀ with A upper bidiagonal (7/8, 1/8).
    let mut z = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            z[i * n + j] = y[(4 * i + 2) * s + 4 * j + 2] as f64;
        }
    }
    let solve = |v: &mut [f64]| {
        let m = v.len();
        for k in (0..m - 1).rev() {
            v[k] = (v[k] - 0.125 * v[k + 1]) / 0.875;
        }
    };
    // Rows (along j), then columns (along i).
    for i in 0..n {
        solve(&mut z[i * n..(i + 1) * n]);
    }
    let mut col = vec![0f64; n];
    for j in 0..n {
        for i in 0..n {
            col[i] = z[i * n + j];
        }
        solve(&mut col);
        for i in 0..n {
            z[i * n + j] = col[i];
        }
    }
    z.into_iter().map(|v| v as f32).collect()
}

/// libtorch's CPU `upsample_bilinear2d` (align_corners=False, no antialias) on float32,
/// with its index and weight arithmetic and its order of operations.
fn upsample_bilinear(x: &[f32], ih: usize, iw: usize, oh: usize, ow: usize) -> Vec<f32> {
    let axis = |input: usize, output: usize| -> Vec<(usize, usize, f32, f32)> {
        let scale = input as f32 / output as f32;
        (0..output)
            .map(|d| {
                let src = scale * (d as f32 + 0.5) - 0.5;
                let src = if src < 0.0 { 0.0 } else { src };
                let i0 = src as usize;
                let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
                let l1 = (src - i0 as f32).clamp(0.0, 1.0);
                (i0, i1, 1.0 - l1, l1)
            })
            .collect()
    };
    let hs = axis(ih, oh);
    let ws = axis(iw, ow);
    let mut out = vec![0f32; oh * ow];
    for (r, &(h0, h1, wh0, wh1)) in hs.iter().enumerate() {
        for (c, &(w0, w1, ww0, ww1)) in ws.iter().enumerate() {
            let t0 = x[h0 * iw + w0] * ww0 + x[h0 * iw + w1] * ww1;
            let t1 = x[h1 * iw + w0] * ww0 + x[h1 * iw + w1] * ww1;
            out[r * ow + c] = t0 * wh0 + t1 * wh1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_x4_upsampling_inverts() {
        let n = 16;
        let x: Vec<f32> = (0..n * n).map(|i| ((i * 7919 % 97) as f32 - 48.0) / 10.0).collect();
        let y = upsample_bilinear(&x, n, n, 4 * n, 4 * n);
        let back = invert_upsample4(&y, 4 * n);
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn npy_round_trip() {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }";
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        for v in [1.0f32, -2.0, 3.5, 0.0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(npy_f32(&b, 2, 2).unwrap(), vec![1.0, -2.0, 3.5, 0.0]);
        assert!(npy_f32(&b, 3, 2).is_none());
    }
}
