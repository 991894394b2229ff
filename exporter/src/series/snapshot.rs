//! What one drain publishes: every family's series with their values at that moment, typed.
//! The exporters read only this (Prometheus text, OpenMetrics and OTLP alike), so they show
//! the same families, labels and values, and none of them touches the live counters.

use std::sync::Arc;

use crate::schema;

pub use crate::schema::LabelSet;
pub(crate) use crate::schema::label_set;

/// The empty label set of a family without labels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct NoLabels;

impl LabelSet for NoLabels {
    fn visit(&self, _: &mut dyn FnMut(&'static str, &str)) {}
}

/// One histogram series.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramValue {
    /// Finite upper bounds, ascending; the last bucket (+Inf) has none.
    pub bounds: Arc<[f64]>,
    /// Observations per bucket (not cumulative), one more than `bounds`.
    pub counts: Box<[u64]>,
    /// Sum of the observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

/// A sample value, typed as the metric holds it (integers stay integers).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An integer counter.
    Counter(u64),
    /// A counter of a fractional quantity (seconds).
    CounterF64(f64),
    /// An integer gauge.
    Gauge(i64),
    /// A fractional gauge.
    GaugeF64(f64),
    /// A histogram.
    Histogram(Box<HistogramValue>),
}

/// One series.
#[derive(Clone)]
pub struct Point {
    /// Its labels, shared with the live family (no copy per drain).
    pub labels: Arc<dyn LabelSet>,
    /// Its value at the drain.
    pub value: Value,
}

impl Point {
    /// The labels as owned pairs (tests, delta bookkeeping).
    pub fn label_pairs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.labels
            .visit(&mut |k, v| out.push((k.to_string(), v.to_string())));
        out
    }
}

/// One family's series.
pub struct FamilySnapshot {
    /// Name, type, unit, help.
    pub family: &'static schema::Family,
    /// Its series (never empty: families without series are left out).
    pub points: Vec<Point>,
}

/// Every family with series, in registration order.
#[derive(Default)]
pub struct Snapshot {
    /// The families.
    pub families: Vec<FamilySnapshot>,
}

impl Snapshot {
    /// Number of series (a histogram counts once).
    pub fn len(&self) -> usize {
        self.families.iter().map(|f| f.points.len()).sum()
    }

    /// No series at all.
    pub fn is_empty(&self) -> bool {
        self.families.is_empty()
    }
}
