//! The import rule of the data path: every module of `exporter/src` imports only modules of
//! earlier stages (kernel -> labels -> series -> export -> readback -> wiring), or the modules
//! beside the path (schema, config, report, fault, memory), which import nothing of the path.
//! Test code is not held to it.
//!
//! `cargo test -p sockscope --test layers -- --nocapture` prints every arrow with its rank.

use std::{collections::BTreeMap, path::Path};

/// Top-level modules in data-path order; within a stage, a module may use those before it.
const ORDER: [(&str, &str); 11] = [
    ("ebpf", "kernel"),
    ("drain", "kernel"),
    ("kubernetes", "labels"),
    ("identity", "labels"),
    ("dns", "labels"),
    ("series", "series"),
    ("export", "export"),
    // `sockscope policy` / `egress`: what was exported, read back from Prometheus.
    ("advice", "readback"),
    ("pipeline", "wiring"),
    ("error", "wiring"),
    ("agent", "wiring"),
];

/// Beside the path: usable from anywhere, using nothing of it.
const BESIDE: [&str; 6] = ["schema", "config", "report", "fault", "memory", "seccomp"];

fn rank(module: &str) -> Option<usize> {
    ORDER.iter().position(|(m, _)| *m == module)
}

/// The first segment of each path a `use crate::...;` tree names.
fn used(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(body) = tree.strip_prefix('{') else {
        return vec![ident(tree)];
    };
    let body = body.strip_suffix('}').unwrap_or(body);
    let (mut out, mut depth, mut cur) = (Vec::new(), 0, String::new());
    for c in body.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(ident(&cur));
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(ident(&cur));
    out.retain(|s| !s.is_empty());
    out
}

fn ident(s: &str) -> String {
    s.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Source without comments and without its unit-test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// (importing top-level module, imported top-level module) -> files.
fn arrows(src: &Path) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).expect("read src");
        for e in entries {
            let path = e.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let top = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or("")
                .trim_end_matches(".rs")
                .to_string();
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            // Files compiled for tests only (`#[cfg(test)] mod golden;`).
            let parent = path.parent().expect("parent");
            let test_only = ["mod.rs", "lib.rs"].iter().any(|m| {
                std::fs::read_to_string(parent.join(m))
                    .is_ok_and(|t| t.contains(&format!("#[cfg(test)]\nmod {stem};")))
            });
            if test_only || top == "lib" || top == "main" {
                continue;
            }
            let text = code(&std::fs::read_to_string(&path).expect("read"));
            let mut names = Vec::new();
            for part in text.split("use crate::").skip(1) {
                if let Some(end) = part.find(';') {
                    names.extend(used(&part[..end]));
                }
            }
            for part in text.split("crate::").skip(1) {
                names.push(ident(part));
            }
            for n in names {
                if n != top && !n.is_empty() {
                    let files = out.entry((top.clone(), n)).or_default();
                    let f = rel.display().to_string();
                    if !files.contains(&f) {
                        files.push(f);
                    }
                }
            }
        }
    }
    out
}

/// Whether `from` may import `to` (`to_is_module`: not one of the crate root's helpers).
fn verdict(from: &str, to: &str, to_is_module: bool) -> Result<(), &'static str> {
    match (rank(from), rank(to), BESIDE.contains(&from)) {
        // Beside modules (and what is not a module: the crate's re-exports).
        _ if !to_is_module || BESIDE.contains(&to) => Ok(()),
        (_, _, true) => Err("a module beside the path uses the path"),
        (Some(a), Some(b), _) if b < a => Ok(()),
        (Some(_), Some(_), _) => Err("an arrow back up the path"),
        _ => Err("a module missing from the stage list"),
    }
}

#[test]
fn every_module_imports_only_earlier_stages() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let mut broken = Vec::new();
    for ((from, to), files) in arrows(&src) {
        let is_module = lib.contains(&format!("pub mod {to};"));
        let verdict = verdict(&from, &to, is_module);
        let stage = |m: &str| {
            ORDER
                .iter()
                .find(|(n, _)| *n == m)
                .map_or("beside", |(_, s)| *s)
        };
        println!(
            "{from} ({}) -> {to} ({}): {}{}",
            stage(&from),
            stage(&to),
            files.join(", "),
            verdict
                .err()
                .map(|e| format!("  <- {e}"))
                .unwrap_or_default()
        );
        if let Err(e) = verdict {
            broken.push(format!("{from} -> {to} in {}: {e}", files.join(", ")));
        }
    }
    for m in ORDER.iter().map(|(m, _)| *m).chain(BESIDE) {
        assert!(
            lib.contains(&format!("pub mod {m};")),
            "{m} is in the stage list but not a module"
        );
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_checker_sees_grouped_and_inline_paths() {
    assert_eq!(
        used("{\n    dns::Answers,\n    drain::{Batch, Drainer},\n    lock,\n}"),
        vec!["dns", "drain", "lock"]
    );
    assert_eq!(used("series::snapshot::Value"), vec!["series"]);
    assert_eq!(
        code("a // crate::x\nb\n#[cfg(test)]\nmod tests { crate::y }"),
        "a \nb"
    );
    // The rule itself: forward arrows and helpers pass, back-arrows do not.
    assert!(verdict("series", "identity", true).is_ok());
    assert!(verdict("series", "memory", true).is_ok());
    assert!(verdict("series", "config", true).is_ok());
    assert!(verdict("series", "export", true).is_err());
    assert!(verdict("ebpf", "drain", true).is_err());
    assert!(verdict("config", "export", true).is_err());
    assert!(verdict("newstage", "series", true).is_err());
}
