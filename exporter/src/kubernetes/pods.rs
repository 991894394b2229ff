//! Pods on this node, by UID: what labels a socket whose cgroup names the pod.
//!
//! Deleted pods stay as tombstones for a while: the kernel keeps counting a pod's last bytes
//! until its sockets close, and the drain after the deletion must still label them.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{
    objects::{PodLite, containers, uid_of},
    workload::{Owners, Workload},
};

/// Container ids remembered per pod (current and restarted ones).
const MAX_CONTAINER_IDS: usize = 64;

/// One local pod.
#[derive(Debug, Clone)]
pub struct Pod {
    /// The metadata the workload is derived from (name, namespace, controller, template hash).
    pub meta: ObjectMeta,
    /// Container id (64 hex digits, lower case) -> container name.
    pub containers: HashMap<String, String>,
    /// When the API reported the pod gone.
    pub deleted: Option<Instant>,
}

/// What the table says about one pod's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLabels {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Top controller.
    pub workload: Workload,
    /// Container name; `None` when the container id is not (yet) in the pod's status.
    pub container: Option<String>,
}

/// The node's pods.
#[derive(Debug, Default)]
pub struct Pods {
    by_uid: HashMap<u128, Pod>,
    /// UIDs listed since the last `Init`, to find pods deleted while the watch was down.
    relisted: Option<Vec<u128>>,
}

impl Pods {
    /// Records a pod added or changed.
    pub fn apply(&mut self, pod: &PodLite) {
        let uid = uid_of(&pod.metadata);
        if uid == 0 {
            return;
        }
        if let Some(seen) = &mut self.relisted {
            seen.push(uid);
        }
        let containers: HashMap<String, String> = pod
            .status
            .as_ref()
            .map(|s| {
                containers(s)
                    .map(|(id, name)| (id.to_ascii_lowercase(), name.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let meta = ObjectMeta {
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            owner_references: pod.metadata.owner_references.clone(),
            labels: pod.metadata.labels.as_ref().and_then(|l| {
                let hash = l.get("pod-template-hash")?;
                Some(BTreeMap::from([(
                    "pod-template-hash".to_string(),
                    hash.clone(),
                )]))
            }),
            ..Default::default()
        };
        let entry = self.by_uid.entry(uid).or_insert_with(|| Pod {
            meta: ObjectMeta::default(),
            containers: HashMap::new(),
            deleted: None,
        });
        entry.meta = meta;
        // Keep ids of containers that restarted: their last counts may still be in flight.
        // A crash-looping pod would pile them up: past a bound, only the current ones stay.
        if entry.containers.len() + containers.len() > MAX_CONTAINER_IDS {
            entry.containers.clear();
        }
        entry.containers.extend(containers);
        entry.deleted = None;
    }

    /// Marks a pod deleted.
    pub fn delete(&mut self, pod: &PodLite, now: Instant) {
        if let Some(p) = self.by_uid.get_mut(&uid_of(&pod.metadata)) {
            p.deleted.get_or_insert(now);
        }
    }

    /// A re-list starts: pods not listed before [`Pods::relist_done`] were deleted meanwhile.
    pub fn relist_start(&mut self) {
        self.relisted = Some(Vec::new());
    }

    /// A re-list ended.
    pub fn relist_done(&mut self, now: Instant) {
        let Some(seen) = self.relisted.take() else {
            return;
        };
        let seen: std::collections::HashSet<u128> = seen.into_iter().collect();
        for (uid, pod) in &mut self.by_uid {
            if !seen.contains(uid) {
                pod.deleted.get_or_insert(now);
            }
        }
    }

    /// Labels of a pod's container (`container_id` as the cgroup path spells it).
    pub fn labels(
        &self,
        uid: u128,
        container_id: Option<&str>,
        owners: &Owners,
    ) -> Option<PodLabels> {
        let pod = self.by_uid.get(&uid)?;
        Some(PodLabels {
            namespace: pod.meta.namespace.clone().unwrap_or_default(),
            pod: pod.meta.name.clone().unwrap_or_default(),
            workload: owners.workload_of(&pod.meta),
            container: match container_id {
                Some(id) => pod.containers.get(id).cloned(),
                // The pod cgroup itself (a process not in any container): no container name.
                None => Some(String::new()),
            },
        })
    }

    /// Whether the API reported the pod deleted.
    pub fn is_deleted(&self, uid: u128) -> bool {
        self.by_uid.get(&uid).is_some_and(|p| p.deleted.is_some())
    }

    /// Drops tombstones older than `keep`.
    pub fn prune(&mut self, now: Instant, keep: Duration) {
        self.by_uid.retain(|_, p| match p.deleted {
            Some(at) => now.saturating_duration_since(at) < keep,
            None => true,
        });
    }

    /// Pods known, tombstones included.
    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    /// No pods known.
    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, name: &str, cid: Option<&str>) -> PodLite {
        let cs = cid
            .map(|c| format!(r#"[{{"name": "app", "containerID": "containerd://{c}"}}]"#))
            .unwrap_or_else(|| "[]".into());
        serde_json::from_str(&format!(
            r#"{{"metadata": {{"name": "{name}", "namespace": "ns", "uid": "{uid}",
                 "labels": {{"app": "x", "pod-template-hash": "abc"}},
                 "ownerReferences": [{{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc",
                                       "uid": "r", "controller": true}}]}},
                 "spec": {{"nodeName": "n"}}, "status": {{"containerStatuses": {cs}}}}}"#
        ))
        .expect("pod json")
    }

    const U1: &str = "00000000-0000-0000-0000-000000000001";
    const U2: &str = "00000000-0000-0000-0000-000000000002";

    #[test]
    fn labels_tombstones_and_relists() {
        let owners = Owners::default();
        let mut pods = Pods::default();
        pods.apply(&pod(U1, "web-abc-1", None));
        // Container not started yet: pod known, container unknown.
        let l = pods.labels(1, Some("ff"), &owners).expect("known");
        assert_eq!((l.namespace.as_str(), l.pod.as_str()), ("ns", "web-abc-1"));
        assert_eq!(l.workload.name, "web");
        assert_eq!(l.container, None);
        pods.apply(&pod(U1, "web-abc-1", Some("FF")));
        assert_eq!(
            pods.labels(1, Some("ff"), &owners)
                .expect("known")
                .container
                .as_deref(),
            Some("app")
        );
        assert_eq!(
            pods.labels(1, None, &owners)
                .expect("known")
                .container
                .as_deref(),
            Some("")
        );
        let t0 = Instant::now();
        pods.delete(&pod(U1, "web-abc-1", None), t0);
        assert!(pods.is_deleted(1));
        // Tombstone still labels late counts.
        assert!(pods.labels(1, Some("ff"), &owners).is_some());
        pods.prune(t0 + Duration::from_secs(10), Duration::from_secs(60));
        assert_eq!(pods.len(), 1);
        pods.prune(t0 + Duration::from_secs(61), Duration::from_secs(60));
        assert!(pods.is_empty());

        // A pod missing from a re-list was deleted while the watch was down.
        pods.apply(&pod(U1, "a", None));
        pods.apply(&pod(U2, "b", None));
        pods.relist_start();
        pods.apply(&pod(U2, "b", None));
        pods.relist_done(t0);
        assert!(pods.is_deleted(1) && !pods.is_deleted(2));
    }
}
