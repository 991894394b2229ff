//! Flow aggregation: the one place where counts enter the flow maps.

use sockscope_common::{
    CONFIG_PROCESS_LABEL, CONFIG_TCP_ITER, Config, EVENT_CLOSE_FLUSH_LOST, EVENT_FLOW_ALLOC_FAILED,
    EVENT_FLOW_CGROUP_LIMIT, EVENT_FLOW_LOST, EVENT_FLOW_MAP_FULL, EVENT_FLOW_OVERFLOW_FULL,
    FlowKey, FlowStats, OverflowKey, PHASE_ADOPTED, PHASE_CONNECTING, ROLE_CLIENT, ROLE_SERVER,
    SockState, node_flow_slot,
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
        add_u64(addr_of_mut!((*v).resets_sent), delta.resets_sent);
        add_u64(addr_of_mut!((*v).resets_received), delta.resets_received);
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
            Upsert::NoMemory => EVENT_FLOW_ALLOC_FAILED,
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
    if upsert(overflow, &folded, delta, |v| add_stats(v, delta)).placed() {
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

/// Which side of an established connection we are, where the socket does not record who
/// connected: the side whose port the kernel picked from the ephemeral range
/// (net.ipv4.ip_local_port_range) is the client; if both or neither are, the higher port.
#[inline(always)]
pub fn is_client(cfg: &Config, local: u16, remote: u16) -> bool {
    let ephemeral = |p: u16| p >= cfg.ephemeral_low && p <= cfg.ephemeral_high;
    match (ephemeral(local), ephemeral(remote)) {
        (true, false) => true,
        (false, true) => false,
        _ => local > remote,
    }
}

/// Makes `st` the state of a connection adopted now (open before sockscope saw it): its role
/// and service port from its ports ([`is_client`]), its counters `c` as the baseline, nothing
/// pending, no FIN seen. Only what happens from here on counts.
#[inline(always)]
pub fn adopted(cfg: &Config, st: &mut SockState, local: u16, remote: u16, c: &TcpCounters) {
    if is_client(cfg, local, remote) {
        st.role = ROLE_CLIENT;
        st.port = remote;
    } else {
        st.role = ROLE_SERVER;
        st.port = local;
    }
    st.sent_reported = c.bytes_acked;
    st.received_reported = c.bytes_received;
    st.retrans_reported = c.total_retrans as u64;
    st.sent_una = c.snd_una;
    st.pending_open = 0;
    st.fin_out_seen = 0;
    st.fin_in_seen = 0;
    st.phase = PHASE_ADOPTED;
}

/// A TCP socket's own counters, read from `bpf_sock_ops`, `bpf_tcp_sock` or (by the iterator)
/// `struct tcp_sock`.
pub struct TcpCounters {
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub snd_una: u32,
    pub rcv_nxt: u32,
    pub total_retrans: u32,
}

/// Payload totals: the kernel's counters include one sequence number for each FIN
/// (`tcp_snd_una_update()` / `tcp_rcv_nxt_update()` count sequence space, and a FIN occupies one,
/// see net/ipv4/tcp_input.c), so subtract it once the FIN has been acknowledged / consumed.
///
/// Exact only where the counters and the sequence numbers were read together under the socket
/// lock (sock_ops, cgroup_skb egress); see [`live_payload_totals`] for racing reads.
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

/// Payload totals from counters read without the socket lock (the iterator): a lower bound of
/// what [`payload_totals`] gives under the lock, never above it.
///
/// Once a FIN has been seen in a direction (ingress and egress record it from the packet before
/// TCP processes it or the peer can acknowledge it), its sequence number may or may not be in
/// the counter just read, and the sequence number read beside it may be older or newer (TCP
/// writes the counter first, `tcp_rcv_nxt_update()`). Subtracting one whenever a FIN was seen is
/// always safe: the byte, if it was payload, is claimed exactly by the next flush under the lock
/// (at the latest the close). The FIN flags are read after the counters, through a full barrier,
/// so a counter that includes a FIN is never paired with a FIN flag not yet visible.
#[inline(always)]
pub fn live_payload_totals(st: &mut SockState, c: &TcpCounters) -> (u64, u64) {
    fence(st);
    let sent = c.bytes_acked.saturating_sub(st.fin_out_seen as u64);
    let received = c.bytes_received.saturating_sub(st.fin_in_seen as u64);
    (sent, received)
}

/// A full memory barrier: a fully ordered compare-and-exchange that never changes the word
/// (0 -> 0 on the sequence word, which is 0 outside per-packet mode and even when unlocked).
#[inline(always)]
pub fn fence(st: &mut SockState) {
    use core::intrinsics::{AtomicOrdering::SeqCst, atomic_cxchg};
    // SAFETY: an aligned u64 of a live socket-storage value.
    unsafe { atomic_cxchg::<u64, { SeqCst }, { SeqCst }>(&mut st.seq, 0, 0) };
}

/// Moves a `*_reported` word up to `total` and returns how much was moved: whoever moves it owns
/// that delta, so two flushers racing (the iterator and sock_ops' close, which cannot wait for
/// each other: the iterator may be interrupted on the very CPU whose softirq closes the socket)
/// never count a byte twice, and a flusher that loses the race retries from the new value.
#[inline(always)]
pub fn claim(reported: &mut u64, total: u64) -> u64 {
    use core::intrinsics::{AtomicOrdering::SeqCst, atomic_cxchg};
    for _ in 0..4 {
        // SAFETY: an aligned u64 of a live socket-storage value.
        let cur = unsafe { core::ptr::read_volatile(reported) };
        if total <= cur {
            return 0;
        }
        let (_, ok) = unsafe { atomic_cxchg::<u64, { SeqCst }, { SeqCst }>(reported, cur, total) };
        if ok {
            return total - cur;
        }
    }
    0
}

/// Claims the pending "opened" count (1 -> 0).
#[inline(always)]
fn claim_open(st: &mut SockState) -> u64 {
    use core::intrinsics::{AtomicOrdering::SeqCst, atomic_cxchg};
    // SAFETY: as in `claim`.
    let (_, ok) =
        unsafe { atomic_cxchg::<u64, { SeqCst }, { SeqCst }>(&mut st.pending_open, 1, 0) };
    ok as u64
}

/// How a flush may read the socket's counters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Read under the socket lock with the sequence numbers beside them: FIN-exact.
    Locked,
    /// Read by the iterator without the lock: claims a lower bound ([`live_payload_totals`]).
    Live,
}

/// Moves everything the socket has not yet reported into its flow: byte and retransmit deltas
/// since the last flush (if `counters` is given), a pending "opened", and the `events` passed in.
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
    if cfg.flags & CONFIG_TCP_ITER != 0 {
        // Claims alone exclude the iterator; no lock to wait for.
        flush_claimed(cfg, st, counters, Read::Locked, events);
        return;
    }
    // Per-packet mode: exclusive with ingress's ACK accounting (see `ack_ingress`), which
    // updates `sent_reported` and `sent_una` together. Under the socket lock no other flush
    // runs; ingress holds the lock for one map update, so a short wait suffices. Not getting it
    // leaves everything pending for the next flush, except at close, where the flush goes
    // ahead: ingress only counts before our FIN, long before the close.
    let locked = seq_lock(st, if closing { 64 } else { 8 });
    if !locked && !closing {
        return;
    }
    flush_claimed(cfg, st, counters, Read::Locked, events);
    if locked {
        seq_unlock(st);
    }
}

/// The flush itself: claims each delta, then adds what it claimed to the socket's flow.
#[inline(always)]
pub fn flush_claimed(
    cfg: &Config,
    st: &mut SockState,
    counters: Option<&TcpCounters>,
    read: Read,
    events: &FlowStats,
) {
    let mut delta = *events;
    if let Some(c) = counters {
        if st.phase != PHASE_CONNECTING {
            let (sent, received) = match read {
                Read::Locked => payload_totals(st, c),
                Read::Live => live_payload_totals(st, c),
            };
            delta.sent_bytes = claim(&mut st.sent_reported, sent);
            if delta.sent_bytes != 0 {
                st.sent_una = c.snd_una;
            }
            delta.received_bytes = claim(&mut st.received_reported, received);
        }
        delta.retransmits = claim(&mut st.retrans_reported, c.total_retrans as u64);
    }
    delta.opened = claim_open(st);
    if delta.is_zero() {
        return;
    }
    let key = key_of(cfg, st, sockscope_common::PROTO_TCP);
    // Cannot fail (the node-wide slot is an array element); counted as flow_lost if it did.
    flow_add(cfg, &key, &delta);
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

/// Per-packet mode: counts the bytes an incoming ACK acknowledges, before TCP processes it.
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
        let total = st.sent_reported.wrapping_add(d as u64);
        let sent = claim(&mut st.sent_reported, total);
        if sent != 0 {
            let delta = FlowStats {
                sent_bytes: sent,
                ..Default::default()
            };
            let key = key_of(cfg, st, sockscope_common::PROTO_TCP);
            flow_add(cfg, &key, &delta);
            st.sent_una = ack;
        }
    }
    seq_unlock(st);
}
