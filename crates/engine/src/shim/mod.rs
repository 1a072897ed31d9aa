//! What the C++ shims share: on the C++ side `guarded.h` (no exception reaches Rust), on
//! this side the reading of a shim call's (status, message) as a Result, and of a
//! kernel's (tensor, declined, error) as an Option that turns the kernel off on error.

/// Runs a shim entry point that takes an error buffer and returns 1 on success.
pub(crate) fn call(what: &str, f: impl FnOnce(*mut std::ffi::c_char, usize) -> i32) -> anyhow::Result<()> {
    let mut err = vec![0 as std::ffi::c_char; 512];
    if f(err.as_mut_ptr(), err.len()) == 1 {
        return Ok(());
    }
    // SAFETY: the buffer starts zeroed and guarded.h writes at most len-1 bytes into it, so
    // it is NUL-terminated whatever the shim did.
    let msg = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
    anyhow::bail!("{what}: {msg}")
}

/// Runs a shim kernel that makes a new tensor, or declines: it returns 1 with `*out` set,
/// 2 when it does not apply (None: the caller takes the ordinary path), 0 on an error.
/// An error also clears `usable`, with one warning that `what_is_off` is off, so the
/// process goes on without that kernel instead of failing the same way every frame.
pub(crate) fn optional_tensor(
    what: &str,
    what_is_off: &str,
    usable: &std::sync::atomic::AtomicBool,
    f: impl FnOnce(*mut *mut std::ffi::c_void, *mut std::ffi::c_char, usize) -> i32,
) -> Option<tch::Tensor> {
    let mut raw = std::ptr::null_mut();
    let mut status = 0;
    let result = call(what, |e, n| {
        status = f(&mut raw, e, n);
        if status == 2 {
            1
        } else {
            status
        }
    });
    match result {
        // SAFETY: status 1 means the shim set `raw` to a new tensor handle it hands over.
        Ok(()) if status == 1 => Some(unsafe { tch::Tensor::from_ptr(raw as *mut _) }),
        Ok(()) => None,
        Err(e) => {
            usable.store(false, std::sync::atomic::Ordering::Relaxed);
            eprintln!("sam2-tui: {e:#}; {what_is_off} off");
            None
        }
    }
}
