//! HTTP/1.1 for the benchmarks: a keep-alive server and paced one-request connections.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::Arc,
    thread,
    time::Duration,
};

use super::{Res, say};

/// Minimal HTTP/1.1 server for connection-churn benchmarks: answers every request with a tiny
/// response and closes the connection. Runs until killed.
pub(crate) fn http_server(bind: SocketAddr, threads: usize) -> Res<()> {
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
pub(crate) fn connect_rate(addr: SocketAddr, rate: u64, seconds: u64) -> Res<()> {
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
