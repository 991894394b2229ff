//! DNS families: queries, responses, latency, timeouts and parse errors per local workload.

use std::{collections::HashMap, sync::atomic::Ordering};

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

use super::{
    Budgets,
    budget::{Budget, OTHER, Overflow, Rank, count_overflow},
    compact::Compact,
    drop::{Droppable, Drops},
    expiry::{Expiry, Members},
    histogram::KernelHistogram,
    registry::{Count, Family, Registry},
    snapshot::{LabelSet, label_set},
};
use crate::{
    dns::AnswerStats,
    identity::{
        domains::{DomainClasses, UNKNOWN, Watchlists},
        labelled::{DnsDelta, DnsEvent, Question},
        labels::{LocalLabels, OVERFLOW, SPLIT},
    },
    schema,
};

const DNS_QUERIES: &str = schema::DNS_QUERIES.name;
const DNS_RESPONSES: &str = schema::DNS_RESPONSES.name;
const DNS_LATENCY: &str = schema::DNS_LATENCY.name;
const DNS_TIMEOUTS: &str = schema::DNS_TIMEOUTS.name;
const DNS_PARSE_ERRORS: &str = schema::DNS_PARSE_ERRORS.name;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct QueryLabels {
    local: LocalLabels,
    qname: String,
    qtype: String,
    qname_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ResponseLabels {
    local: LocalLabels,
    qname: String,
    qtype: String,
    rcode: String,
    qname_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct WatchlistLabels {
    local: LocalLabels,
    list: String,
    qname: String,
    /// With process labels on.
    process: Option<String>,
}

impl crate::schema::LabelSet for WatchlistLabels {
    fn visit(&self, f: &mut dyn FnMut(&'static str, &str)) {
        self.local.visit(f);
        f("list", &self.list);
        f("qname", &self.qname);
        if let Some(p) = &self.process {
            f("process", p);
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ListLabels {
    list: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ReloadLabels {
    list: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct LatencyLabels {
    local: LocalLabels,
    rcode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ErrorLabels {
    local: LocalLabels,
    reason: String,
}

/// `Droppable` for a DNS label set: the local labels plus the named fields.
macro_rules! droppable {
    ($ty:ty { $($field:ident),+ }) => {
        impl Droppable for $ty {
            fn drop_label(&mut self, name: &str) {
                if self.local.drop_label(name) {
                    return;
                }
                $(
                    if name == stringify!($field) {
                        self.$field.clear();
                    }
                )+
            }

            fn local(&self) -> &LocalLabels {
                &self.local
            }
        }
    };
}

label_set!(QueryLabels { [local] qname, qtype, qname_class });
label_set!(ResponseLabels { [local] qname, qtype, rcode, qname_class });
label_set!(ListLabels { list });
label_set!(ReloadLabels { list, result });
label_set!(LatencyLabels { [local] rcode });
label_set!(ErrorLabels { [local] reason });
label_set!(ResultLabels { result });

droppable!(QueryLabels {
    qname,
    qtype,
    qname_class
});
droppable!(ResponseLabels {
    qname,
    qtype,
    rcode,
    qname_class
});
droppable!(LatencyLabels { rcode });
impl Droppable for WatchlistLabels {
    fn drop_label(&mut self, name: &str) {
        if self.local.drop_label(name) {
            return;
        }
        match name {
            "list" => self.list.clear(),
            "qname" => self.qname.clear(),
            "process" => self.process = None,
            _ => {}
        }
    }

    fn local(&self) -> &LocalLabels {
        &self.local
    }
}
droppable!(ErrorLabels { reason });

/// The labels family `family` exports for `labels` (some dropped), recorded for expiry; an
/// aggregate over owners is kept alive by each of them.
fn exported<L: Droppable + LabelSet>(
    drops: &Drops,
    members: &mut Members,
    expiry: &mut Expiry,
    family: &str,
    labels: L,
    owner: (u64, Option<u128>),
) -> std::sync::Arc<Compact> {
    // Cloned only when this family drops something.
    let out = if drops.applies_to(family) {
        let out = drops.apply(family, &labels).into_owned();
        if out.local() != labels.local() {
            expiry.touch(out.local(), owner.0, owner.1, std::time::Instant::now());
        }
        out
    } else {
        labels
    };
    members.note(out.local(), &out)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ResultLabels {
    result: String,
}

/// What the config says about names: their classes and the watchlists.
#[derive(Debug, Default)]
pub struct Domains {
    /// `qname_class`.
    pub classes: DomainClasses,
    /// Domain watchlists.
    pub watchlists: Watchlists,
}

/// The DNS families and the `qname` budget.
pub struct DnsMetrics {
    queries: Family<Compact, Count>,
    responses: Family<Compact, Count>,
    latency: Family<Compact, KernelHistogram>,
    timeouts: Family<Compact, Count>,
    parse_errors: Family<Compact, Count>,
    answers: Family<ResultLabels, Count>,
    answers_seen: HashMap<&'static str, u64>,
    cache_entries: Gauge,
    cache_evictions: Counter,
    cache_evictions_seen: u64,
    unmatched: u64,
    qnames: Budget,
    qtypes: Budget,
    overflow: Overflow,
    watchlist: Family<Compact, Count>,
    watchlist_entries: Family<ListLabels, Gauge>,
    watchlist_reloads: Family<ReloadLabels, Count>,
    /// Distinct watchlist names per workload and list: beyond the `qname` budget a name
    /// counts under the entry it matched (`*.suffix`), never as `~other`.
    watch_names: Budget,
    /// `process` of watchlist hits, per workload.
    processes: Budget,
    domains: Domains,
    /// Label sets in use by owner, for expiry.
    members: DnsMembers,
    /// Labels emptied per family.
    drops: Drops,
}

/// Label sets of every DNS family, by owner.
struct DnsMembers {
    queries: Members,
    responses: Members,
    latency: Members,
    errors: Members,
    watchlist: Members,
}

impl Default for DnsMembers {
    fn default() -> Self {
        DnsMembers {
            queries: Members::new(schema::DNS_QUERIES.labels),
            responses: Members::new(schema::DNS_RESPONSES.labels),
            latency: Members::new(schema::DNS_LATENCY.labels),
            errors: Members::new(schema::DNS_PARSE_ERRORS.labels),
            watchlist: Members::new(schema::DNS_WATCHLIST_QUERIES.labels),
        }
    }
}

impl DnsMetrics {
    /// Registers the families, with the per-workload `qname` and `qtype` budgets.
    pub fn register(registry: &mut Registry, budgets: Budgets, overflow: Overflow) -> Self {
        let m = DnsMetrics {
            queries: Family::default(),
            responses: Family::default(),
            latency: Family::default(),
            timeouts: Family::default(),
            parse_errors: Family::default(),
            answers: Family::default(),
            answers_seen: HashMap::new(),
            cache_entries: Gauge::default(),
            cache_evictions: Counter::default(),
            cache_evictions_seen: 0,
            unmatched: 0,
            qnames: Budget::new(budgets.qnames),
            qtypes: Budget::new(budgets.qtypes),
            overflow,
            watchlist: Family::default(),
            watchlist_entries: Family::default(),
            watchlist_reloads: Family::default(),
            watch_names: Budget::new(budgets.qnames),
            processes: Budget::new(budgets.processes),
            domains: Domains::default(),
            members: DnsMembers::default(),
            drops: Drops::default(),
        };
        registry.register(&schema::DNS_QUERIES, m.queries.clone());
        registry.register(&schema::DNS_RESPONSES, m.responses.clone());
        registry.register(&schema::DNS_LATENCY, m.latency.clone());
        registry.register(&schema::DNS_TIMEOUTS, m.timeouts.clone());
        registry.register(&schema::DNS_PARSE_ERRORS, m.parse_errors.clone());
        registry.register(&schema::DNS_WATCHLIST_QUERIES, m.watchlist.clone());
        registry.register(&schema::DNS_WATCHLIST_ENTRIES, m.watchlist_entries.clone());
        registry.register(&schema::DNS_WATCHLIST_RELOADS, m.watchlist_reloads.clone());
        registry.register(&schema::DNS_ANSWERS, m.answers.clone());
        registry.register(&schema::DNS_HOST_CACHE_ENTRIES, m.cache_entries.clone());
        registry.register(&schema::DNS_HOST_CACHE_EVICTIONS, m.cache_evictions.clone());
        m
    }

    /// Adds one drain's labelled DNS deltas.
    pub fn fold(&mut self, deltas: impl IntoIterator<Item = DnsDelta>, expiry: &mut Expiry) {
        let now = std::time::Instant::now();
        for d in deltas {
            let owner = (d.owner.cgroup_id, d.owner.pod_uid);
            expiry.touch(&d.local, owner.0, owner.1, now);
            let (local, n) = (d.local, d.count);
            let timeout = matches!(d.event, DnsEvent::Timeout(_));
            match d.event {
                // Queries and timeouts share their labels and their label sets.
                DnsEvent::Query(question) | DnsEvent::Timeout(question) => {
                    let name = if timeout { DNS_TIMEOUTS } else { DNS_QUERIES };
                    if !timeout && let Question::Named { qname, .. } = &question {
                        self.watch(&local, qname, d.process.clone(), n, owner, expiry);
                    }
                    let qname_class = self.class(&question);
                    let (qname, qtype) = self.question(&local, question, name);
                    let labels = QueryLabels {
                        local,
                        qname,
                        qtype,
                        qname_class,
                    };
                    let members = &mut self.members.queries;
                    let labels = exported(&self.drops, members, expiry, name, labels, owner);
                    let family = if timeout {
                        &self.timeouts
                    } else {
                        &self.queries
                    };
                    family.get_or_create_shared(&labels).inc_by(n);
                }
                DnsEvent::Response {
                    question,
                    rcode,
                    latency,
                } => {
                    if let Some((bucket, sum_ns)) = latency {
                        let labels = LatencyLabels {
                            local: local.clone(),
                            rcode: rcode.to_string(),
                        };
                        let members = &mut self.members.latency;
                        let labels =
                            exported(&self.drops, members, expiry, DNS_LATENCY, labels, owner);
                        self.latency
                            .get_or_create_shared(&labels)
                            .add(bucket, n, sum_ns);
                    }
                    let qname_class = self.class(&question);
                    let (qname, qtype) = self.question(&local, question, DNS_RESPONSES);
                    let labels = ResponseLabels {
                        local,
                        qname,
                        qtype,
                        rcode: rcode.to_string(),
                        qname_class,
                    };
                    let members = &mut self.members.responses;
                    let labels =
                        exported(&self.drops, members, expiry, DNS_RESPONSES, labels, owner);
                    self.responses.get_or_create_shared(&labels).inc_by(n);
                }
                DnsEvent::Error { reason } => {
                    let labels = ErrorLabels {
                        local,
                        reason: reason.to_string(),
                    };
                    let members = &mut self.members.errors;
                    let labels = exported(
                        &self.drops,
                        members,
                        expiry,
                        DNS_PARSE_ERRORS,
                        labels,
                        owner,
                    );
                    self.parse_errors.get_or_create_shared(&labels).inc_by(n);
                }
            }
        }
    }

    /// Sets the name classes and watchlists.
    pub fn set_domains(&mut self, domains: Domains) {
        for (list, n) in domains.watchlists.sizes() {
            self.watchlist_entries
                .get_or_create(&ListLabels {
                    list: list.to_string(),
                })
                .set(n as i64);
        }
        self.domains = domains;
    }

    /// Re-reads watchlist files that changed (once per drain: a stat per list).
    pub fn refresh_watchlists(&mut self) {
        for r in self.domains.watchlists.refresh() {
            let result = match &r.error {
                None => {
                    tracing::info!(list = %r.name, entries = r.entries, "watchlist reloaded");
                    "ok"
                }
                Some(e) => {
                    tracing::warn!(
                        list = %r.name,
                        "watchlist not reloaded, its {} previous entries stay in force: {}",
                        r.entries,
                        crate::report::error_chain(e)
                    );
                    "error"
                }
            };
            self.watchlist_reloads
                .get_or_create(&ReloadLabels {
                    list: r.name.clone(),
                    result: result.to_string(),
                })
                .inc();
            self.watchlist_entries
                .get_or_create(&ListLabels { list: r.name })
                .set(r.entries as i64);
        }
    }

    /// Counts a query on every watchlist its name is on.
    fn watch(
        &mut self,
        local: &LocalLabels,
        qname: &str,
        process: Option<String>,
        n: u64,
        owner: (u64, Option<u128>),
        expiry: &mut Expiry,
    ) {
        if self.domains.watchlists.is_empty() {
            return;
        }
        let hits: Vec<(String, String)> = self
            .domains
            .watchlists
            .matching(qname)
            .map(|(list, entry)| (list.to_string(), entry))
            .collect();
        if hits.is_empty() {
            // Only a hit may take a slot of the watchlist's process budget.
            return;
        }
        let process = process.map(|p| {
            let (p, folded) = self.processes.label(&local.budget_scope(), p);
            if folded {
                count_overflow(
                    &self.overflow,
                    schema::DNS_WATCHLIST_QUERIES.name,
                    "process",
                );
            }
            p
        });
        for (list, entry) in hits {
            let scope = format!("{}\0{list}", local.budget_scope());
            let (label, folded) = self.watch_names.label(&scope, qname.to_string());
            let qname = if folded { entry } else { label };
            let labels = WatchlistLabels {
                local: local.clone(),
                list,
                qname,
                process: process.clone(),
            };
            let members = &mut self.members.watchlist;
            let labels = exported(
                &Drops::default(),
                members,
                expiry,
                schema::DNS_WATCHLIST_QUERIES.name,
                labels,
                owner,
            );
            self.watchlist.get_or_create_shared(&labels).inc_by(n);
        }
    }

    /// `qname_class` of a question: from the whole name, before any budget folds it.
    fn class(&self, question: &Question) -> String {
        match question {
            Question::Named { qname, .. } => self.domains.classes.class(qname).to_string(),
            _ => UNKNOWN.to_string(),
        }
    }

    /// Publishes the hostname cache's size and evictions (cumulative there).
    pub fn record_host_cache(&mut self, entries: usize, evictions: u64) {
        self.cache_entries.set(entries as i64);
        self.cache_evictions
            .inc_by(evictions.saturating_sub(self.cache_evictions_seen));
        self.cache_evictions_seen = evictions;
    }

    /// Publishes the answer reader's counters (cumulative there, deltas here).
    pub fn record_answers(&mut self, stats: &AnswerStats) {
        let now = [
            ("cached", stats.cached.load(Ordering::Relaxed)),
            ("no_addresses", stats.no_addresses.load(Ordering::Relaxed)),
            ("undecodable", stats.undecodable.load(Ordering::Relaxed)),
            ("no_namespace", stats.no_namespace.load(Ordering::Relaxed)),
            ("name_too_long", stats.name_too_long.load(Ordering::Relaxed)),
            ("unmatched", self.unmatched),
        ];
        for (result, total) in now {
            let seen = self.answers_seen.entry(result).or_insert(0);
            self.answers
                .get_or_create(&ResultLabels {
                    result: result.to_string(),
                })
                .inc_by(total.saturating_sub(*seen));
            *seen = total;
        }
    }

    /// Adds responses the kernel found matching no pending query (this drain's delta).
    pub fn record_unmatched(&mut self, n: u64) {
        self.unmatched = self.unmatched.wrapping_add(n);
    }

    /// Removes every series of an expired owner; returns how many went.
    pub fn remove(&mut self, local: &LocalLabels) -> usize {
        let mut n = 0;
        for l in self.members.queries.take(local) {
            n += usize::from(self.queries.remove(&*l)) + usize::from(self.timeouts.remove(&*l));
        }
        for l in self.members.responses.take(local) {
            n += usize::from(self.responses.remove(&*l));
        }
        for l in self.members.latency.take(local) {
            n += usize::from(self.latency.remove(&*l));
        }
        for l in self.members.errors.take(local) {
            n += usize::from(self.parse_errors.remove(&*l));
        }
        for l in self.members.watchlist.take(local) {
            n += usize::from(self.watchlist.remove(&*l));
        }
        n
    }

    /// Sets the labels dropped per family.
    pub fn set_drops(&mut self, drops: Drops) {
        self.drops = drops;
    }

    /// Forgets the `qname` and `qtype` budgets of a scope no owner uses any more.
    pub fn forget_scope(&mut self, scope: &str) {
        self.qnames.forget(scope);
        self.qtypes.forget(scope);
        self.watch_names.forget_prefix(&format!("{scope}\0"));
        self.processes.forget(scope);
    }

    /// The `qname` and `qtype` labels of a question within the workload's budgets. A name the
    /// agent could not learn (evicted from the kernel's name map first) counts as `~other`
    /// too; a key the kernel folded (no name kept) is `~overflow` in both, a message over TCP
    /// counted without its question `~split`.
    fn question(
        &mut self,
        local: &LocalLabels,
        question: Question,
        family: &str,
    ) -> (String, String) {
        let scope = local.budget_scope();
        let (name, qtype) = match question {
            Question::Folded => return (OVERFLOW.to_string(), OVERFLOW.to_string()),
            Question::Split => return (SPLIT.to_string(), SPLIT.to_string()),
            Question::Named { qname, qtype } => (self.qnames.label(&scope, qname), qtype),
            Question::Unlearned { qtype } => ((OTHER.to_string(), true), qtype),
        };
        if name.1 {
            count_overflow(&self.overflow, family, "qname");
        }
        // Record types with a mnemonic first: numeric ones (TYPE65280) take at most half.
        let rank = if qtype.starts_with("TYPE") {
            Rank::Other
        } else {
            Rank::Preferred
        };
        let (qtype, folded) = self.qtypes.label_ranked(&scope, qtype, rank);
        if folded {
            count_overflow(&self.overflow, family, "qtype");
        }
        (name.0, qtype)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sockscope_common::dns::{
        DNS_KIND_ERROR, DNS_KIND_QUERY, DNS_KIND_RESPONSE, DNS_NO_LATENCY, DnsKey, DnsStats,
        name_hash,
    };

    use super::*;
    use crate::{
        drain::Batch,
        identity::domains::{DomainClasses, Watchlists},
        identity::{Identity, hosts::HostCache, labelled::Labeller, labels::LabelOptions},
    };

    /// The DNS families with a `qname` budget of `qnames`, and the overflow counter.
    fn metrics(qnames: usize) -> (Registry, DnsMetrics) {
        let mut registry = Registry::default();
        let overflow = Overflow::default();
        let m = DnsMetrics::register(
            &mut registry,
            Budgets {
                qnames,
                ..Budgets::default()
            },
            overflow.clone(),
        );
        registry.register(&crate::schema::SERIES_OVERFLOW, overflow);
        (registry, m)
    }

    fn key(name: u64, kind: u8, code: u8, bucket: u8) -> DnsKey {
        DnsKey {
            cgroup_id: 9,
            name_hash: name,
            qtype: 1,
            kind,
            code,
            bucket,
            _pad: [0; 3],
            comm: [0; 16],
        }
    }

    #[test]
    fn folds_counts_latency_errors_and_timeouts() {
        let (registry, mut m) = metrics(1);
        let mut id = Identity::new(
            "/nonexistent".into(),
            "/nonexistent".into(),
            None,
            HostCache::new(4, Duration::from_secs(1), Duration::from_secs(2)),
        );
        let (a, b) = (name_hash(b"\x01a\x00", 3), name_hash(b"\x01b\x00", 3));
        let qnames = HashMap::from([
            (a, Box::from(&b"\x01a\x00"[..])),
            (b, Box::from(&b"\x01b\x00"[..])),
        ]);
        let one = |n| DnsStats {
            count: n,
            sum_ns: 0,
        };
        let deltas = [
            (key(a, DNS_KIND_QUERY, 0, 0), one(3)),
            // Budget of 1: b folds into ~other.
            (key(b, DNS_KIND_QUERY, 0, 0), one(2)),
            // 2 responses in the 1ms bucket (index 3), 1.5ms in total; 1 without a query seen.
            (
                key(a, DNS_KIND_RESPONSE, 3, 3),
                DnsStats {
                    count: 2,
                    sum_ns: 1_500_000,
                },
            ),
            (key(a, DNS_KIND_RESPONSE, 3, DNS_NO_LATENCY), one(1)),
            // A name the agent never learnt.
            (key(77, DNS_KIND_QUERY, 0, 0), one(1)),
            (key(0, DNS_KIND_ERROR, 4, 0), one(5)),
        ];
        let batch = Batch {
            dns: deltas.to_vec(),
            dns_timeouts: vec![key(a, DNS_KIND_QUERY, 0, 0)],
            qnames,
            ..Batch::default()
        };
        let labeller = Labeller::new(LabelOptions::default());
        let labelled: Vec<_> = labeller.dns(&batch, &mut id).collect();
        m.fold(labelled, &mut Expiry::new(Duration::from_secs(60)));
        let mut out = String::new();
        out.push_str(&crate::export::text::openmetrics(&registry.snapshot()));
        let has = |s: &str| assert!(out.contains(s), "{s} missing in\n{out}");
        has(
            r#"sockscope_dns_queries_total{namespace="",workload="",workload_kind="",pod="",container="",qname="a",qtype="A",qname_class="external"} 3"#,
        );
        has(
            r#"sockscope_dns_queries_total{namespace="",workload="",workload_kind="",pod="",container="",qname="~other",qtype="A",qname_class="external"} 2"#,
        );
        has(
            r#"sockscope_dns_queries_total{namespace="",workload="",workload_kind="",pod="",container="",qname="~other",qtype="A",qname_class="~unknown"} 1"#,
        );
        has(
            r#"sockscope_dns_responses_total{namespace="",workload="",workload_kind="",pod="",container="",qname="a",qtype="A",rcode="NXDOMAIN",qname_class="external"} 3"#,
        );
        has(
            r#"sockscope_dns_latency_seconds_count{namespace="",workload="",workload_kind="",pod="",container="",rcode="NXDOMAIN"} 2"#,
        );
        has(
            r#"sockscope_dns_latency_seconds_sum{namespace="",workload="",workload_kind="",pod="",container="",rcode="NXDOMAIN"} 0.0015"#,
        );
        has(
            r#"sockscope_dns_latency_seconds_bucket{le="0.0005",namespace="",workload="",workload_kind="",pod="",container="",rcode="NXDOMAIN"} 0"#,
        );
        has(
            r#"sockscope_dns_latency_seconds_bucket{le="0.001",namespace="",workload="",workload_kind="",pod="",container="",rcode="NXDOMAIN"} 2"#,
        );
        has(
            r#"sockscope_dns_parse_errors_total{namespace="",workload="",workload_kind="",pod="",container="",reason="compression_in_question"} 5"#,
        );
        has(
            r#"sockscope_dns_timeouts_total{namespace="",workload="",workload_kind="",pod="",container="",qname="a",qtype="A",qname_class="external"} 1"#,
        );
        has(
            r#"sockscope_series_overflow_total{metric="sockscope_dns_queries_total",label="qname"} 2"#,
        );
    }

    #[test]
    fn watchlist_hits_are_never_other_and_names_are_classified() {
        let dir = std::env::temp_dir().join(format!("sockscope-dnswatch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let list = dir.join("bad");
        std::fs::write(&list, "*.bad.example\nexact.example\n").expect("write");
        let (registry, mut m) = metrics(1);
        m.set_domains(Domains {
            classes: DomainClasses::new("cluster.local", &[], &[]).expect("classes"),
            watchlists: Watchlists::load(&[("bad".into(), list.clone())]).expect("load"),
        });
        let mut id = Identity::new(
            "/nonexistent".into(),
            "/nonexistent".into(),
            None,
            HostCache::new(4, Duration::from_secs(1), Duration::from_secs(2)),
        );
        let names: [&[u8]; 4] = [
            b"\x02db\x07default\x03svc\x07cluster\x05local\x00",
            b"\x01x\x03bad\x07example\x00",
            b"\x01y\x03bad\x07example\x00",
            b"\x05exact\x07example\x00",
        ];
        let hashes: Vec<u64> = names.iter().map(|n| name_hash(n, n.len())).collect();
        let qnames = hashes
            .iter()
            .zip(names)
            .map(|(h, n)| (*h, Box::from(n)))
            .collect();
        let one = |n| DnsStats {
            count: n,
            sum_ns: 0,
        };
        let batch = Batch {
            dns: hashes
                .iter()
                .enumerate()
                .map(|(i, h)| (key(*h, DNS_KIND_QUERY, 0, 0), one(i as u64 + 1)))
                .collect(),
            qnames,
            ..Batch::default()
        };
        let labeller = Labeller::new(LabelOptions::default());
        let labelled: Vec<_> = labeller.dns(&batch, &mut id).collect();
        m.fold(labelled, &mut Expiry::new(Duration::from_secs(60)));
        let out = crate::export::text::openmetrics(&registry.snapshot());
        let has = |s: &str| assert!(out.contains(s), "{s} missing in\n{out}");
        let local = r#"namespace="",workload="",workload_kind="",pod="",container="""#;
        has(&format!(
            r#"sockscope_dns_queries_total{{{local},qname="db.default.svc.cluster.local",qtype="A",qname_class="cluster"}} 1"#
        ));
        // The budget of 1 folds the rest into ~other, each keeping its class.
        has(&format!(
            r#"sockscope_dns_queries_total{{{local},qname="~other",qtype="A",qname_class="external"}} 9"#
        ));
        // Watchlist hits keep their names, up to the budget (1): then the entry matched.
        has(&format!(
            r#"sockscope_dns_watchlist_queries_total{{{local},list="bad",qname="x.bad.example"}} 2"#
        ));
        has(&format!(
            r#"sockscope_dns_watchlist_queries_total{{{local},list="bad",qname="*.bad.example"}} 3"#
        ));
        has(&format!(
            r#"sockscope_dns_watchlist_queries_total{{{local},list="bad",qname="exact.example"}} 4"#
        ));
        has(r#"sockscope_dns_watchlist_entries{list="bad"} 2"#);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
