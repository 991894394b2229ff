//! cgroup/sock_create: the state of every TCP/UDP socket, created with its owner cgroup (and,
//! with the process label, its creating process), and which network namespace each cgroup's
//! sockets live in.
//!
//! This runs in the creating process's context, the only place its `comm` is reliable: a
//! connected socket is established in softirq context, and an accepted socket is created by the
//! kernel. Accepted sockets inherit their listener's state through `BPF_F_CLONE`.
//!
//! The namespace is what the agent's hostname cache is keyed by. Recording it here, from the
//! kernel, works from a container without the host's PID namespace (where the pids of other
//! pods' cgroups are invisible) and costs one map lookup per socket() call.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm,
        generated::{bpf_get_current_cgroup_id, bpf_get_netns_cookie},
    },
    macros::cgroup_sock,
    programs::SockContext,
};
use sockscope_common::{
    AF_INET, AF_INET6, CONFIG_PROCESS_LABEL, PHASE_NEW, PHASE_UDP_SOCKET, PROTO_UDP, SockState,
    counted_proto,
};

use crate::maps::{CGROUP_NETNS, LAST_NETNS, config, sock_state};

#[cgroup_sock(sock_create)]
#[inline(always)]
pub fn sockscope_sock_create(ctx: SockContext) -> i32 {
    try_sock_create(&ctx);
    // Always allow: 0 would make socket() fail for every process below the attach point.
    1
}

#[inline(always)]
fn try_sock_create(ctx: &SockContext) {
    let sk = ctx.sock;
    let (family, kind, protocol) = unsafe { ((*sk).family, (*sk).type_, (*sk).protocol) };
    let Some(proto) = counted_proto(kind, protocol) else {
        return;
    };
    if family != AF_INET && family != AF_INET6 {
        return;
    }
    // SAFETY: helpers allowed for cgroup sock programs; the context pointer is the socket.
    let (cgroup, netns) = unsafe { (bpf_get_current_cgroup_id(), bpf_get_netns_cookie(sk.cast())) };
    // This CPU's last record first: a busy cgroup (a client opening connection after
    // connection) then costs no map lookup per socket.
    let last = LAST_NETNS.get_ptr_mut(0);
    let seen = last.is_some_and(|l| unsafe { (*l)[0] == cgroup && (*l)[1] == netns });
    // SAFETY: copied out at once.
    if !seen && unsafe { CGROUP_NETNS.get(&cgroup) }.copied() != Some(netns) {
        let _ = CGROUP_NETNS.insert(&cgroup, &netns, 0);
    }
    if let Some(l) = last {
        // SAFETY: this CPU's slot of a live per-CPU array.
        unsafe { *l = [cgroup, netns] };
    }
    // The socket's state, with its owner: a socket belongs to the cgroup of the process that
    // creates it (`sock_cgroup_set()` from `current`, net/core/sock.c), so every later program
    // finds the owner without a helper call, and the iterator can count a connection before
    // its first packet.
    let mut init = SockState {
        cgroup_id: cgroup,
        // A socket() socket: its release runs sock_release, so it may batch (`crate::udp`).
        phase: if proto == PROTO_UDP {
            PHASE_UDP_SOCKET
        } else {
            PHASE_NEW
        },
        ..Default::default()
    };
    if config().flags & CONFIG_PROCESS_LABEL != 0
        && let Ok(comm) = bpf_get_current_comm()
    {
        init.comm = comm;
    }
    let _ = unsafe { sock_state(sk.cast(), Some(&mut init)) };
}
