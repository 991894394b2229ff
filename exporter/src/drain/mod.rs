//! Periodic reading of the kernel's flow maps.
//!
//! Programs add into the flow map selected by `CONFIG.generation`. A drain flips the generation,
//! waits until no program can still be writing into the old map, then reads and empties it.
//! Every count is therefore read exactly once, and the map only has to hold the flows of one
//! interval. The wait is `membarrier(MEMBARRIER_CMD_GLOBAL)`, which is `synchronize_rcu()`
//! (kernel/sched/membarrier.c); cgroup_skb and sock_ops programs run inside an RCU read-side
//! section (`bpf_prog_run_array_cg()`, kernel/bpf/cgroup.c), so once it returns every program
//! that read the old generation has finished.

use std::{collections::HashMap, time::Instant};

use sockscope_common::{Config, EVENT_COUNT, FlowKey, FlowStats};
use tracing::warn;

use crate::ebpf::Maps;

/// Everything one drain took out of the kernel.
#[derive(Debug, Default)]
pub struct Batch {
    /// Flow deltas since the previous drain, summed over CPUs.
    pub flows: Vec<(FlowKey, FlowStats)>,
    /// Event counter deltas since the previous drain, by `EVENT_*` index.
    pub events: [u64; EVENT_COUNT as usize],
    /// Entries the drained map held.
    pub drained_entries: usize,
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
}

impl Drainer {
    /// Wraps the maps; `config` is what the loader wrote into CONFIG.
    pub fn new(maps: Maps) -> Self {
        let config = maps.config.get(&0, 0).unwrap_or_default();
        Drainer {
            generation: config.generation & 1,
            config,
            maps,
            events_seen: [0; EVENT_COUNT as usize],
        }
    }

    /// One drain: flip, wait for writers, read and empty the previous generation.
    pub fn drain(&mut self) -> Batch {
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
        let mut batch = self.take(previous);
        self.read_events(&mut batch);
        batch
    }

    /// Reads and deletes every entry of flow map `index`. Only call when no program writes it.
    fn take(&mut self, index: usize) -> Batch {
        let map = &mut self.maps.flows[index];
        let mut batch = Batch {
            drained_generation: index,
            ..Default::default()
        };
        let keys: Vec<FlowKey> = map.keys().filter_map(|k| k.ok()).collect();
        batch.drained_entries = keys.len();
        let mut sums: HashMap<FlowKey, FlowStats> = HashMap::with_capacity(keys.len());
        for key in keys {
            match map.get(&key, 0) {
                Ok(values) => {
                    let mut total = FlowStats::default();
                    for v in values.iter() {
                        total.add(v);
                    }
                    sums.entry(key).or_default().add(&total);
                }
                Err(e) => {
                    batch.errors += 1;
                    warn!("reading a flow entry failed: {e}");
                }
            }
            if let Err(e) = map.remove(&key) {
                batch.errors += 1;
                warn!("deleting a flow entry failed: {e}");
            }
        }
        batch.flows = sums.into_iter().filter(|(_, v)| !v.is_zero()).collect();
        batch
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
        self.read_events(&mut batch);
        batch
    }
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
