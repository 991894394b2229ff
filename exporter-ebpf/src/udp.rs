//! UDP bytes, batched per socket: a datagram to or from the peer a socket last talked to is
//! added to two counters in the socket's own state, and the batch reaches the flow maps only
//! when the peer changes, at each drain (the iterator, [`flush_live`]) and when the socket is
//! released ([`sockscope_sock_release`]). A flow-map update per datagram (a per-CPU hash lookup
//! of a 48-byte key) was the larger part of UDP's per-packet cost; a client, a server answering
//! one client (its flow is keyed by its own port, not the client's) and a connected socket all
//! hit the batch. A socket that talks to a new peer with every datagram flushes with every one,
//! which costs what the direct update did.
//!
//! The batch is the peer {`remote_addr`, `port`} with `udp_sent`/`udp_received`, guarded by the
//! `seq` word: `UDP_BATCH_HELD` while a program updates it or takes it out, a few instructions
//! with no helper call; `UDP_BATCH_RELEASED` once the socket is released. The flow-map update
//! of what was taken out happens after the batch is given back. A packet that finds the batch
//! held (by another CPU, or by the program its softirq interrupted) or released adds its bytes to
//! the flow maps directly, and the iterator retries at the next drain: neither ever waits. Only
//! the release waits for a holder, and only for those few instructions. Every byte is thus
//! counted exactly once, in the flow of its own peer.
//!
//! Only sockets whose release runs a program batch ([`PHASE_UDP_SOCKET`]); without
//! [`CONFIG_UDP_BATCH`] (no iterator, or the release program not attached) every datagram goes
//! to the flow maps directly, as in per-packet mode.

use core::intrinsics::{AtomicOrdering::SeqCst, atomic_cxchg};

use aya_ebpf::{
    macros::cgroup_sock,
    programs::{SkBuffContext, SockContext},
};
use sockscope_common::{
    CONFIG_UDP_BATCH, Config, EVENT_CLOSE_FLUSH_LOST, FlowKey, FlowStats, PHASE_NEW,
    PHASE_UDP_SOCKET, PROTO_UDP, ROLE_CLIENT, SockState, UDP_BATCH_FREE, UDP_BATCH_HELD,
    UDP_BATCH_RELEASED, counted_proto,
};

use crate::{
    flow::{flow_add, key_of},
    maps::{config, count_event, sock_state},
    packet::udp_linear,
};

/// The hot path: a datagram to or from the batch's own peer, read by [`udp_linear`], added to
/// the batch without building its flow key; returns its remote port and the offset of its UDP
/// header (a DNS client's datagram is then parsed as DNS). `None`, with nothing counted, for
/// anything else: no batching, another peer, the batch taken, no payload, headers that need
/// the full parse; [`count`] then handles it.
#[inline(always)]
pub fn count_fast(
    ctx: &SkBuffContext,
    cfg: &Config,
    st: &mut SockState,
    egress: bool,
) -> Option<(u16, u32)> {
    if cfg.flags & CONFIG_UDP_BATCH == 0 || st.phase != PHASE_UDP_SOCKET {
        return None;
    }
    let p = udp_linear(ctx, egress)?;
    let port = if st.role == ROLE_CLIENT {
        p.remote_port
    } else {
        p.local_port
    };
    if p.payload == 0 || port != st.port {
        return None;
    }
    // SAFETY: `remote_addr` is 16 bytes at a 4-aligned offset of the state (after a u64).
    let stored = unsafe { core::ptr::read(core::ptr::addr_of!(st.remote_addr).cast::<[u32; 4]>()) };
    if stored != p.remote || !try_lock(st) {
        return None;
    }
    // The peer again under the lock: a switch may have happened since it was read.
    let stored = unsafe { core::ptr::read(core::ptr::addr_of!(st.remote_addr).cast::<[u32; 4]>()) };
    let same = stored == p.remote && st.port == port;
    if same {
        if egress {
            st.udp_sent += p.payload as u64;
        } else {
            st.udp_received += p.payload as u64;
        }
    }
    unlock(st);
    same.then_some((p.remote_port, p.l4_offset))
}

/// Counts one datagram's payload (`delta`, to or from the peer in `key`) for socket `st`.
///
/// One flow-map update at most, at one call site: cgroup_skb's stack (512 bytes, with the DNS
/// parser beside this) has no room for a second inlined copy.
#[inline(always)]
pub fn count(cfg: &Config, st: &mut SockState, key: &FlowKey, delta: &FlowStats) {
    let mut out_key = *key;
    let mut out = *delta;
    if cfg.flags & CONFIG_UDP_BATCH != 0 && st.phase == PHASE_UDP_SOCKET && try_lock(st) {
        let empty = st.udp_sent == 0 && st.udp_received == 0;
        if !empty && (st.remote_addr != key.remote_addr || st.port != key.port) {
            // A new peer: the batch so far goes to the old one's flow (the rest of the key,
            // owner and role, is the socket's, the same for both).
            out_key.remote_addr = st.remote_addr;
            out_key.port = st.port;
            out = take(st);
        } else {
            out = FlowStats::default();
        }
        st.remote_addr = key.remote_addr;
        st.port = key.port;
        st.udp_sent += delta.sent_bytes;
        st.udp_received += delta.received_bytes;
        unlock(st);
    }
    if !out.is_zero() {
        flow_add(cfg, &out_key, &out);
    }
}

/// The iterator's visit of a UDP socket: it is a process's socket, so its release runs
/// sock_release and it may batch from now on (a socket open before sockscope, whose state
/// cgroup_skb created); its batch so far goes to its flow. A socket the iterator visits cannot
/// be released meanwhile: the walk holds a reference to its file (`task_file_seq_get_next()`,
/// kernel/bpf/task_iter.c).
#[inline(always)]
pub fn flush_live(cfg: &Config, st: &mut SockState) {
    if st.phase == PHASE_NEW {
        st.phase = PHASE_UDP_SOCKET;
    }
    if st.phase != PHASE_UDP_SOCKET || (st.udp_sent == 0 && st.udp_received == 0) {
        return;
    }
    // Held by a packet right now: that batch waits for the next drain (or the release).
    if try_lock(st) {
        // The key under the batch's lock: once given back, a packet may switch its peer.
        let key = key_of(cfg, st, PROTO_UDP);
        let out = take(st);
        unlock(st);
        flow_add(cfg, &key, &out);
    }
}

/// cgroup/sock_release (`inet_release()`, net/ipv4/af_inet.c, for every socket a process
/// made): the socket's last batch. Runs before the socket is unhashed, so a datagram may still
/// reach cgroup_skb on another CPU; it finds the batch released and counts directly.
#[cgroup_sock(sock_release)]
#[inline(always)]
pub fn sockscope_sock_release(ctx: SockContext) -> i32 {
    try_release(&ctx);
    // Always allow (1 is "allow"; the kernel ignores what a release program returns).
    1
}

/// How often the release checks a held batch before giving up: the holder is a cgroup_skb
/// ingress on another CPU (egress and the iterator hold the socket's file, so they cannot
/// overlap its release) inside a few instructions.
const RELEASE_TRIES: u32 = 1024;

#[inline(always)]
fn try_release(ctx: &SockContext) {
    let sk = ctx.sock;
    let (kind, protocol) = unsafe { ((*sk).type_, (*sk).protocol) };
    if counted_proto(kind, protocol) != Some(PROTO_UDP) {
        return;
    }
    let Some(st) = (unsafe { sock_state(sk.cast(), None) }) else {
        return;
    };
    // Released whatever the phase: nothing may batch after this.
    for _ in 0..RELEASE_TRIES {
        // SAFETY: an aligned u64 of a live socket-storage value.
        let (cur, ok) = unsafe {
            atomic_cxchg::<u64, { SeqCst }, { SeqCst }>(
                &mut st.seq,
                UDP_BATCH_FREE,
                UDP_BATCH_RELEASED,
            )
        };
        if ok {
            // Ours for good: no one takes a released batch.
            let out = take(st);
            if !out.is_zero() {
                let cfg = config();
                flow_add(&cfg, &key_of(&cfg, st, PROTO_UDP), &out);
            }
            return;
        }
        if cur & UDP_BATCH_RELEASED != 0 {
            return;
        }
    }
    // A holder that did not let go (preempted, on a kernel whose softirqs can be): its batch
    // is not counted.
    count_event(EVENT_CLOSE_FLUSH_LOST);
}

/// Takes the batch (free -> held).
#[inline(always)]
fn try_lock(st: &mut SockState) -> bool {
    // SAFETY: an aligned u64 of a live socket-storage value.
    let (_, ok) = unsafe {
        atomic_cxchg::<u64, { SeqCst }, { SeqCst }>(&mut st.seq, UDP_BATCH_FREE, UDP_BATCH_HELD)
    };
    ok
}

/// Gives the batch back (held -> free), publishing what was written under it.
#[inline(always)]
fn unlock(st: &mut SockState) {
    // SAFETY: as in `try_lock`. Only the holder changes a held word (the release waits), so
    // this cannot fail.
    unsafe {
        atomic_cxchg::<u64, { SeqCst }, { SeqCst }>(&mut st.seq, UDP_BATCH_HELD, UDP_BATCH_FREE)
    };
}

/// Takes the batch's counts out, leaving it empty. The caller holds the batch.
#[inline(always)]
fn take(st: &mut SockState) -> FlowStats {
    let out = FlowStats {
        sent_bytes: st.udp_sent,
        received_bytes: st.udp_received,
        ..Default::default()
    };
    st.udp_sent = 0;
    st.udp_received = 0;
    out
}
