//! Command-line flags; every flag can also be set with a `SOCKSCOPE_*` environment variable.

pub mod file;
pub mod otlp;
pub mod tools;

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{CommandFactory, FromArgMatches, Parser, parser::ValueSource};
use ipnet::IpNet;

/// sockscope: eBPF network metrics exporter. Counts TCP and UDP payload bytes, connections,
/// failed connects and retransmits per socket owner (cgroup) and peer, in the kernel, and serves
/// them as Prometheus metrics.
#[derive(Debug, Clone, Parser)]
#[command(version, about, long_about = None)]
pub struct Config {
    /// YAML config file; flags and SOCKSCOPE_* variables override what it sets.
    #[arg(long, env = "SOCKSCOPE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Validate this config file (and the flags) and exit, without loading anything.
    #[arg(long, value_name = "FILE")]
    pub check_config: Option<PathBuf>,

    /// Commands that read what sockscope recorded (from Prometheus) instead of running the
    /// agent; they need no privileges.
    #[command(subcommand)]
    pub command: Option<tools::Command>,

    /// Write the seccomp profile this build was tested with (deploy/seccomp/sockscope.json) to
    /// FILE, creating its directory, and exit: the DaemonSet's init container installs it where
    /// the kubelet reads Localhost profiles. Needs no privileges beyond writing FILE.
    #[arg(long, value_name = "FILE")]
    pub install_seccomp_profile: Option<PathBuf>,

    /// Address of the HTTP server that serves /metrics, /healthz and /readyz.
    #[arg(long, env = "SOCKSCOPE_LISTEN_ADDRESS", default_value = "0.0.0.0:9642")]
    pub listen_address: SocketAddr,

    /// How often the kernel maps are drained into the exported counters (e.g. 500ms, 5s, 1m).
    #[arg(long, env = "SOCKSCOPE_INTERVAL", default_value = "5s", value_parser = parse_interval)]
    pub interval: Duration,

    /// cgroup v2 directory to attach to; only sockets of processes below it are counted.
    /// Default: the cgroup v2 root (/sys/fs/cgroup, or wherever cgroup2 is mounted).
    #[arg(long, env = "SOCKSCOPE_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,

    /// Add a `process` label: the command name (comm) of the process that created the socket
    /// (for accepted sockets, of the listener). Multiplies series by processes per workload.
    #[arg(long, env = "SOCKSCOPE_LABEL_PROCESS", default_value_t = false)]
    pub label_process: bool,

    /// How TCP bytes are counted: `auto` uses the socket iterator where the kernel has
    /// BPF iterators and BTF (no per-packet work for TCP) and falls back to per-packet counting
    /// elsewhere (reported by sockscope_bpf_program_attached{program="sockscope_tcp_iter"}=0);
    /// `iterator` refuses to start without it; `per-packet` never uses it (and counts UDP into
    /// the flow maps datagram by datagram, not batched per socket). Counts are exact in every
    /// mode.
    #[arg(
        long,
        env = "SOCKSCOPE_TCP_ACCOUNTING",
        value_enum,
        default_value = "auto"
    )]
    pub tcp_accounting: TcpAccounting,

    /// Add a `remote_ip` label with the peer's address. Unbounded for public peers: use only on
    /// hosts with a known, small set of peers.
    #[arg(long, env = "SOCKSCOPE_LABEL_REMOTE_IP", default_value_t = false)]
    pub label_remote_ip: bool,

    /// A DNS query without a response after this long counts in sockscope_dns_timeouts_total
    /// (a late response then gives no latency sample).
    #[arg(long, env = "SOCKSCOPE_DNS_TIMEOUT", default_value = "5s", value_parser = parse_interval)]
    pub dns_timeout: Duration,

    /// Shortest time a resolved hostname labels its address, whatever the record's TTL (client
    /// libraries keep answers longer than short TTLs).
    #[arg(long, env = "SOCKSCOPE_DNS_TTL_MIN", default_value = "60s", value_parser = parse_ttl)]
    pub dns_ttl_min: Duration,

    /// Longest time a resolved hostname labels its address, whatever the record's TTL.
    #[arg(long, env = "SOCKSCOPE_DNS_TTL_MAX", default_value = "1h", value_parser = parse_ttl)]
    pub dns_ttl_max: Duration,

    /// Entries (network namespace, IP) of the hostname cache; least recently used go first.
    #[arg(long, env = "SOCKSCOPE_DNS_CACHE_SIZE", default_value_t = 65536,
          value_parser = parse_cache_size)]
    pub dns_cache_size: u32,

    /// Memory the hostname cache may use for its entries and names (e.g. 16MiB, 512KiB);
    /// least recently used entries go first when either bound is reached.
    #[arg(long, env = "SOCKSCOPE_DNS_CACHE_MEMORY", default_value = "16MiB", value_parser = parse_bytes)]
    pub dns_cache_memory: u64,

    /// The cluster's DNS domain: names in it (and in the search domains) get
    /// `qname_class="cluster"`.
    #[arg(
        long,
        env = "SOCKSCOPE_DNS_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub dns_cluster_domain: String,

    /// Search domains whose names are the cluster's own too (comma-separated; default: the
    /// `search` line of /etc/resolv.conf).
    #[arg(long, env = "SOCKSCOPE_DNS_SEARCH_DOMAINS", value_delimiter = ',')]
    pub dns_search_domains: Option<Vec<String>>,

    /// A domain watchlist, `NAME=FILE` (repeat, or comma-separate in the variable): one domain
    /// or `*.suffix` per line, re-read when the file changes. Queries for its names count in
    /// sockscope_dns_watchlist_queries_total{list="NAME"}.
    #[arg(long = "dns-watchlist", env = "SOCKSCOPE_DNS_WATCHLISTS", value_delimiter = ',',
          value_name = "NAME=FILE", value_parser = parse_watchlist)]
    pub dns_watchlists: Vec<(String, PathBuf)>,

    /// `qname_class` name -> domain suffixes, checked after the cluster's own (config file
    /// `dns.domain_classes`).
    #[arg(skip)]
    pub dns_domain_classes: Vec<(String, Vec<String>)>,

    /// Distinct `qname` values per local workload; further names are counted as `~other`.
    #[arg(long, env = "SOCKSCOPE_MAX_QNAMES_PER_WORKLOAD", default_value_t = 50,
          value_parser = parse_budget)]
    pub max_qnames_per_workload: u32,

    /// Distinct `remote_host` values per local workload; further hosts are counted as `~other`.
    #[arg(
        long,
        env = "SOCKSCOPE_MAX_REMOTE_HOSTS_PER_WORKLOAD",
        default_value_t = 50,
        value_parser = parse_budget
    )]
    pub max_remote_hosts_per_workload: u32,

    /// Distinct flows each of the two flow maps holds per drain interval, or `auto`: 65536,
    /// fewer on nodes with many CPUs so the two stay within 64 MiB of kernel memory (see the
    /// README). Flows beyond it keep their owner, protocol and role in the overflow map.
    #[arg(long, env = "SOCKSCOPE_FLOW_MAP_SIZE", default_value = "auto", value_parser = parse_entries)]
    pub flow_map_size: Entries,

    /// Flows one cgroup may create per drain interval, or `auto` (an eighth of the flow map);
    /// its further peers fold into its overflow entry (remote_class="~overflow"), so one
    /// workload cannot fill the flow map.
    #[arg(long, env = "SOCKSCOPE_MAX_FLOWS_PER_CGROUP", default_value = "auto", value_parser = parse_entries)]
    pub max_flows_per_cgroup: Entries,

    /// Distinct DNS keys (cgroup, name, type, kind, code, latency bucket) each of the two DNS
    /// maps holds per drain interval, or `auto`: 16384, fewer on nodes with many CPUs (16 MiB
    /// for the two).
    #[arg(long, env = "SOCKSCOPE_DNS_MAP_SIZE", default_value = "auto", value_parser = parse_entries)]
    pub dns_map_size: Entries,

    /// DNS keys one cgroup may create per drain interval, or `auto` (an eighth of the DNS
    /// map); further names fold into its DNS overflow entries (qname="~overflow").
    #[arg(long, env = "SOCKSCOPE_MAX_DNS_KEYS_PER_CGROUP", default_value = "auto", value_parser = parse_entries)]
    pub max_dns_keys_per_cgroup: Entries,

    /// Entries of each overflow map (flows and DNS, per drain interval; up to 4 per cgroup
    /// that overflowed), or `auto`: 8192, fewer on nodes with many CPUs. Beyond it, counts
    /// fold into node-wide totals (workload="~overflow").
    #[arg(long, env = "SOCKSCOPE_OVERFLOW_MAP_SIZE", default_value = "auto", value_parser = parse_entries)]
    pub overflow_map_size: Entries,

    /// Distinct `qtype` values per local workload (types without a mnemonic may take half);
    /// further types are counted as `~other`.
    #[arg(long, env = "SOCKSCOPE_MAX_QTYPES_PER_WORKLOAD", default_value_t = 20,
          value_parser = parse_budget)]
    pub max_qtypes_per_workload: u32,

    /// Distinct `port` values per local workload: listening and well-known (< 1024) ports may
    /// use all of them, other remote ports half; further ports are counted as `~other`.
    #[arg(long, env = "SOCKSCOPE_MAX_PORTS_PER_WORKLOAD", default_value_t = 50,
          value_parser = parse_budget)]
    pub max_ports_per_workload: u32,

    /// Distinct `process` values per local workload (with --label-process).
    #[arg(long, env = "SOCKSCOPE_MAX_PROCESSES_PER_WORKLOAD", default_value_t = 50,
          value_parser = parse_budget)]
    pub max_processes_per_workload: u32,

    /// Distinct `remote_ip` values per local workload (with --label-remote-ip).
    #[arg(long, env = "SOCKSCOPE_MAX_REMOTE_IPS_PER_WORKLOAD", default_value_t = 1000,
          value_parser = parse_budget)]
    pub max_remote_ips_per_workload: u32,

    /// Kubernetes metadata: `auto` turns it on when running in a pod (KUBERNETES_SERVICE_HOST
    /// is set) or --kubeconfig is given; `on` requires it; `off` labels by cgroup path only.
    #[arg(long, env = "SOCKSCOPE_KUBERNETES", value_enum, default_value_t = KubernetesMode::Auto)]
    pub kubernetes: KubernetesMode,

    /// kubeconfig file for the Kubernetes API (default: the pod's service account).
    #[arg(long, env = "SOCKSCOPE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// This node's name, to watch only its pods (default: $NODE_NAME, as the DaemonSet sets
    /// from the downward API).
    #[arg(long, env = "SOCKSCOPE_NODE_NAME")]
    pub node_name: Option<String>,

    /// Longest wait for each response of a Kubernetes list (and for a connection); a list
    /// that takes longer is an error, counted and retried with backoff.
    #[arg(long, env = "SOCKSCOPE_KUBERNETES_TIMEOUT", default_value = "30s", value_parser = parse_kube_timeout)]
    pub kubernetes_timeout: Duration,

    /// Name of the cluster, exported as the OTLP resource attribute k8s.cluster.name.
    #[arg(long, env = "SOCKSCOPE_CLUSTER_NAME")]
    pub cluster_name: Option<String>,

    /// Index every pod IP, Service ClusterIP and node address of the cluster, so peers get
    /// remote_namespace, remote_workload and remote_class=pod|service|node. Turn off on very
    /// large clusters: peers are then labelled by address class only.
    #[arg(long, env = "SOCKSCOPE_REMOTE_INDEX", default_value_t = true, action = clap::ArgAction::Set)]
    pub remote_index: bool,

    /// Series of a deleted pod (or removed cgroup) that stay unchanged this long are removed.
    #[arg(long, env = "SOCKSCOPE_SERIES_EXPIRY", default_value = "5m", value_parser = parse_expiry)]
    pub series_expiry: Duration,

    /// Web config file (Prometheus exporter-toolkit format): TLS and basic auth for the
    /// HTTP endpoint.
    #[arg(long, env = "SOCKSCOPE_WEB_CONFIG_FILE")]
    pub web_config_file: Option<PathBuf>,

    /// Concurrent /metrics requests served; more get 503 at once.
    #[arg(long, env = "SOCKSCOPE_WEB_MAX_REQUESTS", default_value_t = 40,
          value_parser = parse_web_max_requests)]
    pub web_max_requests: u32,

    /// Open HTTP connections; more are closed at once.
    #[arg(long, env = "SOCKSCOPE_WEB_MAX_CONNECTIONS", default_value_t = 128,
          value_parser = parse_web_max_connections)]
    pub web_max_connections: u32,

    /// Longest time for a client to send its request headers (also the TLS handshake, and an
    /// idle keep-alive connection's next request), and for a scrape's response to be sent: a
    /// client that stops reading is cut after it.
    #[arg(long, env = "SOCKSCOPE_WEB_TIMEOUT", default_value = "10s", value_parser = parse_interval)]
    pub web_timeout: Duration,

    /// Push metrics over OTLP to this collector URL (e.g. http://otel-collector:4317 for gRPC,
    /// http://otel-collector:4318 for HTTP). Off unless this or OTEL_EXPORTER_OTLP_ENDPOINT is
    /// set.
    #[arg(long, env = "SOCKSCOPE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// OTLP protocol: grpc or http/protobuf (default: OTEL_EXPORTER_OTLP_PROTOCOL, else
    /// http/protobuf).
    #[arg(long, env = "SOCKSCOPE_OTLP_PROTOCOL", value_enum)]
    pub otlp_protocol: Option<crate::config::otlp::Protocol>,

    /// Time between OTLP exports (default: OTEL_METRIC_EXPORT_INTERVAL, else 60s).
    #[arg(long, env = "SOCKSCOPE_OTLP_INTERVAL", value_parser = parse_interval)]
    pub otlp_interval: Option<Duration>,

    /// Longest time one OTLP export may take (default: OTEL_EXPORTER_OTLP_TIMEOUT, else 10s).
    #[arg(long, env = "SOCKSCOPE_OTLP_TIMEOUT", value_parser = parse_interval)]
    pub otlp_timeout: Option<Duration>,

    /// OTLP temporality of counters and histograms: cumulative or delta (default:
    /// OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE, else cumulative).
    #[arg(long, env = "SOCKSCOPE_OTLP_TEMPORALITY", value_enum)]
    pub otlp_temporality: Option<crate::config::otlp::Temporality>,

    /// Compress OTLP request bodies: gzip or none (default: OTEL_EXPORTER_OTLP_COMPRESSION,
    /// else none).
    #[arg(long, env = "SOCKSCOPE_OTLP_COMPRESSION", value_enum)]
    pub otlp_compression: Option<crate::config::otlp::Compression>,

    /// CA certificates (PEM) trusted for an https:// OTLP endpoint, besides the system's roots
    /// (default: OTEL_EXPORTER_OTLP_CERTIFICATE).
    #[arg(long, env = "SOCKSCOPE_OTLP_CERTIFICATE")]
    pub otlp_certificate: Option<PathBuf>,

    /// Client certificate chain (PEM) sockscope presents to an https:// OTLP endpoint (mTLS;
    /// default: OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE).
    #[arg(long, env = "SOCKSCOPE_OTLP_CLIENT_CERTIFICATE")]
    pub otlp_client_certificate: Option<PathBuf>,

    /// Private key (PEM) of --otlp-client-certificate (default: OTEL_EXPORTER_OTLP_CLIENT_KEY).
    #[arg(long, env = "SOCKSCOPE_OTLP_CLIENT_KEY")]
    pub otlp_client_key: Option<PathBuf>,

    /// Extra OTLP request headers (config file `otlp.headers`).
    #[arg(skip)]
    pub otlp_headers: Vec<(String, String)>,

    /// Keep every capability after the programs are attached (by default all but
    /// CAP_DAC_READ_SEARCH are dropped then: nothing later needs them).
    #[arg(long, env = "SOCKSCOPE_KEEP_CAPABILITIES", default_value_t = false)]
    pub keep_capabilities: bool,

    /// Test aid, hidden: arms an injected fault, `<kind>=<trigger file>` (see `fault.rs`).
    #[arg(long = "fault", hide = true, value_name = "KIND=FILE")]
    pub faults: Vec<String>,

    /// Log filter (tracing EnvFilter syntax), e.g. info, debug, sockscope=debug.
    #[arg(long, env = "SOCKSCOPE_LOG", default_value = "info")]
    pub log: String,

    /// Per metric family, labels whose values are dropped (config file `metrics:`).
    #[arg(skip)]
    pub drop_labels: BTreeMap<String, Vec<String>>,

    /// CIDR -> `remote_class` name, checked before private/public (config file
    /// `remote_classes:`).
    #[arg(skip)]
    pub remote_classes: Vec<(IpNet, String)>,
}

impl Config {
    /// Flags, then the config file (from --config or --check-config) under them, validated.
    /// Exits on a flag clap cannot parse, like `Config::parse()`.
    pub fn load() -> Result<Config, String> {
        let matches = Config::command().get_matches();
        let mut config = Config::from_arg_matches(&matches).map_err(|e| e.to_string())?;
        if config.command.is_some() {
            // The agent's options do not apply to a command.
            return Ok(config);
        }
        let explicit = |id: &str| {
            matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        config.merge_file(&explicit)?;
        check(&config)?;
        Ok(config)
    }

    /// Reads the config file, if any, under the options `explicit` says were given.
    pub fn merge_file(&mut self, explicit: file::Explicit<'_>) -> Result<(), String> {
        let Some(path) = self.check_config.clone().or_else(|| self.config.clone()) else {
            return Ok(());
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("config {}: {e}", path.display()))?;
        file::parse(&text)
            .and_then(|f| f.apply(self, explicit))
            .map_err(|e| format!("config {}: {e}", path.display()))
    }
}

/// `--dns-watchlist NAME=FILE`: the name as a `list` label value.
pub fn parse_watchlist(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=FILE"))?;
    check_list_name(name)?;
    if path.is_empty() {
        return Err(format!("{s:?}: the file is empty"));
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

/// A watchlist's name: a short plain word, as it becomes a label value.
pub fn check_list_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "watchlist name {name:?}: use 1 to 64 letters, digits, _ or -"
        ));
    }
    Ok(())
}

/// A per-workload budget: at least 1 (flags and the config file alike).
pub fn parse_budget(s: &str) -> Result<u32, String> {
    bounded(s, 1, u64::from(u32::MAX))
        .map_err(|_| "must be at least 1 (0 would fold every value into ~other)".to_string())
}

/// `--dns-cache-size`: 1 to 16777216 entries.
pub fn parse_cache_size(s: &str) -> Result<u32, String> {
    bounded(s, 1, 16_777_216)
}

/// `--web-max-requests`: 1 to 10000.
pub fn parse_web_max_requests(s: &str) -> Result<u32, String> {
    bounded(s, 1, 10_000)
}

/// `--web-max-connections`: 1 to 100000.
pub fn parse_web_max_connections(s: &str) -> Result<u32, String> {
    bounded(s, 1, 100_000)
}

fn bounded(s: &str, min: u64, max: u64) -> Result<u32, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n as u32),
        _ => Err(format!("must be between {min} and {max}")),
    }
}

/// Parses durations written like `500ms`, `5s`, `1m`; refuses zero and anything under 100ms,
/// which would make the agent spin on the kernel maps.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (write durations like 500ms, 5s, 1m)"))?;
    if d < Duration::from_millis(100) {
        return Err(format!("{s} is too short: the minimum is 100ms"));
    }
    if d > Duration::from_secs(3600) {
        return Err(format!("{s} is too long: the maximum is 1h"));
    }
    Ok(d)
}

/// Whether to read Kubernetes metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KubernetesMode {
    /// On in a pod or with --kubeconfig.
    Auto,
    /// Always; fail to start without API access configuration.
    On,
    /// Never.
    Off,
}

impl Config {
    /// Whether Kubernetes metadata is on, given the environment.
    pub fn kubernetes_on(&self) -> bool {
        match self.kubernetes {
            KubernetesMode::On => true,
            KubernetesMode::Off => false,
            KubernetesMode::Auto => {
                self.kubeconfig.is_some() || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
            }
        }
    }

    /// This node's name: the flag, else `NODE_NAME`.
    pub fn node(&self) -> Option<String> {
        self.node_name
            .clone()
            .or_else(|| std::env::var("NODE_NAME").ok())
            .filter(|n| !n.is_empty())
    }
}

/// A map size: `auto` or a number of entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entries {
    /// Sized for this node (its CPU count).
    Auto,
    /// This many entries.
    Exactly(u32),
}

/// Parses `auto` or a number of entries (1 to 4194304; each map checks its own range).
pub fn parse_entries(s: &str) -> Result<Entries, String> {
    if s == "auto" {
        return Ok(Entries::Auto);
    }
    match s.parse::<u32>() {
        Ok(n) if (1..=4_194_304).contains(&n) => Ok(Entries::Exactly(n)),
        _ => Err(format!(
            "{s:?} is not auto or a number of entries (1 to 4194304)"
        )),
    }
}

/// Parses a memory size: a number of bytes, or with a unit `KiB`, `MiB`, `GiB` (or `K`, `M`,
/// `G`, the same powers of 1024); at least 64KiB, at most 16GiB.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (write it like 16MiB, 512KiB, 1GiB)"))?;
    let mul: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit (use KiB, MiB or GiB)")),
    };
    let bytes = n
        .checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if !(64 << 10..=16 << 30).contains(&bytes) {
        return Err(format!("{s} is out of range: 64KiB to 16GiB"));
    }
    Ok(bytes)
}

/// Parses the Kubernetes request timeout: 1s to 10m.
pub fn parse_kube_timeout(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 10s, 1m)"))?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(600) {
        return Err(format!("{s} is out of range: 1s to 10m"));
    }
    Ok(d)
}

/// Parses the series expiry grace: 1s to 1 day.
pub fn parse_expiry(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (write durations like 30s, 5m, 1h)"))?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(24 * 3600) {
        return Err(format!("{s} is out of range: 1s to 24h"));
    }
    Ok(d)
}

/// Parses a TTL bound: a duration between 0s and 1 week.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (write durations like 30s, 5m, 1h)"))?;
    if d > Duration::from_secs(7 * 24 * 3600) {
        return Err(format!("{s} is too long: the maximum is 1 week"));
    }
    Ok(d)
}

impl Config {
    /// The OTLP settings sockscope's own flags and config give (OTEL_* fill the rest).
    pub fn otlp_settings(&self) -> crate::config::otlp::Settings {
        crate::config::otlp::Settings {
            endpoint: self.otlp_endpoint.clone(),
            protocol: self.otlp_protocol,
            interval: self.otlp_interval,
            timeout: self.otlp_timeout,
            temporality: self.otlp_temporality,
            headers: self.otlp_headers.clone(),
            compression: self.otlp_compression,
            tls: crate::config::otlp::TlsFiles {
                certificate: self.otlp_certificate.clone(),
                client_certificate: self.otlp_client_certificate.clone(),
                client_key: self.otlp_client_key.clone(),
            },
            node_name: self.node(),
            cluster_name: self.cluster_name.clone(),
        }
    }
}

/// Refuses a TTL floor above the ceiling, per-cgroup shares larger than their map, and OTLP
/// settings that cannot work.
pub fn check(config: &Config) -> Result<(), String> {
    crate::config::otlp::Options::resolve(&config.otlp_settings())?;
    crate::fault::parse(&config.faults)?;
    let ranges = [
        ("--flow-map-size", config.flow_map_size, 1024),
        ("--dns-map-size", config.dns_map_size, 1024),
        ("--overflow-map-size", config.overflow_map_size, 64),
    ];
    for (flag, size, min) in ranges {
        if let Entries::Exactly(n) = size
            && n < min
        {
            return Err(format!("{flag} {n} is too small: at least {min}"));
        }
    }
    let shares = [
        (
            "--max-flows-per-cgroup",
            config.max_flows_per_cgroup,
            "--flow-map-size",
            config.flow_map_size,
        ),
        (
            "--max-dns-keys-per-cgroup",
            config.max_dns_keys_per_cgroup,
            "--dns-map-size",
            config.dns_map_size,
        ),
    ];
    for (flag, share, map_flag, map) in shares {
        if let (Entries::Exactly(s), Entries::Exactly(m)) = (share, map)
            && s > m
        {
            return Err(format!("{flag} ({s}) is above {map_flag} ({m})"));
        }
    }
    if config.dns_ttl_min > config.dns_ttl_max {
        return Err(format!(
            "--dns-ttl-min ({}) is above --dns-ttl-max ({})",
            humantime::format_duration(config.dns_ttl_min),
            humantime::format_duration(config.dns_ttl_max)
        ));
    }
    Ok(())
}

/// How TCP bytes are counted (`--tcp-accounting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TcpAccounting {
    /// The iterator where the kernel has it (BTF, BPF iterators), else per packet.
    Auto,
    /// The iterator, or refuse to start.
    Iterator,
    /// Per packet: cgroup_skb flushes on every packet that moved a counter, sock_ops on every
    /// RTT window (kernels without iterators).
    PerPacket,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("5").is_err());
        assert!(parse_interval("fast").is_err());
        assert!(parse_interval("2h").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("16MiB"), Ok(16 << 20));
        assert_eq!(parse_bytes("512K"), Ok(512 << 10));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        for bad in [
            "",
            "MiB",
            "1TiB",
            "12 parsecs",
            "1KiB",
            "99999999999999999999",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_parse_with_defaults() {
        let c = Config::try_parse_from(["sockscope"]).expect("defaults parse");
        assert_eq!(c.listen_address.port(), 9642);
        assert_eq!(c.interval, Duration::from_secs(5));
        assert!(!c.label_process);
        assert!(Config::try_parse_from(["sockscope", "--interval", "nope"]).is_err());
        assert!(Config::try_parse_from(["sockscope", "--listen-address", "nope"]).is_err());
        assert_eq!(c.dns_timeout, Duration::from_secs(5));
        assert_eq!(c.max_qnames_per_workload, 50);
        assert!(check(&c).is_ok());
        let bad =
            Config::try_parse_from(["sockscope", "--dns-ttl-min", "2h", "--dns-ttl-max", "1h"])
                .expect("parses");
        assert!(check(&bad).is_err());
        assert!(Config::try_parse_from(["sockscope", "--dns-cache-size", "0"]).is_err());
        assert!(Config::try_parse_from(["sockscope", "--dns-ttl-max", "30d"]).is_err());
        assert_eq!(c.series_expiry, Duration::from_secs(300));
        assert!(c.remote_index);
        let off = Config::try_parse_from([
            "sockscope",
            "--remote-index",
            "false",
            "--kubernetes",
            "off",
        ])
        .expect("parses");
        assert!(!off.remote_index && !off.kubernetes_on());
        assert!(Config::try_parse_from(["sockscope", "--kubernetes", "maybe"]).is_err());
        assert!(Config::try_parse_from(["sockscope", "--series-expiry", "0s"]).is_err());
    }
}
