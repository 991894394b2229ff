//! `sockscope policy --audit`: existing NetworkPolicies against observed traffic. Each need
//! is evaluated as the NetworkPolicy API defines it: a pod is isolated in a direction when a
//! policy of its namespace selects it for that direction, and then only traffic some rule of
//! those policies allows is allowed.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
};

use ipnet::IpNet;
use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec},
    apimachinery::pkg::util::intstr::IntOrString,
};
use serde::{Deserialize, Serialize};

use super::{
    Error, Result,
    cluster::{ClusterInfo, Labels, WorkloadInfo, selects},
    needs::{ALL_NODES, Direction, Need, Needs, Other, Port, pods_of, private_ranges},
    observed::{Traffic, Workload},
};

/// Reads every NetworkPolicy in `paths` (YAML or JSON; several documents and `kind: List`
/// allowed). Other kinds are an error: an audit that skipped them would mislead.
pub fn read(paths: &[std::path::PathBuf]) -> Result<Vec<NetworkPolicy>> {
    let mut out = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        for (i, doc) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let value = serde_json::Value::deserialize(doc).map_err(|e| bad(path, i, &e))?;
            if value.is_null() {
                continue;
            }
            collect(value, path, i, &mut out)?;
        }
    }
    Ok(out)
}

fn bad(path: &Path, doc: usize, e: &dyn std::fmt::Display) -> Error {
    Error::Policy {
        path: path.to_path_buf(),
        document: doc + 1,
        message: crate::report::one_line(&e.to_string()),
    }
}

fn collect(
    value: serde_json::Value,
    path: &Path,
    doc: usize,
    out: &mut Vec<NetworkPolicy>,
) -> Result<()> {
    match value["kind"].as_str() {
        Some("List") | Some("NetworkPolicyList") => {
            for item in value["items"].as_array().cloned().unwrap_or_default() {
                collect(item, path, doc, out)?;
            }
            Ok(())
        }
        Some("NetworkPolicy") => {
            // Calico's and Antrea's policies share the kind, not the meaning.
            if value["apiVersion"] != "networking.k8s.io/v1" {
                return Err(bad(
                    path,
                    doc,
                    &format!(
                        "apiVersion {} is not networking.k8s.io/v1 (the audit understands Kubernetes NetworkPolicies only)",
                        value["apiVersion"]
                    ),
                ));
            }
            let p: NetworkPolicy = serde_json::from_value(value).map_err(|e| bad(path, doc, &e))?;
            if p.metadata.namespace.as_deref().unwrap_or("").is_empty() {
                // kubectl would put it in the current namespace: which one is not known here.
                return Err(bad(
                    path,
                    doc,
                    &format!(
                        "NetworkPolicy {} has no metadata.namespace (render it with the namespace it is applied to)",
                        p.metadata.name.as_deref().unwrap_or("")
                    ),
                ));
            }
            out.push(p);
            Ok(())
        }
        other => Err(bad(
            path,
            doc,
            &format!(
                "kind {} is not a NetworkPolicy (the audit understands networking.k8s.io/v1 NetworkPolicy)",
                other.unwrap_or("(none)")
            ),
        )),
    }
}

/// The verdict on one need.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    /// `namespace/workload` whose pods the need is about.
    pub workload: String,
    /// ingress or egress.
    pub direction: Direction,
    /// The other side.
    pub peer: String,
    /// Port and protocol.
    pub port: String,
    /// allowed, denied, or unknown (the API does not know a side).
    pub verdict: &'static str,
    /// The policies that isolate the pods in that direction (for denied), or the one that
    /// allows it.
    pub policies: Vec<String>,
    /// Connections in the window (TCP).
    pub connections: u64,
    /// Bytes in the window.
    pub bytes: u64,
}

/// The audit's result.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Every need with its verdict.
    pub edges: Vec<Row>,
    /// Policies whose rules allow nothing that was observed.
    pub unused_policies: Vec<String>,
}

impl Report {
    /// Whether observed traffic would be denied.
    pub fn denies(&self) -> bool {
        self.edges.iter().any(|r| r.verdict == DENIED)
    }
}

/// Observed, and no rule allows it.
pub const DENIED: &str = "denied";
/// Allowed by a generated policy without having been seen (DNS's other protocol, the cluster
/// DNS of a workload whose lookups no row named), and no rule allows it: not an error.
pub const DENIED_UNOBSERVED: &str = "denied-unobserved";

/// Audits `needs` of the selected subjects.
pub fn audit(
    needs: &Needs,
    cluster: &ClusterInfo,
    policies: &[NetworkPolicy],
    selected: &dyn Fn(&Workload) -> bool,
) -> Report {
    let mut used: BTreeSet<usize> = BTreeSet::new();
    let mut edges = Vec::new();
    let mut namespaces = BTreeSet::new();
    for (need, t) in needs {
        if !selected(&need.subject) {
            continue;
        }
        namespaces.insert(need.subject.namespace.as_str());
        edges.push(verdict(need, t, cluster, policies, &mut used));
    }
    // Of the namespaces audited: a policy elsewhere had nothing to allow here.
    let unused_policies = policies
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            !used.contains(i) && namespaces.contains(p.metadata.namespace.as_deref().unwrap_or(""))
        })
        .map(|(_, p)| policy_name(p))
        .collect();
    Report {
        edges,
        unused_policies,
    }
}

fn policy_name(p: &NetworkPolicy) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or(""),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

/// The directions a policy isolates, as the API server defaults them: `policyTypes` when
/// given and not empty, else Ingress, and Egress when it has egress rules.
fn policy_types(spec: &NetworkPolicySpec) -> Vec<String> {
    match spec.policy_types.as_ref().filter(|t| !t.is_empty()) {
        Some(t) => t.clone(),
        None => {
            let mut t = vec!["Ingress".to_string()];
            if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                t.push("Egress".into());
            }
            t
        }
    }
}

fn describe(other: &Other) -> String {
    match other {
        Other::Pods { workload } => format!("{workload}"),
        Other::Addresses {
            class,
            ip,
            host,
            node,
        } => {
            let mut s = match ip {
                Some(ip) => ip.to_string(),
                None if node == ALL_NODES => "(every node: host network)".to_string(),
                None if !node.is_empty() => format!("node {node}"),
                None => format!("({class})"),
            };
            if !host.is_empty() {
                s.push_str(&format!(" {host}"));
            }
            s
        }
        Other::Endpoints { service, .. } => format!("Service {service} endpoints"),
        Other::Unknown { what } => what.clone(),
    }
}

fn verdict(
    need: &Need,
    t: &Traffic,
    cluster: &ClusterInfo,
    policies: &[NetworkPolicy],
    used: &mut BTreeSet<usize>,
) -> Row {
    let mut row = Row {
        workload: need.subject.to_string(),
        direction: need.direction,
        peer: describe(&need.other),
        port: format!("{}/{}", need.port, need.protocol.as_str()),
        verdict: "unknown",
        policies: Vec::new(),
        connections: t.connections.round() as u64,
        bytes: t.bytes.round() as u64,
    };
    let Some(subject) = pods_of(cluster, &need.subject) else {
        return row;
    };
    let ns = &need.subject.namespace;
    let kind = match need.direction {
        Direction::Ingress => "Ingress",
        Direction::Egress => "Egress",
    };
    // Borrowed, not cloned: this runs for every need and policy.
    let no_spec = NetworkPolicySpec::default();
    let all_pods = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector::default();
    let isolating: Vec<(usize, &NetworkPolicy)> = policies
        .iter()
        .enumerate()
        .filter(|(_, p)| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|(_, p)| {
            let spec = p.spec.as_ref().unwrap_or(&no_spec);
            policy_types(spec).iter().any(|x| x == kind)
                && selects(
                    spec.pod_selector.as_ref().unwrap_or(&all_pods),
                    &subject.pod_labels,
                )
        })
        .collect();
    if isolating.is_empty() {
        row.verdict = "allowed";
        return row;
    }
    // The server's pods, whose named ports a rule may use.
    let server: Option<&WorkloadInfo> = match (&need.direction, &need.other) {
        (Direction::Ingress, _) => Some(subject),
        (Direction::Egress, Other::Pods { workload }) => pods_of(cluster, workload),
        _ => None,
    };
    // Every policy that allows it is used, not only the first.
    for (i, p) in &isolating {
        let spec = p.spec.as_ref().unwrap_or(&no_spec);
        let allowed = match need.direction {
            Direction::Ingress => spec.ingress.iter().flatten().any(|r| {
                peers_match(r.from.as_deref(), ns, &need.other, cluster)
                    && ports_match(r.ports.as_deref(), need, server)
            }),
            Direction::Egress => spec.egress.iter().flatten().any(|r| {
                peers_match(r.to.as_deref(), ns, &need.other, cluster)
                    && ports_match(r.ports.as_deref(), need, server)
            }),
        };
        if allowed {
            used.insert(*i);
            row.policies.push(policy_name(p));
        }
    }
    if !row.policies.is_empty() {
        row.verdict = "allowed";
        return row;
    }
    row.policies = isolating.iter().map(|(_, p)| policy_name(p)).collect();
    row.verdict = if matches!(need.other, Other::Unknown { .. }) {
        // Only a rule for every peer could be known to allow it.
        "unknown"
    } else if need.direction == Direction::Ingress
        && matches!(&need.other, Other::Addresses { class, .. } if class == "node")
    {
        // Traffic from the pod's own node is always allowed (the kubelet's probes), from
        // another node's host network it is not: which one this was is not recorded.
        "unknown"
    } else if !t.observed {
        DENIED_UNOBSERVED
    } else {
        DENIED
    };
    row
}

fn peers_match(
    peers: Option<&[NetworkPolicyPeer]>,
    policy_ns: &str,
    other: &Other,
    cluster: &ClusterInfo,
) -> bool {
    // No `from`/`to`, or an empty list: every peer.
    let Some(peers) = peers.filter(|p| !p.is_empty()) else {
        return true;
    };
    match other {
        Other::Addresses {
            class,
            ip: None,
            node,
            ..
        } => {
            return if node.is_empty() {
                blocks_cover_class(peers, class)
            } else {
                // A node's addresses (every node's for a host-network workload): each covered
                // by some block, as the traffic came from one of them.
                let ips: Vec<IpAddr> = if node == ALL_NODES {
                    cluster.nodes.values().flatten().copied().collect()
                } else {
                    cluster
                        .nodes
                        .get(node)
                        .into_iter()
                        .flatten()
                        .copied()
                        .collect()
                };
                !ips.is_empty() && ips.iter().all(|ip| blocks_cover(peers, ip))
            };
        }
        Other::Endpoints { ips, .. } => {
            return !ips.is_empty() && ips.iter().all(|ip| blocks_cover(peers, ip));
        }
        _ => {}
    }
    peers
        .iter()
        .any(|peer| peer_matches(peer, policy_ns, other, cluster))
}

/// Whether some ipBlock of a rule allows `ip`.
fn blocks_cover(peers: &[NetworkPolicyPeer], ip: &IpAddr) -> bool {
    let net = IpNet::from(*ip);
    peers.iter().filter_map(|p| p.ip_block.as_ref()).any(|b| {
        b.cidr.parse::<IpNet>().is_ok_and(|c| c.contains(&net))
            && !b
                .except
                .iter()
                .flatten()
                .filter_map(|e| e.parse::<IpNet>().ok())
                .any(|e| e.contains(&net))
    })
}

/// Whether a rule's ipBlocks together allow every address of `class` (the address itself
/// was not recorded): every private range for `private`, everything but them in both
/// families for `public`, everything for another class.
fn blocks_cover_class(peers: &[NetworkPolicyPeer], class: &str) -> bool {
    let blocks: Vec<(IpNet, Vec<IpNet>)> = peers
        .iter()
        .filter_map(|p| p.ip_block.as_ref())
        .filter_map(|b| {
            let cidr = b.cidr.parse::<IpNet>().ok()?;
            let except = b
                .except
                .iter()
                .flatten()
                .filter_map(|e| e.parse().ok())
                .collect();
            Some((cidr, except))
        })
        .collect();
    let private = private_ranges();
    let covered = |net: &IpNet, allowed_holes: &[IpNet]| {
        blocks.iter().any(|(cidr, except)| {
            cidr.contains(net)
                && except
                    .iter()
                    .all(|e| !overlaps(e, net) || allowed_holes.iter().any(|h| h.contains(e)))
        })
    };
    let any: [IpNet; 2] = [
        IpNet::V4(ipnet::Ipv4Net::default()),
        IpNet::V6(ipnet::Ipv6Net::default()),
    ];
    match class {
        "private" => private.iter().all(|r| covered(r, &[])),
        "public" => any.iter().all(|a| covered(a, &private)),
        _ => any.iter().all(|a| covered(a, &[])),
    }
}

fn peer_matches(
    peer: &NetworkPolicyPeer,
    policy_ns: &str,
    other: &Other,
    cluster: &ClusterInfo,
) -> bool {
    match other {
        Other::Pods { workload } => {
            if peer.ip_block.is_some() {
                // ipBlock is for addresses outside the cluster's pods (the API says pod IPs
                // may or may not match, depending on the network plugin): not relied on.
                return false;
            }
            let Some(info) = pods_of(cluster, workload) else {
                return false;
            };
            let empty = Labels::new();
            let ns_labels = cluster
                .namespaces
                .get(&workload.namespace)
                .unwrap_or(&empty);
            let ns_ok = match &peer.namespace_selector {
                Some(sel) => selects(sel, ns_labels),
                None => workload.namespace == policy_ns,
            };
            let pod_ok = match &peer.pod_selector {
                Some(sel) => selects(sel, &info.pod_labels),
                None => true,
            };
            ns_ok && pod_ok
        }
        // With its address; without, the rule's blocks together decide (peers_match).
        Other::Addresses { ip: Some(ip), .. } => blocks_cover(std::slice::from_ref(peer), ip),
        Other::Addresses { ip: None, .. } | Other::Endpoints { .. } | Other::Unknown { .. } => {
            false
        }
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

fn ports_match(
    ports: Option<&[NetworkPolicyPort]>,
    need: &Need,
    server: Option<&WorkloadInfo>,
) -> bool {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return true;
    };
    let proto = need.protocol.as_str();
    ports.iter().any(|p| {
        if p.protocol.as_deref().unwrap_or("TCP") != proto {
            return false;
        }
        let Some(port) = &p.port else {
            return true;
        };
        let named = |name: &str| -> Option<u16> {
            server?
                .ports
                .iter()
                .find(|(n, _, pr)| n == name && pr == proto)
                .and_then(|(_, num, _)| u16::try_from(*num).ok())
        };
        match (&need.port, port) {
            (Port::Any, _) => false,
            (Port::Number(n), IntOrString::Int(first)) => {
                let last = p.end_port.unwrap_or(*first);
                (*first..=last).contains(&i32::from(*n))
            }
            (Port::Number(n), IntOrString::String(name)) => named(name) == Some(*n),
            (Port::Name(a), IntOrString::String(b)) => a == b,
            (Port::Name(a), IntOrString::Int(first)) => named(a)
                .is_some_and(|n| (*first..=p.end_port.unwrap_or(*first)).contains(&i32::from(n))),
        }
    })
}

/// The report as a table: denied first, then unknown, then allowed; unused policies last.
pub fn table(report: &Report) -> String {
    let order = |v: &str| match v {
        DENIED => 0,
        DENIED_UNOBSERVED => 1,
        "unknown" => 2,
        _ => 3,
    };
    let mut rows: Vec<&Row> = report.edges.iter().collect();
    rows.sort_by(|a, b| (order(a.verdict), *a).cmp(&(order(b.verdict), *b)));
    let header = [
        "VERDICT",
        "WORKLOAD",
        "DIRECTION",
        "PEER",
        "PORT",
        "CONNECTIONS",
        "BYTES",
        "POLICIES",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.verdict.to_string(),
                r.workload.clone(),
                format!("{:?}", r.direction).to_lowercase(),
                r.peer.clone(),
                r.port.clone(),
                r.connections.to_string(),
                r.bytes.to_string(),
                if r.policies.is_empty() {
                    "-".into()
                } else {
                    r.policies.join(",")
                },
            ]
        })
        .collect();
    let mut out = super::columns(&header, &cells);
    let counts: BTreeMap<&str, usize> = report.edges.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.verdict).or_default() += 1;
        m
    });
    out.push_str(&format!(
        "\n{} denied, {} allowed, {} unknown, {} not observed and denied\n",
        counts.get(DENIED).unwrap_or(&0),
        counts.get("allowed").unwrap_or(&0),
        counts.get("unknown").unwrap_or(&0),
        counts.get(DENIED_UNOBSERVED).unwrap_or(&0),
    ));
    for p in &report.unused_policies {
        out.push_str(&format!("policy {p} allows nothing that was observed\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::advice::{cluster::match_labels, observed::Protocol};

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn workload(ns: &str, name: &str) -> Workload {
        Workload {
            namespace: ns.into(),
            name: name.into(),
            kind: "Deployment".into(),
        }
    }

    /// web (shop, app=web, port http=8080) and db (data, app=db, 5432).
    fn cluster() -> ClusterInfo {
        let mut c = ClusterInfo::default();
        for (ns, name, l, ports) in [
            (
                "shop",
                "web",
                labels(&[("app", "web")]),
                vec![("http", 8080)],
            ),
            ("data", "db", labels(&[("app", "db")]), vec![("pg", 5432)]),
        ] {
            c.workloads.insert(
                (ns.into(), name.into()),
                vec![WorkloadInfo {
                    kind: "Deployment".into(),
                    selector: match_labels(&l),
                    pod_labels: l,
                    ports: ports
                        .into_iter()
                        .map(|(n, p)| (n.to_string(), p, "TCP".to_string()))
                        .collect(),
                    host_network: false,
                }],
            );
        }
        for ns in ["shop", "data"] {
            c.namespaces.insert(
                ns.into(),
                labels(&[("kubernetes.io/metadata.name", ns), ("team", ns)]),
            );
        }
        c
    }

    fn need(
        subject: Workload,
        direction: Direction,
        other: Other,
        port: u16,
        p: Protocol,
    ) -> Needs {
        BTreeMap::from([(
            Need {
                subject,
                direction,
                other,
                port: Port::Number(port),
                protocol: p,
            },
            Traffic {
                observed: true,
                ..Traffic::default()
            },
        )])
    }

    fn policy(v: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(v).expect("policy")
    }

    fn verdict_of(needs: &Needs, policies: &[NetworkPolicy]) -> (&'static str, Vec<String>) {
        let r = audit(needs, &cluster(), policies, &|_| true);
        (r.edges[0].verdict, r.unused_policies)
    }

    #[test]
    fn named_ports_end_ports_and_protocols() {
        let db = Other::Pods {
            workload: workload("data", "db"),
        };
        let into_web = need(
            workload("shop", "web"),
            Direction::Ingress,
            db.clone(),
            8080,
            Protocol::Tcp,
        );
        let allow = |ports: serde_json::Value| {
            policy(json!({"metadata": {"name": "p", "namespace": "shop"},
                "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                         "ingress": [{"ports": ports}]}}))
        };
        assert_eq!(
            verdict_of(&into_web, &[allow(json!([{"port": "http"}]))]).0,
            "allowed"
        );
        assert_eq!(
            verdict_of(
                &into_web,
                &[allow(json!([{"port": 8000, "endPort": 8100}]))]
            )
            .0,
            "allowed"
        );
        assert_eq!(
            verdict_of(&into_web, &[allow(json!([{"port": 8081}]))]).0,
            "denied"
        );
        // The protocol defaults to TCP.
        assert_eq!(
            verdict_of(
                &into_web,
                &[allow(json!([{"port": 8080, "protocol": "UDP"}]))]
            )
            .0,
            "denied"
        );
        assert_eq!(
            verdict_of(&into_web, &[allow(json!([{"protocol": "TCP"}]))]).0,
            "allowed"
        );
        // A port name the server does not declare matches nothing.
        assert_eq!(
            verdict_of(&into_web, &[allow(json!([{"port": "grpc"}]))]).0,
            "denied"
        );
    }

    #[test]
    fn isolation_and_peers() {
        let web = Other::Pods {
            workload: workload("shop", "web"),
        };
        let into_db = need(
            workload("data", "db"),
            Direction::Ingress,
            web.clone(),
            5432,
            Protocol::Tcp,
        );
        let from = |peers: serde_json::Value| {
            policy(json!({"metadata": {"name": "db", "namespace": "data"},
                "spec": {"podSelector": {}, "ingress": [{"from": peers}]}}))
        };
        // Not selected by any policy: allowed, and the policy is unused.
        let other = policy(json!({"metadata": {"name": "x", "namespace": "data"},
            "spec": {"podSelector": {"matchLabels": {"app": "cache"}}}}));
        assert_eq!(
            verdict_of(&into_db, std::slice::from_ref(&other)),
            ("allowed", vec!["data/x".to_string()])
        );
        // podSelector alone: pods of the policy's namespace only.
        assert_eq!(
            verdict_of(
                &into_db,
                &[from(
                    json!([{"podSelector": {"matchLabels": {"app": "web"}}}])
                )]
            )
            .0,
            "denied"
        );
        assert_eq!(
            verdict_of(
                &into_db,
                &[from(
                    json!([{"namespaceSelector": {"matchLabels": {"team": "shop"}}}])
                )]
            )
            .0,
            "allowed"
        );
        assert_eq!(
            verdict_of(&into_db, &[from(json!([{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "api"}}}]))]).0,
            "denied"
        );
        // ipBlocks are not relied on for pods.
        assert_eq!(
            verdict_of(
                &into_db,
                &[from(json!([{"ipBlock": {"cidr": "0.0.0.0/0"}}]))]
            )
            .0,
            "denied"
        );
        // Without policyTypes, a policy with only ingress rules does not isolate egress.
        let out_of_web = need(
            workload("shop", "web"),
            Direction::Egress,
            Other::Pods {
                workload: workload("data", "db"),
            },
            5432,
            Protocol::Tcp,
        );
        let ingress_only = policy(json!({"metadata": {"name": "i", "namespace": "shop"},
            "spec": {"podSelector": {}, "ingress": []}}));
        assert_eq!(verdict_of(&out_of_web, &[ingress_only]).0, "allowed");
        let egress_default_deny = policy(json!({"metadata": {"name": "e", "namespace": "shop"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"]}}));
        assert_eq!(verdict_of(&out_of_web, &[egress_default_deny]).0, "denied");
    }

    #[test]
    fn addresses_and_classes() {
        let out = |ip: Option<&str>, class: &str| {
            need(
                workload("shop", "web"),
                Direction::Egress,
                Other::Addresses {
                    class: class.into(),
                    ip: ip.map(|i| i.parse().expect("ip")),
                    host: String::new(),
                    node: String::new(),
                },
                443,
                Protocol::Tcp,
            )
        };
        let to = |blocks: serde_json::Value| {
            policy(json!({"metadata": {"name": "e", "namespace": "shop"},
                "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": blocks}]}}))
        };
        let p =
            to(json!([{"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.128/25"]}}]));
        assert_eq!(
            verdict_of(
                &out(Some("203.0.113.10"), "public"),
                std::slice::from_ref(&p)
            )
            .0,
            "allowed"
        );
        assert_eq!(
            verdict_of(
                &out(Some("203.0.113.200"), "public"),
                std::slice::from_ref(&p)
            )
            .0,
            "denied"
        );
        // Unlabelled addresses: only blocks that together cover the whole class.
        assert_eq!(verdict_of(&out(None, "public"), &[p]).0, "denied");
        let private: Vec<serde_json::Value> = private_ranges()
            .iter()
            .map(|r| json!({"ipBlock": {"cidr": r.to_string()}}))
            .collect();
        assert_eq!(
            verdict_of(&out(None, "private"), &[to(json!(private))]).0,
            "allowed"
        );
        assert_eq!(
            verdict_of(&out(None, "private"), &[to(json!(private[..3]))]).0,
            "denied"
        );
        let world = to(json!([
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}},
            {"ipBlock": {"cidr": "::/0"}}
        ]));
        assert_eq!(
            verdict_of(&out(None, "public"), std::slice::from_ref(&world)).0,
            "allowed"
        );
        assert_eq!(verdict_of(&out(None, "vpc"), &[world]).0, "denied");
        let v4_only = to(json!([{"ipBlock": {"cidr": "0.0.0.0/0"}}]));
        assert_eq!(verdict_of(&out(None, "public"), &[v4_only]).0, "denied");
    }

    #[test]
    fn nodes_with_several_addresses_and_unobserved_needs() {
        let mut c = cluster();
        c.nodes.insert(
            "n1".into(),
            [
                "192.0.2.10".parse().expect("ip"),
                "198.51.100.10".parse().expect("ip"),
            ]
            .into(),
        );
        let from_node = need(
            workload("shop", "web"),
            Direction::Egress,
            Other::Addresses {
                class: "node".into(),
                ip: None,
                host: String::new(),
                node: "n1".into(),
            },
            10250,
            Protocol::Tcp,
        );
        let to = |blocks: serde_json::Value| {
            policy(json!({"metadata": {"name": "e", "namespace": "shop"},
                "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": blocks}]}}))
        };
        let both = to(
            json!([{"ipBlock": {"cidr": "192.0.2.10/32"}}, {"ipBlock": {"cidr": "198.51.100.10/32"}}]),
        );
        let r = audit(&from_node, &c, &[both], &|_| true);
        assert_eq!(r.edges[0].verdict, "allowed");
        let one = to(json!([{"ipBlock": {"cidr": "192.0.2.10/32"}}]));
        let r = audit(&from_node, &c, std::slice::from_ref(&one), &|_| true);
        assert_eq!(r.edges[0].verdict, DENIED);
        // Not observed (an allowance the policies add, such as DNS over TCP): reported, not
        // an error.
        let mut unseen = from_node.clone();
        for t in unseen.values_mut() {
            t.observed = false;
        }
        let r = audit(&unseen, &c, &[one], &|_| true);
        assert_eq!(r.edges[0].verdict, DENIED_UNOBSERVED);
        assert!(!r.denies());
    }

    #[test]
    fn reads_documents_and_lists_and_refuses_other_kinds() {
        let dir = std::env::temp_dir().join(format!("sockscope-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let good = dir.join("good.yaml");
        std::fs::write(
            &good,
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a, namespace: x}\nspec: {podSelector: {}}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.k8s.io/v1\n  kind: NetworkPolicy\n  metadata: {name: b, namespace: x}\n  spec: {podSelector: {}}\n",
        )
        .expect("write");
        assert_eq!(read(std::slice::from_ref(&good)).expect("read").len(), 2);
        let bad = dir.join("bad.yaml");
        std::fs::write(
            &bad,
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a, namespace: x}\n---\nkind: Deployment\n",
        )
        .expect("write");
        let e = read(std::slice::from_ref(&bad))
            .expect_err("a Deployment")
            .to_string();
        assert!(
            e.contains("(document 2)") && e.contains("kind Deployment"),
            "{e}"
        );
        for (text, why) in [
            (
                "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: a, namespace: x}\n",
                "not networking.k8s.io/v1",
            ),
            (
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}}\n",
                "no metadata.namespace",
            ),
        ] {
            std::fs::write(&bad, text).expect("write");
            let e = read(std::slice::from_ref(&bad))
                .expect_err(text)
                .to_string();
            assert!(e.contains(why), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
