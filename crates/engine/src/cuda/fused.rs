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
    fn sam2_fused_compile(sm: i32, err: *mut std::ffi::c_char, len: usize) -> i32;
    fn sam2_linear64_rope_bf16(
        x: *const std::ffi::c_void,
        w: *const std::ffi::c_void,
        b: *const std::ffi::c_void,
        cos: *const std::ffi::c_void,
        sin: *const std::ffi::c_void,
        rotated: i64,
        out: *mut *mut std::ffi::c_void,
        err: *mut std::ffi::c_char,
        len: usize,
    ) -> i32;
    fn sam2_layer_norm_2d(
        x: *const std::ffi::c_void,
        w: *const std::ffi::c_void,
        b: *const std::ffi::c_void,
        eps: f64,
        gelu: i32,
        out_bf16: i32,
        out: *mut *mut std::ffi::c_void,
        err: *mut std::ffi::c_char,
        len: usize,
    ) -> i32;
    fn sam2_conv3x3s2_ln_gelu(
        x: *const std::ffi::c_void,
        conv_w: *const std::ffi::c_void,
        conv_b: *const std::ffi::c_void,
        norm_w: *const std::ffi::c_void,
        norm_b: *const std::ffi::c_void,
        eps: f64,
        out: *mut *mut std::ffi::c_void,
        err: *mut std::ffi::c_char,
        len: usize,
    ) -> i32;
    fn sam2_add_layer_norm_to_bf16(
        x: *const std::ffi::c_void,
        delta: *const std::ffi::c_void,
        sum: *const std::ffi::c_void,
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

/// Compiles the kernels for compute capability `sm` (e.g. 90 for Hopper) with the NVRTC
/// the torch wheel ships, without loading them: no GPU needed. One kernel that fails to
/// compile for a GPU turns every fused kernel off there, so the tests check each one.
pub fn compile_for(sm: i32) -> anyhow::Result<()> {
    #[cfg(sam2_cuda_shim)]
    {
        // SAFETY: the shim takes an int and an error buffer that `shim::call` owns for the
        // call, and never unwinds (`shim/guarded.h`).
        return crate::shim::call(&format!("NVRTC for sm_{sm}"), |e, n| unsafe { sam2_fused_compile(sm, e, n) });
    }
    #[allow(unreachable_code)]
    {
        anyhow::bail!("sm_{sm}: this build has no CUDA shim (libtorch without CUDA)")
    }
}

/// Whether the `fused_keys` knob wants `linear64_rope_bf16` (off until told).
static KEYS_ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns the fused key projection on or off for the process (the `fused_keys` knob).
pub fn set_keys_enabled(on: bool) {
    KEYS_ENABLED.store(on, Ordering::Relaxed);
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
        // No delta and no sum: the LayerNorm alone.
        let none = std::ptr::null();
        // SAFETY: the pointers are libtorch tensor handles borrowed for the call (`x`,
        // `weight`, `bias` outlive it) or null where the shim takes none; the shim reads
        // them, writes a new tensor handle to `out` (owned by `run`'s `Tensor::from_ptr`)
        // and at most `n` bytes of message, and never unwinds (`shim/guarded.h`).
        return run("fused LayerNorm", |out, e, n| unsafe {
            sam2_add_layer_norm_to_bf16(ptr(x), none, none, ptr(weight), ptr(bias), eps, out, e, n)
        });
    }
    #[allow(unreachable_code)]
    {
        let _ = (weight, bias, eps);
        None
    }
}

/// `x + delta` and the LayerNorm of that sum as bf16 (`layer_norm_to_bf16`), in one pass:
/// `x` a contiguous fp32 CUDA tensor (a residual stream), `delta` of its shape, contiguous,
/// fp32 or bf16 (what a projection under autocast adds to it), while bf16 autocast is on.
/// The sum is bit-identical to libtorch's add (one fp32 addition an element) and the norm
/// is `layer_norm_to_bf16` of it. None where it does not apply.
pub fn add_layer_norm_to_bf16(
    x: &Tensor,
    delta: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Option<(Tensor, Tensor)> {
    if !usable_on(x, &[Kind::Float]) || !x.is_contiguous() || !delta.is_contiguous() || delta.size() != x.size() {
        return None;
    }
    #[cfg(sam2_cuda_shim)]
    {
        let ptr = |t: &Tensor| t.as_ptr() as *const std::ffi::c_void;
        let sum = x.empty_like();
        // SAFETY: as for the LayerNorm above (`x`, `delta`, `sum`, `weight`, `bias` outlive
        // the call; the shim writes `sum`'s elements, which it checked are x's shape).
        let normed = run("fused add and LayerNorm", |out, e, n| unsafe {
            sam2_add_layer_norm_to_bf16(ptr(x), ptr(delta), ptr(&sum), ptr(weight), ptr(bias), eps, out, e, n)
        })?;
        return Some((sum, normed));
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

/// The memory attention's key projection and rotary encoding in one kernel:
/// `rope_bf16(x·Wᵀ + b, cos, sin, rotated)` for a contiguous bf16 CUDA tensor `x`
/// `[…, N, 64]` and a bf16 Linear of 64 → 256, without writing the projected keys and
/// reading them back (over the 28k memory keys of a 16-object batch, two thirds of the
/// bytes of those two steps). The projection's bias is added in fp32 and the sum rounded
/// to bf16 where cuBLAS writes it, then rotated exactly as `rope_bf16`; only the order in
/// which the 64 products are summed may differ from cuBLAS's. None where it does not apply.
pub fn linear64_rope_bf16(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    rotated: i64,
) -> Option<Tensor> {
    if !KEYS_ENABLED.load(Ordering::Relaxed)
        || !usable_on_bf16(x)
        || x.size().last() != Some(&64)
        || weight.size() != [256, 64]
    {
        return None;
    }
    #[cfg(sam2_cuda_shim)]
    {
        let ptr = |t: &Tensor| t.as_ptr() as *const std::ffi::c_void;
        // SAFETY: as for the LayerNorm above (every tensor outlives the call).
        return run("fused key projection", |out, e, n| unsafe {
            sam2_linear64_rope_bf16(ptr(x), ptr(weight), ptr(bias), ptr(cos), ptr(sin), rotated, out, e, n)
        });
    }
    #[allow(unreachable_code)]
    {
        let _ = (bias, cos, sin, rotated);
        None
    }
}

/// `LayerNorm2d` (over the channels of an NCHW bf16 or fp32 CUDA tensor, contiguous or
/// channels-last as a depthwise convolution leaves it; fp32 weight and bias of C values)
/// under bf16 autocast, then the exact GELU if `gelu`, in one pass: the fp32 tensor the
/// spelled-out ops give, or with `out_bf16` that tensor rounded to bf16, which is what a
/// convolution or Linear consuming it under autocast would compute on (the memory
/// encoder's mask downsampler and fuser, the mask decoder's upscaling; nine passes each
/// spelled out). The same values but for the rare one whose channel mean lies on a bf16
/// rounding boundary (the sums run in another order). None where it does not apply.
pub fn layer_norm_2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    gelu: bool,
    out_bf16: bool,
) -> Option<Tensor> {
    if !usable_on(x, &[Kind::BFloat16, Kind::Float]) {
        return None;
    }
    #[cfg(sam2_cuda_shim)]
    {
        let ptr = |t: &Tensor| t.as_ptr() as *const std::ffi::c_void;
        // SAFETY: as for the LayerNorm above (`x`, `weight`, `bias` outlive the call).
        return run("fused LayerNorm2d", |out, e, n| unsafe {
            sam2_layer_norm_2d(ptr(x), ptr(weight), ptr(bias), eps, gelu as i32, out_bf16 as i32, out, e, n)
        });
    }
    #[allow(unreachable_code)]
    {
        let _ = (weight, bias, eps, gelu, out_bf16);
        None
    }
}

/// One of the mask downsampler's two narrow stages (1 → 4 and 4 → 16 channels) in one
/// pass under bf16 autocast: a 3×3 convolution with stride 2 and padding 1 of a contiguous
/// NCHW bf16 or fp32 CUDA tensor, `LayerNorm2d` and GELU, as the bf16 tensor the next
/// convolution would cast the spelled-out ops' result to. cuDNN picks a grouped direct
/// kernel for these shapes (0.8 ms of an H100 frame at 16 objects for 0.6 GFLOP) and
/// libtorch adds the bias, normalises and applies GELU in passes of their own. Only the
/// convolution's fp32 sum runs in another order. None where it does not apply.
pub fn conv3x3s2_layer_norm_gelu(
    x: &Tensor,
    conv_weight: &Tensor,
    conv_bias: &Tensor,
    norm_weight: &Tensor,
    norm_bias: &Tensor,
    eps: f64,
) -> Option<Tensor> {
    if !usable_on(x, &[Kind::BFloat16, Kind::Float]) {
        return None;
    }
    #[cfg(sam2_cuda_shim)]
    {
        let ptr = |t: &Tensor| t.as_ptr() as *const std::ffi::c_void;
        // SAFETY: every tensor outlives the call; the shim reads them and returns a new one.
        return run("fused mask-downsampler stage", |out, e, n| unsafe {
            sam2_conv3x3s2_ln_gelu(
                ptr(x),
                ptr(conv_weight),
                ptr(conv_bias),
                ptr(norm_weight),
                ptr(norm_bias),
                eps,
                out,
                e,
                n,
            )
        });
    }
    #[allow(unreachable_code)]
    {
        let _ = (conv_weight, conv_bias, norm_weight, norm_bias, eps);
        None
    }
}

/// Whether a kernel that takes a bf16 CUDA tensor may run on `x`: the kernels compiled and
/// not turned off.
fn usable_on_bf16(x: &Tensor) -> bool {
    usable_on(x, &[Kind::BFloat16])
}

/// Whether a kernel may run on `x`: a CUDA tensor of one of `kinds`, the kernels compiled
/// and not turned off.
fn usable_on(x: &Tensor, kinds: &[Kind]) -> bool {
    matches!(x.device(), Device::Cuda(_)) && kinds.contains(&x.kind()) && USABLE.load(Ordering::Relaxed) && enabled()
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

    /// No GPU needed: NVRTC compiles for any architecture. A kernel that does not compile
    /// for a GPU (bf16 `mma` below sm_80, say) would turn every fused kernel off on it.
    #[cfg(sam2_cuda_shim)]
    #[test]
    fn the_fused_kernels_compile_for_every_gpu_generation_from_turing_to_blackwell() {
        for sm in [75, 80, 86, 89, 90, 100] {
            compile_for(sm).unwrap_or_else(|e| panic!("{e:#}"));
        }
    }

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
    fn fused_key_projection_rotates_what_the_projection_then_rope_give() {
        assert!(tch::Cuda::is_available(), "no CUDA device");
        let _knobs = crate::cuda::knob_lock();
        let dev = Device::Cuda(0);
        tch::manual_seed(3);
        let bf = Kind::BFloat16;
        // Two memory frames of a 64x64 grid and 16 pointer tokens (not rotated), for a
        // batch of three objects; a non-zero bias (a zero one would hide a bias bug).
        let (positions, tail) = (4096, 16);
        let tokens = 2 * positions + tail;
        let x = Tensor::randn([3, tokens, 64], (Kind::Float, dev)).to_kind(bf);
        let w = (Tensor::randn([256, 64], (Kind::Float, dev)) / 8.0).to_kind(bf);
        let b = Tensor::randn([256], (Kind::Float, dev)).to_kind(bf);
        let angles = Tensor::rand([positions, 128], (Kind::Float, dev)) * 6.3;
        let (cos, sin) = (angles.cos(), angles.sin());
        let rotated = tokens - tail;
        set_keys_enabled(true);
        let fused = linear64_rope_bf16(&x, &w, &b, &cos, &sin, rotated).expect("fused kernel applies");
        let two_pass = rope_bf16(&x.linear(&w, Some(&b)), &cos, &sin, rotated).expect("fused RoPE applies");
        assert_eq!(fused.size(), [3, tokens, 256]);
        assert_eq!(fused.kind(), bf);
        // Exact: projection and rotation in fp64, unrounded (both forms round the projection to
        // bf16 before rotating it; what is compared is their errors).
        let exact_proj = x.to_kind(Kind::Double).linear(&w.to_kind(Kind::Double), Some(&b.to_kind(Kind::Double)));
        let pairs = exact_proj.reshape([3, tokens, 128, 2]);
        let (a, bb) = (pairs.select(3, 0), pairs.select(3, 1));
        let reps =
            |t: &Tensor| Tensor::cat(&[t.repeat([rotated / positions, 1]), t.ones_like().narrow(0, 0, tail) * 0.0], 0);
        let (c, s) = (reps(&cos).to_kind(Kind::Double), reps(&sin).to_kind(Kind::Double));
        let keep = Tensor::cat(
            &[Tensor::zeros([rotated, 1], (Kind::Double, dev)), Tensor::ones([tail, 1], (Kind::Double, dev))],
            0,
        );
        let (c, s) = (&c + &keep, s);
        let exact = Tensor::stack(&[&a * &c - &bb * &s, &a * &s + &bb * &c], 3).reshape([3, tokens, 256]);
        let err = |t: &Tensor| (t.to_kind(Kind::Double) - &exact).abs().mean(Kind::Double).double_value(&[]);
        let (fused_err, two_pass_err) = (err(&fused), err(&two_pass));
        let same = fused.eq_tensor(&two_pass).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        // The sums run in another order: values on a bf16 rounding boundary move one step.
        assert!(same > 0.99, "{:.4}% identical to the projection then RoPE", same * 100.0);
        assert!(fused_err <= two_pass_err * 1.05 + 1e-6, "error to exact {fused_err} against {two_pass_err}");
        // The pointer tokens at the end are projected, not rotated.
        let tail_same = fused.narrow(1, rotated, tail).eq_tensor(&two_pass.narrow(1, rotated, tail));
        assert!(tail_same.to_kind(Kind::Float).mean(Kind::Float).double_value(&[]) > 0.99);
        // Not for other widths, nor outside bf16.
        assert!(linear64_rope_bf16(&x.narrow(2, 0, 32).contiguous(), &w, &b, &cos, &sin, rotated).is_none());
        assert!(linear64_rope_bf16(&x.to_kind(Kind::Float), &w, &b, &cos, &sin, rotated).is_none());
    }

    /// `LayerNorm2d::forward` spelled out, as the reference writes it, then GELU.
    fn layer_norm_2d_spelled_out(x: &Tensor, w: &Tensor, b: &Tensor, gelu: bool) -> Tensor {
        let u = x.mean_dim(1, true, None);
        let d = x - &u;
        let s = d.square().mean_dim(1, true, None);
        let y = w * (d / (s + 1e-6).sqrt()) + b;
        if gelu {
            y.gelu("none")
        } else {
            y
        }
    }

    #[test]
    #[ignore = "needs a CUDA device"]
    fn fused_residual_add_gives_libtorchs_sum_and_the_fused_norm_of_it() {
        assert!(tch::Cuda::is_available(), "no CUDA device");
        let dev = Device::Cuda(0);
        tch::manual_seed(3);
        for (delta_kind, cols) in [(Kind::BFloat16, 256), (Kind::Float, 256), (Kind::BFloat16, 96)] {
            // A residual stream of 16 objects (fp32) and what a projection adds to it.
            let x = Tensor::randn([16, 300, cols], (Kind::Float, dev)) * 4.0;
            let delta = Tensor::randn([16, 300, cols], (Kind::Float, dev)).to_kind(delta_kind);
            let w = Tensor::randn([cols], (Kind::Float, dev));
            let b = Tensor::randn([cols], (Kind::Float, dev));
            let _autocast = AutocastGuard::new(Some(Kind::BFloat16));
            let (sum, normed) = add_layer_norm_to_bf16(&x, &delta, &w, &b, 1e-5).expect("fused kernel applies");
            let expected = &x + &delta;
            assert_eq!(sum.kind(), Kind::Float);
            assert!(sum.equal(&expected), "{delta_kind:?}: the sum differs from libtorch's add");
            let alone = layer_norm_to_bf16(&expected, &w, &b, 1e-5).expect("fused kernel applies");
            assert!(normed.equal(&alone), "{delta_kind:?}: the norm differs from the LayerNorm kernel's");
        }
        // A strided residual stream, or a bf16 one, goes the ordinary way.
        let _autocast = AutocastGuard::new(Some(Kind::BFloat16));
        let (w, b) = (Tensor::ones([256], (Kind::Float, dev)), Tensor::zeros([256], (Kind::Float, dev)));
        let strided = Tensor::randn([300, 4, 256], (Kind::Float, dev)).transpose(0, 1);
        let delta = Tensor::randn([4, 300, 256], (Kind::Float, dev));
        assert!(add_layer_norm_to_bf16(&strided, &delta, &w, &b, 1e-5).is_none());
        let bf16 = delta.to_kind(Kind::BFloat16);
        assert!(add_layer_norm_to_bf16(&bf16, &delta, &w, &b, 1e-5).is_none());
    }

    #[test]
    #[ignore = "needs a CUDA device"]
    fn fused_layer_norm_2d_gives_what_the_spelled_out_ops_give_under_autocast() {
        assert!(tch::Cuda::is_available(), "no CUDA device");
        let dev = Device::Cuda(0);
        tch::manual_seed(1);
        for (channels, side, gelu, channels_last, kind) in [
            (4, 64, true, false, Kind::BFloat16),
            (16, 32, true, false, Kind::BFloat16),
            (64, 24, true, false, Kind::BFloat16),
            (256, 16, false, false, Kind::BFloat16),
            (256, 16, false, true, Kind::BFloat16),
            (256, 16, true, false, Kind::BFloat16),
            (7, 9, false, false, Kind::BFloat16),
            (40, 9, true, true, Kind::BFloat16),
            // The mask decoder's: fp32 (its high-resolution features stay fp32).
            (64, 33, true, false, Kind::Float),
            (32, 17, false, true, Kind::Float),
        ] {
            let x = (Tensor::randn([3, channels, side, side], (Kind::Float, dev)) * 2.0 + 0.3).to_kind(kind);
            let x = if channels_last { x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]) } else { x };
            let w = Tensor::randn([channels, 1, 1], (Kind::Float, dev));
            let b = Tensor::randn([channels, 1, 1], (Kind::Float, dev));
            let _autocast = AutocastGuard::new(Some(Kind::BFloat16));
            let reference = layer_norm_2d_spelled_out(&x, &w, &b, gelu);
            let case = format!("C={channels} gelu={gelu} channels_last={channels_last} {kind:?}");
            let fused = layer_norm_2d(&x, &w, &b, 1e-6, gelu, false).expect("fused kernel applies");
            assert_eq!(
                (fused.kind(), fused.size(), fused.stride()),
                (Kind::Float, reference.size(), x.stride()),
                "{case}"
            );
            // The sums run in another order: values a few fp32 steps apart. A channel mean
            // on a bf16 rounding boundary moves its pixel by about one bf16 step of the
            // mean, over the deviation: rare.
            let diff = (&fused - &reference).abs();
            let tol = reference.abs() * 1e-5 + 1e-6;
            let far = diff.gt_tensor(&tol).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
            let worst = diff.max().double_value(&[]);
            eprintln!("{case}: beyond fp32 rounding {:.4}%, max |Δ| {worst:.2e}", far * 100.0);
            assert!(far < 0.01, "{case}: {:.3}% beyond fp32 rounding", far * 100.0);
            assert!(worst < 0.05, "{case}: max |Δ| {worst}");
            // Straight in bf16: the fp32 result rounded, as the consuming convolution's
            // autocast would round it, bit for bit.
            let as_bf16 = layer_norm_2d(&x, &w, &b, 1e-6, gelu, true).expect("fused kernel applies");
            assert_eq!((as_bf16.kind(), as_bf16.stride()), (Kind::BFloat16, x.stride()), "{case}");
            assert!(as_bf16.equal(&fused.to_kind(Kind::BFloat16)), "{case}: bf16 output is not the fp32 one rounded");
        }
    }

    #[test]
    #[ignore = "needs a CUDA device"]
    fn fused_mask_downsampler_stage_gives_what_conv_norm_and_gelu_give_under_autocast() {
        assert!(tch::Cuda::is_available(), "no CUDA device");
        let dev = Device::Cuda(0);
        tch::manual_seed(2);
        for (cin, cout, side, kind) in [
            (1, 4, 256, Kind::Float),
            (4, 16, 128, Kind::BFloat16),
            (1, 4, 37, Kind::BFloat16),
            (4, 16, 35, Kind::Float),
        ] {
            // The memory encoder's input: mask logits scaled into about [-10, 10].
            let x = (Tensor::randn([3, cin, side, side], (Kind::Float, dev)) * 4.0).to_kind(kind);
            let cw = Tensor::randn([cout, cin, 3, 3], (Kind::Float, dev)) * 0.3;
            let cb = Tensor::randn([cout], (Kind::Float, dev)) * 0.1;
            let nw = Tensor::randn([cout, 1, 1], (Kind::Float, dev));
            let nb = Tensor::randn([cout, 1, 1], (Kind::Float, dev));
            let _autocast = AutocastGuard::new(Some(Kind::BFloat16));
            let fused = conv3x3s2_layer_norm_gelu(&x, &cw, &cb, &nw, &nb, 1e-6).expect("fused kernel applies");
            let conv = x.conv2d(&cw, Some(&cb), [2], [1], [1], 1);
            let reference = layer_norm_2d_spelled_out(&conv, &nw, &nb, true).to_kind(Kind::BFloat16);
            let case = format!("{cin}->{cout} at {side}² {kind:?}");
            assert_eq!((fused.kind(), fused.size()), (Kind::BFloat16, reference.size()), "{case}");
            // cuDNN sums the 9·CIN products in another order: a convolution output on a
            // bf16 rounding boundary moves by one bf16 step, and LayerNorm over so few
            // channels carries that step into its pixel's other channels.
            let (f, r) = (fused.to_kind(Kind::Float), reference.to_kind(Kind::Float));
            let identical = fused.eq_tensor(&reference).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
            let step = (&f - &r).abs() / r.abs().clamp_min(1e-2);
            let far = step.gt(1.0 / 64.0).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
            eprintln!("{case}: identical {:.3}%, beyond 4 bf16 steps {:.4}%", identical * 100.0, far * 100.0);
            assert!(identical > 0.95, "{case}: {:.3}% identical", identical * 100.0);
            assert!(far < 0.005, "{case}: {:.4}% beyond 4 bf16 steps", far * 100.0);
        }
        // Other shapes are not its: the caller runs the convolution and the norm.
        let _autocast = AutocastGuard::new(Some(Kind::BFloat16));
        let x = Tensor::randn([1, 16, 64, 64], (Kind::Float, dev));
        let (cw, cb) = (Tensor::randn([64, 16, 3, 3], (Kind::Float, dev)), Tensor::zeros([64], (Kind::Float, dev)));
        let (nw, nb) = (Tensor::ones([64, 1, 1], (Kind::Float, dev)), Tensor::zeros([64, 1, 1], (Kind::Float, dev)));
        assert!(conv3x3s2_layer_norm_gelu(&x, &cw, &cb, &nw, &nb, 1e-6).is_none());
    }
}
