//! The reference's frame preprocessing, reproduced to the bit: Pillow's bicubic resize on
//! uint8 (`Image.resize((S, S))`, whose default filter is bicubic), then `/255` in float64,
//! stored as float32, minus the ImageNet mean and over its std in float32
//! (`sam2/utils/misc.py`, `_load_img_as_tensor` and `load_video_frames_from_jpg_images`).
//!
//! The resize follows Pillow's `libImaging/Resample.c`: separable, horizontal pass first
//! (over only the rows the vertical pass reads) then vertical; the filter's support widens
//! by the downscale factor; weights are normalised in double, then turned into 22-bit
//! fixed point (`PRECISION_BITS = 32 - 8 - 2`); each pass rounds and clips to uint8.
use image::RgbImage;

const PRECISION_BITS: u32 = 32 - 8 - 2;
const BICUBIC_SUPPORT: f64 = 2.0;

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Keys's cubic convolution with a = -0.5, as Pillow defines it.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output pixel: the first input index and the fixed-point weights of its window.
struct Coefficients {
    first: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for a full-image box.
fn coefficients(in_size: usize, out_size: usize) -> Coefficients {
    let scale = in_size as f32 as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = BICUBIC_SUPPORT * filterscale;
    let mut first = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) cast truncates toward zero; both bounds are then clamped.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut k: Vec<f64> = (0..n).map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) * ss)).collect();
        let ww: f64 = k.iter().sum();
        if ww != 0.0 {
            k.iter_mut().for_each(|v| *v /= ww);
        }
        let fixed = k
            .iter()
            .map(|&v| {
                let scaled = v * (1u32 << PRECISION_BITS) as f64;
                if v < 0.0 {
                    (scaled - 0.5) as i32
                } else {
                    (scaled + 0.5) as i32
                }
            })
            .collect();
        first.push(xmin);
        weights.push(fixed);
    }
    Coefficients { first, weights }
}

/// Pillow's `clip8`: drop the fixed-point fraction, clamp to 0..=255.
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const ROUNDING: i32 = 1 << (PRECISION_BITS - 1);

/// Threads for resizing: `configured` (the `resize_threads` knob), or for 0 a quarter of
/// the machine, at most 4 (the model's own threads come first; on a 2-core machine this
/// is 1). Rows are independent, so the bytes are the same however they are split.
pub fn resize_threads(configured: usize) -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    if configured > 0 {
        return configured;
    }
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| (n.get() / 4).clamp(1, 4)))
}

/// Calls `f(row_index, row)` for every `row_len`-long row of `buf`, in bands on `threads`
/// threads.
fn for_row_bands_on(buf: &mut [u8], row_len: usize, threads: usize, f: impl Fn(usize, &mut [u8]) + Sync) {
    let rows = buf.len() / row_len;
    let threads = threads.min(rows.max(1));
    if threads <= 1 {
        for (y, row) in buf.chunks_mut(row_len).enumerate() {
            f(y, row);
        }
        return;
    }
    let band = rows.div_ceil(threads);
    std::thread::scope(|scope| {
        for (b, chunk) in buf.chunks_mut(band * row_len).enumerate() {
            let f = &f;
            scope.spawn(move || {
                for (i, row) in chunk.chunks_mut(row_len).enumerate() {
                    f(b * band + i, row);
                }
            });
        }
    });
}

/// Resizes like `PIL.Image.resize((w, h), Image.BICUBIC)` on an RGB image, byte for byte.
pub fn resize_bicubic_pillow(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    resize_bicubic_pillow_on(img, w, h, resize_threads(0))
}

/// [`resize_bicubic_pillow`] with its rows split over `threads` threads (the same bytes).
pub fn resize_bicubic_pillow_on(img: &RgbImage, w: u32, h: u32, threads: usize) -> RgbImage {
    assert!(w > 0 && h > 0, "resize target must be non-empty");
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (out_w, out_h) = (w as usize, h as usize);
    if (in_w, in_h) == (out_w, out_h) {
        return img.clone();
    }
    let src = img.as_raw();
    let vert = coefficients(in_h, out_h);
    // Rows of the source the vertical pass will read.
    let row_first = vert.first[0];
    let row_last = vert.first[out_h - 1] + vert.weights[out_h - 1].len();

    // Horizontal pass (skipped when the width is unchanged, as Pillow does).
    let (mid, mid_w, mid_row0): (std::borrow::Cow<[u8]>, usize, usize) = if out_w != in_w {
        let horiz = coefficients(in_w, out_w);
        let rows = row_last - row_first;
        let mut mid = vec![0u8; rows * out_w * 3];
        for_row_bands_on(&mut mid, out_w * 3, threads, |y, dst_row| {
            let src_row = &src[(y + row_first) * in_w * 3..(y + row_first + 1) * in_w * 3];
            for xx in 0..out_w {
                let x0 = horiz.first[xx];
                let mut acc = [ROUNDING; 3];
                for (i, &k) in horiz.weights[xx].iter().enumerate() {
                    let p = &src_row[(x0 + i) * 3..(x0 + i) * 3 + 3];
                    acc[0] += p[0] as i32 * k;
                    acc[1] += p[1] as i32 * k;
                    acc[2] += p[2] as i32 * k;
                }
                dst_row[xx * 3] = clip8(acc[0]);
                dst_row[xx * 3 + 1] = clip8(acc[1]);
                dst_row[xx * 3 + 2] = clip8(acc[2]);
            }
        });
        (mid.into(), out_w, row_first)
    } else {
        (src.as_slice().into(), in_w, 0)
    };

    if out_h == in_h {
        // Pillow skips the vertical pass; `mid` then holds every row.
        return RgbImage::from_raw(w, h, mid.into_owned()).expect("size checked");
    }
    let stride = mid_w * 3;
    let mut out = vec![0u8; out_h * stride];
    // Row-at-a-time accumulation (tap outer, pixel inner) so the compiler vectorises
    // across the row; the sums are the same integers in the same order per pixel.
    let mid = &mid;
    for_row_bands_on(&mut out, stride, threads, |yy, dst_row| {
        let y0 = vert.first[yy] - mid_row0;
        let ks = &vert.weights[yy];
        let mut acc = vec![ROUNDING; stride];
        for (i, &k) in ks.iter().enumerate() {
            let src_row = &mid[(y0 + i) * stride..(y0 + i + 1) * stride];
            for (a, &v) in acc.iter_mut().zip(src_row) {
                *a += v as i32 * k;
            }
        }
        for (d, &a) in dst_row.iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    });
    RgbImage::from_raw(w, h, out).expect("size checked")
}

/// The resized frame as the model's input bytes: `[1, size, size, 3]` uint8 on the CPU
/// (what Pillow's resize hands the reference). Four times smaller than the normalised
/// input, so this is what crosses to the GPU; [`normalize`] finishes the job there.
pub fn to_model_pixels(img: &RgbImage, size: u32) -> tch::Tensor {
    to_model_pixels_on(img, size, resize_threads(0))
}

/// [`to_model_pixels`] with the resize's rows split over `threads` threads.
pub fn to_model_pixels_on(img: &RgbImage, size: u32, threads: usize) -> tch::Tensor {
    let resized = resize_bicubic_pillow_on(img, size, size, threads);
    tch::Tensor::from_slice(resized.as_raw()).reshape([1, size as i64, size as i64, 3])
}

/// `[1, S, S, 3]` uint8 pixels (any device) → `[1, 3, S, S]` float32 on the same device,
/// normalised with the reference's arithmetic: `/255` in float64 stored as float32, then
/// float32 `(x - mean) / std`. The constants are device tensors, not scalars, because
/// CUDA divides by a host scalar as a multiplication by its reciprocal, which is not
/// bit-identical. MPS has no float64: there (`device::takes_mps_branches`) the 256
/// possible quotients are looked up instead, computed in f64 on the host — the same bits.
pub fn normalize(pixels: &tch::Tensor) -> tch::Tensor {
    use tch::{Kind, Tensor};
    let dev = pixels.device();
    let x = if scales_in_f64(dev) {
        (pixels.to_kind(Kind::Double) / Tensor::full([1], 255.0, (Kind::Double, dev))).to_kind(Kind::Float)
    } else {
        unit_scale(pixels)
    };
    let channels: Vec<Tensor> = (0..3)
        .map(|c| {
            let mean = Tensor::full([1], IMAGENET_MEAN[c] as f64, (Kind::Float, dev));
            let std = Tensor::full([1], IMAGENET_STD[c] as f64, (Kind::Float, dev));
            (x.select(3, c as i64) - mean) / std
        })
        .collect();
    Tensor::stack(&channels, 1)
}

/// Whether [`normalize`] divides by 255 in float64 on `device` (everywhere but MPS).
pub fn scales_in_f64(device: tch::Device) -> bool {
    !crate::device::takes_mps_branches(device)
}

/// `pixels / 255` as float32, without float64 on the device: a gather from the table of
/// the 256 quotients, each divided in f64 and rounded to f32 as torch does.
fn unit_scale(pixels: &tch::Tensor) -> tch::Tensor {
    let table: Vec<f32> = (0..256).map(|v| (v as f64 / 255.0) as f32).collect();
    let table = tch::Tensor::from_slice(&table).to_device(pixels.device());
    table.index_select(0, &pixels.to_kind(tch::Kind::Int64).view([-1])).view(pixels.size().as_slice())
}

/// The model input for one frame: `[1, 3, size, size]` float32 on the CPU, normalised as
/// the reference does it.
pub fn to_model_input(img: &RgbImage, size: u32) -> tch::Tensor {
    normalize(&to_model_pixels(img, size))
}

#[cfg(test)]
mod normalize_tests {
    use tch::{Device, Kind, Tensor};

    #[test]
    fn the_float64_free_scaling_gives_the_bits_of_the_float64_one_for_every_byte() {
        let bytes = Tensor::arange(256, (Kind::Int64, Device::Cpu))
            .to_kind(Kind::Uint8)
            .view([1, 16, 16, 1])
            .repeat([1, 1, 1, 3]);
        let f64_way =
            (bytes.to_kind(Kind::Double) / Tensor::full([1], 255.0, (Kind::Double, Device::Cpu))).to_kind(Kind::Float);
        let looked_up = super::unit_scale(&bytes);
        assert_eq!(looked_up.kind(), Kind::Float);
        assert_eq!(looked_up.size(), bytes.size());
        assert!(looked_up.equal(&f64_way));
    }
}

#[cfg(test)]
mod band_tests {
    use super::for_row_bands_on;

    #[test]
    fn every_row_is_visited_once_with_its_index_whatever_the_thread_count() {
        for threads in [1, 2, 3, 4, 7] {
            let mut buf = vec![0u8; 13 * 5];
            for_row_bands_on(&mut buf, 5, threads, |y, row| row.iter_mut().for_each(|v| *v += y as u8 + 1));
            let want: Vec<u8> = (0..13).flat_map(|y| std::iter::repeat_n(y as u8 + 1, 5)).collect();
            assert_eq!(buf, want, "{threads} threads");
        }
    }
}
