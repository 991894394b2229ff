//! cgroup/sock_create: remember which process created each TCP/UDP socket.
//!
//! This runs in the creating process's context, the only place its `comm` is reliable: a
//! connected socket is established in softirq context, and an accepted socket is created by the
//! kernel. Accepted sockets inherit their listener's state through `BPF_F_CLONE`.

use aya_ebpf::{helpers::bpf_get_current_comm, macros::cgroup_sock, programs::SockContext};
use sockscope_common::{PROTO_TCP, PROTO_UDP, SockState};

use crate::maps::sock_state;

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

#[cgroup_sock(sock_create)]
pub fn sockscope_sock_create(ctx: SockContext) -> i32 {
    try_sock_create(&ctx);
    // Always allow: 0 would make socket() fail for every process below the attach point.
    1
}

#[inline(always)]
fn try_sock_create(ctx: &SockContext) {
    let sk = ctx.sock;
    let (family, protocol) = unsafe { ((*sk).family, (*sk).protocol) };
    if (family != AF_INET && family != AF_INET6)
        || (protocol != PROTO_TCP as u32 && protocol != PROTO_UDP as u32)
    {
        return;
    }
    let mut init = SockState::default();
    if let Ok(comm) = bpf_get_current_comm() {
        init.comm = comm;
    }
    let _ = unsafe { sock_state(sk.cast(), Some(&mut init)) };
}
