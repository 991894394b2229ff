//! Decoding of the responses the kernel forwards: which addresses answer which question name.

use std::net::IpAddr;

use hickory_proto::{
    op::{Header, MessageType, Query, ResponseCode},
    rr::{Name, RData, Record},
    serialize::binary::{BinDecodable, BinDecoder},
};

use crate::identity::names::presentation;

/// What one response says about addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The name the application asked for, in presentation form, lower case.
    pub qname: String,
    /// Addresses the name resolves to, each with the smallest TTL along its CNAME chain.
    pub addrs: Vec<(IpAddr, u32)>,
}

/// Why a forwarded response gave no addresses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnswerError {
    /// The header or the question could not be decoded.
    #[error("malformed DNS response: {0}")]
    Malformed(String),
    /// Not a successful response to one question (the kernel forwards only those).
    #[error("not a NOERROR response to a single question")]
    NotAnswer,
}

/// Most CNAME hops followed from the question name (resolvers stop around 8-16).
const MAX_CHAIN: usize = 16;

/// Decodes a DNS response, possibly cut short: the complete answer records before the cut are
/// used. A and AAAA records count only when their owner is the question name or a name the
/// question's CNAME chain leads to, so unrelated records a server adds cannot mislabel an
/// address.
pub fn decode(msg: &[u8]) -> Result<Answer, AnswerError> {
    let mut d = BinDecoder::new(msg);
    let header = Header::read(&mut d).map_err(|e| AnswerError::Malformed(e.to_string()))?;
    if header.metadata.message_type != MessageType::Response
        || header.metadata.response_code != ResponseCode::NoError
        || header.counts.queries != 1
    {
        return Err(AnswerError::NotAnswer);
    }
    let query = Query::read(&mut d).map_err(|e| AnswerError::Malformed(e.to_string()))?;
    let mut records = Vec::new();
    for _ in 0..header.counts.answers {
        match Record::read(&mut d) {
            Ok(r) => records.push(r),
            // Cut at the forwarding size limit, or garbage: keep what decoded.
            Err(_) => break,
        }
    }
    Ok(Answer {
        qname: name_label(&query.name),
        addrs: addresses(&query.name, &records),
    })
}

/// Follows CNAMEs from `qname` and collects the addresses of every name on the chain.
fn addresses(qname: &Name, records: &[Record]) -> Vec<(IpAddr, u32)> {
    // (name, smallest TTL on the way to it)
    let mut chain: Vec<(Name, u32)> = vec![(qname.to_lowercase(), u32::MAX)];
    let mut i = 0;
    while i < chain.len() && chain.len() <= MAX_CHAIN {
        let (name, ttl) = chain[i].clone();
        for r in records {
            if let RData::CNAME(target) = &r.data
                && r.name == name
            {
                let target = target.0.to_lowercase();
                if !chain.iter().any(|(n, _)| *n == target) {
                    chain.push((target, ttl.min(r.ttl)));
                }
            }
        }
        i += 1;
    }
    let mut out = Vec::new();
    for r in records {
        let ip = match &r.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            _ => continue,
        };
        if let Some((_, ttl)) = chain.iter().find(|(n, _)| r.name == *n) {
            out.push((ip, r.ttl.min(*ttl)));
        }
    }
    out
}

/// A hickory name in the same form as [`presentation`] gives for the kernel's wire names.
fn name_label(name: &Name) -> String {
    let mut wire = Vec::with_capacity(64);
    for label in name.to_lowercase().iter() {
        wire.push(label.len() as u8);
        wire.extend_from_slice(label);
    }
    wire.push(0);
    presentation(&wire)
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, str::FromStr};

    use hickory_proto::{
        op::{Message, OpCode},
        rr::{
            RecordType,
            rdata::{A, AAAA, CNAME},
        },
    };

    use super::*;

    fn response(qname: &str, rcode: ResponseCode, answers: Vec<Record>) -> Vec<u8> {
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.metadata.response_code = rcode;
        m.add_query(Query::query(
            Name::from_str(qname).expect("name"),
            RecordType::A,
        ));
        for a in answers {
            m.add_answer(a);
        }
        m.to_vec().expect("encode")
    }

    fn a(name: &str, ttl: u32, ip: [u8; 4]) -> Record {
        Record::from_rdata(
            Name::from_str(name).expect("name"),
            ttl,
            RData::A(A(Ipv4Addr::from(ip))),
        )
    }

    fn cname(name: &str, ttl: u32, target: &str) -> Record {
        Record::from_rdata(
            Name::from_str(name).expect("name"),
            ttl,
            RData::CNAME(CNAME(Name::from_str(target).expect("name"))),
        )
    }

    #[test]
    fn plain_and_mixed_case() {
        let msg = response(
            "WWW.Example.COM.",
            ResponseCode::NoError,
            vec![a("www.example.com.", 60, [10, 0, 0, 1])],
        );
        let ans = decode(&msg).expect("decode");
        assert_eq!(ans.qname, "www.example.com");
        assert_eq!(ans.addrs, vec![(IpAddr::from([10, 0, 0, 1]), 60)]);
    }

    #[test]
    fn cname_chain_names_the_question() {
        let msg = response(
            "api.example.com.",
            ResponseCode::NoError,
            vec![
                cname("api.example.com.", 300, "edge.cdn.net."),
                cname("edge.cdn.net.", 30, "edge-7.cdn.net."),
                a("edge-7.cdn.net.", 120, [192, 0, 2, 7]),
                // Not on the chain: ignored.
                a("unrelated.example.org.", 120, [192, 0, 2, 99]),
            ],
        );
        let ans = decode(&msg).expect("decode");
        assert_eq!(ans.qname, "api.example.com");
        assert_eq!(ans.addrs, vec![(IpAddr::from([192, 0, 2, 7]), 30)]);
    }

    #[test]
    fn aaaa_and_loops() {
        let v6: std::net::Ipv6Addr = "fd00::5".parse().expect("ip");
        let msg = response(
            "a.test.",
            ResponseCode::NoError,
            vec![
                cname("a.test.", 10, "b.test."),
                cname("b.test.", 10, "a.test."),
                Record::from_rdata(
                    Name::from_str("b.test.").expect("n"),
                    50,
                    RData::AAAA(AAAA(v6)),
                ),
            ],
        );
        let ans = decode(&msg).expect("decode");
        assert_eq!(ans.addrs, vec![(IpAddr::V6(v6), 10)]);
    }

    #[test]
    fn cut_messages_keep_complete_records() {
        let msg = response(
            "x.test.",
            ResponseCode::NoError,
            vec![
                a("x.test.", 5, [10, 0, 0, 1]),
                a("x.test.", 5, [10, 0, 0, 2]),
            ],
        );
        let cut = &msg[..msg.len() - 3];
        let ans = decode(cut).expect("decode");
        assert_eq!(ans.addrs, vec![(IpAddr::from([10, 0, 0, 1]), 5)]);
    }

    #[test]
    fn refuses_garbage_and_failures() {
        assert!(matches!(decode(&[1, 2, 3]), Err(AnswerError::Malformed(_))));
        let msg = response("x.test.", ResponseCode::NXDomain, vec![]);
        assert_eq!(decode(&msg), Err(AnswerError::NotAnswer));
        let mut q = Message::new(1, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(
            Name::from_str("x.test.").expect("n"),
            RecordType::A,
        ));
        assert_eq!(
            decode(&q.to_vec().expect("enc")),
            Err(AnswerError::NotAnswer)
        );
        // Header only, question missing.
        let msg = response("x.test.", ResponseCode::NoError, vec![]);
        assert!(matches!(decode(&msg[..12]), Err(AnswerError::Malformed(_))));
    }
}
