//! The Kubernetes manifests: `kubectl kustomize` renders the base, the result passes offline
//! schema validation (kubernetes-validate, strict) for the oldest and newest Kubernetes it
//! targets, and the objects agree with each other and with what the agent needs.
//!
//! The Helm chart (deploy/helm/sockscope) is their source: deploy/generate.py renders the
//! base's objects from it and copies the rules and dashboards into it; the committed files
//! must equal a fresh generation. The chart itself is linted strictly by the Helm SDK
//! (helm-python-sdk in the virtualenv of scripts/setup.sh) for each Kubernetes version we
//! claim, rendered with default and non-default values (ci/*.yaml), every object validated,
//! and its DaemonSet compared with the base's.

use std::{path::PathBuf, process::Command};

use serde_json::Value;
use sockscope_tests::{
    manifests::{find, kustomize, repo, yaml_documents},
    venv,
};

/// The kustomize base, rendered.
fn render() -> String {
    kustomize("deploy/kubernetes")
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

/// kustomize re-folds multi-line strings (blank lines inside folded PromQL): compared with
/// whitespace collapsed, which PromQL and runbooks do not care about.
fn squash(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.split_whitespace().collect::<Vec<_>>().join(" ")),
        Value::Array(a) => Value::Array(a.iter().map(squash).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), squash(v))).collect()),
        other => other.clone(),
    }
}

/// The groups of alerts/sockscope.rules.yml.
fn rules_file_groups() -> Value {
    let rules_file = yaml_documents(
        &std::fs::read_to_string(repo().join("alerts/sockscope.rules.yml")).expect("rules"),
    );
    rules_file[0]["groups"].clone()
}

/// The PrometheusRule carries exactly alerts/sockscope.rules.yml (the file itself is generated
/// from the chart, which carries a copy of the rules: kustomize_base_is_generated_from_the_chart).
#[test]
fn prometheus_rule_matches_the_rules_file() {
    let docs = yaml_documents(&render());
    let rule = find(&docs, "PrometheusRule");
    check_prometheus_rule(rule);
    assert_eq!(
        squash(&rule["spec"]["groups"]),
        squash(&rules_file_groups())
    );
    assert_eq!(rule["metadata"]["namespace"], "sockscope");
}

#[test]
fn manifests_agree_with_each_other_and_the_agent() {
    let docs = yaml_documents(&render());
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
    // The agent runs under the Localhost seccomp profile that the init container, the same
    // image, writes into the kubelet's seccomp directory first (both at container level).
    assert!(pod["securityContext"]["seccompProfile"].is_null());
    let profile = &sc["seccompProfile"];
    assert_eq!(profile["type"], "Localhost");
    let init = &pod["initContainers"][0];
    assert_eq!(init["name"], "install-seccomp-profile");
    assert_eq!(init["image"], c["image"]);
    let installed = format!(
        "/host/seccomp/{}",
        profile["localhostProfile"]
            .as_str()
            .expect("localhostProfile")
    );
    assert_eq!(
        init["args"],
        serde_json::json!(["--install-seccomp-profile", installed])
    );
    assert_eq!(
        init["volumeMounts"],
        serde_json::json!([{"name": "seccomp", "mountPath": "/host/seccomp"}])
    );
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("volume {name}"))
            .clone()
    };
    assert_eq!(
        volume("seccomp")["hostPath"],
        serde_json::json!({"path": "/var/lib/kubelet/seccomp", "type": "DirectoryOrCreate"})
    );
    let isc = &init["securityContext"];
    assert_eq!(isc["runAsUser"], 0);
    assert_eq!(isc["allowPrivilegeEscalation"], false);
    assert_eq!(isc["readOnlyRootFilesystem"], true);
    assert_eq!(isc["capabilities"], serde_json::json!({"drop": ["ALL"]}));
    assert_eq!(
        isc["seccompProfile"],
        serde_json::json!({"type": "RuntimeDefault"})
    );
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
    check_service_monitor(sm);
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
    kustomize("deploy/examples/web-config")
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
    let docs = yaml_documents(&web);
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
    check_service_monitor(find(&docs, "ServiceMonitor"));
    let monitor = &find(&docs, "ServiceMonitor")["spec"]["endpoints"][0];
    assert_eq!(monitor["scheme"], "https");
    assert!(monitor["basicAuth"].is_object(), "{monitor}");
    let http = probes(&yaml_documents(&render()));
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

// ---- The Helm chart -------------------------------------------------------------------------

/// The Kubernetes versions the chart is linted and its objects validated against: the oldest
/// the chart claims (Chart.yaml's kubeVersion), one between, and the newest kubernetes-validate
/// knows.
const KUBE_VERSIONS: [&str; 3] = ["1.29.0", "1.33.0", "1.37.0"];

fn chart() -> PathBuf {
    repo().join("deploy/helm/sockscope")
}

/// A file of its own in the temp directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, content: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "sockscope-chart-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        std::fs::write(&path, content).expect("write");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// deploy/generate.py run by the virtualenv's Python, where the Helm SDK is.
fn generate(args: &[&str]) -> std::process::Output {
    Command::new(venv().join("bin/python"))
        .arg(repo().join("deploy/generate.py"))
        .args(args)
        .output()
        .expect("python (scripts/setup.sh)")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A way to install the chart: values files (relative to the chart), release and namespace.
struct Case {
    values: &'static [&'static str],
    release: &'static str,
    namespace: &'static str,
}

/// Default values as `helm install sockscope deploy/helm/sockscope -n sockscope` takes them;
/// every option on and most defaults changed (ci/all-values.yaml, another release name and
/// namespace); the posture relaxed and every optional object off (ci/minimal-values.yaml).
const DEFAULT: Case = Case {
    values: &[],
    release: "sockscope",
    namespace: "sockscope",
};
const ALL: Case = Case {
    values: &["ci/all-values.yaml"],
    release: "netmon",
    namespace: "monitoring",
};
const MINIMAL: Case = Case {
    values: &["ci/minimal-values.yaml"],
    release: "sockscope",
    namespace: "kube-system",
};

impl Case {
    fn args<'a>(&'a self, files: &'a [String]) -> Vec<&'a str> {
        let mut args = vec![];
        for f in files {
            args.extend(["-f", f.as_str()]);
        }
        args
    }

    fn files(&self) -> Vec<String> {
        self.values
            .iter()
            .map(|v| chart().join(v).to_str().expect("utf-8").to_string())
            .collect()
    }

    /// The rendered objects, as `helm template` prints them (values checked against
    /// values.schema.json first, as an install does).
    fn render(&self) -> String {
        let files = self.files();
        let mut args = vec![
            "render",
            "--name",
            self.release,
            "--namespace",
            self.namespace,
        ];
        args.extend(self.args(&files));
        let out = generate(&args);
        assert!(
            out.status.success(),
            "render {:?}: {}",
            self.values,
            text(&out)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }
}

/// Renders the chart with `values` (YAML) on top of the defaults; the failure's message, or
/// panics if it rendered.
fn render_refused(values: &str) -> String {
    let file = TempFile::new("values.yaml", values);
    let out = generate(&["render", "-f", file.0.to_str().expect("utf-8")]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "values {values} were not refused: {}",
        text(&out)
    );
    text(&out)
}

/// Validates `yaml` for every version in KUBE_VERSIONS (in parallel), expecting each object
/// to pass but the Prometheus Operator's, which have no bundled schema (their shape is
/// checked by check_service_monitor and check_prometheus_rule).
fn assert_valid(yaml: &str, what: &str) {
    let docs = yaml_documents(yaml);
    let crds = docs
        .iter()
        .filter(|d| d["apiVersion"] == "monitoring.coreos.com/v1")
        .count();
    std::thread::scope(|s| {
        let runs: Vec<_> = KUBE_VERSIONS
            .iter()
            .map(|v| (v, s.spawn(move || validate(yaml, v))))
            .collect();
        for (version, run) in runs {
            let (ok, report) = run.join().expect("validate");
            assert!(ok, "{what} against {version}:\n{report}");
            for line in report.lines() {
                assert!(
                    line.starts_with("INFO")
                        || line.contains("kind ServiceMonitor")
                        || line.contains("kind PrometheusRule"),
                    "{what} against {version}: {line}"
                );
            }
            assert_eq!(
                report.matches(" passed for resource ").count(),
                docs.len() - crds,
                "{what} against {version}:\n{report}"
            );
        }
    });
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

fn assert_keys_within(v: &Value, allowed: &[&str], what: &str) {
    for k in keys(v) {
        assert!(allowed.contains(&k), "{what}: unknown field {k} in {v}");
    }
}

/// A Prometheus Operator SecretKeySelector.
fn assert_secret_key(v: &Value, what: &str) {
    assert_keys_within(v, &["name", "key", "optional"], what);
    assert!(v["name"].is_string() && v["key"].is_string(), "{what}: {v}");
}

/// The ServiceMonitor's shape, field by field against the Prometheus Operator's v1 API (no
/// schema is bundled for it): what the chart and the base may set.
fn check_service_monitor(sm: &Value) {
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_keys_within(&sm["spec"], &["selector", "endpoints", "jobLabel"], "spec");
    assert_keys_within(&sm["spec"]["selector"], &["matchLabels"], "spec.selector");
    let duration = |v: &Value| {
        let s = v.as_str().unwrap_or_default();
        let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        !digits.is_empty()
            && digits.chars().all(|c| c.is_ascii_digit())
            && ["ms", "s", "m", "h"].contains(&&s[digits.len()..])
    };
    let endpoints = sm["spec"]["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1);
    for ep in endpoints {
        assert_keys_within(
            ep,
            &[
                "port",
                "path",
                "scheme",
                "interval",
                "scrapeTimeout",
                "tlsConfig",
                "basicAuth",
                "relabelings",
                "metricRelabelings",
            ],
            "endpoint",
        );
        assert!(ep["port"].is_string() && ep["path"] == "/metrics", "{ep}");
        assert!(
            duration(&ep["interval"]) && duration(&ep["scrapeTimeout"]),
            "{ep}"
        );
        assert!(
            ep["scheme"].is_null() || ep["scheme"] == "http" || ep["scheme"] == "https",
            "{ep}"
        );
        for list in ["relabelings", "metricRelabelings"] {
            for r in ep[list].as_array().into_iter().flatten() {
                assert_keys_within(
                    r,
                    &[
                        "sourceLabels",
                        "separator",
                        "targetLabel",
                        "regex",
                        "modulus",
                        "replacement",
                        "action",
                    ],
                    list,
                );
                if let Some(labels) = r.get("sourceLabels") {
                    assert!(
                        labels
                            .as_array()
                            .expect("sourceLabels")
                            .iter()
                            .all(Value::is_string),
                        "{r}"
                    );
                }
            }
        }
        if !ep["tlsConfig"].is_null() {
            let tls = &ep["tlsConfig"];
            assert_keys_within(
                tls,
                &[
                    "ca",
                    "cert",
                    "keySecret",
                    "serverName",
                    "insecureSkipVerify",
                ],
                "tlsConfig",
            );
            for source in ["ca", "cert"] {
                if !tls[source].is_null() {
                    assert_keys_within(&tls[source], &["secret", "configMap"], source);
                    let sel = tls[source]
                        .get("secret")
                        .or(tls[source].get("configMap"))
                        .expect("secret or configMap");
                    assert_secret_key(sel, source);
                }
            }
        }
        if !ep["basicAuth"].is_null() {
            assert_keys_within(&ep["basicAuth"], &["username", "password"], "basicAuth");
            assert_secret_key(&ep["basicAuth"]["username"], "basicAuth.username");
            assert_secret_key(&ep["basicAuth"]["password"], "basicAuth.password");
        }
    }
}

/// The PrometheusRule's shape (Prometheus Operator v1): groups of named rules, each a record
/// or an alert with its expression.
fn check_prometheus_rule(rule: &Value) {
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(keys(&rule["spec"]), ["groups"]);
    for g in rule["spec"]["groups"].as_array().expect("groups") {
        assert_keys_within(g, &["name", "interval", "rules"], "group");
        for r in g["rules"].as_array().expect("rules") {
            assert_keys_within(
                r,
                &["record", "alert", "expr", "for", "labels", "annotations"],
                "rule",
            );
            assert!(r["record"].is_string() != r["alert"].is_string(), "{r}");
            assert!(r["expr"].is_string(), "{r}");
        }
    }
}

/// The chart passes `helm lint --strict` (warnings are errors) for each Kubernetes version,
/// with default and non-default values; strictness and the schema are live: a values file
/// outside values.schema.json and a template using a removed API fail it.
#[test]
fn chart_lints_strictly_for_each_kubernetes_version() {
    let mut versions = vec![];
    for v in KUBE_VERSIONS {
        versions.extend(["--kube-version", v]);
    }
    let lint = |extra: &[&str]| {
        let mut args = vec!["lint"];
        args.extend(&versions);
        args.extend(extra);
        let out = generate(&args);
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("lint report: {e}: {}", text(&out)));
        (out.status.success(), report)
    };
    for case in [&DEFAULT, &ALL, &MINIMAL] {
        let files = case.files();
        let (ok, report) = lint(&case.args(&files));
        assert!(ok, "lint {:?}: {report:#}", case.values);
        for v in KUBE_VERSIONS {
            let r = &report[v];
            assert_eq!(r["total_charts_linted"], 1, "{r}");
            assert_eq!(r["errors"], serde_json::json!([]), "{v}: {r}");
            // Only informational findings (severity 1: "icon is recommended").
            for m in r["messages"].as_array().expect("messages") {
                assert!(m["severity"].as_u64() <= Some(1), "{v}: {m}");
            }
        }
    }

    let bad = TempFile::new(
        "bad.yaml",
        "seccompProfile: {type: Unconfined, install: maybe}\n",
    );
    let (ok, report) = lint(&["-f", bad.0.to_str().expect("utf-8")]);
    assert!(!ok, "{report:#}");
    for v in KUBE_VERSIONS {
        let errors = report[v]["errors"].to_string();
        assert!(errors.contains("/seccompProfile/install"), "{v}: {errors}");
    }

    // A copy of the chart with a template on an API removed in 1.25: a warning, which strict
    // lint turns into an error.
    let copy = std::env::temp_dir().join(format!("sockscope-chart-copy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    let st = Command::new("cp")
        .arg("-r")
        .arg(chart())
        .arg(&copy)
        .status()
        .expect("cp");
    assert!(st.success());
    std::fs::write(
        copy.join("templates/pdb.yaml"),
        "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata:\n  name: sockscope\n\
         spec:\n  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: sockscope\n",
    )
    .expect("write");
    let (ok, report) = lint(&["--chart", copy.to_str().expect("utf-8")]);
    let _ = std::fs::remove_dir_all(&copy);
    assert!(!ok, "{report:#}");
    for v in KUBE_VERSIONS {
        let errors = report[v]["errors"].to_string();
        assert!(
            errors.contains("policy/v1beta1 PodDisruptionBudget is deprecated"),
            "{v}: {errors}"
        );
    }
}

/// Every object the chart renders, with default and with non-default values, passes strict
/// validation for each Kubernetes version; the Prometheus Operator's objects have the shape
/// of its API. A broken object does fail the validation.
#[test]
fn chart_renders_and_validates() {
    let expect = [
        (
            &DEFAULT,
            vec![
                "ClusterRole",
                "ClusterRoleBinding",
                "DaemonSet",
                "Service",
                "ServiceAccount",
            ],
        ),
        (
            &ALL,
            vec![
                "ClusterRole",
                "ClusterRoleBinding",
                "ConfigMap",
                "ConfigMap",
                "ConfigMap",
                "ConfigMap",
                "ConfigMap",
                "ConfigMap",
                "ConfigMap",
                "DaemonSet",
                "NetworkPolicy",
                "PrometheusRule",
                "Secret",
                "Service",
                "ServiceAccount",
                "ServiceMonitor",
            ],
        ),
        (&MINIMAL, vec!["DaemonSet", "Service"]),
    ];
    let mut all = String::new();
    for (case, kinds) in expect {
        let yaml = case.render();
        let docs = yaml_documents(&yaml);
        let mut rendered: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        rendered.sort_unstable();
        assert_eq!(rendered, kinds, "{:?}", case.values);
        assert_valid(&yaml, &format!("{:?}", case.values));
        for d in &docs {
            if d["kind"] != "ClusterRole" && d["kind"] != "ClusterRoleBinding" {
                let ns = if d["kind"] == "ConfigMap"
                    && d["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.contains("-dashboard-"))
                {
                    "monitoring" // dashboards.namespace
                } else {
                    case.namespace
                };
                assert_eq!(d["metadata"]["namespace"], ns, "{}", d["kind"]);
            }
        }
        if case.values == ALL.values {
            check_service_monitor(find(&docs, "ServiceMonitor"));
            check_prometheus_rule(find(&docs, "PrometheusRule"));
            all = yaml;
        }
    }

    // What the validator would not see is still refused: an unknown field (strict), a wrong
    // type.
    for (from, to, field) in [
        ("  policyTypes:", "  policyType:", "policyType"),
        (
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: \"yes\"",
            "readOnlyRootFilesystem",
        ),
    ] {
        let broken = all.replacen(from, to, 1);
        assert_ne!(broken, all, "{from}");
        let (ok, report) = validate(&broken, "1.37.0");
        assert!(
            !ok && report.contains(field),
            "a broken object passed: {report}"
        );
    }
}

/// Values outside values.schema.json are refused before anything renders, with the offending
/// key named: unknown keys, wrong enums, types and patterns, and the combinations the schema
/// forbids.
#[test]
fn chart_values_outside_the_schema_are_refused() {
    for (values, names) in [
        (
            "imageTag: 1.0",
            "additional properties 'imageTag' not allowed",
        ),
        ("image: {pullPolicy: Sometimes}", "/image/pullPolicy"),
        ("image: {digest: latest}", "/image/digest"),
        ("seccompProfile: {type: Bogus}", "/seccompProfile/type"),
        (
            "seccompProfile: {localhostProfile: ''}",
            "/seccompProfile/localhostProfile",
        ),
        (
            "seccompProfile: {kubeletRoot: var/lib/kubelet}",
            "/seccompProfile/kubeletRoot",
        ),
        ("otlp: {protocol: http}", "/otlp/protocol"),
        ("otlp: {interval: 5}", "/otlp/interval"),
        ("otlp: {endpoint: collector:4318}", "/otlp/endpoint"),
        (
            "otlp: {endpoint: 'http://c:4318', tls: {existingSecret: otlp}}",
            "/otlp/endpoint",
        ),
        (
            "otlp: {endpoint: 'https://c:4318', tls: {existingSecret: otlp, clientKey: k}}",
            "/otlp/tls/clientCertificate",
        ),
        ("webConfig: {enabled: true}", "/webConfig"),
        (
            "webConfig: {enabled: true, content: {basic_auth_users: {p: x}}}",
            "/webConfig/tls",
        ),
        ("podAnnotations: {a: 1}", "/podAnnotations/a"),
        ("updateStrategy: {type: Recreate}", "/updateStrategy/type"),
        (
            "networkPolicy: {enabled: true, from: []}",
            "/networkPolicy/from",
        ),
        ("serviceMonitor: {interval: 30}", "/serviceMonitor/interval"),
        (
            "dashboards: {labels: {grafana_dashboard: 1}}",
            "/dashboards/labels/grafana_dashboard",
        ),
    ] {
        let message = render_refused(values);
        assert!(message.contains(names), "{values}: {message}");
    }
}

/// The committed generated files (the kustomize base's objects, the chart's copies of the
/// rules and dashboards) equal a fresh `python3 deploy/generate.py`, and carry its header;
/// the chart's version and appVersion are the workspace's, which the base's image tag is too.
#[test]
fn kustomize_base_is_generated_from_the_chart() {
    let out_dir = std::env::temp_dir().join(format!("sockscope-generate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let out = generate(&["--out", out_dir.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out));
    let listed = String::from_utf8(out.stdout).expect("utf-8");
    let mut stale = vec![];
    for path in listed.lines() {
        let fresh = std::fs::read(out_dir.join(path)).expect("generated");
        if std::fs::read(repo().join(path)).ok().as_ref() != Some(&fresh) {
            stale.push(path.to_string());
        }
        if path.starts_with("deploy/kubernetes/") {
            assert!(
                fresh.starts_with(
                    b"# Generated by deploy/generate.py from deploy/helm/sockscope: edit the chart\n"
                ),
                "{path}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&out_dir);
    assert!(
        stale.is_empty(),
        "{stale:?} differ from a fresh generation: run python3 deploy/generate.py"
    );
    // No copy of a dashboard that is gone.
    for entry in std::fs::read_dir(chart().join("files/dashboards")).expect("files/dashboards") {
        let name = entry.expect("entry").file_name();
        let path = format!(
            "deploy/helm/sockscope/files/dashboards/{}",
            name.to_string_lossy()
        );
        assert!(listed.lines().any(|l| l == path), "{path} has no source");
    }
    for base in [
        "serviceaccount.yaml",
        "clusterrole.yaml",
        "clusterrolebinding.yaml",
        "daemonset.yaml",
        "service.yaml",
        "servicemonitor.yaml",
        "prometheusrule.yaml",
    ] {
        let path = format!("deploy/kubernetes/{base}");
        assert!(listed.lines().any(|l| l == path), "{path} not generated");
    }

    let cargo = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    let workspace = cargo
        .split("[workspace.package]")
        .nth(1)
        .and_then(|s| s.lines().find_map(|l| l.trim().strip_prefix("version = ")))
        .map(|v| v.trim_matches('"'))
        .expect("workspace version");
    let meta =
        yaml_documents(&std::fs::read_to_string(chart().join("Chart.yaml")).expect("Chart.yaml"));
    assert_eq!(meta[0]["version"], workspace);
    assert_eq!(meta[0]["appVersion"], workspace);
    let kustomization = yaml_documents(
        &std::fs::read_to_string(repo().join("deploy/kubernetes/kustomization.yaml"))
            .expect("kustomization"),
    );
    assert_eq!(kustomization[0]["images"][0]["newTag"], workspace);
    let ds = find(&yaml_documents(&render()), "DaemonSet").clone();
    assert_eq!(
        ds["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("ghcr.io/sockscope/sockscope:{workspace}")
    );
}

/// `value` without the labels Helm adds and the selectors built from them.
fn without_labels(value: &Value) -> Value {
    let mut v = value.clone();
    for ptr in ["/metadata", "/spec/template/metadata"] {
        if let Some(Value::Object(m)) = v.pointer_mut(ptr) {
            m.remove("labels");
            m.remove("namespace");
        }
    }
    for ptr in ["/spec", "/spec/selector"] {
        if let Some(Value::Object(m)) = v.pointer_mut(ptr) {
            m.remove("selector");
            m.remove("matchLabels");
        }
    }
    v
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .expect("list")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

/// The chart with default values is the kustomize base but for Helm's labels (and the base's
/// optional Prometheus Operator objects); with non-default values its DaemonSet keeps the
/// base's security posture, probes, mounts, arguments and environment, and adds only what the
/// values ask for, consistently: the config file, web config and OTLP files are mounted where
/// the arguments and environment say, the Service, ServiceMonitor and NetworkPolicy select the
/// agents and name their port.
#[test]
fn chart_daemonset_agrees_with_the_kustomize_base() {
    let base = yaml_documents(&render());
    let base_ds = find(&base, "DaemonSet");
    let base_pod = &base_ds["spec"]["template"]["spec"];
    let base_c = &base_pod["containers"][0];

    let defaults = yaml_documents(&DEFAULT.render());
    for d in &defaults {
        let kind = d["kind"].as_str().expect("kind");
        assert_eq!(
            without_labels(d),
            without_labels(find(&base, kind)),
            "{kind}"
        );
    }
    // Only the labels differ, the selector by the release's instance label.
    assert_eq!(
        find(&defaults, "DaemonSet")["spec"]["selector"]["matchLabels"],
        serde_json::json!({
            "app.kubernetes.io/name": "sockscope",
            "app.kubernetes.io/instance": "sockscope"
        })
    );

    for case in [&ALL, &MINIMAL] {
        let docs = yaml_documents(&case.render());
        let what = format!("{:?}", case.values);
        let ds = find(&docs, "DaemonSet");
        let pod = &ds["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        // The posture: the same container security context, seccomp aside (values).
        let strip_seccomp = |sc: &Value| {
            let mut sc = sc.clone();
            sc.as_object_mut()
                .expect("securityContext")
                .remove("seccompProfile");
            sc
        };
        assert_eq!(
            strip_seccomp(&c["securityContext"]),
            strip_seccomp(&base_c["securityContext"]),
            "{what}"
        );
        assert!(
            pod["securityContext"].is_null(),
            "{what}: pod-level securityContext"
        );
        for host in ["hostNetwork", "hostIPC", "hostUsers"] {
            assert!(pod[host].is_null(), "{what}: {host}");
        }
        // Probes: the same paths and port (HTTPS with the web config's TLS).
        assert_eq!(probes(&docs).len(), 2);
        for probe in ["livenessProbe", "readinessProbe"] {
            let mut get = c[probe]["httpGet"].clone();
            if case.values == ALL.values {
                assert_eq!(get["scheme"], "HTTPS", "{what}");
                get.as_object_mut().expect("httpGet").remove("scheme");
            }
            assert_eq!(get, base_c[probe]["httpGet"], "{what} {probe}");
            assert_eq!(
                without_keys(&c[probe], &["httpGet"]),
                without_keys(&base_c[probe], &["httpGet"]),
                "{what} {probe}"
            );
        }
        assert_eq!(c["ports"], base_c["ports"], "{what}");
        // Mounts: the base's, and their host paths.
        for m in base_c["volumeMounts"].as_array().expect("mounts") {
            let name = m["name"].as_str().expect("name");
            assert_eq!(named(&c["volumeMounts"], name), m, "{what}");
            assert_eq!(
                named(&pod["volumes"], name),
                named(&base_pod["volumes"], name),
                "{what}"
            );
        }
        for m in c["volumeMounts"].as_array().expect("mounts") {
            assert_eq!(m["readOnly"], true, "{what}: {m}");
        }
        // Arguments: the base's first, then the config file and the extra ones.
        let args = c["args"].as_array().expect("args");
        let base_args = base_c["args"].as_array().expect("args");
        assert_eq!(&args[..base_args.len()], &base_args[..], "{what}");
        // Environment: the base's, the log level aside (values).
        for e in base_c["env"].as_array().expect("env") {
            let name = e["name"].as_str().expect("name");
            if name != "SOCKSCOPE_LOG" {
                assert_eq!(named(&c["env"], name), e, "{what}");
            }
        }
        let env = |name: &str| {
            named(&c["env"], name)["value"]
                .as_str()
                .expect("value")
                .to_string()
        };
        let mounted = |path: &str| {
            c["volumeMounts"]
                .as_array()
                .expect("mounts")
                .iter()
                .any(|m| path.starts_with(m["mountPath"].as_str().expect("mountPath")))
        };
        // Selection: the Service, and the ServiceMonitor and NetworkPolicy when rendered,
        // select the agents and name their port.
        let labels = &ds["spec"]["template"]["metadata"]["labels"];
        assert_eq!(
            &ds["spec"]["selector"]["matchLabels"],
            &select(labels, &ds["spec"]["selector"]["matchLabels"])
        );
        let svc = find(&docs, "Service");
        assert_eq!(
            svc["spec"]["selector"],
            select(labels, &svc["spec"]["selector"]),
            "{what}"
        );
        if case.values == MINIMAL.values {
            assert!(pod["initContainers"].is_null(), "{what}");
            assert!(pod["hostPID"].is_null(), "{what}");
            assert_eq!(
                c["securityContext"]["seccompProfile"],
                serde_json::json!({"type": "RuntimeDefault"})
            );
            assert!(
                c["resources"].is_null() && pod["tolerations"].is_null(),
                "{what}"
            );
            assert_eq!(pod["serviceAccountName"], "monitoring");
            continue;
        }
        assert_eq!(pod["hostPID"], true, "{what}");
        // The installer writes where the agent's Localhost profile is read from.
        let profile = &c["securityContext"]["seccompProfile"];
        assert_eq!(profile["type"], "Localhost");
        let init = &pod["initContainers"][0];
        assert_eq!(
            init["securityContext"],
            base_pod["initContainers"][0]["securityContext"]
        );
        assert_eq!(init["image"], c["image"]);
        assert_eq!(
            init["args"][1],
            format!(
                "/host/seccomp/{}",
                profile["localhostProfile"].as_str().expect("profile")
            )
        );
        assert_eq!(
            named(&pod["volumes"], "seccomp")["hostPath"]["path"],
            "/var/lib/k0s/kubelet/seccomp"
        );
        // The config file: rendered, mounted and passed.
        assert!(
            args.iter()
                .any(|a| a == "--config=/etc/sockscope/config.yaml"),
            "{what}"
        );
        assert!(mounted("/etc/sockscope/config.yaml"));
        let config = docs
            .iter()
            .find(|d| d["metadata"]["name"] == format!("{}-sockscope-config", case.release))
            .expect("config ConfigMap");
        assert_eq!(
            named(&pod["volumes"], "config")["configMap"]["name"],
            config["metadata"]["name"]
        );
        assert!(
            config["data"]["config.yaml"]
                .as_str()
                .expect("config.yaml")
                .contains("remote_ip: true")
        );
        // The web config: the created Secret, mounted, named by the environment.
        let web = env("SOCKSCOPE_WEB_CONFIG_FILE");
        assert!(mounted(&web), "{web}");
        let secret = find(&docs, "Secret");
        assert_eq!(
            named(&pod["volumes"], "web-config")["secret"]["secretName"],
            secret["metadata"]["name"]
        );
        let file = web.rsplit('/').next().expect("file");
        for key in [file, "tls.crt", "tls.key"] {
            assert!(
                secret["data"][key].is_string(),
                "{key} in the web config Secret"
            );
        }
        // OTLP: every file the environment names is in the mounted Secret.
        for name in [
            "SOCKSCOPE_OTLP_CERTIFICATE",
            "SOCKSCOPE_OTLP_CLIENT_CERTIFICATE",
            "SOCKSCOPE_OTLP_CLIENT_KEY",
        ] {
            assert!(mounted(&env(name)), "{name}");
        }
        assert_eq!(
            named(&pod["volumes"], "otlp-tls")["secret"]["secretName"],
            "otlp-client-tls"
        );
        assert_eq!(
            env("OTEL_EXPORTER_OTLP_HEADERS"),
            "x-tenant=network%2Cops 100%25"
        );
        // Scheduling as the values say.
        assert_eq!(pod["priorityClassName"], "network-critical");
        assert_eq!(
            pod["nodeSelector"],
            serde_json::json!({"kubernetes.io/os": "linux"})
        );
        assert_eq!(pod["tolerations"][0]["key"], "dedicated");
        assert_eq!(
            ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
            2
        );
        assert_eq!(labels["team"], "network");
        let sa = find(&docs, "ServiceAccount");
        assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
        let binding = find(&docs, "ClusterRoleBinding");
        assert_eq!(binding["subjects"][0]["name"], sa["metadata"]["name"]);
        assert_eq!(binding["subjects"][0]["namespace"], case.namespace);
        assert_eq!(
            binding["roleRef"]["name"],
            find(&docs, "ClusterRole")["metadata"]["name"]
        );
        // Scrapes: over HTTPS with basic auth, of the Service's port; only the scrapers in.
        let sm = find(&docs, "ServiceMonitor");
        assert_eq!(
            sm["spec"]["selector"]["matchLabels"],
            select(
                &svc["metadata"]["labels"],
                &sm["spec"]["selector"]["matchLabels"]
            )
        );
        let ep = &sm["spec"]["endpoints"][0];
        assert_eq!(ep["scheme"], "https");
        named(&svc["spec"]["ports"], ep["port"].as_str().expect("port"));
        assert_eq!(sm["metadata"]["labels"]["release"], "kube-prometheus-stack");
        let np = find(&docs, "NetworkPolicy");
        assert_eq!(
            np["spec"]["podSelector"]["matchLabels"],
            select(labels, &np["spec"]["podSelector"]["matchLabels"])
        );
        assert_eq!(
            np["spec"]["ingress"][0]["ports"][0]["port"],
            c["ports"][0]["containerPort"]
        );
        assert_eq!(
            np["spec"]["ingress"][0]["from"]
                .as_array()
                .expect("from")
                .len(),
            2
        );
    }
}

/// `value` without `keys`.
fn without_keys(value: &Value, keys: &[&str]) -> Value {
    let mut v = value.clone();
    if let Value::Object(m) = &mut v {
        for k in keys {
            m.remove(*k);
        }
    }
    v
}

/// The entries of `labels` that `selector` names: equal to `selector` when it selects them.
fn select(labels: &Value, selector: &Value) -> Value {
    Value::Object(
        selector
            .as_object()
            .expect("selector")
            .keys()
            .filter_map(|k| labels.get(k).map(|v| (k.clone(), v.clone())))
            .collect(),
    )
}

/// The chart's dashboards are dashboards/*.json, one ConfigMap each for Grafana's sidecar
/// (its label and folder annotation); its PrometheusRule is alerts/sockscope.rules.yml.
#[test]
fn chart_dashboards_and_rules_are_the_repositorys() {
    let docs = yaml_documents(&ALL.render());
    let mut names = vec![];
    for cm in docs.iter().filter(|d| {
        d["kind"] == "ConfigMap"
            && d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.contains("-dashboard-"))
    }) {
        assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
        assert_eq!(cm["metadata"]["labels"]["team"], "network");
        assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "Network");
        let data = cm["data"].as_object().expect("data");
        assert_eq!(data.len(), 1);
        let (key, json) = data.iter().next().expect("one dashboard");
        let source =
            std::fs::read_to_string(repo().join("dashboards").join(key)).expect("dashboard source");
        let parse = |s: &str| serde_json::from_str::<Value>(s).expect("dashboard JSON");
        assert_eq!(parse(json.as_str().expect("json")), parse(&source), "{key}");
        names.push(key.clone());
    }
    let mut sources: Vec<String> = std::fs::read_dir(repo().join("dashboards"))
        .expect("dashboards")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    sources.sort();
    names.sort();
    assert_eq!(names, sources);
    let rule = find(&docs, "PrometheusRule");
    assert_eq!(
        squash(&rule["spec"]["groups"]),
        squash(&rules_file_groups())
    );
}

/// The DaemonSet's settings are the agent's: every SOCKSCOPE_* variable it sets is one the
/// agent reads (`--help` lists them), and `sockscope --check-config` accepts the chart's
/// config file, arguments and environment (non-default values), the files mapped to where
/// the test has them. A file the environment names but the Secret lacks is refused.
#[test]
fn chart_settings_are_accepted_by_the_agent() {
    let bin = sockscope_tests::sockscope_bin(PEER);
    let help = Command::new(&bin)
        .arg("--help")
        .output()
        .expect("sockscope --help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let docs = yaml_documents(&ALL.render());
    let c = &find(&docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0];
    let pki = sockscope_tests::pki::pki("chart");
    let config = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["data"]["config.yaml"].is_string())
        .expect("config ConfigMap");
    let config_file = pki.0.join("config.yaml");
    std::fs::write(
        &config_file,
        config["data"]["config.yaml"].as_str().expect("config"),
    )
    .expect("write");
    // /etc/sockscope/otlp/<key> -> the test's PKI (its tls.crt and tls.key are a pair).
    let local = |v: &str| {
        v.replace("/etc/sockscope/otlp", pki.0.to_str().expect("utf-8"))
            .replace("/etc/sockscope/web", pki.0.to_str().expect("utf-8"))
    };
    let mut env: Vec<(String, String)> = vec![];
    for e in c["env"].as_array().expect("env") {
        let name = e["name"].as_str().expect("name");
        if name.starts_with("SOCKSCOPE_") {
            assert!(
                help.contains(&format!("[env: {name}=")),
                "the agent does not read {name}"
            );
        }
        let value = match (&e["value"], &e["valueFrom"]) {
            (Value::String(v), _) => local(v),
            (_, from) if from["fieldRef"]["fieldPath"] == "spec.nodeName" => "node-1".into(),
            (_, from) if from["secretKeyRef"].is_object() => "authorization=Bearer%20t0k3n".into(),
            other => panic!("{name}: {other:?}"),
        };
        env.push((name.to_string(), value));
    }
    // The watchlists ConfigMap's files where the arguments name them: the agent reads them.
    let watchlists = docs
        .iter()
        .find(|d| {
            d["kind"] == "ConfigMap"
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-watchlists"))
        })
        .expect("watchlists ConfigMap");
    let lists = pki.0.join("watchlists");
    std::fs::create_dir_all(&lists).expect("dir");
    for (file, content) in watchlists["data"].as_object().expect("data") {
        std::fs::write(lists.join(file), content.as_str().expect("text")).expect("write");
    }
    let args: Vec<String> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("arg").to_string())
        .filter(|a| !a.starts_with("--config="))
        .map(|a| a.replace("/etc/sockscope/watchlists", lists.to_str().expect("utf-8")))
        .collect();
    assert!(
        args.iter()
            .any(|a| a.starts_with("--dns-watchlist=threats=")),
        "{args:?}"
    );
    let check = |env: &[(String, String)]| {
        Command::new(&bin)
            .env_clear()
            .envs(env.iter().cloned())
            .arg("--check-config")
            .arg(&config_file)
            .args(&args)
            .output()
            .expect("sockscope --check-config")
    };
    let out = check(&env);
    assert!(out.status.success(), "{}", text(&out));
    let missing: Vec<_> = env
        .iter()
        .map(|(k, v)| (k.clone(), v.replace("ca.crt", "missing-ca.crt")))
        .collect();
    let out = check(&missing);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("missing-ca.crt"), "{}", text(&out));
}

/// The init container's command, run as the DaemonSet runs it (uid 0 without any capability,
/// no new privileges), writes into the kubelet's seccomp directory (the hostPath it mounts,
/// which DirectoryOrCreate makes) exactly deploy/seccomp/sockscope.json, at the path the
/// agent container's Localhost profile names.
#[test]
fn seccomp_profile_installer_runs_without_capabilities() {
    let bin = sockscope_tests::sockscope_bin(PEER);
    for case in [&DEFAULT, &ALL] {
        let docs = yaml_documents(&case.render());
        let pod = &find(&docs, "DaemonSet")["spec"]["template"]["spec"];
        let init = &pod["initContainers"][0];
        assert_eq!(
            init["securityContext"]["capabilities"]["drop"],
            serde_json::json!(["ALL"])
        );
        assert!(init["securityContext"]["capabilities"]["add"].is_null());
        let mount = named(&init["volumeMounts"], "seccomp")["mountPath"]
            .as_str()
            .expect("mountPath")
            .to_string();
        let kubelet_seccomp = std::env::temp_dir().join(format!(
            "sockscope-kubelet-seccomp-{}-{}",
            std::process::id(),
            case.release
        ));
        let _ = std::fs::remove_dir_all(&kubelet_seccomp);
        std::fs::create_dir_all(&kubelet_seccomp).expect("hostPath");
        let args: Vec<String> = init["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| {
                a.as_str()
                    .expect("arg")
                    .replace(&mount, kubelet_seccomp.to_str().expect("utf-8"))
            })
            .collect();
        let out = Command::new("setpriv")
            .args([
                "--bounding-set=-all",
                "--inh-caps=-all",
                "--ambient-caps=-all",
                "--no-new-privs",
                "--",
            ])
            .arg(&bin)
            .args(&args)
            .output()
            .expect("setpriv");
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        let profile = pod["containers"][0]["securityContext"]["seccompProfile"]["localhostProfile"]
            .as_str()
            .expect("localhostProfile");
        let written = std::fs::read(kubelet_seccomp.join(profile));
        let _ = std::fs::remove_dir_all(&kubelet_seccomp);
        assert_eq!(
            written.expect("the profile where the agent's container reads it"),
            std::fs::read(repo().join("deploy/seccomp/sockscope.json")).expect("profile")
        );
    }
}
