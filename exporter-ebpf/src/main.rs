//! sockscope's in-kernel side.
//!
//! Where a byte is counted:
//! - `iter/task_file` ([`iter`]): run by the agent at every drain, the live byte and
//!   retransmit counts of every tracked TCP socket, and every UDP socket's batch.
//! - `sock_ops` ([`tcp`]): TCP lifecycle. Connection opened/closed, failed connects, and the
//!   final counts at close.
//! - `cgroup_skb` ([`skb`]): every packet of every socket under the attach cgroup. TCP: FIN
//!   tracking and adoption of connections that predate the agent. UDP: datagram payload bytes,
//!   batched per socket and peer ([`udp`]; the last batch at cgroup/sock_release).
//!   Where the kernel has no iterators, TCP falls back to per-packet counting here and in
//!   sock_ops' RTT callback.
//! - [`dns`], called from cgroup_skb for UDP port 53: DNS queries, responses, latency and parse
//!   errors, and answers forwarded to the agent's hostname cache.
//! - `cgroup/sock_create` ([`sock`]): creates each socket's state with its owner cgroup (and
//!   creating process).
//! - [`health`]: TCP connect time, RTT and lifetime per edge (from sock_ops, the per-packet
//!   path or the iterator, and the close), resets (`tcp:tcp_send_reset`,
//!   `tcp:tcp_receive_reset`) and packet drops with the kernel's reason (`skb:kfree_skb`).
//!
//! TCP bytes come from the kernel's own per-socket counters (`bytes_acked`, `bytes_received`),
//! flushed into per-CPU flow aggregates ([`flow`]).
//!
//! Every program returns "allow" on every path: a cgroup_skb or cgroup sock program returning 0
//! drops the packet or the socket for every process below the attach point.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod dns;
mod empty;
mod flow;
mod health;
mod iter;
mod kernel;
mod maps;
mod packet;
mod skb;
mod sock;
mod tcp;
mod udp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
