//! DNS, end to end: a real unbound in its own network namespace, real resolvers (glibc's
//! getaddrinfo, kdig, dnsperf) in the test's cgroups, exact counts from sockscope.

use std::{collections::BTreeSet, time::Duration};

use sockscope_tests::{
    Agent, Metrics, NetPair, TestCgroup,
    dns::{DnsServer, malformed},
    kernel_cgroup_netns, peer_cmd, promtool_check_metrics,
};

const PEER: &str = env!("CARGO_BIN_EXE_sockscope-peer");
const WAIT: Duration = Duration::from_secs(20);
const QUERIES: &str = "sockscope_dns_queries_total";
const RESPONSES: &str = "sockscope_dns_responses_total";

fn zone() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("web", "A", "{server4}"),
        ("web", "AAAA", "{server6}"),
        ("alias", "CNAME", "web"),
        ("deep", "CNAME", "alias"),
    ]
}

fn q<'a>(workload: &'a str, qname: &'a str, qtype: &'a str) -> [(&'a str, &'a str); 3] {
    [("workload", workload), ("qname", qname), ("qtype", qtype)]
}

fn r<'a>(
    workload: &'a str,
    qname: &'a str,
    qtype: &'a str,
    rcode: &'a str,
) -> [(&'a str, &'a str); 4] {
    [
        ("workload", workload),
        ("qname", qname),
        ("qtype", qtype),
        ("rcode", rcode),
    ]
}

/// Real lookups: glibc for A+AAAA, kdig for a CNAME chain asked in mixed case and in lower case
/// (one name), NXDOMAIN, SERVFAIL from an unreachable upstream, AAAA through a CNAME.
///
/// The resolver (unbound) runs in the same watched cgroup tree, as a node-local resolver does:
/// only the client side counts, so its served queries and sent responses count nowhere.
fn resolver_counts(name: &str, v6: bool) {
    let cg = TestCgroup::new(name);
    let agent = Agent::start(PEER, &cg.root, &[]);
    let dns = DnsServer::start_in(&zone(), v6, Some(&cg));
    let ns = Some(dns.net.a.as_str());
    let mut glibc = cg.spawn(
        "client",
        &mut peer_cmd(PEER, ns, &["resolve", "web.sockscope.test."]),
    );
    let resolved = glibc.line("resolved ");
    glibc.wait_ok();
    assert!(!resolved.is_empty());
    for (qname, qtype) in [
        ("DEEP.SockScope.TEST.", "A"),
        ("deep.sockscope.test.", "A"),
        ("nope.sockscope.test.", "A"),
        ("x.broken.test.", "A"),
        ("alias.sockscope.test.", "AAAA"),
    ] {
        let mut c = cg.spawn("client", &mut dns.kdig(qname, qtype));
        c.wait_ok();
    }
    let queries = [
        (q("client", "web.sockscope.test", "A"), 1.0),
        (q("client", "web.sockscope.test", "AAAA"), 1.0),
        (q("client", "deep.sockscope.test", "A"), 2.0),
        (q("client", "nope.sockscope.test", "A"), 1.0),
        (q("client", "x.broken.test", "A"), 1.0),
        (q("client", "alias.sockscope.test", "AAAA"), 1.0),
    ];
    let responses = [
        (r("client", "web.sockscope.test", "A", "NOERROR"), 1.0),
        (r("client", "web.sockscope.test", "AAAA", "NOERROR"), 1.0),
        (r("client", "deep.sockscope.test", "A", "NOERROR"), 2.0),
        (r("client", "nope.sockscope.test", "A", "NXDOMAIN"), 1.0),
        (r("client", "x.broken.test", "A", "SERVFAIL"), 1.0),
        (r("client", "alias.sockscope.test", "AAAA", "NOERROR"), 1.0),
    ];
    let m = agent.wait_until(WAIT, "exact DNS counts", |m: &Metrics| {
        queries.iter().all(|(l, n)| m.sum(QUERIES, l) == *n)
            && responses.iter().all(|(l, n)| m.sum(RESPONSES, l) == *n)
            && m.sum(
                "sockscope_dns_latency_seconds_count",
                &[("workload", "client")],
            ) == 7.0
    });
    // Nothing else: totals match, mixed case folded, no errors or timeouts.
    assert_eq!(
        m.sum(QUERIES, &[("workload", "client")]),
        7.0,
        "{}",
        m.dump()
    );
    // Not counted a second time at the resolver, which is watched too.
    assert_eq!(m.sum(QUERIES, &[]), 7.0, "{}", m.dump());
    assert_eq!(m.sum(RESPONSES, &[]), 7.0, "{}", m.dump());
    assert!(
        m.sum(
            "sockscope_udp_received_bytes_total",
            &[("workload", "resolver")]
        ) > 0.0,
        "the resolver's traffic is seen: {}",
        m.dump()
    );
    assert_eq!(
        m.sum(RESPONSES, &[("workload", "client")]),
        7.0,
        "{}",
        m.dump()
    );
    for (labels, _) in m.matching(QUERIES, &[("workload", "client")]) {
        assert_eq!(labels["qname"], labels["qname"].to_lowercase());
    }
    let latency = |rcode: &str| {
        m.sum(
            "sockscope_dns_latency_seconds_count",
            &[("workload", "client"), ("rcode", rcode)],
        )
    };
    assert_eq!(
        (latency("NOERROR"), latency("NXDOMAIN"), latency("SERVFAIL")),
        (5.0, 1.0, 1.0)
    );
    let le_inf = m.sum(
        "sockscope_dns_latency_seconds_bucket",
        &[("workload", "client"), ("le", "+Inf")],
    );
    assert_eq!(le_inf, 7.0);
    assert_eq!(
        m.sum("sockscope_dns_timeouts_total", &[("workload", "client")]),
        0.0
    );
    assert_eq!(
        m.sum(
            "sockscope_dns_parse_errors_total",
            &[("workload", "client")]
        ),
        0.0
    );
    assert_eq!(
        m.sum("sockscope_events_lost_total", &[]),
        0.0,
        "{}",
        m.dump()
    );
    promtool_check_metrics(&agent.scrape());
}

#[test]
fn resolvers_over_ipv4_are_counted_exactly() {
    resolver_counts("dns-v4", false);
}

#[test]
fn resolvers_over_ipv6_are_counted_exactly() {
    resolver_counts("dns-v6", true);
}

/// getaddrinfo() then an immediate connect(): the TCP series carries the name the application
/// asked for (the CNAME's owner for a chain), from the first drain on, for both families. (The
/// two names resolve to different addresses: one namespace resolving two names to one address
/// labels with the most recent, which is not what this test is about.)
#[test]
fn connection_after_lookup_carries_remote_host() {
    let dns = DnsServer::start(
        &[
            ("web4", "A", "{server4}"),
            ("alias", "CNAME", "web4"),
            ("web6", "AAAA", "{server6}"),
        ],
        false,
    );
    let cg = TestCgroup::new("dns-remote-host");
    let agent = Agent::start(PEER, &cg.root, &[]);
    let mut srv = cg.spawn(
        "server",
        &mut peer_cmd(PEER, Some(&dns.net.b), &["tcp-server", "[::]:0", "2"]),
    );
    let port = srv.line("ready ");
    let mut runs = Vec::new();
    for (workload, name, family) in [
        ("client4", "alias.sockscope.test.", "4"),
        ("client6", "web6.sockscope.test.", "6"),
    ] {
        let mut c = cg.spawn(
            workload,
            &mut peer_cmd(
                PEER,
                Some(&dns.net.a),
                &["resolve", name, &port, "1000", "500", family],
            ),
        );
        let connected = c.line("connected ");
        let totals = c.totals("");
        c.wait_ok();
        runs.push((workload, name.trim_end_matches('.'), connected, totals));
    }
    srv.wait_ok();
    for (workload, host, connected, (sent, received)) in runs {
        let want = [
            ("workload", workload),
            ("role", "client"),
            ("port", port.as_str()),
        ];
        let m = agent.wait_until(WAIT, "TCP bytes of the named connection", |m: &Metrics| {
            m.sum("sockscope_tcp_sent_bytes_total", &want) == sent as f64
                && m.sum("sockscope_tcp_received_bytes_total", &want) == received as f64
        });
        let series: Vec<_> = m
            .matching("sockscope_tcp_sent_bytes_total", &want)
            .collect();
        assert_eq!(
            series.len(),
            1,
            "one series, never an unnamed one first: {series:?}"
        );
        assert_eq!(
            series[0].0["remote_host"], host,
            "connected to {connected}: {series:?}"
        );
        for name in [
            "sockscope_tcp_connections_opened_total",
            "sockscope_tcp_received_bytes_total",
        ] {
            for (labels, _) in m.matching(name, &want) {
                assert_eq!(labels["remote_host"], host, "{name}: {labels:?}");
            }
        }
    }
}

/// The same IP (each namespace's own 127.0.0.1) resolved to different names in two network
/// namespaces: each namespace's connections carry its own name.
#[test]
fn each_namespace_sees_its_own_name() {
    let a = DnsServer::start(&[("alpha", "A", "127.0.0.1")], false);
    let b = DnsServer::start(&[("beta", "A", "127.0.0.1")], false);
    let cg = TestCgroup::new("dns-netns");
    let agent = Agent::start(PEER, &cg.root, &[]);
    let mut expect = Vec::new();
    for (dns, workload, name) in [
        (&a, "in-a", "alpha.sockscope.test."),
        (&b, "in-b", "beta.sockscope.test."),
    ] {
        let mut srv = cg.spawn(
            &format!("{workload}-server"),
            &mut peer_cmd(PEER, Some(&dns.net.a), &["tcp-server", "127.0.0.1:0", "1"]),
        );
        let port = srv.line("ready ");
        let mut c = cg.spawn(
            workload,
            &mut peer_cmd(
                PEER,
                Some(&dns.net.a),
                &["resolve", name, &port, "300", "200", "4"],
            ),
        );
        let (sent, _) = c.totals("");
        c.wait_ok();
        srv.wait_ok();
        expect.push((workload, name.trim_end_matches('.'), port, sent));
    }
    // The namespaces come from the kernel (cgroup/sock_create), not from /proc: each client
    // cgroup is recorded with its own namespace.
    let recorded: Vec<Vec<u64>> = ["in-a", "in-b"]
        .iter()
        .map(|w| kernel_cgroup_netns(&cg.child(w)))
        .collect();
    assert!(
        recorded.iter().all(|r| r.len() == 1) && recorded[0] != recorded[1],
        "{recorded:?}"
    );
    for (workload, host, port, sent) in expect {
        let want = [
            ("workload", workload),
            ("role", "client"),
            ("port", port.as_str()),
        ];
        let m = agent.wait_until(WAIT, "named loopback connection", |m: &Metrics| {
            m.sum("sockscope_tcp_sent_bytes_total", &want) == sent as f64
        });
        let hosts: BTreeSet<String> = m
            .matching("sockscope_tcp_sent_bytes_total", &want)
            .map(|(l, _)| l["remote_host"].clone())
            .collect();
        assert_eq!(hosts, BTreeSet::from([host.to_string()]), "{workload}");
    }
}

/// Crafted packets that are not a parseable single-question DNS message: counted by reason on
/// the way out and on the way back, and nothing else about DNS changes.
#[test]
fn malformed_packets_are_counted_by_reason() {
    let net = NetPair::new();
    let cg = TestCgroup::new("dns-malformed");
    let agent = Agent::start(PEER, &cg.root, &[]);
    let cases = malformed();
    let mut srv = cg.spawn(
        "server",
        &mut peer_cmd(
            PEER,
            Some(&net.b),
            &[
                "dns-junk-server",
                &format!("{}:53", net.b4),
                &cases.len().to_string(),
            ],
        ),
    );
    srv.line("ready ");
    let mut cli = cg.spawn(
        "client",
        &mut peer_cmd(PEER, Some(&net.a), &["dns-junk", &format!("{}:53", net.b4)]),
    );
    let echoed = cli.line("datagrams ");
    cli.wait_ok();
    srv.wait_ok();
    assert_eq!(echoed, format!("{n} replies {n}", n = cases.len()));
    let m = agent.wait_until(WAIT, "parse errors by reason", |m: &Metrics| {
        cases.iter().all(|(reason, _)| {
            m.sum(
                "sockscope_dns_parse_errors_total",
                &[("workload", "client"), ("reason", reason)],
            ) == 2.0
        })
    });
    assert_eq!(
        m.sum("sockscope_dns_parse_errors_total", &[]),
        2.0 * cases.len() as f64,
        "{}",
        m.dump()
    );
    for name in [
        QUERIES,
        RESPONSES,
        "sockscope_dns_latency_seconds_count",
        "sockscope_dns_timeouts_total",
    ] {
        assert_eq!(m.sum(name, &[]), 0.0, "{name}: {}", m.dump());
    }
    // Still plain UDP traffic: its bytes are counted as such.
    assert!(m.sum("sockscope_udp_sent_bytes_total", &[("workload", "client")]) > 0.0);
}

/// A query nobody answers times out after --dns-timeout; it gives no latency sample.
#[test]
fn unanswered_queries_time_out() {
    let net = NetPair::new();
    let cg = TestCgroup::new("dns-timeout");
    let agent = Agent::start(PEER, &cg.root, &["--dns-timeout", "1s"]);
    // Nothing listens on port 53 there.
    let mut c = cg.spawn(
        "client",
        std::process::Command::new("ip").args([
            "netns",
            "exec",
            &net.a,
            "kdig",
            "+retry=0",
            "+timeout=1",
            &format!("@{}", net.b4),
            "lost.sockscope.test.",
            "A",
        ]),
    );
    let _ = c.child.wait();
    let m = agent.wait_until(WAIT, "a DNS timeout", |m: &Metrics| {
        m.sum(
            "sockscope_dns_timeouts_total",
            &q("client", "lost.sockscope.test", "A"),
        ) == 1.0
    });
    assert_eq!(
        m.sum(QUERIES, &q("client", "lost.sockscope.test", "A")),
        1.0
    );
    assert_eq!(m.sum(RESPONSES, &[]), 0.0);
    assert_eq!(m.sum("sockscope_dns_latency_seconds_count", &[]), 0.0);
}

/// With a budget of 3 names per workload, 5 names give 3 named series and `~other`.
#[test]
fn qname_budget_folds_into_other() {
    let dns = DnsServer::start(&zone(), false);
    let cg = TestCgroup::new("dns-budget");
    let agent = Agent::start(PEER, &cg.root, &["--max-qnames-per-workload", "3"]);
    for i in 1..=5 {
        let mut c = cg.spawn(
            "client",
            &mut dns.kdig(&format!("n{i}.sockscope.test."), "A"),
        );
        c.wait_ok();
    }
    let m = agent.wait_until(WAIT, "five queries and responses", |m: &Metrics| {
        m.sum(QUERIES, &[("workload", "client")]) == 5.0
            && m.sum(RESPONSES, &[("workload", "client")]) == 5.0
    });
    let names: BTreeSet<String> = m
        .matching(QUERIES, &[("workload", "client")])
        .map(|(l, _)| l["qname"].clone())
        .collect();
    assert_eq!(names.len(), 4, "3 names and ~other: {names:?}");
    assert!(names.contains("~other"));
    assert_eq!(
        m.sum(QUERIES, &[("workload", "client"), ("qname", "~other")]),
        2.0
    );
    assert_eq!(
        m.sum(RESPONSES, &[("workload", "client"), ("qname", "~other")]),
        2.0
    );
    let resp_names: BTreeSet<String> = m
        .matching(RESPONSES, &[("workload", "client")])
        .map(|(l, _)| l["qname"].clone())
        .collect();
    assert_eq!(names, resp_names, "one budget for all DNS families");
    let overflow = |metric: &str| m.sum("sockscope_series_overflow_total", &[("metric", metric)]);
    assert_eq!((overflow(QUERIES), overflow(RESPONSES)), (2.0, 2.0));
}

/// dnsperf at a fixed rate: sockscope's query count is dnsperf's sent count, its response
/// count dnsperf's completed count.
#[test]
fn dnsperf_counts_match() {
    let dns = DnsServer::start(&zone(), false);
    let cg = TestCgroup::new("dns-perf");
    let agent = Agent::start(PEER, &cg.root, &[]);
    let file = std::env::temp_dir().join(format!("sockscope-dnsperf-{}", dns.net.a));
    std::fs::write(
        &file,
        "web.sockscope.test A\nweb.sockscope.test AAAA\ndeep.sockscope.test A\nnope.sockscope.test A\n",
    )
    .expect("query file");
    let mut perf = cg.spawn(
        "dnsperf",
        std::process::Command::new("ip")
            .args([
                "netns", "exec", &dns.net.a, "dnsperf", "-s", &dns.addr, "-Q", "400", "-l", "3",
                "-d",
            ])
            .arg(&file),
    );
    let sent: f64 = perf.line("  Queries sent:").parse().expect("sent");
    let completed: f64 = perf
        .line("  Queries completed:")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("completed");
    perf.wait_ok();
    let _ = std::fs::remove_file(&file);
    assert!(sent >= 1000.0, "dnsperf sent only {sent}");
    let want = [("workload", "dnsperf")];
    let m = agent.wait_until(WAIT, "dnsperf's counts", |m: &Metrics| {
        m.sum(QUERIES, &want) == sent && m.sum(RESPONSES, &want) == completed
    });
    assert_eq!(
        m.sum("sockscope_events_lost_total", &[]),
        0.0,
        "{}",
        m.dump()
    );
}

/// Only a response to a query the same socket asked (same transaction id and question) names a
/// peer: an answer nobody asked for, one to another question, and one with another id are
/// counted as unmatched and name nothing; the same answer to the right query does.
#[test]
fn unmatched_answers_name_nothing() {
    let net = sockscope_tests::NetPair::new();
    let cg = TestCgroup::new("dns-spoof");
    let agent = Agent::start(PEER, &cg.root, &[]);
    let mut srv = cg.spawn(
        "server",
        &mut peer_cmd(PEER, Some(&net.b), &["tcp-server", "0.0.0.0:0", "4"]),
    );
    let port = srv.line("ready ");
    let target = format!("{}:{port}", net.b4);
    let dns = format!("{}:53", net.b4);
    // (workload, name asked or "-", id asked, id answered, name answered, named?)
    let cases = [
        ("unasked", "-", 0, 7, "api.internal", false),
        (
            "other-question",
            "real.sockscope.test",
            0x4242,
            0x4242,
            "api.internal",
            false,
        ),
        (
            "other-id",
            "real.sockscope.test",
            0x1111,
            0x2222,
            "real.sockscope.test",
            false,
        ),
        (
            "asked",
            "good.sockscope.test",
            0x3333,
            0x3333,
            "good.sockscope.test",
            true,
        ),
    ];
    // The host cache is per network namespace (a pod's), and every victim shares one: the
    // unmatched cases first, checked before the matched one names the address.
    let run =
        |(workload, asked, id, answer_id, answered, _): (&str, &str, u16, u16, &str, bool)| {
            let mut v = cg.spawn(
                workload,
                &mut peer_cmd(
                    PEER,
                    Some(&net.a),
                    &[
                        "dns-victim",
                        &format!("{}:0", net.a4),
                        &dns,
                        asked,
                        &id.to_string(),
                        &target,
                        "1000",
                        "100",
                    ],
                ),
            );
            let vport = v.line("ready ");
            // The attacker runs outside the agent's cgroups, from the server's namespace, port 53.
            let mut a = sockscope_tests::Proc::spawn(&mut peer_cmd(
                PEER,
                Some(&net.b),
                &[
                    "dns-spoof",
                    &format!("{}:53", net.b4),
                    &format!("{}:{vport}", net.a4),
                    &answer_id.to_string(),
                    answered,
                    &net.b4,
                ],
            ));
            a.line("spoofed");
            a.wait_ok();
            v.line("answered");
            v.totals("");
            v.wait_ok();
        };
    let check = |m: &Metrics, cases: &[(&str, &str, u16, u16, &str, bool)]| {
        for (workload, _, _, _, answered, named) in cases {
            let want_labels = [("workload", *workload), ("role", "client")];
            let hosts: Vec<&str> = m
                .matching("sockscope_tcp_sent_bytes_total", &want_labels)
                .map(|(l, _)| l["remote_host"].as_str())
                .collect();
            let want = if *named { *answered } else { "" };
            assert_eq!(hosts, [want], "{workload}");
        }
    };
    let bytes = |m: &Metrics, cases: &[(&str, &str, u16, u16, &str, bool)]| {
        cases.iter().all(|(w, ..)| {
            m.sum(
                "sockscope_tcp_sent_bytes_total",
                &[("workload", w), ("role", "client")],
            ) == 1016.0
        })
    };
    for c in &cases[..3] {
        run(*c);
    }
    let m = agent.wait_until(WAIT, "the unmatched victims' bytes", |m: &Metrics| {
        bytes(m, &cases[..3])
            && m.sum("sockscope_dns_answers_total", &[("result", "unmatched")]) >= 3.0
    });
    check(&m, &cases[..3]);
    assert_eq!(
        m.sum("sockscope_dns_answers_total", &[("result", "unmatched")]),
        3.0
    );
    assert_eq!(
        m.sum("sockscope_dns_answers_total", &[("result", "cached")]),
        0.0
    );
    run(cases[3]);
    srv.wait_ok();
    let m = agent.wait_until(WAIT, "the matched victim's bytes", |m: &Metrics| {
        bytes(m, &cases[3..])
    });
    check(&m, &cases[3..]);
    assert_eq!(
        m.sum("sockscope_dns_answers_total", &[("result", "cached")]),
        1.0
    );
    assert_eq!(
        m.sum("sockscope_dns_answers_total", &[("result", "unmatched")]),
        3.0
    );
}

/// Queries of 30 record types without a mnemonic take at most half of the `qtype` budget; the
/// known types asked afterwards keep their label, and every query is counted.
#[test]
fn qtype_budget_keeps_room_for_known_types() {
    let net = sockscope_tests::NetPair::new();
    let cg = TestCgroup::new("dns-qtypes");
    let agent = Agent::start(PEER, &cg.root, &["--max-qtypes-per-workload", "8"]);
    let server = format!("{}:53", net.b4);
    for (first, count) in [("65400", "30"), ("1", "1"), ("28", "1"), ("65", "1")] {
        let mut q = cg.spawn(
            "asker",
            &mut peer_cmd(
                PEER,
                Some(&net.a),
                &["dns-spray", &server, count, "types.test", first],
            ),
        );
        q.line("sent ");
        q.wait_ok();
    }
    let asker = [("workload", "asker")];
    let m = agent.wait_until(WAIT, "every query", |m: &Metrics| {
        m.sum(QUERIES, &asker) == 33.0
    });
    let types: BTreeSet<String> = m
        .matching(QUERIES, &asker)
        .map(|(l, _)| l["qtype"].clone())
        .collect();
    let numeric = types.iter().filter(|t| t.starts_with("TYPE")).count();
    assert_eq!(numeric, 4, "{types:?}");
    for t in ["A", "AAAA", "HTTPS", "~other"] {
        assert!(types.contains(t), "{t}: {types:?}");
    }
    assert_eq!(
        m.sum(QUERIES, &[("workload", "asker"), ("qtype", "~other")]),
        26.0,
        "{}",
        m.dump()
    );
}

const LATENCY_COUNT: &str = "sockscope_dns_latency_seconds_count";
const UNPARSED: [(&str, &str); 1] = [("source", "dns_tcp_unparsed")];
const FRAMING_LOST: [(&str, &str); 1] = [("source", "dns_tcp_framing_lost")];

/// DNS over TCP (RFC 7766) against the real unbound, each client its own workload:
/// - `kdig +tcp`, one query a connection: NOERROR, NXDOMAIN, SERVFAIL, with latency;
/// - `kdig +tcp +keepopen`: three queries, one connection;
/// - an answer too big for UDP without EDNS (40 A records): unbound sets TC, kdig asks again
///   over TCP, and the answer spans two segments: two queries, two responses;
/// - EDNS version 1: unbound answers BADVERS, an extended RCODE only the OPT record carries,
///   over UDP and over TCP;
/// - 20 queries in one write (one segment), their answers read after;
/// - 40 queries in one write: the first 32 are parsed (one tail call each), the other 8 are
///   stepped over and counted as `dns_tcp_unparsed`, and the framing holds;
/// - a query whose question leaves in a second segment: counted under `~split`, its answer
///   counted without latency and naming nothing; then a query whose 2-byte length is cut
///   between two segments, put together and counted whole; one whose header is cut, under
///   `~split` too; and a whole one;
/// - glibc with `options use-vc`: A and AAAA over TCP, and the connection made to the address
///   carries the name (answers over TCP reach the hostname cache).
#[test]
fn queries_over_tcp_are_counted_exactly() {
    let big: Vec<String> = (1..=40).map(|i| format!("10.9.0.{i}")).collect();
    let mut records = zone();
    records.extend(big.iter().map(|ip| ("big", "A", ip.as_str())));
    let dns = DnsServer::start(&records, false);
    let cg = TestCgroup::new("dns-tcp");
    let agent = Agent::start(PEER, &cg.root, &["--max-qnames-per-workload", "100"]);
    let run = |workload: &str, cmd: &mut std::process::Command| {
        let mut c = cg.spawn(workload, cmd);
        c.wait_ok();
    };
    for (qname, qtype) in [
        ("web.sockscope.test.", "A"),
        ("nope.sockscope.test.", "A"),
        ("x.broken.test.", "A"),
    ] {
        run("once", &mut dns.kdig_args(&["+tcp", qname, qtype]));
    }
    run(
        "keepopen",
        &mut dns.kdig_args(&[
            "+tcp",
            "+keepopen",
            "web.sockscope.test.",
            "A",
            "alias.sockscope.test.",
            "AAAA",
            "deep.sockscope.test.",
            "A",
        ]),
    );
    let mut trunc = cg.spawn("truncated", &mut dns.kdig("big.sockscope.test.", "A"));
    // kdig warns of the truncation on stderr; the answer it prints came over TCP.
    let from = trunc.line(";; From ");
    trunc.wait_ok();
    assert!(from.contains("(TCP)"), "{from}");
    run(
        "edns",
        &mut dns.kdig_args(&["+edns=1", "web.sockscope.test.", "A"]),
    );
    run(
        "edns",
        &mut dns.kdig_args(&["+tcp", "+edns=1", "web.sockscope.test.", "A"]),
    );
    let server = format!("{}:53", dns.addr);
    // 20 queries for one name in one write; their answers (about 50 bytes each) fit one
    // segment too, so every one is parsed whole whatever unbound's writes.
    let mut args = vec!["dns-tcp", server.as_str(), "pipeline"];
    args.extend(["web.sockscope.test"; 20]);
    run("pipeline", &mut peer_cmd(PEER, Some(&dns.net.a), &args));
    // 40 in one write (about 1,400 bytes: one segment). Their NXDOMAIN answers (about 90 bytes
    // each) span segments as unbound writes them, so a few may begin a segment without their
    // question: counted under ~split, which this test allows for.
    let mut args = vec!["dns-tcp", server.as_str(), "pipeline"];
    args.extend(["nx.sockscope.test"; 40]);
    run("pipeline40", &mut peer_cmd(PEER, Some(&dns.net.a), &args));
    run(
        "split",
        &mut peer_cmd(
            PEER,
            Some(&dns.net.a),
            &[
                "dns-tcp",
                &server,
                "split",
                "alias.sockscope.test",
                "deep.sockscope.test",
                "nope.sockscope.test",
                "web.sockscope.test",
            ],
        ),
    );
    dns.resolver_options("use-vc");
    let mut srv = cg.spawn(
        "server",
        &mut peer_cmd(PEER, Some(&dns.net.b), &["tcp-server", "0.0.0.0:0", "1"]),
    );
    let port = srv.line("ready ");
    let mut vc = cg.spawn(
        "usevc",
        &mut peer_cmd(
            PEER,
            Some(&dns.net.a),
            &["resolve", "web.sockscope.test.", &port, "100", "100", "4"],
        ),
    );
    vc.line("connected ");
    let (vc_sent, _) = vc.totals("");
    vc.wait_ok();
    srv.wait_ok();

    let mut queries: Vec<([(&str, &str); 3], f64)> = vec![
        (q("once", "web.sockscope.test", "A"), 1.0),
        (q("once", "nope.sockscope.test", "A"), 1.0),
        (q("once", "x.broken.test", "A"), 1.0),
        (q("keepopen", "web.sockscope.test", "A"), 1.0),
        (q("keepopen", "alias.sockscope.test", "AAAA"), 1.0),
        (q("keepopen", "deep.sockscope.test", "A"), 1.0),
        (q("truncated", "big.sockscope.test", "A"), 2.0),
        (q("edns", "web.sockscope.test", "A"), 2.0),
        (q("split", "~split", "~split"), 2.0),
        (q("split", "deep.sockscope.test", "A"), 1.0),
        (q("split", "web.sockscope.test", "A"), 1.0),
        (q("usevc", "web.sockscope.test", "A"), 1.0),
        (q("usevc", "web.sockscope.test", "AAAA"), 1.0),
    ];
    queries.push((q("pipeline", "web.sockscope.test", "A"), 20.0));
    queries.push((q("pipeline40", "nx.sockscope.test", "A"), 32.0));
    let mut responses: Vec<([(&str, &str); 4], f64)> = vec![
        (r("once", "web.sockscope.test", "A", "NOERROR"), 1.0),
        (r("once", "nope.sockscope.test", "A", "NXDOMAIN"), 1.0),
        (r("once", "x.broken.test", "A", "SERVFAIL"), 1.0),
        (r("keepopen", "web.sockscope.test", "A", "NOERROR"), 1.0),
        (
            r("keepopen", "alias.sockscope.test", "AAAA", "NOERROR"),
            1.0,
        ),
        (r("keepopen", "deep.sockscope.test", "A", "NOERROR"), 1.0),
        (r("truncated", "big.sockscope.test", "A", "NOERROR"), 2.0),
        (r("edns", "web.sockscope.test", "A", "BADVERS"), 2.0),
        (r("split", "alias.sockscope.test", "A", "NOERROR"), 1.0),
        (r("split", "deep.sockscope.test", "A", "NOERROR"), 1.0),
        (r("split", "nope.sockscope.test", "A", "NXDOMAIN"), 1.0),
        (r("split", "web.sockscope.test", "A", "NOERROR"), 1.0),
        (r("usevc", "web.sockscope.test", "A", "NOERROR"), 1.0),
        (r("usevc", "web.sockscope.test", "AAAA", "NOERROR"), 1.0),
    ];
    responses.push((r("pipeline", "web.sockscope.test", "A", "NOERROR"), 20.0));
    // With latency: every response whose query was parsed whole.
    let latencies = [
        ("once", 3.0),
        ("keepopen", 3.0),
        ("truncated", 2.0),
        ("edns", 2.0),
        ("pipeline", 20.0),
        ("split", 2.0),
        ("usevc", 2.0),
    ];
    let m = agent.wait_until(WAIT, "exact DNS over TCP counts", |m: &Metrics| {
        queries.iter().all(|(l, n)| m.sum(QUERIES, l) == *n)
            && responses.iter().all(|(l, n)| m.sum(RESPONSES, l) == *n)
            && latencies
                .iter()
                .all(|(w, n)| m.sum(LATENCY_COUNT, &[("workload", w)]) == *n)
            && m.sum("sockscope_events_lost_total", &UNPARSED) == 8.0
            && m.sum(
                "sockscope_tcp_sent_bytes_total",
                &[("workload", "usevc"), ("port", port.as_str())],
            ) == vc_sent as f64
            && m.sum(RESPONSES, &[("workload", "pipeline40")]) == 40.0
    });
    // Nothing else: no other names or types, no parse errors, no timeouts.
    for w in [
        "once",
        "keepopen",
        "truncated",
        "edns",
        "split",
        "usevc",
        "pipeline",
    ] {
        let want: f64 = queries
            .iter()
            .filter(|(l, _)| l[0].1 == w)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(
            m.sum(QUERIES, &[("workload", w)]),
            want,
            "{w}: {}",
            m.dump()
        );
        let want: f64 = responses
            .iter()
            .filter(|(l, _)| l[0].1 == w)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(
            m.sum(RESPONSES, &[("workload", w)]),
            want,
            "{w}: {}",
            m.dump()
        );
    }
    assert_eq!(
        m.sum("sockscope_dns_errors_total", &[]),
        0.0,
        "{}",
        m.dump()
    );
    assert_eq!(
        m.sum("sockscope_dns_timeouts_total", &[]),
        0.0,
        "{}",
        m.dump()
    );
    // 40 pipelined queries: 32 parsed, 8 stepped over; all 40 answers counted once, those
    // that began a segment without their question as ~split, the others under their name.
    // Latency for each answer of a parsed query that was not split.
    let split40 = m.sum(
        RESPONSES,
        &[("workload", "pipeline40"), ("qname", "~split")],
    );
    assert_eq!(
        m.sum(
            RESPONSES,
            &[
                ("workload", "pipeline40"),
                ("qname", "nx.sockscope.test"),
                ("rcode", "NXDOMAIN")
            ]
        ) + split40,
        40.0,
        "{}",
        m.dump()
    );
    let latency40 = m.sum(LATENCY_COUNT, &[("workload", "pipeline40")]);
    assert!(
        latency40 <= 32.0 && latency40 >= 32.0 - split40,
        "{latency40} latency samples, {split40} split answers: {}",
        m.dump()
    );
    // The big TCP answer spans two segments, pipelined answers share segments with lengths
    // split across them: the framing held through all of it.
    assert_eq!(
        m.sum("sockscope_events_lost_total", &FRAMING_LOST),
        0.0,
        "{}",
        m.dump()
    );
    // The split query's answer matched no query: it names nothing.
    assert_eq!(
        m.sum("sockscope_dns_answers_total", &[("result", "unmatched")]),
        1.0,
        "{}",
        m.dump()
    );
    // glibc asked over TCP (use-vc), and the connection to the address it got is named.
    let named = [
        ("workload", "usevc"),
        ("role", "client"),
        ("port", port.as_str()),
    ];
    let series: Vec<_> = m
        .matching("sockscope_tcp_sent_bytes_total", &named)
        .collect();
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(
        series[0].0["remote_host"], "web.sockscope.test",
        "{series:?}"
    );
    assert_eq!(
        m.sum(
            "sockscope_udp_sent_bytes_total",
            &[("workload", "usevc"), ("port", "53")]
        ),
        0.0,
        "use-vc asks over TCP only: {}",
        m.dump()
    );
}

/// Domain watchlists and name classes: hits count by list and name, also beyond the qname
/// budget (under the entry they matched, never ~other); a changed file is reloaded; a broken
/// one is refused and the old list stays; every query's name is classified before any budget
/// folds it.
#[test]
fn watchlists_and_name_classes() {
    let dns = DnsServer::start(&zone(), false);
    let cg = TestCgroup::new("dns-watch");
    let dir = std::env::temp_dir().join(format!(
        "sockscope-watch-{}-{}",
        std::process::id(),
        sockscope_tests::unique()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let list = dir.join("threats.txt");
    std::fs::write(
        &list,
        "# known bad\nevil.sockscope.test\n*.tunnel.sockscope.test\n",
    )
    .expect("write");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "dns:\n  search_domains: [corp.sockscope.test]\n  domain_classes: {partner: [partner.sockscope.test]}\n",
    )
    .expect("write");
    let agent = Agent::start(
        PEER,
        &cg.root,
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--dns-watchlist",
            &format!("threats={}", list.display()),
            "--max-qnames-per-workload",
            "2",
            "--label-process",
        ],
    );
    let ask = |name: &str| {
        let mut c = cg.spawn("client", &mut dns.kdig(name, "A"));
        c.wait_ok();
    };
    for name in [
        "web.sockscope.test.",
        "db.shop.svc.cluster.local.",
        "git.corp.sockscope.test.",
        "api.partner.sockscope.test.",
        "evil.sockscope.test.",
        "a1.tunnel.sockscope.test.",
        "a2.tunnel.sockscope.test.",
        "a3.tunnel.sockscope.test.",
    ] {
        ask(name);
    }
    const WATCH: &str = "sockscope_dns_watchlist_queries_total";
    let w = |qname: &'static str| {
        [
            ("workload", "client"),
            ("list", "threats"),
            ("qname", qname),
        ]
    };
    let m = agent.wait_until(
        WAIT,
        "eight queries and the watchlist hits",
        |m: &Metrics| {
            m.sum(QUERIES, &[("workload", "client")]) == 8.0
                && m.sum(WATCH, &[("workload", "client")]) == 4.0
        },
    );
    // The qname budget (2) admits two names (in the order the drain meets them); the
    // watchlist keeps two of its names too, per list, and the rest under the entry they
    // matched: never ~other.
    assert_eq!(m.sum(WATCH, &w("evil.sockscope.test")), 1.0, "{}", m.dump());
    // The process that asked (its socket's creator), on the watchlist's series only.
    assert_eq!(
        m.sum(WATCH, &[("workload", "client"), ("process", "kdig")]),
        4.0,
        "{}",
        m.dump()
    );
    assert!(
        m.matching(QUERIES, &[])
            .all(|(l, _)| !l.contains_key("process")),
        "{}",
        m.dump()
    );
    let tunnel: Vec<(String, f64)> = m
        .matching(WATCH, &[("workload", "client")])
        .filter(|(l, _)| l["qname"] != "evil.sockscope.test")
        .map(|(l, v)| (l["qname"].clone(), v))
        .collect();
    assert_eq!(
        tunnel.iter().map(|(_, v)| v).sum::<f64>(),
        3.0,
        "{tunnel:?}"
    );
    for (qname, _) in &tunnel {
        assert!(qname.ends_with(".tunnel.sockscope.test"), "{tunnel:?}");
    }
    let named = tunnel.iter().filter(|(q, _)| !q.starts_with('*')).count();
    assert!(named <= 2, "at most the budget by name: {tunnel:?}");
    assert_eq!(
        m.sum(QUERIES, &[("workload", "client"), ("qname", "~other")]),
        6.0
    );
    let class = |c: &str| m.sum(QUERIES, &[("workload", "client"), ("qname_class", c)]);
    // cluster.local (the default cluster domain) and the configured search domain.
    assert_eq!(class("cluster"), 2.0, "{}", m.dump());
    assert_eq!(class("partner"), 1.0, "{}", m.dump());
    assert_eq!(class("external"), 5.0, "{}", m.dump());
    assert_eq!(
        m.sum(
            RESPONSES,
            &[("workload", "client"), ("qname_class", "cluster")]
        ),
        2.0
    );
    assert_eq!(
        m.sum("sockscope_dns_watchlist_entries", &[("list", "threats")]),
        2.0
    );

    // The file changes: reloaded within a drain, the new entry counts from then on.
    std::fs::write(
        &list,
        "evil.sockscope.test\n*.tunnel.sockscope.test\nweb.sockscope.test\n",
    )
    .expect("write");
    agent.wait_until(WAIT, "the reload", |m: &Metrics| {
        m.sum(
            "sockscope_dns_watchlist_reloads_total",
            &[("list", "threats"), ("result", "ok")],
        ) == 1.0
    });
    ask("web.sockscope.test.");
    // A broken file is refused: the three entries stay in force.
    std::fs::write(&list, "evil.sockscope.test\nnot valid\n").expect("write");
    agent.wait_until(WAIT, "the refused reload", |m: &Metrics| {
        m.sum(
            "sockscope_dns_watchlist_reloads_total",
            &[("list", "threats"), ("result", "error")],
        ) == 1.0
    });
    ask("web.sockscope.test.");
    ask("evil.sockscope.test.");
    let m = agent.wait_until(WAIT, "hits after the reloads", |m: &Metrics| {
        m.sum(WATCH, &[("workload", "client")]) == 7.0
    });
    assert_eq!(m.sum(WATCH, &w("evil.sockscope.test")), 2.0, "{}", m.dump());
    // web is an exact entry: by name whether the list's budget admitted it or not.
    assert_eq!(m.sum(WATCH, &w("web.sockscope.test")), 2.0, "{}", m.dump());
    assert_eq!(
        m.sum("sockscope_dns_watchlist_entries", &[("list", "threats")]),
        3.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
