//! Kubernetes objects as the API sends them, decoded into sockscope's trimmed types and
//! reduced to what labels use: pod IPs and containers, Service ClusterIPs, owners. No panic,
//! whatever the JSON says.
#![no_main]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use libfuzzer_sys::fuzz_target;
use sockscope::kubernetes::{
    objects::{NodeLite, PodLite, ServiceLite, cluster_ips, containers, parse_uid, pod_ips, uid_of},
    workload::{OwnerKind, Owners},
};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = serde_json::from_slice::<PodLite>(data) {
        let _ = uid_of(&p.metadata);
        if let Some(s) = &p.status {
            let _ = pod_ips(s);
            let _ = containers(s).count();
        }
        let mut owners = Owners::default();
        owners.apply(OwnerKind::ReplicaSet, &p.metadata);
        owners.apply(OwnerKind::Job, &p.metadata);
        let _ = owners.workload_of(&p.metadata);
    }
    if let Ok(s) = serde_json::from_slice::<ServiceLite>(data) {
        let _ = cluster_ips(&s.spec);
    }
    let _ = serde_json::from_slice::<NodeLite>(data);
    if let Ok(m) = serde_json::from_slice::<ObjectMeta>(data) {
        let mut owners = Owners::default();
        owners.apply(OwnerKind::ReplicaSet, &m);
        let _ = owners.workload_of(&m);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_uid(s);
    }
});
