//! A real DNS server for the DNS tests: unbound in its own network namespace, serving the test
//! zone `sockscope.test` over IPv4 and IPv6, with a forward zone `broken.test` whose upstream is
//! unreachable (SERVFAIL). Clients run in the other namespace of the pair, whose
//! /etc/resolv.conf (via /etc/netns/<ns>/resolv.conf, bind-mounted by `ip netns exec`) points
//! at the server.

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{NetPair, TestCgroup};

/// The zone every server serves.
pub const ZONE: &str = "sockscope.test";

/// A running unbound and the namespaces around it.
pub struct DnsServer {
    /// net.a: clients; net.b: the server.
    pub net: NetPair,
    /// Address clients query (IPv4 or IPv6, without brackets).
    pub addr: String,
    dir: PathBuf,
    child: Child,
}

impl DnsServer {
    /// Starts unbound with `records` (owner relative to the zone, type, data) added to the zone.
    /// In the data, `{server4}` and `{server6}` stand for the server's addresses. Clients use
    /// IPv6 transport when `v6`.
    pub fn start(records: &[(&str, &str, &str)], v6: bool) -> Self {
        Self::start_in(records, v6, None)
    }

    /// Like [`DnsServer::start`], with unbound running in child cgroup `resolver` of `cgroup`
    /// (a resolver workload on the node sockscope watches).
    pub fn start_in(records: &[(&str, &str, &str)], v6: bool, cgroup: Option<&TestCgroup>) -> Self {
        let net = NetPair::new();
        let dir = std::env::temp_dir().join(format!("sockscope-dns-{}", net.b));
        fs::create_dir_all(&dir).expect("dns dir");
        let mut zone = format!(
            "$ORIGIN {ZONE}.\n$TTL 300\n@ IN SOA ns admin 1 3600 600 86400 300\n@ IN NS ns\nns IN A {}\n",
            net.b4
        );
        for (owner, kind, data) in records {
            let data = data
                .replace("{server4}", &net.b4)
                .replace("{server6}", &net.b6);
            zone.push_str(&format!("{owner} IN {kind} {data}\n"));
        }
        fs::write(dir.join("zone"), zone).expect("zone file");
        let conf = format!(
            r#"server:
  interface: {b4}
  interface: {b6}
  port: 53
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  access-control: 0.0.0.0/0 allow
  access-control: ::/0 allow
  module-config: "iterator"
  num-threads: 1
  so-reuseport: no
  # test. is a special-use zone unbound answers NXDOMAIN for by default.
  local-zone: "test." nodefault
auth-zone:
  name: "{ZONE}."
  zonefile: "{dir}/zone"
  for-downstream: yes
  for-upstream: no
forward-zone:
  # No route to this address in the server's namespace: SERVFAIL at once.
  name: "broken.test."
  forward-addr: 192.0.2.1
remote-control:
  control-enable: no
"#,
            b4 = net.b4,
            b6 = net.b6,
            dir = dir.display(),
        );
        fs::write(dir.join("unbound.conf"), conf).expect("unbound.conf");
        let log = fs::File::create(dir.join("unbound.log")).expect("log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &net.b, "unbound", "-d", "-c"])
            .arg(dir.join("unbound.conf"))
            .stdout(Stdio::null())
            .stderr(log);
        let child = match cgroup {
            Some(cg) => {
                cg.move_before_exec(&mut cmd, "resolver");
                cmd.spawn()
            }
            None => cmd.spawn(),
        }
        .expect("spawn unbound (apt-get install unbound)");
        let addr = if v6 { net.b6.clone() } else { net.b4.clone() };
        let etc = PathBuf::from("/etc/netns").join(&net.a);
        fs::create_dir_all(&etc).expect("/etc/netns");
        // One attempt, no search list: the tests count every query.
        fs::write(
            etc.join("resolv.conf"),
            format!("nameserver {addr}\noptions attempts:1 timeout:3\n"),
        )
        .expect("resolv.conf");
        let server = DnsServer {
            net,
            addr,
            dir,
            child,
        };
        server.wait_ready();
        server
    }

    /// Waits until the server answers (the probe runs outside every test cgroup).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.net.a,
                    "kdig",
                    "+retry=0",
                    "+timeout=1",
                ])
                .arg(format!("@{}", self.addr))
                .args([&format!("ns.{ZONE}."), "A"])
                .output();
            if let Ok(o) = out
                && String::from_utf8_lossy(&o.stdout).contains("status: NOERROR")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "unbound did not answer; log:\n{}",
                fs::read_to_string(self.dir.join("unbound.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kdig` in the client namespace asking this server once.
    pub fn kdig(&self, name: &str, qtype: &str) -> Command {
        self.kdig_args(&[name, qtype])
    }

    /// `kdig` in the client namespace asking this server, with `args` (options and queries).
    pub fn kdig_args(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.net.a,
            "kdig",
            "+retry=0",
            "+timeout=3",
        ])
        .arg(format!("@{}", self.addr))
        .args(args);
        c
    }

    /// Adds `options` to the client namespace's resolv.conf (for example `use-vc`: glibc
    /// asks over TCP). Processes started afterwards read it.
    pub fn resolver_options(&self, options: &str) {
        fs::write(
            PathBuf::from("/etc/netns")
                .join(&self.net.a)
                .join("resolv.conf"),
            format!(
                "nameserver {}\noptions attempts:1 timeout:3 {options}\n",
                self.addr
            ),
        )
        .expect("resolv.conf");
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.net.a));
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Malformed DNS payloads, each with the parse-error reason sockscope must count for it. Sent
/// as queries to port 53; the junk server echoes each with the QR bit flipped, which gives the
/// same reason on the way back.
pub fn malformed() -> Vec<(&'static str, Vec<u8>)> {
    let header = |flags: u16, qd: u16| -> Vec<u8> {
        let mut h = vec![0x12, 0x34];
        h.extend(flags.to_be_bytes());
        h.extend(qd.to_be_bytes());
        h.extend([0u8; 6]);
        h
    };
    let name: &[u8] = b"\x03www\x07example\x03com\x00";
    let a_in: &[u8] = &[0, 1, 0, 1];
    let cat = |parts: &[&[u8]]| parts.concat();
    let long_name: Vec<u8> = (0..5)
        .flat_map(|_| std::iter::once(63u8).chain(std::iter::repeat_n(b'a', 63)))
        .chain(std::iter::once(0))
        .collect();
    vec![
        ("short_header", vec![0x12, 0x34, 0x01, 0x00, 0x00]),
        ("no_question", header(0x0100, 0)),
        (
            "multiple_questions",
            cat(&[&header(0x0100, 2), name, a_in, name, a_in]),
        ),
        ("label_past_packet", cat(&[&header(0x0100, 1), b"\x20abc"])),
        (
            "compression_in_question",
            cat(&[&header(0x0100, 1), b"\x03www\xc0\x0c", a_in]),
        ),
        (
            "bad_label_type",
            cat(&[&header(0x0100, 1), b"\x41abc\x00", a_in]),
        ),
        (
            "name_too_long",
            cat(&[&header(0x0100, 1), &long_name, a_in]),
        ),
        (
            "truncated_question",
            cat(&[&header(0x0100, 1), name, &[0, 1]]),
        ),
        ("unexpected_qr", cat(&[&header(0x8100, 1), name, a_in])),
    ]
}
