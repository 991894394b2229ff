//! Trimmed API object types: only the fields sockscope reads are decoded, so a cluster-wide
//! list of pods costs the few strings kept, not the whole pod spec (containers, env, volumes).
//!
//! `Object<Spec, Status>` keeps kube's list/watch machinery; serde skips every field not named
//! here, so memory while decoding a page is bounded by the page, and nothing else is retained.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{ApiResource, Object};
use serde::Deserialize;

/// The pod fields sockscope reads.
pub type PodLite = Object<PodSpecLite, PodStatusLite>;
/// The service fields sockscope reads.
pub type ServiceLite = Object<ServiceSpecLite, NoStatus>;
/// The node fields sockscope reads.
pub type NodeLite = Object<NoSpec, NodeStatusLite>;

/// `pod.spec`, trimmed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpecLite {
    /// Node the pod is scheduled on.
    pub node_name: Option<String>,
    /// The pod uses the node's network namespace (and addresses).
    pub host_network: Option<bool>,
}

/// `pod.status`, trimmed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodStatusLite {
    /// Pending, Running, Succeeded, Failed, Unknown.
    pub phase: Option<String>,
    /// Primary pod IP.
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    /// Every pod IP (dual stack).
    #[serde(rename = "podIPs")]
    pub pod_ips: Vec<PodIp>,
    /// App containers.
    pub container_statuses: Vec<ContainerStatusLite>,
    /// Init containers.
    pub init_container_statuses: Vec<ContainerStatusLite>,
    /// Ephemeral (debug) containers.
    pub ephemeral_container_statuses: Vec<ContainerStatusLite>,
}

/// One entry of `status.podIPs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PodIp {
    /// The address.
    pub ip: String,
}

/// A container's name and runtime id.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerStatusLite {
    /// Container name from the pod spec.
    pub name: String,
    /// `<runtime>://<id>`, e.g. `containerd://0123...`; empty until the container started.
    #[serde(rename = "containerID")]
    pub container_id: Option<String>,
}

/// `service.spec`, trimmed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceSpecLite {
    /// ClusterIP, IP, "None" (headless) or empty (ExternalName).
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// Every cluster IP (dual stack).
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
}

/// `node.status`, trimmed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NodeStatusLite {
    /// InternalIP, ExternalIP, Hostname, ...
    pub addresses: Vec<NodeAddress>,
}

/// One node address.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NodeAddress {
    /// Address type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The address.
    pub address: String,
}

/// A spec sockscope does not read (anything decodes into it).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NoSpec {}

/// A status sockscope does not read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NoStatus {}

/// API coordinates of the trimmed types.
pub fn pods() -> ApiResource {
    ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&())
}

/// API coordinates of services.
pub fn services() -> ApiResource {
    ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&())
}

/// API coordinates of nodes.
pub fn nodes() -> ApiResource {
    ApiResource::erase::<k8s_openapi::api::core::v1::Node>(&())
}

/// A pod's container id -> name pairs, ids without their `<runtime>://` prefix.
pub fn containers(status: &PodStatusLite) -> impl Iterator<Item = (&str, &str)> {
    status
        .container_statuses
        .iter()
        .chain(&status.init_container_statuses)
        .chain(&status.ephemeral_container_statuses)
        .filter_map(|c| {
            let id = c.container_id.as_deref()?;
            let id = id.split_once("://").map_or(id, |(_, id)| id);
            (!id.is_empty()).then_some((id, c.name.as_str()))
        })
}

/// Every address of a pod, from `podIPs`, else `podIP`.
pub fn pod_ips(status: &PodStatusLite) -> Vec<std::net::IpAddr> {
    let mut ips: Vec<std::net::IpAddr> = status
        .pod_ips
        .iter()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if ips.is_empty()
        && let Some(ip) = status.pod_ip.as_deref().and_then(|s| s.parse().ok())
    {
        ips.push(ip);
    }
    ips
}

/// Every cluster IP of a service; none for headless and ExternalName services.
pub fn cluster_ips(spec: &ServiceSpecLite) -> Vec<std::net::IpAddr> {
    let mut ips: Vec<std::net::IpAddr> = spec
        .cluster_ips
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    if ips.is_empty()
        && let Some(ip) = spec.cluster_ip.as_deref().and_then(|s| s.parse().ok())
    {
        ips.push(ip);
    }
    ips
}

/// The object's UID as a number (0 when absent or malformed: such objects never match).
pub fn uid_of(meta: &ObjectMeta) -> u128 {
    meta.uid.as_deref().and_then(parse_uid).unwrap_or(0)
}

/// Parses `8-4-4-4-12` hex into a number.
pub fn parse_uid(s: &str) -> Option<u128> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    u128::from_str_radix(&hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod as the API serves it (kubectl get pod -o json, trimmed of nothing that matters).
    const POD: &str = r#"{
      "apiVersion": "v1", "kind": "Pod",
      "metadata": {
        "name": "web-7c9f8d6b5-x2x9q", "namespace": "shop",
        "uid": "6e1bba1a-4d2f-4c3b-9a7e-0f2d3c4b5a69", "resourceVersion": "4242",
        "labels": {"app": "web", "pod-template-hash": "7c9f8d6b5"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "name": "web-7c9f8d6b5", "uid": "0b0c0d0e-0000-4000-8000-000000000001",
          "controller": true, "blockOwnerDeletion": true}],
        "managedFields": [{"manager": "kubelet", "operation": "Update", "fieldsType": "FieldsV1",
          "fieldsV1": {"f:status": {}}}]
      },
      "spec": {
        "nodeName": "node-a",
        "containers": [{"name": "app", "image": "nginx:1.27", "env": [{"name": "A", "value": "b"}]}],
        "volumes": [{"name": "v", "emptyDir": {}}]
      },
      "status": {
        "phase": "Running", "podIP": "10.244.1.7",
        "podIPs": [{"ip": "10.244.1.7"}, {"ip": "fd00:10:244:1::7"}],
        "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
          "image": "nginx:1.27",
          "containerID": "containerd://aaaabbbbccccddddeeeeffff00001111222233334444555566667777888899990000",
          "state": {"running": {"startedAt": "2026-11-22T00:00:00Z"}}}],
        "initContainerStatuses": [{"name": "init", "containerID": "cri-o://1111"}]
      }
    }"#;

    #[test]
    fn decodes_the_fields_it_needs() {
        let pod: PodLite = serde_json::from_str(POD).expect("pod decodes");
        assert_eq!(pod.spec.node_name.as_deref(), Some("node-a"));
        let status = pod.status.expect("status");
        assert_eq!(pod_ips(&status).len(), 2);
        let c: Vec<_> = containers(&status).collect();
        assert_eq!(c[0].1, "app");
        assert!(c[0].0.starts_with("aaaabbbb"));
        assert_eq!(c[1], ("1111", "init"));
        assert_eq!(
            uid_of(&pod.metadata),
            0x6e1bba1a_4d2f_4c3b_9a7e_0f2d3c4b5a69
        );
    }

    #[test]
    fn services_and_nodes() {
        let svc: ServiceLite = serde_json::from_str(
            r#"{"metadata": {"name": "db", "namespace": "shop"},
                "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "ports": [{"port": 5432}]}}"#,
        )
        .expect("svc");
        assert_eq!(
            cluster_ips(&svc.spec),
            vec!["10.96.0.10".parse::<std::net::IpAddr>().expect("ip")]
        );
        let headless: ServiceLite = serde_json::from_str(
            r#"{"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "clusterIPs": ["None"]}}"#,
        )
        .expect("headless");
        assert!(cluster_ips(&headless.spec).is_empty());
        let node: NodeLite = serde_json::from_str(
            r#"{"metadata": {"name": "node-a"}, "spec": {"podCIDR": "10.244.1.0/24"},
                "status": {"addresses": [{"type": "InternalIP", "address": "192.168.5.10"},
                                         {"type": "Hostname", "address": "node-a"}]}}"#,
        )
        .expect("node");
        assert_eq!(node.status.expect("status").addresses.len(), 2);
    }

    #[test]
    fn uids() {
        assert_eq!(parse_uid("not-a-uid"), None);
        assert_eq!(parse_uid("00000000-0000-0000-0000-000000000001"), Some(1));
    }
}
