//! Bounded reads of IP/TCP/UDP headers from a cgroup_skb context.
//!
//! cgroup_skb programs see the packet from the network header on, in both directions
//! (`__cgroup_bpf_run_filter_skb()` pushes back to it, kernel/bpf/cgroup.c). Headers are read
//! with direct packet access (a bounds check and a load, no helper call); if they are not in the
//! linear part of the skb, `bpf_skb_load_bytes` is the fallback.

use core::mem::size_of;

use aya_ebpf::programs::SkBuffContext;
use sockscope_common::v4_mapped;

const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86DD;

/// Reads a `T` at `off` bytes from the network header.
#[inline(always)]
pub fn read<T: Copy>(ctx: &SkBuffContext, off: usize) -> Option<T> {
    let skb = ctx.skb.skb;
    let (start, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    // The verifier takes packet pointers only at offsets it knows to be below 64 KiB.
    if off < 0x8000 && start + off + size_of::<T>() <= end {
        // SAFETY: the bounds check above is the one the verifier needs for packet pointers.
        Some(unsafe { core::ptr::read_unaligned((start + off) as *const T) })
    } else {
        ctx.load::<T>(off).ok()
    }
}

/// Addresses, ports and header sizes of one packet.
pub struct Headers {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    /// Offset of the transport header from the network header.
    pub l4_offset: u32,
    /// IP protocol of the transport header.
    pub proto: u8,
}

/// IPv6 extension headers walked before giving up on a packet (RFC 8200 4.1 recommends at
/// most one of each, in a fixed order: hop-by-hop, destination, routing, fragment, AH,
/// destination).
const IPV6_MAX_EXTENSIONS: usize = 6;

/// Parses the IP header with one read of the fixed header, then walks IPv6 extension headers
/// (hop-by-hop, routing, fragment, destination options, AH) to the transport header. `None`
/// for non-IP packets, an IPv4 header length below 20, and headers that end past the packet
/// or chain more than [`IPV6_MAX_EXTENSIONS`] extensions.
///
/// Reads are whole headers, never single bytes: LLVM turns `p + 1 <= end` into `p < end`,
/// which the verifier does not accept as a bounds check.
#[inline(always)]
pub fn ip_headers(ctx: &SkBuffContext) -> Option<Headers> {
    let protocol = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16) as u32;
    if protocol == ETH_P_IP {
        let h: [u8; 20] = read(ctx, 0)?;
        let ihl = ((h[0] & 0x0f) as u32) * 4;
        if ihl < 20 {
            return None;
        }
        Some(Headers {
            src_addr: v4_mapped([h[12], h[13], h[14], h[15]]),
            dst_addr: v4_mapped([h[16], h[17], h[18], h[19]]),
            l4_offset: ihl,
            proto: h[9],
        })
    } else if protocol == ETH_P_IPV6 {
        let h: [u8; 40] = read(ctx, 0)?;
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src.copy_from_slice(&h[8..24]);
        dst.copy_from_slice(&h[24..40]);
        let mut next = h[6];
        let mut off: u32 = 40;
        for _ in 0..IPV6_MAX_EXTENSIONS {
            // Every extension header starts with {next header, length}; the length's unit is
            // 8 bytes past the first 8, except AH's (4 bytes past the first 8, RFC 4302) and the
            // fragment header's (always 8 bytes).
            let step = match next {
                IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => 8,
                IPPROTO_FRAGMENT => 0,
                IPPROTO_AH => 4,
                _ => break,
            };
            // Every extension header is at least 8 bytes: 4 are always there.
            let e: [u8; 4] = read(ctx, off as usize)?;
            if step == 0 && u16::from_be_bytes([e[2], e[3]]) & 0xfff8 != 0 {
                // A fragment other than the first: no transport header follows.
                return None;
            }
            next = e[0];
            off += match step {
                8 => (e[1] as u32 + 1) * 8,
                4 => (e[1] as u32 + 2) * 4,
                _ => 8,
            };
        }
        if is_extension(next) {
            return None;
        }
        Some(Headers {
            src_addr: src,
            dst_addr: dst,
            // At most 40 + 6 * 2048 bytes: inside the mask, which keeps packet offsets bounded.
            l4_offset: crate::maps::launder(off, 0x3fff)?,
            proto: next,
        })
    } else {
        None
    }
}

/// `IPPROTO_TCP`.
const IPPROTO_TCP: u8 = 6;

/// A pointer to `len` bytes at `off` from the network header, if they are in the linear part
/// of the skb (direct packet access only, no fallback): for single-byte loads on the hot path,
/// where copying a header out makes LLVM assemble whole words from bytes.
#[inline(always)]
fn linear(ctx: &SkBuffContext, off: usize, len: usize) -> Option<*const u8> {
    let skb = ctx.skb.skb;
    let (start, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    (start + off + len <= end).then_some((start + off) as *const u8)
}

/// The byte at `i` of a range [`linear`] checked.
///
/// # Safety
/// `i` must be below the length that was checked.
#[inline(always)]
unsafe fn byte(p: *const u8, i: usize) -> u8 {
    unsafe { core::ptr::read_volatile(p.add(i)) }
}

/// Offset of the TCP header for a TCP packet whose transport header directly follows the IP
/// header (IPv4 with any options, IPv6 without extension headers), in the linear part of the
/// skb; `None` for everything else, which [`ip_headers`] then parses in full. For the hot path:
/// one bounds check and two loads.
#[inline(always)]
pub fn tcp_offset(ctx: &SkBuffContext) -> Option<u32> {
    let protocol = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16) as u32;
    if protocol == ETH_P_IP {
        let h = linear(ctx, 0, 20)?;
        // SAFETY: inside the 20 bytes checked.
        let (vihl, proto) = unsafe { (byte(h, 0), byte(h, 9)) };
        let ihl = ((vihl & 0x0f) as u32) * 4;
        (proto == IPPROTO_TCP && ihl >= 20).then_some(ihl)
    } else if protocol == ETH_P_IPV6 {
        let h = linear(ctx, 0, 40)?;
        // SAFETY: inside the 40 bytes checked.
        (unsafe { byte(h, 6) } == IPPROTO_TCP).then_some(40)
    } else {
        None
    }
}

/// `IPPROTO_UDP`.
const IPPROTO_UDP: u8 = 17;

/// A UDP datagram's peer, as [`udp_linear`] reads it.
pub struct UdpLinear {
    /// The remote address as four words loaded from its 16-byte (v4-mapped for IPv4) form,
    /// so it compares with a stored `[u8; 16]` loaded the same way.
    pub remote: [u32; 4],
    /// Local and remote port, host byte order.
    pub local_port: u16,
    pub remote_port: u16,
    /// Payload bytes (past the UDP header).
    pub payload: u32,
    /// Offset of the UDP header from the network header.
    pub l4_offset: u32,
}

/// The v4-mapped prefix's third word (bytes `00 00 ff ff`) as a native load gives it.
const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// The peer of a UDP datagram whose headers are in the linear part of the skb and whose UDP
/// header directly follows a fixed-size IP header (IPv4 without options, IPv6 without
/// extension headers): word loads, no copy, no helper call. `None` for everything else,
/// which [`ip_headers`] then parses in full. For UDP's hot path, where assembling addresses
/// byte by byte (as copying a header out makes LLVM do) was most of the program's work.
///
/// The word loads may be unaligned: the verifier allows that for packet data wherever the
/// architecture has efficient unaligned access (x86-64, arm64; `check_pkt_ptr_alignment()`,
/// kernel/bpf/verifier.c).
#[inline(always)]
pub fn udp_linear(ctx: &SkBuffContext, egress: bool) -> Option<UdpLinear> {
    let protocol = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16) as u32;
    let (remote, l4) = if protocol == ETH_P_IP {
        let h = linear(ctx, 0, 28)?;
        // SAFETY: inside the 28 bytes checked (20 of IP header, 8 of UDP header).
        let (vihl, proto) = unsafe { (byte(h, 0), byte(h, 9)) };
        if vihl != 0x45 || proto != IPPROTO_UDP {
            return None;
        }
        let addr = unsafe { word(h, if egress { 16 } else { 12 }) };
        ([0, 0, V4_MAPPED_WORD, addr], 20)
    } else if protocol == ETH_P_IPV6 {
        let h = linear(ctx, 0, 48)?;
        // SAFETY: inside the 48 bytes checked (40 of IP header, 8 of UDP header).
        if unsafe { byte(h, 6) } != IPPROTO_UDP {
            return None;
        }
        let at = if egress { 24 } else { 8 };
        let remote = unsafe {
            [
                word(h, at),
                word(h, at + 4),
                word(h, at + 8),
                word(h, at + 12),
            ]
        };
        (remote, 40)
    } else {
        return None;
    };
    let u = linear(ctx, l4, 8)?;
    // SAFETY: inside the 8 bytes checked.
    let (src, dst) = unsafe {
        (
            u16::from_be(core::ptr::read_volatile(u.cast::<u16>())),
            u16::from_be(core::ptr::read_volatile(u.add(2).cast::<u16>())),
        )
    };
    let (local_port, remote_port) = if egress { (src, dst) } else { (dst, src) };
    Some(UdpLinear {
        remote,
        local_port,
        remote_port,
        payload: ctx.skb.len().saturating_sub(l4 as u32 + 8),
        l4_offset: l4 as u32,
    })
}

/// The (possibly unaligned) native-order word at `i` of a range [`linear`] checked.
///
/// A volatile load so that LLVM emits one 4-byte load: `read_unaligned` becomes four byte
/// loads and shifts on the BPF target. Rust's alignment rule for `read_volatile` is not met
/// here, but the BPF instruction has no alignment requirement on the architectures whose
/// verifier accepts it (see [`udp_linear`]), and the JIT emits a plain load.
///
/// # Safety
/// `i + 4` must be at most the length that was checked.
#[inline(always)]
unsafe fn word(p: *const u8, i: usize) -> u32 {
    unsafe { core::ptr::read_volatile(p.add(i).cast::<u32>()) }
}

/// The flags byte of the TCP header at `l4_offset` (from [`tcp_offset`]), if it is in the
/// linear part of the skb.
#[inline(always)]
pub fn tcp_flags(ctx: &SkBuffContext, l4_offset: u32) -> Option<u8> {
    let t = linear(ctx, l4_offset as usize, 14)?;
    // SAFETY: inside the 14 bytes checked.
    Some(unsafe { byte(t, 13) })
}

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

#[inline(always)]
fn is_extension(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_AH | IPPROTO_DSTOPTS
    )
}

pub const TCP_FIN: u8 = 0x01;

/// For a FIN segment whose TCP header starts at `l4_offset`: the sequence number just past the
/// FIN (seq + payload + 1). `None` for segments without FIN.
#[inline(always)]
pub fn fin_end(ctx: &SkBuffContext, l4_offset: u32) -> Option<u32> {
    let t: [u8; 14] = read(ctx, l4_offset as usize)?;
    fin_end_of(ctx, l4_offset, &t)
}

/// [`fin_end`] for a TCP header already read.
#[inline(always)]
pub fn fin_end_of(ctx: &SkBuffContext, l4_offset: u32, t: &[u8; 14]) -> Option<u32> {
    if t[13] & TCP_FIN == 0 {
        return None;
    }
    let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
    let payload = ctx
        .skb
        .len()
        .saturating_sub(l4_offset + ((t[12] >> 4) as u32) * 4);
    Some(seq.wrapping_add(payload).wrapping_add(1))
}

pub const TCP_ACK: u8 = 0x10;

/// Source and destination ports of a UDP (or TCP) header, host byte order.
#[inline(always)]
pub fn ports(ctx: &SkBuffContext, l4_offset: u32) -> Option<(u16, u16)> {
    let raw: [u8; 4] = read(ctx, l4_offset as usize)?;
    Some((
        u16::from_be_bytes([raw[0], raw[1]]),
        u16::from_be_bytes([raw[2], raw[3]]),
    ))
}

/// An IPv6 address given as four u32 words as stored by the kernel (network byte order in
/// memory), as 16 bytes.
#[inline(always)]
pub fn ip6_words(w: [u32; 4]) -> [u8; 16] {
    let (a, b, c, d) = (
        w[0].to_ne_bytes(),
        w[1].to_ne_bytes(),
        w[2].to_ne_bytes(),
        w[3].to_ne_bytes(),
    );
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
        d[3],
    ]
}
