//! Kernel capacity never loses a count: a workload that reaches more peers (or asks for more
//! names) than its share of the kernel maps within one drain interval keeps its exact totals,
//! folded into its overflow entry (remote_class / qname "~overflow"); past the overflow map, the
//! node-wide entry (workload "~overflow") keeps the node's total exact. Other workloads keep
//! their room meanwhile. None of it depends on the drain keeping pace: the drain is paused
//! (the `--fault drain-pause` test aid) while each spray runs, so it all lands in one drain
//! interval, whatever the machine's load.

use std::{path::PathBuf, process::Command, time::Duration};

use sockscope_tests::{Agent, Metrics, Proc, TestCgroup, peer_cmd};

const PEER: &str = env!("CARGO_BIN_EXE_sockscope-peer");
/// Payload of each sprayed datagram, as in the issue: 7 bytes.
const SIZE: u64 = 7;

/// A network namespace where 10.200.0.0/14 is local (no traffic leaves it).
struct SprayNs(String);

impl SprayNs {
    fn new() -> Self {
        let tag = format!(
            "ssov{}{}",
            std::process::id() % 10000,
            sockscope_tests::unique()
        );
        let st = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "ip netns add {tag} && ip -n {tag} link set lo up && \
                     ip -n {tag} route add local 10.200.0.0/14 dev lo table local"
                ),
            ])
            .status()
            .expect("sh");
        assert!(st.success(), "netns {tag}");
        SprayNs(tag)
    }
}

impl Drop for SprayNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn spray(cg: &TestCgroup, child: &str, ns: &SprayNs, count: usize, first: usize) -> Proc {
    cg.spawn(
        child,
        &mut peer_cmd(
            PEER,
            Some(&ns.0),
            &[
                "udp-spray",
                &count.to_string(),
                &SIZE.to_string(),
                &first.to_string(),
            ],
        ),
    )
}

/// An agent whose drains a test can pause (`--fault drain-pause=<file>`), and the file.
fn pausable(cg: &TestCgroup, extra: &[&str]) -> (Agent, PathBuf) {
    let file = std::env::temp_dir().join(format!(
        "sockscope-pause-{}-{}",
        std::process::id(),
        sockscope_tests::unique()
    ));
    let _ = std::fs::remove_file(&file);
    let arm = format!("drain-pause={}", file.display());
    let mut args = vec!["--fault", arm.as_str()];
    args.extend_from_slice(extra);
    (Agent::start(PEER, &cg.root, &args), file)
}

fn udp_sent(m: &Metrics, workload: &str) -> f64 {
    m.sum("sockscope_udp_sent_bytes_total", &[("workload", workload)])
}

/// A bulk TCP transfer of another workload over loopback: returns (server, client) whose
/// reported totals must match their series exactly.
fn bulk(cg: &TestCgroup) -> (Proc, Proc) {
    let mut srv = cg.spawn(
        "bulk-server",
        &mut peer_cmd(PEER, None, &["tcp-server", "127.0.0.1:0", "4"]),
    );
    let port = srv.line("ready ");
    let cli = cg.spawn(
        "bulk-client",
        &mut peer_cmd(
            PEER,
            None,
            &[
                "tcp-client",
                &format!("127.0.0.1:{port}"),
                "4",
                "4",
                "8000000",
                "2000000",
            ],
        ),
    );
    (srv, cli)
}

fn spray_within_one_interval(name: &str, peers: usize) {
    let ns = SprayNs::new();
    let cg = TestCgroup::new(name);
    let (agent, pause) = pausable(&cg, &[]);
    agent.pause_drains(&pause);
    let (mut srv, mut cli) = bulk(&cg);
    let mut s = spray(&cg, "spray", &ns, peers, 0);
    assert_eq!(s.line("sent "), peers.to_string());
    s.wait_ok();
    let (c_sent, c_recv) = cli.totals("");
    let (s_sent, s_recv) = srv.totals("");
    cli.wait_ok();
    srv.wait_ok();
    agent.resume_drains(&pause);
    let want = (peers as u64 * SIZE) as f64;
    let tcp = |m: &Metrics, w: &str, f: &str| {
        m.sum(
            &format!("sockscope_tcp_{f}_bytes_total"),
            &[("workload", w)],
        )
    };
    let m = agent.wait_until(
        Duration::from_secs(60),
        "exact spray and bulk totals",
        |m| {
            udp_sent(m, "spray") == want
                && tcp(m, "bulk-client", "sent") == c_sent as f64
                && tcp(m, "bulk-client", "received") == c_recv as f64
                && tcp(m, "bulk-server", "sent") == s_sent as f64
                && tcp(m, "bulk-server", "received") == s_recv as f64
        },
    );
    // Every peer past the cgroup's share (8192 flows in the interval, plus one per CPU racing
    // the limit) folded into the spray's own overflow entry, none into the node-wide one.
    let folded = m.sum(
        "sockscope_udp_sent_bytes_total",
        &[("workload", "spray"), ("remote_class", "~overflow")],
    );
    assert!(
        folded >= want - (8192.0 + 64.0) * SIZE as f64,
        "folded {folded} of {want}"
    );
    assert_eq!(
        m.sum(
            "sockscope_udp_sent_bytes_total",
            &[("workload", "~overflow")]
        ),
        0.0
    );
    assert!(
        m.sum(
            "sockscope_events_folded_total",
            &[("source", "flow_cgroup_limit")]
        ) > 0.0
    );
    assert_eq!(
        m.sum("sockscope_events_lost_total", &[]),
        0.0,
        "{}",
        m.dump()
    );
    // The bulk transfer never lost its peer.
    assert_eq!(
        m.sum(
            "sockscope_tcp_sent_bytes_total",
            &[("workload", "bulk-client"), ("remote_class", "~overflow")]
        ),
        0.0
    );
}

#[test]
fn spray_of_60000_peers_is_exact() {
    spray_within_one_interval("spray60k", 60_000);
}

#[test]
fn spray_of_100000_peers_is_exact() {
    spray_within_one_interval("spray100k", 100_000);
}

/// The spray's share of the flow map is capped, so a neighbour reaching 300 peers in the same
/// interval gets a flow (and a `remote_ip` series) for each of them.
#[test]
fn a_spray_leaves_room_for_other_workloads() {
    let ns = SprayNs::new();
    let cg = TestCgroup::new("spray-fair");
    // A flow map the spray alone could fill 4 times over; its share is a quarter.
    let (agent, pause) = pausable(
        &cg,
        &[
            "--label-remote-ip",
            "--flow-map-size",
            "16384",
            "--max-flows-per-cgroup",
            "4096",
            "--max-remote-ips-per-workload",
            "100000",
        ],
    );
    agent.pause_drains(&pause);
    let mut s = spray(&cg, "spray", &ns, 60_000, 0);
    s.line("sent ");
    s.wait_ok();
    let mut n = spray(&cg, "neighbour", &ns, 300, 100_000);
    n.line("sent ");
    n.wait_ok();
    agent.resume_drains(&pause);
    let m = agent.wait_until(Duration::from_secs(60), "both totals", |m| {
        udp_sent(m, "spray") == (60_000 * SIZE) as f64
            && udp_sent(m, "neighbour") == (300 * SIZE) as f64
    });
    let neighbour: Vec<_> = m
        .matching(
            "sockscope_udp_sent_bytes_total",
            &[("workload", "neighbour")],
        )
        .collect();
    assert_eq!(neighbour.len(), 300, "one series per peer: {neighbour:?}");
    assert!(
        neighbour
            .iter()
            .all(|(l, _)| l["remote_class"] != "~overflow")
    );
    // The spray kept at most its share of the interval (plus one per CPU racing the limit).
    let spray_peers = m
        .matching("sockscope_udp_sent_bytes_total", &[("workload", "spray")])
        .filter(|(l, _)| l["remote_class"] != "~overflow")
        .count();
    assert!(spray_peers <= 4096 + 64, "{spray_peers}");
}

/// Past the per-cgroup overflow map, the node-wide entry keeps the node's total exact: 100
/// workloads each overflow a tiny flow map, more of them than the overflow map has room for.
#[test]
fn node_wide_overflow_keeps_the_node_total() {
    let ns = SprayNs::new();
    let cg = TestCgroup::new("spray-node");
    let (agent, pause) = pausable(
        &cg,
        &[
            "--flow-map-size",
            "1024",
            "--max-flows-per-cgroup",
            "1024",
            "--overflow-map-size",
            "64",
        ],
    );
    const WORKLOADS: usize = 100;
    const PEERS: usize = 40;
    agent.pause_drains(&pause);
    for i in 0..WORKLOADS {
        let mut p = spray(&cg, &format!("w{i}"), &ns, PEERS, i * PEERS);
        p.line("sent ");
        p.wait_ok();
    }
    agent.resume_drains(&pause);
    let want = (WORKLOADS * PEERS) as f64 * SIZE as f64;
    let m = agent.wait_until(Duration::from_secs(60), "the node's total", |m| {
        m.sum("sockscope_udp_sent_bytes_total", &[]) == want
    });
    assert!(
        m.sum(
            "sockscope_udp_sent_bytes_total",
            &[("workload", "~overflow")]
        ) > 0.0,
        "{}",
        m.dump()
    );
    assert!(
        m.sum(
            "sockscope_events_folded_total",
            &[("source", "flow_overflow_full")]
        ) > 0.0
    );
    assert_eq!(m.sum("sockscope_events_lost_total", &[]), 0.0);
}

/// A random-subdomain flood from one workload: its query count stays exact (names past its
/// share are `~overflow`), and a neighbour's names keep their `qname`.
#[test]
fn dns_flood_is_exact_and_leaves_names_to_others() {
    let ns = SprayNs::new();
    let cg = TestCgroup::new("dns-flood");
    let (agent, pause) = pausable(&cg, &["--max-qnames-per-workload", "1000"]);
    agent.pause_drains(&pause);
    let mut f = cg.spawn(
        "flood",
        &mut peer_cmd(
            PEER,
            Some(&ns.0),
            &["dns-spray", "10.200.0.53:53", "20000", "flood.test"],
        ),
    );
    assert_eq!(f.line("sent "), "20000");
    f.wait_ok();
    let mut q = cg.spawn(
        "quiet",
        &mut peer_cmd(
            PEER,
            Some(&ns.0),
            &["dns-spray", "10.200.0.53:53", "10", "quiet.test"],
        ),
    );
    assert_eq!(q.line("sent "), "10");
    q.wait_ok();
    agent.resume_drains(&pause);
    let m = agent.wait_until(Duration::from_secs(60), "exact query counts", |m| {
        m.sum("sockscope_dns_queries_total", &[("workload", "flood")]) == 20_000.0
            && m.sum("sockscope_dns_queries_total", &[("workload", "quiet")]) == 10.0
    });
    assert!(
        m.sum(
            "sockscope_dns_queries_total",
            &[("workload", "flood"), ("qname", "~overflow")]
        ) > 0.0
    );
    // 20,000 queries in flight outnumber the pending table's 16,384 slots: some evict others
    // (their latency is what is lost, and counted). No count is.
    for (labels, v) in m.matching("sockscope_events_lost_total", &[]) {
        if labels["source"] != "dns_pending_evicted" {
            assert_eq!(v, 0.0, "{labels:?}");
        }
    }
    for i in 0..10 {
        let name = format!("n{i}.quiet.test");
        assert_eq!(
            m.sum(
                "sockscope_dns_queries_total",
                &[("workload", "quiet"), ("qname", &name)]
            ),
            1.0,
            "{name}"
        );
    }
}
