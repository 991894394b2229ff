//! Histograms: [`KernelHistogram`] takes bucket counts the eBPF side already sorted samples
//! into (prometheus-client's `Histogram` only takes single observations and cannot be read
//! back); [`Histogram`] takes single observations of the agent's own timings.

use std::{
    marker::PhantomData,
    sync::{Arc, LazyLock},
};

use parking_lot::Mutex;
use sockscope_common::{
    dns::DNS_LATENCY_BOUNDS_NS,
    health::{TIMING_BOUNDS_NS, TIMING_KINDS},
};

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

/// Bucket bounds of a kernel histogram, in seconds.
pub trait Buckets: Send + Sync + 'static {
    /// Upper bounds (inclusive), ascending; +Inf is implied.
    fn bounds() -> &'static Arc<[f64]>;
}

fn seconds(ns: &[u64]) -> Arc<[f64]> {
    ns.iter().map(|ns| *ns as f64 / 1e9).collect()
}

/// DNS latency: the kernel's [`DNS_LATENCY_BOUNDS_NS`].
#[derive(Debug)]
pub struct DnsLatency;

impl Buckets for DnsLatency {
    fn bounds() -> &'static Arc<[f64]> {
        static B: LazyLock<Arc<[f64]>> = LazyLock::new(|| seconds(&DNS_LATENCY_BOUNDS_NS));
        &B
    }
}

/// A TCP timing kind's bounds (`sockscope_common::health::TIMING_BOUNDS_NS[KIND]`).
#[derive(Debug)]
pub struct TcpTiming<const KIND: usize>;

impl<const KIND: usize> Buckets for TcpTiming<KIND> {
    fn bounds() -> &'static Arc<[f64]> {
        static B: LazyLock<[Arc<[f64]>; TIMING_KINDS]> =
            LazyLock::new(|| TIMING_BOUNDS_NS.map(|b| seconds(&b)));
        &B[KIND]
    }
}

/// A histogram whose samples the kernel already sorted into buckets (bounds `B`).
#[derive(Debug)]
pub struct KernelHistogram<B: Buckets = DnsLatency> {
    inner: Mutex<Inner>,
    buckets: PhantomData<B>,
}

impl<B: Buckets> Default for KernelHistogram<B> {
    fn default() -> Self {
        KernelHistogram {
            inner: Mutex::new(Inner::new(B::bounds().len() + 1)),
            buckets: PhantomData,
        }
    }
}

impl<B: Buckets> KernelHistogram<B> {
    /// Adds `count` samples to bucket `index` (the last index is +Inf) and `sum_ns` to the sum.
    /// An index out of range counts in +Inf.
    pub fn add(&self, index: usize, count: u64, sum_ns: u64) {
        let mut inner = self.inner.lock();
        let i = index.min(inner.counts.len() - 1);
        inner.counts[i] = inner.counts[i].wrapping_add(count);
        inner.count = inner.count.wrapping_add(count);
        inner.sum += sum_ns as f64 / 1e9;
    }
}

impl<B: Buckets> Sample for KernelHistogram<B> {
    fn sample(&self) -> Value {
        self.inner.lock().value(B::bounds())
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
        let h: KernelHistogram = KernelHistogram::default();
        h.add(0, 2, 100_000);
        h.add(3, 1, 900_000);
        h.add(99, 1, 9_000_000_000);
        let v = parts(h.sample());
        assert_eq!(v.bounds.len() + 1, v.counts.len());
        assert_eq!((v.bounds[0], v.bounds[3]), (0.0001, 0.001));
        assert_eq!(v.counts[0], 2);
        assert_eq!(v.counts[3], 1);
        assert_eq!(v.counts[sockscope_common::dns::DNS_LATENCY_BUCKETS - 1], 1);
        assert_eq!(v.count, 4);
        assert!((v.sum - 9.001).abs() < 1e-9);
    }

    #[test]
    fn tcp_timing_bounds_by_kind() {
        let connect: KernelHistogram<TcpTiming<0>> = KernelHistogram::default();
        connect.add(8, 1, 1_004_000_000);
        let v = parts(connect.sample());
        assert_eq!(v.bounds.len(), sockscope_common::health::TIMING_BOUNDS);
        assert_eq!((v.bounds[7], v.bounds[8]), (1.0, 3.0));
        assert_eq!(v.counts[8], 1);
        let rtt = parts(KernelHistogram::<TcpTiming<1>>::default().sample());
        assert_eq!(rtt.bounds[0], 0.0001);
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
