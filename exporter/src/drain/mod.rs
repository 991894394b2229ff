//! Periodic reading of the kernel's flow maps.
//!
//! Programs add into the flow map selected by `CONFIG.generation`. A drain flips the generation,
//! waits until no program can still be writing into the old map, then reads and empties it.
//! Every count is therefore read exactly once, and the map only has to hold the flows of one
//! interval. The wait is `membarrier(MEMBARRIER_CMD_GLOBAL)`, which is `synchronize_rcu()`
//! (kernel/sched/membarrier.c); cgroup_skb and sock_ops programs run inside an RCU read-side
//! section (`bpf_prog_run_array_cg()`, kernel/bpf/cgroup.c), so once it returns every program
//! that read the old generation has finished.
//!
//! The DNS maps follow the same generation. Queries still waiting for a response after the DNS
//! timeout are removed from the pending map here and reported as timeouts; the kernel removes
//! answered ones, and only the side whose delete succeeds counts the query, so each query ends
//! as exactly one latency sample or one timeout.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use aya::{
    Pod,
    maps::{MapData, PerCpuHashMap},
};

use sockscope_common::{
    Config, EVENT_COUNT, FlowKey, FlowStats,
    dns::{DnsKey, DnsStats},
};
use tracing::{debug, warn};

pub mod pending;

use crate::{dns::name::presentation, ebpf::Maps};

/// Everything one drain took out of the kernel.
#[derive(Debug, Default)]
pub struct Batch {
    /// Flow deltas since the previous drain, summed over CPUs.
    pub flows: Vec<(FlowKey, FlowStats)>,
    /// Event counter deltas since the previous drain, by `EVENT_*` index.
    pub events: [u64; EVENT_COUNT as usize],
    /// DNS count deltas since the previous drain.
    pub dns: Vec<(DnsKey, DnsStats)>,
    /// Queries that timed out since the previous drain (their query keys).
    pub dns_timeouts: Vec<DnsKey>,
    /// Question names (presentation form) of the name hashes in `dns` and `dns_timeouts`.
    pub qnames: HashMap<u64, String>,
    /// Entries the drained flow map held.
    pub drained_entries: usize,
    /// Entries the drained DNS map held.
    pub drained_dns_entries: usize,
    /// Queries still waiting for a response after the sweep.
    pub dns_pending: usize,
    /// Which map was drained.
    pub drained_generation: usize,
    /// Entries that could not be read or deleted (logged).
    pub errors: u64,
}

/// Drains the kernel maps.
pub struct Drainer {
    maps: Maps,
    generation: u32,
    config: Config,
    events_seen: [u64; EVENT_COUNT as usize],
    dns_timeout: Duration,
    /// Names learnt from the kernel's LRU name map, by hash.
    names: HashMap<u64, String>,
}

/// Names kept by the agent; beyond this the table starts over (names are re-read on use).
const MAX_NAMES: usize = 65536;

impl Drainer {
    /// Wraps the maps; `config` is what the loader wrote into CONFIG.
    /// A query unanswered for `dns_timeout` counts as timed out.
    pub fn new(maps: Maps, dns_timeout: Duration) -> Self {
        let config = maps.config.get(&0, 0).unwrap_or_default();
        Drainer {
            generation: config.generation & 1,
            config,
            maps,
            events_seen: [0; EVENT_COUNT as usize],
            dns_timeout,
            names: HashMap::new(),
        }
    }

    /// One drain: flip, wait for writers, run `quiesced` (which applies the DNS answers
    /// forwarded so far, so the flows read next find their names), then read and empty the
    /// previous generation and sweep timed-out DNS queries.
    pub fn drain(&mut self, quiesced: impl FnOnce()) -> Batch {
        let previous = (self.generation & 1) as usize;
        self.generation ^= 1;
        self.config.generation = self.generation;
        if let Err(e) = self.maps.config.set(0, self.config, 0) {
            // Programs keep writing into the old map; draining it now would race them.
            warn!("cannot flip the flow-map generation: {e}; skipping this drain");
            self.generation ^= 1;
            self.config.generation = self.generation;
            return Batch {
                errors: 1,
                ..Default::default()
            };
        }
        wait_for_programs();
        quiesced();
        let mut batch = self.take(previous);
        self.take_dns(previous, &mut batch);
        self.sweep_pending(&mut batch);
        self.name_batch(&mut batch);
        self.read_events(&mut batch);
        batch
    }

    /// Fills `batch.qnames` with the names of the hashes the batch uses, reading the ones the
    /// agent has not seen from the kernel's name map. A name evicted from that map before the
    /// agent read it stays unknown (labelled `~other`).
    fn name_batch(&mut self, batch: &mut Batch) {
        let hashes: Vec<u64> = batch
            .dns
            .iter()
            .map(|(k, _)| k.name_hash)
            .chain(batch.dns_timeouts.iter().map(|k| k.name_hash))
            .filter(|h| *h != 0)
            .collect();
        for h in hashes {
            if batch.qnames.contains_key(&h) {
                continue;
            }
            let name = match self.names.get(&h) {
                Some(n) => n.clone(),
                None => match self.maps.dns_names.get(&h, 0) {
                    Ok(wire) => {
                        let n = presentation(&wire.wire);
                        if self.names.len() >= MAX_NAMES {
                            self.names.clear();
                        }
                        self.names.insert(h, n.clone());
                        n
                    }
                    Err(e) => {
                        debug!(hash = h, "DNS name not in the kernel's name map: {e}");
                        continue;
                    }
                },
            };
            batch.qnames.insert(h, name);
        }
    }

    /// Reads and deletes every entry of DNS map `index`. Only call when no program writes it.
    fn take_dns(&mut self, index: usize, batch: &mut Batch) {
        let taken = take_all(
            &mut self.maps.dns[index],
            "DNS",
            DnsStats::add,
            DnsStats::is_zero,
        );
        batch.drained_dns_entries += taken.entries;
        batch.errors += taken.errors;
        batch.dns.extend(taken.sums);
    }

    /// Takes queries older than the DNS timeout out of the pending table: each one is a
    /// timeout.
    fn sweep_pending(&mut self, batch: &mut Batch) {
        let limit = self.dns_timeout.as_nanos() as u64;
        let (expired, live) = self.maps.dns_pending.sweep(monotonic_ns(), limit);
        batch.dns_timeouts.extend(expired);
        batch.dns_pending = live;
    }

    /// Reads and deletes every entry of flow map `index`. Only call when no program writes it.
    fn take(&mut self, index: usize) -> Batch {
        let taken = take_all(
            &mut self.maps.flows[index],
            "flow",
            FlowStats::add,
            FlowStats::is_zero,
        );
        Batch {
            drained_generation: index,
            drained_entries: taken.entries,
            errors: taken.errors,
            flows: taken.sums,
            ..Default::default()
        }
    }

    fn read_events(&mut self, batch: &mut Batch) {
        for i in 0..EVENT_COUNT {
            let Ok(values) = self.maps.events.get(&i, 0) else {
                continue;
            };
            let total: u64 = values.iter().fold(0u64, |a, v| a.wrapping_add(*v));
            let idx = i as usize;
            batch.events[idx] = total.wrapping_sub(self.events_seen[idx]);
            self.events_seen[idx] = total;
        }
    }

    /// Final drain at shutdown, after the programs are detached: both generations.
    pub fn drain_all(&mut self) -> Batch {
        wait_for_programs();
        let mut batch = self.take(0);
        let other = self.take(1);
        batch.flows.extend(other.flows);
        batch.drained_entries += other.drained_entries;
        batch.errors += other.errors;
        self.take_dns(0, &mut batch);
        self.take_dns(1, &mut batch);
        self.sweep_pending(&mut batch);
        self.name_batch(&mut batch);
        self.read_events(&mut batch);
        batch
    }
}

/// What [`take_all`] read out of a map.
struct Taken<K, V> {
    /// Per-key values summed over CPUs, zero sums left out.
    sums: Vec<(K, V)>,
    /// Entries the map held.
    entries: usize,
    /// Entries that could not be read or deleted (logged).
    errors: u64,
}

/// Reads every entry of a per-CPU hash, summing each key's CPU slots with `add`, and deletes
/// it. Keys are listed first, so deleting never disturbs the iteration.
fn take_all<K: Pod, V: Pod + Default>(
    map: &mut PerCpuHashMap<MapData, K, V>,
    what: &str,
    add: impl Fn(&mut V, &V),
    is_zero: impl Fn(&V) -> bool,
) -> Taken<K, V> {
    let keys: Vec<K> = map.keys().filter_map(|k| k.ok()).collect();
    let mut taken = Taken {
        sums: Vec::with_capacity(keys.len()),
        entries: keys.len(),
        errors: 0,
    };
    for key in keys {
        match map.get(&key, 0) {
            Ok(values) => {
                let mut total = V::default();
                for v in values.iter() {
                    add(&mut total, v);
                }
                if !is_zero(&total) {
                    taken.sums.push((key, total));
                }
            }
            Err(e) => {
                taken.errors += 1;
                warn!("reading a {what} entry failed: {e}");
            }
        }
        if let Err(e) = map.remove(&key) {
            taken.errors += 1;
            warn!("deleting a {what} entry failed: {e}");
        }
    }
    taken
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns()`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// Returns once every eBPF program that started before the call has finished.
fn wait_for_programs() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;
    let start = Instant::now();
    // SAFETY: membarrier takes no pointers.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc != 0
        || std::thread::available_parallelism()
            .map(|n| n.get() == 1)
            .unwrap_or(false)
    {
        // Unavailable (nohz_full) or skipped by the kernel on one CPU: fall back to a pause
        // far longer than any program runs.
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    tracing::trace!(elapsed = ?start.elapsed(), "programs quiesced");
}
