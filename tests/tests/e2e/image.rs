//! The image `scripts/image.sh` built (the test command builds it first): what it holds and
//! says of itself, for both architectures, and the arm64 binary run under qemu.

use std::process::Command;

use serde_json::Value;
use sockscope_tests::{
    manifests::repo,
    podman::{podman, podman_unavailable, sockscope_image},
    skip,
};

/// The workspace's version and license, as Cargo.toml says.
fn cargo_field(key: &str) -> String {
    let toml = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    toml.lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .and_then(|r| r.trim_start().strip_prefix('='))
        })
        .map(|v| v.trim().trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("{key} in Cargo.toml"))
}

#[test]
fn image_says_what_it_is_for_each_architecture() {
    if let Some(why) = podman_unavailable() {
        skip("image::image_says_what_it_is_for_each_architecture", why);
        return;
    }
    let image = sockscope_image();
    let version = cargo_field("version");
    assert!(image.ends_with(&format!(":{version}")), "{image}");
    // The plain tag is a manifest list over one image per architecture.
    let list: Value =
        serde_json::from_str(&podman(&["manifest", "inspect", &image])).expect("json");
    let mut arches: Vec<&str> = list["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().expect("arch"))
        .collect();
    arches.sort_unstable();
    assert_eq!(arches, ["amd64", "arm64"]);
    let revision = String::from_utf8(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(repo())
            .output()
            .expect("git")
            .stdout,
    )
    .expect("utf-8");
    for arch in arches {
        let one = format!("{image}-{arch}");
        let inspect: Value =
            serde_json::from_str(&podman(&["image", "inspect", &one])).expect("json");
        let i = &inspect[0];
        assert_eq!(i["Architecture"], arch);
        assert_eq!(i["Os"], "linux");
        assert_eq!(i["Config"]["Entrypoint"], serde_json::json!(["/sockscope"]));
        assert_eq!(i["Config"]["User"], "0");
        let labels = &i["Config"]["Labels"];
        assert_eq!(labels["org.opencontainers.image.version"], version.as_str());
        assert_eq!(
            labels["org.opencontainers.image.licenses"],
            cargo_field("license").as_str()
        );
        assert_eq!(
            labels["org.opencontainers.image.source"],
            cargo_field("repository").as_str()
        );
        let rev = labels["org.opencontainers.image.revision"]
            .as_str()
            .expect("revision");
        assert!(rev.starts_with(revision.trim()), "{rev} vs {revision}");
        // FROM scratch: one layer, the binary alone.
        assert_eq!(
            i["RootFS"]["Layers"].as_array().expect("layers").len(),
            1,
            "{one}"
        );
        assert!(
            i["Size"].as_u64().expect("size") < 40 << 20,
            "{one}: {}",
            i["Size"]
        );
    }
    // The amd64 image runs here: the binary alone, static (no libc in the image).
    let version_line = podman(&["run", "--rm", "--network=none", &image, "--version"]);
    assert_eq!(version_line, format!("sockscope {version}"));
}

/// The arm64 binary, cross-built into the arm64 image, run under qemu's user-mode emulation:
/// it starts, checks a config and writes the seccomp profile (no eBPF: qemu-user does not
/// emulate bpf(2) for a foreign architecture, and this kernel is amd64's).
#[test]
fn arm64_binary_runs_under_qemu() {
    let binary = repo().join("target/image/context/sockscope-arm64");
    assert!(
        binary.exists(),
        "{} missing: run bash scripts/image.sh",
        binary.display()
    );
    let file = Command::new("file").arg(&binary).output().expect("file");
    let kind = String::from_utf8_lossy(&file.stdout);
    assert!(
        kind.contains("ARM aarch64") && kind.contains("statically linked"),
        "{kind}"
    );
    let Ok(qemu) = which("qemu-aarch64-static") else {
        skip(
            "image::arm64_binary_runs_under_qemu",
            "qemu-aarch64-static is not installed (scripts/setup.sh installs it)",
        );
        return;
    };
    let run = |args: &[&str]| {
        let out = Command::new(&qemu)
            .arg(&binary)
            .args(args)
            .output()
            .expect("qemu");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, help) = run(&["--help"]);
    assert!(ok && help.contains("--cgroup-root"), "{help}");
    let (ok, version) = run(&["--version"]);
    assert!(ok, "{version}");
    assert_eq!(
        version.trim(),
        format!("sockscope {}", cargo_field("version"))
    );
    let dir = std::env::temp_dir().join(format!("sockscope-arm64-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let good = dir.join("config.yaml");
    std::fs::write(
        &good,
        "interval: 10s\nbudgets:\n  qnames_per_workload: 20\n",
    )
    .expect("config");
    let (ok, out) = run(&["--check-config", &good.to_string_lossy()]);
    assert!(ok && out.contains(": ok"), "{out}");
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "interval: 10 parsecs\n").expect("config");
    let (ok, out) = run(&["--check-config", &bad.to_string_lossy()]);
    assert!(!ok && out.contains("interval"), "{out}");
    let profile = dir.join("seccomp/sockscope.json");
    let (ok, out) = run(&["--install-seccomp-profile", &profile.to_string_lossy()]);
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read_to_string(&profile).expect("profile"),
        std::fs::read_to_string(repo().join("deploy/seccomp/sockscope.json")).expect("shipped")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn which(name: &str) -> Result<String, ()> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.exists())
        .map(|p| p.to_string_lossy().to_string())
        .ok_or(())
}
