//! A point in the CUDA stream to wait for: propagation records one after queueing a
//! frame's host copies, queues the next frame's kernels, then waits on the event only,
//! so the host writes frame k out while the GPU computes frame k+1.
use tch::Device;

#[cfg(sam2_cuda_shim)]
unsafe extern "C" {
    fn sam2_event_record(device: i32, out: *mut *mut std::ffi::c_void, err: *mut std::ffi::c_char, len: usize) -> i32;
    fn sam2_event_synchronize(ev: *mut std::ffi::c_void, err: *mut std::ffi::c_char, len: usize) -> i32;
    fn sam2_event_free(ev: *mut std::ffi::c_void);
}

pub struct CudaEvent {
    #[cfg_attr(not(sam2_cuda_shim), allow(dead_code))]
    raw: *mut std::ffi::c_void,
    device: usize,
}

impl CudaEvent {
    /// An event at the current end of `device`'s stream; None off CUDA (nothing to wait
    /// for: CPU ops are done when they return).
    pub fn record(device: Device) -> Option<CudaEvent> {
        let Device::Cuda(index) = device else { return None };
        #[cfg(sam2_cuda_shim)]
        {
            let mut raw = std::ptr::null_mut();
            // SAFETY: the shim writes a new event to `raw` (alive across the call) and at
            // most `n` bytes of message, and never unwinds (`shim/guarded.h`).
            if super::call("event record", |e, n| unsafe { sam2_event_record(index as i32, &mut raw, e, n) }).is_ok() {
                return Some(CudaEvent { raw, device: index });
            }
        }
        // Without the shim: waiting means a whole-device sync (correct, not overlapped).
        Some(CudaEvent { raw: std::ptr::null_mut(), device: index })
    }

    /// Waits until the work queued before the event has run.
    pub fn synchronize(&self) {
        #[cfg(sam2_cuda_shim)]
        if !self.raw.is_null()
            // SAFETY: `raw` is non-null only as the live event `record` made, which this
            // value owns until `Drop`; the shim never unwinds.
            && super::call("event synchronize", |e, n| unsafe { sam2_event_synchronize(self.raw, e, n) }).is_ok()
        {
            return;
        }
        tch::Cuda::synchronize(self.device as i64);
    }
}

impl Drop for CudaEvent {
    fn drop(&mut self) {
        #[cfg(sam2_cuda_shim)]
        if !self.raw.is_null() {
            // SAFETY: the live event `record` made, freed exactly once, here.
            unsafe { sam2_event_free(self.raw) }
        }
    }
}
