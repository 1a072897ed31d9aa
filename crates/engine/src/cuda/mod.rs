//! What tch does not expose of CUDA, through a small C++ shim (`shim.cpp`, compiled by
//! `build.rs` where libtorch has CUDA and the CUDA headers are present; that build sets
//! `cfg(sam2_cuda_shim)`): graphs, to replay a frame's kernels as one launch, and
//! events, to wait for one frame's results while the next frame's kernels run; and the
//! attention kernel for batched memory attention (`attention`).
pub mod attention;
mod capture_gate;
pub mod event;
pub mod fused;
pub mod graph;

pub use event::CudaEvent;
pub use graph::{available, GraphCache, Graphed};

/// Held by every CUDA test that sets a process-wide kernel switch (`attention::set_min_batch`,
/// `fused::set_keys_enabled`) or loads a model (which sets them all from its `Tuning`): the
/// test harness runs tests on parallel threads, and one test's switch flipped between
/// another's two calls made that one fail (an H200, 2026-12-07: the cuDNN test's second
/// call found the threshold at 0).
#[cfg(test)]
pub(crate) fn knob_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Turns a shim call's (status, message) into a Result.
#[cfg(sam2_cuda_shim)]
pub(crate) fn call(what: &str, f: impl FnOnce(*mut std::ffi::c_char, usize) -> i32) -> anyhow::Result<()> {
    crate::shim::call(&format!("CUDA {what}"), f)
}
