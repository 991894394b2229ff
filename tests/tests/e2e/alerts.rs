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
    // The unit tests do catch a wrong rule: a threshold raised past the cases makes them fail.
    let broken_rules =
        std::env::temp_dir().join(format!("sockscope-broken-rules-{}.yml", std::process::id()));
    let text = std::fs::read_to_string(&rules).expect("rules");
    std::fs::write(&broken_rules, text.replace(") > 0.3", ") > 0.9")).expect("write");
    let broken_tests = std::env::temp_dir().join(format!(
        "sockscope-promtool-broken-{}.yml",
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
    assert!(
        !out.status.success(),
        "a broken NXDOMAIN threshold passed the tests"
    );
    for f in [tests, broken_rules, broken_tests] {
        let _ = std::fs::remove_file(f);
    }
}
