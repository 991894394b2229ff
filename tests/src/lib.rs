//! Harness for sockscope's end-to-end tests: real cgroups, network namespaces, veth pairs,
//! processes, and the real `sockscope` binary attached to the test's own cgroup.
//!
//! Every test makes its own cgroup subtree under `<cgroup2>/sockscope-e2e/`, runs its own agent
//! attached there, and only ever sees series of its own processes, so tests run in parallel.

pub mod dns;
pub mod kube;
pub mod kubeapi;
pub mod pki;

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

/// The cgroup v2 mount (hybrid hosts mount it at /sys/fs/cgroup/unified).
pub fn cgroup2_mount() -> PathBuf {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    for line in mountinfo.lines() {
        if let Some((left, right)) = line.split_once(" - ")
            && right.starts_with("cgroup2 ")
            && let Some(mp) = left.split_whitespace().nth(4)
        {
            return PathBuf::from(mp);
        }
    }
    panic!("no cgroup2 mount: these tests need cgroup v2");
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A per-test unique small number (for names and addresses).
pub fn unique() -> u32 {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    (std::process::id().wrapping_mul(31).wrapping_add(n * 7)) % 250 + 1
}

/// A fresh path in the temp directory, for a file a test creates to signal a child (a fault
/// trigger, a hold file): unique to this process and call, and absent.
pub fn signal_file(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let p = std::env::temp_dir().join(format!("sockscope-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// Path of the sockscope binary: $SOCKSCOPE_BIN, else next to the peer binary.
pub fn sockscope_bin(peer: &str) -> PathBuf {
    if let Ok(p) = std::env::var("SOCKSCOPE_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(peer).with_file_name("sockscope");
    assert!(
        p.exists(),
        "{} missing: build it first (cargo build -p sockscope)",
        p.display()
    );
    p
}

/// A test's own cgroup subtree: `root` is what sockscope attaches to, children hold processes.
pub struct TestCgroup {
    pub root: PathBuf,
}

impl TestCgroup {
    pub fn new(name: &str) -> Self {
        let base = cgroup2_mount().join("sockscope-e2e");
        let _ = fs::create_dir_all(&base);
        let root = base.join(format!(
            "{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&root).expect("create test cgroup");
        TestCgroup { root }
    }

    /// Creates (if needed) child cgroup `child` and returns its path.
    pub fn child(&self, child: &str) -> PathBuf {
        let p = self.root.join(child);
        fs::create_dir_all(&p).expect("create child cgroup");
        p
    }

    /// Spawns `cmd` inside child cgroup `child` (moved there before exec).
    pub fn spawn(&self, child: &str, cmd: &mut Command) -> Proc {
        self.move_before_exec(cmd, child);
        Proc::spawn(cmd)
    }

    /// Makes `cmd` move itself into child cgroup `child` between fork and exec.
    pub fn move_before_exec(&self, cmd: &mut Command, child: &str) {
        let procs = self.child(child).join("cgroup.procs");
        let procs_c = std::ffi::CString::new(procs.to_string_lossy().as_bytes()).expect("path");
        // SAFETY: only async-signal-safe libc calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs_c.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let r = libc::write(fd, b"0\n".as_ptr().cast(), 2);
                libc::close(fd);
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Kill whatever is left, then remove the tree bottom-up.
        let _ = fs::write(self.root.join("cgroup.kill"), "1");
        for _ in 0..50 {
            let mut dirs = vec![];
            collect_dirs(&self.root, &mut dirs);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            let mut ok = true;
            for d in dirs {
                if fs::remove_dir(&d).is_err() {
                    ok = false;
                }
            }
            if ok {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

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
/// [`Agent::start_in_mode`]): what this kernel supports, and the fallback for kernels without
/// iterators.
#[macro_export]
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn iterator() {
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

/// A running sockscope agent.
pub struct Agent {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
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

/// A free port below the ephemeral range, like a real service's: the role of an adopted
/// connection is inferred from which end's port the kernel picked from that range, and a
/// server listening on port 0 gets one from that range too.
pub fn service_port() -> u16 {
    let start = 20000
        + (std::process::id() % 4000) as u16
        + (COUNTER.fetch_add(1, Ordering::SeqCst) % 1000) as u16 * 7;
    (start..32000)
        .chain(20000..start)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port below 32768")
}

/// curl's HTTP status for `url` with extra `args` ("000" when the connection or TLS failed).
pub fn curl_status(args: &[&str], url: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("curl (installed by scripts/setup.sh)");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Agent {
    /// Starts sockscope attached to `cgroup_root` and waits until /readyz says ready.
    pub fn start(peer: &str, cgroup_root: &Path, extra: &[&str]) -> Self {
        Self::start_wrapped(peer, &[], cgroup_root, extra)
    }

    /// Starts sockscope with `--tcp-accounting mode` (see [`both_modes`]), checked to be in
    /// that mode: `iterator` (TCP by the socket iterator, UDP batched per socket) or
    /// `per-packet` (every packet counted as it passes).
    pub fn start_in_mode(peer: &str, cgroup_root: &Path, mode: &str) -> Self {
        let agent = Self::start(peer, cgroup_root, &["--tcp-accounting", mode]);
        let m = Metrics::parse(&agent.scrape());
        let attached = m.sum(
            "sockscope_bpf_program_attached",
            &[("program", "sockscope_tcp_iter")],
        );
        assert_eq!(
            attached,
            if mode == "iterator" { 1.0 } else { 0.0 },
            "{mode}"
        );
        agent
    }

    /// Like [`Agent::start`], with sockscope run by `wrapper` (e.g. setpriv with fewer
    /// capabilities) when it is not empty.
    pub fn start_wrapped(peer: &str, wrapper: &[&str], cgroup_root: &Path, extra: &[&str]) -> Self {
        Self::start_with(peer, wrapper, cgroup_root, "300ms", extra)
    }

    /// Like [`Agent::start_wrapped`], draining every `interval` (e.g. "5s").
    pub fn start_with(
        peer: &str,
        wrapper: &[&str],
        cgroup_root: &Path,
        interval: &str,
        extra: &[&str],
    ) -> Self {
        let port = free_port();
        let log =
            std::env::temp_dir().join(format!("sockscope-e2e-{}-{port}.log", std::process::id()));
        let logf = fs::File::create(&log).expect("log file");
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(sockscope_bin(peer));
                c
            }
            None => Command::new(sockscope_bin(peer)),
        };
        let child = cmd
            .args([
                "--listen-address",
                &format!("127.0.0.1:{port}"),
                "--interval",
                interval,
            ])
            .arg("--cgroup-root")
            .arg(cgroup_root)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn sockscope");
        let agent = Agent { child, port, log };
        // Over TLS or behind basic auth the test checks readiness itself.
        if extra.iter().any(|a| a.starts_with("--web-config-file")) {
            return agent;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_get(port, "/readyz", None) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sockscope not ready in 30s; log:\n{}",
                agent.log_text()
            );
            thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Scrapes /metrics (Prometheus text).
    pub fn scrape(&self) -> String {
        match http_get(self.port, "/metrics", None) {
            Ok((200, body)) => body,
            other => panic!("scrape failed: {other:?}"),
        }
    }

    /// Polls until `f(metrics)` holds, or panics with the last scrape after `timeout`.
    pub fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        f: impl Fn(&Metrics) -> bool,
    ) -> Metrics {
        let deadline = Instant::now() + timeout;
        loop {
            let m = Metrics::parse(&self.scrape());
            if f(&m) {
                return m;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; last scrape:\n{}\nlog:\n{}",
                    m.dump(),
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Number of drains the agent has completed, from its exposition.
    pub fn drains(&self) -> f64 {
        Metrics::parse(&self.scrape()).sum("sockscope_drain_duration_seconds_count", &[])
    }

    /// With the agent started with `--fault drain-pause=<file>`: creates `file` and returns
    /// once the drain thread is paused (no drain for a while), so everything until
    /// [`Agent::resume_drains`] lands in one drain interval, however long it takes.
    pub fn pause_drains(&self, file: &Path) {
        fs::write(file, b"").expect("pause file");
        let mut last = self.drains();
        let mut still = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while still < 3 {
            assert!(Instant::now() < deadline, "drains did not pause");
            thread::sleep(Duration::from_millis(400));
            let now = self.drains();
            if now == last {
                still += 1;
            } else {
                still = 0;
                last = now;
            }
        }
    }

    /// Removes the pause file; the drains go on.
    pub fn resume_drains(&self, file: &Path) {
        let _ = fs::remove_file(file);
    }

    /// Sends SIGTERM and waits for exit.
    pub fn terminate(mut self) -> ExitStatus {
        // SAFETY: plain kill(2) on our child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let st = wait_timeout(&mut self.child, Duration::from_secs(20))
            .expect("sockscope did not exit on SIGTERM");
        std::mem::forget(self);
        st
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// Minimal HTTP/1.0 GET against 127.0.0.1:port.
pub fn http_get(port: u16, path: &str, accept: Option<&str>) -> std::io::Result<(u16, String)> {
    let (status, _, body) = http_get_full(port, path, accept)?;
    Ok((status, body))
}

/// GET returning (status, headers, body).
pub fn http_get_full(
    port: u16,
    path: &str,
    accept: Option<&str>,
) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{accept}\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, head.to_string(), body.to_string()))
}

/// Parsed samples: metric name -> list of (labels, value).
pub struct Metrics {
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (name_labels, value) = match line.rsplit_once(' ') {
                Some(x) => x,
                None => continue,
            };
            let value: f64 = match value.parse() {
                Ok(v) => v,
                Err(_) => continue,
            };
            let (name, labels) = match name_labels.split_once('{') {
                Some((n, rest)) => (n.to_string(), parse_labels(rest.trim_end_matches('}'))),
                None => (name_labels.to_string(), BTreeMap::new()),
            };
            samples.push((name, labels, value));
        }
        Metrics { samples }
    }

    /// Sum of samples of `name` whose labels include all of `want`.
    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.matching(name, want).map(|(_, v)| v).sum()
    }

    /// Samples of `name` matching `want`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        want: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a BTreeMap<String, String>, f64)> + 'a {
        self.samples
            .iter()
            .filter(move |(n, l, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, l, v)| (l, *v))
    }

    pub fn dump(&self) -> String {
        self.samples
            .iter()
            .filter(|(n, _, _)| {
                n.starts_with("sockscope_tcp")
                    || n.starts_with("sockscope_udp")
                    || n.starts_with("sockscope_events")
                    || (n.starts_with("sockscope_dns") && !n.contains("_bucket"))
                    || n.starts_with("sockscope_series")
                    || n.starts_with("sockscope_kubernetes")
                    || n.starts_with("sockscope_metadata")
            })
            .map(|(n, l, v)| format!("{n}{l:?} {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once("=\"") {
        let mut val = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        val.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => val.push(c),
            }
        }
        out.insert(k.trim_start_matches(',').trim().to_string(), val);
        rest = after[end..].trim_start_matches(',');
    }
    out
}

/// Runs `promtool check metrics` on an exposition and fails the test on any complaint.
pub fn promtool_check_metrics(body: &str) {
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().expect("stdin").write_all(body.as_bytes())?;
            c.wait_with_output()
        })
        .expect("run promtool (installed by scripts/setup.sh)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}"
    );
}

/// Network namespace cookies the kernel recorded for the cgroup at `dir` in the `CGROUP_NETNS`
/// maps of the running agents (`bpftool map dump`), as raw values.
pub fn kernel_cgroup_netns(dir: &Path) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    let id = fs::metadata(dir).expect("cgroup dir").ino();
    let out = Command::new("bpftool")
        .args(["map", "dump", "name", "CGROUP_NETNS", "-j"])
        .output()
        .expect("bpftool (installed by scripts/setup.sh)");
    let text = String::from_utf8_lossy(&out.stdout);
    // [{"key":["0x39",...],"value":["0x03",...]}, ...]: 8 little-endian bytes each.
    let bytes = |s: &str| -> u64 {
        let v: Vec<u8> = s
            .split(',')
            .filter_map(|b| {
                u8::from_str_radix(b.trim().trim_matches('"').trim_start_matches("0x"), 16).ok()
            })
            .collect();
        v.iter().rev().fold(0u64, |a, b| (a << 8) | *b as u64)
    };
    let mut found = Vec::new();
    for entry in text.split("{\"key\":[").skip(1) {
        let Some((key, rest)) = entry.split_once(']') else {
            continue;
        };
        let Some(value) = rest
            .split_once("\"value\":[")
            .and_then(|(_, v)| v.split_once(']'))
        else {
            continue;
        };
        if bytes(key) == id {
            found.push(bytes(value.0));
        }
    }
    found
}

/// Percent-encodes a query-string value (RFC 3986 unreserved characters kept).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The virtualenv scripts/setup.sh makes (kubernetes-validate, PyYAML): $SOCKSCOPE_VENV or
/// /var/cache/sockscope/venv.
pub fn venv() -> PathBuf {
    std::env::var_os("SOCKSCOPE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/sockscope/venv"))
}
