//! Sending one OTLP request: gRPC (tonic) or HTTP/protobuf (hyper), plain or TLS, gzip or not,
//! and what a failure says about retrying (the OTLP spec's "retryable" codes and the
//! collector's throttling hint: HTTP `Retry-After`, gRPC `RetryInfo`).

use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use tonic::{GrpcMethod, codec::CompressionEncoding, codegen::http::uri::PathAndQuery};
use tracing::warn;

use super::{Compression, Options, Protocol};

/// The longest wait a collector's throttling hint may impose: a buggy or hostile value must
/// not silence the exporter for hours (the failure is counted, and the next attempt comes).
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

const SERVICE: &str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// A request already encoded (by [`super::encode`]), sent as it is: tonic's codec takes any
/// prost message, and this one writes its bytes.
#[derive(Debug, Default, Clone)]
struct Encoded(bytes::Bytes);

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Never decoded (it is only sent); skip like an unknown field.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Why a request did not get through.
pub enum Failure {
    /// Connection refused or reset, 429/502/503/504, gRPC UNAVAILABLE...: worth retrying,
    /// after the collector's hint if it gave one.
    Unavailable(String, Option<Duration>),
    /// The collector refused the data (other 4xx, gRPC INVALID_ARGUMENT...): retrying won't
    /// help.
    Rejected(String),
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

/// Sends requests to one collector.
pub enum Transport {
    /// OTLP/gRPC.
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
    /// OTLP/HTTP with protobuf bodies.
    Http(HttpClient),
}

impl Transport {
    /// The client for `o`'s endpoint; connects lazily, at the first export.
    pub fn new(o: &Options) -> Result<Transport, String> {
        Ok(match o.protocol {
            Protocol::Grpc => {
                let mut endpoint = tonic::transport::Channel::from_shared(o.endpoint.clone())
                    .map_err(|e| format!("OTLP endpoint {}: {e}", o.endpoint))?
                    .connect_timeout(o.timeout)
                    .timeout(o.timeout);
                if let Some(tls) = &o.tls {
                    let mut c = tonic::transport::ClientTlsConfig::new().with_native_roots();
                    if let Some(ca) = &tls.ca_pem {
                        c = c.ca_certificate(tonic::transport::Certificate::from_pem(ca));
                    }
                    if let Some((cert, key)) = &tls.identity_pem {
                        c = c.identity(tonic::transport::Identity::from_pem(cert, key));
                    }
                    endpoint = endpoint
                        .tls_config(c)
                        .map_err(|e| format!("OTLP endpoint {}: TLS: {e}", o.endpoint))?;
                }
                let mut client = tonic::client::Grpc::new(endpoint.connect_lazy());
                if o.compression == Compression::Gzip {
                    client = client.send_compressed(CompressionEncoding::Gzip);
                }
                Transport::Grpc(client)
            }
            Protocol::HttpProtobuf => {
                let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
                http.set_connect_timeout(Some(o.timeout));
                // Lets the TLS layer see https:// URLs; it still refuses nothing else.
                http.enforce_http(false);
                let tls = match &o.tls {
                    Some(t) => (*t.http).clone(),
                    // Never used: an http:// endpoint is never upgraded. Empty roots so that
                    // nothing is read from the system for it.
                    None => rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("OTLP TLS: {e}"))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
                };
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http);
                Transport::Http(
                    hyper_util::client::legacy::Client::builder(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .build(connector),
                )
            }
        })
    }

    /// Sends `body` (an encoded `ExportMetricsServiceRequest`); `Ok` once the collector
    /// accepted it.
    pub async fn send(&mut self, o: &Options, body: Vec<u8>) -> Result<(), Failure> {
        match self {
            Transport::Grpc(client) => {
                let mut request = tonic::Request::new(Encoded(bytes::Bytes::from(body)));
                for (k, v) in &o.headers {
                    if let (Ok(k), Ok(v)) = (
                        tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()),
                        v.parse(),
                    ) {
                        request.metadata_mut().insert(k, v);
                    }
                }
                // The call MetricsServiceClient::export makes, with the bytes already encoded.
                request
                    .extensions_mut()
                    .insert(GrpcMethod::new(SERVICE, "Export"));
                if let Err(e) = client.ready().await {
                    return Err(Failure::Unavailable(error_chain(&e), None));
                }
                let codec =
                    tonic_prost::ProstCodec::<Encoded, ExportMetricsServiceResponse>::default();
                let path = PathAndQuery::from_static(EXPORT_PATH);
                match client.unary(request, path, codec).await {
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
                    Err(s) => Err(grpc_failure(&s)),
                }
            }
            Transport::Http(client) => {
                let mut b = hyper::Request::post(&o.endpoint)
                    .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
                    .header(
                        hyper::header::USER_AGENT,
                        concat!("sockscope/", env!("CARGO_PKG_VERSION")),
                    );
                let mut body = body;
                if o.compression == Compression::Gzip {
                    body = gzip(&body).map_err(|e| Failure::Rejected(format!("gzip: {e}")))?;
                    b = b.header(hyper::header::CONTENT_ENCODING, "gzip");
                }
                for (k, v) in &o.headers {
                    b = b.header(k.as_str(), v.as_str());
                }
                let request = b
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .map_err(|e| Failure::Rejected(e.to_string()))?;
                match client.request(request).await {
                    Ok(resp) if resp.status().is_success() => Ok(()),
                    Ok(resp) => {
                        let code = resp.status().as_u16();
                        let msg = format!("HTTP {code}");
                        // The retryable codes of the OTLP/HTTP spec ("Retryable Response Codes").
                        if matches!(code, 429 | 502 | 503 | 504) {
                            let after = resp
                                .headers()
                                .get(hyper::header::RETRY_AFTER)
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| retry_after(v, SystemTime::now()));
                            Err(Failure::Unavailable(msg, after))
                        } else {
                            Err(Failure::Rejected(msg))
                        }
                    }
                    Err(e) => Err(Failure::Unavailable(error_chain(&e), None)),
                }
            }
        }
    }
}

/// The retryable gRPC codes of the OTLP spec, and the `RetryInfo` a throttling collector adds.
fn grpc_failure(s: &tonic::Status) -> Failure {
    use tonic::Code;
    match s.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Cancelled
        | Code::OutOfRange
        | Code::DataLoss
        | Code::Unknown
        | Code::Internal => {
            use tonic_types::StatusExt;
            let after = s
                .get_details_retry_info()
                .and_then(|r| r.retry_delay)
                .map(|d| d.min(RETRY_AFTER_MAX));
            Failure::Unavailable(s.to_string(), after)
        }
        _ => Failure::Rejected(s.to_string()),
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 10.2.3), capped at
/// [`RETRY_AFTER_MAX`]; `None` if it is neither.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    let d = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(v)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(d.min(RETRY_AFTER_MAX))
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    // The level the SDKs use (Go's gzip.DefaultCompression, Java's Deflater default).
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::default(),
    );
    e.write_all(body)?;
    e.finish()
}

/// hyper's error with its causes: "client error (Connect)" alone does not say that the
/// certificate was refused.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").expect("date");
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2026 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        // A date already past: retry now.
        assert_eq!(
            retry_after("Wed, 21 Oct 2026 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("86400", now), Some(RETRY_AFTER_MAX));
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-1", now), None);
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let body = vec![7u8; 100_000];
        let z = gzip(&body).expect("gzip");
        assert!(z.len() < 1_000, "{}", z.len());
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(z.as_slice())
            .read_to_end(&mut out)
            .expect("gunzip");
        assert_eq!(out, body);
    }

    #[test]
    fn grpc_codes() {
        assert!(matches!(
            grpc_failure(&tonic::Status::unavailable("x")),
            Failure::Unavailable(_, None)
        ));
        assert!(matches!(
            grpc_failure(&tonic::Status::invalid_argument("x")),
            Failure::Rejected(_)
        ));
        use tonic_types::{ErrorDetails, StatusExt};
        let s = tonic::Status::with_error_details(
            tonic::Code::ResourceExhausted,
            "slow down",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(3))),
        );
        assert!(matches!(
            grpc_failure(&s),
            Failure::Unavailable(_, Some(d)) if d == Duration::from_secs(3)
        ));
    }
}
