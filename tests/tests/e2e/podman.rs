//! The shipped image under a real container runtime, run exactly as the DaemonSet runs it
//! (its pod spec translated to podman: the same capabilities, read-only root, host PID
//! namespace, host cgroup tree mounted read-only, BTF, memory limit, and the Localhost seccomp
//! profile its init container installs), counting workloads in real podman containers and a
//! podman pod. Skipped, with the reason, only where podman cannot run.

use std::{collections::BTreeMap, fs, path::Path, time::Duration};

use serde_json::Value;
use sockscope_tests::{
    Metrics, Netns, TestCgroup, cgroup2_mount,
    dns::DnsServer,
    http_get, in_netns,
    manifests::{find, kustomize, repo, yaml_documents},
    podman::{
        Container, Host, Pod, peer_image, pod_runs, podman, podman_unavailable, sockscope_image,
    },
    signal_file, skip,
};

const PEER: &str = env!("CARGO_BIN_EXE_sockscope-peer");
const WAIT: Duration = Duration::from_secs(60);
/// The agent's port (the DaemonSet's SOCKSCOPE_LISTEN_ADDRESS).
const PORT: u16 = 9642;
const NAME: &str = "www.sockscope.test";

/// The DaemonSet of the kustomize base (which the chart renders too).
fn daemonset() -> Value {
    let docs = yaml_documents(&kustomize("deploy/kubernetes"));
    find(&docs, "DaemonSet").clone()
}

/// The agent running in its container, scraped inside its pod's network namespace.
struct AgentContainer {
    container: Container,
    netns: Netns,
}

impl AgentContainer {
    fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        in_netns(&self.netns.name, || http_get(PORT, path, None))
    }

    fn metrics(&self) -> Metrics {
        match self.get("/metrics") {
            Ok((200, body)) => Metrics::parse(&body),
            other => panic!("scrape failed: {other:?}\n{}", self.container.logs()),
        }
    }

    fn wait_until(&self, what: &str, f: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let m = self.metrics();
            if f(&m) {
                return m;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; last scrape:\n{}\nagent log:\n{}",
                m.dump(),
                self.container.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Starts the DaemonSet's pod on this host for test cgroup `cg`: its init containers to
/// completion, then the agent, attached to `cg` only (the DaemonSet attaches to the whole
/// tree; a test may not count the machine's other traffic).
fn start_agent(cg: &TestCgroup, kubelet_root: &Path) -> AgentContainer {
    let image = sockscope_image();
    let netns = Netns::new("agent");
    let host = Host {
        // This machine mounts cgroup v2 at /sys/fs/cgroup/unified (hybrid); nodes at
        // /sys/fs/cgroup, which the DaemonSet mounts.
        paths: vec![
            ("/sys/fs/cgroup".into(), cgroup2_mount()),
            ("/var/lib/kubelet".into(), kubelet_root.to_path_buf()),
        ],
        kubelet_root: kubelet_root.to_path_buf(),
        network: format!("ns:{}", netns.path()),
        env_from: BTreeMap::from([("SOCKSCOPE_NODE_NAME".into(), "podman-node".into())]),
    };
    let ds = daemonset();
    let runs = pod_runs(&ds, &host);
    let (agent, inits) = runs.split_last().expect("a container");
    for (name, args, cargs) in inits {
        let ctr = sockscope_tests::podman::container_name(name);
        let mut all: Vec<&str> = vec!["run", "--rm", "--name", &ctr];
        all.extend(args.iter().map(String::as_str));
        all.extend(cargs.iter().map(String::as_str));
        podman(&all);
    }
    let (name, args, cargs) = agent;
    assert_eq!(name, "sockscope");
    assert_eq!(
        args.last().expect("image"),
        &image,
        "the DaemonSet runs the image scripts/image.sh builds"
    );
    let rel = cg
        .root
        .strip_prefix(cgroup2_mount())
        .expect("test cgroup below the cgroup v2 mount");
    let mut agent_args: Vec<String> = args.clone();
    // No API server on this host: attribution by cgroup path (the Kubernetes path has its own
    // tests against the in-test API server).
    for a in agent_args.iter_mut() {
        if a == "--env=SOCKSCOPE_KUBERNETES=on" {
            *a = "--env=SOCKSCOPE_KUBERNETES=off".into();
        }
    }
    let mut rest: Vec<String> = cargs
        .iter()
        .map(|a| match a.strip_prefix("--cgroup-root=") {
            Some(root) => format!("--cgroup-root={root}/{}", rel.display()),
            None => a.clone(),
        })
        .collect();
    assert!(
        rest.iter().any(|a| a.starts_with("--cgroup-root=")),
        "{rest:?}"
    );
    rest.push("--interval=300ms".into());
    let mut all: Vec<&str> = agent_args.iter().map(String::as_str).collect();
    all.extend(rest.iter().map(String::as_str));
    let container = Container::start("sockscope", &all);
    let agent = AgentContainer { container, netns };
    let deadline = std::time::Instant::now() + WAIT;
    while !matches!(agent.get("/readyz"), Ok((200, _))) {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent's container did not get ready:\n{}",
            agent.container.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    agent
}

/// The `key: value` lines of /proc/<pid>/status.
fn status(pid: u32) -> BTreeMap<String, String> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn sum(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.sum(name, labels)
}

#[test]
fn image_counts_containers_and_pods_exactly() {
    if let Some(why) = podman_unavailable() {
        skip("podman::image_counts_containers_and_pods_exactly", why);
        return;
    }
    let cg = TestCgroup::new("podman");
    let kubelet = std::env::temp_dir()
        .join(format!("sockscope-kubelet-{}", cg.root.display()).replace('/', "_"));
    let agent = start_agent(&cg, &kubelet);

    // The pod's security as the kernel reports it for the agent's process.
    let st = status(agent.container.pid());
    assert_eq!(st["NoNewPrivs"], "1");
    assert_eq!(st["Seccomp"], "2", "a seccomp filter is in force");
    assert_eq!(
        st["CapEff"], "0000000000000000",
        "capabilities dropped after attach"
    );
    // CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39): all the bounding set holds.
    assert_eq!(st["CapBnd"], "000000c000001000");
    let installed = fs::read_to_string(kubelet.join("seccomp/profiles/sockscope.json"))
        .expect("the init container installed the seccomp profile");
    let shipped =
        fs::read_to_string(repo().join("deploy/seccomp/sockscope.json")).expect("profile");
    assert_eq!(
        installed, shipped,
        "the profile the agent runs under is the shipped one"
    );
    let root_mount = fs::read_to_string(format!("/proc/{}/mountinfo", agent.container.pid()))
        .expect("mountinfo")
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .map(str::to_string)
        .expect("root mount");
    assert!(
        root_mount
            .split_whitespace()
            .nth(5)
            .unwrap_or("")
            .split(',')
            .any(|o| o == "ro"),
        "read-only root: {root_mount}"
    );

    // Workloads: servers in one network namespace with a DNS server, plain containers as
    // clients in the other, and a pod whose containers talk over the loopback of the network
    // namespace they share.
    let dns = DnsServer::start(&[("www", "A", "{server4}")], false);
    let image = peer_image(PEER);
    let go = signal_file("podman-linger");
    let dir = go.parent().expect("temp dir").to_path_buf();
    let linger_mount = format!("--volume={}:/linger:ro", dir.display());
    let linger = format!(
        "/linger/{}",
        go.file_name().expect("name").to_string_lossy()
    );
    let parent = format!(
        "--cgroup-parent=/{}",
        cg.root
            .strip_prefix(cgroup2_mount())
            .expect("rel")
            .display()
    );
    let net_a = format!("--network=ns:/run/netns/{}", dns.net.a);
    let net_b = format!("--network=ns:/run/netns/{}", dns.net.b);
    let workload = |net: &str, extra: &[&str], cmd: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec![net.into(), parent.clone(), linger_mount.clone()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push(image.clone());
        v.extend(["--linger".to_string(), linger.clone()]);
        v.extend(cmd.iter().map(|s| s.to_string()));
        v
    };
    let attach = |role: &str, args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Container::attach(role, &refs)
    };

    let (tcp_srv, mut tcp_srv_out) = attach(
        "tcp-server",
        workload(&net_b, &[], &["tcp-server", "0.0.0.0:0", "2"]),
    );
    let tcp_port = tcp_srv_out.line("ready ");
    let (udp_srv, mut udp_srv_out) = attach(
        "udp-server",
        workload(&net_b, &[], &["udp-server", "0.0.0.0:0", "40", "100"]),
    );
    let udp_port = udp_srv_out.line("ready ");
    let b4 = dns.net.b4.clone();
    let (tcp_cli, mut tcp_cli_out) = attach(
        "tcp-client",
        workload(
            &net_a,
            &[],
            &[
                "tcp-client",
                &format!("{b4}:{tcp_port}"),
                "1",
                "1",
                "200000",
                "20000",
            ],
        ),
    );
    let (udp_cli, mut udp_cli_out) = attach(
        "udp-client",
        workload(
            &net_a,
            &[],
            &["udp-client", &format!("{b4}:{udp_port}"), "40", "300"],
        ),
    );
    let dns_opt = format!("--dns={b4}");
    let (resolver, mut resolver_out) = attach(
        "resolver",
        workload(
            &net_a,
            &[&dns_opt],
            &["resolve", NAME, &tcp_port, "5000", "700", "4"],
        ),
    );

    let pod = Pod::create(&["--network=none", &parent]);
    let in_pod = format!("--pod={}", pod.name);
    let pod_workload = |cmd: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec![in_pod.clone(), linger_mount.clone(), image.clone()];
        v.extend(["--linger".to_string(), linger.clone()]);
        v.extend(cmd.iter().map(|s| s.to_string()));
        v
    };
    let (pod_srv, mut pod_srv_out) = attach(
        "pod-server",
        pod_workload(&["tcp-server", "127.0.0.1:0", "1"]),
    );
    let pod_port = pod_srv_out.line("ready ");
    let (pod_cli, mut pod_cli_out) = attach(
        "pod-client",
        pod_workload(&[
            "tcp-client",
            &format!("127.0.0.1:{pod_port}"),
            "1",
            "1",
            "70000",
            "9000",
        ]),
    );
    let (pod_usrv, mut pod_usrv_out) = attach(
        "pod-udp-server",
        pod_workload(&["udp-server", "127.0.0.1:0", "25", "64"]),
    );
    let pod_uport = pod_usrv_out.line("ready ");
    let (pod_ucli, mut pod_ucli_out) = attach(
        "pod-udp-client",
        pod_workload(&["udp-client", &format!("127.0.0.1:{pod_uport}"), "25", "512"]),
    );

    let (tc_sent, tc_recv) = tcp_cli_out.totals("");
    let (uc_sent, uc_recv) = udp_cli_out.totals("");
    let (r_sent, r_recv) = resolver_out.totals("");
    let (pc_sent, pc_recv) = pod_cli_out.totals("");
    let (puc_sent, puc_recv) = pod_ucli_out.totals("");
    for out in [
        &mut tcp_srv_out,
        &mut udp_srv_out,
        &mut pod_srv_out,
        &mut pod_usrv_out,
    ] {
        out.line("lingering");
    }

    let pod_id = pod.short_id();
    let ids: BTreeMap<&str, String> = [
        ("tcp_srv", &tcp_srv),
        ("udp_srv", &udp_srv),
        ("tcp_cli", &tcp_cli),
        ("udp_cli", &udp_cli),
        ("resolver", &resolver),
        ("pod_srv", &pod_srv),
        ("pod_cli", &pod_cli),
        ("pod_usrv", &pod_usrv),
        ("pod_ucli", &pod_ucli),
    ]
    .into_iter()
    .map(|(k, c)| (k, c.short_id()))
    .collect();
    // A plain container: workload and container are its short id; a pod's container names its
    // pod too.
    let owner = |k: &str, role: &'static str, port: &str| -> Vec<(&'static str, String)> {
        let in_pod = k.starts_with("pod_");
        vec![
            ("namespace", String::new()),
            ("workload", ids[k].clone()),
            ("container", ids[k].clone()),
            (
                "pod",
                if in_pod {
                    pod_id.clone()
                } else {
                    String::new()
                },
            ),
            ("role", role.to_string()),
            ("port", port.to_string()),
        ]
    };
    let as_refs = |v: &[(&'static str, String)]| -> Vec<(&'static str, String)> { v.to_vec() };
    let value = |m: &Metrics, name: &str, labels: &[(&'static str, String)]| -> f64 {
        let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        sum(m, name, &l)
    };
    let tcp = |m: &Metrics, k: &str, role: &'static str, port: &str, sent: u64, recv: u64| {
        let o = as_refs(&owner(k, role, port));
        value(m, "sockscope_tcp_sent_bytes_total", &o) == sent as f64
            && value(m, "sockscope_tcp_received_bytes_total", &o) == recv as f64
    };
    let udp = |m: &Metrics, k: &str, role: &'static str, port: &str, sent: u64, recv: u64| {
        let o = as_refs(&owner(k, role, port));
        value(m, "sockscope_udp_sent_bytes_total", &o) == sent as f64
            && value(m, "sockscope_udp_received_bytes_total", &o) == recv as f64
    };
    let m = agent.wait_until("exact counts for every container", |m| {
        tcp(m, "tcp_cli", "client", &tcp_port, tc_sent, tc_recv)
            && tcp(m, "resolver", "client", &tcp_port, r_sent, r_recv)
            && tcp(
                m,
                "tcp_srv",
                "server",
                &tcp_port,
                tc_recv + r_recv,
                tc_sent + r_sent,
            )
            && udp(m, "udp_cli", "client", &udp_port, uc_sent, uc_recv)
            && udp(m, "udp_srv", "server", &udp_port, uc_recv, uc_sent)
            && tcp(m, "pod_cli", "client", &pod_port, pc_sent, pc_recv)
            && tcp(m, "pod_srv", "server", &pod_port, pc_recv, pc_sent)
            && udp(m, "pod_ucli", "client", &pod_uport, puc_sent, puc_recv)
            && udp(m, "pod_usrv", "server", &pod_uport, puc_recv, puc_sent)
            && value(
                m,
                "sockscope_dns_responses_total",
                &[
                    ("workload", ids["resolver"].clone()),
                    ("qname", NAME.into()),
                ],
            ) >= 1.0
    });
    // Connections opened and closed, per container.
    for (k, role, port) in [
        ("tcp_cli", "client", &tcp_port),
        ("pod_cli", "client", &pod_port),
        ("pod_srv", "server", &pod_port),
    ] {
        let o = as_refs(&owner(k, role, port));
        assert_eq!(
            value(&m, "sockscope_tcp_connections_opened_total", &o),
            1.0,
            "{k}\n{}",
            m.dump()
        );
    }
    assert_eq!(
        value(
            &m,
            "sockscope_tcp_connections_opened_total",
            &as_refs(&owner("tcp_srv", "server", &tcp_port))
        ),
        2.0
    );
    // Peers: the other namespace is a private address, the pod's own loopback is loopback, and
    // the resolver's connection carries the name it resolved.
    for (labels, _) in m.matching(
        "sockscope_tcp_sent_bytes_total",
        &[("workload", &ids["tcp_cli"])],
    ) {
        // (Its remote_host may carry the resolver's name: the two share a network namespace
        // here, and names are remembered per namespace and address.)
        assert_eq!(labels["remote_class"], "private");
    }
    for (labels, _) in m.matching(
        "sockscope_tcp_sent_bytes_total",
        &[("workload", &ids["pod_cli"])],
    ) {
        assert_eq!(labels["remote_class"], "loopback");
    }
    let of_resolver = [("workload", ids["resolver"].as_str())];
    let resolved: Vec<_> = m
        .matching("sockscope_tcp_sent_bytes_total", &of_resolver)
        .collect();
    assert_eq!(resolved.len(), 1, "{}", m.dump());
    assert_eq!(resolved[0].0["remote_host"], NAME);
    // The resolver's questions: getaddrinfo() asks for A and AAAA, each answered NOERROR.
    for qtype in ["A", "AAAA"] {
        let q = [
            ("workload", ids["resolver"].as_str()),
            ("qname", NAME),
            ("qtype", qtype),
        ];
        assert_eq!(
            m.sum("sockscope_dns_queries_total", &q),
            1.0,
            "{qtype}\n{}",
            m.dump()
        );
    }
    assert_eq!(
        m.sum(
            "sockscope_dns_responses_total",
            &[
                ("workload", &ids["resolver"]),
                ("qname", NAME),
                ("rcode", "NOERROR")
            ]
        ),
        2.0
    );

    // The workloads end; the agent stops on SIGTERM (as the kubelet stops it) with a final
    // drain and status 0.
    fs::write(&go, b"").expect("linger file");
    for mut out in [
        tcp_srv_out,
        udp_srv_out,
        tcp_cli_out,
        udp_cli_out,
        resolver_out,
        pod_srv_out,
        pod_cli_out,
        pod_usrv_out,
        pod_ucli_out,
    ] {
        out.wait_ok();
    }
    podman(&["stop", "-t", "20", &agent.container.name]);
    assert_eq!(
        podman(&[
            "inspect",
            "--format",
            "{{.State.ExitCode}}",
            &agent.container.name
        ]),
        "0",
        "{}",
        agent.container.logs()
    );
    assert!(agent.container.logs().contains("final drain done"));
    let _ = fs::remove_file(&go);
    let _ = fs::remove_dir_all(&kubelet);
}

/// The profile is enforced and not a formality: without `bpf(2)` in it the agent cannot load
/// a program, and says so.
#[test]
fn seccomp_profile_is_enforced() {
    if let Some(why) = podman_unavailable() {
        skip("podman::seccomp_profile_is_enforced", why);
        return;
    }
    let mut profile: Value = serde_json::from_str(
        &fs::read_to_string(repo().join("deploy/seccomp/sockscope.json")).expect("profile"),
    )
    .expect("json");
    let names = profile["syscalls"][0]["names"]
        .as_array_mut()
        .expect("names");
    names.retain(|n| n != "bpf");
    let file = signal_file("seccomp-nobpf");
    fs::write(&file, profile.to_string()).expect("profile without bpf");
    let cg = TestCgroup::new("podman-seccomp");
    let out = sockscope_tests::podman::containers("podman")
        .args([
            "run",
            "--rm",
            "--network=none",
            "--cap-drop=all",
            "--cap-add=BPF,PERFMON,NET_ADMIN",
            // As the DaemonSet (allowPrivilegeEscalation: false): with no_new_privs the
            // runtime loads the filter right before it starts the agent, so the profile need
            // not allow what the runtime does before that (setgroups, setresuid, ...).
            "--security-opt=no-new-privileges",
            &format!("--security-opt=seccomp={}", file.display()),
            &format!(
                "--volume={}:/host/sys/fs/cgroup:ro",
                cgroup2_mount().display()
            ),
            "--volume=/sys/kernel/btf:/sys/kernel/btf:ro",
            &sockscope_image(),
            &format!(
                "--cgroup-root=/host/sys/fs/cgroup/{}",
                cg.root
                    .strip_prefix(cgroup2_mount())
                    .expect("rel")
                    .display()
            ),
        ])
        .output()
        .expect("podman run");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without bpf(2): {log}");
    assert!(log.contains("Operation not permitted"), "{log}");
    let _ = fs::remove_file(&file);
}
