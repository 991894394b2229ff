//! OTLP metrics push: what /metrics shows, sent to a collector over gRPC or HTTP/protobuf on
//! its own schedule.
//!
//! Each export reads the snapshot the last drain published (so it never touches the kernel
//! maps or waits for a drain), encodes it, and sends one request with a timeout. A failure is
//! retried with backoff within the interval, then given up until the next one, which carries
//! fresh totals (cumulative) or the whole gap since the last delivery (delta): memory holds one
//! request at most, however long the collector is away.
//!
//! A collector that answers "retry" with a throttling hint (HTTP `Retry-After`, gRPC
//! `RetryInfo`) is not sent to again before the hint has passed, within the interval or across
//! it.
//!
//! Settings follow the OTel SDK environment variables (OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT,
//! _PROTOCOL, _HEADERS, _TIMEOUT, _COMPRESSION, _CERTIFICATE, _CLIENT_CERTIFICATE, _CLIENT_KEY,
//! OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE, OTEL_METRIC_EXPORT_INTERVAL,
//! OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES); sockscope's own flags and config file win over
//! them.

pub mod encode;
pub mod tls;
pub mod transport;

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use tracing::{debug, info, warn};

pub use encode::Temporality;
use encode::{Encoder, kv};
pub use tls::{Tls, TlsFiles};
use transport::{Failure, Transport};

use super::prometheus::Shared;

/// Wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
pub enum Protocol {
    /// OTLP/gRPC (default port 4317).
    #[value(name = "grpc")]
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (default port 4318, path /v1/metrics).
    #[value(name = "http/protobuf")]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Request body compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Uncompressed bodies.
    #[default]
    None,
    /// gzip (gRPC `grpc-encoding: gzip`, HTTP `Content-Encoding: gzip`).
    Gzip,
}

/// Everything the exporter needs, resolved from flags, config and OTEL_* variables.
#[derive(Debug, Clone)]
pub struct Options {
    /// Full URL requests go to (for HTTP, including /v1/metrics).
    pub endpoint: String,
    /// gRPC or HTTP/protobuf.
    pub protocol: Protocol,
    /// Time between exports.
    pub interval: Duration,
    /// Longest time one export may take.
    pub timeout: Duration,
    /// Extra request headers (authentication, tenant).
    pub headers: Vec<(String, String)>,
    /// Cumulative or delta.
    pub temporality: Temporality,
    /// Resource attributes.
    pub resource: Vec<(String, String)>,
    /// Body compression.
    pub compression: Compression,
    /// TLS material, for an `https://` endpoint (checked when resolved).
    pub tls: Option<Tls>,
}

/// What sockscope's own settings say; `None` leaves the OTEL_* variable or default.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// --otlp-endpoint.
    pub endpoint: Option<String>,
    /// --otlp-protocol.
    pub protocol: Option<Protocol>,
    /// --otlp-interval.
    pub interval: Option<Duration>,
    /// --otlp-timeout.
    pub timeout: Option<Duration>,
    /// --otlp-temporality.
    pub temporality: Option<Temporality>,
    /// Config file `otlp.headers`.
    pub headers: Vec<(String, String)>,
    /// --otlp-compression.
    pub compression: Option<Compression>,
    /// --otlp-certificate, --otlp-client-certificate, --otlp-client-key (each overrides its
    /// OTEL_* variable alone).
    pub tls: TlsFiles,
    /// k8s.node.name.
    pub node_name: Option<String>,
    /// k8s.cluster.name.
    pub cluster_name: Option<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `k=v,k2=v2` with percent-encoded values (W3C baggage style, as the OTel spec says).
pub fn pairs(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), percent_decode(v.trim())))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// Decodes `%XX` escapes; malformed ones are kept as they are.
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The signal-specific variable (OTEL_EXPORTER_OTLP_METRICS_<name>), else the general one.
fn otlp_env(name: &str) -> Option<String> {
    env(&format!("OTEL_EXPORTER_OTLP_METRICS_{name}"))
        .or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{name}")))
}

fn millis(name: &str) -> Result<Option<Duration>, String> {
    env(name)
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("{name}={v}: not a number of milliseconds"))
        })
        .transpose()
}

impl Options {
    /// `None` when OTLP is off (no endpoint from the flag, config or OTEL_* variables).
    pub fn resolve(s: &Settings) -> Result<Option<Options>, String> {
        let protocol = match s.protocol {
            Some(p) => p,
            None => match env("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
                .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
                .as_deref()
            {
                None | Some("http/protobuf") => Protocol::HttpProtobuf,
                Some("grpc") => Protocol::Grpc,
                Some(other) => {
                    return Err(format!(
                        "OTEL_EXPORTER_OTLP_PROTOCOL={other}: sockscope speaks grpc and http/protobuf"
                    ));
                }
            },
        };
        // A signal-specific URL is used as is; a base URL gets /v1/metrics for HTTP.
        let endpoint = match (
            &s.endpoint,
            env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
            env("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(e), _, _) => base_or_full(e, protocol),
            (None, Some(e), _) => e,
            (None, None, Some(e)) => match protocol {
                Protocol::HttpProtobuf => format!("{}/v1/metrics", e.trim_end_matches('/')),
                Protocol::Grpc => e,
            },
            (None, None, None) => return Ok(None),
        };
        let uri: hyper::Uri = endpoint
            .parse()
            .map_err(|e| format!("OTLP endpoint {endpoint:?}: {e}"))?;
        // Each of sockscope's settings overrides its own OTEL_* variable alone.
        let file = |own: &Option<PathBuf>, var: &str| {
            own.clone().or_else(|| otlp_env(var).map(PathBuf::from))
        };
        let files = TlsFiles {
            certificate: file(&s.tls.certificate, "CERTIFICATE"),
            client_certificate: file(&s.tls.client_certificate, "CLIENT_CERTIFICATE"),
            client_key: file(&s.tls.client_key, "CLIENT_KEY"),
        };
        let tls = match uri.scheme_str() {
            Some("http") if files.any() => {
                // Certificates named for a plain-text endpoint would be silently unused:
                // almost certainly an endpoint written with the wrong scheme.
                return Err(format!(
                    "OTLP endpoint {endpoint}: TLS certificates are set but the endpoint is http://; write https://"
                ));
            }
            Some("http") => None,
            Some("https") => Some(Tls::load(&files).map_err(|e| e.to_string())?),
            _ => {
                return Err(format!(
                    "OTLP endpoint {endpoint:?}: write it like http://collector:4317 or https://collector:4317"
                ));
            }
        };
        let compression = match s.compression {
            Some(c) => c,
            None => match otlp_env("COMPRESSION")
                .map(|v| v.trim().to_ascii_lowercase())
                .as_deref()
            {
                None | Some("none") => Compression::None,
                Some("gzip") => Compression::Gzip,
                Some(other) => {
                    return Err(format!(
                        "OTEL_EXPORTER_OTLP_COMPRESSION={other}: gzip or none"
                    ));
                }
            },
        };
        let interval = match s.interval {
            Some(d) => d,
            None => millis("OTEL_METRIC_EXPORT_INTERVAL")?.unwrap_or(Duration::from_secs(60)),
        };
        let timeout = match s.timeout {
            Some(d) => d,
            None => millis("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT")?
                .or(millis("OTEL_EXPORTER_OTLP_TIMEOUT")?)
                .unwrap_or(Duration::from_secs(10)),
        };
        if interval.is_zero() || timeout.is_zero() {
            return Err("OTLP interval and timeout must be above zero".into());
        }
        let temporality = match s.temporality {
            Some(t) => t,
            None => match env("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE")
                .map(|v| v.to_ascii_lowercase())
                .as_deref()
            {
                None | Some("cumulative") => Temporality::Cumulative,
                Some("delta") | Some("lowmemory") => Temporality::Delta,
                Some(other) => {
                    return Err(format!(
                        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE={other}: cumulative, delta or lowmemory"
                    ));
                }
            },
        };
        let mut headers: Vec<(String, String)> = env("OTEL_EXPORTER_OTLP_HEADERS")
            .map(|h| pairs(&h))
            .unwrap_or_default();
        headers.extend(
            env("OTEL_EXPORTER_OTLP_METRICS_HEADERS")
                .map(|h| pairs(&h))
                .unwrap_or_default(),
        );
        headers.extend(s.headers.iter().cloned());
        for (k, _) in &headers {
            if hyper::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err(format!("OTLP header {k:?}: not a valid header name"));
            }
        }
        // Resource: OTEL_RESOURCE_ATTRIBUTES, then what sockscope knows, OTEL_SERVICE_NAME last.
        let mut resource = vec![("service.name".to_string(), "sockscope".to_string())];
        let mut set = |k: &str, v: String| {
            resource.retain(|(rk, _)| rk != k);
            resource.push((k.to_string(), v));
        };
        set("service.version", env!("CARGO_PKG_VERSION").to_string());
        if let Some(h) = hostname() {
            set("host.name", h);
        }
        for (k, v) in env("OTEL_RESOURCE_ATTRIBUTES")
            .map(|a| pairs(&a))
            .unwrap_or_default()
        {
            set(&k, v);
        }
        if let Some(n) = &s.node_name {
            set("k8s.node.name", n.clone());
        }
        if let Some(c) = &s.cluster_name {
            set("k8s.cluster.name", c.clone());
        }
        if let Some(n) = env("OTEL_SERVICE_NAME") {
            set("service.name", n);
        }
        Ok(Some(Options {
            endpoint,
            protocol,
            interval,
            timeout,
            headers,
            temporality,
            resource,
            compression,
            tls,
        }))
    }
}

/// sockscope's own endpoint setting: a bare `http://host:port` gets /v1/metrics for HTTP.
fn base_or_full(e: &str, protocol: Protocol) -> String {
    let path_given = e
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/').contains('/'))
        .unwrap_or(false);
    match protocol {
        Protocol::HttpProtobuf if !path_given => format!("{}/v1/metrics", e.trim_end_matches('/')),
        _ => e.to_string(),
    }
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

// The counters live with the other self-metrics; this exporter counts into them.
pub use crate::series::agent::{OTLP_FAILURE_REASONS as FAILURE_REASONS, OtlpStats as Stats};

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Runs the exporter until the process ends. `started`: when the agent started.
pub async fn run(options: Options, shared: Arc<Shared>, stats: Arc<Stats>, started: SystemTime) {
    let mut transport = match Transport::new(&options) {
        Ok(t) => t,
        Err(e) => {
            warn!("OTLP export off: {e}");
            return;
        }
    };
    info!(endpoint = %options.endpoint, protocol = ?options.protocol, interval = ?options.interval, temporality = ?options.temporality, compression = ?options.compression, tls = ?options.tls, "exporting metrics over OTLP");
    let resource: Vec<KeyValue> = options.resource.iter().map(|(k, v)| kv(k, v)).collect();
    let mut encoder = Encoder::new(resource, options.temporality, unix_ns(started));
    let mut ticks = tokio::time::interval(options.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut quiet_since: Option<Instant> = None;
    // The collector's throttling hint: nothing is sent before it.
    let mut not_before: Option<Instant> = None;
    loop {
        ticks.tick().await;
        let tick = Instant::now();
        if let Some(t) = not_before {
            if tick < t {
                debug!(
                    "OTLP export skipped: the collector asked to wait {:?} more",
                    t - tick
                );
                continue;
            }
            not_before = None;
        }
        let snapshot = shared.current().snapshot.clone();
        let mut backoff = Duration::from_secs(1);
        loop {
            let mut retry_after: Option<Duration> = None;
            let mut pending = encoder.encode(&snapshot, unix_ns(SystemTime::now()));
            let request = std::mem::take(&mut pending.body);
            let size = request.len() as u64;
            let begin = Instant::now();
            let outcome =
                tokio::time::timeout(options.timeout, transport.send(&options, request)).await;
            // The request held tens of bytes per attribute, all freed now: give them back.
            crate::release_freed_memory();
            let reason = match outcome {
                Ok(Ok(())) => {
                    stats.exports.fetch_add(1, Ordering::Relaxed);
                    stats
                        .last_duration_us
                        .store(begin.elapsed().as_micros() as u64, Ordering::Relaxed);
                    stats.last_bytes.store(size, Ordering::Relaxed);
                    encoder.delivered(pending);
                    if quiet_since.take().is_some() {
                        info!("OTLP export works again");
                    }
                    break;
                }
                Ok(Err(Failure::Unavailable(e, after))) => {
                    retry_after = after;
                    (0, e)
                }
                Err(_) => (1, format!("no answer within {:?}", options.timeout)),
                Ok(Err(Failure::Rejected(e))) => (2, e),
            };
            stats.failures[reason.0].fetch_add(1, Ordering::Relaxed);
            // One warning per outage, not one per attempt.
            if quiet_since.is_none() {
                warn!(endpoint = %options.endpoint, "OTLP export failed ({}): {}; retrying with backoff", FAILURE_REASONS[reason.0], reason.1);
                quiet_since = Some(Instant::now());
            } else {
                debug!("OTLP export failed again: {}", reason.1);
            }
            // Rejections are not retried; others until the next export is due, no sooner than
            // the collector's hint says.
            let wait = retry_after.map_or(backoff, |a| a.max(backoff));
            if reason.0 == 2 || tick.elapsed() + wait >= options.interval {
                if let Some(a) = retry_after {
                    not_before = Some(Instant::now() + a);
                }
                break;
            }
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(options.interval);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_pairs() {
        assert_eq!(
            base_or_full("http://c:4318", Protocol::HttpProtobuf),
            "http://c:4318/v1/metrics"
        );
        assert_eq!(
            base_or_full("http://c:4318/custom/path", Protocol::HttpProtobuf),
            "http://c:4318/custom/path"
        );
        assert_eq!(
            base_or_full("http://c:4317", Protocol::Grpc),
            "http://c:4317"
        );
        assert_eq!(
            pairs("api-key=a%3Db, tenant = t1,bad"),
            vec![
                ("api-key".to_string(), "a=b".to_string()),
                ("tenant".to_string(), "t1".to_string())
            ]
        );
    }

    #[test]
    fn resolves_from_settings() {
        let o = Options::resolve(&Settings {
            endpoint: Some("http://127.0.0.1:4318".into()),
            protocol: Some(Protocol::HttpProtobuf),
            interval: Some(Duration::from_secs(5)),
            node_name: Some("n1".into()),
            cluster_name: Some("prod".into()),
            ..Settings::default()
        })
        .expect("valid")
        .expect("on");
        assert_eq!(o.endpoint, "http://127.0.0.1:4318/v1/metrics");
        assert_eq!(o.interval, Duration::from_secs(5));
        assert!(
            o.resource
                .iter()
                .any(|(k, v)| k == "k8s.cluster.name" && v == "prod")
        );
        assert!(
            o.resource
                .iter()
                .any(|(k, v)| k == "k8s.node.name" && v == "n1")
        );
        assert!(o.resource.iter().any(|(k, _)| k == "host.name"));
        assert!(
            Options::resolve(&Settings {
                endpoint: Some("collector:4317".into()),
                ..Settings::default()
            })
            .is_err()
        );
    }
}
