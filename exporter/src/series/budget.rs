//! Cardinality budgets: per local workload, at most N distinct values of a label whose values
//! come from outside (`qname`, `qtype`, `remote_host`, `port`, `process`, `remote_ip`); the
//! rest fold into [`OTHER`] and are counted in `sockscope_series_overflow_total{metric,label}`.

use std::collections::{HashMap, HashSet};

use super::{
    registry::{Count, Family},
    snapshot::label_set,
};

/// Label value that stands for every value beyond the budget.
pub const OTHER: &str = "~other";

/// Label set of the overflow counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct OverflowLabels {
    /// The metric family whose label was folded (with `_total` for counters).
    pub metric: String,
    /// The label that was folded.
    pub label: String,
}

label_set!(OverflowLabels { metric, label });

/// Counter of samples that went to [`OTHER`], shared by every family.
pub type Overflow = Family<OverflowLabels, Count>;

/// Counts one sample of counter family `metric` (registration name) whose `label` was folded.
pub fn count_overflow(overflow: &Overflow, metric: &str, label: &str) {
    overflow
        .get_or_create(&OverflowLabels {
            metric: format!("{metric}_total"),
            label: label.to_string(),
        })
        .inc();
}

/// How a value competes for a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rank {
    /// May use every slot (well-known ports, listening ports, known record types).
    Preferred,
    /// May use half of the slots, so a flood of such values (a port scan, random record types)
    /// never leaves the preferred ones without room.
    Other,
}

/// Admitted values of one label, per workload. Values are admitted first come, first served
/// and stay admitted, so a series never changes name once exported.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    admitted: HashMap<String, Scope>,
}

#[derive(Debug, Default)]
struct Scope {
    values: HashSet<String>,
    /// How many of `values` were admitted as [`Rank::Other`].
    others: usize,
}

impl Budget {
    /// At most `limit` distinct non-empty values per scope.
    pub fn new(limit: usize) -> Self {
        Budget {
            limit,
            admitted: HashMap::new(),
        }
    }

    /// Forgets every scope that starts with `prefix` (a workload's, split further).
    pub fn forget_prefix(&mut self, prefix: &str) {
        self.admitted.retain(|scope, _| !scope.starts_with(prefix));
    }

    /// Forgets a scope (its workload's series all expired).
    pub fn forget(&mut self, scope: &str) {
        self.admitted.remove(scope);
    }

    /// `value` if it fits the budget of `scope` (the local workload), else [`OTHER`]; the
    /// empty value ("unknown") is always allowed and never uses the budget. The flag says
    /// whether the value was folded.
    pub fn label(&mut self, scope: &str, value: String) -> (String, bool) {
        self.label_ranked(scope, value, Rank::Preferred)
    }

    /// [`Budget::label`] for a value of the given rank.
    pub fn label_ranked(&mut self, scope: &str, value: String, rank: Rank) -> (String, bool) {
        if value.is_empty() {
            return (value, false);
        }
        if let Some(s) = self.admitted.get(scope)
            && s.values.contains(&value)
        {
            return (value, false);
        }
        let s = self.admitted.entry(scope.to_string()).or_default();
        let room = match rank {
            Rank::Preferred => s.values.len() < self.limit,
            Rank::Other => s.values.len() < self.limit && s.others < self.limit.div_ceil(2),
        };
        if room {
            s.values.insert(value.clone());
            if rank == Rank::Other {
                s.others += 1;
            }
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

    #[test]
    fn other_values_leave_room_for_preferred_ones() {
        let mut b = Budget::new(4);
        // A scan: ephemeral ports take at most half the budget.
        for p in 40000..40010 {
            b.label_ranked("w", p.to_string(), Rank::Other);
        }
        assert_eq!(
            b.label_ranked("w", "40000".into(), Rank::Other),
            ("40000".into(), false)
        );
        assert_eq!(
            b.label_ranked("w", "40002".into(), Rank::Other),
            (OTHER.into(), true)
        );
        // Listening and well-known ports still fit.
        assert_eq!(
            b.label_ranked("w", "443".into(), Rank::Preferred),
            ("443".into(), false)
        );
        assert_eq!(
            b.label_ranked("w", "8080".into(), Rank::Preferred),
            ("8080".into(), false)
        );
        assert_eq!(
            b.label_ranked("w", "22".into(), Rank::Preferred),
            (OTHER.into(), true)
        );
    }
}
