//! Traffic peer for the end-to-end tests: moves exact payloads over real sockets and prints what
//! it actually sent and received, so tests can compare sockscope's counts with the truth.
//!
//! TCP protocol: the client sends a 16-byte header (payload length, reply length, both u64 BE),
//! then the payload; the server reads it all, sends the reply, and closes once the client has
//! closed. Header bytes are payload too: a client's "sent" is 16 + payload.
//!
//! Usage:
//!   sockscope-peer tcp-server <bind addr> <connections>
//!   sockscope-peer tcp-client <addr> <connections> <concurrency> <send> <reply> [hold-file [send2 reply2]]
//!   sockscope-peer udp-server <bind addr> <datagrams> <reply size>
//!   sockscope-peer udp-client <addr> <datagrams> <size> [threads [hold-file datagrams]...]
//!       threads share one socket, each sends the datagrams (one in flight, waiting for the
//!       reply); then per hold file: prints `phase sent <n> received <m>`, waits for the file,
//!       sends that many more
//!   sockscope-peer udp-spray <count> [size [first]]   one datagram to each of count addresses
//!   sockscope-peer dns-spray <server addr> <count> <zone> [qtype]   count distinct names (or types)
//!   sockscope-peer udp-ports <ip> <port>... [first-last]...   one 10-byte datagram to each port
//!   sockscope-peer dns-spoof <bind addr> <to addr> <id> <qname> <ipv4>
//!       an A answer (qname -> ipv4, id) from bind (port 53) to a socket that may not have asked
//!   sockscope-peer dns-victim <bind addr> <server addr> <qname|-> <id> <connect addr> <send> <reply>
//!       with a qname, asks the server (A, id); then waits for one datagram and, after it, does
//!       one TCP exchange with connect addr; prints `ready <port>`, `answered`, totals
//!   sockscope-peer connect-refused <addr>
//!   sockscope-peer tcp-late-connect <addr> <hold-file> <send> <reply>   creates its socket and
//!       prints `socket`, connects once the hold file exists, does one exchange
//!   sockscope-peer http-server <bind addr> <threads>   (benchmarks: HTTP/1.1, keep-alive unless
//!       the request says `Connection: close`)
//!   sockscope-peer connect-rate <addr> <per second> <seconds>   paced HTTP connections, one
//!       request each; prints `connections <n>`
//!   sockscope-peer empty-hooks <cgroup path>   sockscope's empty programs at its hooks (the
//!       benchmark's floor); prints `ready`, holds them until killed
//!   sockscope-peer resolve <name> [port send reply [family]]
//!       getaddrinfo() through the system resolver, then (with a port) one TCP exchange with
//!       the first address of `family` (4, 6 or any); prints `resolved <ip>` and `connected <ip>`
//!   sockscope-peer dns-junk <server addr>       malformed DNS payloads to port 53, one by one
//!   sockscope-peer dns-junk-server <bind addr> <count>   echoes them with the QR bit flipped
//!
//! Servers print `ready <port>` once listening. Everyone prints `sent <n> received <m>` at the end.
//! With a hold file, each client keeps its connections open after the exchange until the file
//! exists, then (with send2/reply2) does a second exchange on each before closing.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket},
    path::Path,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

type Res<T> = Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("tcp-server") => tcp_server(&args[1..]),
        Some("tcp-client") => tcp_client(&args[1..]),
        Some("udp-server") => udp_server(&args[1..]),
        Some("udp-client") => udp_client(&args[1..]),
        Some("connect-refused") => connect_refused(&args[1..]),
        Some("tcp-late-connect") => tcp_late_connect(&args[1..]),
        Some("http-server") => http_server(&args[1..]),
        Some("connect-rate") => connect_rate(&args[1..]),
        Some("empty-hooks") => empty_hooks(&args[1..]),
        Some("resolve") => resolve(&args[1..]),
        Some("dns-junk") => dns_junk(&args[1..]),
        Some("dns-junk-server") => dns_junk_server(&args[1..]),
        Some("kube-api") => kube_api(&args[1..]),
        Some("otlp-receiver") => otlp_receiver(&args[1..]),
        Some("udp-spray") => udp_spray(&args[1..]),
        Some("dns-spray") => dns_spray(&args[1..]),
        Some("udp-ports") => udp_ports(&args[1..]),
        Some("dns-spoof") => dns_spoof(&args[1..]),
        Some("dns-victim") => dns_victim(&args[1..]),
        _ => Err("usage: see the source header".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Res<T> {
    args.get(i)
        .ok_or(format!("missing {what}"))?
        .parse()
        .map_err(|_| format!("bad {what}"))
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

const CHUNK: usize = 64 * 1024;

fn write_n(s: &mut impl Write, mut n: u64) -> Res<u64> {
    let buf = vec![0x5au8; CHUNK];
    let total = n;
    while n > 0 {
        let k = n.min(CHUNK as u64) as usize;
        s.write_all(&buf[..k]).map_err(|e| format!("write: {e}"))?;
        n -= k as u64;
    }
    Ok(total)
}

fn read_n(s: &mut impl Read, n: u64) -> Res<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    while got < n {
        let want = (n - got).min(CHUNK as u64) as usize;
        let k = s.read(&mut buf[..want]).map_err(|e| format!("read: {e}"))?;
        if k == 0 {
            return Err(format!("eof after {got} of {n} bytes"));
        }
        got += k as u64;
    }
    Ok(got)
}

fn tcp_server(args: &[String]) -> Res<()> {
    let bind: SocketAddr = arg(args, 0, "bind address")?;
    let conns: usize = arg(args, 1, "connection count")?;
    let listener = TcpListener::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    say(&format!("ready {port}"));
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..conns {
        let (mut s, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        let (sent, received, failed) = (sent.clone(), received.clone(), failed.clone());
        handles.push(thread::spawn(move || {
            let r = (|| -> Res<()> {
                // Requests until the client closes; then close.
                loop {
                    let mut hdr = [0u8; 16];
                    let mut got = 0;
                    while got < 16 {
                        let k = s
                            .read(&mut hdr[got..])
                            .map_err(|e| format!("header: {e}"))?;
                        if k == 0 {
                            return if got == 0 {
                                Ok(())
                            } else {
                                Err("eof in header".into())
                            };
                        }
                        got += k;
                    }
                    let n = u64::from_be_bytes(hdr[..8].try_into().map_err(|_| "hdr")?);
                    let m = u64::from_be_bytes(hdr[8..].try_into().map_err(|_| "hdr")?);
                    received.fetch_add(16 + read_n(&mut s, n)?, Ordering::SeqCst);
                    sent.fetch_add(write_n(&mut s, m)?, Ordering::SeqCst);
                }
            })();
            if let Err(e) = r {
                eprintln!("peer server: {e}");
                failed.fetch_add(1, Ordering::SeqCst);
            }
        }));
        // Keep the number of threads bounded for bursts.
        if handles.len() >= 256 {
            for h in handles.drain(..) {
                let _ = h.join();
            }
        }
    }
    for h in handles {
        let _ = h.join();
    }
    report("", &sent, &received, failed.load(Ordering::SeqCst))
}

fn tcp_client(args: &[String]) -> Res<()> {
    let addr: SocketAddr = arg(args, 0, "address")?;
    let conns: usize = arg(args, 1, "connection count")?;
    let concurrency: usize = arg(args, 2, "concurrency")?;
    let send: u64 = arg(args, 3, "send bytes")?;
    let reply: u64 = arg(args, 4, "reply bytes")?;
    let hold = args.get(5).cloned();
    let second: Option<(u64, u64)> = match (args.get(6), args.get(7)) {
        (Some(a), Some(b)) => Some((
            a.parse().map_err(|_| "bad send2")?,
            b.parse().map_err(|_| "bad reply2")?,
        )),
        _ => None,
    };
    let next = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let first_done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (next, sent, received, failed, hold, first_done) = (
                next.clone(),
                sent.clone(),
                received.clone(),
                failed.clone(),
                hold.clone(),
                first_done.clone(),
            );
            thread::spawn(move || {
                let mut kept = Vec::new();
                while next.fetch_add(1, Ordering::SeqCst) < conns {
                    let r = (|| -> Res<TcpStream> {
                        let mut s =
                            TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
                        exchange(&mut s, send, reply, &sent, &received)?;
                        Ok(s)
                    })();
                    first_done.fetch_add(1, Ordering::SeqCst);
                    match r {
                        Ok(s) if hold.is_some() => kept.push(s),
                        Ok(s) => {
                            let _ = s.shutdown(Shutdown::Both);
                        }
                        Err(e) => {
                            eprintln!("peer client: {e}");
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                if let Some(h) = hold {
                    while !Path::new(&h).exists() {
                        thread::sleep(Duration::from_millis(20));
                    }
                }
                if let Some((send2, reply2)) = second {
                    for s in &mut kept {
                        if let Err(e) = exchange(s, send2, reply2, &sent, &received) {
                            eprintln!("peer client: {e}");
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                for s in kept {
                    let _ = s.shutdown(Shutdown::Both);
                }
            })
        })
        .collect();
    if hold.is_some() {
        // Report the exchange before holding so the test can scrape while connections are open.
        while first_done.load(Ordering::SeqCst) < conns {
            thread::sleep(Duration::from_millis(5));
        }
        let _ = report("exchanged ", &sent, &received, 0);
    }
    for w in workers {
        let _ = w.join();
    }
    report("", &sent, &received, failed.load(Ordering::SeqCst))
}

/// One request: header + `send` bytes out, `reply` bytes back.
/// Prints `<prefix>sent <n> received <m>`; an error if any connection failed.
fn report(prefix: &str, sent: &AtomicU64, received: &AtomicU64, failed: usize) -> Res<()> {
    say(&format!(
        "{prefix}sent {} received {}",
        sent.load(Ordering::SeqCst),
        received.load(Ordering::SeqCst)
    ));
    if failed > 0 {
        Err("some connections failed".into())
    } else {
        Ok(())
    }
}

fn exchange(
    s: &mut TcpStream,
    send: u64,
    reply: u64,
    sent: &AtomicU64,
    received: &AtomicU64,
) -> Res<()> {
    let mut hdr = [0u8; 16];
    hdr[..8].copy_from_slice(&send.to_be_bytes());
    hdr[8..].copy_from_slice(&reply.to_be_bytes());
    s.write_all(&hdr).map_err(|e| format!("write: {e}"))?;
    sent.fetch_add(16 + write_n(s, send)?, Ordering::SeqCst);
    received.fetch_add(read_n(s, reply)?, Ordering::SeqCst);
    Ok(())
}

/// A bound UDP server socket (20 s receive timeout), announced with `ready <port>`.
fn udp_listen(bind: SocketAddr) -> Res<UdpSocket> {
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

fn udp_server(args: &[String]) -> Res<()> {
    let bind: SocketAddr = arg(args, 0, "bind address")?;
    let count: usize = arg(args, 1, "datagram count")?;
    let reply: usize = arg(args, 2, "reply size")?;
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

fn udp_client(args: &[String]) -> Res<()> {
    let addr: SocketAddr = arg(args, 0, "address")?;
    let count: usize = arg(args, 1, "datagram count")?;
    let size: usize = arg(args, 2, "size")?;
    let threads: usize = if args.len() > 3 {
        arg(args, 3, "threads")?
    } else {
        1
    };
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
    for phase in args.get(4..).unwrap_or_default().chunks(2) {
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

fn connect_refused(args: &[String]) -> Res<()> {
    let addr: SocketAddr = arg(args, 0, "address")?;
    match TcpStream::connect(addr) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            say("refused");
            Ok(())
        }
        Err(e) => Err(format!("expected refusal, got {e}")),
        Ok(_) => Err("expected refusal, but connected".into()),
    }
}

/// A socket created now and connected later (once the hold file exists): for a socket that is
/// older than the agent but whose connection is not.
fn tcp_late_connect(args: &[String]) -> Res<()> {
    let addr: SocketAddr = arg(args, 0, "address")?;
    let hold: String = arg(args, 1, "hold file")?;
    let send: u64 = arg(args, 2, "send bytes")?;
    let reply: u64 = arg(args, 3, "reply bytes")?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|e| format!("socket: {e}"))?;
    say("socket");
    while !Path::new(&hold).exists() {
        thread::sleep(Duration::from_millis(20));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| e.to_string())?;
    let stream = rt
        .block_on(socket.connect(addr))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let mut s = stream.into_std().map_err(|e| e.to_string())?;
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    let (sent, received) = (AtomicU64::new(0), AtomicU64::new(0));
    exchange(&mut s, send, reply, &sent, &received)?;
    let _ = s.shutdown(Shutdown::Both);
    report("", &sent, &received, 0)
}

/// Minimal HTTP/1.1 server for connection-churn benchmarks: answers every request with a tiny
/// response and closes the connection. Runs until killed.
fn http_server(args: &[String]) -> Res<()> {
    let bind: SocketAddr = arg(args, 0, "bind address")?;
    let threads: usize = arg(args, 1, "threads")?;
    let listener = Arc::new(TcpListener::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?);
    say(&format!(
        "ready {}",
        listener.local_addr().map_err(|e| e.to_string())?.port()
    ));
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let listener = listener.clone();
            thread::spawn(move || {
                loop {
                    let Ok((s, _)) = listener.accept() else {
                        continue;
                    };
                    serve_http(s);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

/// Answers every request of one connection (keep-alive) until the client closes it or asks
/// for `Connection: close`.
fn serve_http(mut s: TcpStream) {
    const KEEP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    const CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    let _ = s.set_nodelay(true);
    let mut buf = [0u8; 4096];
    let mut seen: Vec<u8> = Vec::new();
    loop {
        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
            seen.drain(..end + 4);
            if head.contains("connection: close") {
                let _ = s.write_all(CLOSE);
                return;
            }
            if s.write_all(KEEP).is_err() {
                return;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Opens `rate` connections a second for `seconds`, each one HTTP request read to the
/// server's close, paced against the clock (not back to back).
fn connect_rate(args: &[String]) -> Res<()> {
    let addr: SocketAddr = arg(args, 0, "address")?;
    let rate: u64 = arg(args, 1, "connections per second")?;
    let seconds: u64 = arg(args, 2, "seconds")?;
    let start = std::time::Instant::now();
    let total = rate * seconds;
    let mut done = 0u64;
    let mut buf = [0u8; 512];
    for i in 0..total {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / rate.max(1));
        if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
            thread::sleep(wait);
        }
        let Ok(mut s) = TcpStream::connect(addr) else {
            continue;
        };
        if s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .is_err()
        {
            continue;
        }
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        done += 1;
    }
    say(&format!("connections {done}"));
    Ok(())
}

/// Attaches sockscope's empty programs (they return "allow" at once) at the same hooks as the
/// agent, for the benchmark's floor; prints `ready`, then holds them until killed.
fn empty_hooks(args: &[String]) -> Res<()> {
    let path: String = arg(args, 0, "cgroup path")?;
    let cgroup = std::fs::File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
    let mut ebpf =
        aya::Ebpf::load(sockscope::ebpf::OBJECT).map_err(|e| format!("load object: {e}"))?;
    for name in [
        "sockscope_empty_sock_create",
        "sockscope_empty_sock_release",
        "sockscope_empty_sockops",
        "sockscope_empty_egress",
        "sockscope_empty_ingress",
    ] {
        sockscope::ebpf::attach_to_cgroup(&mut ebpf, name, &cgroup)?;
    }
    say("ready");
    // Links close with the process: SIGTERM's default action is all the cleanup needed.
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

fn resolve(args: &[String]) -> Res<()> {
    let name = args.first().ok_or("missing name")?;
    let port: u16 = if args.len() > 1 {
        arg(args, 1, "port")?
    } else {
        0
    };
    // ToSocketAddrs on (host, port) is getaddrinfo(3) with AF_UNSPEC: the system resolver,
    // /etc/resolv.conf, A and AAAA queries.
    let addrs: Vec<SocketAddr> = (name.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("resolve {name}: {e}"))?
        .collect();
    for a in &addrs {
        say(&format!("resolved {}", a.ip()));
    }
    if port == 0 {
        return Ok(());
    }
    let send: u64 = arg(args, 2, "send bytes")?;
    let reply: u64 = arg(args, 3, "reply bytes")?;
    let family = args.get(4).map(String::as_str).unwrap_or("any");
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

fn dns_junk(args: &[String]) -> Res<()> {
    let server: SocketAddr = arg(args, 0, "server address")?;
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
fn dns_spray(args: &[String]) -> Res<()> {
    let server: SocketAddr = arg(args, 0, "server address")?;
    let count: usize = arg(args, 1, "count")?;
    let zone: String = arg(args, 2, "zone")?;
    let qtype: Option<u16> = match args.get(3) {
        Some(_) => Some(arg(args, 3, "qtype")?),
        None => None,
    };
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

/// `udp-ports <ip> <ports...>`: one 10-byte datagram to each port (`n` or `first-last`), from
/// one socket, as a port scan does. Prints `sent <datagrams>`.
fn udp_ports(args: &[String]) -> Res<()> {
    let ip: std::net::IpAddr = arg(args, 0, "address")?;
    let s = UdpSocket::bind(if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })
        .map_err(|e| format!("bind: {e}"))?;
    let mut sent = 0;
    for spec in &args[1..] {
        let (a, b) = match spec.split_once('-') {
            Some((a, b)) => (a, b),
            None => (spec.as_str(), spec.as_str()),
        };
        let (a, b): (u16, u16) = (
            a.parse().map_err(|_| format!("bad port {spec}"))?,
            b.parse().map_err(|_| format!("bad port {spec}"))?,
        );
        for port in a..=b {
            s.send_to(&[0u8; 10], (ip, port))
                .map_err(|e| format!("send {ip}:{port}: {e}"))?;
            sent += 1;
        }
    }
    say(&format!("sent {sent}"));
    Ok(())
}

/// A DNS query (`answer` None) or an A response for `qname` with transaction id `id`.
fn dns_message(id: u16, qname: &str, answer: Option<std::net::Ipv4Addr>) -> Vec<u8> {
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

fn dns_spoof(args: &[String]) -> Res<()> {
    let bind: SocketAddr = arg(args, 0, "bind address")?;
    let to: SocketAddr = arg(args, 1, "target address")?;
    let id: u16 = arg(args, 2, "id")?;
    let qname: String = arg(args, 3, "qname")?;
    let ip: std::net::Ipv4Addr = arg(args, 4, "answer address")?;
    let s = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    s.send_to(&dns_message(id, &qname, Some(ip)), to)
        .map_err(|e| format!("send {to}: {e}"))?;
    say("spoofed");
    Ok(())
}

fn dns_victim(args: &[String]) -> Res<()> {
    let bind: SocketAddr = arg(args, 0, "bind address")?;
    let server: SocketAddr = arg(args, 1, "server address")?;
    let qname: String = arg(args, 2, "qname")?;
    let id: u16 = arg(args, 3, "id")?;
    let connect: SocketAddr = arg(args, 4, "connect address")?;
    let send: u64 = arg(args, 5, "send bytes")?;
    let reply: u64 = arg(args, 6, "reply bytes")?;
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

fn dns_junk_server(args: &[String]) -> Res<()> {
    let bind: SocketAddr = arg(args, 0, "bind address")?;
    let count: usize = arg(args, 1, "datagram count")?;
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

/// A synthetic cluster behind the in-test Kubernetes API: `<pods> <services> <nodes>` spread
/// over 100 namespaces, pods owned by Deployments' ReplicaSets. Prints `ready <port>
/// <kubeconfig>`, then takes commands on stdin: `add <n>` / `del <n>` a pod `churn-<n>` on
/// node `bench-node` (namespace `churn`, container `app` with id `<n as 16 hex digits> x4`).
fn kube_api(args: &[String]) -> Res<()> {
    use sockscope_tests::fake_apiserver::{KubeApi, objects};
    let pods: u64 = arg(args, 0, "pods")?;
    let services: u64 = arg(args, 1, "services")?;
    let nodes: u64 = arg(args, 2, "nodes")?;
    let api = KubeApi::start();
    let ip = |base: u8, n: u64| {
        format!(
            "{base}.{}.{}.{}",
            (n >> 16) & 0xff,
            (n >> 8) & 0xff,
            n & 0xff
        )
    };
    for n in 0..nodes {
        api.apply(objects::node(
            &format!("node-{n}"),
            &objects::uid(1 << 40 | n),
            &ip(172, n + 1),
        ));
    }
    api.apply(objects::node(
        "bench-node",
        &objects::uid(2 << 40),
        "192.0.2.1",
    ));
    // Ten pods per Deployment.
    for d in 0..pods.div_ceil(10) {
        let ns = format!("ns-{}", d % 100);
        api.apply(objects::replicaset(
            &ns,
            &format!("app-{d}-7c9f8d6b5"),
            &objects::uid(3 << 40 | d),
            &format!("app-{d}"),
        ));
    }
    for n in 0..pods {
        let d = n / 10;
        let ns = format!("ns-{}", d % 100);
        let rs = format!("app-{d}-7c9f8d6b5");
        let cid = format!("{:016x}", n).repeat(4);
        api.apply(objects::pod(
            &ns,
            &format!("{rs}-{n:05}"),
            &objects::uid(4 << 40 | n),
            &format!("node-{}", n % nodes.max(1)),
            &ip(10, n + 1),
            Some(("ReplicaSet", &rs)),
            Some("7c9f8d6b5"),
            &[("app", &cid)],
        ));
    }
    for n in 0..services {
        api.apply(objects::service(
            &format!("ns-{}", n % 100),
            &format!("svc-{n}"),
            &objects::uid(5 << 40 | n),
            &ip(100, n + 1),
            80,
        ));
    }
    let kubeconfig = api.kubeconfig(&std::env::temp_dir());
    say(&format!("ready {} {}", api.port, kubeconfig.display()));
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        if stdin.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (Some(cmd), Some(n)) = (
            parts.next(),
            parts.next().and_then(|n| n.parse::<u64>().ok()),
        ) else {
            continue;
        };
        let name = format!("churn-{n}");
        match cmd {
            "add" => {
                let cid = format!("{:016x}", n).repeat(4);
                api.apply(objects::pod(
                    "churn",
                    &name,
                    &objects::uid(6 << 40 | n),
                    "bench-node",
                    "127.0.0.1",
                    None,
                    None,
                    &[("app", &cid)],
                ));
            }
            "del" => api.delete("Pod", "churn", &name),
            _ => {}
        }
        say(&format!("ok {cmd} {n}"));
    }
}

/// An OTLP metrics receiver decoding with the official opentelemetry-proto types:
/// `otlp-receiver <grpc|http> <bind> [--tls CERT KEY] [--client-ca CA] [--throttle N SECS]`.
///
/// `--tls`: TLS with that certificate and key (PEM); `--client-ca`: mTLS, clients must present
/// a certificate signed by CA; `--throttle`: the first N requests are answered "retry in SECS"
/// (HTTP 503 with `Retry-After`, gRPC UNAVAILABLE with `RetryInfo`), each printing
/// `throttled <unix_ms>`. gzip bodies are accepted (HTTP `Content-Encoding`, gRPC
/// `grpc-encoding`).
///
/// Prints `ready <port>`, then per request `at <unix_ms>`, `encoding <gzip|identity>`,
/// `request <bytes>`, `resource <k=v;...>`, one `point <metric> <attrs> <value> <start_ns>
/// <time_ns> <temporality>` per number point and `hist <metric> <attrs> <count> <sum>
/// <start_ns> <time_ns>` per histogram point, and `end`.
fn otlp_receiver(args: &[String]) -> Res<()> {
    let kind: String = arg(args, 0, "grpc or http")?;
    let bind: SocketAddr = arg(args, 1, "bind address")?;
    let mut tls: Option<(String, String)> = None;
    let mut client_ca: Option<String> = None;
    let mut throttle = (0usize, 0u64);
    let mut i = 2;
    while i < args.len() {
        match args[i].as_str() {
            "--tls" => {
                tls = Some((arg(args, i + 1, "certificate")?, arg(args, i + 2, "key")?));
                i += 3;
            }
            "--client-ca" => {
                client_ca = Some(arg(args, i + 1, "client CA")?);
                i += 2;
            }
            "--throttle" => {
                throttle = (arg(args, i + 1, "requests")?, arg(args, i + 2, "seconds")?);
                i += 3;
            }
            other => return Err(format!("otlp-receiver: unknown option {other}")),
        }
    }
    let throttle = Throttle {
        left: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(throttle.0)),
        secs: throttle.1,
    };
    let read = |p: &str| std::fs::read(p).map_err(|e| format!("{p}: {e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|e| format!("bind {bind}: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        match kind.as_str() {
            "grpc" => {
                use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsServiceServer;
                use tonic::transport::{Certificate, Identity, ServerTlsConfig};
                let mut server = tonic::transport::Server::builder();
                if let Some((cert, key)) = &tls {
                    let mut c = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
                    if let Some(ca) = &client_ca {
                        c = c.client_ca_root(Certificate::from_pem(read(ca)?));
                    }
                    server = server.tls_config(c).map_err(|e| e.to_string())?;
                }
                say(&format!("ready {port}"));
                server
                    .add_service(
                        MetricsServiceServer::new(Receiver { throttle })
                            .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
                    )
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                    .await
                    .map_err(|e| e.to_string())
            }
            "http" => {
                let acceptor = match &tls {
                    Some((cert, key)) => Some(tls_acceptor(&read(cert)?, &read(key)?, client_ca.as_deref().map(read).transpose()?)?),
                    None => None,
                };
                say(&format!("ready {port}"));
                loop {
                    let (s, _) = listener.accept().await.map_err(|e| e.to_string())?;
                    let acceptor = acceptor.clone();
                    let throttle = throttle.clone();
                    tokio::spawn(async move {
                        let _ = match acceptor {
                            Some(a) => match a.accept(s).await {
                                Ok(mut t) => http_export(&mut t, &throttle).await,
                                // A refused client certificate ends here.
                                Err(e) => Err(e.to_string()),
                            },
                            None => {
                                let mut s = s;
                                http_export(&mut s, &throttle).await
                            }
                        };
                    });
                }
            }
            other => Err(format!("unknown receiver kind {other}")),
        }
    })
}

/// The rustls server side of `--tls` (and `--client-ca`) for the HTTP receiver.
fn tls_acceptor(
    cert: &[u8],
    key: &[u8],
    client_ca: Option<Vec<u8>>,
) -> Res<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| e.to_string())?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&ca) {
                roots
                    .add(c.map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                std::sync::Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

/// `--throttle`: how many requests are still to be answered "retry later", and after how long.
#[derive(Clone)]
struct Throttle {
    left: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    secs: u64,
}

impl Throttle {
    /// Whether this request is one of the throttled ones (printing `throttled <unix_ms>`).
    fn take(&self) -> bool {
        use std::sync::atomic::Ordering;
        let taken = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if taken {
            say(&format!("throttled {}", unix_ms()));
        }
        taken
    }
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// One HTTP/1.1 POST per request (keep-alive: several per connection), body decoded as
/// protobuf, gunzipped first if its `Content-Encoding` says gzip.
async fn http_export<S>(s: &mut S, throttle: &Throttle) -> Res<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    loop {
        // Headers.
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let mut chunk = [0u8; 8192];
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or("no content-length")?;
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 65536];
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("eof in body".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let mut body: Vec<u8> = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        if throttle.take() {
            s.write_all(format!("HTTP/1.1 503 Service Unavailable\r\nRetry-After: {}\r\nContent-Length: 0\r\n\r\n", throttle.secs).as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            continue;
        }
        let gzip = head
            .lines()
            .find_map(|l| l.strip_prefix("content-encoding:"))
            .is_some_and(|v| v.trim() == "gzip");
        if gzip {
            use std::io::Read;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body.as_slice())
                .read_to_end(&mut out)
                .map_err(|e| format!("gunzip: {e}"))?;
            body = out;
        }
        let ok = head.starts_with("post /v1/metrics ")
            && head.contains("content-type: application/x-protobuf");
        let req = <opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest as prost::Message>::decode(body.as_slice());
        let status = match (ok, req) {
            (true, Ok(r)) => {
                say(&format!("at {}", unix_ms()));
                say(&format!(
                    "encoding {}",
                    if gzip { "gzip" } else { "identity" }
                ));
                print_request(&r, len);
                "200 OK"
            }
            _ => "400 Bad Request",
        };
        s.write_all(format!("HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
    }
}

struct Receiver {
    throttle: Throttle,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsService
    for Receiver
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse,
        >,
        tonic::Status,
    > {
        if self.throttle.take() {
            use tonic_types::{ErrorDetails, StatusExt};
            return Err(tonic::Status::with_error_details(
                tonic::Code::Unavailable,
                "throttled",
                ErrorDetails::with_retry_info(Some(Duration::from_secs(self.throttle.secs))),
            ));
        }
        let encoding = request
            .metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("identity")
            .to_string();
        let r = request.into_inner();
        say(&format!("at {}", unix_ms()));
        say(&format!("encoding {encoding}"));
        print_request(&r, prost::Message::encoded_len(&r));
        Ok(tonic::Response::new(Default::default()))
    }
}

fn attrs(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            // Spaces would split the line; none of sockscope's values has one.
            format!("{}={}", kv.key, v.replace(' ', "_"))
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn print_request(
    r: &opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest,
    bytes: usize,
) {
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
    let mut out = format!("request {bytes}\n");
    for rm in &r.resource_metrics {
        let res = rm
            .resource
            .as_ref()
            .map(|r| attrs(&r.attributes))
            .unwrap_or_default();
        out.push_str(&format!("resource {res}\n"));
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                match &m.data {
                    Some(Data::Sum(sum)) => {
                        for p in &sum.data_points {
                            let v = match p.value {
                                Some(Value::AsInt(i)) => i.to_string(),
                                Some(Value::AsDouble(d)) => d.to_string(),
                                None => "none".into(),
                            };
                            out.push_str(&format!(
                                "point {} {} {v} {} {} {}\n",
                                m.name,
                                attrs(&p.attributes),
                                p.start_time_unix_nano,
                                p.time_unix_nano,
                                sum.aggregation_temporality
                            ));
                        }
                    }
                    Some(Data::Gauge(g)) => {
                        for p in &g.data_points {
                            let v = match p.value {
                                Some(Value::AsInt(i)) => i.to_string(),
                                Some(Value::AsDouble(d)) => d.to_string(),
                                None => "none".into(),
                            };
                            out.push_str(&format!(
                                "point {} {} {v} 0 {} 0\n",
                                m.name,
                                attrs(&p.attributes),
                                p.time_unix_nano
                            ));
                        }
                    }
                    Some(Data::Histogram(h)) => {
                        for p in &h.data_points {
                            out.push_str(&format!(
                                "hist {} {} {} {} {} {}\n",
                                m.name,
                                attrs(&p.attributes),
                                p.count,
                                p.sum.unwrap_or(0.0),
                                p.start_time_unix_nano,
                                p.time_unix_nano
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out.push_str("end\n");
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

/// `udp-spray <count> [size [first]]`: one datagram of `size` bytes (default 1) to each of
/// `count` addresses counted up from 10.200.0.1 (plus `first`; the caller routes
/// 10.200.0.0/14 to lo), as fast as the socket takes them: no pacing, so one drain interval
/// can see them all. Prints `sent <n>`.
fn udp_spray(args: &[String]) -> Res<()> {
    let count: usize = arg(args, 0, "count")?;
    let size: usize = if args.len() > 1 {
        arg(args, 1, "size")?
    } else {
        1
    };
    let first: usize = if args.len() > 2 {
        arg(args, 2, "first")?
    } else {
        0
    };
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
