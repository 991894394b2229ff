//! Cardinality budgets: per local workload, at most N distinct values of an unbounded label
//! (`qname`, `remote_host`); the rest fold into [`OTHER`] and are counted in
//! `sockscope_series_overflow_total{metric}`.

use std::collections::{HashMap, HashSet};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};

/// Label value that stands for every value beyond the budget.
pub const OTHER: &str = "~other";

/// Label set of the overflow counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OverflowLabels {
    /// The metric family whose label was folded (with `_total` for counters).
    pub metric: String,
}

/// Counter of samples that went to [`OTHER`], shared by every family.
pub type Overflow = Family<OverflowLabels, Counter>;

/// Admitted values of one label, per workload. Values are admitted first come, first served
/// and stay admitted, so a series never changes name once exported.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    admitted: HashMap<String, HashSet<String>>,
}

impl Budget {
    /// At most `limit` distinct non-empty values per scope.
    pub fn new(limit: usize) -> Self {
        Budget {
            limit,
            admitted: HashMap::new(),
        }
    }

    /// Forgets a scope (its workload's series all expired).
    pub fn forget(&mut self, scope: &str) {
        self.admitted.remove(scope);
    }

    /// `value` if it fits the budget of `scope` (the local workload), else [`OTHER`]; the
    /// empty value ("unknown") is always allowed and never uses the budget.
    pub fn label(&mut self, scope: &str, value: String) -> (String, bool) {
        if value.is_empty() {
            return (value, false);
        }
        let set = self.admitted.entry(scope.to_string()).or_default();
        if set.contains(&value) {
            return (value, false);
        }
        if set.len() < self.limit {
            set.insert(value.clone());
            return (value, false);
        }
        (OTHER.to_string(), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_beyond_the_limit_per_scope() {
        let mut b = Budget::new(2);
        assert_eq!(b.label("w1", "a".into()), ("a".into(), false));
        assert_eq!(b.label("w1", "b".into()), ("b".into(), false));
        assert_eq!(b.label("w1", "c".into()), (OTHER.into(), true));
        // Admitted values stay admitted.
        assert_eq!(b.label("w1", "a".into()), ("a".into(), false));
        // Another workload has its own budget; empty values are free.
        assert_eq!(b.label("w2", "c".into()), ("c".into(), false));
        assert_eq!(b.label("w1", String::new()), (String::new(), false));
        let mut zero = Budget::new(0);
        assert_eq!(zero.label("w", "x".into()), (OTHER.into(), true));
    }
}
