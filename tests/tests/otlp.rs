//! OTLP export end to end: real traffic and real DNS queries counted by the kernel, pushed
//! over gRPC and HTTP/protobuf to a receiver that decodes with the official
//! opentelemetry-proto types, compared with what /metrics shows; and a receiver that is down
//! for a while.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use sockscope_tests::{Agent, Metrics, TestCgroup, dns::DnsServer, peer_cmd};

const PEER: &str = env!("CARGO_BIN_EXE_sockscope-peer");

/// What one export request carried.
#[derive(Debug, Default, Clone)]
struct Export {
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
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn receiver(kind: &str, port: u16) -> Receiver {
    let mut child = Command::new(PEER)
        .args(["otlp-receiver", kind, &format!("127.0.0.1:{port}")])
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
    thread::spawn(move || read_exports(out, tx));
    Receiver {
        child,
        port,
        exports,
    }
}

fn read_exports(out: BufReader<ChildStdout>, tx: mpsc::Sender<Export>) {
    let mut cur = Export::default();
    for line in out.lines().map_while(Result::ok) {
        let f: Vec<&str> = line.split(' ').collect();
        match f[0] {
            "request" => cur = Export::default(),
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
    e.points
        .iter()
        .filter(|((m, attrs), _)| {
            m == metric
                && want
                    .iter()
                    .all(|(k, v)| attrs.split(';').any(|kv| kv == format!("{k}={v}")))
        })
        .map(|(_, (v, ..))| *v)
        .sum()
}

fn exchange(kind: &str) {
    let rx = receiver(if kind == "grpc" { "grpc" } else { "http" }, 0);
    let dns = DnsServer::start(&[("www", "A", "127.0.0.1")], false);
    let cg = TestCgroup::new(&format!("otlp-{}", kind.replace('/', "-")));
    let started = std::time::SystemTime::now();
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
            "--cluster-name",
            "test-cluster",
            "--node-name",
            "node-x",
        ],
    );
    // TCP bytes on loopback, and DNS queries through the resolver in its namespace.
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
    let m = agent.wait_until(Duration::from_secs(10), "exports counted", |m: &Metrics| {
        m.sum("sockscope_otlp_exports_total", &[]) >= 1.0
    });
    assert_eq!(m.sum("sockscope_otlp_export_failures_total", &[]), 0.0);
}

#[test]
fn grpc_export_matches_metrics() {
    exchange("grpc");
}

#[test]
fn http_export_matches_metrics() {
    exchange("http/protobuf");
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
