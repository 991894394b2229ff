//! sock_ops: the TCP lifecycle of every connection established while sockscope runs.
//!
//! Callbacks used (include/uapi/linux/bpf.h, `BPF_SOCK_OPS_*`):
//! - TCP_CONNECT_CB: a client connect starts; enable the callbacks the mode needs.
//! - ACTIVE/PASSIVE_ESTABLISHED_CB: build the flow key, take the byte counters as baseline.
//!   The "opened" count waits for the next flush (the iterator's, at the next drain), so a short
//!   connection costs one flow update in all, at its close.
//! - STATE_CB to TCP_CLOSE, per-packet mode only: final flush; SYN_SENT -> CLOSE is a failed
//!   connect. In iterator mode the close comes from `tcp:tcp_destroy_sock` instead
//!   ([`crate::iter`]), two calls per connection where the state callback makes about eight.
//! - RTT_CB, per-packet mode only (no iterator on this kernel): runs in `tcp_ack()` after
//!   `bytes_acked` moved, so the sender's count is flushed without waiting for its next
//!   outgoing packet. It fires once per RTT window, not per ACK (`tcp_rtt_estimator()` calls it
//!   only when `snd_una` passes `rtt_seq`, net/ipv4/tcp_input.c), so cgroup_skb ingress also
//!   counts what each ACK acknowledges (`flow::ack_ingress`).
//!
//! Retransmits come from the kernel's own `total_retrans` at every flush, not from RETRANS_CB
//! (one callback per retransmitted segment): `__tcp_retransmit_skb()` adds to it exactly when
//! the callback would have fired (a transmit that succeeded), net/ipv4/tcp_output.c.

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_RTT_CB, BPF_SOCK_OPS_RTT_CB_FLAG, BPF_SOCK_OPS_STATE_CB,
        BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_TCP_CLOSE, BPF_TCP_SYN_SENT,
    },
    helpers::bpf_ktime_get_ns,
    macros::sock_ops,
    programs::SockOpsContext,
};
use sockscope_common::{
    AF_INET, CONFIG_TCP_ITER, Config, FlowStats, PHASE_ADOPTED, PHASE_CLOSED, PHASE_CONNECTING,
    PHASE_TRACKED, ROLE_CLIENT, ROLE_SERVER, SockState, dns::DNS_SYNC, health::TIMING_CONNECT,
    v4_mapped,
};

use core::ptr::{addr_of, read_volatile};

use crate::{
    flow::{TcpCounters, flush_tcp},
    health::{close_timings, timing_add},
    maps::{config, sock_state},
    packet::ip6_words,
};

/// Callbacks each mode needs beyond the ones the kernel always makes: none in iterator mode,
/// whose close comes from `tcp:tcp_destroy_sock` (`iter::sockscope_tcp_close`).
#[inline(always)]
fn cb_flags(cfg: &Config) -> i32 {
    if cfg.flags & CONFIG_TCP_ITER != 0 {
        0
    } else {
        (BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RTT_CB_FLAG) as i32
    }
}

#[sock_ops]
#[inline(always)]
pub fn sockscope_sockops(ctx: SockOpsContext) -> u32 {
    try_sockops(&ctx);
    // The return value only matters for ops that ask for a reply; 1 means "no opinion".
    1
}

#[inline(always)]
fn counters(ctx: &SockOpsContext) -> TcpCounters {
    let ops = unsafe { &*ctx.ops };
    TcpCounters {
        bytes_acked: ops.bytes_acked,
        bytes_received: ops.bytes_received,
        snd_una: ops.snd_una,
        rcv_nxt: ops.rcv_nxt,
        total_retrans: ops.total_retrans,
    }
}

/// The context's remote port is the network-order port shifted into the upper 16 bits on
/// little-endian (`sock_ops_convert_ctx_access()`, net/core/filter.c), i.e. `ntohl()` gives it.
#[inline(always)]
fn remote_port(ctx: &SockOpsContext) -> u16 {
    u32::from_be(ctx.remote_port()) as u16
}

#[inline(always)]
fn remote_addr(ctx: &SockOpsContext) -> [u8; 16] {
    if ctx.family() == AF_INET {
        v4_mapped(ctx.remote_ip4().to_ne_bytes())
    } else {
        // Context fields must be loaded one u32 at a time at constant offsets; copying the
        // array would make the compiler take a pointer into the context, which the verifier
        // refuses ("dereference of modified ctx ptr").
        let ops = ctx.ops;
        ip6_words(unsafe {
            [
                read_volatile(addr_of!((*ops).remote_ip6[0])),
                read_volatile(addr_of!((*ops).remote_ip6[1])),
                read_volatile(addr_of!((*ops).remote_ip6[2])),
                read_volatile(addr_of!((*ops).remote_ip6[3])),
            ]
        })
    }
}

#[inline(always)]
fn try_sockops(ctx: &SockOpsContext) {
    let op = ctx.op();
    let sk = unsafe { (*ctx.ops).__bindgen_anon_2.sk };
    if sk.is_null() {
        return;
    }
    let sk = sk.cast();
    match op {
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            let mut init = SockState::default();
            let Some(st) = (unsafe { sock_state(sk, Some(&mut init)) }) else {
                return;
            };
            // Retransmits from here on are this attempt's (SYN retransmits included);
            // tcp_disconnect() may have reset the counter of a socket connecting again.
            st.retrans_reported = unsafe { (*ctx.ops).total_retrans } as u64;
            st.phase = PHASE_CONNECTING;
            st.role = ROLE_CLIENT;
            st.remote_addr = remote_addr(ctx);
            st.port = remote_port(ctx);
            // The SYN leaves right after this callback (`tcp_connect()`, net/ipv4/tcp_output.c).
            st.since_ns = unsafe { bpf_ktime_get_ns() };
            let flags = cb_flags(&config());
            if flags != 0 {
                let _ = ctx.set_cb_flags(flags);
            }
        }
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB | BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            let mut init = SockState::default();
            let Some(st) = (unsafe { sock_state(sk, Some(&mut init)) }) else {
                return;
            };
            st.remote_addr = remote_addr(ctx);
            if op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
                st.role = ROLE_CLIENT;
                st.port = remote_port(ctx);
            } else {
                st.role = ROLE_SERVER;
                st.port = ctx.local_port() as u16;
            }
            // Baseline: handshake sequence numbers (SYN) are already in the counters. Plain
            // stores: nothing else flushes this socket before its phase says it is tracked.
            let c = counters(ctx);
            st.sent_reported = c.bytes_acked;
            st.sent_una = c.snd_una;
            st.received_reported = c.bytes_received;
            st.fin_out_seen = 0;
            st.fin_in_seen = 0;
            st.pending_open = 1;
            // DNS over TCP: each direction's first message begins where its data begins, right
            // after the SYN (RFC 7766), which `snd_nxt` / `rcv_nxt` point at now. Also resets
            // what an earlier connection of a reused socket left.
            let ops = unsafe { &*ctx.ops };
            st.dns_out = ops.snd_nxt;
            st.dns_in = c.rcv_nxt;
            st.dns_out_flags = DNS_SYNC;
            st.dns_in_flags = DNS_SYNC;
            let cfg = config();
            let now = unsafe { bpf_ktime_get_ns() };
            // connect()'s time, SYN retransmits included; a passive open has none to report.
            if op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB
                && st.phase == PHASE_CONNECTING
                && st.since_ns != 0
            {
                timing_add(&cfg, st, TIMING_CONNECT, now.saturating_sub(st.since_ns));
            }
            st.since_ns = now;
            st.phase = PHASE_TRACKED;
            let flags = cb_flags(&cfg);
            if flags != 0 {
                let _ = ctx.set_cb_flags(flags);
            }
            if cfg.flags & CONFIG_TCP_ITER == 0 {
                flush_tcp(&cfg, st, Some(&c), &FlowStats::default(), false);
            }
        }
        BPF_SOCK_OPS_RTT_CB => {
            let Some(st) = (unsafe { sock_state(sk, None) }) else {
                return;
            };
            if st.phase == PHASE_TRACKED || st.phase == PHASE_ADOPTED {
                flush_tcp(
                    &config(),
                    st,
                    Some(&counters(ctx)),
                    &FlowStats::default(),
                    false,
                );
            }
        }
        BPF_SOCK_OPS_STATE_CB => {
            // args: [old state, new state]
            if ctx.arg(1) != BPF_TCP_CLOSE {
                return;
            }
            let Some(st) = (unsafe { sock_state(sk, None) }) else {
                return;
            };
            let events = match st.phase {
                PHASE_TRACKED | PHASE_ADOPTED => FlowStats {
                    closed: 1,
                    ..Default::default()
                },
                PHASE_CONNECTING if ctx.arg(0) == BPF_TCP_SYN_SENT => FlowStats {
                    connect_failures: 1,
                    ..Default::default()
                },
                _ => return,
            };
            let cfg = config();
            flush_tcp(&cfg, st, Some(&counters(ctx)), &events, true);
            // `srtt_us` holds microseconds << 3 (`tcp_rtt_estimator()`); 0 before a measurement.
            let srtt = unsafe { (*ctx.ops).srtt_us };
            close_timings(&cfg, st, (srtt != 0).then_some(u64::from(srtt >> 3) * 1000));
            st.phase = PHASE_CLOSED;
        }
        _ => {}
    }
}
