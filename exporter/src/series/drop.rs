//! Per-metric label selection (config file `metrics: {<name>: {drop_labels: [...]}}`): the
//! values of dropped labels are emptied, so series that differ only in them add up into one.
//! An empty label value is the same as no label to Prometheus and OTLP consumers.

use std::collections::{BTreeMap, HashMap};

use crate::identity::labels::{FlowLabels, LocalLabels};

/// A label set some of whose labels can be emptied by name.
pub trait Droppable: Clone {
    /// Empties label `name` (unknown names are ignored: validated at start).
    fn drop_label(&mut self, name: &str);
    /// The local identity part.
    fn local(&self) -> &LocalLabels;
}

impl LocalLabels {
    /// Empties one of the local labels; false if `name` is not one.
    pub fn drop_label(&mut self, name: &str) -> bool {
        let field = match name {
            "namespace" => &mut self.namespace,
            "workload" => &mut self.workload,
            "workload_kind" => &mut self.workload_kind,
            "pod" => &mut self.pod,
            "container" => &mut self.container,
            _ => return false,
        };
        field.clear();
        true
    }
}

impl Droppable for FlowLabels {
    fn drop_label(&mut self, name: &str) {
        if self.local.drop_label(name) {
            return;
        }
        match name {
            "remote_namespace" => self.remote_namespace.clear(),
            "remote_workload" => self.remote_workload.clear(),
            "remote_host" => self.remote_host.clear(),
            "remote_class" => self.remote_class.clear(),
            "port" => self.port.clear(),
            "role" => self.role.clear(),
            "process" => self.optional.process = None,
            "remote_ip" => self.optional.remote_ip = None,
            _ => {}
        }
    }

    fn local(&self) -> &LocalLabels {
        &self.local
    }
}

/// The configured drops, by exposed family name.
#[derive(Debug, Default, Clone)]
pub struct Drops {
    by_family: HashMap<String, Vec<String>>,
}

impl Drops {
    /// From the config's `metrics:` section (validated there), keyed by registration name
    /// (counters without `_total`). An empty list is kept: it replaces a family's own default
    /// drops (the TCP timing histograms') with none.
    pub fn new(config: &BTreeMap<String, Vec<String>>) -> Self {
        Drops {
            by_family: config
                .iter()
                .map(|(k, v)| (k.strip_suffix("_total").unwrap_or(k).to_string(), v.clone()))
                .collect(),
        }
    }

    /// Whether family `family` (its registration name) drops any label.
    pub fn applies_to(&self, family: &str) -> bool {
        self.by_family.contains_key(family)
    }

    /// Whether family `family` drops label `label`.
    pub fn drops_label(&self, family: &str, label: &str) -> bool {
        self.by_family
            .get(family)
            .is_some_and(|names| names.iter().any(|n| n == label))
    }

    /// `labels` as family `family` (its registration name) exports them: borrowed when
    /// nothing is dropped.
    pub fn apply<'a, L: Droppable>(&self, family: &str, labels: &'a L) -> std::borrow::Cow<'a, L> {
        match self.by_family.get(family) {
            None => std::borrow::Cow::Borrowed(labels),
            Some(names) => {
                let mut l = labels.clone();
                for n in names {
                    l.drop_label(n);
                }
                std::borrow::Cow::Owned(l)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::labels::OptionalLabels;

    #[test]
    fn drops_only_what_is_configured() {
        let labels = FlowLabels {
            local: LocalLabels {
                namespace: "ns".into(),
                workload: "w".into(),
                workload_kind: "Deployment".into(),
                pod: "p".into(),
                container: "c".into(),
            },
            remote_namespace: "rn".into(),
            remote_workload: "rw".into(),
            remote_host: "h".into(),
            remote_class: "pod".into(),
            port: "80".into(),
            role: "client".into(),
            optional: OptionalLabels {
                process: Some("curl".into()),
                remote_ip: None,
            },
        };
        let drops = Drops::new(&BTreeMap::from([(
            "sockscope_tcp_sent_bytes_total".to_string(),
            vec!["pod".to_string(), "port".to_string(), "process".to_string()],
        )]));
        let d = drops.apply("sockscope_tcp_sent_bytes", &labels);
        assert_eq!((d.local.pod.as_str(), d.port.as_str()), ("", ""));
        assert_eq!(d.optional.process, None);
        assert_eq!(d.local.workload, "w");
        assert!(matches!(
            drops.apply("sockscope_udp_sent_bytes", &labels),
            std::borrow::Cow::Borrowed(_)
        ));
        {
            for l in crate::schema::FLOW_LABELS {
                // Every advertised label is droppable.
                let mut f = labels_with_all();
                f.drop_label(l);
                assert_ne!(f, labels_with_all(), "{l}");
            }
        }
        fn labels_with_all() -> FlowLabels {
            FlowLabels {
                local: LocalLabels {
                    namespace: "a".into(),
                    workload: "a".into(),
                    workload_kind: "a".into(),
                    pod: "a".into(),
                    container: "a".into(),
                },
                remote_namespace: "a".into(),
                remote_workload: "a".into(),
                remote_host: "a".into(),
                remote_class: "a".into(),
                port: "a".into(),
                role: "a".into(),
                optional: OptionalLabels {
                    process: Some("a".into()),
                    remote_ip: Some("a".into()),
                },
            }
        }
    }
}
