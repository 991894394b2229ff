//! From observed rows to what each workload's pods need allowed: ingress from whom on which
//! port, egress to whom on which port. Policies are written from these, and audited against
//! them, so both read the traffic the same way.
//!
//! A client's row to a Service names the Service's port; on the wire (after kube-proxy's
//! DNAT, where NetworkPolicy is enforced) the packets go to the backends' target port, so
//! such rows become needs towards the backend workloads on the target port.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString};

use super::{
    cluster::{ClusterInfo, Labels, WorkloadInfo},
    observed::{Flow, Observed, Protocol, Traffic, Workload},
};

/// `node` of a need towards every node's addresses (a host-network workload's pods).
pub const ALL_NODES: &str = "*";

/// The DNS port, always allowed over both UDP and TCP (a truncated answer is retried over
/// TCP: a policy that allows only UDP breaks large answers).
pub const DNS_PORT: u16 = 53;

/// Which way a need goes, from the subject's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Traffic the subject accepts.
    Ingress,
    /// Traffic the subject starts.
    Egress,
}

/// A port as a policy names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(untagged)]
pub enum Port {
    /// A number.
    Number(u16),
    /// A container port's name.
    Name(String),
    /// Every port (the observed port was folded into `~other`).
    Any,
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Port::Number(n) => write!(f, "{n}"),
            Port::Name(n) => f.write_str(n),
            Port::Any => f.write_str("*"),
        }
    }
}

/// The other side of a need.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Other {
    /// Pods of an in-cluster workload.
    Pods {
        /// The workload.
        workload: Workload,
    },
    /// Addresses outside the cluster's pods: a node, or an external peer.
    Addresses {
        /// `remote_class`.
        class: String,
        /// The address, when the agents label `remote_ip`.
        ip: Option<IpAddr>,
        /// The hostname resolved for it, if any.
        host: String,
        /// `remote_workload`: the node's name for a node.
        node: String,
    },
    /// The endpoints of a Service without a selector (the API server's, addresses given by
    /// hand), from its EndpointSlices.
    Endpoints {
        /// `namespace/name` of the Service.
        service: String,
        /// Its endpoints' addresses.
        ips: Vec<IpAddr>,
    },
    /// An in-cluster peer the API cannot place (a Service without selector, a workload the
    /// API does not know): no rule can be written for it.
    Unknown {
        /// What the row said.
        what: String,
    },
}

/// One thing a subject's pods need allowed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Need {
    /// Whose pods.
    pub subject: Workload,
    /// Which way.
    pub direction: Direction,
    /// From or to whom.
    pub other: Other,
    /// On which port of the server.
    pub port: Port,
    /// TCP or UDP.
    pub protocol: Protocol,
}

/// Needs with the traffic behind each.
pub type Needs = BTreeMap<Need, Traffic>;

/// Derives every need from `observed`.
pub fn derive(observed: &Observed, cluster: &ClusterInfo) -> Needs {
    // An in-cluster edge is usually recorded at both ends: each side's rows add up, and the
    // two sides' totals are merged by the larger, not added (that would count it twice).
    let mut sides: [Needs; 2] = [Needs::new(), Needs::new()];
    let mut add = |side: usize, need: Need, t: &Traffic| {
        let e = sides[side].entry(need).or_default();
        e.connections += t.connections;
        e.bytes += t.bytes;
        e.observed |= t.observed;
    };
    let kinds: HashMap<(&str, &str), &str> = observed
        .flows
        .keys()
        .map(|f| {
            (
                (f.local.namespace.as_str(), f.local.name.as_str()),
                f.local.kind.as_str(),
            )
        })
        .collect();
    let kind_of = |namespace: &str, name: &str| -> String {
        // The kind sockscope recorded for it as an owner, else the API's if unambiguous.
        kinds
            .get(&(namespace, name))
            .map(|k| k.to_string())
            .or_else(|| {
                cluster
                    .workload(namespace, name, "")
                    .map(|w| w.kind.clone())
            })
            .unwrap_or_default()
    };
    // Pods of a workload, or the nodes' addresses for a host-network one.
    let pods = |workload: Workload| -> Other {
        match cluster.workload(&workload.namespace, &workload.name, &workload.kind) {
            Some(w) if w.host_network => Other::Addresses {
                class: "node".into(),
                ip: None,
                host: String::new(),
                node: ALL_NODES.into(),
            },
            _ => Other::Pods { workload },
        }
    };
    for (flow, t) in &observed.flows {
        let port = flow.port.map_or(Port::Any, Port::Number);
        let p = &flow.peer;
        if flow.client {
            // Egress of the owner, and ingress of an in-cluster server.
            let servers: Vec<(Other, Port)> = match p.class.as_str() {
                "pod" => {
                    let w = Workload {
                        namespace: p.namespace.clone(),
                        name: p.workload.clone(),
                        kind: kind_of(&p.namespace, &p.workload),
                    };
                    vec![(pods(w), port.clone())]
                }
                "service" => service_backends(cluster, flow, &kind_of)
                    .into_iter()
                    .map(|(o, port)| match o {
                        Other::Pods { workload } => (pods(workload), port),
                        other => (other, port),
                    })
                    .collect(),
                _ => vec![(address(flow), port.clone())],
            };
            for (other, port) in servers {
                for protocol in protocols(flow) {
                    // DNS's other protocol is allowed, not observed.
                    let t = &own(flow, protocol, t);
                    add(
                        0,
                        Need {
                            subject: flow.local.clone(),
                            direction: Direction::Egress,
                            other: other.clone(),
                            port: port.clone(),
                            protocol,
                        },
                        t,
                    );
                    if let Other::Pods { workload } = &other {
                        add(
                            0,
                            Need {
                                subject: workload.clone(),
                                direction: Direction::Ingress,
                                other: Other::Pods {
                                    workload: flow.local.clone(),
                                },
                                port: port.clone(),
                                protocol,
                            },
                            t,
                        );
                    }
                }
            }
        } else {
            // Ingress of the owner on its listening port, and egress of an in-cluster client.
            let client = match p.class.as_str() {
                "pod" => pods(Workload {
                    namespace: p.namespace.clone(),
                    name: p.workload.clone(),
                    kind: kind_of(&p.namespace, &p.workload),
                }),
                _ => address(flow),
            };
            for protocol in protocols(flow) {
                let t = &own(flow, protocol, t);
                add(
                    1,
                    Need {
                        subject: flow.local.clone(),
                        direction: Direction::Ingress,
                        other: client.clone(),
                        port: port.clone(),
                        protocol,
                    },
                    t,
                );
                if let Other::Pods { workload } = &client {
                    add(
                        1,
                        Need {
                            subject: workload.clone(),
                            direction: Direction::Egress,
                            other: Other::Pods {
                                workload: flow.local.clone(),
                            },
                            port: port.clone(),
                            protocol,
                        },
                        t,
                    );
                }
            }
        }
    }
    // DNS clients whose queries went nowhere sockscope could name (a node-local cache, or
    // rows outside the window's selection): the cluster DNS, from the API.
    if let Some((ns, name)) = &cluster.dns
        && let Some(svc) = cluster.services.get(&(ns.clone(), name.clone()))
    {
        for client in &observed.dns_clients {
            let has_dns = observed
                .flows
                .keys()
                .any(|f| f.client && f.local == *client && f.port == Some(DNS_PORT));
            if has_dns {
                continue;
            }
            for (backend, wl) in cluster.backends(ns, &svc.selector) {
                for sp in svc.ports.iter().filter(|sp| sp.port == i32::from(DNS_PORT)) {
                    for protocol in [Protocol::Udp, Protocol::Tcp] {
                        add(
                            0,
                            Need {
                                subject: client.clone(),
                                direction: Direction::Egress,
                                other: Other::Pods {
                                    workload: Workload {
                                        namespace: ns.clone(),
                                        name: backend.to_string(),
                                        kind: wl.kind.clone(),
                                    },
                                },
                                port: target(&sp.target, wl),
                                protocol,
                            },
                            &Traffic::default(),
                        );
                    }
                }
            }
        }
    }
    let [mut needs, server_side] = sides;
    for (need, t) in server_side {
        let e = needs.entry(need).or_default();
        e.connections = e.connections.max(t.connections);
        e.bytes = e.bytes.max(t.bytes);
        e.observed |= t.observed;
    }
    needs
}

/// A row's traffic under `protocol`: none under the protocol it was not seen on.
fn own(flow: &Flow, protocol: Protocol, t: &Traffic) -> Traffic {
    if protocol == flow.protocol {
        *t
    } else {
        Traffic::default()
    }
}

/// The protocols a row needs: DNS gets both.
fn protocols(flow: &Flow) -> Vec<Protocol> {
    if flow.port == Some(DNS_PORT) {
        vec![Protocol::Udp, Protocol::Tcp]
    } else {
        vec![flow.protocol]
    }
}

fn address(flow: &Flow) -> Other {
    Other::Addresses {
        class: flow.peer.class.clone(),
        ip: flow.peer.ip,
        host: flow.peer.host.clone(),
        node: if flow.peer.class == "node" {
            flow.peer.workload.clone()
        } else {
            String::new()
        },
    }
}

/// A Service row's backends and their target ports.
fn service_backends(
    cluster: &ClusterInfo,
    flow: &Flow,
    kind_of: &dyn Fn(&str, &str) -> String,
) -> Vec<(Other, Port)> {
    let p = &flow.peer;
    let unknown = |why: &str| {
        vec![(
            Other::Unknown {
                what: format!("Service {}/{} ({why})", p.namespace, p.workload),
            },
            flow.port.map_or(Port::Any, Port::Number),
        )]
    };
    let Some(svc) = cluster
        .services
        .get(&(p.namespace.clone(), p.workload.clone()))
    else {
        return unknown("not in the API");
    };
    if svc.selector.is_empty() {
        // Its EndpointSlices say where the traffic goes, on which port.
        let proto = flow.protocol.as_str();
        let Some(sp) = svc
            .ports
            .iter()
            .find(|sp| flow.port.is_some_and(|p| sp.port == i32::from(p)) && sp.protocol == proto)
        else {
            return unknown("no selector, and no port of it matches");
        };
        let Some(((_, port, _), ips)) = svc
            .endpoints
            .iter()
            .find(|((name, _, pr), ips)| *name == sp.name && pr == proto && !ips.is_empty())
        else {
            return unknown("no selector, and no endpoints");
        };
        return vec![(
            Other::Endpoints {
                service: format!("{}/{}", p.namespace, p.workload),
                ips: ips.iter().copied().collect(),
            },
            u16::try_from(*port).map_or(Port::Any, Port::Number),
        )];
    }
    let backends: Vec<_> = cluster.backends(&p.namespace, &svc.selector).collect();
    if backends.is_empty() {
        return unknown("no workload's pods match its selector");
    }
    let proto = flow.protocol.as_str();
    let mut out = Vec::new();
    for (name, wl) in backends {
        let w = Workload {
            namespace: p.namespace.clone(),
            name: name.to_string(),
            kind: if wl.kind.is_empty() {
                kind_of(&p.namespace, name)
            } else {
                wl.kind.clone()
            },
        };
        let ports: Vec<Port> = match flow.port {
            None => vec![Port::Any],
            Some(port) => {
                let matched: Vec<Port> = svc
                    .ports
                    .iter()
                    .filter(|sp| {
                        sp.port == i32::from(port) && (sp.protocol == proto || port == DNS_PORT)
                    })
                    .map(|sp| target(&sp.target, wl))
                    .collect();
                if matched.is_empty() {
                    vec![Port::Number(port)]
                } else {
                    matched
                }
            }
        };
        for port in ports {
            out.push((
                Other::Pods {
                    workload: w.clone(),
                },
                port,
            ));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// A Service's target port on a backend: a number, or a named port resolved to the
/// backend's container port number when it declares it (named ports stay named otherwise,
/// as NetworkPolicy accepts them).
pub fn target(t: &IntOrString, wl: &WorkloadInfo) -> Port {
    match t {
        IntOrString::Int(n) => u16::try_from(*n).map_or(Port::Any, Port::Number),
        IntOrString::String(name) => wl
            .ports
            .iter()
            .find(|(n, _, _)| n == name)
            .and_then(|(_, p, _)| u16::try_from(*p).ok())
            .map_or_else(|| Port::Name(name.clone()), Port::Number),
    }
}

/// The IPv4 and IPv6 ranges sockscope classifies `private` (identity/remote.rs).
pub fn private_ranges() -> Vec<IpNet> {
    [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    ]
    .iter()
    .filter_map(|s| s.parse().ok())
    .collect()
}

/// The selector of a subject's pods, and their labels.
pub fn pods_of<'a>(cluster: &'a ClusterInfo, w: &Workload) -> Option<&'a WorkloadInfo> {
    cluster.workload(&w.namespace, &w.name, &w.kind)
}

/// A namespace selector for exactly `namespace`.
pub fn namespace_selector(namespace: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(Labels::from([(
            "kubernetes.io/metadata.name".to_string(),
            namespace.to_string(),
        )])),
        match_expressions: None,
    }
}

/// Subjects with at least one need, in order.
pub fn subjects(needs: &Needs) -> BTreeSet<Workload> {
    needs.keys().map(|n| n.subject.clone()).collect()
}
