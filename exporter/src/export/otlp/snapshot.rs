//! The exposition the last drain rendered, read back into families and samples, so OTLP
//! carries exactly what /metrics shows (same families, labels and values) without a second
//! path through the series.

/// Kind of a family, from its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic counter (`_total` samples).
    Counter,
    /// Gauge (also `info` and `unknown`).
    Gauge,
    /// Histogram (`_bucket`, `_sum`, `_count` samples).
    Histogram,
}

/// A sample value: integers stay integers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// Written without a fraction or exponent.
    Int(i64),
    /// Anything else.
    Double(f64),
}

impl Number {
    fn parse(s: &str) -> Option<Number> {
        if let Ok(i) = s.parse::<i64>() {
            return Some(Number::Int(i));
        }
        match s {
            "+Inf" => Some(Number::Double(f64::INFINITY)),
            "-Inf" => Some(Number::Double(f64::NEG_INFINITY)),
            "NaN" => Some(Number::Double(f64::NAN)),
            _ => s.parse::<f64>().ok().map(Number::Double),
        }
    }

    /// As a float.
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Double(d) => d,
        }
    }
}

/// One histogram series: cumulative bucket counts by upper bound, sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// (upper bound, cumulative count), `+Inf` last.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of observations.
    pub sum: f64,
    /// Observations.
    pub count: u64,
}

/// One series of a family.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Label pairs in exposition order (`le` excluded).
    pub labels: Vec<(String, String)>,
    /// Counter or gauge value.
    pub value: Option<Number>,
    /// Histogram data.
    pub histogram: Option<Histogram>,
}

/// One family.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Name as in `# TYPE` (counters without `_total`).
    pub name: String,
    /// `# HELP` text.
    pub help: String,
    /// Kind.
    pub kind: Kind,
    /// Its series.
    pub series: Vec<Series>,
}

/// Parses Prometheus text format 0.0.4 as sockscope renders it.
pub fn parse(text: &str) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            families.push(Family {
                name: name.to_string(),
                help: help.replace("\\n", "\n").replace("\\\\", "\\"),
                kind: Kind::Gauge,
                series: Vec::new(),
            });
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let kind = match kind {
                "counter" => Kind::Counter,
                "histogram" => Kind::Histogram,
                _ => Kind::Gauge,
            };
            // Counters are named without `_total` in OTLP (converters add it back).
            let name = match kind {
                Kind::Counter => name.strip_suffix("_total").unwrap_or(name),
                _ => name,
            };
            match families.last_mut() {
                Some(f) if f.name == rest.split(' ').next().unwrap_or("") || f.name == name => {
                    f.kind = kind;
                    f.name = name.to_string();
                }
                _ => families.push(Family {
                    name: name.to_string(),
                    help: String::new(),
                    kind,
                    series: Vec::new(),
                }),
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let Some((name, labels, value)) = sample(line) else {
            continue;
        };
        let Some(family) = families.last_mut() else {
            continue;
        };
        let Some(value) = Number::parse(value) else {
            continue;
        };
        match family.kind {
            Kind::Counter | Kind::Gauge => family.series.push(Series {
                labels,
                value: Some(value),
                histogram: None,
            }),
            Kind::Histogram => {
                let suffix = name.strip_prefix(family.name.as_str()).unwrap_or("");
                let (labels, le) = match suffix {
                    "_bucket" => {
                        let le = labels
                            .iter()
                            .find(|(k, _)| k == "le")
                            .map(|(_, v)| v.clone());
                        (labels.into_iter().filter(|(k, _)| k != "le").collect(), le)
                    }
                    _ => (labels, None),
                };
                let series = match family.series.iter_mut().find(|s| s.labels == labels) {
                    Some(s) => s,
                    None => {
                        family.series.push(Series {
                            labels,
                            value: None,
                            histogram: Some(Histogram::default()),
                        });
                        let last = family.series.len() - 1;
                        &mut family.series[last]
                    }
                };
                let h = series.histogram.get_or_insert_with(Histogram::default);
                match suffix {
                    "_bucket" => {
                        if let Some(le) = le.as_deref().and_then(Number::parse) {
                            h.buckets.push((le.as_f64(), value.as_f64() as u64));
                        }
                    }
                    "_sum" => h.sum = value.as_f64(),
                    "_count" => h.count = value.as_f64() as u64,
                    _ => {}
                }
            }
        }
    }
    families
}

/// Label pairs of a sample.
type Labels = Vec<(String, String)>;

/// `name{a="x",b="y"} value` -> (name, labels, value).
fn sample(line: &str) -> Option<(&str, Labels, &str)> {
    let (head, value) = line.rsplit_once(' ')?;
    let Some(open) = head.find('{') else {
        return Some((head, Vec::new(), value));
    };
    let name = &head[..open];
    let body = head[open + 1..].strip_suffix('}')?;
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut val = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next()? {
                    'n' => val.push('\n'),
                    other => val.push(other),
                },
                '"' => break,
                c => val.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').to_string(), val));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Some((name, labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counters_gauges_histograms_and_escapes() {
        let text = r#"# HELP sockscope_tcp_sent_bytes TCP payload bytes sent.
# TYPE sockscope_tcp_sent_bytes counter
sockscope_tcp_sent_bytes_total{workload="a",remote_host="x\"y\\z",role="client"} 1234
sockscope_tcp_sent_bytes_total{workload="b",remote_host="",role="server"} 5
# HELP sockscope_up Up.
# TYPE sockscope_up gauge
sockscope_up 1
# HELP sockscope_run_seconds_total Run time.
# TYPE sockscope_run_seconds_total counter
sockscope_run_seconds_total{program="p"} 0.5
# HELP sockscope_dns_latency_seconds Latency.
# TYPE sockscope_dns_latency_seconds histogram
sockscope_dns_latency_seconds_sum{rcode="NOERROR"} 0.25
sockscope_dns_latency_seconds_count{rcode="NOERROR"} 3
sockscope_dns_latency_seconds_bucket{le="0.001",rcode="NOERROR"} 1
sockscope_dns_latency_seconds_bucket{le="0.01",rcode="NOERROR"} 3
sockscope_dns_latency_seconds_bucket{le="+Inf",rcode="NOERROR"} 3
# EOF
"#;
        let f = parse(text);
        assert_eq!(f.len(), 4);
        assert_eq!(f[0].kind, Kind::Counter);
        assert_eq!(
            f[0].series[0].labels[1],
            ("remote_host".into(), "x\"y\\z".into())
        );
        assert_eq!(f[0].series[0].value, Some(Number::Int(1234)));
        assert_eq!(f[1].series[0].labels, vec![]);
        assert_eq!(f[2].series[0].value, Some(Number::Double(0.5)));
        assert_eq!(f[2].name, "sockscope_run_seconds");
        let h = f[3].series[0].histogram.as_ref().expect("histogram");
        assert_eq!(
            f[3].series[0].labels,
            vec![("rcode".to_string(), "NOERROR".to_string())]
        );
        assert_eq!(h.buckets, vec![(0.001, 1), (0.01, 3), (f64::INFINITY, 3)]);
        assert_eq!((h.sum, h.count), (0.25, 3));
    }
}
