//! Kubernetes metadata health: watches, index size, and labels taken from cgroup paths alone.

use std::sync::{Arc, atomic::Ordering};

use prometheus_client::metrics::counter::Counter;

use super::{
    registry::{Collect, Collector, Family, Registry},
    snapshot::{LabelSet, NoLabels, Point, Value, label_set},
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

/// The `sockscope_kubernetes_*` and `sockscope_metadata_misses_total` families. The watches'
/// state is read from their atomics whenever a snapshot is taken.
pub struct KubernetesMetrics {
    misses: Family<ReasonLabels, Counter>,
    misses_seen: Misses,
}

fn point(labels: impl LabelSet, value: Value) -> Point {
    Point {
        labels: Arc::new(labels),
        value,
    }
}

/// One series per running watch, valued by `value`.
fn per_watch(
    cluster: &Arc<Cluster>,
    value: fn(&crate::kubernetes::WatchHealth) -> Value,
) -> impl Collect + 'static {
    let cluster = cluster.clone();
    Collector(move |out: &mut Vec<Point>| {
        for w in Watch::ALL {
            let h = cluster.health.of(w);
            if h.enabled.load(Ordering::Relaxed) {
                let labels = WatchLabels {
                    watch: w.name().to_string(),
                };
                out.push(point(labels, value(h)));
            }
        }
    })
}

impl KubernetesMetrics {
    /// Registers the families of `cluster`'s watches.
    pub fn register(registry: &mut Registry, cluster: &Arc<Cluster>) -> Self {
        let c = cluster.clone();
        registry.register(
            &schema::KUBERNETES_UP,
            Collector(move |out: &mut Vec<Point>| {
                out.push(point(NoLabels, Value::Gauge(i64::from(c.health.up()))))
            }),
        );
        registry.register(
            &schema::KUBERNETES_WATCH_UP,
            per_watch(cluster, |h| {
                Value::Gauge(i64::from(h.up.load(Ordering::Relaxed)))
            }),
        );
        registry.register(
            &schema::KUBERNETES_WATCH_ERRORS,
            per_watch(cluster, |h| {
                Value::Counter(h.errors.load(Ordering::Relaxed))
            }),
        );
        registry.register(
            &schema::KUBERNETES_OBJECTS,
            per_watch(cluster, |h| {
                Value::Gauge(i64::try_from(h.objects.load(Ordering::Relaxed)).unwrap_or(i64::MAX))
            }),
        );
        let c = cluster.clone();
        registry.register(
            &schema::REMOTE_INDEX_ENTRIES,
            Collector(move |out: &mut Vec<Point>| {
                let n = read(&c.peers).len();
                out.push(point(NoLabels, Value::Gauge(n as i64)))
            }),
        );
        let m = KubernetesMetrics {
            misses: Family::default(),
            misses_seen: Misses::default(),
        };
        registry.register(&schema::METADATA_MISSES, m.misses.clone());
        for reason in ["pod_unknown", "container_unknown"] {
            let _ = m.misses.get_or_create(&ReasonLabels {
                reason: reason.into(),
            });
        }
        m
    }

    /// Adds the fallbacks counted since the last call.
    pub fn record(&mut self, misses: Misses) {
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
