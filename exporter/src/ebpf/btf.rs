//! Offsets of kernel-internal struct fields, from the running kernel's BTF.
//!
//! The iterator (`exporter-ebpf/src/iter.rs`) reads `struct tcp_sock` and `struct socket`,
//! whose layouts change between kernels and configs. Its offsets are looked up here at load, by field name and
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
        /// The field.
        field: &'static str,
        /// Its expected size in bytes.
        size: usize,
    },
}

/// Byte offsets of the fields the iterator reads (in `struct tcp_sock` unless said otherwise).
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
}

impl TcpSockOffsets {
    /// The offsets in the running kernel.
    pub fn running_kernel() -> Result<Self, Error> {
        Self::from_file(Path::new(VMLINUX))
    }

    /// The offsets in a BTF file.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let btf = Btf::from_file(path).map_err(|e| Error::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let field = |ty: &'static str, name, kind| {
            if !btf
                .resolve_types_by_name(ty)
                .is_ok_and(|t| t.iter().any(|t| matches!(t, Type::Struct(_))))
            {
                return Err(Error::NoStruct(ty));
            }
            offset_of(&btf, ty, name, kind).ok_or(Error::NoField {
                ty,
                field: name,
                size: match kind {
                    Kind::Int(n) => n,
                    Kind::Ptr => 8,
                },
            })
        };
        Ok(TcpSockOffsets {
            bytes_acked: field("tcp_sock", "bytes_acked", Kind::Int(8))?,
            bytes_received: field("tcp_sock", "bytes_received", Kind::Int(8))?,
            total_retrans: field("tcp_sock", "total_retrans", Kind::Int(4))?,
            snd_una: field("tcp_sock", "snd_una", Kind::Int(4))?,
            rcv_nxt: field("tcp_sock", "rcv_nxt", Kind::Int(4))?,
            socket_sk: field("socket", "sk", Kind::Ptr)?,
        })
    }
}

/// What a field must be.
#[derive(Clone, Copy)]
enum Kind {
    /// An integer of this many bytes.
    Int(usize),
    /// A pointer.
    Ptr,
}

/// Byte offset of field `field` of struct `ty`, of kind `kind`, looking through anonymous
/// struct and union members (where recent kernels group fields).
fn offset_of(btf: &Btf, ty: &str, field: &str, kind: Kind) -> Option<u32> {
    let types = btf.resolve_types_by_name(ty).ok()?;
    types.iter().find_map(|t| match t {
        Type::Struct(s) => find(btf, s, field, kind, 0),
        _ => None,
    })
}

fn find(btf: &Btf, s: &btf_rs::Struct, field: &str, kind: Kind, base: u32) -> Option<u32> {
    for m in &s.members {
        if m.bitfield_size().is_some_and(|b| b != 0) {
            continue;
        }
        let bits = base + m.bit_offset();
        let name = btf.resolve_name(m).unwrap_or_default();
        let ty = strip(btf, btf.resolve_chained_type(m).ok()?)?;
        if name.is_empty() {
            if let Type::Struct(inner) | Type::Union(inner) = &ty
                && let Some(off) = find(btf, inner, field, kind, bits)
            {
                return Some(off);
            }
            continue;
        }
        if name == field {
            if !bits.is_multiple_of(8) {
                return None;
            }
            return match (ty, kind) {
                (Type::Int(i), Kind::Int(size)) if i.size() == size => Some(bits / 8),
                (Type::Ptr(_), Kind::Ptr) => Some(bits / 8),
                _ => None,
            };
        }
    }
    None
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
    fn a_missing_file_is_a_clear_error() {
        let e = TcpSockOffsets::from_file(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/vmlinux"), "{e}");
    }
}
