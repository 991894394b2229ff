//! Benchmark of the export path (prints figures; not a test) at 1k, 10k and 50k flow series:
//! taking the snapshot a drain publishes, rendering it as Prometheus text and as OpenMetrics
//! (each on the first scrape of that format after a drain), and at 10k building one OTLP
//! request (convert + protobuf encode).
//!
//! cargo run --release -p sockscope --example render_bench [-- 1000 10000 50000]

use std::time::{Duration, Instant};

use sockscope::{
    export::{
        otlp::{Temporality, encode::Encoder},
        text,
    },
    identity::{Identity, hosts::HostCache, labelled::Labeller, labels::LabelOptions},
    series::{Budgets, budget::Overflow, expiry::Expiry, flows::FlowMetrics, registry::Registry},
};
use sockscope_common::{FlowKey, FlowStats, PROTO_TCP, ROLE_CLIENT, v4_mapped};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Heap in use (glibc's count of allocated bytes), to attribute memory to each stage.
fn heap_bytes() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    unsafe { libc::mallinfo2().uordblks }
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000, 50_000]
    } else {
        sizes
    };
    let dir = std::env::temp_dir().join("sockscope-render-bench");
    let _ = std::fs::create_dir_all(&dir);
    for n in sizes {
        let mut registry = Registry::default();
        let mut labeller = Labeller::new(LabelOptions {
            process: false,
            remote_ip: true,
        });
        let mut flows = FlowMetrics::register(
            &mut registry,
            // Every flow has its own peer address: no budget folds any of them.
            Budgets {
                remote_ips: usize::MAX,
                ..Budgets::default()
            },
            Overflow::default(),
        );
        let mut identity = Identity::new(
            dir.clone(),
            dir.clone(),
            None,
            HostCache::new(16, Duration::ZERO, Duration::from_secs(1)),
        );
        // One TCP flow per peer address gives two series (sent, received bytes).
        let keys: Vec<(FlowKey, FlowStats)> = (0..n / 2)
            .map(|i| {
                (
                    FlowKey {
                        cgroup_id: 1 + (i % 50) as u64,
                        remote_addr: v4_mapped([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
                        comm: [0; 16],
                        port: 443,
                        role: ROLE_CLIENT,
                        proto: PROTO_TCP,
                        _pad: 0,
                    },
                    FlowStats {
                        sent_bytes: 1_000 + i as u64,
                        received_bytes: 10_000 + i as u64,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let before = heap_bytes();
        flows.fold(
            labeller.flows(&keys, &[], &mut identity, Instant::now()),
            &mut Expiry::new(Duration::from_secs(300)),
        );
        let reps = if n > 20_000 { 30 } else { 100 };
        let measure = |f: &mut dyn FnMut()| {
            let mut times: Vec<Duration> = (0..reps)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed()
                })
                .collect();
            times.sort();
            (
                percentile(&times, 0.5).as_secs_f64() * 1e3,
                percentile(&times, 0.99).as_secs_f64() * 1e3,
            )
        };
        let stored = heap_bytes().saturating_sub(before);
        let mut snapshot = registry.snapshot();
        let snapped = heap_bytes().saturating_sub(before + stored);
        let (s50, s99) = measure(&mut || snapshot = registry.snapshot());
        let series = snapshot.len();
        let (mut prom, mut om) = (String::new(), String::new());
        let (p50, p99) = measure(&mut || prom = text::prometheus(&snapshot));
        let (o50, o99) = measure(&mut || om = text::openmetrics(&snapshot));
        println!(
            "{series:6} series: snapshot p50 {s50:6.2} ms p99 {s99:6.2} ms | Prometheus text p50 {p50:6.2} ms p99 {p99:6.2} ms ({} KiB) | OpenMetrics p50 {o50:6.2} ms p99 {o99:6.2} ms ({} KiB)",
            prom.len() / 1024,
            om.len() / 1024,
        );
        println!(
            "{series:6} series: heap per series: {} B counters and labels (budgets, expiry index included), {} B snapshot, {} B per rendered format",
            stored / series.max(1),
            snapped / series.max(1),
            prom.len() / series.max(1),
        );
        if n == 10_000 {
            let encoder = Encoder::new(Vec::new(), Temporality::Cumulative, 1);
            let mut bytes = 0;
            let (b50, b99) = measure(&mut || {
                let pending = encoder.encode(&snapshot, 2);
                bytes = pending.body.len();
            });
            println!(
                "OTLP request {series:6} series: p50 {b50:6.2} ms p99 {b99:6.2} ms, protobuf {} KiB (protobuf written from the snapshot; sending is on top)",
                bytes / 1024
            );
        }
    }
}
