//! Label sets and cumulative counters: where kernel deltas become Prometheus series.

pub mod agent;
pub mod budget;
pub mod dns;
pub mod flows;
pub mod histogram;
pub mod labels;

use prometheus_client::registry::Registry;

/// Name of the counter of samples folded into `~other`.
pub const SERIES_OVERFLOW: &str = "sockscope_series_overflow";

/// Cardinality limits.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    /// Distinct `qname` values per local workload.
    pub qnames: usize,
    /// Distinct `remote_host` values per local workload.
    pub remote_hosts: usize,
}

/// All metric families, registered in one registry.
pub struct Series {
    /// The registry the exporters encode.
    pub registry: Registry,
    /// TCP/UDP flow families.
    pub flows: flows::FlowMetrics,
    /// DNS families.
    pub dns: dns::DnsMetrics,
    /// sockscope's own health.
    pub agent: agent::AgentMetrics,
}

impl Series {
    /// Registers every family.
    pub fn new(options: labels::LabelOptions, budgets: Budgets) -> Self {
        let mut registry = Registry::default();
        let overflow = budget::Overflow::default();
        let flows = flows::FlowMetrics::register(
            &mut registry,
            options,
            budgets.remote_hosts,
            overflow.clone(),
        );
        let dns = dns::DnsMetrics::register(&mut registry, budgets.qnames, overflow.clone());
        let agent = agent::AgentMetrics::register(&mut registry);
        registry.register(
            SERIES_OVERFLOW,
            "Samples whose label value was folded into ~other by a cardinality budget, by metric",
            overflow,
        );
        Series {
            registry,
            flows,
            dns,
            agent,
        }
    }
}
