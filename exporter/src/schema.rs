//! Every metric family sockscope exports, described once: name, type, unit, help and labels.
//! The series register under these descriptions, the config checks `drop_labels` against
//! them, the exporters take names, help and units from them, and a test holds the README's
//! metrics table to them.

/// A label set: its (name, value) pairs in exposition order.
pub trait LabelSet: Send + Sync + 'static {
    /// Calls `f` with each label.
    fn visit(&self, f: &mut dyn FnMut(&'static str, &str));

    /// The labels as an iterator, for label sets stored by the thousand: the exporters walk
    /// them without a call through `visit` per label.
    fn pairs(&self) -> Option<Pairs<'_>> {
        None
    }
}

/// The labels of a set stored as its family's names, which of them are present, and their
/// values back to back (how the series store label sets).
#[derive(Debug, Clone)]
pub struct Pairs<'a> {
    names: &'static [&'static str],
    present: u16,
    ends: &'a [u16],
    values: &'a str,
    next_name: usize,
    next_value: usize,
    start: usize,
}

impl<'a> Pairs<'a> {
    /// Bit i of `present`: `names[i]` is there; `ends`: where each present value ends in
    /// `values`.
    pub fn new(
        names: &'static [&'static str],
        present: u16,
        ends: &'a [u16],
        values: &'a str,
    ) -> Self {
        Pairs {
            names,
            present,
            ends,
            values,
            next_name: 0,
            next_value: 0,
            start: 0,
        }
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'static str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        while let Some(name) = self.names.get(self.next_name) {
            let bit = self.present & (1 << self.next_name);
            self.next_name += 1;
            if bit == 0 {
                continue;
            }
            let end = usize::from(*self.ends.get(self.next_value)?);
            self.next_value += 1;
            let value = self.values.get(self.start..end)?;
            self.start = end;
            return Some((name, value));
        }
        None
    }
}

/// `impl LabelSet` for a struct of `String` label fields, optionally led by a flattened
/// label set: `label_set!(T { [local] qname, qtype })`.
macro_rules! label_set {
    ($ty:ty { $([$flat:ident])? $($field:ident),* }) => {
        impl $crate::schema::LabelSet for $ty {
            fn visit(&self, f: &mut dyn FnMut(&'static str, &str)) {
                $($crate::schema::LabelSet::visit(&self.$flat, f);)?
                $(f(stringify!($field), &self.$field);)*
            }
        }
    };
}
pub(crate) use label_set;

/// What kind of values a family has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic total (`_total` samples in the text formats, an OTLP monotonic sum).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Bucketed observations with their sum and count.
    Histogram,
}

impl Kind {
    /// As written in `# TYPE` lines and the README.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The unit of a family's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Counts, ratios, flags.
    None,
    /// Bytes (`_bytes` names).
    Bytes,
    /// Seconds (`_seconds` names).
    Seconds,
}

impl Unit {
    /// The UCUM code OTLP carries.
    pub fn ucum(self) -> &'static str {
        match self {
            Unit::None => "",
            Unit::Bytes => "By",
            Unit::Seconds => "s",
        }
    }
}

/// One family.
#[derive(Debug, PartialEq, Eq)]
pub struct Family {
    /// Registration name: counters without `_total` (the text formats add it, OTLP does not).
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Unit of the values.
    pub unit: Unit,
    /// One sentence, without the final full stop (the exposition adds it).
    pub help: &'static str,
    /// Label names in exposition order; optional ones (`process`, `remote_ip`) are absent
    /// unless their flag is on.
    pub labels: &'static [&'static str],
    /// Whether the config file may drop its labels (`metrics: {<name>: {drop_labels}}`).
    pub droppable: bool,
}

impl Family {
    /// The name samples carry in Prometheus text (`_total` for counters).
    pub fn exposed(&self) -> String {
        match self.kind {
            Kind::Counter => format!("{}_total", self.name),
            _ => self.name.to_string(),
        }
    }
}

/// The labels of the socket owner, first in every per-workload family.
pub const LOCAL_LABELS: [&str; 5] = ["namespace", "workload", "workload_kind", "pod", "container"];

/// Labels of every TCP/UDP series.
pub const FLOW_LABELS: [&str; 13] = [
    "namespace",
    "workload",
    "workload_kind",
    "pod",
    "container",
    "remote_namespace",
    "remote_workload",
    "remote_host",
    "remote_class",
    "port",
    "role",
    "process",
    "remote_ip",
];

/// Flow labels present only when their flag is on.
pub const OPTIONAL_LABELS: [&str; 2] = ["process", "remote_ip"];

/// Labels of the TCP reset counter: a flow's, and which way the reset went.
pub const RESET_LABELS: [&str; 14] = [
    "namespace",
    "workload",
    "workload_kind",
    "pod",
    "container",
    "remote_namespace",
    "remote_workload",
    "remote_host",
    "remote_class",
    "port",
    "role",
    "process",
    "remote_ip",
    "direction",
];

/// Labels the TCP timing histograms drop unless the config file says otherwise (`metrics:`
/// with `drop_labels` for the family replaces this list): one histogram per workload edge,
/// not per pod, process or peer address, so its 12 series per edge stay affordable.
pub const TIMING_DEFAULT_DROPS: [&str; 4] = ["pod", "container", "process", "remote_ip"];

/// Labels of the packet drop counter.
const DROP_LABELS: [&str; 7] = [
    "namespace",
    "workload",
    "workload_kind",
    "pod",
    "container",
    "reason",
    "direction",
];

const DNS_QUERY_LABELS: [&str; 8] = [
    "namespace",
    "workload",
    "workload_kind",
    "pod",
    "container",
    "qname",
    "qtype",
    "qname_class",
];
const DNS_RESPONSE_LABELS: [&str; 9] = [
    "namespace",
    "workload",
    "workload_kind",
    "pod",
    "container",
    "qname",
    "qtype",
    "rcode",
    "qname_class",
];
const DNS_WATCHLIST_LABELS: [&str; 8] = [
    "namespace",
    "workload",
    "workload_kind",
    "pod",
    "container",
    "list",
    "qname",
    "process",
];
const DNS_LATENCY_LABELS: [&str; 6] = [
    "namespace",
    "workload",
    "workload_kind",
    "pod",
    "container",
    "rcode",
];
const DNS_ERROR_LABELS: [&str; 6] = [
    "namespace",
    "workload",
    "workload_kind",
    "pod",
    "container",
    "reason",
];

const fn flow(name: &'static str, unit: Unit, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Counter,
        unit,
        help,
        labels: &FLOW_LABELS,
        droppable: true,
    }
}

const fn own(
    name: &'static str,
    kind: Kind,
    unit: Unit,
    labels: &'static [&'static str],
    help: &'static str,
) -> Family {
    Family {
        name,
        kind,
        unit,
        help,
        labels,
        droppable: false,
    }
}

pub const TCP_SENT_BYTES: Family = flow(
    "sockscope_tcp_sent_bytes",
    Unit::Bytes,
    "TCP payload bytes sent and acknowledged by the peer",
);
pub const TCP_RECEIVED_BYTES: Family = flow(
    "sockscope_tcp_received_bytes",
    Unit::Bytes,
    "TCP payload bytes received",
);
pub const TCP_CONNECTIONS_OPENED: Family = flow(
    "sockscope_tcp_connections_opened",
    Unit::None,
    "TCP connections established",
);
pub const TCP_CONNECTIONS_CLOSED: Family = flow(
    "sockscope_tcp_connections_closed",
    Unit::None,
    "TCP connections closed",
);
pub const TCP_CONNECT_FAILURES: Family = flow(
    "sockscope_tcp_connect_failures",
    Unit::None,
    "Client TCP connects that failed (refused, timed out, reset, aborted)",
);
pub const TCP_RETRANSMITS: Family = flow(
    "sockscope_tcp_retransmits",
    Unit::None,
    "Retransmitted TCP segments",
);
pub const TCP_RESETS: Family = Family {
    labels: &RESET_LABELS,
    ..flow(
        "sockscope_tcp_resets",
        Unit::None,
        "TCP resets sent and received, by direction",
    )
};
pub const TCP_CONNECT_DURATION: Family = Family {
    kind: Kind::Histogram,
    ..flow(
        "sockscope_tcp_connect_duration_seconds",
        Unit::Seconds,
        "Time from a client's SYN to the connection established (SYN retransmits included), per workload edge",
    )
};
pub const TCP_RTT: Family = Family {
    kind: Kind::Histogram,
    ..flow(
        "sockscope_tcp_rtt_seconds",
        Unit::Seconds,
        "Smoothed round-trip time of live connections, sampled once per connection per drain interval while it sends and at its close, per workload edge",
    )
};
pub const TCP_CONNECTION_DURATION: Family = Family {
    kind: Kind::Histogram,
    ..flow(
        "sockscope_tcp_connection_duration_seconds",
        Unit::Seconds,
        "Time from a connection established to its close, per workload edge",
    )
};
pub const UDP_SENT_BYTES: Family = flow(
    "sockscope_udp_sent_bytes",
    Unit::Bytes,
    "UDP payload bytes sent",
);
pub const UDP_RECEIVED_BYTES: Family = flow(
    "sockscope_udp_received_bytes",
    Unit::Bytes,
    "UDP payload bytes received",
);

pub const DNS_QUERIES: Family = Family {
    droppable: true,
    ..own(
        "sockscope_dns_queries",
        Kind::Counter,
        Unit::None,
        &DNS_QUERY_LABELS,
        "DNS queries sent to port 53 (UDP and TCP), by question name and type, and whether the name is the cluster's own, in a configured class, or external",
    )
};
pub const DNS_RESPONSES: Family = Family {
    droppable: true,
    ..own(
        "sockscope_dns_responses",
        Kind::Counter,
        Unit::None,
        &DNS_RESPONSE_LABELS,
        "DNS responses received from port 53 (UDP and TCP), by question name, type, response code and name class",
    )
};
pub const DNS_LATENCY: Family = Family {
    droppable: true,
    ..own(
        "sockscope_dns_latency_seconds",
        Kind::Histogram,
        Unit::Seconds,
        &DNS_LATENCY_LABELS,
        "Time from a DNS query leaving the socket to its response arriving, measured in the kernel",
    )
};
pub const DNS_TIMEOUTS: Family = Family {
    droppable: true,
    ..own(
        "sockscope_dns_timeouts",
        Kind::Counter,
        Unit::None,
        &DNS_QUERY_LABELS,
        "DNS queries that got no response within the DNS timeout",
    )
};
pub const DNS_PARSE_ERRORS: Family = Family {
    droppable: true,
    ..own(
        "sockscope_dns_parse_errors",
        Kind::Counter,
        Unit::None,
        &DNS_ERROR_LABELS,
        "Packets to or from port 53 that are not a parseable single-question DNS message, by reason",
    )
};
pub const DNS_WATCHLIST_QUERIES: Family = own(
    "sockscope_dns_watchlist_queries",
    Kind::Counter,
    Unit::None,
    &DNS_WATCHLIST_LABELS,
    "DNS queries for a name on a domain watchlist, by list and name (never folded into ~other: beyond the qname budget a name counts under the watchlist entry it matched)",
);
pub const DNS_WATCHLIST_ENTRIES: Family = own(
    "sockscope_dns_watchlist_entries",
    Kind::Gauge,
    Unit::None,
    &["list"],
    "Entries (names and *.suffix patterns) of each domain watchlist in force",
);
pub const DNS_WATCHLIST_RELOADS: Family = own(
    "sockscope_dns_watchlist_reloads",
    Kind::Counter,
    Unit::None,
    &["list", "result"],
    "Domain watchlist files re-read after they changed, by result: ok, or error (the previous entries stay in force)",
);
pub const DNS_ANSWERS: Family = own(
    "sockscope_dns_answers",
    Kind::Counter,
    Unit::None,
    &["result"],
    "DNS responses with answers, by what became of them: cached (named addresses), no_addresses, undecodable, no_namespace, name_too_long (refused), unmatched (no pending query of the socket asked it: never forwarded, names nothing)",
);
pub const DNS_HOST_CACHE_ENTRIES: Family = own(
    "sockscope_dns_host_cache_entries",
    Kind::Gauge,
    Unit::None,
    &[],
    "(network namespace, IP) entries in the hostname cache",
);
pub const DNS_HOST_CACHE_EVICTIONS: Family = own(
    "sockscope_dns_host_cache_evictions",
    Kind::Counter,
    Unit::None,
    &[],
    "Hostname cache entries evicted to make room for newer ones",
);

pub const BUILD_INFO: Family = own(
    "sockscope_build_info",
    Kind::Gauge,
    Unit::None,
    &["version", "arch"],
    "sockscope build; always 1",
);
pub const BPF_PROGRAM_ATTACHED: Family = own(
    "sockscope_bpf_program_attached",
    Kind::Gauge,
    Unit::None,
    &["program"],
    "1 if the eBPF program is attached, 0 if loading or attaching it failed",
);
pub const BPF_PROGRAM_RUN_SECONDS: Family = own(
    "sockscope_bpf_program_run_seconds",
    Kind::Counter,
    Unit::Seconds,
    &["program"],
    "Time spent in the eBPF program (counts only while kernel.bpf_stats_enabled=1)",
);
pub const BPF_PROGRAM_RUNS: Family = own(
    "sockscope_bpf_program_runs",
    Kind::Counter,
    Unit::None,
    &["program"],
    "Invocations of the eBPF program (counts only while kernel.bpf_stats_enabled=1)",
);
pub const BPF_MAP_ENTRIES: Family = own(
    "sockscope_bpf_map_entries",
    Kind::Gauge,
    Unit::None,
    &["map"],
    "Entries in the eBPF map at the last drain",
);
pub const BPF_MAP_CAPACITY: Family = own(
    "sockscope_bpf_map_capacity",
    Kind::Gauge,
    Unit::None,
    &["map"],
    "Maximum entries of the eBPF map",
);
pub const EVENTS_LOST: Family = own(
    "sockscope_events_lost",
    Kind::Counter,
    Unit::None,
    &["source"],
    "Events the kernel side could not record (their counts are missing), by source",
);
pub const EVENTS_FOLDED: Family = own(
    "sockscope_events_folded",
    Kind::Counter,
    Unit::None,
    &["source"],
    "Kernel updates whose counts were kept without their peer (remote_class=\"~overflow\") or, past the overflow map, without their owner (workload=\"~overflow\"), by source",
);
pub const DRAIN_MEMBARRIER_FALLBACKS: Family = own(
    "sockscope_drain_membarrier_fallbacks",
    Kind::Counter,
    Unit::None,
    &[],
    "Drains that could not wait for the eBPF programs with membarrier(2) and paused 50ms instead",
);
pub const WEB_REFUSED: Family = own(
    "sockscope_web_refused",
    Kind::Counter,
    Unit::None,
    &["reason"],
    "HTTP requests and connections the endpoint refused: connections (over --web-max-connections), requests (over --web-max-requests), logins (bcrypt verifications busy), unauthorized, timeout (a response not taken within --web-timeout, cut)",
);
pub const DRAIN_INTERVAL: Family = own(
    "sockscope_drain_interval_seconds",
    Kind::Gauge,
    Unit::Seconds,
    &[],
    "The configured time between drains (--interval)",
);
pub const LAST_DRAIN_TIMESTAMP: Family = own(
    "sockscope_last_drain_timestamp_seconds",
    Kind::Gauge,
    Unit::Seconds,
    &[],
    "Unix time at which the last drain completed",
);
pub const DRAIN_DURATION: Family = own(
    "sockscope_drain_duration_seconds",
    Kind::Histogram,
    Unit::Seconds,
    &[],
    "Time to drain the kernel maps and fold the deltas",
);
pub const DRAIN_ERRORS: Family = own(
    "sockscope_drain_errors",
    Kind::Counter,
    Unit::None,
    &[],
    "Map entries that could not be read or deleted while draining",
);
pub const OTLP_EXPORTS: Family = own(
    "sockscope_otlp_exports",
    Kind::Counter,
    Unit::None,
    &[],
    "OTLP export requests the collector accepted",
);
pub const OTLP_EXPORT_FAILURES: Family = own(
    "sockscope_otlp_export_failures",
    Kind::Counter,
    Unit::None,
    &["reason"],
    "Failed OTLP export attempts: unavailable (connection failed, 429/502/503/504, gRPC UNAVAILABLE; retried with backoff), timeout, rejected (not retried)",
);
pub const OTLP_LAST_EXPORT_DURATION: Family = own(
    "sockscope_otlp_last_export_duration_seconds",
    Kind::Gauge,
    Unit::Seconds,
    &[],
    "Duration of the last successful OTLP export",
);
pub const OTLP_LAST_EXPORT_BYTES: Family = own(
    "sockscope_otlp_last_export_bytes",
    Kind::Gauge,
    Unit::Bytes,
    &[],
    "Size of the last OTLP export request",
);
pub const SERIES_OVERFLOW: Family = own(
    "sockscope_series_overflow",
    Kind::Counter,
    Unit::None,
    &["metric", "label"],
    "Samples whose label value was folded into ~other by a cardinality budget, by metric and label",
);
pub const SERIES_EXPIRED: Family = own(
    "sockscope_series_expired",
    Kind::Counter,
    Unit::None,
    &[],
    "Series removed because their pod was deleted (or cgroup removed) and they stayed unchanged for the expiry grace",
);
pub const KUBERNETES_UP: Family = own(
    "sockscope_kubernetes_up",
    Kind::Gauge,
    Unit::None,
    &[],
    "1 when every Kubernetes API watch is listed and streaming; 0 while any is failing (labels already known keep being used)",
);
pub const KUBERNETES_WATCH_UP: Family = own(
    "sockscope_kubernetes_watch_up",
    Kind::Gauge,
    Unit::None,
    &["watch"],
    "1 when this Kubernetes API watch is listed and streaming",
);
pub const KUBERNETES_WATCH_ERRORS: Family = own(
    "sockscope_kubernetes_watch_errors",
    Kind::Counter,
    Unit::None,
    &["watch"],
    "Failed lists, watches and connections to the Kubernetes API, by watch",
);
pub const KUBERNETES_OBJECTS: Family = own(
    "sockscope_kubernetes_objects",
    Kind::Gauge,
    Unit::None,
    &["watch"],
    "Objects each watch currently knows",
);
pub const REMOTE_INDEX_ENTRIES: Family = own(
    "sockscope_kubernetes_remote_index_entries",
    Kind::Gauge,
    Unit::None,
    &[],
    "Addresses (pod IPs, Service ClusterIPs, node addresses) in the remote index",
);
pub const PACKET_DROPS: Family = Family {
    droppable: true,
    ..own(
        "sockscope_packet_drops",
        Kind::Counter,
        Unit::None,
        &DROP_LABELS,
        "Packets the kernel dropped, by its drop reason and direction; of the workload whose socket the packet belonged to, else of the node (empty local labels)",
    )
};
pub const METADATA_MISSES: Family = own(
    "sockscope_metadata_misses",
    Kind::Counter,
    Unit::None,
    &["reason"],
    "Pod cgroups labelled from the cgroup path alone (pod UID, short container id) because the API had not described them, per drain and cgroup, by reason",
);

/// Every family, in exposition order.
pub const ALL: [&Family; 50] = [
    &TCP_SENT_BYTES,
    &TCP_RECEIVED_BYTES,
    &TCP_CONNECTIONS_OPENED,
    &TCP_CONNECTIONS_CLOSED,
    &TCP_CONNECT_FAILURES,
    &TCP_RETRANSMITS,
    &TCP_RESETS,
    &TCP_CONNECT_DURATION,
    &TCP_RTT,
    &TCP_CONNECTION_DURATION,
    &UDP_SENT_BYTES,
    &UDP_RECEIVED_BYTES,
    &PACKET_DROPS,
    &DNS_QUERIES,
    &DNS_RESPONSES,
    &DNS_LATENCY,
    &DNS_TIMEOUTS,
    &DNS_PARSE_ERRORS,
    &DNS_WATCHLIST_QUERIES,
    &DNS_WATCHLIST_ENTRIES,
    &DNS_WATCHLIST_RELOADS,
    &DNS_ANSWERS,
    &DNS_HOST_CACHE_ENTRIES,
    &DNS_HOST_CACHE_EVICTIONS,
    &BUILD_INFO,
    &BPF_PROGRAM_ATTACHED,
    &BPF_PROGRAM_RUN_SECONDS,
    &BPF_PROGRAM_RUNS,
    &BPF_MAP_ENTRIES,
    &BPF_MAP_CAPACITY,
    &EVENTS_LOST,
    &EVENTS_FOLDED,
    &DRAIN_MEMBARRIER_FALLBACKS,
    &WEB_REFUSED,
    &DRAIN_INTERVAL,
    &LAST_DRAIN_TIMESTAMP,
    &DRAIN_DURATION,
    &DRAIN_ERRORS,
    &OTLP_EXPORTS,
    &OTLP_EXPORT_FAILURES,
    &OTLP_LAST_EXPORT_DURATION,
    &OTLP_LAST_EXPORT_BYTES,
    &SERIES_OVERFLOW,
    &SERIES_EXPIRED,
    &KUBERNETES_UP,
    &KUBERNETES_WATCH_UP,
    &KUBERNETES_WATCH_ERRORS,
    &KUBERNETES_OBJECTS,
    &REMOTE_INDEX_ENTRIES,
    &METADATA_MISSES,
];

/// The families whose labels the config file may drop.
pub fn droppable() -> impl Iterator<Item = &'static Family> {
    ALL.iter().copied().filter(|f| f.droppable)
}

/// The family exposed (or registered) under `name`: `x_total` and `x` both find counter `x`.
pub fn find(name: &str) -> Option<&'static Family> {
    let base = name.strip_suffix("_total");
    ALL.iter()
        .copied()
        .find(|f| f.name == name || (f.kind == Kind::Counter && Some(f.name) == base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_units_agree() {
        for f in ALL {
            assert!(f.name.starts_with("sockscope_"), "{}", f.name);
            assert!(!f.name.ends_with("_total"), "{}", f.name);
            assert!(!f.help.ends_with('.'), "{}", f.name);
            let by_name = if f.name.ends_with("_bytes") {
                Unit::Bytes
            } else if f.name.ends_with("_seconds") {
                Unit::Seconds
            } else {
                Unit::None
            };
            assert_eq!(f.unit, by_name, "{}", f.name);
            assert_eq!(find(&f.exposed()), Some(f));
        }
        assert_eq!(
            find("sockscope_tcp_sent_bytes_total"),
            Some(&TCP_SENT_BYTES)
        );
        assert_eq!(find("sockscope_dns_latency_seconds_total"), None);
    }
}
