//! Kernel-internal struct fields, for the programs that read them (the socket iterator, the
//! TCP close, resets and packet drops): `struct tcp_sock`, `struct socket`, `struct sock`,
//! `struct sk_buff`, `struct cgroup`, `struct kernfs_node` and `struct task_struct` change
//! between kernels, so the offsets of the fields read here are not fixed at build time but
//! written by the agent into the constants below at load, from the running kernel's BTF
//! (`exporter/src/ebpf/btf.rs`). The verifier then checks each load against that same BTF (a
//! load at an offset that is not a field of that size is refused, and the program is reported
//! unattached).

/// Offsets in `struct tcp_sock` of `bytes_acked` (u64), `bytes_received` (u64) and
/// `total_retrans` (u32), set by the agent at load.
#[unsafe(no_mangle)]
pub static TCP_SOCK_BYTES_ACKED: u32 = 0;
#[unsafe(no_mangle)]
pub static TCP_SOCK_BYTES_RECEIVED: u32 = 0;
#[unsafe(no_mangle)]
pub static TCP_SOCK_TOTAL_RETRANS: u32 = 0;
/// Offsets in `struct tcp_sock` of `snd_una` and `rcv_nxt` (u32), for the close's exact FIN
/// check (the iterator reads them too, and does not use them: `flow::live_payload_totals`).
#[unsafe(no_mangle)]
pub static TCP_SOCK_SND_UNA: u32 = 0;
#[unsafe(no_mangle)]
pub static TCP_SOCK_RCV_NXT: u32 = 0;
/// Offset of `struct sock *sk` in `struct socket`.
#[unsafe(no_mangle)]
pub static SOCKET_SK: u32 = 0;
/// Offsets in `struct sock` (its `struct sock_common` first) of what adoption reads: state,
/// family, local port (`skc_num`, host order), remote port (`skc_dport`, network order), remote
/// IPv4 and IPv6 address, socket type and protocol.
#[unsafe(no_mangle)]
pub static SK_STATE: u32 = 0;
#[unsafe(no_mangle)]
pub static SK_FAMILY: u32 = 0;
#[unsafe(no_mangle)]
pub static SK_NUM: u32 = 0;
#[unsafe(no_mangle)]
pub static SK_DPORT: u32 = 0;
#[unsafe(no_mangle)]
pub static SK_DADDR: u32 = 0;
#[unsafe(no_mangle)]
pub static SK_V6_DADDR: u32 = 0;
#[unsafe(no_mangle)]
pub static SK_TYPE: u32 = 0;
#[unsafe(no_mangle)]
pub static SK_PROTOCOL: u32 = 0;
/// The owner cgroup: `sk->sk_cgrp_data.cgroup` (`struct cgroup *`), its `kn`
/// (`struct kernfs_node *`) and that node's `id`, the cgroup id (`cgroup_id()`,
/// include/linux/cgroup.h).
#[unsafe(no_mangle)]
pub static SK_CGROUP: u32 = 0;
#[unsafe(no_mangle)]
pub static CGROUP_KN: u32 = 0;
#[unsafe(no_mangle)]
pub static KERNFS_NODE_ID: u32 = 0;
/// `comm` in `struct task_struct`.
#[unsafe(no_mangle)]
pub static TASK_COMM: u32 = 0;
/// `srtt_us` (u32, the smoothed RTT in microseconds << 3) in `struct tcp_sock`.
#[unsafe(no_mangle)]
pub static TCP_SOCK_SRTT_US: u32 = 0;
/// `sk` (`struct sock *`) and `skb_iif` (int, the interface a received packet came in on; 0
/// for a packet this host made) in `struct sk_buff`.
#[unsafe(no_mangle)]
pub static SKB_SK: u32 = 0;
#[unsafe(no_mangle)]
pub static SKB_IIF: u32 = 0;

/// Reads the `T` at `offset` bytes into `base`.
///
/// # Safety
/// `base` must be a verifier-typed kernel pointer and `offset` a load-time constant: the
/// verifier checks the access against the kernel's BTF.
#[inline(always)]
pub unsafe fn field<T: Copy>(base: *const u8, offset: &'static u32) -> T {
    unsafe { field_at(base, offset, 0) }
}

/// [`field`], `extra` bytes further (the second half of an array field).
#[inline(always)]
pub unsafe fn field_at<T: Copy>(base: *const u8, offset: &'static u32, extra: usize) -> T {
    let off = unsafe { core::ptr::read_volatile(offset) } as usize + extra;
    unsafe { core::ptr::read_volatile(base.add(off).cast::<T>()) }
}

/// The cgroup v2 id of a socket's owner, the one `bpf_skb_cgroup_id()` gives for its packets
/// (`sock_cgroup_ptr(&sk->sk_cgrp_data)`, net/core/filter.c); 0 if unreadable.
#[inline(always)]
pub fn sk_cgroup_id(sk: *const u8) -> u64 {
    // SAFETY: offsets of pointer and u64 fields in the running kernel (see module docs).
    unsafe {
        let cgroup: *const u8 = field(sk, &SK_CGROUP);
        if cgroup.is_null() {
            return 0;
        }
        let kn: *const u8 = field(cgroup, &CGROUP_KN);
        if kn.is_null() {
            return 0;
        }
        field::<u64>(kn, &KERNFS_NODE_ID)
    }
}
