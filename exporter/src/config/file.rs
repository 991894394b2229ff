//! The YAML config file (`--config`): the same options as the flags, plus what a flag cannot
//! express well (per-metric label selection, CIDR classes). Flags and `SOCKSCOPE_*`
//! variables override it; unknown keys, wrong types and impossible values are refused with
//! one line naming the key.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use ipnet::IpNet;
use serde::Deserialize;

use super::{
    Config, Entries, KubernetesMode, parse_budget, parse_bytes, parse_cache_size, parse_entries,
    parse_expiry, parse_interval, parse_kube_timeout, parse_ttl, parse_web_max_connections,
    parse_web_max_requests,
};
use crate::schema;

/// The file's shape. Every key is optional; absent keys leave the flag or default in place.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    listen_address: Option<SocketAddr>,
    #[serde(default, deserialize_with = "interval")]
    interval: Option<Duration>,
    cgroup_root: Option<PathBuf>,
    log: Option<String>,
    labels: Option<Labels>,
    /// Metric name -> what to do with its labels.
    metrics: Option<BTreeMap<String, Metric>>,
    budgets: Option<Budgets>,
    maps: Option<Maps>,
    #[serde(default, deserialize_with = "expiry")]
    series_expiry: Option<Duration>,
    /// Class name -> CIDRs, for `remote_class`.
    remote_classes: Option<BTreeMap<String, Vec<String>>>,
    dns: Option<Dns>,
    kubernetes: Option<Kubernetes>,
    web: Option<Web>,
    otlp: Option<Otlp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Otlp {
    endpoint: Option<String>,
    protocol: Option<crate::config::otlp::Protocol>,
    #[serde(default, deserialize_with = "interval")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "interval")]
    timeout: Option<Duration>,
    temporality: Option<crate::config::otlp::Temporality>,
    compression: Option<crate::config::otlp::Compression>,
    certificate: Option<PathBuf>,
    client_certificate: Option<PathBuf>,
    client_key: Option<PathBuf>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Web {
    config_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "web_max_requests")]
    max_requests: Option<u32>,
    #[serde(default, deserialize_with = "web_max_connections")]
    max_connections: Option<u32>,
    #[serde(default, deserialize_with = "interval")]
    timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Labels {
    process: Option<bool>,
    remote_ip: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metric {
    /// Labels whose values are dropped: series that differ only in them add up.
    drop_labels: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Budgets {
    #[serde(default, deserialize_with = "budget")]
    qnames_per_workload: Option<u32>,
    #[serde(default, deserialize_with = "budget")]
    qtypes_per_workload: Option<u32>,
    #[serde(default, deserialize_with = "budget")]
    remote_hosts_per_workload: Option<u32>,
    #[serde(default, deserialize_with = "budget")]
    ports_per_workload: Option<u32>,
    #[serde(default, deserialize_with = "budget")]
    processes_per_workload: Option<u32>,
    #[serde(default, deserialize_with = "budget")]
    remote_ips_per_workload: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Maps {
    #[serde(default, deserialize_with = "entries")]
    flows: Option<Entries>,
    #[serde(default, deserialize_with = "entries")]
    flows_per_cgroup: Option<Entries>,
    #[serde(default, deserialize_with = "entries")]
    dns: Option<Entries>,
    #[serde(default, deserialize_with = "entries")]
    dns_keys_per_cgroup: Option<Entries>,
    #[serde(default, deserialize_with = "entries")]
    overflow: Option<Entries>,
}

/// A scalar written as text or as a number (`5s`, `auto`, `4096`), as a flag would take it.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Number(u64),
    Text(String),
}

impl Scalar {
    fn text(self) -> String {
        match self {
            Scalar::Number(n) => n.to_string(),
            Scalar::Text(t) => t,
        }
    }
}

/// Deserializers that parse a value with the flag's own parser, so the file and the flags
/// accept and refuse exactly the same values (the error gets the key's path).
macro_rules! with_flag_parser {
    ($($name:ident: $parse:path => $t:ty;)*) => {
        $(
            fn $name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<$t>, D::Error> {
                $parse(&Scalar::deserialize(d)?.text())
                    .map(Some)
                    .map_err(serde::de::Error::custom)
            }
        )*
    };
}

with_flag_parser! {
    interval: parse_interval => Duration;
    ttl: parse_ttl => Duration;
    expiry: parse_expiry => Duration;
    kube_timeout: parse_kube_timeout => Duration;
    entries: parse_entries => Entries;
    bytes: parse_bytes => u64;
    budget: parse_budget => u32;
    cache_size: parse_cache_size => u32;
    web_max_requests: parse_web_max_requests => u32;
    web_max_connections: parse_web_max_connections => u32;
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Dns {
    #[serde(default, deserialize_with = "interval")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "ttl")]
    ttl_min: Option<Duration>,
    #[serde(default, deserialize_with = "ttl")]
    ttl_max: Option<Duration>,
    #[serde(default, deserialize_with = "cache_size")]
    cache_size: Option<u32>,
    #[serde(default, deserialize_with = "bytes")]
    cache_memory: Option<u64>,
    cluster_domain: Option<String>,
    search_domains: Option<Vec<String>>,
    /// Class name -> domain suffixes, for `qname_class`.
    domain_classes: Option<BTreeMap<String, Vec<String>>>,
    /// List name -> file.
    watchlists: Option<BTreeMap<String, PathBuf>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Kubernetes {
    mode: Option<KubernetesMode>,
    kubeconfig: Option<PathBuf>,
    node_name: Option<String>,
    cluster_name: Option<String>,
    remote_index: Option<bool>,
    #[serde(default, deserialize_with = "kube_timeout")]
    timeout: Option<Duration>,
}

/// Parses a config file's text; the error names the key (`dns.timeout: ...`), on one line.
pub fn parse(text: &str) -> Result<File, String> {
    parse_inner(text).map_err(|e| crate::report::one_line(&e))
}

fn parse_inner(text: &str) -> Result<File, String> {
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        // serde_norway appends " at line L column C"; keep the line, one line in all.
        let mut inner = e.inner().to_string().replace('\n', " ");
        // serde_norway starts nested errors with the parent's path: said once is enough.
        if let Some((head, rest)) = inner.split_once(": ")
            && !head.contains(' ')
            && path.starts_with(head)
        {
            inner = rest.to_string();
        }
        if path == "." || path.is_empty() {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// Whether the option with clap id `id` came from the command line or the environment.
pub type Explicit<'a> = &'a dyn Fn(&str) -> bool;

impl File {
    /// Sets every option the file has and `explicit` says was not given as a flag or
    /// variable. Errors name the key.
    pub fn apply(self, c: &mut Config, explicit: Explicit<'_>) -> Result<(), String> {
        self.apply_inner(c, explicit)
            .map_err(|e| crate::report::one_line(&e))
    }

    fn apply_inner(self, c: &mut Config, explicit: Explicit<'_>) -> Result<(), String> {
        // Values were parsed and checked by the flags' own parsers while deserializing.
        macro_rules! set {
            ($id:literal, $field:expr, $value:expr) => {
                if let Some(v) = $value
                    && !explicit($id)
                {
                    $field = v;
                }
            };
        }
        set!("listen_address", c.listen_address, self.listen_address);
        set!("interval", c.interval, self.interval);
        set!("cgroup_root", c.cgroup_root, self.cgroup_root.map(Some));
        set!("log", c.log, self.log);
        let l = self.labels.unwrap_or_default();
        set!("label_process", c.label_process, l.process);
        set!("label_remote_ip", c.label_remote_ip, l.remote_ip);
        let b = self.budgets.unwrap_or_default();
        set!(
            "max_qnames_per_workload",
            c.max_qnames_per_workload,
            b.qnames_per_workload
        );
        set!(
            "max_qtypes_per_workload",
            c.max_qtypes_per_workload,
            b.qtypes_per_workload
        );
        set!(
            "max_remote_hosts_per_workload",
            c.max_remote_hosts_per_workload,
            b.remote_hosts_per_workload
        );
        set!(
            "max_ports_per_workload",
            c.max_ports_per_workload,
            b.ports_per_workload
        );
        set!(
            "max_processes_per_workload",
            c.max_processes_per_workload,
            b.processes_per_workload
        );
        set!(
            "max_remote_ips_per_workload",
            c.max_remote_ips_per_workload,
            b.remote_ips_per_workload
        );
        let m = self.maps.unwrap_or_default();
        set!("flow_map_size", c.flow_map_size, m.flows);
        set!(
            "max_flows_per_cgroup",
            c.max_flows_per_cgroup,
            m.flows_per_cgroup
        );
        set!("dns_map_size", c.dns_map_size, m.dns);
        set!(
            "max_dns_keys_per_cgroup",
            c.max_dns_keys_per_cgroup,
            m.dns_keys_per_cgroup
        );
        set!("overflow_map_size", c.overflow_map_size, m.overflow);
        set!("series_expiry", c.series_expiry, self.series_expiry);
        let d = self.dns.unwrap_or_default();
        set!("dns_timeout", c.dns_timeout, d.timeout);
        set!("dns_ttl_min", c.dns_ttl_min, d.ttl_min);
        set!("dns_ttl_max", c.dns_ttl_max, d.ttl_max);
        set!("dns_cache_size", c.dns_cache_size, d.cache_size);
        set!("dns_cache_memory", c.dns_cache_memory, d.cache_memory);
        set!("dns_cluster_domain", c.dns_cluster_domain, d.cluster_domain);
        set!(
            "dns_search_domains",
            c.dns_search_domains,
            d.search_domains.map(Some)
        );
        if let Some(lists) = d.watchlists
            && !explicit("dns_watchlists")
        {
            c.dns_watchlists = Vec::new();
            for (name, path) in lists {
                super::check_list_name(&name).map_err(|e| format!("dns.watchlists: {e}"))?;
                c.dns_watchlists.push((name, path));
            }
        }
        if let Some(classes) = d.domain_classes {
            c.dns_domain_classes = classes.into_iter().collect();
        }
        let k = self.kubernetes.unwrap_or_default();
        set!("kubernetes", c.kubernetes, k.mode);
        set!("kubeconfig", c.kubeconfig, k.kubeconfig.map(Some));
        set!("node_name", c.node_name, k.node_name.map(Some));
        set!("cluster_name", c.cluster_name, k.cluster_name.map(Some));
        set!("remote_index", c.remote_index, k.remote_index);
        set!("kubernetes_timeout", c.kubernetes_timeout, k.timeout);
        let w = self.web.unwrap_or_default();
        set!(
            "web_config_file",
            c.web_config_file,
            w.config_file.map(Some)
        );
        set!("web_max_requests", c.web_max_requests, w.max_requests);
        set!(
            "web_max_connections",
            c.web_max_connections,
            w.max_connections
        );
        set!("web_timeout", c.web_timeout, w.timeout);
        let o = self.otlp.unwrap_or_default();
        set!("otlp_endpoint", c.otlp_endpoint, o.endpoint.map(Some));
        set!("otlp_protocol", c.otlp_protocol, o.protocol.map(Some));
        set!(
            "otlp_temporality",
            c.otlp_temporality,
            o.temporality.map(Some)
        );
        set!("otlp_interval", c.otlp_interval, o.interval.map(Some));
        set!("otlp_timeout", c.otlp_timeout, o.timeout.map(Some));
        set!(
            "otlp_compression",
            c.otlp_compression,
            o.compression.map(Some)
        );
        set!(
            "otlp_certificate",
            c.otlp_certificate,
            o.certificate.map(Some)
        );
        set!(
            "otlp_client_certificate",
            c.otlp_client_certificate,
            o.client_certificate.map(Some)
        );
        set!("otlp_client_key", c.otlp_client_key, o.client_key.map(Some));
        for (k, v) in o.headers {
            if hyper::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err(format!("otlp.headers.{k}: not a valid header name"));
            }
            c.otlp_headers.push((k, v));
        }
        if let Some(metrics) = self.metrics {
            for (name, m) in metrics {
                let Some(labels) = schema::droppable()
                    .find(|f| f.exposed() == name)
                    .map(|f| f.labels)
                else {
                    return Err(format!(
                        "metrics.{name}: no such metric (metrics with labels: {})",
                        schema::droppable()
                            .map(|f| f.exposed())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                };
                for (i, l) in m.drop_labels.iter().enumerate() {
                    if !labels.contains(&l.as_str()) {
                        return Err(format!(
                            "metrics.{name}.drop_labels[{i}]: {name} has no label {l:?} (it has: {})",
                            labels.join(", ")
                        ));
                    }
                }
                c.drop_labels.insert(name, m.drop_labels);
            }
        }
        if let Some(classes) = self.remote_classes {
            for (name, cidrs) in classes {
                if name.is_empty() || RESERVED_CLASSES.contains(&name.as_str()) {
                    return Err(format!(
                        "remote_classes.{name}: the name must be non-empty and not one of {}",
                        RESERVED_CLASSES.join(", ")
                    ));
                }
                for (i, s) in cidrs.iter().enumerate() {
                    let net: IpNet = s.parse().map_err(|_| format!("remote_classes.{name}[{i}]: {s:?} is not a CIDR (write it like 10.0.0.0/8 or fd00::/8)"))?;
                    c.remote_classes.push((net.trunc(), name.clone()));
                }
            }
        }
        Ok(())
    }
}

/// Classes sockscope assigns itself; a configured class cannot reuse their names.
const RESERVED_CLASSES: [&str; 4] = ["loopback", "pod", "service", "node"];

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn apply(yaml: &str) -> Result<Config, String> {
        let mut c = Config::try_parse_from(["sockscope"]).expect("defaults");
        parse(yaml)?.apply(&mut c, &|_| false)?;
        // What `--check-config` and the start add: the settings that need files or the OTEL_*
        // variables.
        crate::config::check(&c)?;
        Ok(c)
    }

    #[test]
    fn good_config() {
        let c = apply(
            r#"
listen_address: 127.0.0.1:9100
interval: 10s
labels: {process: true}
budgets: {qnames_per_workload: 20, ports_per_workload: 9}
maps: {flows: 4096, flows_per_cgroup: auto, overflow: 128}
series_expiry: 10m
metrics:
  sockscope_tcp_sent_bytes_total: {drop_labels: [port, remote_host]}
remote_classes:
  internal: [10.20.0.0/16, "fd00::/8"]
dns: {timeout: 2s, cache_size: 1000}
kubernetes: {mode: "off", cluster_name: prod-eu}
web: {config_file: /etc/sockscope/web.yaml, max_requests: 8, timeout: 5s}
otlp:
  endpoint: http://collector:4318
  protocol: http/protobuf
  interval: 30s
  temporality: delta
  headers: {x-tenant: team-a}
"#,
        )
        .expect("valid");
        assert_eq!(c.listen_address.port(), 9100);
        assert_eq!(c.interval.as_secs(), 10);
        assert!(c.label_process && !c.label_remote_ip);
        assert_eq!(c.max_qnames_per_workload, 20);
        assert_eq!(c.max_ports_per_workload, 9);
        assert_eq!(c.flow_map_size, crate::config::Entries::Exactly(4096));
        assert_eq!(c.max_flows_per_cgroup, crate::config::Entries::Auto);
        assert_eq!(c.overflow_map_size, crate::config::Entries::Exactly(128));
        assert_eq!(c.series_expiry.as_secs(), 600);
        assert_eq!(
            c.drop_labels["sockscope_tcp_sent_bytes_total"],
            ["port", "remote_host"]
        );
        assert_eq!(c.remote_classes.len(), 2);
        assert_eq!(c.dns_cache_size, 1000);
        assert_eq!(c.kubernetes, KubernetesMode::Off);
        assert_eq!(c.cluster_name.as_deref(), Some("prod-eu"));
        assert_eq!(c.web_max_requests, 8);
        assert_eq!(c.web_timeout.as_secs(), 5);
        assert!(c.web_config_file.is_some());
        assert_eq!(c.otlp_endpoint.as_deref(), Some("http://collector:4318"));
        assert_eq!(
            c.otlp_protocol,
            Some(crate::config::otlp::Protocol::HttpProtobuf)
        );
        assert_eq!(c.otlp_interval.map(|d| d.as_secs()), Some(30));
        assert_eq!(
            c.otlp_temporality,
            Some(crate::config::otlp::Temporality::Delta)
        );
        assert_eq!(
            c.otlp_headers,
            vec![("x-tenant".to_string(), "team-a".to_string())]
        );
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases = [
            ("intervall: 5s", "unknown field `intervall`"),
            ("interval: 0s", "interval: 0s is too short"),
            ("interval: 5", "interval:"),
            ("labels: {process: yes please}", "labels.process"),
            (
                "labels: {proces: true}",
                "labels.proces: unknown field `proces`",
            ),
            (
                "budgets: {qnames_per_workload: 0}",
                "budgets.qnames_per_workload: must be at least 1",
            ),
            (
                "budgets: {qnames_per_workload: -3}",
                "budgets.qnames_per_workload",
            ),
            (
                "remote_classes: {internal: [10.0.0.0/33]}",
                "remote_classes.internal[0]: \"10.0.0.0/33\" is not a CIDR",
            ),
            (
                "remote_classes: {pod: [10.0.0.0/8]}",
                "remote_classes.pod: the name",
            ),
            (
                "metrics: {sockscope_nope_total: {drop_labels: [port]}}",
                "metrics.sockscope_nope_total: no such metric",
            ),
            (
                "metrics: {sockscope_tcp_sent_bytes_total: {drop_labels: [qname]}}",
                "drop_labels[0]: sockscope_tcp_sent_bytes_total has no label \"qname\"",
            ),
            ("dns: {timeout: soon}", "dns.timeout:"),
            ("dns: {cache_size: 0}", "dns.cache_size"),
            ("listen_address: nowhere", "listen_address"),
            ("kubernetes: {mode: sometimes}", "kubernetes.mode"),
            ("series_expiry: 0s", "series_expiry"),
            ("- just\n- a list", "invalid type"),
            (
                "otlp: {protocol: smtp}",
                "otlp.protocol: unknown variant `smtp`",
            ),
            ("otlp: {interval: 0s}", "otlp.interval: 0s is too short"),
            (
                "otlp: {headers: {\"bad header\": x}}",
                "otlp.headers.bad header: not a valid header name",
            ),
            (
                "otlp: {endpoint: http://c:4317, compression: zstd}",
                "otlp.compression: unknown variant `zstd`",
            ),
            (
                "otlp: {endpoint: https://c:4318, certificate: /nonexistent/ca.pem}",
                "OTLP certificate /nonexistent/ca.pem: No such file",
            ),
            (
                "otlp: {endpoint: https://c:4318, certificate: /proc/version}",
                "OTLP certificate /proc/version: no PEM certificate in it",
            ),
            (
                "otlp: {endpoint: http://c:4318, certificate: /proc/version}",
                "TLS certificates are set but the endpoint is http://",
            ),
            (
                "otlp: {endpoint: https://c:4318, client_key: /proc/version}",
                "needs both a client certificate and its key",
            ),
            (
                "web: {max_requests: 0}",
                "web.max_requests: must be between 1 and 10000",
            ),
            ("web: {timeout: never}", "web.timeout"),
            ("web: {max_connections: 0}", "web.max_connections"),
            (
                "maps: {flows: lots}",
                "maps.flows: \"lots\" is not auto or a number",
            ),
            ("maps: {dns: [1]}", "maps.dns"),
            (
                "budgets: {ports_per_workload: 0}",
                "budgets.ports_per_workload",
            ),
            ("dns: {cache_memory: 1TiB}", "dns.cache_memory"),
            ("kubernetes: {timeout: 0s}", "kubernetes.timeout"),
            ("\"a\\nb\": 1", "a\\nb: unknown field"),
        ];
        for (yaml, want) in cases {
            let err = apply(yaml).expect_err(yaml);
            assert!(err.contains(want), "{yaml:?}: got {err:?}, want {want:?}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn explicit_flags_win() {
        let mut c = Config::try_parse_from(["sockscope", "--interval", "2s"]).expect("flags");
        parse("interval: 9s\nlog: debug")
            .expect("yaml")
            .apply(&mut c, &|id| id == "interval")
            .expect("apply");
        assert_eq!(c.interval.as_secs(), 2);
        assert_eq!(c.log, "debug");
    }
}
