//! sockscope's own health: build, programs, maps, lost events, drain duration.

use std::{sync::Arc, time::Duration};

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use sockscope_common::{
    EVENTS, EventKind, FLOW_MAP_NAMES, FLOW_OVERFLOW_NAMES,
    dns::{DNS_MAP_NAMES, DNS_OVERFLOW_NAMES, DNS_PENDING_MAP},
};
use std::sync::atomic::AtomicU64;

use super::{
    histogram::Histogram,
    registry::{Collector, Family, Registry},
    snapshot::{NoLabels, Point, Value, label_set},
};
use crate::{drain::Batch, ebpf::ProgramRunStats, schema};

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct BuildLabels {
    version: String,
    arch: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ProgramLabels {
    program: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct MapLabels {
    map: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct SourceLabels {
    source: String,
}

label_set!(BuildLabels { version, arch });
label_set!(ProgramLabels { program });
label_set!(MapLabels { map });
label_set!(SourceLabels { source });
label_set!(ReasonLabels { reason });

/// Self-metrics.
pub struct AgentMetrics {
    attached: Family<ProgramLabels, Gauge>,
    run_seconds: Family<ProgramLabels, Counter<f64, AtomicU64>>,
    runs: Family<ProgramLabels, Counter>,
    last_run: std::collections::HashMap<&'static str, ProgramRunStats>,
    map_entries: Family<MapLabels, Gauge>,
    map_capacity: Family<MapLabels, Gauge>,
    events_lost: Family<SourceLabels, Counter>,
    events_folded: Family<SourceLabels, Counter>,
    drain_duration: Histogram,
    drain_errors: Counter,
    membarrier_fallbacks: Counter,
    last_drain: Gauge<f64, AtomicU64>,
    interval: Gauge<f64, AtomicU64>,
    web: WebCounters,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ReasonLabels {
    reason: String,
}

/// `sockscope_web_refused_total{reason}`, shared with the HTTP server, which counts into it.
#[derive(Clone, Default)]
pub struct WebCounters {
    refused: Family<ReasonLabels, Counter>,
}

/// Why the endpoint refused a request or connection.
pub const WEB_REFUSALS: [&str; 5] = [
    "connections",
    "requests",
    "logins",
    "unauthorized",
    "timeout",
];

impl WebCounters {
    /// Counts one refusal.
    pub fn refused(&self, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }
}

/// Export counts, read into sockscope's own metrics at each drain.
#[derive(Debug, Default)]
pub struct OtlpStats {
    /// Requests the collector accepted.
    pub exports: AtomicU64,
    /// Failed attempts, by [`OTLP_FAILURE_REASONS`].
    pub failures: [AtomicU64; 3],
    /// Duration of the last successful export, in microseconds.
    pub last_duration_us: AtomicU64,
    /// Size of the last request, in bytes.
    pub last_bytes: AtomicU64,
}

/// `reason` label values of `sockscope_otlp_export_failures_total`.
pub const OTLP_FAILURE_REASONS: [&str; 3] = ["unavailable", "timeout", "rejected"];

impl AgentMetrics {
    /// Registers the families; build info is set once here.
    pub fn register(registry: &mut Registry) -> Self {
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                arch: std::env::consts::ARCH.to_string(),
            })
            .set(1);
        registry.register(&schema::BUILD_INFO, build);
        let m = AgentMetrics {
            attached: Family::default(),
            run_seconds: Family::default(),
            runs: Family::default(),
            last_run: Default::default(),
            map_entries: Family::default(),
            map_capacity: Family::default(),
            events_lost: Family::default(),
            events_folded: Family::default(),
            membarrier_fallbacks: Counter::default(),
            last_drain: Gauge::default(),
            interval: Gauge::default(),
            web: WebCounters::default(),
            drain_duration: Histogram::new(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
            drain_errors: Counter::default(),
        };
        registry.register(&schema::BPF_PROGRAM_ATTACHED, m.attached.clone());
        registry.register(&schema::BPF_PROGRAM_RUN_SECONDS, m.run_seconds.clone());
        registry.register(&schema::BPF_PROGRAM_RUNS, m.runs.clone());
        registry.register(&schema::BPF_MAP_ENTRIES, m.map_entries.clone());
        registry.register(&schema::BPF_MAP_CAPACITY, m.map_capacity.clone());
        registry.register(&schema::EVENTS_LOST, m.events_lost.clone());
        registry.register(&schema::EVENTS_FOLDED, m.events_folded.clone());
        registry.register(
            &schema::DRAIN_MEMBARRIER_FALLBACKS,
            m.membarrier_fallbacks.clone(),
        );
        registry.register(&schema::WEB_REFUSED, m.web.refused.clone());
        for reason in WEB_REFUSALS {
            let _ = m.web.refused.get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            });
        }
        registry.register(&schema::DRAIN_INTERVAL, m.interval.clone());
        registry.register(&schema::LAST_DRAIN_TIMESTAMP, m.last_drain.clone());
        registry.register(&schema::DRAIN_DURATION, m.drain_duration.clone());
        registry.register(&schema::DRAIN_ERRORS, m.drain_errors.clone());
        for (kind, name) in EVENTS {
            // Present from the start so alerts on increase() see the zero.
            let labels = SourceLabels {
                source: name.to_string(),
            };
            match kind {
                EventKind::Lost => drop(m.events_lost.get_or_create(&labels)),
                EventKind::Folded => drop(m.events_folded.get_or_create(&labels)),
                EventKind::Unmatched => {}
            }
        }
        m
    }

    /// Records which programs are attached.
    pub fn set_attached<'a>(&self, programs: impl IntoIterator<Item = (&'a str, bool)>) {
        for (name, attached) in programs {
            self.attached
                .get_or_create(&ProgramLabels {
                    program: name.to_string(),
                })
                .set(i64::from(attached));
        }
    }

    /// The counters the HTTP server increments.
    pub fn web_counters(&self) -> WebCounters {
        self.web.clone()
    }

    /// Records the drain interval.
    pub fn set_interval(&self, interval: Duration) {
        self.interval.set(interval.as_secs_f64());
    }

    /// Records the capacity of a map.
    pub fn set_map_capacity(&self, map: &str, capacity: u32) {
        self.map_capacity
            .get_or_create(&MapLabels {
                map: map.to_string(),
            })
            .set(i64::from(capacity));
    }

    /// Registers the OTLP export families, read from the exporter's `stats` whenever a
    /// snapshot is taken.
    pub fn enable_otlp(&mut self, registry: &mut Registry, stats: Arc<OtlpStats>) {
        use std::sync::atomic::Ordering::Relaxed;
        let single = |value| Point {
            labels: Arc::new(NoLabels),
            value,
        };
        let s = stats.clone();
        registry.register(
            &schema::OTLP_EXPORTS,
            Collector(move |out: &mut Vec<Point>| {
                out.push(single(Value::Counter(s.exports.load(Relaxed))))
            }),
        );
        let s = stats.clone();
        registry.register(
            &schema::OTLP_EXPORT_FAILURES,
            Collector(move |out: &mut Vec<Point>| {
                for (i, reason) in OTLP_FAILURE_REASONS.iter().enumerate() {
                    out.push(Point {
                        labels: Arc::new(ReasonLabels {
                            reason: (*reason).to_string(),
                        }),
                        value: Value::Counter(s.failures[i].load(Relaxed)),
                    });
                }
            }),
        );
        let s = stats.clone();
        registry.register(
            &schema::OTLP_LAST_EXPORT_DURATION,
            Collector(move |out: &mut Vec<Point>| {
                let us = s.last_duration_us.load(Relaxed);
                out.push(single(Value::GaugeF64(us as f64 / 1e6)))
            }),
        );
        registry.register(
            &schema::OTLP_LAST_EXPORT_BYTES,
            Collector(move |out: &mut Vec<Point>| {
                let bytes = stats.last_bytes.load(Relaxed);
                out.push(single(Value::Gauge(
                    i64::try_from(bytes).unwrap_or(i64::MAX),
                )))
            }),
        );
    }

    /// Records what one drain did.
    pub fn record_drain(&self, batch: &Batch, elapsed: Duration) {
        let g = batch.drained_generation & 1;
        let entries = [
            (FLOW_MAP_NAMES[g], batch.drained_entries),
            (FLOW_OVERFLOW_NAMES[g], batch.drained_overflow_entries),
            (DNS_MAP_NAMES[g], batch.drained_dns_entries),
            (DNS_OVERFLOW_NAMES[g], batch.drained_dns_overflow_entries),
            (DNS_PENDING_MAP, batch.dns_pending),
        ];
        for (map, n) in entries {
            self.map_entries
                .get_or_create(&MapLabels {
                    map: map.to_string(),
                })
                .set(n as i64);
        }
        for (i, &n) in batch.events.iter().enumerate() {
            let (kind, name) = EVENTS[i];
            let family = match kind {
                EventKind::Lost => &self.events_lost,
                EventKind::Folded => &self.events_folded,
                // Reported by the DNS families as an answer outcome.
                EventKind::Unmatched => continue,
            };
            if n > 0 {
                family
                    .get_or_create(&SourceLabels {
                        source: name.to_string(),
                    })
                    .inc_by(n);
            }
        }
        if batch.errors > 0 {
            self.drain_errors.inc_by(batch.errors);
        }
        if batch.membarrier_fallback {
            self.membarrier_fallbacks.inc();
        }
        self.drain_duration.observe(elapsed.as_secs_f64());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_drain.set(now.as_secs_f64());
    }

    /// Folds the kernel's cumulative program statistics into counters.
    pub fn record_run_stats(&mut self, stats: &[(&'static str, ProgramRunStats)]) {
        for &(name, s) in stats {
            let labels = ProgramLabels {
                program: name.to_string(),
            };
            let last = self.last_run.entry(name).or_default();
            // A program reloaded or stats toggled can make the kernel's numbers go backwards.
            let dt = s.run_time.saturating_sub(last.run_time);
            let dn = s.run_count.saturating_sub(last.run_count);
            self.run_seconds
                .get_or_create(&labels)
                .inc_by(dt.as_secs_f64());
            self.runs.get_or_create(&labels).inc_by(dn);
            *last = s;
        }
    }
}
