//! sockscope: eBPF network metrics exporter.
//!
//! The data path, in module order: [`ebpf`] loads and attaches the kernel programs, [`drain`]
//! reads their maps each interval, [`identity`] names the socket owner and the peer (with the
//! hostnames [`dns`] decodes from forwarded answers), [`series`] folds the deltas into labelled
//! counters, [`export`] serves them.

pub mod agent;
pub mod config;
pub mod dns;
pub mod drain;
pub mod ebpf;
pub mod error;
pub mod export;
pub mod fault;
pub mod identity;
pub mod kubernetes;
pub mod pipeline;
pub mod report;
pub mod schema;
pub mod series;

pub use error::{Error, Result};

/// Locks a mutex, recovering the data if another thread panicked while holding it: shared
/// state (hostname cache, ring buffer, histograms) stays usable, and counts already taken are
/// never thrown away.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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
