//! The socket iterator: live TCP byte counts with no per-packet work.
//!
//! The agent runs this program once per drain (`iter/task_file`, kernel/bpf/task_iter.c): the
//! kernel calls it for every open file of every process the agent can see, and for each socket
//! that carries sockscope's state (in any network namespace) it flushes the tracked TCP
//! connection's counter deltas since its last report into the flow maps, as sock_ops does at
//! close. A socket open in several processes is visited once per process; the claims below
//! make every visit after the first find nothing new. Flushes race the close path and cgroup_skb
//! adoption without the socket lock; each delta is claimed by compare-and-exchange first
//! (`flow::claim`), so none is counted twice, and FINs are handled with a lower bound
//! (`flow::live_payload_totals`), so none is counted as payload.
//!
//! Why not `iter/bpf_sk_storage_map`, which visits exactly the sockets carrying the state: some
//! kernels refuse map-element iterators at load (EPERM before verification, on the 6.18 this
//! was built on, as for `iter/bpf_map_elem`), while task iterators load everywhere iterators do.
//!
//! `struct tcp_sock` and `struct socket` are kernel-internal: the offsets of the fields read here
//! are not fixed at build time but written by the agent into the constants below at load, from
//! the running kernel's BTF (`exporter/src/ebpf/btf.rs`). The verifier then checks each load
//! against that same BTF (a load at an offset that is not a field of that size is refused, and
//! the agent falls back to per-packet mode).

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_skc_to_tcp_sock, bpf_sock_from_file},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use sockscope_common::{FlowStats, PHASE_ADOPTED, PHASE_CLOSED, PHASE_CONNECTING, PHASE_TRACKED};

use crate::{
    flow::{Read, TcpCounters, flush_claimed, flush_tcp},
    maps::{config, sock_state},
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

/// Offsets in `struct tcp_sock` of `bytes_acked` (u64), `bytes_received` (u64) and
/// `total_retrans` (u32), set by the agent at load.
#[unsafe(no_mangle)]
static TCP_SOCK_BYTES_ACKED: u32 = 0;
#[unsafe(no_mangle)]
static TCP_SOCK_BYTES_RECEIVED: u32 = 0;
#[unsafe(no_mangle)]
static TCP_SOCK_TOTAL_RETRANS: u32 = 0;
/// Offsets in `struct tcp_sock` of `snd_una` and `rcv_nxt` (u32), for the close's exact FIN
/// check (the iterator reads them too, and does not use them: `flow::live_payload_totals`).
#[unsafe(no_mangle)]
static TCP_SOCK_SND_UNA: u32 = 0;
#[unsafe(no_mangle)]
static TCP_SOCK_RCV_NXT: u32 = 0;
/// Offset of `struct sock *sk` in `struct socket`.
#[unsafe(no_mangle)]
static SOCKET_SK: u32 = 0;

/// Reads the `T` at `offset` bytes into `base`.
///
/// # Safety
/// `base` must be a verifier-typed kernel pointer and `offset` a load-time constant: the
/// verifier checks the access against the kernel's BTF.
#[inline(always)]
unsafe fn field<T: Copy>(base: *const u8, offset: &'static u32) -> T {
    let off = unsafe { core::ptr::read_volatile(offset) } as usize;
    unsafe { core::ptr::read_volatile(base.add(off).cast::<T>()) }
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
    let Some(st) = (unsafe { sock_state(sk, None) }) else {
        return;
    };
    if st.cgroup_id == 0 || (st.phase != PHASE_TRACKED && st.phase != PHASE_ADOPTED) {
        return;
    }
    let Some(c) = tcp_counters(sk) else { return };
    flush_claimed(&config(), st, Some(&c), Read::Live, &Default::default());
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
    flush_tcp(&config(), st, Some(&c), &events, true);
    st.phase = PHASE_CLOSED;
}
