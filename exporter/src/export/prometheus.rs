//! HTTP server: /metrics, /healthz, /readyz. Handlers only clone a pointer to the exposition
//! rendered after the last drain, so scrapes never touch kernel maps nor wait for a drain.
//! `/healthz` fails when the drain (or the DNS answer reader) stopped making progress, so the
//! kubelet or systemd restarts an agent that would otherwise go on serving old numbers.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use super::text::{
    Exposition, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE, wants_openmetrics,
};

/// State shared between the drain loop and the HTTP handlers.
pub struct Shared {
    /// Published by the drain, read by every scrape and export without a lock.
    exposition: ArcSwap<Exposition>,
    ready: AtomicBool,
    started: Instant,
    /// When the last drain completed, in ms since `started` (0: none yet).
    last_drain_ms: AtomicU64,
    /// A drain older than this is a stall.
    stale_after: Duration,
    /// Before the first drain, which may wait for the Kubernetes API: extra time allowed.
    first_grace: Duration,
    /// Other loops that must keep waking: name, how long since they last did, and the
    /// longest silence that is still healthy.
    heartbeats: RwLock<Vec<Heartbeat>>,
    /// When each text format (Prometheus, OpenMetrics) was last asked for, in ms since
    /// `started` (0: never).
    asked_ms: [AtomicU64; 2],
}

/// A format asked for within this long is rendered by the drain itself, so scrapes find it
/// ready; one nobody asks for is rendered only if someone does.
const KEEP_RENDERING: Duration = Duration::from_secs(600);

/// From this many series on, memory freed with a replaced exposition goes back to the kernel.
const TRIM_ABOVE_SERIES: usize = 10_000;

/// A loop /healthz watches besides the drain.
pub struct Heartbeat {
    /// Shown in the /healthz answer.
    pub name: &'static str,
    /// Time since the loop last woke.
    pub since: Box<dyn Fn() -> Duration + Send + Sync>,
    /// Longest healthy silence.
    pub limit: Duration,
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new(Duration::from_secs(60), Duration::ZERO)
    }
}

/// How long after the last completed drain /healthz fails: three intervals (a drain skipped
/// now and then under load is no stall) plus a margin for a slow drain on a busy node.
pub fn stale_after(interval: Duration) -> Duration {
    interval * 3 + STALE_MARGIN
}

/// See [`stale_after`].
pub const STALE_MARGIN: Duration = Duration::from_secs(2);

impl Shared {
    /// Shared state whose drain counts as stalled `stale_after` after it last completed (or
    /// `first_grace + stale_after` after start, before the first one).
    pub fn new(stale_after: Duration, first_grace: Duration) -> Self {
        Shared {
            exposition: ArcSwap::default(),
            ready: AtomicBool::new(false),
            started: Instant::now(),
            last_drain_ms: AtomicU64::new(0),
            stale_after,
            first_grace,
            heartbeats: RwLock::default(),
            asked_ms: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// Notes a completed drain.
    pub fn drained(&self) {
        let ms = self.started.elapsed().as_millis().min(u64::MAX as u128) as u64;
        self.last_drain_ms.store(ms.max(1), Ordering::Release);
    }

    /// Adds a loop to watch.
    pub fn watch(&self, heartbeat: Heartbeat) {
        match self.heartbeats.write() {
            Ok(mut g) => g.push(heartbeat),
            Err(p) => p.into_inner().push(heartbeat),
        }
    }

    /// Why the agent is not healthy, if it is not.
    pub fn unhealthy(&self) -> Option<String> {
        let last = self.last_drain_ms.load(Ordering::Acquire);
        let age = if last == 0 {
            self.started.elapsed().saturating_sub(self.first_grace)
        } else {
            self.started
                .elapsed()
                .saturating_sub(Duration::from_millis(last))
        };
        if age > self.stale_after {
            return Some(format!(
                "no drain completed for {:.1}s (limit {:.1}s)",
                age.as_secs_f64(),
                self.stale_after.as_secs_f64()
            ));
        }
        let beats = match self.heartbeats.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        beats.iter().find_map(|h| {
            let since = (h.since)();
            (since > h.limit).then(|| {
                format!(
                    "{} silent for {:.1}s (limit {:.1}s)",
                    h.name,
                    since.as_secs_f64(),
                    h.limit.as_secs_f64()
                )
            })
        })
    }
    /// Publishes a new exposition. The formats scrapers asked for lately are rendered first,
    /// on the caller's (the drain's) thread, so scrapes never wait for a render and copy a
    /// pointer; a format nobody asks for is rendered only if someone does.
    pub fn publish(&self, exposition: Exposition) {
        let now = self.elapsed_ms();
        for (i, asked) in self.asked_ms.iter().enumerate() {
            let at = asked.load(Ordering::Relaxed);
            if at != 0 && now.saturating_sub(at) < KEEP_RENDERING.as_millis() as u64 {
                if i == 1 {
                    exposition.openmetrics();
                } else {
                    exposition.prometheus();
                }
            }
        }
        let large = exposition.snapshot.len() >= TRIM_ABOVE_SERIES;
        drop(self.exposition.swap(Arc::new(exposition)));
        if large {
            // The previous texts (about 220 bytes a series each) were just freed; without this
            // the allocator would keep their pages, and the agent would hold two renderings
            // of every series instead of one.
            crate::memory::release_freed_memory();
        }
    }

    /// Notes that a scraper asked for OpenMetrics (or Prometheus text).
    fn asked(&self, openmetrics: bool) {
        self.asked_ms[usize::from(openmetrics)].store(self.elapsed_ms().max(1), Ordering::Relaxed);
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis().min(u64::MAX as u128) as u64
    }

    /// Marks the agent ready (programs attached, first drain done) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// The exposition of the last drain.
    pub fn current(&self) -> Arc<Exposition> {
        self.exposition.load_full()
    }
}

/// The router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/",
            get(|| async { "sockscope: see /metrics, /healthz, /readyz\n" }),
        )
        .with_state(shared)
}

/// One format of a published exposition, shared with the response body instead of copied:
/// a scrape of 10,000 series costs a reference count, not 2 MB of memcpy.
struct Text {
    exposition: Arc<Exposition>,
    openmetrics: bool,
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        if self.openmetrics {
            self.exposition.openmetrics().as_bytes()
        } else {
            self.exposition.prometheus().as_bytes()
        }
    }
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let openmetrics = wants_openmetrics(accept);
    let content_type = if openmetrics {
        OPENMETRICS_CONTENT_TYPE
    } else {
        PROMETHEUS_CONTENT_TYPE
    };
    shared.asked(openmetrics);
    let mut exposition = shared.current();
    if !exposition.rendered(openmetrics) {
        // The first scrape after a drain renders that format (milliseconds at 10k series):
        // on a blocking thread, so the server's workers keep answering.
        exposition = match tokio::task::spawn_blocking(move || {
            if openmetrics {
                exposition.openmetrics();
            } else {
                exposition.prometheus();
            }
            exposition
        })
        .await
        {
            Ok(e) => e,
            Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        };
    }
    let body = bytes::Bytes::from_owner(Text {
        exposition,
        openmetrics,
    });
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    match shared.unhealthy() {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {why}\n"),
        )
            .into_response(),
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.ready.load(Ordering::Acquire) && shared.unhealthy().is_none() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: programs not attached, first drain pending, or unhealthy (see /healthz)\n",
        )
            .into_response()
    }
}
