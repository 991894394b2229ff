//! The real sockscope binary, started against a test cgroup, scraped and stopped.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::Ordering,
    thread,
    time::{Duration, Instant},
};

use crate::{
    cgroup::{COUNTER, TestCgroup},
    exposition::Metrics,
    http::http_get,
    process::wait_timeout,
};

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

/// A running sockscope agent.
pub struct Agent {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
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

/// Why this kernel cannot count TCP by the socket iterator, or `None` where it can. Asked of
/// the agent itself once per test binary: started in `auto` mode against a cgroup of its own,
/// it reports the iterator in `sockscope_bpf_program_attached` and, when it falls back to
/// per-packet counting, logs why (e.g. a verifier that refuses socket storage for the
/// iterator's sockets).
pub fn iterator_unavailable(peer: &str) -> Option<&'static str> {
    static WHY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    WHY.get_or_init(|| {
        let cg = TestCgroup::new("iterator-probe");
        let agent = Agent::start(peer, &cg.root, &["--tcp-accounting", "auto"]);
        let m = Metrics::parse(&agent.scrape());
        let attached = m.sum(
            "sockscope_bpf_program_attached",
            &[("program", "sockscope_tcp_iter")],
        );
        if attached == 1.0 {
            return None;
        }
        // The warning names the program and the kernel's reason (the verifier's verdict).
        let log = agent.log_text();
        Some(
            log.lines()
                .find_map(|l| l.split_once("TCP counted per packet").map(|(_, why)| why))
                .map(|why| why.split_once("): ").map_or(why, |(_, why)| why))
                .unwrap_or("the agent fell back to per-packet counting")
                .to_string(),
        )
    })
    .as_deref()
}

/// Reports a test skipped for `why` on stderr, past libtest's capture (it captures only the
/// print macros), so the run's log and `scripts/test.sh`'s summary show it even when the test
/// passes.
pub fn skip(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {test}: {why}");
}

/// The virtualenv scripts/setup.sh makes (kubernetes-validate, PyYAML): $SOCKSCOPE_VENV or
/// /var/cache/sockscope/venv.
pub fn venv() -> PathBuf {
    std::env::var_os("SOCKSCOPE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/sockscope/venv"))
}
