//! TCP health (connect time, RTT, connection lifetime) and packet drops: types shared by the
//! eBPF programs and the agent.
//!
//! Timings are histograms the kernel already sorted into buckets: a sample adds 1 and its
//! nanoseconds to the key {owner, peer, port, role, kind, bucket} of the current generation's
//! [`TIMING_MAP_NAMES`] map, so one key of an edge exists per bucket that saw a sample in the
//! interval, and the agent adds each to the bucket of its histogram.

/// [`TimingKey::kind`]: SYN sent -> established, on the client (`connect()`'s duration,
/// SYN retransmits included).
pub const TIMING_CONNECT: u8 = 0;
/// The smoothed RTT (`srtt`) of a live connection, sampled once per socket per drain interval
/// while it sends, and at close.
pub const TIMING_RTT: u8 = 1;
/// Established -> closed (a connection's lifetime, as bcc's tcplife reports it).
pub const TIMING_LIFETIME: u8 = 2;
/// Number of timing kinds.
pub const TIMING_KINDS: usize = 3;

/// Upper bounds per kind (inclusive, nanoseconds), as in the Prometheus histograms:
/// - connect: a datacenter handshake takes 0.1-1 ms, a WAN one 10-250 ms; the initial SYN
///   retransmission timeout is 1 s (`TCP_TIMEOUT_INIT`), so (1 s, 3 s] is a connect that needed
///   one SYN retransmit (a listener dropping SYNs: a full accept queue, a filter), beyond 3 s
///   two or more;
/// - RTT: 100 us to 1 ms within a datacenter, 10-250 ms across regions and the internet;
/// - lifetime: from a request-per-connection client (milliseconds) to day-long pools.
pub const TIMING_BOUNDS_NS: [[u64; TIMING_BOUNDS]; TIMING_KINDS] = [
    [
        250_000,
        500_000,
        1_000_000,
        2_500_000,
        10_000_000,
        50_000_000,
        250_000_000,
        1_000_000_000,
        3_000_000_000,
        10_000_000_000,
    ],
    [
        100_000,
        250_000,
        500_000,
        1_000_000,
        2_500_000,
        10_000_000,
        50_000_000,
        100_000_000,
        250_000_000,
        1_000_000_000,
    ],
    [
        10_000_000,
        100_000_000,
        1_000_000_000,
        10_000_000_000,
        60_000_000_000,
        300_000_000_000,
        1_800_000_000_000,
        3_600_000_000_000,
        21_600_000_000_000,
        86_400_000_000_000,
    ],
];
/// Bounds per kind.
pub const TIMING_BOUNDS: usize = 10;
/// Buckets per kind, +Inf included.
pub const TIMING_BUCKETS: usize = TIMING_BOUNDS + 1;

/// The bucket of a sample of `ns` nanoseconds of timing `kind` (the last one is +Inf).
#[inline(always)]
pub fn timing_bucket(kind: u8, ns: u64) -> u8 {
    let bounds = match kind {
        TIMING_CONNECT => &TIMING_BOUNDS_NS[0],
        TIMING_RTT => &TIMING_BOUNDS_NS[1],
        _ => &TIMING_BOUNDS_NS[2],
    };
    let mut b = 0u8;
    while (b as usize) < TIMING_BOUNDS {
        if ns <= bounds[b as usize] {
            return b;
        }
        b += 1;
    }
    TIMING_BOUNDS as u8
}

/// Names of the timing maps, by generation (flipped and drained with the flow maps).
pub const TIMING_MAP_NAMES: [&str; 2] = ["TIMINGS_0", "TIMINGS_1"];
/// Most entries of each timing map (fewer on many-CPU nodes: the agent sizes it to a kernel
/// memory budget): an edge takes one per bucket its samples fell in during one interval, of
/// each kind.
pub const TIMING_MAP_CAPACITY: u32 = 16384;
/// Node-wide timing totals by kind and bucket, never emptied: where a sample goes when the
/// timing map is full or its owner is not known (owner and peer lost, the sample kept).
pub const NODE_TIMINGS_MAP: &str = "NODE_TIMINGS";
/// Slots of [`NODE_TIMINGS_MAP`].
pub const NODE_TIMING_SLOTS: u32 = (TIMING_KINDS * TIMING_BUCKETS) as u32;

/// The [`NODE_TIMINGS_MAP`] slot of a kind and bucket.
#[inline(always)]
pub const fn node_timing_slot(kind: u8, bucket: u8) -> u32 {
    let k = if kind as usize >= TIMING_KINDS {
        TIMING_KINDS as u32 - 1
    } else {
        kind as u32
    };
    let b = if bucket as usize >= TIMING_BUCKETS {
        TIMING_BUCKETS as u32 - 1
    } else {
        bucket as u32
    };
    k * TIMING_BUCKETS as u32 + b
}

/// Key of the timing maps: an edge (without process or peer port: a histogram is per owner
/// and peer address, not per connection), a kind and a bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimingKey {
    /// cgroup v2 id of the socket's owner.
    pub cgroup_id: u64,
    /// Remote address, v4-mapped for IPv4.
    pub remote_addr: [u8; 16],
    /// Service port in host byte order (as in `FlowKey::port`).
    pub port: u16,
    /// `ROLE_CLIENT` or `ROLE_SERVER`.
    pub role: u8,
    /// One of the `TIMING_*` kinds.
    pub kind: u8,
    /// Bucket index, [`TIMING_BOUNDS`] for +Inf.
    pub bucket: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 3],
}

/// Samples in one bucket of one edge.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimingStats {
    /// Samples.
    pub count: u64,
    /// Their sum, nanoseconds.
    pub sum_ns: u64,
}

impl TimingStats {
    /// Adds `other`, wrapping like the kernel's counters.
    pub fn add(&mut self, other: &TimingStats) {
        self.count = self.count.wrapping_add(other.count);
        self.sum_ns = self.sum_ns.wrapping_add(other.sum_ns);
    }

    /// Subtracts `other`, wrapping (the inverse of [`Self::add`]).
    pub fn sub(&mut self, other: &TimingStats) {
        self.count = self.count.wrapping_sub(other.count);
        self.sum_ns = self.sum_ns.wrapping_sub(other.sum_ns);
    }

    /// True when nothing was counted.
    pub fn is_zero(&self) -> bool {
        self.count == 0
    }
}

/// The kind and bucket of a [`NODE_TIMINGS_MAP`] slot (inverse of [`node_timing_slot`]).
pub const fn node_timing_key(slot: u32) -> (u8, u8) {
    (
        (slot / TIMING_BUCKETS as u32) as u8,
        (slot % TIMING_BUCKETS as u32) as u8,
    )
}

/// [`DropKey::direction`]: a packet a local socket sent (or the host forwarded) was dropped.
pub const DROP_SENT: u8 = 0;
/// A packet arriving at this host was dropped.
pub const DROP_RECEIVED: u8 = 1;

/// Names of the drop maps, by generation.
pub const DROP_MAP_NAMES: [&str; 2] = ["DROPS_0", "DROPS_1"];
/// Entries of each drop map: {owner, reason, direction} seen in one interval.
pub const DROP_MAP_CAPACITY: u32 = 1024;
/// Node-wide drop totals by reason and direction, never emptied: where a drop goes when the
/// drop map is full (its owner lost, the count kept).
pub const NODE_DROPS_MAP: &str = "NODE_DROPS";
/// Reasons the node-wide slots tell apart; a higher reason shares the last one.
pub const NODE_DROP_REASONS: u32 = 256;
/// Slots of [`NODE_DROPS_MAP`].
pub const NODE_DROP_SLOTS: u32 = NODE_DROP_REASONS * 2;

/// The [`NODE_DROPS_MAP`] slot of a reason and direction.
#[inline(always)]
pub const fn node_drop_slot(reason: u32, direction: u8) -> u32 {
    let r = if reason >= NODE_DROP_REASONS {
        NODE_DROP_REASONS - 1
    } else {
        reason
    };
    r * 2 + (direction & 1) as u32
}

/// Key of the drop maps. `cgroup_id` 0: the packet belonged to no socket sockscope tracks
/// (counted for the node).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropKey {
    /// cgroup v2 id of the owner of the socket the packet belonged to, or 0.
    pub cgroup_id: u64,
    /// The kernel's `enum skb_drop_reason` value (its names come from the running kernel's
    /// BTF, not from here: the enum changes between kernels).
    pub reason: u32,
    /// [`DROP_SENT`] or [`DROP_RECEIVED`].
    pub direction: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 3],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        assert_eq!(timing_bucket(TIMING_CONNECT, 0), 0);
        assert_eq!(timing_bucket(TIMING_CONNECT, 250_000), 0);
        assert_eq!(timing_bucket(TIMING_CONNECT, 250_001), 1);
        // One SYN retransmit: just over a second.
        assert_eq!(timing_bucket(TIMING_CONNECT, 1_004_000_000), 8);
        assert_eq!(timing_bucket(TIMING_CONNECT, u64::MAX), TIMING_BOUNDS as u8);
        assert_eq!(timing_bucket(TIMING_RTT, 40_000_000), 6);
        assert_eq!(timing_bucket(TIMING_LIFETIME, 5_000_000_000), 3);
        for bounds in TIMING_BOUNDS_NS {
            assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
        }
    }

    #[test]
    fn node_slots_are_distinct_and_in_range() {
        let mut seen = [false; NODE_TIMING_SLOTS as usize];
        for k in 0..TIMING_KINDS as u8 {
            for b in 0..TIMING_BUCKETS as u8 {
                let s = node_timing_slot(k, b) as usize;
                assert!(!seen[s]);
                seen[s] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(node_drop_slot(12, DROP_SENT), 24);
        assert_eq!(node_drop_slot(12, DROP_RECEIVED), 25);
        assert_eq!(node_drop_slot(9999, DROP_RECEIVED), NODE_DROP_SLOTS - 1);
    }
}
