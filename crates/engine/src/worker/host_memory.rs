//! Freed host memory stays in the worker's heap instead of going back to the kernel.
//!
//! libtorch's CPU allocator calls `posix_memalign`/`free` for every tensor. glibc serves
//! blocks above its mmap threshold (at most 32 MiB) with a fresh `mmap` and unmaps them on
//! `free`, so every large activation of every frame (a 65536×576 fp32 matmul output is
//! 151 MB) page-faults again on first touch: the kernel zeroes it page by page. On the
//! 2-core CPU that was 6 of 50 CPU-seconds of a 4-frame tiny run, spent in the kernel.
//! With mmap off and the heap never trimmed, the same sizes come back each frame and are
//! reused without a fault. The results are bit-for-bit the same; the cost is that the
//! worker's resident memory stays at its high-water mark, which a worker that processes
//! frame after frame of one size reaches on its first frame anyway.
//!
//! The `keep_freed` knob off (`SAM2_TUI_KEEP_FREED=0`) keeps glibc's defaults (for A/B
//! measurements). It is read when the worker starts, from the worker's environment: the
//! protocol brings the other knobs only after the worker's threads run.

/// Applies the policy when `keep` (the `keep_freed` knob); call once, first thing in the
/// worker. A no-op off glibc (macOS's allocator keeps large blocks in its own magazines).
pub fn keep_freed_memory(keep: bool) {
    if !keep {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before the worker
    // starts its threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::keep_freed_memory;

    /// Page faults of the calling thread so far.
    fn minor_faults() -> i64 {
        // SAFETY: rusage is plain integers, for which all-zero is valid; getrusage fills it.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: an out-pointer to a live local of the right type.
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
        u.ru_minflt
    }

    /// Allocates `len` bytes, writes one byte per page, frees them.
    fn touch(len: usize) {
        let mut v: Vec<u8> = Vec::with_capacity(len);
        let p = v.as_mut_ptr();
        for i in (0..len).step_by(4096) {
            // SAFETY: i < len = the vector's capacity, so the byte is inside the allocation.
            unsafe { p.add(i).write_volatile(1) };
        }
        std::hint::black_box(&mut v);
    }

    #[test]
    fn a_large_block_freed_and_allocated_again_is_not_faulted_in_again() {
        // 48 MiB: above glibc's largest mmap threshold, so by default every allocation
        // of it is a fresh mapping whose 12,288 pages fault on first touch.
        const LEN: usize = 48 << 20;
        keep_freed_memory(true);
        touch(LEN);
        let before = minor_faults();
        touch(LEN);
        let faults = minor_faults() - before;
        assert!(faults < (LEN / 4096 / 10) as i64, "{faults} page faults: the freed block was not reused");
    }
}
