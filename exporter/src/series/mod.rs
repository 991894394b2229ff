//! Label sets and cumulative counters: where kernel deltas become Prometheus series.

pub mod agent;
pub mod budget;
pub mod compact;
pub mod dns;
pub mod drop;
pub mod expiry;
pub mod flows;
pub mod histogram;
pub mod kubernetes;
pub mod packet_drops;
pub mod registry;
pub mod snapshot;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use prometheus_client::metrics::counter::Counter;

use crate::{
    identity::labelled::{DnsDelta, DropDelta, FlowDelta, TimingDelta},
    kubernetes::Cluster,
    schema,
};
use registry::Registry;

/// Every this many expired series, the freed memory goes back to the kernel.
const TRIM_AFTER: usize = 100;

/// Cardinality limits: distinct values per local workload of each label whose values come
/// from outside.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    /// `qname`.
    pub qnames: usize,
    /// `qtype`.
    pub qtypes: usize,
    /// `remote_host`.
    pub remote_hosts: usize,
    /// `port`.
    pub ports: usize,
    /// `process` (when on).
    pub processes: usize,
    /// `remote_ip` (when on).
    pub remote_ips: usize,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            qnames: 50,
            qtypes: 20,
            remote_hosts: 50,
            ports: 50,
            processes: 50,
            remote_ips: 1000,
        }
    }
}

/// All metric families, registered in one registry.
pub struct Series {
    /// The registry the exporters encode.
    pub registry: Registry,
    /// TCP/UDP flow families.
    pub flows: flows::FlowMetrics,
    /// DNS families.
    pub dns: dns::DnsMetrics,
    /// Packet drops.
    pub packet_drops: packet_drops::DropMetrics,
    /// sockscope's own health.
    pub agent: agent::AgentMetrics,
    /// Kubernetes metadata health (when running on a cluster).
    pub kubernetes: Option<kubernetes::KubernetesMetrics>,
    /// Last activity of every owner.
    pub expiry: expiry::Expiry,
    expired: Counter,
    expired_since_trim: usize,
}

impl Series {
    /// Registers every family.
    /// `grace`: how long series of a gone owner stay after their last change.
    /// `cluster`: the Kubernetes watches, whose health is exported (when on a cluster).
    pub fn new(budgets: Budgets, grace: Duration, cluster: Option<&Arc<Cluster>>) -> Self {
        let mut registry = Registry::default();
        let overflow = budget::Overflow::default();
        let flows = flows::FlowMetrics::register(&mut registry, budgets, overflow.clone());
        let packet_drops = packet_drops::DropMetrics::register(&mut registry);
        let dns = dns::DnsMetrics::register(&mut registry, budgets, overflow.clone());
        let agent = agent::AgentMetrics::register(&mut registry);
        registry.register(&schema::SERIES_OVERFLOW, overflow);
        let expired = Counter::default();
        registry.register(&schema::SERIES_EXPIRED, expired.clone());
        let kubernetes = cluster.map(|c| kubernetes::KubernetesMetrics::register(&mut registry, c));
        Series {
            registry,
            flows,
            dns,
            packet_drops,
            agent,
            kubernetes,
            expiry: expiry::Expiry::new(grace),
            expired,
            expired_since_trim: 0,
        }
    }

    /// Folds one drain's labelled flow deltas.
    pub fn fold_flows(&mut self, deltas: impl IntoIterator<Item = FlowDelta>) {
        self.flows.fold(deltas, &mut self.expiry);
    }

    /// Folds one drain's labelled TCP timing samples.
    pub fn fold_timings(&mut self, deltas: impl IntoIterator<Item = TimingDelta>) {
        self.flows.fold_timings(deltas, &mut self.expiry);
    }

    /// Folds one drain's labelled packet drops.
    pub fn fold_drops(&mut self, deltas: impl IntoIterator<Item = DropDelta>) {
        self.packet_drops.fold(deltas, &mut self.expiry);
    }

    /// Folds one drain's labelled DNS deltas, and the responses the kernel matched to no
    /// pending query.
    pub fn fold_dns(&mut self, deltas: impl IntoIterator<Item = DnsDelta>, unmatched: u64) {
        self.dns.fold(deltas, &mut self.expiry);
        self.dns.record_unmatched(unmatched);
    }

    /// Removes the series of owners that stayed idle for the grace period and that `gone`
    /// (cgroup id, pod UID) says are gone.
    pub fn expire(&mut self, now: Instant, gone: impl FnMut(u64, Option<u128>) -> bool) {
        for local in self.expiry.expire(now, gone) {
            let n = self.flows.remove(&local)
                + self.dns.remove(&local)
                + self.packet_drops.remove(&local);
            self.expired_since_trim += n;
            self.expired.inc_by(n as u64);
            let scope = local.budget_scope();
            if !self.expiry.scope_in_use(&scope) {
                self.flows.forget_scope(&scope);
                self.dns.forget_scope(&scope);
            }
        }
        if self.expired_since_trim >= TRIM_AFTER {
            self.expired_since_trim = 0;
            crate::memory::release_freed_memory();
        }
    }
}
