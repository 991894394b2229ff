//! The HTTP endpoint, hardened the way Prometheus exporters are (exporter-toolkit's web
//! config): optional TLS and basic auth from a web config file, a cap on concurrent scrapes
//! (503 beyond it), and timeouts for slow clients and slow requests.
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
    sync::{Arc, Mutex},
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
use tokio::{net::TcpListener, sync::Semaphore};
use tracing::{debug, warn};

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
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

/// What the endpoint enforces.
#[derive(Clone)]
pub struct WebOptions {
    /// TLS, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// user -> bcrypt hash; empty: no authentication.
    pub users: Arc<BTreeMap<String, String>>,
    /// Concurrent /metrics requests; more get 503.
    pub max_requests: usize,
    /// Longest time for reading a request's headers, and for answering it.
    pub timeout: Duration,
}

/// Reads and checks a web config file: certificates load, hashes are bcrypt.
pub fn load(path: &Path, max_requests: usize, timeout: Duration) -> Result<WebOptions> {
    let err = |message: String| Error::Config {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let de = serde_norway::Deserializer::from_str(&text);
    let file: File = serde_path_to_error::deserialize(de).map_err(|e| {
        err(format!(
            "{}: {}",
            e.path(),
            e.inner().to_string().replace('\n', " ")
        ))
    })?;
    for (user, hash) in &file.basic_auth_users {
        if hash.parse::<bcrypt::HashParts>().is_err() {
            return Err(err(format!(
                "basic_auth_users.{user}: not a bcrypt hash (make one with `htpasswd -nBC 10 {user}`)"
            )));
        }
    }
    let tls = match file.tls_server_config {
        Some(t) => Some(acceptor(&t).map_err(err)?),
        None => None,
    };
    Ok(WebOptions {
        tls,
        users: Arc::new(file.basic_auth_users),
        max_requests,
        timeout,
    })
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
    ok: Mutex<HashSet<(String, u64)>>,
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
    /// Missing, malformed, or an unknown user.
    Denied,
    /// A known user whose password must be checked against its hash.
    Verify {
        password: String,
        hash: String,
        key: (String, u64),
    },
}

fn check(users: &BTreeMap<String, String>, cache: &AuthCache, value: Option<&str>) -> Auth {
    let Some(encoded) = value.and_then(|v| v.strip_prefix("Basic ")) else {
        return Auth::Denied;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return Auth::Denied;
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return Auth::Denied;
    };
    let Some((user, password)) = text.split_once(':') else {
        return Auth::Denied;
    };
    let Some(hash) = users.get(user) else {
        return Auth::Denied;
    };
    let key = (user.to_string(), password_key(password));
    if crate::lock(&cache.ok).contains(&key) {
        return Auth::Allowed;
    }
    Auth::Verify {
        password: password.to_string(),
        hash: hash.clone(),
        key,
    }
}

/// bcrypt (deliberately slow: run it off the async workers); a success is cached.
fn verify(cache: &AuthCache, password: &str, hash: &str, key: (String, u64)) -> bool {
    if !bcrypt::verify(password, hash).unwrap_or(false) {
        return false;
    }
    let mut ok = crate::lock(&cache.ok);
    if ok.len() >= AUTH_CACHE_MAX {
        ok.clear();
    }
    ok.insert(key);
    true
}

#[cfg(test)]
fn authorized(users: &BTreeMap<String, String>, cache: &AuthCache, value: Option<&str>) -> bool {
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

/// Wraps the router with authentication, the scrape cap and the request timeout.
pub fn harden(router: Router, options: &WebOptions) -> Router {
    let users = options.users.clone();
    let cache = Arc::new(AuthCache::default());
    let permits = Arc::new(Semaphore::new(options.max_requests.max(1)));
    let timeout = options.timeout;
    let limit = middleware::from_fn(move |req: Request, next: Next| {
        let permits = permits.clone();
        async move {
            if req.uri().path() != "/metrics" {
                return next.run(req).await;
            }
            let Ok(permit) = permits.try_acquire_owned() else {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many concurrent scrapes\n",
                )
                    .into_response();
            };
            match tokio::time::timeout(timeout, next.run(req)).await {
                // The scrape holds its permit until its body is sent: a slow reader of a large
                // exposition counts as a concurrent scrape.
                Ok(r) => {
                    let (parts, body) = r.into_parts();
                    let stream =
                        futures_util::StreamExt::map(body.into_data_stream(), move |chunk| {
                            let _held = &permit;
                            chunk
                        });
                    Response::from_parts(parts, Body::from_stream(stream))
                }
                Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "request timed out\n").into_response(),
            }
        }
    });
    let auth = middleware::from_fn(move |req: Request, next: Next| {
        let (users, cache) = (users.clone(), cache.clone());
        async move {
            if users.is_empty() {
                return next.run(req).await;
            }
            let value = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            // A cached login is a lookup; only a new one pays bcrypt, on a blocking thread.
            let ok = match check(&users, &cache, value.as_deref()) {
                Auth::Allowed => true,
                Auth::Denied => false,
                Auth::Verify {
                    password,
                    hash,
                    key,
                } => tokio::task::spawn_blocking(move || verify(&cache, &password, &hash, key))
                    .await
                    .unwrap_or(false),
            };
            if ok {
                next.run(req).await
            } else {
                Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .header(header::WWW_AUTHENTICATE, "Basic realm=\"sockscope\"")
                    .body(Body::from("unauthorized\n"))
                    .unwrap_or_else(|_| StatusCode::UNAUTHORIZED.into_response())
            }
        }
    });
    // Layers run outside in: authentication first, then the cap.
    router.layer(limit).layer(auth)
}

/// Serves `router` on `listener`, over TLS when configured, until the task is dropped.
pub async fn serve(listener: TcpListener, router: Router, options: WebOptions) {
    let router = harden(router, &options);
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
        let router = router.clone();
        let tls = options.tls.clone();
        let timeout = options.timeout;
        tokio::spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(router);
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(timeout);
            let result = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            http.serve_connection(hyper_util::rt::TokioIo::new(s), service)
                                .await
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
                    http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = result {
                debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth() {
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        let users = BTreeMap::from([("prom".to_string(), hash)]);
        let cache = AuthCache::default();
        let b64 = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert!(authorized(&users, &cache, Some(&b64("prom:s3cret"))));
        // Cached now, still exact.
        assert!(authorized(&users, &cache, Some(&b64("prom:s3cret"))));
        assert!(!authorized(&users, &cache, Some(&b64("prom:wrong"))));
        assert!(!authorized(&users, &cache, Some(&b64("other:s3cret"))));
        assert!(!authorized(&users, &cache, Some("Basic !!!")));
        assert!(!authorized(&users, &cache, Some("Bearer x")));
        assert!(!authorized(&users, &cache, None));
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
            users: Arc::new(BTreeMap::new()),
            max_requests: 1,
            timeout: Duration::from_secs(30),
        };
        let app = harden(slow, &options);
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
            let err = load(&p, 4, Duration::from_secs(1))
                .err()
                .expect(yaml)
                .to_string();
            assert!(err.contains(want), "{yaml}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
