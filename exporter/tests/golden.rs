//! Golden expositions: one fixed drain (flows of every protocol and role, an overflow entry,
//! DNS queries, responses with latency, errors and timeouts, drop counters) folded into the
//! real series and rendered in every format an exporter sends: Prometheus text, OpenMetrics
//! and the OTLP request. Any change in names, labels, order, help, units or values shows as a
//! diff against `exporter/tests/golden/`; moving code must leave these bytes alone (up to the
//! order of series within a family, which prometheus-client does not keep from run to run).
//!
//! `SOCKSCOPE_BLESS=1 cargo test -p sockscope --test golden` rewrites the files after an
//! intended change (review the diff).

use std::{collections::HashMap, os::unix::fs::MetadataExt, path::PathBuf, time::Duration};

use sockscope_common::{
    FlowKey, FlowStats, OverflowKey, PROTO_TCP, PROTO_UDP, ROLE_CLIENT, ROLE_SERVER,
    dns::{
        DNS_KIND_ERROR, DNS_KIND_QUERY, DNS_KIND_RESPONSE, DNS_NO_LATENCY, DnsKey, DnsStats,
        name_hash,
    },
    health::{
        DROP_RECEIVED, DROP_SENT, DropKey, TIMING_CONNECT, TIMING_LIFETIME, TIMING_RTT, TimingKey,
        TimingStats,
    },
    v4_mapped,
};

use sockscope::{
    drain::Batch,
    export::{
        otlp::{Temporality, encode::Encoder, encode::kv},
        text,
    },
    identity::{Identity, hosts::HostCache, labelled::Labeller, labels::LabelOptions},
    pipeline::fold_batch,
    series::{Budgets, Series},
};

/// A cgroup tree of two units under a root of its own; removed on drop.
struct Tree(PathBuf);

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tree() -> (Tree, u64, u64) {
    let root = std::env::temp_dir().join(format!("sockscope-golden-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut ids = Vec::new();
    for unit in ["system.slice/web.service", "system.slice/db.service"] {
        let dir = root.join(unit);
        std::fs::create_dir_all(&dir).expect("mkdir");
        ids.push(std::fs::metadata(&dir).expect("stat").ino());
    }
    (Tree(root), ids[0], ids[1])
}

fn flow(cgroup_id: u64, addr: [u8; 4], port: u16, role: u8, proto: u8) -> FlowKey {
    FlowKey {
        cgroup_id,
        remote_addr: v4_mapped(addr),
        comm: [0; 16],
        port,
        role,
        proto,
        _pad: 0,
    }
}

fn timing(cgroup_id: u64, addr: [u8; 4], port: u16, role: u8, kind: u8, bucket: u8) -> TimingKey {
    TimingKey {
        cgroup_id,
        remote_addr: v4_mapped(addr),
        port,
        role,
        kind,
        bucket,
        _pad: [0; 3],
    }
}

fn dns(cgroup_id: u64, name_hash: u64, kind: u8, code: u8, bucket: u8) -> DnsKey {
    DnsKey {
        cgroup_id,
        name_hash,
        qtype: 1,
        kind,
        code,
        bucket,
        _pad: [0; 3],
        comm: [0; 16],
    }
}

/// The fixed drain.
fn batch(web: u64, db: u64) -> Batch {
    let stats = |sent, received, opened, closed, failures, retransmits| FlowStats {
        sent_bytes: sent,
        received_bytes: received,
        opened,
        closed,
        connect_failures: failures,
        retransmits,
        ..Default::default()
    };
    let www = name_hash(b"\x03www\x07example\x03com\x00", 17);
    let api = name_hash(b"\x03api\x07example\x03com\x00", 17);
    let mut events = [0u64; sockscope_common::EVENT_COUNT as usize];
    events[sockscope_common::EVENT_DNS_UNMATCHED as usize] = 2;
    Batch {
        flows: vec![
            // web -> db over loopback, both ends.
            (
                flow(web, [127, 0, 0, 1], 5432, ROLE_CLIENT, PROTO_TCP),
                stats(1200, 64_000, 3, 2, 0, 1),
            ),
            (
                flow(db, [127, 0, 0, 1], 5432, ROLE_SERVER, PROTO_TCP),
                stats(64_000, 1200, 3, 2, 0, 0),
            ),
            // web -> a private and a public address; one refused connect.
            (
                flow(web, [10, 1, 2, 3], 443, ROLE_CLIENT, PROTO_TCP),
                stats(5_000, 900_000, 1, 1, 1, 7),
            ),
            (
                flow(web, [192, 0, 2, 10], 80, ROLE_CLIENT, PROTO_TCP),
                FlowStats {
                    resets_received: 2,
                    resets_sent: 1,
                    ..stats(300, 0, 0, 0, 2, 0)
                },
            ),
            // DNS over UDP to a resolver, and a UDP server.
            (
                flow(web, [10, 0, 0, 53], 53, ROLE_CLIENT, PROTO_UDP),
                stats(120, 480, 0, 0, 0, 0),
            ),
            (
                flow(db, [10, 9, 9, 9], 8125, ROLE_SERVER, PROTO_UDP),
                stats(0, 4096, 0, 0, 0, 0),
            ),
        ],
        flow_overflow: vec![(
            OverflowKey {
                cgroup_id: web,
                comm: [0; 16],
                role: ROLE_CLIENT,
                proto: PROTO_TCP,
                _pad: [0; 6],
            },
            stats(10, 20, 1, 1, 0, 0),
        )],
        events,
        dns: vec![
            (
                dns(web, www, DNS_KIND_QUERY, 0, 0),
                DnsStats {
                    count: 4,
                    sum_ns: 0,
                },
            ),
            (
                dns(web, api, DNS_KIND_QUERY, 0, 0),
                DnsStats {
                    count: 1,
                    sum_ns: 0,
                },
            ),
            // 3 answered in the 1 ms bucket (index 3), 2.5 ms in all; 1 without latency.
            (
                dns(web, www, DNS_KIND_RESPONSE, 0, 3),
                DnsStats {
                    count: 3,
                    sum_ns: 2_500_000,
                },
            ),
            (
                dns(web, api, DNS_KIND_RESPONSE, 3, DNS_NO_LATENCY),
                DnsStats {
                    count: 1,
                    sum_ns: 0,
                },
            ),
            (
                dns(db, 0, DNS_KIND_ERROR, 4, 0),
                DnsStats {
                    count: 2,
                    sum_ns: 0,
                },
            ),
        ],
        dns_timeouts: vec![dns(web, www, DNS_KIND_QUERY, 0, 0)],
        qnames: HashMap::from([
            (www, Box::from(&b"\x03www\x07example\x03com\x00"[..])),
            (api, Box::from(&b"\x03api\x07example\x03com\x00"[..])),
        ]),
        timings: vec![
            // web -> db: two connects in 250-500 us, one after a SYN retransmit (1-3 s).
            (
                timing(web, [127, 0, 0, 1], 5432, ROLE_CLIENT, TIMING_CONNECT, 1),
                TimingStats {
                    count: 2,
                    sum_ns: 700_000,
                },
            ),
            (
                timing(web, [127, 0, 0, 1], 5432, ROLE_CLIENT, TIMING_CONNECT, 8),
                TimingStats {
                    count: 1,
                    sum_ns: 1_004_000_000,
                },
            ),
            (
                timing(db, [127, 0, 0, 1], 5432, ROLE_SERVER, TIMING_RTT, 0),
                TimingStats {
                    count: 3,
                    sum_ns: 150_000,
                },
            ),
            (
                timing(web, [10, 1, 2, 3], 443, ROLE_CLIENT, TIMING_LIFETIME, 3),
                TimingStats {
                    count: 1,
                    sum_ns: 4_200_000_000,
                },
            ),
            // A node-wide sample (the timing map was full).
            (
                TimingKey {
                    kind: TIMING_RTT,
                    bucket: 10,
                    ..Default::default()
                },
                TimingStats {
                    count: 1,
                    sum_ns: 2_000_000_000,
                },
            ),
        ],
        drops: vec![
            (
                DropKey {
                    cgroup_id: web,
                    reason: 12,
                    direction: DROP_SENT,
                    _pad: [0; 3],
                },
                10,
            ),
            (
                DropKey {
                    cgroup_id: 0,
                    reason: 3,
                    direction: DROP_RECEIVED,
                    _pad: [0; 3],
                },
                4,
            ),
        ],
        ..Batch::default()
    }
}

/// A text exposition with each family's series in a fixed order. prometheus-client keeps a
/// family's series in a hash map, so their order changes from run to run (Prometheus does not
/// care); everything else (family order, headers, label order within a series, a histogram's
/// lines) is kept as written. A series is its consecutive lines with the same labels apart
/// from `le`.
fn canonical_text(text: &str) -> String {
    fn series_key(line: &str) -> String {
        let labels = line
            .split_once('{')
            .and_then(|(_, rest)| rest.rsplit_once('}'))
            .map(|(l, _)| l)
            .unwrap_or("");
        labels
            .split(',')
            .filter(|kv| !kv.starts_with("le="))
            .collect::<Vec<_>>()
            .join(",")
    }
    let mut out = String::new();
    let mut blocks: Vec<(String, String)> = Vec::new();
    let flush = |blocks: &mut Vec<(String, String)>, out: &mut String| {
        blocks.sort_by(|a, b| a.1.cmp(&b.1));
        for (_, b) in blocks.drain(..) {
            out.push_str(&b);
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut blocks, &mut out);
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let key = series_key(line);
        match blocks.last_mut() {
            Some((k, b)) if *k == key => {
                b.push_str(line);
                b.push('\n');
            }
            _ => blocks.push((key, format!("{line}\n"))),
        }
    }
    flush(&mut blocks, &mut out);
    out
}

/// The request, a line per resource, metric and data point (each point's fields in full), the
/// points of a metric in a fixed order (by attributes) for the same reason as
/// [`canonical_text`].
fn canonical_request(
    r: opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest,
) -> String {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    fn points<T: std::fmt::Debug>(out: &mut String, ps: &[T]) {
        let mut lines: Vec<String> = ps.iter().map(|p| format!("  {p:?}\n")).collect();
        lines.sort();
        lines.iter().for_each(|l| out.push_str(l));
    }
    let mut out = String::new();
    for rm in &r.resource_metrics {
        out.push_str(&format!("resource {:?}\n", rm.resource));
        for sm in &rm.scope_metrics {
            out.push_str(&format!("scope {:?}\n", sm.scope));
            for m in &sm.metrics {
                out.push_str(&format!(
                    "metric {} unit={:?} description={:?} metadata={:?}\n",
                    m.name, m.unit, m.description, m.metadata
                ));
                match &m.data {
                    Some(Data::Sum(d)) => {
                        out.push_str(&format!(
                            " sum temporality={} monotonic={}\n",
                            d.aggregation_temporality, d.is_monotonic
                        ));
                        points(&mut out, &d.data_points);
                    }
                    Some(Data::Gauge(d)) => {
                        out.push_str(" gauge\n");
                        points(&mut out, &d.data_points);
                    }
                    Some(Data::Histogram(d)) => {
                        out.push_str(&format!(
                            " histogram temporality={}\n",
                            d.aggregation_temporality
                        ));
                        points(&mut out, &d.data_points);
                    }
                    other => out.push_str(&format!(" {other:?}\n")),
                }
            }
        }
    }
    out
}

/// Compares `actual` with the golden file `name`, or rewrites it under SOCKSCOPE_BLESS.
fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("SOCKSCOPE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (SOCKSCOPE_BLESS=1 writes it)", path.display()));
    if want != actual {
        let line = want
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(actual.lines().count()));
        panic!(
            "{name} differs from {} at line {}:\n  golden: {:?}\n  actual: {:?}\n(SOCKSCOPE_BLESS=1 rewrites it after an intended change)",
            path.display(),
            line + 1,
            want.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

#[test]
fn expositions_match_golden_files() {
    let (tree, web, db) = tree();
    let mut identity = Identity::new(
        tree.0.clone(),
        tree.0.clone(),
        None,
        HostCache::new(64, Duration::from_secs(30), Duration::from_secs(3600)),
    );
    let grace = Duration::from_secs(300);
    let mut series = Series::new(Budgets::default(), grace, None);
    let mut labeller = Labeller::new(LabelOptions::default());
    // The reason names the running kernel's BTF would give (fixed here: the golden files must
    // not depend on the kernel).
    labeller.set_drop_reasons(std::collections::BTreeMap::from([
        (3, "NO_SOCKET".to_string()),
        (12, "NETFILTER_DROP".to_string()),
    ]));
    let b = batch(web, db);
    fold_batch(&b, &mut labeller, &mut identity, &mut series, grace);
    // A second drain: counters add up, nothing new appears.
    fold_batch(&b, &mut labeller, &mut identity, &mut series, grace);
    let snapshot = series.registry.snapshot();
    golden(
        "exposition.prom",
        &canonical_text(&text::prometheus(&snapshot)),
    );
    golden(
        "exposition.om",
        &canonical_text(&text::openmetrics(&snapshot)),
    );
    let start = 1_700_000_000_000_000_000;
    let encoder = Encoder::new(
        vec![kv("service.name", "sockscope")],
        Temporality::Cumulative,
        start,
    );
    let request = encoder.encode(&snapshot, start + 5_000_000_000).body;
    let request = <opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest as prost::Message>::decode(&request[..])
        .expect("the request decodes");
    golden("otlp-request.txt", &canonical_request(request));
}
