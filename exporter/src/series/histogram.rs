//! A histogram whose buckets are filled by the kernel: the eBPF side sorts each sample into a
//! fixed bucket, the agent adds bucket counts and sums. prometheus-client's `Histogram` only
//! takes single observations, so this type encodes the same exposition from counts.

use std::sync::{Arc, Mutex};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric},
};
use sockscope_common::dns::{DNS_LATENCY_BOUNDS_NS, DNS_LATENCY_BUCKETS};

#[derive(Debug, Default)]
struct Inner {
    sum_seconds: f64,
    count: u64,
    buckets: [u64; DNS_LATENCY_BUCKETS],
}

/// Latency histogram with the kernel's bucket bounds ([`DNS_LATENCY_BOUNDS_NS`]).
#[derive(Debug, Clone, Default)]
pub struct KernelHistogram {
    inner: Arc<Mutex<Inner>>,
}

impl KernelHistogram {
    /// Adds `count` samples to bucket `index` (the last index is +Inf) and `sum_ns` to the sum.
    /// An index out of range counts in +Inf.
    pub fn add(&self, index: usize, count: u64, sum_ns: u64) {
        let mut inner = crate::lock(&self.inner);
        let i = index.min(DNS_LATENCY_BUCKETS - 1);
        inner.buckets[i] = inner.buckets[i].wrapping_add(count);
        inner.count = inner.count.wrapping_add(count);
        inner.sum_seconds += sum_ns as f64 / 1e9;
    }
}

impl TypedMetric for KernelHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for KernelHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = crate::lock(&self.inner);
        let buckets: Vec<(f64, u64)> = DNS_LATENCY_BOUNDS_NS
            .iter()
            .map(|ns| *ns as f64 / 1e9)
            .chain(std::iter::once(f64::INFINITY))
            .zip(inner.buckets.iter().copied())
            .collect();
        encoder.encode_histogram::<NoLabelSet>(inner.sum_seconds, inner.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{encoding::text::encode, registry::Registry};

    use super::*;

    #[test]
    fn encodes_cumulative_buckets() {
        let h = KernelHistogram::default();
        h.add(0, 2, 100_000);
        h.add(3, 1, 900_000);
        h.add(99, 1, 9_000_000_000);
        let mut r = Registry::default();
        r.register("lat_seconds", "x", h.clone());
        let mut out = String::new();
        encode(&mut out, &r).expect("encode");
        assert!(out.contains("lat_seconds_bucket{le=\"0.0001\"} 2"), "{out}");
        assert!(out.contains("lat_seconds_bucket{le=\"0.001\"} 3"), "{out}");
        assert!(out.contains("lat_seconds_bucket{le=\"5.0\"} 3"), "{out}");
        assert!(out.contains("lat_seconds_bucket{le=\"+Inf\"} 4"), "{out}");
        assert!(out.contains("lat_seconds_count 4"), "{out}");
        assert!(out.contains("lat_seconds_sum 9.001"), "{out}");
    }
}
