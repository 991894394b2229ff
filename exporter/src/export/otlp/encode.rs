//! Snapshot -> OTLP `ExportMetricsServiceRequest`, cumulative or delta.
//!
//! Names are the Prometheus family names (underscores; counters without `_total`, which an
//! OTLP -> Prometheus conversion adds back), so dashboards and rules work on either path.
//! Units and help come from the family schema; values keep their type (integer counters as
//! `as_int`), straight from the snapshot the drain published.

use std::collections::HashMap;

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    metrics::v1::{
        AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point::Value,
    },
    resource::v1::Resource,
};

use crate::{
    schema::Kind,
    series::snapshot::{self, Point, Snapshot},
};

/// How counters and histograms are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Temporality {
    /// Totals since the agent started (the default, like /metrics).
    Cumulative,
    /// Increase since the previous successful export.
    Delta,
}

/// A string attribute.
pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// A series: its family and labels.
type SeriesKey = (String, Vec<(String, String)>);

/// Builds requests; remembers what was last sent, for delta temporality.
pub struct Encoder {
    resource: Vec<KeyValue>,
    temporality: Temporality,
    start_ns: u64,
    /// Delta: per (family, labels), the cumulative value the last successful export covered.
    baseline: HashMap<SeriesKey, Baseline>,
    /// Delta: when the last successful export was taken.
    last_ns: u64,
}

#[derive(Clone, Debug)]
enum Baseline {
    Number(f64),
    Histogram(Vec<u64>, f64, u64),
}

/// A request and what it would make the new baseline, applied only once it is delivered.
pub struct Pending {
    /// The request.
    pub request: ExportMetricsServiceRequest,
    baseline: Vec<(SeriesKey, Baseline)>,
    now_ns: u64,
}

impl Encoder {
    /// `start_ns`: when the agent started (start time of every cumulative point).
    pub fn new(resource: Vec<KeyValue>, temporality: Temporality, start_ns: u64) -> Self {
        Encoder {
            resource,
            temporality,
            start_ns,
            baseline: HashMap::new(),
            last_ns: start_ns,
        }
    }

    /// The request for `snapshot` as of `now_ns`.
    pub fn encode(&self, snapshot: &Snapshot, now_ns: u64) -> Pending {
        let delta = self.temporality == Temporality::Delta;
        let start = if delta { self.last_ns } else { self.start_ns };
        let temporality = if delta {
            AggregationTemporality::Delta
        } else {
            AggregationTemporality::Cumulative
        } as i32;
        let mut baseline = Vec::new();
        let mut metrics = Vec::with_capacity(snapshot.families.len());
        for f in &snapshot.families {
            let name = f.family.name;
            // Delta: the point's key and what the last delivered export covered of it.
            let mut previous = |p: &Point, now: Baseline| -> Option<Baseline> {
                let key = (name.to_string(), p.label_pairs());
                let before = self.baseline.get(&key).cloned();
                baseline.push((key, now));
                before
            };
            let data = match f.family.kind {
                Kind::Gauge => Data::Gauge(Gauge {
                    data_points: f
                        .points
                        .iter()
                        .filter_map(|p| {
                            Some(NumberDataPoint {
                                attributes: attributes(p),
                                time_unix_nano: now_ns,
                                value: Some(number(&p.value)?),
                                ..Default::default()
                            })
                        })
                        .collect(),
                }),
                Kind::Counter => Data::Sum(Sum {
                    data_points: f
                        .points
                        .iter()
                        .filter_map(|p| {
                            let mut value = number(&p.value)?;
                            if delta {
                                let now = as_f64(value);
                                let before = match previous(p, Baseline::Number(now)) {
                                    Some(Baseline::Number(b)) if b <= now => b,
                                    _ => 0.0,
                                };
                                value = match value {
                                    Value::AsInt(i) => Value::AsInt(i - before as i64),
                                    Value::AsDouble(d) => Value::AsDouble(d - before),
                                };
                            }
                            Some(NumberDataPoint {
                                attributes: attributes(p),
                                start_time_unix_nano: start,
                                time_unix_nano: now_ns,
                                value: Some(value),
                                ..Default::default()
                            })
                        })
                        .collect(),
                    aggregation_temporality: temporality,
                    is_monotonic: true,
                }),
                Kind::Histogram => Data::Histogram(Histogram {
                    data_points: f
                        .points
                        .iter()
                        .filter_map(|p| {
                            let snapshot::Value::Histogram(h) = &p.value else {
                                return None;
                            };
                            let mut counts = h.counts.to_vec();
                            let (mut sum, mut count) = (h.sum, h.count);
                            if delta {
                                let now = Baseline::Histogram(counts.clone(), sum, count);
                                if let Some(Baseline::Histogram(bc, bs, bn)) = previous(p, now)
                                    && bn <= count
                                    && bc.len() == counts.len()
                                {
                                    for (c, b) in counts.iter_mut().zip(&bc) {
                                        *c = c.saturating_sub(*b);
                                    }
                                    sum -= bs;
                                    count -= bn;
                                }
                            }
                            Some(HistogramDataPoint {
                                attributes: attributes(p),
                                start_time_unix_nano: start,
                                time_unix_nano: now_ns,
                                count,
                                sum: Some(sum),
                                bucket_counts: counts,
                                explicit_bounds: h.bounds.to_vec(),
                                ..Default::default()
                            })
                        })
                        .collect(),
                    aggregation_temporality: temporality,
                }),
            };
            metrics.push(Metric {
                name: name.to_string(),
                description: format!("{}.", f.family.help),
                unit: f.family.unit.ucum().to_string(),
                data: Some(data),
                ..Default::default()
            });
        }
        Pending {
            request: ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    resource: Some(Resource {
                        attributes: self.resource.clone(),
                        ..Default::default()
                    }),
                    scope_metrics: vec![ScopeMetrics {
                        scope: Some(InstrumentationScope {
                            name: "sockscope".into(),
                            version: env!("CARGO_PKG_VERSION").into(),
                            ..Default::default()
                        }),
                        metrics,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            },
            baseline,
            now_ns,
        }
    }

    /// The request was delivered: deltas continue from it. (A failed one changes nothing,
    /// so the next delta covers the gap and no count is lost.)
    pub fn delivered(&mut self, pending: Pending) {
        if self.temporality == Temporality::Delta {
            self.baseline = pending.baseline.into_iter().collect();
            self.last_ns = pending.now_ns;
        }
    }
}

/// The attributes of a point: its labels in exposition order.
fn attributes(p: &Point) -> Vec<KeyValue> {
    let mut out = Vec::with_capacity(13);
    p.labels.visit(&mut |k, v| out.push(kv(k, v)));
    out
}

/// A counter or gauge value as OTLP carries it; integers stay integers.
fn number(v: &snapshot::Value) -> Option<Value> {
    Some(match *v {
        snapshot::Value::Counter(n) => match i64::try_from(n) {
            Ok(i) => Value::AsInt(i),
            Err(_) => Value::AsDouble(n as f64),
        },
        snapshot::Value::Gauge(i) => Value::AsInt(i),
        snapshot::Value::CounterF64(d) | snapshot::Value::GaugeF64(d) => Value::AsDouble(d),
        snapshot::Value::Histogram(_) => return None,
    })
}

fn as_f64(v: Value) -> f64 {
    match v {
        Value::AsInt(i) => i as f64,
        Value::AsDouble(d) => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::{
        schema,
        series::snapshot::{FamilySnapshot, HistogramValue, LabelSet},
    };

    struct One(&'static str, &'static str);

    impl LabelSet for One {
        fn visit(&self, f: &mut dyn FnMut(&'static str, &str)) {
            f(self.0, self.1)
        }
    }

    /// Bytes sent so far, and a latency histogram with one sample <= 0.1 s and `slow` above.
    fn snap(sent: u64, slow: u64) -> Snapshot {
        Snapshot {
            families: vec![
                FamilySnapshot {
                    family: &schema::TCP_SENT_BYTES,
                    points: vec![Point {
                        labels: Arc::new(One("role", "client")),
                        value: snapshot::Value::Counter(sent),
                    }],
                },
                FamilySnapshot {
                    family: &schema::DNS_LATENCY,
                    points: vec![Point {
                        labels: Arc::new(One("rcode", "NOERROR")),
                        value: snapshot::Value::Histogram(Box::new(HistogramValue {
                            bounds: Arc::from([0.1]),
                            counts: Box::from([1, slow]),
                            sum: 0.5,
                            count: 1 + slow,
                        })),
                    }],
                },
            ],
        }
    }

    fn sum_value(p: &Pending) -> (Value, u64) {
        let m = &p.request.resource_metrics[0].scope_metrics[0].metrics[0];
        assert_eq!(
            (m.name.as_str(), m.unit.as_str()),
            ("sockscope_tcp_sent_bytes", "By")
        );
        match &m.data {
            Some(Data::Sum(s)) => (
                s.data_points[0].value.expect("value"),
                s.data_points[0].start_time_unix_nano,
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cumulative_and_delta() {
        let t1 = snap(100, 1);
        let t2 = snap(250, 2);
        let enc = Encoder::new(
            vec![kv("service.name", "sockscope")],
            Temporality::Cumulative,
            10,
        );
        let p = enc.encode(&t2, 50);
        assert_eq!(sum_value(&p), (Value::AsInt(250), 10));
        let h = match &p.request.resource_metrics[0].scope_metrics[0].metrics[1].data {
            Some(Data::Histogram(h)) => h.data_points[0].clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (h.bucket_counts.clone(), h.explicit_bounds.clone(), h.count),
            (vec![1, 2], vec![0.1], 3)
        );

        let mut enc = Encoder::new(vec![], Temporality::Delta, 10);
        let p1 = enc.encode(&t1, 20);
        assert_eq!(sum_value(&p1), (Value::AsInt(100), 10));
        // Not delivered: the next delta still starts from the agent's start.
        let p1b = enc.encode(&t1, 30);
        assert_eq!(sum_value(&p1b), (Value::AsInt(100), 10));
        enc.delivered(p1b);
        let p2 = enc.encode(&t2, 40);
        assert_eq!(sum_value(&p2), (Value::AsInt(150), 30));
        let h = match &p2.request.resource_metrics[0].scope_metrics[0].metrics[1].data {
            Some(Data::Histogram(h)) => h.data_points[0].clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!((h.bucket_counts.clone(), h.count), (vec![0, 1], 1));
    }
}
