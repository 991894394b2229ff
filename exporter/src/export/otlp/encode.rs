//! Snapshot -> OTLP `ExportMetricsServiceRequest`, cumulative or delta.
//!
//! Names are the Prometheus family names (underscores; counters without `_total`, which an
//! OTLP -> Prometheus conversion adds back), so dashboards and rules work on either path.
//! Units follow the name suffix (`_bytes` -> `By`, `_seconds` -> `s`).

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

use super::snapshot::{Family, Kind, Number};

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

fn unit(name: &str) -> &'static str {
    if name.ends_with("_bytes") {
        "By"
    } else if name.ends_with("_seconds") {
        "s"
    } else {
        ""
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

    /// The request for `families` as of `now_ns`.
    pub fn encode(&self, families: &[Family], now_ns: u64) -> Pending {
        let delta = self.temporality == Temporality::Delta;
        let start = if delta { self.last_ns } else { self.start_ns };
        let temporality = if delta {
            AggregationTemporality::Delta
        } else {
            AggregationTemporality::Cumulative
        } as i32;
        let mut baseline = Vec::new();
        let mut metrics = Vec::with_capacity(families.len());
        for f in families {
            if f.series.is_empty() {
                continue;
            }
            let attrs = |labels: &[(String, String)]| -> Vec<KeyValue> {
                labels.iter().map(|(k, v)| kv(k, v)).collect()
            };
            let data = match f.kind {
                Kind::Gauge => Data::Gauge(Gauge {
                    data_points: f
                        .series
                        .iter()
                        .filter_map(|s| {
                            Some(NumberDataPoint {
                                attributes: attrs(&s.labels),
                                time_unix_nano: now_ns,
                                value: Some(number(s.value?)),
                                ..Default::default()
                            })
                        })
                        .collect(),
                }),
                Kind::Counter => Data::Sum(Sum {
                    data_points: f
                        .series
                        .iter()
                        .filter_map(|s| {
                            let v = s.value?;
                            let value = if delta {
                                let key = (f.name.clone(), s.labels.clone());
                                let before = match self.baseline.get(&key) {
                                    Some(Baseline::Number(b)) if *b <= v.as_f64() => *b,
                                    _ => 0.0,
                                };
                                baseline.push((key, Baseline::Number(v.as_f64())));
                                match v {
                                    Number::Int(i) => Value::AsInt(i - before as i64),
                                    Number::Double(d) => Value::AsDouble(d - before),
                                }
                            } else {
                                number(v)
                            };
                            Some(NumberDataPoint {
                                attributes: attrs(&s.labels),
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
                        .series
                        .iter()
                        .filter_map(|s| {
                            let h = s.histogram.as_ref()?;
                            let mut counts = per_bucket(&h.buckets);
                            let (mut sum, mut count) = (h.sum, h.count);
                            if delta {
                                let key = (f.name.clone(), s.labels.clone());
                                if let Some(Baseline::Histogram(bc, bs, bn)) =
                                    self.baseline.get(&key)
                                    && *bn <= count
                                    && bc.len() == counts.len()
                                {
                                    for (c, b) in counts.iter_mut().zip(bc) {
                                        *c = c.saturating_sub(*b);
                                    }
                                    sum -= bs;
                                    count -= bn;
                                }
                                baseline.push((
                                    key,
                                    Baseline::Histogram(per_bucket(&h.buckets), h.sum, h.count),
                                ));
                            }
                            Some(HistogramDataPoint {
                                attributes: attrs(&s.labels),
                                start_time_unix_nano: start,
                                time_unix_nano: now_ns,
                                count,
                                sum: Some(sum),
                                bucket_counts: counts,
                                explicit_bounds: h
                                    .buckets
                                    .iter()
                                    .map(|(le, _)| *le)
                                    .filter(|le| le.is_finite())
                                    .collect(),
                                ..Default::default()
                            })
                        })
                        .collect(),
                    aggregation_temporality: temporality,
                }),
            };
            metrics.push(Metric {
                name: f.name.clone(),
                description: f.help.clone(),
                unit: unit(&f.name).to_string(),
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

/// Cumulative `le` buckets -> per-bucket counts, as OTLP wants them.
fn per_bucket(buckets: &[(f64, u64)]) -> Vec<u64> {
    buckets
        .iter()
        .scan(0u64, |prev, (_, c)| {
            let n = c.saturating_sub(*prev);
            *prev = *c;
            Some(n)
        })
        .collect()
}

fn number(v: Number) -> Value {
    match v {
        Number::Int(i) => Value::AsInt(i),
        Number::Double(d) => Value::AsDouble(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::otlp::snapshot::parse;

    const T1: &str = "# HELP sockscope_tcp_sent_bytes Sent.\n# TYPE sockscope_tcp_sent_bytes counter\n\
        sockscope_tcp_sent_bytes_total{role=\"client\"} 100\n\
        # HELP sockscope_dns_latency_seconds L.\n# TYPE sockscope_dns_latency_seconds histogram\n\
        sockscope_dns_latency_seconds_sum{rcode=\"NOERROR\"} 0.5\n\
        sockscope_dns_latency_seconds_count{rcode=\"NOERROR\"} 2\n\
        sockscope_dns_latency_seconds_bucket{rcode=\"NOERROR\",le=\"0.1\"} 1\n\
        sockscope_dns_latency_seconds_bucket{rcode=\"NOERROR\",le=\"+Inf\"} 2\n";

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
        let t1 = parse(T1);
        let t2 = parse(
            &T1.replace("} 100", "} 250")
                .replace("_count{rcode=\"NOERROR\"} 2", "_count{rcode=\"NOERROR\"} 3")
                .replace("le=\"+Inf\"} 2", "le=\"+Inf\"} 3"),
        );
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
