//! Options of the commands that read what sockscope recorded (`sockscope policy`,
//! `sockscope egress`): they query Prometheus (and the Kubernetes API), load nothing into the
//! kernel and need no privileges.

use std::{path::PathBuf, time::Duration};

/// A command instead of the agent.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Print a network policy per workload that allows the traffic sockscope observed over a
    /// window, or (--audit) list observed traffic that existing policies would deny.
    Policy(PolicyArgs),
    /// List each workload's external destinations over a window: bytes, connections, first
    /// and last seen.
    Egress(EgressArgs),
}

/// Where the observations come from, and which of them.
#[derive(Debug, Clone, clap::Args)]
pub struct Source {
    /// Base URL of the Prometheus (or a compatible API) that scrapes sockscope.
    #[arg(long, env = "SOCKSCOPE_PROMETHEUS_URL", value_name = "URL")]
    pub prometheus: String,

    /// How far back to look (e.g. 7d, 24h).
    #[arg(long, env = "SOCKSCOPE_WINDOW", default_value = "7d", value_parser = parse_window)]
    pub window: Duration,

    /// End of the window: RFC 3339 (2026-12-01T00:00:00Z) or Unix seconds; default now.
    #[arg(long, env = "SOCKSCOPE_AT", value_parser = parse_at)]
    pub at: Option<f64>,

    /// Only these namespaces (repeat or comma-separate; default all).
    #[arg(
        long = "namespace",
        short = 'n',
        env = "SOCKSCOPE_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,

    /// Only these workloads: NAME or NAMESPACE/NAME (repeat or comma-separate; default all).
    #[arg(
        long = "workload",
        short = 'w',
        env = "SOCKSCOPE_WORKLOADS",
        value_delimiter = ','
    )]
    pub workloads: Vec<String>,

    /// Extra PromQL label matchers for every query, e.g. `cluster="prod"` when one Prometheus
    /// holds several clusters.
    #[arg(long, env = "SOCKSCOPE_MATCHERS", default_value = "")]
    pub matchers: String,

    /// Longest wait for each Prometheus (and Kubernetes API) request.
    #[arg(long = "request-timeout", env = "SOCKSCOPE_REQUEST_TIMEOUT", default_value = "60s",
          value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// `sockscope policy`.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    #[command(flatten)]
    pub source: Source,

    /// Policy flavour to print.
    #[arg(
        long,
        env = "SOCKSCOPE_POLICY_FORMAT",
        value_enum,
        default_value = "kubernetes"
    )]
    pub format: PolicyFormat,

    /// kubeconfig for the Kubernetes API the selectors are read from (default: $KUBECONFIG,
    /// ~/.kube/config, or the pod's service account).
    #[arg(long, env = "SOCKSCOPE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Existing NetworkPolicy files (YAML, several documents or a List each) to check against
    /// the observed traffic instead of printing policies; exit code 1 when observed traffic
    /// would be denied.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub audit: Vec<PathBuf>,

    /// Output of --audit.
    #[arg(
        long,
        env = "SOCKSCOPE_AUDIT_OUTPUT",
        value_enum,
        default_value = "table"
    )]
    pub output: TableFormat,
}

/// `sockscope egress`.
#[derive(Debug, Clone, clap::Args)]
pub struct EgressArgs {
    #[command(flatten)]
    pub source: Source,

    /// Output format.
    #[arg(
        long,
        env = "SOCKSCOPE_EGRESS_FORMAT",
        value_enum,
        default_value = "table"
    )]
    pub format: EgressFormat,
}

/// Policy flavours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyFormat {
    /// networking.k8s.io/v1 NetworkPolicy.
    Kubernetes,
    /// cilium.io/v2 CiliumNetworkPolicy, with toFQDNs for external names.
    Cilium,
}

/// Table outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TableFormat {
    /// Aligned columns for a terminal.
    Table,
    /// One JSON document.
    Json,
}

/// `sockscope egress` outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EgressFormat {
    /// Aligned columns for a terminal.
    Table,
    /// One JSON document.
    Json,
    /// RFC 4180 CSV with a header line.
    Csv,
}

/// A window: 1m to 400d.
fn parse_window(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (write it like 7d, 24h)"))?;
    if d < Duration::from_secs(60) || d > Duration::from_secs(400 * 86_400) {
        return Err(format!("{s}: the window must be between 1m and 400d"));
    }
    Ok(d)
}

/// RFC 3339 or Unix seconds, as Unix seconds (1970 to 9999).
fn parse_at(s: &str) -> Result<f64, String> {
    if let Ok(t) = s.parse::<f64>() {
        return if t.is_finite() && (0.0..253_402_300_800.0).contains(&t) {
            Ok(t)
        } else {
            Err(format!("{s:?} is not a time between 1970 and 9999"))
        };
    }
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{s:?}: {e} (write it like 2026-12-01T00:00:00Z or Unix seconds)"))?;
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .map_err(|_| format!("{s:?} is before 1970"))
}
