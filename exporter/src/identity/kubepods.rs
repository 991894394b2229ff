//! cgroup path -> Kubernetes pod UID and container id, for every layout kubelet and the
//! container runtimes produce.
//!
//! The kubelet puts each pod in a cgroup named after its UID under a QoS-class parent, and the
//! runtime puts each container below it (kubelet's `cm.CgroupName` conventions,
//! pkg/kubelet/cm/cgroup_manager_linux.go):
//! - systemd driver: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with
//!   '_' for '-'>.slice/cri-containerd-<id>.scope` (`crio-<id>.scope`, `docker-<id>.scope`);
//!   Guaranteed pods sit directly in `kubepods.slice/kubepods-pod<uid>.slice`;
//! - cgroupfs driver: `/kubepods/burstable/pod<uid>/<id>`, Guaranteed `/kubepods/pod<uid>/<id>`;
//! - either one below a prefix (kind and other nested setups: `/kubelet.slice/kubelet-kubepods.slice/...`,
//!   `/system.slice/containerd.service/...`), and with cgroups nested under the container
//!   (processes that create their own sub-cgroups).
//!
//! This is the local side's identity: exact, from the socket's own cgroup, no IP guessing.

/// Kubernetes QoS class, from the pod cgroup's parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    /// Requests equal limits for every container: directly under kubepods.
    Guaranteed,
    /// Some requests.
    Burstable,
    /// No requests.
    BestEffort,
}

/// What a cgroup path says about its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup {
    /// Pod UID in its canonical form (`0f1e...-...`).
    pub uid: String,
    /// QoS class.
    pub qos: QosClass,
    /// Full container id (64 hex digits) when the cgroup is a container's (or below one);
    /// `None` for the pod cgroup itself.
    pub container_id: Option<String>,
}

/// Runtime scope prefixes of the systemd driver (`<prefix><id>.scope`).
const SCOPE_PREFIXES: [&str; 5] = [
    "cri-containerd-",
    "crio-",
    "docker-",
    "cri-dockerd-",
    "libpod-",
];

/// Parses a cgroup path (relative to the cgroup2 mount). `None` when no component is a pod
/// cgroup: host processes, system services, containers outside Kubernetes.
pub fn parse(path: &str) -> Option<PodCgroup> {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let (at, uid, qos) = parts.iter().enumerate().find_map(|(i, c)| {
        pod_component(c, parts.get(i.wrapping_sub(1)).copied()).map(|(u, q)| (i, u, q))
    })?;
    let container_id = parts.get(at + 1).and_then(|c| container_component(c));
    Some(PodCgroup {
        uid,
        qos,
        container_id,
    })
}

/// A pod cgroup component and its parent: the UID and the QoS class.
fn pod_component(c: &str, parent: Option<&str>) -> Option<(String, QosClass)> {
    // systemd: [<prefix>-]kubepods[-<qos>]-pod<uid>.slice (kind prefixes "kubelet-")
    if let Some(stem) = c.strip_suffix(".slice")
        && let Some(at) = stem.find("kubepods-")
        && (at == 0 || stem.as_bytes()[at - 1] == b'-')
    {
        let rest = &stem[at + "kubepods-".len()..];
        let (qos, uid) = match rest.split_once("-pod") {
            Some(("burstable", uid)) => (QosClass::Burstable, uid),
            Some(("besteffort", uid)) => (QosClass::BestEffort, uid),
            _ => (QosClass::Guaranteed, rest.strip_prefix("pod")?),
        };
        return canonical_uid(&uid.replace('_', "-")).map(|u| (u, qos));
    }
    // cgroupfs: pod<uid> under kubepods, kubepods/burstable or kubepods/besteffort
    let uid = c.strip_prefix("pod")?;
    let qos = match parent? {
        "burstable" => QosClass::Burstable,
        "besteffort" => QosClass::BestEffort,
        "kubepods" => QosClass::Guaranteed,
        _ => return None,
    };
    canonical_uid(uid).map(|u| (u, qos))
}

/// A container component: `<prefix><id>.scope` (systemd) or `<id>` (cgroupfs).
fn container_component(c: &str) -> Option<String> {
    let id = match c.strip_suffix(".scope") {
        Some(stem) => SCOPE_PREFIXES.iter().find_map(|p| stem.strip_prefix(p))?,
        None => c,
    };
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// A UID as 8-4-4-4-12 lower-case hex digits.
fn canonical_uid(s: &str) -> Option<String> {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| s.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    const UID_SD: &str = "0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0";
    const ID: &str = "8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b";

    fn pod(qos: QosClass, container: bool) -> Option<PodCgroup> {
        Some(PodCgroup {
            uid: UID.into(),
            qos,
            container_id: container.then(|| ID.into()),
        })
    }

    #[test]
    fn real_world_layouts() {
        use QosClass::*;
        let cases: Vec<(String, Option<PodCgroup>)> = vec![
            // systemd driver, containerd, each QoS class
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SD}.slice/cri-containerd-{ID}.scope"
                ),
                pod(Burstable, true),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SD}.slice/cri-containerd-{ID}.scope"
                ),
                pod(BestEffort, true),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_SD}.slice/cri-containerd-{ID}.scope"),
                pod(Guaranteed, true),
            ),
            // CRI-O and Docker (cri-dockerd) scopes
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SD}.slice/crio-{ID}.scope"
                ),
                pod(Burstable, true),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SD}.slice/docker-{ID}.scope"
                ),
                pod(BestEffort, true),
            ),
            // a process nested in its own sub-cgroup of the container
            (
                format!(
                    "/kubepods.slice/kubepods-pod{UID_SD}.slice/cri-containerd-{ID}.scope/init.scope/worker"
                ),
                pod(Guaranteed, true),
            ),
            // the pod cgroup itself, and CRI-O's conmon (not a container)
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SD}.slice"
                ),
                pod(Burstable, false),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SD}.slice/crio-conmon-{ID}.scope"
                ),
                pod(Burstable, false),
            ),
            // cgroupfs driver, each QoS class
            (
                format!("/kubepods/burstable/pod{UID}/{ID}"),
                pod(Burstable, true),
            ),
            (
                format!("/kubepods/besteffort/pod{UID}/{ID}"),
                pod(BestEffort, true),
            ),
            (format!("/kubepods/pod{UID}/{ID}"), pod(Guaranteed, true)),
            (
                format!("/kubepods/pod{UID}/{ID}/nested"),
                pod(Guaranteed, true),
            ),
            // nested setups: kind (kubelet in a container), containerd's own service cgroup
            (
                format!(
                    "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_SD}.slice/cri-containerd-{ID}.scope"
                ),
                pod(BestEffort, true),
            ),
            (
                format!("/system.slice/containerd.service/kubepods/burstable/pod{UID}/{ID}"),
                pod(Burstable, true),
            ),
            // upper-case hex is normalised
            (
                format!("/kubepods/pod{}/{}", UID.to_uppercase(), ID.to_uppercase()),
                pod(Guaranteed, true),
            ),
            // not pods
            ("/system.slice/kubelet.service".into(), None),
            (format!("/system.slice/docker-{ID}.scope"), None),
            ("/kubepods.slice/kubepods-burstable.slice".into(), None),
            ("/kubepods/burstable/podnot-a-uid/abc".into(), None),
            ("/user.slice/pod1234".into(), None),
            ("/".into(), None),
        ];
        for (path, want) in cases {
            assert_eq!(parse(&path), want, "{path}");
        }
    }
}
