//! From runtime back to configuration: commands that read what sockscope recorded in
//! Prometheus over a long window and turn it into network policies (`sockscope policy`), audit
//! existing policies against it (`--audit`), or list external destinations
//! (`sockscope egress`). They run after every stage of the agent's data path, on its output:
//! observed rows (observed.rs) -> needs (needs.rs) -> policies (policy.rs, yaml.rs) or an
//! audit (audit.rs); egress.rs reads its own rows.

pub mod audit;
pub mod cluster;
pub mod egress;
pub mod needs;
pub mod observed;
pub mod policy;
pub mod prometheus;
pub mod yaml;

use std::{path::PathBuf, process::ExitCode, time::SystemTime};

use crate::config::tools::{Command, PolicyArgs, Source, TableFormat};

/// Errors of the commands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Prometheus refused a query or could not be reached.
    #[error("prometheus {url}: {message}")]
    Prometheus {
        /// The endpoint.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The Kubernetes API could not be read.
    #[error("kubernetes API, listing {what}: {message}")]
    Kubernetes {
        /// The resource.
        what: &'static str,
        /// What went wrong.
        message: String,
    },
    /// No usable kubeconfig or in-cluster configuration.
    #[error("kubernetes API: {0}")]
    KubeConfig(#[source] crate::kubernetes::Error),
    /// No kubeconfig, and not in a pod.
    #[error("kubernetes API: {0} (give --kubeconfig)")]
    Infer(String),
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A policy file that is not a NetworkPolicy or does not parse.
    #[error("{} (document {document}): {message}", path.display())]
    Policy {
        /// The file.
        path: PathBuf,
        /// 1-based document in it.
        document: usize,
        /// What is wrong.
        message: String,
    },
    /// Nothing was observed for the selection: printing an empty result would look like a
    /// workload that talks to nobody.
    #[error(
        "no traffic recorded in the window for {0} (check --prometheus, --window, --matchers and the selection)"
    )]
    Nothing(String),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Runs a command; its output goes to stdout.
pub async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Policy(args) => policy(args).await,
        Command::Egress(args) => {
            let prom = prometheus::Prometheus::new(&args.source.prometheus, args.source.timeout)?;
            let at = at(&args.source);
            let rows = egress::read(&prom, &args.source, at).await?;
            if rows.is_empty() {
                return Err(Error::Nothing(selection(&args.source)));
            }
            print(&egress::render(&rows, args.format));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn at(source: &Source) -> f64 {
    source.at.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    })
}

fn selection(source: &Source) -> String {
    let mut parts = Vec::new();
    if !source.namespaces.is_empty() {
        parts.push(format!("namespaces {}", source.namespaces.join(",")));
    }
    if !source.workloads.is_empty() {
        parts.push(format!("workloads {}", source.workloads.join(",")));
    }
    if parts.is_empty() {
        "any workload".into()
    } else {
        parts.join(", ")
    }
}

fn print(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) ends the output, not the program with a panic.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

async fn policy(args: PolicyArgs) -> Result<ExitCode> {
    let source = &args.source;
    let prom = prometheus::Prometheus::new(&source.prometheus, source.timeout)?;
    let at = at(source);
    let observed = observed::Observed::read(&prom, source, at).await?;
    let client = kube_client(&args).await?;
    let cluster = cluster::ClusterInfo::read(&client).await?;
    let needs = needs::derive(&observed, &cluster);
    let selected = |w: &observed::Workload| observed::selected(source, w);
    if !needs.keys().any(|n| selected(&n.subject)) {
        return Err(Error::Nothing(selection(source)));
    }
    let start = at - source.window.as_secs_f64();
    let fmt_t = |t: f64| {
        humantime::format_rfc3339_seconds(
            SystemTime::UNIX_EPOCH
                + std::time::Duration::try_from_secs_f64(t.max(0.0)).unwrap_or_default(),
        )
        .to_string()
    };
    if !args.audit.is_empty() {
        let policies = audit::read(&args.audit)?;
        let report = audit::audit(&needs, &cluster, &policies, &selected);
        match args.output {
            TableFormat::Table => print(&audit::table(&report)),
            TableFormat::Json => {
                let mut s = serde_json::to_string_pretty(&report).unwrap_or_default();
                s.push('\n');
                print(&s);
            }
        }
        return Ok(if report.denies() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }
    let (docs, skipped) =
        policy::policies(&needs, &observed.owners(), &cluster, args.format, &selected);
    let flows = observed.flows.keys().filter(|f| selected(&f.local)).count();
    let mut out = format!(
        "# Generated by sockscope policy from traffic observed {} .. {} ({}), {} rows of the selected workloads ({}).\n# Review before applying: traffic that did not happen in the window is denied.\n",
        fmt_t(start),
        fmt_t(at),
        humantime::format_duration(source.window),
        flows,
        selection(source),
    );
    for (why, rows) in &observed.skipped {
        out.push_str(&format!("# Left out: {why}: {} rows\n", rows.len()));
    }
    for s in &skipped {
        out.push_str(&format!("# No policy for {s}\n"));
    }
    for d in docs {
        out.push_str("---\n");
        out.push_str(&yaml::to_yaml(&d));
    }
    print(&out);
    Ok(ExitCode::SUCCESS)
}

async fn kube_client(args: &PolicyArgs) -> Result<kube::Client> {
    if let Some(path) = &args.kubeconfig {
        let source = crate::kubernetes::source(Some(path)).map_err(Error::KubeConfig)?;
        return crate::kubernetes::client(source, args.source.timeout)
            .await
            .map_err(Error::KubeConfig);
    }
    // As kubectl finds it: $KUBECONFIG (several files merged), ~/.kube/config, then the
    // pod's service account.
    let mut config = kube::Config::infer()
        .await
        .map_err(|e| Error::Infer(crate::report::one_line(&e.to_string())))?;
    config.connect_timeout = Some(args.source.timeout);
    kube::Client::try_from(config)
        .map_err(|e| Error::Infer(crate::report::one_line(&e.to_string())))
}

/// Aligned columns: a header line and a line per row.
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}
