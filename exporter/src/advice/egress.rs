//! `sockscope egress`: per workload, the destinations outside the cluster it connected to
//! (by the hostname it resolved, else by address class), with bytes, connections and when
//! they were first and last seen in the window.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{
    Result,
    observed::{Workload, in_window, selected},
    prometheus::{Prometheus, Sample},
};
use crate::{
    config::tools::{EgressFormat, Source},
    schema,
};

/// Peers inside the cluster (or this host): not egress.
const INTERNAL: &str = "pod|service|node|loopback";

/// One destination of one workload.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Destination {
    /// Namespace of the workload.
    pub namespace: String,
    /// The workload.
    pub workload: String,
    /// `remote_host`, or the address class in parentheses when the address was not named.
    pub destination: String,
    /// `remote_class`.
    pub class: String,
    /// Ports connected to.
    pub ports: BTreeSet<String>,
    /// TCP connections opened in the window.
    pub connections: u64,
    /// Payload bytes, both directions, TCP and UDP.
    pub bytes: u64,
    /// First sample in the window (Unix seconds); at the window's start when it was already
    /// active then.
    pub first_seen: f64,
    /// Last time its counters moved (Unix seconds).
    pub last_seen: f64,
    /// Already active when the window began.
    pub before_window: bool,
}

type Key = (String, String, String, String);

fn key(s: &Sample) -> Key {
    let host = s.label("remote_host");
    let class = s.label("remote_class");
    let dest = if host.is_empty() {
        format!("({class})")
    } else {
        host.to_string()
    };
    (
        s.label("namespace").to_string(),
        s.label("workload").to_string(),
        dest,
        class.to_string(),
    )
}

/// Reads the destinations.
pub async fn read(prom: &Prometheus, source: &Source, at: f64) -> Result<Vec<Destination>> {
    let mut sel = format!(r#"role="client", remote_class!~"{INTERNAL}""#);
    if !source.matchers.is_empty() {
        sel = format!("{sel}, {}", source.matchers);
    }
    let by = "namespace, workload, workload_kind, remote_class, remote_host, port";
    let w = source.window;
    // Resolution of the first/last seen subqueries: about 2000 steps over the window, a
    // round step so that steps fall on scrape times.
    let step = [60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400]
        .into_iter()
        .find(|s| w.as_secs() / s <= 2016)
        .unwrap_or(86400);
    let ws = format!("{}s", w.as_secs());
    let rs = format!("{step}s");
    let mut rows: BTreeMap<Key, Destination> = BTreeMap::new();
    let mut firsts = Vec::new();
    let mut lasts = Vec::new();
    // One family at a time: functions drop the metric name, and the sent and received
    // series of one row would then collide.
    for family in [
        &schema::TCP_SENT_BYTES,
        &schema::TCP_RECEIVED_BYTES,
        &schema::UDP_SENT_BYTES,
        &schema::UDP_RECEIVED_BYTES,
    ] {
        let family = family.exposed();
        let family = family.as_str();
        for s in prom.query(&in_window(family, &sel, w, by), at).await? {
            if s.value > 0.0
                && let Some(d) = entry(&mut rows, source, &s)
            {
                d.bytes += s.value.round() as u64;
                d.ports.insert(s.label("port").to_string());
            }
        }
        let first =
            format!("min by ({by}) (min_over_time(timestamp({family}{{{sel}}})[{ws}:{rs}]))");
        for s in prom.query(&first, at).await? {
            firsts.push((key(&s), s.value));
        }
        // changes() needs two samples in its range: a step and a half (a range holds its
        // left end in Prometheus 2, not in 3), and at least 90s more than a step, so that a
        // 60s scrape interval in any phase has two samples in it.
        let changed = format!(
            "max by ({by}) (max_over_time((timestamp(changes({family}{{{sel}}}[{}s]) > 0))[{ws}:{rs}]))",
            (step * 3 / 2).max(step + 90)
        );
        for s in prom.query(&changed, at).await? {
            lasts.push((key(&s), s.value));
        }
    }
    let conns = in_window(&schema::TCP_CONNECTIONS_OPENED.exposed(), &sel, w, by);
    for s in prom.query(&conns, at).await? {
        if s.value > 0.0
            && let Some(d) = entry(&mut rows, source, &s)
        {
            d.connections += s.value.round() as u64;
            d.ports.insert(s.label("port").to_string());
        }
    }
    let start = at - w.as_secs_f64();
    let mut out: Vec<Destination> = Vec::new();
    for (k, mut d) in rows {
        if d.bytes == 0 && d.connections == 0 {
            continue;
        }
        for (fk, t) in &firsts {
            if *fk == k {
                d.first_seen = d.first_seen.min(*t);
            }
        }
        if !d.first_seen.is_finite() {
            d.first_seen = start;
        }
        d.before_window = d.first_seen <= start + step as f64;
        d.last_seen = d.first_seen;
        for (lk, t) in &lasts {
            if *lk == k {
                d.last_seen = d.last_seen.max(*t);
            }
        }
        out.push(d);
    }
    Ok(out)
}

/// The row of a sample of a selected workload.
fn entry<'a>(
    rows: &'a mut BTreeMap<Key, Destination>,
    source: &Source,
    s: &Sample,
) -> Option<&'a mut Destination> {
    let w = Workload {
        namespace: s.label("namespace").to_string(),
        name: s.label("workload").to_string(),
        kind: s.label("workload_kind").to_string(),
    };
    if w.name.is_empty() || !selected(source, &w) {
        return None;
    }
    let k = key(s);
    Some(rows.entry(k.clone()).or_insert_with(|| Destination {
        namespace: k.0,
        workload: k.1,
        destination: k.2,
        class: k.3,
        first_seen: f64::INFINITY,
        ..Destination::default()
    }))
}

fn time(t: f64) -> String {
    let st = std::time::UNIX_EPOCH
        + std::time::Duration::try_from_secs_f64(t.max(0.0)).unwrap_or_default();
    humantime::format_rfc3339_seconds(st).to_string()
}

/// The destinations in `format`.
pub fn render(rows: &[Destination], format: EgressFormat) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|d| {
            vec![
                d.namespace.clone(),
                d.workload.clone(),
                d.destination.clone(),
                d.class.clone(),
                d.ports.iter().cloned().collect::<Vec<_>>().join(" "),
                d.connections.to_string(),
                d.bytes.to_string(),
                if d.before_window {
                    format!("<={}", time(d.first_seen))
                } else {
                    time(d.first_seen)
                },
                time(d.last_seen),
            ]
        })
        .collect();
    let header = [
        "NAMESPACE",
        "WORKLOAD",
        "DESTINATION",
        "CLASS",
        "PORTS",
        "CONNECTIONS",
        "BYTES",
        "FIRST_SEEN",
        "LAST_SEEN",
    ];
    match format {
        EgressFormat::Table => super::columns(&header, &cells),
        EgressFormat::Csv => {
            let mut out = header.join(",");
            out.push('\n');
            for row in &cells {
                let quoted: Vec<String> = row.iter().map(|c| csv(c)).collect();
                out.push_str(&quoted.join(","));
                out.push('\n');
            }
            out
        }
        EgressFormat::Json => {
            let v: Vec<serde_json::Value> = rows
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "namespace": d.namespace,
                        "workload": d.workload,
                        "destination": d.destination,
                        "class": d.class,
                        "ports": d.ports,
                        "connections": d.connections,
                        "bytes": d.bytes,
                        "first_seen": time(d.first_seen),
                        "last_seen": time(d.last_seen),
                        "active_before_window": d.before_window,
                    })
                })
                .collect();
            let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
            s.push('\n');
            s
        }
    }
}

/// A CSV field (RFC 4180): quoted when it holds a comma, quote or line break.
fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
