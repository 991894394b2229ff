//! The alerts and dashboards against real data: sockscope, Debian's Prometheus (1 s scrapes,
//! the rules loaded with their `for` windows shortened) and Alertmanager, and scenario traffic
//! in the test's cgroups: an NXDOMAIN storm, refused connects, and connections to one of "our
//! own" public names. The expected alerts must reach Alertmanager, and the dashboard panels
//! about those scenarios must return data for the scenario's series.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use sockscope_tests::{Agent, TestCgroup, dns::DnsServer, free_port, http_get, peer_cmd};

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

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Result vector of an instant query.
fn query(port: u16, q: &str) -> Vec<Value> {
    let (_, body) =
        http_get(port, &format!("/api/v1/query?query={}", urlencode(q)), None).expect("query");
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

#[test]
fn alerts_reach_alertmanager_and_panels_show_the_scenarios() {
    let dir = std::env::temp_dir().join(format!("sockscope-scenario-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");

    // The DNS server's namespace pair carries the traffic: clients in net.a, servers in net.b.
    let dns = DnsServer::start(&[("www", "A", PUBLIC_IP)], false);
    let (a, b, b4) = (dns.net.a.clone(), dns.net.b.clone(), dns.net.b4.clone());
    let st = Command::new("sh")
        .args(["-c", &format!("ip -n {b} addr add {PUBLIC_IP}/32 dev lo && ip -n {a} route add {PUBLIC_IP}/32 via {b4}")])
        .status()
        .expect("ip");
    assert!(st.success());

    let cg = TestCgroup::new("scenario");
    let agent = Agent::start(PEER, &cg.root, &[]);

    // Alertmanager, and Prometheus with the rules (for: windows shortened to fit a test).
    let am_port = free_port();
    std::fs::write(
        dir.join("alertmanager.yml"),
        "route: {receiver: default, group_wait: 1s, group_interval: 1s}\nreceivers: [{name: default}]\n",
    )
    .expect("am config");
    let _am = spawn(
        Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}/alertmanager.yml", dir.display()))
            .arg(format!("--storage.path={}/am", dir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address="),
    );
    let rules = std::fs::read_to_string(repo.join("alerts/sockscope.rules.yml")).expect("rules");
    let rules = rules
        .replace("for: 10m", "for: 0s")
        .replace("for: 5m", "for: 0s")
        .replace("interval: 30s", "interval: 1s");
    std::fs::write(dir.join("rules.yml"), rules).expect("rules copy");
    let prom_port = free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [rules.yml]\n\
             alerting: {{alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]}}]}}\n\
             scrape_configs:\n  - job_name: sockscope\n    static_configs: [{{targets: ['127.0.0.1:{}']}}]\n",
            agent.port
        ),
    )
    .expect("prometheus config");
    let _prom = spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}/prometheus.yml", dir.display()))
            .arg(format!("--storage.tsdb.path={}/data", dir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}")),
    );
    wait_ready(prom_port, "/-/ready");
    wait_ready(am_port, "/-/ready");

    // Scenario traffic, repeated for 20 s so rates are well above the thresholds.
    let mut srv = cg.spawn(
        "web",
        &mut peer_cmd(PEER, Some(&b), &["tcp-server", "0.0.0.0:0", "40"]),
    );
    let port = srv.line("ready ");
    let end = Instant::now() + Duration::from_secs(20);
    let mut hairpins = 0;
    while Instant::now() < end {
        // An NXDOMAIN storm from "storm".
        for i in 0..5 {
            let mut q = cg.spawn(
                "storm",
                &mut dns.kdig(&format!("missing-{i}.sockscope.test"), "A"),
            );
            q.child.wait().expect("kdig");
        }
        // Refused connects from "dialer" (nothing listens on port 1).
        let mut r = cg.spawn(
            "dialer",
            &mut peer_cmd(PEER, Some(&a), &["connect-refused", &format!("{b4}:1")]),
        );
        r.wait_ok();
        // "frontend" reaching our own public name from inside.
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

    // The alerts reach Alertmanager.
    let want = [
        ("SockscopeDNSNXDOMAINRatioHigh", "storm"),
        ("SockscopeTCPConnectFailuresHigh", "dialer"),
        ("SockscopeHairpinTraffic", "frontend"),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = http_get(am_port, "/api/v2/alerts", None).unwrap_or((0, String::new()));
        let alerts: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
        let got = |name: &str, workload: &str| {
            alerts
                .iter()
                .any(|a| a["labels"]["alertname"] == name && a["labels"]["workload"] == workload)
        };
        if want.iter().all(|(n, w)| got(n, w)) {
            // Each carries its runbook.
            assert!(alerts.iter().all(|a| {
                a["annotations"]["runbook"]
                    .as_str()
                    .is_some_and(|r| r.len() > 40)
            }));
            break;
        }
        let names: Vec<String> = alerts
            .iter()
            .map(|a| format!("{}/{}", a["labels"]["alertname"], a["labels"]["workload"]))
            .collect();
        assert!(
            Instant::now() < deadline,
            "alerts in Alertmanager: {names:?}; Prometheus: {:?}",
            query(prom_port, "ALERTS")
        );
        thread::sleep(Duration::from_secs(1));
    }
    drop(srv);

    // The panels about these scenarios return the scenario's series.
    let fill = |e: &str| {
        e.replace("$__rate_interval", "1m")
            .replace("$__range", "5m")
            .replace("$cluster", ".*")
            .replace("$namespace", ".*")
            .replace("$workload", ".*")
            .replace("$own_hosts", "(.+\\\\.)?sockscope\\\\.test")
            .replace("$endpoint", "www\\\\.sockscope\\\\.test")
    };
    let mut checked = Vec::new();
    for (file, title, workload) in [
        ("overview.json", "TCP bytes sent/s by workload", "frontend"),
        (
            "overview.json",
            "Top talkers (bytes over the range)",
            "frontend",
        ),
        ("overview.json", "Connections opened/s", "frontend"),
        ("overview.json", "Connect failures/s", "dialer"),
        (
            "dependencies.json",
            "Remote hosts per workload (connections over the range)",
            "frontend",
        ),
        (
            "dependencies.json",
            "External (public) destinations",
            "frontend",
        ),
        ("dns.json", "Queries/s by workload", "storm"),
        ("dns.json", "Top qnames (queries over the range)", "storm"),
        ("dns.json", "NXDOMAIN ratio by workload", "storm"),
        (
            "dns.json",
            "Failing names (NXDOMAIN/SERVFAIL over the range)",
            "storm",
        ),
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
        let d: Value = serde_json::from_str(
            &std::fs::read_to_string(repo.join("dashboards").join(file)).expect("dashboard"),
        )
        .expect("json");
        let panel = d["panels"]
            .as_array()
            .expect("panels")
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("{file}: no panel {title:?}"));
        let expr = fill(panel["targets"][0]["expr"].as_str().expect("expr"));
        let result = query(prom_port, &expr);
        assert!(
            result.iter().any(|r| r["metric"]["workload"] == workload),
            "{file} / {title}: no series for {workload}: {expr}\n{result:?}"
        );
        checked.push(title);
    }
    // Latency percentiles and health panels have data too.
    for q in [
        "histogram_quantile(0.99, sum by (le) (rate(sockscope_dns_latency_seconds_bucket[1m])))",
        "min by (instance, program) (sockscope_bpf_program_attached)",
        "max by (instance) (scrape_duration_seconds{job=~\".*sockscope.*\"})",
    ] {
        assert!(!query(prom_port, q).is_empty(), "{q}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
