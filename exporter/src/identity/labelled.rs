//! Label resolution: each kernel key of a drained batch becomes a labelled delta, the owner's
//! identity, the peer's workload or class, the hostname its namespace resolved (kept for a
//! flow after the answer's TTL: sticky names) and the DNS question's name and type. The series
//! fold takes these and never sees a kernel key, a cgroup or the Kubernetes API.
//!
//! The deltas are produced lazily, one per key, while the fold consumes them: a drain of
//! 50,000 flows never holds 50,000 label sets at once.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use sockscope_common::{
    FlowKey, FlowStats, OverflowKey, PROTO_TCP, ROLE_SERVER,
    dns::{
        DNS_ERR_NAMES, DNS_KIND_ERROR, DNS_KIND_QUERY, DNS_KIND_RESPONSE, DNS_KIND_TIMEOUT,
        DNS_NAME_SPLIT, DNS_NO_LATENCY, DnsKey,
    },
    health::{DROP_RECEIVED, DropKey, TimingKey, TimingStats},
};

use super::{
    Identity,
    labels::{
        FlowLabels, LabelOptions, LocalLabels, comm_string, flow_labels, node_overflow_local,
        overflow_labels,
    },
    names::{presentation, qtype_name, rcode_name},
    remote::ip_from_key,
};
use crate::drain::Batch;

/// Who a delta belongs to, for expiry: its cgroup and (on Kubernetes) its pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The socket owner's cgroup (0: the node-wide overflow entry, no owner kept).
    pub cgroup_id: u64,
    /// The pod's UID, when the cgroup is a pod's.
    pub pod_uid: Option<u128>,
}

/// What a flow delta is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowKind {
    /// A flow to one peer. `preferred_port`: its port is one the workload listens on or a
    /// well-known one (< 1024), which may use every slot of the port budget.
    Peer {
        /// See above.
        preferred_port: bool,
    },
    /// An overflow entry: the owner's flows that did not fit the flow map (no peer kept).
    Overflow,
}

/// One labelled flow delta.
#[derive(Debug, Clone)]
pub struct FlowDelta {
    /// Its labels, before budgets and drops.
    pub labels: FlowLabels,
    /// Whose it is.
    pub owner: Owner,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    /// Per-peer flow or overflow entry.
    pub kind: FlowKind,
    /// The counts drained.
    pub stats: FlowStats,
}

/// A DNS question as labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Question {
    /// The name and type asked.
    Named {
        /// Presentation form.
        qname: String,
        /// Mnemonic (`A`) or `TYPE<n>`.
        qtype: String,
    },
    /// The kernel's name map lost the name before the agent read it.
    Unlearned {
        /// Mnemonic (`A`) or `TYPE<n>`.
        qtype: String,
    },
    /// The kernel folded the key into its overflow entry (no name kept).
    Folded,
    /// A message over TCP counted without its question: it did not fit the segment the
    /// message began in.
    Split,
}

/// What a DNS delta counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsEvent {
    /// Queries sent.
    Query(Question),
    /// Responses received; with the latency bucket and summed nanoseconds when the query was
    /// matched.
    Response {
        /// The question answered.
        question: Question,
        /// Response code name.
        rcode: &'static str,
        /// (kernel bucket index, sum of latencies in ns).
        latency: Option<(usize, u64)>,
    },
    /// Queries that timed out.
    Timeout(Question),
    /// Packets that are not a parseable single-question DNS message.
    Error {
        /// Why.
        reason: &'static str,
    },
}

/// One labelled DNS delta.
#[derive(Debug, Clone)]
pub struct DnsDelta {
    /// The socket owner's labels.
    pub local: LocalLabels,
    /// Whose it is.
    pub owner: Owner,
    /// What it counts.
    pub event: DnsEvent,
    /// How many.
    pub count: u64,
    /// The asking process of a query (with process labels on; the DNS families other than
    /// the watchlist's do not carry it).
    pub process: Option<String>,
}

/// One labelled TCP timing delta: samples of one bucket of one edge's histogram.
#[derive(Debug, Clone)]
pub struct TimingDelta {
    /// The edge's labels (a flow's), before budgets and drops.
    pub labels: FlowLabels,
    /// Whose it is.
    pub owner: Owner,
    /// `TIMING_CONNECT`, `TIMING_RTT` or `TIMING_LIFETIME`.
    pub kind: u8,
    /// Bucket index (the last one is +Inf).
    pub bucket: usize,
    /// Samples.
    pub count: u64,
    /// Their sum, nanoseconds.
    pub sum_ns: u64,
    /// Node-wide (owner and peer lost): no budget applies.
    pub node: bool,
}

/// One labelled packet-drop delta.
#[derive(Debug, Clone)]
pub struct DropDelta {
    /// The owner of the socket the packet belonged to; empty for the node's drops.
    pub local: LocalLabels,
    /// Whose it is (cgroup id 0 for the node).
    pub owner: Owner,
    /// The kernel's name for the reason (`NETFILTER_DROP`), or its number if the running
    /// kernel's BTF does not name it.
    pub reason: String,
    /// `sent` or `received`.
    pub direction: &'static str,
    /// Packets.
    pub count: u64,
}

/// A flow as far as its peer's name goes: owner, peer address, service port, role, protocol.
type StickyKey = (u64, [u8; 16], u16, u8, u8);

/// The hostname owner `cgroup_id` resolved for the peer of `sticky_key`: from the hostname
/// cache, else the name the same flow carried before (sticky), else empty.
fn remote_host(
    sticky: &mut HashMap<StickyKey, (String, Instant)>,
    identity: &mut Identity,
    sticky_key: StickyKey,
    now: Instant,
) -> String {
    let ip = ip_from_key(sticky_key.1);
    match identity.remote_host(sticky_key.0, ip, now) {
        Some(h) => {
            sticky.insert(sticky_key, (h.clone(), now));
            h
        }
        None => match sticky.get_mut(&sticky_key) {
            Some((h, seen)) => {
                *seen = now;
                h.clone()
            }
            None => String::new(),
        },
    }
}

/// Labels drained batches; keeps the names flows were labelled with.
pub struct Labeller {
    options: LabelOptions,
    /// The running kernel's drop reason names, by value.
    drop_reasons: std::collections::BTreeMap<u32, String>,
    /// The name each active flow was labelled with, so a long-lived connection keeps its
    /// `remote_host` after the DNS answer's TTL ends instead of splitting into a second,
    /// unnamed series. Entries idle for `sticky_for` are dropped.
    sticky: HashMap<StickyKey, (String, Instant)>,
    sticky_for: Duration,
}

enum FlowEntry<'a> {
    Peer(&'a FlowKey, &'a FlowStats),
    Overflow(&'a OverflowKey, &'a FlowStats),
}

impl Labeller {
    /// Labels with the optional labels in `options`.
    pub fn new(options: LabelOptions) -> Self {
        Labeller {
            options,
            drop_reasons: Default::default(),
            sticky: HashMap::new(),
            sticky_for: Duration::from_secs(3600),
        }
    }

    /// How long an idle flow keeps its name (the DNS TTL ceiling).
    pub fn set_sticky_for(&mut self, d: Duration) {
        self.sticky_for = d;
    }

    /// The running kernel's drop reason names (from its BTF), by value.
    pub fn set_drop_reasons(&mut self, names: std::collections::BTreeMap<u32, String>) {
        self.drop_reasons = names;
    }

    /// The batch's TCP timing deltas: per edge, then node-wide ones (cgroup id 0). Edges are
    /// labelled as their flows are, `remote_host` included.
    pub fn timings<'a>(
        &'a mut self,
        timings: &'a [(TimingKey, TimingStats)],
        identity: &'a mut Identity,
        now: Instant,
    ) -> impl Iterator<Item = TimingDelta> + 'a {
        let options = self.options;
        let sticky = &mut self.sticky;
        timings
            .iter()
            .filter(|(_, s)| !s.is_zero())
            .map(move |(key, stats)| {
                if key.cgroup_id == 0 {
                    let local = node_overflow_local();
                    let folded = OverflowKey {
                        proto: PROTO_TCP,
                        ..Default::default()
                    };
                    return TimingDelta {
                        labels: overflow_labels(&folded, &local, options),
                        owner: Owner {
                            cgroup_id: 0,
                            pod_uid: None,
                        },
                        kind: key.kind,
                        bucket: usize::from(key.bucket),
                        count: stats.count,
                        sum_ns: stats.sum_ns,
                        node: true,
                    };
                }
                let local = identity.local(key.cgroup_id);
                let flow = FlowKey {
                    cgroup_id: key.cgroup_id,
                    remote_addr: key.remote_addr,
                    port: key.port,
                    role: key.role,
                    proto: PROTO_TCP,
                    ..Default::default()
                };
                let host = remote_host(
                    sticky,
                    identity,
                    (
                        key.cgroup_id,
                        key.remote_addr,
                        key.port,
                        key.role,
                        PROTO_TCP,
                    ),
                    now,
                );
                let ip = ip_from_key(key.remote_addr);
                TimingDelta {
                    labels: flow_labels(&flow, &local, identity.remote(ip), host, options),
                    owner: Owner {
                        cgroup_id: key.cgroup_id,
                        pod_uid: local.pod_uid,
                    },
                    kind: key.kind,
                    bucket: usize::from(key.bucket),
                    count: stats.count,
                    sum_ns: stats.sum_ns,
                    node: false,
                }
            })
    }

    /// The batch's packet-drop deltas, named with the running kernel's reason names.
    pub fn drops<'a>(
        &'a self,
        drops: &'a [(DropKey, u64)],
        identity: &'a mut Identity,
    ) -> impl Iterator<Item = DropDelta> + 'a {
        drops
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(move |(key, count)| {
                let local = if key.cgroup_id == 0 {
                    super::Local::default()
                } else {
                    identity.local(key.cgroup_id)
                };
                DropDelta {
                    local: LocalLabels::of(&local),
                    owner: Owner {
                        cgroup_id: key.cgroup_id,
                        pod_uid: local.pod_uid,
                    },
                    reason: self
                        .drop_reasons
                        .get(&key.reason)
                        .cloned()
                        .unwrap_or_else(|| key.reason.to_string()),
                    direction: if key.direction == DROP_RECEIVED {
                        "received"
                    } else {
                        "sent"
                    },
                    count: *count,
                }
            })
    }

    /// The batch's flow deltas: per-peer flows, then the overflow entries (per owner, and
    /// node-wide with cgroup id 0). `remote_host` is looked up now, after the drain applied
    /// every DNS answer the kernel forwarded before these flows were counted.
    pub fn flows<'a>(
        &'a mut self,
        flows: &'a [(FlowKey, FlowStats)],
        overflow: &'a [(OverflowKey, FlowStats)],
        identity: &'a mut Identity,
        now: Instant,
    ) -> impl Iterator<Item = FlowDelta> + 'a {
        let keep = self.sticky_for;
        self.sticky
            .retain(|_, (_, seen)| now.saturating_duration_since(*seen) < keep);
        let options = self.options;
        let sticky = &mut self.sticky;
        flows
            .iter()
            .map(|(k, s)| FlowEntry::Peer(k, s))
            .chain(overflow.iter().map(|(k, s)| FlowEntry::Overflow(k, s)))
            .filter_map(move |entry| match entry {
                FlowEntry::Peer(key, stats) => {
                    if stats.is_zero() {
                        return None;
                    }
                    let local = identity.local(key.cgroup_id);
                    let ip = ip_from_key(key.remote_addr);
                    let sticky_key = (
                        key.cgroup_id,
                        key.remote_addr,
                        key.port,
                        key.role,
                        key.proto,
                    );
                    let host = remote_host(sticky, identity, sticky_key, now);
                    let labels = flow_labels(key, &local, identity.remote(ip), host, options);
                    Some(FlowDelta {
                        labels,
                        owner: Owner {
                            cgroup_id: key.cgroup_id,
                            pod_uid: local.pod_uid,
                        },
                        proto: key.proto,
                        kind: FlowKind::Peer {
                            preferred_port: key.role == ROLE_SERVER || key.port < 1024,
                        },
                        stats: *stats,
                    })
                }
                FlowEntry::Overflow(key, stats) => {
                    if stats.is_zero() {
                        return None;
                    }
                    let local = if key.cgroup_id == 0 {
                        node_overflow_local()
                    } else {
                        identity.local(key.cgroup_id)
                    };
                    Some(FlowDelta {
                        labels: overflow_labels(key, &local, options),
                        owner: Owner {
                            cgroup_id: key.cgroup_id,
                            pod_uid: local.pod_uid,
                        },
                        proto: key.proto,
                        kind: FlowKind::Overflow,
                        stats: *stats,
                    })
                }
            })
    }

    /// The batch's DNS deltas, then its timed-out queries (one each).
    pub fn dns<'a>(
        &'a self,
        batch: &'a Batch,
        identity: &'a mut Identity,
    ) -> impl Iterator<Item = DnsDelta> + 'a {
        let counted = batch
            .dns
            .iter()
            .filter(|(_, s)| s.count > 0)
            .map(|(k, s)| (k, s.count, s.sum_ns));
        let timed_out = batch.dns_timeouts.iter().map(|k| (k, 0, 0));
        counted
            .map(|e| (e, false))
            .chain(timed_out.map(|e| (e, true)))
            .filter_map(move |((key, count, sum_ns), swept)| {
                let local = if key.cgroup_id == 0 {
                    node_overflow_local()
                } else {
                    identity.local(key.cgroup_id)
                };
                let question = || question(key, &batch.qnames);
                let (event, count) = if swept {
                    (DnsEvent::Timeout(question()), 1)
                } else {
                    let event = match key.kind {
                        DNS_KIND_QUERY => DnsEvent::Query(question()),
                        DNS_KIND_RESPONSE => DnsEvent::Response {
                            question: question(),
                            rcode: rcode_name(key.code),
                            latency: (key.bucket != DNS_NO_LATENCY)
                                .then_some((usize::from(key.bucket), sum_ns)),
                        },
                        DNS_KIND_TIMEOUT => DnsEvent::Timeout(question()),
                        DNS_KIND_ERROR => DnsEvent::Error {
                            reason: DNS_ERR_NAMES
                                .get(usize::from(key.code))
                                .copied()
                                .unwrap_or("unknown"),
                        },
                        _ => return None,
                    };
                    (event, count)
                };
                let process = (self.options.process && key.kind == DNS_KIND_QUERY)
                    .then(|| comm_string(&key.comm));
                Some(DnsDelta {
                    local: LocalLabels::of(&local),
                    owner: Owner {
                        cgroup_id: key.cgroup_id,
                        pod_uid: local.pod_uid,
                    },
                    event,
                    count,
                    process,
                })
            })
    }
}

/// The question of a DNS key: named from the wire names the drain read from the kernel.
fn question(key: &DnsKey, names: &HashMap<u64, Box<[u8]>>) -> Question {
    match key.name_hash {
        0 => return Question::Folded,
        DNS_NAME_SPLIT => return Question::Split,
        _ => {}
    }
    let qtype = qtype_name(key.qtype);
    match names.get(&key.name_hash) {
        Some(wire) => Question::Named {
            qname: presentation(wire),
            qtype,
        },
        None => Question::Unlearned { qtype },
    }
}
