//! Kubernetes test fixtures: "pods" as kubepods-like cgroups holding processes in network
//! namespaces on a veth pair, and the in-test API server describing them.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use crate::{
    Agent, NetPair, Proc, TestCgroup,
    fake_apiserver::{KubeApi, objects},
    peer_cmd,
};

pub const NODE: &str = "test-node";
pub const CLUSTER_IP: &str = "10.96.0.10";
/// This node's InternalIP (TEST-NET-1, routed only inside the test's namespaces).
pub const NODE_IP: &str = "192.0.2.10";

/// A pod: its API object and its container's cgroup below the test root.
pub struct Pod {
    pub namespace: &'static str,
    pub name: &'static str,
    pub uid: String,
    pub container: &'static str,
    pub container_id: String,
    pub cgroup: String,
}

impl Pod {
    /// `systemd`: the systemd cgroup driver's layout (Burstable); else cgroupfs (BestEffort).
    pub fn new(
        n: u64,
        namespace: &'static str,
        name: &'static str,
        container: &'static str,
        systemd: bool,
    ) -> Self {
        let uid = objects::uid(n);
        let container_id = format!("{:016x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15)).repeat(4);
        let cgroup = if systemd {
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{container_id}.scope",
                uid.replace('-', "_")
            )
        } else {
            format!("kubepods/besteffort/pod{uid}/{container_id}")
        };
        Pod {
            namespace,
            name,
            uid,
            container,
            container_id,
            cgroup,
        }
    }

    pub fn object(&self, ip: &str, owner: Option<(&str, &str)>, hash: Option<&str>) -> Value {
        objects::pod(
            self.namespace,
            self.name,
            &self.uid,
            NODE,
            ip,
            owner,
            hash,
            &[(self.container, &self.container_id)],
        )
    }

    /// The labels the API names it with.
    pub fn labels<'a>(&'a self, workload: &'a str, kind: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("namespace", self.namespace),
            ("workload", workload),
            ("workload_kind", kind),
            ("pod", self.name),
            ("container", self.container),
        ]
    }

    /// The labels its cgroup path alone gives.
    pub fn fallback(&self) -> Vec<(&str, &str)> {
        vec![
            ("namespace", ""),
            ("workload", ""),
            ("pod", self.uid.as_str()),
            ("container", &self.container_id[..12]),
        ]
    }
}

pub fn with<'a>(
    mut base: Vec<(&'a str, &'a str)>,
    more: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    base.extend_from_slice(more);
    base
}

fn sh(cmd: &str) {
    let st = Command::new("sh").args(["-c", cmd]).status().expect("sh");
    assert!(st.success(), "command failed: {cmd}");
}

/// The API objects every test starts with: this node, a Deployment's ReplicaSet, a Service in
/// front of the server pod, and a pod on another node.
pub fn base_objects(api: &KubeApi, net: &NetPair) {
    api.apply(objects::node(NODE, &objects::uid(900), NODE_IP));
    api.apply(objects::node(
        "other-node",
        &objects::uid(901),
        "192.0.2.11",
    ));
    api.apply(objects::replicaset(
        "shop",
        "frontend-5d8f7b9c6d",
        &objects::uid(910),
        "frontend",
    ));
    api.apply(objects::job(
        "ops",
        "report-29400000",
        &objects::uid(911),
        "report",
    ));
    api.apply(objects::service(
        "data",
        "db-primary",
        &objects::uid(920),
        CLUSTER_IP,
        5432,
    ));
    // Another node's pod: only the cluster-wide index sees it.
    api.apply(objects::pod(
        "shop",
        "elsewhere-0",
        &objects::uid(930),
        "other-node",
        "10.99.0.5",
        Some(("StatefulSet", "elsewhere")),
        None,
        &[("c", &"e".repeat(64))],
    ));
    let _ = net;
}

pub struct Env {
    pub cg: TestCgroup,
    pub net: NetPair,
    pub api: KubeApi,
    pub kubeconfig: PathBuf,
    peer: &'static str,
}

impl Env {
    /// `peer`: the sockscope-peer binary of the calling test.
    pub fn new(name: &str, peer: &'static str) -> Self {
        let cg = TestCgroup::new(name);
        let net = NetPair::new();
        // The node's address stands for a host-network pod on the server's side.
        // The Service's ClusterIP reaches the server pod (what kube-proxy's DNAT does; the
        // socket's peer is the ClusterIP either way).
        sh(&format!(
            "ip -n {b} addr add {CLUSTER_IP}/32 dev lo && ip -n {a} route add {CLUSTER_IP}/32 via {b4} && \
             ip -n {b} addr add {NODE_IP}/32 dev lo && ip -n {a} route add {NODE_IP}/32 via {b4}",
            a = net.a,
            b = net.b,
            b4 = net.b4
        ));
        let api = KubeApi::start();
        base_objects(&api, &net);
        let kubeconfig = api.kubeconfig(&std::env::temp_dir());
        Env {
            cg,
            net,
            api,
            kubeconfig,
            peer,
        }
    }

    pub fn agent(&self, extra: &[&str]) -> Agent {
        self.agent_wrapped(&[], extra)
    }

    pub fn agent_wrapped(&self, wrapper: &[&str], extra: &[&str]) -> Agent {
        let kc = self.kubeconfig.to_string_lossy().to_string();
        let mut args = vec!["--kubeconfig", kc.as_str(), "--node-name", NODE];
        args.extend_from_slice(extra);
        Agent::start_wrapped(self.peer, wrapper, &self.cg.root, &args)
    }

    /// Publishes a client pod of Deployment `frontend` (through its ReplicaSet).
    pub fn frontend(&self, pod: &Pod) {
        self.api.apply(pod.object(
            &self.net.a4,
            Some(("ReplicaSet", "frontend-5d8f7b9c6d")),
            Some("5d8f7b9c6d"),
        ));
    }

    /// Publishes a server pod of StatefulSet `db`.
    pub fn db(&self, pod: &Pod) {
        self.api
            .apply(pod.object(&self.net.b4, Some(("StatefulSet", "db")), None));
    }

    /// Starts the server pod's process (listening on every address); returns it and its port.
    pub fn server(&self, pod: &Pod, conns: usize) -> (Proc, String) {
        let mut srv = self.cg.spawn(
            &pod.cgroup,
            &mut peer_cmd(
                self.peer,
                Some(&self.net.b),
                &["tcp-server", "0.0.0.0:0", &conns.to_string()],
            ),
        );
        let port = srv.line("ready ");
        (srv, port)
    }

    /// A client pod's process: one connection, `send` bytes up and `reply` back; with `hold`,
    /// it then waits for that file and does a second exchange of the same sizes.
    pub fn client(
        &self,
        pod: &Pod,
        addr: &str,
        send: u64,
        reply: u64,
        hold: Option<&Path>,
    ) -> Proc {
        let (s, r) = (send.to_string(), reply.to_string());
        let mut args = vec!["tcp-client", addr, "1", "1", &s, &r];
        let h = hold.map(|p| p.to_string_lossy().to_string());
        if let Some(h) = &h {
            args.extend_from_slice(&[h.as_str(), &s, &r]);
        }
        self.cg.spawn(
            &pod.cgroup,
            &mut peer_cmd(self.peer, Some(&self.net.a), &args),
        )
    }
}
