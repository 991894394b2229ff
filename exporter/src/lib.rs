//! sockscope: eBPF network metrics exporter.
//!
//! The data path, in module order, one tick of it in [`pipeline`]: [`ebpf`] loads and attaches
//! the kernel programs, [`drain`] reads their maps each interval, [`kubernetes`] watches the
//! API, [`identity`] labels each key with the socket owner and the peer (with the hostnames
//! [`dns`] decodes from forwarded answers), [`series`] folds the labelled deltas into counters
//! and publishes a snapshot, [`export`] serves it. Beside the path: [`schema`] (every family),
//! [`config`], [`report`], [`fault`], [`memory`].

pub mod advice;
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
pub mod memory;
pub mod pipeline;
pub mod report;
pub mod schema;
pub mod seccomp;
pub mod series;

pub use error::{Error, Result};
