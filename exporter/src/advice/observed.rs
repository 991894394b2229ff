//! The traffic sockscope recorded over a window, read back from Prometheus: one row per
//! (owner workload, role, peer, port, protocol) with its connections and bytes, and which
//! workloads asked DNS questions.
//!
//! Counting within a window: `increase()` alone misses a series whose every count came with
//! its first sample (an edge that connected once and went quiet has a counter of 1 from its
//! first scrape on, and increase 0). sockscope creates a series only when its first count
//! happens, so a series that did not exist when the window began counts its whole value, one
//! that did counts its increase.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Duration,
};

use super::{
    Result,
    prometheus::{Prometheus, Sample},
};
use crate::{config::tools::Source, schema};

/// Labels a row is grouped by.
const ROW_LABELS: &str = "namespace, workload, workload_kind, role, remote_namespace, remote_workload, remote_class, remote_host, port, remote_ip";

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Protocol {
    /// TCP.
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
}

impl Protocol {
    /// As NetworkPolicy writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// A workload: namespace, name, kind (kind empty when only seen as a peer).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Workload {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Kind, as sockscope's `workload_kind`.
    pub kind: String,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The other end of a flow, as labelled.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Peer {
    /// `remote_class`: pod, service, node, loopback, private, public, a configured class.
    pub class: String,
    /// `remote_namespace`.
    pub namespace: String,
    /// `remote_workload`: the pod's workload, the Service's or the node's name.
    pub workload: String,
    /// `remote_host`: the hostname the owner resolved for the address.
    pub host: String,
    /// `remote_ip`, when the agents label it.
    pub ip: Option<IpAddr>,
}

/// One observed row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    /// The socket's owner.
    pub local: Workload,
    /// Whether the owner connected (client) or accepted (server).
    pub client: bool,
    /// The other end.
    pub peer: Peer,
    /// The service port: the remote port of a client, the listening port of a server;
    /// `None` for `~other` (ports beyond the workload's budget).
    pub port: Option<u16>,
    /// TCP or UDP.
    pub protocol: Protocol,
}

/// Amounts of a row within the window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Traffic {
    /// TCP connections opened (0 for UDP).
    pub connections: f64,
    /// Payload bytes, both directions.
    pub bytes: f64,
    /// Seen in a row; false for what is allowed without being seen (DNS's other protocol,
    /// the cluster DNS of a workload whose lookups no row named).
    pub observed: bool,
}

/// What was observed.
#[derive(Debug, Default)]
pub struct Observed {
    /// Every row with traffic in the window.
    pub flows: BTreeMap<Flow, Traffic>,
    /// Workloads that asked DNS questions in the window.
    pub dns_clients: BTreeSet<Workload>,
    /// Rows left out (no owner workload, `~overflow`, loopback) by why: their label sets.
    pub skipped: BTreeMap<String, BTreeSet<BTreeMap<String, String>>>,
}

/// The PromQL of a counter's amount within the window, per row.
pub fn in_window(metric: &str, matchers: &str, window: Duration, by: &str) -> String {
    let w = format!("{}s", window.as_secs());
    let s = format!("{metric}{{{matchers}}}");
    // `last_over_time(...[5m] offset W)`: the series existed when the window began (5m is
    // Prometheus's default lookback).
    format!(
        "sum by ({by}) ((increase({s}[{w}]) and last_over_time({s}[5m] offset {w})) or (max_over_time({s}[{w}]) unless last_over_time({s}[5m] offset {w})))"
    )
}

impl Observed {
    /// Reads the window `source` names from Prometheus.
    pub async fn read(prom: &Prometheus, source: &Source, at: f64) -> Result<Self> {
        let mut out = Observed::default();
        let m = source.matchers.as_str();
        // The names as the agent exports them (the schema is what the agent and these
        // commands share).
        let families = [
            (&schema::TCP_CONNECTIONS_OPENED, Protocol::Tcp, true),
            (&schema::TCP_SENT_BYTES, Protocol::Tcp, false),
            (&schema::TCP_RECEIVED_BYTES, Protocol::Tcp, false),
            (&schema::UDP_SENT_BYTES, Protocol::Udp, false),
            (&schema::UDP_RECEIVED_BYTES, Protocol::Udp, false),
        ];
        for (family, protocol, connections) in families {
            let q = in_window(&family.exposed(), m, source.window, ROW_LABELS);
            for s in prom.query(&q, at).await? {
                if s.value <= 0.0 || s.value.is_nan() {
                    continue;
                }
                let Some(flow) = out.flow(&s, protocol) else {
                    continue;
                };
                let t = out.flows.entry(flow).or_default();
                t.observed = true;
                if connections {
                    t.connections += s.value;
                } else {
                    t.bytes += s.value;
                }
            }
        }
        let q = in_window(
            &schema::DNS_QUERIES.exposed(),
            m,
            source.window,
            "namespace, workload, workload_kind",
        );
        for s in prom.query(&q, at).await? {
            if s.value > 0.0 && !s.label("workload").is_empty() {
                out.dns_clients.insert(workload(&s));
            }
        }
        Ok(out)
    }

    /// Workloads recorded as owners of sockets (their agents saw their own traffic).
    pub fn owners(&self) -> BTreeSet<Workload> {
        self.flows.keys().map(|f| f.local.clone()).collect()
    }

    fn flow(&mut self, s: &Sample, protocol: Protocol) -> Option<Flow> {
        let local = workload(s);
        let skip = if local.name.is_empty() || local.namespace.is_empty() {
            Some("owner outside Kubernetes (host process)")
        } else if local.name.starts_with('~') {
            Some("owner folded (~overflow)")
        } else if s.label("remote_class") == "loopback" {
            Some("loopback (no policy applies)")
        } else if s.label("port").is_empty() {
            Some("no port label (dropped by the agents' config): not written as every port")
        } else {
            None
        };
        if let Some(why) = skip {
            self.skipped
                .entry(why.to_string())
                .or_default()
                .insert(s.labels.clone());
            return None;
        }
        Some(Flow {
            local,
            client: s.label("role") == "client",
            peer: Peer {
                class: s.label("remote_class").to_string(),
                namespace: s.label("remote_namespace").to_string(),
                workload: s.label("remote_workload").to_string(),
                host: s.label("remote_host").to_string(),
                ip: s.label("remote_ip").parse().ok(),
            },
            port: s.label("port").parse().ok(),
            protocol,
        })
    }
}

fn workload(s: &Sample) -> Workload {
    Workload {
        namespace: s.label("namespace").to_string(),
        name: s.label("workload").to_string(),
        kind: s.label("workload_kind").to_string(),
    }
}

/// Whether `w` is selected by `--namespace`/`--workload` (empty: everything).
pub fn selected(source: &Source, w: &Workload) -> bool {
    let ns_ok = source.namespaces.is_empty() || source.namespaces.contains(&w.namespace);
    let wl_ok = source.workloads.is_empty()
        || source.workloads.iter().any(|x| match x.split_once('/') {
            Some((ns, name)) => ns == w.namespace && name == w.name,
            None => x == &w.name,
        });
    ns_ok && wl_ok
}
