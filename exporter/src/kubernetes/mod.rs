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
    runtime::{
        utils::Backoff,
        watcher::{self, Event, ExponentialBackoff},
    },
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

/// The API watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// This node's pods (`spec.nodeName`): who owns a socket.
    NodePods,
    /// ReplicaSet -> Deployment.
    ReplicaSets,
    /// Job -> CronJob.
    Jobs,
    /// Every pod's IPs, for the remote index.
    Pods,
    /// Every Service's ClusterIPs, for the remote index.
    Services,
    /// Every node's addresses, for the remote index.
    Nodes,
}

impl Watch {
    /// Every watch, in the order of [`Health::watches`].
    pub const ALL: [Watch; 6] = [
        Watch::NodePods,
        Watch::ReplicaSets,
        Watch::Jobs,
        Watch::Pods,
        Watch::Services,
        Watch::Nodes,
    ];

    /// The `watch` label value.
    pub fn name(self) -> &'static str {
        match self {
            Watch::NodePods => "node_pods",
            Watch::ReplicaSets => "replicasets",
            Watch::Jobs => "jobs",
            Watch::Pods => "pods",
            Watch::Services => "services",
            Watch::Nodes => "nodes",
        }
    }

    /// Whether it feeds the cluster-wide remote index (off with `--remote-index false`).
    pub fn for_remote_index(self) -> bool {
        matches!(self, Watch::Pods | Watch::Services | Watch::Nodes)
    }
}

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
    /// In the order of [`Watch::ALL`].
    watches: [WatchHealth; 6],
}

impl Health {
    /// The state of one watch.
    pub fn of(&self, watch: Watch) -> &WatchHealth {
        &self.watches[watch as usize]
    }

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
        for w in Watch::ALL {
            let on = !w.for_remote_index() || options.remote_index;
            self.health.of(w).enabled.store(on, Ordering::Relaxed);
        }
        let run = |w: Watch| (self.clone(), w, options.timeout);

        let me = self.clone();
        let node =
            watcher::Config::default().fields(&format!("spec.nodeName={}", options.node_name));
        tokio::spawn(watch(
            Api::<PodLite>::all_with(client.clone(), &objects::pods()),
            node,
            run(Watch::NodePods),
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
            run(Watch::ReplicaSets),
            self.owner_events(OwnerKind::ReplicaSet),
        ));
        tokio::spawn(watch(
            Api::<PartialObjectMeta<Job>>::all(client.clone()),
            watcher::Config::default(),
            run(Watch::Jobs),
            self.owner_events(OwnerKind::Job),
        ));

        if !options.remote_index {
            info!("remote index off: peers are labelled by address class only");
            return;
        }
        let paged = watcher::Config::default().page_size(LIST_PAGE);
        tokio::spawn(watch(
            Api::<PodLite>::all_with(client.clone(), &objects::pods()),
            paged.clone(),
            run(Watch::Pods),
            self.peer_events::<PodLite>(),
        ));
        tokio::spawn(watch(
            Api::<ServiceLite>::all_with(client.clone(), &objects::services()),
            paged,
            run(Watch::Services),
            self.peer_events::<ServiceLite>(),
        ));
        tokio::spawn(watch(
            Api::<NodeLite>::all_with(client, &objects::nodes()),
            watcher::Config::default(),
            run(Watch::Nodes),
            self.peer_events::<NodeLite>(),
        ));
    }

    /// Applies one kind of peer's events to the remote index; a re-list replaces that kind's
    /// entries at its end.
    fn peer_events<K: Peer>(self: &Arc<Self>) -> impl FnMut(Event<K>) -> usize + Send + 'static {
        let me = self.clone();
        move |ev| {
            let mut peers = write(&me.peers);
            match ev {
                Event::Init => peers.relist_start(K::CLASS),
                Event::InitDone => peers.relist_done(K::CLASS),
                Event::InitApply(o) | Event::Apply(o) => {
                    let uid = uid_of(o.meta());
                    match o.addresses(&me) {
                        Some(a) => peers.apply(K::CLASS, uid, &a.namespace, &a.name, &a.ips),
                        None => peers.delete(K::CLASS, uid),
                    }
                }
                Event::Delete(o) => peers.delete(K::CLASS, uid_of(o.meta())),
            }
            peers.len()
        }
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
        let w = self.health.of(Watch::NodePods);
        while !w.synced.load(Ordering::Relaxed) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }
}

/// What the remote index keeps of a peer object.
pub struct Addresses {
    /// Its namespace (empty for nodes).
    pub namespace: String,
    /// Workload (pods), Service name or node name.
    pub name: String,
    /// The addresses it answers on.
    pub ips: Vec<std::net::IpAddr>,
}

/// An object the remote index names peers after: pods, Services, nodes.
trait Peer: Resource + Clone + DeserializeOwned + Debug + Send + 'static {
    /// Its kind in the index.
    const CLASS: PeerClass;
    /// Its addresses and name, or `None` when it must not name any address.
    fn addresses(&self, cluster: &Cluster) -> Option<Addresses>;
}

impl Peer for PodLite {
    const CLASS: PeerClass = PeerClass::Pod;

    fn addresses(&self, cluster: &Cluster) -> Option<Addresses> {
        let status = self.status.as_ref();
        let finished = status
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
        // Host-network pods have the node's address: the node index has it.
        if finished || self.spec.host_network == Some(true) {
            return None;
        }
        Some(Addresses {
            namespace: self.metadata.namespace.clone().unwrap_or_default(),
            name: read(&cluster.owners).workload_of(&self.metadata).name,
            ips: status.map(pod_ips).unwrap_or_default(),
        })
    }
}

impl Peer for ServiceLite {
    const CLASS: PeerClass = PeerClass::Service;

    fn addresses(&self, _: &Cluster) -> Option<Addresses> {
        Some(Addresses {
            namespace: self.metadata.namespace.clone().unwrap_or_default(),
            name: self.metadata.name.clone().unwrap_or_default(),
            ips: cluster_ips(&self.spec),
        })
    }
}

impl Peer for NodeLite {
    const CLASS: PeerClass = PeerClass::Node;

    fn addresses(&self, _: &Cluster) -> Option<Addresses> {
        Some(Addresses {
            namespace: String::new(),
            name: self.metadata.name.clone().unwrap_or_default(),
            ips: self
                .status
                .iter()
                .flat_map(|s| &s.addresses)
                .filter(|a| a.kind == "InternalIP" || a.kind == "ExternalIP")
                .filter_map(|a| a.address.parse().ok())
                .collect(),
        })
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
    (cluster, which, timeout): (Arc<Cluster>, Watch, Duration),
    mut on: F,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    F: FnMut(Event<K>) -> usize + Send + 'static,
{
    let health = cluster.health.of(which);
    let name = which.name();
    let config = config.timeout(WATCH_TIMEOUT_SECS);
    let mut backoff = backoff();
    // Failing since the last completed list.
    let mut retrying = false;
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
                        backoff.reset();
                        retrying = false;
                        // A full list decodes megabytes of JSON that are freed right after.
                        crate::memory::release_freed_memory();
                    }
                }
                Some(Err(e)) => break crate::report::error_chain(&e),
                None => break "the watch stream ended".to_string(),
            }
        };
        health.errors.fetch_add(1, Ordering::Relaxed);
        // Logged when the watch goes down and when the reason changes, not at every retry.
        let first = !std::mem::replace(&mut retrying, true);
        let delay = backoff.next().unwrap_or(BACKOFF_MAX);
        if health.up.swap(false, Ordering::Relaxed) || first || failure != last_failure {
            warn!(watch = name, retry_in = ?delay, "Kubernetes watch failed: {failure}");
        }
        last_failure = failure;
        // What a failed or oversized response decoded is freed by now.
        crate::memory::release_freed_memory();
        tokio::time::sleep(delay).await;
    }
}

/// Retry delays: kube-runtime's exponential backoff from [`BACKOFF_MIN`] doubling to
/// [`BACKOFF_MAX`], reset once a list completes.
fn backoff() -> ExponentialBackoff {
    ExponentialBackoff::from(
        backon::ExponentialBuilder::default()
            .with_min_delay(BACKOFF_MIN)
            .with_max_delay(BACKOFF_MAX)
            .with_factor(2.0)
            .without_max_times(),
    )
}
