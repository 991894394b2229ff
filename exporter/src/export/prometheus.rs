//! HTTP server: /metrics, /healthz, /readyz. Handlers only clone a pointer to the exposition
//! rendered after the last drain, so scrapes never touch kernel maps nor wait for a drain.

use std::sync::{
    Arc, RwLock,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use super::format::{
    Exposition, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE, wants_openmetrics,
};

/// State shared between the drain loop and the HTTP handlers.
#[derive(Default)]
pub struct Shared {
    exposition: RwLock<Arc<Exposition>>,
    ready: AtomicBool,
}

impl Shared {
    /// Publishes a new exposition.
    pub fn publish(&self, exposition: Exposition) {
        let new = Arc::new(exposition);
        match self.exposition.write() {
            Ok(mut guard) => *guard = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    /// Marks the agent ready (programs attached, first drain done) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// The exposition of the last drain.
    pub fn current(&self) -> Arc<Exposition> {
        match self.exposition.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
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
            self.exposition.openmetrics.as_bytes()
        } else {
            self.exposition.prometheus.as_bytes()
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
    let body = bytes::Bytes::from_owner(Text {
        exposition: shared.current(),
        openmetrics,
    });
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: programs not attached or first drain pending\n",
        )
            .into_response()
    }
}
