//! Bounded reads of IP/TCP/UDP headers from a cgroup_skb context.
//!
//! cgroup_skb programs see the packet from the network header on, in both directions
//! (`__cgroup_bpf_run_filter_skb()` pushes back to it, kernel/bpf/cgroup.c).

use aya_ebpf::programs::SkBuffContext;
use sockscope_common::v4_mapped;

const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86DD;

/// Addresses, ports and header sizes of one packet.
pub struct Headers {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    /// Offset of the transport header from the network header.
    pub l4_offset: u32,
    /// IP protocol of the transport header.
    pub proto: u8,
}

/// Parses the IP header. `None` for non-IP packets and IPv6 packets whose next header is an
/// extension header (the transport header is then not at a fixed offset).
#[inline(always)]
pub fn ip_headers(ctx: &SkBuffContext) -> Option<Headers> {
    let protocol = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16) as u32;
    if protocol == ETH_P_IP {
        let vihl: u8 = ctx.load(0).ok()?;
        let ihl = ((vihl & 0x0f) as u32) * 4;
        if ihl < 20 {
            return None;
        }
        let proto: u8 = ctx.load(9).ok()?;
        let src: [u8; 4] = ctx.load(12).ok()?;
        let dst: [u8; 4] = ctx.load(16).ok()?;
        Some(Headers {
            src_addr: v4_mapped(src),
            dst_addr: v4_mapped(dst),
            l4_offset: ihl,
            proto,
        })
    } else if protocol == ETH_P_IPV6 {
        let proto: u8 = ctx.load(6).ok()?;
        let src: [u8; 16] = ctx.load(8).ok()?;
        let dst: [u8; 16] = ctx.load(24).ok()?;
        Some(Headers {
            src_addr: src,
            dst_addr: dst,
            l4_offset: 40,
            proto,
        })
    } else {
        None
    }
}

/// The fields of a TCP header sockscope needs.
pub struct TcpHeader {
    pub seq: u32,
    pub flags: u8,
    pub header_len: u32,
}

pub const TCP_FIN: u8 = 0x01;

#[inline(always)]
pub fn tcp_header(ctx: &SkBuffContext, l4_offset: u32) -> Option<TcpHeader> {
    // seq at 4..8, data offset at 12, flags at 13.
    let raw: [u8; 14] = ctx.load(l4_offset as usize).ok()?;
    let seq = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
    Some(TcpHeader {
        seq,
        flags: raw[13],
        header_len: ((raw[12] >> 4) as u32) * 4,
    })
}

/// Source and destination ports of a UDP (or TCP) header, host byte order.
#[inline(always)]
pub fn ports(ctx: &SkBuffContext, l4_offset: u32) -> Option<(u16, u16)> {
    let raw: [u8; 4] = ctx.load(l4_offset as usize).ok()?;
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
