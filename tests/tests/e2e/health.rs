//! Never go dark: faults injected into the real binary (the hidden `--fault <kind>=<file>` test
//! aid, armed when the file appears) end the process or fail /healthz, so the kubelet or
//! systemd restarts the agent; and a restart neither counts twice nor loses the connections
//! already open.

use std::{
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use sockscope_tests::{Agent, Metrics, TestCgroup, http_get, peer_cmd, wait_timeout};

const PEER: &str = env!("CARGO_BIN_EXE_sockscope-peer");

/// A trigger file path of this test (not created yet).
fn trigger(tag: &str) -> PathBuf {
    sockscope_tests::signal_file(&format!("fault-{tag}"))
}

/// Arms `fault`, fires it, and returns how long the agent took to exit and its status.
fn exit_after(agent: &mut Agent, file: &std::path::Path) -> (Duration, std::process::ExitStatus) {
    let t0 = Instant::now();
    std::fs::write(file, b"").expect("trigger");
    let st = wait_timeout(&mut agent.child, Duration::from_secs(20)).unwrap_or_else(|| {
        panic!(
            "agent still running 20s after the fault; log:\n{}",
            agent.log_text()
        )
    });
    (t0.elapsed(), st)
}

fn assert_panic_exit(agent: &mut Agent, file: &std::path::Path, interval: Duration, what: &str) {
    let (took, st) = exit_after(agent, file);
    let _ = std::fs::remove_file(file);
    // The fault fires at the thread's next wake-up (a drain tick, a 200ms poll): from then on,
    // the process is gone within a second.
    assert!(
        took <= interval + Duration::from_secs(1),
        "{what}: exited {took:?} after the fault; log:\n{}",
        agent.log_text()
    );
    assert_eq!(st.code(), Some(70), "{what}: exit status {st}");
    let log = agent.log_text();
    assert!(
        log.contains("panic") && log.contains("exiting so the agent is restarted"),
        "{what}: {log}"
    );
}

#[test]
fn a_drain_thread_panic_ends_the_process() {
    let cg = TestCgroup::new("fault-drain-panic");
    let file = trigger("drain-panic");
    let arg = format!("drain-panic={}", file.display());
    let mut agent = Agent::start(PEER, &cg.root, &["--fault", &arg]);
    assert_panic_exit(&mut agent, &file, Duration::from_millis(300), "drain-panic");
    // Nothing stays attached to the cgroup.
    let out = std::process::Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(&cg.root)
        .output()
        .expect("bpftool");
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
}

#[test]
fn a_dns_answer_thread_panic_ends_the_process() {
    let cg = TestCgroup::new("fault-dns-panic");
    let file = trigger("dns-panic");
    let arg = format!("dns-panic={}", file.display());
    let mut agent = Agent::start(PEER, &cg.root, &["--fault", &arg]);
    assert_panic_exit(&mut agent, &file, Duration::from_millis(200), "dns-panic");
}

#[test]
fn a_kubernetes_watch_panic_ends_the_process() {
    let env = sockscope_tests::fake_cluster::Env::new("fault-watch-panic", PEER);
    let file = trigger("watch-panic");
    let arg = format!("watch-panic={}", file.display());
    let mut agent = env.agent(&["--fault", &arg]);
    // The watches wake on their next event: make one.
    let t0 = Instant::now();
    std::fs::write(&file, b"").expect("trigger");
    env.api
        .apply(sockscope_tests::fake_apiserver::objects::node(
            "another-node",
            &sockscope_tests::fake_apiserver::objects::uid(990),
            "192.0.2.99",
        ));
    let st = wait_timeout(&mut agent.child, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("still running; log:\n{}", agent.log_text()));
    let _ = std::fs::remove_file(&file);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(st.code(), Some(70), "{st}");
}

/// A drain that hangs: /healthz and /readyz turn 503 once the last completed drain is 3
/// intervals (+ the 2s margin) old, and the exposition's last-drain timestamp stops, which the
/// SockscopeDrainStalled alert watches.
#[test]
fn a_stalled_drain_fails_healthz() {
    let cg = TestCgroup::new("fault-drain-stall");
    let file = trigger("drain-stall");
    let arg = format!("drain-stall={}", file.display());
    let interval = Duration::from_millis(500);
    let agent = Agent::start_with(PEER, &[], &cg.root, "500ms", &["--fault", &arg]);
    let m = Metrics::parse(&agent.scrape());
    assert_eq!(m.sum("sockscope_drain_interval_seconds", &[]), 0.5);
    assert!(m.sum("sockscope_last_drain_timestamp_seconds", &[]) > 1.7e9);
    assert_eq!(
        m.sum("sockscope_drain_membarrier_fallbacks_total", &[]),
        0.0
    );
    assert_eq!(
        http_get(agent.port, "/healthz", None).expect("healthz").0,
        200
    );
    let t0 = Instant::now();
    std::fs::write(&file, b"").expect("trigger");
    let limit = interval * 3 + Duration::from_secs(2);
    let mut stalled_at = None;
    while t0.elapsed() < limit + interval + Duration::from_secs(5) {
        let (code, body) = http_get(agent.port, "/healthz", None).expect("healthz");
        if code == 503 {
            assert!(body.contains("no drain completed"), "{body}");
            stalled_at = Some((t0.elapsed(), std::time::SystemTime::now()));
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&file);
    let (after_trigger, at) =
        stalled_at.unwrap_or_else(|| panic!("/healthz stayed 200; log:\n{}", agent.log_text()));
    // 503 once the last completed drain (the exposition's timestamp, frozen since) is 3
    // intervals + the margin old: not before, and not much later. The drain stops at its next
    // tick after the trigger, so from the trigger that is within one interval more.
    let last = Metrics::parse(&agent.scrape()).sum("sockscope_last_drain_timestamp_seconds", &[]);
    let age = at
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
        - last;
    assert!(
        age >= limit.as_secs_f64() - 0.05,
        "503 at a drain age of {age}s, limit {limit:?}"
    );
    assert!(
        age <= limit.as_secs_f64() + 1.0,
        "503 at a drain age of {age}s"
    );
    assert!(
        after_trigger <= limit + interval + Duration::from_secs(1),
        "503 {after_trigger:?} after the trigger"
    );
    assert_eq!(
        http_get(agent.port, "/readyz", None).expect("readyz").0,
        503
    );
    // The exposition is frozen at the last drain, and says so.
    let a = Metrics::parse(&agent.scrape()).sum("sockscope_last_drain_timestamp_seconds", &[]);
    thread::sleep(interval * 2);
    let b = Metrics::parse(&agent.scrape()).sum("sockscope_last_drain_timestamp_seconds", &[]);
    assert_eq!(a, b);
}

/// Map deletes (and the zeroing fallback) fail while the fault is armed: entries stay in the
/// maps, and are still never counted twice.
#[test]
fn failed_deletes_never_count_twice() {
    let cg = TestCgroup::new("fault-delete");
    let file = trigger("map-delete");
    let arg = format!("map-delete={}", file.display());
    let agent = Agent::start(PEER, &cg.root, &["--fault", &arg]);
    std::fs::write(&file, b"").expect("trigger");
    // Several rounds of traffic over several drains, each read from entries never deleted.
    let mut total = 0u64;
    for round in 0..4 {
        let (_, (sent, _)) =
            sockscope_tests::udp_exchange(&cg, PEER, ("server", "client"), 50, 100, 10);
        total += sent;
        let m = agent.wait_until(Duration::from_secs(20), "exact bytes", |m| {
            m.sum("sockscope_udp_sent_bytes_total", &[("workload", "client")]) == total as f64
        });
        assert!(
            m.sum("sockscope_drain_errors_total", &[]) > 0.0,
            "round {round}"
        );
        // A few drains more: the stuck entries are read again, and add nothing.
        thread::sleep(Duration::from_millis(1000));
        let m = Metrics::parse(&agent.scrape());
        assert_eq!(
            m.sum("sockscope_udp_sent_bytes_total", &[("workload", "client")]),
            total as f64,
            "round {round}"
        );
    }
    // Deletes work again: the entries go, and the counts stay.
    let _ = std::fs::remove_file(&file);
    thread::sleep(Duration::from_millis(1000));
    let m = Metrics::parse(&agent.scrape());
    assert_eq!(
        m.sum("sockscope_udp_sent_bytes_total", &[("workload", "client")]),
        total as f64
    );
}

/// SIGTERM, then a new agent: its counters start from zero (a reset Prometheus sees), nothing
/// counted before is counted again, and a connection open across the restart is adopted: the
/// bytes of its second exchange, and only those, are the new agent's.
#[test]
fn restart_starts_from_zero_and_adopts_open_connections() {
    let cg = TestCgroup::new("restart");
    let hold = trigger("restart-hold");
    let first = Agent::start(PEER, &cg.root, &[]);
    // A service port, as real servers have: the new agent infers the adopted connection's
    // roles from which end's port is ephemeral.
    let bind = format!("127.0.0.1:{}", sockscope_tests::service_port());
    let mut srv = cg.spawn(
        "server",
        &mut peer_cmd(PEER, None, &["tcp-server", &bind, "1"]),
    );
    let port = srv.line("ready ");
    let h = hold.to_string_lossy().to_string();
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
                "300000",
                "70000",
                &h,
                "500000",
                "90000",
            ],
        ),
    );
    let (sent1, recv1) = cli.totals("exchanged ");
    let client = [("workload", "client"), ("role", "client")];
    first.wait_until(Duration::from_secs(20), "first exchange", |m| {
        m.sum("sockscope_tcp_sent_bytes_total", &client) == sent1 as f64
            && m.sum("sockscope_tcp_received_bytes_total", &client) == recv1 as f64
    });
    // UDP too: counted once, by the first agent.
    let (_, (usent, _)) =
        sockscope_tests::udp_exchange(&cg, PEER, ("userver", "uclient"), 20, 100, 5);
    first.wait_until(Duration::from_secs(20), "UDP", |m| {
        m.sum("sockscope_udp_sent_bytes_total", &[("workload", "uclient")]) == usent as f64
    });
    let st = first.terminate();
    assert!(st.success(), "{st}");

    let second = Agent::start(PEER, &cg.root, &[]);
    let m = Metrics::parse(&second.scrape());
    assert_eq!(m.sum("sockscope_tcp_sent_bytes_total", &client), 0.0);
    assert_eq!(
        m.sum("sockscope_udp_sent_bytes_total", &[("workload", "uclient")]),
        0.0
    );
    std::fs::write(&hold, b"").expect("release");
    let (sent, recv) = cli.totals("");
    srv.totals("");
    cli.wait_ok();
    srv.wait_ok();
    let _ = std::fs::remove_file(&hold);
    let (sent2, recv2) = (sent - sent1, recv - recv1);
    let m = second.wait_until(Duration::from_secs(20), "the second exchange", |m| {
        m.sum("sockscope_tcp_sent_bytes_total", &client) == sent2 as f64
            && m.sum("sockscope_tcp_received_bytes_total", &client) == recv2 as f64
    });
    // Adopted, not opened while the new agent watched; its close is not tracked either.
    assert_eq!(
        m.sum("sockscope_tcp_connections_opened_total", &client),
        0.0
    );
    thread::sleep(Duration::from_millis(900));
    let m = Metrics::parse(&second.scrape());
    assert_eq!(
        m.sum("sockscope_tcp_sent_bytes_total", &client),
        sent2 as f64
    );
    assert_eq!(
        m.sum("sockscope_udp_sent_bytes_total", &[("workload", "uclient")]),
        0.0
    );
}
