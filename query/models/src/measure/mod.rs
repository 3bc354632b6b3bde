//! What a model does: zero-shot scores and keyword probabilities ([`score`], over `familiar::items`).

pub mod density;
pub mod import;
pub mod score;

/// Prepares the process for model computations on the CPU; call before the first model is loaded.
///
/// - candle's worker threads spin between operations unless told not to
///   (`CANDLE_BARRIER_POOL_SPIN_LIMIT`); spinning costs CPU time the model could use, so it is set to
///   0 unless the user set it.
/// - candle allocates a fresh buffer for every intermediate tensor; glibc returns large ones to the
///   kernel at once and maps them again for the next operation, zeroing every page. Raising the
///   mmap and trim thresholds to 1 GiB keeps those buffers in the heap for reuse. Measured on the
///   fixture model's training: 3.3 k → 4.6 k tokens per CPU-second (benches/README.md).
pub fn prepare_cpu() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0");
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is called before the model's
        // threads start.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        }
    }
}
