//! Policies from needs: one per workload, as a Kubernetes NetworkPolicy or a
//! CiliumNetworkPolicy. Output is sorted throughout so that two runs over the same traffic
//! print the same bytes.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};

use super::{
    cluster::ClusterInfo,
    needs::{
        ALL_NODES, Direction, Need, Needs, Other, Port, namespace_selector, pods_of, private_ranges,
    },
    observed::{Protocol, Workload},
    yaml::COMMENT,
};
use crate::config::tools::PolicyFormat;

/// A peer of a rule, before it is written in a format.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    /// Pods of a workload: its namespace and selector (as JSON, sortable).
    Pods {
        workload: Workload,
        selector: String,
    },
    /// Address blocks, with the hostnames and classes behind them.
    Blocks {
        blocks: Vec<(IpNet, Vec<IpNet>)>,
        hosts: BTreeSet<String>,
        why: String,
    },
    /// External names (Cilium toFQDNs).
    Names { names: BTreeSet<String> },
    /// Cilium entities (world, host, remote-node).
    Entities {
        entities: BTreeSet<String>,
        why: String,
    },
}

type PortSet = BTreeSet<(Port, Protocol)>;

/// One workload's policy, format-neutral.
struct Plan {
    subject: Workload,
    /// The policy's name.
    name: String,
    selector: LabelSelector,
    ingress: BTreeMap<Vec<Peer>, PortSet>,
    egress: BTreeMap<Vec<Peer>, PortSet>,
    /// Needs no rule could be written for.
    unwritable: BTreeSet<String>,
    /// A DNS proxy rule is needed (Cilium toFQDNs).
    dns_proxy: bool,
}

/// Renders every selected subject's policy; the second list says which subjects got none and
/// why.
pub fn policies(
    needs: &Needs,
    owners: &BTreeSet<Workload>,
    cluster: &ClusterInfo,
    format: PolicyFormat,
    selected: &dyn Fn(&Workload) -> bool,
) -> (Vec<Value>, Vec<String>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let mut by_subject: BTreeMap<&Workload, Vec<&Need>> = BTreeMap::new();
    for n in needs.keys() {
        by_subject.entry(&n.subject).or_default().push(n);
    }
    // Only workloads sockscope recorded as owners: one seen only from its peers' side (no
    // agent on its nodes, outside the matchers) has traffic nobody recorded, which its
    // policy would deny.
    for (subject, list) in by_subject {
        if !selected(subject) {
            continue;
        }
        if !owners.contains(subject) {
            skipped.push(format!(
                "{subject}: no series of its own (seen only as a peer of others)"
            ));
            continue;
        }
        let Some(info) = pods_of(cluster, subject) else {
            skipped.push(format!(
                "{subject} ({}): not found in the Kubernetes API (deleted, or a kind sockscope cannot select)",
                if subject.kind.is_empty() { "kind unknown" } else { &subject.kind }
            ));
            continue;
        };
        if empty_selector(&info.selector) {
            skipped.push(format!(
                "{subject}: its pods carry no labels to select them by"
            ));
            continue;
        }
        if info.host_network {
            skipped.push(format!(
                "{subject}: its pods use the node's network, which NetworkPolicies do not govern"
            ));
            continue;
        }
        let shared = owners
            .iter()
            .filter(|w| w.namespace == subject.namespace && w.name == subject.name)
            .count()
            > 1;
        let mut plan = Plan {
            name: name(subject, shared),
            subject: subject.clone(),
            selector: info.selector.clone(),
            ingress: BTreeMap::new(),
            egress: BTreeMap::new(),
            unwritable: BTreeSet::new(),
            dns_proxy: false,
        };
        plan_rules(&mut plan, &list, cluster, format);
        out.push(match format {
            PolicyFormat::Kubernetes => kubernetes(&plan),
            PolicyFormat::Cilium => cilium(&plan, cluster),
        });
    }
    (out, skipped)
}

/// A selector that would select every pod of its namespace.
fn empty_selector(s: &LabelSelector) -> bool {
    s.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && s.match_expressions.as_ref().is_none_or(|m| m.is_empty())
}

/// The cluster DNS Service's backends (namespace, workload), and its ports on them.
fn dns_backends(cluster: &ClusterInfo) -> (BTreeSet<(String, String)>, BTreeSet<u16>) {
    let mut backends = BTreeSet::new();
    let mut ports = BTreeSet::new();
    if let Some((ns, name)) = &cluster.dns
        && let Some(svc) = cluster.services.get(&(ns.clone(), name.clone()))
    {
        for (w, info) in cluster.backends(ns, &svc.selector) {
            backends.insert((ns.clone(), w.to_string()));
            for sp in &svc.ports {
                if let super::needs::Port::Number(p) = super::needs::target(&sp.target, info) {
                    ports.insert(p);
                }
            }
        }
    }
    (backends, ports)
}

fn selector_json(s: &LabelSelector) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}

fn plan_rules(plan: &mut Plan, list: &[&Need], cluster: &ClusterInfo, format: PolicyFormat) {
    // Once per policy, not per need.
    let (dns, dns_ports) = dns_backends(cluster);
    // External addresses by (direction, port): grouped into blocks per port.
    let mut addresses: BTreeMap<(Direction, Port, Protocol), Vec<&Need>> = BTreeMap::new();
    for n in list {
        let rules = match n.direction {
            Direction::Ingress => &mut plan.ingress,
            Direction::Egress => &mut plan.egress,
        };
        let way = match n.direction {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        };
        match &n.other {
            Other::Pods { workload } => {
                let Some(info) = pods_of(cluster, workload) else {
                    plan.unwritable.insert(format!(
                        "{way} {workload} port {}/{}: not in the Kubernetes API",
                        n.port,
                        n.protocol.as_str()
                    ));
                    continue;
                };
                if empty_selector(&info.selector) {
                    // An empty selector is every pod of the namespace: far more than seen.
                    plan.unwritable.insert(format!(
                        "{way} {workload} port {}/{}: its pods carry no labels to select them by",
                        n.port,
                        n.protocol.as_str()
                    ));
                    continue;
                }
                if format == PolicyFormat::Cilium
                    && n.direction == Direction::Egress
                    && matches!(n.port, Port::Number(p) if dns_ports.contains(&p))
                    && dns.contains(&(workload.namespace.clone(), workload.name.clone()))
                {
                    // Written as the DNS proxy rule, which also allows it.
                    plan.dns_proxy = true;
                    continue;
                }
                let peer = Peer::Pods {
                    workload: workload.clone(),
                    selector: selector_json(&info.selector).to_string(),
                };
                rules
                    .entry(vec![peer])
                    .or_default()
                    .insert((n.port.clone(), n.protocol));
            }
            Other::Addresses { .. } => addresses
                .entry((n.direction, n.port.clone(), n.protocol))
                .or_default()
                .push(n),
            Other::Endpoints { service, ips } => {
                let peer = if format == PolicyFormat::Cilium && service == "default/kubernetes" {
                    // Cilium gives the API server an identity of its own; CIDR rules to it
                    // do not apply.
                    Peer::Entities {
                        entities: ["kube-apiserver".to_string()].into(),
                        why: "the Kubernetes API (Service default/kubernetes)".into(),
                    }
                } else {
                    Peer::Blocks {
                        blocks: IpNet::aggregate(
                            &ips.iter().map(|ip| IpNet::from(*ip)).collect::<Vec<_>>(),
                        )
                        .into_iter()
                        .map(|b| (b, Vec::new()))
                        .collect(),
                        hosts: BTreeSet::new(),
                        why: format!("the endpoints of Service {service} (it has no selector)"),
                    }
                };
                rules
                    .entry(vec![peer])
                    .or_default()
                    .insert((n.port.clone(), n.protocol));
            }
            Other::Unknown { what } => {
                plan.unwritable.insert(format!(
                    "{} {what} port {}/{}",
                    match n.direction {
                        Direction::Ingress => "from",
                        Direction::Egress => "to",
                    },
                    n.port,
                    n.protocol.as_str()
                ));
            }
        }
    }
    for ((direction, port, protocol), ns) in addresses {
        let (peers, unwritable) = address_peers(&ns, cluster, format, direction);
        for u in unwritable {
            plan.unwritable.insert(format!(
                "{} {u} port {port}/{}",
                match direction {
                    Direction::Ingress => "from",
                    Direction::Egress => "to",
                },
                protocol.as_str()
            ));
        }
        for peer in peers {
            if matches!(peer, Peer::Names { .. }) {
                plan.dns_proxy = true;
            }
            let rules = match direction {
                Direction::Ingress => &mut plan.ingress,
                Direction::Egress => &mut plan.egress,
            };
            rules
                .entry(vec![peer])
                .or_default()
                .insert((port.clone(), protocol));
        }
    }
}

/// Peers for needs towards addresses outside the pod network, on one port.
fn address_peers(
    needs: &[&Need],
    cluster: &ClusterInfo,
    format: PolicyFormat,
    direction: Direction,
) -> (Vec<Peer>, Vec<String>) {
    let mut ips: BTreeSet<IpAddr> = BTreeSet::new();
    let mut hosts = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut classes: BTreeSet<String> = BTreeSet::new();
    let mut nodes = BTreeSet::new();
    let mut node_names = BTreeSet::new();
    for n in needs {
        let Other::Addresses {
            class,
            ip,
            host,
            node,
        } = &n.other
        else {
            continue;
        };
        if !host.is_empty() {
            hosts.insert(host.clone());
        }
        if !node.is_empty() {
            node_names.insert(node.clone());
        }
        // Cilium names external servers by DNS; hosts folded into `~other` have no name.
        let named = format == PolicyFormat::Cilium
            && direction == Direction::Egress
            && class != "node"
            && !host.is_empty()
            && !host.starts_with('~');
        if named {
            names.insert(host.clone());
            continue;
        }
        match (ip, class.as_str()) {
            // Cilium names nodes by entity, whatever their addresses.
            (_, "node") if format == PolicyFormat::Cilium => {
                nodes.insert(node.clone());
            }
            (Some(ip), _) => {
                ips.insert(*ip);
            }
            (None, "node") => {
                nodes.insert(node.clone());
            }
            (None, c) => {
                classes.insert(c.to_string());
            }
        }
    }
    let mut out = Vec::new();
    if !names.is_empty() {
        out.push(Peer::Names { names });
    }
    if format == PolicyFormat::Cilium && !nodes.is_empty() {
        out.push(Peer::Entities {
            entities: ["host".to_string(), "remote-node".to_string()].into(),
            why: format!("nodes: {}", join(&nodes)),
        });
        nodes.clear();
    }
    if format == PolicyFormat::Cilium && classes.contains("public") {
        classes.remove("public");
        out.push(Peer::Entities {
            entities: ["world".to_string()].into(),
            why: "public addresses, not labelled (the agents run without --label-remote-ip)".into(),
        });
    }
    let mut unwritable = Vec::new();
    for node in &nodes {
        if node == ALL_NODES {
            // A host-network workload: every node's addresses.
            if cluster.nodes.is_empty() {
                unwritable
                    .push("every node (host network): no node address in the API".to_string());
            }
            ips.extend(cluster.nodes.values().flatten().copied());
            continue;
        }
        match cluster.nodes.get(node) {
            Some(addrs) if !addrs.is_empty() => ips.extend(addrs.iter().copied()),
            // Never widened to a wildcard: a node gone since is not written.
            _ => unwritable.push(format!("node {node}: no address in the API (gone?)")),
        }
    }
    let mut blocks: Vec<(IpNet, Vec<IpNet>)> =
        IpNet::aggregate(&ips.iter().map(|ip| IpNet::from(*ip)).collect::<Vec<_>>())
            .into_iter()
            .map(|n| (n, Vec::new()))
            .collect();
    let mut why = Vec::new();
    if !ips.is_empty() {
        why.push(format!(
            "{} address{} seen, aggregated only where they fill a prefix",
            ips.len(),
            if ips.len() == 1 { "" } else { "es" }
        ));
    }
    if !node_names.is_empty() {
        why.push(format!("nodes: {}", join(&node_names)));
    }
    let private = private_ranges();
    for c in &classes {
        match c.as_str() {
            "private" => {
                blocks.extend(private.iter().map(|n| (*n, Vec::new())));
                why.push("private addresses, not labelled: every private range".into());
            }
            "public" => {
                for any in ["0.0.0.0/0", "::/0"] {
                    let any: IpNet = any.parse().unwrap_or_default();
                    let except = private
                        .iter()
                        .filter(|p| any.contains(*p))
                        .copied()
                        .collect();
                    blocks.push((any, except));
                }
                why.push(
                    "public addresses, not labelled (the agents run without --label-remote-ip): every public address"
                        .into(),
                );
            }
            other => {
                for any in ["0.0.0.0/0", "::/0"] {
                    blocks.push((any.parse().unwrap_or_default(), Vec::new()));
                }
                why.push(format!(
                    "{other}: addresses not labelled; narrow to the class's CIDRs from the agent's config"
                ));
            }
        }
    }
    blocks.sort();
    blocks.dedup();
    if !blocks.is_empty() {
        out.push(Peer::Blocks {
            blocks,
            hosts,
            why: why.join("; "),
        });
    }
    (out, unwritable)
}

fn join(s: &BTreeSet<String>) -> String {
    s.iter().cloned().collect::<Vec<_>>().join(", ")
}

fn ports_json(ports: &PortSet, cilium: bool) -> Value {
    // A port folded into ~other: every port of that protocol (and only of that one).
    let any: BTreeSet<Protocol> = ports
        .iter()
        .filter(|(p, _)| *p == Port::Any)
        .map(|(_, proto)| *proto)
        .collect();
    Value::Array(
        any.iter()
            .map(|p| {
                if cilium {
                    json!({"port": "0", "protocol": p.as_str()})
                } else {
                    json!({"protocol": p.as_str()})
                }
            })
            .chain(
                ports
                    .iter()
                    .filter(|(_, proto)| !any.contains(proto))
                    .map(|(port, proto)| {
                        let port = match port {
                            Port::Number(n) if cilium => Value::String(n.to_string()),
                            Port::Number(n) => json!(n),
                            other => Value::String(other.to_string()),
                        };
                        json!({"port": port, "protocol": proto.as_str()})
                    }),
            )
            .collect(),
    )
}

fn header(plan: &Plan) -> String {
    let mut c = format!(
        "{} ({}): {} ingress and {} egress rule(s) from observed traffic",
        plan.subject,
        plan.subject.kind,
        plan.ingress.len(),
        plan.egress.len()
    );
    for u in &plan.unwritable {
        c.push_str(&format!("\nnot allowed (no rule can name it): {u}"));
    }
    c
}

/// `sockscope-<workload>`, with the kind when two kinds share the name in the namespace (a
/// Deployment and a CronJob `web`): one would replace the other when applied.
fn name(subject: &Workload, shared: bool) -> String {
    let mut n = if shared {
        format!(
            "sockscope-{}-{}",
            subject.kind.to_ascii_lowercase(),
            subject.name
        )
    } else {
        format!("sockscope-{}", subject.name)
    };
    n.truncate(253);
    // A name ends with an alphanumeric character.
    while n.ends_with(['-', '.']) {
        n.pop();
    }
    n
}

fn kubernetes(plan: &Plan) -> Value {
    let rules = |map: &BTreeMap<Vec<Peer>, PortSet>, key: &str| -> Vec<Value> {
        map.iter()
            .map(|(peers, ports)| {
                let mut rule = serde_json::Map::new();
                let mut list = Vec::new();
                for p in peers {
                    match p {
                        Peer::Pods { workload, selector } => {
                            list.push(json!({
                                "#": format!("{workload} ({})", workload.kind),
                                "namespaceSelector": selector_json(&namespace_selector(&workload.namespace)),
                                "podSelector": serde_json::from_str::<Value>(selector).unwrap_or(Value::Null),
                            }));
                        }
                        Peer::Blocks { blocks, hosts, why } => {
                            let mut c = why.clone();
                            if !hosts.is_empty() {
                                c.push_str(&format!("\nhostnames seen: {}", join(hosts)));
                            }
                            rule.insert(COMMENT.into(), Value::String(c));
                            for (cidr, except) in blocks {
                                let mut b = json!({"cidr": cidr.to_string()});
                                if !except.is_empty() {
                                    b["except"] = Value::Array(
                                        except.iter().map(|e| Value::String(e.to_string())).collect(),
                                    );
                                }
                                list.push(json!({ "ipBlock": b }));
                            }
                        }
                        // Cilium only.
                        Peer::Names { .. } | Peer::Entities { .. } => {}
                    }
                }
                rule.insert(key.into(), Value::Array(list));
                rule.insert("ports".into(), ports_json(ports, false));
                Value::Object(rule)
            })
            .collect()
    };
    json!({
        "#": header(plan),
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": plan.name,
            "namespace": plan.subject.namespace,
            "labels": {"app.kubernetes.io/managed-by": "sockscope"},
        },
        "spec": {
            "podSelector": selector_json(&plan.selector),
            "policyTypes": ["Ingress", "Egress"],
            "ingress": rules(&plan.ingress, "from"),
            "egress": rules(&plan.egress, "to"),
        }
    })
}

/// A Cilium endpoint selector for a workload's pods in its namespace.
fn endpoint_selector(selector: &LabelSelector, namespace: &str) -> Value {
    let mut s = selector_json(selector);
    if !s.is_object() {
        s = json!({});
    }
    let labels = s
        .as_object_mut()
        .map(|o| o.entry("matchLabels").or_insert_with(|| json!({})));
    if let Some(Value::Object(m)) = labels {
        m.insert(
            "k8s:io.kubernetes.pod.namespace".into(),
            Value::String(namespace.into()),
        );
    }
    s
}

/// The DNS proxy rule's ports: where the cluster DNS listens on its pods (53, or what its
/// Service's target port says), over UDP and TCP.
fn dns_proxy_ports(cluster: &ClusterInfo) -> Value {
    let (_, mut ports) = dns_backends(cluster);
    if ports.is_empty() {
        ports.insert(super::needs::DNS_PORT);
    }
    Value::Array(
        ports
            .iter()
            .map(|p| json!({"port": p.to_string(), "protocol": "ANY"}))
            .collect(),
    )
}

fn cilium(plan: &Plan, cluster: &ClusterInfo) -> Value {
    let rules = |map: &BTreeMap<Vec<Peer>, PortSet>, ingress: bool| -> Vec<Value> {
        map.iter()
            .map(|(peers, ports)| {
                let mut rule = serde_json::Map::new();
                for p in peers {
                    match p {
                        Peer::Pods { workload, selector } => {
                            let sel: LabelSelector =
                                serde_json::from_str(selector).unwrap_or_default();
                            rule.insert(
                                COMMENT.into(),
                                Value::String(format!("{workload} ({})", workload.kind)),
                            );
                            rule.insert(
                                if ingress {
                                    "fromEndpoints"
                                } else {
                                    "toEndpoints"
                                }
                                .into(),
                                json!([endpoint_selector(&sel, &workload.namespace)]),
                            );
                        }
                        Peer::Names { names } => {
                            rule.insert(
                                "toFQDNs".into(),
                                Value::Array(
                                    names.iter().map(|n| json!({"matchName": n})).collect(),
                                ),
                            );
                        }
                        Peer::Entities { entities, why } => {
                            rule.insert(COMMENT.into(), Value::String(why.clone()));
                            rule.insert(
                                if ingress {
                                    "fromEntities"
                                } else {
                                    "toEntities"
                                }
                                .into(),
                                json!(entities),
                            );
                        }
                        Peer::Blocks { blocks, hosts, why } => {
                            let mut c = why.clone();
                            if !hosts.is_empty() {
                                c.push_str(&format!("\nhostnames seen: {}", join(hosts)));
                            }
                            rule.insert(COMMENT.into(), Value::String(c));
                            rule.insert(
                                if ingress { "fromCIDRSet" } else { "toCIDRSet" }.into(),
                                Value::Array(
                                    blocks
                                        .iter()
                                        .map(|(cidr, except)| {
                                            let mut b = json!({"cidr": cidr.to_string()});
                                            if !except.is_empty() {
                                                b["except"] = json!(
                                                    except
                                                        .iter()
                                                        .map(|e| e.to_string())
                                                        .collect::<Vec<_>>()
                                                );
                                            }
                                            b
                                        })
                                        .collect(),
                                ),
                            );
                        }
                    }
                }
                rule.insert(
                    "toPorts".into(),
                    json!([{ "ports": ports_json(ports, true) }]),
                );
                Value::Object(rule)
            })
            .collect()
    };
    let mut egress = rules(&plan.egress, false);
    let mut header = header(plan);
    if plan.dns_proxy {
        // toFQDNs learns addresses from the DNS answers Cilium's DNS proxy sees: every
        // lookup must go through it, so the DNS rule has an L7 part.
        match cluster.dns.as_ref().and_then(|(ns, svc)| {
            let s = cluster.services.get(&(ns.clone(), svc.clone()))?;
            Some((ns, svc, s))
        }) {
            Some((ns, svc, s)) => egress.insert(
                0,
                json!({
                    "#": format!("DNS through Cilium's DNS proxy (Service {ns}/{svc}), which toFQDNs needs"),
                    "toEndpoints": [endpoint_selector(&super::cluster::match_labels(&s.selector), ns)],
                    "toPorts": [{
                        "ports": dns_proxy_ports(cluster),
                        "rules": {"dns": [{"matchPattern": "*"}]}
                    }]
                }),
            ),
            None => header.push_str(
                "\nno cluster DNS Service (kube-system, k8s-app=kube-dns) in the API: add the DNS proxy rule toFQDNs needs by hand",
            ),
        }
    }
    // A direction without rules does not make Cilium deny by default (enableDefaultDeny's
    // default is on only for a direction that has rules): an empty rule, which allows
    // nothing, does (and works on Cilium versions before enableDefaultDeny).
    let ingress = rules(&plan.ingress, true);
    let deny_all = || vec![json!({})];
    let ingress = if ingress.is_empty() {
        deny_all()
    } else {
        ingress
    };
    let egress = if egress.is_empty() {
        deny_all()
    } else {
        egress
    };
    json!({
        "#": header,
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {
            "name": plan.name,
            "namespace": plan.subject.namespace,
            "labels": {"app.kubernetes.io/managed-by": "sockscope"},
        },
        "spec": {
            "endpointSelector": selector_json(&plan.selector),
            "ingress": ingress,
            "egress": egress,
        }
    })
}
