//! glibc malloc tuning measured in `../shared/notes/toolchain.md`: keeping large buffers
//! mapped instead of unmapping and re-faulting them every batch made torch inference 3x
//! faster on CPU. `mallopt` sets the same knobs as the `GLIBC_TUNABLES` env var, so the
//! services need no wrapper to get it.

/// Keeps large allocations in the heap: no mmap, no trimming, and one arena. A thread
/// arena other than the main one cannot grow past 64 MiB, so larger buffers (a 32-tile
/// MobileNetV2 batch has 154 MB activations) were mmapped and unmapped every batch
/// whatever `M_MMAP_MAX` says; with the inference workers on their own threads that was
/// 20 % of featurize's CPU in page faults (4 % with one arena, `perf` on the bench).
pub fn tune_for_inference() {
    // SAFETY: mallopt only changes allocator parameters; called once at start-up.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Tunes malloc, then builds the multi-threaded runtime: the tuning must come before any
/// other thread exists, or that thread may already have an arena of its own.
pub fn inference_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tune_for_inference();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}
