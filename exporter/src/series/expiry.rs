//! Expiry of series whose owner is gone: a deleted pod's (or stopped unit's) series stay
//! exported, unchanged, for a grace period so the last increase is scraped, then disappear,
//! so memory and series count stay flat under pod churn.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{compact::Compact, snapshot::LabelSet};
use crate::identity::labels::LocalLabels;

/// The label sets each local owner has in some families, so its series can be removed. It
/// holds the one stored copy of each label set ([`Compact`]): the families point at it.
#[derive(Debug)]
pub struct Members {
    names: &'static [&'static str],
    by_local: HashMap<LocalLabels, HashSet<Arc<Compact>>>,
}

impl Members {
    /// Label sets of families whose labels are `names`.
    pub fn new(names: &'static [&'static str]) -> Self {
        Members {
            names,
            by_local: HashMap::new(),
        }
    }

    /// Records that `labels` (owned by `local`) exist; returns the stored copy.
    pub fn note(&mut self, local: &LocalLabels, labels: &dyn LabelSet) -> Arc<Compact> {
        let compact = Compact::of(self.names, labels);
        let set = match self.by_local.get_mut(local) {
            Some(set) => set,
            None => self.by_local.entry(local.clone()).or_default(),
        };
        match set.get(&compact) {
            Some(stored) => stored.clone(),
            None => {
                let stored = Arc::new(compact);
                set.insert(stored.clone());
                stored
            }
        }
    }

    /// Takes every label set of `local`.
    pub fn take(&mut self, local: &LocalLabels) -> HashSet<Arc<Compact>> {
        self.by_local.remove(local).unwrap_or_default()
    }

    /// Label sets recorded, over all owners.
    pub fn len(&self) -> usize {
        self.by_local.values().map(HashSet::len).sum()
    }

    /// Nothing recorded.
    pub fn is_empty(&self) -> bool {
        self.by_local.is_empty()
    }
}

/// What an owner was last seen as.
#[derive(Debug, Clone, Copy)]
struct Activity {
    last: Instant,
    cgroup_id: u64,
    pod_uid: Option<u128>,
}

/// Last activity of every local owner.
#[derive(Debug)]
pub struct Expiry {
    grace: Duration,
    owners: HashMap<LocalLabels, Activity>,
}

impl Expiry {
    /// Series of gone owners idle for `grace` expire.
    pub fn new(grace: Duration) -> Self {
        Expiry {
            grace,
            owners: HashMap::new(),
        }
    }

    /// `local` (cgroup `cgroup_id`, pod `pod_uid`) added to a series at `now`.
    pub fn touch(
        &mut self,
        local: &LocalLabels,
        cgroup_id: u64,
        pod_uid: Option<u128>,
        now: Instant,
    ) {
        let a = Activity {
            last: now,
            cgroup_id,
            pod_uid,
        };
        match self.owners.get_mut(local) {
            Some(old) => *old = a,
            None => {
                self.owners.insert(local.clone(), a);
            }
        }
    }

    /// Owners idle for the grace period that `gone` says are gone (pod deleted, cgroup
    /// removed): their series go.
    pub fn expire(
        &mut self,
        now: Instant,
        mut gone: impl FnMut(u64, Option<u128>) -> bool,
    ) -> Vec<LocalLabels> {
        let grace = self.grace;
        let idle: Vec<(LocalLabels, Activity)> = self
            .owners
            .iter()
            .filter(|(_, a)| now.saturating_duration_since(a.last) >= grace)
            .map(|(l, a)| (l.clone(), *a))
            .collect();
        let mut out = Vec::new();
        for (local, a) in idle {
            if gone(a.cgroup_id, a.pod_uid) {
                self.owners.remove(&local);
                out.push(local);
            }
        }
        out
    }

    /// Whether some tracked owner still uses budget `scope`.
    pub fn scope_in_use(&self, scope: &str) -> bool {
        self.owners.keys().any(|l| l.budget_scope() == scope)
    }

    /// Owners tracked.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// No owner tracked.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn local(pod: &str) -> LocalLabels {
        LocalLabels {
            namespace: "ns".into(),
            workload: "w".into(),
            workload_kind: "Deployment".into(),
            pod: pod.into(),
            container: "c".into(),
        }
    }

    #[test]
    fn members() {
        let mut m = Members::new(&crate::schema::LOCAL_LABELS);
        let x = m.note(&local("a"), &local("x"));
        let again = m.note(&local("a"), &local("x"));
        // One stored copy, shared.
        assert!(Arc::ptr_eq(&x, &again));
        m.note(&local("a"), &local("y"));
        m.note(&local("b"), &local("x"));
        assert_eq!(m.len(), 3);
        assert_eq!(m.take(&local("a")).len(), 2);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn only_gone_and_idle_owners_expire() {
        let dir = std::env::temp_dir().join(format!("sockscope-expiry-{}", std::process::id()));
        let live = dir.join("live");
        let dead = dir.join("dead");
        std::fs::create_dir_all(&live).expect("mkdir");
        std::fs::create_dir_all(&dead).expect("mkdir");
        use std::os::unix::fs::MetadataExt;
        let live_id = std::fs::metadata(&live).expect("stat").ino();
        let dead_id = std::fs::metadata(&dead).expect("stat").ino();
        let mut identity = Identity::new(
            dir.clone(),
            dir.clone(),
            None,
            crate::identity::hosts::HostCache::new(8, Duration::ZERO, Duration::from_secs(1)),
        );
        identity.cgroups.scan();
        let mut e = Expiry::new(Duration::from_secs(60));
        let t0 = Instant::now();
        e.touch(&local("live"), live_id, None, t0);
        e.touch(&local("dead"), dead_id, None, t0);
        std::fs::remove_dir(&dead).expect("rmdir");
        // Gone but not idle long enough.
        assert!(
            e.expire(t0 + Duration::from_secs(30), |c, p| identity.gone(c, p))
                .is_empty()
        );
        // Idle long enough: only the gone one goes.
        let gone = e.expire(t0 + Duration::from_secs(61), |c, p| identity.gone(c, p));
        assert_eq!(gone, vec![local("dead")]);
        assert_eq!(e.len(), 1);
        assert!(e.scope_in_use("ns/w"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
