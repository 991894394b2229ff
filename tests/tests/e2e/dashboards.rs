//! The Grafana dashboards: generated from dashboards/generate.py and in sync with it; every
//! panel has a title, a unit and the datasource variable; and every panel query and variable
//! query is valid PromQL to a real Prometheus (Debian's), with Grafana's variables filled in.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use sockscope_tests::{free_port, http_get, urlencode};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(repo().join("dashboards"))
        .expect("dashboards/")
        .flatten()
    {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "json") {
            let v: Value =
                serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("JSON");
            out.push((
                p.file_name().expect("name").to_string_lossy().into_owned(),
                v,
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Grafana's variables replaced the way Grafana does for "All" and defaults.
pub fn fill(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$cluster", ".*")
        .replace("$namespace", ".*")
        .replace("$workload", ".*")
        .replace("$own_hosts", "(.+\\\\.)?example\\\\.com")
        .replace("$endpoint", "old-discovery\\\\..*")
}

#[test]
fn dashboards_are_generated_and_linted() {
    let tmp = std::env::temp_dir().join(format!("sockscope-dashboards-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let st = Command::new("python3")
        .arg(repo().join("dashboards/generate.py"))
        .arg(&tmp)
        .status()
        .expect("python3");
    assert!(st.success());
    let all = dashboards();
    assert_eq!(
        all.len(),
        5,
        "overview, dependencies, dns, use-cases, health"
    );
    for (name, d) in &all {
        let fresh = std::fs::read_to_string(tmp.join(name)).expect("generated");
        let committed =
            std::fs::read_to_string(repo().join("dashboards").join(name)).expect("committed");
        assert_eq!(
            fresh, committed,
            "{name} is not what generate.py writes: run python3 dashboards/generate.py"
        );
        let vars = d["templating"]["list"].as_array().expect("variables");
        assert!(
            vars.iter()
                .any(|v| v["type"] == "datasource" && v["name"] == "datasource"),
            "{name}"
        );
        for want in ["cluster", "namespace", "workload"] {
            assert!(
                vars.iter().any(|v| v["name"] == want),
                "{name}: no {want} variable"
            );
        }
        let mut ids = std::collections::HashSet::new();
        for p in d["panels"].as_array().expect("panels") {
            let title = p["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{name}: a panel without a title");
            assert!(
                ids.insert(p["id"].as_i64().expect("id")),
                "{name}: duplicate id"
            );
            assert!(
                p["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .is_some_and(|u| !u.is_empty()),
                "{name}/{title}: no unit"
            );
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{name}/{title}");
            assert!(
                !p["description"].as_str().unwrap_or_default().is_empty(),
                "{name}/{title}: no description"
            );
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{name}/{title}: no query");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{name}/{title}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

struct Prometheus(Child, PathBuf);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

#[test]
fn every_query_is_valid_promql() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("sockscope-promql-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("prometheus.yml"), "global: {}\n").expect("config");
    let _prom = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}/prometheus.yml", dir.display()))
            .arg(format!("--storage.tsdb.path={}/data", dir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus"),
        dir.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(http_get(port, "/-/ready", None), Ok((200, _))) {
        assert!(Instant::now() < deadline, "Prometheus not ready");
        thread::sleep(Duration::from_millis(200));
    }
    let mut checked = 0;
    for (name, d) in dashboards() {
        let mut exprs: Vec<(String, String)> = Vec::new();
        for p in d["panels"].as_array().expect("panels") {
            for t in p["targets"].as_array().expect("targets") {
                exprs.push((
                    format!("{name}/{}", p["title"]),
                    t["expr"].as_str().expect("expr").to_string(),
                ));
            }
        }
        for v in d["templating"]["list"].as_array().expect("variables") {
            if let Some(q) = v["query"]["query"].as_str() {
                // label_values(<selector>, <label>): the selector must be valid.
                let inner = q
                    .strip_prefix("label_values(")
                    .and_then(|r| r.rsplit_once(','))
                    .map(|(sel, _)| sel.to_string())
                    .unwrap_or_else(|| q.to_string());
                exprs.push((format!("{name}/${}", v["name"]), inner));
            }
        }
        for (what, expr) in exprs {
            let q = fill(&expr);
            let (code, body) = http_get(
                port,
                &format!("/api/v1/query?query={}", urlencode(&q)),
                None,
            )
            .expect("query");
            assert!(
                code == 200 && body.contains("\"status\":\"success\""),
                "{what}: {q}\n{body}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} queries");
    // The check does catch a broken query.
    let (code, body) = http_get(
        port,
        &format!(
            "/api/v1/query?query={}",
            urlencode("sum by (x (rate(y[1m]))")
        ),
        None,
    )
    .expect("query");
    assert!(code == 400 && body.contains("bad_data"), "{code} {body}");
}

/// Where scripts/setup.sh installs @grafana/schema and tsc (dashboards/typecheck/package.json):
/// $SOCKSCOPE_NODE_DIR or /var/cache/sockscope/node.
fn node_dir() -> PathBuf {
    std::env::var_os("SOCKSCOPE_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/sockscope/node"))
}

/// The module tsc checks for one dashboard: its JSON as an object literal typed as Grafana's
/// `Dashboard` (the whole classic dashboard JSON model, schemaVersion-numbered, that
/// @grafana/schema exports from its root; the `apis/dashboard.grafana.app/v2*` types are the
/// other, v2 resource format), so a missing required field, a wrong type and an unknown
/// property (excess property check on the literal) are errors.
///
/// One narrow addition: `definition` (a string) on query variables. Grafana's variable editor
/// saves it in query variables (the query as the variables list shows it), Grafana reads it
/// back when it loads a dashboard of this model into a query variable, and the same package's
/// v2 schema types it (`QueryVariableSpec.definition?: string`), but the package's v1
/// `VariableModel` lacks it. Only variables of type "query" get it, only as a string;
/// everything else is Grafana's type unchanged.
fn typed_dashboard(json: &str) -> String {
    format!(
        "import type {{ Dashboard, VariableModel, VariableType }} from '@grafana/schema';\n\
         type Variable = VariableModel &\n  \
         ({{ type: 'query'; definition?: string }} | {{ type: Exclude<VariableType, 'query'> }});\n\
         type SockscopeDashboard = Omit<Dashboard, 'templating'> & {{ templating?: {{ list?: Variable[] }} }};\n\
         const dashboard: SockscopeDashboard = {json};\n\
         export default dashboard;\n"
    )
}

/// Runs `tsc --noEmit --strict` over one module per (name, dashboard JSON) in a directory of its
/// own; Ok, or Err with tsc's output. Panics when the pinned packages are not installed.
fn type_check(tag: &str, dashboards: &[(String, String)]) -> Result<(), String> {
    let node = node_dir();
    let pins: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("dashboards/typecheck/package.json"))
            .expect("dashboards/typecheck/package.json"),
    )
    .expect("package.json");
    for (package, version) in pins["dependencies"].as_object().expect("dependencies") {
        let installed =
            std::fs::read_to_string(node.join("node_modules").join(package).join("package.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok());
        assert_eq!(
            installed.as_ref().map(|p| &p["version"]),
            Some(version),
            "{package} in {}: run scripts/setup.sh",
            node.display()
        );
    }
    let dir =
        std::env::temp_dir().join(format!("sockscope-typecheck-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::os::unix::fs::symlink(node.join("node_modules"), dir.join("node_modules"))
        .expect("node_modules");
    let mut files = Vec::new();
    for (name, json) in dashboards {
        let file = format!("{name}.ts");
        std::fs::write(dir.join(&file), typed_dashboard(json)).expect("write");
        files.push(file);
    }
    let out = Command::new(node.join("node_modules/.bin/tsc"))
        .args(["--noEmit", "--strict", "--pretty", "false"])
        .args(["--target", "es2022", "--module", "esnext"])
        .args(["--moduleResolution", "bundler"])
        .args(&files)
        .current_dir(&dir)
        .output()
        .expect("tsc (installed by scripts/setup.sh)");
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && text.trim().is_empty() {
        Ok(())
    } else {
        Err(text)
    }
}

#[test]
fn dashboards_type_check_against_grafana_schema() {
    let all: Vec<(String, String)> = dashboards()
        .into_iter()
        .map(|(name, _)| {
            let json =
                std::fs::read_to_string(repo().join("dashboards").join(&name)).expect("read");
            (name.trim_end_matches(".json").to_string(), json)
        })
        .collect();
    assert_eq!(all.len(), 5);
    if let Err(out) = type_check("all", &all) {
        panic!("the dashboards do not type-check against @grafana/schema's Dashboard:\n{out}");
    }
}

#[test]
fn type_check_rejects_what_grafana_schema_does_not_allow() {
    let (_, overview) = dashboards()
        .into_iter()
        .find(|(name, _)| name == "overview.json")
        .expect("overview.json");
    let case = |name: &str, change: &dyn Fn(&mut Value)| {
        let mut d = overview.clone();
        change(&mut d);
        (
            name.to_string(),
            serde_json::to_string_pretty(&d).expect("JSON"),
        )
    };
    let cases = [
        // The unchanged dashboard passes in the same run: the errors are the changes'.
        case("unchanged", &|_| {}),
        case("gridpos-string", &|d| {
            d["panels"][0]["gridPos"] = "0,0,12,8".into();
        }),
        case("unknown-top-level", &|d| {
            d["sockscope"] = true.into();
        }),
        case("link-without-icon", &|d| {
            d["links"][0].as_object_mut().expect("link").remove("icon");
        }),
        // The one addition to Grafana's types stays narrow: a string on query variables only.
        case("definition-on-datasource-variable", &|d| {
            d["templating"]["list"][0]["definition"] = "prometheus".into();
        }),
        case("definition-not-a-string", &|d| {
            d["templating"]["list"][1]["definition"] = 1.into();
        }),
    ];
    let out = type_check("broken", &cases).expect_err("tsc accepted every broken dashboard");
    let expected = [
        (
            "gridpos-string",
            "Type 'string' is not assignable to type 'GridPos'",
        ),
        (
            "unknown-top-level",
            "'\"sockscope\"' does not exist in type 'SockscopeDashboard'",
        ),
        ("link-without-icon", "Property 'icon' is missing in type"),
        (
            "definition-on-datasource-variable",
            "'\"definition\"' does not exist in type",
        ),
        (
            "definition-not-a-string",
            "Type 'number' is not assignable to type 'string'",
        ),
    ];
    for (name, message) in expected {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{name}.ts(")) && l.contains(message)),
            "{name}: no error containing {message:?}:\n{out}"
        );
    }
    assert!(
        !out.lines().any(|l| l.starts_with("unchanged.ts(")),
        "the unchanged dashboard failed:\n{out}"
    );
}
