//! Maps shared by all programs.

use aya_ebpf::{
    bindings::{BPF_F_CLONE, BPF_F_NO_PREALLOC, bpf_map_type::BPF_MAP_TYPE_SK_STORAGE},
    helpers::generated::bpf_sk_storage_get,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf},
};
use sockscope_common::{
    ADOPT_CGROUPS_CAPACITY, CGROUP_NETNS_CAPACITY, Config, EVENT_COUNT, FLOW_MAP_CAPACITY, FlowKey,
    FlowStats, NODE_FLOW_SLOTS, OVERFLOW_MAP_CAPACITY, OverflowKey, SockState,
    dns::{
        DNS_ANSWERS_BYTES, DNS_MAP_CAPACITY, DNS_NAMES_CAPACITY, DNS_OVERFLOW_CAPACITY,
        DNS_PENDING_SLOTS, DnsKey, DnsName, DnsStats, NODE_DNS_SLOTS, PendingSlot,
    },
    health::{
        DROP_MAP_CAPACITY, DropKey, NODE_DROP_SLOTS, NODE_TIMING_SLOTS, TIMING_MAP_CAPACITY,
        TimingKey, TimingStats,
    },
};

/// Agent settings; element 0 only.
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Flow aggregates, generation 0. Not preallocated: on a many-CPU node each entry costs
/// `48 * nr_cpus` bytes, so memory follows the flows seen in one drain interval.
#[map]
pub static FLOWS_0: PerCpuHashMap<FlowKey, FlowStats> =
    PerCpuHashMap::with_max_entries(FLOW_MAP_CAPACITY, BPF_F_NO_PREALLOC);

/// Flow aggregates, generation 1.
#[map]
pub static FLOWS_1: PerCpuHashMap<FlowKey, FlowStats> =
    PerCpuHashMap::with_max_entries(FLOW_MAP_CAPACITY, BPF_F_NO_PREALLOC);

/// Per-cgroup overflow of the flow maps, generation 0 (see `sockscope_common::OverflowKey`).
/// Sizes of every generation-flipped map are set by the agent at load (`--flow-map-size`,
/// `--overflow-map-size`, `--dns-map-size`); the values here are the defaults.
#[map]
pub static FLOW_OVERFLOW_0: PerCpuHashMap<OverflowKey, FlowStats> =
    PerCpuHashMap::with_max_entries(OVERFLOW_MAP_CAPACITY, BPF_F_NO_PREALLOC);

/// Per-cgroup overflow of the flow maps, generation 1.
#[map]
pub static FLOW_OVERFLOW_1: PerCpuHashMap<OverflowKey, FlowStats> =
    PerCpuHashMap::with_max_entries(OVERFLOW_MAP_CAPACITY, BPF_F_NO_PREALLOC);

/// Flow entries created per cgroup, generation 0. Shared between CPUs (one counter per cgroup,
/// atomically incremented): only touched when a flow is created, never per packet.
#[map]
pub static FLOW_ROOM_0: HashMap<u64, u64> =
    HashMap::with_max_entries(OVERFLOW_MAP_CAPACITY, BPF_F_NO_PREALLOC);

/// Flow entries created per cgroup, generation 1.
#[map]
pub static FLOW_ROOM_1: HashMap<u64, u64> =
    HashMap::with_max_entries(OVERFLOW_MAP_CAPACITY, BPF_F_NO_PREALLOC);

/// Node-wide flow totals by protocol and role, the last resort (never emptied).
#[map]
pub static NODE_FLOWS: PerCpuArray<FlowStats> = PerCpuArray::with_max_entries(NODE_FLOW_SLOTS, 0);

/// DNS counts, generation 0. Per-CPU like the flow maps: a hot name's counters are then never
/// shared between CPUs (a query leaves on one CPU, its response lands on another).
#[map]
pub static DNS_0: PerCpuHashMap<DnsKey, DnsStats> =
    PerCpuHashMap::with_max_entries(DNS_MAP_CAPACITY, BPF_F_NO_PREALLOC);

/// DNS counts, generation 1.
#[map]
pub static DNS_1: PerCpuHashMap<DnsKey, DnsStats> =
    PerCpuHashMap::with_max_entries(DNS_MAP_CAPACITY, BPF_F_NO_PREALLOC);

/// Per-cgroup overflow of the DNS maps, generation 0: keys without name and type.
#[map]
pub static DNS_OVERFLOW_0: PerCpuHashMap<DnsKey, DnsStats> =
    PerCpuHashMap::with_max_entries(DNS_OVERFLOW_CAPACITY, BPF_F_NO_PREALLOC);

/// Per-cgroup overflow of the DNS maps, generation 1.
#[map]
pub static DNS_OVERFLOW_1: PerCpuHashMap<DnsKey, DnsStats> =
    PerCpuHashMap::with_max_entries(DNS_OVERFLOW_CAPACITY, BPF_F_NO_PREALLOC);

/// DNS keys created per cgroup, generation 0.
#[map]
pub static DNS_ROOM_0: HashMap<u64, u64> =
    HashMap::with_max_entries(DNS_OVERFLOW_CAPACITY, BPF_F_NO_PREALLOC);

/// DNS keys created per cgroup, generation 1.
#[map]
pub static DNS_ROOM_1: HashMap<u64, u64> =
    HashMap::with_max_entries(DNS_OVERFLOW_CAPACITY, BPF_F_NO_PREALLOC);

/// Node-wide DNS totals by kind, code and latency bucket, the last resort (never emptied).
#[map]
pub static NODE_DNS: PerCpuArray<DnsStats> = PerCpuArray::with_max_entries(NODE_DNS_SLOTS, 0);

/// TCP timing samples (connect time, RTT, lifetime) by edge, kind and bucket, generation 0.
#[map]
pub static TIMINGS_0: PerCpuHashMap<TimingKey, TimingStats> =
    PerCpuHashMap::with_max_entries(TIMING_MAP_CAPACITY, BPF_F_NO_PREALLOC);

/// TCP timing samples, generation 1.
#[map]
pub static TIMINGS_1: PerCpuHashMap<TimingKey, TimingStats> =
    PerCpuHashMap::with_max_entries(TIMING_MAP_CAPACITY, BPF_F_NO_PREALLOC);

/// Node-wide timing samples by kind and bucket, the last resort (never emptied).
#[map]
pub static NODE_TIMINGS: PerCpuArray<TimingStats> =
    PerCpuArray::with_max_entries(NODE_TIMING_SLOTS, 0);

/// Packet drops by owner, reason and direction, generation 0.
#[map]
pub static DROPS_0: PerCpuHashMap<DropKey, u64> =
    PerCpuHashMap::with_max_entries(DROP_MAP_CAPACITY, BPF_F_NO_PREALLOC);

/// Packet drops, generation 1.
#[map]
pub static DROPS_1: PerCpuHashMap<DropKey, u64> =
    PerCpuHashMap::with_max_entries(DROP_MAP_CAPACITY, BPF_F_NO_PREALLOC);

/// Node-wide drops by reason and direction, the last resort (never emptied).
#[map]
pub static NODE_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NODE_DROP_SLOTS, 0);

/// Question names by hash, written on first sight; the agent reads the names it does not know.
#[map]
pub static DNS_NAMES: LruHashMap<u64, DnsName> =
    LruHashMap::with_max_entries(DNS_NAMES_CAPACITY, 0);

/// `BPF_F_MMAPABLE`: the agent maps the array and sweeps it with atomics, no syscalls.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Queries waiting for their response, direct-mapped by {socket, id} (see `PendingSlot`). An
/// array element is a pointer computation the verifier inlines, where a hash map costs a
/// lookup, an insert and a delete per query.
#[map]
pub static DNS_PENDING: Array<PendingSlot> =
    Array::with_max_entries(DNS_PENDING_SLOTS, BPF_F_MMAPABLE);

/// When a response for a {cgroup, name, qtype} (hashed) was last forwarded to userspace.
#[map]
pub static DNS_FORWARDED: LruHashMap<u64, u64> = LruHashMap::with_max_entries(8192, 0);

/// Answers (A/AAAA/CNAME carrying responses) for the agent's hostname cache.
#[map]
pub static DNS_ANSWERS: RingBuf = RingBuf::with_byte_size(DNS_ANSWERS_BYTES, 0);

/// Per-CPU work area of the DNS parser (the stack is 512 bytes).
#[repr(C)]
pub struct DnsScratch {
    /// The question section, copied from the packet. 512 bytes so that an index masked with
    /// 511 always stays inside.
    pub raw: [u8; 512],
    /// A folded, zero-padded name for `DNS_NAMES`.
    pub name: DnsName,
    /// Length of the name in `raw`, passed through memory (see `dns::parse`).
    pub name_len: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// Name hashes this CPU recently registered in `DNS_NAMES`, direct-mapped by their top
    /// bits: a hot name skips the LRU map lookup (and its cache misses) on every query.
    pub seen: [u64; 64],
}

#[map]
pub static DNS_SCRATCH: PerCpuArray<DnsScratch> = PerCpuArray::with_max_entries(1, 0);

/// The DNS program of each direction (`crate::dns`), at index 0: the packet programs tail-call
/// it for a packet that carries DNS messages. Filled by the agent before the packet programs
/// attach.
#[map]
pub static DNS_PROGRAMS_EGRESS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// The DNS program of ingress.
#[map]
pub static DNS_PROGRAMS_INGRESS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// cgroup id -> network namespace cookie of the sockets its processes last created.
#[map]
pub static CGROUP_NETNS: LruHashMap<u64, u64> =
    LruHashMap::with_max_entries(CGROUP_NETNS_CAPACITY, 0);

/// cgroup ids whose pre-existing TCP sockets the iterator's adoption pass adopts (see
/// `sockscope_common::CONFIG_TCP_ADOPT`); the value is unused.
#[map]
pub static ADOPT_CGROUPS: HashMap<u64, u8> =
    HashMap::with_max_entries(ADOPT_CGROUPS_CAPACITY, BPF_F_NO_PREALLOC);

/// Per CPU, the last {cgroup, netns cookie} pair recorded in `CGROUP_NETNS`.
#[map]
pub static LAST_NETNS: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU word for [`launder`].
#[map]
pub static LAUNDER: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// `v & mask`, with the verifier's knowledge of `v` reduced to that mask: the value goes through
/// map memory, which the verifier cannot see into. Paths that reach the same point with
/// different but equally safe values (an IPv6 transport offset after 0 to 6 extension headers)
/// then share one verifier state, instead of everything after them being verified once per
/// path. `None` only if the per-CPU slot is missing, which cannot happen.
#[inline(always)]
pub fn launder(v: u32, mask: u32) -> Option<u32> {
    let p = LAUNDER.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot of a live per-CPU array; written and read back at once.
    unsafe {
        core::ptr::write_volatile(p, v);
        Some(core::ptr::read_volatile(p) & mask)
    }
}

/// Dropped/failed event counters, indexed by `EVENT_*`.
#[map]
pub static EVENTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(EVENT_COUNT, 0);

/// BTF definition of the socket-local storage map. aya-ebpf's `SkStorage` fixes the map flags
/// to `BPF_F_NO_PREALLOC`; this one adds `BPF_F_CLONE` so an accepted socket inherits its
/// listener's state (owner cgroup, creating process) in `bpf_sk_storage_clone()`.
#[repr(C)]
pub struct SockStorage {
    r#type: *const [i32; BPF_MAP_TYPE_SK_STORAGE as usize],
    key: *const i32,
    value: *const SockState,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; (BPF_F_NO_PREALLOC | BPF_F_CLONE) as usize],
}

// SAFETY: the fields are placeholders read only by the loader from BTF; never dereferenced.
unsafe impl Sync for SockStorage {}

#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "SOCK_STATE")]
pub static SOCK_STATE: SockStorage = SockStorage {
    r#type: core::ptr::null(),
    key: core::ptr::null(),
    value: core::ptr::null(),
    max_entries: core::ptr::null(),
    map_flags: core::ptr::null(),
};

/// `BPF_SK_STORAGE_GET_F_CREATE`.
const F_CREATE: u64 = 1;

/// Returns the socket's state, creating it from `init` when absent (if `init` is given).
///
/// # Safety
/// `sk` must be a full socket pointer obtained from the verifier-checked context.
#[inline(always)]
pub unsafe fn sock_state(
    sk: *mut core::ffi::c_void,
    init: Option<&mut SockState>,
) -> Option<&'static mut SockState> {
    let map = core::ptr::addr_of!(SOCK_STATE) as *mut core::ffi::c_void;
    let (value, flags) = match init {
        Some(v) => (v as *mut SockState as *mut core::ffi::c_void, F_CREATE),
        None => (core::ptr::null_mut(), 0),
    };
    let ptr = unsafe { bpf_sk_storage_get(map, sk, value, flags) } as *mut SockState;
    if ptr.is_null() {
        if flags != 0 {
            count_event(sockscope_common::EVENT_SOCK_STORAGE_FAILED);
        }
        None
    } else {
        Some(unsafe { &mut *ptr })
    }
}

/// Reads the agent's settings (defaults if the agent has not written them yet).
#[inline(always)]
pub fn config() -> Config {
    match CONFIG.get(0) {
        Some(c) => *c,
        None => Config::default(),
    }
}

/// The agent's `CONFIG_*` bits alone: one load, for fast paths that decide before anything
/// else is read (0 if the agent has not written its settings yet).
#[inline(always)]
pub fn config_flags() -> u32 {
    match CONFIG.get_ptr(0) {
        // SAFETY: element 0 of a live array map.
        Some(c) => unsafe { (*c).flags },
        None => 0,
    }
}

/// Increments one event counter. Atomically: the slot is this CPU's, but a program in process
/// context (egress from sendmsg) can be interrupted by a softirq's program counting the same
/// event, and a plain increment would lose one of the two.
#[inline(always)]
pub fn count_event(index: u32) {
    if let Some(v) = EVENTS.get_ptr_mut(index) {
        // SAFETY: a slot of a live per-CPU array.
        unsafe { add_u64(v, 1) };
    }
}

/// `BPF_NOEXIST`: insert only if absent.
const NOEXIST: u64 = 1;

/// Whether cgroup `cgroup_id` may still create entries in a map whose per-cgroup counter map
/// is `room`: below `max` created this generation (`max` 0: no limit).
#[inline(always)]
pub fn room_left(room: &HashMap<u64, u64>, cgroup_id: u64, max: u32) -> bool {
    if max == 0 {
        return true;
    }
    // SAFETY: copied out at once.
    match unsafe { room.get(&cgroup_id) } {
        Some(n) => *n < max as u64,
        None => true,
    }
}

/// Notes one entry created by `cgroup_id`. Concurrent creators on other CPUs may overshoot the
/// limit by one entry each; the limit is a share, not an exact bound.
#[inline(always)]
pub fn room_take(room: &HashMap<u64, u64>, cgroup_id: u64) {
    for _ in 0..2 {
        if let Some(n) = room.get_ptr_mut(&cgroup_id) {
            // SAFETY: a value of a live map, shared by CPUs: atomic.
            unsafe { add_u64(n, 1) };
            return;
        }
        if room.insert(&cgroup_id, &1, NOEXIST).is_ok() {
            return;
        }
    }
}

/// What [`upsert`] did.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    /// The key existed; `add` ran on this CPU's slot.
    Added,
    /// The key was created with `init`.
    Created,
    /// The map is full.
    Full,
    /// The kernel could not allocate the entry at once (`-ENOMEM`): a map without
    /// preallocation takes entries from per-CPU caches that it refills in the background, and a
    /// burst of new keys can outrun the refill though the map has room.
    NoMemory,
}

impl Upsert {
    /// Whether the delta went into the map.
    #[inline(always)]
    pub fn placed(self) -> bool {
        matches!(self, Upsert::Added | Upsert::Created)
    }
}

/// `ENOMEM` as helpers return it.
const ENOMEM: i64 = -12;

/// Adds into `key` of a per-CPU hash of counters: `add` on this CPU's slot if the key exists,
/// else an insert of `init`. Two tries: the insert can lose a race with another CPU creating
/// the same key, after which the lookup finds it.
#[inline(always)]
pub fn upsert<K, V>(map: &PerCpuHashMap<K, V>, key: &K, init: &V, add: impl Fn(*mut V)) -> Upsert {
    let mut failed = Upsert::Full;
    for _ in 0..2 {
        if let Some(v) = map.get_ptr_mut(key) {
            add(v);
            return Upsert::Added;
        }
        match map.insert(key, init, NOEXIST) {
            Ok(()) => return Upsert::Created,
            Err(e) if e as i64 == ENOMEM => failed = Upsert::NoMemory,
            Err(_) => failed = Upsert::Full,
        }
    }
    failed
}

/// Atomically adds `delta` to a counter in a map value. The slots are per-CPU, but a program
/// running in process context (egress from sendmsg) can be interrupted by a softirq whose
/// program updates the same slot; a plain load/add/store would lose one of the updates.
/// `AtomicU64::fetch_add` is not available on bpfel; the intrinsic lowers to the BPF atomic add.
///
/// # Safety
/// `counter` must point into a live map value.
#[inline(always)]
pub unsafe fn add_u64(counter: *mut u64, delta: u64) {
    use core::intrinsics::{AtomicOrdering::Relaxed, atomic_xadd};
    if delta != 0 {
        unsafe { atomic_xadd::<u64, u64, { Relaxed }>(counter, delta) };
    }
}
