//! Fused kernels libtorch lacks (`fused.cpp`, compiled at run time with NVRTC): LayerNorm
//! written straight in bf16 for the Linear that follows it under bf16 autocast, instead of
//! an fp32 LayerNorm plus the cast autocast inserts (used only where its output feeds
//! matmuls alone, see `LayerNorm::forward_into_matmul`), and the rotary encoding of bf16
//! queries and keys in one pass (`Rope::apply_except_tail`). The `fused` knob
//! (`SAM2_TUI_FUSED=0`) turns them off (A/B runs); a failure to compile turns them off for
//! the process, with one warning.
use std::sync::atomic::{AtomicBool, Ordering};
use tch::{Device, Kind, Tensor};

static USABLE: AtomicBool = AtomicBool::new(true);

#[cfg(sam2_cuda_shim)]
unsafe extern "C" {
    fn sam2_rope_bf16(
        x: *const std::ffi::c_void,
        cos: *const std::ffi::c_void,
        sin: *const std::ffi::c_void,
        rotated: i64,
        out: *mut *mut std::ffi::c_void,
        err: *mut std::ffi::c_char,
        len: usize,
    ) -> i32;
    fn sam2_layer_norm_2d_bf16(
        x: *const std::ffi::c_void,
        w: *const std::ffi::c_void,
        b: *const std::ffi::c_void,
        eps: f64,
        gelu: i32,
        out: *mut *mut std::ffi::c_void,
        err: *mut std::ffi::c_char,
        len: usize,
    ) -> i32;
    fn sam2_layer_norm_to_bf16(
        x: *const std::ffi::c_void,
        w: *const std::ffi::c_void,
        b: *const std::ffi::c_void,
        eps: f64,
        out: *mut *mut std::ffi::c_void,
        err: *mut std::ffi::c_char,
        len: usize,
    ) -> i32;
}

/// Whether the `Tuning` of the model built last wants the kernel (on until told).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the kernel on or off for the process (`Sam2Base::from_tensors` does, from its
/// `Tuning`).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// LayerNorm of `x` over its last dim as bf16, where that applies: `x` an fp32 or bf16
/// CUDA tensor of at most four dims with a dense last dim, while bf16 autocast is on.
/// None otherwise (the caller runs the ordinary one).
pub fn layer_norm_to_bf16(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Option<Tensor> {
    if !matches!(x.device(), Device::Cuda(_))
        || !matches!(x.kind(), Kind::Float | Kind::BFloat16)
        || !USABLE.load(Ordering::Relaxed)
        || !enabled()
    {
        return None;
    }
    #[cfg(sam2_cuda_shim)]
    {
        let ptr = |t: &Tensor| t.as_ptr() as *const std::ffi::c_void;
        // SAFETY: the pointers are libtorch tensor handles borrowed for the call (`x`,
        // `weight`, `bias` outlive it); the shim reads them, writes a new tensor handle to
        // `out` (owned by `run`'s `Tensor::from_ptr`) and at most `n` bytes of message, and
        // never unwinds (`shim/guarded.h`).
        return run("fused LayerNorm", |out, e, n| unsafe {
            sam2_layer_norm_to_bf16(ptr(x), ptr(weight), ptr(bias), eps, out, e, n)
        });
    }
    #[allow(unreachable_code)]
    {
        let _ = (weight, bias, eps);
        None
    }
}

/// The rotary encoding of a contiguous bf16 CUDA tensor `x` `[…, N, dim]` with the fp32
/// tables `cos`/`sin` `[P, dim/2]`: the first `rotated` rows of each sequence (a multiple
/// of P: memory frames tile the tables) are rotated, the rest pass through. Bit-identical
/// to `Rope::apply` on bf16 input. None where it does not apply.
pub fn rope_bf16(x: &Tensor, cos: &Tensor, sin: &Tensor, rotated: i64) -> Option<Tensor> {
    if !usable_on_bf16(x) {
        return None;
    }
    #[cfg(sam2_cuda_shim)]
    {
        let ptr = |t: &Tensor| t.as_ptr() as *const std::ffi::c_void;
        // SAFETY: as for the LayerNorm above (`x`, `cos`, `sin` outlive the call).
        return run("fused RoPE", |out, e, n| unsafe {
            sam2_rope_bf16(ptr(x), ptr(cos), ptr(sin), rotated, out, e, n)
        });
    }
    #[allow(unreachable_code)]
    {
        let _ = (cos, sin, rotated);
        None
    }
}

/// `LayerNorm2d` (over the channels of an NCHW bf16 CUDA tensor, contiguous or channels-
/// last as a depthwise convolution leaves it; fp32 weight and bias of C values) under bf16
/// autocast, then the exact GELU if `gelu`, in one pass: the
/// fp32 tensor the spelled-out ops give (the memory encoder's mask downsampler and fuser;
/// nine passes each, about 2 ms of an H100 frame at 16 objects). The same values but for
/// the rare one whose channel mean lies on a bf16 rounding boundary (the sums run in another
/// order). None where it does not apply.
pub fn layer_norm_2d(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64, gelu: bool) -> Option<Tensor> {
    if !usable_on_bf16(x) {
        return None;
    }
    #[cfg(sam2_cuda_shim)]
    {
        let ptr = |t: &Tensor| t.as_ptr() as *const std::ffi::c_void;
        // SAFETY: as for the LayerNorm above (`x`, `weight`, `bias` outlive the call).
        return run("fused LayerNorm2d", |out, e, n| unsafe {
            sam2_layer_norm_2d_bf16(ptr(x), ptr(weight), ptr(bias), eps, gelu as i32, out, e, n)
        });
    }
    #[allow(unreachable_code)]
    {
        let _ = (weight, bias, eps, gelu);
        None
    }
}

/// Whether a kernel that takes a bf16 CUDA tensor may run on `x`: the kernels compiled and
/// not turned off.
fn usable_on_bf16(x: &Tensor) -> bool {
    matches!(x.device(), Device::Cuda(_)) && x.kind() == Kind::BFloat16 && USABLE.load(Ordering::Relaxed) && enabled()
}

/// Calls a fused entry point (see `shim::optional_tensor`).
#[cfg(sam2_cuda_shim)]
fn run(what: &str, f: impl FnOnce(*mut *mut std::ffi::c_void, *mut std::ffi::c_char, usize) -> i32) -> Option<Tensor> {
    crate::shim::optional_tensor(what, "the fused kernels are", &USABLE, f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::AutocastGuard;

    /// Run on a CUDA machine: `cargo test --release --lib fused -- --ignored`.
    #[test]
    #[ignore = "needs a CUDA device"]
    fn fused_layer_norm_gives_what_autocast_would_cast_the_fp32_one_to() {
        assert!(tch::Cuda::is_available(), "no CUDA device");
        let dev = Device::Cuda(0);
        tch::manual_seed(0);
        for (cols, kind) in
            [(96, Kind::Float), (112, Kind::BFloat16), (256, Kind::Float), (448, Kind::BFloat16), (1152, Kind::Float)]
        {
            // A strided view, as Hiera's residual stream often is; fp32 or bf16.
            let x = (Tensor::randn([5, 9, 12, cols], (Kind::Float, dev)) * 3.0 + 0.5)
                .to_kind(kind)
                .narrow(1, 1, 7)
                .narrow(2, 2, 8);
            let w = Tensor::randn([cols], (Kind::Float, dev));
            let b = Tensor::randn([cols], (Kind::Float, dev));
            let _autocast = AutocastGuard::new(Some(Kind::BFloat16));
            let fused = layer_norm_to_bf16(&x, &w, &b, 1e-6).expect("fused kernel applies");
            let reference = x.layer_norm([cols], Some(&w), Some(&b), 1e-6, true).to_kind(Kind::BFloat16);
            assert_eq!(fused.kind(), Kind::BFloat16);
            let same = fused.eq_tensor(&reference).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
            // Rounding to bf16 hides the fp32 summation-order differences but for values
            // on a rounding boundary: those move by one bf16 step at most.
            let step = (&fused.to_kind(Kind::Float) - reference.to_kind(Kind::Float)).abs()
                / reference.to_kind(Kind::Float).abs().clamp_min(1e-3);
            let worst = step.max().double_value(&[]);
            assert!(same > 0.999, "cols {cols} {kind:?}: {:.4}% identical", same * 100.0);
            assert!(worst <= 1.0 / 128.0, "cols {cols} {kind:?}: relative difference {worst}");
        }
        // Outside autocast it does not apply.
        let x = Tensor::randn([4, 96], (Kind::Float, dev));
        assert!(layer_norm_to_bf16(
            &x,
            &Tensor::ones([96], (Kind::Float, dev)),
            &Tensor::zeros([96], (Kind::Float, dev)),
            1e-6
        )
        .is_none());
    }

    #[test]
    #[ignore = "needs a CUDA device"]
    fn fused_layer_norm_2d_gives_what_the_spelled_out_ops_give_under_autocast() {
        assert!(tch::Cuda::is_available(), "no CUDA device");
        let dev = Device::Cuda(0);
        tch::manual_seed(1);
        for (channels, side, gelu, channels_last) in [
            (4, 64, true, false),
            (16, 32, true, false),
            (64, 24, true, false),
            (256, 16, false, false),
            (256, 16, false, true),
            (256, 16, true, false),
        ] {
            let x = (Tensor::randn([3, channels, side, side], (Kind::Float, dev)) * 2.0 + 0.3).to_kind(Kind::BFloat16);
            let x = if channels_last { x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]) } else { x };
            let w = Tensor::randn([channels, 1, 1], (Kind::Float, dev));
            let b = Tensor::randn([channels, 1, 1], (Kind::Float, dev));
            let _autocast = AutocastGuard::new(Some(Kind::BFloat16));
            let fused = layer_norm_2d(&x, &w, &b, 1e-6, gelu).expect("fused kernel applies");
            // `LayerNorm2d::forward` spelled out, as the reference writes it.
            let u = x.mean_dim(1, true, None);
            let d = &x - &u;
            let s = d.square().mean_dim(1, true, None);
            let y = &w * (d / (s + 1e-6).sqrt()) + &b;
            let reference = if gelu { y.gelu("none") } else { y };
            assert_eq!((fused.kind(), fused.size(), fused.stride()), (Kind::Float, reference.size(), x.stride()));
            // The variance's fp32 sum runs in another order: values a few fp32 steps apart.
            // A channel mean on a bf16 rounding boundary moves its pixel by about one bf16
            // step of the mean, over the deviation: rare.
            let diff = (&fused - &reference).abs();
            let tol = reference.abs() * 1e-5 + 1e-6;
            let far = diff.gt_tensor(&tol).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
            let worst = diff.max().double_value(&[]);
            eprintln!("C={channels} gelu={gelu} channels_last={channels_last}: beyond fp32 rounding {:.4}%, max |Δ| {worst:.2e}", far * 100.0);
            assert!(far < 0.01, "C={channels} gelu={gelu}: {:.3}% beyond fp32 rounding", far * 100.0);
            assert!(worst < 0.05, "C={channels} gelu={gelu}: max |Δ| {worst}");
        }
    }
}
