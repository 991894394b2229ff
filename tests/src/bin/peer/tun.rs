//! A link with a real round-trip time, where the kernel has no `sch_netem`: one TUN device in
//! each of two network namespaces, and this process copying every IP packet from one to the
//! other after holding it for the delay. TCP between the two addresses then measures a
//! smoothed RTT of about twice the delay.

use std::{
    ffi::CString,
    fs::File,
    io::{Read, Write},
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd},
    process::Command,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use super::{Res, say};

/// `TUNSETIFF` (`_IOW('T', 202, int)`, include/uapi/linux/if_tun.h).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `IFF_TUN`: IP packets, no Ethernet header; `IFF_NO_PI`: no packet information prefix.
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

/// Opens a new TUN device `name` inside network namespace `ns` (under /run/netns): the
/// device belongs to the namespace of the thread that creates it.
fn open_tun(ns: &str, name: &str) -> Res<File> {
    let netns = File::open(format!("/run/netns/{ns}")).map_err(|e| format!("netns {ns}: {e}"))?;
    let name = name.to_string();
    thread::scope(|s| {
        s.spawn(|| -> Res<File> {
            // SAFETY: setns(2) on this thread only, with an nsfs fd open for the call.
            if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns {ns}: {}", std::io::Error::last_os_error()));
            }
            let path = CString::new("/dev/net/tun").map_err(|e| e.to_string())?;
            // SAFETY: open(2) of a NUL-terminated path; the fd is owned below.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(format!("/dev/net/tun: {}", std::io::Error::last_os_error()));
            }
            // SAFETY: fd was just returned by open(2) and is owned by nothing else.
            let file = unsafe { File::from_raw_fd(fd) };
            // SAFETY: an all-zero ifreq is valid; the name and flags are filled in below.
            let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
            for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes().take(15)) {
                *dst = src as libc::c_char;
            }
            req.ifr_ifru.ifru_flags = IFF_TUN | IFF_NO_PI;
            // SAFETY: TUNSETIFF reads and writes the ifreq passed.
            if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) } < 0 {
                return Err(format!("TUNSETIFF: {}", std::io::Error::last_os_error()));
            }
            Ok(file)
        })
        .join()
        .map_err(|_| "tun thread panicked".to_string())?
    })
}

fn ip(args: &[&str]) -> Res<()> {
    let st = Command::new("ip")
        .args(args)
        .status()
        .map_err(|e| format!("ip: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("ip {} failed", args.join(" ")))
    }
}

/// Copies packets from `from` to `to`, each `delay` after it was read (in order: one
/// constant delay keeps the deadlines ascending).
fn forward(mut from: File, mut to: File, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = from.read(&mut buf) {
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                return;
            }
        }
    });
    thread::spawn(move || {
        while let Ok((due, packet)) = rx.recv() {
            thread::sleep(due.saturating_duration_since(Instant::now()));
            // A packet the other side refuses (device down at exit) is simply lost, as on a
            // wire.
            let _ = to.write(&packet);
        }
    });
}

pub(crate) fn tun_delay(a: (&str, Ipv4Addr), b: (&str, Ipv4Addr), delay_ms: u64) -> Res<()> {
    let tag = std::process::id() % 100_000;
    let (name_a, name_b) = (format!("sst{tag}a"), format!("sst{tag}b"));
    let tun_a = open_tun(a.0, &name_a)?;
    let tun_b = open_tun(b.0, &name_b)?;
    for ((ns, addr), (_, peer), name) in [(a, b, &name_a), (b, a, &name_b)] {
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/32"),
            "peer",
            &format!("{peer}/32"),
            "dev",
            name,
        ])?;
        ip(&["-n", ns, "link", "set", name, "up"])?;
    }
    let delay = Duration::from_millis(delay_ms);
    let (a_read, b_read) = (
        tun_a.try_clone().map_err(|e| e.to_string())?,
        tun_b.try_clone().map_err(|e| e.to_string())?,
    );
    forward(a_read, tun_b, delay);
    forward(b_read, tun_a, delay);
    say("ready");
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}
