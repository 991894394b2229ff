//! Processes under test: children in a test cgroup (optionally in a network namespace), the
//! traffic peer's command lines, and what /proc says of a process's threads.

use std::{
    fs,
    io::{BufRead, BufReader},
    process::{Child, ChildStdout, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::cgroup::TestCgroup;

/// A child process with line-oriented stdout.
pub struct Proc {
    pub child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Proc { child, stdout }
    }

    /// Reads lines until one starts with `prefix`; returns the rest of it.
    pub fn line(&mut self, prefix: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).expect("read child stdout");
            assert!(n > 0, "child exited before printing {prefix:?}");
            if let Some(rest) = line.trim_end().strip_prefix(prefix) {
                return rest.trim().to_string();
            }
        }
    }

    /// Reads a `<prefix>sent <n> received <m>` line, e.g. prefix "" for the final totals or
    /// "exchanged " for a holding client's first report.
    pub fn totals(&mut self, prefix: &str) -> (u64, u64) {
        let rest = self.line(&format!("{prefix}sent "));
        let parts: Vec<&str> = rest.split_whitespace().collect();
        (
            parts[0].parse().expect("sent count"),
            parts[2].parse().expect("received count"),
        )
    }

    pub fn wait_ok(&mut self) {
        let st = self.child.wait().expect("wait");
        assert!(st.success(), "child failed: {st}");
    }
}

/// Tests that run in both accounting modes: `both_modes!(a, b)` makes `a::iterator`,
/// `a::per_packet`, ..., each calling `a("iterator")` or `a("per-packet")` (see
/// [`Agent::start_in_mode`]): the socket iterator, and the per-packet fallback for kernels
/// without it. On a kernel that refuses the iterator, the `iterator` variants are skipped with
/// the kernel's reason ([`crate::iterator_unavailable`]); the fallback runs everywhere.
#[macro_export]
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn iterator() {
                if let Some(why) =
                    $crate::iterator_unavailable(env!("CARGO_BIN_EXE_sockscope-peer"))
                {
                    $crate::skip(
                        concat!(module_path!(), "::iterator"),
                        &format!("this kernel cannot count TCP by the socket iterator: {why}"),
                    );
                    return;
                }
                super::$name("iterator")
            }
            #[test]
            fn per_packet() {
                super::$name("per-packet")
            }
        }
    )*};
}

/// The peer binary invoked (optionally) inside a network namespace.
pub fn peer_cmd(peer: &str, netns: Option<&str>, args: &[&str]) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, peer]).args(args);
            c
        }
        None => {
            let mut c = Command::new(peer);
            c.args(args);
            c
        }
    }
}

/// A UDP server in child cgroup `server` and a client in `client` over loopback: `count`
/// datagrams of `size` bytes, each answered with `reply` bytes. Waits for both; returns the
/// server's port and the client's (sent, received).
pub fn udp_exchange(
    cg: &TestCgroup,
    peer: &str,
    (server, client): (&str, &str),
    count: u64,
    size: u64,
    reply: u64,
) -> (String, (u64, u64)) {
    let mut srv = cg.spawn(
        server,
        &mut peer_cmd(
            peer,
            None,
            &[
                "udp-server",
                "127.0.0.1:0",
                &count.to_string(),
                &reply.to_string(),
            ],
        ),
    );
    let port = srv.line("ready ");
    let mut cli = cg.spawn(
        client,
        &mut peer_cmd(
            peer,
            None,
            &[
                "udp-client",
                &format!("127.0.0.1:{port}"),
                &count.to_string(),
                &size.to_string(),
            ],
        ),
    );
    let totals = cli.totals("");
    srv.totals("");
    cli.wait_ok();
    srv.wait_ok();
    (port, totals)
}

/// Field `name` (e.g. "NoNewPrivs", "CapBnd") of every thread of process `pid`, as written.
pub fn thread_status(pid: u32, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
    {
        let status = fs::read_to_string(task.path().join("status")).unwrap_or_default();
        if let Some(line) = status.lines().find(|l| l.starts_with(&format!("{name}:"))) {
            out.push(line[name.len() + 1..].trim().to_string());
        }
    }
    out
}

/// CapEff of every thread of process `pid`.
pub fn thread_capabilities(pid: u32) -> Vec<u64> {
    let mut caps = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
    {
        let status = fs::read_to_string(task.path().join("status")).unwrap_or_default();
        if let Some(line) = status.lines().find(|l| l.starts_with("CapEff:")) {
            caps.push(
                u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).expect("hex"),
            );
        }
    }
    caps
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
