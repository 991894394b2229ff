//! Offsets of kernel-internal struct fields, from the running kernel's BTF.
//!
//! The iterator, the TCP close and the drop program (`exporter-ebpf/src/kernel.rs`) read
//! `struct tcp_sock`, `struct socket`, `struct sock` and `struct sk_buff`, whose layouts change
//! between kernels and configs. Its offsets are looked up here at load, by field name and
//! size, in `/sys/kernel/btf/vmlinux`, and written into the program's constants; nothing is
//! fixed at build time. The verifier checks every such load against the same BTF again.

use std::path::Path;

use btf_rs::{Btf, Type};

/// Where the running kernel publishes its BTF (CONFIG_DEBUG_INFO_BTF).
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Why an offset could not be had.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The BTF file could not be read or parsed.
    #[error("cannot read kernel BTF {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The struct is not in the kernel's BTF.
    #[error("struct {0} not in the kernel's BTF")]
    NoStruct(&'static str),
    /// The field is not in the struct (renamed, removed, or of an unexpected size).
    #[error("no {size}-byte field {field} in struct {ty}")]
    NoField {
        /// The struct.
        ty: &'static str,
        /// The field (a path through nested members).
        field: String,
        /// Its expected size in bytes.
        size: usize,
    },
}

/// Byte offsets of the fields the iterator and the close read (in `struct tcp_sock` unless said
/// otherwise; `struct sock` fields are at the same offsets from a `tcp_sock`, its first member).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSockOffsets {
    /// `u64 bytes_acked`.
    pub bytes_acked: u32,
    /// `u64 bytes_received`.
    pub bytes_received: u32,
    /// `u32 total_retrans`.
    pub total_retrans: u32,
    /// `u32 snd_una`.
    pub snd_una: u32,
    /// `u32 rcv_nxt`.
    pub rcv_nxt: u32,
    /// `struct sock *sk` in `struct socket`.
    pub socket_sk: u32,
    /// `skc_state` (u8) in `struct sock`.
    pub sk_state: u32,
    /// `skc_family` (u16) in `struct sock`.
    pub sk_family: u32,
    /// `skc_num`, the local port in host order (u16), in `struct sock`.
    pub sk_num: u32,
    /// `skc_dport`, the remote port in network order (u16), in `struct sock`.
    pub sk_dport: u32,
    /// `skc_daddr`, the remote IPv4 address (u32), in `struct sock`.
    pub sk_daddr: u32,
    /// `skc_v6_daddr`, the remote IPv6 address (16 bytes), in `struct sock`.
    pub sk_v6_daddr: u32,
    /// `sk_type` (u16) in `struct sock`.
    pub sk_type: u32,
    /// `sk_protocol` (u16) in `struct sock`.
    pub sk_protocol: u32,
    /// `sk_cgrp_data.cgroup` (`struct cgroup *`) in `struct sock`.
    pub sk_cgroup: u32,
    /// `kn` (`struct kernfs_node *`) in `struct cgroup`.
    pub cgroup_kn: u32,
    /// `id` (u64) in `struct kernfs_node`.
    pub kernfs_node_id: u32,
    /// `comm` (16 bytes) in `struct task_struct`.
    pub task_comm: u32,
    /// `u32 srtt_us` (smoothed RTT, microseconds << 3).
    pub srtt_us: u32,
    /// `sk` (`struct sock *`) in `struct sk_buff`.
    pub skb_sk: u32,
    /// `skb_iif` (int) in `struct sk_buff`.
    pub skb_iif: u32,
}

/// A kernel's BTF, parsed once for everything the agent reads from it.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    /// The running kernel's.
    pub fn running_kernel() -> Result<Self, Error> {
        Self::from_file(Path::new(VMLINUX))
    }

    /// A BTF file's, read whole first: parsing through a buffered reader seeks once per type
    /// (about 126,000 syscalls for a 5 MB vmlinux).
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let fail = |reason: String| Error::Read {
            path: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let btf = Btf::from_bytes(&bytes).map_err(|e| fail(e.to_string()))?;
        Ok(KernelBtf { btf })
    }

    /// The kernel's packet drop reasons (`enum skb_drop_reason`,
    /// include/net/dropreason-core.h) by value, named without their `SKB_DROP_REASON_` (or
    /// `SKB_`) prefix, e.g. 12 -> `NETFILTER_DROP` on 6.18. The values change between
    /// kernels, so they are read here, never fixed at build time; empty if the kernel has no
    /// such enum.
    pub fn drop_reasons(&self) -> std::collections::BTreeMap<u32, String> {
        let mut names = std::collections::BTreeMap::new();
        let Ok(types) = self.btf.resolve_types_by_name("skb_drop_reason") else {
            return names;
        };
        for t in types {
            let Type::Enum(e) = t else { continue };
            for m in &e.members {
                let Ok(name) = self.btf.resolve_name(m) else {
                    continue;
                };
                let short = name
                    .strip_prefix("SKB_DROP_REASON_")
                    .or_else(|| name.strip_prefix("SKB_"))
                    .unwrap_or(&name);
                names.entry(m.val()).or_insert_with(|| short.to_string());
            }
        }
        names
    }

    /// The struct field offsets the programs read.
    pub fn offsets(&self) -> Result<TcpSockOffsets, Error> {
        let btf = &self.btf;
        let field = |ty: &'static str, path: &'static [&'static str], kind| {
            if !btf
                .resolve_types_by_name(ty)
                .is_ok_and(|t| t.iter().any(|t| matches!(t, Type::Struct(_))))
            {
                return Err(Error::NoStruct(ty));
            }
            offset_of(btf, ty, path, kind).ok_or(Error::NoField {
                ty,
                field: path.join("."),
                size: match kind {
                    Kind::Int(n) | Kind::Bytes(n) => n,
                    Kind::Ptr => 8,
                },
            })
        };
        Ok(TcpSockOffsets {
            bytes_acked: field("tcp_sock", &["bytes_acked"], Kind::Int(8))?,
            bytes_received: field("tcp_sock", &["bytes_received"], Kind::Int(8))?,
            total_retrans: field("tcp_sock", &["total_retrans"], Kind::Int(4))?,
            snd_una: field("tcp_sock", &["snd_una"], Kind::Int(4))?,
            rcv_nxt: field("tcp_sock", &["rcv_nxt"], Kind::Int(4))?,
            socket_sk: field("socket", &["sk"], Kind::Ptr)?,
            sk_state: field("sock", &["__sk_common", "skc_state"], Kind::Int(1))?,
            sk_family: field("sock", &["__sk_common", "skc_family"], Kind::Int(2))?,
            sk_num: field("sock", &["__sk_common", "skc_num"], Kind::Int(2))?,
            sk_dport: field("sock", &["__sk_common", "skc_dport"], Kind::Int(2))?,
            sk_daddr: field("sock", &["__sk_common", "skc_daddr"], Kind::Int(4))?,
            sk_v6_daddr: field("sock", &["__sk_common", "skc_v6_daddr"], Kind::Bytes(16))?,
            sk_type: field("sock", &["sk_type"], Kind::Int(2))?,
            sk_protocol: field("sock", &["sk_protocol"], Kind::Int(2))?,
            sk_cgroup: field("sock", &["sk_cgrp_data", "cgroup"], Kind::Ptr)?,
            cgroup_kn: field("cgroup", &["kn"], Kind::Ptr)?,
            kernfs_node_id: field("kernfs_node", &["id"], Kind::Int(8))?,
            task_comm: field("task_struct", &["comm"], Kind::Bytes(16))?,
            srtt_us: field("tcp_sock", &["srtt_us"], Kind::Int(4))?,
            skb_sk: field("sk_buff", &["sk"], Kind::Ptr)?,
            skb_iif: field("sk_buff", &["skb_iif"], Kind::Int(4))?,
        })
    }
}

impl TcpSockOffsets {
    /// The offsets in the running kernel.
    pub fn running_kernel() -> Result<Self, Error> {
        KernelBtf::running_kernel()?.offsets()
    }

    /// The offsets in a BTF file.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        KernelBtf::from_file(path)?.offsets()
    }

    /// (name of the eBPF object's constant, value) for every offset.
    pub fn globals(&self) -> [(&'static str, u32); 21] {
        [
            ("TCP_SOCK_BYTES_ACKED", self.bytes_acked),
            ("TCP_SOCK_BYTES_RECEIVED", self.bytes_received),
            ("TCP_SOCK_TOTAL_RETRANS", self.total_retrans),
            ("TCP_SOCK_SND_UNA", self.snd_una),
            ("TCP_SOCK_RCV_NXT", self.rcv_nxt),
            ("SOCKET_SK", self.socket_sk),
            ("SK_STATE", self.sk_state),
            ("SK_FAMILY", self.sk_family),
            ("SK_NUM", self.sk_num),
            ("SK_DPORT", self.sk_dport),
            ("SK_DADDR", self.sk_daddr),
            ("SK_V6_DADDR", self.sk_v6_daddr),
            ("SK_TYPE", self.sk_type),
            ("SK_PROTOCOL", self.sk_protocol),
            ("SK_CGROUP", self.sk_cgroup),
            ("CGROUP_KN", self.cgroup_kn),
            ("KERNFS_NODE_ID", self.kernfs_node_id),
            ("TASK_COMM", self.task_comm),
            ("TCP_SOCK_SRTT_US", self.srtt_us),
            ("SKB_SK", self.skb_sk),
            ("SKB_IIF", self.skb_iif),
        ]
    }
}

/// What a field must be.
#[derive(Clone, Copy)]
enum Kind {
    /// An integer of this many bytes.
    Int(usize),
    /// A pointer.
    Ptr,
    /// Anything (array, struct, union, integer) of this many bytes.
    Bytes(usize),
}

/// Byte offset in struct `ty` of the field reached through `path` (each step a member of the
/// struct or union before it), of kind `kind`, looking through anonymous struct and union
/// members (where recent kernels group fields).
fn offset_of(btf: &Btf, ty: &str, path: &[&str], kind: Kind) -> Option<u32> {
    let types = btf.resolve_types_by_name(ty).ok()?;
    types.iter().find_map(|t| match t {
        Type::Struct(s) => walk(btf, s, path, kind, 0),
        _ => None,
    })
}

fn walk(btf: &Btf, s: &btf_rs::Struct, path: &[&str], kind: Kind, base: u32) -> Option<u32> {
    let (first, rest) = path.split_first()?;
    let (bits, ty) = find(btf, s, first, base)?;
    if !bits.is_multiple_of(8) {
        return None;
    }
    if rest.is_empty() {
        return matches(btf, &ty, kind).then_some(bits / 8);
    }
    match &ty {
        Type::Struct(inner) | Type::Union(inner) => walk(btf, inner, rest, kind, bits),
        _ => None,
    }
}

/// The bit offset (from the outermost struct) and type of member `field`.
fn find(btf: &Btf, s: &btf_rs::Struct, field: &str, base: u32) -> Option<(u32, Type)> {
    for m in &s.members {
        if m.bitfield_size().is_some_and(|b| b != 0) {
            continue;
        }
        let bits = base + m.bit_offset();
        let name = btf.resolve_name(m).unwrap_or_default();
        let ty = strip(btf, btf.resolve_chained_type(m).ok()?)?;
        if name.is_empty() {
            if let Type::Struct(inner) | Type::Union(inner) = &ty
                && let Some(found) = find(btf, inner, field, bits)
            {
                return Some(found);
            }
            continue;
        }
        if name == field {
            return Some((bits, ty));
        }
    }
    None
}

/// Whether a field of type `ty` is of kind `kind`.
fn matches(btf: &Btf, ty: &Type, kind: Kind) -> bool {
    match (ty, kind) {
        (Type::Int(i), Kind::Int(size)) => i.size() == size,
        (Type::Ptr(_), Kind::Ptr) => true,
        (_, Kind::Bytes(size)) => size_of(btf, ty) == Some(size),
        _ => false,
    }
}

/// Size in bytes of a type.
fn size_of(btf: &Btf, ty: &Type) -> Option<usize> {
    match ty {
        Type::Int(i) => Some(i.size()),
        Type::Struct(s) | Type::Union(s) => Some(s.size()),
        Type::Array(a) => {
            let elem = strip(btf, btf.resolve_chained_type(a).ok()?)?;
            Some(size_of(btf, &elem)? * a.len())
        }
        _ => None,
    }
}

/// The type behind typedefs and qualifiers.
fn strip(btf: &Btf, mut ty: Type) -> Option<Type> {
    for _ in 0..16 {
        let next = match &ty {
            Type::Typedef(t) => btf.resolve_chained_type(t).ok()?,
            Type::Volatile(t) => btf.resolve_chained_type(t).ok()?,
            Type::Const(t) => btf.resolve_chained_type(t).ok()?,
            Type::Restrict(t) => btf.resolve_chained_type(t).ok()?,
            Type::TypeTag(t) => btf.resolve_chained_type(t).ok()?,
            _ => return Some(ty),
        };
        ty = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against this machine's kernel: the fields exist, are distinct, in the struct, aligned.
    #[test]
    fn running_kernel_has_the_fields() {
        if !Path::new(VMLINUX).exists() {
            eprintln!("skipped: no {VMLINUX} on this kernel");
            return;
        }
        let o = TcpSockOffsets::running_kernel().expect("offsets");
        assert!(o.bytes_acked.is_multiple_of(8));
        assert!(o.bytes_received.is_multiple_of(8));
        assert!(o.total_retrans.is_multiple_of(4));
        assert!(o.bytes_acked != o.bytes_received);
        // Far past struct sock (the first member), and inside a plausible tcp_sock.
        for off in [o.bytes_acked, o.bytes_received, o.total_retrans] {
            assert!((700..8192).contains(&off), "{o:?}");
        }
        assert!(o.socket_sk.is_multiple_of(8) && o.socket_sk < 256, "{o:?}");
    }

    #[test]
    fn drop_reasons_from_the_running_kernel() {
        if !Path::new(VMLINUX).exists() {
            eprintln!("skipped: no {VMLINUX} on this kernel");
            return;
        }
        let reasons = KernelBtf::running_kernel().expect("btf").drop_reasons();
        // Named on every kernel with drop reasons; the values differ between kernels.
        for name in ["NOT_SPECIFIED", "NETFILTER_DROP", "NO_SOCKET"] {
            assert!(reasons.values().any(|n| n == name), "{name}: {reasons:?}");
        }
        assert_eq!(reasons.get(&2).map(String::as_str), Some("NOT_SPECIFIED"));
    }

    #[test]
    fn a_missing_file_is_a_clear_error() {
        let e = TcpSockOffsets::from_file(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/vmlinux"), "{e}");
    }
}
