//! DNS over UDP and TCP, client side: queries leaving a socket to port 53 and responses arriving
//! from it.
//!
//! Per message: the 12-byte header and the single question are parsed with bounded loops; the
//! name is copied into the key folded to lower case, so `WWW.Example.com` and `www.example.com`
//! count as one name. Queries are remembered by {socket cookie, transaction id} so the response
//! gives a latency sample; responses that carry answers are forwarded (rate-bounded) to the
//! agent's hostname cache through a ring buffer. Anything that does not parse is counted by
//! reason and otherwise ignored. Over TCP a message may span segments: it is parsed from the
//! segment it begins in (`crate::skb` finds where the first begins, the 2-byte lengths lead from
//! one to the next), and one whose
//! question does not fit that segment is counted without its question ([`DNS_NAME_SPLIT`]).
//! A response's EDNS OPT record gives the extended RCODE when it follows the question directly
//! (no answer or authority records: the responses that carry BADVERS or BADCOOKIE).

use aya_ebpf::{
    helpers::generated::{
        bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_sk_fullsock, bpf_skb_load_bytes,
    },
    macros::cgroup_skb,
    maps::ProgramArray,
    programs::SkBuffContext,
};
use sockscope_common::{
    CONFIG_PROCESS_LABEL, Config, EVENT_DNS_ALLOC_FAILED, EVENT_DNS_CGROUP_LIMIT,
    EVENT_DNS_MAP_FULL, EVENT_DNS_OVERFLOW_FULL, EVENT_DNS_PENDING_EVICTED, EVENT_DNS_RINGBUF,
    EVENT_DNS_TCP_FRAMING_LOST, EVENT_DNS_TCP_UNPARSED, EVENT_DNS_UNMATCHED, SockState,
    dns::{
        DNS_ANSWER_HEADER, DNS_ANSWER_MAX, DNS_CB_HALF, DNS_CB_TCP, DNS_ERR_BAD_LABEL,
        DNS_ERR_COMPRESSION, DNS_ERR_LABEL_PAST_PACKET, DNS_ERR_MULTIPLE_QUESTIONS,
        DNS_ERR_NAME_TOO_LONG, DNS_ERR_NO_QUESTION, DNS_ERR_SHORT_HEADER, DNS_ERR_SPLIT_HEADER,
        DNS_ERR_TRUNCATED_QUESTION, DNS_ERR_UNEXPECTED_QR, DNS_FORWARD_INTERVAL_NS, DNS_HALF,
        DNS_KIND_ERROR, DNS_KIND_QUERY, DNS_KIND_RESPONSE, DNS_KIND_TIMEOUT, DNS_LATENCY_BOUNDS_NS,
        DNS_LOST, DNS_NAME_MAX, DNS_NAME_SPLIT, DNS_NO_LATENCY, DNS_TCP_MESSAGES_PER_SEGMENT,
        DNS_TCP_WALK, DNS_TYPE_OPT, DnsAnswerEvent, DnsKey, DnsStats, HASH_SEED, PENDING_BUSY,
        PendingSlot, hash_finish, hash_step, node_dns_slot, pending_slot, to_lower_word,
    },
};

use aya_ebpf::maps::{HashMap, PerCpuHashMap};

use crate::{
    maps::{
        DNS_0, DNS_1, DNS_ANSWERS, DNS_FORWARDED, DNS_NAMES, DNS_OVERFLOW_0, DNS_OVERFLOW_1,
        DNS_PENDING, DNS_PROGRAMS_EGRESS, DNS_PROGRAMS_INGRESS, DNS_ROOM_0, DNS_ROOM_1,
        DNS_SCRATCH, DnsScratch, NODE_DNS, Upsert, add_u64, config, count_event, launder,
        room_left, room_take, sock_state, upsert,
    },
    packet::read,
};

/// Bytes of the question section copied: the longest name plus QTYPE and QCLASS.
const QUESTION_MAX: u32 = 255 + 4;

/// What the header and question of a packet say.
struct Question {
    id: u16,
    rcode: u8,
    ancount: u16,
    qtype: u16,
    name_hash: u64,
}

/// The DNS program of egress, tail-called by `sockscope_egress` (see `crate::skb`).
#[cgroup_skb(egress)]
pub fn sockscope_dns_egress(ctx: SkBuffContext) -> i32 {
    dns_messages(&ctx, true, &DNS_PROGRAMS_EGRESS);
    // Always allow: 0 drops the packet.
    1
}

/// The DNS program of ingress, tail-called by `sockscope_ingress`.
#[cgroup_skb(ingress)]
pub fn sockscope_dns_ingress(ctx: SkBuffContext) -> i32 {
    dns_messages(&ctx, false, &DNS_PROGRAMS_INGRESS);
    1
}

/// Counts the DNS message the packet program (`crate::skb`) left in the control buffer:
/// `cb[0]` [`DNS_CB_TCP`] over TCP (its low bits: how many messages of this segment came
/// before; with [`DNS_CB_HALF`], the length's first byte, which ended the previous segment),
/// `cb[1]` where the message begins (UDP: its header; TCP: its 2-byte length, or its second
/// byte),
/// `cb[2]` (UDP) where it ends or (TCP) the sequence number of packet offset 0, `cb[3..5]` the
/// owner's cgroup id. Over TCP it then moves the socket's framing on past the message and, if
/// the next begins in this segment too, points the buffer at it and tail-calls itself: one
/// message's parse per program run, for the verifier.
#[inline(always)]
fn dns_messages(ctx: &SkBuffContext, egress: bool, me: &ProgramArray) {
    // SAFETY: the packet's context; its control buffer was written by the packet program.
    let cb = unsafe { &mut (*ctx.skb.skb).cb };
    let (flags, off, end_or_base) = (cb[0], cb[1], cb[2]);
    let cgroup_id = u64::from(cb[3]) | u64::from(cb[4]) << 32;
    let len = ctx.skb.len();
    let (header, end) = if flags & DNS_CB_TCP != 0 {
        let Some(m) = tcp_message(ctx, flags, off, len) else {
            // One byte of the length here, the other in the next segment.
            if let Some(st) = tcp_state(ctx) {
                keep_half(ctx, st, egress, off, end_or_base);
            }
            return;
        };
        m
    } else {
        (off, end_or_base)
    };
    if header > 0x3ffff || end > 0x3ffff {
        // Beyond any GSO packet (BIG TCP's): its framing is then lost, and counted so.
        return;
    }
    // One call site, and offsets of one known range (through memory) whichever way they were
    // found: the parser is inlined, and verified, once.
    let (Some(header), Some(end)) = (launder(header, 0x3ffff), launder(end, 0x3ffff)) else {
        return;
    };
    dns_packet(ctx, &config(), cgroup_id, header, end, egress);
    // Read again rather than kept: a value live across the parse would have the verifier walk
    // the parse once for each of its variants (TCP or UDP, a socket state or none).
    let cb = unsafe { &mut (*ctx.skb.skb).cb };
    let (flags, off, base) = (cb[0], cb[1], cb[2]);
    let len = ctx.skb.len();
    if flags & DNS_CB_TCP == 0 {
        return;
    }
    let index = flags & 0xff;
    let Some((_, mut next)) = tcp_message(ctx, flags, off, len) else {
        return;
    };
    let Some(st) = tcp_state(ctx) else {
        return;
    };
    if next < len && index + 1 >= DNS_TCP_MESSAGES_PER_SEGMENT {
        // No tail call left for the rest of this segment: step over them, uncounted.
        for _ in 0..DNS_TCP_WALK {
            let Some(l) = message_length(ctx, next, len) else {
                break;
            };
            count_event(EVENT_DNS_TCP_UNPARSED);
            next += 2 + l;
        }
        if next + 1 < len {
            // More than we walk.
            lose(st, egress);
            return;
        }
    }
    if next + 1 == len {
        keep_half(ctx, st, egress, next, base);
        return;
    }
    // Past any length the packet program put together from a kept byte.
    if egress {
        st.dns_out = base.wrapping_add(next);
        st.dns_out_flags &= !DNS_HALF;
    } else {
        st.dns_in = base.wrapping_add(next);
        st.dns_in_flags &= !DNS_HALF;
    }
    if next >= len {
        // The next message begins in a later segment.
        return;
    }
    cb[0] = DNS_CB_TCP | (index + 1);
    cb[1] = next;
    // SAFETY: the packet's context, as the program got it.
    unsafe { me.tail_call(ctx, 0) };
}

/// Where the TCP message the control buffer points at (`flags` from `cb[0]`, its length at
/// `off`) has its header and where it ends; None if its length is not wholly in this segment.
#[inline(always)]
fn tcp_message(ctx: &SkBuffContext, flags: u32, off: u32, len: u32) -> Option<(u32, u32)> {
    if flags & DNS_CB_HALF != 0 {
        // The length's first byte ended the previous segment; its second begins this one.
        if off >= len {
            return None;
        }
        let lo = ctx.load::<u8>(off as usize).ok()?;
        let l = (flags >> 8 & 0xff) << 8 | u32::from(lo);
        return Some((off + 1, off + 1 + l));
    }
    let l = message_length(ctx, off, len)?;
    Some((off + 2, off + 2 + l))
}

/// The 2-byte length of the DNS message at `off` of a TCP segment `len` bytes long; None if it
/// does not lie wholly in this segment.
#[inline(always)]
fn message_length(ctx: &SkBuffContext, off: u32, len: u32) -> Option<u32> {
    if off.checked_add(2)? > len {
        return None;
    }
    let l = ctx.load::<[u8; 2]>(off as usize).ok()?;
    Some(u32::from(u16::from_be_bytes(l)))
}

/// The segment ends one byte into the next message's length (at `off`; `base` is the sequence
/// number of packet offset 0): keeps that byte for the packet program to put the length
/// together with the next segment's first.
#[inline(always)]
fn keep_half(ctx: &SkBuffContext, st: &mut SockState, egress: bool, off: u32, base: u32) {
    let Ok(byte) = ctx.load::<u8>(off as usize) else {
        lose(st, egress);
        return;
    };
    let at = base.wrapping_add(off);
    if egress {
        st.dns_half_out = byte;
        st.dns_out = at;
        st.dns_out_flags |= DNS_HALF;
    } else {
        st.dns_half_in = byte;
        st.dns_in = at;
        st.dns_in_flags |= DNS_HALF;
    }
}

/// The state of the socket this packet belongs to (TCP, or UDP for the process of a query).
#[inline(always)]
fn tcp_state(ctx: &SkBuffContext) -> Option<&'static mut SockState> {
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return None;
    }
    let sk = unsafe { bpf_sk_fullsock(sk) };
    if sk.is_null() {
        return None;
    }
    // SAFETY: a full socket of this packet.
    unsafe { sock_state(sk.cast(), None) }
}

/// Gives up the framing of one direction of a DNS over TCP connection.
#[inline(always)]
fn lose(st: &mut SockState, egress: bool) {
    if egress {
        st.dns_out_flags |= DNS_LOST;
    } else {
        st.dns_in_flags |= DNS_LOST;
    }
    count_event(EVENT_DNS_TCP_FRAMING_LOST);
}

/// Counts one DNS message whose header starts `dns_off` bytes after the network header and
/// that ends at `msg_end` (the packet's end over UDP; over TCP the message's own length, which
/// may lie beyond this segment).
#[inline(always)]
fn dns_packet(
    ctx: &SkBuffContext,
    cfg: &Config,
    cgroup_id: u64,
    dns_off: u32,
    msg_end: u32,
    egress: bool,
) {
    let Some(s) = DNS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot of a live per-CPU array. A program of the other direction nesting
    // on this CPU (softirq over process context) could overwrite the buffer mid-parse; the
    // worst outcome is one misfiled name, never an out-of-bounds access.
    let s = unsafe { &mut *s };
    let mut key = DnsKey {
        cgroup_id,
        ..Default::default()
    };
    let q = match parse(ctx, s, dns_off, msg_end, egress) {
        Ok(q) => q,
        Err(reason) => {
            key.kind = DNS_KIND_ERROR;
            key.code = reason;
            dns_add(cfg, &key, 0);
            return;
        }
    };
    key.name_hash = q.name_hash;
    key.qtype = q.qtype;
    if q.name_hash == DNS_NAME_SPLIT {
        // No question: nothing to remember, match or forward.
        key.kind = if egress {
            DNS_KIND_QUERY
        } else {
            key.code = q.rcode;
            key.bucket = DNS_NO_LATENCY;
            DNS_KIND_RESPONSE
        };
        dns_add(cfg, &key, 0);
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
    let Some(slot) = DNS_PENDING.get_ptr_mut(pending_slot(cookie, q.id)) else {
        return;
    };
    // SAFETY: an element of a live array map; shared with other CPUs and the agent, so the
    // ownership word is only changed with atomics.
    let slot = unsafe { &mut *slot };
    if egress {
        key.kind = DNS_KIND_QUERY;
        if cfg.flags & CONFIG_PROCESS_LABEL != 0
            && let Some(st) = tcp_state(ctx)
        {
            // Looked up after the parse, not kept across it (see dns_messages).
            key.comm = st.comm;
        }
        if dns_add(cfg, &key, 0) != Placed::Folded {
            // Names are registered by queries that keep their name: a response repeats its
            // query's name, and the agent reads names right after the queries that use them.
            register_name(s, q.name_hash);
        }
        remember(cfg, slot, cookie, q.id, &key, now);
        return;
    }

    key.kind = DNS_KIND_RESPONSE;
    key.code = q.rcode;
    key.bucket = DNS_NO_LATENCY;
    let mut latency = 0;
    let sent = unsafe { core::ptr::read_volatile(&slot.sent_ns) };
    // A response belongs to a query only if the same socket sent that query with the same
    // transaction id and question (RFC 5452 9.1): anything else, spoofed or late, names nothing.
    // Only the side whose swap succeeds ends the query: the agent's timeout sweep and newer
    // queries swap too, and a query must end as one latency sample or one timeout.
    let matched = slot.socket_cookie == cookie
        && slot.id == q.id
        && slot.key.name_hash == q.name_hash
        && slot.key.qtype == q.qtype
        && take(slot, sent);
    if matched {
        latency = now.saturating_sub(sent);
        key.bucket = bucket(latency);
    }
    let placed = dns_add(cfg, &key, latency);
    if q.rcode != 0 || q.ancount == 0 {
        return;
    }
    if !matched {
        count_event(EVENT_DNS_UNMATCHED);
        return;
    }
    // Forward answers on the first response of a key in this drain interval (and then at most
    // once per DNS_FORWARD_INTERVAL_NS per {cgroup, name, qtype}): repeats of a hot name cost
    // no ring buffer work at all. A folded key has no "first": the rate limit alone decides.
    if placed != Placed::Added {
        let limit_key = q.name_hash ^ cgroup_id.rotate_left(17) ^ ((q.qtype as u64) << 48);
        forward(ctx, cgroup_id, dns_off, msg_end, limit_key, now);
    }
}

/// Swaps the slot's `sent_ns` from `expected` to `new`; true if this call made the swap.
#[inline(always)]
fn swap(slot: &mut PendingSlot, expected: u64, new: u64) -> bool {
    use core::intrinsics::{AtomicOrdering::SeqCst, atomic_cxchg};
    // SAFETY: an aligned u64 of a map value.
    let (_, ok) =
        unsafe { atomic_cxchg::<u64, { SeqCst }, { SeqCst }>(&mut slot.sent_ns, expected, new) };
    ok
}

/// Takes the query sent at `sent` out of its slot (response or eviction); true if this call
/// ended it.
#[inline(always)]
fn take(slot: &mut PendingSlot, sent: u64) -> bool {
    sent != 0 && sent != PENDING_BUSY && swap(slot, sent, 0)
}

/// Records a query in its slot. A retransmission (same socket and id, still pending) keeps the
/// first send time. A different query in the slot is taken over: counted as a timeout if it is
/// older than the DNS timeout, else as an eviction.
#[inline(always)]
fn remember(cfg: &Config, slot: &mut PendingSlot, cookie: u64, id: u16, key: &DnsKey, now: u64) {
    let sent = unsafe { core::ptr::read_volatile(&slot.sent_ns) };
    if sent == PENDING_BUSY {
        // Another CPU is filling it this instant.
        return;
    }
    if sent != 0 {
        if slot.socket_cookie == cookie && slot.id == id {
            return;
        }
        let old = slot.key;
        // Claim it from its current query; losing means the response or the sweep ended that
        // query a moment ago, or another writer won: leave the slot to them.
        if !swap(slot, sent, PENDING_BUSY) {
            return;
        }
        if now.saturating_sub(sent) >= cfg.dns_timeout_ms as u64 * 1_000_000 {
            dns_add(
                cfg,
                &DnsKey {
                    kind: DNS_KIND_TIMEOUT,
                    ..old
                },
                0,
            );
        } else {
            count_event(EVENT_DNS_PENDING_EVICTED);
        }
    } else if !swap(slot, 0, PENDING_BUSY) {
        return;
    }
    slot.socket_cookie = cookie;
    slot.id = id;
    slot.key = *key;
    use core::intrinsics::{AtomicOrdering::SeqCst, atomic_xchg};
    // Publish last, with a full barrier, so whoever sees `sent_ns` sees the fields.
    // SAFETY: an aligned u64 of a map value.
    unsafe { atomic_xchg::<u64, { SeqCst }>(&mut slot.sent_ns, now) };
}

/// Parses header and question; the folded name is left in `s.name` (its length in
/// `s.name_len`) for [`register_name`].
#[inline(always)]
fn parse(
    ctx: &SkBuffContext,
    s: &mut DnsScratch,
    dns_off: u32,
    msg_end: u32,
    egress: bool,
) -> Result<Question, u8> {
    let seg_end = ctx.skb.len();
    // Over TCP the message may go on in later segments: what is missing here is not an error.
    let split = msg_end > seg_end;
    let end = if split { seg_end } else { msg_end };
    if dns_off.saturating_add(12) > end {
        if split && egress {
            // A query whose header goes on in the next segment: counted without its question.
            return Ok(Question {
                id: 0,
                rcode: 0,
                ancount: 0,
                qtype: 0,
                name_hash: DNS_NAME_SPLIT,
            });
        }
        // A response cut so has its RCODE in the next segment: it cannot be counted by it.
        return Err(if split {
            DNS_ERR_SPLIT_HEADER
        } else {
            DNS_ERR_SHORT_HEADER
        });
    }
    if dns_off > 0xffff {
        return Err(DNS_ERR_SHORT_HEADER);
    }
    // Known bounds keep the offsets derived from it few to verify (a GSO packet is at most
    // 64 KiB; BIG TCP's larger ones lose their later messages' headers, as a short header).
    let dns_off = launder(dns_off, 0xffff).ok_or(DNS_ERR_SHORT_HEADER)?;
    // A helper call rather than a direct read: a TCP message may begin anywhere in a large
    // (GSO) packet, beyond the offsets the verifier allows direct reads at.
    let h: [u8; 12] = ctx
        .load(dns_off as usize)
        .map_err(|_| DNS_ERR_SHORT_HEADER)?;
    let response = h[2] & 0x80 != 0;
    if response == egress {
        return Err(DNS_ERR_UNEXPECTED_QR);
    }
    match u16::from_be_bytes([h[4], h[5]]) {
        0 => return Err(DNS_ERR_NO_QUESTION),
        1 => {}
        _ => return Err(DNS_ERR_MULTIPLE_QUESTIONS),
    }
    let without_question = Question {
        id: u16::from_be_bytes([h[0], h[1]]),
        rcode: h[3] & 0x0f,
        ancount: 0,
        qtype: 0,
        name_hash: DNS_NAME_SPLIT,
    };
    let qoff = dns_off + 12;
    if split && qoff >= end {
        return Ok(without_question);
    }
    let n = clamp_len(end.saturating_sub(qoff), QUESTION_MAX);
    // SAFETY: `raw` is 512 bytes and n is in 1..=259 (0 available bytes became a read of 259
    // that fails).
    let rc = unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), qoff, s.raw.as_mut_ptr().cast(), n) };
    if rc != 0 {
        return if split {
            Ok(without_question)
        } else {
            Err(DNS_ERR_LABEL_PAST_PACKET)
        };
    }
    let n = n as usize;

    // Walk the labels. Each one takes at least two bytes of the at most 255, so 128 steps reach
    // the terminating zero of any legal name.
    let mut pos: usize = 0;
    let mut terminated = false;
    for _ in 0..128 {
        if pos >= n {
            return if split {
                Ok(without_question)
            } else {
                Err(DNS_ERR_LABEL_PAST_PACKET)
            };
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
        return if split {
            Ok(without_question)
        } else {
            Err(DNS_ERR_TRUNCATED_QUESTION)
        };
    }
    let qtype = u16::from_be_bytes([s.raw[name_len & 511], s.raw[(name_len + 1) & 511]]);
    // Launder the length through memory: the label walk can end in any of ~128 states with
    // different length bounds, and the word loops below would be verified once for each.
    s.name_len = name_len as u32;
    // SAFETY: a field of this CPU's scratch value, just written.
    let name_len = unsafe { core::ptr::read_volatile(&s.name_len) } as usize;
    if name_len == 0 || name_len > DNS_NAME_MAX - 1 {
        return Err(DNS_ERR_NAME_TOO_LONG);
    }
    let words = name_len.div_ceil(8);
    let name_hash = fold_name(s, name_len, words);
    let mut rcode = h[3] & 0x0f;
    let ancount = u16::from_be_bytes([h[6], h[7]]);
    // The extended RCODE of EDNS (RFC 6891 6.1.3): the OPT record's TTL carries its upper 8
    // bits. Read where the OPT record directly follows the question (no answer or authority
    // records), as in the error responses that use extended codes.
    if response && ancount == 0 && h[8] == 0 && h[9] == 0 && (h[10] != 0 || h[11] != 0) {
        let opt = qoff as usize + name_len + 4;
        if opt + 11 <= end as usize
            && let Some(o) = read::<[u8; 11]>(ctx, opt)
            && o[0] == 0
            && u16::from_be_bytes([o[1], o[2]]) == DNS_TYPE_OPT
        {
            rcode |= o[5].min(15) << 4;
        }
    }
    Ok(Question {
        id: u16::from_be_bytes([h[0], h[1]]),
        rcode,
        ancount,
        qtype,
        name_hash,
    })
}

/// Copies the `name_len` bytes of the name from `s.raw` into `s.name`, folded to lower case
/// (the last word zero-masked), and returns the hash of those `words` words. Only the words the
/// name covers are touched: most names are a few words of the 32. Label length bytes are at most
/// 63, below 'A', so folding never touches them.
#[inline(always)]
fn fold_name(s: &mut DnsScratch, name_len: usize, words: usize) -> u64 {
    let src = s.raw.as_ptr() as *const u64;
    let dst = s.name.wire.as_mut_ptr() as *mut u64;
    let mut h = HASH_SEED;
    for w in 0..DNS_NAME_MAX / 8 {
        if w >= words {
            break;
        }
        // SAFETY: w < 32: inside both arrays (512 and 256 bytes), 8-byte aligned map value.
        let mut word = unsafe { core::ptr::read_unaligned(src.add(w)) };
        let end = w * 8 + 8;
        if end > name_len {
            // Little endian: the first bytes in memory are the low ones.
            word &= u64::MAX >> ((end - name_len) * 8);
        }
        let word = to_lower_word(word);
        unsafe { core::ptr::write_unaligned(dst.add(w), word) };
        h = hash_step(h, word);
    }
    hash_finish(h)
}

/// Index of the latency bucket (`DNS_LATENCY_BOUNDS_NS.len()` for +Inf).
#[inline(always)]
fn bucket(latency_ns: u64) -> u8 {
    let mut i = 0u8;
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

/// Makes sure the name parsed last (in `s.name`) is in `DNS_NAMES` under `name_hash`.
#[inline(always)]
fn register_name(s: &mut DnsScratch, name_hash: u64) {
    let seen = (name_hash >> 58) as usize & 63;
    // SAFETY: looked up and copied at once.
    if s.seen[seen] != name_hash && unsafe { DNS_NAMES.get(&name_hash) }.is_none() {
        // First sight of this name (or evicted): zero the words past it and store it.
        // SAFETY: this CPU's scratch value; read as in `parse`.
        let words = (unsafe { core::ptr::read_volatile(&s.name_len) } as usize).div_ceil(8);
        let dst = s.name.wire.as_mut_ptr() as *mut u64;
        for w in 0..DNS_NAME_MAX / 8 {
            if w >= words {
                // SAFETY: w < 32: inside the 256-byte array.
                unsafe { core::ptr::write_unaligned(dst.add(w), 0) };
            }
        }
        let _ = DNS_NAMES.insert(&name_hash, &s.name, 0);
    }
    s.seen[seen] = name_hash;
}

/// Where [`dns_add`] put a count.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placed {
    /// A new key of the DNS map (its first packet in this drain interval).
    Created,
    /// An existing key of the DNS map.
    Added,
    /// The cgroup's DNS overflow entry or the node-wide one: name and type not kept.
    Folded,
}

/// Adds one packet (and `sum_ns`) to `key` in the current generation's DNS maps: the DNS map
/// if the key is there or fits (and its cgroup has room left), else the cgroup's overflow
/// entry (name and type dropped), else the node-wide entry. Never drops the count.
#[inline(always)]
fn dns_add(cfg: &Config, key: &DnsKey, sum_ns: u64) -> Placed {
    if cfg.generation & 1 == 0 {
        dns_add_into(&DNS_0, &DNS_ROOM_0, &DNS_OVERFLOW_0, cfg, key, sum_ns)
    } else {
        dns_add_into(&DNS_1, &DNS_ROOM_1, &DNS_OVERFLOW_1, cfg, key, sum_ns)
    }
}

#[inline(always)]
fn dns_add_into(
    map: &PerCpuHashMap<DnsKey, DnsStats>,
    room: &HashMap<u64, u64>,
    overflow: &PerCpuHashMap<DnsKey, DnsStats>,
    cfg: &Config,
    key: &DnsKey,
    sum_ns: u64,
) -> Placed {
    let init = DnsStats { count: 1, sum_ns };
    let add = |v: *mut DnsStats| {
        // SAFETY: `v` is this CPU's slot of a live map value.
        unsafe {
            add_u64(core::ptr::addr_of_mut!((*v).count), 1);
            add_u64(core::ptr::addr_of_mut!((*v).sum_ns), sum_ns);
        }
    };
    if let Some(v) = map.get_ptr_mut(key) {
        add(v);
        return Placed::Added;
    }
    let reason = if room_left(room, key.cgroup_id, cfg.max_dns_per_cgroup) {
        match upsert(map, key, &init, add) {
            Upsert::Created => {
                room_take(room, key.cgroup_id);
                return Placed::Created;
            }
            Upsert::Added => return Placed::Added,
            Upsert::Full => EVENT_DNS_MAP_FULL,
            Upsert::NoMemory => EVENT_DNS_ALLOC_FAILED,
        }
    } else {
        EVENT_DNS_CGROUP_LIMIT
    };
    count_event(reason);
    let folded = DnsKey {
        name_hash: 0,
        qtype: 0,
        comm: [0; 16],
        ..*key
    };
    if !upsert(overflow, &folded, &init, add).placed() {
        count_event(EVENT_DNS_OVERFLOW_FULL);
        if let Some(v) = NODE_DNS.get_ptr_mut(node_dns_slot(key.kind, key.code, key.bucket)) {
            add(v);
        }
    }
    Placed::Folded
}

/// Sends the DNS message to the agent, at most once per interval per {cgroup, name, qtype}.
#[inline(always)]
fn forward(ctx: &SkBuffContext, cgroup_id: u64, dns_off: u32, msg_end: u32, hash: u64, now: u64) {
    // SAFETY: copied out at once.
    if let Some(last) = unsafe { DNS_FORWARDED.get(&hash) }.copied()
        && now.wrapping_sub(last) < DNS_FORWARD_INTERVAL_NS
    {
        return;
    }
    // What of the message this packet holds (a TCP response's later segments are not read:
    // the answers they carry do not reach the hostname cache).
    let end = ctx.skb.len().min(msg_end);
    let len = clamp_len(end.saturating_sub(dns_off), DNS_ANSWER_MAX as u32);
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
