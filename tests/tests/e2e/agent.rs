//! The agent as an operator sees it: endpoints, formats, labels, shutdown, errors.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use sockscope_tests::{
    Agent, Metrics, TestCgroup, http_get, http_get_full, peer_cmd, promtool_check_metrics,
    sockscope_bin, wait_timeout,
};

const PEER: &str = env!("CARGO_BIN_EXE_sockscope-peer");

fn tcp_traffic(cg: &TestCgroup, server: &[&str], client: &[&str]) -> String {
    let mut srv = cg.spawn(
        "server",
        &mut peer_cmd(
            server[0],
            None,
            &[&["tcp-server", "127.0.0.1:0", "1"][..], &server[1..]].concat(),
        ),
    );
    let port = srv.line("ready ");
    let mut cli = cg.spawn(
        "client",
        &mut peer_cmd(
            client[0],
            None,
            &[
                "tcp-client",
                &format!("127.0.0.1:{port}"),
                "1",
                "1",
                "5000",
                "7000",
            ],
        ),
    );
    cli.totals("");
    srv.totals("");
    cli.wait_ok();
    srv.wait_ok();
    port
}

#[test]
fn endpoints_and_formats() {
    let cg = TestCgroup::new("agent-http");
    let agent = Agent::start(PEER, &cg.root, &[]);
    assert_eq!(
        http_get(agent.port, "/healthz", None).expect("healthz").0,
        200
    );
    assert_eq!(
        http_get(agent.port, "/readyz", None).expect("readyz").0,
        200
    );
    tcp_traffic(&cg, &[PEER], &[PEER]);
    agent.wait_until(Duration::from_secs(20), "traffic", |m| {
        m.sum("sockscope_tcp_connections_closed_total", &[]) == 2.0
    });

    let (status, head, body) = http_get_full(agent.port, "/metrics", None).expect("metrics");
    assert_eq!(status, 200);
    assert!(
        head.to_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        body.contains("# TYPE sockscope_tcp_sent_bytes_total counter"),
        "{body}"
    );
    assert!(!body.contains("# EOF"));
    let (_, head, om) = http_get_full(
        agent.port,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0"),
    )
    .expect("om");
    assert!(
        head.to_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(
        om.contains("# TYPE sockscope_tcp_sent_bytes counter"),
        "{om}"
    );
    assert!(om.trim_end().ends_with("# EOF"));

    let m = Metrics::parse(&body);
    assert_eq!(m.sum("sockscope_build_info", &[]), 1.0);
    for p in [
        "sockscope_sock_create",
        "sockscope_sock_release",
        "sockscope_sockops",
        "sockscope_egress",
        "sockscope_ingress",
        "sockscope_dns_egress",
        "sockscope_dns_ingress",
    ] {
        assert_eq!(
            m.sum("sockscope_bpf_program_attached", &[("program", p)]),
            1.0,
            "{p}"
        );
    }
    assert_eq!(
        m.sum("sockscope_bpf_map_capacity", &[("map", "FLOWS_0")]),
        sockscope_common::FLOW_MAP_CAPACITY as f64
    );
    assert_eq!(
        m.sum("sockscope_bpf_map_capacity", &[("map", "FLOW_OVERFLOW_1")]),
        sockscope_common::OVERFLOW_MAP_CAPACITY as f64
    );
    assert!(m.sum("sockscope_drain_duration_seconds_count", &[]) >= 1.0);
    // Every lost and folded source is present from the start (zero), each in its family.
    use sockscope_common::{EVENTS, EventKind};
    for (kind, family) in [
        (EventKind::Lost, "sockscope_events_lost_total"),
        (EventKind::Folded, "sockscope_events_folded_total"),
    ] {
        let want: Vec<&str> = EVENTS
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| *n)
            .collect();
        let mut got: Vec<&str> = m
            .matching(family, &[])
            .map(|(l, _)| l["source"].as_str())
            .collect();
        got.sort_unstable();
        let mut want = want;
        want.sort_unstable();
        assert_eq!(got, want, "{family}");
    }

    // promtool lints the scraped exposition (exit 0 and no complaints).
    promtool_check_metrics(&body);
}

/// `--label-process`: the creator's comm, for connected and for accepted sockets (which take the
/// listener's creator).
#[test]
fn process_label_for_connected_and_accepted_sockets() {
    let dir = std::env::temp_dir().join(format!("sockscope-comm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (srv_bin, cli_bin) = (dir.join("ss-listener"), dir.join("ss-dialer"));
    for b in [&srv_bin, &cli_bin] {
        let _ = std::fs::remove_file(b);
        std::fs::copy(PEER, b).expect("copy peer");
    }
    let cg = TestCgroup::new("agent-comm");
    let agent = Agent::start(PEER, &cg.root, &["--label-process"]);
    let (s, c) = (srv_bin.to_str().expect("p"), cli_bin.to_str().expect("p"));
    tcp_traffic(&cg, &[s], &[c]);
    let attached = Metrics::parse(&agent.scrape());
    assert_eq!(
        attached.sum(
            "sockscope_bpf_program_attached",
            &[("program", "sockscope_sock_create")]
        ),
        1.0
    );
    let attached = Metrics::parse(&agent.scrape());
    assert_eq!(
        attached.sum(
            "sockscope_bpf_program_attached",
            &[("program", "sockscope_sock_create")]
        ),
        1.0
    );
    let m = agent.wait_until(Duration::from_secs(20), "process labels", |m| {
        m.sum(
            "sockscope_tcp_received_bytes_total",
            &[("role", "server"), ("process", "ss-listener")],
        ) == 5016.0
            && m.sum(
                "sockscope_tcp_received_bytes_total",
                &[("role", "client"), ("process", "ss-dialer")],
            ) == 7000.0
    });
    assert!(
        m.matching("sockscope_tcp_sent_bytes_total", &[])
            .all(|(l, _)| l.contains_key("process"))
    );
    assert!(
        m.matching("sockscope_tcp_sent_bytes_total", &[])
            .all(|(l, _)| !l.contains_key("remote_ip"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn remote_ip_label() {
    let cg = TestCgroup::new("agent-rip");
    let agent = Agent::start(PEER, &cg.root, &["--label-remote-ip"]);
    tcp_traffic(&cg, &[PEER], &[PEER]);
    agent.wait_until(Duration::from_secs(20), "remote_ip label", |m| {
        m.sum(
            "sockscope_tcp_sent_bytes_total",
            &[("role", "client"), ("remote_ip", "127.0.0.1")],
        ) == 5016.0
    });
}

fn attached_programs(cgroup: &std::path::Path) -> String {
    let out = Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(cgroup)
        .output()
        .expect("bpftool");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn sigterm_detaches_and_exits_zero() {
    let cg = TestCgroup::new("agent-term");
    let agent = Agent::start(PEER, &cg.root, &[]);
    let before = attached_programs(&cg.root);
    assert!(
        before.contains("sockscope_egress") || before.contains("cgroup_skb"),
        "attached: {before}"
    );
    let status = agent.terminate();
    assert!(status.success(), "exit status {status}");
    assert_eq!(
        attached_programs(&cg.root).trim(),
        "",
        "programs left attached"
    );
}

#[test]
fn sigkill_leaves_nothing_attached() {
    let cg = TestCgroup::new("agent-kill");
    let mut agent = Agent::start(PEER, &cg.root, &[]);
    agent.child.kill().expect("kill");
    let _ = agent.child.wait();
    // Link release is asynchronous in the kernel; give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !attached_programs(&cg.root).trim().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "still attached: {}",
            attached_programs(&cg.root)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs sockscope expecting failure; returns stderr.
fn fails(args: &[&str], wrap: Option<&[&str]>) -> String {
    let bin = sockscope_bin(PEER);
    let mut cmd = match wrap {
        Some(w) => {
            let mut c = Command::new(w[0]);
            c.args(&w[1..]).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let mut child = cmd
        .args(["--listen-address", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = wait_timeout(&mut child, Duration::from_secs(20)).expect("should exit");
    assert!(!status.success(), "expected failure for {args:?}");
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    err
}

#[test]
fn clear_errors() {
    let err = fails(&["--interval", "soon"], None);
    assert!(err.contains("--interval") && err.contains("500ms"), "{err}");
    let err = fails(&["--cgroup-root", "/tmp"], None);
    assert!(err.contains("not inside a cgroup v2 mount"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let err = fails(&["--cgroup-root", "/nonexistent/x"], None);
    assert!(err.contains("--cgroup-root /nonexistent/x"), "{err}");
    // Unprivileged: nobody, no capabilities.
    let err = fails(
        &[],
        Some(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ]),
    );
    assert!(err.contains("needs root"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // DNS settings that parse but do not fit together, or out of range.
    let err = fails(&["--dns-ttl-min", "2h", "--dns-ttl-max", "1h"], None);
    assert!(
        err.contains("--dns-ttl-min") && err.contains("above"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let err = fails(&["--dns-cache-size", "0"], None);
    assert!(err.contains("--dns-cache-size"), "{err}");
    let err = fails(&["--max-qnames-per-workload=lots"], None);
    assert!(err.contains("--max-qnames-per-workload"), "{err}");
    // Kubernetes settings: each a one-line error before anything is attached.
    let one_line = |args: &[&str], want: &str| {
        let err = fails(args, None);
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    };
    one_line(&["--kubernetes", "on"], "node name is unknown");
    one_line(
        &["--kubernetes", "on", "--node-name", "n1"],
        "no in-cluster Kubernetes configuration",
    );
    one_line(
        &[
            "--kubeconfig",
            "/nonexistent/kubeconfig",
            "--node-name",
            "n1",
        ],
        "kubeconfig /nonexistent/kubeconfig",
    );
    let garbage =
        std::env::temp_dir().join(format!("sockscope-bad-kubeconfig-{}", std::process::id()));
    std::fs::write(&garbage, "clusters: [this is: not a kubeconfig\n").expect("write");
    one_line(
        &[
            "--kubeconfig",
            garbage.to_str().expect("utf-8"),
            "--node-name",
            "n1",
        ],
        "kubeconfig",
    );
    let _ = std::fs::remove_file(&garbage);
    // Flags that do not parse: clap's message names the flag (and the accepted values).
    for (args, want) in [
        (
            &["--kubernetes", "maybe"][..],
            "possible values: auto, on, off",
        ),
        (&["--remote-index", "perhaps"][..], "--remote-index"),
        (&["--series-expiry", "0s"][..], "--series-expiry"),
    ] {
        let err = fails(args, None);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn help_explains_every_flag() {
    let out = Command::new(sockscope_bin(PEER))
        .arg("--help")
        .output()
        .expect("help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen-address",
        "--interval",
        "--cgroup-root",
        "--label-process",
        "--label-remote-ip",
        "--max-qnames-per-workload",
        "--max-remote-hosts-per-workload",
        "--dns-timeout",
        "--dns-ttl-min",
        "--dns-ttl-max",
        "--dns-cache-size",
        "--kubernetes",
        "--kubeconfig",
        "--node-name",
        "--remote-index",
        "--series-expiry",
        "--config",
        "--check-config",
        "--cluster-name",
        "--keep-capabilities",
        "--log",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    for env in [
        "SOCKSCOPE_LISTEN_ADDRESS",
        "SOCKSCOPE_INTERVAL",
        "SOCKSCOPE_CGROUP_ROOT",
        "SOCKSCOPE_LABEL_PROCESS",
        "SOCKSCOPE_LABEL_REMOTE_IP",
        "SOCKSCOPE_MAX_QNAMES_PER_WORKLOAD",
        "SOCKSCOPE_MAX_REMOTE_HOSTS_PER_WORKLOAD",
        "SOCKSCOPE_DNS_TIMEOUT",
        "SOCKSCOPE_DNS_TTL_MIN",
        "SOCKSCOPE_DNS_TTL_MAX",
        "SOCKSCOPE_DNS_CACHE_SIZE",
        "SOCKSCOPE_KUBERNETES",
        "SOCKSCOPE_KUBECONFIG",
        "SOCKSCOPE_NODE_NAME",
        "SOCKSCOPE_REMOTE_INDEX",
        "SOCKSCOPE_SERIES_EXPIRY",
        "SOCKSCOPE_CONFIG",
        "SOCKSCOPE_CLUSTER_NAME",
        "SOCKSCOPE_KEEP_CAPABILITIES",
        "SOCKSCOPE_LOG",
    ] {
        assert!(help.contains(env), "{env} missing from --help");
    }
}

#[test]
fn flags_from_environment() {
    let cg = TestCgroup::new("agent-env");
    let port = sockscope_tests::free_port();
    let mut child = Command::new(sockscope_bin(PEER))
        .env("SOCKSCOPE_LISTEN_ADDRESS", format!("127.0.0.1:{port}"))
        .env("SOCKSCOPE_CGROUP_ROOT", &cg.root)
        .env("SOCKSCOPE_INTERVAL", "250ms")
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !matches!(http_get(port, "/readyz", None), Ok((200, _))) {
        assert!(
            std::time::Instant::now() < deadline,
            "not ready via env config"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Once attached, the agent keeps only CAP_DAC_READ_SEARCH, on every thread, and keeps
/// counting; --keep-capabilities keeps them all.
#[test]
fn capabilities_dropped_after_attach() {
    let own = sockscope_tests::thread_capabilities(std::process::id())[0];
    let cg = TestCgroup::new("caps-drop");
    let agent = Agent::start(PEER, &cg.root, &[]);
    let caps = sockscope_tests::thread_capabilities(agent.child.id());
    assert!(caps.len() > 2, "{caps:?}");
    assert!(caps.iter().all(|c| *c == 1 << 2), "{caps:x?}");
    // As root (with CAP_SETPCAP) the bounding set goes too, and no exec can grant anything.
    let pid = agent.child.id();
    let bounding = sockscope_tests::thread_status(pid, "CapBnd");
    assert!(
        bounding.iter().all(|b| b == "0000000000000004"),
        "{bounding:?}"
    );
    let nnp = sockscope_tests::thread_status(pid, "NoNewPrivs");
    assert!(nnp.len() > 2 && nnp.iter().all(|v| v == "1"), "{nnp:?}");
    let port = tcp_traffic(&cg, &[PEER], &[PEER]);
    agent.wait_until(Duration::from_secs(20), "counts after the drop", |m| {
        m.sum(
            "sockscope_tcp_sent_bytes_total",
            &[("role", "client"), ("port", &port)],
        ) == 5016.0
    });
    // Detaching on SIGTERM needs no capability either.
    assert!(agent.terminate().success());

    let kept = Agent::start(PEER, &cg.root, &["--keep-capabilities"]);
    let caps = sockscope_tests::thread_capabilities(kept.child.id());
    assert!(caps.iter().all(|c| *c == own), "{caps:x?} vs {own:x}");
    let nnp = sockscope_tests::thread_status(kept.child.id(), "NoNewPrivs");
    assert!(nnp.iter().all(|v| v == "1"), "{nnp:?}");
}
