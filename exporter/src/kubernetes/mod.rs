//! Kubernetes metadata: watches of the API that name pods, workloads and peers.
//!
//! - pods on this node (`spec.nodeName` field selector) -> [`pods::Pods`], the local side;
//! - ReplicaSets and Jobs, metadata only -> [`workload::Owners`], Deployment and CronJob names;
//! - pods, Services and nodes cluster-wide, trimmed -> [`peers::Peers`], the remote side
//!   (optional: `--remote-index=false` on very large clusters).
//!
//! Every watch retries with capped exponential backoff and resumes from its last resource
//! version; while the API is away, everything already known keeps labelling series.

mod limit;
pub mod objects;
pub mod peers;
pub mod pods;
pub mod workload;

use std::{
    fmt::Debug,
    path::PathBuf,
    sync::{
        Arc, RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use k8s_openapi::api::{apps::v1::ReplicaSet, batch::v1::Job};
use kube::{
    Api, Client, Resource,
    config::{KubeConfigOptions, Kubeconfig},
    core::PartialObjectMeta,
    runtime::watcher::{self, Event},
};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use objects::{NodeLite, PodLite, ServiceLite, cluster_ips, pod_ips, uid_of};
use peers::{PeerClass, Peers};
use pods::Pods;
use workload::{OwnerKind, Owners};

/// Errors setting up the API client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig file could not be read or used.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file from --kubeconfig.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Not running in a pod (no service account token or KUBERNETES_SERVICE_HOST).
    #[error("no in-cluster Kubernetes configuration ({0}); pass --kubeconfig or --kubernetes=off")]
    InCluster(String),
    /// The HTTP client could not be built from the configuration.
    #[error("Kubernetes client: {0}")]
    Client(String),
    /// The node name is needed to select this node's pods.
    #[error(
        "the node name is unknown: set --node-name (SOCKSCOPE_NODE_NAME) or NODE_NAME from the downward API"
    )]
    NoNodeName,
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to reach the API and what to watch.
#[derive(Debug, Clone)]
pub struct Options {
    /// This node's name.
    pub node_name: String,
    /// Build the cluster-wide peer index.
    pub remote_index: bool,
    /// Longest wait for each page of a list (`--kubernetes-timeout`).
    pub timeout: Duration,
}

/// The watches, in the order of [`Health::watches`].
pub const WATCHES: [&str; 6] = [
    "node_pods",
    "replicasets",
    "jobs",
    "pods",
    "services",
    "nodes",
];

/// One watch's state, for `sockscope_kubernetes_*`.
#[derive(Debug, Default)]
pub struct WatchHealth {
    /// Listed, and no error since that list.
    pub up: AtomicBool,
    /// The initial list completed (at least once).
    pub synced: AtomicBool,
    /// Errors (failed lists, watches, connections).
    pub errors: AtomicU64,
    /// Objects currently known.
    pub objects: AtomicU64,
    /// Whether this watch runs at all.
    pub enabled: AtomicBool,
}

/// State of every watch.
#[derive(Debug, Default)]
pub struct Health {
    /// Indexed like [`WATCHES`].
    pub watches: [WatchHealth; 6],
}

impl Health {
    /// Every enabled watch is up.
    pub fn up(&self) -> bool {
        self.watches
            .iter()
            .filter(|w| w.enabled.load(Ordering::Relaxed))
            .all(|w| w.up.load(Ordering::Relaxed))
    }
}

/// Everything the watches learned, read by identity at drain time.
#[derive(Debug, Default)]
pub struct Cluster {
    /// Pods on this node.
    pub pods: RwLock<Pods>,
    /// ReplicaSet -> Deployment, Job -> CronJob.
    pub owners: RwLock<Owners>,
    /// Cluster-wide address index (empty when switched off).
    pub peers: RwLock<Peers>,
    /// Watch health.
    pub health: Health,
}

/// Read access that survives a panicked writer: labels keep coming from what is known.
pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// Write access that survives a panicked writer.
pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// Where the API client's settings come from, read before anything is attached.
pub enum Source {
    /// A kubeconfig file, parsed.
    Kubeconfig(PathBuf, Box<Kubeconfig>),
    /// The pod's service account.
    InCluster(Box<kube::Config>),
}

/// Reads the kubeconfig file, or the in-cluster settings (synchronous: runs before the
/// async runtime starts).
pub fn source(kubeconfig: Option<&std::path::Path>) -> Result<Source> {
    match kubeconfig {
        Some(path) => Kubeconfig::read_from(path)
            .map(|kc| Source::Kubeconfig(path.to_path_buf(), Box::new(kc)))
            .map_err(|e| Error::Kubeconfig {
                path: path.to_path_buf(),
                message: first_line(&e),
            }),
        None => kube::Config::incluster()
            .map(|c| Source::InCluster(Box::new(c)))
            .map_err(|e| Error::InCluster(first_line(&e))),
    }
}

/// Builds the API client; `timeout` bounds connecting.
pub async fn client(source: Source, timeout: Duration) -> Result<Client> {
    let mut config = match source {
        Source::Kubeconfig(path, kc) => {
            kube::Config::from_custom_kubeconfig(*kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Kubeconfig {
                    path,
                    message: first_line(&e),
                })?
        }
        Source::InCluster(c) => *c,
    };
    config.connect_timeout = Some(timeout);
    // Every response body goes through a line-length limit: a list page or watch event larger
    // than any real one is an error, not a buffer that grows with what the server sends.
    let limit =
        tower::util::MapResponseLayer::new(|r: hyper::Response<Box<kube::client::DynBody>>| {
            r.map(|b| limit::LineLimit::new(b, MAX_RESPONSE_LINE))
        });
    Ok(kube::client::ClientBuilder::try_from(config)
        .map_err(|e| Error::Client(first_line(&e)))?
        .with_layer(&limit)
        .build())
}

/// The first line of an error (parsers append source excerpts on further lines): startup
/// errors are one line.
fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

impl Cluster {
    /// Starts every watch on the current tokio runtime; they run until the process exits.
    pub fn spawn(self: &Arc<Self>, client: Client, options: &Options) {
        let enabled = |i: usize| i < 3 || options.remote_index;
        for (i, w) in self.health.watches.iter().enumerate() {
            w.enabled.store(enabled(i), Ordering::Relaxed);
        }

        let me = self.clone();
        let node =
            watcher::Config::default().fields(&format!("spec.nodeName={}", options.node_name));
        tokio::spawn(watch(
            Api::<PodLite>::all_with(client.clone(), &objects::pods()),
            node,
            0,
            self.clone(),
            options.timeout,
            move |ev: Event<PodLite>| {
                let mut pods = write(&me.pods);
                let now = Instant::now();
                match ev {
                    Event::Init => pods.relist_start(),
                    Event::InitApply(p) | Event::Apply(p) => pods.apply(&p),
                    Event::Delete(p) => pods.delete(&p, now),
                    Event::InitDone => pods.relist_done(now),
                }
                pods.len()
            },
        ));

        tokio::spawn(watch(
            Api::<PartialObjectMeta<ReplicaSet>>::all(client.clone()),
            watcher::Config::default(),
            1,
            self.clone(),
            options.timeout,
            self.owner_events(OwnerKind::ReplicaSet),
        ));
        tokio::spawn(watch(
            Api::<PartialObjectMeta<Job>>::all(client.clone()),
            watcher::Config::default(),
            2,
            self.clone(),
            options.timeout,
            self.owner_events(OwnerKind::Job),
        ));

        if !options.remote_index {
            info!("remote index off: peers are labelled by address class only");
            return;
        }
        let me = self.clone();
        tokio::spawn(watch(
            Api::<PodLite>::all_with(client.clone(), &objects::pods()),
            watcher::Config::default().page_size(LIST_PAGE),
            3,
            self.clone(),
            options.timeout,
            move |ev: Event<PodLite>| {
                let mut peers = write(&me.peers);
                match ev {
                    Event::Init => peers.relist_start(PeerClass::Pod),
                    Event::InitDone => peers.relist_done(PeerClass::Pod),
                    Event::InitApply(p) | Event::Apply(p) => {
                        let uid = uid_of(&p.metadata);
                        let status = p.status.as_ref();
                        let finished = status
                            .and_then(|s| s.phase.as_deref())
                            .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
                        // Host-network pods have the node's address: the node index has it.
                        if finished || p.spec.host_network == Some(true) {
                            peers.delete(PeerClass::Pod, uid);
                        } else {
                            let ips = status.map(pod_ips).unwrap_or_default();
                            let workload = read(&me.owners).workload_of(&p.metadata);
                            let ns = p.metadata.namespace.as_deref().unwrap_or_default();
                            peers.apply(PeerClass::Pod, uid, ns, &workload.name, &ips);
                        }
                    }
                    Event::Delete(p) => peers.delete(PeerClass::Pod, uid_of(&p.metadata)),
                }
                peers.len()
            },
        ));
        let me = self.clone();
        tokio::spawn(watch(
            Api::<ServiceLite>::all_with(client.clone(), &objects::services()),
            watcher::Config::default().page_size(LIST_PAGE),
            4,
            self.clone(),
            options.timeout,
            move |ev: Event<ServiceLite>| {
                let mut peers = write(&me.peers);
                match ev {
                    Event::Init => peers.relist_start(PeerClass::Service),
                    Event::InitDone => peers.relist_done(PeerClass::Service),
                    Event::InitApply(s) | Event::Apply(s) => {
                        let ns = s.metadata.namespace.as_deref().unwrap_or_default();
                        let name = s.metadata.name.as_deref().unwrap_or_default();
                        let ips = cluster_ips(&s.spec);
                        peers.apply(PeerClass::Service, uid_of(&s.metadata), ns, name, &ips);
                    }
                    Event::Delete(s) => peers.delete(PeerClass::Service, uid_of(&s.metadata)),
                }
                peers.len()
            },
        ));
        let me = self.clone();
        tokio::spawn(watch(
            Api::<NodeLite>::all_with(client, &objects::nodes()),
            watcher::Config::default(),
            5,
            self.clone(),
            options.timeout,
            move |ev: Event<NodeLite>| {
                let mut peers = write(&me.peers);
                match ev {
                    Event::Init => peers.relist_start(PeerClass::Node),
                    Event::InitDone => peers.relist_done(PeerClass::Node),
                    Event::InitApply(n) | Event::Apply(n) => {
                        let name = n.metadata.name.as_deref().unwrap_or_default();
                        let ips: Vec<std::net::IpAddr> = n
                            .status
                            .iter()
                            .flat_map(|s| &s.addresses)
                            .filter(|a| a.kind == "InternalIP" || a.kind == "ExternalIP")
                            .filter_map(|a| a.address.parse().ok())
                            .collect();
                        peers.apply(PeerClass::Node, uid_of(&n.metadata), "", name, &ips);
                    }
                    Event::Delete(n) => peers.delete(PeerClass::Node, uid_of(&n.metadata)),
                }
                peers.len()
            },
        ));
    }

    /// Applies ReplicaSet or Job events to [`Owners`]; a re-list replaces the table at its end.
    fn owner_events<K>(
        self: &Arc<Self>,
        kind: OwnerKind,
    ) -> impl FnMut(Event<PartialObjectMeta<K>>) -> usize + Send + 'static
    where
        K: Send + 'static,
    {
        let me = self.clone();
        let mut listed = Vec::new();
        move |ev| {
            let mut owners = write(&me.owners);
            match ev {
                Event::Init => listed.clear(),
                Event::InitApply(m) => listed.push(strip(m)),
                Event::InitDone => owners.replace(kind, std::mem::take(&mut listed)),
                Event::Apply(m) => owners.apply(kind, &strip(m)),
                Event::Delete(m) => owners.delete(kind, &strip(m)),
            }
            owners.len()
        }
    }

    /// Waits until this node's pods have been listed once, or `timeout` passes.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let w = &self.health.watches[0];
        while !w.synced.load(Ordering::Relaxed) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }
}

/// Keeps only what [`Owners`] reads of a ReplicaSet's or Job's metadata.
fn strip<K>(m: PartialObjectMeta<K>) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: m.metadata.name,
        namespace: m.metadata.namespace,
        owner_references: m.metadata.owner_references,
        ..Default::default()
    }
}

/// Objects per page of a cluster-wide list. Smaller pages than the API's default 500 keep the
/// decode buffers (and what the allocator keeps of them) small; lists cost a few more requests.
const LIST_PAGE: u32 = 100;

/// First retry delay after an error; doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest delay between retries (client-go's reflector caps at 30 s).
const BACKOFF_MAX: Duration = Duration::from_secs(16);
/// Server-side duration of one watch request (`timeoutSeconds`): the API server ends it, and
/// the watcher resumes from the last resource version. kube's watcher also treats a watch
/// silent for this long plus 5 s as dead, so a connection the API stopped answering on is
/// noticed within about a minute.
const WATCH_TIMEOUT_SECS: u32 = 55;
/// Longest line (one list page, one watch event) accepted from the API. Real objects are at
/// most ~1.5 MiB (etcd's request limit), typically a few KiB, and pages hold [`LIST_PAGE`] of
/// them; a response past this is refused as an error rather than buffered (kube holds a page
/// whole, and a copy of it, before decoding: up to about three times this at once).
pub const MAX_RESPONSE_LINE: usize = 16 << 20;

/// Runs one watch until the process exits, feeding events to `on` (which returns the object
/// count).
///
/// The watch is up only once a list completed and until the next error. Every error (a
/// failed list, watch or connection, a response that does not decode or is too large) is
/// counted, retried with backoff, and answered with a fresh list, so up again always means
/// listed again. A list page that does not arrive within `timeout` is such an error: an API
/// that accepts connections and never answers cannot hold the watch forever.
async fn watch<K, F>(
    api: Api<K>,
    config: watcher::Config,
    index: usize,
    cluster: Arc<Cluster>,
    timeout: Duration,
    mut on: F,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    F: FnMut(Event<K>) -> usize + Send + 'static,
{
    let health = &cluster.health.watches[index];
    let name = WATCHES[index];
    let config = config.timeout(WATCH_TIMEOUT_SECS);
    let mut delay = BACKOFF_MIN;
    let mut last_failure = String::new();
    loop {
        let mut stream = std::pin::pin!(watcher::watcher(api.clone(), config.clone()));
        let mut listing = true;
        let failure = loop {
            let next = if listing {
                match tokio::time::timeout(timeout, stream.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        break format!(
                            "no list response within {}",
                            humantime::format_duration(timeout)
                        );
                    }
                }
            } else {
                stream.next().await
            };
            if crate::fault::fires(crate::fault::Fault::WatchPanic) {
                panic!("injected fault: watch-panic ({name})");
            }
            match next {
                Some(Ok(ev)) => {
                    let done = matches!(ev, Event::InitDone);
                    let count = on(ev);
                    health.objects.store(count as u64, Ordering::Relaxed);
                    if done {
                        listing = false;
                        if !health.synced.swap(true, Ordering::Relaxed) {
                            info!(watch = name, objects = count, "Kubernetes watch synced");
                        } else if !health.up.load(Ordering::Relaxed) {
                            info!(
                                watch = name,
                                objects = count,
                                "Kubernetes watch listed again: up"
                            );
                        }
                        health.up.store(true, Ordering::Relaxed);
                        delay = BACKOFF_MIN;
                        // A full list decodes megabytes of JSON that are freed right after.
                        crate::release_freed_memory();
                    }
                }
                Some(Err(e)) => break crate::report::error_chain(&e),
                None => break "the watch stream ended".to_string(),
            }
        };
        health.errors.fetch_add(1, Ordering::Relaxed);
        // Logged when the watch goes down and when the reason changes, not at every retry.
        if health.up.swap(false, Ordering::Relaxed)
            || delay == BACKOFF_MIN
            || failure != last_failure
        {
            warn!(watch = name, retry_in = ?delay, "Kubernetes watch failed: {failure}");
        }
        last_failure = failure;
        // What a failed or oversized response decoded is freed by now.
        crate::release_freed_memory();
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}
