//! Histograms: [`KernelHistogram`] takes bucket counts the eBPF side already sorted samples
//! into (prometheus-client's `Histogram` only takes single observations and cannot be read
//! back); [`Histogram`] takes single observations of the agent's own timings.

use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;
use sockscope_common::dns::{DNS_LATENCY_BOUNDS_NS, DNS_LATENCY_BUCKETS};

use super::{
    registry::Sample,
    snapshot::{HistogramValue, Value},
};

#[derive(Debug)]
struct Inner {
    sum: f64,
    count: u64,
    /// Per bucket, +Inf last.
    counts: Box<[u64]>,
}

impl Inner {
    fn new(buckets: usize) -> Self {
        Inner {
            sum: 0.0,
            count: 0,
            counts: vec![0; buckets].into_boxed_slice(),
        }
    }

    fn value(&self, bounds: &Arc<[f64]>) -> Value {
        Value::Histogram(Box::new(HistogramValue {
            bounds: bounds.clone(),
            counts: self.counts.clone(),
            sum: self.sum,
            count: self.count,
        }))
    }
}

static DNS_BOUNDS: LazyLock<Arc<[f64]>> = LazyLock::new(|| {
    DNS_LATENCY_BOUNDS_NS
        .iter()
        .map(|ns| *ns as f64 / 1e9)
        .collect()
});

/// Latency histogram with the kernel's bucket bounds ([`DNS_LATENCY_BOUNDS_NS`]).
#[derive(Debug)]
pub struct KernelHistogram {
    inner: Mutex<Inner>,
}

impl Default for KernelHistogram {
    fn default() -> Self {
        KernelHistogram {
            inner: Mutex::new(Inner::new(DNS_LATENCY_BUCKETS)),
        }
    }
}

impl KernelHistogram {
    /// Adds `count` samples to bucket `index` (the last index is +Inf) and `sum_ns` to the sum.
    /// An index out of range counts in +Inf.
    pub fn add(&self, index: usize, count: u64, sum_ns: u64) {
        let mut inner = self.inner.lock();
        let i = index.min(DNS_LATENCY_BUCKETS - 1);
        inner.counts[i] = inner.counts[i].wrapping_add(count);
        inner.count = inner.count.wrapping_add(count);
        inner.sum += sum_ns as f64 / 1e9;
    }
}

impl Sample for KernelHistogram {
    fn sample(&self) -> Value {
        self.inner.lock().value(&DNS_BOUNDS)
    }
}

/// A histogram of single observations with fixed bounds. Clones share the counts.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: Arc<[f64]>,
    inner: Arc<Mutex<Inner>>,
}

impl Histogram {
    /// Buckets up to each of `bounds` (ascending), and +Inf.
    pub fn new(bounds: &[f64]) -> Self {
        Histogram {
            bounds: bounds.into(),
            inner: Arc::new(Mutex::new(Inner::new(bounds.len() + 1))),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        let mut inner = self.inner.lock();
        inner.counts[i] += 1;
        inner.count += 1;
        inner.sum += v;
    }
}

impl Sample for Histogram {
    fn sample(&self) -> Value {
        self.inner.lock().value(&self.bounds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(v: Value) -> HistogramValue {
        match v {
            Value::Histogram(h) => *h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kernel_buckets_and_sum() {
        let h = KernelHistogram::default();
        h.add(0, 2, 100_000);
        h.add(3, 1, 900_000);
        h.add(99, 1, 9_000_000_000);
        let v = parts(h.sample());
        assert_eq!(v.bounds.len() + 1, v.counts.len());
        assert_eq!((v.bounds[0], v.bounds[3]), (0.0001, 0.001));
        assert_eq!(v.counts[0], 2);
        assert_eq!(v.counts[3], 1);
        assert_eq!(v.counts[DNS_LATENCY_BUCKETS - 1], 1);
        assert_eq!(v.count, 4);
        assert!((v.sum - 9.001).abs() < 1e-9);
    }

    #[test]
    fn observations_land_in_their_bucket() {
        let h = Histogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.1, 0.5, 7.0] {
            h.observe(v);
        }
        let v = parts(h.sample());
        // le="0.1" includes 0.1 itself.
        assert_eq!(&*v.counts, &[2, 1, 1]);
        assert_eq!(v.count, 4);
    }
}
