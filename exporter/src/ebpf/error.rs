//! Why the kernel side cannot run. Each variant renders as one line an operator can act on.

use std::path::PathBuf;

/// Result alias of the kernel stage.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What stops the eBPF programs from loading, attaching or being checked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The process lacks the privileges to load and attach eBPF programs.
    #[error(
        "sockscope needs root, or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON (effective capabilities: {effective:#x})"
    )]
    NotPrivileged {
        /// The process's effective capability mask.
        effective: u64,
    },
    /// No cgroup v2 hierarchy is mounted, or the given path is not inside one.
    #[error("{0}")]
    NoCgroupV2(String),
    /// The kernel does not expose BTF, which socket storage maps require.
    #[error(
        "kernel BTF not found at /sys/kernel/btf/vmlinux: sockscope needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf,
    /// The embedded eBPF object could not be parsed or its maps created.
    #[error("loading the eBPF object failed: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    /// A map the agent needs is missing from the object or has the wrong type.
    #[error("eBPF map {name}: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// Underlying error.
        #[source]
        source: aya::maps::MapError,
    },
    /// `--tcp-accounting iterator` was asked for and the iterator cannot count here.
    #[error("TCP accounting by iterator unavailable: {0}")]
    TcpIter(String),
    /// No program could be attached at all, so there is nothing to export.
    #[error("no eBPF program could be attached; see the errors above")]
    NothingAttached,
    /// The DNS pending-query table could not be mapped into the agent.
    #[error("{0}")]
    Pending(String),
    /// Capabilities could not be dropped after attaching.
    #[error("dropping capabilities failed ({0}); run with --keep-capabilities to skip this")]
    Privileges(String),
    /// A file under /proc or /sys could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}
