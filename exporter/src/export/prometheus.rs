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

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let exposition = shared.current();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if wants_openmetrics(accept) {
        (
            [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
            exposition.openmetrics.clone(),
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
            exposition.prometheus.clone(),
        )
            .into_response()
    }
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
