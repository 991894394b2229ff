//! The socket iterator: live TCP byte counts with no per-packet work, and UDP sockets' batches.
//!
//! The agent runs this program once per drain (`iter/task_file`, kernel/bpf/task_iter.c): the
//! kernel calls it for every open file of every process the agent can see, and for each socket
//! that carries sockscope's state (in any network namespace) it flushes the tracked TCP
//! connection's counter deltas since its last report into the flow maps, as sock_ops does at
//! close. A socket open in several processes is visited once per process; the claims below
//! make every visit after the first find nothing new. A UDP socket's batch of bytes since its
//! last flush goes to its flow the same way (`crate::udp`). TCP flushes race the close path without the
//! socket lock; each delta is claimed by compare-and-exchange first (`flow::claim`), so none is
//! counted twice, and FINs are handled with a lower bound (`flow::live_payload_totals`), so none
//! is counted as payload. Right after attaching, the agent runs one adoption pass, in which TCP
//! sockets open before sockscope get their state ([`adopt`]).
//!
//! Why not `iter/bpf_sk_storage_map`, which visits exactly the sockets carrying the state: some
//! kernels refuse map-element iterators at load (EPERM before verification, on the 6.18 this
//! was built on, as for `iter/bpf_map_elem`), while task iterators load everywhere iterators do.
//!
//! Kernels whose verifier marks the `socket->sk` a file iterator finds as untrusted (6.18.44
//! does) refuse `bpf_sk_storage_get()` on it, and so this program: the agent then counts TCP per
//! packet.
//!
//! The kernel-internal fields read here come through offsets from the running kernel's BTF
//! ([`crate::kernel`]); a load at an offset that is not a field of that size is refused, and
//! the agent falls back to per-packet mode.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_skc_to_tcp_sock, bpf_sock_from_file},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use sockscope_common::{
    AF_INET, CONFIG_PROCESS_LABEL, CONFIG_TCP_ADOPT, CONFIG_TCP_ITER, FlowStats, PHASE_ADOPTED,
    PHASE_CLOSED, PHASE_CONNECTING, PHASE_TRACKED, PHASE_UDP_SOCKET, PROTO_UDP, SOCK_DGRAM,
    SOCK_STREAM, SockState, health::TIMING_RTT, v4_mapped,
};

use crate::{
    flow::{Read, TcpCounters, adopted, fence, flush_claimed, flush_tcp},
    health::{close_timings, timing_add},
    kernel::{
        SK_DADDR, SK_DPORT, SK_FAMILY, SK_NUM, SK_PROTOCOL, SK_STATE, SK_TYPE, SK_V6_DADDR,
        SOCKET_SK, TASK_COMM, TCP_SOCK_BYTES_ACKED, TCP_SOCK_BYTES_RECEIVED, TCP_SOCK_RCV_NXT,
        TCP_SOCK_SND_UNA, TCP_SOCK_SRTT_US, TCP_SOCK_TOTAL_RETRANS, field, field_at, sk_cgroup_id,
    },
    maps::{ADOPT_CGROUPS, config, sock_state},
    udp,
};

/// `struct bpf_iter__task_file` (kernel/bpf/task_iter.c): `__bpf_md_ptr` members are 8 bytes,
/// `fd` is `u32 __aligned(8)`.
#[repr(C)]
pub struct TaskFileIterCtx {
    meta: *mut c_void,
    task: *mut c_void,
    fd: u32,
    _pad: u32,
    file: *mut c_void,
}

/// The `comm` of the task being walked.
/// The `comm` of the task being walked.
#[inline(always)]
fn task_comm(task: *const u8) -> [u8; 16] {
    if task.is_null() {
        return [0; 16];
    }
    // SAFETY: two 8-byte loads inside `char comm[16]` (see module docs).
    let (a, b): (u64, u64) = unsafe { (field(task, &TASK_COMM), field_at(task, &TASK_COMM, 8)) };
    let mut comm = [0u8; 16];
    comm[..8].copy_from_slice(&a.to_ne_bytes());
    comm[8..].copy_from_slice(&b.to_ne_bytes());
    comm
}

/// The counters of a TCP socket (`None` for other sockets), read through the offsets above.
#[inline(always)]
fn tcp_counters(sk: *mut c_void) -> Option<TcpCounters> {
    let tp = unsafe { bpf_skc_to_tcp_sock(sk) };
    if tp.is_null() {
        return None;
    }
    let tp = tp as *const u8;
    // SAFETY: offsets of fields of `struct tcp_sock` in the running kernel (see module docs).
    Some(unsafe {
        TcpCounters {
            bytes_acked: field::<u64>(tp, &TCP_SOCK_BYTES_ACKED),
            bytes_received: field::<u64>(tp, &TCP_SOCK_BYTES_RECEIVED),
            snd_una: field::<u32>(tp, &TCP_SOCK_SND_UNA),
            rcv_nxt: field::<u32>(tp, &TCP_SOCK_RCV_NXT),
            total_retrans: field::<u32>(tp, &TCP_SOCK_TOTAL_RETRANS),
        }
    })
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task_file")]
pub extern "C" fn sockscope_tcp_iter(ctx: *mut TaskFileIterCtx) -> i32 {
    try_iter(ctx);
    // The iterator's output is empty; 0 continues the walk.
    0
}

#[inline(always)]
fn try_iter(ctx: *mut TaskFileIterCtx) {
    // NULL once more at the end of the walk.
    let file = unsafe { (*ctx).file };
    if file.is_null() {
        return;
    }
    // NULL unless the file is a socket (`sock_from_file()`, net/socket.c).
    let socket = unsafe { bpf_sock_from_file(file.cast()) } as *const u8;
    if socket.is_null() {
        return;
    }
    // SAFETY: a field of `struct socket` in the running kernel (see module docs).
    let sk: *mut c_void = unsafe { field(socket, &SOCKET_SK) };
    if sk.is_null() {
        return;
    }
    let cfg = config();
    if cfg.flags & CONFIG_TCP_ITER == 0 {
        // Per-packet mode after all (sock_ops did not attach): nothing to do here.
        return;
    }
    let task = unsafe { (*ctx).task } as *const u8;
    let Some(st) = (unsafe { sock_state(sk, None) }) else {
        if cfg.flags & CONFIG_TCP_ADOPT != 0 {
            adopt(&cfg, sk, task);
        }
        return;
    };
    // SAFETY: a field of `struct sock` in the running kernel (see module docs).
    let kind: u16 = unsafe { field(sk as *const u8, &SK_TYPE) };
    if kind as u32 == SOCK_DGRAM {
        // Only UDP sockets carry state of this type (`counted_proto`).
        udp::flush_live(&cfg, st);
        return;
    }
    if st.cgroup_id == 0 {
        // State sock_ops created for a socket open before sockscope (connect() after it
        // started, or accepted from a listener without state): its owner from the socket.
        if cfg.flags & CONFIG_PROCESS_LABEL != 0 && st.comm == [0; 16] {
            st.comm = task_comm(task);
            // The name before the owner: a flush (which waits for the owner) sees it whole.
            fence(st);
        }
        st.cgroup_id = sk_cgroup_id(sk.cast());
    }
    if st.cgroup_id == 0 || (st.phase != PHASE_TRACKED && st.phase != PHASE_ADOPTED) {
        return;
    }
    let Some(c) = tcp_counters(sk) else { return };
    flush_claimed(&cfg, st, Some(&c), Read::Live, &Default::default());
    // One RTT sample per drain (a socket open in several processes is visited once each).
    if st.rtt_epoch != cfg.epoch
        && let Some(srtt) = srtt_ns(sk)
    {
        st.rtt_epoch = cfg.epoch;
        timing_add(&cfg, st, TIMING_RTT, srtt);
    }
}

/// A TCP socket's smoothed RTT in nanoseconds (`srtt_us` holds microseconds << 3), `None` for
/// other sockets and before the first RTT measurement.
#[inline(always)]
fn srtt_ns(sk: *mut c_void) -> Option<u64> {
    let tp = unsafe { bpf_skc_to_tcp_sock(sk) };
    if tp.is_null() {
        return None;
    }
    // SAFETY: the offset of a u32 field of `struct tcp_sock` (see `crate::kernel`).
    let srtt: u32 = unsafe { field(tp as *const u8, &TCP_SOCK_SRTT_US) };
    (srtt != 0).then_some(u64::from(srtt >> 3) * 1000)
}

/// `TCP_ESTABLISHED`, `TCP_CLOSE_WAIT`, `TCP_LISTEN` (include/net/tcp_states.h).
const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE_WAIT: u8 = 8;
const TCP_LISTEN: u8 = 10;

/// The adoption pass: a TCP or UDP socket open before sockscope started, in a cgroup below the
/// attach point, gets its state now (a UDP socket its owner and creator, see `crate::udp`). An established connection (or one whose peer has closed) is
/// counted from here on, with the counters just read as baseline; its role is told by the
/// ephemeral port range, as the socket does not record who connected. A listener gets its owner
/// and creator, which the sockets it accepts from now on inherit (`BPF_F_CLONE`).
///
/// Sockets already closing on our side (FIN_WAIT*, CLOSING, LAST_ACK) are left alone: we sent
/// our FIN before this baseline, so the acknowledgement of its sequence number could not be told
/// from payload. Creating the state is atomic (`bpf_sk_storage_get()` with `F_CREATE` returns the
/// existing state if another program created it first), so a racing creator wins unchanged.
#[inline(always)]
fn adopt(cfg: &sockscope_common::Config, sk: *mut c_void, task: *const u8) {
    let skp = sk as *const u8;
    // SAFETY: offsets of fields of `struct sock` in the running kernel (see module docs).
    let (kind, state): (u16, u8) = unsafe { (field(skp, &SK_TYPE), field(skp, &SK_STATE)) };
    // SAFETY: as above.
    let protocol: u16 = unsafe { field(skp, &SK_PROTOCOL) };
    // Not ICMP "ping" sockets, which are SOCK_DGRAM too.
    let udp = kind as u32 == SOCK_DGRAM && protocol == PROTO_UDP as u16;
    if !udp
        && (kind as u32 != SOCK_STREAM
            || (state != TCP_ESTABLISHED && state != TCP_CLOSE_WAIT && state != TCP_LISTEN))
    {
        return;
    }
    let cgroup = sk_cgroup_id(skp);
    // SAFETY: copied out at once.
    if cgroup == 0 || unsafe { ADOPT_CGROUPS.get(&cgroup) }.is_none() {
        return;
    }
    let mut init = SockState {
        cgroup_id: cgroup,
        ..Default::default()
    };
    if cfg.flags & CONFIG_PROCESS_LABEL != 0 {
        init.comm = task_comm(task);
    }
    if udp {
        // A process's UDP socket: its owner and creator now, and it batches from its first
        // datagram on, as if sock_create had seen it. Its role comes from that datagram.
        init.phase = PHASE_UDP_SOCKET;
        let _ = unsafe { sock_state(sk, Some(&mut init)) };
        return;
    }
    let Some(c) = tcp_counters(sk) else { return };
    if state != TCP_LISTEN {
        // SAFETY: as above.
        let (family, local, dport): (u16, u16, u16) = unsafe {
            (
                field(skp, &SK_FAMILY),
                field(skp, &SK_NUM),
                field(skp, &SK_DPORT),
            )
        };
        let remote = u16::from_be(dport);
        init.remote_addr = if family as u32 == AF_INET {
            let a: u32 = unsafe { field(skp, &SK_DADDR) };
            v4_mapped(a.to_ne_bytes())
        } else {
            let (a, b): (u64, u64) =
                unsafe { (field(skp, &SK_V6_DADDR), field_at(skp, &SK_V6_DADDR, 8)) };
            let mut addr = [0u8; 16];
            addr[..8].copy_from_slice(&a.to_ne_bytes());
            addr[8..].copy_from_slice(&b.to_ne_bytes());
            addr
        };
        adopted(cfg, &mut init, local, remote, &c);
    }
    let _ = unsafe { sock_state(sk, Some(&mut init)) };
}

/// The close, in iterator mode: `tcp:tcp_destroy_sock` fires once per TCP socket, when the
/// kernel frees it (`tcp_v4_destroy_sock()`, net/ipv4/tcp_ipv4.c, also for IPv6), with the
/// socket locked and its counters final. Where sock_ops' state callback fires on every state
/// change of every tracked connection (about eight per connection, both ends), this fires
/// twice; sockets sockscope does not track cost one failed storage lookup.
///
/// A connection reset while its process still holds the socket is counted closed when the
/// process closes it (its bytes, final from the reset on, are counted live until then). One
/// that never got established (phase CONNECTING) is a failed connect.
#[btf_tracepoint(function = "tcp_destroy_sock")]
#[inline(always)]
pub fn sockscope_tcp_close(ctx: BtfTracePointContext) -> i32 {
    try_close(&ctx);
    0
}

#[inline(always)]
fn try_close(ctx: &BtfTracePointContext) {
    let sk: *mut c_void = ctx.arg(0);
    if sk.is_null() {
        return;
    }
    let Some(st) = (unsafe { sock_state(sk, None) }) else {
        return;
    };
    if st.cgroup_id == 0 {
        // See `try_iter`: a connection that closed before any drain learnt its owner.
        st.cgroup_id = sk_cgroup_id(sk.cast());
    }
    let events = match st.phase {
        PHASE_TRACKED => FlowStats {
            closed: 1,
            ..Default::default()
        },
        // Not opened while sockscope watched, so not closed either: bytes only.
        PHASE_ADOPTED => FlowStats::default(),
        PHASE_CONNECTING => FlowStats {
            connect_failures: 1,
            ..Default::default()
        },
        _ => return,
    };
    let Some(c) = tcp_counters(sk) else { return };
    let cfg = config();
    flush_tcp(&cfg, st, Some(&c), &events, true);
    close_timings(&cfg, st, srtt_ns(sk));
    st.phase = PHASE_CLOSED;
}
