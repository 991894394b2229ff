//! The live families and the registry that turns them into a [`Snapshot`] once per drain.
//!
//! prometheus-client's `Family` cannot be read back except by rendering it as text, so the
//! label sets and values live here, in a map that can be walked; the values themselves are
//! still prometheus-client's atomic counters and gauges. Label sets are reference counted: a
//! flow's labels are held once, however many families (and the expiry index) use them, and
//! the snapshot shares them instead of copying.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
};

use parking_lot::{MappedRwLockReadGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

use super::snapshot::{FamilySnapshot, LabelSet, NoLabels, Point, Snapshot, Value};
use crate::schema;

/// A metric whose current value can be read.
pub trait Sample: Send + Sync {
    /// The value now.
    fn sample(&self) -> Value;
}

impl Sample for Counter<u64, AtomicU64> {
    fn sample(&self) -> Value {
        Value::Counter(self.get())
    }
}

impl Sample for Counter<f64, AtomicU64> {
    fn sample(&self) -> Value {
        Value::CounterF64(self.get())
    }
}

impl Sample for Gauge<i64, AtomicI64> {
    fn sample(&self) -> Value {
        Value::Gauge(self.get())
    }
}

impl Sample for Gauge<f64, AtomicU64> {
    fn sample(&self) -> Value {
        Value::GaugeF64(self.get())
    }
}

/// A counter kept inline in its family's map: prometheus-client's `Counter` is an `Arc` of
/// its own, one more allocation for each of tens of thousands of flow series.
#[derive(Debug, Default)]
pub struct Count(AtomicU64);

impl Count {
    /// Adds `v`.
    pub fn inc_by(&self, v: u64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// The total.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Sample for Count {
    fn sample(&self) -> Value {
        Value::Counter(self.get())
    }
}

/// Something that yields the series of one family at snapshot time.
pub trait Collect: Send + Sync {
    /// Appends the family's series.
    fn collect(&self, out: &mut Vec<Point>);
}

/// A metric without labels is a family of one series.
impl<M: Sample> Collect for M {
    fn collect(&self, out: &mut Vec<Point>) {
        out.push(Point {
            labels: Arc::new(NoLabels),
            value: self.sample(),
        });
    }
}

/// A collector that reads its values when the snapshot is taken (atomics another thread
/// counts into), instead of copying them into metrics at each drain.
pub struct Collector<F>(pub F);

impl<F: Fn(&mut Vec<Point>) + Send + Sync> Collect for Collector<F> {
    fn collect(&self, out: &mut Vec<Point>) {
        (self.0)(out)
    }
}

/// Series of one family by label set. Cloning shares the series (as prometheus-client's
/// `Family` does), so the HTTP server and the drain can count into the same one.
pub struct Family<L, M> {
    series: Arc<RwLock<HashMap<Arc<L>, M>>>,
}

impl<L, M> Clone for Family<L, M> {
    fn clone(&self) -> Self {
        Family {
            series: self.series.clone(),
        }
    }
}

impl<L, M> Default for Family<L, M> {
    fn default() -> Self {
        Family {
            series: Arc::default(),
        }
    }
}

impl<L: Hash + Eq, M: Default> Family<L, M> {
    /// The metric of `labels`, created (with a copy of the labels) on first use.
    pub fn get_or_create(&self, labels: &L) -> MappedRwLockReadGuard<'_, M>
    where
        L: Clone,
    {
        self.get_or_insert(labels, || Arc::new(labels.clone()))
    }

    /// The metric of `labels`, created on first use with `labels` itself (shared, not copied).
    pub fn get_or_create_shared(&self, labels: &Arc<L>) -> MappedRwLockReadGuard<'_, M> {
        self.get_or_insert(labels, || labels.clone())
    }

    fn get_or_insert(
        &self,
        labels: &L,
        make: impl FnOnce() -> Arc<L>,
    ) -> MappedRwLockReadGuard<'_, M> {
        if let Ok(found) = RwLockReadGuard::try_map(self.series.read(), |m| m.get(labels)) {
            return found;
        }
        let mut w = self.series.write();
        if !w.contains_key(labels) {
            w.insert(make(), M::default());
        }
        RwLockReadGuard::map(RwLockWriteGuard::downgrade(w), |m| {
            // Inserted above, under the same lock.
            &m[labels]
        })
    }

    /// Removes the series of `labels`; false if there was none.
    pub fn remove(&self, labels: &L) -> bool {
        self.series.write().remove(labels).is_some()
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.read().len()
    }

    /// No series.
    pub fn is_empty(&self) -> bool {
        self.series.read().is_empty()
    }
}

impl<L: LabelSet, M: Sample> Collect for Family<L, M> {
    fn collect(&self, out: &mut Vec<Point>) {
        let series = self.series.read();
        out.reserve(series.len());
        out.extend(series.iter().map(|(labels, m)| Point {
            labels: labels.clone() as Arc<dyn LabelSet>,
            value: m.sample(),
        }));
    }
}

/// The families, in the order they are exposed.
#[derive(Default)]
pub struct Registry {
    families: Vec<(&'static schema::Family, Box<dyn Collect>)>,
}

impl Registry {
    /// Adds a family under its schema description.
    pub fn register(&mut self, family: &'static schema::Family, series: impl Collect + 'static) {
        self.families.push((family, Box::new(series)));
    }

    /// Every family with at least one series, as of now.
    pub fn snapshot(&self) -> Snapshot {
        let families = self
            .families
            .iter()
            .filter_map(|(family, series)| {
                let mut points = Vec::new();
                series.collect(&mut points);
                (!points.is_empty()).then_some(FamilySnapshot { family, points })
            })
            .collect();
        Snapshot { families }
    }
}
