//! TCP and UDP flow families and the folding of drained deltas into them.

use std::collections::HashMap;

use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use sockscope_common::{FlowKey, FlowStats, PROTO_TCP, PROTO_UDP};

use super::labels::{FlowLabels, LabelOptions, flow_labels};
use crate::identity::cgroup::Resolver;

pub const TCP_SENT_BYTES: &str = "sockscope_tcp_sent_bytes";
pub const TCP_RECEIVED_BYTES: &str = "sockscope_tcp_received_bytes";
pub const TCP_CONNECTIONS_OPENED: &str = "sockscope_tcp_connections_opened";
pub const TCP_CONNECTIONS_CLOSED: &str = "sockscope_tcp_connections_closed";
pub const TCP_CONNECT_FAILURES: &str = "sockscope_tcp_connect_failures";
pub const TCP_RETRANSMITS: &str = "sockscope_tcp_retransmits";
pub const UDP_SENT_BYTES: &str = "sockscope_udp_sent_bytes";
pub const UDP_RECEIVED_BYTES: &str = "sockscope_udp_received_bytes";

type CounterFamily = Family<FlowLabels, Counter>;

/// The flow counter families.
pub struct FlowMetrics {
    options: LabelOptions,
    tcp_sent: CounterFamily,
    tcp_received: CounterFamily,
    tcp_opened: CounterFamily,
    tcp_closed: CounterFamily,
    tcp_failures: CounterFamily,
    tcp_retransmits: CounterFamily,
    udp_sent: CounterFamily,
    udp_received: CounterFamily,
}

impl FlowMetrics {
    /// Registers the families (names get `_total` in the exposition).
    pub fn register(registry: &mut Registry, options: LabelOptions) -> Self {
        let m = FlowMetrics {
            options,
            tcp_sent: Family::default(),
            tcp_received: Family::default(),
            tcp_opened: Family::default(),
            tcp_closed: Family::default(),
            tcp_failures: Family::default(),
            tcp_retransmits: Family::default(),
            udp_sent: Family::default(),
            udp_received: Family::default(),
        };
        let fams: [(&str, &str, &CounterFamily); 8] = [
            (
                TCP_SENT_BYTES,
                "TCP payload bytes sent and acknowledged by the peer",
                &m.tcp_sent,
            ),
            (
                TCP_RECEIVED_BYTES,
                "TCP payload bytes received",
                &m.tcp_received,
            ),
            (
                TCP_CONNECTIONS_OPENED,
                "TCP connections established",
                &m.tcp_opened,
            ),
            (
                TCP_CONNECTIONS_CLOSED,
                "TCP connections closed",
                &m.tcp_closed,
            ),
            (
                TCP_CONNECT_FAILURES,
                "Client TCP connects that failed (refused, timed out, reset, aborted)",
                &m.tcp_failures,
            ),
            (
                TCP_RETRANSMITS,
                "Retransmitted TCP segments",
                &m.tcp_retransmits,
            ),
            (UDP_SENT_BYTES, "UDP payload bytes sent", &m.udp_sent),
            (
                UDP_RECEIVED_BYTES,
                "UDP payload bytes received",
                &m.udp_received,
            ),
        ];
        for (name, help, family) in fams {
            registry.register(name, help, family.clone());
        }
        m
    }

    /// Adds drained deltas to the cumulative counters. Flow keys that map to the same labels
    /// (e.g. several peers of one class when `remote_ip` is off) add up in one series.
    pub fn fold(&self, flows: &[(FlowKey, FlowStats)], resolver: &mut Resolver) {
        let mut owners = HashMap::new();
        for (key, stats) in flows {
            let owner = owners
                .entry(key.cgroup_id)
                .or_insert_with(|| resolver.resolve(key.cgroup_id));
            let labels = flow_labels(key, owner, self.options);
            let add = |family: &CounterFamily, v: u64| {
                if v != 0 {
                    family.get_or_create(&labels).inc_by(v);
                }
            };
            match key.proto {
                PROTO_TCP => {
                    add(&self.tcp_sent, stats.sent_bytes);
                    add(&self.tcp_received, stats.received_bytes);
                    add(&self.tcp_opened, stats.opened);
                    add(&self.tcp_closed, stats.closed);
                    add(&self.tcp_failures, stats.connect_failures);
                    add(&self.tcp_retransmits, stats.retransmits);
                }
                PROTO_UDP => {
                    add(&self.udp_sent, stats.sent_bytes);
                    add(&self.udp_received, stats.received_bytes);
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus_client::encoding::text::encode;
    use sockscope_common::{ROLE_CLIENT, ROLE_SERVER, v4_mapped};

    use super::*;

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

    #[test]
    fn deltas_accumulate_across_drains() {
        let mut registry = Registry::default();
        let m = FlowMetrics::register(&mut registry, LabelOptions::default());
        let mut resolver = Resolver::new(
            "/nonexistent".into(),
            "/nonexistent".into(),
            Duration::from_secs(3600),
        );
        let tcp = FlowStats {
            sent_bytes: 100,
            received_bytes: 7,
            opened: 1,
            ..Default::default()
        };
        m.fold(&[(key(PROTO_TCP, ROLE_CLIENT, 1), tcp)], &mut resolver);
        // Second drain: another loopback peer folds into the same series (remote_ip off).
        m.fold(&[(key(PROTO_TCP, ROLE_CLIENT, 2), tcp)], &mut resolver);
        let udp = FlowStats {
            sent_bytes: 3,
            ..Default::default()
        };
        m.fold(&[(key(PROTO_UDP, ROLE_SERVER, 1), udp)], &mut resolver);

        let mut out = String::new();
        encode(&mut out, &registry).expect("encode");
        assert!(out.contains("sockscope_tcp_sent_bytes_total{namespace=\"\",workload=\"\",pod=\"\",container=\"\",remote_namespace=\"\",remote_workload=\"\",remote_host=\"\",remote_class=\"loopback\",port=\"443\",role=\"client\"} 200"), "{out}");
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
