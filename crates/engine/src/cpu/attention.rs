//! The memory attention's cross-attention on the CPU with the value projection folded
//! out (see `attention.cpp`): the attention-weighted sum runs over the 64-wide memory
//! tokens, and `v_proj` maps the 64-wide result to 256 afterwards, instead of attending
//! over 256-wide projected values. In real arithmetic the two are equal because every
//! softmax row sums to one; in fp32 they differ by rounding (about 1e-6 relative).
//!
//! fp32 CPU tensors on x86-64 Linux with AVX2 and FMA only; anywhere else, or with the
//! `cpu_attention` knob off (`SAM2_TUI_CPU_ATTENTION=0`), `attend_folded` returns None and
//! the caller runs SDPA.
use std::sync::atomic::{AtomicBool, Ordering};
use tch::{Device, Kind, Tensor};

unsafe extern "C" {
    fn sam2_cpu_attention_folded(
        q: *const std::ffi::c_void,
        k: *const std::ffi::c_void,
        x: *const std::ffi::c_void,
        scale: f64,
        out: *mut *mut std::ffi::c_void,
        err: *mut std::ffi::c_char,
        len: usize,
    ) -> i32;
}

/// False after a failure: one warning, then SDPA for the rest of the process.
static USABLE: AtomicBool = AtomicBool::new(true);

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

/// softmax(q·kᵀ·scale)·x for q `[Lq, D]`, k `[Lk, D]`, x `[Lk, Dv]` (fp32, CPU) as
/// `[Lq, Dv]`; None where the kernel does not apply.
pub fn attend_folded(q: &Tensor, k: &Tensor, x: &Tensor, scale: f64) -> Option<Tensor> {
    let applies = [q, k, x].iter().all(|t| t.device() == Device::Cpu && t.kind() == Kind::Float && t.dim() == 2);
    if !applies || !USABLE.load(Ordering::Relaxed) || !enabled() {
        return None;
    }
    let ptr = |t: &Tensor| t.as_ptr() as *const std::ffi::c_void;
    // SAFETY: q, k, x are live tensors checked above (float, 2-D, contiguous, matching
    // widths) and outlive the call; the kernel only reads them, writes its result through
    // `out` (owned by `optional_tensor`) and at most `n` bytes of message, and never unwinds.
    crate::shim::optional_tensor("CPU attention", "the CPU attention kernel is", &USABLE, |out, e, n| unsafe {
        sam2_cpu_attention_folded(ptr(q), ptr(k), ptr(x), scale, out, e, n)
    })
}

#[cfg(test)]
mod tests {
    use super::attend_folded;
    use tch::{Device, Kind, Tensor};

    /// What the reference computes: values projected to 256, then SDPA.
    fn reference(q: &Tensor, k: &Tensor, x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
        let v = x.linear(w, Some(b));
        crate::model::layers::sdpa(&q.view([1, 1, -1, 256]), &k.view([1, 1, -1, 256]), &v.view([1, 1, -1, 256]))
            .view([-1, 256])
    }

    // The kernel exists only where libtorch exports the sgemm it calls (x86-64 Linux);
    // elsewhere the test is reported as ignored instead of passing without running.
    #[test]
    #[cfg_attr(
        not(all(target_arch = "x86_64", target_os = "linux")),
        ignore = "the CPU kernel is built on x86-64 Linux only"
    )]
    fn folding_the_value_projection_out_of_the_attention_changes_only_rounding() {
        tch::set_num_threads(2);
        tch::manual_seed(7);
        let opts = (Kind::Float, Device::Cpu);
        // Key counts that end in a partial block, and logits spread wide enough that the
        // running maximum moves from block to block.
        for (lq, lk) in [(300, 1100), (64, 4096 + 64)] {
            let q = Tensor::randn([lq, 256], opts) * 3.0;
            let k = Tensor::randn([lk, 256], opts);
            let x = Tensor::randn([lk, 64], opts);
            let w = Tensor::randn([256, 64], opts) * 0.1;
            let b = Tensor::randn([256], opts);
            let want = reference(&q, &k, &x, &w, &b);
            let got =
                attend_folded(&q, &k, &x, 1.0 / 16.0).expect("the kernel applies on x86-64 Linux").linear(&w, Some(&b));
            let err = (&got - &want).abs().max().double_value(&[]);
            let scale = want.abs().max().double_value(&[]);
            assert!(err <= 1e-5 * scale, "({lq}, {lk}): max |Δ| {err} for values up to {scale}");
        }
    }

    #[test]
    fn the_kernel_declines_what_it_does_not_handle() {
        let opts = (Kind::Float, Device::Cpu);
        let (q, k, x) = (Tensor::randn([8, 16], opts), Tensor::randn([32, 16], opts), Tensor::randn([32, 4], opts));
        assert!(attend_folded(
            &q.to_kind(Kind::BFloat16),
            &k.to_kind(Kind::BFloat16),
            &x.to_kind(Kind::BFloat16),
            0.25
        )
        .is_none());
        assert!(attend_folded(&q.view([1, 8, 16]), &k.view([1, 32, 16]), &x.view([1, 32, 4]), 0.25).is_none());
        assert!(attend_folded(&q, &k.narrow(1, 0, 8), &x, 0.25).is_none());
    }
}

#[cfg(test)]
mod timing {
    /// Dev timing at the memory bank's full shape: `cargo test --release --lib timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn time_the_kernel_against_sdpa() {
        use tch::{Device, Kind, Tensor};
        let threads = std::env::var("SAM2_TUI_TIMING_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
        tch::set_num_threads(threads);
        println!("{threads} threads");
        let opts = (Kind::Float, Device::Cpu);
        let (q, k, x) =
            (Tensor::randn([4096, 256], opts), Tensor::randn([28736, 256], opts), Tensor::randn([28736, 64], opts));
        let w = Tensor::randn([256, 64], opts);
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let _ = super::attend_folded(&q, &k, &x, 0.0625).unwrap();
            let a = t.elapsed();
            let t = std::time::Instant::now();
            let v = x.linear::<Tensor>(&w, None);
            let _ = crate::model::layers::sdpa(
                &q.view([1, 1, 4096, 256]),
                &k.view([1, 1, -1, 256]),
                &v.view([1, 1, -1, 256]),
            );
            println!("folded {:?}  sdpa {:?}", a, t.elapsed());
        }
    }
}
