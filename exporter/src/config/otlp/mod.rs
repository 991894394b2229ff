//! OTLP export settings: sockscope's flags and config file, then the OTel SDK environment
//! variables (OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT, _PROTOCOL, _HEADERS, _TIMEOUT,
//! _COMPRESSION, _CERTIFICATE, _CLIENT_CERTIFICATE, _CLIENT_KEY,
//! OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE, OTEL_METRIC_EXPORT_INTERVAL,
//! OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), resolved and checked once, here: the exporter
//! gets [`Options`] that work, `--check-config` the same one-line errors.

pub mod tls;

use std::{path::PathBuf, time::Duration};

pub use tls::{Tls, TlsFiles};

/// How counters and histograms are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Temporality {
    /// Totals since the agent started (the default, like /metrics).
    Cumulative,
    /// Increase since the previous successful export.
    Delta,
}

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
