//! Kubernetes metadata health: watches, index size, and labels taken from cgroup paths alone.

use std::sync::atomic::Ordering;

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

use super::{
    registry::{Family, Registry},
    snapshot::label_set,
};
use crate::{
    identity::Misses,
    kubernetes::{Cluster, Watch, read},
    schema,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct WatchLabels {
    watch: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ReasonLabels {
    reason: String,
}

label_set!(WatchLabels { watch });
label_set!(ReasonLabels { reason });

/// The `sockscope_kubernetes_*` and `sockscope_metadata_misses_total` families.
pub struct KubernetesMetrics {
    up: Gauge,
    watch_up: Family<WatchLabels, Gauge>,
    errors: Family<WatchLabels, Counter>,
    errors_seen: [u64; Watch::ALL.len()],
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
            errors_seen: [0; Watch::ALL.len()],
            objects: Family::default(),
            index: Gauge::default(),
            misses: Family::default(),
            misses_seen: Misses::default(),
        };
        registry.register(&schema::KUBERNETES_UP, m.up.clone());
        registry.register(&schema::KUBERNETES_WATCH_UP, m.watch_up.clone());
        registry.register(&schema::KUBERNETES_WATCH_ERRORS, m.errors.clone());
        registry.register(&schema::KUBERNETES_OBJECTS, m.objects.clone());
        registry.register(&schema::REMOTE_INDEX_ENTRIES, m.index.clone());
        registry.register(&schema::METADATA_MISSES, m.misses.clone());
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
        for (i, watch) in Watch::ALL.into_iter().enumerate() {
            let w = health.of(watch);
            if !w.enabled.load(Ordering::Relaxed) {
                continue;
            }
            let labels = WatchLabels {
                watch: watch.name().to_string(),
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
