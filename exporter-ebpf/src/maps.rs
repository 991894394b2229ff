//! Maps shared by all programs.

use aya_ebpf::{
    bindings::{BPF_F_CLONE, BPF_F_NO_PREALLOC, bpf_map_type::BPF_MAP_TYPE_SK_STORAGE},
    helpers::generated::bpf_sk_storage_get,
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use sockscope_common::{
    CGROUP_NETNS_CAPACITY, Config, EVENT_COUNT, FLOW_MAP_CAPACITY, FlowKey, FlowStats, SockState,
    dns::{
        DNS_ANSWERS_BYTES, DNS_MAP_CAPACITY, DNS_NAMES_CAPACITY, DNS_PENDING_SLOTS, DnsKey,
        DnsName, DnsStats, PendingSlot,
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

/// DNS counts, generation 0. Per-CPU like the flow maps: a hot name's counters are then never
/// shared between CPUs (a query leaves on one CPU, its response lands on another).
#[map]
pub static DNS_0: PerCpuHashMap<DnsKey, DnsStats> =
    PerCpuHashMap::with_max_entries(DNS_MAP_CAPACITY, BPF_F_NO_PREALLOC);

/// DNS counts, generation 1.
#[map]
pub static DNS_1: PerCpuHashMap<DnsKey, DnsStats> =
    PerCpuHashMap::with_max_entries(DNS_MAP_CAPACITY, BPF_F_NO_PREALLOC);

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

/// cgroup id -> network namespace cookie of the sockets its processes last created.
#[map]
pub static CGROUP_NETNS: LruHashMap<u64, u64> =
    LruHashMap::with_max_entries(CGROUP_NETNS_CAPACITY, 0);

/// Per CPU, the last {cgroup, netns cookie} pair recorded in `CGROUP_NETNS`.
#[map]
pub static LAST_NETNS: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

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

/// Increments one event counter.
#[inline(always)]
pub fn count_event(index: u32) {
    if let Some(v) = EVENTS.get_ptr_mut(index) {
        // Per-CPU slot: no other program writes it concurrently.
        unsafe { *v += 1 };
    }
}

/// `BPF_NOEXIST`: insert only if absent.
const NOEXIST: u64 = 1;

/// What [`upsert`] did.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    /// The key existed; `add` ran on this CPU's slot.
    Added,
    /// The key was created with `init`.
    Created,
    /// The map is full.
    Full,
}

/// Adds into `key` of a per-CPU hash of counters: `add` on this CPU's slot if the key exists,
/// else an insert of `init`. Two tries: the insert can lose a race with another CPU creating
/// the same key, after which the lookup finds it.
#[inline(always)]
pub fn upsert<K, V>(map: &PerCpuHashMap<K, V>, key: &K, init: &V, add: impl Fn(*mut V)) -> Upsert {
    for _ in 0..2 {
        if let Some(v) = map.get_ptr_mut(key) {
            add(v);
            return Upsert::Added;
        }
        if map.insert(key, init, NOEXIST).is_ok() {
            return Upsert::Created;
        }
    }
    Upsert::Full
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
