//! DNS names, types and response codes as label values.

use hickory_proto::rr::RecordType;

/// A question name in wire format (length-prefixed labels up to the terminating zero, as the
/// kernel stores it, already folded to lower case) in presentation form without the trailing
/// dot: `db-main.prod.svc.cluster.local`. The root name is `.`. Bytes outside letters, digits,
/// `-`, `_` and `*` are escaped as `\DDD` (RFC 1035 5.1), so a label value never hides a dot or
/// a control character. A malformed name yields what could be read.
pub fn presentation(wire: &[u8]) -> String {
    let mut out = String::new();
    let mut pos = 0usize;
    while let Some(&len) = wire.get(pos) {
        if len == 0 || len & 0xc0 != 0 {
            break;
        }
        let Some(label) = wire.get(pos + 1..pos + 1 + len as usize) else {
            break;
        };
        if !out.is_empty() {
            out.push('.');
        }
        for &b in label {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*') {
                out.push(b as char);
            } else {
                out.push_str(&format!("\\{b:03}"));
            }
        }
        pos += 1 + len as usize;
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// A QTYPE as its mnemonic (`A`, `AAAA`, `HTTPS`), or `TYPE<n>` (RFC 3597) when unknown.
pub fn qtype_name(qtype: u16) -> String {
    match RecordType::from(qtype) {
        RecordType::Unknown(n) => format!("TYPE{n}"),
        known => known.to_string(),
    }
}

/// An RCODE as its mnemonic (RFC 6895 2.3, IANA's DNS RCODEs registry): the header's 4 bits,
/// with the upper bits of the EDNS extended RCODE above them (`16` BADVERS .. `23` BADCOOKIE),
/// `RCODE<n>` for unassigned values.
pub fn rcode_name(rcode: u8) -> &'static str {
    static NAMES: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
        (0..=u8::MAX)
            .map(|n| match assigned_rcode(n) {
                Some(name) => name,
                // 256 short strings, made once.
                None => &*Box::leak(format!("RCODE{n}").into_boxed_str()),
            })
            .collect()
    });
    NAMES[usize::from(rcode)]
}

fn assigned_rcode(rcode: u8) -> Option<&'static str> {
    Some(match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        11 => "DSOTYPENI",
        // 16 is also BADSIG, but only in a TSIG record: in the header it is BADVERS.
        16 => "BADVERS",
        17 => "BADKEY",
        18 => "BADTIME",
        19 => "BADMODE",
        20 => "BADNAME",
        21 => "BADALG",
        22 => "BADTRUNC",
        23 => "BADCOOKIE",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in name.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    #[test]
    fn names() {
        assert_eq!(
            presentation(&wire("db-main.prod.svc.cluster.local")),
            "db-main.prod.svc.cluster.local"
        );
        assert_eq!(presentation(&[0]), ".");
        assert_eq!(presentation(&[]), ".");
        assert_eq!(presentation(b"\x03a.b\x00"), "a\\046b");
        assert_eq!(presentation(b"\x02a\x01\x00"), "a\\001");
        assert_eq!(presentation(b"\x04_srv\x01*\x00"), "_srv.*");
        // Cut short or with a pointer: what could be read.
        assert_eq!(presentation(b"\x03www\x07exa"), "www");
        assert_eq!(presentation(b"\x03www\xc0\x0c"), "www");
        // Trailing bytes after the name (zero padding from the kernel key) are ignored.
        let mut padded = wire("example.com");
        padded.resize(256, 0);
        assert_eq!(presentation(&padded), "example.com");
    }

    #[test]
    fn types_and_codes() {
        assert_eq!(qtype_name(1), "A");
        assert_eq!(qtype_name(28), "AAAA");
        assert_eq!(qtype_name(5), "CNAME");
        assert_eq!(qtype_name(65), "HTTPS");
        assert_eq!(qtype_name(65280), "TYPE65280");
        assert_eq!(rcode_name(0), "NOERROR");
        assert_eq!(rcode_name(2), "SERVFAIL");
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(15), "RCODE15");
        assert_eq!(rcode_name(16), "BADVERS");
        assert_eq!(rcode_name(23), "BADCOOKIE");
        assert_eq!(rcode_name(24), "RCODE24");
        assert_eq!(rcode_name(255), "RCODE255");
    }
}
