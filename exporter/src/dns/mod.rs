//! DNS answers from the kernel into the hostname cache.
//!
//! The cgroup_skb program forwards responses that carry answers through the `DNS_ANSWERS` ring
//! buffer (rate-bounded per {cgroup, name, qtype}). A reader thread wakes on new records and
//! decodes them with hickory-proto into `identity::hosts`. The drain calls [`Answers::catch_up`]
//! after the kernel programs have quiesced and before it reads the flow maps, so a connection
//! made right after its DNS answer is labelled with that answer's name in the same drain.

pub mod answer;

use std::{
    os::fd::{AsRawFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use sockscope_common::dns::{DNS_ANSWER_HEADER, DNS_ANSWER_MAX};
use tracing::debug;

use parking_lot::Mutex;

use crate::identity::Identity;

/// What happened to forwarded responses, since start.
#[derive(Debug, Default)]
pub struct AnswerStats {
    /// Responses whose addresses went into the hostname cache.
    pub cached: AtomicU64,
    /// Responses without an address for the question name (e.g. only a CNAME, or MX answers).
    pub no_addresses: AtomicU64,
    /// Responses that could not be decoded.
    pub undecodable: AtomicU64,
    /// Responses whose owner's network namespace could not be found (process already gone).
    pub no_namespace: AtomicU64,
    /// Responses whose question name is longer than a DNS name can be written (refused).
    pub name_too_long: AtomicU64,
}

/// The ring buffer and where its answers go.
pub struct Answers {
    ring: Mutex<RingBuf<MapData>>,
    fd: RawFd,
    identity: Arc<Mutex<Identity>>,
    /// Counters for self-metrics.
    pub stats: AnswerStats,
    /// When the reader thread last woke (monotonic ms since `started`), for liveness.
    heartbeat: AtomicU64,
    started: Instant,
}

impl Answers {
    /// Wraps the ring buffer.
    pub fn new(ring: RingBuf<MapData>, identity: Arc<Mutex<Identity>>) -> Self {
        Answers {
            fd: ring.as_raw_fd(),
            ring: Mutex::new(ring),
            identity,
            stats: AnswerStats::default(),
            heartbeat: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// How long ago the reader thread last woke (it wakes at least every [`POLL`]).
    pub fn since_heartbeat(&self) -> Duration {
        let last = Duration::from_millis(self.heartbeat.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    fn beat(&self) {
        let now = self.started.elapsed().as_millis().min(u64::MAX as u128) as u64;
        self.heartbeat.store(now, Ordering::Relaxed);
    }

    /// Reads every record in the ring buffer into the hostname cache. Returns when the records
    /// present at the call are all applied.
    pub fn catch_up(&self) {
        let mut ring = self.ring.lock();
        let mut decoded = Vec::new();
        while let Some(item) = ring.next() {
            match parse_record(&item) {
                Some((cgroup_id, msg)) => match answer::decode(msg) {
                    Ok(a) if !a.addrs.is_empty() => decoded.push((cgroup_id, a)),
                    Ok(_) => {
                        self.stats.no_addresses.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                        debug!(cgroup_id, "forwarded DNS response not decoded: {e}");
                    }
                },
                None => {
                    self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if decoded.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut identity = self.identity.lock();
        for (cgroup_id, a) in decoded {
            let Some(ns) = identity.netns(cgroup_id) else {
                self.stats.no_namespace.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let mut refused = false;
            for (ip, ttl) in &a.addrs {
                refused |= identity.hosts.insert(ns, *ip, &a.qname, *ttl, now).is_err();
            }
            let outcome = if refused {
                &self.stats.name_too_long
            } else {
                &self.stats.cached
            };
            outcome.fetch_add(1, Ordering::Relaxed);
        }
        // The ring lock is held until here: a concurrent catch_up() returns only after these
        // answers are in the cache.
        drop(ring);
    }
}

/// Splits a ring record into its owner cgroup and DNS message.
fn parse_record(raw: &[u8]) -> Option<(u64, &[u8])> {
    let cgroup_id = u64::from_ne_bytes(raw.get(0..8)?.try_into().ok()?);
    let len = u32::from_ne_bytes(raw.get(8..12)?.try_into().ok()?) as usize;
    if len > DNS_ANSWER_MAX {
        return None;
    }
    let msg = raw.get(DNS_ANSWER_HEADER..DNS_ANSWER_HEADER + len)?;
    Some((cgroup_id, msg))
}

/// Longest sleep of the reader thread between two wake-ups.
pub const POLL: Duration = Duration::from_millis(200);

/// Starts the reader thread: it sleeps in poll() on the ring buffer and applies what arrives.
/// A panic in it ends the process (see `main`), as everywhere in the agent.
pub fn spawn_reader(
    answers: Arc<Answers>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("dns-answers".into())
        .spawn(move || {
            let timeout = POLL.as_millis() as libc::c_int;
            while !stop.load(Ordering::Relaxed) {
                answers.beat();
                if crate::fault::fires(crate::fault::Fault::DnsPanic) {
                    panic!("injected fault: dns-panic");
                }
                let mut pfd = libc::pollfd {
                    fd: answers.fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; the fd lives as long as `answers`.
                let rc = unsafe { libc::poll(&mut pfd, 1, timeout) };
                if rc > 0 {
                    answers.catch_up();
                } else if rc < 0 {
                    // EINTR or worse: do not spin.
                    thread::sleep(Duration::from_millis(50));
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records() {
        let mut raw = vec![0u8; DNS_ANSWER_HEADER + DNS_ANSWER_MAX];
        raw[0..8].copy_from_slice(&42u64.to_ne_bytes());
        raw[8..12].copy_from_slice(&3u32.to_ne_bytes());
        raw[16..19].copy_from_slice(b"abc");
        assert_eq!(parse_record(&raw), Some((42, &b"abc"[..])));
        raw[8..12].copy_from_slice(&(DNS_ANSWER_MAX as u32 + 1).to_ne_bytes());
        assert_eq!(parse_record(&raw), None);
        assert_eq!(parse_record(&raw[..5]), None);
    }
}
