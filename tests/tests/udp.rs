//! UDP payload accounting, end to end.

use std::time::Duration;

use sockscope_tests::{Agent, Metrics, NetPair, Placement, TestCgroup, peer_cmd};

const PEER: &str = env!("CARGO_BIN_EXE_sockscope-peer");
const COUNT: u64 = 300;
const SIZE: u64 = 1200;
const REPLY: u64 = 333;

fn exchange(name: &str, net: Option<&NetPair>, v6: bool) {
    let cg = TestCgroup::new(name);
    let agent = Agent::start(PEER, &cg.root, &[]);
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

#[test]
fn udp_loopback_ipv4_exact() {
    exchange("udp-lo4", None, false);
}

#[test]
fn udp_loopback_ipv6_exact() {
    exchange("udp-lo6", None, true);
}

#[test]
fn udp_veth_ipv4_exact() {
    let net = NetPair::new();
    exchange("udp-veth4", Some(&net), false);
}

#[test]
fn udp_veth_ipv6_exact() {
    let net = NetPair::new();
    exchange("udp-veth6", Some(&net), true);
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
