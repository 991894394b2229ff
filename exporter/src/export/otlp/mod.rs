//! OTLP metrics push: what /metrics shows, sent to a collector over gRPC or HTTP/protobuf on
//! its own schedule.
//!
//! Each export reads the exposition the last drain published (so it never touches the kernel
//! maps or waits for a drain), converts it, and sends one request with a timeout. A failure is
//! retried with backoff within the interval, then given up until the next one, which carries
//! fresh totals (cumulative) or the whole gap since the last delivery (delta): memory holds one
//! request at most, however long the collector is away.
//!
//! Settings follow the OTel SDK environment variables (OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT,
//! _PROTOCOL, _HEADERS, _TIMEOUT, OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE,
//! OTEL_METRIC_EXPORT_INTERVAL, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES); sockscope's own
//! flags and config file win over them.

pub mod encode;
pub mod snapshot;

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use opentelemetry_proto::tonic::{
    collector::metrics::v1::{
        ExportMetricsServiceRequest, metrics_service_client::MetricsServiceClient,
    },
    common::v1::KeyValue,
};
use prost::Message;
use tracing::{debug, info, warn};

pub use encode::Temporality;
use encode::{Encoder, kv};

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
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len() + 1
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "OTLP endpoint {endpoint}: https is not supported yet; send to a node-local collector over http"
                ));
            }
            _ => {
                return Err(format!(
                    "OTLP endpoint {endpoint:?}: write it like http://collector:4317"
                ));
            }
        }
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

enum Failure {
    /// Connection refused, reset, 429/502/503/504, gRPC UNAVAILABLE...: worth retrying.
    Unavailable(String),
    /// The collector refused the data (4xx, gRPC INVALID_ARGUMENT...): retrying won't help.
    Rejected(String),
}

/// Sends requests to one collector.
enum Transport {
    Grpc(MetricsServiceClient<tonic::transport::Channel>),
    Http(
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            http_body_util::Full<bytes::Bytes>,
        >,
    ),
}

impl Transport {
    fn new(o: &Options) -> Result<Transport, String> {
        Ok(match o.protocol {
            Protocol::Grpc => {
                let channel = tonic::transport::Channel::from_shared(o.endpoint.clone())
                    .map_err(|e| format!("OTLP endpoint {}: {e}", o.endpoint))?
                    .connect_timeout(o.timeout)
                    .timeout(o.timeout)
                    .connect_lazy();
                Transport::Grpc(MetricsServiceClient::new(channel))
            }
            Protocol::HttpProtobuf => {
                let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
                connector.set_connect_timeout(Some(o.timeout));
                Transport::Http(
                    hyper_util::client::legacy::Client::builder(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .build(connector),
                )
            }
        })
    }

    async fn send(&mut self, o: &Options, req: ExportMetricsServiceRequest) -> Result<(), Failure> {
        match self {
            Transport::Grpc(client) => {
                let mut request = tonic::Request::new(req);
                for (k, v) in &o.headers {
                    if let (Ok(k), Ok(v)) = (
                        tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()),
                        v.parse(),
                    ) {
                        request.metadata_mut().insert(k, v);
                    }
                }
                match client.export(request).await {
                    Ok(resp) => {
                        if let Some(p) = resp.into_inner().partial_success
                            && p.rejected_data_points > 0
                        {
                            warn!(
                                rejected = p.rejected_data_points,
                                "OTLP collector rejected some points: {}", p.error_message
                            );
                        }
                        Ok(())
                    }
                    Err(s) => match s.code() {
                        tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::ResourceExhausted
                        | tonic::Code::Aborted
                        | tonic::Code::Cancelled
                        | tonic::Code::Unknown
                        | tonic::Code::Internal => Err(Failure::Unavailable(s.to_string())),
                        _ => Err(Failure::Rejected(s.to_string())),
                    },
                }
            }
            Transport::Http(client) => {
                let mut b = hyper::Request::post(&o.endpoint)
                    .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
                    .header(
                        hyper::header::USER_AGENT,
                        concat!("sockscope/", env!("CARGO_PKG_VERSION")),
                    );
                for (k, v) in &o.headers {
                    b = b.header(k.as_str(), v.as_str());
                }
                let body = http_body_util::Full::new(bytes::Bytes::from(req.encode_to_vec()));
                let request = b.body(body).map_err(|e| Failure::Rejected(e.to_string()))?;
                match client.request(request).await {
                    Ok(resp) if resp.status().is_success() => Ok(()),
                    Ok(resp) => {
                        let code = resp.status().as_u16();
                        let msg = format!("HTTP {code}");
                        if matches!(code, 429 | 502 | 503 | 504) {
                            Err(Failure::Unavailable(msg))
                        } else {
                            Err(Failure::Rejected(msg))
                        }
                    }
                    Err(e) => Err(Failure::Unavailable(e.to_string())),
                }
            }
        }
    }
}

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
    info!(endpoint = %options.endpoint, protocol = ?options.protocol, interval = ?options.interval, temporality = ?options.temporality, "exporting metrics over OTLP");
    let resource: Vec<KeyValue> = options.resource.iter().map(|(k, v)| kv(k, v)).collect();
    let mut encoder = Encoder::new(resource, options.temporality, unix_ns(started));
    let mut ticks = tokio::time::interval(options.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut quiet_since: Option<Instant> = None;
    loop {
        ticks.tick().await;
        let tick = Instant::now();
        let exposition = shared.current();
        let families = snapshot::parse(&exposition.prometheus);
        let mut backoff = Duration::from_secs(1);
        loop {
            let mut pending = encoder.encode(&families, unix_ns(SystemTime::now()));
            let request = std::mem::take(&mut pending.request);
            let size = request.encoded_len() as u64;
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
                Ok(Err(Failure::Unavailable(e))) => (0, e),
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
            // Rejections are not retried; others until the next export is due.
            if reason.0 == 2 || tick.elapsed() + backoff >= options.interval {
                break;
            }
            tokio::time::sleep(backoff).await;
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
