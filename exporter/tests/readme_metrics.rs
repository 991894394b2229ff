//! The README's metrics table and the family schema say the same: every family is a row with
//! its exposed name, type and labels, and every row is a family.

use std::collections::BTreeSet;

use sockscope::schema::{self, FLOW_LABELS, LOCAL_LABELS};

/// (metric, type, labels) of each row of the table under `## Metrics`.
fn rows() -> Vec<(String, String, BTreeSet<String>)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Metrics\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Metrics section");
    let mut out = Vec::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `name` | type | labels | meaning |
        if cells.len() < 5 || !cells[1].starts_with("`sockscope_") {
            continue;
        }
        let name = cells[1].trim_matches('`').to_string();
        let mut labels = BTreeSet::new();
        for part in cells[3].split(',') {
            let part = part.trim();
            let word = part.split_whitespace().next().unwrap_or("");
            match word {
                "flow" => labels.extend(FLOW_LABELS.iter().map(|l| l.to_string())),
                "local" => labels.extend(LOCAL_LABELS.iter().map(|l| l.to_string())),
                "" => {}
                w => {
                    labels.insert(w.trim_matches('`').to_string());
                }
            }
        }
        out.push((name, cells[2].to_string(), labels));
    }
    out
}

#[test]
fn readme_table_matches_the_schema() {
    let rows = rows();
    assert!(rows.len() > 30, "the table was not found: {rows:?}");
    for f in schema::ALL {
        let exposed = f.exposed();
        let Some((_, kind, labels)) = rows.iter().find(|(n, _, _)| *n == exposed) else {
            panic!("{exposed} is not in the README's metrics table");
        };
        assert_eq!(kind, f.kind.as_str(), "type of {exposed}");
        let want: BTreeSet<String> = f.labels.iter().map(|l| l.to_string()).collect();
        assert_eq!(labels, &want, "labels of {exposed}");
    }
    for (name, _, _) in &rows {
        assert!(
            schema::find(name).is_some_and(|f| f.exposed() == *name),
            "the README lists {name}, which sockscope does not export"
        );
    }
}
