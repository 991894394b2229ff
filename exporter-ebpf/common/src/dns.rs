//! DNS types shared by the cgroup_skb DNS parser and the agent.
//!
//! Only the client side of DNS over UDP and TCP is counted: queries leaving a socket to port 53
//! and responses arriving at a socket from port 53. A resolver on the same node therefore counts its
//! own upstream queries, never the queries it serves.

/// UDP port of DNS.
pub const DNS_PORT: u16 = 53;

/// Longest question name in wire format (RFC 1035 3.1: 255 octets, terminating zero included),
/// rounded up to a whole number of 8-byte words.
pub const DNS_NAME_MAX: usize = 256;

/// [`DnsKey::kind`] of a query that timed out (counted by the kernel when a newer query takes
/// its expired slot; the agent's sweep reports the others).
pub const DNS_KIND_TIMEOUT: u8 = 3;
/// [`DnsKey::kind`]: a query left a socket; `code` is 0.
pub const DNS_KIND_QUERY: u8 = 1;
/// A response arrived; `code` is its RCODE, `bucket` its latency bucket (index into
/// [`DNS_LATENCY_BOUNDS_NS`], `DNS_LATENCY_BUCKETS - 1` for +Inf) or [`DNS_NO_LATENCY`], and
/// [`DnsStats::sum_ns`] the summed latency. One key carries both the response count and the
/// latency sample, so a response costs one map update.
pub const DNS_KIND_RESPONSE: u8 = 2;
/// A packet to or from port 53 that could not be parsed; `name_hash` is 0 and `code` one of the
/// `DNS_ERR_*` reasons.
pub const DNS_KIND_ERROR: u8 = 4;
/// [`DnsKey::bucket`] of a response whose query was not seen (or already timed out).
pub const DNS_NO_LATENCY: u8 = 0xff;

/// [`DnsKey::name_hash`] of a message over TCP whose question did not fit the segment its
/// message began in (the rest follows in later segments, which are not parsed): counted as a
/// query or response without its question, rather than misparsed.
pub const DNS_NAME_SPLIT: u64 = 1;

/// DNS over TCP (RFC 7766): a client's connection to port 53 carries messages each led by its
/// 2-byte length. The messages that begin in one segment, at most this many, are parsed: each
/// by one run of the DNS program, which tail-calls itself for the next, and a chain of tail
/// calls stops at 33 (`MAX_TAIL_CALL_CNT`, include/linux/bpf.h), the packet program's own call
/// included.
pub const DNS_TCP_MESSAGES_PER_SEGMENT: u32 = 32;
/// Lengths the last run walks past the messages it cannot parse (each counted as
/// `dns_tcp_unparsed`); a segment with still more loses the framing.
pub const DNS_TCP_WALK: u32 = 64;
/// `__sk_buff.cb[0]` bit the packet program sets for a TCP segment (its low 8 bits: the index
/// of the message in the segment).
pub const DNS_CB_TCP: u32 = 1 << 31;
/// `__sk_buff.cb[0]` bit: the first message's length began with the previous segment's last
/// byte, which is in bits 8..16; this segment begins with the length's second byte.
pub const DNS_CB_HALF: u32 = 1 << 30;
/// `SockState::dns_out_flags` / `dns_in_flags` bit (one byte per direction: the directions'
/// programs run on different CPUs at once, ingress without the socket lock): where the next
/// message begins is known, from the connection's start (`dns_out` / `dns_in`)...
pub const DNS_SYNC: u8 = 1;
/// ... the framing is lost: nothing more of that direction is parsed...
pub const DNS_LOST: u8 = 2;
/// ... a segment ended one byte into a length (kept in `dns_half_out` / `dns_half_in`).
pub const DNS_HALF: u8 = 4;

/// The EDNS OPT record's resource record type (RFC 6891): its TTL field carries the upper 8
/// bits of the extended RCODE.
pub const DNS_TYPE_OPT: u16 = 41;

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
/// A response over TCP whose header is cut by the end of the segment it begins in (its RCODE is
/// in the next): counted here, as a query cut that way counts under `~split`.
pub const DNS_ERR_SPLIT_HEADER: u8 = 9;
/// Number of parse error reasons.
pub const DNS_ERR_COUNT: usize = 10;
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
    "split_header",
];

/// Names of the DNS maps, by generation (flipped and drained with the flow maps).
pub const DNS_MAP_NAMES: [&str; 2] = ["DNS_0", "DNS_1"];
/// Default number of distinct DNS keys each DNS map holds between two drains (`--dns-map-size`).
pub const DNS_MAP_CAPACITY: u32 = 16384;
/// Default DNS keys one cgroup may create per generation (`--max-dns-keys-per-cgroup`); further
/// keys fold into its DNS overflow entries.
pub const DNS_KEYS_PER_CGROUP: u32 = 2048;
/// Per-cgroup DNS overflow maps, by generation: [`DnsKey`]s with `name_hash` and `qtype` 0,
/// so a cgroup's counts stay exact whatever names it asks for.
pub const DNS_OVERFLOW_NAMES: [&str; 2] = ["DNS_OVERFLOW_0", "DNS_OVERFLOW_1"];
/// Default size of each DNS overflow map (`--overflow-map-size` for DNS).
pub const DNS_OVERFLOW_CAPACITY: u32 = 8192;
/// DNS keys each cgroup created in the current generation.
pub const DNS_ROOM_NAMES: [&str; 2] = ["DNS_ROOM_0", "DNS_ROOM_1"];
/// Node-wide DNS totals when the DNS overflow map is full too: per CPU, never emptied.
pub const NODE_DNS_MAP: &str = "NODE_DNS";
/// Kinds a [`NODE_DNS_MAP`] slot tells apart: 0 and the four `DNS_KIND_*`.
const NODE_DNS_KINDS: u32 = 5;
/// Slots of [`NODE_DNS_MAP`]: see [`node_dns_slot`].
pub const NODE_DNS_SLOTS: u32 = NODE_DNS_KINDS * 16 * (DNS_LATENCY_BUCKETS as u32 + 1);

/// The [`NODE_DNS_MAP`] slot of a key's kind, code and latency bucket ([`DNS_NO_LATENCY`] is
/// the last bucket index).
#[inline(always)]
pub const fn node_dns_slot(kind: u8, code: u8, bucket: u8) -> u32 {
    let b = if bucket as usize >= DNS_LATENCY_BUCKETS {
        DNS_LATENCY_BUCKETS as u32
    } else {
        bucket as u32
    };
    let k = if kind as u32 >= NODE_DNS_KINDS {
        0
    } else {
        kind as u32
    };
    (k * 16 + (code & 15) as u32) * (DNS_LATENCY_BUCKETS as u32 + 1) + b
}

/// The kind, code and latency bucket of a [`NODE_DNS_MAP`] slot (inverse of [`node_dns_slot`]).
pub const fn node_dns_key(slot: u32) -> (u8, u8, u8) {
    let per = DNS_LATENCY_BUCKETS as u32 + 1;
    let b = slot % per;
    let kc = slot / per;
    let bucket = if b == DNS_LATENCY_BUCKETS as u32 {
        DNS_NO_LATENCY
    } else {
        b as u8
    };
    ((kc / 16) as u8, (kc % 16) as u8, bucket)
}

/// Name of the map from name hash to question name.
pub const DNS_NAMES_MAP: &str = "DNS_NAMES";
/// Question names the kernel remembers (LRU); the agent keeps its own copy of those it has seen.
/// Larger than one cgroup's share of the DNS map, so one workload's new names cannot push out
/// every other workload's before the agent reads them.
pub const DNS_NAMES_CAPACITY: u32 = 16384;
/// Name of the table of queries waiting for their response.
pub const DNS_PENDING_MAP: &str = "DNS_PENDING";
/// Slots of that table (a power of two). A query goes to the slot its {socket, id} hashes to; a
/// colliding query evicts a live one (counted), so this is the number of queries that can be in
/// flight node-wide before some go without latency or timeout.
pub const DNS_PENDING_SLOTS: u32 = 16384;
/// Name of the ring buffer carrying answers to userspace.
pub const DNS_ANSWERS_MAP: &str = "DNS_ANSWERS";
/// Ring buffer size in bytes (a power-of-two number of pages).
pub const DNS_ANSWERS_BYTES: u32 = 1 << 20;
/// Bytes of a response forwarded to userspace; longer responses are cut (the agent decodes the
/// records that fit).
pub const DNS_ANSWER_MAX: usize = 2048;
/// A response for the same {cgroup, name, qtype} is forwarded at most once per this interval.
pub const DNS_FORWARD_INTERVAL_NS: u64 = 2_000_000_000;

/// Aggregation key of the DNS maps. The question name is represented by its hash, so the
/// per-packet map operations hash and compare 40 bytes, not 256; the name itself is stored once
/// in the `DNS_NAMES` map under that hash.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DnsKey {
    /// cgroup v2 id of the socket's owner.
    pub cgroup_id: u64,
    /// [`name_hash`] of the question name; 0 for error keys.
    pub name_hash: u64,
    /// QTYPE.
    pub qtype: u16,
    /// One of the `DNS_KIND_*` values.
    pub kind: u8,
    /// RCODE for responses (with the EDNS extended bits: `ext << 4 | rcode`, e.g. 16 for
    /// BADVERS, 23 for BADCOOKIE), reason for errors, 0 for queries.
    pub code: u8,
    /// Latency bucket of responses (see [`DNS_KIND_RESPONSE`]); 0 otherwise.
    pub bucket: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 3],
    /// `comm` of the process that created the asking socket, for queries (and their
    /// timeouts) while process labels are on: the watchlist counter names the process. All
    /// zero otherwise, so responses and errors do not multiply.
    pub comm: [u8; 16],
}

/// A question name in wire format (length-prefixed labels, terminating zero), ASCII letters
/// folded to lower case, zero-padded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsName {
    /// The name's bytes.
    pub wire: [u8; DNS_NAME_MAX],
}

impl Default for DnsName {
    fn default() -> Self {
        DnsName {
            wire: [0; DNS_NAME_MAX],
        }
    }
}

/// Value of the DNS maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Packets counted under the key.
    pub count: u64,
    /// Summed latency in nanoseconds (responses with a latency bucket).
    pub sum_ns: u64,
}

impl DnsStats {
    /// Adds `other`, wrapping like the kernel's counters.
    pub fn add(&mut self, other: &DnsStats) {
        self.count = self.count.wrapping_add(other.count);
        self.sum_ns = self.sum_ns.wrapping_add(other.sum_ns);
    }

    /// Subtracts `other`, wrapping (the inverse of [`Self::add`]).
    pub fn sub(&mut self, other: &DnsStats) {
        self.count = self.count.wrapping_sub(other.count);
        self.sum_ns = self.sum_ns.wrapping_sub(other.sum_ns);
    }

    /// True when nothing was counted.
    pub fn is_zero(&self) -> bool {
        self.count == 0
    }
}

/// A slot of the pending-query table: a direct-mapped array shared (mmap) with the agent.
///
/// Ownership of a slot's query is taken by swapping `sent_ns` from its value to 0 with a
/// compare-and-exchange: the response (latency sample), the agent's timeout sweep, and a newer
/// query evicting it all race for that swap, so each query ends exactly once. Writers claim the
/// slot the same way, fill the other fields, and publish by storing `sent_ns` last.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingSlot {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the query left; 0 for a free slot. A
    /// retransmission (same socket and id) keeps the first time: latency is what the
    /// application waited.
    pub sent_ns: u64,
    /// `bpf_get_socket_cookie()` of the sending socket.
    pub socket_cookie: u64,
    /// DNS transaction id.
    pub id: u16,
    /// Explicit padding, always zero.
    pub _pad: [u8; 6],
    /// The query's key (kind [`DNS_KIND_QUERY`]); timeouts are labelled with its name and type.
    /// It fills the slot to a 64-byte cache line: a slot never straddles two lines.
    pub key: DnsKey,
}

/// [`PendingSlot::sent_ns`] of a slot a writer is filling (claimed, fields not yet valid).
pub const PENDING_BUSY: u64 = u64::MAX;

/// Slot index of a query: the top bits of a multiplicative (Fibonacci) hash of {socket, id}.
/// Top bits, because a product's low bits depend only on the factors' low bits.
#[inline(always)]
pub const fn pending_slot(socket_cookie: u64, id: u16) -> u32 {
    let x = socket_cookie.rotate_left(16) ^ id as u64;
    let h = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> (64 - DNS_PENDING_SLOTS.trailing_zeros())) as u32
}

/// ASCII upper case to lower case in all eight bytes of a word at once.
#[inline(always)]
pub const fn to_lower_word(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low7 = w & !HIGH;
    // Per byte, the high bit is set where the byte is >= 'A' / > 'Z'; no carry crosses bytes.
    let ge_a = low7 + ONES * (0x80 - b'A' as u64);
    let gt_z = low7 + ONES * (0x7f - b'Z' as u64);
    let upper = ge_a & !gt_z & !w & HIGH;
    w | (upper >> 2)
}

/// Step of the name hash over one (folded, zero-masked) 8-byte word.
#[inline(always)]
pub const fn hash_step(h: u64, word: u64) -> u64 {
    (h ^ word).wrapping_mul(0x0000_0100_0000_01b3)
}

/// Start value of the name hash.
pub const HASH_SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// Final mixing of the name hash (splitmix64's finaliser), so names differing in one byte
/// differ in every bit. Never 0 ("no name": folded) or [`DNS_NAME_SPLIT`].
#[inline(always)]
pub const fn hash_finish(h: u64) -> u64 {
    let mut z = h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    if z <= DNS_NAME_SPLIT { z + 2 } else { z }
}

/// The hash of a folded wire name of `len` bytes, as the kernel computes it: the words covering
/// the name, the last one zero-masked. The agent only needs it in tests.
pub fn name_hash(wire: &[u8], len: usize) -> u64 {
    let mut h = HASH_SEED;
    let mut w = 0;
    while w * 8 < len {
        let mut bytes = [0u8; 8];
        let mut i = 0;
        while i < 8 {
            let at = w * 8 + i;
            if at < len && at < wire.len() {
                bytes[i] = wire[at];
            }
            i += 1;
        }
        h = hash_step(h, to_lower_word(u64::from_le_bytes(bytes)));
        w += 1;
    }
    hash_finish(h)
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

const _: () = assert!(core::mem::size_of::<DnsKey>() == 40);
const _: () = assert!(core::mem::size_of::<DnsName>() == 256);
const _: () = assert!(core::mem::size_of::<DnsStats>() == 16);
const _: () = assert!(core::mem::size_of::<PendingSlot>() == 64);
const _: () = assert!(DNS_PENDING_SLOTS.is_power_of_two());
const _: () = assert!(DNS_NAMES_CAPACITY >= 2 * DNS_KEYS_PER_CGROUP);
const _: () = assert!(core::mem::size_of::<DnsAnswerEvent>() == DNS_ANSWER_HEADER + DNS_ANSWER_MAX);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_case_words() {
        let w = u64::from_le_bytes(*b"AbZ@[az\x03");
        assert_eq!(to_lower_word(w).to_le_bytes(), *b"abz@[az\x03");
        // Bytes above 0x7f (and label lengths, all below 'A') are left alone.
        let w = u64::from_le_bytes([0xc1, 0xda, 0x3f, b'Q', 0, 0x80, b'M', 0x7f]);
        assert_eq!(
            to_lower_word(w).to_le_bytes(),
            [0xc1, 0xda, 0x3f, b'q', 0, 0x80, b'm', 0x7f]
        );
        for b in 0u8..=255 {
            let got = to_lower_word(b as u64) as u8;
            assert_eq!(got, b.to_ascii_lowercase(), "byte {b:#x}");
        }
    }

    #[test]
    fn pending_slots_spread_ids_and_sockets() {
        // One socket with many queries in flight (a resolver, dnsperf), and many sockets with
        // the same id: no slot holds more than a few.
        let mut hits = [0u32; DNS_PENDING_SLOTS as usize];
        for id in 0..4096u16 {
            hits[pending_slot(7, id) as usize] += 1;
        }
        for cookie in 1..4096u64 {
            hits[pending_slot(cookie, 0x1234) as usize] += 1;
        }
        assert!(
            hits.iter().all(|&n| n <= 4),
            "max {}",
            hits.iter().max().unwrap_or(&0)
        );
        assert!(pending_slot(u64::MAX, u16::MAX) < DNS_PENDING_SLOTS);
    }

    #[test]
    fn node_dns_slots_round_trip() {
        for kind in 0..5u8 {
            for code in 0..16u8 {
                for bucket in (0..DNS_LATENCY_BUCKETS as u8).chain([DNS_NO_LATENCY]) {
                    let slot = node_dns_slot(kind, code, bucket);
                    assert!(slot < NODE_DNS_SLOTS);
                    assert_eq!(node_dns_key(slot), (kind, code, bucket));
                }
            }
        }
    }

    #[test]
    fn hashes_fold_case_and_ignore_padding() {
        let a = b"\x03WWW\x07Example\x03com\x00";
        let b = b"\x03www\x07example\x03com\x00garbage";
        assert_eq!(name_hash(a, a.len()), name_hash(b, a.len()));
        assert_ne!(
            name_hash(a, a.len()),
            name_hash(b"\x03www\x07example\x03org\x00", a.len())
        );
        assert_ne!(name_hash(b"\x00", 1), 0);
    }
}
