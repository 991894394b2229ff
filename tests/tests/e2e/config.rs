//! The config file end to end: `--check-config` without privileges, bad files refused with one
//! line naming the key, flag > environment > file, and file-only options (CIDR classes,
//! dropped labels) shaping real series.

use std::{
    path::PathBuf,
    process::{Command, Output},
    time::Duration,
};

use sockscope_tests::{
    Agent, Metrics, NetPair, Placement, TestCgroup, free_port, http_get, peer_cmd, sockscope_bin,
};

const PEER: &str = env!("CARGO_BIN_EXE_sockscope-peer");

fn file(tag: &str, yaml: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "sockscope-config-{tag}-{}-{}.yaml",
        std::process::id(),
        sockscope_tests::unique()
    ));
    std::fs::write(&p, yaml).expect("write config");
    p
}

/// sockscope as nobody, without capabilities: what --check-config may rely on.
fn unprivileged(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(sockscope_bin(PEER))
        .args(args)
        .output()
        .expect("run sockscope")
}

#[test]
fn check_config_validates_without_privileges() {
    let good = file(
        "good",
        "interval: 10s\nlabels: {process: true}\nbudgets: {qnames_per_workload: 10}\n\
         remote_classes: {internal: [10.0.0.0/8]}\n\
         metrics: {sockscope_dns_queries_total: {drop_labels: [qname]}}\n",
    );
    let out = unprivileged(&["--check-config", good.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));

    let bad = [
        ("interval: 0s\n", "interval: 0s is too short"),
        ("listen_address: [1, 2]\n", "listen_address: invalid type"),
        (
            "budgets: {remote_hosts_per_workload: 0}\n",
            "budgets.remote_hosts_per_workload: must be at least 1",
        ),
        (
            "remote_classes: {vpc: [10.1.0.0/16, 300.0.0.0/8]}\n",
            "remote_classes.vpc[1]",
        ),
        ("labels: {remote_ip: maybe}\n", "labels.remote_ip"),
        (
            "dns: {ttl_min: 2h, ttl_max: 1h}\n",
            "--dns-ttl-min (2h) is above --dns-ttl-max (1h)",
        ),
        ("kubernets: {mode: on}\n", "unknown field `kubernets`"),
        (
            "metrics: {sockscope_tcp_sent_bytes_total: {drop_labels: [rcode]}}\n",
            "has no label \"rcode\"",
        ),
        ("interval: \"5s\nlog: [\n", "unexpected end of stream"),
        (
            "dns: {watchlists: {threats: /nonexistent/threats.txt}}\n",
            "watchlist threats: cannot read /nonexistent/threats.txt: No such file",
        ),
        (
            "dns: {watchlists: {\"bad name\": /tmp/x}}\n",
            "dns.watchlists: watchlist name \"bad name\"",
        ),
        (
            "dns: {domain_classes: {external: [corp.example]}}\n",
            "\"external\" is reserved",
        ),
        (
            "dns: {domain_classes: {corp: [\"corp example\"]}}\n",
            "dns.domain_classes.corp:1: \"corp example\" is not a domain name",
        ),
    ];
    for (yaml, want) in bad {
        let path = file("bad", yaml);
        let out = unprivileged(&["--check-config", path.to_str().expect("utf-8")]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml:?}: {err}");
        assert!(err.contains(want), "{yaml:?}: got {err:?}, want {want:?}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        let _ = std::fs::remove_file(path);
    }
    // A watchlist file with a bad line: its path and line.
    let list = file("list", "evil.example\n*.ok.example\nnot*valid.example\n");
    let path = file(
        "watch",
        &format!("dns: {{watchlists: {{threats: {}}}}}\n", list.display()),
    );
    let out = unprivileged(&["--check-config", path.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:3: \"not*valid.example\"", list.display())),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(list);
    let out = unprivileged(&["--check-config", "/nonexistent.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("config /nonexistent.yaml: No such file")
    );
    let _ = std::fs::remove_file(good);
}

/// listen_address from the file, then SOCKSCOPE_LISTEN_ADDRESS over it, then the flag over both.
#[test]
fn flag_beats_environment_beats_file() {
    let cg = TestCgroup::new("config-precedence");
    let (p_file, p_env, p_flag) = (free_port(), free_port(), free_port());
    let cfg = file(
        "precedence",
        &format!("listen_address: 127.0.0.1:{p_file}\ninterval: 300ms\n"),
    );
    let serves = |extra_env: Option<u16>, flag: Option<u16>, want: u16| {
        let mut cmd = Command::new(sockscope_bin(PEER));
        cmd.arg("--config")
            .arg(&cfg)
            .arg("--cgroup-root")
            .arg(&cg.root);
        cmd.env_remove("SOCKSCOPE_LISTEN_ADDRESS");
        if let Some(p) = extra_env {
            cmd.env("SOCKSCOPE_LISTEN_ADDRESS", format!("127.0.0.1:{p}"));
        }
        if let Some(p) = flag {
            cmd.args(["--listen-address", &format!("127.0.0.1:{p}")]);
        }
        let mut child = cmd
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut ok = false;
        while std::time::Instant::now() < deadline {
            if let Ok((200, _)) = http_get(want, "/readyz", None) {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            ok,
            "not serving on {want} (env {extra_env:?}, flag {flag:?})"
        );
    };
    serves(None, None, p_file);
    serves(Some(p_env), None, p_env);
    serves(Some(p_env), Some(p_flag), p_flag);
    let _ = std::fs::remove_file(cfg);
}

/// A CIDR class names the veth peer's range, and a dropped label aggregates: `port` emptied on
/// sent bytes only.
#[test]
fn cidr_classes_and_dropped_labels_shape_series() {
    let cg = TestCgroup::new("config-classes");
    let net = NetPair::new();
    let cfg = file(
        "classes",
        "remote_classes:\n  lab: [10.251.0.0/16, \"fd51::/16\"]\n  wide: [10.0.0.0/8]\n\
         metrics:\n  sockscope_tcp_sent_bytes_total: {drop_labels: [port]}\n",
    );
    let agent = Agent::start(PEER, &cg.root, &["--config", cfg.to_str().expect("utf-8")]);
    let Placement {
        server_ns,
        client_ns,
        bind,
        host,
        ..
    } = Placement::new(Some(&net), false);
    let mut srv = cg.spawn(
        "server",
        &mut peer_cmd(PEER, server_ns, &["tcp-server", &bind, "2"]),
    );
    let port = srv.line("ready ");
    for _ in 0..2 {
        let mut c = cg.spawn(
            "client",
            &mut peer_cmd(
                PEER,
                client_ns,
                &[
                    "tcp-client",
                    &format!("{host}:{port}"),
                    "1",
                    "1",
                    "1000",
                    "100",
                ],
            ),
        );
        c.wait_ok();
    }
    srv.wait_ok();
    let client = [("workload", "client"), ("role", "client")];
    let m = agent.wait_until(
        Duration::from_secs(20),
        "both connections counted",
        |m: &Metrics| {
            m.sum("sockscope_tcp_sent_bytes_total", &client) == 2.0 * 1016.0
                && m.sum("sockscope_tcp_received_bytes_total", &client) == 200.0
        },
    );
    // The most specific range wins over the wider one and over "private".
    let sent: Vec<_> = m
        .matching("sockscope_tcp_sent_bytes_total", &client)
        .collect();
    assert_eq!(sent.len(), 1, "{}", m.dump());
    assert_eq!(sent[0].0["remote_class"], "lab");
    assert_eq!(sent[0].0["port"], "", "port dropped on sent bytes");
    let recv: Vec<_> = m
        .matching("sockscope_tcp_received_bytes_total", &client)
        .collect();
    assert_eq!(recv[0].0["port"], port, "port kept elsewhere");
    let _ = std::fs::remove_file(cfg);
}
