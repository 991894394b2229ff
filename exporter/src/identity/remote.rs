//! Classification of the remote end of a flow.

use std::net::{IpAddr, Ipv6Addr};

/// Coarse class of a peer address, the `remote_class` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemoteClass {
    /// This host: 127.0.0.0/8, ::1, or the unspecified address.
    Loopback,
    /// RFC 1918, CGNAT (100.64/10), link-local, IPv6 ULA (fc00::/7) and link-local (fe80::/10).
    Private,
    /// Everything else.
    Public,
}

impl RemoteClass {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteClass::Loopback => "loopback",
            RemoteClass::Private => "private",
            RemoteClass::Public => "public",
        }
    }
}

/// Turns the kernel's 16-byte address (IPv4 stored v4-mapped) into an `IpAddr`.
pub fn ip_from_key(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Classifies an address.
pub fn classify(ip: IpAddr) -> RemoteClass {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() || v4.is_unspecified() {
                RemoteClass::Loopback
            } else if v4.is_private() || v4.is_link_local() || (o[0] == 100 && (o[1] & 0xc0) == 64)
            {
                RemoteClass::Private
            } else {
                RemoteClass::Public
            }
        }
        IpAddr::V6(v6) => {
            let s0 = v6.segments()[0];
            if v6.is_loopback() || v6.is_unspecified() {
                RemoteClass::Loopback
            } else if (s0 & 0xfe00) == 0xfc00 || (s0 & 0xffc0) == 0xfe80 {
                RemoteClass::Private
            } else {
                RemoteClass::Public
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> &'static str {
        classify(s.parse().expect("ip")).as_str()
    }

    #[test]
    fn classes() {
        assert_eq!(class("127.0.0.1"), "loopback");
        assert_eq!(class("127.8.9.10"), "loopback");
        assert_eq!(class("::1"), "loopback");
        assert_eq!(class("0.0.0.0"), "loopback");
        assert_eq!(class("10.1.2.3"), "private");
        assert_eq!(class("172.16.0.1"), "private");
        assert_eq!(class("172.32.0.1"), "public");
        assert_eq!(class("192.168.1.1"), "private");
        assert_eq!(class("100.64.0.1"), "private");
        assert_eq!(class("100.128.0.1"), "public");
        assert_eq!(class("169.254.1.1"), "private");
        assert_eq!(class("fd00::1"), "private");
        assert_eq!(class("fe80::1"), "private");
        assert_eq!(class("8.8.8.8"), "public");
        assert_eq!(class("2001:db8::1"), "public");
    }

    #[test]
    fn mapped_addresses_unify() {
        let mapped = sockscope_common::v4_mapped([10, 0, 0, 1]);
        assert_eq!(
            ip_from_key(mapped),
            "10.0.0.1".parse::<IpAddr>().expect("ip")
        );
        let v6: [u8; 16] = "fd00::1".parse::<Ipv6Addr>().expect("ip").octets();
        assert_eq!(ip_from_key(v6), "fd00::1".parse::<IpAddr>().expect("ip"));
    }
}
