//! The Kubernetes manifests: `kubectl kustomize` renders the base, the result passes offline
//! schema validation (kubernetes-validate, strict) for the oldest and newest Kubernetes it
//! targets, and the objects agree with each other and with what the agent needs.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::Value;
use sockscope_tests::venv;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn render() -> String {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join("deploy/kubernetes"))
        .output()
        .expect("kubectl (installed by scripts/setup.sh)");
    assert!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// kubernetes-validate's verdict on `yaml` for Kubernetes `version`: (exit ok, output).
fn validate(yaml: &str, version: &str) -> (bool, String) {
    // Unique per call: tests of this binary validate in parallel.
    let dir = std::env::temp_dir().join(format!(
        "sockscope-deploy-{}-{}-{version}",
        std::process::id(),
        sockscope_tests::unique()
    ));
    std::fs::create_dir_all(&dir).expect("tmp");
    let file = dir.join("rendered.yaml");
    std::fs::write(&file, yaml).expect("write");
    let out = Command::new(venv().join("bin/kubernetes-validate"))
        .args(["--strict", "-k", version])
        .arg(&file)
        .output()
        .expect("kubernetes-validate (installed by scripts/setup.sh)");
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The rendered documents as JSON, through PyYAML from the same virtualenv.
fn documents(yaml: &str) -> Vec<Value> {
    let mut child = Command::new(venv().join("bin/python"))
        .args([
            "-c",
            "import sys, yaml, json; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python output");
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("json")
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

#[test]
fn kustomize_base_renders_and_validates() {
    let yaml = render();
    for version in ["1.29.0", "1.37.0"] {
        let (ok, text) = validate(&yaml, version);
        assert!(ok, "validation against {version} failed:\n{text}");
        for line in text.lines() {
            // The one kind without a bundled schema is the Prometheus Operator's CRD; its
            // shape is checked below.
            assert!(
                line.starts_with("INFO")
                    || line.contains("kind ServiceMonitor")
                    || line.contains("kind PrometheusRule"),
                "unexpected validator output for {version}: {line}"
            );
        }
        assert_eq!(text.matches(" passed for resource ").count(), 6, "{text}");
    }
    // The validator does reject a manifest that is valid YAML but not a valid DaemonSet.
    let broken = yaml.replace("privileged: false", "privileged: \"no\"");
    assert_ne!(broken, yaml);
    let (ok, text) = validate(&broken, "1.37.0");
    assert!(
        !ok && text.contains("privileged"),
        "a broken manifest passed: {text}"
    );
}

/// The PrometheusRule carries exactly alerts/sockscope.rules.yml.
#[test]
fn prometheus_rule_matches_the_rules_file() {
    let tmp = std::env::temp_dir().join(format!(
        "sockscope-prometheusrule-{}.yaml",
        std::process::id()
    ));
    let st = Command::new("python3")
        .arg(repo().join("alerts/prometheusrule.py"))
        .arg(&tmp)
        .status()
        .expect("python3");
    assert!(st.success());
    let fresh = std::fs::read_to_string(&tmp).expect("generated");
    let committed = std::fs::read_to_string(repo().join("deploy/kubernetes/prometheusrule.yaml"))
        .expect("committed");
    assert_eq!(fresh, committed, "run python3 alerts/prometheusrule.py");
    let _ = std::fs::remove_file(tmp);
    let docs = documents(&render());
    let rule = find(&docs, "PrometheusRule");
    let rules_file = documents(
        &std::fs::read_to_string(repo().join("alerts/sockscope.rules.yml")).expect("rules"),
    );
    // kustomize re-folds multi-line strings (blank lines inside folded PromQL): compare with
    // whitespace collapsed, which PromQL and runbooks do not care about.
    fn squash(v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(s.split_whitespace().collect::<Vec<_>>().join(" ")),
            Value::Array(a) => Value::Array(a.iter().map(squash).collect()),
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), squash(v))).collect())
            }
            other => other.clone(),
        }
    }
    assert_eq!(
        squash(&rule["spec"]["groups"]),
        squash(&rules_file[0]["groups"])
    );
    assert_eq!(rule["metadata"]["namespace"], "sockscope");
}

#[test]
fn manifests_agree_with_each_other_and_the_agent() {
    let docs = documents(&render());
    let ds = find(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        sc["capabilities"]["add"],
        serde_json::json!(["BPF", "PERFMON", "NET_ADMIN"])
    );
    for host in ["hostNetwork", "hostIPC"] {
        assert!(pod[host].is_null() || pod[host] == false, "{host} set");
    }
    // The TCP iterator walks the sockets of the processes the agent sees.
    assert_eq!(pod["hostPID"], true, "hostPID");
    // NODE_NAME from the downward API, Kubernetes on, the host cgroup root as --cgroup-root.
    let env = c["env"].as_array().expect("env");
    let node = env
        .iter()
        .find(|e| e["name"] == "SOCKSCOPE_NODE_NAME")
        .expect("node name env");
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    assert!(
        env.iter()
            .any(|e| e["name"] == "SOCKSCOPE_KUBERNETES" && e["value"] == "on")
    );
    let cgroup_mount = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == "cgroup")
        .expect("cgroup mount");
    let arg = format!(
        "--cgroup-root={}",
        cgroup_mount["mountPath"].as_str().expect("path")
    );
    assert!(
        c["args"]
            .as_array()
            .expect("args")
            .iter()
            .any(|a| a == arg.as_str())
    );
    assert!(c["resources"]["limits"]["memory"].is_string());
    assert!(c["resources"]["requests"]["cpu"].is_string());

    // Read-only RBAC on exactly what the agent watches.
    let role = find(&docs, "ClusterRole");
    for rule in role["rules"].as_array().expect("rules") {
        assert_eq!(rule["verbs"], serde_json::json!(["get", "list", "watch"]));
    }
    let resources: Vec<&str> = role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .flat_map(|r| r["resources"].as_array().expect("resources"))
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        resources,
        ["pods", "services", "nodes", "replicasets", "jobs"]
    );
    let binding = find(&docs, "ClusterRoleBinding");
    let sa = find(&docs, "ServiceAccount");
    assert_eq!(binding["subjects"][0]["name"], sa["metadata"]["name"]);
    assert_eq!(
        binding["subjects"][0]["namespace"],
        sa["metadata"]["namespace"]
    );
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);

    // The headless Service selects the agents and names the metrics port the ServiceMonitor
    // scrapes.
    let svc = find(&docs, "Service");
    assert_eq!(svc["spec"]["clusterIP"], "None");
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&labels[k], v);
    }
    let sm = find(&docs, "ServiceMonitor");
    for (k, v) in sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(&svc["metadata"]["labels"][k], v);
    }
    let port = sm["spec"]["endpoints"][0]["port"].as_str().expect("port");
    assert!(
        svc["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["name"] == port)
    );
    assert!(
        c["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["name"] == port && p["containerPort"] == 9642)
    );
    // Every namespaced object lands in the agent's namespace.
    for d in &docs {
        if !matches!(
            d["kind"].as_str(),
            Some("Namespace" | "ClusterRole" | "ClusterRoleBinding")
        ) {
            assert_eq!(d["metadata"]["namespace"], "sockscope", "{}", d["kind"]);
        }
    }
}

/// Renders `deploy/examples/web-config` (the base with the web-config component).
fn render_web_config() -> String {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join("deploy/examples/web-config"))
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The agent container's probes as (name, scheme, path), checked to target its metrics port.
fn probes(docs: &[Value]) -> Vec<(String, String, String)> {
    let c = &find(docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0];
    let port = &c["ports"][0];
    ["livenessProbe", "readinessProbe"]
        .iter()
        .map(|p| {
            let get = &c[*p]["httpGet"];
            assert!(
                get["port"] == port["name"] || get["port"] == port["containerPort"],
                "{p}: {get}"
            );
            (
                p.to_string(),
                get["scheme"].as_str().unwrap_or("HTTP").to_string(),
                get["path"].as_str().expect("path").to_string(),
            )
        })
        .collect()
}

/// What the kubelet gets for a probe: an HTTP(S) GET without credentials, the certificate not
/// verified (kubelet probes skip verification).
fn kubelet_probe(scheme: &str, port: u16, path: &str) -> String {
    let url = format!("{}://127.0.0.1:{port}{path}", scheme.to_lowercase());
    sockscope_tests::curl_status(&["-k"], &url)
}

const PEER: &str = env!("CARGO_BIN_EXE_sockscope-peer");

/// The DaemonSet's probes pass against an agent run the way the manifests configure it: the
/// base (HTTP) with basic auth on, and the web-config example (HTTPS) with TLS and basic auth.
/// A probe that failed would restart-loop the agent on every node.
#[test]
fn probes_work_with_a_web_config() {
    let web = render_web_config();
    let (ok, report) = validate(&web, "1.37.0");
    assert!(ok, "{report}");
    let docs = documents(&web);
    let env = &find(&docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .expect("env")
            .iter()
            .any(|e| e["name"] == "SOCKSCOPE_WEB_CONFIG_FILE"),
        "{env}"
    );
    let https = probes(&docs);
    assert!(
        https.iter().all(|(_, scheme, _)| scheme == "HTTPS"),
        "{https:?}"
    );
    let monitor = &find(&docs, "ServiceMonitor")["spec"]["endpoints"][0];
    assert_eq!(monitor["scheme"], "https");
    assert!(monitor["basicAuth"].is_object(), "{monitor}");
    let http = probes(&documents(&render()));
    assert!(
        http.iter().all(|(_, scheme, _)| scheme == "HTTP"),
        "{http:?}"
    );

    let pki = sockscope_tests::pki::pki("probes");
    for (probes, tls) in [(&https, true), (&http, false)] {
        let cfg = sockscope_tests::pki::web_config(&pki.0, tls, "s3cret");
        let cg = sockscope_tests::TestCgroup::new("deploy-probes");
        let agent = sockscope_tests::Agent::start(
            PEER,
            &cg.root,
            &[&format!("--web-config-file={}", cfg.display())],
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        for (name, scheme, path) in probes {
            loop {
                let code = kubelet_probe(scheme, agent.port, path);
                if code == "200" {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{name} {scheme} {path}: {code}; log:\n{}",
                    agent.log_text()
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        // /metrics itself still wants the password.
        let scheme = if tls { "HTTPS" } else { "HTTP" };
        assert_eq!(kubelet_probe(scheme, agent.port, "/metrics"), "401");
    }
}
