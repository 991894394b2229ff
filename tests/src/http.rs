//! HTTP clients for the tests: a plain GET, and curl for TLS and authentication.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    time::Duration,
};

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
