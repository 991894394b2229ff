//! The alerting and recording rules: `promtool check rules`, and `promtool test rules` with a
//! firing and a not-firing case for every alert (alerts/tests/cases.yml; an alert without a
//! case fails the build of the test file).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn rules_check_and_every_alert_fires_and_stays_quiet() {
    let rules = repo().join("alerts/sockscope.rules.yml");
    let rules = rules.canonicalize().expect("rules file");
    let out = run(Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules));
    assert!(out.contains("SUCCESS"), "{out}");
    let tests = std::env::temp_dir().join(format!("sockscope-promtool-{}.yml", std::process::id()));
    run(Command::new(sockscope_tests::venv().join("bin/python"))
        .arg(repo().join("alerts/tests/build.py"))
        .arg(&rules)
        .arg(repo().join("alerts/tests/cases.yml"))
        .arg(&tests));
    let out = run(Command::new("promtool")
        .arg("test")
        .arg("rules")
        .arg(&tests));
    assert!(out.contains("SUCCESS"), "{out}");
    // The unit tests do catch a wrong rule: a threshold raised past the cases, a workload's
    // noise reason let in, a node's allow list opened to everything, refused connects counted
    // as resets, a p99 threshold under the fast edges: each fails that alert's case.
    let text = std::fs::read_to_string(&rules).expect("rules");
    let mutations = [
        ("SockscopeDNSNXDOMAINRatioHigh", ") > 0.3", ") > 0.9"),
        ("SockscopePacketDropsHigh", "|TCP_OLD_DATA|", "|"),
        (
            "SockscopePacketDropsHigh",
            "reason=~\"CPU_BACKLOG|",
            "reason=~\".+|CPU_BACKLOG|",
        ),
        (
            "SockscopeTCPResetsHigh",
            "group_left ()\n                (workload:sockscope_tcp_connect_failures:rate5m\n",
            "group_left ()\n                (workload:sockscope_tcp_connect_failures:rate5m * 0\n",
        ),
        (
            "SockscopeTCPConnectLatencyHigh",
            "connect_duration_seconds_bucket:rate5m) > 1\n",
            "connect_duration_seconds_bucket:rate5m) > 0.001\n",
        ),
    ];
    let mut files = vec![tests];
    for (i, (alert, from, to)) in mutations.into_iter().enumerate() {
        assert!(
            text.contains(from),
            "{alert}: the rules no longer have {from:?}"
        );
        let broken_rules = std::env::temp_dir().join(format!(
            "sockscope-broken-rules-{}-{i}.yml",
            std::process::id()
        ));
        std::fs::write(&broken_rules, text.replace(from, to)).expect("write");
        let broken_tests = std::env::temp_dir().join(format!(
            "sockscope-promtool-broken-{}-{i}.yml",
            std::process::id()
        ));
        run(Command::new(sockscope_tests::venv().join("bin/python"))
            .arg(repo().join("alerts/tests/build.py"))
            .arg(&broken_rules)
            .arg(repo().join("alerts/tests/cases.yml"))
            .arg(&broken_tests));
        let out = Command::new("promtool")
            .arg("test")
            .arg("rules")
            .arg(&broken_tests)
            .output()
            .expect("promtool");
        // promtool reports failures on stderr.
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success() && report.contains(&format!("alertname: {alert},")),
            "{alert}: {from:?} -> {to:?} passed the tests:\n{report}"
        );
        files.extend([broken_rules, broken_tests]);
    }
    for f in files {
        let _ = std::fs::remove_file(f);
    }
}
