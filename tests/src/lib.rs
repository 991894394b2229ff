//! Harness for sockscope's end-to-end tests: real cgroups, network namespaces, veth pairs,
//! processes, and the real `sockscope` binary attached to the test's own cgroup.
//!
//! Every test makes its own cgroup subtree under `<cgroup2>/sockscope-e2e/`, runs its own agent
//! attached there, and only ever sees series of its own processes, so tests run in parallel.

pub mod agent;
pub mod cgroup;
pub mod dns;
pub mod exposition;
/// An in-test Kubernetes API server (list and watch, real objects, outages on demand).
pub mod fake_apiserver;
/// Pods as kubepods-like cgroups in network namespaces, described by the fake API server.
pub mod fake_cluster;
pub mod http;
/// The shipped Kubernetes manifests, rendered.
pub mod manifests;
pub mod netns;
pub mod pki;
/// Real containers under podman, and a DaemonSet's pod run as the kubelet would.
pub mod podman;
pub mod process;

// The harness by concern above; every test file reaches it from the crate root.
pub use agent::*;
pub use cgroup::*;
pub use exposition::*;
pub use http::*;
pub use netns::*;
pub use process::*;
