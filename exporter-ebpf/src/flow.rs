//! Flow aggregation: the one place where counts enter the flow maps.

use sockscope_common::{
    CONFIG_PROCESS_LABEL, Config, EVENT_CLOSE_FLUSH_LOST, EVENT_FLOW_CGROUP_LIMIT, EVENT_FLOW_LOST,
    EVENT_FLOW_MAP_FULL, EVENT_FLOW_OVERFLOW_FULL, FlowKey, FlowStats, OverflowKey,
    PHASE_CONNECTING, SockState, node_flow_slot,
};

use core::ptr::addr_of_mut;

use aya_ebpf::maps::{HashMap, PerCpuHashMap};

use crate::maps::{
    FLOW_OVERFLOW_0, FLOW_OVERFLOW_1, FLOW_ROOM_0, FLOW_ROOM_1, FLOWS_0, FLOWS_1, NODE_FLOWS,
    Upsert, add_u64, count_event, room_left, room_take, upsert,
};

/// Adds `delta` to the flow `key` in the maps of the current generation: the flow map if the
/// flow is there or fits (and its cgroup has room left), else the cgroup's overflow entry,
/// else the node-wide entry. A delta is never dropped: returns false only if even the
/// node-wide array slot could not be had, which cannot happen.
#[inline(always)]
pub fn flow_add(cfg: &Config, key: &FlowKey, delta: &FlowStats) -> bool {
    // Both generations get their own call sites so the verifier sees a constant map per call.
    if cfg.generation & 1 == 0 {
        add_into(&FLOWS_0, &FLOW_ROOM_0, &FLOW_OVERFLOW_0, cfg, key, delta)
    } else {
        add_into(&FLOWS_1, &FLOW_ROOM_1, &FLOW_OVERFLOW_1, cfg, key, delta)
    }
}

/// Adds every counter of `delta` into a map value.
#[inline(always)]
fn add_stats(v: *mut FlowStats, delta: &FlowStats) {
    // SAFETY: `v` is this CPU's slot of a live map value.
    unsafe {
        add_u64(addr_of_mut!((*v).sent_bytes), delta.sent_bytes);
        add_u64(addr_of_mut!((*v).received_bytes), delta.received_bytes);
        add_u64(addr_of_mut!((*v).opened), delta.opened);
        add_u64(addr_of_mut!((*v).closed), delta.closed);
        add_u64(addr_of_mut!((*v).connect_failures), delta.connect_failures);
        add_u64(addr_of_mut!((*v).retransmits), delta.retransmits);
    }
}

#[inline(always)]
fn add_into(
    flows: &PerCpuHashMap<FlowKey, FlowStats>,
    room: &HashMap<u64, u64>,
    overflow: &PerCpuHashMap<OverflowKey, FlowStats>,
    cfg: &Config,
    key: &FlowKey,
    delta: &FlowStats,
) -> bool {
    // The common case: the flow is already in this interval's map.
    if let Some(v) = flows.get_ptr_mut(key) {
        add_stats(v, delta);
        return true;
    }
    let reason = if room_left(room, key.cgroup_id, cfg.max_flows_per_cgroup) {
        match upsert(flows, key, delta, |v| add_stats(v, delta)) {
            Upsert::Created => {
                room_take(room, key.cgroup_id);
                return true;
            }
            Upsert::Added => return true,
            Upsert::Full => EVENT_FLOW_MAP_FULL,
        }
    } else {
        EVENT_FLOW_CGROUP_LIMIT
    };
    count_event(reason);
    let folded = OverflowKey {
        cgroup_id: key.cgroup_id,
        comm: key.comm,
        role: key.role,
        proto: key.proto,
        _pad: [0; 6],
    };
    if upsert(overflow, &folded, delta, |v| add_stats(v, delta)) != Upsert::Full {
        return true;
    }
    count_event(EVENT_FLOW_OVERFLOW_FULL);
    match NODE_FLOWS.get_ptr_mut(node_flow_slot(key.proto, key.role)) {
        Some(v) => {
            add_stats(v, delta);
            true
        }
        None => {
            count_event(EVENT_FLOW_LOST);
            false
        }
    }
}

/// The flow key of a socket's state.
#[inline(always)]
pub fn key_of(cfg: &Config, st: &SockState, proto: u8) -> FlowKey {
    let comm = if cfg.flags & CONFIG_PROCESS_LABEL != 0 {
        st.comm
    } else {
        [0; 16]
    };
    FlowKey {
        cgroup_id: st.cgroup_id,
        remote_addr: st.remote_addr,
        comm,
        port: st.port,
        role: st.role,
        proto,
        _pad: 0,
    }
}

/// A TCP socket's own counters, read from `bpf_sock_ops` or `bpf_tcp_sock`.
pub struct TcpCounters {
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub snd_una: u32,
    pub rcv_nxt: u32,
}

/// Payload totals: the kernel's counters include one sequence number for each FIN
/// (`tcp_snd_una_update()` / `tcp_rcv_nxt_update()` count sequence space, and a FIN occupies one,
/// see net/ipv4/tcp_input.c), so subtract it once the FIN has been acknowledged / consumed.
#[inline(always)]
pub fn payload_totals(st: &SockState, c: &TcpCounters) -> (u64, u64) {
    let mut sent = c.bytes_acked;
    if st.fin_out_seen != 0 && (c.snd_una.wrapping_sub(st.fin_out_end) as i32) >= 0 {
        sent = sent.saturating_sub(1);
    }
    let mut received = c.bytes_received;
    if st.fin_in_seen != 0 && (c.rcv_nxt.wrapping_sub(st.fin_in_end) as i32) >= 0 {
        received = received.saturating_sub(1);
    }
    (sent, received)
}

/// Moves everything the socket has not yet reported into its flow: byte deltas since the last
/// flush (if `counters` is given), a pending "opened", and the `events` passed in.
///
/// A flow that does not fit the flow map lands in its cgroup's overflow entry (see
/// [`flow_add`]), at close as at any other flush, so nothing is left pending for lack of room.
#[inline(always)]
pub fn flush_tcp(
    cfg: &Config,
    st: &mut SockState,
    counters: Option<&TcpCounters>,
    events: &FlowStats,
    closing: bool,
) {
    if st.cgroup_id == 0 {
        // Owner not known yet (no packet seen); keep everything pending.
        if closing {
            count_event(EVENT_CLOSE_FLUSH_LOST);
        }
        return;
    }
    // Exclusive with ingress's ACK accounting (see `ack_ingress`). Under the socket lock no
    // other flush runs; ingress holds the lock for one map update, so a short wait suffices.
    // Not getting it leaves everything pending for the next flush, except at close, where the
    // flush goes ahead: ingress only counts before our FIN, long before the close.
    let locked = seq_lock(st, if closing { 64 } else { 8 });
    if !locked && !closing {
        return;
    }
    flush_locked(cfg, st, counters, events);
    if locked {
        seq_unlock(st);
    }
}

#[inline(always)]
fn flush_locked(
    cfg: &Config,
    st: &mut SockState,
    counters: Option<&TcpCounters>,
    events: &FlowStats,
) {
    let mut delta = *events;
    let mut totals = (st.sent_reported, st.received_reported);
    if let Some(c) = counters
        && st.phase != PHASE_CONNECTING
    {
        totals = payload_totals(st, c);
        delta.sent_bytes = totals.0.saturating_sub(st.sent_reported);
        delta.received_bytes = totals.1.saturating_sub(st.received_reported);
    }
    delta.opened = st.open_pending as u64;
    if delta.is_zero() {
        return;
    }
    let key = key_of(cfg, st, sockscope_common::PROTO_TCP);
    if flow_add(cfg, &key, &delta) {
        if totals.0 > st.sent_reported {
            st.sent_reported = totals.0;
            if let Some(c) = counters {
                st.sent_una = c.snd_una;
            }
        }
        if totals.1 > st.received_reported {
            st.received_reported = totals.1;
        }
        st.open_pending = 0;
    }
}

/// Takes the socket state's sequence lock (even -> odd), checking up to `tries` times.
#[inline(always)]
pub fn seq_lock(st: &mut SockState, tries: u32) -> bool {
    use core::intrinsics::{AtomicOrdering::SeqCst, atomic_cxchg};
    for _ in 0..tries {
        // SAFETY: an aligned u64 of a live socket-storage value.
        let cur = unsafe { core::ptr::read_volatile(&st.seq) };
        if cur & 1 == 0 {
            let (_, ok) = unsafe {
                atomic_cxchg::<u64, { SeqCst }, { SeqCst }>(&mut st.seq, cur, cur.wrapping_add(1))
            };
            if ok {
                return true;
            }
        }
    }
    false
}

/// Releases the sequence lock (odd -> even), publishing the fields written under it.
#[inline(always)]
pub fn seq_unlock(st: &mut SockState) {
    use core::intrinsics::{AtomicOrdering::SeqCst, atomic_xadd};
    // SAFETY: as in seq_lock; a full-barrier add makes the writes visible first.
    unsafe { atomic_xadd::<u64, u64, { SeqCst }>(&mut st.seq, 1) };
}

/// Whether `ack` acknowledges bytes not counted yet. Read without the lock, so only a hint:
/// most ACKs were already counted (by the RTT callback or an earlier ACK), and those skip the
/// helper call and config read [`ack_ingress`] needs.
#[inline(always)]
pub fn acks_new_bytes(st: &SockState, ack: u32) -> bool {
    (ack.wrapping_sub(st.sent_una) as i32) > 0
}

/// Counts the bytes an incoming ACK acknowledges, before TCP processes it.
///
/// The sender's own counter (`bytes_acked`) is flushed by the RTT callback, which fires once
/// per RTT window, not per ACK (`tcp_rtt_estimator()`, net/ipv4/tcp_input.c): the ACKs after
/// its last callback would wait for the sender's next packet. So ingress maps the ACK number to
/// a total through the last flush's {`sent_reported`, `sent_una`} and counts up to it. Only
/// established connections before our FIN (the FIN's sequence number is not payload), only
/// ACKs inside what was sent (the kernel ignores others). Whoever moves `sent_reported` counts
/// the difference, under the sequence lock, so no byte is counted twice; a later flush from
/// the kernel's counters finds nothing new.
#[inline(always)]
pub fn ack_ingress(cfg: &Config, st: &mut SockState, ack: u32, snd_nxt: u32) {
    if (ack.wrapping_sub(snd_nxt) as i32) > 0 || st.cgroup_id == 0 {
        return;
    }
    if !seq_lock(st, 1) {
        return;
    }
    let d = ack.wrapping_sub(st.sent_una) as i32;
    if d > 0 {
        let delta = FlowStats {
            sent_bytes: d as u64,
            ..Default::default()
        };
        let key = key_of(cfg, st, sockscope_common::PROTO_TCP);
        if flow_add(cfg, &key, &delta) {
            st.sent_reported = st.sent_reported.wrapping_add(d as u64);
            st.sent_una = ack;
        }
    }
    seq_unlock(st);
}
