//! OTLP metrics push: what /metrics shows, sent to a collector over gRPC or HTTP/protobuf on
//! its own schedule.
//!
//! Each export reads the snapshot the last drain published (so it never touches the kernel
//! maps or waits for a drain), encodes it, and sends one request with a timeout. A failure is
//! retried with backoff within the interval, then given up until the next one, which carries
//! fresh totals (cumulative) or the whole gap since the last delivery (delta): memory holds one
//! request at most, however long the collector is away.
//!
//! A collector that answers "retry" with a throttling hint (HTTP `Retry-After`, gRPC
//! `RetryInfo`) is not sent to again before the hint has passed, within the interval or across
//! it.
//!
//! Settings are resolved in [`crate::config::otlp`].

pub mod encode;
pub mod transport;

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use tracing::{debug, info, warn};

use encode::{Encoder, kv};
use transport::{Failure, Transport};

use super::prometheus::Shared;
pub use crate::config::otlp::{Compression, Options, Protocol, Temporality};

// The counters live with the other self-metrics; this exporter counts into them.
pub use crate::series::agent::{OTLP_FAILURE_REASONS as FAILURE_REASONS, OtlpStats as Stats};

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Runs the exporter until the process ends. `started`: when the agent started.
pub async fn run(options: Options, shared: Arc<Shared>, stats: Arc<Stats>, started: SystemTime) {
    let mut transport = match Transport::new(&options) {
        Ok(t) => t,
        Err(e) => {
            warn!("OTLP export off: {e}");
            return;
        }
    };
    info!(endpoint = %options.endpoint, protocol = ?options.protocol, interval = ?options.interval, temporality = ?options.temporality, compression = ?options.compression, tls = ?options.tls, "exporting metrics over OTLP");
    let resource: Vec<KeyValue> = options.resource.iter().map(|(k, v)| kv(k, v)).collect();
    let mut encoder = Encoder::new(resource, options.temporality, unix_ns(started));
    let mut ticks = tokio::time::interval(options.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut quiet_since: Option<Instant> = None;
    // The collector's throttling hint: nothing is sent before it.
    let mut not_before: Option<Instant> = None;
    loop {
        ticks.tick().await;
        let tick = Instant::now();
        if let Some(t) = not_before {
            if tick < t {
                debug!(
                    "OTLP export skipped: the collector asked to wait {:?} more",
                    t - tick
                );
                continue;
            }
            not_before = None;
        }
        let snapshot = shared.current().snapshot.clone();
        let mut backoff = Duration::from_secs(1);
        loop {
            let mut retry_after: Option<Duration> = None;
            let mut pending = encoder.encode(&snapshot, unix_ns(SystemTime::now()));
            let request = std::mem::take(&mut pending.body);
            let size = request.len() as u64;
            let begin = Instant::now();
            let outcome =
                tokio::time::timeout(options.timeout, transport.send(&options, request)).await;
            // The request held tens of bytes per attribute, all freed now: give them back.
            crate::memory::release_freed_memory();
            let reason = match outcome {
                Ok(Ok(())) => {
                    stats.exports.fetch_add(1, Ordering::Relaxed);
                    stats
                        .last_duration_us
                        .store(begin.elapsed().as_micros() as u64, Ordering::Relaxed);
                    stats.last_bytes.store(size, Ordering::Relaxed);
                    encoder.delivered(pending);
                    if quiet_since.take().is_some() {
                        info!("OTLP export works again");
                    }
                    break;
                }
                Ok(Err(Failure::Unavailable(e, after))) => {
                    retry_after = after;
                    (0, e)
                }
                Err(_) => (1, format!("no answer within {:?}", options.timeout)),
                Ok(Err(Failure::Rejected(e))) => (2, e),
            };
            stats.failures[reason.0].fetch_add(1, Ordering::Relaxed);
            // One warning per outage, not one per attempt.
            if quiet_since.is_none() {
                warn!(endpoint = %options.endpoint, "OTLP export failed ({}): {}; retrying with backoff", FAILURE_REASONS[reason.0], reason.1);
                quiet_since = Some(Instant::now());
            } else {
                debug!("OTLP export failed again: {}", reason.1);
            }
            // Rejections are not retried; others until the next export is due, no sooner than
            // the collector's hint says.
            let wait = retry_after.map_or(backoff, |a| a.max(backoff));
            if reason.0 == 2 || tick.elapsed() + wait >= options.interval {
                if let Some(a) = retry_after {
                    not_before = Some(Instant::now() + a);
                }
                break;
            }
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(options.interval);
        }
    }
}
