//! Who owns a socket (cgroup -> workload) and who is on the other end (address -> class).

pub mod cgroup;
pub mod remote;
