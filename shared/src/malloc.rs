//! glibc malloc tuning measured in `../shared/notes/toolchain.md`: keeping large buffers
//! mapped instead of unmapping and re-faulting them every batch made torch inference 3x
//! faster on CPU. `mallopt` sets the same knobs as the `GLIBC_TUNABLES` env var, so the
//! services need no wrapper to get it.

/// Disables mmap for large allocations and raises the trim threshold.
pub fn tune_for_inference() {
    // SAFETY: mallopt only changes allocator parameters; called once at start-up.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
