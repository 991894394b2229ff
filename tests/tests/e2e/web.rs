//! The HTTP endpoint with a web config: TLS with the right CA only, basic auth that refuses
//! wrong and missing passwords, and Debian's Prometheus scraping sockscope through both.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use sockscope_tests::{Agent, TestCgroup, free_port};

const PEER: &str = env!("CARGO_BIN_EXE_sockscope-peer");

use sockscope_tests::pki::{pki, sh};

fn web_config(dir: &Path, password: &str) -> PathBuf {
    sockscope_tests::pki::web_config(dir, true, password)
}

/// curl's HTTP status for `url` ("000" when the connection or TLS failed).
fn curl(args: &[&str], url: &str) -> String {
    sockscope_tests::curl_status(args, url)
}

#[test]
fn tls_and_basic_auth() {
    let pki = pki("auth");
    let cfg = web_config(&pki.0, "s3cret");
    let cg = TestCgroup::new("web-auth");
    let agent = Agent::start(
        PEER,
        &cg.root,
        &[&format!("--web-config-file={}", cfg.display())],
    );
    let url = format!("https://127.0.0.1:{}/metrics", agent.port);
    let ca = pki.0.join("ca.crt");
    let ca = ca.to_str().expect("utf-8");
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl(
        &["--cacert", ca, "-u", "prom:s3cret"],
        &url.replace("/metrics", "/readyz"),
    ) != "200"
    {
        assert!(
            Instant::now() < deadline,
            "not ready over TLS: {}",
            agent.log_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(curl(&["--cacert", ca, "-u", "prom:s3cret"], &url), "200");
    assert_eq!(curl(&["--cacert", ca], &url), "401", "missing password");
    // The probes need no credentials: they carry no data. As the kubelet asks (no certificate
    // check, no Authorization header), and with the CA.
    for path in ["/healthz", "/readyz"] {
        let probe = url.replace("/metrics", path);
        assert_eq!(curl(&["-k"], &probe), "200", "{path}");
        assert_eq!(curl(&["--cacert", ca], &probe), "200", "{path}");
    }
    // Any other path needs them, even one that does not exist.
    assert_eq!(
        curl(&["--cacert", ca], &url.replace("/metrics", "/nope")),
        "401"
    );
    assert_eq!(
        curl(&["--cacert", ca, "-u", "prom:wrong"], &url),
        "401",
        "wrong password"
    );
    assert_eq!(
        curl(&["--cacert", ca, "-u", "mallory:s3cret"], &url),
        "401",
        "unknown user"
    );
    let other = pki.0.join("other.crt");
    assert_eq!(
        curl(
            &[
                "--cacert",
                other.to_str().expect("utf-8"),
                "-u",
                "prom:s3cret"
            ],
            &url
        ),
        "000",
        "wrong CA must fail the handshake"
    );
    assert_eq!(
        curl(&["-u", "prom:s3cret"], &url.replace("https", "http")),
        "000",
        "plain HTTP to the TLS port"
    );
    // The body is the exposition.
    let out = Command::new("curl")
        .args(["-s", "--cacert", ca, "-u", "prom:s3cret", &url])
        .output()
        .expect("curl");
    assert!(String::from_utf8_lossy(&out.stdout).contains("sockscope_build_info"));
    // A bad web config fails at start with one line naming the key.
    let bad = pki.0.join("bad.yaml");
    std::fs::write(&bad, "basic_auth_users:\n  prom: hunter2\n").expect("write");
    let out = Command::new(sockscope_tests::sockscope_bin(PEER))
        .args(["--listen-address", "127.0.0.1:0", "--web-config-file"])
        .arg(&bad)
        .arg("--cgroup-root")
        .arg(&cg.root)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("basic_auth_users.prom: not a bcrypt hash"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_scrapes_through_tls_and_basic_auth() {
    let pki = pki("prom");
    let cfg = web_config(&pki.0, "pr0m-pass");
    let cg = TestCgroup::new("web-prom");
    let agent = Agent::start(
        PEER,
        &cg.root,
        &[&format!("--web-config-file={}", cfg.display())],
    );
    let prom_port = free_port();
    let prom_cfg = pki.0.join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sockscope\n    scheme: https\n    \
             tls_config:\n      ca_file: {d}/ca.crt\n    basic_auth:\n      username: prom\n      password: pr0m-pass\n    \
             static_configs:\n      - targets: ['127.0.0.1:{p}']\n",
            d = pki.0.display(),
            p = agent.port
        ),
    )
    .expect("prometheus.yml");
    let _prom = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!("--storage.tsdb.path={}/data", pki.0.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (installed by scripts/setup.sh)"),
    );
    let query = |q: &str| -> String {
        sockscope_tests::http_get(prom_port, &format!("/api/v1/query?query={q}"), None)
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = query("up%7Bjob%3D%22sockscope%22%7D");
        let info = query("sockscope_build_info");
        if up.contains("\"value\":[")
            && up.contains(",\"1\"]")
            && info.contains("sockscope_build_info")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape sockscope: up={up} info={info}; log: {}",
            agent.log_text()
        );
        thread::sleep(Duration::from_millis(500));
    }
}

/// Opens a client with a 4 KiB receive buffer that asks for /metrics and does not read.
fn stalled_scrape(port: u16) -> std::net::TcpStream {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2)/setsockopt(2)/connect(2) on a fresh fd owned by the TcpStream.
    let mut slow = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let small: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            4,
        );
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
            },
            sin_zero: [0; 8],
        };
        assert_eq!(
            libc::connect(
                fd,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32
            ),
            0
        );
        std::net::TcpStream::from_raw_fd(fd)
    };
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: sockscope\r\n\r\n")
        .expect("request");
    slow
}

/// Waits until the response to a stalled scrape has begun arriving (its status line, looked at
/// without reading it): from then on the scrape holds its slot. Returns the status line.
fn response_started(s: &std::net::TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = s.peek(&mut buf).expect("peek");
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if let Some((line, _)) = text.split_once("\r\n") {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "no response: {text:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Reads what `s` has until EOF, an error, or a complete 4 MB body; returns the bytes read.
fn drain(s: &mut std::net::TcpStream) -> usize {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        total += n;
        if buf[..n].ends_with(b"# EOF\n") || (buf[..n].ends_with(b"\n") && total > 4_000_000) {
            break;
        }
    }
    total
}

/// A scrape whose client reads slowly holds its slot until the body is sent: with
/// `--web-max-requests 1`, another scrape meanwhile gets 503, and one after it 200. A client
/// that stops reading altogether is cut after `--web-timeout`, which frees the slot.
#[test]
fn concurrent_scrape_cap() {
    // 20,000 flow series make a 4 MB exposition, more than the kernel buffers between a
    // server and a client that does not read.
    let tag = format!("sscap{}", std::process::id() % 10000);
    sh(
        &format!(
            "ip netns add {tag} && ip -n {tag} link set lo up && ip -n {tag} route add local 10.200.0.0/14 dev lo table local"
        ),
        Path::new("/"),
    );
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _ns = Ns(tag.clone());
    let cg = TestCgroup::new("web-cap");
    // Budgets and the per-cgroup flow share opened up: 20,000 peers of one workload, each
    // its own series, however fast the spray.
    // Long enough for the first slow reader to read its 4 MB on a loaded machine.
    let timeout = Duration::from_secs(8);
    let agent = Agent::start(
        PEER,
        &cg.root,
        &[
            "--label-remote-ip",
            "--web-max-requests",
            "1",
            "--web-timeout",
            "8s",
            "--max-remote-ips-per-workload",
            "100000",
            "--max-flows-per-cgroup",
            "65536",
        ],
    );
    let mut spray = cg.spawn(
        "spray",
        &mut sockscope_tests::peer_cmd(PEER, Some(&tag), &["udp-spray", "20000"]),
    );
    spray.line("sent ");
    spray.wait_ok();
    // Every datagram a series of its own, or folded: a burst of new flows can outrun the
    // kernel's refill of its entry caches (flow_alloc_failed) on a busy machine.
    let m = agent.wait_until(Duration::from_secs(60), "20,000 peers accounted", |m| {
        let folded = m.sum("sockscope_events_folded_total", &[]);
        m.matching("sockscope_udp_sent_bytes_total", &[]).count() as f64 + folded >= 20_000.0
    });
    assert!(
        m.matching("sockscope_udp_sent_bytes_total", &[]).count() >= 19_000,
        "most peers have a series of their own:\n{}",
        m.dump()
    );

    // A slow reader holds the only slot; it reads its body in time, then the slot is free.
    let mut slow = stalled_scrape(agent.port);
    assert_eq!(response_started(&slow), "HTTP/1.1 200 OK");
    let (code, _) = sockscope_tests::http_get(agent.port, "/metrics", None).expect("second scrape");
    assert_eq!(code, 503, "a second concurrent scrape");
    let (code, _) = sockscope_tests::http_get(agent.port, "/healthz", None).expect("healthz");
    assert_eq!(code, 200, "other paths are not capped");
    assert!(
        drain(&mut slow) > 4_000_000,
        "the slow reader gets its body"
    );
    drop(slow);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _) = sockscope_tests::http_get(agent.port, "/metrics", None).expect("scrape");
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "slot not freed");
        thread::sleep(Duration::from_millis(100));
    }

    // A reader that stops: cut once --web-timeout passes, without reading a byte more.
    let started = Instant::now();
    let mut stuck = stalled_scrape(agent.port);
    assert_eq!(response_started(&stuck), "HTTP/1.1 200 OK");
    let freed = loop {
        let (code, _) = sockscope_tests::http_get(agent.port, "/metrics", None).expect("scrape");
        if code == 200 {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < timeout + Duration::from_secs(10),
            "the stuck reader kept the slot"
        );
        thread::sleep(Duration::from_millis(200));
    };
    assert!(
        freed >= timeout - Duration::from_millis(500),
        "freed after {freed:?}"
    );
    assert!(
        drain(&mut stuck) < 4_000_000,
        "the stuck reader's response was cut"
    );
    let m = agent.wait_until(Duration::from_secs(10), "counted refusals", |m| {
        m.sum("sockscope_web_refused_total", &[("reason", "timeout")]) >= 1.0
    });
    assert!(m.sum("sockscope_web_refused_total", &[("reason", "requests")]) >= 1.0);
}

/// At most `--web-max-connections` are open: one more is closed at once. Idle connections end
/// after `--web-timeout`, so the slots come back.
#[test]
fn open_connections_are_capped() {
    use std::io::{Read, Write};
    let cg = TestCgroup::new("web-conns");
    let agent = Agent::start(
        PEER,
        &cg.root,
        &["--web-max-connections", "3", "--web-timeout", "2s"],
    );
    let idle: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", agent.port)).expect("connect"))
        .collect();
    thread::sleep(Duration::from_millis(300));
    let mut extra = std::net::TcpStream::connect(("127.0.0.1", agent.port)).expect("connect");
    let t0 = Instant::now();
    let _ = extra.write_all(b"GET /healthz HTTP/1.0\r\n\r\n");
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let got = extra.read(&mut buf).unwrap_or(0);
    assert_eq!(got, 0, "a connection past the cap is closed, unanswered");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    // The idle ones are closed by the server after the header timeout.
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        assert_eq!(c.read(&mut buf).unwrap_or(0), 0, "idle connection closed");
    }
    let (code, _) = sockscope_tests::http_get(agent.port, "/healthz", None).expect("healthz");
    assert_eq!(code, 200);
    agent.wait_until(Duration::from_secs(10), "counted", |m| {
        m.sum("sockscope_web_refused_total", &[("reason", "connections")]) >= 1.0
    });
}

/// Wrong passwords sent by the dozen: at most a few bcrypt verifications run at once, the rest
/// are refused at once (503), and the probes stay fast.
#[test]
fn logins_are_bounded() {
    let dir = sockscope_tests::pki::Dir(std::env::temp_dir().join(format!(
        "sockscope-web-logins-{}-{}",
        std::process::id(),
        sockscope_tests::unique()
    )));
    std::fs::create_dir_all(&dir.0).expect("dir");
    let hash = sockscope_tests::pki::bcrypt_hash("s3cret", 11);
    let cfg = dir.0.join("web.yaml");
    std::fs::write(&cfg, format!("basic_auth_users:\n  prom: {hash}\n")).expect("write");
    let cg = TestCgroup::new("web-logins");
    let agent = Agent::start(
        PEER,
        &cg.root,
        &[&format!("--web-config-file={}", cfg.display())],
    );
    let url = format!("http://127.0.0.1:{}/metrics", agent.port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl(&[], &url.replace("/metrics", "/readyz")) != "200" {
        assert!(Instant::now() < deadline, "not ready: {}", agent.log_text());
        thread::sleep(Duration::from_millis(100));
    }
    let storm: Vec<_> = (0..16)
        .map(|i| {
            let url = url.clone();
            thread::spawn(move || {
                let t = Instant::now();
                let code = curl(&["-u", &format!("user{}:guess", i % 2)], &url);
                (code, t.elapsed())
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    assert_eq!(curl(&[], &url.replace("/metrics", "/healthz")), "200");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let results: Vec<(String, Duration)> =
        storm.into_iter().map(|h| h.join().expect("join")).collect();
    let refused: Vec<&Duration> = results
        .iter()
        .filter(|(c, _)| c == "503")
        .map(|(_, d)| d)
        .collect();
    let unauthorized = results.iter().filter(|(c, _)| c == "401").count();
    assert!(!refused.is_empty(), "{results:?}");
    assert!(unauthorized >= 1, "{results:?}");
    assert_eq!(refused.len() + unauthorized, results.len(), "{results:?}");
    // The right password still works (one verification, then cached), and the refusals are
    // counted by reason.
    let deadline = Instant::now() + Duration::from_secs(20);
    let m = loop {
        let out = Command::new("curl")
            .args(["-s", "-u", "prom:s3cret", &url])
            .output()
            .expect("curl");
        let m = sockscope_tests::Metrics::parse(&String::from_utf8_lossy(&out.stdout));
        if m.sum("sockscope_web_refused_total", &[("reason", "logins")]) >= 1.0 {
            break m;
        }
        assert!(Instant::now() < deadline, "refusals not counted");
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        m.sum("sockscope_web_refused_total", &[("reason", "unauthorized")]),
        unauthorized as f64
    );
    drop(agent);
}
