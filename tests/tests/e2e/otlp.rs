//! OTLP export end to end: real traffic and real DNS queries counted by the kernel, pushed
//! over gRPC and HTTP/protobuf, compared with what /metrics shows:
//! - to a receiver that decodes with the official opentelemetry-proto types, in plain text and
//!   over TLS with mTLS and gzip (set by flags, and by the OTel SDK variables);
//! - to rotel, an independent OTLP collector, which prints what it received;
//! - to a receiver that is down for a while, one that throttles (Retry-After, RetryInfo), and
//!   one that refuses the agent's client certificate.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use std::sync::{Arc, Mutex};

use sockscope_tests::{Agent, Metrics, TestCgroup, dns::DnsServer, peer_cmd, pki};

const PEER: &str = env!("CARGO_BIN_EXE_sockscope-peer");

/// What one export request carried.
#[derive(Debug, Default, Clone)]
struct Export {
    /// `gzip` or `identity`, as the request said.
    encoding: String,
    /// When the receiver got it (Unix ms).
    at_ms: u128,
    resource: HashMap<String, String>,
    /// (metric, attrs) -> (value, start_ns, time_ns, temporality)
    points: HashMap<(String, String), (f64, u64, u64, i32)>,
    /// (metric, attrs) -> (count, sum)
    hists: HashMap<(String, String), (u64, f64)>,
}

struct Receiver {
    child: Child,
    port: u16,
    exports: mpsc::Receiver<Export>,
    /// When each throttled request came (Unix ms).
    throttled: Arc<Mutex<Vec<u128>>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn receiver(kind: &str, port: u16) -> Receiver {
    receiver_with(kind, port, &[])
}

/// A receiver with the peer's options (`--tls`, `--client-ca`, `--throttle`).
fn receiver_with(kind: &str, port: u16, options: &[&str]) -> Receiver {
    let mut child = Command::new(PEER)
        .args(["otlp-receiver", kind, &format!("127.0.0.1:{port}")])
        .args(options)
        .stdout(Stdio::piped())
        .spawn()
        .expect("receiver");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("ready line");
    let port = line
        .trim()
        .strip_prefix("ready ")
        .expect("ready")
        .parse()
        .expect("port");
    let (tx, exports) = mpsc::channel();
    let throttled = Arc::new(Mutex::new(Vec::new()));
    let t = throttled.clone();
    thread::spawn(move || read_exports(out, tx, t));
    Receiver {
        child,
        port,
        exports,
        throttled,
    }
}

fn read_exports(
    out: BufReader<ChildStdout>,
    tx: mpsc::Sender<Export>,
    throttled: Arc<Mutex<Vec<u128>>>,
) {
    let mut cur = Export::default();
    // `at` and `encoding` come before the request they describe.
    let (mut at_ms, mut encoding) = (0, String::new());
    for line in out.lines().map_while(Result::ok) {
        let f: Vec<&str> = line.split(' ').collect();
        match f[0] {
            "throttled" => {
                if let (Some(ms), Ok(mut t)) =
                    (f.get(1).and_then(|v| v.parse().ok()), throttled.lock())
                {
                    t.push(ms);
                }
            }
            "at" => at_ms = f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0),
            "encoding" => encoding = f.get(1).unwrap_or(&"").to_string(),
            "request" => {
                cur = Export {
                    at_ms,
                    encoding: std::mem::take(&mut encoding),
                    ..Export::default()
                }
            }
            "resource" => {
                cur.resource = f
                    .get(1)
                    .unwrap_or(&"")
                    .split(';')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }
            "point" if f.len() == 7 => {
                cur.points.insert(
                    (f[1].to_string(), f[2].to_string()),
                    (
                        f[3].parse().unwrap_or(f64::NAN),
                        f[4].parse().unwrap_or(0),
                        f[5].parse().unwrap_or(0),
                        f[6].parse().unwrap_or(0),
                    ),
                );
            }
            "hist" if f.len() == 7 => {
                cur.hists.insert(
                    (f[1].to_string(), f[2].to_string()),
                    (f[3].parse().unwrap_or(0), f[4].parse().unwrap_or(f64::NAN)),
                );
            }
            // A test that stopped listening just leaves the rest unread.
            "end" => {
                let _ = tx.send(std::mem::take(&mut cur));
            }
            _ => {}
        }
    }
}

/// Sum over points of `metric` whose attributes include every `want` pair.
fn point_sum(e: &Export, metric: &str, want: &[(&str, &str)]) -> f64 {
    sum_matching(e.points.iter().map(|(k, (v, ..))| (k, *v)), metric, want)
}

/// Sum over `(metric, "k=v;...")` points of `metric` whose attributes include every `want` pair.
fn sum_matching<'a>(
    points: impl Iterator<Item = (&'a (String, String), f64)>,
    metric: &str,
    want: &[(&str, &str)],
) -> f64 {
    points
        .filter(|((m, attrs), _)| {
            m == metric
                && want
                    .iter()
                    .all(|(k, v)| attrs.split(';').any(|kv| kv == format!("{k}={v}")))
        })
        .map(|(_, v)| v)
        .sum()
}

/// TCP bytes on loopback, and three DNS queries through the resolver in its namespace; returns
/// the scrape that counted them all, the client's bytes and the server's port.
fn traffic(agent: &Agent, cg: &TestCgroup, dns: &DnsServer) -> (Metrics, u64, String) {
    let mut srv = cg.spawn(
        "server",
        &mut peer_cmd(PEER, None, &["tcp-server", "127.0.0.1:0", "1"]),
    );
    let port = srv.line("ready ");
    let mut cli = cg.spawn(
        "client",
        &mut peer_cmd(
            PEER,
            None,
            &[
                "tcp-client",
                &format!("127.0.0.1:{port}"),
                "1",
                "1",
                "40000",
                "4000",
            ],
        ),
    );
    let (sent, _) = cli.totals("");
    cli.wait_ok();
    srv.wait_ok();
    for _ in 0..3 {
        let mut q = cg.spawn("resolver", &mut dns.kdig("www.sockscope.test", "A"));
        q.child.wait().expect("kdig");
    }
    let client = [("workload", "client"), ("role", "client")];
    let dns_local = [("workload", "resolver")];
    let m = agent.wait_until(Duration::from_secs(20), "counted", |m: &Metrics| {
        m.sum("sockscope_tcp_sent_bytes_total", &client) == sent as f64
            && m.sum("sockscope_dns_queries_total", &dns_local) == 3.0
            && m.sum("sockscope_dns_latency_seconds_count", &dns_local) == 3.0
    });
    (m, sent, port)
}

/// How the agent reaches the receiver.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Link {
    /// http://, uncompressed.
    Plain,
    /// https:// with mTLS and gzip, set by sockscope's flags.
    SecureFlags,
    /// https:// with mTLS and gzip, set by the OTel SDK variables.
    SecureEnv,
}

fn exchange(kind: &str, link: Link) {
    let pki = (link != Link::Plain).then(|| pki::pki(&format!("otlp-{kind}").replace('/', "-")));
    let file = |name: &str| {
        pki.as_ref()
            .map(|d| d.0.join(name).display().to_string())
            .unwrap_or_default()
    };
    let (cert, key, ca) = (file("tls.crt"), file("tls.key"), file("ca.crt"));
    let (client_cert, client_key) = (file("client.crt"), file("client.key"));
    let receiver_options: Vec<&str> = if pki.is_some() {
        vec!["--tls", &cert, &key, "--client-ca", &ca]
    } else {
        vec![]
    };
    let rx = receiver_with(
        if kind == "grpc" { "grpc" } else { "http" },
        0,
        &receiver_options,
    );
    let dns = DnsServer::start(&[("www", "A", "127.0.0.1")], false);
    let cg = TestCgroup::new(&format!("otlp-{}-{link:?}", kind.replace('/', "-")));
    let started = std::time::SystemTime::now();
    let scheme = if pki.is_some() { "https" } else { "http" };
    let endpoint = format!("{scheme}://127.0.0.1:{}", rx.port);
    let mut args = vec![
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        if kind == "grpc" {
            "grpc"
        } else {
            "http/protobuf"
        },
        "--otlp-interval",
        "1s",
        "--cluster-name",
        "test-cluster",
        "--node-name",
        "node-x",
    ];
    if link == Link::SecureFlags {
        args.extend([
            "--otlp-compression",
            "gzip",
            "--otlp-certificate",
            &ca,
            "--otlp-client-certificate",
            &client_cert,
            "--otlp-client-key",
            &client_key,
        ]);
    }
    let env = [
        format!("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE={ca}"),
        format!("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE={client_cert}"),
        format!("OTEL_EXPORTER_OTLP_CLIENT_KEY={client_key}"),
        "OTEL_EXPORTER_OTLP_COMPRESSION=gzip".to_string(),
    ];
    let agent = if link == Link::SecureEnv {
        let mut wrapper = vec!["env"];
        wrapper.extend(env.iter().map(String::as_str));
        Agent::start_wrapped(PEER, &wrapper, &cg.root, &args)
    } else {
        Agent::start(PEER, &cg.root, &args)
    };
    let (m, sent, port) = traffic(&agent, &cg, &dns);
    let client = [("workload", "client"), ("role", "client")];
    let dns_local = [("workload", "resolver")];
    // The next export after the counts were published carries the same values.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut first_start = None;
    let export = loop {
        let e = rx
            .exports
            .recv_timeout(Duration::from_secs(5))
            .expect("an export within 5 s");
        let start = e
            .points
            .iter()
            .find(|((m, _), _)| m == "sockscope_tcp_sent_bytes")
            .map(|(_, (_, s, _, _))| *s);
        if first_start.is_none() {
            first_start = start;
        }
        if point_sum(&e, "sockscope_tcp_sent_bytes", &client) == sent as f64
            && point_sum(&e, "sockscope_dns_queries", &dns_local) == 3.0
        {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "no export with the counts: {e:?}"
        );
    };
    assert_eq!(
        point_sum(
            &export,
            "sockscope_tcp_received_bytes",
            &[("workload", "server")]
        ),
        m.sum(
            "sockscope_tcp_received_bytes_total",
            &[("workload", "server")]
        )
    );
    assert_eq!(
        point_sum(
            &export,
            "sockscope_dns_responses",
            &[
                ("workload", "resolver"),
                ("rcode", "NOERROR"),
                ("qname", "www.sockscope.test")
            ]
        ),
        3.0
    );
    let hist: Vec<_> = export
        .hists
        .iter()
        .filter(|((name, attrs), _)| {
            name == "sockscope_dns_latency_seconds" && attrs.contains("workload=resolver")
        })
        .collect();
    assert_eq!(hist.len(), 1, "{:?}", export.hists);
    assert_eq!(hist[0].1.0, 3);
    assert!((hist[0].1.1 - m.sum("sockscope_dns_latency_seconds_sum", &dns_local)).abs() < 1e-9);
    // Attributes are the /metrics labels; cumulative, from the agent's start.
    let ((_, attrs), (_, start, time, temporality)) = export
        .points
        .iter()
        .find(|((name, a), _)| name == "sockscope_tcp_sent_bytes" && a.contains("workload=client"))
        .expect("client point");
    for label in [
        "namespace=",
        "pod=",
        "remote_class=loopback",
        &format!("port={port}"),
        "role=client",
    ] {
        assert!(attrs.contains(label), "{attrs}");
    }
    assert_eq!(*temporality, 2, "cumulative");
    let started_ns = started
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    assert!(
        *start >= started_ns && *start < started_ns + 10_000_000_000,
        "start {start} vs test start {started_ns}"
    );
    assert_eq!(
        Some(*start),
        first_start,
        "the start time stays the agent's start"
    );
    assert!(time > start);
    for (k, v) in [
        ("service.name", "sockscope"),
        ("k8s.cluster.name", "test-cluster"),
        ("k8s.node.name", "node-x"),
    ] {
        assert_eq!(
            export.resource.get(k).map(String::as_str),
            Some(v),
            "{:?}",
            export.resource
        );
    }
    assert!(export.resource.contains_key("host.name"));
    assert_eq!(
        export.encoding,
        if link == Link::Plain {
            "identity"
        } else {
            "gzip"
        },
        "request encoding"
    );
    let m = agent.wait_until(Duration::from_secs(10), "exports counted", |m: &Metrics| {
        m.sum("sockscope_otlp_exports_total", &[]) >= 1.0
    });
    assert_eq!(m.sum("sockscope_otlp_export_failures_total", &[]), 0.0);
}

#[test]
fn grpc_export_matches_metrics() {
    exchange("grpc", Link::Plain);
}

#[test]
fn http_export_matches_metrics() {
    exchange("http/protobuf", Link::Plain);
}

#[test]
fn grpc_over_mtls_with_gzip_matches_metrics() {
    exchange("grpc", Link::SecureFlags);
}

#[test]
fn http_over_mtls_with_gzip_matches_metrics() {
    exchange("http/protobuf", Link::SecureFlags);
}

#[test]
fn grpc_tls_from_otel_variables() {
    exchange("grpc", Link::SecureEnv);
}

#[test]
fn http_tls_from_otel_variables() {
    exchange("http/protobuf", Link::SecureEnv);
}

/// A collector that requires a client certificate refuses an agent without one, and one that
/// presents an unknown CA's server certificate is refused by the agent: nothing is delivered,
/// every attempt is counted as a failure, and the log says why.
fn refused(kind: &str) {
    let pki = pki::pki(&format!("otlp-refused-{kind}"));
    let f = |n: &str| pki.0.join(n).display().to_string();
    let rx = receiver_with(
        kind,
        0,
        &[
            "--tls",
            &f("tls.crt"),
            &f("tls.key"),
            "--client-ca",
            &f("ca.crt"),
        ],
    );
    let endpoint = format!("https://127.0.0.1:{}", rx.port);
    let protocol = if kind == "grpc" {
        "grpc"
    } else {
        "http/protobuf"
    };
    for (name, trust) in [
        ("no-client-cert", f("ca.crt")),
        ("wrong-ca", f("other.crt")),
    ] {
        let cg = TestCgroup::new(&format!("otlp-refused-{kind}-{name}"));
        let agent = Agent::start(
            PEER,
            &cg.root,
            &[
                "--otlp-endpoint",
                &endpoint,
                "--otlp-protocol",
                protocol,
                "--otlp-interval",
                "1s",
                "--otlp-timeout",
                "2s",
                "--otlp-certificate",
                &trust,
            ],
        );
        let m = agent.wait_until(
            Duration::from_secs(20),
            "failures counted",
            |m: &Metrics| m.sum("sockscope_otlp_export_failures_total", &[]) >= 2.0,
        );
        assert_eq!(m.sum("sockscope_otlp_exports_total", &[]), 0.0, "{name}");
        let log = agent.log_text();
        assert!(log.contains("OTLP export failed"), "{name}: {log}");
        if name == "wrong-ca" {
            assert!(log.contains("UnknownIssuer"), "the log says why: {log}");
        } else if kind == "http" {
            assert!(
                log.contains("CertificateRequired"),
                "the log says why: {log}"
            );
        }
    }
    assert!(
        rx.exports.try_recv().is_err(),
        "nothing reached the receiver"
    );
}

#[test]
fn grpc_refused_certificates_are_failures() {
    refused("grpc");
}

#[test]
fn http_refused_certificates_are_failures() {
    refused("http");
}

/// The collector answers the first export "retry in 3 s" (HTTP 503 + Retry-After, gRPC
/// UNAVAILABLE + RetryInfo): with a 1 s interval, the agent still waits the 3 s before it
/// sends again, then delivers.
fn throttled(kind: &str) {
    let rx = receiver_with(kind, 0, &["--throttle", "1", "3"]);
    let cg = TestCgroup::new(&format!("otlp-throttled-{kind}"));
    let agent = Agent::start(
        PEER,
        &cg.root,
        &[
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{}", rx.port),
            "--otlp-protocol",
            if kind == "grpc" {
                "grpc"
            } else {
                "http/protobuf"
            },
            "--otlp-interval",
            "1s",
        ],
    );
    let e = rx
        .exports
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no export after the throttle; log: {}", agent.log_text()));
    let throttled = rx.throttled.lock().expect("lock").clone();
    assert_eq!(throttled.len(), 1, "{throttled:?}");
    let waited = e.at_ms.saturating_sub(throttled[0]);
    // Both times come from the same clock; the agent may only be later, never earlier.
    assert!(
        waited >= 2_990,
        "sent again {waited} ms after being told to wait 3 s"
    );
    let m = agent.wait_until(Duration::from_secs(10), "export counted", |m: &Metrics| {
        m.sum("sockscope_otlp_exports_total", &[]) >= 1.0
    });
    assert_eq!(
        m.sum(
            "sockscope_otlp_export_failures_total",
            &[("reason", "unavailable")]
        ),
        1.0
    );
}

#[test]
fn grpc_throttling_is_honoured() {
    throttled("grpc");
}

#[test]
fn http_throttling_is_honoured() {
    throttled("http");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// The collector is away for a while: the agent keeps serving /metrics, counts the failures,
/// stays within its memory, and delivers again once the collector is back.
#[test]
fn collector_down_then_up() {
    let port = sockscope_tests::free_port();
    let cg = TestCgroup::new("otlp-down");
    let agent = Agent::start(
        PEER,
        &cg.root,
        &[
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--otlp-protocol",
            "grpc",
            "--otlp-interval",
            "1s",
            "--otlp-timeout",
            "500ms",
        ],
    );
    let rss_start = rss_kib(agent.child.id());
    let m = agent.wait_until(
        Duration::from_secs(20),
        "failures counted",
        |m: &Metrics| {
            m.sum(
                "sockscope_otlp_export_failures_total",
                &[("reason", "unavailable")],
            ) >= 3.0
        },
    );
    assert_eq!(m.sum("sockscope_otlp_exports_total", &[]), 0.0);
    // /metrics answered all along (wait_until scraped it); memory flat while failing.
    thread::sleep(Duration::from_secs(3));
    let rss_down = rss_kib(agent.child.id());
    assert!(
        rss_down < rss_start + 8 * 1024,
        "RSS grew from {rss_start} to {rss_down} KiB"
    );
    let rx = receiver("grpc", port);
    let e = rx
        .exports
        .recv_timeout(Duration::from_secs(20))
        .expect("export after the collector came back");
    assert!(!e.points.is_empty());
    agent.wait_until(Duration::from_secs(10), "exports counted", |m: &Metrics| {
        m.sum("sockscope_otlp_exports_total", &[]) >= 1.0
    });
    assert!(
        agent.log_text().contains("OTLP export works again"),
        "{}",
        agent.log_text()
    );
}

/// Configured only through the OTel SDK variables: endpoint (a base URL: /v1/metrics added for
/// HTTP), protocol, interval, temporality preference, service name and resource attributes.
#[test]
fn otel_environment_variables() {
    let rx = receiver("http", 0);
    let cg = TestCgroup::new("otlp-env");
    let endpoint = format!("OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{}", rx.port);
    let agent = Agent::start_wrapped(
        PEER,
        &[
            "env",
            &endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
            "OTEL_METRIC_EXPORT_INTERVAL=1000",
            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta",
            "OTEL_SERVICE_NAME=netobs",
            "OTEL_RESOURCE_ATTRIBUTES=deployment.environment=test,team=s%20re",
        ],
        &cg.root,
        &[],
    );
    let e = rx
        .exports
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("no export; log: {}", agent.log_text()));
    assert_eq!(
        e.resource.get("service.name").map(String::as_str),
        Some("netobs")
    );
    assert_eq!(
        e.resource.get("deployment.environment").map(String::as_str),
        Some("test")
    );
    // Percent-decoded (the receiver prints spaces as underscores).
    assert_eq!(e.resource.get("team").map(String::as_str), Some("s_re"));
    let (_, (_, _, _, temporality)) = e
        .points
        .iter()
        .find(|((m, _), _)| m == "sockscope_drain_errors")
        .expect("a counter");
    assert_eq!(*temporality, 1, "delta");
}

/// rotel, an independent OTLP collector (Rust, from PyPI; scripts/setup.sh installs it into
/// the test virtualenv), listening on gRPC and HTTP and printing every data point it receives
/// (`--debug-log metrics --debug-log-verbosity detailed`, to stdout).
struct Rotel {
    child: Child,
    grpc: u16,
    http: u16,
    /// (metric, sorted `k=v;...` attributes) -> the last value received (histograms:
    /// `<name>_count` and `<name>_sum`).
    points: Arc<Mutex<HashMap<(String, String), f64>>>,
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Rotel {
    fn start() -> Rotel {
        let venv = sockscope_tests::venv();
        let out = Command::new(venv.join("bin/python"))
            .args([
                "-c",
                "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
            ])
            .output()
            .expect("the test virtualenv's python (scripts/setup.sh)");
        let bin = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && std::path::Path::new(&bin).exists(),
            "rotel is not installed in {} (scripts/setup.sh): {}",
            venv.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let (grpc, http) = (sockscope_tests::free_port(), sockscope_tests::free_port());
        let mut child = Command::new(&bin)
            .args([
                "start",
                "--otlp-grpc-endpoint",
                &format!("127.0.0.1:{grpc}"),
                "--otlp-http-endpoint",
                &format!("127.0.0.1:{http}"),
                "--exporter",
                "blackhole",
                "--debug-log",
                "metrics",
                "--debug-log-verbosity",
                "detailed",
            ])
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("rotel");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let points = Arc::new(Mutex::new(HashMap::new()));
        let p = points.clone();
        thread::spawn(move || read_rotel(out, p));
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in [grpc, http] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "rotel never listened on {port}");
                thread::sleep(Duration::from_millis(50));
            }
        }
        Rotel {
            child,
            grpc,
            http,
            points,
        }
    }

    fn sum(&self, metric: &str, want: &[(&str, &str)]) -> f64 {
        let points = self.points.lock().expect("lock");
        sum_matching(points.iter().map(|(k, v)| (k, *v)), metric, want)
    }
}

/// Follows rotel's debug log: `Metric #n`, `-> Name: x` under `Descriptor:`, then per data
/// point `-> key: Str(value)` under `Data point attributes:` and `Value:` (or `Count:` and
/// `Sum:` for histograms).
fn read_rotel(out: BufReader<ChildStdout>, points: Arc<Mutex<HashMap<(String, String), f64>>>) {
    #[derive(PartialEq)]
    enum In {
        Other,
        Descriptor,
        Attributes,
    }
    let (mut metric, mut attrs, mut state) = (String::new(), Vec::<String>::new(), In::Other);
    let record = |name: String, attrs: &[String], v: f64| {
        let mut a = attrs.to_vec();
        a.sort();
        if let Ok(mut p) = points.lock() {
            p.insert((name, a.join(";")), v);
        }
    };
    for line in out.lines().map_while(Result::ok) {
        let t = line.trim();
        if t == "Descriptor:" {
            state = In::Descriptor;
        } else if t == "Data point attributes:" {
            state = In::Attributes;
        } else if t.starts_with("NumberDataPoints #") || t.starts_with("HistogramDataPoints #") {
            attrs.clear();
            state = In::Other;
        } else if let Some(kv) = t.strip_prefix("-> ") {
            let Some((k, v)) = kv.split_once(": ") else {
                continue;
            };
            match state {
                In::Descriptor if k == "Name" => metric = v.to_string(),
                In::Attributes => {
                    let v = v
                        .strip_prefix("Str(")
                        .and_then(|v| v.strip_suffix(')'))
                        .unwrap_or(v);
                    attrs.push(format!("{k}={v}"));
                }
                _ => {}
            }
        } else if let Some(v) = t.strip_prefix("Value: ") {
            state = In::Other;
            record(metric.clone(), &attrs, v.parse().unwrap_or(f64::NAN));
        } else if let Some(v) = t.strip_prefix("Count: ") {
            state = In::Other;
            record(
                format!("{metric}_count"),
                &attrs,
                v.parse().unwrap_or(f64::NAN),
            );
        } else if let Some(v) = t.strip_prefix("Sum: ") {
            record(
                format!("{metric}_sum"),
                &attrs,
                v.parse().unwrap_or(f64::NAN),
            );
        } else {
            state = if state == In::Descriptor {
                In::Descriptor
            } else {
                In::Other
            };
        }
    }
}

/// The same traffic as [`exchange`], pushed to rotel: what an independent collector decoded
/// equals /metrics.
fn to_rotel(kind: &str) {
    let rotel = Rotel::start();
    let dns = DnsServer::start(&[("www", "A", "127.0.0.1")], false);
    let cg = TestCgroup::new(&format!("otlp-rotel-{}", kind.replace('/', "-")));
    let (endpoint, protocol) = if kind == "grpc" {
        (format!("http://127.0.0.1:{}", rotel.grpc), "grpc")
    } else {
        (format!("http://127.0.0.1:{}", rotel.http), "http/protobuf")
    };
    let agent = Agent::start(
        PEER,
        &cg.root,
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            protocol,
            "--otlp-interval",
            "1s",
            "--otlp-compression",
            "gzip",
        ],
    );
    let (m, sent, _) = traffic(&agent, &cg, &dns);
    let client = [("workload", "client"), ("role", "client")];
    let server = [("workload", "server")];
    let dns_local = [("workload", "resolver")];
    let deadline = Instant::now() + Duration::from_secs(20);
    while rotel.sum("sockscope_tcp_sent_bytes", &client) != sent as f64
        || rotel.sum("sockscope_dns_latency_seconds_count", &dns_local) != 3.0
    {
        assert!(
            Instant::now() < deadline,
            "rotel never received the counts: sent {} of {sent}; agent log: {}",
            rotel.sum("sockscope_tcp_sent_bytes", &client),
            agent.log_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        rotel.sum("sockscope_tcp_received_bytes", &server),
        m.sum("sockscope_tcp_received_bytes_total", &server)
    );
    assert_eq!(rotel.sum("sockscope_dns_queries", &dns_local), 3.0);
    assert_eq!(
        rotel.sum(
            "sockscope_dns_responses",
            &[
                ("workload", "resolver"),
                ("rcode", "NOERROR"),
                ("qname", "www.sockscope.test")
            ]
        ),
        3.0
    );
    let sum = rotel.sum("sockscope_dns_latency_seconds_sum", &dns_local);
    assert!(
        (sum - m.sum("sockscope_dns_latency_seconds_sum", &dns_local)).abs() < 1e-9,
        "latency sum {sum}"
    );
}

#[test]
fn rotel_receives_grpc_exactly() {
    to_rotel("grpc");
}

#[test]
fn rotel_receives_http_exactly() {
    to_rotel("http/protobuf");
}
