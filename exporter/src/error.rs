//! The agent's error type: what stops it, from any stage.

/// Result alias of the agent.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop the agent. Each variant renders as one line an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The metrics listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address from --listen-address.
        address: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Flags that parse one by one but do not fit together.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A worker thread could not be started.
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        /// Thread name.
        name: &'static str,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Kubernetes metadata is on but the API client cannot be set up.
    #[error(transparent)]
    Kubernetes(#[from] crate::kubernetes::Error),
    /// The web config file is unusable.
    #[error(transparent)]
    Web(#[from] crate::export::web::Error),
    /// A DNS name class or watchlist is unusable.
    #[error(transparent)]
    Domains(#[from] crate::identity::domains::Error),
    /// Loading, attaching or checking the eBPF side failed.
    #[error(transparent)]
    Kernel(#[from] crate::ebpf::Error),
}
