//! TCP: the exact-payload server and clients, refused and late connects.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

use super::{Res, say};

pub(crate) const CHUNK: usize = 64 * 1024;

pub(crate) fn write_n(s: &mut impl Write, mut n: u64) -> Res<u64> {
    let buf = vec![0x5au8; CHUNK];
    let total = n;
    while n > 0 {
        let k = n.min(CHUNK as u64) as usize;
        s.write_all(&buf[..k]).map_err(|e| format!("write: {e}"))?;
        n -= k as u64;
    }
    Ok(total)
}

pub(crate) fn read_n(s: &mut impl Read, n: u64) -> Res<u64> {
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

pub(crate) fn tcp_server(
    bind: SocketAddr,
    conns: usize,
    backlog: Option<i32>,
    accept_after: Option<u64>,
) -> Res<()> {
    let listener = TcpListener::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    if let Some(b) = backlog {
        // listen(2) again on a listening socket sets its backlog.
        // SAFETY: a valid socket fd owned by `listener`.
        if unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), b) } != 0 {
            return Err(format!("listen: {}", std::io::Error::last_os_error()));
        }
    }
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    say(&format!("ready {port}"));
    if let Some(ms) = accept_after {
        thread::sleep(Duration::from_millis(ms));
    }
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

pub(crate) fn tcp_client(
    addr: SocketAddr,
    conns: usize,
    concurrency: usize,
    (send, reply): (u64, u64),
    hold: Option<String>,
    second: Option<(u64, u64)>,
) -> Res<()> {
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
pub(crate) fn report(
    prefix: &str,
    sent: &AtomicU64,
    received: &AtomicU64,
    failed: usize,
) -> Res<()> {
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

pub(crate) fn exchange(
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

pub(crate) fn tcp_reset_server(bind: SocketAddr) -> Res<()> {
    let listener = TcpListener::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    say(&format!("ready {port}"));
    let (mut s, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    let mut buf = [0u8; 16];
    s.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
    // SO_LINGER {on, 0}: close() aborts the connection with a reset (`tcp_disconnect()`).
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt(2) on a valid socket fd with a linger struct of its size.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!("SO_LINGER: {}", std::io::Error::last_os_error()));
    }
    drop(s);
    say("reset");
    Ok(())
}

pub(crate) fn connect_reset(addr: SocketAddr) -> Res<()> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.write_all(&[0x5a; 16])
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            say("reset");
            Ok(())
        }
        other => Err(format!("expected a reset, got {other:?}")),
    }
}

pub(crate) fn connect_refused(addr: SocketAddr) -> Res<()> {
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
pub(crate) fn tcp_late_connect(addr: SocketAddr, hold: String, send: u64, reply: u64) -> Res<()> {
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
