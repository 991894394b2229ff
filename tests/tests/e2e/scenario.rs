//! The alerts and dashboards against real data: sockscope, Debian's Prometheus (1 s scrapes,
//! the rules loaded with their `for` windows shortened) and Alertmanager, and scenario traffic
//! in the test's cgroups. The expected alerts must reach Alertmanager, and the dashboard
//! panels about each scenario must return data for the scenario's series.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use sockscope_tests::{
    Agent, NetPair, Netns, Proc, TestCgroup,
    dns::DnsServer,
    fake_apiserver::objects,
    fake_cluster::{Env, NODE, Pod},
    free_port, http_get, peer_cmd, signal_file, sockscope_bin, urlencode,
};

const PEER: &str = env!("CARGO_BIN_EXE_sockscope-peer");
/// Classified "public" (not RFC 1918), routed only inside the test's namespaces.
const PUBLIC_IP: &str = "198.51.100.10";

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command) -> Daemon {
    Daemon(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    )
}

fn wait_ready(port: u16, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(http_get(port, path, None), Ok((200, _))) {
        assert!(Instant::now() < deadline, "not ready on {port}{path}");
        thread::sleep(Duration::from_millis(200));
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Grafana's variables as a user would set them for the scenarios.
fn fill(e: &str) -> String {
    fill_over(e, "1m")
}

/// The same with `$__rate_interval` as `rate_interval`: a scenario whose traffic ends more
/// than a minute before its checks looks at it as a user widening the time range would.
fn fill_over(e: &str, rate_interval: &str) -> String {
    e.replace("$__rate_interval", rate_interval)
        .replace("$__range", "5m")
        .replace("$cluster", ".*")
        .replace("$namespace", ".*")
        .replace("$workload", ".*")
        .replace("$own_hosts", "(.+\\\\.)?sockscope\\\\.test")
        .replace("$endpoint", "www\\\\.sockscope\\\\.test")
}

fn dashboard(file: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(repo().join("dashboards").join(file)).expect("dashboard"),
    )
    .expect("json")
}

fn panel(file: &str, title: &str) -> Value {
    dashboard(file)["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .find(|p| p["title"] == title)
        .cloned()
        .unwrap_or_else(|| panic!("{file}: no panel {title:?}"))
}

/// Panels the host scenario (DNS storm, SERVFAIL, unanswered queries, refused connects,
/// hairpin, a bulk transfer with retransmits, a qname budget overflow) gives data to.
const HOST_SCENARIO_PANELS: [(&str, &str); 29] = [
    ("overview.json", "TCP bytes sent/s by workload"),
    ("overview.json", "TCP bytes received/s by workload"),
    ("overview.json", "UDP bytes/s by workload"),
    ("overview.json", "Bytes/s by namespace"),
    ("overview.json", "Top talkers (bytes over the range)"),
    ("overview.json", "Connections opened/s"),
    ("overview.json", "Connections closed/s"),
    ("overview.json", "Connect failures/s"),
    ("overview.json", "Retransmitted segments/s"),
    ("overview.json", "Retransmit ratio (estimated)"),
    (
        "dependencies.json",
        "Remote hosts per workload (connections over the range)",
    ),
    ("dependencies.json", "External (public) destinations"),
    ("dependencies.json", "Bytes/s by remote class"),
    ("dns.json", "Queries/s by workload"),
    ("dns.json", "Top qnames (queries over the range)"),
    ("dns.json", "NXDOMAIN ratio by workload"),
    ("dns.json", "SERVFAIL ratio by workload"),
    (
        "dns.json",
        "Failing names (NXDOMAIN/SERVFAIL over the range)",
    ),
    ("dns.json", "Latency p50/p90/p99"),
    ("dns.json", "Timeouts/s by workload"),
    (
        "use-cases.json",
        "Hairpin traffic: our public names reached from inside",
    ),
    (
        "use-cases.json",
        "Clients of an endpoint (connections over the range)",
    ),
    ("use-cases.json", "Connections/s to the endpoint"),
    ("health.json", "Programs attached"),
    ("health.json", "Map fill"),
    ("health.json", "Lost events/s"),
    ("health.json", "Updates folded into overflow/s"),
    ("health.json", "Series folded into ~other/s"),
    ("health.json", "Time since the last drain"),
];

/// Panels the Kubernetes scenario (two namespaces sharing a database, OTLP on) gives data to.
const KUBERNETES_SCENARIO_PANELS: [(&str, &str); 10] = [
    (
        "dependencies.json",
        "Workload -> peer (connections over the range)",
    ),
    (
        "dependencies.json",
        "New dependencies (none in the 7 days before the range)",
    ),
    ("dependencies.json", "Dependency graph"),
    (
        "dependencies.json",
        "Cross-namespace traffic (bytes over the range)",
    ),
    ("use-cases.json", "Databases shared by several namespaces"),
    ("use-cases.json", "Clients of shared databases"),
    ("health.json", "Drain duration p99"),
    ("health.json", "Scrape duration"),
    ("health.json", "Agents up"),
    ("health.json", "Kubernetes API watches up"),
];

/// Panels the TCP health scenario (slow connects through a full accept queue, resets of an
/// abortive close and of refused connects, datagrams an nftables rule drops, a link that
/// delays packets) gives data to.
const TCP_HEALTH_SCENARIO_PANELS: [(&str, &str); 7] = [
    ("overview.json", "Packet drops/s by workload and reason"),
    ("overview.json", "TCP resets/s by workload"),
    ("dependencies.json", "Connect time p50/p99 by edge"),
    ("dependencies.json", "RTT p50/p99 by edge"),
    ("dependencies.json", "Connection lifetime p50/p99 by edge"),
    ("health.json", "Node packet drops/s by reason"),
    ("health.json", "TCP resets/s by node"),
];

/// Panels the policy scenario (a watchlisted name, external names, a meshed pod whose
/// application bypasses its sidecar) gives data to.
const POLICY_SCENARIO_PANELS: [(&str, &str); 4] = [
    ("dns.json", "External domains by workload"),
    ("dns.json", "Watchlist domains queried"),
    (
        "use-cases.json",
        "Sidecar bypass: connections/s not through the mesh proxy",
    ),
    (
        "use-cases.json",
        "Sidecar bypass: UDP bytes/s outside the mesh (DNS left out)",
    ),
];

/// Every panel of every dashboard is proven by a scenario.
#[test]
fn every_panel_is_proven_by_a_scenario() {
    let mut missing = Vec::new();
    for file in [
        "overview.json",
        "dependencies.json",
        "dns.json",
        "use-cases.json",
        "health.json",
    ] {
        for p in dashboard(file)["panels"].as_array().expect("panels") {
            let title = p["title"].as_str().expect("title");
            let proven = HOST_SCENARIO_PANELS
                .iter()
                .chain(&KUBERNETES_SCENARIO_PANELS)
                .chain(&TCP_HEALTH_SCENARIO_PANELS)
                .chain(&POLICY_SCENARIO_PANELS)
                .chain(&[("health.json", "OTLP exports and failures/s")])
                .any(|(f, t)| *f == file && *t == title);
            if !proven {
                missing.push(format!("{file} / {title}"));
            }
        }
    }
    assert!(missing.is_empty(), "panels no scenario proves: {missing:?}");
}

/// Alertmanager, and Prometheus scraping one agent every second with the rules loaded.
struct Monitoring {
    _am: Daemon,
    _prom: Daemon,
    prom: u16,
    am: u16,
    dir: PathBuf,
}

impl Drop for Monitoring {
    fn drop(&mut self) {
        // Pictures of the dashboards from this run, when asked for (dashboards/render.py).
        if let Some(out) = std::env::var_os("SOCKSCOPE_PICTURES") {
            let python = sockscope_tests::venv().join("bin/python");
            let out = PathBuf::from(out).join(self.dir.file_name().unwrap_or_default());
            let _ = Command::new(python)
                .arg(repo().join("dashboards/render.py"))
                .arg(format!("--prometheus=http://127.0.0.1:{}", self.prom))
                .arg(format!("--out={}", out.display()))
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Monitoring {
    fn start(tag: &str, agent_port: u16) -> Self {
        let dir =
            std::env::temp_dir().join(format!("sockscope-scenario-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let am = free_port();
        std::fs::write(
            dir.join("alertmanager.yml"),
            "route: {receiver: default, group_wait: 1s, group_interval: 1s}\nreceivers: [{name: default}]\n",
        )
        .expect("am config");
        let _am = spawn(
            Command::new("prometheus-alertmanager")
                .arg(format!("--config.file={}/alertmanager.yml", dir.display()))
                .arg(format!("--storage.path={}/am", dir.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{am}"))
                .arg("--cluster.listen-address="),
        );
        // `for:` windows shortened to fit a test; everything else as shipped.
        let rules =
            std::fs::read_to_string(repo().join("alerts/sockscope.rules.yml")).expect("rules");
        let rules = rules
            .replace("for: 10m", "for: 0s")
            .replace("for: 5m", "for: 0s")
            .replace("interval: 30s", "interval: 1s");
        std::fs::write(dir.join("rules.yml"), rules).expect("rules copy");
        let prom = free_port();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [rules.yml]\n\
                 alerting: {{alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am}']}}]}}]}}\n\
                 scrape_configs:\n  - job_name: sockscope\n    static_configs: [{{targets: ['127.0.0.1:{agent_port}']}}]\n"
            ),
        )
        .expect("prometheus config");
        let _prom = spawn(
            Command::new("prometheus")
                .arg(format!("--config.file={}/prometheus.yml", dir.display()))
                .arg(format!("--storage.tsdb.path={}/data", dir.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{prom}")),
        );
        wait_ready(prom, "/-/ready");
        wait_ready(am, "/-/ready");
        let m = Monitoring {
            _am,
            _prom,
            prom,
            am,
            dir,
        };
        // Prometheus applies new targets after a few seconds: counters must be seen before the
        // scenario moves them, or their increase is invisible.
        let deadline = Instant::now() + Duration::from_secs(30);
        while m.query("up{job=\"sockscope\"} == 1").is_empty() {
            assert!(
                Instant::now() < deadline,
                "Prometheus never scraped sockscope"
            );
            thread::sleep(Duration::from_millis(200));
        }
        m
    }

    fn query(&self, q: &str) -> Vec<Value> {
        let (_, body) = http_get(
            self.prom,
            &format!("/api/v1/query?query={}", urlencode(q)),
            None,
        )
        .expect("query");
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until Alertmanager has every (alertname, label, value) of `want`.
    fn wait_alerts(&self, want: &[(&str, &str, &str)]) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, body) = http_get(self.am, "/api/v2/alerts", None).unwrap_or((0, String::new()));
            let alerts: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
            let got = |(name, label, value): &(&str, &str, &str)| {
                alerts
                    .iter()
                    .any(|a| a["labels"]["alertname"] == *name && a["labels"][*label] == *value)
            };
            if want.iter().all(got) {
                return alerts;
            }
            let names: Vec<String> = alerts.iter().map(|a| a["labels"].to_string()).collect();
            assert!(
                Instant::now() < deadline,
                "alerts in Alertmanager: {names:?}; want {want:?}; Prometheus ALERTS: {:?}; dependencies: {:?}; opened: {:?}",
                self.query("ALERTS"),
                self.query("edge:sockscope_tcp_connections_opened:increase10m"),
                self.query("sockscope_tcp_connections_opened_total{role=\"client\"}")
            );
            thread::sleep(Duration::from_secs(1));
        }
    }

    /// Waits until Prometheus has a series for each query: a counter's first sample is no
    /// increase, so a scenario moves its counters only once Prometheus has seen them.
    fn wait_series(&self, queries: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for q in queries {
            while self.query(q).is_empty() {
                assert!(Instant::now() < deadline, "Prometheus never had {q}");
                thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Runs query `target` of panel `title` of dashboard `file`, rates over `rate_interval`,
    /// until a series with every (label, value) of `labels` has a value `ok` accepts (the
    /// agent's drains and the scrapes catch up within seconds); returns that value.
    fn panel_value(
        &self,
        (file, title, target): (&str, &str, usize),
        rate_interval: &str,
        labels: &[(&str, &str)],
        ok: impl Fn(f64) -> bool,
    ) -> f64 {
        let expr = fill_over(
            panel(file, title)["targets"][target]["expr"]
                .as_str()
                .expect("expr"),
            rate_interval,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let result = self.query(&expr);
            let values: Vec<f64> = result
                .iter()
                .filter(|r| labels.iter().all(|(l, v)| r["metric"][*l] == *v))
                .filter_map(|r| r["value"][1].as_str()?.parse::<f64>().ok())
                .collect();
            if let Some(v) = values.iter().copied().find(|v| ok(*v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{file} / {title} [{target}]: no series with {labels:?} and an expected value (got {values:?}): {expr}\n{result:?}"
            );
            thread::sleep(Duration::from_millis(500));
        }
    }

    /// Runs every query of panel `title` of dashboard `file`; asserts each returns data.
    fn panel_returns_data(&self, file: &str, title: &str) {
        let panel = panel(file, title);
        for t in panel["targets"].as_array().expect("targets") {
            let expr = fill(t["expr"].as_str().expect("expr"));
            assert!(
                !self.query(&expr).is_empty(),
                "{file} / {title}: no data for {expr}"
            );
        }
    }

    /// Runs the first query of panel `title` of dashboard `file`; asserts a series has
    /// `label` = `value`.
    fn panel_has(&self, file: &str, title: &str, label: &str, value: &str) -> Vec<Value> {
        let expr = fill(
            panel(file, title)["targets"][0]["expr"]
                .as_str()
                .expect("expr"),
        );
        let result = self.query(&expr);
        assert!(
            result.iter().any(|r| r["metric"][label] == value),
            "{file} / {title}: no series with {label}={value}: {expr}\n{result:?}"
        );
        result
    }
}

/// An NXDOMAIN storm, refused connects, and connections to one of "our own" public names.
#[test]
fn dns_storm_refused_connects_and_hairpin() {
    // The DNS server's namespace pair carries the traffic: clients in net.a, servers in net.b.
    let dns = DnsServer::start(&[("www", "A", PUBLIC_IP)], false);
    let (a, b, b4) = (dns.net.a.clone(), dns.net.b.clone(), dns.net.b4.clone());
    let st = Command::new("sh")
        .args(["-c", &format!("ip -n {b} addr add {PUBLIC_IP}/32 dev lo && ip -n {a} route add {PUBLIC_IP}/32 via {b4}")])
        .status()
        .expect("ip");
    assert!(st.success());
    let cg = TestCgroup::new("scenario");
    // A short DNS timeout for the unanswered queries, a small qname budget for the overflow.
    let agent = Agent::start(
        PEER,
        &cg.root,
        &["--dns-timeout", "1s", "--max-qnames-per-workload", "3"],
    );
    let mon = Monitoring::start("hosts", agent.port);

    let mut srv = cg.spawn(
        "web",
        &mut peer_cmd(PEER, Some(&b), &["tcp-server", "0.0.0.0:0", "41"]),
    );
    let port = srv.line("ready ");
    // SERVFAIL: a name whose forwarder does not answer (unbound gives up after a while).
    let mut servfail = cg.spawn("resolver-user", &mut dns.kdig("x.broken.test", "A"));
    // Retransmits: a bulk transfer while the veth link goes down and up under it.
    let mut bulk = cg.spawn(
        "bulk",
        &mut peer_cmd(
            PEER,
            Some(&a),
            &[
                "tcp-client",
                &format!("{b4}:{port}"),
                "1",
                "1",
                "300000000",
                "10",
            ],
        ),
    );
    let veth = String::from_utf8(
        Command::new("ip")
            .args(["-n", &b, "-o", "link", "show", "type", "veth"])
            .output()
            .expect("ip")
            .stdout,
    )
    .expect("utf-8");
    let veth = veth
        .split(':')
        .nth(1)
        .and_then(|n| n.trim().split('@').next())
        .expect("veth name")
        .to_string();
    for _ in 0..3 {
        thread::sleep(Duration::from_millis(30));
        let _ = Command::new("ip")
            .args(["-n", &b, "link", "set", &veth, "down"])
            .status();
        thread::sleep(Duration::from_millis(400));
        let _ = Command::new("ip")
            .args(["-n", &b, "link", "set", &veth, "up"])
            .status();
    }
    bulk.wait_ok();
    // Queries nobody answers (nothing listens on port 53 there).
    for _ in 0..3 {
        let mut q = cg.spawn(
            "lost",
            Command::new("ip").args([
                "netns",
                "exec",
                &a,
                "kdig",
                "+retry=0",
                "+timeout=1",
                &format!("@{PUBLIC_IP}"),
                "t.sockscope.test",
                "A",
            ]),
        );
        let _ = q.child.wait();
    }
    let _ = servfail.child.wait();
    let end = Instant::now() + Duration::from_secs(20);
    let mut hairpins = 0;
    while Instant::now() < end {
        for i in 0..5 {
            let mut q = cg.spawn(
                "storm",
                &mut dns.kdig(&format!("missing-{i}.sockscope.test"), "A"),
            );
            q.child.wait().expect("kdig");
        }
        let mut r = cg.spawn(
            "dialer",
            &mut peer_cmd(PEER, Some(&a), &["connect-refused", &format!("{b4}:1")]),
        );
        r.wait_ok();
        if hairpins < 40 {
            let mut h = cg.spawn(
                "frontend",
                &mut peer_cmd(
                    PEER,
                    Some(&a),
                    &["resolve", "www.sockscope.test.", &port, "100", "10", "4"],
                ),
            );
            h.wait_ok();
            hairpins += 1;
        }
        thread::sleep(Duration::from_millis(200));
    }
    let alerts = mon.wait_alerts(&[
        ("SockscopeDNSNXDOMAINRatioHigh", "workload", "storm"),
        ("SockscopeTCPConnectFailuresHigh", "workload", "dialer"),
        ("SockscopeHairpinTraffic", "workload", "frontend"),
        (
            "SockscopeSeriesOverflow",
            "metric",
            "sockscope_dns_queries_total",
        ),
    ]);
    assert!(alerts.iter().all(|a| {
        a["annotations"]["runbook"]
            .as_str()
            .is_some_and(|r| r.len() > 40)
    }));
    drop(srv);

    for (file, title) in HOST_SCENARIO_PANELS {
        mon.panel_returns_data(file, title);
    }
    // And the scenario's own series are there.
    for (file, title, workload) in [
        (
            "overview.json",
            "Top talkers (bytes over the range)",
            "frontend",
        ),
        ("overview.json", "Connect failures/s", "dialer"),
        ("overview.json", "Retransmitted segments/s", "bulk"),
        (
            "dependencies.json",
            "External (public) destinations",
            "frontend",
        ),
        ("dns.json", "NXDOMAIN ratio by workload", "storm"),
        ("dns.json", "SERVFAIL ratio by workload", "resolver-user"),
        ("dns.json", "Timeouts/s by workload", "lost"),
        (
            "use-cases.json",
            "Hairpin traffic: our public names reached from inside",
            "frontend",
        ),
        (
            "use-cases.json",
            "Clients of an endpoint (connections over the range)",
            "frontend",
        ),
    ] {
        mon.panel_has(file, title, "workload", workload);
    }
    for q in [
        "histogram_quantile(0.99, sum by (le) (rate(sockscope_dns_latency_seconds_bucket[1m])))",
        "min by (instance, program) (sockscope_bpf_program_attached)",
        "max by (instance) (scrape_duration_seconds{job=~\".*sockscope.*\"})",
    ] {
        assert!(!mon.query(q).is_empty(), "{q}");
    }
}

/// Two namespaces' workloads connect to one database port: the shared-database and
/// dependency panels show it, and a new cross-namespace dependency reaches Alertmanager.
#[test]
fn database_shared_by_two_namespaces() {
    let env = Env::new("scenario-db", PEER);
    let shop = Pod::new(61, "shop", "frontend-5d8f7b9c6d-sssss", "web", true);
    let billing = Pod::new(62, "billing", "invoicer", "app", false);
    let db = Pod::new(63, "data", "db-0", "postgres", false);
    env.frontend(&shop);
    env.api.apply(billing.object(&env.net.a4, None, None));
    env.db(&db);
    // OTLP on, to a receiver, so the health dashboard's OTLP panel has data.
    let mut receiver = Command::new(PEER)
        .args(["otlp-receiver", "grpc", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("receiver");
    let mut out = std::io::BufReader::new(receiver.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("ready");
    let endpoint = format!(
        "http://127.0.0.1:{}",
        line.trim().trim_start_matches("ready ")
    );
    thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let _receiver = Daemon(receiver);
    let agent = env.agent(&[
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "grpc",
        "--otlp-interval",
        "1s",
    ]);
    let mon = Monitoring::start("db", agent.port);
    let mut srv = env.cg.spawn(
        &db.cgroup,
        &mut peer_cmd(
            PEER,
            Some(&env.net.b),
            &["tcp-server", "0.0.0.0:5432", "20"],
        ),
    );
    srv.line("ready ");
    let addr = format!("{}:5432", env.net.b4);
    for _ in 0..10 {
        for pod in [&shop, &billing] {
            let mut c = env.client(pod, &addr, 2000, 200, None);
            c.wait_ok();
        }
        thread::sleep(Duration::from_millis(300));
    }
    srv.wait_ok();
    mon.wait_alerts(&[
        ("SockscopeNewDependency", "workload", "frontend"),
        ("SockscopeNewDependency", "workload", "invoicer"),
    ]);
    for (file, title) in KUBERNETES_SCENARIO_PANELS
        .iter()
        .chain(&[("health.json", "OTLP exports and failures/s")])
    {
        mon.panel_returns_data(file, title);
    }
    let shared = mon.panel_has(
        "use-cases.json",
        "Databases shared by several namespaces",
        "remote_workload",
        "db",
    );
    assert!(
        shared
            .iter()
            .any(|r| r["metric"]["port"] == "5432" && r["value"][1] == "2"),
        "{shared:?}"
    );
    for ns in ["shop", "billing"] {
        mon.panel_has(
            "use-cases.json",
            "Clients of shared databases",
            "namespace",
            ns,
        );
        mon.panel_has(
            "dependencies.json",
            "Cross-namespace traffic (bytes over the range)",
            "namespace",
            ns,
        );
        mon.panel_has(
            "dependencies.json",
            "Workload -> peer (connections over the range)",
            "namespace",
            ns,
        );
    }
    // The node graph's node and edge frames.
    let d: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("dashboards/dependencies.json")).expect("d"),
    )
    .expect("json");
    let graph = d["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .find(|p| p["type"] == "nodeGraph")
        .expect("node graph");
    let nodes = mon.query(&fill(graph["targets"][0]["expr"].as_str().expect("nodes")));
    for id in ["shop/frontend", "billing/invoicer", "data/db"] {
        assert!(
            nodes.iter().any(|n| n["metric"]["id"] == id),
            "{id}: {nodes:?}"
        );
    }
    let edges = mon.query(&fill(graph["targets"][1]["expr"].as_str().expect("edges")));
    assert!(
        edges
            .iter()
            .any(|e| e["metric"]["source"] == "billing/invoicer"
                && e["metric"]["target"] == "data/db"),
        "{edges:?}"
    );
}

/// Loads `ruleset` (nft syntax) into network namespace `ns`.
fn nft(ns: &str, ruleset: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft (installed by scripts/setup.sh)");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), ruleset.as_bytes())
        .expect("ruleset");
    assert!(child.wait().expect("nft").success(), "nft -f failed");
}

/// TCP health and drops: connects through a full accept queue (one in each round waits for a
/// retransmitted SYN), connections closed with a reset (SO_LINGER 0) and connects refused,
/// datagrams an nftables output rule drops, and a connection over a link that holds packets
/// 15 ms each way. SockscopeTCPConnectLatencyHigh, SockscopeTCPResetsHigh and
/// SockscopePacketDropsHigh reach Alertmanager; the refused connects fire the connect-failure
/// alert and never the resets alert; and every query of the drops, resets, connect time, RTT
/// and lifetime panels has the value the traffic makes.
#[test]
fn slow_connects_resets_and_drops() {
    let start = Instant::now();
    // Clients in net.a, servers in net.b; net.a's output drops UDP to ports 20000-20999.
    let net = NetPair::new();
    let (a, b, b4) = (net.a.clone(), net.b.clone(), net.b4.clone());
    nft(
        &a,
        "table inet sockscope_scenario {\n  chain out {\n    type filter hook output priority 0;\n    udp dport 20000-20999 drop\n  }\n}\n",
    );
    // No SYN cookies in net.b: with a listen backlog of 0 the SYN queue counts as full while
    // one handshake is pending, and a second SYN then gets a cookie that the full accept
    // queue may not turn into a connection: the client's ACK is answered with a reset (seen:
    // one connection in 60). Without cookies that SYN is dropped and sent again after 1 s,
    // like the one the full accept queue drops.
    let st = Command::new("ip")
        .args([
            "netns",
            "exec",
            &b,
            "sysctl",
            "-qw",
            "net.ipv4.tcp_syncookies=0",
        ])
        .status()
        .expect("sysctl");
    assert!(st.success());
    // Two more namespaces joined by a link holding every packet 15 ms each way.
    let (far_a, far_b) = (Netns::new("fara"), Netns::new("farb"));
    let n = sockscope_tests::unique();
    let (addr_a, addr_b) = (format!("10.79.{n}.1"), format!("10.79.{n}.2"));
    let mut link = Proc::spawn(&mut peer_cmd(
        PEER,
        None,
        &[
            "tun-delay",
            &far_a.name,
            &addr_a,
            &far_b.name,
            &addr_b,
            "15",
        ],
    ));
    link.line("ready");
    let _link = Daemon(link.child);
    let cg = TestCgroup::new("scenario-tcp");
    let agent = Agent::start(PEER, &cg.root, &[]);
    let mon = Monitoring::start("tcp", agent.port);

    // Fixed ports, so each round adds to the series the first one made. A listener whose
    // accept queue holds one connection and that accepts nothing for 300 ms: of a client's
    // first two concurrent connects one is queued, the other's SYN dropped and sent again
    // after 1 s; the rest find the server accepting.
    let slow_round = |connections: &str| {
        let mut srv = cg.spawn(
            "accept-queue",
            &mut peer_cmd(
                PEER,
                Some(&b),
                &[
                    "tcp-server",
                    "0.0.0.0:7000",
                    connections,
                    "--backlog",
                    "0",
                    "--accept-after",
                    "300",
                ],
            ),
        );
        srv.line("ready ");
        let mut cli = cg.spawn(
            "slow-client",
            &mut peer_cmd(
                PEER,
                Some(&a),
                &[
                    "tcp-client",
                    &format!("{b4}:7000"),
                    connections,
                    "2",
                    "1000",
                    "100",
                ],
            ),
        );
        cli.wait_ok();
        srv.wait_ok();
    };
    let reset = || {
        let mut srv = cg.spawn(
            "reset-server",
            &mut peer_cmd(PEER, Some(&b), &["tcp-reset-server", "0.0.0.0:7001"]),
        );
        srv.line("ready ");
        let mut cli = cg.spawn(
            "reset-client",
            &mut peer_cmd(PEER, Some(&a), &["connect-reset", &format!("{b4}:7001")]),
        );
        cli.line("reset");
        cli.wait_ok();
        srv.wait_ok();
    };
    let refuse = || {
        let mut r = cg.spawn(
            "refuser",
            &mut peer_cmd(PEER, Some(&a), &["connect-refused", &format!("{b4}:7002")]),
        );
        r.line("refused");
        r.wait_ok();
    };
    let drop_burst = || {
        let mut d = cg.spawn(
            "dropper",
            &mut peer_cmd(
                PEER,
                Some(&a),
                &["udp-ports", &b4, "--ignore-errors", "20000-20499"],
            ),
        );
        assert_eq!(d.line("sent "), "500");
        d.wait_ok();
    };

    // First, one of each: every series exists and Prometheus has seen it, so what follows is
    // all increase.
    slow_round("4");
    reset();
    refuse();
    drop_burst();
    let mut far_srv = cg.spawn(
        "far-server",
        &mut peer_cmd(
            PEER,
            Some(&far_b.name),
            &["tcp-server", &format!("{addr_b}:7003"), "1"],
        ),
    );
    far_srv.line("ready ");
    let hold = signal_file("scenario-far-hold");
    let mut far = cg.spawn(
        "far-client",
        &mut peer_cmd(
            PEER,
            Some(&far_a.name),
            &[
                "tcp-client",
                &format!("{addr_b}:7003"),
                "1",
                "1",
                "200000",
                "20000",
                &hold.to_string_lossy(),
                "200000",
                "500",
            ],
        ),
    );
    far.totals("exchanged ");
    mon.wait_series(&[
        "sockscope_tcp_connect_duration_seconds_count{workload=\"slow-client\"}",
        "sockscope_tcp_connection_duration_seconds_count{workload=\"slow-client\", role=\"client\"}",
        "sockscope_tcp_resets_total{workload=\"reset-server\", direction=\"sent\"}",
        "sockscope_tcp_resets_total{workload=\"reset-client\", direction=\"received\"}",
        "sockscope_tcp_connections_opened_total{workload=\"reset-server\"}",
        "sockscope_tcp_connections_opened_total{workload=\"reset-client\"}",
        "sockscope_tcp_resets_total{workload=\"refuser\", direction=\"received\"}",
        "sockscope_tcp_connect_failures_total{workload=\"refuser\"}",
        "sockscope_packet_drops_total{workload=\"dropper\"}",
        "sockscope_packet_drops_total{workload=\"\", reason=\"NO_SOCKET\", direction=\"received\"}",
        "sockscope_tcp_rtt_seconds_count{workload=\"far-client\"}",
    ]);
    let seen = Instant::now();
    // Then enough of each for the alerts' rate floors over their 5-minute windows: 60 connects
    // on the slow edge (0.2/s, 3 or more of them slow: p99 in (1 s, 3 s]), 100 resets each way
    // and 100 refused connects (0.33/s), 3000 drops (10/s).
    for _ in 0..3 {
        slow_round("20");
    }
    for _ in 0..100 {
        reset();
        refuse();
    }
    for _ in 0..6 {
        drop_burst();
    }
    // The far connection's second exchange, and its close: RTT samples of the delaying link.
    std::fs::write(&hold, b"").expect("hold file");
    far.wait_ok();
    far_srv.wait_ok();
    let _ = std::fs::remove_file(&hold);

    let alerts = mon.wait_alerts(&[
        ("SockscopeTCPConnectLatencyHigh", "workload", "slow-client"),
        ("SockscopeTCPResetsHigh", "workload", "reset-server"),
        ("SockscopeTCPResetsHigh", "workload", "reset-client"),
        ("SockscopePacketDropsHigh", "workload", "dropper"),
        ("SockscopeTCPConnectFailuresHigh", "workload", "refuser"),
    ]);
    let fired = |name: &str, workload: &str| {
        alerts
            .iter()
            .find(|a| a["labels"]["alertname"] == name && a["labels"]["workload"] == workload)
            .cloned()
            .unwrap_or_default()
    };
    let latency = fired("SockscopeTCPConnectLatencyHigh", "slow-client");
    assert_eq!(latency["labels"]["port"], "7000", "{latency}");
    assert_eq!(latency["labels"]["remote_class"], "private", "{latency}");
    assert_eq!(latency["labels"]["severity"], "warning", "{latency}");
    for (workload, direction) in [("reset-server", "sent"), ("reset-client", "received")] {
        let resets = fired("SockscopeTCPResetsHigh", workload);
        assert_eq!(resets["labels"]["direction"], direction, "{resets}");
    }
    let drops = fired("SockscopePacketDropsHigh", "dropper");
    assert_eq!(drops["labels"]["reason"], "NETFILTER_DROP", "{drops}");
    assert_eq!(drops["labels"]["direction"], "sent", "{drops}");
    assert!(alerts.iter().all(|a| {
        a["annotations"]["runbook"]
            .as_str()
            .is_some_and(|r| r.len() > 40)
    }));
    // A refused connect is a reset received and a connect failure: the failure alert has it;
    // the resets alert never did (not even pending: its expression leaves them out), though
    // the resets were counted, over its floor.
    let window = format!("{}s", start.elapsed().as_secs() + 120);
    let refuser_resets = mon.query(&format!(
        "count_over_time(ALERTS{{alertname=\"SockscopeTCPResetsHigh\", workload=\"refuser\"}}[{window}])"
    ));
    assert!(
        refuser_resets.is_empty(),
        "{refuser_resets:?}\n{:?}",
        mon.query("workload_direction:sockscope_tcp_resets_after_connect:rate5m")
    );
    assert_eq!(
        mon.query("workload_direction:sockscope_tcp_resets:rate5m{workload=\"refuser\", direction=\"received\"} > 0.2")
            .len(),
        1,
        "the refused connects' resets are counted"
    );

    // The panels, over a window that holds the whole scenario: a rate times the window is
    // then what the counter grew by since Prometheus first saw it, extrapolated by at most
    // half a scrape interval before that sample and 1.1 after the last one (Prometheus's
    // rate): by a factor under 1 + 3 s / the time since then, slow scrapes included. So
    // counts are checked against the traffic. Nothing but the scenario adds to its
    // workloads' series.
    let w = (start.elapsed().as_secs() + 120) as f64;
    let window = format!("{w}s");
    let count_is = |expected: f64, extra: f64| {
        move |v: f64| {
            let most = (expected + extra) * (1.0 + 3.0 / seen.elapsed().as_secs_f64());
            (expected - 0.5..=most).contains(&(v * w))
        }
    };
    // Six bursts of 500, and whatever of the first burst Prometheus had not seen yet.
    mon.panel_value(
        ("overview.json", "Packet drops/s by workload and reason", 0),
        &window,
        &[
            ("workload", "dropper"),
            ("reason", "NETFILTER_DROP"),
            ("direction", "sent"),
        ],
        count_is(3000.0, 500.0),
    );
    for (workload, direction) in [
        ("reset-server", "sent"),
        ("reset-client", "received"),
        ("refuser", "received"),
    ] {
        mon.panel_value(
            ("overview.json", "TCP resets/s by workload", 0),
            &window,
            &[("workload", workload), ("direction", direction)],
            count_is(100.0, 0.0),
        );
    }
    // Nothing else resets: the node's sent are the reset server's, its received the reset
    // client's and the refuser's.
    let node_resets = ("health.json", "TCP resets/s by node", 0);
    mon.panel_value(
        node_resets,
        &window,
        &[("direction", "sent")],
        count_is(100.0, 0.0),
    );
    mon.panel_value(
        node_resets,
        &window,
        &[("direction", "received")],
        count_is(200.0, 0.0),
    );
    // Each refused SYN is dropped in net.b, where no socket has the port: the node's.
    mon.panel_value(
        ("health.json", "Node packet drops/s by reason", 0),
        &window,
        &[("reason", "NO_SOCKET"), ("direction", "received")],
        // Other tests' closed ports on this node add to it.
        |v| v * w >= 99.5,
    );
    // The slow edge: most connects at once (p50 under 10 ms), p99 one SYN retransmit.
    let edge = [
        ("workload", "slow-client"),
        ("remote_class", "private"),
        ("port", "7000"),
    ];
    let connect = "Connect time p50/p99 by edge";
    mon.panel_value(("dependencies.json", connect, 0), &window, &edge, |v| {
        v < 0.01
    });
    mon.panel_value(("dependencies.json", connect, 1), &window, &edge, |v| {
        v > 1.0 && v <= 3.0
    });
    // The delaying link's round trip, 30 ms: every sample in (10 ms, 50 ms].
    let far_edge = [
        ("workload", "far-client"),
        ("remote_class", "private"),
        ("port", "7003"),
    ];
    for target in [0, 1] {
        mon.panel_value(
            ("dependencies.json", "RTT p50/p99 by edge", target),
            &window,
            &far_edge,
            |v| v > 0.01 && v <= 0.05,
        );
    }
    // The slow edge's connections carry one exchange each (p50 under 100 ms); the first of
    // each round waited 300 ms in the accept queue for the server to accept it (p99 over
    // 100 ms), none anywhere near 10 s.
    let lifetime = "Connection lifetime p50/p99 by edge";
    mon.panel_value(("dependencies.json", lifetime, 0), &window, &edge, |v| {
        v <= 0.1
    });
    mon.panel_value(("dependencies.json", lifetime, 1), &window, &edge, |v| {
        v > 0.1 && v <= 10.0
    });
}

/// From runtime to configuration: workloads talk (one of them asks for a watchlisted name, a
/// meshed pod's application goes around its sidecar), sockscope and Prometheus record it, and
/// the alerts reach Alertmanager. `sockscope policy` run against that Prometheus writes
/// policies that `--audit` finds allow every observed edge; a flow made afterwards is one they
/// would deny.
#[test]
fn observed_traffic_becomes_policy() {
    let env = Env::new("scenario-policy", PEER);
    let frontend = Pod::new(71, "shop", "frontend-5d8f7b9c6d-ppppp", "web", true);
    let invoicer = Pod::new(72, "billing", "invoicer", "app", false);
    let db = Pod::new(73, "data", "db-0", "postgres", false);
    let meshed = Pod::new(74, "shop", "meshed", "app", false);
    let sidecar_id = "5e".repeat(32);
    let sidecar = Pod {
        container: "istio-proxy",
        cgroup: format!("kubepods/besteffort/pod{}/{sidecar_id}", meshed.uid),
        container_id: sidecar_id.clone(),
        ..Pod::new(74, "shop", "meshed", "istio-proxy", false)
    };
    env.frontend(&frontend);
    env.api.apply(invoicer.object(&env.net.a4, None, None));
    env.db(&db);
    env.api.apply(objects::pod(
        "shop",
        "meshed",
        &meshed.uid,
        NODE,
        &env.net.a4,
        None,
        None,
        &[("app", &meshed.container_id), ("istio-proxy", &sidecar_id)],
    ));
    // What the policies select by: the controllers, the namespaces, the Service's selector.
    for (i, ns) in ["shop", "data", "billing"].iter().enumerate() {
        env.api
            .apply(objects::namespace(ns, &objects::uid(940 + i as u64), &[]));
    }
    env.api.apply(objects::controller(
        "Deployment",
        "shop",
        "frontend",
        &objects::uid(950),
        &[("app", "frontend")],
        &[],
        &[],
    ));
    env.api.apply(objects::controller(
        "StatefulSet",
        "data",
        "db",
        &objects::uid(951),
        &[("app", "db")],
        &[],
        &[("pg", 5432)],
    ));
    env.api.apply(objects::service_with(
        "data",
        "db-primary",
        &objects::uid(920),
        sockscope_tests::fake_cluster::CLUSTER_IP,
        &[],
        &[("app", "db")],
        &[("pg", 5432, "TCP", serde_json::json!(5432))],
    ));
    let dns = DnsServer::start(&[("web", "A", "{server4}")], false);
    let dir =
        std::env::temp_dir().join(format!("sockscope-scenario-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let list = dir.join("threats.txt");
    std::fs::write(&list, "evil.sockscope.test\n").expect("list");
    let agent = env.agent(&["--dns-watchlist", &format!("threats={}", list.display())]);
    let mon = Monitoring::start("policy", agent.port);

    let mut srv = env.cg.spawn(
        &db.cgroup,
        &mut peer_cmd(
            PEER,
            Some(&env.net.b),
            &["tcp-server", "0.0.0.0:5432", "22"],
        ),
    );
    srv.line("ready ");
    let mut proxy = env.cg.spawn(
        &sidecar.cgroup,
        &mut peer_cmd(
            PEER,
            Some(&env.net.a),
            &["tcp-server", "127.0.0.1:15001", "2"],
        ),
    );
    proxy.line("ready ");
    let service = format!("{}:5432", sockscope_tests::fake_cluster::CLUSTER_IP);
    let direct = format!("{}:5432", env.net.b4);
    for i in 0..12 {
        if i < 5 {
            env.client(&frontend, &service, 100, 100, None).wait_ok();
            env.client(&invoicer, &direct, 100, 100, None).wait_ok();
        }
        if i < 2 {
            // Through the sidecar (the proxy's accept matches this connect).
            env.client(&meshed, "127.0.0.1:15001", 10, 10, None)
                .wait_ok();
        }
        // Around it, straight to the database, and UDP past the mesh.
        env.client(&meshed, &direct, 10, 10, None).wait_ok();
        env.cg
            .spawn(
                &meshed.cgroup,
                &mut peer_cmd(PEER, Some(&env.net.a), &["udp-ports", &env.net.b4, "9999"]),
            )
            .wait_ok();
        if i % 4 == 0 {
            for name in ["evil.sockscope.test.", "web.sockscope.test."] {
                env.cg
                    .spawn(&frontend.cgroup, &mut dns.kdig(name, "A"))
                    .wait_ok();
            }
        }
        thread::sleep(Duration::from_millis(400));
    }
    srv.wait_ok();
    proxy.wait_ok();
    mon.wait_alerts(&[
        ("SockscopeNewDependency", "workload", "frontend"),
        ("SockscopeNewDependency", "workload", "invoicer"),
        (
            "SockscopeWatchlistDomainQueried",
            "qname",
            "evil.sockscope.test",
        ),
        ("SockscopeSidecarBypass", "pod", "meshed"),
    ]);
    for (file, title) in POLICY_SCENARIO_PANELS {
        mon.panel_returns_data(file, title);
    }
    mon.panel_has(
        "dns.json",
        "Watchlist domains queried",
        "qname",
        "evil.sockscope.test",
    );

    // The policies, from what Prometheus holds.
    let policy = |args: &[&str]| {
        let out = Command::new(sockscope_bin(PEER))
            .arg("policy")
            .args(["--prometheus", &format!("http://127.0.0.1:{}", mon.prom)])
            .args(["--window", "30m", "--kubeconfig"])
            .arg(&env.kubeconfig)
            .args(args)
            .output()
            .expect("sockscope policy");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, generated, err) = policy(&[]);
    assert_eq!(code, Some(0), "{err}\n{generated}");
    for name in [
        "sockscope-frontend",
        "sockscope-invoicer",
        "sockscope-db",
        "sockscope-meshed",
    ] {
        assert!(
            generated.contains(&format!("name: \"{name}\"")),
            "{name} missing:\n{generated}"
        );
    }
    // frontend reached the database through its Service: allowed to the StatefulSet's pods.
    assert!(generated.contains("app: \"db\""), "{generated}");
    let file = dir.join("policies.yaml");
    std::fs::write(&file, &generated).expect("write");
    let (code, table, err) = policy(&["--audit", file.to_str().expect("path")]);
    assert_eq!(
        code,
        Some(0),
        "observed traffic denied:\n{table}{err}\n{generated}"
    );
    assert!(table.contains("\n0 denied"), "{table}");

    // A flow nobody made before: the policies would deny it, at both ends.
    let mut admin = env.cg.spawn(
        &db.cgroup,
        &mut peer_cmd(PEER, Some(&env.net.b), &["tcp-server", "0.0.0.0:6432", "1"]),
    );
    admin.line("ready ");
    env.client(&invoicer, &format!("{}:6432", env.net.b4), 10, 10, None)
        .wait_ok();
    admin.wait_ok();
    mon.wait_series(&[
        "sockscope_tcp_connections_opened_total{port=\"6432\", role=\"client\"}",
        "sockscope_tcp_connections_opened_total{port=\"6432\", role=\"server\"}",
    ]);
    let (code, table, err) = policy(&["--audit", file.to_str().expect("path")]);
    assert_eq!(code, Some(1), "{table}{err}");
    let denied: Vec<&str> = table.lines().filter(|l| l.starts_with("denied")).collect();
    assert!(
        denied.iter().any(|l| l.contains("data/db")
            && l.contains("ingress")
            && l.contains("billing/invoicer")
            && l.contains("6432/TCP")),
        "{table}"
    );
    assert!(
        denied.iter().any(|l| l.contains("billing/invoicer")
            && l.contains("egress")
            && l.contains("data/db")
            && l.contains("6432/TCP")),
        "{table}"
    );
    // Only the new flow. (The client pods here share one address, so the server's side
    // may name the client as any of them: more rows, all of that flow.)
    assert!(
        denied.iter().all(|l| l.contains("6432/TCP")),
        "only the new flow: {table}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
