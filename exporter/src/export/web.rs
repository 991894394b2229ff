//! The HTTP endpoint, hardened the way Prometheus exporters are (exporter-toolkit's web
//! config), and against clients that do not play along:
//! - optional TLS and basic auth from a web config file; `/healthz`, `/readyz` and `/` carry no
//!   data and need no credentials, so the kubelet's probes work with any web config;
//! - at most `max_requests` scrapes at once, checked before authentication (503 beyond it);
//! - bcrypt costs the same for unknown users as for known ones (no timing oracle), and at most
//!   [`MAX_VERIFYING`] verifications run at once, the rest are refused at once (503);
//! - at most `max_connections` open connections (more are closed at once);
//! - request headers and TLS handshakes must arrive within `timeout`, and a response not sent
//!   within `timeout` of its request (a client that stops reading) is cut, freeing its slot.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: /etc/sockscope/tls.crt
//!   key_file: /etc/sockscope/tls.key
//!   client_ca_file: /etc/sockscope/ca.crt   # optional: require client certificates
//! basic_auth_users:
//!   prometheus: $2y$10$...                    # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':')
//! ```

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::Request,
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use base64::Engine;
use serde::Deserialize;
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
    time::Instant,
};
use tracing::{debug, warn};

use crate::series::agent::WebCounters;

/// Errors of the web config; each names the file and key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read or parsed.
    #[error("web config {path}: {message}")]
    Config {
        /// The web config file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A web config file's contents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: PathBuf,
    key_file: PathBuf,
    client_ca_file: Option<PathBuf>,
}

/// bcrypt verifications at once; more logins meanwhile are refused (a cached login needs
/// none). Two: as many as this machine kind's cores, so logins cannot take every CPU.
pub const MAX_VERIFYING: usize = 2;

/// Paths that carry no data and need no credentials (probes, the landing page).
const PUBLIC_PATHS: [&str; 3] = ["/healthz", "/readyz", "/"];

/// What the endpoint enforces.
#[derive(Clone)]
pub struct WebOptions {
    /// TLS, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Basic auth users; empty: no authentication.
    pub users: Arc<Users>,
    /// Concurrent /metrics requests; more get 503.
    pub max_requests: usize,
    /// Open connections; more are closed at once.
    pub max_connections: usize,
    /// Longest time for reading a request's headers (and the TLS handshake), and for sending
    /// a response.
    pub timeout: Duration,
}

/// Basic auth users, with a stand-in hash for names that are not users.
#[derive(Default)]
pub struct Users {
    hashes: BTreeMap<String, String>,
    /// A bcrypt hash of the highest cost among the users: an unknown user's password is
    /// verified against it, so a refusal takes as long whether the user exists or not.
    decoy: String,
}

impl Users {
    /// True when authentication is off.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

/// Parses a web config file's text; errors name the key, on one line.
pub fn parse(text: &str) -> std::result::Result<File, String> {
    parse_inner(text).map_err(|e| crate::report::one_line(&e))
}

fn parse_inner(text: &str) -> std::result::Result<File, String> {
    let de = serde_norway::Deserializer::from_str(text);
    let file: File = serde_path_to_error::deserialize(de)
        .map_err(|e| format!("{}: {}", e.path(), e.inner().to_string().replace('\n', " ")))?;
    for (user, hash) in &file.basic_auth_users {
        if hash.parse::<bcrypt::HashParts>().is_err() {
            return Err(format!(
                "basic_auth_users.{user}: not a bcrypt hash (make one with `htpasswd -nBC 10 {user}`)"
            ));
        }
    }
    Ok(file)
}

/// Reads and checks a web config file: certificates load, hashes are bcrypt.
pub fn load(
    path: &Path,
    max_requests: usize,
    max_connections: usize,
    timeout: Duration,
) -> Result<WebOptions> {
    let err = |message: String| Error::Config {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let file = parse(&text).map_err(err)?;
    let tls = match file.tls_server_config {
        Some(t) => Some(acceptor(&t).map_err(err)?),
        None => None,
    };
    let users = users(file.basic_auth_users).map_err(err)?;
    Ok(WebOptions {
        tls,
        users: Arc::new(users),
        max_requests,
        max_connections,
        timeout,
    })
}

/// The users and their decoy hash.
fn users(hashes: BTreeMap<String, String>) -> std::result::Result<Users, String> {
    let Some(cost) = hashes
        .values()
        .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
        .map(|p| p.get_cost())
        .max()
    else {
        return Ok(Users::default());
    };
    // Random, never a password anyone knows: this hash only has to cost what a real one does.
    let secret = format!(
        "{:x}",
        password_key(&format!("{:?}", std::time::Instant::now()))
    );
    let decoy = bcrypt::hash(secret, cost).map_err(|e| format!("basic_auth_users: {e}"))?;
    Ok(Users { hashes, decoy })
}

fn acceptor(t: &TlsFile) -> std::result::Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&t.cert_file)
        .and_then(|it| it.collect())
        .map_err(|e| format!("tls_server_config.cert_file {}: {e}", t.cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls_server_config.cert_file {}: no certificate",
            t.cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&t.key_file)
        .map_err(|e| format!("tls_server_config.key_file {}: {e}", t.key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let builder = match &t.client_ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("tls_server_config.client_ca_file {}: {e}", ca.display()))?
            {
                let c = c.map_err(|e| {
                    format!("tls_server_config.client_ca_file {}: {e}", ca.display())
                })?;
                roots.add(c).map_err(|e| {
                    format!("tls_server_config.client_ca_file {}: {e}", ca.display())
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!("tls_server_config: certificate and key do not match or are unusable: {e}")
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Successful logins, so a scrape every few seconds does not pay bcrypt's cost each time
/// (exporter-toolkit caches the same way). Keyed by user and a hash of the password given.
#[derive(Default)]
struct AuthCache {
    ok: parking_lot::Mutex<HashSet<(String, u64)>>,
}

const AUTH_CACHE_MAX: usize = 256;

fn password_key(password: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // A per-process random key: the cache never holds the password itself.
    static STATE: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let mut h = STATE.get_or_init(Default::default).build_hasher();
    h.write(password.as_bytes());
    h.finish()
}

/// What an `Authorization` header amounts to without running bcrypt.
enum Auth {
    /// A cached login.
    Allowed,
    /// Missing or malformed (says nothing about any user).
    Denied,
    /// A password to check against a hash: the user's, or the decoy for an unknown user
    /// (`key` is then `None`: never allowed, whatever bcrypt says).
    Verify {
        password: String,
        hash: String,
        key: Option<(String, u64)>,
    },
}

/// Splits a `Basic` authorization header into user and password.
pub fn basic_credentials(value: &str) -> Option<(String, String)> {
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn check(users: &Users, cache: &AuthCache, value: Option<&str>) -> Auth {
    let Some((user, password)) = value.and_then(basic_credentials) else {
        return Auth::Denied;
    };
    let Some(hash) = users.hashes.get(&user) else {
        return Auth::Verify {
            password,
            hash: users.decoy.clone(),
            key: None,
        };
    };
    let key = (user, password_key(&password));
    if cache.ok.lock().contains(&key) {
        return Auth::Allowed;
    }
    Auth::Verify {
        password,
        hash: hash.clone(),
        key: Some(key),
    }
}

/// bcrypt (deliberately slow: run it off the async workers); a success is cached.
fn verify(cache: &AuthCache, password: &str, hash: &str, key: Option<(String, u64)>) -> bool {
    let ok = bcrypt::verify(password, hash).unwrap_or(false);
    let Some(key) = key else {
        return false;
    };
    if !ok {
        return false;
    }
    let mut cached = cache.ok.lock();
    if cached.len() >= AUTH_CACHE_MAX {
        cached.clear();
    }
    cached.insert(key);
    true
}

#[cfg(test)]
fn authorized(users: &Users, cache: &AuthCache, value: Option<&str>) -> bool {
    match check(users, cache, value) {
        Auth::Allowed => true,
        Auth::Denied => false,
        Auth::Verify {
            password,
            hash,
            key,
        } => verify(cache, &password, &hash, key),
    }
}

/// When the response on a connection must be sent by; the connection's task cuts the
/// connection once it passes. Set when a scrape's response starts, cleared when its body is
/// done.
#[derive(Clone)]
struct Deadline(Arc<watch::Sender<Option<Instant>>>);

/// Clears the connection's deadline (if still its own) and frees the scrape slot when a
/// response's body is dropped: sent, or cut with its connection.
struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    deadline: Option<(Deadline, Instant)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((d, at)) = &self.deadline {
            d.0.send_if_modified(|cur| {
                let mine = *cur == Some(*at);
                if mine {
                    *cur = None;
                }
                mine
            });
        }
    }
}

fn unavailable(counters: &WebCounters, reason: &'static str, body: &'static str) -> Response {
    counters.refused(reason);
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        body,
    )
        .into_response()
}

/// Wraps the router with the scrape cap (outermost: checked before any credential), then
/// authentication, then the request timeout.
pub fn harden(router: Router, options: &WebOptions, counters: WebCounters) -> Router {
    let users = options.users.clone();
    let cache = Arc::new(AuthCache::default());
    let verifying = Arc::new(Semaphore::new(MAX_VERIFYING));
    let permits = Arc::new(Semaphore::new(options.max_requests.max(1)));
    let timeout = options.timeout;
    let c = counters.clone();
    let limit = middleware::from_fn(move |req: Request, next: Next| {
        let (permits, counters) = (permits.clone(), c.clone());
        async move {
            if PUBLIC_PATHS.contains(&req.uri().path()) {
                return next.run(req).await;
            }
            let Ok(permit) = permits.try_acquire_owned() else {
                return unavailable(&counters, "requests", "too many concurrent scrapes\n");
            };
            let deadline = req.extensions().get::<Deadline>().cloned().map(|d| {
                let at = Instant::now() + timeout;
                d.0.send_replace(Some(at));
                (d, at)
            });
            let slot = Slot {
                _permit: permit,
                deadline,
            };
            match tokio::time::timeout(timeout, next.run(req)).await {
                // The scrape holds its slot until its body is sent (or its connection is cut
                // at the deadline): a slow reader of a large exposition counts as a concurrent
                // scrape, for `timeout` at most.
                Ok(r) => {
                    let (parts, body) = r.into_parts();
                    let stream =
                        futures_util::StreamExt::map(body.into_data_stream(), move |chunk| {
                            let _held = &slot;
                            chunk
                        });
                    Response::from_parts(parts, Body::from_stream(stream))
                }
                Err(_) => unavailable(&counters, "timeout", "request timed out\n"),
            }
        }
    });
    let auth = middleware::from_fn(move |req: Request, next: Next| {
        let (users, cache, verifying, counters) = (
            users.clone(),
            cache.clone(),
            verifying.clone(),
            counters.clone(),
        );
        async move {
            if users.is_empty() || PUBLIC_PATHS.contains(&req.uri().path()) {
                return next.run(req).await;
            }
            let value = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            // A cached login is a lookup; only a new one pays bcrypt, on a blocking thread, at
            // most MAX_VERIFYING at a time.
            let ok = match check(&users, &cache, value.as_deref()) {
                Auth::Allowed => true,
                Auth::Denied => false,
                Auth::Verify {
                    password,
                    hash,
                    key,
                } => {
                    let Ok(permit) = verifying.try_acquire_owned() else {
                        return unavailable(
                            &counters,
                            "logins",
                            "too many logins being verified\n",
                        );
                    };
                    tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        verify(&cache, &password, &hash, key)
                    })
                    .await
                    .unwrap_or(false)
                }
            };
            if ok {
                next.run(req).await
            } else {
                counters.refused("unauthorized");
                Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .header(header::WWW_AUTHENTICATE, "Basic realm=\"sockscope\"")
                    .body(Body::from("unauthorized\n"))
                    .unwrap_or_else(|_| StatusCode::UNAUTHORIZED.into_response())
            }
        }
    });
    // Layers run outside in: the last added first.
    router.layer(auth).layer(limit)
}

/// Serves `router` on `listener`, over TLS when configured, until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: WebOptions,
    counters: WebCounters,
) {
    let router = harden(router, &options, counters.clone());
    let connections = Arc::new(Semaphore::new(options.max_connections.max(1)));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(open) = connections.clone().try_acquire_owned() else {
            // Closed at once: a client opening connections without end cannot starve the
            // agent of file descriptors, nor delay the scrapes that fit.
            counters.refused("connections");
            debug!(%peer, "too many open connections; closed");
            drop(stream);
            continue;
        };
        let (router, tls, timeout, counters) = (
            router.clone(),
            options.tls.clone(),
            options.timeout,
            counters.clone(),
        );
        tokio::spawn(async move {
            let _open = open;
            let (tx, rx) = watch::channel(None);
            let deadline = Deadline(Arc::new(tx));
            let service = tower::ServiceExt::map_request(
                router,
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(deadline.clone());
                    req
                },
            );
            let service = hyper_util::service::TowerToHyperService::new(service);
            let mut http = hyper::server::conn::http1::Builder::new();
            // Also bounds an idle keep-alive connection: hyper times the wait for the next
            // request's headers from when it starts waiting.
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(timeout);
            let result = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let conn =
                                http.serve_connection(hyper_util::rt::TokioIo::new(s), service);
                            until_deadline(conn, rx, &counters).await
                        }
                        Ok(Err(e)) => {
                            debug!(%peer, "TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
                None => {
                    let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    until_deadline(conn, rx, &counters).await
                }
            };
            if let Err(e) = result {
                debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

/// Drives a connection until it ends, or until the response deadline in `deadline` passes:
/// then the connection is dropped, which closes it and drops the response (and its slot).
async fn until_deadline<F>(
    conn: F,
    mut deadline: watch::Receiver<Option<Instant>>,
    counters: &WebCounters,
) -> std::result::Result<(), hyper::Error>
where
    F: std::future::Future<Output = std::result::Result<(), hyper::Error>>,
{
    tokio::pin!(conn);
    loop {
        let at = *deadline.borrow_and_update();
        tokio::select! {
            r = &mut conn => return r,
            changed = deadline.changed() => {
                if changed.is_err() {
                    // The sender lives in the service, which the connection owns: gone only
                    // with it. Wait for the connection alone.
                    return (&mut conn).await;
                }
            }
            _ = sleep_until(at) => {
                counters.refused("timeout");
                debug!("response not taken within the web timeout: connection cut");
                return Ok(());
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }

    #[test]
    fn basic_auth() {
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        let users = users(BTreeMap::from([("prom".to_string(), hash)])).expect("users");
        let cache = AuthCache::default();
        assert!(authorized(&users, &cache, Some(&b64("prom:s3cret"))));
        // Cached now, still exact.
        assert!(authorized(&users, &cache, Some(&b64("prom:s3cret"))));
        assert!(!authorized(&users, &cache, Some(&b64("prom:wrong"))));
        assert!(!authorized(&users, &cache, Some(&b64("other:s3cret"))));
        assert!(!authorized(&users, &cache, Some("Basic !!!")));
        assert!(!authorized(&users, &cache, Some("Bearer x")));
        assert!(!authorized(&users, &cache, None));
        // An unknown user is checked against the decoy, of the users' cost, and refused
        // even with the decoy's own password (which nobody knows).
        assert_eq!(
            users
                .decoy
                .parse::<bcrypt::HashParts>()
                .expect("decoy")
                .get_cost(),
            4
        );
        assert!(matches!(
            check(&users, &cache, Some(&b64("nobody:s3cret"))),
            Auth::Verify { key: None, .. }
        ));
    }

    /// An unknown user's refusal costs a bcrypt verification like a known user's wrong
    /// password: no timing difference tells which names exist.
    #[test]
    fn unknown_users_cost_the_same() {
        let hash = bcrypt::hash("s3cret", 9).expect("hash");
        let users = users(BTreeMap::from([("prom".to_string(), hash)])).expect("users");
        let cache = AuthCache::default();
        // Interleaved, so a loaded machine slows both alike.
        let (mut known, mut unknown) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..4 {
            for (user, total) in [("prom", &mut known), ("nobody", &mut unknown)] {
                let h = b64(&format!("{user}:wrong"));
                let t = std::time::Instant::now();
                assert!(!authorized(&users, &cache, Some(&h)));
                *total += t.elapsed();
            }
        }
        let ratio = unknown.as_secs_f64() / known.as_secs_f64();
        assert!(
            (0.33..3.0).contains(&ratio),
            "known {known:?} unknown {unknown:?}"
        );
    }

    #[tokio::test]
    async fn scrape_cap_and_timeout() {
        use tower::ServiceExt;
        let (release, wait) = tokio::sync::watch::channel(false);
        let slow = Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let mut wait = wait.clone();
                    async move {
                        let _ = wait.wait_for(|go| *go).await;
                        "m 1\n"
                    }
                }),
            )
            .route("/healthz", axum::routing::get(|| async { "ok\n" }));
        let options = WebOptions {
            tls: None,
            users: Arc::new(Users::default()),
            max_requests: 1,
            max_connections: 8,
            timeout: Duration::from_secs(30),
        };
        let app = harden(slow, &options, WebCounters::default());
        let get = |path: &str| {
            Request::builder()
                .uri(path)
                .body(Body::empty())
                .expect("request")
        };
        let first = tokio::spawn(app.clone().oneshot(get("/metrics")));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = app
            .clone()
            .oneshot(get("/metrics"))
            .await
            .expect("response");
        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
        // Other paths are not capped.
        let health = app
            .clone()
            .oneshot(get("/healthz"))
            .await
            .expect("response");
        assert_eq!(health.status(), StatusCode::OK);
        let _ = release.send(true);
        let first = first.await.expect("join").expect("response");
        assert_eq!(first.status(), StatusCode::OK);
        // The permit is held until the body is consumed.
        let third = app
            .clone()
            .oneshot(get("/metrics"))
            .await
            .expect("response");
        assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
        drop(first);
        let fourth = app
            .clone()
            .oneshot(get("/metrics"))
            .await
            .expect("response");
        assert_eq!(fourth.status(), StatusCode::OK);

        // A request slower than the timeout is answered 503.
        let (_never, wait) = tokio::sync::watch::channel(false);
        let stuck = Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let mut wait = wait.clone();
                async move {
                    let _ = wait.wait_for(|go| *go).await;
                    "never\n"
                }
            }),
        );
        let app = harden(
            stuck,
            &WebOptions {
                timeout: Duration::from_millis(100),
                max_requests: 4,
                ..options
            },
            WebCounters::default(),
        );
        let r = app.oneshot(get("/metrics")).await.expect("response");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn bad_web_configs() {
        let dir = std::env::temp_dir().join(format!("sockscope-web-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let cases = [
            (
                "basic_auth_users: {prom: plaintext}\n",
                "basic_auth_users.prom: not a bcrypt hash",
            ),
            (
                "tls_server_config: {cert_file: /nonexistent.crt, key_file: /nonexistent.key}\n",
                "tls_server_config.cert_file /nonexistent.crt",
            ),
            (
                "tls_server_config: {cert_file: a}\n",
                "missing field `key_file`",
            ),
            ("basic_auth: {}\n", "unknown field `basic_auth`"),
        ];
        for (i, (yaml, want)) in cases.iter().enumerate() {
            let p = dir.join(format!("{i}.yaml"));
            std::fs::write(&p, yaml).expect("write");
            let err = load(&p, 4, 8, Duration::from_secs(1))
                .err()
                .expect(yaml)
                .to_string();
            assert!(err.contains(want), "{yaml}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
