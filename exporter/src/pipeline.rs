//! One drain tick, stage by stage, as the data flows:
//!
//! 1. **kernel** ([`crate::ebpf`], [`crate::drain`]): the TCP iterator samples live
//!    connections into the current generation, then the drainer flips generations and takes
//!    every map: a [`Batch`] of kernel keys and deltas. DNS answers the kernel forwarded
//!    before those counts are applied to the hostname cache first.
//! 2. **labels** ([`crate::identity`]): under one lock of the identity, each key becomes a
//!    labelled delta (owner, peer, hostname, question), produced as the fold consumes it;
//!    owners that are gone are answered from the same lock, and the identity prunes its own
//!    caches.
//! 3. **series** ([`crate::series`]): the deltas fold into counters within the cardinality
//!    budgets; series of gone, idle owners expire; self-metrics are recorded.
//! 4. **snapshot** ([`crate::series::snapshot`]): one immutable typed snapshot of every
//!    family is published; Prometheus text, OpenMetrics and OTLP ([`crate::export`]) are all
//!    made from it.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use tracing::{info, warn};

use crate::{
    dns::Answers,
    drain::{Batch, Drainer},
    ebpf::Kernel,
    export::{prometheus::Shared, text::Exposition},
    identity::{Identity, labelled::Labeller},
    series::Series,
};

/// Everything a tick touches.
pub struct Pipeline {
    /// The loaded programs and their maps.
    pub kernel: Kernel,
    /// Reads and empties the maps.
    pub drainer: Drainer,
    /// Owners, peers and hostnames; shared with the DNS answer reader.
    pub identity: Arc<Mutex<Identity>>,
    /// The DNS answer reader, when the ring buffer is there.
    pub answers: Option<Arc<Answers>>,
    /// Kernel keys -> labelled deltas.
    pub labeller: Labeller,
    /// The counters.
    pub series: Series,
    /// Where snapshots are published.
    pub shared: Arc<Shared>,
    /// How long a gone owner's series stay (`--series-expiry`).
    pub grace: Duration,
}

impl Pipeline {
    /// One drain: kernel batch -> labels -> series -> snapshot.
    pub fn tick(&mut self) {
        let start = Instant::now();
        // Live TCP counts into the current generation, which the drain then takes.
        if let Err(e) = self.kernel.sample_tcp() {
            warn!("TCP iterator run failed: {e}; live TCP counts wait for the next drain");
        }
        self.series.dns.refresh_watchlists();
        let answers = self.answers.clone();
        let batch = self.drainer.drain(|| catch_up(&answers));
        self.label_and_fold(&batch);
        self.series.agent.record_drain(&batch, start.elapsed());
        self.series.agent.record_run_stats(&self.kernel.run_stats());
        self.publish();
        self.shared.drained();
        self.shared
            .set_ready(self.kernel.programs.iter().any(|p| p.attached));
    }

    /// The last drain, after the programs are detached: every count up to the last close
    /// sock_ops saw, plus what is still open.
    pub fn finish(mut self) {
        self.kernel.detach();
        self.series
            .agent
            .set_attached(self.kernel.programs.iter().map(|p| (p.name, p.attached)));
        let start = Instant::now();
        if let Err(e) = self.kernel.sample_tcp() {
            warn!("TCP iterator run failed at shutdown: {e}");
        }
        catch_up(&self.answers);
        let batch = self.drainer.drain_all();
        self.label_and_fold(&batch);
        self.series.agent.record_drain(&batch, start.elapsed());
        self.publish();
        info!(
            flows = batch.flows.len(),
            dns = batch.dns.len(),
            "final drain done"
        );
    }

    /// Stages 2 and 3, under one lock of the identity.
    fn label_and_fold(&mut self, batch: &Batch) {
        let mut identity = self.identity.lock();
        fold_batch(
            batch,
            &mut self.labeller,
            &mut identity,
            &mut self.series,
            self.grace,
        );
        let hosts = (identity.hosts.len(), identity.hosts.evictions());
        let misses = identity.misses;
        drop(identity);
        self.series.dns.record_host_cache(hosts.0, hosts.1);
        if let Some(k) = &mut self.series.kubernetes {
            k.record(misses);
        }
        if let Some(a) = &self.answers {
            self.series.dns.record_answers(&a.stats);
        }
    }

    /// Stage 4.
    fn publish(&self) {
        self.shared
            .publish(Exposition::new(self.series.registry.snapshot()));
    }
}

/// Labels `batch` and folds it into `series`, then expires the series of gone, idle owners
/// and lets the identity prune its caches.
pub fn fold_batch(
    batch: &Batch,
    labeller: &mut Labeller,
    identity: &mut Identity,
    series: &mut Series,
    grace: Duration,
) {
    let now = Instant::now();
    identity.begin_drain();
    series.fold_flows(labeller.flows(&batch.flows, &batch.flow_overflow, identity, now));
    series.fold_timings(labeller.timings(&batch.timings, identity, now));
    series.fold_drops(labeller.drops(&batch.drops, identity));
    let unmatched = batch.events[sockscope_common::EVENT_DNS_UNMATCHED as usize];
    series.fold_dns(labeller.dns(batch, identity), unmatched);
    series.expire(now, |cgroup_id, pod_uid| identity.gone(cgroup_id, pod_uid));
    identity.prune(now, grace);
}

fn catch_up(answers: &Option<Arc<Answers>>) {
    if let Some(a) = answers {
        a.catch_up();
    }
}
