//! Position encodings (`sam2/modeling/position_encoding.py`): the sine encoding of
//! feature maps, the random-Fourier encoding of prompts, axial RoPE and the 1-D sine
//! encoding of object-pointer distances. All are computed in fp32 with the reference's
//! operation order, once per size, and cached by their owners.
use super::params::P;
use std::f64::consts::PI;
use tch::{Device, Kind, Tensor};

/// `temperature ** (2 * (i // 2) / n)` for i in 0..n, fp32 as the reference computes it.
fn dim_t(n: i64, temperature: f64, device: Device) -> Tensor {
    let i = Tensor::arange(n, (Kind::Float, device));
    let e = i.floor_divide_scalar(2) * 2.0 / n as f64;
    // Filled on the device: uploading a host scalar would wait for the queued kernels.
    Tensor::full([], temperature, (Kind::Float, device)).pow(&e)
}

/// Interleaves sin of even and cos of odd channels: `stack((p[...,0::2].sin(), p[...,1::2].cos()), -1).flatten(-2)`.
fn interleave_sin_cos(p: &Tensor) -> Tensor {
    let n = p.size().len() as i64;
    let last = p.size()[n as usize - 1];
    let s = p.slice(n - 1, 0, last, 2).sin();
    let c = p.slice(n - 1, 1, last, 2).cos();
    Tensor::stack(&[s, c], n).flatten(n - 1, n)
}

/// `PositionEmbeddingSine(d)(x)` for an `h`×`w` map: `[1, d, h, w]`.
pub fn sine_2d(d: i64, h: i64, w: i64, device: Device) -> Tensor {
    let npf = d / 2;
    let scale = 2.0 * PI;
    let eps = 1e-6;
    let y = Tensor::arange_start(1, h + 1, (Kind::Float, device)).view([1, h, 1]).repeat([1, 1, w]);
    let x = Tensor::arange_start(1, w + 1, (Kind::Float, device)).view([1, 1, w]).repeat([1, h, 1]);
    let y = &y / (y.narrow(1, h - 1, 1) + eps) * scale;
    let x = &x / (x.narrow(2, w - 1, 1) + eps) * scale;
    let dt = dim_t(npf, 10000.0, device);
    let px = interleave_sin_cos(&(x.unsqueeze(-1) / &dt));
    let py = interleave_sin_cos(&(y.unsqueeze(-1) / &dt));
    Tensor::cat(&[py, px], 3).permute([0, 3, 1, 2]).contiguous()
}

/// `get_1d_sine_pe(pos, dim)`: cat(sin, cos), not interleaved.
pub fn sine_1d(pos: &Tensor, dim: i64) -> Tensor {
    let dt = dim_t(dim / 2, 10000.0, pos.device());
    let pe = pos.unsqueeze(-1) / dt;
    Tensor::cat(&[pe.sin(), pe.cos()], -1)
}

/// `PositionEmbeddingRandom`: random Fourier features of normalised coordinates.
pub struct PositionEmbeddingRandom {
    gaussian: Tensor,
}

impl PositionEmbeddingRandom {
    pub fn new(p: P, num_pos_feats: i64) -> Self {
        PositionEmbeddingRandom { gaussian: p.get_f32("positional_encoding_gaussian_matrix", &[2, num_pos_feats]) }
    }

    fn encode(&self, coords: &Tensor) -> Tensor {
        let c = coords * 2.0 - 1.0;
        let c = c.matmul(&self.gaussian) * (2.0 * PI);
        Tensor::cat(&[c.sin(), c.cos()], -1)
    }

    /// Dense encoding of an `h`×`w` grid: `[C, h, w]`.
    pub fn grid(&self, h: i64, w: i64) -> Tensor {
        let dev = self.gaussian.device();
        let ones = Tensor::ones([h, w], (Kind::Float, dev));
        let y = (ones.cumsum(0, Kind::Float) - 0.5) / h as f64;
        let x = (ones.cumsum(1, Kind::Float) - 0.5) / w as f64;
        self.encode(&Tensor::stack(&[x, y], -1)).permute([2, 0, 1])
    }

    /// Encoding of points `[B, N, 2]` in pixels of an image of `size`×`size`.
    pub fn points(&self, coords: &Tensor, size: i64) -> Tensor {
        self.encode(&(coords.to_kind(Kind::Float) / size as f64))
    }
}

/// Axial rotary position tables (`compute_axial_cis`). On the CPU applied as the reference
/// does, one complex multiplication per call (the real spelling below costs six passes
/// over the 28k memory tokens per layer: 0.7 s a frame on two cores). Elsewhere the
/// rotation is spelled out on real cos/sin pairs (MPS has no complex dtype; a CPU taking
/// the MPS branches, `device::takes_mps_branches`, does the same); on CUDA in bf16 one
/// fused kernel computes that same spelling in a single pass (`cuda::fused`).
pub struct Rope {
    /// `[N, dim/2]` each.
    cos: Tensor,
    sin: Tensor,
    /// `cos + i·sin` (the reference's `freqs_cis`), on the CPU.
    cis: Option<Tensor>,
    /// The tables tiled for each number of memory frames seen (`rope_k_repeat`), kept
    /// because every layer of every frame asks for the same tilings — and never dropped,
    /// since a captured CUDA graph reads them at a fixed address.
    tiled: std::cell::RefCell<Vec<(i64, Tensor)>>,
}

impl Rope {
    pub fn new(dim: i64, end_x: i64, end_y: i64, theta: f64, device: Device) -> Self {
        let complex = device == Device::Cpu && !crate::device::takes_mps_branches(device);
        Self::spelled(dim, end_x, end_y, theta, device, complex)
    }

    /// The tables, with the complex `freqs_cis` when `complex` (CPU only).
    fn spelled(dim: i64, end_x: i64, end_y: i64, theta: f64, device: Device, complex: bool) -> Self {
        let q = dim / 4;
        let freqs =
            Tensor::arange_start_step(0, dim, 4, (Kind::Int64, Device::Cpu)).narrow(0, 0, q).to_kind(Kind::Float);
        let freqs = (Tensor::from(theta).to_kind(Kind::Float).pow(&(freqs / dim as f64))).reciprocal();
        let t = Tensor::arange(end_x * end_y, (Kind::Float, Device::Cpu));
        let tx = t.fmod(end_x as f64);
        let ty = t.divide_scalar_mode(end_x as f64, "floor");
        let fx = tx.outer(&freqs);
        let fy = ty.outer(&freqs);
        let angles = Tensor::cat(&[fx, fy], -1);
        let (cos, sin) = (angles.cos(), angles.sin());
        let cis = complex.then(|| Tensor::complex(&cos, &sin));
        Rope { cos: cos.to_device(device), sin: sin.to_device(device), cis, tiled: Default::default() }
    }

    /// Whether the rotation is one complex multiplication (the reference's spelling, on
    /// the CPU) rather than real cos/sin arithmetic (MPS, CUDA, the CPU taking the MPS
    /// branches).
    pub fn is_complex(&self) -> bool {
        self.cis.is_some()
    }

    /// The real tables `(cos, sin)` `[positions, dim/2]`, for a kernel that rotates as it goes.
    pub fn tables(&self) -> (&Tensor, &Tensor) {
        (&self.cos, &self.sin)
    }

    /// Number of positions the tables cover.
    pub fn len(&self) -> i64 {
        self.cos.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rotates adjacent channel pairs of `x` `[B, heads, N, dim]`; `N` may be a multiple
    /// of the table length (memory frames: the tables are tiled, `rope_k_repeat`).
    pub fn apply(&self, x: &Tensor) -> Tensor {
        self.apply_except_tail(x, 0)
    }

    /// `apply` to all but the last `tail` rows of each sequence, which pass through (the
    /// object-pointer tokens at the end of the memory get no rotary encoding). On CUDA in
    /// bf16 one fused kernel does it all (`cuda::fused::rope_bf16`, bit-identical).
    pub fn apply_except_tail(&self, x: &Tensor, tail: i64) -> Tensor {
        let n = x.size()[2];
        crate::cuda::fused::rope_bf16(x, &self.cos, &self.sin, n - tail)
            .unwrap_or_else(|| self.rotate_except_tail(x, tail))
    }

    /// `apply_except_tail` in libtorch ops (the CPU, MPS, and CUDA outside bf16).
    fn rotate_except_tail(&self, x: &Tensor, tail: i64) -> Tensor {
        if tail == 0 {
            return self.rotate(x);
        }
        let n = x.size()[2];
        Tensor::cat(&[self.rotate(&x.narrow(2, 0, n - tail)), x.narrow(2, n - tail, tail)], 2)
    }

    fn rotate(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        let n = s[2];
        let reps = n / self.len();
        let xf = x.to_kind(Kind::Float).reshape([s[0], s[1], n, s[3] / 2, 2]);
        if let Some(cis) = &self.cis {
            let table = self.tiled_table(cis, reps);
            return (xf.view_as_complex() * table).view_as_real().flatten(3, 4).to_kind(x.kind());
        }
        let (cos, sin) = if reps == 1 {
            (self.cos.shallow_clone(), self.sin.shallow_clone())
        } else {
            (self.cos.repeat([reps, 1]), self.sin.repeat([reps, 1]))
        };
        let a = xf.select(4, 0);
        let b = xf.select(4, 1);
        let re = &a * &cos - &b * &sin;
        let im = &a * &sin + &b * &cos;
        Tensor::stack(&[re, im], 4).flatten(3, 4).to_kind(x.kind())
    }

    fn tiled_table(&self, cis: &Tensor, reps: i64) -> Tensor {
        if reps == 1 {
            return cis.shallow_clone();
        }
        let mut tiled = self.tiled.borrow_mut();
        if let Some((_, t)) = tiled.iter().find(|(r, _)| *r == reps) {
            return t.shallow_clone();
        }
        let t = cis.repeat([reps, 1]);
        tiled.push((reps, t.shallow_clone()));
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The MPS spelling (real cos/sin pairs) computes the reference's complex rotation:
    /// queries (one table) and memory keys (three tiled frames, then twelve
    /// object-pointer tokens that pass through), fp32 on the CPU.
    #[test]
    fn real_cos_sin_rotation_agrees_with_the_complex_one_to_a_millionth() {
        let complex = Rope::spelled(256, 16, 16, 10000.0, Device::Cpu, true);
        let real = Rope::spelled(256, 16, 16, 10000.0, Device::Cpu, false);
        assert!(complex.is_complex() && !real.is_complex());
        tch::manual_seed(3);
        let (frames, tail) = (3, 12);
        let keys = Tensor::randn([1, 1, frames * real.len() + tail, 256], (Kind::Float, Device::Cpu));
        let queries = keys.narrow(2, 0, real.len()).contiguous();
        for (x, tail) in [(queries, 0), (keys, tail)] {
            let (a, b) = (real.apply_except_tail(&x, tail), complex.apply_except_tail(&x, tail));
            let d = (&a - &b).abs().max().double_value(&[]);
            assert!(d <= 1e-6, "max |Δ| {d:e}");
            let n = x.size()[2];
            assert!(a.narrow(2, n - tail, tail).equal(&x.narrow(2, n - tail, tail)), "the tail passes through");
        }
    }

    /// Run on a CUDA machine: `cargo test --release --lib fused -- --ignored`.
    #[test]
    #[ignore = "needs a CUDA device"]
    fn fused_rope_on_cuda_is_bit_identical_to_the_spelled_out_rotation() {
        assert!(tch::Cuda::is_available(), "no CUDA device");
        let dev = Device::Cuda(0);
        let rope = Rope::new(256, 64, 64, 10000.0, dev);
        tch::manual_seed(1);
        // Three memory frames (tiled tables) and twelve object-pointer tokens at the end.
        let (frames, tail) = (3, 12);
        let n = frames * rope.len() + tail;
        let x = Tensor::randn([1, 1, n, 256], (Kind::Float, dev)).to_kind(Kind::BFloat16);
        let fused = crate::cuda::fused::rope_bf16(&x, &rope.cos, &rope.sin, n - tail).expect("fused kernel applies");
        let spelled_out = rope.rotate_except_tail(&x, tail);
        assert_eq!(fused.kind(), Kind::BFloat16);
        assert!(
            fused.equal(&spelled_out),
            "max |Δ| {}",
            (fused.to_kind(Kind::Float) - spelled_out.to_kind(Kind::Float)).abs().max()
        );
        // Rows not on a 16-byte boundary go to the one-pair kernel: the same values.
        let flat = x.flatten(0, -1);
        let shifted = Tensor::cat(&[flat.narrow(0, 0, 2), flat.shallow_clone()], 0).narrow(0, 2, flat.size()[0]);
        let shifted = shifted.view([1, 1, n, 256]);
        let fused =
            crate::cuda::fused::rope_bf16(&shifted, &rope.cos, &rope.sin, n - tail).expect("fused kernel applies");
        assert!(fused.equal(&spelled_out), "the one-pair kernel differs");
        // Queries: one table's worth, nothing passed through.
        let q = x.narrow(2, 0, rope.len()).contiguous();
        assert!(rope.apply(&q).equal(&rope.rotate_except_tail(&q, 0)));
    }
}
