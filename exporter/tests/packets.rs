//! The cgroup_skb programs on crafted packets, through `BPF_PROG_TEST_RUN`: truncated IP, UDP
//! and TCP headers, IPv6 extension headers, DNS questions with compression, maximum-length and
//! over-long names, 0 and 65535 counts. Every packet must be allowed (return 1), and the maps
//! must hold exactly what the packet warrants.
//!
//! The kernel runs a test packet on a dummy socket of type 0 and protocol 0
//! (`bpf_prog_test_run_skb()`, net/bpf/test_run.c); the `CONFIG_TEST_RUN` flag, which only
//! these tests set, makes the programs handle it as a socket of the packet's IP protocol.
//! Needs root (loading programs), like the rest of the suite.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap},
    programs::{CgroupSkb, TestRun, TestRunOptions},
};
use sockscope_common::{
    CONFIG_TEST_RUN, Config, EVENT_COUNT, EVENT_DNS_UNMATCHED, EVENT_PACKET_UNPARSED, FlowKey,
    FlowStats, PROTO_UDP, ROLE_CLIENT, ROLE_SERVER,
    dns::{
        DNS_ERR_BAD_LABEL, DNS_ERR_COMPRESSION, DNS_ERR_MULTIPLE_QUESTIONS, DNS_ERR_NAME_TOO_LONG,
        DNS_ERR_NO_QUESTION, DNS_ERR_SHORT_HEADER, DNS_ERR_TRUNCATED_QUESTION,
        DNS_ERR_UNEXPECTED_QR, DNS_KIND_ERROR, DNS_KIND_QUERY, DNS_KIND_RESPONSE, DnsKey, DnsName,
        DnsStats, name_hash,
    },
    v4_mapped,
};

/// The programs loaded (not attached) with their maps.
struct Lab {
    ebpf: Ebpf,
    flows: PerCpuHashMap<MapData, FlowKey, FlowStats>,
    dns: PerCpuHashMap<MapData, DnsKey, DnsStats>,
    names: HashMap<MapData, u64, DnsName>,
    events: PerCpuArray<MapData, u64>,
}

#[derive(Clone, Copy)]
enum Dir {
    Egress,
    Ingress,
}

impl Lab {
    fn load() -> Self {
        let mut ebpf = EbpfLoader::new()
            .load(sockscope::ebpf::OBJECT)
            .expect("load the object (root needed)");
        let mut config: Array<MapData, Config> =
            Array::try_from(ebpf.take_map("CONFIG").expect("CONFIG")).expect("array");
        config
            .set(
                0,
                Config {
                    generation: 0,
                    flags: CONFIG_TEST_RUN,
                    ephemeral_low: 32768,
                    ephemeral_high: 60999,
                    dns_timeout_ms: 5000,
                    max_flows_per_cgroup: 1024,
                    max_dns_per_cgroup: 1024,
                    ..Default::default()
                },
                0,
            )
            .expect("set CONFIG");
        for name in ["sockscope_egress", "sockscope_ingress"] {
            let p: &mut CgroupSkb = ebpf
                .program_mut(name)
                .expect("program")
                .try_into()
                .expect("cgroup_skb");
            p.load().expect("verifier");
        }
        // The DNS programs the packet programs tail-call, as the agent loads them.
        for (name, map) in sockscope::ebpf::DNS_PROGRAMS {
            sockscope::ebpf::load_into_program_array(&mut ebpf, name, map)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let take = |ebpf: &mut Ebpf, n: &str| ebpf.take_map(n).expect(n);
        Lab {
            flows: PerCpuHashMap::try_from(take(&mut ebpf, "FLOWS_0")).expect("flows"),
            dns: PerCpuHashMap::try_from(take(&mut ebpf, "DNS_0")).expect("dns"),
            names: HashMap::try_from(take(&mut ebpf, "DNS_NAMES")).expect("names"),
            events: PerCpuArray::try_from(take(&mut ebpf, "EVENTS")).expect("events"),
            ebpf,
        }
    }

    /// Runs one frame (Ethernet header first) through the egress or ingress program; returns
    /// the program's verdict.
    fn run(&self, dir: Dir, frame: &[u8]) -> u32 {
        self.try_run(dir, frame)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of {} bytes: {e}", frame.len()))
    }

    fn try_run(&self, dir: Dir, frame: &[u8]) -> Result<u32, String> {
        let name = match dir {
            Dir::Egress => "sockscope_egress",
            Dir::Ingress => "sockscope_ingress",
        };
        let p: &CgroupSkb = self
            .ebpf
            .program(name)
            .expect("program")
            .try_into()
            .expect("cgroup_skb");
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        p.test_run(opts)
            .map(|r| r.return_value)
            .map_err(|e| format!("{e:?}"))
    }

    fn flows(&self) -> Vec<(FlowKey, FlowStats)> {
        let keys: Vec<FlowKey> = self.flows.keys().filter_map(|k| k.ok()).collect();
        keys.into_iter()
            .map(|k| {
                let mut total = FlowStats::default();
                for v in self.flows.get(&k, 0).expect("flow").iter() {
                    total.add(v);
                }
                (k, total)
            })
            .collect()
    }

    fn dns(&self) -> Vec<(DnsKey, u64)> {
        let keys: Vec<DnsKey> = self.dns.keys().filter_map(|k| k.ok()).collect();
        keys.into_iter()
            .map(|k| {
                let n = self
                    .dns
                    .get(&k, 0)
                    .expect("dns")
                    .iter()
                    .map(|v| v.count)
                    .sum();
                (k, n)
            })
            .collect()
    }

    fn event(&self, i: u32) -> u64 {
        self.events.get(&i, 0).expect("event").iter().sum()
    }

    /// Every event counter but `except`, summed.
    fn other_events(&self, except: &[u32]) -> u64 {
        (0..EVENT_COUNT)
            .filter(|i| !except.contains(i))
            .map(|i| self.event(i))
            .sum()
    }
}

const ETH_IP: [u8; 2] = [0x08, 0x00];
const ETH_IP6: [u8; 2] = [0x86, 0xdd];

fn eth(kind: [u8; 2], rest: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, kind[0], kind[1]];
    f.extend_from_slice(rest);
    f
}

fn ipv4(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, l4: &[u8]) -> Vec<u8> {
    let len = (20 + l4.len()) as u16;
    let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    h[2..4].copy_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(l4);
    eth(ETH_IP, &h)
}

/// An IPv6 packet whose extension headers (`(type, bytes)`, bytes a multiple of 8) come
/// before the transport header.
fn ipv6(proto: u8, src: Ipv6Addr, dst: Ipv6Addr, ext: &[(u8, usize)], l4: &[u8]) -> Vec<u8> {
    let mut chain = Vec::new();
    let mut next = proto;
    for (i, &(kind, bytes)) in ext.iter().enumerate().rev() {
        let _ = i;
        let mut e = vec![0u8; bytes];
        e[0] = next;
        e[1] = match kind {
            44 => 0,
            51 => (bytes / 4 - 2) as u8,
            _ => (bytes / 8 - 1) as u8,
        };
        let mut c = e;
        c.extend_from_slice(&chain);
        chain = c;
        next = kind;
    }
    let payload_len = (chain.len() + l4.len()) as u16;
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&payload_len.to_be_bytes());
    h.push(next);
    h.push(64);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(&chain);
    h.extend_from_slice(l4);
    eth(ETH_IP6, &h)
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// A DNS message: header fields, then `question` as given (wire bytes).
fn dns(id: u16, response: bool, qd: u16, an: u16, question: &[u8]) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(if response {
        &[0x81, 0x80]
    } else {
        &[0x01, 0x00]
    });
    m.extend_from_slice(&qd.to_be_bytes());
    m.extend_from_slice(&an.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(question);
    m
}

/// Wire form of a name, plus QTYPE A and QCLASS IN.
fn question(labels: &[&[u8]]) -> Vec<u8> {
    let mut q = wire(labels);
    q.extend_from_slice(&[0, 1, 0, 1]);
    q
}

fn wire(labels: &[&[u8]]) -> Vec<u8> {
    let mut q = Vec::new();
    for l in labels {
        q.push(l.len() as u8);
        q.extend_from_slice(l);
    }
    q.push(0);
    q
}

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 53);

#[test]
fn udp_bytes_over_ipv4_and_ipv6_with_extension_headers() {
    let lab = Lab::load();
    let payload = [7u8; 100];
    assert_eq!(
        lab.run(
            Dir::Egress,
            &ipv4(17, CLIENT, SERVER, &udp(40000, 9000, &payload))
        ),
        1
    );
    let c6: Ipv6Addr = "fd09::1".parse().expect("ip");
    let s6: Ipv6Addr = "fd09::2".parse().expect("ip");
    // Hop-by-hop (8), destination options (16), routing (24), AH (16) before UDP.
    let ext = [(0, 8), (60, 16), (43, 24), (51, 16)];
    assert_eq!(
        lab.run(
            Dir::Egress,
            &ipv6(17, c6, s6, &ext, &udp(40001, 9001, &payload[..33]))
        ),
        1
    );
    // A first fragment (offset 0) still has its transport header.
    assert_eq!(
        lab.run(
            Dir::Egress,
            &ipv6(17, c6, s6, &[(44, 8)], &udp(40002, 9002, &payload[..5]))
        ),
        1
    );
    let mut flows = lab.flows();
    flows.sort_by_key(|(k, _)| k.port);
    let got: Vec<(u16, [u8; 16], u8, u8, u64, u64)> = flows
        .iter()
        .map(|(k, v)| {
            (
                k.port,
                k.remote_addr,
                k.role,
                k.proto,
                v.sent_bytes,
                v.received_bytes,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                9000,
                v4_mapped(SERVER.octets()),
                ROLE_CLIENT,
                PROTO_UDP,
                100,
                0
            ),
            (9001, s6.octets(), ROLE_CLIENT, PROTO_UDP, 33, 0),
            (9002, s6.octets(), ROLE_CLIENT, PROTO_UDP, 5, 0),
        ]
    );
    assert_eq!(lab.other_events(&[]), 0);
}

#[test]
fn unreadable_headers_count_nothing_and_are_allowed() {
    let lab = Lab::load();
    let c6: Ipv6Addr = "fd09::1".parse().expect("ip");
    let s6: Ipv6Addr = "fd09::2".parse().expect("ip");
    let good = udp(40000, 9000, b"hello");
    let v4 = ipv4(17, CLIENT, SERVER, &good);
    let mut bad_ihl = v4.clone();
    bad_ihl[14] = 0x43; // IHL 3: 12 bytes, shorter than the fixed header.
    let mut long_ihl = v4[..14 + 20 + 8].to_vec();
    long_ihl[14] = 0x4f; // IHL 15: options up to byte 60, past the packet's end.
    let seven = [(0, 8), (60, 8), (43, 8), (60, 8), (43, 8), (60, 8), (60, 8)];
    let mut later_fragment = ipv6(17, c6, s6, &[(44, 8)], &good);
    later_fragment[14 + 40 + 3] = 0x08; // fragment offset 1 (8 bytes)
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("IPv4 header length below 20", bad_ihl),
        ("IPv4 header length past the packet", long_ihl),
        ("truncated UDP header", v4[..14 + 20 + 4].to_vec()),
        (
            "seven IPv6 extension headers",
            ipv6(17, c6, s6, &seven, &good),
        ),
        (
            "extension header past the packet",
            ipv6(17, c6, s6, &[(0, 8)], &good)[..14 + 40 + 1].to_vec(),
        ),
        ("a later IPv6 fragment", later_fragment),
    ];
    // Shorter than an IP header the kernel itself refuses a test packet (EINVAL), as its IP
    // layer refuses it before any cgroup hook in the real path (ip_rcv_core(),
    // ipv6_rcv()): such a packet never reaches the programs.
    for frame in [
        eth(ETH_IP, &v4[14..14 + 12]),
        eth(ETH_IP6, &ipv6(17, c6, s6, &[], &good)[14..14 + 30]),
    ] {
        assert!(lab.try_run(Dir::Egress, &frame).is_err());
    }
    for (what, frame) in &cases {
        assert_eq!(lab.try_run(Dir::Egress, frame), Ok(1), "{what}");
        assert_eq!(lab.run(Dir::Ingress, frame), 1, "{what}");
    }
    assert!(lab.flows().is_empty(), "{:?}", lab.flows());
    assert!(lab.dns().is_empty());
    assert_eq!(lab.event(EVENT_PACKET_UNPARSED), 2 * cases.len() as u64);
    assert_eq!(lab.other_events(&[EVENT_PACKET_UNPARSED]), 0);
    // Truncated TCP: allowed, nothing counted (the dummy socket is no TCP socket, and the
    // TCP path reads the kernel's counters, never the packet's claims).
    let mut tcp = vec![0u8; 20];
    tcp[12] = 0x50;
    for frame in [
        ipv4(6, CLIENT, SERVER, &tcp[..7]),
        ipv4(6, CLIENT, SERVER, &tcp),
    ] {
        assert_eq!(lab.run(Dir::Egress, &frame), 1);
        assert_eq!(lab.run(Dir::Ingress, &frame), 1);
    }
    assert!(lab.flows().is_empty());
    // Not IP at all.
    assert_eq!(lab.run(Dir::Egress, &eth([0x08, 0x06], &[0u8; 28])), 1);
}

#[test]
fn dns_questions_are_parsed_or_counted_by_reason() {
    let lab = Lab::load();
    let query = |m: &[u8]| ipv4(17, CLIENT, SERVER, &udp(40000, 53, m));
    let reply = |m: &[u8]| ipv4(17, SERVER, CLIENT, &udp(53, 40000, m));
    let www = question(&[b"WWW", b"Example", b"com"]);
    // The longest legal name: 3 labels of 63 and one of 61, 255 bytes with the root.
    let (l63, l61) = ([b'a'; 63], [b'b'; 61]);
    let longest = question(&[&l63, &l63, &l63, &l61]);
    let l62 = [b'c'; 62];
    let too_long = question(&[&l63, &l63, &l63, &l62]);
    let mut compressed = vec![3, b'w', b'w', b'w', 0xc0, 12];
    compressed.extend_from_slice(&[0, 1, 0, 1]);
    let mut bad_label = vec![0x41, b'x'];
    bad_label.extend_from_slice(&[0, 0, 1, 0, 1]);
    let truncated = wire(&[b"www", b"example", b"com"]);
    let sent: Vec<(Dir, Vec<u8>)> = vec![
        (Dir::Egress, query(&dns(1, false, 1, 0, &www))),
        (Dir::Egress, query(&dns(2, false, 1, 0, &longest))),
        (Dir::Egress, query(&dns(3, false, 1, 0, &too_long))),
        (Dir::Egress, query(&dns(4, false, 1, 0, &compressed))),
        (Dir::Egress, query(&dns(5, false, 1, 0, &bad_label))),
        (Dir::Egress, query(&dns(6, false, 1, 0, &truncated))),
        (Dir::Egress, query(&dns(7, false, 0, 0, &www))),
        (Dir::Egress, query(&dns(8, false, 65535, 0, &www))),
        (Dir::Egress, query(&dns(9, false, 1, 0, &[])[..8])),
        // A response leaving towards port 53, and a query arriving from it.
        (Dir::Egress, query(&dns(10, true, 1, 1, &www))),
        (Dir::Ingress, reply(&dns(11, false, 1, 0, &www))),
        // A response with 65535 answers nobody asked for: counted, unmatched, not forwarded.
        (Dir::Ingress, reply(&dns(12, true, 1, 65535, &www))),
    ];
    for (dir, frame) in &sent {
        assert_eq!(lab.run(*dir, frame), 1);
    }
    let dns = lab.dns();
    let count = |kind: u8, code: u8, name: Option<&[u8]>| -> u64 {
        dns.iter()
            .filter(|(k, _)| {
                k.kind == kind
                    && k.code == code
                    && name.is_none_or(|n| k.name_hash == name_hash(n, n.len()))
            })
            .map(|(_, n)| n)
            .sum()
    };
    let www_wire = wire(&[b"www", b"example", b"com"]);
    let longest_wire = wire(&[&l63, &l63, &l63, &l61]);
    assert_eq!(longest_wire.len(), 255);
    assert_eq!(count(DNS_KIND_QUERY, 0, Some(&www_wire)), 1, "{dns:?}");
    assert_eq!(count(DNS_KIND_QUERY, 0, Some(&longest_wire)), 1, "{dns:?}");
    assert_eq!(count(DNS_KIND_RESPONSE, 0, Some(&www_wire)), 1, "{dns:?}");
    for (code, n) in [
        (DNS_ERR_NAME_TOO_LONG, 1),
        (DNS_ERR_COMPRESSION, 1),
        (DNS_ERR_BAD_LABEL, 1),
        (DNS_ERR_TRUNCATED_QUESTION, 1),
        (DNS_ERR_NO_QUESTION, 1),
        (DNS_ERR_MULTIPLE_QUESTIONS, 1),
        (DNS_ERR_SHORT_HEADER, 1),
        (DNS_ERR_UNEXPECTED_QR, 2),
    ] {
        assert_eq!(
            count(DNS_KIND_ERROR, code, None),
            n,
            "reason {code}: {dns:?}"
        );
    }
    assert_eq!(dns.iter().map(|(_, n)| n).sum::<u64>(), 3 + 9);
    // Names are stored folded to lower case, under their hash.
    let stored = lab
        .names
        .get(&name_hash(&www_wire, www_wire.len()), 0)
        .expect("name stored");
    assert_eq!(&stored.wire[..www_wire.len()], &www_wire[..]);
    assert_eq!(lab.event(EVENT_DNS_UNMATCHED), 1);
    assert_eq!(lab.other_events(&[EVENT_DNS_UNMATCHED]), 0);
    // Every datagram is UDP bytes too, payload exactly.
    let udp_sent: u64 = lab.flows().iter().map(|(_, v)| v.sent_bytes).sum();
    let udp_received: u64 = lab.flows().iter().map(|(_, v)| v.received_bytes).sum();
    let payload = |d: Dir| -> u64 {
        sent.iter()
            .filter(|(x, _)| {
                matches!(
                    (x, d),
                    (Dir::Egress, Dir::Egress) | (Dir::Ingress, Dir::Ingress)
                )
            })
            .map(|(_, f)| (f.len() - 14 - 20 - 8) as u64)
            .sum()
    };
    assert_eq!(udp_sent, payload(Dir::Egress));
    assert_eq!(udp_received, payload(Dir::Ingress));
    // Each test packet has a socket of its own, whose first packet sets its role: sending
    // (to port 53) is the client side, receiving (on port 40000) the server side.
    for (k, v) in lab.flows() {
        match (k.role, k.port) {
            (ROLE_CLIENT, 53) => assert_eq!(v.received_bytes, 0),
            (ROLE_SERVER, 40000) => assert_eq!(v.sent_bytes, 0),
            other => panic!("unexpected flow {other:?}"),
        }
    }
}
