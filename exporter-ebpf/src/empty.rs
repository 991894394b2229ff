//! Empty programs at sockscope's hooks, for the overhead benchmark's floor: what any design
//! that attaches at these hooks pays before doing any work (`sockscope-peer empty-hooks`). The
//! agent never loads them.

use aya_ebpf::{
    macros::{cgroup_skb, cgroup_sock, sock_ops},
    programs::{SkBuffContext, SockContext, SockOpsContext},
};

#[cgroup_skb(ingress)]
pub fn sockscope_empty_ingress(_ctx: SkBuffContext) -> i32 {
    1
}

#[cgroup_skb(egress)]
pub fn sockscope_empty_egress(_ctx: SkBuffContext) -> i32 {
    1
}

#[sock_ops]
pub fn sockscope_empty_sockops(_ctx: SockOpsContext) -> u32 {
    1
}

#[cgroup_sock(sock_create)]
pub fn sockscope_empty_sock_create(_ctx: SockContext) -> i32 {
    1
}

#[cgroup_sock(sock_release)]
pub fn sockscope_empty_sock_release(_ctx: SockContext) -> i32 {
    1
}
