//! DNS types shared by the cgroup_skb DNS parser and the agent.
//!
//! Only the client side of DNS over UDP is counted: queries leaving a socket to port 53 and
//! responses arriving at a socket from port 53. A resolver on the same node therefore counts its
//! own upstream queries, never the queries it serves.

/// UDP port of DNS.
pub const DNS_PORT: u16 = 53;

/// Longest question name in wire format (RFC 1035 3.1: 255 octets, terminating zero included),
/// rounded up to a whole number of 8-byte words.
pub const DNS_NAME_MAX: usize = 256;

/// [`DnsKey::kind`]: a query left a socket; `code` is 0.
pub const DNS_KIND_QUERY: u8 = 1;
/// A response arrived; `code` is its RCODE.
pub const DNS_KIND_RESPONSE: u8 = 2;
/// A latency sample: `qname` is empty, `qtype` is the bucket index into
/// [`DNS_LATENCY_BOUNDS_NS`] (`DNS_LATENCY_BUCKETS - 1` for +Inf), `code` the RCODE, and
/// [`DnsStats::sum_ns`] the summed latency.
pub const DNS_KIND_LATENCY: u8 = 3;
/// A packet to or from port 53 that could not be parsed; `qname` is empty and `code` one of the
/// `DNS_ERR_*` reasons.
pub const DNS_KIND_ERROR: u8 = 4;

/// Upper bounds (inclusive, nanoseconds) of the latency buckets, as in the Prometheus histogram.
pub const DNS_LATENCY_BOUNDS_NS: [u64; 15] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
];
/// Number of latency buckets, +Inf included.
pub const DNS_LATENCY_BUCKETS: usize = DNS_LATENCY_BOUNDS_NS.len() + 1;

/// Fewer than 12 bytes: no complete DNS header.
pub const DNS_ERR_SHORT_HEADER: u8 = 0;
/// QDCOUNT is 0.
pub const DNS_ERR_NO_QUESTION: u8 = 1;
/// QDCOUNT is above 1 (no server answers those; counting them would split one packet).
pub const DNS_ERR_MULTIPLE_QUESTIONS: u8 = 2;
/// A label length points past the end of the packet.
pub const DNS_ERR_LABEL_PAST_PACKET: u8 = 3;
/// A compression pointer inside the question name (RFC 1035 allows it, resolvers never send it,
/// and following it would need a second bounded walk).
pub const DNS_ERR_COMPRESSION: u8 = 4;
/// A label type other than a plain label (0x40 / 0x80 prefixes, RFC 6891 6.1.3).
pub const DNS_ERR_BAD_LABEL: u8 = 5;
/// The name is longer than 255 octets.
pub const DNS_ERR_NAME_TOO_LONG: u8 = 6;
/// The packet ends inside QTYPE/QCLASS.
pub const DNS_ERR_TRUNCATED_QUESTION: u8 = 7;
/// A response sent to port 53 or a query coming from it (QR bit against the direction).
pub const DNS_ERR_UNEXPECTED_QR: u8 = 8;
/// Number of parse error reasons.
pub const DNS_ERR_COUNT: usize = 9;
/// `reason` label of each parse error, by code.
pub const DNS_ERR_NAMES: [&str; DNS_ERR_COUNT] = [
    "short_header",
    "no_question",
    "multiple_questions",
    "label_past_packet",
    "compression_in_question",
    "bad_label_type",
    "name_too_long",
    "truncated_question",
    "unexpected_qr",
];

/// Names of the DNS maps, by generation (flipped and drained with the flow maps).
pub const DNS_MAP_NAMES: [&str; 2] = ["DNS_0", "DNS_1"];
/// Distinct DNS keys each DNS map holds between two drains.
pub const DNS_MAP_CAPACITY: u32 = 8192;
/// Name of the map of queries waiting for their response.
pub const DNS_PENDING_MAP: &str = "DNS_PENDING";
/// Queries waiting for a response, node-wide.
pub const DNS_PENDING_CAPACITY: u32 = 16384;
/// Name of the ring buffer carrying answers to userspace.
pub const DNS_ANSWERS_MAP: &str = "DNS_ANSWERS";
/// Ring buffer size in bytes (a power-of-two number of pages).
pub const DNS_ANSWERS_BYTES: u32 = 1 << 20;
/// Bytes of a response forwarded to userspace; longer responses are cut (the agent decodes the
/// records that fit).
pub const DNS_ANSWER_MAX: usize = 2048;
/// A response for the same {cgroup, name, qtype} is forwarded at most once per this interval.
pub const DNS_FORWARD_INTERVAL_NS: u64 = 2_000_000_000;

/// Aggregation key of the DNS maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DnsKey {
    /// cgroup v2 id of the socket's owner.
    pub cgroup_id: u64,
    /// Question name in wire format (length-prefixed labels, terminating zero), ASCII letters
    /// folded to lower case, zero-padded. All zero for latency and error keys.
    pub qname: [u8; DNS_NAME_MAX],
    /// QTYPE; for [`DNS_KIND_LATENCY`] the bucket index.
    pub qtype: u16,
    /// One of the `DNS_KIND_*` values.
    pub kind: u8,
    /// RCODE for responses and latency samples, reason for errors, 0 for queries.
    pub code: u8,
    /// Explicit padding, always zero.
    pub _pad: u32,
}

impl Default for DnsKey {
    fn default() -> Self {
        DnsKey {
            cgroup_id: 0,
            qname: [0; DNS_NAME_MAX],
            qtype: 0,
            kind: 0,
            code: 0,
            _pad: 0,
        }
    }
}

/// Value of the DNS maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Packets (or latency samples) counted under the key.
    pub count: u64,
    /// Summed latency in nanoseconds (latency keys only).
    pub sum_ns: u64,
}

/// A query waiting for its response: which socket sent it, with which transaction id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PendingKey {
    /// `bpf_get_socket_cookie()` of the sending socket.
    pub socket_cookie: u64,
    /// DNS transaction id.
    pub id: u16,
    /// Explicit padding, always zero.
    pub _pad: [u8; 6],
}

/// What is remembered about a pending query.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingQuery {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the query left; a retransmission with the
    /// same id keeps the first time, so latency is what the application waited.
    pub sent_ns: u64,
    /// The query's key (kind [`DNS_KIND_QUERY`]); timeouts are labelled with its name and type.
    pub key: DnsKey,
}

/// Header of a response forwarded through the ring buffer; `len` bytes of the DNS message
/// (from its header on) follow.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsAnswerEvent {
    /// cgroup v2 id of the receiving socket's owner.
    pub cgroup_id: u64,
    /// Bytes of `data` that hold the message (at most [`DNS_ANSWER_MAX`]).
    pub len: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
    /// The DNS message, cut at [`DNS_ANSWER_MAX`] bytes.
    pub data: [u8; DNS_ANSWER_MAX],
}

/// Size of the fixed part of [`DnsAnswerEvent`] before `data`.
pub const DNS_ANSWER_HEADER: usize = 16;

const _: () = assert!(core::mem::size_of::<DnsKey>() == 272);
const _: () = assert!(core::mem::size_of::<DnsStats>() == 16);
const _: () = assert!(core::mem::size_of::<PendingKey>() == 16);
const _: () = assert!(core::mem::size_of::<PendingQuery>() == 280);
const _: () = assert!(core::mem::size_of::<DnsAnswerEvent>() == DNS_ANSWER_HEADER + DNS_ANSWER_MAX);
