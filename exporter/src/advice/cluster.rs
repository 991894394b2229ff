//! What the Kubernetes API says about the observed workloads: their pod selectors and pod
//! labels, container ports, Services (selector, port -> targetPort), namespaces' labels, node
//! addresses, and the cluster DNS Service. Nothing is guessed from names: a workload the API
//! does not know gets no selector, and the policy says so.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
        batch::v1::{CronJob, Job},
        core::v1::{Namespace, Node, Pod, PodTemplateSpec, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::{Api, Client, api::ListParams};
use serde::de::DeserializeOwned;

use super::{Error, Result};

/// Labels (key -> value).
pub type Labels = BTreeMap<String, String>;

/// A workload's kind and what selects its pods.
#[derive(Debug, Clone)]
pub struct WorkloadInfo {
    /// Deployment, StatefulSet, DaemonSet, CronJob, Job, ReplicaSet or Pod.
    pub kind: String,
    /// The controller's selector, or the bare pod's labels as `matchLabels`.
    pub selector: LabelSelector,
    /// Labels its pods carry (the pod template's, or the bare pod's).
    pub pod_labels: Labels,
    /// Container ports: (name, number, protocol).
    pub ports: Vec<(String, i32, String)>,
    /// Its pods use the node's network: policies reach them at the nodes' addresses, not by
    /// pod selectors.
    pub host_network: bool,
}

/// One port of a Service.
#[derive(Debug, Clone)]
pub struct ServicePort {
    /// Its name (EndpointSlices name their ports by it).
    pub name: String,
    /// The Service's port.
    pub port: i32,
    /// TCP, UDP or SCTP.
    pub protocol: String,
    /// Where it goes on the pods: a number or a container port's name.
    pub target: IntOrString,
}

/// A Service.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    /// Its pod selector (empty: a Service without selector, backed by endpoints managed by
    /// hand or by the control plane, as `default/kubernetes`).
    pub selector: Labels,
    /// Its ports.
    pub ports: Vec<ServicePort>,
    /// Its EndpointSlices' ports and addresses: (port name, port, protocol) -> addresses.
    pub endpoints: BTreeMap<(String, i32, String), BTreeSet<IpAddr>>,
}

/// A snapshot of the objects the policies need.
#[derive(Debug, Default)]
pub struct ClusterInfo {
    /// (namespace, workload name) -> every workload of that name (normally one).
    pub workloads: BTreeMap<(String, String), Vec<WorkloadInfo>>,
    /// (namespace, name) -> Service.
    pub services: BTreeMap<(String, String), ServiceInfo>,
    /// Namespace -> its labels.
    pub namespaces: BTreeMap<String, Labels>,
    /// Node name -> its addresses.
    pub nodes: BTreeMap<String, BTreeSet<IpAddr>>,
    /// The cluster DNS Service (kube-system, label k8s-app=kube-dns, as kube-dns and CoreDNS
    /// deployments label it), when there is one.
    pub dns: Option<(String, String)>,
}

/// Lists every object of a kind, page by page.
async fn list_all<K>(client: &Client, what: &'static str) -> Result<Vec<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::all(client.clone());
    collect(api, what).await
}

async fn collect<K>(api: Api<K>, what: &'static str) -> Result<Vec<K>>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await.map_err(|e| Error::Kubernetes {
            what,
            message: crate::report::one_line(&e.to_string()),
        })?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => params = params.continue_token(&c),
            _ => break,
        }
    }
    Ok(out)
}

/// A pod template's labels, container ports and whether it uses the node's network.
fn template(t: &PodTemplateSpec) -> (Labels, Vec<(String, i32, String)>, bool) {
    let labels = t
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let ports = t.spec.as_ref().map(pod_ports).unwrap_or_default();
    let host = t
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    (labels, ports, host)
}

fn pod_ports(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<(String, i32, String)> {
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.container_port,
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            )
        })
        .collect()
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn owned_by(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, kind: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.kind == kind)
}

impl ClusterInfo {
    /// Reads the cluster through `client`.
    pub async fn read(client: &Client) -> Result<Self> {
        let mut info = ClusterInfo::default();
        let mut add = |k: (String, String), w: WorkloadInfo| {
            info.workloads.entry(k).or_default().push(w);
        };
        for d in list_all::<Deployment>(client, "deployments").await? {
            let spec = d.spec.unwrap_or_default();
            let (pod_labels, ports, host_network) = template(&spec.template);
            add(
                key(&d.metadata),
                WorkloadInfo {
                    kind: "Deployment".into(),
                    selector: spec.selector,
                    pod_labels,
                    ports,
                    host_network,
                },
            );
        }
        for s in list_all::<StatefulSet>(client, "statefulsets").await? {
            let spec = s.spec.unwrap_or_default();
            let (pod_labels, ports, host_network) = template(&spec.template);
            add(
                key(&s.metadata),
                WorkloadInfo {
                    kind: "StatefulSet".into(),
                    selector: spec.selector,
                    pod_labels,
                    ports,
                    host_network,
                },
            );
        }
        for d in list_all::<DaemonSet>(client, "daemonsets").await? {
            let spec = d.spec.unwrap_or_default();
            let (pod_labels, ports, host_network) = template(&spec.template);
            add(
                key(&d.metadata),
                WorkloadInfo {
                    kind: "DaemonSet".into(),
                    selector: spec.selector,
                    pod_labels,
                    ports,
                    host_network,
                },
            );
        }
        for r in list_all::<ReplicaSet>(client, "replicasets").await? {
            // A Deployment's ReplicaSets are that Deployment's.
            if owned_by(&r.metadata, "Deployment") {
                continue;
            }
            let spec = r.spec.unwrap_or_default();
            let (pod_labels, ports, host_network) =
                spec.template.as_ref().map(template).unwrap_or_default();
            add(
                key(&r.metadata),
                WorkloadInfo {
                    kind: "ReplicaSet".into(),
                    selector: spec.selector,
                    pod_labels,
                    ports,
                    host_network,
                },
            );
        }
        for c in list_all::<CronJob>(client, "cronjobs").await? {
            // A Job's own selector holds its generated controller-uid, different for every
            // run; the runs' pods share the job template's labels.
            let spec = c.spec.unwrap_or_default();
            let (pod_labels, ports, host_network) = spec
                .job_template
                .spec
                .as_ref()
                .map(|j| template(&j.template))
                .unwrap_or_default();
            add(
                key(&c.metadata),
                WorkloadInfo {
                    kind: "CronJob".into(),
                    selector: match_labels(&pod_labels),
                    pod_labels,
                    ports,
                    host_network,
                },
            );
        }
        for j in list_all::<Job>(client, "jobs").await? {
            if owned_by(&j.metadata, "CronJob") {
                continue;
            }
            let spec = j.spec.unwrap_or_default();
            let (pod_labels, ports, host_network) = template(&spec.template);
            add(
                key(&j.metadata),
                WorkloadInfo {
                    kind: "Job".into(),
                    selector: spec.selector.unwrap_or_else(|| match_labels(&pod_labels)),
                    pod_labels,
                    ports,
                    host_network,
                },
            );
        }
        for p in list_all::<Pod>(client, "pods").await? {
            // Bare pods only: sockscope names a controlled pod by its controller.
            if p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true))
            {
                continue;
            }
            let labels = p.metadata.labels.clone().unwrap_or_default();
            let ports = p.spec.as_ref().map(pod_ports).unwrap_or_default();
            let host_network = p
                .spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false);
            add(
                key(&p.metadata),
                WorkloadInfo {
                    kind: "Pod".into(),
                    selector: match_labels(&labels),
                    pod_labels: labels,
                    ports,
                    host_network,
                },
            );
        }
        for s in list_all::<Service>(client, "services").await? {
            let k = key(&s.metadata);
            let labels = s.metadata.labels.clone().unwrap_or_default();
            if k.0 == "kube-system" && labels.get("k8s-app").map(String::as_str) == Some("kube-dns")
            {
                info.dns = Some(k.clone());
            }
            let spec = s.spec.unwrap_or_default();
            let ports = spec
                .ports
                .iter()
                .flatten()
                .map(|p| ServicePort {
                    name: p.name.clone().unwrap_or_default(),
                    port: p.port,
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    target: p.target_port.clone().unwrap_or(IntOrString::Int(p.port)),
                })
                .collect();
            info.services.insert(
                k,
                ServiceInfo {
                    selector: spec.selector.unwrap_or_default(),
                    ports,
                    endpoints: BTreeMap::new(),
                },
            );
        }
        // The endpoints of Services without a selector (the API server's own, external
        // databases given by hand): where their traffic really goes.
        for slice in list_all::<EndpointSlice>(client, "endpointslices").await? {
            let ns = slice.metadata.namespace.clone().unwrap_or_default();
            let Some(svc) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
            else {
                continue;
            };
            let Some(info) = info.services.get_mut(&(ns, svc.clone())) else {
                continue;
            };
            if !info.selector.is_empty() {
                continue;
            }
            let addrs: BTreeSet<IpAddr> = slice
                .endpoints
                .iter()
                .flat_map(|e| e.addresses.iter())
                .filter_map(|a| a.parse().ok())
                .collect();
            for p in slice.ports.iter().flatten() {
                let k = (
                    p.name.clone().unwrap_or_default(),
                    p.port.unwrap_or(0),
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                );
                info.endpoints
                    .entry(k)
                    .or_default()
                    .extend(addrs.iter().copied());
            }
        }
        let namespaces: Api<Namespace> = Api::all(client.clone());
        for n in collect(namespaces, "namespaces").await? {
            let name = n.metadata.name.clone().unwrap_or_default();
            let mut labels = n.metadata.labels.unwrap_or_default();
            // Set by the API server on every namespace (Kubernetes 1.21+), immutable.
            labels
                .entry("kubernetes.io/metadata.name".into())
                .or_insert_with(|| name.clone());
            info.namespaces.insert(name, labels);
        }
        let nodes: Api<Node> = Api::all(client.clone());
        // Nodes name kubelet probes and host-network peers; a user who may not list them
        // still gets policies, with those peers left unwritten (and said so).
        let nodes = match collect(nodes, "nodes").await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("{e}: node addresses unknown, node peers are not written");
                Vec::new()
            }
        };
        for n in nodes {
            let name = n.metadata.name.clone().unwrap_or_default();
            let addrs = n
                .status
                .and_then(|s| s.addresses)
                .unwrap_or_default()
                .into_iter()
                .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
                .filter_map(|a| a.address.parse().ok())
                .collect();
            info.nodes.insert(name, addrs);
        }
        Ok(info)
    }

    /// The one workload of this name (if several kinds share it, the one of `kind` when
    /// given).
    pub fn workload(&self, namespace: &str, name: &str, kind: &str) -> Option<&WorkloadInfo> {
        let all = self
            .workloads
            .get(&(namespace.to_string(), name.to_string()))?;
        match all.as_slice() {
            [one] if kind.is_empty() || one.kind == kind => Some(one),
            many => many.iter().find(|w| w.kind == kind),
        }
    }

    /// Workloads in `namespace` whose pods a Service's `selector` selects.
    pub fn backends<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a Labels,
    ) -> impl Iterator<Item = (&'a str, &'a WorkloadInfo)> + 'a {
        self.workloads
            .iter()
            .filter(move |((ns, _), _)| ns == namespace)
            .flat_map(|((_, name), ws)| ws.iter().map(move |w| (name.as_str(), w)))
            .filter(move |(_, w)| {
                !selector.is_empty() && selector.iter().all(|(k, v)| w.pod_labels.get(k) == Some(v))
            })
    }
}

/// A selector of exactly these labels.
pub fn match_labels(labels: &Labels) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels.clone()),
        match_expressions: None,
    }
}

/// Whether `selector` selects an object with `labels` (an empty selector selects all).
pub fn selects(selector: &LabelSelector, labels: &Labels) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        let has = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => has.is_some_and(|v| values.contains(v)),
            "NotIn" => has.is_none_or(|v| !values.contains(v)),
            "Exists" => has.is_some(),
            "DoesNotExist" => has.is_none(),
            // An operator the API would refuse: selects nothing, as it cannot be evaluated.
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    #[test]
    fn selectors() {
        let labels: Labels = [("app".to_string(), "web".to_string())].into();
        assert!(selects(&LabelSelector::default(), &labels));
        assert!(selects(&match_labels(&labels), &labels));
        let req = |op: &str, v: &[&str]| LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "app".into(),
                operator: op.into(),
                values: Some(v.iter().map(|s| s.to_string()).collect()),
            }]),
        };
        assert!(selects(&req("In", &["web", "api"]), &labels));
        assert!(!selects(&req("NotIn", &["web"]), &labels));
        assert!(selects(&req("Exists", &[]), &labels));
        assert!(!selects(&req("DoesNotExist", &[]), &labels));
        assert!(!selects(&req("Bogus", &[]), &labels));
    }
}
