//! Giving freed heap memory back to the kernel after the bursts that allocate it.

/// Returns freed heap memory to the kernel. glibc keeps freed pages in its arenas, where they
/// would show as resident memory for good after a burst (a cluster-wide list decoded, many
/// series expired at once).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
