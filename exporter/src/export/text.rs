//! The text expositions of a snapshot: OpenMetrics 1.0 and Prometheus's classic text format
//! (0.0.4), which differs in that counters are declared under their sample name (`x_total`)
//! and there is no `# EOF`. Numbers are written as prometheus-client writes them (itoa for
//! integers, dtoa for floats), so the bytes stay those of earlier versions.

use std::sync::{Arc, OnceLock};

use crate::{
    schema::Kind,
    series::snapshot::{LabelSet, Snapshot, Value},
};

/// `Content-Type` of the OpenMetrics exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the classic Prometheus text exposition.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// True when the client prefers OpenMetrics (Prometheus sends it first in its Accept header).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// One drain's snapshot with its text renderings, each made on first request and kept until
/// the next drain replaces the whole: a format nobody scrapes costs nothing.
#[derive(Default)]
pub struct Exposition {
    /// What the drain published.
    pub snapshot: Arc<Snapshot>,
    openmetrics: OnceLock<String>,
    prometheus: OnceLock<String>,
}

impl Exposition {
    /// A snapshot not yet rendered.
    pub fn new(snapshot: Snapshot) -> Self {
        Exposition {
            snapshot: Arc::new(snapshot),
            ..Exposition::default()
        }
    }

    /// The OpenMetrics text (rendered now if this is the first request).
    pub fn openmetrics(&self) -> &str {
        self.openmetrics.get_or_init(|| openmetrics(&self.snapshot))
    }

    /// The Prometheus text (rendered now if this is the first request).
    pub fn prometheus(&self) -> &str {
        self.prometheus.get_or_init(|| prometheus(&self.snapshot))
    }

    /// Whether the format was rendered already (a request for it costs no work).
    pub fn rendered(&self, openmetrics: bool) -> bool {
        if openmetrics {
            self.openmetrics.get().is_some()
        } else {
            self.prometheus.get().is_some()
        }
    }
}

/// OpenMetrics text of a snapshot.
pub fn openmetrics(snapshot: &Snapshot) -> String {
    render(snapshot, true)
}

/// Prometheus text 0.0.4 of a snapshot.
pub fn prometheus(snapshot: &Snapshot) -> String {
    render(snapshot, false)
}

fn render(snapshot: &Snapshot, openmetrics: bool) -> String {
    // About 220 bytes per flow series; growing the buffer as it fills would copy it log n times.
    let mut out = String::with_capacity(4096 + snapshot.len() * 224);
    let mut int = itoa::Buffer::new();
    let mut float = dtoa::Buffer::new();
    for f in &snapshot.families {
        let family = f.family;
        let declared_total = !openmetrics && family.kind == Kind::Counter;
        for line in ["# HELP ", "# TYPE "] {
            out.push_str(line);
            out.push_str(family.name);
            if declared_total {
                out.push_str("_total");
            }
            out.push(' ');
            if line == "# HELP " {
                out.push_str(family.help);
                out.push_str(".\n");
            } else {
                out.push_str(family.kind.as_str());
                out.push('\n');
            }
        }
        for p in &f.points {
            let value: &str = match &p.value {
                Value::Counter(v) => int.format(*v),
                Value::CounterF64(v) => float.format(*v),
                Value::Gauge(v) => int.format(*v),
                Value::GaugeF64(v) => float.format(*v),
                Value::Histogram(h) => {
                    sample(&mut out, family.name, "_sum", &*p.labels, None);
                    out.push_str(float.format(h.sum));
                    out.push('\n');
                    sample(&mut out, family.name, "_count", &*p.labels, None);
                    out.push_str(int.format(h.count));
                    out.push('\n');
                    let mut cumulative = 0u64;
                    for (i, n) in h.counts.iter().enumerate() {
                        cumulative = cumulative.wrapping_add(*n);
                        let le = match h.bounds.get(i) {
                            Some(b) => float.format(*b),
                            None => "+Inf",
                        };
                        sample(&mut out, family.name, "_bucket", &*p.labels, Some(le));
                        out.push_str(int.format(cumulative));
                        out.push('\n');
                    }
                    continue;
                }
            };
            let suffix = if family.kind == Kind::Counter {
                "_total"
            } else {
                ""
            };
            sample(&mut out, family.name, suffix, &*p.labels, None);
            out.push_str(value);
            out.push('\n');
        }
    }
    if openmetrics {
        out.push_str("# EOF\n");
    }
    out
}

/// `name{le="..",labels} ` (no braces when there are no labels at all).
fn sample(out: &mut String, name: &str, suffix: &str, labels: &dyn LabelSet, le: Option<&str>) {
    out.push_str(name);
    out.push_str(suffix);
    let open = out.len();
    out.push('{');
    let mut first = true;
    if let Some(le) = le {
        out.push_str("le=\"");
        out.push_str(le);
        out.push('"');
        first = false;
    }
    let mut pair = |k: &str, v: &str| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        escape(out, v);
        out.push('"');
    };
    match labels.pairs() {
        Some(pairs) => pairs.for_each(|(k, v)| pair(k, v)),
        None => labels.visit(&mut pair),
    }
    if first {
        out.truncate(open);
    } else {
        out.push('}');
    }
    out.push(' ');
}

/// The sample line of one series whose only label has value `value` (fuzzing: an outside
/// value must never break out of its line or its quotes).
pub fn one_label_line(value: &str) -> String {
    struct One(String);
    impl LabelSet for One {
        fn visit(&self, f: &mut dyn FnMut(&'static str, &str)) {
            f("qname", &self.0)
        }
    }
    let mut out = String::new();
    let labels = One(value.to_string());
    sample(&mut out, "sockscope_dns_queries", "_total", &labels, None);
    out.push('1');
    out
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(out: &mut String, v: &str) {
    if !v.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        schema,
        series::snapshot::{FamilySnapshot, HistogramValue, NoLabels, Point},
    };

    struct One(&'static str, String);

    impl LabelSet for One {
        fn visit(&self, f: &mut dyn FnMut(&'static str, &str)) {
            f(self.0, &self.1)
        }
    }

    #[test]
    fn both_formats() {
        let snapshot = Snapshot {
            families: vec![
                FamilySnapshot {
                    family: &schema::WEB_REFUSED,
                    points: vec![Point {
                        labels: Arc::new(One("reason", "a\"b\\c\nd".into())),
                        value: Value::Counter(5),
                    }],
                },
                FamilySnapshot {
                    family: &schema::DRAIN_INTERVAL,
                    points: vec![Point {
                        labels: Arc::new(NoLabels),
                        value: Value::GaugeF64(5.0),
                    }],
                },
                FamilySnapshot {
                    family: &schema::DRAIN_DURATION,
                    points: vec![Point {
                        labels: Arc::new(NoLabels),
                        value: Value::Histogram(Box::new(HistogramValue {
                            bounds: Arc::from([0.5, 1.0]),
                            counts: Box::from([1, 0, 2]),
                            sum: 7.25,
                            count: 3,
                        })),
                    }],
                },
            ],
        };
        let om = openmetrics(&snapshot);
        let body = "sockscope_web_refused_total{reason=\"a\\\"b\\\\c\\nd\"} 5\n\
            # HELP sockscope_drain_interval_seconds The configured time between drains (--interval).\n\
            # TYPE sockscope_drain_interval_seconds gauge\n\
            sockscope_drain_interval_seconds 5.0\n\
            # HELP sockscope_drain_duration_seconds Time to drain the kernel maps and fold the deltas.\n\
            # TYPE sockscope_drain_duration_seconds histogram\n\
            sockscope_drain_duration_seconds_sum 7.25\n\
            sockscope_drain_duration_seconds_count 3\n\
            sockscope_drain_duration_seconds_bucket{le=\"0.5\"} 1\n\
            sockscope_drain_duration_seconds_bucket{le=\"1.0\"} 1\n\
            sockscope_drain_duration_seconds_bucket{le=\"+Inf\"} 3\n";
        let help = format!("{}.", schema::WEB_REFUSED.help);
        assert_eq!(
            om,
            format!(
                "# HELP sockscope_web_refused {help}\n# TYPE sockscope_web_refused counter\n{body}# EOF\n"
            )
        );
        assert_eq!(
            prometheus(&snapshot),
            format!(
                "# HELP sockscope_web_refused_total {help}\n# TYPE sockscope_web_refused_total counter\n{body}"
            )
        );
    }

    #[test]
    fn negotiates() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(None));
    }
}
