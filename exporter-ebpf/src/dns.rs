//! DNS over UDP, client side: queries leaving a socket to port 53 and responses arriving from it.
//!
//! Per packet: the 12-byte header and the single question are parsed with bounded loops; the
//! name is copied into the key folded to lower case, so `WWW.Example.com` and `www.example.com`
//! count as one name. Queries are remembered by {socket cookie, transaction id} so the response
//! gives a latency sample; responses that carry answers are forwarded (rate-bounded) to the
//! agent's hostname cache through a ring buffer. Anything that does not parse is counted by
//! reason and otherwise ignored.

use aya_ebpf::{
    helpers::generated::{bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_skb_load_bytes},
    programs::SkBuffContext,
};
use sockscope_common::{
    Config, EVENT_DNS_MAP_FULL, EVENT_DNS_PENDING_FULL, EVENT_DNS_RINGBUF,
    dns::{
        DNS_ANSWER_HEADER, DNS_ANSWER_MAX, DNS_ERR_BAD_LABEL, DNS_ERR_COMPRESSION,
        DNS_ERR_LABEL_PAST_PACKET, DNS_ERR_MULTIPLE_QUESTIONS, DNS_ERR_NAME_TOO_LONG,
        DNS_ERR_NO_QUESTION, DNS_ERR_SHORT_HEADER, DNS_ERR_TRUNCATED_QUESTION,
        DNS_ERR_UNEXPECTED_QR, DNS_FORWARD_INTERVAL_NS, DNS_KIND_ERROR, DNS_KIND_LATENCY,
        DNS_KIND_QUERY, DNS_KIND_RESPONSE, DNS_LATENCY_BOUNDS_NS, DNS_NAME_MAX, DnsAnswerEvent,
        DnsKey, DnsStats, PendingKey,
    },
};

use crate::{
    maps::{
        DNS_0, DNS_1, DNS_ANSWERS, DNS_FORWARDED, DNS_PENDING, DNS_SCRATCH, DnsScratch, count_event,
    },
    packet::read,
};

/// Bytes of the question section copied: the longest name plus QTYPE and QCLASS.
const QUESTION_MAX: u32 = 255 + 4;
/// BPF_NOEXIST.
const NOEXIST: u64 = 1;
/// -E2BIG: what a full hash map returns on insert.
const E2BIG: i32 = -7;

/// What the header and question of a packet say.
struct Question {
    id: u16,
    rcode: u8,
    ancount: u16,
    /// Hash of {cgroup, folded name}, for the forwarding rate limit.
    name_hash: u64,
}

/// Counts one DNS packet whose DNS header starts `dns_off` bytes after the network header.
#[inline(always)]
pub fn dns_packet(ctx: &SkBuffContext, cfg: &Config, cgroup_id: u64, dns_off: u32, egress: bool) {
    let Some(s) = DNS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot of a live per-CPU array; programs do not nest on one CPU for the
    // same hook, and a nested run of the other direction would only garble a key it rebuilds.
    let s = unsafe { &mut *s };
    s.pending.key.cgroup_id = cgroup_id;
    s.pending.key._pad = 0;
    let q = match parse(ctx, s, dns_off, egress) {
        Ok(q) => q,
        Err(reason) => {
            clear_name(&mut s.pending.key);
            s.pending.key.kind = DNS_KIND_ERROR;
            s.pending.key.qtype = 0;
            s.pending.key.code = reason;
            dns_add(cfg, &s.pending.key, 0);
            return;
        }
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let pending = PendingKey {
        socket_cookie: unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) },
        id: q.id,
        _pad: [0; 6],
    };
    if egress {
        s.pending.key.kind = DNS_KIND_QUERY;
        s.pending.key.code = 0;
        dns_add(cfg, &s.pending.key, 0);
        s.pending.sent_ns = now;
        // NOEXIST: a retransmission keeps the first send time.
        if let Err(e) = DNS_PENDING.insert(&pending, &s.pending, NOEXIST)
            && e as i32 == E2BIG
        {
            count_event(EVENT_DNS_PENDING_FULL);
        }
        return;
    }

    s.pending.key.kind = DNS_KIND_RESPONSE;
    s.pending.key.code = q.rcode;
    dns_add(cfg, &s.pending.key, 0);
    if q.rcode == 0 && q.ancount > 0 {
        forward(
            ctx,
            cgroup_id,
            dns_off,
            q.name_hash ^ s.pending.key.qtype as u64,
            now,
        );
    }
    // SAFETY: the value is copied out before the entry is removed.
    let sent = unsafe { DNS_PENDING.get(&pending) }.map(|p| p.sent_ns);
    if let Some(sent) = sent
        // Only the side that removes the entry counts it: the agent's timeout sweep removes
        // entries too, and a query must end as either a latency sample or a timeout.
        && DNS_PENDING.remove(&pending).is_ok()
    {
        let latency = now.saturating_sub(sent);
        clear_name(&mut s.pending.key);
        s.pending.key.kind = DNS_KIND_LATENCY;
        s.pending.key.qtype = bucket(latency);
        dns_add(cfg, &s.pending.key, latency);
    }
}

/// Parses header and question into `s.pending.key` (name, qtype).
#[inline(always)]
fn parse(
    ctx: &SkBuffContext,
    s: &mut DnsScratch,
    dns_off: u32,
    egress: bool,
) -> Result<Question, u8> {
    let h: [u8; 12] = read(ctx, dns_off as usize).ok_or(DNS_ERR_SHORT_HEADER)?;
    let response = h[2] & 0x80 != 0;
    if response == egress {
        return Err(DNS_ERR_UNEXPECTED_QR);
    }
    match u16::from_be_bytes([h[4], h[5]]) {
        0 => return Err(DNS_ERR_NO_QUESTION),
        1 => {}
        _ => return Err(DNS_ERR_MULTIPLE_QUESTIONS),
    }
    let qoff = dns_off + 12;
    let n = clamp_len(ctx.skb.len().saturating_sub(qoff), QUESTION_MAX);
    // SAFETY: `raw` is 512 bytes and n is in 1..=259 (0 available bytes became a read of 259
    // that fails).
    let rc = unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), qoff, s.raw.as_mut_ptr().cast(), n) };
    if rc != 0 {
        return Err(DNS_ERR_LABEL_PAST_PACKET);
    }
    let n = n as usize;

    // Walk the labels. Each one takes at least two bytes of the at most 255, so 128 steps reach
    // the terminating zero of any legal name.
    let mut pos: usize = 0;
    let mut terminated = false;
    for _ in 0..128 {
        if pos >= n {
            return Err(DNS_ERR_LABEL_PAST_PACKET);
        }
        let len = s.raw[pos & 511];
        if len == 0 {
            terminated = true;
            break;
        }
        match len & 0xc0 {
            0 => {}
            0xc0 => return Err(DNS_ERR_COMPRESSION),
            _ => return Err(DNS_ERR_BAD_LABEL),
        }
        pos += len as usize + 1;
        if pos > 254 {
            return Err(DNS_ERR_NAME_TOO_LONG);
        }
    }
    if !terminated {
        return Err(DNS_ERR_NAME_TOO_LONG);
    }
    let name_len = pos + 1;
    if name_len + 4 > n {
        return Err(DNS_ERR_TRUNCATED_QUESTION);
    }
    let key = &mut s.pending.key;
    key.qtype = u16::from_be_bytes([s.raw[name_len & 511], s.raw[(name_len + 1) & 511]]);
    let name_hash = fold_name(&s.raw, name_len, key);
    Ok(Question {
        id: u16::from_be_bytes([h[0], h[1]]),
        rcode: h[3] & 0x0f,
        ancount: u16::from_be_bytes([h[6], h[7]]),
        name_hash,
    })
}

/// Copies the first `name_len` bytes of `raw` into `key.qname` eight at a time, folding ASCII
/// letters to lower case and zeroing the rest (stale bytes would split one name into several
/// keys). Label length bytes are at most 63, below 'A', so folding never touches them.
/// Returns a hash of {cgroup, name}.
#[inline(always)]
fn fold_name(raw: &[u8; 512], name_len: usize, key: &mut DnsKey) -> u64 {
    const WORDS: usize = DNS_NAME_MAX / 8;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ key.cgroup_id;
    let src = raw.as_ptr() as *const u64;
    let dst = key.qname.as_mut_ptr() as *mut u64;
    for w in 0..WORDS {
        let start = w * 8;
        // SAFETY: w < 32, so both words are inside their 512- and 256-byte arrays; the scratch
        // map value and the key are 8-byte aligned.
        let mut word = unsafe { core::ptr::read_unaligned(src.add(w)) };
        if start >= name_len {
            word = 0;
        } else if start + 8 > name_len {
            // Little endian: the first bytes in memory are the low ones.
            word &= (1u64 << ((name_len - start) * 8)) - 1;
        }
        word = to_lower(word);
        unsafe { core::ptr::write_unaligned(dst.add(w), word) };
        hash = (hash ^ word).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// ASCII upper case to lower case in all eight bytes at once.
#[inline(always)]
fn to_lower(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low7 = w & !HIGH;
    // Per byte, the high bit is set where the byte is >= 'A' / > 'Z'; no carry crosses bytes.
    let ge_a = low7 + ONES * (0x80 - b'A' as u64);
    let gt_z = low7 + ONES * (0x7f - b'Z' as u64);
    let upper = ge_a & !gt_z & !w & HIGH;
    w | (upper >> 2)
}

#[inline(always)]
fn clear_name(key: &mut DnsKey) {
    let dst = key.qname.as_mut_ptr() as *mut u64;
    for w in 0..DNS_NAME_MAX / 8 {
        // SAFETY: inside the 256-byte array.
        unsafe { core::ptr::write_unaligned(dst.add(w), 0) };
    }
}

/// Index of the latency bucket (`DNS_LATENCY_BOUNDS_NS.len()` for +Inf).
#[inline(always)]
fn bucket(latency_ns: u64) -> u16 {
    let mut i = 0u16;
    for bound in DNS_LATENCY_BOUNDS_NS {
        if latency_ns > bound {
            i += 1;
        }
    }
    i
}

/// `avail` limited to `1..=max`, written so the verifier sees both bounds on the register it
/// passes as a helper's size (a separate `== 0` check gets folded by LLVM into a comparison the
/// verifier cannot relate to the size). `avail == 0` maps to `max`: the read then fails.
#[inline(always)]
fn clamp_len(avail: u32, max: u32) -> u32 {
    let m = avail.wrapping_sub(1);
    let m = if m > max - 1 { max - 1 } else { m };
    m + 1
}

/// Adds one packet (and `sum_ns`) to `key` in the current generation's DNS map.
#[inline(always)]
fn dns_add(cfg: &Config, key: &DnsKey, sum_ns: u64) {
    let map = if cfg.generation & 1 == 0 {
        &DNS_0
    } else {
        &DNS_1
    };
    let one = DnsStats { count: 1, sum_ns };
    for _ in 0..2 {
        if let Some(v) = map.get_ptr_mut(key) {
            use core::intrinsics::{AtomicOrdering::Relaxed, atomic_xadd};
            // SAFETY: a live value of a shared map; atomic adds because every CPU writes it.
            unsafe {
                atomic_xadd::<u64, u64, { Relaxed }>(core::ptr::addr_of_mut!((*v).count), 1);
                if sum_ns != 0 {
                    atomic_xadd::<u64, u64, { Relaxed }>(
                        core::ptr::addr_of_mut!((*v).sum_ns),
                        sum_ns,
                    );
                }
            }
            return;
        }
        // NOEXIST: losing the race to another CPU's insert falls back to the add above.
        if map.insert(key, &one, NOEXIST).is_ok() {
            return;
        }
    }
    count_event(EVENT_DNS_MAP_FULL);
}

/// Sends the DNS message to the agent, at most once per interval per {cgroup, name, qtype}.
#[inline(always)]
fn forward(ctx: &SkBuffContext, cgroup_id: u64, dns_off: u32, hash: u64, now: u64) {
    // SAFETY: copied out at once.
    if let Some(last) = unsafe { DNS_FORWARDED.get(&hash) }.copied()
        && now.wrapping_sub(last) < DNS_FORWARD_INTERVAL_NS
    {
        return;
    }
    let len = clamp_len(ctx.skb.len().saturating_sub(dns_off), DNS_ANSWER_MAX as u32);
    let Some(mut entry) = DNS_ANSWERS.reserve::<DnsAnswerEvent>(0) else {
        count_event(EVENT_DNS_RINGBUF);
        return;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: the reserved record is DNS_ANSWER_HEADER + DNS_ANSWER_MAX bytes and len is in
    // 1..=DNS_ANSWER_MAX.
    let rc = unsafe {
        (*e).cgroup_id = cgroup_id;
        (*e).len = len;
        (*e)._pad = 0;
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            dns_off,
            (e as *mut u8).add(DNS_ANSWER_HEADER).cast(),
            len,
        )
    };
    if rc != 0 {
        entry.discard(0);
        return;
    }
    entry.submit(0);
    let _ = DNS_FORWARDED.insert(&hash, &now, 0);
}
