//! TCP health per edge and packet drops.
//!
//! - Timings ([`timing_add`]): connect time (sock_ops, `TCP_CONNECT_CB` to
//!   `ACTIVE_ESTABLISHED_CB`), the smoothed RTT of live connections (once per drain interval:
//!   the iterator's visit, or in per-packet mode the connection's first packet sent in an
//!   interval) and at close, and the lifetime (established to close). Each sample is one map
//!   update into its histogram bucket; nothing is added to the per-packet path but a compare
//!   of the interval number.
//! - Resets: `tcp:tcp_send_reset` and `tcp:tcp_receive_reset` (BTF tracepoints, which hand over
//!   the socket itself), counted in the connection's flow. They fire only for resets, where the
//!   sock_ops state machine would make every connection pay a callback per state change.
//! - Drops: `skb:kfree_skb`, which the kernel calls only for a packet it drops, with the reason
//!   (`enum skb_drop_reason`, include/net/dropreason-core.h). A drop is its socket owner's when
//!   the packet belonged to a socket sockscope tracks (the receiving socket the kernel names,
//!   else the socket that owns the buffer), else the node's.

use core::ffi::c_void;

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use sockscope_common::{
    Config, EVENT_DROP_MAP_FULL, EVENT_TIMING_FOLDED, FlowStats, PHASE_ADOPTED, PHASE_CLOSED,
    PHASE_CONNECTING, PHASE_TRACKED, PROTO_TCP, SockState,
    health::{
        DROP_RECEIVED, DROP_SENT, DropKey, TIMING_LIFETIME, TIMING_RTT, TimingKey, TimingStats,
        node_drop_slot, node_timing_slot, timing_bucket,
    },
};

use crate::{
    flow::{flow_add, key_of},
    kernel::{SKB_IIF, SKB_SK, field},
    maps::{
        DROPS_0, DROPS_1, NODE_DROPS, NODE_TIMINGS, TIMINGS_0, TIMINGS_1, add_u64, config,
        count_event, sock_state, upsert,
    },
};

/// Adds one timing sample of `ns` nanoseconds to the edge of socket state `st`. A sample
/// without an owner, or that finds no room in the timing map, goes to the node-wide histogram.
#[inline(always)]
pub fn timing_add(cfg: &Config, st: &SockState, kind: u8, ns: u64) {
    let bucket = timing_bucket(kind, ns);
    let add = |v: *mut TimingStats| {
        // SAFETY: this CPU's slot of a live map value.
        unsafe {
            add_u64(core::ptr::addr_of_mut!((*v).count), 1);
            add_u64(core::ptr::addr_of_mut!((*v).sum_ns), ns);
        }
    };
    if st.cgroup_id != 0 {
        let key = TimingKey {
            cgroup_id: st.cgroup_id,
            remote_addr: st.remote_addr,
            port: st.port,
            role: st.role,
            kind,
            bucket,
            _pad: [0; 3],
        };
        let init = TimingStats {
            count: 1,
            sum_ns: ns,
        };
        // One call site per generation: the verifier sees a constant map in each.
        let placed = if cfg.generation & 1 == 0 {
            upsert(&TIMINGS_0, &key, &init, add).placed()
        } else {
            upsert(&TIMINGS_1, &key, &init, add).placed()
        };
        if placed {
            return;
        }
    }
    count_event(EVENT_TIMING_FOLDED);
    if let Some(v) = NODE_TIMINGS.get_ptr_mut(node_timing_slot(kind, bucket)) {
        add(v);
    }
}

/// The samples a connection gives at its close: its lifetime, if it was established while
/// sockscope watched, and its last smoothed RTT (`srtt_ns`, if measured).
#[inline(always)]
pub fn close_timings(cfg: &Config, st: &SockState, srtt_ns: Option<u64>) {
    if st.phase == PHASE_TRACKED && st.since_ns != 0 {
        let now = unsafe { bpf_ktime_get_ns() };
        timing_add(cfg, st, TIMING_LIFETIME, now.saturating_sub(st.since_ns));
    }
    if (st.phase == PHASE_TRACKED || st.phase == PHASE_ADOPTED)
        && let Some(rtt) = srtt_ns
    {
        timing_add(cfg, st, TIMING_RTT, rtt);
    }
}

/// `tcp:tcp_receive_reset` (`tcp_reset()`, net/ipv4/tcp_input.c): a reset arrived for a
/// socket; in SYN_SENT, a refused connect.
#[btf_tracepoint(function = "tcp_receive_reset")]
#[inline(always)]
pub fn sockscope_tcp_reset_in(ctx: BtfTracePointContext) -> i32 {
    try_reset(&ctx, false);
    0
}

/// `tcp:tcp_send_reset` (`tcp_v4_send_reset()`, `tcp_v6_send_reset()`,
/// `tcp_send_active_reset()`): a reset left. The socket is absent (a segment for no socket: a
/// closed port) or not a full socket (a time-wait or request socket) for some; those have no
/// state and are not counted per edge.
#[btf_tracepoint(function = "tcp_send_reset")]
#[inline(always)]
pub fn sockscope_tcp_reset_out(ctx: BtfTracePointContext) -> i32 {
    try_reset(&ctx, true);
    0
}

#[inline(always)]
fn try_reset(ctx: &BtfTracePointContext, sent: bool) {
    let sk: *mut c_void = ctx.arg(0);
    if sk.is_null() {
        return;
    }
    // NULL for sockets without sockscope's state, and for non-full sockets.
    let Some(st) = (unsafe { sock_state(sk, None) }) else {
        return;
    };
    // A closed connection too: an abortive close (SO_LINGER 0) moves to CLOSE before it
    // sends its reset (`tcp_disconnect()`, net/ipv4/tcp.c).
    if st.cgroup_id == 0
        || st.role == 0
        || !(st.phase == PHASE_TRACKED
            || st.phase == PHASE_ADOPTED
            || st.phase == PHASE_CONNECTING
            || st.phase == PHASE_CLOSED)
    {
        return;
    }
    let delta = if sent {
        FlowStats {
            resets_sent: 1,
            ..Default::default()
        }
    } else {
        FlowStats {
            resets_received: 1,
            ..Default::default()
        }
    };
    let cfg = config();
    flow_add(&cfg, &key_of(&cfg, st, PROTO_TCP), &delta);
}

/// `skb:kfree_skb` with the receiving socket (kernels since 6.11 pass it as a fourth argument).
#[btf_tracepoint(function = "kfree_skb")]
#[inline(always)]
pub fn sockscope_drop(ctx: BtfTracePointContext) -> i32 {
    let rx_sk: *mut c_void = ctx.arg(3);
    try_drop(&ctx, rx_sk);
    0
}

/// `skb:kfree_skb` of kernels without the receiving socket argument (5.17 to 6.10); the agent
/// loads this one where [`sockscope_drop`] is refused.
#[btf_tracepoint(function = "kfree_skb")]
#[inline(always)]
pub fn sockscope_drop_v1(ctx: BtfTracePointContext) -> i32 {
    try_drop(&ctx, core::ptr::null_mut());
    0
}

#[inline(always)]
fn try_drop(ctx: &BtfTracePointContext, rx_sk: *mut c_void) {
    let skb: *const u8 = ctx.arg(0);
    if skb.is_null() {
        return;
    }
    // An enum, passed in a 64-bit argument slot.
    let reason = ctx.arg::<u64>(2) as u32;
    // SAFETY: offsets of fields of `struct sk_buff` in the running kernel (`crate::kernel`).
    let (owner_sk, iif): (*mut c_void, i32) =
        unsafe { (field(skb, &SKB_SK), field(skb, &SKB_IIF)) };
    // A packet that came in through an interface was received (forwarded ones too); one this
    // host made was sent.
    let direction = if !rx_sk.is_null() || iif != 0 {
        DROP_RECEIVED
    } else {
        DROP_SENT
    };
    let sk = if rx_sk.is_null() { owner_sk } else { rx_sk };
    let cgroup_id = if sk.is_null() {
        0
    } else {
        // Only sockets sockscope tracks (below its cgroup) have state; others are the node's.
        match unsafe { sock_state(sk, None) } {
            Some(st) => st.cgroup_id,
            None => 0,
        }
    };
    let key = DropKey {
        cgroup_id,
        reason,
        direction,
        _pad: [0; 3],
    };
    let add = |v: *mut u64| {
        // SAFETY: this CPU's slot of a live map value.
        unsafe { add_u64(v, 1) };
    };
    let placed = if config().generation & 1 == 0 {
        upsert(&DROPS_0, &key, &1, add).placed()
    } else {
        upsert(&DROPS_1, &key, &1, add).placed()
    };
    if placed {
        return;
    }
    count_event(EVENT_DROP_MAP_FULL);
    if let Some(v) = NODE_DROPS.get_ptr_mut(node_drop_slot(reason, direction)) {
        add(v);
    }
}
