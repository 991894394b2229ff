//! UDP: the exchange server and client, sprays to many addresses and ports.

use std::{
    net::{SocketAddr, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use super::{Res, arg, say};

/// A bound UDP server socket (20 s receive timeout), announced with `ready <port>`.
pub(crate) fn udp_listen(bind: SocketAddr) -> Res<UdpSocket> {
    let s = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    // Long enough for a test to start an agent while its clients hold.
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    say(&format!(
        "ready {}",
        s.local_addr().map_err(|e| e.to_string())?.port()
    ));
    Ok(s)
}

pub(crate) fn udp_server(bind: SocketAddr, count: usize, reply: usize) -> Res<()> {
    let s = udp_listen(bind)?;
    let mut buf = vec![0u8; 65536];
    let out = vec![0x33u8; reply];
    let (mut sent, mut received) = (0u64, 0u64);
    for _ in 0..count {
        let (n, from) = s.recv_from(&mut buf).map_err(|e| format!("recv: {e}"))?;
        received += n as u64;
        sent += s.send_to(&out, from).map_err(|e| format!("send: {e}"))? as u64;
    }
    say(&format!("sent {sent} received {received}"));
    Ok(())
}

pub(crate) fn udp_client(
    addr: SocketAddr,
    count: usize,
    size: usize,
    threads: usize,
    phases: &[String],
) -> Res<()> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|_| "bind")?;
    let s = UdpSocket::bind(bind).map_err(|e| format!("bind: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    // One socket shared by every thread (one datagram in flight per thread: nothing is dropped
    // for lack of buffer space; a thread may take another's reply, the totals are the same).
    let (sent, received) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for _ in 0..threads.max(1) {
        let (s, sent, received) = (
            s.try_clone().map_err(|e| e.to_string())?,
            sent.clone(),
            received.clone(),
        );
        workers.push(thread::spawn(move || {
            udp_exchanges(&s, addr, count, size, &sent, &received)
        }));
    }
    for w in workers {
        w.join().map_err(|_| "client thread panicked")??;
    }
    // Later phases, one thread each: after `sent ... received ...` so far, wait for the hold
    // file, then `count` more datagrams on the same socket.
    for phase in phases.chunks(2) {
        let hold = phase.first().ok_or("missing hold file")?;
        let more: usize = arg(phase, 1, "datagram count")?;
        say(&format!(
            "phase sent {} received {}",
            sent.load(Ordering::SeqCst),
            received.load(Ordering::SeqCst)
        ));
        while !Path::new(hold).exists() {
            thread::sleep(Duration::from_millis(20));
        }
        udp_exchanges(&s, addr, more, size, &sent, &received)?;
    }
    say(&format!(
        "sent {} received {}",
        sent.load(Ordering::SeqCst),
        received.load(Ordering::SeqCst)
    ));
    Ok(())
}

/// `count` datagrams of `size` bytes to `addr`, each followed by one reply.
fn udp_exchanges(
    s: &UdpSocket,
    addr: SocketAddr,
    count: usize,
    size: usize,
    sent: &AtomicU64,
    received: &AtomicU64,
) -> Res<()> {
    let out = vec![0x44u8; size];
    let mut buf = vec![0u8; 65536];
    for _ in 0..count {
        let n = s.send_to(&out, addr).map_err(|e| format!("send: {e}"))?;
        sent.fetch_add(n as u64, Ordering::SeqCst);
        let (n, _) = s.recv_from(&mut buf).map_err(|e| format!("recv: {e}"))?;
        received.fetch_add(n as u64, Ordering::SeqCst);
    }
    Ok(())
}

/// `udp-ports <ip> <ports...>`: one 10-byte datagram to each port (`n` or `first-last`), from
/// one socket, as a port scan does. Prints `sent <datagrams>`.
pub(crate) fn udp_ports(ip: std::net::IpAddr, ports: &[String], ignore_errors: bool) -> Res<()> {
    let s = UdpSocket::bind(if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })
        .map_err(|e| format!("bind: {e}"))?;
    let mut sent = 0;
    for spec in ports {
        let (a, b) = match spec.split_once('-') {
            Some((a, b)) => (a, b),
            None => (spec.as_str(), spec.as_str()),
        };
        let (a, b): (u16, u16) = (
            a.parse().map_err(|_| format!("bad port {spec}"))?,
            b.parse().map_err(|_| format!("bad port {spec}"))?,
        );
        for port in a..=b {
            match s.send_to(&[0u8; 10], (ip, port)) {
                Ok(_) => {}
                Err(_) if ignore_errors => {}
                Err(e) => return Err(format!("send {ip}:{port}: {e}")),
            }
            sent += 1;
        }
    }
    say(&format!("sent {sent}"));
    Ok(())
}

/// `udp-spray <count> [size [first]]`: one datagram of `size` bytes (default 1) to each of
/// `count` addresses counted up from 10.200.0.1 (plus `first`; the caller routes
/// 10.200.0.0/14 to lo), as fast as the socket takes them: no pacing, so one drain interval
/// can see them all. Prints `sent <n>`.
pub(crate) fn udp_spray(count: usize, size: usize, first: usize) -> Res<()> {
    if count + first >= (1 << 18) - 1 {
        return Err("at most 262142 addresses (10.200.0.0/14)".into());
    }
    let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
    let payload = vec![b'x'; size];
    let base = u32::from_be_bytes([10, 200, 0, 0]) + first as u32;
    for i in 0..count {
        let ip = std::net::Ipv4Addr::from(base + 1 + i as u32);
        let addr = SocketAddr::from((ip, 9));
        s.send_to(&payload, addr)
            .map_err(|e| format!("send {addr}: {e}"))?;
    }
    say(&format!("sent {count}"));
    Ok(())
}
