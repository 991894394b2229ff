//! TCP and UDP flow families and the folding of drained deltas into them.

use std::time::Instant;

use sockscope_common::{FlowStats, PROTO_TCP, PROTO_UDP};

use sockscope_common::health::{TIMING_CONNECT, TIMING_RTT};

use super::{
    Budgets,
    budget::{Budget, Overflow, Rank, count_overflow},
    compact::Compact,
    drop::{Droppable, Drops},
    expiry::{Expiry, Members},
    histogram::{KernelHistogram, TcpTiming},
    registry::{Count, Family, Registry},
};
use crate::{
    identity::{
        labelled::{FlowDelta, FlowKind, TimingDelta},
        labels::{FlowLabels, LocalLabels},
    },
    schema::{
        self, LabelSet, TCP_CONNECT_DURATION, TCP_CONNECT_FAILURES, TCP_CONNECTION_DURATION,
        TCP_CONNECTIONS_CLOSED, TCP_CONNECTIONS_OPENED, TCP_RECEIVED_BYTES, TCP_RESETS,
        TCP_RETRANSMITS, TCP_RTT, TCP_SENT_BYTES, TIMING_DEFAULT_DROPS, UDP_RECEIVED_BYTES,
        UDP_SENT_BYTES,
    },
};

type CounterFamily = Family<Compact, Count>;
type TimingFamily<const KIND: usize> = Family<Compact, KernelHistogram<TcpTiming<KIND>>>;

/// A flow's labels and the direction of a reset (`sockscope_tcp_resets_total`).
struct Directed {
    labels: FlowLabels,
    direction: &'static str,
}

impl LabelSet for Directed {
    fn visit(&self, f: &mut dyn FnMut(&'static str, &str)) {
        self.labels.visit(f);
        f("direction", self.direction);
    }
}

/// The flow counter families.
pub struct FlowMetrics {
    hosts: Budget,
    ports: Budget,
    processes: Budget,
    remote_ips: Budget,
    overflow: Overflow,
    /// Every label set in use, by owner, for expiry.
    members: Members,
    /// Labels emptied per family.
    drops: Drops,
    tcp_sent: CounterFamily,
    tcp_received: CounterFamily,
    tcp_opened: CounterFamily,
    tcp_closed: CounterFamily,
    tcp_failures: CounterFamily,
    tcp_retransmits: CounterFamily,
    udp_sent: CounterFamily,
    udp_received: CounterFamily,
    tcp_resets: CounterFamily,
    /// Label sets of the reset family (a flow's and `direction`), by owner.
    reset_members: Members,
    tcp_connect: TimingFamily<0>,
    tcp_rtt: TimingFamily<1>,
    tcp_lifetime: TimingFamily<2>,
}

impl FlowMetrics {
    /// Registers the families (names get `_total` in the exposition), with the per-workload
    /// budgets of `remote_host`, `port`, `process` and `remote_ip`.
    pub fn register(registry: &mut Registry, budgets: Budgets, overflow: Overflow) -> Self {
        let m = FlowMetrics {
            hosts: Budget::new(budgets.remote_hosts),
            ports: Budget::new(budgets.ports),
            processes: Budget::new(budgets.processes),
            remote_ips: Budget::new(budgets.remote_ips),
            overflow,
            members: Members::new(&schema::FLOW_LABELS),
            drops: Drops::default(),
            tcp_sent: Family::default(),
            tcp_received: Family::default(),
            tcp_opened: Family::default(),
            tcp_closed: Family::default(),
            tcp_failures: Family::default(),
            tcp_retransmits: Family::default(),
            udp_sent: Family::default(),
            udp_received: Family::default(),
            tcp_resets: Family::default(),
            reset_members: Members::new(&schema::RESET_LABELS),
            tcp_connect: Family::default(),
            tcp_rtt: Family::default(),
            tcp_lifetime: Family::default(),
        };
        let fams: [(&'static schema::Family, &CounterFamily); 8] = [
            (&TCP_SENT_BYTES, &m.tcp_sent),
            (&TCP_RECEIVED_BYTES, &m.tcp_received),
            (&TCP_CONNECTIONS_OPENED, &m.tcp_opened),
            (&TCP_CONNECTIONS_CLOSED, &m.tcp_closed),
            (&TCP_CONNECT_FAILURES, &m.tcp_failures),
            (&TCP_RETRANSMITS, &m.tcp_retransmits),
            (&UDP_SENT_BYTES, &m.udp_sent),
            (&UDP_RECEIVED_BYTES, &m.udp_received),
        ];
        for (family, series) in fams {
            registry.register(family, series.clone());
        }
        registry.register(&TCP_RESETS, m.tcp_resets.clone());
        registry.register(&TCP_CONNECT_DURATION, m.tcp_connect.clone());
        registry.register(&TCP_RTT, m.tcp_rtt.clone());
        registry.register(&TCP_CONNECTION_DURATION, m.tcp_lifetime.clone());
        m
    }

    /// Adds labelled TCP timing samples to the histograms of their edges, within the same
    /// budgets as the flows. The histograms drop `pod`, `container`, `process` and
    /// `remote_ip` unless the config file names other labels for them
    /// ([`TIMING_DEFAULT_DROPS`]): one histogram per workload edge.
    pub fn fold_timings(
        &mut self,
        deltas: impl IntoIterator<Item = TimingDelta>,
        expiry: &mut Expiry,
    ) {
        let now = Instant::now();
        for d in deltas {
            let TimingDelta {
                mut labels,
                owner,
                kind,
                bucket,
                count,
                sum_ns,
                node,
            } = d;
            let family = match kind {
                TIMING_CONNECT => &TCP_CONNECT_DURATION,
                TIMING_RTT => &TCP_RTT,
                _ => &TCP_CONNECTION_DURATION,
            };
            let scope = labels.local.budget_scope();
            let mut folded = Vec::new();
            if !node {
                let (host, f) = self
                    .hosts
                    .label(&scope, std::mem::take(&mut labels.remote_host));
                labels.remote_host = host;
                if f {
                    folded.push("remote_host");
                }
                let rank = if labels.role == "server" {
                    Rank::Preferred
                } else {
                    Rank::Other
                };
                let (port, f) =
                    self.ports
                        .label_ranked(&scope, std::mem::take(&mut labels.port), rank);
                labels.port = port;
                if f {
                    folded.push("port");
                }
            }
            self.optional_budgets(&scope, &mut labels, &mut folded);
            if owner.cgroup_id != 0 {
                expiry.touch(&labels.local, owner.cgroup_id, owner.pod_uid, now);
            }
            let exported = if self.drops.applies_to(family.name) {
                self.drops.apply(family.name, &labels).into_owned()
            } else {
                let mut l = labels.clone();
                for name in TIMING_DEFAULT_DROPS {
                    l.drop_label(name);
                }
                l
            };
            if owner.cgroup_id != 0 && exported.local != labels.local {
                // An aggregate over the owners' pods lives as long as one of them updates it.
                expiry.touch(&exported.local, owner.cgroup_id, owner.pod_uid, now);
            }
            let stored = self.members.note(&exported.local, &exported);
            match kind {
                TIMING_CONNECT => self
                    .tcp_connect
                    .get_or_create_shared(&stored)
                    .add(bucket, count, sum_ns),
                TIMING_RTT => self
                    .tcp_rtt
                    .get_or_create_shared(&stored)
                    .add(bucket, count, sum_ns),
                _ => self
                    .tcp_lifetime
                    .get_or_create_shared(&stored)
                    .add(bucket, count, sum_ns),
            }
            for label in &folded {
                count_overflow(&self.overflow, family.name, label);
            }
        }
    }

    /// Adds labelled flow deltas to the cumulative counters, within the budgets. Deltas that
    /// end up with the same labels (several peers of one class when `remote_ip` is off, or
    /// values folded into `~other`) add up in one series.
    pub fn fold(&mut self, deltas: impl IntoIterator<Item = FlowDelta>, expiry: &mut Expiry) {
        let now = Instant::now();
        for FlowDelta {
            mut labels,
            owner,
            proto,
            kind,
            stats,
        } in deltas
        {
            let scope = labels.local.budget_scope();
            let mut folded = Vec::new();
            if let FlowKind::Peer { preferred_port } = kind {
                let (host, f) = self
                    .hosts
                    .label(&scope, std::mem::take(&mut labels.remote_host));
                labels.remote_host = host;
                if f {
                    folded.push("remote_host");
                }
                // Ports the workload listens on and well-known ports first: a scan's ports
                // can take at most half the budget.
                let rank = if preferred_port {
                    Rank::Preferred
                } else {
                    Rank::Other
                };
                let (port, f) =
                    self.ports
                        .label_ranked(&scope, std::mem::take(&mut labels.port), rank);
                labels.port = port;
                if f {
                    folded.push("port");
                }
            }
            self.optional_budgets(&scope, &mut labels, &mut folded);
            self.add(
                &labels,
                proto,
                &stats,
                &folded,
                (owner.cgroup_id, owner.pod_uid),
                expiry,
                now,
            );
        }
    }

    /// Applies the `process` and `remote_ip` budgets (when those labels are on).
    fn optional_budgets(
        &mut self,
        scope: &str,
        labels: &mut FlowLabels,
        folded: &mut Vec<&'static str>,
    ) {
        if let Some(p) = labels.optional.process.take() {
            let (p, f) = self.processes.label(scope, p);
            labels.optional.process = Some(p);
            if f {
                folded.push("process");
            }
        }
        if let Some(ip) = labels.optional.remote_ip.take() {
            let (ip, f) = self.remote_ips.label(scope, ip);
            labels.optional.remote_ip = Some(ip);
            if f {
                folded.push("remote_ip");
            }
        }
    }

    /// Adds one flow's counters to the families of its protocol. `folded` names the labels a
    /// budget folded into `~other`, counted once per family sample.
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        labels: &FlowLabels,
        proto: u8,
        stats: &FlowStats,
        folded: &[&str],
        owner: (u64, Option<u128>),
        expiry: &mut Expiry,
        now: Instant,
    ) {
        expiry.touch(&labels.local, owner.0, owner.1, now);
        // Once per flow: the shared copy every family without drops uses. Families that drop
        // labels note their own label sets below.
        let shared = self.members.note(&labels.local, labels);
        let overflow = &self.overflow;
        let (drops, members) = (&self.drops, &mut self.members);
        let mut add = |family: &CounterFamily, schema: &schema::Family, v: u64| {
            if v == 0 {
                return;
            }
            let name = schema.name;
            let exported = match drops.apply(name, labels) {
                std::borrow::Cow::Borrowed(_) => shared.clone(),
                std::borrow::Cow::Owned(e) => {
                    if e.local != labels.local {
                        // An aggregate over owners lives as long as one of them updates it.
                        expiry.touch(&e.local, owner.0, owner.1, now);
                    }
                    members.note(&e.local, &e)
                }
            };
            family.get_or_create_shared(&exported).inc_by(v);
            for label in folded {
                count_overflow(overflow, name, label);
            }
        };
        match proto {
            PROTO_TCP => {
                add(&self.tcp_sent, &TCP_SENT_BYTES, stats.sent_bytes);
                add(
                    &self.tcp_received,
                    &TCP_RECEIVED_BYTES,
                    stats.received_bytes,
                );
                add(&self.tcp_opened, &TCP_CONNECTIONS_OPENED, stats.opened);
                add(&self.tcp_closed, &TCP_CONNECTIONS_CLOSED, stats.closed);
                add(
                    &self.tcp_failures,
                    &TCP_CONNECT_FAILURES,
                    stats.connect_failures,
                );
                add(&self.tcp_retransmits, &TCP_RETRANSMITS, stats.retransmits);
                for (direction, v) in [
                    ("sent", stats.resets_sent),
                    ("received", stats.resets_received),
                ] {
                    if v == 0 {
                        continue;
                    }
                    let name = TCP_RESETS.name;
                    let e = self.drops.apply(name, labels);
                    if e.local != labels.local {
                        expiry.touch(&e.local, owner.0, owner.1, now);
                    }
                    let local = e.local.clone();
                    let direction = if self.drops.drops_label(name, "direction") {
                        ""
                    } else {
                        direction
                    };
                    // Resets are rare: a copy of the labels for each is cheap.
                    let stored = self.reset_members.note(
                        &local,
                        &Directed {
                            labels: e.into_owned(),
                            direction,
                        },
                    );
                    self.tcp_resets.get_or_create_shared(&stored).inc_by(v);
                    for label in folded {
                        count_overflow(&self.overflow, name, label);
                    }
                }
            }
            PROTO_UDP => {
                add(&self.udp_sent, &UDP_SENT_BYTES, stats.sent_bytes);
                add(
                    &self.udp_received,
                    &UDP_RECEIVED_BYTES,
                    stats.received_bytes,
                );
            }
            _ => {}
        }
    }

    /// Removes every series of an expired owner; returns how many went.
    pub fn remove(&mut self, local: &LocalLabels) -> usize {
        let mut n = 0;
        for labels in &self.members.take(local) {
            for family in [
                &self.tcp_sent,
                &self.tcp_received,
                &self.tcp_opened,
                &self.tcp_closed,
                &self.tcp_failures,
                &self.tcp_retransmits,
                &self.udp_sent,
                &self.udp_received,
            ] {
                n += usize::from(family.remove(&**labels));
            }
            n += usize::from(self.tcp_connect.remove(&**labels));
            n += usize::from(self.tcp_rtt.remove(&**labels));
            n += usize::from(self.tcp_lifetime.remove(&**labels));
        }
        for labels in &self.reset_members.take(local) {
            n += usize::from(self.tcp_resets.remove(&**labels));
        }
        n
    }

    /// Sets the labels dropped per family.
    pub fn set_drops(&mut self, drops: Drops) {
        self.drops = drops;
    }

    /// Forgets the budgets of a scope no owner uses any more.
    pub fn forget_scope(&mut self, scope: &str) {
        for b in [
            &mut self.hosts,
            &mut self.ports,
            &mut self.processes,
            &mut self.remote_ips,
        ] {
            b.forget(scope);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sockscope_common::{FlowKey, ROLE_CLIENT, ROLE_SERVER, v4_mapped};

    use super::*;
    use crate::identity::{Identity, hosts::HostCache, labelled::Labeller, labels::LabelOptions};

    /// One drain: the kernel's keys labelled, then folded.
    fn fold(
        m: &mut FlowMetrics,
        l: &mut Labeller,
        flows: &[(FlowKey, FlowStats)],
        id: &mut Identity,
    ) {
        id.begin_drain();
        let deltas: Vec<_> = l.flows(flows, &[], id, Instant::now()).collect();
        m.fold(deltas, &mut Expiry::new(Duration::from_secs(60)));
    }

    fn key(proto: u8, role: u8, last: u8) -> FlowKey {
        FlowKey {
            cgroup_id: 1,
            remote_addr: v4_mapped([127, 0, 0, last]),
            comm: [0; 16],
            port: 443,
            role,
            proto,
            _pad: 0,
        }
    }

    fn identity(dir: std::path::PathBuf) -> Identity {
        Identity::new(
            dir.clone(),
            dir,
            None,
            HostCache::new(64, Duration::from_secs(30), Duration::from_secs(3600)),
        )
    }

    #[test]
    fn remote_host_from_the_owners_namespace_within_budget() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("sockscope-flows-{}", std::process::id()));
        let cg = dir.join("app.service");
        std::fs::create_dir_all(&cg).expect("mkdir");
        std::fs::write(cg.join("cgroup.procs"), format!("{}\n", std::process::id()))
            .expect("procs");
        let cgroup_id = std::fs::metadata(&cg).expect("stat").ino();
        let mut id = identity(dir.clone());
        let ns = crate::identity::netns::current_netns_cookie().expect("netns");
        let now = std::time::Instant::now();
        for i in 1..=3u8 {
            id.hosts
                .insert(
                    ns,
                    std::net::IpAddr::from([127, 0, 0, i]),
                    &format!("h{i}.test"),
                    60,
                    now,
                )
                .expect("cached");
        }
        let mut registry = Registry::default();
        let overflow = Overflow::default();
        let mut m = FlowMetrics::register(
            &mut registry,
            Budgets {
                remote_hosts: 2,
                ..Budgets::default()
            },
            overflow.clone(),
        );
        let mut l = Labeller::new(LabelOptions::default());
        registry.register(&crate::schema::SERIES_OVERFLOW, overflow);
        let tcp = FlowStats {
            sent_bytes: 10,
            ..Default::default()
        };
        let flows: Vec<_> = (1..=4u8)
            .map(|i| {
                (
                    FlowKey {
                        cgroup_id,
                        ..key(PROTO_TCP, ROLE_CLIENT, i)
                    },
                    tcp,
                )
            })
            .collect();
        fold(&mut m, &mut l, &flows, &mut id);
        let mut out = String::new();
        out.push_str(&crate::export::text::openmetrics(&registry.snapshot()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(out.contains("workload=\"app.service\""), "{out}");
        assert!(
            out.contains(
                "remote_host=\"h1.test\",remote_class=\"loopback\",port=\"443\",role=\"client\"} 10"
            ),
            "{out}"
        );
        assert!(out.contains("remote_host=\"h2.test\""), "{out}");
        // Third name: over the budget of 2.
        assert!(
            out.contains(
                "remote_host=\"~other\",remote_class=\"loopback\",port=\"443\",role=\"client\"} 10"
            ),
            "{out}"
        );
        // 127.0.0.4 was never resolved: empty, not folded.
        assert!(
            out.contains(
                "remote_host=\"\",remote_class=\"loopback\",port=\"443\",role=\"client\"} 10"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "sockscope_series_overflow_total{metric=\"sockscope_tcp_sent_bytes_total\",label=\"remote_host\"} 1"
            ),
            "{out}"
        );

        // The answer expires (here: the cache is emptied); the same flow keeps its name.
        id.hosts = HostCache::new(64, Duration::from_secs(30), Duration::from_secs(3600));
        fold(&mut m, &mut l, &flows[..1], &mut id);
        let mut out = String::new();
        out.push_str(&crate::export::text::openmetrics(&registry.snapshot()));
        let h1 =
            "remote_host=\"h1.test\",remote_class=\"loopback\",port=\"443\",role=\"client\"} 20";
        assert!(out.contains(h1), "{out}");
        // Idle past the ceiling: forgotten.
        l.set_sticky_for(Duration::ZERO);
        fold(&mut m, &mut l, &[], &mut id);
        fold(&mut m, &mut l, &flows[..1], &mut id);
        let mut out = String::new();
        out.push_str(&crate::export::text::openmetrics(&registry.snapshot()));
        let unnamed = "remote_host=\"\",remote_class=\"loopback\",port=\"443\",role=\"client\"} 20";
        assert!(out.contains(h1) && out.contains(unnamed), "{out}");
    }

    #[test]
    fn deltas_accumulate_across_drains() {
        let mut registry = Registry::default();
        let mut m = FlowMetrics::register(&mut registry, Budgets::default(), Overflow::default());
        let mut l = Labeller::new(LabelOptions::default());
        let mut resolver = identity("/nonexistent".into());
        let tcp = FlowStats {
            sent_bytes: 100,
            received_bytes: 7,
            opened: 1,
            ..Default::default()
        };
        fold(
            &mut m,
            &mut l,
            &[(key(PROTO_TCP, ROLE_CLIENT, 1), tcp)],
            &mut resolver,
        );
        // Second drain: another loopback peer folds into the same series (remote_ip off).
        fold(
            &mut m,
            &mut l,
            &[(key(PROTO_TCP, ROLE_CLIENT, 2), tcp)],
            &mut resolver,
        );
        let udp = FlowStats {
            sent_bytes: 3,
            ..Default::default()
        };
        fold(
            &mut m,
            &mut l,
            &[(key(PROTO_UDP, ROLE_SERVER, 1), udp)],
            &mut resolver,
        );

        let mut out = String::new();
        out.push_str(&crate::export::text::openmetrics(&registry.snapshot()));
        assert!(out.contains("sockscope_tcp_sent_bytes_total{namespace=\"\",workload=\"\",workload_kind=\"\",pod=\"\",container=\"\",remote_namespace=\"\",remote_workload=\"\",remote_host=\"\",remote_class=\"loopback\",port=\"443\",role=\"client\"} 200"), "{out}");
        assert!(
            out.contains("sockscope_tcp_received_bytes_total{") && out.contains("} 14"),
            "{out}"
        );
        assert!(
            out.contains("sockscope_tcp_connections_opened_total{") && out.contains("} 2"),
            "{out}"
        );
        assert!(
            out.contains("sockscope_udp_sent_bytes_total{") && out.contains("role=\"server\"} 3"),
            "{out}"
        );
        // Zero deltas create no series.
        assert!(!out.contains("sockscope_tcp_retransmits_total{"), "{out}");
    }
}
