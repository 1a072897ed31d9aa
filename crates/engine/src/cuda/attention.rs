//! Which attention kernel runs SAM 2's memory attention on CUDA. SDPA's dispatcher makes
//! one choice for the whole process (FlashAttention here, see `device::configure_cuda_math`),
//! but the best kernel for one 256-wide head over ~29k keys depends on how many query sets
//! are batched (measured on an H100, bf16, 4096 queries over 28,736 keys):
//!
//! | batch | FlashAttention | cuDNN |
//! | --- | --- | --- |
//! | 1 | 0.39 ms (310 TFLOP/s) | 0.66 ms |
//! | 16 | 5.9 ms (329 TFLOP/s) | 2.7 ms (707 TFLOP/s) |
//!
//! So a batch of at least `cudnn_batch` (objects tracked together, or several videos'
//! objects) goes to cuDNN's kernel (`attention.cpp`), a smaller one to SDPA. Both compute
//! the same softmax(q·kᵀ/√d)·v; their bf16 roundings differ.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tch::{Device, Kind, Tensor};

static USABLE: AtomicBool = AtomicBool::new(true);

/// The `cudnn_batch` knob of the model built last (0: never; the knob defaults to 4).
static MIN_BATCH: AtomicUsize = AtomicUsize::new(0);

/// Sets the smallest batch that goes to cuDNN (`Sam2Base::from_tensors` does, from its
/// `Tuning`); 0 turns it off.
pub fn set_min_batch(n: usize) {
    MIN_BATCH.store(n, Ordering::Relaxed);
}

/// Whether a `[B, H, L, D]` attention of this batch and width goes to cuDNN: one head of
/// 256 (the memory attention's; the mask decoder's heads are 16 or 32 wide and Hiera's 96
/// or more, with many heads, where FlashAttention is kept) and `B` at the threshold.
pub fn wants_cudnn(q: &Tensor) -> bool {
    let min = MIN_BATCH.load(Ordering::Relaxed);
    let Ok((b, h, _, d)) = q.size4() else { return false };
    min > 0
        && matches!(q.device(), Device::Cuda(_))
        && matches!(q.kind(), Kind::BFloat16 | Kind::Half)
        && h == 1
        && d == 256
        && b as usize >= min
        && USABLE.load(Ordering::Relaxed)
}

/// softmax(q·kᵀ/√d)·v through cuDNN's kernel where [`wants_cudnn`] says so (`v` may be
/// narrower than `q` and `k`: the folded value projection, `Attention::attend_rope`); None
/// otherwise (the caller runs SDPA), and for the rest of the process after a failure.
pub fn cudnn(q: &Tensor, k: &Tensor, v: &Tensor) -> Option<Tensor> {
    if !wants_cudnn(q) || k.kind() != q.kind() || v.kind() != q.kind() {
        return None;
    }
    #[cfg(sam2_cuda_shim)]
    {
        unsafe extern "C" {
            fn sam2_sdpa_cudnn(
                q: *const std::ffi::c_void,
                k: *const std::ffi::c_void,
                v: *const std::ffi::c_void,
                out: *mut *mut std::ffi::c_void,
                err: *mut std::ffi::c_char,
                len: usize,
            ) -> i32;
        }
        let ptr = |t: &Tensor| t.as_ptr() as *const std::ffi::c_void;
        // SAFETY: q, k, v are live tensor handles borrowed for the call; the shim reads
        // them, writes a new tensor handle to `out` (owned by `optional_tensor`) and at
        // most `n` bytes of message, and never unwinds (`shim/guarded.h`).
        return crate::shim::optional_tensor("cuDNN attention", "cuDNN attention is", &USABLE, |out, e, n| unsafe {
            sam2_sdpa_cudnn(ptr(q), ptr(k), ptr(v), out, e, n)
        });
    }
    #[allow(unreachable_code)]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run on a CUDA machine: `cargo test --release --lib cuda::attention -- --ignored`.
    #[test]
    #[ignore = "needs a CUDA device"]
    fn cudnn_attention_computes_what_sdpa_computes_for_a_batch_of_memory_attentions() {
        assert!(tch::Cuda::is_available(), "no CUDA device");
        let dev = Device::Cuda(0);
        let _knobs = crate::cuda::knob_lock();
        tch::manual_seed(0);
        set_min_batch(4);
        let r = |l| Tensor::randn([6, 1, l, 256], (Kind::Float, dev)).to_kind(Kind::BFloat16);
        let (q, k, v) = (r(4096), r(4096 * 3 + 64), r(4096 * 3 + 64));
        let ours = cudnn(&q, &k, &v).expect("cuDNN applies to a batch of 6");
        let exact =
            crate::model::layers::sdpa(&q.to_kind(Kind::Float), &k.to_kind(Kind::Float), &v.to_kind(Kind::Float));
        let worst = (ours.to_kind(Kind::Float) - &exact).abs().max().double_value(&[]);
        assert!(worst < 2e-2, "max |Δ| vs fp32 {worst}");
        // Values narrower than the keys (the folded value projection: 64-wide memory tokens).
        let v64 = v.narrow(3, 0, 64).contiguous();
        let ours = cudnn(&q, &k, &v64).expect("cuDNN takes 64-wide values");
        assert_eq!(ours.size(), [6, 1, 4096, 64]);
        let exact =
            crate::model::layers::sdpa(&q.to_kind(Kind::Float), &k.to_kind(Kind::Float), &v64.to_kind(Kind::Float));
        let worst = (ours.to_kind(Kind::Float) - &exact).abs().max().double_value(&[]);
        assert!(worst < 2e-2, "64-wide values: max |Δ| vs fp32 {worst}");
        // A batch below the threshold, or another head width, stays with SDPA.
        assert!(cudnn(&q.narrow(0, 0, 3), &k.narrow(0, 0, 3), &v.narrow(0, 0, 3)).is_none());
        let r64 = |l| Tensor::randn([6, 4, l, 64], (Kind::Float, dev)).to_kind(Kind::BFloat16);
        assert!(cudnn(&r64(100), &r64(100), &r64(100)).is_none());
    }
}
