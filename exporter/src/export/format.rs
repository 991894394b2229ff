//! Text expositions. prometheus-client writes OpenMetrics; Prometheus's classic text format
//! (0.0.4) differs in that counters are declared under their sample name (`x_total`), there is
//! no `# UNIT` and no `# EOF`.

use std::collections::HashSet;

use prometheus_client::{encoding::text::encode, registry::Registry};

/// `Content-Type` of the OpenMetrics exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the classic Prometheus text exposition.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Both renderings of one registry snapshot.
#[derive(Debug, Default, Clone)]
pub struct Exposition {
    /// OpenMetrics text.
    pub openmetrics: String,
    /// Prometheus text 0.0.4.
    pub prometheus: String,
}

/// Renders the registry in both formats.
pub fn render(registry: &Registry) -> Exposition {
    let mut openmetrics = String::with_capacity(64 * 1024);
    if encode(&mut openmetrics, registry).is_err() {
        // Only fails if a label value's Display fails, which ours never do.
        openmetrics.clear();
        openmetrics.push_str("# EOF\n");
    }
    let prometheus = to_prometheus_text(&openmetrics);
    Exposition {
        openmetrics,
        prometheus,
    }
}

/// Converts an OpenMetrics exposition into Prometheus text 0.0.4.
pub fn to_prometheus_text(om: &str) -> String {
    let counters: HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// True when the client prefers OpenMetrics (Prometheus sends it first in its Accept header).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_counters_and_drops_eof() {
        let om = "# HELP a_bytes Bytes.\n# TYPE a_bytes counter\na_bytes_total{x=\"1\"} 5\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        let p = to_prometheus_text(om);
        assert_eq!(
            p,
            "# HELP a_bytes_total Bytes.\n# TYPE a_bytes_total counter\na_bytes_total{x=\"1\"} 5\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
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
