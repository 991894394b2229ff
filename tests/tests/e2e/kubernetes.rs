//! Kubernetes attribution, end to end: kubepods-like cgroups holding "pod" processes in their
//! own network namespaces, a veth pair between them, and sockscope reading pod, Service, node,
//! ReplicaSet and Job objects from an in-test API server that speaks list/watch.

use std::{
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use sockscope_tests::{
    Metrics,
    fake_cluster::{CLUSTER_IP, Env, NODE, NODE_IP, Pod, with},
    peer_cmd,
};

const PEER: &str = env!("CARGO_BIN_EXE_sockscope-peer");
const WAIT: Duration = Duration::from_secs(30);
fn sent(m: &Metrics, labels: &[(&str, &str)]) -> f64 {
    m.sum("sockscope_tcp_sent_bytes_total", labels)
}

fn received(m: &Metrics, labels: &[(&str, &str)]) -> f64 {
    m.sum("sockscope_tcp_received_bytes_total", labels)
}

fn hold_file(tag: &str) -> PathBuf {
    sockscope_tests::signal_file(&format!("k8s-hold-{tag}"))
}

/// Both ends named from the API: the client pod's Deployment (through its ReplicaSet), the
/// server's StatefulSet, the peer pod's workload on each side, ClusterIP traffic labelled
/// with the Service, and traffic to a node address (a host-network pod) with the node.
#[test]
fn pods_workloads_and_services_on_both_ends() {
    let env = Env::new("k8s-labels", PEER);
    let client = Pod::new(1, "shop", "frontend-5d8f7b9c6d-x7k2p", "web", true);
    let server = Pod::new(2, "data", "db-0", "postgres", false);
    env.frontend(&client);
    env.db(&server);
    let agent = env.agent(&[]);

    let (mut srv, port) = env.server(&server, 3);
    let (up, down) = (300_000u64, 70_000u64);
    let mut direct = env.client(&client, &format!("{}:{port}", env.net.b4), up, down, None);
    let (d_sent, d_recv) = direct.totals("");
    direct.wait_ok();
    let mut via_svc = env.client(
        &client,
        &format!("{CLUSTER_IP}:{port}"),
        2 * up,
        2 * down,
        None,
    );
    let (s_sent, s_recv) = via_svc.totals("");
    via_svc.wait_ok();
    let mut via_node = env.client(&client, &format!("{NODE_IP}:{port}"), up, down, None);
    let (n_sent, _) = via_node.totals("");
    via_node.wait_ok();
    srv.wait_ok();
    assert_eq!((d_sent, d_recv), (up + 16, down));
    assert_eq!((s_sent, s_recv), (2 * up + 16, 2 * down));
    // DNS families carry the pod's labels too: malformed "queries" to a junk server in the
    // server pod, each counted once leaving and once coming back.
    let payloads = sockscope_tests::dns::malformed().len();
    let mut junk_srv = env.cg.spawn(
        &server.cgroup,
        &mut peer_cmd(
            PEER,
            Some(&env.net.b),
            &["dns-junk-server", "0.0.0.0:53", &payloads.to_string()],
        ),
    );
    junk_srv.line("ready");
    let mut junk = env.cg.spawn(
        &client.cgroup,
        &mut peer_cmd(
            PEER,
            Some(&env.net.a),
            &["dns-junk", &format!("{}:53", env.net.b4)],
        ),
    );
    junk.line("datagrams");
    junk.wait_ok();
    junk_srv.wait_ok();

    let c = client.labels("frontend", "Deployment");
    let to_pod = with(
        c.clone(),
        &[
            ("role", "client"),
            ("remote_namespace", "data"),
            ("remote_workload", "db"),
            ("remote_class", "pod"),
            ("port", &port),
        ],
    );
    let to_svc = with(
        c.clone(),
        &[
            ("role", "client"),
            ("remote_namespace", "data"),
            ("remote_workload", "db-primary"),
            ("remote_class", "service"),
            ("port", &port),
        ],
    );
    let to_node = with(
        c.clone(),
        &[
            ("role", "client"),
            ("remote_namespace", ""),
            ("remote_workload", NODE),
            ("remote_class", "node"),
        ],
    );
    let s = server.labels("db", "StatefulSet");
    let from_client = with(
        s.clone(),
        &[
            ("role", "server"),
            ("remote_namespace", "shop"),
            ("remote_workload", "frontend"),
            ("remote_class", "pod"),
            ("port", &port),
        ],
    );
    agent.wait_until(WAIT, "exact bytes under pod labels", |m| {
        sent(m, &to_pod) == d_sent as f64
            && received(m, &to_pod) == d_recv as f64
            && sent(m, &to_svc) == s_sent as f64
            && received(m, &to_svc) == s_recv as f64
            && sent(m, &to_node) == n_sent as f64
            && received(m, &from_client) == (d_sent + s_sent + n_sent) as f64
            && sent(m, &from_client) == (d_recv + s_recv + down) as f64
    });
    let dns = client.labels("frontend", "Deployment");
    let m = agent.wait_until(WAIT, "DNS parse errors under the pod's labels", |m| {
        m.sum("sockscope_dns_parse_errors_total", &dns) == (2 * payloads) as f64
    });
    let udp = with(
        c.clone(),
        &[
            ("remote_workload", "db"),
            ("remote_class", "pod"),
            ("port", "53"),
        ],
    );
    assert!(
        m.sum("sockscope_udp_sent_bytes_total", &udp) > 0.0,
        "{}",
        m.dump()
    );
    // Nothing else: no unlabelled or fallback series for these pods.
    for name in [
        "sockscope_tcp_sent_bytes_total",
        "sockscope_tcp_received_bytes_total",
    ] {
        let all: Vec<_> = m.matching(name, &[]).collect();
        assert_eq!(all.len(), 4, "{}", m.dump());
        assert!(
            all.iter().all(|(l, _)| !l["pod"].is_empty()),
            "{}",
            m.dump()
        );
    }
    assert_eq!(
        m.sum(
            "sockscope_tcp_connections_opened_total",
            &with(c.clone(), &[("role", "client")])
        ),
        3.0
    );
    assert_eq!(m.sum("sockscope_kubernetes_up", &[]), 1.0, "{}", m.dump());
    assert_eq!(
        m.sum("sockscope_metadata_misses_total", &[]),
        0.0,
        "{}",
        m.dump()
    );
    // The cluster-wide index holds both pods, the other node's pod, the Service and two nodes.
    assert_eq!(
        m.sum("sockscope_kubernetes_remote_index_entries", &[]),
        6.0,
        "{}",
        m.dump()
    );
    // The node watch only lists this node's pods.
    assert_eq!(
        m.sum("sockscope_kubernetes_objects", &[("watch", "node_pods")]),
        2.0
    );
}

/// The API goes away for 30 s: counts keep flowing with the labels already known, a pod that
/// starts meanwhile is labelled from its cgroup path, and once the API is back its watch
/// event names it; no count is lost on the way.
#[test]
fn api_outage_keeps_labels_and_counts() {
    let env = Env::new("k8s-outage", PEER);
    let known = Pod::new(11, "shop", "frontend-5d8f7b9c6d-aaaaa", "web", true);
    let newcomer = Pod::new(12, "ops", "report-29400000-bbbbb", "runner", false);
    let server = Pod::new(13, "data", "db-0", "postgres", false);
    env.frontend(&known);
    env.db(&server);
    let agent = env.agent(&[]);
    agent.wait_until(WAIT, "API up", |m| {
        m.sum("sockscope_kubernetes_up", &[]) == 1.0
    });

    let (mut srv, port) = env.server(&server, 2);
    let addr = format!("{}:{port}", env.net.b4);
    let (up, down) = (100_000u64, 10_000u64);
    let hold_known = hold_file("known");
    let mut a = env.client(&known, &addr, up, down, Some(&hold_known));
    let (a1_sent, _) = a.totals("exchanged ");
    let k = with(
        known.labels("frontend", "Deployment"),
        &[("role", "client"), ("remote_workload", "db")],
    );
    agent.wait_until(WAIT, "phase 1 counted", |m| sent(m, &k) == a1_sent as f64);

    let outage = Instant::now();
    env.api.stop();
    agent.wait_until(WAIT, "API down", |m| {
        m.sum("sockscope_kubernetes_up", &[]) == 0.0
    });
    // The new pod exists in the API, which cannot tell anyone.
    env.api
        .apply(newcomer.object(&env.net.a4, Some(("Job", "report-29400000")), None));
    let hold_new = hold_file("new");
    let mut b = env.client(&newcomer, &addr, up, down, Some(&hold_new));
    let (b1_sent, _) = b.totals("exchanged ");
    // The known pod's second exchange, during the outage.
    std::fs::write(&hold_known, "go").expect("release");
    let (a_sent, _) = a.totals("");
    a.wait_ok();
    let fb = with(newcomer.fallback(), &[("role", "client")]);
    let m = agent.wait_until(
        WAIT,
        "outage counts: known labels kept, newcomer from its cgroup",
        |m| sent(m, &k) == a_sent as f64 && sent(m, &fb) == b1_sent as f64,
    );
    assert!(
        m.sum(
            "sockscope_metadata_misses_total",
            &[("reason", "pod_unknown")]
        ) > 0.0,
        "{}",
        m.dump()
    );
    assert_eq!(m.sum("sockscope_kubernetes_up", &[]), 0.0);

    let left = Duration::from_secs(30).saturating_sub(outage.elapsed());
    thread::sleep(left);
    env.api.resume();
    let m = agent.wait_until(Duration::from_secs(60), "API back", |m| {
        m.sum("sockscope_kubernetes_up", &[]) == 1.0
    });
    assert!(
        m.sum("sockscope_kubernetes_watch_errors_total", &[]) > 0.0,
        "{}",
        m.dump()
    );
    // Let the resumed watch deliver the newcomer (its event was recorded during the outage).
    agent.wait_until(WAIT, "newcomer known", |m| {
        m.sum("sockscope_kubernetes_objects", &[("watch", "node_pods")]) == 3.0
    });
    std::fs::write(&hold_new, "go").expect("release");
    let (b_sent, _) = b.totals("");
    b.wait_ok();
    srv.wait_ok();
    let named = with(
        newcomer.labels("report", "CronJob"),
        &[("role", "client"), ("remote_workload", "db")],
    );
    let m = agent.wait_until(WAIT, "newcomer named after the outage", |m| {
        sent(m, &named) == (b_sent - b1_sent) as f64
    });
    // Every byte counted once: the fallback series kept the outage's bytes.
    assert_eq!(sent(&m, &fb), b1_sent as f64, "{}", m.dump());
    assert_eq!(sent(&m, &k), a_sent as f64, "{}", m.dump());
    let server_side = with(server.labels("db", "StatefulSet"), &[("role", "server")]);
    assert_eq!(
        received(&m, &server_side),
        (a_sent + b_sent) as f64,
        "{}",
        m.dump()
    );
    let _ = std::fs::remove_file(&hold_known);
    let _ = std::fs::remove_file(&hold_new);
}

/// A deleted pod's series stay for the expiry grace, then go; a live pod's idle series stay.
#[test]
fn deleted_pod_series_expire() {
    let env = Env::new("k8s-expiry", PEER);
    let gone = Pod::new(21, "shop", "frontend-5d8f7b9c6d-ccccc", "web", true);
    let server = Pod::new(22, "data", "db-0", "postgres", false);
    env.frontend(&gone);
    env.db(&server);
    let agent = env.agent(&["--series-expiry", "3s"]);
    let (mut srv, port) = env.server(&server, 1);
    let mut c = env.client(
        &gone,
        &format!("{}:{port}", env.net.b4),
        50_000,
        5_000,
        None,
    );
    let (c_sent, _) = c.totals("");
    c.wait_ok();
    srv.wait_ok();
    let g = [("pod", gone.name), ("role", "client")];
    let s = [("pod", server.name), ("role", "server")];
    agent.wait_until(WAIT, "counted", |m| {
        sent(m, &g) == c_sent as f64 && received(m, &s) == c_sent as f64
    });

    // The pod is deleted: its containers' cgroups go, the API says so.
    let pod_dir = env
        .cg
        .root
        .join(Path::new(&gone.cgroup).parent().expect("pod cgroup"));
    std::fs::remove_dir(env.cg.root.join(&gone.cgroup)).expect("rmdir container cgroup");
    std::fs::remove_dir(&pod_dir).expect("rmdir pod cgroup");
    env.api.delete("Pod", gone.namespace, gone.name);
    let deleted = Instant::now();
    let m = Metrics::parse(&agent.scrape());
    assert_eq!(
        sent(&m, &g),
        c_sent as f64,
        "kept during the grace: {}",
        m.dump()
    );
    let m = agent.wait_until(WAIT, "deleted pod's series expired", |m| {
        m.matching("sockscope_tcp_sent_bytes_total", &g).count() == 0
            && m.matching("sockscope_tcp_connections_opened_total", &g)
                .count()
                == 0
    });
    assert!(
        deleted.elapsed() >= Duration::from_secs(2),
        "expired before the grace"
    );
    assert!(
        m.sum("sockscope_series_expired_total", &[]) >= 4.0,
        "{}",
        m.dump()
    );
    // The server pod is alive: its series stay although idle for longer than the grace.
    thread::sleep(Duration::from_secs(4));
    let m = Metrics::parse(&agent.scrape());
    assert_eq!(received(&m, &s), c_sent as f64, "{}", m.dump());
}

/// Traffic that starts before the API knows the pod is labelled from the cgroup path; once the
/// watch event arrives, the same connection's further bytes carry the pod's names. With the
/// remote index off, peers keep their address class.
#[test]
fn watch_event_names_a_pod_already_talking() {
    let env = Env::new("k8s-late", PEER);
    let late = Pod::new(31, "shop", "frontend-5d8f7b9c6d-ddddd", "web", true);
    let server = Pod::new(32, "data", "db-0", "postgres", false);
    env.db(&server);
    let agent = env.agent(&["--remote-index", "false"]);
    let (mut srv, port) = env.server(&server, 1);
    let hold = hold_file("late");
    let mut c = env.client(
        &late,
        &format!("{}:{port}", env.net.b4),
        80_000,
        8_000,
        Some(&hold),
    );
    let (first, _) = c.totals("exchanged ");
    let fb = with(
        late.fallback(),
        &[
            ("role", "client"),
            ("remote_class", "private"),
            ("remote_workload", ""),
        ],
    );
    agent.wait_until(WAIT, "fallback labels before the event", |m| {
        sent(m, &fb) == first as f64
    });

    env.frontend(&late);
    agent.wait_until(WAIT, "event applied", |m| {
        m.sum("sockscope_kubernetes_objects", &[("watch", "node_pods")]) == 2.0
    });
    std::fs::write(&hold, "go").expect("release");
    let (total, _) = c.totals("");
    c.wait_ok();
    srv.wait_ok();
    // The ReplicaSet watch runs with the index off: the Deployment is named.
    let named = with(
        late.labels("frontend", "Deployment"),
        &[("role", "client"), ("remote_class", "private")],
    );
    let m = agent.wait_until(WAIT, "same connection named after the event", |m| {
        sent(m, &named) == (total - first) as f64
    });
    assert_eq!(sent(&m, &fb), first as f64, "{}", m.dump());
    assert_eq!(m.sum("sockscope_kubernetes_remote_index_entries", &[]), 0.0);
    assert_eq!(
        m.matching("sockscope_kubernetes_watch_up", &[("watch", "pods")])
            .count(),
        0
    );
    let _ = std::fs::remove_file(&hold);
}

/// The capabilities the DaemonSet grants (read from deploy/kubernetes/daemonset.yaml) are
/// enough: with only those (uid 0, no new privileges), every program attaches and pods are
/// counted and named exactly.
#[test]
fn daemonset_capabilities_are_enough() {
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/daemonset.yaml"),
    )
    .expect("daemonset.yaml");
    let add = manifest
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("add: "))
        .expect("capabilities.add in the DaemonSet");
    let caps: Vec<String> = add
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_ascii_lowercase())
        .collect();
    assert_eq!(caps, ["bpf", "perfmon", "net_admin"]);
    let bounding = format!(
        "-all,{}",
        caps.iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(",")
    );

    let env = Env::new("k8s-caps", PEER);
    let client = Pod::new(41, "shop", "frontend-5d8f7b9c6d-eeeee", "web", true);
    let server = Pod::new(42, "data", "db-0", "postgres", false);
    env.frontend(&client);
    env.db(&server);
    let agent = env.agent_wrapped(
        &[
            "setpriv",
            "--bounding-set",
            &bounding,
            "--inh-caps",
            "-all",
            "--no-new-privs",
            "--",
        ],
        &[],
    );
    // Started with exactly those three (CAP_NET_ADMIN, CAP_PERFMON, CAP_BPF); once attached it
    // needs none of them: every thread runs without capabilities.
    let caps = sockscope_tests::thread_capabilities(agent.child.id());
    assert!(caps.len() > 2 && caps.iter().all(|c| *c == 0), "{caps:x?}");
    let log = agent.log_text();
    assert!(
        log.contains(r#"dropped=["net_admin", "perfmon", "bpf"]"#),
        "{log}"
    );
    // Without CAP_SETPCAP the bounding set cannot shrink: said once, with the reason, and
    // no_new_privs keeps an exec from regaining anything.
    assert_eq!(
        log.matches("capabilities stay in the bounding set").count(),
        1,
        "{log}"
    );
    assert!(log.contains("Operation not permitted"), "{log}");
    let nnp = sockscope_tests::thread_status(agent.child.id(), "NoNewPrivs");
    assert!(nnp.iter().all(|v| v == "1"), "{nnp:?}");

    let (mut srv, port) = env.server(&server, 1);
    let mut c = env.client(
        &client,
        &format!("{}:{port}", env.net.b4),
        200_000,
        20_000,
        None,
    );
    let (c_sent, c_recv) = c.totals("");
    c.wait_ok();
    srv.wait_ok();
    let cl = with(
        client.labels("frontend", "Deployment"),
        &[
            ("role", "client"),
            ("remote_workload", "db"),
            ("remote_class", "pod"),
        ],
    );
    let sv = with(
        server.labels("db", "StatefulSet"),
        &[("role", "server"), ("remote_workload", "frontend")],
    );
    let m = agent.wait_until(
        WAIT,
        "exact counts with the DaemonSet's capabilities",
        |m| {
            sent(m, &cl) == c_sent as f64
                && received(m, &cl) == c_recv as f64
                && received(m, &sv) == c_sent as f64
                && sent(m, &sv) == c_recv as f64
        },
    );
    // The five cgroup programs, the two DNS programs they tail-call, the two reset
    // tracepoints and the drop tracepoint, and where this kernel has it (as root), the TCP
    // iterator and its close tracepoint: tracing programs too load with BPF and PERFMON alone.
    let expected = match sockscope_tests::iterator_unavailable(PEER) {
        None => 12,
        Some(why) => {
            sockscope_tests::skip(
                "kubernetes::daemonset_capabilities_are_enough (the iterator's part)",
                why,
            );
            10
        }
    };
    assert_eq!(
        m.matching("sockscope_bpf_program_attached", &[])
            .filter(|(_, v)| *v == 1.0)
            .count(),
        expected,
        "{}",
        agent.log_text()
    );
}

/// VmHWM (peak resident set) of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    kb * 1024
}

/// An API that does not play along: lists that never answer, answers that are not JSON, and a
/// 50 MB object are errors, counted and retried with backoff; the watches are up only after a
/// list succeeds, the agent keeps draining and serving, and its memory stays bounded. Once the
/// API behaves, the watches list and are up again.
#[test]
fn misbehaving_api_is_an_error_not_a_hang() {
    use sockscope_tests::fake_apiserver::Misbehaviour;
    let env = Env::new("k8s-misbehave", PEER);
    env.api.misbehave(Misbehaviour::Hang);
    let agent = env.agent(&["--kubernetes-timeout", "2s"]);
    let errors = |m: &Metrics| {
        m.sum(
            "sockscope_kubernetes_watch_errors_total",
            &[("watch", "node_pods")],
        )
    };
    let up = |m: &Metrics| m.sum("sockscope_kubernetes_watch_up", &[("watch", "node_pods")]);
    let m = agent.wait_until(WAIT, "a hung list counted as an error", |m| {
        errors(m) >= 2.0
    });
    assert_eq!(up(&m), 0.0);
    assert_eq!(m.sum("sockscope_kubernetes_up", &[]), 0.0);
    assert!(
        agent.log_text().contains("no list response within 2s"),
        "{}",
        agent.log_text()
    );
    assert_eq!(
        sockscope_tests::http_get(agent.port, "/healthz", None)
            .expect("healthz")
            .0,
        200
    );

    for (mode, what) in [
        (Misbehaviour::Garbage, "garbage JSON"),
        (Misbehaviour::Huge(50 << 20), "a 50 MB object"),
    ] {
        let before = errors(&Metrics::parse(&agent.scrape()));
        let requests = env.api.requests();
        env.api.misbehave(mode);
        // Retries back off up to 16s; two more errors, from requests answered this way.
        let m = agent.wait_until(Duration::from_secs(60), what, |m| {
            errors(m) >= before + 2.0 && env.api.requests() > requests
        });
        assert_eq!(up(&m), 0.0, "{what}");
        assert_eq!(m.sum("sockscope_kubernetes_up", &[]), 0.0, "{what}");
    }
    assert!(
        agent.log_text().contains("longer than 16777216 bytes"),
        "{}",
        agent.log_text()
    );
    // Lists of 50 MB refused at 16 MiB: the agent never held one. (The DaemonSet's limit is
    // 384 Mi; without the bound this test peaked at 373 MiB.)
    let peak = peak_rss(agent.child.id());
    eprintln!("peak RSS {} MiB", peak >> 20);
    assert!(peak < 128 << 20, "peak RSS {} MiB", peak >> 20);

    // The API behaves again: every watch lists, and only then is up.
    env.api.misbehave(Misbehaviour::None);
    let m = agent.wait_until(Duration::from_secs(60), "watches up after a list", |m| {
        m.sum("sockscope_kubernetes_up", &[]) == 1.0
    });
    assert_eq!(up(&m), 1.0);
    assert!(
        agent.log_text().contains("Kubernetes watch synced"),
        "{}",
        agent.log_text()
    );
}
