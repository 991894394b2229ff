//! Network namespaces joined by a veth pair, and where a test places its processes in them.

use std::{os::fd::AsRawFd, process::Command, sync::atomic::Ordering};

use crate::cgroup::{COUNTER, unique};

/// Two network namespaces joined by a veth pair, with IPv4 and IPv6 addresses.
pub struct NetPair {
    pub a: String,
    pub b: String,
    pub a4: String,
    pub b4: String,
    pub a6: String,
    pub b6: String,
}

fn run(cmd: &str) {
    let st = Command::new("sh").args(["-c", cmd]).status().expect("sh");
    assert!(st.success(), "command failed: {cmd}");
}

impl NetPair {
    pub fn new() -> Self {
        let n = unique();
        let tag = format!(
            "{}{}",
            std::process::id() % 10000,
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let (a, b) = (format!("ssa{tag}"), format!("ssb{tag}"));
        let (va, vb) = (format!("sva{tag}"), format!("svb{tag}"));
        let (a4, b4) = (format!("10.251.{n}.1"), format!("10.251.{n}.2"));
        let (a6, b6) = (format!("fd51:{n:x}::1"), format!("fd51:{n:x}::2"));
        run(&format!(
            "ip netns add {a} && ip netns add {b} && ip link add {va} type veth peer name {vb} && \
             ip link set {va} netns {a} && ip link set {vb} netns {b} && \
             ip -n {a} link set lo up && ip -n {b} link set lo up && \
             ip -n {a} addr add {a4}/24 dev {va} && ip -n {b} addr add {b4}/24 dev {vb} && \
             ip -n {a} addr add {a6}/64 dev {va} nodad && ip -n {b} addr add {b6}/64 dev {vb} nodad && \
             ip -n {a} link set {va} up && ip -n {b} link set {vb} up"
        ));
        NetPair {
            a,
            b,
            a4,
            b4,
            a6,
            b6,
        }
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.a]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.b]).status();
    }
}

impl Default for NetPair {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a test's server and client run: loopback, or the two ends of a veth pair.
pub struct Placement<'a> {
    /// Network namespace of the server (None: this one).
    pub server_ns: Option<&'a str>,
    /// Network namespace of the client.
    pub client_ns: Option<&'a str>,
    /// Server bind address with port 0.
    pub bind: String,
    /// Host part of the address the client connects to (brackets for IPv6).
    pub host: String,
    /// Expected `remote_class` on both ends.
    pub class: &'static str,
}

impl<'a> Placement<'a> {
    pub fn new(net: Option<&'a NetPair>, v6: bool) -> Self {
        let (server_ns, client_ns, host, class) = match net {
            None if v6 => (None, None, "[::1]".to_string(), "loopback"),
            None => (None, None, "127.0.0.1".to_string(), "loopback"),
            Some(n) if v6 => (
                Some(n.b.as_str()),
                Some(n.a.as_str()),
                format!("[{}]", n.b6),
                "private",
            ),
            Some(n) => (
                Some(n.b.as_str()),
                Some(n.a.as_str()),
                n.b4.clone(),
                "private",
            ),
        };
        Placement {
            server_ns,
            client_ns,
            bind: format!("{host}:0"),
            host,
            class,
        }
    }
}

/// One network namespace with only loopback up (a pod's, before any CNI): `ip netns add`,
/// deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!(
            "ss{tag}{}{}",
            std::process::id() % 10000,
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        run(&format!(
            "ip netns add {name} && ip -n {name} link set lo up"
        ));
        Netns { name }
    }

    /// Its nsfs path, as podman's `--network ns:<path>` takes it.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `f` on a thread of its own inside network namespace `ns` (a name under /run/netns):
/// e.g. to reach a server that listens only there. Only that thread changes namespace.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("network namespace");
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns(2) on this thread only, with an nsfs fd that stays open meanwhile.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in the namespace")
    })
}
