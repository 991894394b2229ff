//! The packet drop family: drops by the kernel's reason and direction, per local workload
//! (empty local labels for the node's).

use super::{
    compact::Compact,
    drop::{Droppable, Drops},
    expiry::{Expiry, Members},
    registry::{Count, Family, Registry},
    snapshot::label_set,
};
use crate::{
    identity::{labelled::DropDelta, labels::LocalLabels},
    schema::{self, PACKET_DROPS},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct DropLabels {
    local: LocalLabels,
    reason: String,
    direction: String,
}

label_set!(DropLabels { [local] reason, direction });

impl Droppable for DropLabels {
    fn drop_label(&mut self, name: &str) {
        if self.local.drop_label(name) {
            return;
        }
        match name {
            "reason" => self.reason.clear(),
            "direction" => self.direction.clear(),
            _ => {}
        }
    }

    fn local(&self) -> &LocalLabels {
        &self.local
    }
}

/// `sockscope_packet_drops_total`. The reasons are the kernel's (about 130 on 6.18, few of
/// which occur), so no budget applies.
pub struct DropMetrics {
    drops: Family<Compact, Count>,
    members: Members,
    labels: Drops,
}

impl DropMetrics {
    /// Registers the family.
    pub fn register(registry: &mut Registry) -> Self {
        let m = DropMetrics {
            drops: Family::default(),
            members: Members::new(schema::PACKET_DROPS.labels),
            labels: Drops::default(),
        };
        registry.register(&PACKET_DROPS, m.drops.clone());
        m
    }

    /// Adds one drain's labelled drop deltas.
    pub fn fold(&mut self, deltas: impl IntoIterator<Item = DropDelta>, expiry: &mut Expiry) {
        let now = std::time::Instant::now();
        for d in deltas {
            let owner = (d.owner.cgroup_id, d.owner.pod_uid);
            // The node's drops belong to no owner: they never expire.
            if owner.0 != 0 {
                expiry.touch(&d.local, owner.0, owner.1, now);
            }
            let labels = DropLabels {
                local: d.local,
                reason: d.reason,
                direction: d.direction.to_string(),
            };
            let out = self.labels.apply(PACKET_DROPS.name, &labels);
            if owner.0 != 0 && out.local() != labels.local() {
                expiry.touch(out.local(), owner.0, owner.1, now);
            }
            let stored = self.members.note(out.local(), &*out);
            self.drops.get_or_create_shared(&stored).inc_by(d.count);
        }
    }

    /// Removes every series of an expired owner; returns how many went.
    pub fn remove(&mut self, local: &LocalLabels) -> usize {
        self.members
            .take(local)
            .iter()
            .map(|l| usize::from(self.drops.remove(l)))
            .sum()
    }

    /// Sets the labels dropped (config file `metrics:`).
    pub fn set_drops(&mut self, drops: Drops) {
        self.labels = drops;
    }
}
