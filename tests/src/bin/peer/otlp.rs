//! An OTLP receiver (gRPC and HTTP, plain, TLS or mTLS, throttling on request) that prints
//! every point it receives.

use std::{io::Write, net::SocketAddr, time::Duration};

use super::{Res, say};

/// An OTLP metrics receiver decoding with the official opentelemetry-proto types:
/// `otlp-receiver <grpc|http> <bind> [--tls CERT KEY] [--client-ca CA] [--throttle N SECS]`.
///
/// `--tls`: TLS with that certificate and key (PEM); `--client-ca`: mTLS, clients must present
/// a certificate signed by CA; `--throttle`: the first N requests are answered "retry in SECS"
/// (HTTP 503 with `Retry-After`, gRPC UNAVAILABLE with `RetryInfo`), each printing
/// `throttled <unix_ms>`. gzip bodies are accepted (HTTP `Content-Encoding`, gRPC
/// `grpc-encoding`).
///
/// Prints `ready <port>`, then per request `at <unix_ms>`, `encoding <gzip|identity>`,
/// `request <bytes>`, `resource <k=v;...>`, one `point <metric> <attrs> <value> <start_ns>
/// <time_ns> <temporality>` per number point and `hist <metric> <attrs> <count> <sum>
/// <start_ns> <time_ns>` per histogram point, and `end`.
pub(crate) fn otlp_receiver(
    kind: String,
    bind: SocketAddr,
    tls: Option<(String, String)>,
    client_ca: Option<String>,
    throttle: (usize, u64),
) -> Res<()> {
    let throttle = Throttle {
        left: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(throttle.0)),
        secs: throttle.1,
    };
    let read = |p: &str| std::fs::read(p).map_err(|e| format!("{p}: {e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|e| format!("bind {bind}: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        match kind.as_str() {
            "grpc" => {
                use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsServiceServer;
                use tonic::transport::{Certificate, Identity, ServerTlsConfig};
                let mut server = tonic::transport::Server::builder();
                if let Some((cert, key)) = &tls {
                    let mut c = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
                    if let Some(ca) = &client_ca {
                        c = c.client_ca_root(Certificate::from_pem(read(ca)?));
                    }
                    server = server.tls_config(c).map_err(|e| e.to_string())?;
                }
                say(&format!("ready {port}"));
                server
                    .add_service(
                        MetricsServiceServer::new(Receiver { throttle })
                            .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
                    )
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                    .await
                    .map_err(|e| e.to_string())
            }
            "http" => {
                let acceptor = match &tls {
                    Some((cert, key)) => Some(tls_acceptor(&read(cert)?, &read(key)?, client_ca.as_deref().map(read).transpose()?)?),
                    None => None,
                };
                say(&format!("ready {port}"));
                loop {
                    let (s, _) = listener.accept().await.map_err(|e| e.to_string())?;
                    let acceptor = acceptor.clone();
                    let throttle = throttle.clone();
                    tokio::spawn(async move {
                        let _ = match acceptor {
                            Some(a) => match a.accept(s).await {
                                Ok(mut t) => http_export(&mut t, &throttle).await,
                                // A refused client certificate ends here.
                                Err(e) => Err(e.to_string()),
                            },
                            None => {
                                let mut s = s;
                                http_export(&mut s, &throttle).await
                            }
                        };
                    });
                }
            }
            other => Err(format!("unknown receiver kind {other}")),
        }
    })
}

/// The rustls server side of `--tls` (and `--client-ca`) for the HTTP receiver.
fn tls_acceptor(
    cert: &[u8],
    key: &[u8],
    client_ca: Option<Vec<u8>>,
) -> Res<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| e.to_string())?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&ca) {
                roots
                    .add(c.map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                std::sync::Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

/// `--throttle`: how many requests are still to be answered "retry later", and after how long.
#[derive(Clone)]
struct Throttle {
    left: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    secs: u64,
}

impl Throttle {
    /// Whether this request is one of the throttled ones (printing `throttled <unix_ms>`).
    fn take(&self) -> bool {
        use std::sync::atomic::Ordering;
        let taken = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if taken {
            say(&format!("throttled {}", unix_ms()));
        }
        taken
    }
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// One HTTP/1.1 POST per request (keep-alive: several per connection), body decoded as
/// protobuf, gunzipped first if its `Content-Encoding` says gzip.
async fn http_export<S>(s: &mut S, throttle: &Throttle) -> Res<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    loop {
        // Headers.
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let mut chunk = [0u8; 8192];
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or("no content-length")?;
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 65536];
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("eof in body".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let mut body: Vec<u8> = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        if throttle.take() {
            s.write_all(format!("HTTP/1.1 503 Service Unavailable\r\nRetry-After: {}\r\nContent-Length: 0\r\n\r\n", throttle.secs).as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            continue;
        }
        let gzip = head
            .lines()
            .find_map(|l| l.strip_prefix("content-encoding:"))
            .is_some_and(|v| v.trim() == "gzip");
        if gzip {
            use std::io::Read;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body.as_slice())
                .read_to_end(&mut out)
                .map_err(|e| format!("gunzip: {e}"))?;
            body = out;
        }
        let ok = head.starts_with("post /v1/metrics ")
            && head.contains("content-type: application/x-protobuf");
        let req = <opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest as prost::Message>::decode(body.as_slice());
        let status = match (ok, req) {
            (true, Ok(r)) => {
                say(&format!("at {}", unix_ms()));
                say(&format!(
                    "encoding {}",
                    if gzip { "gzip" } else { "identity" }
                ));
                print_request(&r, len);
                "200 OK"
            }
            _ => "400 Bad Request",
        };
        s.write_all(format!("HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
    }
}

struct Receiver {
    throttle: Throttle,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsService
    for Receiver
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse,
        >,
        tonic::Status,
    > {
        if self.throttle.take() {
            use tonic_types::{ErrorDetails, StatusExt};
            return Err(tonic::Status::with_error_details(
                tonic::Code::Unavailable,
                "throttled",
                ErrorDetails::with_retry_info(Some(Duration::from_secs(self.throttle.secs))),
            ));
        }
        let encoding = request
            .metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("identity")
            .to_string();
        let r = request.into_inner();
        say(&format!("at {}", unix_ms()));
        say(&format!("encoding {encoding}"));
        print_request(&r, prost::Message::encoded_len(&r));
        Ok(tonic::Response::new(Default::default()))
    }
}

fn attrs(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            // Spaces would split the line; none of sockscope's values has one.
            format!("{}={}", kv.key, v.replace(' ', "_"))
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn print_request(
    r: &opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest,
    bytes: usize,
) {
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
    let mut out = format!("request {bytes}\n");
    for rm in &r.resource_metrics {
        let res = rm
            .resource
            .as_ref()
            .map(|r| attrs(&r.attributes))
            .unwrap_or_default();
        out.push_str(&format!("resource {res}\n"));
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                match &m.data {
                    Some(Data::Sum(sum)) => {
                        for p in &sum.data_points {
                            let v = match p.value {
                                Some(Value::AsInt(i)) => i.to_string(),
                                Some(Value::AsDouble(d)) => d.to_string(),
                                None => "none".into(),
                            };
                            out.push_str(&format!(
                                "point {} {} {v} {} {} {}\n",
                                m.name,
                                attrs(&p.attributes),
                                p.start_time_unix_nano,
                                p.time_unix_nano,
                                sum.aggregation_temporality
                            ));
                        }
                    }
                    Some(Data::Gauge(g)) => {
                        for p in &g.data_points {
                            let v = match p.value {
                                Some(Value::AsInt(i)) => i.to_string(),
                                Some(Value::AsDouble(d)) => d.to_string(),
                                None => "none".into(),
                            };
                            out.push_str(&format!(
                                "point {} {} {v} 0 {} 0\n",
                                m.name,
                                attrs(&p.attributes),
                                p.time_unix_nano
                            ));
                        }
                    }
                    Some(Data::Histogram(h)) => {
                        for p in &h.data_points {
                            out.push_str(&format!(
                                "hist {} {} {} {} {} {}\n",
                                m.name,
                                attrs(&p.attributes),
                                p.count,
                                p.sum.unwrap_or(0.0),
                                p.start_time_unix_nano,
                                p.time_unix_nano
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out.push_str("end\n");
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}
