//! Benchmark of the export path (prints figures; not a test): rendering /metrics (OpenMetrics
//! and Prometheus text, as each drain does) at 1k, 10k and 50k flow series, and building one
//! OTLP request (parse + convert + protobuf encode) at 10k.
//!
//! cargo run --release -p sockscope --example render_bench [-- 1000 10000 50000]

use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use prost::Message;
use sockscope::{
    export::{
        format::render,
        otlp::{Temporality, encode::Encoder, snapshot},
    },
    identity::{Identity, hosts::HostCache},
    series::{Budgets, budget::Overflow, expiry::Expiry, flows::FlowMetrics, labels::LabelOptions},
};
use sockscope_common::{FlowKey, FlowStats, PROTO_TCP, ROLE_CLIENT, v4_mapped};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
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
        let mut flows = FlowMetrics::register(
            &mut registry,
            LabelOptions {
                process: false,
                remote_ip: true,
            },
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
        flows.fold(
            &keys,
            &[],
            &mut identity,
            &mut Expiry::new(Duration::from_secs(300)),
        );
        let reps = if n > 20_000 { 30 } else { 100 };
        let mut times = Vec::with_capacity(reps);
        let mut exposition = render(&registry);
        for _ in 0..reps {
            let t = Instant::now();
            exposition = render(&registry);
            times.push(t.elapsed());
        }
        times.sort();
        let series = exposition
            .prometheus
            .lines()
            .filter(|l| l.starts_with("sockscope_tcp_"))
            .count();
        println!(
            "render {series:6} series: p50 {:7.2} ms  p99 {:7.2} ms  Prometheus text {:6} KiB, OpenMetrics {:6} KiB",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            exposition.prometheus.len() / 1024,
            exposition.openmetrics.len() / 1024,
        );
        if n == 10_000 {
            let encoder = Encoder::new(Vec::new(), Temporality::Cumulative, 1);
            let mut times = Vec::new();
            let mut bytes = 0;
            for _ in 0..50 {
                let t = Instant::now();
                let families = snapshot::parse(&exposition.prometheus);
                let pending = encoder.encode(&families, 2);
                bytes = pending.request.encode_to_vec().len();
                times.push(t.elapsed());
            }
            times.sort();
            println!(
                "OTLP request {series:6} series: p50 {:7.2} ms  p99 {:7.2} ms  protobuf {} KiB (parse + convert + encode; sending is on top)",
                percentile(&times, 0.5).as_secs_f64() * 1e3,
                percentile(&times, 0.99).as_secs_f64() * 1e3,
                bytes / 1024
            );
        }
    }
}
