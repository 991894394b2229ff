//! UDP payload accounting, end to end. In iterator mode a socket's bytes are batched in its
//! state and reach the flow maps at each drain, at a change of peer and at its release
//! (exporter-ebpf/src/udp.rs); per packet, each datagram goes there directly. Both must be
//! exact.

use std::time::Duration;

use sockscope_tests::{Agent, Metrics, NetPair, Placement, TestCgroup, both_modes, peer_cmd};

const PEER: &str = env!("CARGO_BIN_EXE_sockscope-peer");
const COUNT: u64 = 300;
const SIZE: u64 = 1200;
const REPLY: u64 = 333;

fn exchange(mode: &str, name: &str, net: Option<&NetPair>, v6: bool) {
    let cg = TestCgroup::new(&format!("{name}-{mode}"));
    let agent = Agent::start_in_mode(PEER, &cg.root, mode);
    let Placement {
        server_ns,
        client_ns,
        bind,
        host,
        class,
    } = Placement::new(net, v6);
    let mut srv = cg.spawn(
        "server",
        &mut peer_cmd(
            PEER,
            server_ns,
            &["udp-server", &bind, &COUNT.to_string(), &REPLY.to_string()],
        ),
    );
    let port = srv.line("ready ");
    let mut cli = cg.spawn(
        "client",
        &mut peer_cmd(
            PEER,
            client_ns,
            &[
                "udp-client",
                &format!("{host}:{port}"),
                &COUNT.to_string(),
                &SIZE.to_string(),
            ],
        ),
    );
    let (c_sent, c_recv) = cli.totals("");
    let (s_sent, s_recv) = srv.totals("");
    cli.wait_ok();
    srv.wait_ok();
    assert_eq!(
        (c_sent, c_recv, s_sent, s_recv),
        (COUNT * SIZE, COUNT * REPLY, COUNT * REPLY, COUNT * SIZE)
    );
    let client = [
        ("workload", "client"),
        ("role", "client"),
        ("port", port.as_str()),
    ];
    let server = [
        ("workload", "server"),
        ("role", "server"),
        ("port", port.as_str()),
    ];
    let m = agent.wait_until(Duration::from_secs(20), "exact UDP bytes", |m: &Metrics| {
        m.sum("sockscope_udp_sent_bytes_total", &client) == c_sent as f64
            && m.sum("sockscope_udp_received_bytes_total", &client) == c_recv as f64
            && m.sum("sockscope_udp_sent_bytes_total", &server) == s_sent as f64
            && m.sum("sockscope_udp_received_bytes_total", &server) == s_recv as f64
    });
    for (labels, _) in m.matching("sockscope_udp_sent_bytes_total", &[]) {
        assert_eq!(labels["remote_class"], class);
    }
    // UDP traffic is not TCP traffic.
    assert_eq!(m.sum("sockscope_tcp_sent_bytes_total", &[]), 0.0);
    std::thread::sleep(Duration::from_millis(800));
    let again = Metrics::parse(&agent.scrape());
    assert_eq!(
        again.sum("sockscope_udp_sent_bytes_total", &client),
        c_sent as f64
    );
}

both_modes!(
    udp_loopback_ipv4_exact,
    udp_loopback_ipv6_exact,
    udp_veth_ipv4_exact,
    udp_veth_ipv6_exact,
    udp_open_sockets_are_live,
    udp_preexisting_sockets_count_from_start,
    udp_one_socket_many_threads_exact
);

fn udp_loopback_ipv4_exact(mode: &str) {
    exchange(mode, "udp-lo4", None, false);
}

fn udp_loopback_ipv6_exact(mode: &str) {
    exchange(mode, "udp-lo6", None, true);
}

fn udp_veth_ipv4_exact(mode: &str) {
    let net = NetPair::new();
    exchange(mode, "udp-veth4", Some(&net), false);
}

fn udp_veth_ipv6_exact(mode: &str) {
    let net = NetPair::new();
    exchange(mode, "udp-veth6", Some(&net), true);
}

/// The four series of one client/server pair on `port`.
fn pair(port: &str) -> [[(&'static str, &str); 3]; 2] {
    [
        [("workload", "client"), ("role", "client"), ("port", port)],
        [("workload", "server"), ("role", "server"), ("port", port)],
    ]
}

/// Whether both ends' counts are exactly `sent` bytes from the client and `received` back.
fn exact(m: &Metrics, port: &str, (sent, received): (u64, u64)) -> bool {
    let [client, server] = pair(port);
    m.sum("sockscope_udp_sent_bytes_total", &client) == sent as f64
        && m.sum("sockscope_udp_received_bytes_total", &client) == received as f64
        && m.sum("sockscope_udp_sent_bytes_total", &server) == received as f64
        && m.sum("sockscope_udp_received_bytes_total", &server) == sent as f64
}

/// A UDP server and a client in `cg` on loopback; the client does `first` exchanges (threads
/// sharing its socket), then one more phase of `second` once `hold` exists.
fn held_pair(
    cg: &TestCgroup,
    threads: u64,
    first: u64,
    hold: &std::path::Path,
    second: u64,
) -> (sockscope_tests::Proc, sockscope_tests::Proc, String) {
    let total = threads * first + second;
    let mut srv = cg.spawn(
        "server",
        &mut peer_cmd(
            PEER,
            None,
            &[
                "udp-server",
                "127.0.0.1:0",
                &total.to_string(),
                &REPLY.to_string(),
            ],
        ),
    );
    let port = srv.line("ready ");
    let cli = cg.spawn(
        "client",
        &mut peer_cmd(
            PEER,
            None,
            &[
                "udp-client",
                &format!("127.0.0.1:{port}"),
                &first.to_string(),
                &SIZE.to_string(),
                &threads.to_string(),
                hold.to_str().expect("path"),
                &second.to_string(),
            ],
        ),
    );
    (srv, cli, port)
}

/// Both sockets stay open: their bytes reach the metrics by the drains alone (in iterator
/// mode, the batches the iterator flushes), then the rest at close, none counted twice.
fn udp_open_sockets_are_live(mode: &str) {
    let cg = TestCgroup::new(&format!("udp-live-{mode}"));
    let agent = Agent::start_in_mode(PEER, &cg.root, mode);
    let hold = sockscope_tests::signal_file(&format!("hold-udp-live-{mode}"));
    let (mut srv, mut cli, port) = held_pair(&cg, 1, COUNT, &hold, 7);
    let first = cli.totals("phase ");
    assert_eq!(first, (COUNT * SIZE, COUNT * REPLY));
    agent.wait_until(
        Duration::from_secs(20),
        "exact bytes while both sockets are open",
        |m: &Metrics| exact(m, &port, first),
    );
    std::fs::write(&hold, "").expect("release");
    let last = cli.totals("");
    cli.wait_ok();
    srv.wait_ok();
    assert_eq!(last, ((COUNT + 7) * SIZE, (COUNT + 7) * REPLY));
    agent.wait_until(
        Duration::from_secs(20),
        "exact bytes after both closed",
        |m: &Metrics| exact(m, &port, last),
    );
    std::thread::sleep(Duration::from_millis(800));
    assert!(exact(&Metrics::parse(&agent.scrape()), &port, last));
}

/// Sockets made before the agent started (so without sock_create's state): only what they
/// move afterwards counts, exactly, first per datagram and, once a drain has found them in
/// their processes' files, batched; live while open, and at close.
fn udp_preexisting_sockets_count_from_start(mode: &str) {
    let cg = TestCgroup::new(&format!("udp-pre-{mode}"));
    let hold = sockscope_tests::signal_file(&format!("hold-udp-pre-{mode}"));
    let (mut srv, mut cli, port) = held_pair(&cg, 1, 40, &hold, COUNT);
    let before = cli.totals("phase ");
    let agent = Agent::start_in_mode(PEER, &cg.root, mode);
    // A few drains (300 ms apart) before the next datagram: the iterator has seen the sockets.
    agent.wait_until(Duration::from_secs(20), "drains", |m: &Metrics| {
        m.sum("sockscope_drain_duration_seconds_count", &[]) >= 3.0
    });
    std::fs::write(&hold, "").expect("release");
    let last = cli.totals("");
    cli.wait_ok();
    srv.wait_ok();
    let after = (last.0 - before.0, last.1 - before.1);
    assert_eq!(after, (COUNT * SIZE, COUNT * REPLY));
    let m = agent.wait_until(
        Duration::from_secs(20),
        "only the bytes after the start",
        |m: &Metrics| exact(m, &port, after),
    );
    assert_eq!(
        m.sum(
            "sockscope_events_lost_total",
            &[("source", "close_flush_lost")]
        ),
        0.0
    );
}

/// Four threads send on one socket at once: on two CPUs their datagrams race for the socket's
/// batch (one that finds it taken counts directly); every byte still counts once.
fn udp_one_socket_many_threads_exact(mode: &str) {
    let cg = TestCgroup::new(&format!("udp-threads-{mode}"));
    let agent = Agent::start_in_mode(PEER, &cg.root, mode);
    let hold = sockscope_tests::signal_file(&format!("hold-udp-threads-{mode}"));
    std::fs::write(&hold, "").expect("no hold");
    let per_thread = 2000;
    let (mut srv, mut cli, port) = held_pair(&cg, 4, per_thread, &hold, 1);
    cli.totals("phase ");
    let last = cli.totals("");
    cli.wait_ok();
    srv.wait_ok();
    let n = 4 * per_thread + 1;
    assert_eq!(last, (n * SIZE, n * REPLY));
    agent.wait_until(
        Duration::from_secs(30),
        "every datagram of every thread",
        |m: &Metrics| exact(m, &port, last),
    );
}

/// A port scan from one workload: its bytes stay exact, but at most half of its `port` budget
/// goes to the scanned (non-well-known) ports, the rest fold into `~other`; a well-known port
/// it reaches afterwards, and the port a server of the same workload listens on, still get
/// their own series.
#[test]
fn port_budget_folds_a_scan_into_other() {
    let cg = TestCgroup::new("udp-ports");
    let agent = Agent::start(PEER, &cg.root, &["--max-ports-per-workload", "10"]);
    let mut scan = cg.spawn(
        "scanner",
        &mut peer_cmd(PEER, None, &["udp-ports", "127.0.0.1", "20000-20199"]),
    );
    assert_eq!(scan.line("sent "), "200");
    scan.wait_ok();
    agent.wait_until(Duration::from_secs(20), "the scan", |m: &Metrics| {
        m.sum("sockscope_udp_sent_bytes_total", &[("workload", "scanner")]) == 2000.0
    });
    // Then a server of the same workload, and a well-known port.
    let (port, _) = sockscope_tests::udp_exchange(&cg, PEER, ("scanner", "client"), 5, 100, 0);
    let mut wk = cg.spawn(
        "scanner",
        &mut peer_cmd(PEER, None, &["udp-ports", "127.0.0.1", "443"]),
    );
    wk.line("sent ");
    wk.wait_ok();
    let scanner = [("workload", "scanner")];
    let m = agent.wait_until(Duration::from_secs(20), "every datagram", |m: &Metrics| {
        m.sum("sockscope_udp_sent_bytes_total", &scanner) == 2010.0
            && m.sum("sockscope_udp_received_bytes_total", &scanner) == 500.0
    });
    let ports: Vec<String> = m
        .matching("sockscope_udp_sent_bytes_total", &scanner)
        .map(|(l, _)| l["port"].clone())
        .collect();
    let scanned = ports
        .iter()
        .filter(|p| p.parse::<u16>().is_ok_and(|p| (20000..20200).contains(&p)))
        .count();
    assert_eq!(scanned, 5, "half the budget: {ports:?}");
    assert!(ports.contains(&"~other".to_string()), "{ports:?}");
    assert!(ports.contains(&"443".to_string()), "{ports:?}");
    let served: Vec<String> = m
        .matching("sockscope_udp_received_bytes_total", &scanner)
        .map(|(l, _)| l["port"].clone())
        .collect();
    assert_eq!(
        served,
        std::slice::from_ref(&port),
        "the listening port keeps its label"
    );
    assert!(
        m.sum(
            "sockscope_series_overflow_total",
            &[
                ("metric", "sockscope_udp_sent_bytes_total"),
                ("label", "port")
            ]
        ) >= 195.0
    );
}
