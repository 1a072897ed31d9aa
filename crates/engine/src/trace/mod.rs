//! Where a frame's time goes: the `trace` knob (`SAM2_TUI_TRACE=FILE`) records one
//! propagation with libtorch's profiler (Kineto: CPU operators and, on CUDA, every kernel,
//! graph replays included) and saves it as a Chrome trace (open in Perfetto or
//! chrome://tracing). `trace_pass` (`SAM2_TUI_TRACE_PASS=N`) picks the N-th propagation of
//! the process; the default 2 skips `bench`'s warm-up. Off unless asked: recording slows
//! every operator down.
use std::ffi::{c_char, c_int, CString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

extern "C" {
    fn sam2_shim_trace_start(cuda: c_int, err: *mut c_char, err_len: usize) -> c_int;
    fn sam2_shim_trace_stop(path: *const c_char, err: *mut c_char, err_len: usize) -> c_int;
}

static PASSES: AtomicUsize = AtomicUsize::new(0);

/// Records while alive (if this propagation is the one asked for) and saves on drop.
pub struct Trace {
    path: Option<PathBuf>,
}

/// Starts recording a propagation on `device` into `path` when this propagation is the
/// process's `wanted`-th (the `trace` and `trace_pass` knobs).
pub fn propagation(device: tch::Device, path: Option<&Path>, wanted: usize) -> Trace {
    // Counted only where a trace is asked for: a propagation that is not (the warm-up's)
    // does not shift which one `wanted` names.
    let Some(path) = path.map(Path::to_path_buf) else {
        return Trace { path: None };
    };
    let pass = PASSES.fetch_add(1, Ordering::Relaxed) + 1;
    if pass != wanted {
        return Trace { path: None };
    }
    let cuda = matches!(device, tch::Device::Cuda(_)) as c_int;
    // SAFETY: the shim takes an int and an error buffer of `len` bytes that `shim::call`
    // owns for the call, and never unwinds (`shim/guarded.h`).
    match shim("start", |err, len| unsafe { sam2_shim_trace_start(cuda, err, len) }) {
        Ok(()) => Trace { path: Some(path) },
        Err(e) => {
            eprintln!("trace: {e}");
            Trace { path: None }
        }
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        let Some(path) = self.path.take() else { return };
        // Written beside the target, then renamed: a half-written trace never appears.
        let tmp = path.with_extension("partial.json");
        let c = CString::new(tmp.to_string_lossy().as_bytes()).unwrap_or_default();
        // SAFETY: `c` is a NUL-terminated path alive across the call; the error buffer as
        // above; the shim never unwinds.
        let saved = shim("save", |err, len| unsafe { sam2_shim_trace_stop(c.as_ptr(), err, len) })
            .and_then(|()| Ok(std::fs::rename(&tmp, &path)?));
        match saved {
            Ok(()) => eprintln!("trace: propagation recorded to {}", path.display()),
            Err(e) => eprintln!("trace: {}: {e}", path.display()),
        }
    }
}

fn shim(what: &str, f: impl FnOnce(*mut c_char, usize) -> c_int) -> anyhow::Result<()> {
    crate::shim::call(&format!("profiler {what}"), f)
}
