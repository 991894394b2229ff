//! Label sets and cumulative counters: where kernel deltas become Prometheus series.

pub mod agent;
pub mod flows;
pub mod labels;

use prometheus_client::registry::Registry;

/// All metric families, registered in one registry.
pub struct Series {
    /// The registry the exporters encode.
    pub registry: Registry,
    /// TCP/UDP flow families.
    pub flows: flows::FlowMetrics,
    /// sockscope's own health.
    pub agent: agent::AgentMetrics,
}

impl Series {
    /// Registers every family.
    pub fn new(options: labels::LabelOptions) -> Self {
        let mut registry = Registry::default();
        let flows = flows::FlowMetrics::register(&mut registry, options);
        let agent = agent::AgentMetrics::register(&mut registry);
        Series {
            registry,
            flows,
            agent,
        }
    }
}
