//! DNS: resolving through the system resolver, sprays, malformed payloads, spoofed answers.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket},
    sync::atomic::AtomicU64,
    time::Duration,
};

use super::{
    Res, say,
    tcp::{exchange, report},
    udp::udp_listen,
};

/// The TCP exchange `resolve` does with the address it got.
pub(crate) struct Exchange {
    /// Port to connect to.
    pub port: u16,
    /// Bytes to send.
    pub send: u64,
    /// Bytes the server replies.
    pub reply: u64,
    /// `4`, `6` or any.
    pub family: Option<String>,
}

pub(crate) fn resolve(name: String, then: Option<Exchange>) -> Res<()> {
    let port = then.as_ref().map_or(0, |t| t.port);
    // ToSocketAddrs on (host, port) is getaddrinfo(3) with AF_UNSPEC: the system resolver,
    // /etc/resolv.conf, A and AAAA queries.
    let addrs: Vec<SocketAddr> = (name.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("resolve {name}: {e}"))?
        .collect();
    for a in &addrs {
        say(&format!("resolved {}", a.ip()));
    }
    let Some(Exchange {
        send,
        reply,
        family,
        ..
    }) = then
    else {
        return Ok(());
    };
    let family = family.as_deref().unwrap_or("any");
    let addr = addrs
        .iter()
        .find(|a| match family {
            "4" => a.is_ipv4(),
            "6" => a.is_ipv6(),
            _ => true,
        })
        .ok_or(format!("no {family} address for {name}"))?;
    let (sent, received) = (AtomicU64::new(0), AtomicU64::new(0));
    // Connect at once, as an application does right after its lookup.
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    say(&format!("connected {}", addr.ip()));
    exchange(&mut s, send, reply, &sent, &received)?;
    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut rest = [0u8; 1];
    let _ = s.read(&mut rest);
    report("", &sent, &received, 0)
}

pub(crate) fn dns_junk(server: SocketAddr) -> Res<()> {
    let bind = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let s = UdpSocket::bind(bind).map_err(|e| format!("bind: {e}"))?;
    s.connect(server)
        .map_err(|e| format!("connect {server}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    let (mut sent, mut replies) = (0, 0);
    for (_, payload) in sockscope_tests::dns::malformed() {
        s.send(&payload).map_err(|e| format!("send: {e}"))?;
        sent += 1;
        // One at a time, so each reply is read before the next datagram leaves.
        let n = s.recv(&mut buf).map_err(|e| format!("no echo: {e}"))?;
        if n == payload.len() {
            replies += 1;
        }
    }
    say(&format!("datagrams {sent} replies {replies}"));
    Ok(())
}

/// `dns-spray <server> <count> <zone> [qtype]`: one A query for each of `n<i>.<zone>`, i <
/// count, from one socket, without waiting for answers (a random-subdomain flood). With
/// `qtype`, the queries are all for `q.<zone>`, of types qtype, qtype + 1, ... Prints
/// `sent <n>`.
pub(crate) fn dns_spray(
    server: SocketAddr,
    count: usize,
    zone: String,
    qtype: Option<u16>,
) -> Res<()> {
    let s = UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .map_err(|e| format!("bind: {e}"))?;
    let mut sent = 0;
    for i in 0..count {
        let (name, t) = match qtype {
            Some(t) => (format!("q.{zone}"), t.wrapping_add(i as u16)),
            None => (format!("n{i}.{zone}"), 1),
        };
        let mut q = vec![(i >> 8) as u8, i as u8, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&t.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        // Unconnected: an ICMP error from a server that is not there is never reported to a
        // later send, so every query leaves.
        s.send_to(&q, server)
            .map_err(|e| format!("send {server}: {e}"))?;
        sent += 1;
    }
    say(&format!("sent {sent}"));
    Ok(())
}

/// A queries over one TCP connection (RFC 7766 framing: a 2-byte length before each message).
/// With `split`, the first query's length and header leave in one segment and its question in
/// the next (TCP_NODELAY, 100 ms apart), the second's length is cut after its first byte
/// likewise, the third's header after its sixth byte, and each query leaves after the answer
/// to the one before;
/// else all queries leave in one write. Prints `rcode <n>` per answer, in order.
pub(crate) fn dns_tcp(server: SocketAddr, split: bool, qnames: &[String]) -> Res<()> {
    let mut s = TcpStream::connect(server).map_err(|e| format!("connect {server}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let framed: Vec<Vec<u8>> = qnames
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let m = dns_message(0x4000 + i as u16, name, None);
            let mut f = (m.len() as u16).to_be_bytes().to_vec();
            f.extend_from_slice(&m);
            f
        })
        .collect();
    let read_answer = |s: &mut TcpStream| -> Res<()> {
        let mut len = [0u8; 2];
        s.read_exact(&mut len)
            .map_err(|e| format!("answer length: {e}"))?;
        let mut m = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut m).map_err(|e| format!("answer: {e}"))?;
        let rcode = m.get(3).ok_or("answer without header")? & 0x0f;
        say(&format!("rcode {rcode}"));
        Ok(())
    };
    if split {
        for (i, f) in framed.iter().enumerate() {
            // The first: 2-byte length and 12-byte header, then the question. The second: one
            // byte of its length, then the rest. The third: the length and half the header.
            let cut = match i {
                0 => 14,
                1 => 1,
                2 => 8,
                _ => f.len(),
            };
            s.write_all(&f[..cut]).map_err(|e| e.to_string())?;
            if cut < f.len() {
                std::thread::sleep(Duration::from_millis(100));
                s.write_all(&f[cut..]).map_err(|e| e.to_string())?;
            }
            read_answer(&mut s)?;
        }
    } else {
        s.write_all(&framed.concat()).map_err(|e| e.to_string())?;
        for _ in &framed {
            read_answer(&mut s)?;
        }
    }
    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    Ok(())
}

/// A DNS query (`answer` None) or an A response for `qname` with transaction id `id`.
pub(crate) fn dns_message(id: u16, qname: &str, answer: Option<std::net::Ipv4Addr>) -> Vec<u8> {
    let flags: [u8; 2] = if answer.is_some() {
        [0x81, 0x80]
    } else {
        [0x01, 0x00]
    };
    let an = u8::from(answer.is_some());
    let [hi, lo] = id.to_be_bytes();
    let mut m = vec![hi, lo, flags[0], flags[1], 0, 1, 0, an, 0, 0, 0, 0];
    for label in qname.trim_end_matches('.').split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    if let Some(ip) = answer {
        // Name: a pointer to the question's; A, IN, TTL 300, 4 bytes.
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4]);
        m.extend_from_slice(&ip.octets());
    }
    m
}

pub(crate) fn dns_spoof(
    bind: SocketAddr,
    to: SocketAddr,
    id: u16,
    qname: String,
    ip: std::net::Ipv4Addr,
) -> Res<()> {
    let s = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    s.send_to(&dns_message(id, &qname, Some(ip)), to)
        .map_err(|e| format!("send {to}: {e}"))?;
    say("spoofed");
    Ok(())
}

pub(crate) fn dns_victim(
    (bind, server): (SocketAddr, SocketAddr),
    qname: String,
    id: u16,
    connect: SocketAddr,
    (send, reply): (u64, u64),
) -> Res<()> {
    let s = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    if qname != "-" {
        s.send_to(&dns_message(id, &qname, None), server)
            .map_err(|e| format!("send {server}: {e}"))?;
    }
    let port = s.local_addr().map_err(|e| e.to_string())?.port();
    say(&format!("ready {port}"));
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    s.recv_from(&mut buf)
        .map_err(|e| format!("no datagram: {e}"))?;
    say("answered");
    let sent = AtomicU64::new(0);
    let received = AtomicU64::new(0);
    let mut c = TcpStream::connect(connect).map_err(|e| format!("connect {connect}: {e}"))?;
    exchange(&mut c, send, reply, &sent, &received)?;
    let _ = c.shutdown(Shutdown::Both);
    report("", &sent, &received, 0)
}

pub(crate) fn dns_junk_server(bind: SocketAddr, count: usize) -> Res<()> {
    let s = udp_listen(bind)?;
    let mut buf = vec![0u8; 65536];
    for _ in 0..count {
        let (n, from) = s.recv_from(&mut buf).map_err(|e| format!("recv: {e}"))?;
        if n > 2 {
            buf[2] ^= 0x80;
        }
        s.send_to(&buf[..n], from)
            .map_err(|e| format!("send: {e}"))?;
    }
    say("done");
    Ok(())
}
