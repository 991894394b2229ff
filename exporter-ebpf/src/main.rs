//! sockscope's in-kernel side.
//!
//! Where a byte is counted:
//! - `sock_ops` ([`tcp`]): TCP lifecycle. Connection opened/closed, failed connects and
//!   retransmits, and the sender's byte counts right after every ACK (RTT callback).
//! - `cgroup_skb` ([`skb`]): every packet of every socket under the attach cgroup. TCP: the
//!   receiver's byte counts on its outgoing packets, FIN tracking, adoption of connections that
//!   predate the agent. UDP: datagram payload bytes.
//! - [`dns`], called from cgroup_skb for UDP port 53: DNS queries, responses, latency and parse
//!   errors, and answers forwarded to the agent's hostname cache.
//! - `cgroup/sock_create` ([`sock`]): remembers which process created a socket.
//!
//! TCP bytes come from the kernel's own per-socket counters (`bytes_acked`, `bytes_received`),
//! flushed into per-CPU flow aggregates ([`flow`]) whenever they change.
//!
//! Every program returns "allow" on every path: a cgroup_skb or cgroup sock program returning 0
//! drops the packet or the socket for every process below the attach point.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod dns;
mod flow;
mod maps;
mod packet;
mod skb;
mod sock;
mod tcp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
