//! Kubernetes metadata health: watches, index size, and labels taken from cgroup paths alone.

use std::sync::atomic::Ordering;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{
    identity::Misses,
    kubernetes::{Cluster, WATCHES, read},
};

pub const KUBERNETES_UP: &str = "sockscope_kubernetes_up";
pub const KUBERNETES_WATCH_UP: &str = "sockscope_kubernetes_watch_up";
pub const KUBERNETES_WATCH_ERRORS: &str = "sockscope_kubernetes_watch_errors";
pub const KUBERNETES_OBJECTS: &str = "sockscope_kubernetes_objects";
pub const REMOTE_INDEX_ENTRIES: &str = "sockscope_kubernetes_remote_index_entries";
pub const METADATA_MISSES: &str = "sockscope_metadata_misses";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabels {
    watch: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// The `sockscope_kubernetes_*` and `sockscope_metadata_misses_total` families.
pub struct KubernetesMetrics {
    up: Gauge,
    watch_up: Family<WatchLabels, Gauge>,
    errors: Family<WatchLabels, Counter>,
    errors_seen: [u64; WATCHES.len()],
    objects: Family<WatchLabels, Gauge>,
    index: Gauge,
    misses: Family<ReasonLabels, Counter>,
    misses_seen: Misses,
}

impl KubernetesMetrics {
    /// Registers the families.
    pub fn register(registry: &mut Registry) -> Self {
        let m = KubernetesMetrics {
            up: Gauge::default(),
            watch_up: Family::default(),
            errors: Family::default(),
            errors_seen: [0; WATCHES.len()],
            objects: Family::default(),
            index: Gauge::default(),
            misses: Family::default(),
            misses_seen: Misses::default(),
        };
        registry.register(
            KUBERNETES_UP,
            "1 when every Kubernetes API watch is listed and streaming; 0 while any is failing (labels already known keep being used)",
            m.up.clone(),
        );
        registry.register(
            KUBERNETES_WATCH_UP,
            "1 when this Kubernetes API watch is listed and streaming",
            m.watch_up.clone(),
        );
        registry.register(
            KUBERNETES_WATCH_ERRORS,
            "Failed lists, watches and connections to the Kubernetes API, by watch",
            m.errors.clone(),
        );
        registry.register(
            KUBERNETES_OBJECTS,
            "Objects each watch currently knows",
            m.objects.clone(),
        );
        registry.register(
            REMOTE_INDEX_ENTRIES,
            "Addresses (pod IPs, Service ClusterIPs, node addresses) in the remote index",
            m.index.clone(),
        );
        registry.register(
            METADATA_MISSES,
            "Pod cgroups labelled from the cgroup path alone (pod UID, short container id) because the API had not described them, per drain and cgroup, by reason",
            m.misses.clone(),
        );
        for reason in ["pod_unknown", "container_unknown"] {
            let _ = m.misses.get_or_create(&ReasonLabels {
                reason: reason.into(),
            });
        }
        m
    }

    /// Publishes the watches' state and the fallbacks counted since the last call.
    pub fn record(&mut self, cluster: &Cluster, misses: Misses) {
        let health = &cluster.health;
        self.up.set(i64::from(health.up()));
        for (i, name) in WATCHES.iter().enumerate() {
            let w = &health.watches[i];
            if !w.enabled.load(Ordering::Relaxed) {
                continue;
            }
            let labels = WatchLabels {
                watch: (*name).to_string(),
            };
            self.watch_up
                .get_or_create(&labels)
                .set(i64::from(w.up.load(Ordering::Relaxed)));
            let errors = w.errors.load(Ordering::Relaxed);
            self.errors
                .get_or_create(&labels)
                .inc_by(errors.saturating_sub(self.errors_seen[i]));
            self.errors_seen[i] = errors;
            self.objects
                .get_or_create(&labels)
                .set(w.objects.load(Ordering::Relaxed) as i64);
        }
        self.index.set(read(&cluster.peers).len() as i64);
        for (reason, now, seen) in [
            (
                "pod_unknown",
                misses.pod_unknown,
                self.misses_seen.pod_unknown,
            ),
            (
                "container_unknown",
                misses.container_unknown,
                self.misses_seen.container_unknown,
            ),
        ] {
            self.misses
                .get_or_create(&ReasonLabels {
                    reason: reason.into(),
                })
                .inc_by(now.saturating_sub(seen));
        }
        self.misses_seen = misses;
    }
}
