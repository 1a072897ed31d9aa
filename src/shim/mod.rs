//! What the C++ shims share: on the C++ side `guarded.h` (no exception reaches Rust), on
//! this side the reading of a shim call's (status, message) as a Result.

/// Runs a shim entry point that takes an error buffer and returns 1 on success.
pub(crate) fn call(what: &str, f: impl FnOnce(*mut std::ffi::c_char, usize) -> i32) -> anyhow::Result<()> {
    let mut err = vec![0 as std::ffi::c_char; 512];
    if f(err.as_mut_ptr(), err.len()) == 1 {
        return Ok(());
    }
    let msg = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
    anyhow::bail!("{what}: {msg}")
}
