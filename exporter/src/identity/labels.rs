//! The label set of flow series.

use sockscope_common::{FlowKey, OverflowKey, ROLE_CLIENT, ROLE_SERVER};

use super::{Local, Remote, remote::ip_from_key};
use crate::schema::{LabelSet, label_set};

/// Which optional labels are on.
#[derive(Debug, Clone, Copy, Default)]
pub struct LabelOptions {
    /// `process`: comm of the socket's creator.
    pub process: bool,
    /// `remote_ip`: the peer address.
    pub remote_ip: bool,
}

/// Labels of every TCP/UDP series. The Kubernetes and DNS columns are present (empty on a
/// plain host) so dashboards and rules keep working when later stages fill them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowLabels {
    /// Who owns the socket.
    pub local: LocalLabels,
    /// Kubernetes namespace of the peer pod or Service.
    pub remote_namespace: String,
    /// Workload of the peer pod, the Service's name, or the node's name.
    pub remote_workload: String,
    /// Hostname the socket's network namespace resolved for the peer.
    pub remote_host: String,
    /// loopback | pod | service | node | private | public.
    pub remote_class: String,
    /// Service port.
    pub port: String,
    /// client | server.
    pub role: String,
    /// Labels that are off by default.
    pub optional: OptionalLabels,
}

impl LabelSet for FlowLabels {
    fn visit(&self, f: &mut dyn FnMut(&'static str, &str)) {
        self.local.visit(f);
        f("remote_namespace", &self.remote_namespace);
        f("remote_workload", &self.remote_workload);
        f("remote_host", &self.remote_host);
        f("remote_class", &self.remote_class);
        f("port", &self.port);
        f("role", &self.role);
        if let Some(p) = &self.optional.process {
            f("process", p);
        }
        if let Some(ip) = &self.optional.remote_ip {
            f("remote_ip", ip);
        }
    }
}

/// Labels present only when their flag is on (absent, not empty, when off).
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct OptionalLabels {
    /// `process` label value.
    pub process: Option<String>,
    /// `remote_ip` label value.
    pub remote_ip: Option<String>,
}

/// Local identity labels, shared by every family.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalLabels {
    /// Kubernetes namespace of the socket owner.
    pub namespace: String,
    /// Workload: the pod's top controller; the systemd unit or container id on a plain host.
    pub workload: String,
    /// Deployment, StatefulSet, DaemonSet, CronJob, Job, ReplicaSet, Pod; empty on a host.
    pub workload_kind: String,
    /// Kubernetes pod (its UID until the API names it).
    pub pod: String,
    /// Container name (its short id until the API names it).
    pub container: String,
}

label_set!(LocalLabels {
    namespace,
    workload,
    workload_kind,
    pod,
    container
});

impl LocalLabels {
    /// The labels of a resolved owner.
    pub fn of(local: &Local) -> Self {
        LocalLabels {
            namespace: local.namespace.clone(),
            workload: local.workload.clone(),
            workload_kind: local.workload_kind.clone(),
            pod: local.pod.clone(),
            container: local.container.clone(),
        }
    }

    /// The scope of cardinality budgets: the workload within its namespace.
    pub fn budget_scope(&self) -> String {
        format!("{}/{}", self.namespace, self.workload)
    }
}

/// Builds the labels of a flow from its kernel key, resolved owner and peer, and the hostname
/// the owner resolved for the peer ("" when unknown).
pub fn flow_labels(
    key: &FlowKey,
    local: &Local,
    remote: Remote,
    remote_host: String,
    options: LabelOptions,
) -> FlowLabels {
    let ip = ip_from_key(key.remote_addr);
    FlowLabels {
        local: LocalLabels::of(local),
        remote_namespace: remote.namespace,
        remote_workload: remote.workload,
        remote_host,
        remote_class: remote.class,
        port: key.port.to_string(),
        role: role_name(key.role).to_string(),
        optional: OptionalLabels {
            process: options.process.then(|| comm_string(&key.comm)),
            remote_ip: options.remote_ip.then(|| ip.to_string()),
        },
    }
}

/// Label value of what overflow keeps no detail of: `remote_class` of a flow that did not fit
/// the flow map (its peer is not kept), `workload` of the node-wide totals kept when even the
/// overflow map was full (no owner either), `qname`/`qtype` of folded DNS counts. The `~`
/// cannot begin a Kubernetes name, a unit or a DNS name's presentation form, so it never
/// collides with a real value.
pub const OVERFLOW: &str = "~overflow";

/// `qname` and `qtype` of a DNS message over TCP whose question did not fit the segment it
/// began in: counted, its question not read (the rest of the message is in later segments,
/// which are not parsed).
pub const SPLIT: &str = "~split";

/// The local labels of the node-wide overflow totals (cgroup id 0: no owner kept).
pub fn node_overflow_local() -> Local {
    Local {
        workload: OVERFLOW.to_string(),
        ..Local::default()
    }
}

/// The labels of a per-cgroup overflow entry: the owner, role and protocol are kept, the peer
/// (address, name, workload, port) is not.
pub fn overflow_labels(key: &OverflowKey, local: &Local, options: LabelOptions) -> FlowLabels {
    FlowLabels {
        local: LocalLabels::of(local),
        remote_namespace: String::new(),
        remote_workload: String::new(),
        remote_host: String::new(),
        remote_class: OVERFLOW.to_string(),
        port: String::new(),
        role: role_name(key.role).to_string(),
        optional: OptionalLabels {
            process: options.process.then(|| comm_string(&key.comm)),
            remote_ip: options.remote_ip.then(String::new),
        },
    }
}

fn role_name(role: u8) -> &'static str {
    match role {
        ROLE_CLIENT => "client",
        ROLE_SERVER => "server",
        _ => "",
    }
}

/// A kernel `comm` (NUL-padded, not necessarily UTF-8) as a label value.
pub fn comm_string(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use sockscope_common::{PROTO_TCP, ROLE_SERVER, v4_mapped};

    use super::*;

    fn key(addr: [u8; 16], port: u16, role: u8) -> FlowKey {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        FlowKey {
            cgroup_id: 7,
            remote_addr: addr,
            comm,
            port,
            role,
            proto: PROTO_TCP,
            _pad: 0,
        }
    }

    #[test]
    fn builds_labels() {
        let owner = Local {
            workload: "a.service".into(),
            ..Local::default()
        };
        let class = |ip: [u8; 4]| Remote {
            class: crate::identity::remote::classify(std::net::IpAddr::from(ip))
                .as_str()
                .to_string(),
            ..Remote::default()
        };
        let l = flow_labels(
            &key(v4_mapped([127, 0, 0, 1]), 8080, ROLE_CLIENT),
            &owner,
            class([127, 0, 0, 1]),
            String::new(),
            LabelOptions::default(),
        );
        assert_eq!(l.local.workload, "a.service");
        assert_eq!(l.remote_class, "loopback");
        assert_eq!(l.port, "8080");
        assert_eq!(l.role, "client");
        assert_eq!(l.optional, OptionalLabels::default());

        let opts = LabelOptions {
            process: true,
            remote_ip: true,
        };
        let l = flow_labels(
            &key(v4_mapped([8, 8, 4, 4]), 53, ROLE_SERVER),
            &owner,
            class([8, 8, 4, 4]),
            "dns.google".into(),
            opts,
        );
        assert_eq!(l.remote_host, "dns.google");
        assert_eq!(l.role, "server");
        assert_eq!(l.remote_class, "public");
        assert_eq!(l.optional.process.as_deref(), Some("curl"));
        assert_eq!(l.optional.remote_ip.as_deref(), Some("8.8.4.4"));
    }

    #[test]
    fn v4_and_mapped_v6_give_one_series() {
        let owner = Local::default();
        let opts = LabelOptions {
            process: false,
            remote_ip: true,
        };
        let a = flow_labels(
            &key(v4_mapped([10, 0, 0, 1]), 80, ROLE_CLIENT),
            &owner,
            Remote::default(),
            String::new(),
            opts,
        );
        let mapped: std::net::Ipv6Addr = "::ffff:10.0.0.1".parse().expect("ip");
        let b = flow_labels(
            &key(mapped.octets(), 80, ROLE_CLIENT),
            &owner,
            Remote::default(),
            String::new(),
            opts,
        );
        assert_eq!(a, b);
    }

    #[test]
    fn comm_handles_garbage() {
        assert_eq!(comm_string(&[0; 16]), "");
        assert_eq!(comm_string(b"0123456789abcdef"), "0123456789abcdef");
        let mut bad = [0u8; 16];
        bad[0] = 0xff;
        bad[1] = b'x';
        assert_eq!(comm_string(&bad), "\u{fffd}x");
    }
}
