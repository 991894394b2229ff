//! The exposition as tests read it: a parser of its samples (a third one, independent of the
//! agent's and Prometheus's), and promtool's check of the text.

use std::{
    collections::BTreeMap,
    io::Write,
    process::{Command, Stdio},
};

/// Parsed samples: metric name -> list of (labels, value).
pub struct Metrics {
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (name_labels, value) = match line.rsplit_once(' ') {
                Some(x) => x,
                None => continue,
            };
            let value: f64 = match value.parse() {
                Ok(v) => v,
                Err(_) => continue,
            };
            let (name, labels) = match name_labels.split_once('{') {
                Some((n, rest)) => (n.to_string(), parse_labels(rest.trim_end_matches('}'))),
                None => (name_labels.to_string(), BTreeMap::new()),
            };
            samples.push((name, labels, value));
        }
        Metrics { samples }
    }

    /// Sum of samples of `name` whose labels include all of `want`.
    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.matching(name, want).map(|(_, v)| v).sum()
    }

    /// Samples of `name` matching `want`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        want: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a BTreeMap<String, String>, f64)> + 'a {
        self.samples
            .iter()
            .filter(move |(n, l, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, l, v)| (l, *v))
    }

    pub fn dump(&self) -> String {
        self.samples
            .iter()
            .filter(|(n, _, _)| {
                n.starts_with("sockscope_tcp")
                    || n.starts_with("sockscope_udp")
                    || n.starts_with("sockscope_events")
                    || (n.starts_with("sockscope_dns") && !n.contains("_bucket"))
                    || n.starts_with("sockscope_series")
                    || n.starts_with("sockscope_kubernetes")
                    || n.starts_with("sockscope_metadata")
            })
            .map(|(n, l, v)| format!("{n}{l:?} {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once("=\"") {
        let mut val = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        val.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => val.push(c),
            }
        }
        out.insert(k.trim_start_matches(',').trim().to_string(), val);
        rest = after[end..].trim_start_matches(',');
    }
    out
}

/// Runs `promtool check metrics` on an exposition and fails the test on any complaint.
pub fn promtool_check_metrics(body: &str) {
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().expect("stdin").write_all(body.as_bytes())?;
            c.wait_with_output()
        })
        .expect("run promtool (installed by scripts/setup.sh)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}"
    );
}
