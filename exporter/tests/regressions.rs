//! Every input that ever crashed a fuzz target (fuzz/regressions/<target>/), replayed on the
//! stable toolchain as part of the suite, with the properties its target checks. The fuzz
//! targets themselves run in scripts/fuzz.sh (nightly, cargo-fuzz).

use std::path::{Path, PathBuf};

use clap::Parser;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            let data = std::fs::read(&p).expect("read regression input");
            (p, data)
        })
        .collect()
}

#[test]
fn web_config_regressions() {
    for (p, data) in inputs("web_config") {
        if let Ok(text) = std::str::from_utf8(&data)
            && let Err(e) = sockscope::export::web::parse(text)
        {
            assert!(!e.contains('\n'), "{}: {e:?}", p.display());
        }
    }
}

#[test]
fn config_file_regressions() {
    let defaults = sockscope::config::Config::try_parse_from(["sockscope"]).expect("defaults");
    for (p, data) in inputs("config_file") {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        let mut c = defaults.clone();
        if let Err(e) =
            sockscope::config::file::parse(text).and_then(|f| f.apply(&mut c, &|_| false))
        {
            assert!(!e.contains('\n'), "{}: {e:?}", p.display());
        }
    }
}

#[test]
fn dns_answer_regressions() {
    for (_, data) in inputs("dns_answer") {
        let _ = sockscope::dns::answer::decode(&data);
    }
}

#[test]
fn qname_regressions() {
    for (p, data) in inputs("qname") {
        let name = sockscope::identity::names::presentation(&data);
        assert!(
            name.bytes().all(|b| b.is_ascii_graphic()),
            "{}: {name:?}",
            p.display()
        );
    }
}

#[test]
fn cgroup_path_regressions() {
    for (_, data) in inputs("cgroup_path") {
        if let Ok(path) = std::str::from_utf8(&data) {
            let _ = sockscope::identity::cgroup::workload_of(path);
            let _ = sockscope::identity::kubepods::parse(path);
        }
    }
}

#[test]
fn kube_objects_regressions() {
    use sockscope::kubernetes::objects::{PodLite, pod_ips};
    for (_, data) in inputs("kube_objects") {
        if let Ok(p) = serde_json::from_slice::<PodLite>(&data)
            && let Some(s) = &p.status
        {
            let _ = pod_ips(s);
        }
    }
}

#[test]
fn text_parsers_regressions() {
    for (_, data) in inputs("text_parsers") {
        if let Ok(text) = std::str::from_utf8(&data) {
            let line = sockscope::export::text::one_label_line(text);
            assert_eq!(line.lines().count(), 1, "{line:?}");
            let _ = sockscope::config::otlp::pairs(text);
            let _ = sockscope::ebpf::preflight::cgroup2_mounts(text);
        }
    }
}
