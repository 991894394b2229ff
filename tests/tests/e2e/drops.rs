//! Packet drops with the kernel's reason, end to end: an nftables rule in a test namespace
//! drops a workload's datagrams, and each is counted as that workload's, with the reason as
//! the running kernel names it.

use std::{io::Write, process::Command, time::Duration};

use sockscope_tests::{Agent, Metrics, NetPair, TestCgroup, peer_cmd};

const PEER: &str = env!("CARGO_BIN_EXE_sockscope-peer");

/// Loads `ruleset` (nft syntax) into network namespace `ns`.
fn nft(ns: &str, ruleset: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft (installed by scripts/setup.sh)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(ruleset.as_bytes())
        .expect("ruleset");
    assert!(child.wait().expect("nft").success(), "nft -f failed");
}

#[test]
fn netfilter_drops_are_the_senders_with_their_reason() {
    let cg = TestCgroup::new("drops-nft");
    let agent = Agent::start(PEER, &cg.root, &[]);
    let net = NetPair::new();
    nft(
        &net.a,
        "table inet sockscope_test {\n  chain out {\n    type filter hook output priority 0;\n    udp dport 9999 drop\n  }\n}\n",
    );
    // 10 datagrams the rule drops, then 3 to another port that go through.
    let mut sender = cg.spawn(
        "sender",
        &mut peer_cmd(
            PEER,
            Some(&net.a),
            &[
                "udp-ports",
                &net.b4,
                "--ignore-errors",
                "9999",
                "9999",
                "9999",
                "9999",
                "9999",
                "9999",
                "9999",
                "9999",
                "9999",
                "9999",
            ],
        ),
    );
    assert_eq!(sender.line("sent "), "10");
    sender.wait_ok();
    let mut other = cg.spawn(
        "other",
        &mut peer_cmd(
            PEER,
            Some(&net.a),
            &["udp-ports", &net.b4, "9998", "9998", "9998"],
        ),
    );
    assert_eq!(other.line("sent "), "3");
    other.wait_ok();
    let sender_drops = [
        ("workload", "sender"),
        ("reason", "NETFILTER_DROP"),
        ("direction", "sent"),
    ];
    let m = agent.wait_until(
        Duration::from_secs(30),
        "10 drops of the sender",
        |m: &Metrics| m.sum("sockscope_packet_drops_total", &sender_drops) == 10.0,
    );
    // Only that reason and direction for the sender; none for the workload whose datagrams
    // went through (they reach a namespace without a listener, where the drop is the node's:
    // a received packet of no socket).
    assert_eq!(
        m.sum("sockscope_packet_drops_total", &[("workload", "sender")]),
        10.0,
        "{}",
        m.dump()
    );
    assert_eq!(
        m.sum("sockscope_packet_drops_total", &[("workload", "other")]),
        0.0,
        "{}",
        m.dump()
    );
    // The dropped datagrams never left: no UDP bytes for them; the others' are counted.
    assert_eq!(
        m.sum("sockscope_udp_sent_bytes_total", &[("workload", "sender")]),
        0.0
    );
    let m = agent.wait_until(
        Duration::from_secs(30),
        "the other's bytes",
        |m: &Metrics| m.sum("sockscope_udp_sent_bytes_total", &[("workload", "other")]) == 30.0,
    );
    assert!(
        m.sum(
            "sockscope_bpf_program_attached",
            &[("program", "sockscope_drop")]
        ) == 1.0
    );
}
