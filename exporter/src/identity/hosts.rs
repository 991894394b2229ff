//! Hostname cache: (network namespace, IP) -> the names that namespace resolved to that IP.
//!
//! Filled from the DNS answers the kernel forwards (`crate::dns`). TTLs are honoured within a
//! floor (applications and client libraries cache answers longer than short TTLs) and a ceiling
//! (an IP reassigned to another service should not keep its old name for days). The cache is
//! bounded in entries and in bytes (names come from DNS answers anyone can send a pod, so their
//! size is not trusted): least recently used entries go first.

use std::{
    net::IpAddr,
    num::NonZeroUsize,
    time::{Duration, Instant},
};

use lru::LruCache;

/// Names kept per address; when several names resolve to one IP (virtual hosting, CDNs), the
/// most recently resolved labels the series.
const NAMES_PER_IP: usize = 4;

/// Longest name accepted, in presentation form: 253 characters is the longest a DNS name can
/// be written without escapes (RFC 1035 2.3.4: 255 octets on the wire).
pub const MAX_NAME_LEN: usize = 253;

/// Bytes an entry costs besides its names: the key, the LRU node and the vector (measured
/// layout: (u64, IpAddr) key 24 B, Vec 24 B, list links and hash slot ~48 B).
const ENTRY_OVERHEAD: usize = 96;
/// Bytes a name costs besides its characters: the `Resolved` (String 24 B, two Instants 32 B).
const NAME_OVERHEAD: usize = 56;

#[derive(Debug, Clone)]
struct Resolved {
    name: String,
    resolved: Instant,
    expires: Instant,
}

/// Bounded LRU cache of resolved names.
pub struct HostCache {
    entries: LruCache<(u64, IpAddr), Vec<Resolved>>,
    ttl_min: Duration,
    ttl_max: Duration,
    evictions: u64,
    bytes: usize,
    max_bytes: usize,
}

fn names_bytes(names: &[Resolved]) -> usize {
    ENTRY_OVERHEAD
        + names
            .iter()
            .map(|r| r.name.len() + NAME_OVERHEAD)
            .sum::<usize>()
}

/// Why a name was not cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Longer than [`MAX_NAME_LEN`].
    TooLong,
}

impl HostCache {
    /// A cache of at most `capacity` (namespace, IP) entries and `max_bytes` bytes of them.
    pub fn new(capacity: usize, ttl_min: Duration, ttl_max: Duration) -> Self {
        Self::with_bytes(capacity, usize::MAX, ttl_min, ttl_max)
    }

    /// [`HostCache::new`] with a byte bound as well.
    pub fn with_bytes(
        capacity: usize,
        max_bytes: usize,
        ttl_min: Duration,
        ttl_max: Duration,
    ) -> Self {
        HostCache {
            entries: LruCache::new(NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN)),
            ttl_min,
            ttl_max: ttl_max.max(ttl_min),
            evictions: 0,
            bytes: 0,
            max_bytes,
        }
    }

    /// Records that namespace `netns` resolved `name` to `ip` with `ttl` seconds.
    pub fn insert(
        &mut self,
        netns: u64,
        ip: IpAddr,
        name: &str,
        ttl: u32,
        now: Instant,
    ) -> Result<(), Refused> {
        if name.len() > MAX_NAME_LEN {
            return Err(Refused::TooLong);
        }
        let ttl = Duration::from_secs(ttl.into()).clamp(self.ttl_min, self.ttl_max);
        let entry = Resolved {
            name: name.to_string(),
            resolved: now,
            expires: now + ttl,
        };
        let key = (netns, ip.to_canonical());
        if let Some(names) = self.entries.get_mut(&key) {
            let before = names_bytes(names);
            names.retain(|r| r.name != name && r.expires > now);
            if names.len() >= NAMES_PER_IP {
                // Oldest resolution goes.
                names.remove(0);
            }
            names.push(entry);
            self.bytes = self.bytes - before + names_bytes(names);
        } else {
            let names = vec![entry];
            self.bytes += names_bytes(&names);
            if let Some((k, old)) = self.entries.push(key, names)
                && k != key
            {
                self.bytes -= names_bytes(&old);
                self.evictions += 1;
            }
        }
        while self.bytes > self.max_bytes {
            match self.entries.pop_lru() {
                Some((_, old)) => {
                    self.bytes -= names_bytes(&old);
                    self.evictions += 1;
                }
                None => break,
            }
        }
        Ok(())
    }

    /// Bytes the entries take (names and bookkeeping), as bounded by the byte limit.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The name `netns` most recently resolved to `ip`, if still within its TTL.
    pub fn lookup(&mut self, netns: u64, ip: IpAddr, now: Instant) -> Option<&str> {
        let names = self.entries.get(&(netns, ip.to_canonical()))?;
        names
            .iter()
            .filter(|r| r.expires > now)
            .max_by_key(|r| r.resolved)
            .map(|r| r.name.as_str())
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries pushed out by newer ones since start.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(cap: usize) -> HostCache {
        HostCache::new(cap, Duration::from_secs(30), Duration::from_secs(3600))
    }

    #[test]
    fn per_namespace_names() {
        let mut c = cache(16);
        let now = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        c.insert(1, ip, "alpha.test", 60, now).expect("cached");
        c.insert(2, ip, "beta.test", 60, now).expect("cached");
        assert_eq!(c.lookup(1, ip, now), Some("alpha.test"));
        assert_eq!(c.lookup(2, ip, now), Some("beta.test"));
        assert_eq!(c.lookup(3, ip, now), None);
        // The v4-mapped form of the address is the same entry.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(c.lookup(1, mapped, now), Some("alpha.test"));
    }

    #[test]
    fn ttl_floor_ceiling_and_latest_name() {
        let mut c = cache(16);
        let t0 = Instant::now();
        let ip: IpAddr = "fd00::1".parse().expect("ip");
        // TTL 1s is raised to the 30s floor.
        c.insert(1, ip, "a.test", 1, t0).expect("cached");
        assert_eq!(
            c.lookup(1, ip, t0 + Duration::from_secs(20)),
            Some("a.test")
        );
        assert_eq!(c.lookup(1, ip, t0 + Duration::from_secs(31)), None);
        // Two names: the most recently resolved one wins while both are valid.
        c.insert(1, ip, "b.test", 600, t0 + Duration::from_secs(1))
            .expect("cached");
        c.insert(1, ip, "c.test", 600, t0 + Duration::from_secs(2))
            .expect("cached");
        assert_eq!(c.lookup(1, ip, t0 + Duration::from_secs(3)), Some("c.test"));
        c.insert(1, ip, "b.test", 600, t0 + Duration::from_secs(4))
            .expect("cached");
        assert_eq!(c.lookup(1, ip, t0 + Duration::from_secs(5)), Some("b.test"));
        // A week-long TTL is capped at the ceiling.
        c.insert(1, ip, "d.test", 604_800, t0 + Duration::from_secs(10))
            .expect("cached");
        assert_eq!(c.lookup(1, ip, t0 + Duration::from_secs(3700)), None);
    }

    #[test]
    fn bounded_in_bytes_and_name_length() {
        let mut c = HostCache::with_bytes(
            1000,
            10 * (ENTRY_OVERHEAD + NAME_OVERHEAD + 100),
            Duration::from_secs(30),
            Duration::from_secs(3600),
        );
        let now = Instant::now();
        for i in 0..100u8 {
            let name = format!("{i:0>100}");
            c.insert(1, IpAddr::from([10, 0, 1, i]), &name, 60, now)
                .expect("cached");
            assert!(c.bytes() <= 10 * (ENTRY_OVERHEAD + NAME_OVERHEAD + 100));
        }
        assert_eq!(c.len(), 10);
        assert_eq!(c.evictions(), 90);
        // The most recent ones stayed.
        assert!(c.lookup(1, IpAddr::from([10, 0, 1, 99]), now).is_some());
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            c.insert(1, IpAddr::from([10, 0, 2, 1]), &long, 60, now),
            Err(Refused::TooLong)
        );
        let ok = "a".repeat(MAX_NAME_LEN);
        assert!(
            c.insert(1, IpAddr::from([10, 0, 2, 1]), &ok, 60, now)
                .is_ok()
        );
    }

    #[test]
    fn bounded_lru() {
        let mut c = cache(2);
        let now = Instant::now();
        let ips: Vec<IpAddr> = (1..=3u8).map(|i| IpAddr::from([10, 0, 0, i])).collect();
        c.insert(1, ips[0], "a", 60, now).expect("cached");
        c.insert(1, ips[1], "b", 60, now).expect("cached");
        // Touch a, so b is the least recently used.
        assert!(c.lookup(1, ips[0], now).is_some());
        c.insert(1, ips[2], "c", 60, now).expect("cached");
        assert_eq!(c.len(), 2);
        assert_eq!(c.evictions(), 1);
        assert_eq!(c.lookup(1, ips[1], now), None);
        assert_eq!(c.lookup(1, ips[0], now), Some("a"));
        // Many names for one IP: bounded too.
        for i in 0..10 {
            c.insert(
                1,
                ips[0],
                &format!("n{i}"),
                60,
                now + Duration::from_millis(i),
            )
            .expect("cached");
        }
        assert_eq!(
            c.lookup(1, ips[0], now + Duration::from_secs(1)),
            Some("n9")
        );
        assert!(
            c.entries
                .peek(&(1, ips[0]))
                .is_some_and(|v| v.len() <= NAMES_PER_IP)
        );
    }
}
