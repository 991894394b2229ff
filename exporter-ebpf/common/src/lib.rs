//! Types shared by sockscope's eBPF programs and its userspace agent.
//!
//! Every type is `#[repr(C)]` with explicit padding fields so the kernel and userspace agree on
//! the layout byte for byte and no uninitialised padding ever reaches a map key (an uninitialised
//! pad byte in a hash key would split one flow into several entries).
#![no_std]

/// The socket opened the connection (or sent the first datagram): `port` is the remote port.
pub const ROLE_CLIENT: u8 = 1;
/// The socket accepted the connection (or received the first datagram): `port` is the local port.
pub const ROLE_SERVER: u8 = 2;

/// IANA protocol number of TCP, as stored in [`FlowKey::proto`].
pub const PROTO_TCP: u8 = 6;
/// IANA protocol number of UDP, as stored in [`FlowKey::proto`].
pub const PROTO_UDP: u8 = 17;

/// `AF_INET` and `AF_INET6` (include/linux/socket.h).
pub const AF_INET: u32 = 2;
pub const AF_INET6: u32 = 10;
/// `SOCK_STREAM` and `SOCK_DGRAM` (include/linux/net.h).
pub const SOCK_STREAM: u32 = 1;
pub const SOCK_DGRAM: u32 = 2;

/// The protocol sockscope counts a socket of this type and protocol under: TCP for a stream
/// socket of protocol 6, UDP for a datagram socket of protocol 17, else none. Both are checked:
/// a raw socket (SOCK_RAW) may carry protocol 6 or 17 and craft any header.
pub const fn counted_proto(kind: u32, protocol: u32) -> Option<u8> {
    if kind == SOCK_STREAM && protocol == PROTO_TCP as u32 {
        Some(PROTO_TCP)
    } else if kind == SOCK_DGRAM && protocol == PROTO_UDP as u32 {
        Some(PROTO_UDP)
    } else {
        None
    }
}

/// Names of the flow maps; programs write into the one [`Config::generation`] selects and the
/// agent drains the other (see `exporter/src/drain`).
pub const FLOW_MAP_NAMES: [&str; 2] = ["FLOWS_0", "FLOWS_1"];
/// Default number of distinct flows each flow map holds between two drains (`--flow-map-size`).
pub const FLOW_MAP_CAPACITY: u32 = 65536;
/// Default flows one cgroup may create in a flow map between two drains
/// (`--max-flows-per-cgroup`); its further flows fold into its overflow entry, so one
/// workload spraying peers cannot take every other workload's room.
pub const FLOWS_PER_CGROUP: u32 = 8192;

/// Per-cgroup overflow maps, by generation: where a flow goes when the flow map is full or its
/// cgroup used up its share. Keyed by owner, role and protocol, without the peer, so one entry
/// per (cgroup, role, protocol) keeps every owner's totals exact however many peers it has.
pub const FLOW_OVERFLOW_NAMES: [&str; 2] = ["FLOW_OVERFLOW_0", "FLOW_OVERFLOW_1"];
/// Default size of each per-cgroup overflow map (`--overflow-map-size`): up to 4 entries per
/// cgroup (client/server x TCP/UDP) that overflowed in one interval.
pub const OVERFLOW_MAP_CAPACITY: u32 = 8192;
/// Flow entries each cgroup created in the current generation, by generation (a plain hash of
/// counters, emptied by the drain).
pub const FLOW_ROOM_NAMES: [&str; 2] = ["FLOW_ROOM_0", "FLOW_ROOM_1"];
/// The last resort when even the overflow map is full: per-CPU, node-wide totals by protocol
/// and role, never emptied (the agent reads their growth), so the node's totals stay exact.
pub const NODE_FLOWS_MAP: &str = "NODE_FLOWS";
/// Slots of [`NODE_FLOWS_MAP`]: see [`node_flow_slot`].
pub const NODE_FLOW_SLOTS: u32 = 6;

/// The [`NODE_FLOWS_MAP`] slot of a protocol and role: TCP 0..=2, UDP 3..=5, by role (0 while
/// unknown, [`ROLE_CLIENT`], [`ROLE_SERVER`]).
#[inline(always)]
pub const fn node_flow_slot(proto: u8, role: u8) -> u32 {
    let p = if proto == PROTO_UDP { 3 } else { 0 };
    let r = if role > ROLE_SERVER { 0 } else { role as u32 };
    p + r
}

/// Key of the per-cgroup overflow maps: a flow without its peer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OverflowKey {
    /// cgroup v2 id of the socket's owner.
    pub cgroup_id: u64,
    /// `comm` of the creating process (zero unless process labels are on), as in [`FlowKey`].
    pub comm: [u8; 16],
    /// [`ROLE_CLIENT`] or [`ROLE_SERVER`].
    pub role: u8,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 6],
}

/// Aggregation key of the flow maps. The ephemeral port of a connection is never part of it, so
/// the number of keys is bounded by (cgroups x peers x service ports), not by connections.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// cgroup v2 id (inode number) of the socket's owner.
    pub cgroup_id: u64,
    /// Remote address as IPv6; IPv4 peers are stored v4-mapped (`::ffff:a.b.c.d`), so a v4 peer
    /// reached over an AF_INET6 socket lands on the same key as over an AF_INET socket.
    pub remote_addr: [u8; 16],
    /// `comm` of the process that created the socket; all zero unless process labels are on.
    pub comm: [u8; 16],
    /// Service port in host byte order: remote port for clients, local port for servers.
    pub port: u16,
    /// [`ROLE_CLIENT`] or [`ROLE_SERVER`].
    pub role: u8,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
    /// Explicit padding, always zero.
    pub _pad: u32,
}

/// Counters accumulated per [`FlowKey`] in a per-CPU hash map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Payload bytes sent: acknowledged by the peer for TCP, datagram payload for UDP.
    pub sent_bytes: u64,
    /// Payload bytes received.
    pub received_bytes: u64,
    /// TCP connections that reached ESTABLISHED.
    pub opened: u64,
    /// Tracked TCP connections that reached CLOSE.
    pub closed: u64,
    /// Client connects that went from SYN_SENT to CLOSE (refused, timed out, reset, aborted).
    pub connect_failures: u64,
    /// Retransmitted TCP segments.
    pub retransmits: u64,
    /// TCP resets this socket sent (an abortive close, SO_LINGER 0, a reply to a bad segment).
    pub resets_sent: u64,
    /// TCP resets this socket received (a refused connect, the peer aborting).
    pub resets_received: u64,
}

impl FlowStats {
    /// Adds `other` to `self`, field by field, wrapping like the kernel's counters do.
    pub fn add(&mut self, other: &FlowStats) {
        self.sent_bytes = self.sent_bytes.wrapping_add(other.sent_bytes);
        self.received_bytes = self.received_bytes.wrapping_add(other.received_bytes);
        self.opened = self.opened.wrapping_add(other.opened);
        self.closed = self.closed.wrapping_add(other.closed);
        self.connect_failures = self.connect_failures.wrapping_add(other.connect_failures);
        self.retransmits = self.retransmits.wrapping_add(other.retransmits);
        self.resets_sent = self.resets_sent.wrapping_add(other.resets_sent);
        self.resets_received = self.resets_received.wrapping_add(other.resets_received);
    }

    /// Subtracts `other` from `self`, field by field, wrapping (the inverse of [`Self::add`]).
    pub fn sub(&mut self, other: &FlowStats) {
        self.sent_bytes = self.sent_bytes.wrapping_sub(other.sent_bytes);
        self.received_bytes = self.received_bytes.wrapping_sub(other.received_bytes);
        self.opened = self.opened.wrapping_sub(other.opened);
        self.closed = self.closed.wrapping_sub(other.closed);
        self.connect_failures = self.connect_failures.wrapping_sub(other.connect_failures);
        self.retransmits = self.retransmits.wrapping_sub(other.retransmits);
        self.resets_sent = self.resets_sent.wrapping_sub(other.resets_sent);
        self.resets_received = self.resets_received.wrapping_sub(other.resets_received);
    }

    /// True when every counter is zero.
    pub fn is_zero(&self) -> bool {
        *self == FlowStats::default()
    }
}

/// Name of the map from cgroup id to the network namespace cookie of its sockets.
pub const CGROUP_NETNS_MAP: &str = "CGROUP_NETNS";
/// cgroups whose namespace the kernel remembers (LRU).
pub const CGROUP_NETNS_CAPACITY: u32 = 65536;

/// Include the creating process's `comm` in flow keys.
pub const CONFIG_PROCESS_LABEL: u32 = 1;

/// Test aid, never set by the agent: a socket of type 0 and protocol 0, which only the dummy
/// socket of `BPF_PROG_TEST_RUN` has, is handled as a socket of the packet's IP protocol, so
/// crafted packets exercise the UDP and DNS paths (see `exporter/src/ebpf/test_run.rs`).
pub const CONFIG_TEST_RUN: u32 = 2;

/// TCP byte counts come from the socket iterator at each drain and from `tcp:tcp_destroy_sock`
/// at close (`exporter-ebpf/src/iter.rs`): cgroup_skb looks at a TCP packet only if it carries
/// a FIN. Without it (no iterator on this kernel), the per-packet path.
pub const CONFIG_TCP_ITER: u32 = 4;

/// Set by the agent for the one iterator pass it runs right after attaching: TCP and UDP sockets that
/// were open before sockscope (no state yet) and belong to a cgroup in [`ADOPT_CGROUPS_MAP`]
/// are adopted, counted from that pass on.
pub const CONFIG_TCP_ADOPT: u32 = 8;

/// UDP bytes of sockets made by socket() are batched in the socket's state while they go to or
/// come from one peer, and reach the flow maps when the peer changes, at each drain (the
/// iterator) and when the socket is released (cgroup/sock_release), instead of one flow-map
/// update per datagram (`exporter-ebpf/src/udp.rs`). Set only with [`CONFIG_TCP_ITER`] and the
/// release program attached: without either, a batch could outlive its socket.
pub const CONFIG_UDP_BATCH: u32 = 16;

/// Name of the map of cgroup ids below the attach point whose pre-existing TCP sockets the
/// iterator adopts (filled by the agent from the cgroup tree before its adoption pass).
pub const ADOPT_CGROUPS_MAP: &str = "ADOPT_CGROUPS";
/// cgroups the adoption pass can know.
pub const ADOPT_CGROUPS_CAPACITY: u32 = 65536;

/// Agent-written settings, element 0 of the `CONFIG` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Index (0 or 1) of the flow map programs write into.
    pub generation: u32,
    /// `CONFIG_*` bits.
    pub flags: u32,
    /// Lowest local port the kernel hands out for connect() (net.ipv4.ip_local_port_range).
    pub ephemeral_low: u16,
    /// Highest local port the kernel hands out for connect().
    pub ephemeral_high: u16,
    /// DNS timeout in milliseconds: a pending query older than this that a newer one evicts is
    /// counted as timed out.
    pub dns_timeout_ms: u32,
    /// Flow entries one cgroup may create per generation (0: no limit).
    pub max_flows_per_cgroup: u32,
    /// DNS entries one cgroup may create per generation (0: no limit).
    pub max_dns_per_cgroup: u32,
    /// Drains so far (wrapping): a live connection's RTT is sampled once per value.
    pub epoch: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
}

/// Socket seen, nothing known about its connection yet (listeners, fresh sockets).
pub const PHASE_NEW: u8 = 0;
/// connect() called; SYN sent or about to be.
pub const PHASE_CONNECTING: u8 = 1;
/// Established while sockscope ran; sock_ops callbacks keep it up to date and flush it at close.
pub const PHASE_TRACKED: u8 = 2;
/// Already established when sockscope started: counted from its adoption on (the iterator's
/// first pass, or its first packet in per-packet mode); no open or close is counted for it.
pub const PHASE_ADOPTED: u8 = 3;
/// Closed and flushed; nothing more is counted for it.
pub const PHASE_CLOSED: u8 = 4;
/// A UDP socket whose release cgroup/sock_release sees: made by socket() (sock_create runs
/// only for those, `inet_create()` in net/ipv4/af_inet.c) or found in a process's files by the
/// iterator. Only these batch their bytes ([`CONFIG_UDP_BATCH`]); a kernel socket's release
/// runs no program, so a batch of it could be lost.
pub const PHASE_UDP_SOCKET: u8 = 5;

/// [`SockState::seq`] of a UDP socket: the batch is free to take.
pub const UDP_BATCH_FREE: u64 = 0;
/// Bit of [`SockState::seq`] of a UDP socket: a program holds the batch.
pub const UDP_BATCH_HELD: u64 = 1;
/// Bit of [`SockState::seq`] of a UDP socket: released; nothing batches any more, and whoever
/// held the batch when it was set flushes it.
pub const UDP_BATCH_RELEASED: u64 = 2;

/// Per-socket state kept in socket-local storage (`BPF_MAP_TYPE_SK_STORAGE`), created when the
/// socket is (cgroup/sock_create) and cloned from a listener into the sockets it accepts.
///
/// Writers: sock_ops callbacks and cgroup_skb egress run under the socket lock, so they never
/// race each other. cgroup_skb ingress runs before the socket lock is taken, and the iterator
/// (`exporter-ebpf/src/iter.rs`) without it: both only claim counts through compare-and-exchange
/// on the `*_reported` and `pending_open` words (see `flow::claim`); ingress otherwise only
/// writes the FIN fields (and `cgroup_id` with the value egress would write), the iterator only
/// the owner (`cgroup_id`, `comm`) of a socket whose state sock_ops created without one, with
/// the value the socket's own cgroup gives.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockState {
    /// cgroup v2 id of the socket's owner; 0 until known (sockets created before sockscope).
    pub cgroup_id: u64,
    /// Remote address (v4-mapped for IPv4) once known; UDP: of the batched bytes.
    pub remote_addr: [u8; 16],
    /// `comm` of the process that created the socket (or its listener).
    pub comm: [u8; 16],
    /// Payload bytes sent already added to a flow (the kernel counter's value at that time).
    pub sent_reported: u64,
    /// Payload bytes received already added to a flow.
    pub received_reported: u64,
    /// The kernel's `total_retrans` (segments retransmitted) already added to a flow.
    pub retrans_reported: u64,
    /// 1 while the "opened" count of this connection still has to be added to a flow; whoever
    /// exchanges it to 0 counts it.
    pub pending_open: u64,
    /// Sequence number just past our FIN, valid when `fin_out_seen` is 1.
    pub fin_out_end: u32,
    /// Sequence number just past the peer's FIN, valid when `fin_in_seen` is 1.
    pub fin_in_end: u32,
    /// Service port (host byte order); UDP: of the batched bytes.
    pub port: u16,
    /// [`ROLE_CLIENT`], [`ROLE_SERVER`] or 0 while unknown.
    pub role: u8,
    /// One of the `PHASE_*` values.
    pub phase: u8,
    /// 1 once a FIN of ours has been seen leaving.
    pub fin_out_seen: u8,
    /// 1 once a FIN from the peer has been seen arriving (written by ingress only).
    pub fin_in_seen: u8,
    /// DNS over TCP, what we send: `dns::DNS_SYNC`, `DNS_LOST`, `DNS_HALF` bits.
    pub dns_out_flags: u8,
    /// The same for what we receive.
    pub dns_in_flags: u8,
    /// `snd_una` when `sent_reported` was taken from the kernel's counters (or the ACK number
    /// ingress counted up to): maps an ACK number to a sent-bytes total. Per-packet mode only.
    pub sent_una: u32,
    /// `Config::epoch` of this connection's last RTT sample (one per drain interval).
    pub rtt_epoch: u32,
    /// TCP: sequence lock over {`sent_reported`, `sent_una`} in per-packet mode: odd while a
    /// writer updates them. Flushes under the socket lock and ingress's ACK accounting (which
    /// runs without it) both take it. 64 bits: BPF has no 32-bit compare-and-exchange before
    /// cpu v3. UDP: the batch's lock, `UDP_BATCH_*` bits.
    pub seq: u64,
    /// UDP: payload bytes sent to the peer {`remote_addr`, `port`} and not yet in a flow
    /// ([`CONFIG_UDP_BATCH`]).
    pub udp_sent: u64,
    /// UDP: payload bytes received from that peer and not yet in a flow.
    pub udp_received: u64,
    /// TCP, `bpf_ktime_get_ns()`: when connect() sent the SYN (phase CONNECTING), then when
    /// the connection was established (phases TRACKED); 0 if not seen (adopted connections).
    pub since_ns: u64,
    /// DNS over TCP, a client's connection to port 53: the sequence number where the next DNS
    /// message (its 2-byte length) starts in the data we send, and in the data we receive.
    pub dns_out: u32,
    pub dns_in: u32,
    /// DNS over TCP: the first byte of a 2-byte length that was the last byte of a segment
    /// (`dns::DNS_HALF`), in the data we send and in the data we receive.
    pub dns_half_out: u8,
    pub dns_half_in: u8,
    /// Explicit padding, always zero.
    pub _pad2: [u8; 6],
}

/// Index into the `EVENTS` per-CPU array: socket-local storage could not be allocated (memory
/// pressure); the socket is not counted.
pub const EVENT_SOCK_STORAGE_FAILED: u32 = 0;
/// A connection closed before its owner was known (no packet of it seen): its counts are lost.
pub const EVENT_CLOSE_FLUSH_LOST: u32 = 1;
/// A packet whose headers could not be read (truncated, more IPv6 extension headers than are
/// walked).
pub const EVENT_PACKET_UNPARSED: u32 = 2;
/// A pending DNS query was evicted by a newer one whose {socket, id} hashes to the same slot:
/// its response gets no latency sample, names nothing, and the query cannot time out.
pub const EVENT_DNS_PENDING_EVICTED: u32 = 3;
/// A DNS answer could not be forwarded to userspace (ring buffer full).
pub const EVENT_DNS_RINGBUF: u32 = 4;
/// A flow delta found no room even in the node-wide entry (cannot happen: an array slot).
pub const EVENT_FLOW_LOST: u32 = 5;
/// A new flow did not fit the flow map: folded into its cgroup's overflow entry.
pub const EVENT_FLOW_MAP_FULL: u32 = 6;
/// A new flow of a cgroup that used up its share of the flow map: folded likewise.
pub const EVENT_FLOW_CGROUP_LIMIT: u32 = 7;
/// The overflow map was full too: folded into the node-wide entry (owner lost, totals kept).
pub const EVENT_FLOW_OVERFLOW_FULL: u32 = 8;
/// A new DNS key did not fit the DNS map: folded into its cgroup's DNS overflow entry.
pub const EVENT_DNS_MAP_FULL: u32 = 9;
/// A new DNS key of a cgroup that used up its share of the DNS map: folded likewise.
pub const EVENT_DNS_CGROUP_LIMIT: u32 = 10;
/// The DNS overflow map was full too: folded into the node-wide DNS entry.
pub const EVENT_DNS_OVERFLOW_FULL: u32 = 11;
/// A DNS response with answers that matches no pending query of its socket (transaction id and
/// question): counted, never forwarded, so it cannot name a peer.
pub const EVENT_DNS_UNMATCHED: u32 = 12;
/// A new flow's entry could not be allocated at once (`-ENOMEM`: a burst of new flows outran
/// the kernel's refill of its per-CPU entry caches; the map had room): folded into its cgroup's
/// overflow entry.
pub const EVENT_FLOW_ALLOC_FAILED: u32 = 13;
/// A new DNS key's entry could not be allocated at once: folded likewise.
pub const EVENT_DNS_ALLOC_FAILED: u32 = 14;
/// A TCP timing sample found no room in the timing map (or no owner): folded into the
/// node-wide histogram (owner and peer lost).
pub const EVENT_TIMING_FOLDED: u32 = 15;
/// A packet drop found no room in the drop map: folded into the node-wide count.
pub const EVENT_DROP_MAP_FULL: u32 = 16;
/// A DNS message over TCP that began in a segment after [`dns::DNS_TCP_MESSAGES_PER_SEGMENT`]
/// others: stepped over (the framing goes on), not counted.
pub const EVENT_DNS_TCP_UNPARSED: u32 = 17;
/// DNS over TCP: one direction of a connection lost its framing (a 2-byte length split across
/// segments, a segment beyond a gap, more messages in one segment than are walked): none of
/// that direction's later messages are counted, rather than misparsed.
pub const EVENT_DNS_TCP_FRAMING_LOST: u32 = 18;
/// Number of event counters.
pub const EVENT_COUNT: u32 = 19;

/// What an event counter means to the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Something was not counted: `sockscope_events_lost_total{source}`.
    Lost,
    /// A count kept, without its peer (or owner): `sockscope_events_folded_total{source}`.
    Folded,
    /// A DNS response that named nothing: `sockscope_dns_answers_total{result="unmatched"}`.
    Unmatched,
}

/// Kind and `source` label of each event counter, by index.
pub const EVENTS: [(EventKind, &str); EVENT_COUNT as usize] = [
    (EventKind::Lost, "sock_storage_failed"),
    (EventKind::Lost, "close_flush_lost"),
    (EventKind::Lost, "packet_unparsed"),
    (EventKind::Lost, "dns_pending_evicted"),
    (EventKind::Lost, "dns_ringbuf"),
    (EventKind::Lost, "flow_lost"),
    (EventKind::Folded, "flow_map_full"),
    (EventKind::Folded, "flow_cgroup_limit"),
    (EventKind::Folded, "flow_overflow_full"),
    (EventKind::Folded, "dns_map_full"),
    (EventKind::Folded, "dns_cgroup_limit"),
    (EventKind::Folded, "dns_overflow_full"),
    (EventKind::Unmatched, "unmatched"),
    (EventKind::Folded, "flow_alloc_failed"),
    (EventKind::Folded, "dns_alloc_failed"),
    (EventKind::Folded, "timing_folded"),
    (EventKind::Folded, "drop_map_full"),
    (EventKind::Lost, "dns_tcp_unparsed"),
    (EventKind::Lost, "dns_tcp_framing_lost"),
];

/// Maps a v4 address (as the four bytes on the wire) into the v4-mapped IPv6 form.
pub const fn v4_mapped(octets: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}

pub mod dns;
pub mod health;

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of them are repr(C), made only of integers with explicit padding fields, so every
    // bit pattern is valid and there are no implicit padding bytes.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::OverflowKey {}
    unsafe impl aya::Pod for super::FlowStats {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::SockState {}
    unsafe impl aya::Pod for super::dns::DnsKey {}
    unsafe impl aya::Pod for super::dns::DnsName {}
    unsafe impl aya::Pod for super::dns::DnsStats {}
    unsafe impl aya::Pod for super::dns::PendingSlot {}
    unsafe impl aya::Pod for super::health::TimingKey {}
    unsafe impl aya::Pod for super::health::TimingStats {}
    unsafe impl aya::Pod for super::health::DropKey {}
}

// Layout checks: a size change here is a kernel/userspace ABI change.
const _: () = assert!(core::mem::size_of::<FlowKey>() == 48);
const _: () = assert!(core::mem::size_of::<FlowStats>() == 64);
const _: () = assert!(core::mem::size_of::<OverflowKey>() == 32);
const _: () = assert!(core::mem::size_of::<Config>() == 32);
const _: () = assert!(core::mem::size_of::<SockState>() == 144);
const _: () = assert!(core::mem::size_of::<health::TimingKey>() == 32);
const _: () = assert!(core::mem::size_of::<health::TimingStats>() == 16);
const _: () = assert!(core::mem::size_of::<health::DropKey>() == 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapping_matches_std() {
        let mapped = v4_mapped([10, 1, 2, 3]);
        let std = core::net::Ipv4Addr::new(10, 1, 2, 3)
            .to_ipv6_mapped()
            .octets();
        assert_eq!(mapped, std);
    }

    #[test]
    fn stats_add_and_zero() {
        let mut a = FlowStats::default();
        assert!(a.is_zero());
        let b = FlowStats {
            sent_bytes: 5,
            opened: 1,
            ..Default::default()
        };
        a.add(&b);
        a.add(&b);
        assert_eq!(a.sent_bytes, 10);
        assert_eq!(a.opened, 2);
        assert!(!a.is_zero());
    }
}
