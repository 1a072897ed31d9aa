//! The numbers in a worker heartbeat: process RSS, thread count, libtorch version and the
//! device allocator's memory (MPS hooks or the CUDA caching allocator, via the C++ shim).
//! Everything here is per process, which is why the worker, not the supervisor, reports it.
use sam2_api::events::{CudaMemory, MpsMemory, WorkerStats};
use std::ffi::{c_char, c_int, CStr};

extern "C" {
    fn sam2_shim_torch_version() -> *const c_char;
    fn sam2_shim_mps_memory(
        current: *mut u64,
        driver: *mut u64,
        recommended: *mut u64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn sam2_shim_cuda_stats(
        device: c_int,
        allocated: *mut u64,
        reserved: *mut u64,
        peak: *mut u64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn sam2_shim_cuda_mem_info(
        device: c_int,
        free: *mut u64,
        total: *mut u64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    #[allow(dead_code)]
    fn sam2_shim_rss(bytes: *mut u64) -> c_int;
}

/// The libtorch version this binary was built against (TORCH_VERSION of its headers).
pub fn torch_version() -> String {
    // SAFETY: the shim returns a pointer to a static NUL-terminated string (TORCH_VERSION).
    unsafe { CStr::from_ptr(sam2_shim_torch_version()) }.to_string_lossy().into_owned()
}

/// MPS allocator memory, or the reason it is unavailable (no MPS on this machine).
pub fn mps_memory() -> Result<MpsMemory, String> {
    let (mut cur, mut drv, mut rec) = (0u64, 0u64, 0u64);
    let mut err = [0 as c_char; 256];
    // SAFETY: out-pointers to live locals; the shim writes at most `err.len()` bytes, NUL-terminated.
    let ok = unsafe { sam2_shim_mps_memory(&mut cur, &mut drv, &mut rec, err.as_mut_ptr(), err.len()) };
    if ok == 0 {
        // SAFETY: the buffer started zeroed and the shim writes at most len-1 bytes.
        return Err(unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned());
    }
    Ok(MpsMemory {
        current_allocated: cur,
        driver_allocated: drv,
        recommended_max: rec,
        // libtorch has no getter for the ratios: report what the environment set.
        high_watermark_ratio: env_ratio("PYTORCH_MPS_HIGH_WATERMARK_RATIO"),
        low_watermark_ratio: env_ratio("PYTORCH_MPS_LOW_WATERMARK_RATIO"),
    })
}

/// CUDA caching-allocator and driver memory of `device`. Only call once CUDA is in use
/// (the worker loaded its model there): asking earlier would initialise a CUDA context.
pub fn cuda_memory(device: i32) -> Result<CudaMemory, String> {
    let (mut alloc, mut reserved, mut peak) = (0u64, 0u64, 0u64);
    let mut err = [0 as c_char; 256];
    // SAFETY: out-pointers to live locals; the shim writes at most `err.len()` bytes, NUL-terminated.
    let ok = unsafe { sam2_shim_cuda_stats(device, &mut alloc, &mut reserved, &mut peak, err.as_mut_ptr(), err.len()) };
    if ok == 0 {
        // SAFETY: the buffer started zeroed and the shim writes at most len-1 bytes.
        return Err(unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned());
    }
    let (mut free, mut total) = (0u64, 0u64);
    // SAFETY: as above: out-pointers to live locals, a bounded NUL-terminated error buffer.
    let ok = unsafe { sam2_shim_cuda_mem_info(device, &mut free, &mut total, err.as_mut_ptr(), err.len()) };
    // Driver totals are optional: the allocator numbers are still worth showing.
    let (total, used) = if ok != 0 { (total, total.saturating_sub(free)) } else { (0, 0) };
    Ok(CudaMemory { allocated: alloc, reserved, peak_allocated: peak, total, used })
}

fn env_ratio(name: &str) -> Option<f32> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Resident set size of this process in bytes.
pub fn rss_bytes() -> u64 {
    #[cfg(target_os = "linux")]
    {
        // statm: size resident shared ... in pages.
        // SAFETY: sysconf reads a constant of the system; no memory is passed.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
            .map(|pages| pages * page)
            .unwrap_or(0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let mut b = 0u64;
        // SAFETY: an out-pointer to a live local.
        if unsafe { sam2_shim_rss(&mut b) } != 0 {
            b
        } else {
            0
        }
    }
}

/// What the heartbeat thread needs to know about the device (set once the model loaded).
#[derive(Clone, Debug, Default)]
pub struct DeviceInfo {
    pub kind: String,
    pub name: String,
    pub cuda_index: Option<i32>,
    pub mps: bool,
}

pub fn collect(dev: &DeviceInfo, torch_version: &str) -> WorkerStats {
    WorkerStats {
        device_kind: dev.kind.clone(),
        device_name: dev.name.clone(),
        torch_version: torch_version.to_string(),
        threads: tch::get_num_threads(),
        rss_bytes: rss_bytes(),
        mps: if dev.mps { mps_memory().ok() } else { None },
        cuda: dev.cuda_index.and_then(|i| cuda_memory(i).ok()),
    }
}

/// The CUDA device's marketing name through the driver API (`cuDeviceGetName` in
/// libcuda, already loaded by libtorch_cuda when CUDA is in use). None when unavailable.
pub fn cuda_device_name(index: i32) -> Option<String> {
    type GetName = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
    // SAFETY: RTLD_NOLOAD only finds a libcuda already loaded (never runs initialisers);
    // the symbol is cast to cuDeviceGetName's documented C signature; the driver writes at
    // most `buf.len()` bytes, NUL-terminated, and is only read on success.
    unsafe {
        let lib = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
        if lib.is_null() {
            return None;
        }
        let sym = libc::dlsym(lib, c"cuDeviceGetName".as_ptr());
        if sym.is_null() {
            return None;
        }
        let f: GetName = std::mem::transmute(sym);
        let mut buf = [0 as c_char; 256];
        (f(buf.as_mut_ptr(), buf.len() as c_int, index) == 0)
            .then(|| CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_linked_libtorch_version_and_a_real_rss() {
        assert!(torch_version().starts_with("2."), "{}", torch_version());
        assert!(rss_bytes() > 1 << 20, "rss {}", rss_bytes());
    }

    // On a Mac the MPS path is taken instead; this checks the path without MPS.
    #[test]
    #[cfg_attr(target_os = "macos", ignore = "checks the path taken without MPS")]
    fn mps_memory_is_unavailable_not_a_crash_without_mps() {
        let e = mps_memory().unwrap_err();
        assert!(!e.is_empty());
    }
}
