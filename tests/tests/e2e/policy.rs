//! `sockscope policy` and `sockscope egress` against a week of recorded traffic: synthetic
//! sockscope series written as OpenMetrics, turned into TSDB blocks by `promtool tsdb
//! create-blocks-from openmetrics` and served by a real Prometheus, with the in-test
//! Kubernetes API describing the workloads (Deployments, a StatefulSet, a CronJob, a bare pod,
//! CoreDNS behind the kube-dns Service). The outputs are compared with golden files
//! (`SOCKSCOPE_BLESS=1` rewrites them); Kubernetes policies pass kubernetes-validate
//! --strict, Cilium policies a structural check; `--audit` finds planted denies.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sockscope_tests::{
    fake_apiserver::{KubeApi, objects},
    free_port, http_get,
    manifests::yaml_documents,
    sockscope_bin, unique, venv,
};

const PEER: &str = env!("CARGO_BIN_EXE_sockscope-peer");
/// End of the recorded week: 2026-11-30T00:00:00Z.
const END: i64 = 1_795_996_800;
const STEP: i64 = 300;
const DAY: i64 = 86_400;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One synthetic series: its family, labels, and its counter value at a time (None: no
/// sample then).
struct Series {
    family: &'static str,
    labels: Vec<(&'static str, String)>,
    value: Box<dyn Fn(i64) -> Option<f64>>,
}

/// The flow labels of a row, local then remote.
#[allow(clippy::too_many_arguments)]
fn flow(
    (namespace, workload, kind): (&str, &str, &str),
    role: &str,
    (class, rns, rwl, host): (&str, &str, &str, &str),
    port: u16,
    ip: &str,
) -> Vec<(&'static str, String)> {
    let pod = if kind == "Pod" || workload.is_empty() {
        workload.to_string()
    } else {
        format!("{workload}-7d9f8b6c5d-x2x4z")
    };
    vec![
        ("namespace", namespace.into()),
        ("workload", workload.into()),
        ("workload_kind", kind.into()),
        ("pod", pod),
        ("container", "main".into()),
        ("remote_namespace", rns.into()),
        ("remote_workload", rwl.into()),
        ("remote_host", host.into()),
        ("remote_class", class.into()),
        ("port", port.to_string()),
        ("role", role.into()),
        ("remote_ip", ip.into()),
    ]
}

/// A counter growing by `per_step` every 5 minutes between `from` and `to` (seconds before
/// END), present with its last value until `until`.
fn growing(per_step: f64, from: i64, to: i64) -> Box<dyn Fn(i64) -> Option<f64>> {
    Box::new(move |t| {
        let start = END - from;
        let stop = END - to;
        if t < start {
            return None;
        }
        Some(per_step * (((t.min(stop) - start) / STEP) as f64 + 1.0))
    })
}

const FRONTEND: (&str, &str, &str) = ("shop", "frontend", "Deployment");
const CART: (&str, &str, &str) = ("shop", "cart", "Deployment");
const POSTGRES: (&str, &str, &str) = ("data", "postgres", "StatefulSet");
const REPORTER: (&str, &str, &str) = ("shop", "reporter", "CronJob");
const TOOLBOX: (&str, &str, &str) = ("ops", "toolbox", "Pod");

/// The week: 8 days of samples (the window is the last 7).
fn week() -> Vec<Series> {
    let s = std::cell::RefCell::new(Vec::new());
    let tcp = |labels: Vec<(&'static str, String)>, conns: f64, bytes: f64, from: i64, to: i64| {
        let mut s = s.borrow_mut();
        s.push(Series {
            family: "sockscope_tcp_connections_opened",
            labels: labels.clone(),
            value: growing(conns, from, to),
        });
        s.push(Series {
            family: "sockscope_tcp_sent_bytes",
            labels: labels.clone(),
            value: growing(bytes, from, to),
        });
        s.push(Series {
            family: "sockscope_tcp_received_bytes",
            labels,
            value: growing(bytes * 3.0, from, to),
        });
    };
    let all = (8 * DAY, 0);
    // frontend -> Service shop/cart:80 (targetPort "http" = 8080 on cart's pods).
    tcp(
        flow(
            FRONTEND,
            "client",
            ("service", "shop", "cart", ""),
            80,
            "10.96.0.20",
        ),
        10.0,
        4000.0,
        all.0,
        all.1,
    );
    tcp(
        flow(
            CART,
            "server",
            ("pod", "shop", "frontend", ""),
            8080,
            "10.244.0.11",
        ),
        10.0,
        12000.0,
        all.0,
        all.1,
    );
    // cart -> postgres pods directly.
    tcp(
        flow(
            CART,
            "client",
            ("pod", "data", "postgres", ""),
            5432,
            "10.244.0.30",
        ),
        1.0,
        900.0,
        all.0,
        all.1,
    );
    tcp(
        flow(
            POSTGRES,
            "server",
            ("pod", "shop", "cart", ""),
            5432,
            "10.244.0.12",
        ),
        1.0,
        2700.0,
        all.0,
        all.1,
    );
    // frontend -> two addresses of a payment API and a CDN, named by DNS.
    for ip in ["203.0.113.10", "203.0.113.11"] {
        tcp(
            flow(
                FRONTEND,
                "client",
                ("public", "", "", "api.stripe.example"),
                443,
                ip,
            ),
            2.0,
            500.0,
            6 * DAY,
            0,
        );
    }
    tcp(
        flow(
            FRONTEND,
            "client",
            ("public", "", "", "cdn.example.net"),
            443,
            "198.51.100.7",
        ),
        1.0,
        100.0,
        all.0,
        2 * DAY,
    );
    // The bare toolbox pod reaches frontend's pods directly.
    tcp(
        flow(
            TOOLBOX,
            "client",
            ("pod", "shop", "frontend", ""),
            8080,
            "10.244.0.11",
        ),
        1.0,
        10.0,
        3 * DAY,
        3 * DAY - 3600,
    );
    tcp(
        flow(
            FRONTEND,
            "server",
            ("pod", "ops", "toolbox", ""),
            8080,
            "10.244.0.40",
        ),
        1.0,
        10.0,
        3 * DAY,
        3 * DAY - 3600,
    );
    // kubelet probes from the node.
    tcp(
        flow(
            FRONTEND,
            "server",
            ("node", "", "test-node", ""),
            8080,
            "192.0.2.10",
        ),
        1.0,
        50.0,
        all.0,
        all.1,
    );
    // The CronJob connected once, three days ago, and its counter never moved again: no
    // increase() in the window, yet observed.
    for (family, v) in [
        ("sockscope_tcp_connections_opened", 1.0),
        ("sockscope_tcp_sent_bytes", 200.0),
        ("sockscope_tcp_received_bytes", 800.0),
    ] {
        s.borrow_mut().push(Series {
            family,
            labels: flow(
                REPORTER,
                "client",
                ("public", "", "", "reports.example.org"),
                443,
                "",
            ),
            value: Box::new(move |t| (t >= END - 3 * DAY).then_some(v)),
        });
    }
    // The CronJob asks the Kubernetes API: the Service default/kubernetes, whose endpoints
    // (no selector) are the API servers on 6443.
    tcp(
        flow(
            REPORTER,
            "client",
            ("service", "default", "kubernetes", ""),
            443,
            "10.96.0.1",
        ),
        1.0,
        300.0,
        3 * DAY,
        3 * DAY - 1800,
    );
    // An edge that ended before the window: not in any policy.
    tcp(
        flow(
            CART,
            "client",
            ("public", "", "", "legacy.example.com"),
            8443,
            "192.0.2.99",
        ),
        5.0,
        100.0,
        8 * DAY,
        7 * DAY + 3600,
    );
    // Host processes and loopback: left out.
    tcp(
        flow(
            ("", "sshd.service", ""),
            "server",
            ("private", "", "", ""),
            22,
            "10.1.1.1",
        ),
        1.0,
        10.0,
        all.0,
        all.1,
    );
    tcp(
        flow(CART, "client", ("loopback", "", "", ""), 15000, "127.0.0.1"),
        1.0,
        10.0,
        all.0,
        all.1,
    );
    // DNS: frontend over the kube-dns Service; reporter's queries went where sockscope could
    // not name (a node-local cache): its DNS rule comes from the API.
    let udp = |labels: Vec<(&'static str, String)>, bytes: f64| {
        for family in ["sockscope_udp_sent_bytes", "sockscope_udp_received_bytes"] {
            s.borrow_mut().push(Series {
                family,
                labels: labels.clone(),
                value: growing(bytes, 8 * DAY, 0),
            });
        }
    };
    udp(
        flow(
            FRONTEND,
            "client",
            ("service", "kube-system", "kube-dns", ""),
            53,
            "10.96.0.10",
        ),
        600.0,
    );
    for (w, qname) in [
        (FRONTEND, "api.stripe.example"),
        (REPORTER, "reports.example.org"),
    ] {
        s.borrow_mut().push(Series {
            family: "sockscope_dns_queries",
            labels: vec![
                ("namespace", w.0.into()),
                ("workload", w.1.into()),
                ("workload_kind", w.2.into()),
                ("pod", format!("{}-x", w.1)),
                ("container", "main".into()),
                ("qname", qname.into()),
                ("qtype", "A".into()),
                ("qname_class", "external".into()),
            ],
            value: growing(3.0, 5 * DAY, 0),
        });
    }
    s.into_inner()
}

/// The week as OpenMetrics text: each family's series together, samples in time order.
fn openmetrics(series: &[Series]) -> String {
    let mut out = String::new();
    let mut families: Vec<&str> = series.iter().map(|s| s.family).collect();
    families.dedup();
    families.sort();
    families.dedup();
    for family in families {
        writeln!(out, "# TYPE {family} counter").expect("write");
        for s in series.iter().filter(|s| s.family == family) {
            let labels: Vec<String> = s
                .labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            let labels = labels.join(",");
            let mut t = END - 8 * DAY;
            while t <= END {
                if let Some(v) = (s.value)(t) {
                    writeln!(out, "{family}_total{{{labels}}} {v} {t}").expect("write");
                }
                t += STEP;
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// The workloads, Services, namespaces and node of the week.
fn cluster(api: &KubeApi) {
    let mut n = 9000;
    let mut uid = || {
        n += 1;
        objects::uid(n)
    };
    for ns in ["shop", "data", "ops", "kube-system"] {
        api.apply(objects::namespace(ns, &uid(), &[("team", ns)]));
    }
    api.apply(objects::controller(
        "Deployment",
        "shop",
        "frontend",
        &uid(),
        &[("app", "frontend")],
        &[("tier", "web")],
        &[("http", 8080)],
    ));
    api.apply(objects::controller(
        "Deployment",
        "shop",
        "cart",
        &uid(),
        &[("app", "cart")],
        &[],
        &[("http", 8080)],
    ));
    api.apply(objects::service_with(
        "shop",
        "cart",
        &uid(),
        "10.96.0.20",
        &[],
        &[("app", "cart")],
        &[("web", 80, "TCP", json!("http"))],
    ));
    api.apply(objects::controller(
        "StatefulSet",
        "data",
        "postgres",
        &uid(),
        &[("app", "postgres")],
        &[],
        &[("pg", 5432)],
    ));
    api.apply(objects::cronjob(
        "shop",
        "reporter",
        &uid(),
        &[("app", "reporter")],
    ));
    api.apply(objects::with_labels(
        objects::pod(
            "ops",
            "toolbox",
            &uid(),
            "test-node",
            "10.244.0.40",
            None,
            None,
            &[("main", "c0ffee")],
        ),
        &[("run", "toolbox")],
    ));
    api.apply(objects::controller(
        "Deployment",
        "kube-system",
        "coredns",
        &uid(),
        &[("k8s-app", "kube-dns")],
        &[],
        &[("dns-tcp", 53)],
    ));
    let coredns_uid = uid();
    api.apply(objects::with_labels(
        objects::pod(
            "kube-system",
            "coredns-5d78c9869d-abcde",
            &coredns_uid,
            "test-node",
            "10.244.0.2",
            Some(("ReplicaSet", "coredns-5d78c9869d")),
            Some("5d78c9869d"),
            &[("coredns", "d0d0")],
        ),
        &[("k8s-app", "kube-dns"), ("pod-template-hash", "5d78c9869d")],
    ));
    api.apply(objects::replicaset(
        "kube-system",
        "coredns-5d78c9869d",
        &uid(),
        "coredns",
    ));
    api.apply(objects::service_with(
        "kube-system",
        "kube-dns",
        &uid(),
        "10.96.0.10",
        &[("k8s-app", "kube-dns")],
        &[("k8s-app", "kube-dns")],
        &[
            ("dns", 53, "UDP", json!(53)),
            ("dns-tcp", 53, "TCP", json!(53)),
        ],
    ));
    api.apply(objects::node("test-node", &uid(), "192.0.2.10"));
    api.apply(objects::service_with(
        "default",
        "kubernetes",
        &uid(),
        "10.96.0.1",
        &[("component", "apiserver")],
        &[],
        &[("https", 443, "TCP", json!(6443))],
    ));
    api.apply(objects::endpointslice(
        "default",
        "kubernetes",
        &uid(),
        &["192.0.2.1"],
        ("https", 6443),
    ));
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Prometheus serving the week's blocks, and the API.
struct Week {
    _prom: Daemon,
    prom: u16,
    api: KubeApi,
    dir: PathBuf,
}

impl Week {
    fn start() -> Week {
        let dir = std::env::temp_dir().join(format!(
            "sockscope-policy-{}-{}",
            std::process::id(),
            unique()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("dir");
        let input = dir.join("week.om");
        std::fs::write(&input, openmetrics(&week())).expect("write");
        let out = Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
            .arg(&input)
            .arg(dir.join("data"))
            .output()
            .expect("promtool (installed by scripts/setup.sh)");
        assert!(
            out.status.success(),
            "promtool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(dir.join("prometheus.yml"), "global: {}\n").expect("config");
        let prom = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}/prometheus.yml", dir.display()))
            .arg(format!("--storage.tsdb.path={}/data", dir.display()))
            // The week is in the past: nothing may be deleted as too old.
            .arg("--storage.tsdb.retention.time=100y")
            .arg(format!("--web.listen-address=127.0.0.1:{prom}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus");
        let prom_daemon = Daemon(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(http_get(prom, "/-/ready", None), Ok((200, _))) {
            assert!(Instant::now() < deadline, "Prometheus not ready");
            thread::sleep(Duration::from_millis(200));
        }
        let api = KubeApi::start();
        cluster(&api);
        Week {
            _prom: prom_daemon,
            prom,
            api,
            dir,
        }
    }

    /// Runs `sockscope` with `args` against the week: (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let url = format!("http://127.0.0.1:{}", self.prom);
        let mut cmd = Command::new(sockscope_bin(PEER));
        cmd.args(args)
            .args(["--prometheus", &url, "--at", &END.to_string()])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        if args[0] == "policy" {
            cmd.arg("--kubeconfig").arg(self.api.kubeconfig(&self.dir));
        }
        let out = cmd.output().expect("sockscope");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Week {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Compares `text` with golden file `name` (tests/golden/), or rewrites it with
/// SOCKSCOPE_BLESS=1.
fn golden(name: &str, text: &str) {
    let path = repo().join("tests/golden").join(name);
    if std::env::var_os("SOCKSCOPE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
        std::fs::write(&path, text).expect("bless");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (SOCKSCOPE_BLESS=1 writes it)", path.display()));
    assert!(
        want == text,
        "{name} differs from the golden file (SOCKSCOPE_BLESS=1 rewrites it):\n--- want\n{want}\n--- got\n{text}"
    );
}

/// kubernetes-validate --strict on `yaml`.
fn validate(yaml: &str, dir: &Path) {
    let file = dir.join(format!("validate-{}.yaml", unique()));
    std::fs::write(&file, yaml).expect("write");
    let out = Command::new(venv().join("bin/kubernetes-validate"))
        .args(["--strict", "-k", "1.33.0"])
        .arg(&file)
        .output()
        .expect("kubernetes-validate (installed by scripts/setup.sh)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate:\n{text}\n{yaml}");
    assert!(
        text.lines().all(|l| l.starts_with("INFO")),
        "kubernetes-validate:\n{text}"
    );
}

fn documents(yaml: &str) -> Vec<Value> {
    yaml_documents(yaml)
}

fn policy_named<'a>(docs: &'a [Value], name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no policy {name} in {docs:?}"))
}

#[test]
fn kubernetes_policies_from_a_week_of_traffic() {
    let week = Week::start();
    let (code, out, err) = week.run(&["policy", "--format", "kubernetes"]);
    assert_eq!(code, 0, "{err}\n{out}");
    validate(&out, &week.dir);
    let docs = documents(&out);
    let names: Vec<&str> = docs
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "sockscope-postgres",
            "sockscope-toolbox",
            "sockscope-cart",
            "sockscope-frontend",
            "sockscope-reporter"
        ],
        "{out}"
    );
    let frontend = policy_named(&docs, "sockscope-frontend");
    assert_eq!(
        frontend["spec"]["podSelector"],
        json!({"matchLabels": {"app": "frontend"}})
    );
    let egress = frontend["spec"]["egress"].to_string();
    // The Service's port 80 is the backends' targetPort "http", 8080.
    assert!(
        egress.contains(r#""podSelector":{"matchLabels":{"app":"cart"}}"#),
        "{egress}"
    );
    assert!(
        egress.contains(r#"{"port":8080,"protocol":"TCP"}"#),
        "{egress}"
    );
    // DNS to CoreDNS, selected by the Service's selector, over UDP and TCP.
    assert!(
        egress.contains(r#"{"matchLabels":{"k8s-app":"kube-dns"}}"#),
        "{egress}"
    );
    assert!(
        egress.contains(r#"{"port":53,"protocol":"UDP"},{"port":53,"protocol":"TCP"}"#)
            || egress.contains(r#"{"port":53,"protocol":"TCP"},{"port":53,"protocol":"UDP"}"#),
        "{egress}"
    );
    // Two addresses that fill a /31, and one alone.
    assert!(egress.contains("203.0.113.10/31"), "{egress}");
    assert!(egress.contains("198.51.100.7/32"), "{egress}");
    assert!(
        out.contains("hostnames seen: api.stripe.example, cdn.example.net"),
        "{out}"
    );
    // Ingress: the toolbox pod (bare: its labels), the node (kubelet probes).
    let ingress = frontend["spec"]["ingress"].to_string();
    assert!(
        ingress.contains(r#"{"matchLabels":{"run":"toolbox"}}"#),
        "{ingress}"
    );
    assert!(ingress.contains("192.0.2.10/32"), "{ingress}");
    // The edge that ended before the window, loopback and host processes are not there.
    assert!(!out.contains("legacy"), "{out}");
    assert!(!out.contains("15000"), "{out}");
    assert!(
        out.contains("# Left out: owner outside Kubernetes (host process)"),
        "{out}"
    );
    // The CronJob's single connection, and its DNS from the API (no row named it).
    let reporter = policy_named(&docs, "sockscope-reporter").to_string();
    assert!(
        reporter.contains(r#""cidr":"0.0.0.0/0","except":["10.0.0.0/8""#),
        "{reporter}"
    );
    assert!(reporter.contains(r#""port":443"#), "{reporter}");
    assert!(reporter.contains("kube-dns"), "{reporter}");
    // The API server, through the endpoints of its Service (which has no selector).
    assert!(
        reporter.contains(r#"{"ipBlock":{"cidr":"192.0.2.1/32"}}"#)
            && reporter.contains(r#"{"port":6443,"protocol":"TCP"}"#),
        "{reporter}"
    );
    golden("policy-kubernetes.yaml", &out);

    // Deterministic.
    let (_, again, _) = week.run(&["policy", "--format", "kubernetes"]);
    assert_eq!(out, again);

    // Selection.
    let (code, only, err) = week.run(&["policy", "-n", "data"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(documents(&only).len(), 1, "{only}");
    let (code, none, err) = week.run(&["policy", "-w", "nosuch"]);
    assert_eq!(code, 2, "{none}");
    assert!(err.contains("no traffic recorded"), "{err}");
}

#[test]
fn cilium_policies_name_external_peers_by_dns() {
    let week = Week::start();
    let (code, out, err) = week.run(&["policy", "--format", "cilium"]);
    assert_eq!(code, 0, "{err}\n{out}");
    let docs = documents(&out);
    assert_eq!(docs.len(), 5, "{out}");
    let rule_keys = [
        "fromEndpoints",
        "toEndpoints",
        "toFQDNs",
        "toPorts",
        "fromCIDRSet",
        "toCIDRSet",
        "fromEntities",
        "toEntities",
    ];
    for d in &docs {
        assert_eq!(d["apiVersion"], "cilium.io/v2");
        assert_eq!(d["kind"], "CiliumNetworkPolicy");
        assert!(d["metadata"]["name"].is_string() && d["metadata"]["namespace"].is_string());
        assert!(
            d["spec"]["endpointSelector"]["matchLabels"].is_object(),
            "{d}"
        );
        let mut fqdns = false;
        let mut dns_proxy = false;
        for dir in ["ingress", "egress"] {
            for rule in d["spec"][dir].as_array().expect("rules") {
                for (k, v) in rule.as_object().expect("rule") {
                    assert!(rule_keys.contains(&k.as_str()), "{k} in {rule}");
                    if k == "toFQDNs" {
                        fqdns = true;
                        for f in v.as_array().expect("fqdns") {
                            assert!(f["matchName"].is_string() || f["matchPattern"].is_string());
                        }
                    }
                    if k.ends_with("Endpoints") {
                        for e in v.as_array().expect("endpoints") {
                            assert!(
                                e["matchLabels"]["k8s:io.kubernetes.pod.namespace"].is_string(),
                                "{e}"
                            );
                        }
                    }
                }
                if rule.as_object().is_some_and(|r| r.is_empty()) {
                    // Default deny for a direction with nothing observed.
                    continue;
                }
                for tp in rule["toPorts"].as_array().expect("toPorts") {
                    for p in tp["ports"].as_array().expect("ports") {
                        assert!(p["port"].is_string(), "{p}");
                        assert!(
                            ["TCP", "UDP", "ANY"].contains(&p["protocol"].as_str().unwrap_or("")),
                            "{p}"
                        );
                    }
                    if tp["rules"]["dns"].is_array() {
                        dns_proxy = true;
                    }
                }
            }
        }
        assert_eq!(fqdns, dns_proxy, "toFQDNs needs the DNS proxy rule: {d}");
    }
    let frontend = policy_named(&docs, "sockscope-frontend").to_string();
    assert!(
        frontend.contains(r#"{"matchName":"api.stripe.example"}"#),
        "{frontend}"
    );
    assert!(
        frontend.contains(r#"{"matchName":"cdn.example.net"}"#),
        "{frontend}"
    );
    assert!(frontend.contains(r#""matchPattern":"*""#), "{frontend}");
    assert!(
        frontend.contains(r#""fromEntities":["host","remote-node"]"#),
        "{frontend}"
    );
    let reporter = policy_named(&docs, "sockscope-reporter").to_string();
    assert!(
        reporter.contains(r#""toEntities":["kube-apiserver"]"#),
        "{reporter}"
    );
    // Nothing came in: an empty rule, so that Cilium denies ingress by default.
    let reporter = policy_named(&docs, "sockscope-reporter");
    assert_eq!(reporter["spec"]["ingress"], json!([{}]), "{reporter}");
    golden("policy-cilium.yaml", &out);
}

#[test]
fn audit_finds_planted_denies_and_passes_generated_policies() {
    let week = Week::start();
    let (code, generated, err) = week.run(&["policy"]);
    assert_eq!(code, 0, "{err}");
    let own = week.dir.join("generated.yaml");
    std::fs::write(&own, &generated).expect("write");
    let (code, out, err) = week.run(&["policy", "--audit", own.to_str().expect("path")]);
    assert_eq!(
        code, 0,
        "the generated policies deny observed traffic:\n{out}{err}"
    );
    assert!(!out.contains("denied "), "{out}");
    assert!(out.contains("0 denied"), "{out}");

    // Planted: frontend may only reach cart; postgres only accepts the billing namespace; a
    // policy for pods that do not exist.
    let planted = week.dir.join("planted.yaml");
    std::fs::write(
        &planted,
        r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: frontend-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: frontend}}
  policyTypes: [Egress]
  egress:
  - to:
    - podSelector: {matchLabels: {app: cart}}
    ports:
    - {port: http, protocol: TCP}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: postgres-ingress, namespace: data}
spec:
  podSelector: {matchLabels: {app: postgres}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: billing}}
    ports:
    - {port: 5432}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ghost, namespace: shop}
spec:
  podSelector: {matchLabels: {app: ghost}}
  ingress:
  - {}
"#,
    )
    .expect("write");
    let (code, table, err) = week.run(&["policy", "--audit", planted.to_str().expect("path")]);
    assert_eq!(code, 1, "{table}{err}");
    let denied: Vec<&str> = table.lines().filter(|l| l.starts_with("denied")).collect();
    let has = |parts: &[&str]| {
        assert!(
            denied.iter().any(|l| parts.iter().all(|p| l.contains(p))),
            "no denied row with {parts:?} in\n{table}"
        )
    };
    has(&[
        "data/postgres",
        "ingress",
        "shop/cart",
        "5432/TCP",
        "data/postgres-ingress",
    ]);
    has(&[
        "shop/frontend",
        "egress",
        "203.0.113.10 api.stripe.example",
        "443/TCP",
        "shop/frontend-egress",
    ]);
    has(&["shop/frontend", "egress", "kube-system/coredns", "53/UDP"]);
    // Named port "http" matches the Service's target port: frontend -> cart is allowed.
    assert!(
        table.lines().any(|l| l.starts_with("allowed")
            && l.contains("shop/frontend")
            && l.contains("egress")
            && l.contains("shop/cart")
            && l.contains("8080/TCP")),
        "{table}"
    );
    assert!(
        table.contains("policy shop/ghost allows nothing that was observed"),
        "{table}"
    );
    assert!(
        table.contains("policy data/postgres-ingress allows nothing that was observed"),
        "{table}"
    );
    golden("policy-audit.txt", &table);
    let (code, json, _) = week.run(&[
        "policy",
        "--audit",
        planted.to_str().expect("path"),
        "--output",
        "json",
    ]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&json).expect("json");
    assert!(
        v["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .any(|e| e["verdict"] == "denied" && e["workload"] == "data/postgres"),
        "{json}"
    );
    // postgres-ingress allows only a namespace that never connected.
    assert_eq!(
        v["unused_policies"],
        json!(["data/postgres-ingress", "shop/ghost"])
    );

    // A file that is not a NetworkPolicy is refused in one line.
    let bad = week.dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x}\n",
    )
    .expect("write");
    let (code, _, err) = week.run(&["policy", "--audit", bad.to_str().expect("path")]);
    assert_eq!(code, 2);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not a NetworkPolicy"), "{err}");
}

#[test]
fn egress_lists_external_destinations() {
    let week = Week::start();
    let (code, table, err) = week.run(&["egress"]);
    assert_eq!(code, 0, "{err}");
    golden("egress.txt", &table);
    let (code, csv, _) = week.run(&["egress", "--format", "csv"]);
    assert_eq!(code, 0);
    golden("egress.csv", &csv);
    let (code, json, _) = week.run(&["egress", "--format", "json", "-n", "shop"]);
    assert_eq!(code, 0);
    let rows: Vec<Value> = serde_json::from_str(&json).expect("json");
    let row = |dest: &str| {
        rows.iter()
            .find(|r| r["destination"] == dest)
            .unwrap_or_else(|| panic!("{dest} missing: {json}"))
            .clone()
    };
    let stripe = row("api.stripe.example");
    // Two addresses, 2 connections each per 5 minutes over the last 6 days (2 x 1729 samples).
    assert_eq!(stripe["connections"], 2 * 2 * 1729, "{stripe}");
    assert_eq!(stripe["first_seen"], "2026-11-24T00:00:00Z", "{stripe}");
    assert_eq!(stripe["active_before_window"], false);
    let cdn = row("cdn.example.net");
    assert_eq!(cdn["active_before_window"], true, "{cdn}");
    assert_eq!(cdn["last_seen"], "2026-11-28T00:00:00Z", "{cdn}");
    let reports = row("reports.example.org");
    assert_eq!(reports["connections"], 1, "{reports}");
    assert!(
        !json.contains("legacy.example.com"),
        "ended before the window: {json}"
    );
    assert!(
        !json.contains("cart\",\n    \"destination\": \"(loopback)"),
        "{json}"
    );
}
