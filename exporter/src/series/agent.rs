//! sockscope's own health: build, programs, maps, lost events, drain duration.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use sockscope_common::{
    EVENTS, EventKind, FLOW_MAP_NAMES, FLOW_OVERFLOW_NAMES,
    dns::{DNS_MAP_NAMES, DNS_OVERFLOW_NAMES, DNS_PENDING_MAP},
};
use std::sync::atomic::AtomicU64;

use crate::{drain::Batch, ebpf::ProgramRunStats};

pub const BUILD_INFO: &str = "sockscope_build_info";
pub const BPF_PROGRAM_ATTACHED: &str = "sockscope_bpf_program_attached";
pub const BPF_PROGRAM_RUN_SECONDS: &str = "sockscope_bpf_program_run_seconds";
pub const BPF_PROGRAM_RUNS: &str = "sockscope_bpf_program_runs";
pub const BPF_MAP_ENTRIES: &str = "sockscope_bpf_map_entries";
pub const BPF_MAP_CAPACITY: &str = "sockscope_bpf_map_capacity";
pub const EVENTS_LOST: &str = "sockscope_events_lost";
pub const EVENTS_FOLDED: &str = "sockscope_events_folded";
pub const DRAIN_MEMBARRIER_FALLBACKS: &str = "sockscope_drain_membarrier_fallbacks";
pub const LAST_DRAIN_TIMESTAMP: &str = "sockscope_last_drain_timestamp_seconds";
pub const DRAIN_INTERVAL: &str = "sockscope_drain_interval_seconds";
pub const DRAIN_DURATION: &str = "sockscope_drain_duration_seconds";
pub const DRAIN_ERRORS: &str = "sockscope_drain_errors";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    arch: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProgramLabels {
    program: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabels {
    map: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

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
    otlp: Option<OtlpMetrics>,
}

/// `sockscope_otlp_*`, when OTLP export is on.
struct OtlpMetrics {
    stats: std::sync::Arc<OtlpStats>,
    exports: Counter,
    exports_seen: u64,
    failures: Family<ReasonLabels, Counter>,
    failures_seen: [u64; 3],
    duration: Gauge<f64, AtomicU64>,
    bytes: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

pub const WEB_REFUSED: &str = "sockscope_web_refused";

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

pub const OTLP_EXPORTS: &str = "sockscope_otlp_exports";
pub const OTLP_EXPORT_FAILURES: &str = "sockscope_otlp_export_failures";
pub const OTLP_LAST_EXPORT_DURATION: &str = "sockscope_otlp_last_export_duration_seconds";
pub const OTLP_LAST_EXPORT_BYTES: &str = "sockscope_otlp_last_export_bytes";

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
        registry.register(BUILD_INFO, "sockscope build; always 1", build);
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
            drain_duration: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
            drain_errors: Counter::default(),
            otlp: None,
        };
        registry.register(
            BPF_PROGRAM_ATTACHED,
            "1 if the eBPF program is attached, 0 if loading or attaching it failed",
            m.attached.clone(),
        );
        registry.register(
            BPF_PROGRAM_RUN_SECONDS,
            "Time spent in the eBPF program (counts only while kernel.bpf_stats_enabled=1)",
            m.run_seconds.clone(),
        );
        registry.register(
            BPF_PROGRAM_RUNS,
            "Invocations of the eBPF program (counts only while kernel.bpf_stats_enabled=1)",
            m.runs.clone(),
        );
        registry.register(
            BPF_MAP_ENTRIES,
            "Entries in the eBPF map at the last drain",
            m.map_entries.clone(),
        );
        registry.register(
            BPF_MAP_CAPACITY,
            "Maximum entries of the eBPF map",
            m.map_capacity.clone(),
        );
        registry.register(
            EVENTS_LOST,
            "Events the kernel side could not record (their counts are missing), by source",
            m.events_lost.clone(),
        );
        registry.register(
            EVENTS_FOLDED,
            "Kernel updates whose counts were kept without their peer (remote_class=\"~overflow\") or, past the overflow map, without their owner (workload=\"~overflow\"), by source",
            m.events_folded.clone(),
        );
        registry.register(
            DRAIN_MEMBARRIER_FALLBACKS,
            "Drains that could not wait for the eBPF programs with membarrier(2) and paused 50ms instead",
            m.membarrier_fallbacks.clone(),
        );
        registry.register(
            WEB_REFUSED,
            "HTTP requests and connections the endpoint refused: connections (over --web-max-connections), requests (over --web-max-requests), logins (bcrypt verifications busy), unauthorized, timeout (a response not taken within --web-timeout, cut)",
            m.web.refused.clone(),
        );
        for reason in WEB_REFUSALS {
            let _ = m.web.refused.get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            });
        }
        registry.register(
            DRAIN_INTERVAL,
            "The configured time between drains (--interval)",
            m.interval.clone(),
        );
        registry.register(
            LAST_DRAIN_TIMESTAMP,
            "Unix time at which the last drain completed",
            m.last_drain.clone(),
        );
        registry.register(
            DRAIN_DURATION,
            "Time to drain the kernel maps and fold the deltas",
            m.drain_duration.clone(),
        );
        registry.register(
            DRAIN_ERRORS,
            "Map entries that could not be read or deleted while draining",
            m.drain_errors.clone(),
        );
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

    /// Registers the OTLP export families, fed from `stats` at each drain.
    pub fn enable_otlp(&mut self, registry: &mut Registry, stats: std::sync::Arc<OtlpStats>) {
        let m = OtlpMetrics {
            stats,
            exports: Counter::default(),
            exports_seen: 0,
            failures: Family::default(),
            failures_seen: [0; 3],
            duration: Gauge::default(),
            bytes: Gauge::default(),
        };
        registry.register(
            OTLP_EXPORTS,
            "OTLP export requests the collector accepted",
            m.exports.clone(),
        );
        registry.register(
            OTLP_EXPORT_FAILURES,
            "Failed OTLP export attempts: unavailable (connection failed, 429/502/503/504, gRPC UNAVAILABLE; retried with backoff), timeout, rejected (not retried)",
            m.failures.clone(),
        );
        for reason in OTLP_FAILURE_REASONS {
            let _ = m.failures.get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            });
        }
        registry.register(
            OTLP_LAST_EXPORT_DURATION,
            "Duration of the last successful OTLP export",
            m.duration.clone(),
        );
        registry.register(
            OTLP_LAST_EXPORT_BYTES,
            "Size of the last OTLP export request",
            m.bytes.clone(),
        );
        self.otlp = Some(m);
    }

    /// Publishes the OTLP exporter's counts (cumulative there, deltas here).
    pub fn record_otlp(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(m) = &mut self.otlp else { return };
        let exports = m.stats.exports.load(Relaxed);
        m.exports.inc_by(exports.saturating_sub(m.exports_seen));
        m.exports_seen = exports;
        for (i, reason) in OTLP_FAILURE_REASONS.iter().enumerate() {
            let n = m.stats.failures[i].load(Relaxed);
            m.failures
                .get_or_create(&ReasonLabels {
                    reason: (*reason).to_string(),
                })
                .inc_by(n.saturating_sub(m.failures_seen[i]));
            m.failures_seen[i] = n;
        }
        m.duration
            .set(m.stats.last_duration_us.load(Relaxed) as f64 / 1e6);
        m.bytes.set(m.stats.last_bytes.load(Relaxed) as i64);
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
