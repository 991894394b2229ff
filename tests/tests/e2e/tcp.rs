//! TCP byte and connection accounting, end to end.

use std::time::Duration;

use sockscope_tests::{Agent, Metrics, NetPair, Placement, TestCgroup, both_modes, peer_cmd};

const PEER: &str = env!("CARGO_BIN_EXE_sockscope-peer");
const UP: u64 = 10 * 1024 * 1024;
const DOWN: u64 = 1024 * 1024;
const WAIT: Duration = Duration::from_secs(20);

fn series<'a>(workload: &'a str, role: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("workload", workload), ("role", role)]
}

both_modes!(
    tcp_loopback_ipv4_exact,
    tcp_loopback_ipv6_exact,
    tcp_veth_ipv4_exact,
    tcp_veth_ipv6_exact,
    tcp_long_lived_connection_is_live,
    tcp_preexisting_connection_counts_from_start,
    tcp_preexisting_ipv6_connection_counts_from_start,
    tcp_preexisting_listener_accepts_tracked_connections,
    tcp_preexisting_socket_connecting_later_is_tracked,
    tcp_refused_connect_is_a_failure,
    tcp_burst_of_2000_connections_exact
);

/// The agent, counting TCP in `mode`.
fn start(cg: &TestCgroup, mode: &str) -> Agent {
    Agent::start_in_mode(PEER, &cg.root, mode)
}

/// 10 MiB up, 1 MiB back on one connection; every byte and both ends' open/close exact.
fn exchange(mode: &str, name: &str, net: Option<&NetPair>, v6: bool) {
    let cg = TestCgroup::new(&format!("{name}-{mode}"));
    let agent = start(&cg, mode);
    let Placement {
        server_ns,
        client_ns,
        bind,
        host: connect_host,
        class,
    } = Placement::new(net, v6);
    let mut srv = cg.spawn(
        "server",
        &mut peer_cmd(PEER, server_ns, &["tcp-server", &bind, "1"]),
    );
    let port = srv.line("ready ");
    let addr = format!("{connect_host}:{port}");
    let mut cli = cg.spawn(
        "client",
        &mut peer_cmd(
            PEER,
            client_ns,
            &[
                "tcp-client",
                &addr,
                "1",
                "1",
                &UP.to_string(),
                &DOWN.to_string(),
            ],
        ),
    );
    let (c_sent, c_recv) = cli.totals("");
    let (s_sent, s_recv) = srv.totals("");
    cli.wait_ok();
    srv.wait_ok();
    assert_eq!((c_sent, c_recv), (UP + 16, DOWN));
    assert_eq!((s_sent, s_recv), (DOWN, UP + 16));

    let client = series("client", "client");
    let server = series("server", "server");
    let m = agent.wait_until(WAIT, "exact byte counts", |m: &Metrics| {
        m.sum("sockscope_tcp_sent_bytes_total", &client) == c_sent as f64
            && m.sum("sockscope_tcp_received_bytes_total", &client) == c_recv as f64
            && m.sum("sockscope_tcp_sent_bytes_total", &server) == s_sent as f64
            && m.sum("sockscope_tcp_received_bytes_total", &server) == s_recv as f64
            && m.sum("sockscope_tcp_connections_closed_total", &client) == 1.0
            && m.sum("sockscope_tcp_connections_closed_total", &server) == 1.0
    });
    assert_eq!(
        m.sum("sockscope_tcp_connections_opened_total", &client),
        1.0
    );
    assert_eq!(
        m.sum("sockscope_tcp_connections_opened_total", &server),
        1.0
    );
    // One series per end, with the service port on both and the right class.
    let c: Vec<_> = m
        .matching("sockscope_tcp_sent_bytes_total", &client)
        .collect();
    assert_eq!(c.len(), 1, "{}", m.dump());
    assert_eq!(c[0].0["port"], port);
    assert_eq!(c[0].0["remote_class"], class);
    for label in [
        "namespace",
        "pod",
        "container",
        "remote_namespace",
        "remote_workload",
        "remote_host",
    ] {
        assert_eq!(c[0].0[label], "", "{label}");
    }
    let s: Vec<_> = m
        .matching("sockscope_tcp_sent_bytes_total", &server)
        .collect();
    assert_eq!(s.len(), 1, "{}", m.dump());
    assert_eq!(s[0].0["port"], port);
    assert_eq!(s[0].0["remote_class"], class);
    assert_eq!(m.sum("sockscope_tcp_connect_failures_total", &[]), 0.0);
    // Counts stay exact after more drains (nothing double counted).
    std::thread::sleep(Duration::from_millis(800));
    let again = Metrics::parse(&agent.scrape());
    assert_eq!(
        again.sum("sockscope_tcp_sent_bytes_total", &client),
        c_sent as f64
    );
    assert_eq!(
        again.sum("sockscope_tcp_received_bytes_total", &server),
        s_recv as f64
    );
}

fn tcp_loopback_ipv4_exact(mode: &str) {
    exchange(mode, "tcp-lo4", None, false);
}

fn tcp_loopback_ipv6_exact(mode: &str) {
    exchange(mode, "tcp-lo6", None, true);
}

fn tcp_veth_ipv4_exact(mode: &str) {
    let net = NetPair::new();
    exchange(mode, "tcp-veth4", Some(&net), false);
}

fn tcp_veth_ipv6_exact(mode: &str) {
    let net = NetPair::new();
    exchange(mode, "tcp-veth6", Some(&net), true);
}

/// Bytes of an open, idle connection are visible before it closes.
fn tcp_long_lived_connection_is_live(mode: &str) {
    let cg = TestCgroup::new(&format!("tcp-live-{mode}"));
    let agent = start(&cg, mode);
    let hold = sockscope_tests::signal_file(&format!("hold-live-{mode}"));
    let mut srv = cg.spawn(
        "server",
        &mut peer_cmd(PEER, None, &["tcp-server", "127.0.0.1:0", "1"]),
    );
    let port = srv.line("ready ");
    let mut cli = cg.spawn(
        "client",
        &mut peer_cmd(
            PEER,
            None,
            &[
                "tcp-client",
                &format!("127.0.0.1:{port}"),
                "1",
                "1",
                "3000000",
                "700000",
                hold.to_str().expect("path"),
            ],
        ),
    );
    let (c_sent, c_recv) = cli.totals("exchanged ");
    let (client, server) = (series("client", "client"), series("server", "server"));
    let m = agent.wait_until(
        WAIT,
        "live byte counts of an open connection",
        |m: &Metrics| {
            m.sum("sockscope_tcp_sent_bytes_total", &client) == c_sent as f64
                && m.sum("sockscope_tcp_received_bytes_total", &client) == c_recv as f64
                && m.sum("sockscope_tcp_sent_bytes_total", &server) == c_recv as f64
                && m.sum("sockscope_tcp_received_bytes_total", &server) == c_sent as f64
        },
    );
    assert_eq!(
        m.sum("sockscope_tcp_connections_opened_total", &client),
        1.0
    );
    assert_eq!(
        m.sum("sockscope_tcp_connections_closed_total", &client),
        0.0,
        "still open"
    );
    std::fs::write(&hold, "").expect("release");
    cli.totals("");
    cli.wait_ok();
    srv.wait_ok();
    let m = agent.wait_until(WAIT, "close counted", |m: &Metrics| {
        m.sum("sockscope_tcp_connections_closed_total", &client) == 1.0
            && m.sum("sockscope_tcp_connections_closed_total", &server) == 1.0
    });
    assert_eq!(
        m.sum("sockscope_tcp_sent_bytes_total", &client),
        c_sent as f64,
        "no extra bytes at close"
    );
    assert_eq!(
        m.sum("sockscope_tcp_received_bytes_total", &server),
        c_sent as f64
    );
    let _ = std::fs::remove_file(&hold);
}

/// A connection open before sockscope starts counts only the bytes after the start.
fn tcp_preexisting_connection_counts_from_start(mode: &str) {
    preexisting(mode, None, false);
}

/// The same over IPv6 between two network namespaces: the adopted connection's peer address
/// comes from the socket (`skc_v6_daddr`), and names its class.
fn tcp_preexisting_ipv6_connection_counts_from_start(mode: &str) {
    let net = NetPair::new();
    preexisting(mode, Some(&net), true);
}

/// A connection open before the agent: only the bytes after its start count, it is not counted
/// as opened, and its role comes from the ephemeral port range.
fn preexisting(mode: &str, net: Option<&NetPair>, v6: bool) {
    let Placement {
        server_ns,
        client_ns,
        host,
        class,
        ..
    } = Placement::new(net, v6);
    let tag = if v6 { "6" } else { "4" };
    let cg = TestCgroup::new(&format!("tcp-pre{tag}-{mode}"));
    let hold = sockscope_tests::signal_file(&format!("hold-pre{tag}-{mode}"));
    let mut srv = cg.spawn(
        "server",
        &mut peer_cmd(
            PEER,
            server_ns,
            &[
                "tcp-server",
                &format!("{host}:{}", sockscope_tests::service_port()),
                "1",
            ],
        ),
    );
    let port = srv.line("ready ");
    let mut cli = cg.spawn(
        "client",
        &mut peer_cmd(
            PEER,
            client_ns,
            &[
                "tcp-client",
                &format!("{host}:{port}"),
                "1",
                "1",
                "1000000",
                "1000000",
                hold.to_str().expect("path"),
                "2000000",
                "500000",
            ],
        ),
    );
    let (before_sent, before_recv) = cli.totals("exchanged ");
    let agent = start(&cg, mode);
    std::fs::write(&hold, "").expect("release");
    let (c_sent, c_recv) = cli.totals("");
    cli.wait_ok();
    srv.wait_ok();
    let (after_sent, after_recv) = (c_sent - before_sent, c_recv - before_recv);
    assert_eq!((after_sent, after_recv), (2_000_016, 500_000));
    let (client, server) = (series("client", "client"), series("server", "server"));
    let m = agent.wait_until(WAIT, "only post-start bytes", |m: &Metrics| {
        m.sum("sockscope_tcp_sent_bytes_total", &client) == after_sent as f64
            && m.sum("sockscope_tcp_received_bytes_total", &client) == after_recv as f64
            && m.sum("sockscope_tcp_sent_bytes_total", &server) == after_recv as f64
            && m.sum("sockscope_tcp_received_bytes_total", &server) == after_sent as f64
    });
    // It was not opened while sockscope watched.
    assert_eq!(m.sum("sockscope_tcp_connections_opened_total", &[]), 0.0);
    let c: Vec<_> = m
        .matching("sockscope_tcp_sent_bytes_total", &client)
        .collect();
    assert_eq!(c.len(), 1, "{}", m.dump());
    assert_eq!(
        c[0].0["port"], port,
        "role inferred from the ephemeral port range"
    );
    assert_eq!(c[0].0["remote_class"], class, "{}", m.dump());
    std::thread::sleep(Duration::from_millis(800));
    let again = Metrics::parse(&agent.scrape());
    assert_eq!(
        again.sum("sockscope_tcp_sent_bytes_total", &client),
        after_sent as f64
    );
    let _ = std::fs::remove_file(&hold);
}

/// A listener open before the agent: the connections it accepts afterwards are opened, counted
/// exactly and closed under the listener's owner (the iterator's adoption pass gives the
/// listener its state, which the accepted sockets inherit).
fn tcp_preexisting_listener_accepts_tracked_connections(mode: &str) {
    let cg = TestCgroup::new(&format!("tcp-prelisten-{mode}"));
    let mut srv = cg.spawn(
        "server",
        &mut peer_cmd(PEER, None, &["tcp-server", "127.0.0.1:0", "3"]),
    );
    let port = srv.line("ready ");
    let agent = start(&cg, mode);
    let mut cli = cg.spawn(
        "client",
        &mut peer_cmd(
            PEER,
            None,
            &[
                "tcp-client",
                &format!("127.0.0.1:{port}"),
                "3",
                "1",
                "300000",
                "70000",
            ],
        ),
    );
    let (c_sent, c_recv) = cli.totals("");
    let (s_sent, s_recv) = srv.totals("");
    cli.wait_ok();
    srv.wait_ok();
    assert_eq!((c_sent, c_recv), (3 * 300_016, 3 * 70_000));
    let server = series("server", "server");
    let m = agent.wait_until(WAIT, "accepted connections exact", |m: &Metrics| {
        m.sum("sockscope_tcp_sent_bytes_total", &server) == s_sent as f64
            && m.sum("sockscope_tcp_received_bytes_total", &server) == s_recv as f64
            && m.sum("sockscope_tcp_connections_closed_total", &server) == 3.0
            && m.sum(
                "sockscope_tcp_sent_bytes_total",
                &series("client", "client"),
            ) == c_sent as f64
    });
    assert_eq!(
        m.sum("sockscope_tcp_connections_opened_total", &server),
        3.0
    );
    let s: Vec<_> = m
        .matching("sockscope_tcp_sent_bytes_total", &server)
        .collect();
    assert_eq!(s.len(), 1, "{}", m.dump());
    assert_eq!(s[0].0["port"], port);
}

/// A socket created before the agent and connected after it: its state is made by sock_ops,
/// which cannot tell the owner; the owner comes from the socket itself (the iterator, or the
/// close), so the connection is opened, counted and closed under the right workload.
fn tcp_preexisting_socket_connecting_later_is_tracked(mode: &str) {
    let cg = TestCgroup::new(&format!("tcp-late-{mode}"));
    let hold = sockscope_tests::signal_file(&format!("hold-late-{mode}"));
    let mut srv = cg.spawn(
        "server",
        &mut peer_cmd(PEER, None, &["tcp-server", "127.0.0.1:0", "1"]),
    );
    let port = srv.line("ready ");
    let mut cli = cg.spawn(
        "client",
        &mut peer_cmd(
            PEER,
            None,
            &[
                "tcp-late-connect",
                &format!("127.0.0.1:{port}"),
                hold.to_str().expect("path"),
                "123456",
                "654321",
            ],
        ),
    );
    cli.line("socket");
    let agent = start(&cg, mode);
    std::fs::write(&hold, "").expect("release");
    let (c_sent, c_recv) = cli.totals("");
    cli.wait_ok();
    srv.wait_ok();
    assert_eq!((c_sent, c_recv), (123_472, 654_321));
    let client = series("client", "client");
    let m = agent.wait_until(WAIT, "late connection exact", |m: &Metrics| {
        m.sum("sockscope_tcp_sent_bytes_total", &client) == c_sent as f64
            && m.sum("sockscope_tcp_received_bytes_total", &client) == c_recv as f64
            && m.sum("sockscope_tcp_connections_closed_total", &client) == 1.0
    });
    assert_eq!(
        m.sum("sockscope_tcp_connections_opened_total", &client),
        1.0
    );
    assert_eq!(
        m.sum(
            "sockscope_events_lost_total",
            &[("source", "close_flush_lost")]
        ),
        0.0
    );
    let _ = std::fs::remove_file(&hold);
}

/// A refused connect is a client-side failure, not an open.
fn tcp_refused_connect_is_a_failure(mode: &str) {
    let cg = TestCgroup::new(&format!("tcp-refused-{mode}"));
    let agent = start(&cg, mode);
    let port = sockscope_tests::free_port().to_string();
    let mut p = cg.spawn(
        "client",
        &mut peer_cmd(
            PEER,
            None,
            &["connect-refused", &format!("127.0.0.1:{port}")],
        ),
    );
    p.line("refused");
    p.wait_ok();
    let m = agent.wait_until(WAIT, "one connect failure", |m: &Metrics| {
        m.sum(
            "sockscope_tcp_connect_failures_total",
            &[("workload", "client"), ("role", "client"), ("port", &port)],
        ) == 1.0
    });
    assert_eq!(m.sum("sockscope_tcp_connections_opened_total", &[]), 0.0);
    assert_eq!(m.sum("sockscope_tcp_connections_closed_total", &[]), 0.0);
}

/// 2,000 short connections, 50 at a time: every open, close and byte counted.
fn tcp_burst_of_2000_connections_exact(mode: &str) {
    const N: u64 = 2000;
    let cg = TestCgroup::new(&format!("tcp-burst-{mode}"));
    let agent = start(&cg, mode);
    let mut srv = cg.spawn(
        "server",
        &mut peer_cmd(PEER, None, &["tcp-server", "127.0.0.1:0", &N.to_string()]),
    );
    let port = srv.line("ready ");
    let mut cli = cg.spawn(
        "client",
        &mut peer_cmd(
            PEER,
            None,
            &[
                "tcp-client",
                &format!("127.0.0.1:{port}"),
                &N.to_string(),
                "50",
                "100",
                "200",
            ],
        ),
    );
    let (c_sent, c_recv) = cli.totals("");
    let (s_sent, s_recv) = srv.totals("");
    cli.wait_ok();
    srv.wait_ok();
    assert_eq!(
        (c_sent, c_recv, s_sent, s_recv),
        (N * 116, N * 200, N * 200, N * 116)
    );
    let (client, server) = (series("client", "client"), series("server", "server"));
    let m = agent.wait_until(
        Duration::from_secs(30),
        "2000 connections",
        |m: &Metrics| {
            m.sum("sockscope_tcp_connections_closed_total", &client) == N as f64
                && m.sum("sockscope_tcp_connections_closed_total", &server) == N as f64
        },
    );
    assert_eq!(
        m.sum("sockscope_tcp_connections_opened_total", &client),
        N as f64
    );
    assert_eq!(
        m.sum("sockscope_tcp_connections_opened_total", &server),
        N as f64
    );
    assert_eq!(
        m.sum("sockscope_tcp_sent_bytes_total", &client),
        c_sent as f64
    );
    assert_eq!(
        m.sum("sockscope_tcp_received_bytes_total", &client),
        c_recv as f64
    );
    assert_eq!(
        m.sum("sockscope_tcp_sent_bytes_total", &server),
        s_sent as f64
    );
    assert_eq!(
        m.sum("sockscope_tcp_received_bytes_total", &server),
        s_recv as f64
    );
    assert_eq!(m.sum("sockscope_tcp_connect_failures_total", &[]), 0.0);
    // Nothing was dropped on the way to the flow maps. (`sock_storage_failed` may tick for a
    // socket already being torn down, whose state can no longer be created; the exact counts
    // above show no bytes depended on it.)
    assert_eq!(
        m.sum(
            "sockscope_events_lost_total",
            &[("source", "close_flush_lost")]
        ),
        0.0,
        "{}",
        m.dump()
    );
    // Nor into overflow: 2000 connections of one pair are one flow.
    assert_eq!(
        m.sum("sockscope_events_folded_total", &[]),
        0.0,
        "{}",
        m.dump()
    );
}
