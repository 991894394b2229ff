//! Who owns a socket (cgroup -> workload, network namespace) and who is on the other end
//! (address -> class, and the hostname the owner's namespace resolved for it).

pub mod cgroup;
pub mod domains;
pub mod hosts;
pub mod kubepods;
pub mod labelled;
pub mod labels;
pub mod names;
pub mod netns;
pub mod remote;

use std::{
    collections::HashMap,
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use cgroup::{Owner, Resolver};
use hosts::HostCache;
use netns::NetnsResolver;
use remote::{RemoteClass, classify};

use crate::kubernetes::{Cluster, objects::parse_uid, read};

/// Who owns a socket: Kubernetes names for pods, the unit or container on a plain host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Local {
    /// Kubernetes namespace; empty on a plain host.
    pub namespace: String,
    /// Top controller's name; the systemd unit or container id on a plain host.
    pub workload: String,
    /// Deployment, StatefulSet, DaemonSet, CronJob, Job, ReplicaSet, Pod; empty on a host.
    pub workload_kind: String,
    /// Pod name (the pod UID while the API has not named it).
    pub pod: String,
    /// Container name (the short container id while the API has not named it).
    pub container: String,
    /// The pod's UID when the cgroup is a pod's.
    pub pod_uid: Option<u128>,
}

/// Who is on the other end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remote {
    /// Namespace of the peer pod or Service.
    pub namespace: String,
    /// Workload of the peer pod, the Service's name, or the node's name.
    pub workload: String,
    /// loopback | pod | service | node | a configured CIDR class | private | public.
    pub class: String,
}

/// Lookups that fell back to what the cgroup path says, by reason.
#[derive(Debug, Default, Clone, Copy)]
pub struct Misses {
    /// A pod cgroup whose UID the API has not reported (yet).
    pub pod_unknown: u64,
    /// A known pod whose container id is not in its status (yet).
    pub container_unknown: u64,
}

/// Everything that labels a kernel key, shared by the drain thread and the DNS answer reader.
pub struct Identity {
    /// cgroup id -> owner.
    pub cgroups: Resolver,
    /// cgroup id -> network namespace.
    pub netns: NetnsResolver,
    /// (network namespace, IP) -> hostname.
    pub hosts: HostCache,
    /// Kubernetes metadata, when running on a cluster.
    pub cluster: Option<Arc<Cluster>>,
    /// Lookups of this drain, so every family of a drain sees the same labels and a miss is
    /// counted once per cgroup and drain.
    memo: HashMap<u64, Local>,
    /// Cumulative fallbacks.
    pub misses: Misses,
    /// Configured CIDR classes, most specific first.
    classes: Vec<(ipnet::IpNet, String)>,
    /// When the caches were last pruned.
    last_prune: Instant,
}

impl Identity {
    /// Resolvers for cgroups below `root` in the cgroup2 mount `mount`, the kernel's
    /// `CGROUP_NETNS` map (when loaded), and a hostname cache.
    pub fn new(
        mount: PathBuf,
        root: PathBuf,
        cgroup_netns: Option<aya::maps::HashMap<aya::maps::MapData, u64, u64>>,
        hosts: HostCache,
    ) -> Self {
        Identity {
            cgroups: Resolver::new(mount.clone(), root, Duration::from_secs(1)),
            netns: NetnsResolver::new(mount, cgroup_netns),
            hosts,
            cluster: None,
            memo: HashMap::new(),
            misses: Misses::default(),
            classes: Vec::new(),
            last_prune: Instant::now(),
        }
    }

    /// Names address ranges for `remote_class` (checked after loopback and the cluster
    /// index, before private/public); the most specific range wins.
    pub fn with_classes(mut self, mut classes: Vec<(ipnet::IpNet, String)>) -> Self {
        classes.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        self.classes = classes;
        self
    }

    /// Labels pods with what `cluster` learns from the API.
    pub fn with_cluster(mut self, cluster: Arc<Cluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Starts a drain: lookups are redone (metadata may have arrived since the last one).
    pub fn begin_drain(&mut self) {
        self.memo.clear();
    }

    /// The owner of a cgroup.
    pub fn owner(&mut self, cgroup_id: u64) -> Owner {
        self.cgroups.resolve(cgroup_id)
    }

    /// The local identity of a cgroup: from the API for pods it knows, from the cgroup path
    /// (pod UID, container id) for pods it does not know yet, else the host's unit.
    pub fn local(&mut self, cgroup_id: u64) -> Local {
        if let Some(l) = self.memo.get(&cgroup_id) {
            return l.clone();
        }
        let owner = self.cgroups.resolve(cgroup_id);
        let local = match kubepods::parse(&owner.path) {
            None => Local {
                workload: owner.workload,
                pod: owner.pod,
                container: owner.container,
                ..Local::default()
            },
            Some(pc) => {
                let uid = parse_uid(&pc.uid);
                let known = match (&self.cluster, uid) {
                    (Some(c), Some(uid)) => {
                        read(&c.pods).labels(uid, pc.container_id.as_deref(), &read(&c.owners))
                    }
                    _ => None,
                };
                let short_id = pc
                    .container_id
                    .as_deref()
                    .map(|id| id.chars().take(12).collect())
                    .unwrap_or_default();
                match known {
                    Some(k) => Local {
                        namespace: k.namespace,
                        workload: k.workload.name,
                        workload_kind: k.workload.kind,
                        pod: k.pod,
                        container: k.container.unwrap_or_else(|| {
                            self.misses.container_unknown += 1;
                            short_id
                        }),
                        pod_uid: uid,
                    },
                    None => {
                        self.misses.pod_unknown += 1;
                        Local {
                            pod: pc.uid,
                            container: short_id,
                            pod_uid: uid,
                            ..Local::default()
                        }
                    }
                }
            }
        };
        self.memo.insert(cgroup_id, local.clone());
        local
    }

    /// Who is at `ip`: a pod, Service or node from the cluster index, else its address class.
    pub fn remote(&self, ip: IpAddr) -> Remote {
        let class = classify(ip);
        if class != RemoteClass::Loopback
            && let Some(c) = &self.cluster
            && let Some(p) = read(&c.peers).get(ip)
        {
            return Remote {
                namespace: p.namespace.to_string(),
                workload: p.workload.to_string(),
                class: p.class.as_str().to_string(),
            };
        }
        let class = match class {
            RemoteClass::Loopback => None,
            _ => self
                .classes
                .iter()
                .find(|(net, _)| net.contains(&ip))
                .map(|(_, name)| name.clone()),
        }
        .unwrap_or_else(|| class.as_str().to_string());
        Remote {
            class,
            ..Remote::default()
        }
    }

    /// Whether a socket owner is gone: its pod deleted from the API, or its cgroup removed.
    /// Sweeps its caches now and then: removed cgroups idle for `grace`, and deleted pods
    /// kept twice that long for their last counts.
    pub fn prune(&mut self, now: Instant, grace: Duration) {
        let every = Duration::from_secs(30).min(grace.max(Duration::from_secs(1)));
        if now.saturating_duration_since(self.last_prune) < every {
            return;
        }
        self.last_prune = now;
        self.cgroups.sweep(grace);
        if let Some(c) = &self.cluster {
            crate::kubernetes::write(&c.pods).prune(now, grace * 2);
        }
    }

    pub fn gone(&mut self, cgroup_id: u64, pod_uid: Option<u128>) -> bool {
        if let (Some(c), Some(uid)) = (&self.cluster, pod_uid)
            && read(&c.pods).is_deleted(uid)
        {
            return true;
        }
        !self.cgroups.exists(cgroup_id)
    }

    /// Forgets a removed cgroup.
    pub fn forget(&mut self, cgroup_id: u64) {
        self.cgroups.forget(cgroup_id);
        self.netns.forget(cgroup_id);
        self.memo.remove(&cgroup_id);
    }

    /// The network namespace of a cgroup's processes.
    pub fn netns(&mut self, cgroup_id: u64) -> Option<u64> {
        let owner = self.cgroups.resolve(cgroup_id);
        self.netns.netns_of(cgroup_id, &owner.path)
    }

    /// The hostname the cgroup's network namespace resolved for `ip`.
    pub fn remote_host(&mut self, cgroup_id: u64, ip: IpAddr, now: Instant) -> Option<String> {
        let ns = self.netns(cgroup_id)?;
        self.hosts.lookup(ns, ip, now).map(str::to_string)
    }
}
