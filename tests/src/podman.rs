//! Real containers: podman on sockscope's container storage (`scripts/containers.sh`: vfs,
//! runc, the cgroupfs manager), the image `scripts/image.sh` built, a workload image holding
//! the traffic peer, and a DaemonSet's pod spec turned into the podman command lines the
//! kubelet's runtime would amount to.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{OnceLock, atomic::Ordering},
};

use serde_json::Value;

use crate::{cgroup::COUNTER, manifests::repo, process::Proc};

/// `bash scripts/containers.sh <tool>`: podman or buildah with sockscope's settings.
pub fn containers(tool: &str) -> Command {
    let mut c = Command::new("bash");
    c.arg(repo().join("scripts/containers.sh")).arg(tool);
    c
}

/// Runs podman with `args`; its stdout, trimmed. Panics with its output if it fails.
pub fn podman(args: &[&str]) -> String {
    let out = containers("podman")
        .args(args)
        .output()
        .expect("podman (installed by scripts/setup.sh)");
    assert!(
        out.status.success(),
        "podman {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Why podman cannot run containers here, or `None` where it can (asked once).
pub fn podman_unavailable() -> Option<&'static str> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(|| {
        match containers("podman")
            .args(["info", "--format", "{{.Host.OCIRuntime.Name}}"])
            .output()
        {
            Err(e) => Some(format!("podman cannot be started: {e}")),
            Ok(o) if !o.status.success() => Some(format!(
                "podman info failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Ok(_) => None,
        }
    })
    .as_deref()
}

/// The image reference `scripts/image.sh` printed last (`target/image/ref`); the test command
/// builds the image before the tests run.
pub fn sockscope_image() -> String {
    let file = repo().join("target/image/ref");
    let image = fs::read_to_string(&file)
        .unwrap_or_else(|_| panic!("{} missing: run bash scripts/image.sh", file.display()));
    let image = image.trim().to_string();
    podman(&["image", "exists", &image]);
    image
}

/// A workload image: the traffic peer and the shared libraries it links, FROM scratch, with the
/// peer as entrypoint. Built once per peer binary (its size and time in the tag).
pub fn peer_image(peer: &str) -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let meta = fs::metadata(peer).expect("peer binary");
            let image = format!(
                "localhost/sockscope-e2e-peer:{:x}-{:x}",
                meta.size(),
                meta.mtime()
            );
            let exists = containers("podman")
                .args(["image", "exists", &image])
                .status()
                .expect("podman");
            if exists.success() {
                return image;
            }
            let buildah = |args: &[&str]| {
                let out = containers("buildah").args(args).output().expect("buildah");
                assert!(
                    out.status.success(),
                    "buildah {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            };
            let ctr = buildah(&["from", "scratch"]);
            buildah(&["copy", &ctr, peer, "/peer"]);
            for lib in linked_libraries(peer) {
                let target = lib.to_string_lossy().to_string();
                let source = fs::canonicalize(&lib).expect("library");
                buildah(&["copy", &ctr, &source.to_string_lossy(), &target]);
            }
            buildah(&["config", "--entrypoint", r#"["/peer"]"#, &ctr]);
            buildah(&["commit", "--quiet", &ctr, &image]);
            buildah(&["rm", &ctr]);
            // Earlier peers' images would pile up in the storage, one per build.
            let listed = podman(&[
                "images",
                "--format",
                "{{.Repository}}:{{.Tag}}",
                "localhost/sockscope-e2e-peer",
            ]);
            for old in listed.lines().filter(|l| *l != image) {
                let _ = containers("podman").args(["rmi", old]).output();
            }
            image
        })
        .clone()
}

/// The shared libraries `binary` loads, and its dynamic loader, as `ldd` lists them.
fn linked_libraries(binary: &str) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().expect("ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// A unique name for a container or pod of this test process.
pub fn container_name(role: &str) -> String {
    format!(
        "sse2e-{}-{}-{role}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A container the test started, removed (with its cgroup) when dropped.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `podman run -d --name <name> <args>`.
    pub fn start(role: &str, args: &[&str]) -> Self {
        let name = container_name(role);
        let mut all = vec!["run", "-d", "--name", &name];
        all.extend_from_slice(args);
        podman(&all);
        Container { name }
    }

    /// `podman run --name <name> <args>` attached, its stdout readable line by line (a
    /// peer's `ready <port>`, its totals).
    pub fn attach(role: &str, args: &[&str]) -> (Self, Proc) {
        let name = container_name(role);
        let mut cmd = containers("podman");
        cmd.args(["run", "--name", &name]).args(args);
        cmd.stdin(Stdio::null());
        let proc = Proc::spawn(&mut cmd);
        (Container { name }, proc)
    }

    /// The container's full id (64 hex digits).
    pub fn id(&self) -> String {
        podman(&["inspect", "--format", "{{.Id}}", &self.name])
    }

    /// Its id as sockscope labels it (the first 12 digits, as `podman ps` shows).
    pub fn short_id(&self) -> String {
        self.id().chars().take(12).collect()
    }

    /// The host pid of its first process (0 once it stopped).
    pub fn pid(&self) -> u32 {
        podman(&["inspect", "--format", "{{.State.Pid}}", &self.name])
            .parse()
            .unwrap_or(0)
    }

    pub fn logs(&self) -> String {
        let out = containers("podman")
            .args(["logs", &self.name])
            .output()
            .expect("podman logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = containers("podman")
            .args(["rm", "-f", "-t", "0", &self.name])
            .output();
    }
}

/// A podman pod: containers that share one network namespace (its infra container's), like a
/// Kubernetes pod's. Removed with its containers when dropped.
pub struct Pod {
    pub name: String,
}

impl Pod {
    /// `podman pod create <args>`, started.
    pub fn create(args: &[&str]) -> Self {
        let name = container_name("pod");
        let mut all = vec!["pod", "create", "--name", &name];
        all.extend_from_slice(args);
        podman(&all);
        podman(&["pod", "start", &name]);
        Pod { name }
    }

    /// Its id as sockscope labels it (12 digits).
    pub fn short_id(&self) -> String {
        podman(&["pod", "inspect", "--format", "{{.Id}}", &self.name])
            .chars()
            .take(12)
            .collect()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = containers("podman")
            .args(["pod", "rm", "-f", "-t", "0", &self.name])
            .output();
    }
}

/// Where a DaemonSet's host paths are on this host, for [`pod_runs`].
pub struct Host {
    /// Host path in the manifest -> path on this host (e.g. `/sys/fs/cgroup` -> the cgroup v2
    /// mount of a hybrid host, the kubelet's root -> a test directory).
    pub paths: Vec<(String, PathBuf)>,
    /// The kubelet's root (`/var/lib/kubelet`): Localhost seccomp profiles are read from its
    /// `seccomp/` directory.
    pub kubelet_root: PathBuf,
    /// `--network` for a pod without hostNetwork: its network namespace.
    pub network: String,
    /// Values of `valueFrom` environment variables (e.g. the node name from the downward API).
    pub env_from: BTreeMap<String, String>,
}

impl Host {
    fn path(&self, manifest: &str) -> PathBuf {
        self.paths
            .iter()
            .find_map(|(from, to)| {
                Path::new(manifest)
                    .strip_prefix(from)
                    .ok()
                    .map(|rest| to.join(rest))
            })
            .unwrap_or_else(|| PathBuf::from(manifest))
    }
}

/// The podman arguments (everything between `podman run` and the image's arguments, image
/// included) that run each container of a DaemonSet's pod as the kubelet would on `host`:
/// the init containers in order, then the containers. Each entry is (container name, args,
/// container args). Only what the shipped manifests use is translated; anything else panics,
/// so a manifest change cannot slip past the podman test untranslated.
pub fn pod_runs(daemonset: &Value, host: &Host) -> Vec<(String, Vec<String>, Vec<String>)> {
    let spec = &daemonset["spec"]["template"]["spec"];
    let mut pod_args: Vec<String> = vec![];
    if spec["hostPID"] == true {
        pod_args.push("--pid=host".into());
    }
    if spec["hostIPC"] == true {
        pod_args.push("--ipc=host".into());
    }
    pod_args.push(if spec["hostNetwork"] == true {
        "--network=host".into()
    } else {
        format!("--network={}", host.network)
    });
    let volumes: BTreeMap<String, &Value> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| (v["name"].as_str().unwrap_or_default().to_string(), v))
        .collect();
    let containers = spec["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["containers"].as_array().into_iter().flatten());
    containers
        .map(|c| {
            let mut args = pod_args.clone();
            args.extend(container_args(c, spec, &volumes, host));
            let image = c["image"].as_str().expect("image").to_string();
            args.push(image);
            let mut cargs: Vec<String> = vec![];
            for a in c["args"].as_array().into_iter().flatten() {
                cargs.push(a.as_str().expect("string arg").to_string());
            }
            (c["name"].as_str().expect("name").to_string(), args, cargs)
        })
        .collect()
}

fn container_args(
    c: &Value,
    pod: &Value,
    volumes: &BTreeMap<String, &Value>,
    host: &Host,
) -> Vec<String> {
    let mut args: Vec<String> = vec![];
    assert!(c["command"].is_null(), "command is not translated");
    // The pod's security context, then the container's over it.
    let sc = |key: &str| -> Value {
        let own = &c["securityContext"][key];
        if own.is_null() {
            pod["securityContext"][key].clone()
        } else {
            own.clone()
        }
    };
    if let Some(uid) = sc("runAsUser").as_u64() {
        args.push(format!("--user={uid}"));
    }
    assert_ne!(sc("privileged"), true, "privileged pods are not translated");
    if sc("allowPrivilegeEscalation") == false {
        args.push("--security-opt=no-new-privileges".into());
    }
    if sc("readOnlyRootFilesystem") == true {
        // Kubernetes mounts no tmpfs of its own on a read-only root; podman would.
        args.push("--read-only".into());
        args.push("--read-only-tmpfs=false".into());
    }
    let caps = sc("capabilities");
    for d in caps["drop"].as_array().into_iter().flatten() {
        args.push(format!("--cap-drop={}", d.as_str().expect("cap")));
    }
    for a in caps["add"].as_array().into_iter().flatten() {
        args.push(format!("--cap-add={}", a.as_str().expect("cap")));
    }
    let seccomp = sc("seccompProfile");
    match seccomp["type"].as_str() {
        Some("Localhost") => {
            let profile = host.kubelet_root.join("seccomp").join(
                seccomp["localhostProfile"]
                    .as_str()
                    .expect("localhostProfile"),
            );
            args.push(format!("--security-opt=seccomp={}", profile.display()));
        }
        Some("Unconfined") => args.push("--security-opt=seccomp=unconfined".into()),
        // podman's default profile stands in for the runtime's default.
        Some("RuntimeDefault") | None => {}
        Some(other) => panic!("seccompProfile type {other} is not translated"),
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("env name");
        let value = match e["value"].as_str() {
            Some(v) => v.to_string(),
            None => host
                .env_from
                .get(name)
                .unwrap_or_else(|| panic!("no value for env {name}"))
                .clone(),
        };
        args.push(format!("--env={name}={value}"));
    }
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().expect("mount name");
        let v = volumes
            .get(name)
            .unwrap_or_else(|| panic!("volume {name} missing"));
        let path = v["hostPath"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("volume {name}: only hostPath volumes are translated"));
        let on_host = host.path(path);
        if v["hostPath"]["type"] == "DirectoryOrCreate" {
            fs::create_dir_all(&on_host).expect("hostPath DirectoryOrCreate");
        }
        let ro = if m["readOnly"] == true { ":ro" } else { "" };
        args.push(format!(
            "--volume={}:{}{ro}",
            on_host.display(),
            m["mountPath"].as_str().expect("mountPath")
        ));
    }
    if let Some(mem) = c["resources"]["limits"]["memory"].as_str() {
        args.push(format!("--memory={}", memory_quantity(mem)));
    }
    args
}

/// A Kubernetes memory quantity (`384Mi`, `1Gi`, bytes) as podman's `--memory` takes it.
fn memory_quantity(q: &str) -> String {
    let (n, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
    let n: u64 = n.parse().expect("memory quantity");
    let bytes = match unit {
        "" => n,
        "Ki" => n << 10,
        "Mi" => n << 20,
        "Gi" => n << 30,
        other => panic!("memory unit {other} is not translated"),
    };
    format!("{bytes}b")
}
