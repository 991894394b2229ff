//! Loading and attaching the eBPF programs, and typed handles on their maps.

pub mod btf;
pub mod error;
pub mod iter;
pub mod pending;
pub mod preflight;
pub mod privileges;

use std::{fs::File, os::fd::AsFd, time::Duration};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, Iter, Program,
        ProgramError, SockOps,
    },
};
use sockscope_common::{
    ADOPT_CGROUPS_CAPACITY, ADOPT_CGROUPS_MAP, CGROUP_NETNS_MAP, CONFIG_PROCESS_LABEL,
    CONFIG_TCP_ADOPT, CONFIG_TCP_ITER, CONFIG_UDP_BATCH, Config, FLOW_MAP_NAMES,
    FLOW_OVERFLOW_NAMES, FLOW_ROOM_NAMES, FlowKey, FlowStats, NODE_FLOWS_MAP, OverflowKey,
    dns::{
        DNS_ANSWERS_MAP, DNS_MAP_NAMES, DNS_NAMES_MAP, DNS_OVERFLOW_NAMES, DNS_PENDING_MAP,
        DNS_ROOM_NAMES, DnsKey, DnsName, DnsStats, NODE_DNS_MAP,
    },
    health::{
        DROP_MAP_NAMES, DropKey, NODE_DROPS_MAP, NODE_TIMINGS_MAP, TIMING_MAP_NAMES, TimingKey,
        TimingStats,
    },
};
use tracing::{debug, error, info, warn};

pub use error::{Error, Result};
pub use preflight::CgroupRoot;

/// The eBPF object built by build.rs from exporter-ebpf; public for tools that load it
/// themselves (the crafted-packet tests in exporter/tests/packets.rs).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sockscope"));

/// How many lines of the verifier log an error shows (`--log debug` logs all of it: where a
/// rejected register came from is often far above the line that rejects it).
const VERIFIER_LOG_TAIL: usize = 20;

/// The socket programs, in attach order. sock_ops first: every socket that gets sockscope's
/// state from here on (sock_create, a listener's clone) then has its connection seen by
/// sock_ops, and the sockets without state at the adoption pass are exactly those open before.
/// Then sock_create, and sock_release, which flushes UDP batches at the end (before any packet
/// program can batch).
pub const SOCKET_PROGRAMS: [&str; 3] = [SOCK_OPS, SOCK_CREATE, SOCK_RELEASE];

/// The cgroup_skb programs, attached last, once the mode is settled: new connections are then
/// tracked by sock_ops rather than adopted by cgroup_skb in per-packet mode.
pub const PACKET_PROGRAMS: [&str; 2] = ["sockscope_egress", "sockscope_ingress"];

/// The DNS programs, each with the program array its direction's packet program tail-calls it
/// through: loaded (not attached) before the packet programs.
pub const DNS_PROGRAMS: [(&str, &str); 2] = [
    ("sockscope_dns_egress", "DNS_PROGRAMS_EGRESS"),
    ("sockscope_dns_ingress", "DNS_PROGRAMS_INGRESS"),
];

/// The sock_ops program: connection setup (and, in per-packet mode, RTT windows and close).
pub const SOCK_OPS: &str = "sockscope_sockops";

/// The program that records each cgroup's network namespace and, for the `process` label,
/// socket creators.
pub const SOCK_CREATE: &str = "sockscope_sock_create";

/// The program that flushes a UDP socket's last batch when it is released.
pub const SOCK_RELEASE: &str = "sockscope_sock_release";

/// The socket iterator that counts live TCP bytes (and UDP batches) at each drain.
pub const TCP_ITER: &str = "sockscope_tcp_iter";

/// The `tcp:tcp_destroy_sock` program that flushes a TCP socket at its end, in iterator mode.
pub const TCP_CLOSE: &str = "sockscope_tcp_close";

/// The `tcp:tcp_receive_reset` program (resets received, per edge).
pub const RESET_IN: &str = "sockscope_tcp_reset_in";

/// The `tcp:tcp_send_reset` program (resets sent, per edge).
pub const RESET_OUT: &str = "sockscope_tcp_reset_out";

/// The `skb:kfree_skb` program (packet drops with their reason), and its variant for kernels
/// whose tracepoint does not pass the receiving socket (before 6.11).
pub const DROP: &str = "sockscope_drop";
const DROP_V1: &str = "sockscope_drop_v1";

pub use crate::config::TcpAccounting;

/// What happened to one program.
#[derive(Debug, Clone)]
pub struct ProgramStatus {
    /// Function name of the program in the object.
    pub name: &'static str,
    /// Whether its link to the cgroup is in place.
    pub attached: bool,
}

/// Kernel run-time statistics of one program (zero unless kernel.bpf_stats_enabled=1).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProgramRunStats {
    /// Total time spent in the program.
    pub run_time: Duration,
    /// Number of invocations.
    pub run_count: u64,
}

/// The loaded object with its programs attached. Links belong to this process: when it exits,
/// however it exits, the kernel detaches them.
pub struct Kernel {
    ebpf: Ebpf,
    /// Per-program outcome of loading and attaching.
    pub programs: Vec<ProgramStatus>,
    /// The TCP iterator, when TCP is counted by it.
    tcp_iter: Option<iter::TaskIter>,
    /// The running kernel's packet drop reasons by value (`enum skb_drop_reason`, from its BTF).
    pub drop_reasons: std::collections::BTreeMap<u32, String>,
}

/// Typed handles on the maps the agent reads and writes.
pub struct Maps {
    /// Settings read by every program.
    pub config: Array<MapData, Config>,
    /// The two flow-map generations.
    pub flows: [PerCpuHashMap<MapData, FlowKey, FlowStats>; 2],
    /// Per-cgroup overflow of the flow maps, by generation.
    pub flow_overflow: [PerCpuHashMap<MapData, OverflowKey, FlowStats>; 2],
    /// Flow entries created per cgroup, by generation.
    pub flow_room: [HashMap<MapData, u64, u64>; 2],
    /// Node-wide flow totals (cumulative), by `node_flow_slot`.
    pub node_flows: PerCpuArray<MapData, FlowStats>,
    /// Per-CPU event counters.
    pub events: PerCpuArray<MapData, u64>,
    /// The two DNS-count generations.
    pub dns: [PerCpuHashMap<MapData, DnsKey, DnsStats>; 2],
    /// Per-cgroup overflow of the DNS maps, by generation.
    pub dns_overflow: [PerCpuHashMap<MapData, DnsKey, DnsStats>; 2],
    /// DNS keys created per cgroup, by generation.
    pub dns_room: [HashMap<MapData, u64, u64>; 2],
    /// Node-wide DNS totals (cumulative), by `node_dns_slot`.
    pub node_dns: PerCpuArray<MapData, DnsStats>,
    /// The two TCP timing generations (connect time, RTT, lifetime by edge and bucket).
    pub timings: [PerCpuHashMap<MapData, TimingKey, TimingStats>; 2],
    /// Node-wide timing samples (cumulative), by `node_timing_slot`.
    pub node_timings: PerCpuArray<MapData, TimingStats>,
    /// The two packet-drop generations.
    pub drops: [PerCpuHashMap<MapData, DropKey, u64>; 2],
    /// Node-wide drops (cumulative), by `node_drop_slot`.
    pub node_drops: PerCpuArray<MapData, u64>,
    /// Question names by hash (an LRU map).
    pub dns_names: HashMap<MapData, u64, DnsName>,
    /// DNS queries waiting for their response.
    pub dns_pending: pending::PendingTable,
    /// DNS answers for the hostname cache; taken by the answer reader.
    pub dns_answers: Option<RingBuf<MapData>>,
    /// cgroup id -> network namespace cookie; taken by the identity resolver.
    pub cgroup_netns: Option<HashMap<MapData, u64, u64>>,
}

/// Options that change what the kernel side records.
#[derive(Debug, Clone, Copy)]
pub struct KernelOptions {
    /// Record the creating process's comm in flow keys.
    pub process_label: bool,
    /// Age at which the kernel counts an evicted pending DNS query as timed out.
    pub dns_timeout: Duration,
    /// Map sizes and per-cgroup shares.
    pub sizes: MapSizes,
    /// How TCP bytes are counted.
    pub tcp: TcpAccounting,
}

/// Sizes of the generation-flipped maps, set at load.
#[derive(Debug, Clone, Copy)]
pub struct MapSizes {
    /// Entries of each flow map.
    pub flows: u32,
    /// Flow entries one cgroup may create per generation.
    pub flows_per_cgroup: u32,
    /// Entries of each DNS map.
    pub dns: u32,
    /// DNS entries one cgroup may create per generation.
    pub dns_per_cgroup: u32,
    /// Entries of each overflow map (and of the per-cgroup counters beside them).
    pub overflow: u32,
    /// Entries of each TCP timing map (always `auto`).
    pub timings: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        MapSizes {
            flows: sockscope_common::FLOW_MAP_CAPACITY,
            flows_per_cgroup: sockscope_common::FLOWS_PER_CGROUP,
            dns: sockscope_common::dns::DNS_MAP_CAPACITY,
            dns_per_cgroup: sockscope_common::dns::DNS_KEYS_PER_CGROUP,
            overflow: sockscope_common::OVERFLOW_MAP_CAPACITY,
            timings: sockscope_common::health::TIMING_MAP_CAPACITY,
        }
    }
}

/// Kernel memory one entry of a per-CPU hash map (`BPF_F_NO_PREALLOC`) takes, as the kernel
/// accounts it (`htab_map_mem_usage()`, kernel/bpf/hashtab.c, shown as `memlock` by bpftool):
/// the element (header, key, pointer to the per-CPU value, free-list node) plus the value on
/// every possible CPU, plus the entry's hash bucket. Measured on 6.18 with 2 CPUs: 240 bytes
/// per flow entry.
pub fn percpu_entry_bytes(key: usize, value: usize, cpus: usize) -> usize {
    80 + key.next_multiple_of(8) + value.next_multiple_of(8) * cpus + 16
}

/// Kernel memory of one entry of a per-cgroup counter map (a plain hash of u64 -> u64).
const ROOM_ENTRY_BYTES: usize = 64;

/// Kernel memory budgets of `auto` sizes, per generation.
const AUTO_FLOW_BYTES: usize = 32 << 20;
const AUTO_DNS_BYTES: usize = 8 << 20;
const AUTO_OVERFLOW_BYTES: usize = 6 << 20;
const AUTO_TIMING_BYTES: usize = 2 << 20;

/// `auto`: as many entries as `budget` holds on `cpus` CPUs, between `min` and `max`.
fn auto(budget: usize, per_entry: usize, min: u32, max: u32) -> u32 {
    let n = budget / per_entry.max(1);
    (n.min(max as usize) as u32).max(min)
}

impl MapSizes {
    /// The sizes for flags that may say `auto`, on a node with `cpus` possible CPUs.
    pub fn resolve(
        flows: Option<u32>,
        flows_per_cgroup: Option<u32>,
        dns: Option<u32>,
        dns_per_cgroup: Option<u32>,
        overflow: Option<u32>,
        cpus: usize,
    ) -> MapSizes {
        use sockscope_common::{FlowStats, OverflowKey, dns::DnsStats};
        let d = MapSizes::default();
        let flows = flows.unwrap_or_else(|| {
            let per = percpu_entry_bytes(size_of::<FlowKey>(), size_of::<FlowStats>(), cpus);
            auto(AUTO_FLOW_BYTES, per, 4096, d.flows)
        });
        let dns = dns.unwrap_or_else(|| {
            let per = percpu_entry_bytes(size_of::<DnsKey>(), size_of::<DnsStats>(), cpus);
            auto(AUTO_DNS_BYTES, per, 2048, d.dns)
        });
        let overflow = overflow.unwrap_or_else(|| {
            // One size for the flow and DNS overflow maps and both per-cgroup counter maps.
            let per = percpu_entry_bytes(size_of::<OverflowKey>(), size_of::<FlowStats>(), cpus)
                + percpu_entry_bytes(size_of::<DnsKey>(), size_of::<DnsStats>(), cpus)
                + 2 * ROOM_ENTRY_BYTES;
            auto(AUTO_OVERFLOW_BYTES, per, 1024, d.overflow)
        });
        let timings = {
            use sockscope_common::health::{TimingKey, TimingStats};
            let per = percpu_entry_bytes(size_of::<TimingKey>(), size_of::<TimingStats>(), cpus);
            auto(AUTO_TIMING_BYTES, per, 1024, d.timings)
        };
        MapSizes {
            flows,
            flows_per_cgroup: flows_per_cgroup.unwrap_or(flows / 8).min(flows),
            dns,
            dns_per_cgroup: dns_per_cgroup.unwrap_or(dns / 8).min(dns),
            overflow,
            timings,
        }
    }

    /// Kernel memory of the generation-flipped maps when every entry is taken, on `cpus`
    /// possible CPUs (both generations, overflow maps and their per-cgroup counters).
    pub fn full_bytes(&self, cpus: usize) -> usize {
        use sockscope_common::{FlowStats, OverflowKey, dns::DnsStats};
        let flows = self.flows as usize
            * percpu_entry_bytes(size_of::<FlowKey>(), size_of::<FlowStats>(), cpus);
        let dns = self.dns as usize
            * percpu_entry_bytes(size_of::<DnsKey>(), size_of::<DnsStats>(), cpus);
        let overflow = self.overflow as usize
            * (percpu_entry_bytes(size_of::<OverflowKey>(), size_of::<FlowStats>(), cpus)
                + percpu_entry_bytes(size_of::<DnsKey>(), size_of::<DnsStats>(), cpus)
                + 2 * ROOM_ENTRY_BYTES);
        // The TCP timing and packet drop maps, of fixed size.
        use sockscope_common::health::{DROP_MAP_CAPACITY, DropKey, TimingKey, TimingStats};
        let health = self.timings as usize
            * percpu_entry_bytes(size_of::<TimingKey>(), size_of::<TimingStats>(), cpus)
            + DROP_MAP_CAPACITY as usize * percpu_entry_bytes(size_of::<DropKey>(), 8, cpus);
        2 * (flows + dns + overflow + health)
    }
}

impl MapSizes {
    /// (map name, entries) of every map whose size is set at load.
    pub fn maps(&self) -> Vec<(&'static str, u32)> {
        let mut out = Vec::new();
        for g in 0..2 {
            out.push((FLOW_MAP_NAMES[g], self.flows));
            out.push((FLOW_OVERFLOW_NAMES[g], self.overflow));
            out.push((FLOW_ROOM_NAMES[g], self.overflow));
            out.push((DNS_MAP_NAMES[g], self.dns));
            out.push((DNS_OVERFLOW_NAMES[g], self.overflow));
            out.push((DNS_ROOM_NAMES[g], self.overflow));
            out.push((TIMING_MAP_NAMES[g], self.timings));
        }
        out
    }
}

impl Kernel {
    /// Loads the object and attaches every program to `root.attach` through bpf links,
    /// which always coexist with other programs on the same cgroup (a CNI's, another agent's). A program the kernel
    /// refuses (verifier, missing hook) is reported and skipped; the others keep working.
    pub fn load_and_attach(root: &CgroupRoot, options: KernelOptions) -> Result<(Self, Maps)> {
        let mut loader = EbpfLoader::new();
        for (name, size) in options.sizes.maps() {
            loader.map_max_entries(name, size);
        }
        // The kernel's struct offsets, for the iterator, the TCP close and the drops: from the
        // running kernel's BTF, or none of those programs.
        let kernel_btf = btf::KernelBtf::running_kernel();
        let kernel_offsets = kernel_btf
            .as_ref()
            .map_err(|e| e.to_string())
            .and_then(|b| b.offsets().map_err(|e| e.to_string()));
        let drop_reasons = kernel_btf
            .as_ref()
            .map(|b| b.drop_reasons())
            .unwrap_or_default();
        drop(kernel_btf);
        if let Err(e) = &kernel_offsets {
            warn!("kernel struct offsets unavailable: {e}");
        }
        let globals = kernel_offsets.as_ref().ok().map(|o| o.globals());
        for (name, value) in globals.iter().flatten() {
            loader.override_global(name, value, true);
        }
        let offsets = match options.tcp {
            TcpAccounting::PerPacket => None,
            mode => match preflight::sees_every_process()
                .map_err(|e| e.to_string())
                .and_then(|()| kernel_offsets.clone())
            {
                Ok(o) => Some(o),
                Err(e) if mode == TcpAccounting::Iterator => return Err(Error::TcpIter(e)),
                Err(e) => {
                    warn!("TCP counted per packet: {e}");
                    None
                }
            },
        };
        let mut ebpf = loader.load(OBJECT).map_err(|e| Error::Load(Box::new(e)))?;
        let mut programs = Vec::with_capacity(SOCKET_PROGRAMS.len() + PACKET_PROGRAMS.len() + 2);
        // The iterator before any packet program attaches: the mode is fixed from the start.
        let tcp_iter = match offsets {
            None => None,
            Some(o) => match start_tcp_iter(&mut ebpf) {
                Ok(it) => {
                    info!(program = TCP_ITER, offsets = ?o, "TCP counted by the socket iterator at each drain");
                    programs.push(ProgramStatus {
                        name: TCP_ITER,
                        attached: true,
                    });
                    programs.push(ProgramStatus {
                        name: TCP_CLOSE,
                        attached: true,
                    });
                    Some(it)
                }
                Err(e) if options.tcp == TcpAccounting::Iterator => {
                    return Err(Error::TcpIter(e.to_string()));
                }
                Err(e) => {
                    warn!(
                        program = TCP_ITER,
                        "TCP counted per packet (higher overhead, same counts): {e}"
                    );
                    programs.push(ProgramStatus {
                        name: TCP_ITER,
                        attached: false,
                    });
                    programs.push(ProgramStatus {
                        name: TCP_CLOSE,
                        attached: false,
                    });
                    None
                }
            },
        };

        // Maps first: programs read CONFIG from their first packet on.
        let mut config: Array<MapData, Config> = take_map(&mut ebpf, "CONFIG")?;
        let (ephemeral_low, ephemeral_high) = preflight::ephemeral_port_range();
        let cfg = Config {
            generation: 0,
            flags: if options.process_label {
                CONFIG_PROCESS_LABEL
            } else {
                0
            } | if tcp_iter.is_some() {
                CONFIG_TCP_ITER
            } else {
                0
            },
            ephemeral_low,
            ephemeral_high,
            dns_timeout_ms: options.dns_timeout.as_millis().min(u32::MAX as u128) as u32,
            max_flows_per_cgroup: options.sizes.flows_per_cgroup,
            max_dns_per_cgroup: options.sizes.dns_per_cgroup,
            epoch: 0,
            _pad: 0,
        };
        config.set(0, cfg, 0).map_err(|source| Error::Map {
            name: "CONFIG",
            source,
        })?;
        let flows = [
            take_map(&mut ebpf, FLOW_MAP_NAMES[0])?,
            take_map(&mut ebpf, FLOW_MAP_NAMES[1])?,
        ];
        let flow_overflow = [
            take_map(&mut ebpf, FLOW_OVERFLOW_NAMES[0])?,
            take_map(&mut ebpf, FLOW_OVERFLOW_NAMES[1])?,
        ];
        let flow_room = [
            take_map(&mut ebpf, FLOW_ROOM_NAMES[0])?,
            take_map(&mut ebpf, FLOW_ROOM_NAMES[1])?,
        ];
        let node_flows = take_map(&mut ebpf, NODE_FLOWS_MAP)?;
        let events = take_map(&mut ebpf, "EVENTS")?;
        let dns = [
            take_map(&mut ebpf, DNS_MAP_NAMES[0])?,
            take_map(&mut ebpf, DNS_MAP_NAMES[1])?,
        ];
        let dns_overflow = [
            take_map(&mut ebpf, DNS_OVERFLOW_NAMES[0])?,
            take_map(&mut ebpf, DNS_OVERFLOW_NAMES[1])?,
        ];
        let dns_room = [
            take_map(&mut ebpf, DNS_ROOM_NAMES[0])?,
            take_map(&mut ebpf, DNS_ROOM_NAMES[1])?,
        ];
        let node_dns = take_map(&mut ebpf, NODE_DNS_MAP)?;
        let dns_pending = match ebpf.take_map(DNS_PENDING_MAP) {
            Some(aya::maps::Map::Array(data)) => {
                pending::PendingTable::new(data).map_err(|e| Error::Pending(e.to_string()))?
            }
            _ => {
                return Err(Error::Map {
                    name: DNS_PENDING_MAP,
                    source: aya::maps::MapError::InvalidName {
                        name: DNS_PENDING_MAP.to_string(),
                    },
                });
            }
        };
        let timings = [
            take_map(&mut ebpf, TIMING_MAP_NAMES[0])?,
            take_map(&mut ebpf, TIMING_MAP_NAMES[1])?,
        ];
        let node_timings = take_map(&mut ebpf, NODE_TIMINGS_MAP)?;
        let drops = [
            take_map(&mut ebpf, DROP_MAP_NAMES[0])?,
            take_map(&mut ebpf, DROP_MAP_NAMES[1])?,
        ];
        let node_drops = take_map(&mut ebpf, NODE_DROPS_MAP)?;
        let dns_names = take_map(&mut ebpf, DNS_NAMES_MAP)?;
        let dns_answers = Some(take_map(&mut ebpf, DNS_ANSWERS_MAP)?);
        let cgroup_netns = Some(take_map(&mut ebpf, CGROUP_NETNS_MAP)?);

        let cgroup = File::open(&root.attach).map_err(|source| Error::Read {
            path: root.attach.clone(),
            source,
        })?;
        // Socket programs first, then the mode is settled, then the packet programs: no packet
        // is ever handled in a mode the agent takes back.
        attach_all(&mut ebpf, &SOCKET_PROGRAMS, &cgroup, root, &mut programs);
        let attached = |programs: &[ProgramStatus], name| {
            programs.iter().any(|p| p.name == name && p.attached)
        };
        let mut tcp_iter = tcp_iter;
        if tcp_iter.is_some() && !attached(&programs, SOCK_OPS) {
            // The iterator counts connections sock_ops saw established; without it, none
            // would ever be.
            let why = format!("{SOCK_OPS} is not attached, and the iterator needs it");
            if options.tcp == TcpAccounting::Iterator {
                return Err(Error::TcpIter(why));
            }
            warn!(program = TCP_ITER, "TCP counted per packet: {why}");
            for p in programs.iter_mut().filter(|p| p.name == TCP_ITER) {
                p.attached = false;
            }
            tcp_iter = None;
        }
        let mut settled = cfg;
        if tcp_iter.is_none() {
            settled.flags &= !CONFIG_TCP_ITER;
        } else if attached(&programs, SOCK_RELEASE) {
            // A batch is flushed by the iterator at each drain and by the release at the end.
            settled.flags |= CONFIG_UDP_BATCH;
        } else {
            warn!(
                program = SOCK_RELEASE,
                "UDP counted into the flow maps datagram by datagram (higher overhead, same counts)"
            );
        }
        if settled != cfg {
            config.set(0, settled, 0).map_err(|source| Error::Map {
                name: "CONFIG",
                source,
            })?;
        }
        let cfg = settled;
        load_dns_programs(&mut ebpf, &mut programs);
        attach_all(&mut ebpf, &PACKET_PROGRAMS, &cgroup, root, &mut programs);
        attach_health(&mut ebpf, kernel_offsets.is_ok(), &mut programs);
        if !programs.iter().any(|p| p.attached) {
            return Err(Error::NothingAttached);
        }
        if let Some(it) = &tcp_iter {
            match adopt_preexisting(&mut ebpf, &mut config, cfg, it, &root.attach) {
                Ok(cgroups) => info!(
                    program = TCP_ITER,
                    cgroups, "TCP connections open before sockscope adopted"
                ),
                Err(e) => warn!(
                    program = TCP_ITER,
                    "TCP connections open before sockscope are not counted: {e}"
                ),
            }
        }
        Ok((
            Kernel {
                ebpf,
                programs,
                tcp_iter,
                drop_reasons,
            },
            Maps {
                config,
                flows,
                flow_overflow,
                flow_room,
                node_flows,
                events,
                dns,
                dns_overflow,
                dns_room,
                node_dns,
                timings,
                node_timings,
                drops,
                node_drops,
                dns_names,
                dns_pending,
                dns_answers,
                cgroup_netns,
            },
        ))
    }

    /// Run-time statistics of the programs sockscope tried to attach.
    pub fn run_stats(&self) -> Vec<(&'static str, ProgramRunStats)> {
        self.programs
            .iter()
            .map(|p| {
                let name = p.name;
                let stats = self
                    .ebpf
                    .program(name)
                    .and_then(|p| p.info().ok())
                    .map(|info| ProgramRunStats {
                        run_time: info.run_time(),
                        run_count: info.run_count(),
                    })
                    .unwrap_or_default();
                (name, stats)
            })
            .collect()
    }

    /// Counts every tracked TCP socket's bytes since its last report into the current
    /// generation's flow maps (iterator mode; nothing to do per packet).
    pub fn sample_tcp(&self) -> std::io::Result<()> {
        match &self.tcp_iter {
            Some(it) => it.run().map(|_| ()),
            None => Ok(()),
        }
    }

    /// Detaches and unloads every cgroup program (the iterator stays, for a last sample).
    /// Maps stay readable for a final drain.
    pub fn detach(&mut self) {
        for status in &mut self.programs {
            // The iterator, the TCP close and the UDP release stay: a last sample, and the
            // closes until the final drain.
            if status.name == TCP_ITER || status.name == TCP_CLOSE || status.name == SOCK_RELEASE {
                continue;
            }
            if let Some(program) = self.ebpf.program_mut(status.name)
                && status.attached
            {
                if let Err(e) = unload(program) {
                    warn!(program = status.name, "detach failed: {e}");
                }
                status.attached = false;
            }
        }
    }
}

/// The adoption pass (see `sockscope_common::CONFIG_TCP_ADOPT`): every cgroup id below the
/// attach point into `ADOPT_CGROUPS`, one iterator run with the flag set, then the flag and the
/// map cleared. Runs after every program is attached, so each socket without state is one that
/// was open before. Returns how many cgroups were given.
fn adopt_preexisting(
    ebpf: &mut Ebpf,
    config: &mut Array<MapData, Config>,
    cfg: Config,
    it: &iter::TaskIter,
    attach: &std::path::Path,
) -> std::result::Result<usize, String> {
    let map = ebpf
        .map_mut(ADOPT_CGROUPS_MAP)
        .ok_or_else(|| format!("map {ADOPT_CGROUPS_MAP} missing from the eBPF object"))?;
    let mut cgroups: HashMap<&mut MapData, u64, u8> =
        HashMap::try_from(map).map_err(|e| error_chain(&e))?;
    let ids = preflight::cgroup_ids(attach);
    if ids.len() > ADOPT_CGROUPS_CAPACITY as usize {
        warn!(
            cgroups = ids.len(),
            "more cgroups than the adoption pass can hold ({ADOPT_CGROUPS_CAPACITY}); the \
             connections of the others, open before sockscope, are not counted"
        );
    }
    for id in ids.iter().take(ADOPT_CGROUPS_CAPACITY as usize) {
        cgroups
            .insert(id, 0, 0)
            .map_err(|e| format!("{ADOPT_CGROUPS_MAP}: {}", error_chain(&e)))?;
    }
    let adopting = Config {
        flags: cfg.flags | CONFIG_TCP_ADOPT,
        ..cfg
    };
    config
        .set(0, adopting, 0)
        .map_err(|e| format!("CONFIG: {}", error_chain(&e)))?;
    let ran = it.run();
    // Back to normal whatever the run did: adoption is for sockets open before the start only.
    let restored = config.set(0, cfg, 0);
    for id in ids.iter().take(ADOPT_CGROUPS_CAPACITY as usize) {
        let _ = cgroups.remove(id);
    }
    restored.map_err(|e| format!("CONFIG: {}", error_chain(&e)))?;
    ran.map_err(|e| format!("the adoption pass did not run: {e}"))?;
    Ok(ids.len().min(ADOPT_CGROUPS_CAPACITY as usize))
}

/// Loads the iterator, links it and runs it once (an iterator the kernel accepts but cannot run
/// would otherwise only show at the first drain).
fn start_tcp_iter(ebpf: &mut Ebpf) -> std::result::Result<iter::TaskIter, String> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"))?;
    let program: &mut Iter = program_of(ebpf, TCP_ITER)?;
    program
        .load("task_file", &btf)
        .map_err(|e| load_error(TCP_ITER, e))?;
    let prog = program.fd().map_err(|e| error_chain(&e))?;
    let it =
        iter::TaskIter::link(prog.as_fd()).map_err(|e| format!("cannot link the iterator: {e}"))?;
    it.run()
        .map_err(|e| format!("the iterator does not run: {e}"))?;
    // Without the close, sock_ops would have to watch every state change again.
    let close: &mut BtfTracePoint = program_of(ebpf, TCP_CLOSE)?;
    close
        .load("tcp_destroy_sock", &btf)
        .map_err(|e| load_error(TCP_CLOSE, e))?;
    close
        .attach()
        .map_err(|e| format!("{TCP_CLOSE} not attached: {}", error_chain(&e)))?;
    Ok(it)
}

/// Loads the DNS programs into the program arrays the packet programs tail-call them through
/// (`attached` in their status: in place). One that does not load leaves DNS of its direction
/// uncounted; bytes and connections are counted as before.
fn load_dns_programs(ebpf: &mut Ebpf, programs: &mut Vec<ProgramStatus>) {
    for (name, map) in DNS_PROGRAMS {
        let attached = match load_into_program_array(ebpf, name, map) {
            Ok(()) => {
                let verified = ebpf
                    .program(name)
                    .and_then(|p| p.info().ok())
                    .and_then(|i| i.verified_instruction_count());
                info!(program = name, verified_insns = ?verified, "loaded");
                true
            }
            Err(e) => {
                error!(program = name, "DNS not counted: {e}");
                false
            }
        };
        programs.push(ProgramStatus { name, attached });
    }
}

/// Loads cgroup_skb program `name` and puts it at index 0 of program array `map`.
pub fn load_into_program_array(
    ebpf: &mut Ebpf,
    name: &'static str,
    map: &str,
) -> std::result::Result<(), String> {
    let program: &mut CgroupSkb = program_of(ebpf, name)?;
    program.load().map_err(|e| load_error(name, e))?;
    let fd = program
        .fd()
        .and_then(|fd| fd.try_clone().map_err(ProgramError::from))
        .map_err(|e| format!("{name}: {}", error_chain(&e)))?;
    let data = ebpf
        .map_mut(map)
        .ok_or_else(|| format!("map {map} missing from the eBPF object"))?;
    let mut array: ProgramArray<&mut MapData> =
        ProgramArray::try_from(data).map_err(|e| format!("{map}: {}", error_chain(&e)))?;
    array
        .set(0, &fd, 0)
        .map_err(|e| format!("{map}: {}", error_chain(&e)))
}

/// Loads and attaches the tracepoint programs of TCP health and packet drops. They are not
/// cgroup programs: each sees every socket of the host, and counts only those carrying
/// sockscope's state (created by the cgroup programs below the attach point), or the node's.
/// The drop program reads `struct sk_buff` through BTF offsets (`with_offsets`).
fn attach_health(ebpf: &mut Ebpf, with_offsets: bool, programs: &mut Vec<ProgramStatus>) {
    let btf = match aya::Btf::from_sys_fs() {
        Ok(b) => b,
        Err(e) => {
            warn!("TCP resets and packet drops not counted: kernel BTF unavailable: {e}");
            for name in [RESET_IN, RESET_OUT, DROP] {
                programs.push(ProgramStatus {
                    name,
                    attached: false,
                });
            }
            return;
        }
    };
    let tracepoint = |ebpf: &mut Ebpf, name: &'static str, event: &str| {
        let program: &mut BtfTracePoint = program_of(ebpf, name)?;
        program.load(event, &btf).map_err(|e| load_error(name, e))?;
        program
            .attach()
            .map(|_| ())
            .map_err(|e| format!("{name} not attached: {}", error_chain(&e)))
    };
    for (name, event) in [
        (RESET_IN, "tcp_receive_reset"),
        (RESET_OUT, "tcp_send_reset"),
    ] {
        let attached = match tracepoint(ebpf, name, event) {
            Ok(()) => {
                info!(program = name, "attached");
                true
            }
            Err(e) => {
                warn!(program = name, "TCP resets not counted: {e}");
                false
            }
        };
        programs.push(ProgramStatus { name, attached });
    }
    if !with_offsets {
        warn!(
            program = DROP,
            "packet drops not counted: no kernel struct offsets"
        );
        programs.push(ProgramStatus {
            name: DROP,
            attached: false,
        });
        return;
    }
    // With the receiving socket where the tracepoint passes it, else without.
    let status = match tracepoint(ebpf, DROP, "kfree_skb") {
        Ok(()) => ProgramStatus {
            name: DROP,
            attached: true,
        },
        Err(first) => match tracepoint(ebpf, DROP_V1, "kfree_skb") {
            Ok(()) => {
                debug!(program = DROP, "{first}; the variant without rx_sk loaded");
                ProgramStatus {
                    name: DROP_V1,
                    attached: true,
                }
            }
            Err(e) => {
                warn!(program = DROP, "packet drops not counted: {first}; {e}");
                ProgramStatus {
                    name: DROP,
                    attached: false,
                }
            }
        },
    };
    if status.attached {
        info!(program = status.name, "attached");
    }
    programs.push(status);
}

/// Program `name` of the object, as its type.
fn program_of<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> std::result::Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the eBPF object"))?
        .try_into()
        .map_err(|e: ProgramError| error_chain(&e))
}

/// One line for an optional program that did not load: where the kernel lacks what it needs,
/// every start says so, and the verifier's own verdict (its last line) is what tells why.
fn load_error(name: &str, e: ProgramError) -> String {
    match AttachError::from(e) {
        AttachError::Verifier { error, log_tail } => {
            let verdict = log_tail
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty() && !is_verifier_statistics(l))
                .unwrap_or_default();
            format!(
                "{name} rejected by the verifier ({error}): {verdict} (the whole verifier log with --log debug)"
            )
        }
        AttachError::Other(e) => format!("{name}: {e}"),
    }
}

/// The verifier's closing lines of figures, which follow its verdict.
fn is_verifier_statistics(line: &str) -> bool {
    ["verification time", "stack depth", "processed ", "-- END"]
        .iter()
        .any(|p| line.starts_with(p))
}

fn describe(name: &str, e: AttachError) -> String {
    match e {
        AttachError::Verifier { error, log_tail } => {
            format!("{name} rejected by the verifier: {error}; verifier log tail:\n{log_tail}")
        }
        AttachError::Other(e) => format!("{name}: {e}"),
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(Error::Map {
        name,
        source: aya::maps::MapError::InvalidName {
            name: name.to_string(),
        },
    })?;
    T::try_from(map).map_err(|source| Error::Map { name, source })
}

enum AttachError {
    Verifier {
        error: std::io::Error,
        log_tail: String,
    },
    Other(String),
}

impl From<ProgramError> for AttachError {
    fn from(e: ProgramError) -> Self {
        match e {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => {
                let log = verifier_log.to_string();
                debug!("verifier log of a rejected program:\n{log}");
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(VERIFIER_LOG_TAIL)..].join("\n");
                AttachError::Verifier {
                    error: io_error,
                    log_tail: tail,
                }
            }
            other => AttachError::Other(error_chain(&other)),
        }
    }
}

pub use crate::report::error_chain;

/// Loads program `name` of `ebpf` and attaches it to `cgroup` by its type (cgroup_skb by the
/// name's `egress`/`ingress` suffix); for tools that load the object themselves (the
/// benchmark's empty hooks).
pub fn attach_to_cgroup(
    ebpf: &mut Ebpf,
    name: &'static str,
    cgroup: &File,
) -> std::result::Result<(), String> {
    attach_one(ebpf, name, cgroup).map_err(|e| describe(name, e))
}

/// Attaches each of `names` to `cgroup`, logging and recording each outcome in `programs`.
fn attach_all(
    ebpf: &mut Ebpf,
    names: &[&'static str],
    cgroup: &File,
    root: &CgroupRoot,
    programs: &mut Vec<ProgramStatus>,
) {
    for &name in names {
        let attached = match attach_one(ebpf, name, cgroup) {
            Ok(()) => {
                // How close the verifier came to its 1M-instruction limit, for whoever
                // changes the programs next.
                let verified = ebpf
                    .program(name)
                    .and_then(|p| p.info().ok())
                    .and_then(|i| i.verified_instruction_count());
                info!(program = name, cgroup = %root.attach.display(), verified_insns = ?verified, "attached");
                true
            }
            Err(AttachError::Verifier { error, log_tail }) => {
                error!(
                    program = name,
                    "program {name} rejected by the verifier: {error}; verifier log tail:\n{log_tail}"
                );
                false
            }
            Err(AttachError::Other(e)) => {
                warn!(
                    program = name,
                    "program {name} not attached (hook unavailable on this kernel?): {e}"
                );
                false
            }
        };
        programs.push(ProgramStatus { name, attached });
    }
}

fn attach_one(ebpf: &mut Ebpf, name: &'static str, cgroup: &File) -> Result<(), AttachError> {
    let program = ebpf.program_mut(name).ok_or_else(|| {
        AttachError::Other(format!("program {name} missing from the eBPF object"))
    })?;
    match program {
        Program::SockOps(p) => {
            let p: &mut SockOps = p;
            p.load()?;
            p.attach(cgroup, CgroupAttachMode::Single)?;
        }
        Program::CgroupSkb(p) => {
            let p: &mut CgroupSkb = p;
            let attach_type = if name.ends_with("egress") {
                CgroupSkbAttachType::Egress
            } else {
                CgroupSkbAttachType::Ingress
            };
            p.load()?;
            p.attach(cgroup, attach_type, CgroupAttachMode::Single)?;
        }
        Program::CgroupSock(p) => {
            let p: &mut CgroupSock = p;
            p.load()?;
            p.attach(cgroup, CgroupAttachMode::Single)?;
        }
        other => {
            return Err(AttachError::Other(format!(
                "unexpected program type {:?}",
                other.prog_type()
            )));
        }
    }
    Ok(())
}

fn unload(program: &mut Program) -> std::result::Result<(), ProgramError> {
    match program {
        Program::SockOps(p) => p.unload(),
        Program::CgroupSkb(p) => p.unload(),
        Program::CgroupSock(p) => p.unload(),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_sizes_follow_the_cpus() {
        let small = MapSizes::resolve(None, None, None, None, None, 2);
        assert_eq!(
            (small.flows, small.dns, small.overflow),
            (65536, 16384, 8192)
        );
        assert_eq!((small.flows_per_cgroup, small.dns_per_cgroup), (8192, 2048));
        for cpus in [2, 16, 64, 128, 512] {
            let s = MapSizes::resolve(None, None, None, None, None, cpus);
            // Every generation-flipped map full, both generations: within the budgets (about
            // 96 MiB), until the floors take over on very large nodes.
            assert!(
                s.full_bytes(cpus) <= 100 << 20 || cpus >= 128,
                "{cpus} CPUs: {s:?} {} MiB",
                s.full_bytes(cpus) >> 20
            );
        }
        let big = MapSizes::resolve(None, None, None, None, None, 64);
        assert!(big.flows < 65536 && big.flows >= 4096, "{big:?}");
        let fixed = MapSizes::resolve(Some(1024), Some(5000), Some(2048), None, Some(64), 64);
        assert_eq!(
            (fixed.flows, fixed.flows_per_cgroup, fixed.dns_per_cgroup),
            (1024, 1024, 256)
        );
        // bpftool's memlock of a full 65536-entry flow map on 2 CPUs: 15729536 bytes.
        assert_eq!(percpu_entry_bytes(48, 48, 2) * 65536, 15_728_640);
    }
}
