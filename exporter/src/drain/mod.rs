//! Periodic reading of the kernel's maps.
//!
//! Programs add into the maps selected by `CONFIG.generation`: the flow map, the per-cgroup
//! overflow map beside it, and their DNS counterparts. A drain flips the generation, waits
//! until no program can still be writing into the old maps, then reads and empties them. Every
//! count is therefore read exactly once, and the maps only have to hold one interval. The wait
//! is `membarrier(MEMBARRIER_CMD_GLOBAL)`, which is `synchronize_rcu()`
//! (kernel/sched/membarrier.c); cgroup_skb and sock_ops programs run inside an RCU read-side
//! section (`bpf_prog_run_array_cg()`, kernel/bpf/cgroup.c), so once it returns every program
//! that read the old generation has finished. The node-wide last-resort totals are never
//! emptied: the drain reports their growth.
//!
//! Queries still waiting for a response after the DNS timeout are taken out of the pending
//! table here and reported as timeouts; the kernel takes answered ones, and only the side whose
//! compare-and-exchange succeeds ends a query, so each ends as one latency sample or one
//! timeout.

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

use aya::{
    Pod,
    maps::{MapData, PerCpuArray, PerCpuHashMap, PerCpuValues},
};

use sockscope_common::{
    Config, EVENT_COUNT, EVENT_DNS_OVERFLOW_FULL, EVENT_DROP_MAP_FULL, EVENT_FLOW_OVERFLOW_FULL,
    EVENT_TIMING_FOLDED, FlowKey, FlowStats, NODE_FLOW_SLOTS, OverflowKey, PROTO_TCP, PROTO_UDP,
    dns::{DNS_NAME_SPLIT, DnsKey, DnsStats, NODE_DNS_SLOTS, node_dns_key},
    health::{
        DropKey, NODE_DROP_REASONS, NODE_DROP_SLOTS, NODE_TIMING_SLOTS, TimingKey, TimingStats,
        node_timing_key,
    },
};
use tracing::{debug, warn};

use crate::{
    ebpf::Maps,
    fault::{self, Fault},
};

/// Everything one drain took out of the kernel.
#[derive(Debug, Default)]
pub struct Batch {
    /// Flow deltas since the previous drain, summed over CPUs.
    pub flows: Vec<(FlowKey, FlowStats)>,
    /// Deltas of flows that did not fit the flow map, by owner, role and protocol; the
    /// node-wide totals come last, with cgroup id 0.
    pub flow_overflow: Vec<(OverflowKey, FlowStats)>,
    /// Event counter deltas since the previous drain, by `EVENT_*` index.
    pub events: [u64; EVENT_COUNT as usize],
    /// DNS count deltas since the previous drain. Folded keys have `name_hash` 0 (and are not
    /// errors); node-wide ones also have cgroup id 0.
    pub dns: Vec<(DnsKey, DnsStats)>,
    /// Queries that timed out since the previous drain (their query keys).
    pub dns_timeouts: Vec<DnsKey>,
    /// TCP timing samples since the previous drain, by edge, kind and bucket; node-wide ones
    /// (owner and peer lost) last, with cgroup id 0.
    pub timings: Vec<(TimingKey, TimingStats)>,
    /// Packet drops since the previous drain; cgroup id 0: the node's.
    pub drops: Vec<(DropKey, u64)>,
    /// Question names (wire format, as the kernel stored them) of the name hashes in `dns`
    /// and `dns_timeouts`.
    pub qnames: HashMap<u64, Box<[u8]>>,
    /// Entries the drained flow map held.
    pub drained_entries: usize,
    /// Entries the drained flow overflow map held.
    pub drained_overflow_entries: usize,
    /// Entries the drained DNS map held.
    pub drained_dns_entries: usize,
    /// Entries the drained DNS overflow map held.
    pub drained_dns_overflow_entries: usize,
    /// Queries still waiting for a response after the sweep.
    pub dns_pending: usize,
    /// Which map was drained.
    pub drained_generation: usize,
    /// Entries that could not be read or deleted (logged).
    pub errors: u64,
    /// Whether the drain could not use membarrier(2) to wait for the programs and slept instead.
    pub membarrier_fallback: bool,
}

/// Values already taken from entries that stayed in a map (their delete and zeroing failed):
/// subtracted when the entry is read again, so nothing is counted twice.
type Carried<K, V> = [HashMap<K, V>; 2];

/// Drains the kernel maps.
pub struct Drainer {
    maps: Maps,
    generation: u32,
    config: Config,
    events_seen: [u64; EVENT_COUNT as usize],
    node_flows_seen: Vec<FlowStats>,
    node_dns_seen: Vec<DnsStats>,
    node_timings_seen: Vec<TimingStats>,
    node_drops_seen: Vec<u64>,
    /// Drains left that read the node-wide flow, DNS, timing and drop totals: they are only
    /// written when the map before them was full (counted in an event first), so they are read
    /// after such an event, and once more for a write that raced that read; never otherwise.
    node_reads: [u8; 4],
    dns_timeout: Duration,
    /// Names learnt from the kernel's LRU name map, by hash, and their bytes.
    names: HashMap<u64, Box<[u8]>>,
    names_bytes: usize,
    carried_flows: Carried<FlowKey, FlowStats>,
    carried_overflow: Carried<OverflowKey, FlowStats>,
    carried_dns: Carried<DnsKey, DnsStats>,
    carried_dns_overflow: Carried<DnsKey, DnsStats>,
    carried_timings: Carried<TimingKey, TimingStats>,
    carried_drops: Carried<DropKey, u64>,
    warned_membarrier: bool,
}

/// Names kept by the agent; beyond this (or [`MAX_NAME_BYTES`]) the table starts over (names
/// are re-read on use).
const MAX_NAMES: usize = 65536;
/// Bytes of names kept by the agent.
const MAX_NAME_BYTES: usize = 8 << 20;

impl Drainer {
    /// Wraps the maps; `config` is what the loader wrote into CONFIG.
    /// A query unanswered for `dns_timeout` counts as timed out.
    pub fn new(maps: Maps, dns_timeout: Duration) -> Self {
        let config = maps.config.get(&0, 0).unwrap_or_default();
        let mut d = Drainer {
            generation: config.generation & 1,
            config,
            maps,
            events_seen: [0; EVENT_COUNT as usize],
            node_flows_seen: vec![FlowStats::default(); NODE_FLOW_SLOTS as usize],
            node_dns_seen: vec![DnsStats::default(); NODE_DNS_SLOTS as usize],
            node_timings_seen: vec![TimingStats::default(); NODE_TIMING_SLOTS as usize],
            node_drops_seen: vec![0; NODE_DROP_SLOTS as usize],
            node_reads: [1; 4],
            dns_timeout,
            names: HashMap::new(),
            names_bytes: 0,
            carried_flows: Default::default(),
            carried_overflow: Default::default(),
            carried_dns: Default::default(),
            carried_dns_overflow: Default::default(),
            carried_timings: Default::default(),
            carried_drops: Default::default(),
            warned_membarrier: false,
        };
        // The node-wide totals are cumulative: what they hold at start (nothing, on a fresh
        // load) is the baseline.
        let mut ignored = Batch::default();
        d.read_node(&mut ignored);
        d
    }

    /// One drain: flip, wait for writers, run `quiesced` (which applies the DNS answers
    /// forwarded so far, so the flows read next find their names), then read and empty the
    /// previous generation and sweep timed-out DNS queries.
    pub fn drain(&mut self, quiesced: impl FnOnce()) -> Batch {
        let previous = (self.generation & 1) as usize;
        self.generation ^= 1;
        self.config.generation = self.generation;
        // A new interval: every live connection gives one more RTT sample.
        self.config.epoch = self.config.epoch.wrapping_add(1);
        if let Err(e) = self.maps.config.set(0, self.config, 0) {
            // Programs keep writing into the old map; draining it now would race them.
            warn!("cannot flip the flow-map generation: {e}; skipping this drain");
            self.generation ^= 1;
            self.config.generation = self.generation;
            self.config.epoch = self.config.epoch.wrapping_sub(1);
            return Batch {
                errors: 1,
                ..Default::default()
            };
        }
        let mut batch = Batch {
            drained_generation: previous,
            membarrier_fallback: !self.wait_for_programs(),
            ..Default::default()
        };
        quiesced();
        self.take(previous, &mut batch);
        self.sweep_pending(&mut batch);
        self.name_batch(&mut batch);
        self.read_events(&mut batch);
        self.read_node(&mut batch);
        batch
    }

    /// Final drain at shutdown, after the programs are detached: both generations.
    pub fn drain_all(&mut self) -> Batch {
        let mut batch = Batch {
            membarrier_fallback: !self.wait_for_programs(),
            ..Default::default()
        };
        self.take(0, &mut batch);
        self.take(1, &mut batch);
        self.sweep_pending(&mut batch);
        self.name_batch(&mut batch);
        self.read_events(&mut batch);
        // The programs are detached: whatever the node-wide totals hold is final.
        self.node_reads = [1; 4];
        self.read_node(&mut batch);
        batch
    }

    /// Reads and empties generation `index` of every flipped map. Only call when no program
    /// writes it.
    fn take(&mut self, index: usize, batch: &mut Batch) {
        let fail = fault::fires(Fault::MapDelete);
        let maps = &mut self.maps;
        let t = take_all(
            &mut maps.flows[index],
            &mut self.carried_flows[index],
            "flow",
            FlowStats::add,
            FlowStats::sub,
            FlowStats::is_zero,
            fail,
        );
        batch.drained_entries += t.entries;
        batch.errors += t.errors;
        batch.flows.extend(t.sums);
        let t = take_all(
            &mut maps.flow_overflow[index],
            &mut self.carried_overflow[index],
            "flow overflow",
            FlowStats::add,
            FlowStats::sub,
            FlowStats::is_zero,
            fail,
        );
        batch.drained_overflow_entries += t.entries;
        batch.errors += t.errors;
        batch.flow_overflow.extend(t.sums);
        let t = take_all(
            &mut maps.dns[index],
            &mut self.carried_dns[index],
            "DNS",
            DnsStats::add,
            DnsStats::sub,
            DnsStats::is_zero,
            fail,
        );
        batch.drained_dns_entries += t.entries;
        batch.errors += t.errors;
        batch.dns.extend(t.sums);
        let t = take_all(
            &mut maps.dns_overflow[index],
            &mut self.carried_dns_overflow[index],
            "DNS overflow",
            DnsStats::add,
            DnsStats::sub,
            DnsStats::is_zero,
            fail,
        );
        batch.drained_dns_overflow_entries += t.entries;
        batch.errors += t.errors;
        batch.dns.extend(t.sums);
        let t = take_all(
            &mut maps.timings[index],
            &mut self.carried_timings[index],
            "TCP timing",
            TimingStats::add,
            TimingStats::sub,
            TimingStats::is_zero,
            fail,
        );
        batch.errors += t.errors;
        batch.timings.extend(t.sums);
        let t = take_all(
            &mut maps.drops[index],
            &mut self.carried_drops[index],
            "packet drop",
            |a: &mut u64, b: &u64| *a = a.wrapping_add(*b),
            |a: &mut u64, b: &u64| *a = a.wrapping_sub(*b),
            |a: &u64| *a == 0,
            fail,
        );
        batch.errors += t.errors;
        batch.drops.extend(t.sums);
        // The per-cgroup entry counters start over with the generation. A counter left behind
        // only makes its cgroup fold sooner next time: never a count lost.
        for room in [&mut maps.flow_room[index], &mut maps.dns_room[index]] {
            let keys: Vec<u64> = room.keys().filter_map(|k| k.ok()).collect();
            for k in keys {
                if let Err(e) = room.remove(&k) {
                    debug!("clearing a per-cgroup entry counter failed: {e}");
                }
            }
        }
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
            .filter(|h| *h != 0 && *h != DNS_NAME_SPLIT)
            .collect();
        for h in hashes {
            if batch.qnames.contains_key(&h) {
                continue;
            }
            let name = match self.names.get(&h) {
                Some(n) => n.clone(),
                None => match self.maps.dns_names.get(&h, 0) {
                    Ok(wire) => {
                        let n = wire_name(&wire.wire);
                        if self.names.len() >= MAX_NAMES || self.names_bytes >= MAX_NAME_BYTES {
                            self.names.clear();
                            self.names_bytes = 0;
                        }
                        self.names_bytes += n.len();
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

    /// Takes queries older than the DNS timeout out of the pending table: each one is a
    /// timeout.
    fn sweep_pending(&mut self, batch: &mut Batch) {
        let limit = self.dns_timeout.as_nanos() as u64;
        let (expired, live) = self.maps.dns_pending.sweep(monotonic_ns(), limit);
        batch.dns_timeouts.extend(expired);
        batch.dns_pending = live;
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
        for (i, event) in [
            EVENT_FLOW_OVERFLOW_FULL,
            EVENT_DNS_OVERFLOW_FULL,
            EVENT_TIMING_FOLDED,
            EVENT_DROP_MAP_FULL,
        ]
        .into_iter()
        .enumerate()
        {
            if batch.events[event as usize] > 0 {
                self.node_reads[i] = 2;
            }
        }
    }

    /// The growth of the node-wide totals since the last read, as overflow entries of cgroup 0.
    /// They are never emptied, so a write racing the read is simply part of the next growth.
    fn read_node(&mut self, batch: &mut Batch) {
        let flows = self.node_reads[0] > 0;
        let dns = self.node_reads[1] > 0;
        let timings = self.node_reads[2] > 0;
        let drops = self.node_reads[3] > 0;
        self.node_reads = self.node_reads.map(|n| n.saturating_sub(1));
        for slot in (0..NODE_TIMING_SLOTS).filter(|_| timings) {
            let Some(total) = sum_slot(&self.maps.node_timings, slot, TimingStats::add) else {
                continue;
            };
            let mut delta = total;
            delta.sub(&self.node_timings_seen[slot as usize]);
            self.node_timings_seen[slot as usize] = total;
            if !delta.is_zero() {
                let (kind, bucket) = node_timing_key(slot);
                let key = TimingKey {
                    kind,
                    bucket,
                    ..Default::default()
                };
                batch.timings.push((key, delta));
            }
        }
        for slot in (0..NODE_DROP_SLOTS).filter(|_| drops) {
            let Some(total) = sum_slot(&self.maps.node_drops, slot, |a, b| *a = a.wrapping_add(*b))
            else {
                continue;
            };
            let delta = total.wrapping_sub(self.node_drops_seen[slot as usize]);
            self.node_drops_seen[slot as usize] = total;
            if delta != 0 {
                let key = DropKey {
                    reason: (slot / 2).min(NODE_DROP_REASONS - 1),
                    direction: (slot % 2) as u8,
                    ..Default::default()
                };
                batch.drops.push((key, delta));
            }
        }
        for slot in (0..NODE_FLOW_SLOTS).filter(|_| flows) {
            let Some(total) = sum_slot(&self.maps.node_flows, slot, FlowStats::add) else {
                continue;
            };
            let mut delta = total;
            delta.sub(&self.node_flows_seen[slot as usize]);
            self.node_flows_seen[slot as usize] = total;
            if !delta.is_zero() {
                let (proto, role) = if slot >= 3 {
                    (PROTO_UDP, (slot - 3) as u8)
                } else {
                    (PROTO_TCP, slot as u8)
                };
                let key = OverflowKey {
                    proto,
                    role,
                    ..Default::default()
                };
                batch.flow_overflow.push((key, delta));
            }
        }
        for slot in (0..NODE_DNS_SLOTS).filter(|_| dns) {
            let Some(total) = sum_slot(&self.maps.node_dns, slot, DnsStats::add) else {
                continue;
            };
            let mut delta = total;
            delta.sub(&self.node_dns_seen[slot as usize]);
            self.node_dns_seen[slot as usize] = total;
            if !delta.is_zero() {
                let (kind, code, bucket) = node_dns_key(slot);
                let key = DnsKey {
                    kind,
                    code,
                    bucket,
                    ..Default::default()
                };
                batch.dns.push((key, delta));
            }
        }
    }

    /// Returns once every eBPF program that started before the call has finished; false if
    /// membarrier(2) was unavailable and a pause stood in for it.
    fn wait_for_programs(&mut self) -> bool {
        let ok = wait_for_programs();
        if !ok && !self.warned_membarrier {
            self.warned_membarrier = true;
            warn!(
                "membarrier(MEMBARRIER_CMD_GLOBAL) is unavailable (nohz_full CPUs, or a single CPU); \
                 waiting 50ms for the eBPF programs instead, which a preempted program could outlast \
                 (counted in sockscope_drain_membarrier_fallbacks_total)"
            );
        }
        ok
    }
}

/// Sums the per-CPU values of one array slot.
fn sum_slot<V: Pod + Default>(
    map: &PerCpuArray<MapData, V>,
    slot: u32,
    add: impl Fn(&mut V, &V),
) -> Option<V> {
    let values = map.get(&slot, 0).ok()?;
    let mut total = V::default();
    for v in values.iter() {
        add(&mut total, v);
    }
    Some(total)
}

/// The name in a kernel name buffer: its labels up to and including the terminating zero
/// (the rest of the buffer is padding). A name cut short by the buffer keeps what is there.
fn wire_name(wire: &[u8]) -> Box<[u8]> {
    let mut pos = 0usize;
    while let Some(&len) = wire.get(pos) {
        pos += 1;
        if len == 0 {
            break;
        }
        pos += usize::from(len);
    }
    wire[..pos.min(wire.len())].into()
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
///
/// An entry whose delete fails is zeroed in place instead; if that fails too, what was read
/// is remembered in `carried` and subtracted when the entry is read again, so a count is
/// never taken twice. `fail` makes both fail (an injected fault).
fn take_all<K: Pod + Eq + Hash, V: Pod + Default>(
    map: &mut PerCpuHashMap<MapData, K, V>,
    carried: &mut HashMap<K, V>,
    what: &str,
    add: impl Fn(&mut V, &V),
    sub: impl Fn(&mut V, &V),
    is_zero: impl Fn(&V) -> bool,
    fail: bool,
) -> Taken<K, V> {
    let keys: Vec<K> = map.keys().filter_map(|k| k.ok()).collect();
    let mut taken = Taken {
        sums: Vec::with_capacity(keys.len()),
        entries: keys.len(),
        errors: 0,
    };
    for key in keys {
        let total = match map.get(&key, 0) {
            Ok(values) => {
                let mut total = V::default();
                for v in values.iter() {
                    add(&mut total, v);
                }
                total
            }
            Err(e) => {
                taken.errors += 1;
                warn!("reading a {what} entry failed: {e}");
                continue;
            }
        };
        let mut delta = total;
        if let Some(before) = carried.get(&key) {
            sub(&mut delta, before);
        }
        if !is_zero(&delta) {
            taken.sums.push((key, delta));
        }
        let removed = if fail {
            Err("injected fault (map-delete)".to_string())
        } else {
            map.remove(&key).map_err(|e| e.to_string())
        };
        match removed {
            Ok(()) => {
                carried.remove(&key);
            }
            Err(e) => {
                taken.errors += 1;
                warn!("deleting a {what} entry failed: {e}; zeroing it instead");
                if !fail && zero(map, &key).is_ok() {
                    carried.remove(&key);
                } else {
                    // Left as it is: remember what it held, so its next read counts only
                    // what was added since.
                    carried.insert(key, total);
                }
            }
        }
    }
    taken
}

/// Overwrites an entry's per-CPU values with zeros (only if it still exists).
fn zero<K: Pod, V: Pod + Default>(
    map: &mut PerCpuHashMap<MapData, K, V>,
    key: &K,
) -> Result<(), String> {
    const BPF_EXIST: u64 = 2;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e.to_string())?;
    let zeros = PerCpuValues::try_from(vec![V::default(); cpus]).map_err(|e| e.to_string())?;
    map.insert(key, zeros, BPF_EXIST).map_err(|e| e.to_string())
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

/// Returns once every eBPF program that started before the call has finished; false if
/// membarrier(2) could not be used and a pause stood in for it.
fn wait_for_programs() -> bool {
    const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;
    let start = Instant::now();
    // SAFETY: membarrier takes no pointers.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    let one_cpu = std::thread::available_parallelism()
        .map(|n| n.get() == 1)
        .unwrap_or(false);
    if rc != 0 || one_cpu {
        // Unavailable (nohz_full), or a no-op on one CPU where a preempted program may still
        // hold a map value: a pause far longer than any program runs.
        std::thread::sleep(Duration::from_millis(50));
        return false;
    }
    tracing::trace!(elapsed = ?start.elapsed(), "programs quiesced");
    true
}
