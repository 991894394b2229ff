//! sockscope's empty programs at its hooks: the benchmark's floor.

use std::{thread, time::Duration};

use super::{Res, say};

/// Attaches sockscope's empty programs (they return "allow" at once) at the same hooks as the
/// agent, for the benchmark's floor; prints `ready`, then holds them until killed.
pub(crate) fn empty_hooks(path: String) -> Res<()> {
    let cgroup = std::fs::File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
    let mut ebpf =
        aya::Ebpf::load(sockscope::ebpf::OBJECT).map_err(|e| format!("load object: {e}"))?;
    for name in [
        "sockscope_empty_sock_create",
        "sockscope_empty_sock_release",
        "sockscope_empty_sockops",
        "sockscope_empty_egress",
        "sockscope_empty_ingress",
    ] {
        sockscope::ebpf::attach_to_cgroup(&mut ebpf, name, &cgroup)?;
    }
    say("ready");
    // Links close with the process: SIGTERM's default action is all the cleanup needed.
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}
