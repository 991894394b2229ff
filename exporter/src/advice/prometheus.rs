//! Instant queries against the Prometheus HTTP API (`POST /api/v1/query`, form-encoded so a
//! long query is never cut by a URL length limit).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use serde::Deserialize;

use super::{Error, Result};

/// Largest response read: a week of a big cluster's edges is a few MB.
const MAX_RESPONSE: usize = 256 << 20;

/// One series of an instant vector: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Labels (without `__name__`).
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// A label's value, empty when absent (as PromQL treats it).
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// A Prometheus API client.
pub struct Prometheus {
    base: String,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<bytes::Bytes>>,
    timeout: Duration,
}

#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: String,
    #[serde(default)]
    error: String,
    /// Partial results (a store down, a limit hit: Thanos, Mimir, Cortex).
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorItem {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

impl Prometheus {
    /// A client of the API at `base` (`http://prometheus:9090`, a path prefix allowed).
    pub fn new(base: &str, timeout: Duration) -> Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Prometheus {
                url: base,
                message: "not an http:// or https:// URL".into(),
            });
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Prometheus {
            url: base.clone(),
            message: format!("TLS: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Prometheus {
            base,
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector),
            timeout,
        })
    }

    /// Evaluates `query` at `time` (Unix seconds); the instant vector it returns.
    pub async fn query(&self, query: &str, time: f64) -> Result<Vec<Sample>> {
        let url = format!("{}/api/v1/query", self.base);
        let fail = |message: String| Error::Prometheus {
            url: url.clone(),
            message,
        };
        let form = format!(
            "query={}&time={time:.3}",
            percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC)
        );
        let request = hyper::Request::post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(Full::new(bytes::Bytes::from(form)))
            .map_err(|e| fail(e.to_string()))?;
        let work = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| fail(crate::report::error_chain(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| fail(format!("reading the response: {e}")))?
                .to_bytes();
            Ok::<_, Error>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| fail(format!("no answer within {:?}", self.timeout)))??;
        let parsed: Response = serde_json::from_slice(&body).map_err(|e| {
            fail(format!(
                "HTTP {status}, not a Prometheus API response ({e}): {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        })?;
        if !parsed.warnings.is_empty() {
            // A partial answer would leave edges out, and the policies deny them.
            return Err(fail(format!(
                "partial result ({}); query: {query}",
                parsed.warnings.join("; ")
            )));
        }
        if parsed.status != "success" {
            return Err(fail(format!(
                "{}: {} (query: {query})",
                parsed.error_type, parsed.error
            )));
        }
        let data = parsed
            .data
            .ok_or_else(|| fail("a success without data".into()))?;
        if data.result_type != "vector" {
            return Err(fail(format!(
                "expected a vector, got {} (query: {query})",
                data.result_type
            )));
        }
        let items: Vec<VectorItem> =
            serde_json::from_value(data.result).map_err(|e| fail(e.to_string()))?;
        items
            .into_iter()
            .map(|mut i| {
                i.metric.remove("__name__");
                let value = match i.value.1.as_str() {
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    v => v
                        .parse()
                        .map_err(|_| fail(format!("{v:?} is not a number")))?,
                };
                Ok(Sample {
                    labels: i.metric,
                    value,
                })
            })
            .collect()
    }
}

/// A PromQL string literal.
pub fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}
