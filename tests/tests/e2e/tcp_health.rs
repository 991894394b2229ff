//! TCP health per edge, end to end: connect time through a listener that drops SYNs, RTT over
//! a link that really delays packets, connection lifetime, and resets both ways.

use std::time::Duration;

use sockscope_tests::{
    Agent, Metrics, Netns, TestCgroup, both_modes, peer_cmd, process::Proc, signal_file,
};

const PEER: &str = env!("CARGO_BIN_EXE_sockscope-peer");
const WAIT: Duration = Duration::from_secs(30);

both_modes!(
    connect_time_counts_a_dropped_syn,
    rtt_and_lifetime_over_a_delaying_link,
    resets_of_an_abortive_close_and_a_closed_port
);

/// The cumulative count of histogram `name`'s bucket `le` over the series matching `labels`.
fn bucket(m: &Metrics, name: &str, le: &str, labels: &[(&str, &str)]) -> f64 {
    let mut l = labels.to_vec();
    l.push(("le", le));
    m.sum(&format!("{name}_bucket"), &l)
}

fn count(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.sum(&format!("{name}_count"), labels)
}

/// Two connects to a listener whose accept queue holds one connection and that accepts
/// nothing for 300 ms: the first completes at once, the second's SYN is dropped (the queue is
/// full) and retransmitted after the initial 1 s timeout, so its connect takes just over a
/// second. The connect histogram has one sample in the first buckets and one in (1 s, 3 s].
fn connect_time_counts_a_dropped_syn(mode: &str) {
    const NAME: &str = "sockscope_tcp_connect_duration_seconds";
    let cg = TestCgroup::new(&format!("health-connect-{mode}"));
    let agent = Agent::start_in_mode(PEER, &cg.root, mode);
    // A namespace of its own without SYN cookies: with a full accept queue a SYN may otherwise
    // be answered with a cookie whose check then fails, and the client is reset instead of
    // retransmitting its SYN (seen under load).
    let ns = Netns::new("conn");
    let st = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "sysctl",
            "-qw",
            "net.ipv4.tcp_syncookies=0",
        ])
        .status()
        .expect("sysctl");
    assert!(st.success());
    let mut srv = cg.spawn(
        "server",
        &mut peer_cmd(
            PEER,
            Some(&ns.name),
            &[
                "tcp-server",
                "127.0.0.1:0",
                "2",
                "--backlog",
                "0",
                "--accept-after",
                "300",
            ],
        ),
    );
    let port = srv.line("ready ");
    let start = std::time::Instant::now();
    let mut cli = cg.spawn(
        "client",
        &mut peer_cmd(
            PEER,
            Some(&ns.name),
            &[
                "tcp-client",
                &format!("127.0.0.1:{port}"),
                "2",
                "2",
                "1000",
                "100",
            ],
        ),
    );
    cli.totals("");
    cli.wait_ok();
    srv.wait_ok();
    // The client really waited for a retransmitted SYN.
    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "{:?}",
        start.elapsed()
    );
    let client = [
        ("workload", "client"),
        ("role", "client"),
        ("port", port.as_str()),
    ];
    let m = agent.wait_until(WAIT, "two connect samples", |m: &Metrics| {
        count(m, NAME, &client) == 2.0
    });
    assert_eq!(bucket(&m, NAME, "0.25", &client), 1.0, "{}", m.dump());
    assert_eq!(bucket(&m, NAME, "1.0", &client), 1.0, "{}", m.dump());
    assert_eq!(bucket(&m, NAME, "3.0", &client), 2.0, "{}", m.dump());
    let sum = m.sum(&format!("{NAME}_sum"), &client);
    assert!((1.0..3.0).contains(&sum), "sum {sum}");
    // Servers have no connect time; the connections are counted as today.
    assert_eq!(count(&m, NAME, &[("role", "server")]), 0.0);
    assert_eq!(
        m.sum("sockscope_tcp_connections_opened_total", &client),
        2.0
    );
    // One series per edge: the client's pod and process are not labels of the histogram.
    let name = format!("{NAME}_count");
    let series: Vec<_> = m.matching(&name, &client).collect();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].0["pod"], "");
}

/// A server and a client in two network namespaces joined by a TUN link that holds packets
/// 15 ms each way: every RTT sample of the connection, on both ends, is in (10 ms, 50 ms]; the
/// connection, held open a second and a half, lives in (1 s, 10 s].
fn rtt_and_lifetime_over_a_delaying_link(mode: &str) {
    const RTT: &str = "sockscope_tcp_rtt_seconds";
    const LIFE: &str = "sockscope_tcp_connection_duration_seconds";
    let cg = TestCgroup::new(&format!("health-rtt-{mode}"));
    let agent = Agent::start_in_mode(PEER, &cg.root, mode);
    let (a, b) = (Netns::new("rtta"), Netns::new("rttb"));
    let n = sockscope_tests::unique();
    let (addr_a, addr_b) = (format!("10.78.{n}.1"), format!("10.78.{n}.2"));
    let mut link = Proc::spawn(&mut peer_cmd(
        PEER,
        None,
        &["tun-delay", &a.name, &addr_a, &b.name, &addr_b, "15"],
    ));
    link.line("ready");
    struct Kill(Proc);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.child.kill();
            let _ = self.0.child.wait();
        }
    }
    let _link = Kill(link);
    let mut srv = cg.spawn(
        "server",
        &mut peer_cmd(
            PEER,
            Some(&b.name),
            &["tcp-server", &format!("{addr_b}:0"), "1"],
        ),
    );
    let port = srv.line("ready ");
    let hold = signal_file("rtt-hold");
    let mut cli = cg.spawn(
        "client",
        &mut peer_cmd(
            PEER,
            Some(&a.name),
            &[
                "tcp-client",
                &format!("{addr_b}:{port}"),
                "1",
                "1",
                "200000",
                "20000",
                &hold.to_string_lossy(),
                "50000",
                "500",
            ],
        ),
    );
    cli.totals("exchanged ");
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(&hold, b"").expect("hold file");
    cli.totals("");
    cli.wait_ok();
    srv.wait_ok();
    let _ = std::fs::remove_file(&hold);
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
    let m = agent.wait_until(WAIT, "lifetime samples of both ends", |m: &Metrics| {
        count(m, LIFE, &client) == 1.0 && count(m, LIFE, &server) == 1.0
    });
    for (end, labels) in [("client", &client), ("server", &server)] {
        let n = count(&m, RTT, labels);
        // One per interval it sent in (at least the first), and one at the close.
        assert!(n >= 2.0, "{end}: {n} RTT samples\n{}", m.dump());
        assert_eq!(bucket(&m, RTT, "0.01", labels), 0.0, "{end}\n{}", m.dump());
        assert_eq!(bucket(&m, RTT, "0.05", labels), n, "{end}\n{}", m.dump());
        assert_eq!(bucket(&m, LIFE, "1.0", labels), 0.0, "{end}\n{}", m.dump());
        assert_eq!(bucket(&m, LIFE, "10.0", labels), 1.0, "{end}\n{}", m.dump());
        let name = format!("{RTT}_count");
        let series: Vec<_> = m.matching(&name, labels).collect();
        assert_eq!(series[0].0["remote_class"], "private");
    }
}

/// A server closing with SO_LINGER 0 sends a reset its client receives; a connect to a
/// closed port receives one. Each end counts its own, by direction.
fn resets_of_an_abortive_close_and_a_closed_port(mode: &str) {
    const NAME: &str = "sockscope_tcp_resets_total";
    let cg = TestCgroup::new(&format!("health-reset-{mode}"));
    let agent = Agent::start_in_mode(PEER, &cg.root, mode);
    let mut srv = cg.spawn(
        "server",
        &mut peer_cmd(PEER, None, &["tcp-reset-server", "127.0.0.1:0"]),
    );
    let port = srv.line("ready ");
    let mut cli = cg.spawn(
        "client",
        &mut peer_cmd(PEER, None, &["connect-reset", &format!("127.0.0.1:{port}")]),
    );
    cli.line("reset");
    cli.wait_ok();
    srv.line("reset");
    srv.wait_ok();
    let closed = sockscope_tests::free_port().to_string();
    let mut refused = cg.spawn(
        "refused",
        &mut peer_cmd(
            PEER,
            None,
            &["connect-refused", &format!("127.0.0.1:{closed}")],
        ),
    );
    refused.line("refused");
    refused.wait_ok();
    let sent = [
        ("workload", "server"),
        ("role", "server"),
        ("port", port.as_str()),
        ("direction", "sent"),
    ];
    let received = [
        ("workload", "client"),
        ("role", "client"),
        ("port", port.as_str()),
        ("direction", "received"),
    ];
    let refusal = [
        ("workload", "refused"),
        ("role", "client"),
        ("port", closed.as_str()),
        ("direction", "received"),
    ];
    let m = agent.wait_until(WAIT, "three resets", |m: &Metrics| {
        m.sum(NAME, &sent) == 1.0 && m.sum(NAME, &received) == 1.0 && m.sum(NAME, &refusal) == 1.0
    });
    // Nothing else: the reset the kernel answers the refused SYN with has no socket.
    assert_eq!(m.sum(NAME, &[]), 3.0, "{}", m.dump());
    assert_eq!(
        m.sum(
            "sockscope_tcp_connect_failures_total",
            &[("workload", "refused")]
        ),
        1.0
    );
}
