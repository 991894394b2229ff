//! cgroup_skb ingress/egress: per-packet work.
//!
//! TCP, iterator mode (the default where the kernel has BPF iterators): bytes are counted by the
//! iterator at each drain and at close (`crate::iter`), so a TCP packet costs one look at its
//! headers and its socket's state, with no helper call and no map lookup, unless it is a FIN
//! (see [`tcp_without_fin`]). A FIN's sequence number must not be counted as a payload byte, so
//! FINs are remembered in the socket's state before TCP processes them (ingress) or the peer
//! can acknowledge them (egress).
//!
//! TCP, per-packet mode (no iterator): egress flushes the socket's counter deltas (the
//! receiver's `bytes_received` has moved by the time it sends its ACK; ingress runs in
//! `tcp_filter()` before the segment is processed, so it could not see the effect of the packet
//! it inspects), and ingress counts what each ACK acknowledges. Established sockets without
//! state (open before sockscope started, or sock_ops unavailable) are adopted on their first
//! packet, with their current counters as baseline, so only bytes from that moment on count.
//!
//! UDP: every datagram's payload is added to its flow, through the socket's batch where it has
//! one ([`crate::udp`]); datagrams to or from port 53 are also parsed as DNS ([`crate::dns`]).

use aya_ebpf::{
    bindings::{
        BPF_TCP_CLOSE_WAIT, BPF_TCP_CLOSING, BPF_TCP_ESTABLISHED, BPF_TCP_FIN_WAIT1,
        BPF_TCP_FIN_WAIT2, BPF_TCP_LAST_ACK, bpf_sock, bpf_tcp_sock,
    },
    helpers::generated::{bpf_sk_fullsock, bpf_skb_cgroup_id, bpf_tcp_sock},
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use sockscope_common::{
    CONFIG_TCP_ITER, CONFIG_TEST_RUN, Config, EVENT_DNS_TCP_FRAMING_LOST, EVENT_PACKET_UNPARSED,
    FlowKey, FlowStats, PHASE_ADOPTED, PHASE_NEW, PHASE_TRACKED, PROTO_TCP, PROTO_UDP, ROLE_CLIENT,
    ROLE_SERVER, SockState, counted_proto,
    dns::{DNS_CB_HALF, DNS_CB_TCP, DNS_HALF, DNS_LOST, DNS_PORT, DNS_SYNC},
    health::TIMING_RTT,
};

use crate::{
    flow::{TcpCounters, ack_ingress, acks_new_bytes, adopted, fence, flush_tcp, key_of},
    health::timing_add,
    maps::{
        DNS_PROGRAMS_EGRESS, DNS_PROGRAMS_INGRESS, config, config_flags, count_event, sock_state,
    },
    packet::{
        TCP_ACK, TCP_FIN, fin_end, fin_end_of, ip_headers, ports, read, tcp_flags, tcp_offset,
    },
    udp,
};

// `#[inline(always)]` on every entry point: the macro wraps it in the real entry function, and
// without it each packet paid a BPF-to-BPF call and a second stack frame on top of a fast path
// of a few dozen instructions.
#[cgroup_skb(ingress)]
#[inline(always)]
pub fn sockscope_ingress(ctx: SkBuffContext) -> i32 {
    try_skb(&ctx, false);
    // Always allow: 0 drops the packet.
    1
}

#[cgroup_skb(egress)]
#[inline(always)]
pub fn sockscope_egress(ctx: SkBuffContext) -> i32 {
    try_skb(&ctx, true);
    // Always allow: 0 drops the packet.
    1
}

#[inline(always)]
fn try_skb(ctx: &SkBuffContext, egress: bool) {
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return;
    }
    // The fast path reads only the mode bit: copying all the settings costs more than the
    // rest of its work.
    if config_flags() & CONFIG_TCP_ITER != 0 && tcp_without_fin(ctx, sk, egress) {
        return;
    }
    // One read of the settings per packet, passed down.
    let cfg = config();
    let sk = unsafe { bpf_sk_fullsock(sk) };
    if sk.is_null() {
        return;
    }
    let (kind, protocol) = unsafe { ((*sk).type_, (*sk).protocol) };
    let proto = if let Some(p) = counted_proto(kind, protocol) {
        p
    } else if kind == 0 && protocol == 0 && cfg.flags & CONFIG_TEST_RUN != 0 {
        // BPF_PROG_TEST_RUN's dummy socket (net/bpf/test_run.c, `bpf_prog_test_run_skb()`):
        // only tests set this flag, to run crafted packets through the real parsers.
        match ip_headers(ctx) {
            Some(h) => h.proto,
            None => {
                count_event(EVENT_PACKET_UNPARSED);
                return;
            }
        }
    } else {
        return;
    };
    let dns = if proto == PROTO_TCP {
        tcp_packet(ctx, &cfg, sk, egress)
    } else if proto == PROTO_UDP {
        udp_packet(ctx, &cfg, sk, egress)
    } else {
        DnsMessages::NONE
    };
    if dns.count != 0 {
        // The DNS parser runs as its own program, tail-called: each is then verified on its
        // own (together they exceed the verifier's 1M-instruction budget). If the call fails
        // (the DNS program did not load), the packet is counted without its DNS.
        let cb = unsafe { &mut (*ctx.skb.skb).cb };
        cb[0] = dns.flags;
        cb[1] = dns.first;
        cb[2] = dns.first_end;
        cb[3] = dns.cgroup_id as u32;
        cb[4] = (dns.cgroup_id >> 32) as u32;
        let progs = if egress {
            &DNS_PROGRAMS_EGRESS
        } else {
            &DNS_PROGRAMS_INGRESS
        };
        // SAFETY: the packet's context, as the program got it.
        unsafe { progs.tail_call(ctx, 0) };
        // Only reached if the call failed.
        if dns.flags & DNS_CB_TCP != 0 {
            // The DNS program is not there (its load failure is reported): this connection's
            // framing cannot follow the messages, so stop rather than count a loss each time.
            if let Some(st) = unsafe { sock_state(sk.cast(), None) } {
                if egress {
                    st.dns_out_flags |= DNS_LOST;
                } else {
                    st.dns_in_flags |= DNS_LOST;
                }
            }
        }
    }
}

/// The DNS in this packet, for the DNS program (`crate::dns::dns_messages`), which reads it
/// from the packet's control buffer (`__sk_buff.cb`, which cgroup_skb programs may write: the
/// kernel saves and restores it around them, `__bpf_prog_run_save_cb()` in
/// include/linux/filter.h): per packet, so nothing shared between CPUs or nested programs.
#[derive(Clone, Copy)]
struct DnsMessages {
    /// Owner of the socket.
    cgroup_id: u64,
    /// 1 if there is a message to parse: a UDP datagram, or a TCP segment in which a message
    /// begins (the DNS program finds the ones after it).
    count: u32,
    /// UDP: offset of the message's header. TCP: offset of the first message's 2-byte length.
    first: u32,
    /// UDP: where the message ends. TCP: the sequence number of offset 0 of this packet,
    /// where the DNS program keeps where the next message begins.
    first_end: u32,
    /// [`DNS_CB_TCP`] over TCP.
    flags: u32,
}

impl DnsMessages {
    const NONE: DnsMessages = DnsMessages {
        cgroup_id: 0,
        count: 0,
        first: 0,
        first_end: 0,
        flags: 0,
    };
}

/// DNS over TCP on a client's connection to port 53 (RFC 7766: each message led by its 2-byte
/// length): whether a message begins in this segment, and where. sock_ops sets
/// `dns_out`/`dns_in` to where each direction's data begins when the connection is established
/// (the DNS program then moves them on); a connection open before sockscope is not parsed, as
/// its first segment seen may begin mid-message. Retransmitted data, before that point, begins nothing.
/// A length split across two segments is put together from the byte the DNS program kept.
/// Where the thread is lost (a segment beyond a gap in the data; see `crate::dns` for the
/// rest) nothing more of that direction is parsed, rather than misparsed, and that is counted.
#[inline(always)]
fn tcp_dns(ctx: &SkBuffContext, st: &mut SockState, egress: bool) -> DnsMessages {
    let mut out = DnsMessages {
        cgroup_id: st.cgroup_id,
        flags: DNS_CB_TCP,
        ..DnsMessages::NONE
    };
    // Each direction writes only its own byte: ingress runs without the socket lock.
    let flags = if egress {
        st.dns_out_flags
    } else {
        st.dns_in_flags
    };
    if flags & DNS_SYNC == 0 || flags & DNS_LOST != 0 {
        // Not followed from the connection's start (open before sockscope), or lost.
        return out;
    }
    let Some(l4) = tcp_offset(ctx) else {
        return out;
    };
    let Some(t) = read::<[u8; 14]>(ctx, l4 as usize) else {
        return out;
    };
    let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
    let data = l4 + u32::from(t[12] >> 4) * 4;
    let len = ctx.skb.len();
    if data >= len {
        // No payload: a handshake segment, a bare ACK or FIN.
        return out;
    }
    let at = if egress { st.dns_out } else { st.dns_in };
    let d = at.wrapping_sub(seq);
    out.first_end = seq.wrapping_sub(data);
    if (d as i32) < 0 {
        if d == u32::MAX && flags & DNS_HALF != 0 {
            // The last segment ended one byte into the next message's length (the DNS program
            // clears the flag once it has used the byte).
            let byte = if egress {
                st.dns_half_out
            } else {
                st.dns_half_in
            };
            out.count = 1;
            out.first = data;
            out.flags = DNS_CB_TCP | DNS_CB_HALF | u32::from(byte) << 8;
            return out;
        }
        // The next message began before this segment, in data never seen: a gap (ingress
        // sees segments out of order, before they are queued).
        if egress {
            st.dns_out_flags |= DNS_LOST;
        } else {
            st.dns_in_flags |= DNS_LOST;
        }
        count_event(EVENT_DNS_TCP_FRAMING_LOST);
        return out;
    }
    if d >= len - data {
        // It begins in a later segment (or this one is a retransmission).
        return out;
    }
    out.count = 1;
    out.first = data + d;
    out
}

/// Iterator mode: whether this is a TCP segment that cannot carry a FIN, told from the packet's
/// headers (direct packet access) and the socket's state (`struct sock_common`, so no
/// `bpf_sk_fullsock()` call), before anything else is looked up. Everything else takes the full
/// path, where the socket's type is checked: a TCP packet of a raw socket lands here too, and is
/// skipped, as the full path would.
///
/// Egress: we send a FIN only after close() or shutdown() moved the state to FIN_WAIT1 or
/// LAST_ACK (`tcp_close_state()` runs before `tcp_send_fin()`, net/ipv4/tcp.c), and retransmit
/// it from those states or CLOSING. Ingress: a FIN may arrive in any state, so its flag is read.
#[inline(always)]
fn tcp_without_fin(ctx: &SkBuffContext, sk: *mut bpf_sock, egress: bool) -> bool {
    // A DNS client's connection (to port 53) takes the full path: its messages are parsed.
    // `dst_port` is in network order in its 16 bits (`bpf_sock`, include/uapi/linux/bpf.h).
    if u16::from_be(unsafe { (*sk).dst_port }) == DNS_PORT {
        return false;
    }
    if egress {
        let state = unsafe { (*sk).state };
        if state == BPF_TCP_FIN_WAIT1 || state == BPF_TCP_LAST_ACK || state == BPF_TCP_CLOSING {
            return false;
        }
        return tcp_offset(ctx).is_some();
    }
    match tcp_offset(ctx).and_then(|l4| tcp_flags(ctx, l4)) {
        Some(flags) => flags & TCP_FIN == 0,
        None => false,
    }
}

#[inline(always)]
fn cgroup_id(ctx: &SkBuffContext) -> u64 {
    unsafe { bpf_skb_cgroup_id(ctx.skb.skb) }
}

/// The socket's state; created (owner cgroup filled in) on its first packet.
#[inline(always)]
fn state_of(ctx: &SkBuffContext, sk: *mut bpf_sock) -> Option<&'static mut SockState> {
    // Plain lookup first: the common case, and it avoids building the initial value.
    if let Some(st) = unsafe { sock_state(sk.cast(), None) } {
        if st.cgroup_id == 0 {
            // Created by sock_create or sock_ops, which do not know the owner cgroup.
            st.cgroup_id = cgroup_id(ctx);
        }
        return Some(st);
    }
    let mut init = SockState {
        cgroup_id: cgroup_id(ctx),
        ..Default::default()
    };
    unsafe { sock_state(sk.cast(), Some(&mut init)) }
}

/// Whether a TCP socket in state `st` is a DNS client's (to port 53): its segments are also
/// parsed as DNS.
#[inline(always)]
fn dns_client(st: &SockState) -> bool {
    st.role == ROLE_CLIENT
        && st.port == DNS_PORT
        && (st.phase == PHASE_TRACKED || st.phase == PHASE_ADOPTED)
}

#[inline(always)]
fn tcp_packet(ctx: &SkBuffContext, cfg: &Config, sk: *mut bpf_sock, egress: bool) -> DnsMessages {
    let none = DnsMessages::NONE;
    if cfg.flags & CONFIG_TCP_ITER != 0 {
        // Only possible FINs and DNS clients' segments get here (see `tcp_without_fin`). A
        // socket without state was open before sockscope: the iterator adopts it, with the FIN
        // in its baseline if it came first.
        let Some(st) = (unsafe { sock_state(sk.cast(), None) }) else {
            return none;
        };
        if egress {
            record_fin_out(ctx, st);
        } else {
            tcp_ingress(ctx, cfg, sk, st, false);
        }
        return if dns_client(st) {
            tcp_dns(ctx, st, egress)
        } else {
            none
        };
    }
    let Some(st) = state_of(ctx, sk) else {
        return none;
    };
    if st.phase == PHASE_NEW {
        // Adopt on the first packet either way: ingress runs before the segment is
        // processed, so its baseline excludes this packet's payload, which is then counted.
        adopt(ctx, cfg, sk, st, unsafe { (*sk).state }, egress);
    }
    if st.phase != PHASE_TRACKED && st.phase != PHASE_ADOPTED {
        return none;
    }
    let dns = if dns_client(st) {
        tcp_dns(ctx, st, egress)
    } else {
        none
    };
    if !egress {
        tcp_ingress(ctx, cfg, sk, st, true);
        return dns;
    }
    // We only send a FIN after leaving ESTABLISHED (tcp_close_state() runs before
    // tcp_send_fin()), so established egress skips the header read.
    if unsafe { (*sk).state } != BPF_TCP_ESTABLISHED {
        record_fin_out(ctx, st);
    }
    let tp = unsafe { bpf_tcp_sock(sk) };
    if tp.is_null() {
        return dns;
    }
    let tp = unsafe { &*tp };
    // The connection's RTT, once per drain interval while it sends (`srtt_us` is microseconds
    // << 3; 0 before the first measurement).
    if st.rtt_epoch != cfg.epoch && tp.srtt_us != 0 {
        st.rtt_epoch = cfg.epoch;
        timing_add(cfg, st, TIMING_RTT, u64::from(tp.srtt_us >> 3) * 1000);
    }
    let c = counters_of(tp);
    // Skip the flow update when nothing moved since the last flush (most data segments of a
    // sender, whose acks are counted on ingress and by sock_ops).
    if c.bytes_acked == st.sent_reported
        && c.bytes_received == st.received_reported
        && c.total_retrans as u64 == st.retrans_reported
        && st.pending_open == 0
    {
        return dns;
    }
    flush_tcp(cfg, st, Some(&c), &FlowStats::default(), false);
    dns
}

/// The counters `bpf_tcp_sock()` gives.
#[inline(always)]
fn counters_of(tp: &bpf_tcp_sock) -> TcpCounters {
    TcpCounters {
        bytes_acked: tp.bytes_acked,
        bytes_received: tp.bytes_received,
        snd_una: tp.snd_una,
        rcv_nxt: tp.rcv_nxt,
        total_retrans: tp.total_retrans,
    }
}

/// An incoming segment, with one read of its TCP header: a FIN from the peer is remembered
/// before TCP processes it, and so before `bytes_received` counts its sequence number (a FIN
/// arrives while we are still ESTABLISHED, so every segment is looked at). In per-packet mode
/// (`count_acks`) what its ACK acknowledges is also counted (see [`ack_ingress`]).
#[inline(always)]
fn tcp_ingress(
    ctx: &SkBuffContext,
    cfg: &Config,
    sk: *mut bpf_sock,
    st: &mut SockState,
    count_acks: bool,
) {
    let Some(h) = ip_headers(ctx) else { return };
    if h.proto != PROTO_TCP {
        return;
    }
    let Some(t) = read::<[u8; 14]>(ctx, h.l4_offset as usize) else {
        return;
    };
    if let Some(end) = fin_end_of(ctx, h.l4_offset, &t) {
        st.fin_in_end = end;
        st.fin_in_seen = 1;
        // Visible to the iterator before the counter that includes the FIN can be.
        fence(st);
    }
    if !count_acks || st.phase != PHASE_TRACKED || st.fin_out_seen != 0 || t[13] & TCP_ACK == 0 {
        return;
    }
    let ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
    if !acks_new_bytes(st, ack) {
        return;
    }
    let tp = unsafe { bpf_tcp_sock(sk) };
    if tp.is_null() {
        return;
    }
    let snd_nxt = unsafe { (*tp).snd_nxt };
    ack_ingress(cfg, st, ack, snd_nxt);
}

/// Remembers where our FIN ends in sequence space (seq + payload + 1).
#[inline(always)]
fn record_fin_out(ctx: &SkBuffContext, st: &mut SockState) {
    let Some(h) = ip_headers(ctx) else { return };
    if h.proto != PROTO_TCP {
        return;
    }
    if let Some(end) = fin_end(ctx, h.l4_offset) {
        st.fin_out_end = end;
        st.fin_out_seen = 1;
        // Visible to the iterator before the peer's ACK of the FIN can reach `bytes_acked`.
        fence(st);
    }
}

/// Starts counting a connection that was established before sockscope saw it. Only its bytes
/// from now on count; it was not "opened" while we watched, so no open is counted.
///
/// Ingress runs without the socket lock, so an adoption there can race one on egress on
/// another CPU; both write the same key and near-identical baselines, and it happens once per
/// pre-existing connection.
#[inline(always)]
fn adopt(
    ctx: &SkBuffContext,
    cfg: &Config,
    sk: *mut bpf_sock,
    st: &mut SockState,
    state: u32,
    egress: bool,
) {
    if state != BPF_TCP_ESTABLISHED
        && state != BPF_TCP_FIN_WAIT1
        && state != BPF_TCP_FIN_WAIT2
        && state != BPF_TCP_CLOSE_WAIT
        && state != BPF_TCP_LAST_ACK
        && state != BPF_TCP_CLOSING
    {
        return;
    }
    let tp = unsafe { bpf_tcp_sock(sk) };
    if tp.is_null() {
        return;
    }
    let tp = unsafe { &*tp };
    // Addresses and ports come from the packet: the verifier refuses the pointer arithmetic
    // LLVM emits for some socket field loads.
    let Some(h) = ip_headers(ctx) else { return };
    if h.proto != PROTO_TCP {
        return;
    }
    let Some((src, dst)) = ports(ctx, h.l4_offset) else {
        return;
    };
    let (local, remote) = if egress { (src, dst) } else { (dst, src) };
    st.remote_addr = if egress { h.dst_addr } else { h.src_addr };
    let c = counters_of(tp);
    adopted(cfg, st, local, remote, &c);
}

#[inline(always)]
fn udp_packet(ctx: &SkBuffContext, cfg: &Config, sk: *mut bpf_sock, egress: bool) -> DnsMessages {
    let mut out = DnsMessages::NONE;
    let Some(st) = state_of(ctx, sk) else {
        return out;
    };
    if st.role == 0 {
        // The side that sends first is the client (a resolver asking a DNS server, a client
        // probing a service); a socket that first receives is serving.
        st.role = if egress { ROLE_CLIENT } else { ROLE_SERVER };
    }
    // The hot path, else the full parse; either way the datagram's bytes are counted.
    let Some((remote_port, l4_offset)) =
        udp::count_fast(ctx, cfg, st, egress).or_else(|| udp_full(ctx, cfg, st, egress))
    else {
        return out;
    };
    if remote_port == DNS_PORT {
        // To port 53 on egress, from port 53 on ingress: the client side of DNS.
        out.cgroup_id = st.cgroup_id;
        out.count = 1;
        out.first = l4_offset + 8;
        out.first_end = ctx.skb.len();
    }
    out
}

/// A datagram's bytes through its headers parsed in full (IPv4 options, IPv6 extension
/// headers, a first datagram or a new peer): returns its remote port and the offset of its UDP
/// header, or `None` (counted as unparsed) if the headers cannot be read.
#[inline(always)]
fn udp_full(
    ctx: &SkBuffContext,
    cfg: &Config,
    st: &mut SockState,
    egress: bool,
) -> Option<(u16, u32)> {
    let Some(h) = ip_headers(ctx) else {
        count_event(EVENT_PACKET_UNPARSED);
        return None;
    };
    if h.proto != PROTO_UDP {
        count_event(EVENT_PACKET_UNPARSED);
        return None;
    }
    let Some((src_port, dst_port)) = ports(ctx, h.l4_offset) else {
        count_event(EVENT_PACKET_UNPARSED);
        return None;
    };
    if ctx.skb.len() < h.l4_offset + 8 {
        // Ports, but not the whole UDP header: no datagram the kernel would deliver.
        count_event(EVENT_PACKET_UNPARSED);
        return None;
    }
    let (remote_addr, local_port, remote_port) = if egress {
        (h.dst_addr, src_port, dst_port)
    } else {
        (h.src_addr, dst_port, src_port)
    };
    let payload = ctx.skb.len().saturating_sub(h.l4_offset + 8) as u64;
    let role = st.role;
    let base = key_of(cfg, st, PROTO_UDP);
    let key = FlowKey {
        remote_addr,
        port: if role == ROLE_CLIENT {
            remote_port
        } else {
            local_port
        },
        ..base
    };
    let delta = if egress {
        FlowStats {
            sent_bytes: payload,
            ..Default::default()
        }
    } else {
        FlowStats {
            received_bytes: payload,
            ..Default::default()
        }
    };
    if payload > 0 {
        udp::count(cfg, st, &key, &delta);
    }
    Some((remote_port, h.l4_offset))
}
