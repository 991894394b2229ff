//! A pod's workload: the top controller above it.
//!
//! Pods name their direct controller in `metadata.ownerReferences` (the one with
//! `controller: true`). Deployments and CronJobs sit one level higher: a ReplicaSet's owner is
//! its Deployment, a Job's its CronJob. Those links come from metadata-only watches of
//! ReplicaSets and Jobs; until one is known, a ReplicaSet whose name ends with the pod's
//! `pod-template-hash` is taken as its Deployment's (the deployment controller names them
//! `<deployment>-<hash>`, pkg/controller/deployment/sync.go).

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// A workload and its kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Workload {
    /// Deployment, StatefulSet, DaemonSet, CronJob, Job, ReplicaSet, Pod, or another
    /// controller's kind.
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// The controller reference of an object, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

/// ReplicaSet -> Deployment and Job -> CronJob links, per namespace.
#[derive(Debug, Default)]
pub struct Owners {
    /// (namespace, ReplicaSet) -> Deployment; `None` for a ReplicaSet without one.
    replicasets: HashMap<(String, String), Option<String>>,
    /// (namespace, Job) -> CronJob; `None` for a Job without one.
    jobs: HashMap<(String, String), Option<String>>,
}

/// Which owner table an object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerKind {
    /// apps/v1 ReplicaSet, owned by a Deployment.
    ReplicaSet,
    /// batch/v1 Job, owned by a CronJob.
    Job,
}

impl Owners {
    fn table(&mut self, kind: OwnerKind) -> &mut HashMap<(String, String), Option<String>> {
        match kind {
            OwnerKind::ReplicaSet => &mut self.replicasets,
            OwnerKind::Job => &mut self.jobs,
        }
    }

    /// Records a ReplicaSet or Job from its metadata.
    pub fn apply(&mut self, kind: OwnerKind, meta: &ObjectMeta) {
        let (Some(ns), Some(name)) = (&meta.namespace, &meta.name) else {
            return;
        };
        let parent = match kind {
            OwnerKind::ReplicaSet => "Deployment",
            OwnerKind::Job => "CronJob",
        };
        let top = controller_of(meta)
            .filter(|o| o.kind == parent)
            .map(|o| o.name.clone());
        self.table(kind).insert((ns.clone(), name.clone()), top);
    }

    /// Forgets a deleted ReplicaSet or Job.
    pub fn delete(&mut self, kind: OwnerKind, meta: &ObjectMeta) {
        if let (Some(ns), Some(name)) = (&meta.namespace, &meta.name) {
            self.table(kind).remove(&(ns.clone(), name.clone()));
        }
    }

    /// Replaces one table after a re-list.
    pub fn replace(&mut self, kind: OwnerKind, fresh: Vec<ObjectMeta>) {
        self.table(kind).clear();
        for meta in &fresh {
            self.apply(kind, meta);
        }
    }

    /// Entries in both tables.
    pub fn len(&self) -> usize {
        self.replicasets.len() + self.jobs.len()
    }

    /// No links known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The workload of a pod.
    pub fn workload_of(&self, pod: &ObjectMeta) -> Workload {
        let ns = pod.namespace.clone().unwrap_or_default();
        let pod_name = pod.name.clone().unwrap_or_default();
        let Some(owner) = controller_of(pod) else {
            return Workload {
                kind: "Pod".into(),
                name: pod_name,
            };
        };
        let key = (ns, owner.name.clone());
        match owner.kind.as_str() {
            "ReplicaSet" => match self.replicasets.get(&key) {
                Some(Some(deployment)) => Workload {
                    kind: "Deployment".into(),
                    name: deployment.clone(),
                },
                Some(None) => Workload {
                    kind: "ReplicaSet".into(),
                    name: owner.name.clone(),
                },
                None => by_template_hash(pod, &owner.name),
            },
            "Job" => match self.jobs.get(&key) {
                Some(Some(cronjob)) => Workload {
                    kind: "CronJob".into(),
                    name: cronjob.clone(),
                },
                _ => Workload {
                    kind: "Job".into(),
                    name: owner.name.clone(),
                },
            },
            // Static (mirror) pods are "owned" by their node: each is its own workload.
            "Node" => Workload {
                kind: "Pod".into(),
                name: pod_name,
            },
            kind => Workload {
                kind: kind.to_string(),
                name: owner.name.clone(),
            },
        }
    }
}

/// A ReplicaSet not (yet) seen: `<deployment>-<pod-template-hash>` names its Deployment.
fn by_template_hash(pod: &ObjectMeta, replicaset: &str) -> Workload {
    let hash = pod.labels.as_ref().and_then(|l| l.get("pod-template-hash"));
    match hash.and_then(|h| replicaset.strip_suffix(h.as_str())?.strip_suffix('-')) {
        Some(deployment) if !deployment.is_empty() => Workload {
            kind: "Deployment".into(),
            name: deployment.to_string(),
        },
        _ => Workload {
            kind: "ReplicaSet".into(),
            name: replicaset.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn meta(ns: &str, name: &str, owner: Option<(&str, &str)>, hash: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            labels: hash.map(|h| BTreeMap::from([("pod-template-hash".into(), h.into())])),
            owner_references: owner.map(|(kind, name)| {
                vec![OwnerReference {
                    kind: kind.into(),
                    name: name.into(),
                    controller: Some(true),
                    api_version: "apps/v1".into(),
                    uid: "u".into(),
                    block_owner_deletion: None,
                }]
            }),
            ..Default::default()
        }
    }

    fn w(kind: &str, name: &str) -> Workload {
        Workload {
            kind: kind.into(),
            name: name.into(),
        }
    }

    #[test]
    fn top_controllers() {
        let mut o = Owners::default();
        o.apply(
            OwnerKind::ReplicaSet,
            &meta("shop", "web-abc", Some(("Deployment", "web")), None),
        );
        o.apply(OwnerKind::ReplicaSet, &meta("shop", "bare-rs", None, None));
        o.apply(
            OwnerKind::Job,
            &meta("ops", "backup-29000000", Some(("CronJob", "backup")), None),
        );
        let cases = [
            (
                meta("shop", "web-abc-1", Some(("ReplicaSet", "web-abc")), None),
                w("Deployment", "web"),
            ),
            (
                meta("shop", "bare-rs-1", Some(("ReplicaSet", "bare-rs")), None),
                w("ReplicaSet", "bare-rs"),
            ),
            (
                meta(
                    "ops",
                    "backup-29000000-x",
                    Some(("Job", "backup-29000000")),
                    None,
                ),
                w("CronJob", "backup"),
            ),
            (
                meta("ops", "once-x", Some(("Job", "once")), None),
                w("Job", "once"),
            ),
            (
                meta("db", "pg-0", Some(("StatefulSet", "pg")), None),
                w("StatefulSet", "pg"),
            ),
            (
                meta(
                    "kube-system",
                    "cilium-x",
                    Some(("DaemonSet", "cilium")),
                    None,
                ),
                w("DaemonSet", "cilium"),
            ),
            (meta("default", "debug", None, None), w("Pod", "debug")),
            (
                meta("kube-system", "etcd-node-a", Some(("Node", "node-a")), None),
                w("Pod", "etcd-node-a"),
            ),
            // ReplicaSet not seen yet: the template hash names the Deployment.
            (
                meta(
                    "shop",
                    "api-5d8f-x",
                    Some(("ReplicaSet", "api-5d8f")),
                    Some("5d8f"),
                ),
                w("Deployment", "api"),
            ),
            (
                meta("shop", "odd-x", Some(("ReplicaSet", "odd")), Some("5d8f")),
                w("ReplicaSet", "odd"),
            ),
            // Same name in another namespace is another ReplicaSet.
            (
                meta("other", "web-abc-1", Some(("ReplicaSet", "web-abc")), None),
                w("ReplicaSet", "web-abc"),
            ),
        ];
        for (pod, want) in cases {
            assert_eq!(o.workload_of(&pod), want, "{:?}", pod.name);
        }
        o.delete(OwnerKind::ReplicaSet, &meta("shop", "web-abc", None, None));
        assert_eq!(
            o.workload_of(&meta("shop", "p", Some(("ReplicaSet", "web-abc")), None)),
            w("ReplicaSet", "web-abc")
        );
        assert_eq!(o.len(), 2);
    }
}
