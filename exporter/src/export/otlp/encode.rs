//! Snapshot -> the protobuf bytes of an OTLP `ExportMetricsServiceRequest`, cumulative or
//! delta.
//!
//! Names are the Prometheus family names (underscores; counters without `_total`, which an
//! OTLP -> Prometheus conversion adds back), so dashboards and rules work on either path.
//! Units and help come from the family schema; values keep their type (integer counters as
//! `as_int`).
//!
//! The bytes are written straight from the snapshot, in the order and form prost would write
//! the generated message (a test decodes and re-encodes them with prost and compares):
//! building the message first would allocate two strings per label per series (about 200,000
//! allocations for 10,000 flow series) only to serialize and free them, five times the time
//! of writing the bytes, and hold the whole request twice at the moment it is encoded.

use std::{borrow::Cow, collections::HashMap};

use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    metrics::v1::AggregationTemporality,
    resource::v1::Resource,
};
use prost::{
    Message,
    encoding::{WireType, encoded_len_varint, key_len},
};

pub use crate::config::otlp::Temporality;
use crate::{
    schema::Kind,
    series::snapshot::{LabelSet, Point, Snapshot, Value},
};

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
type SeriesKey = (&'static str, Vec<(String, String)>);

/// Builds requests; remembers what was last sent, for delta temporality.
pub struct Encoder {
    resource: Resource,
    scope: InstrumentationScope,
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
    /// The encoded `ExportMetricsServiceRequest`.
    pub body: Vec<u8>,
    baseline: Vec<(SeriesKey, Baseline)>,
    now_ns: u64,
}

/// One data point as it will be written.
enum Out<'a> {
    Int(i64),
    Double(f64),
    Histogram {
        counts: Cow<'a, [u64]>,
        bounds: &'a [f64],
        sum: f64,
        count: u64,
    },
}

/// One metric as it will be written, with the lengths its nested messages need.
struct MetricOut<'a> {
    name: &'static str,
    description: String,
    unit: &'static str,
    kind: Kind,
    points: Vec<(&'a Point, Out<'a>, usize)>,
    data_len: usize,
    len: usize,
}

// Field numbers of opentelemetry/proto/metrics/v1/metrics.proto and common.proto.
const REQUEST_RESOURCE_METRICS: u32 = 1;
const RESOURCE_METRICS_RESOURCE: u32 = 1;
const RESOURCE_METRICS_SCOPE_METRICS: u32 = 2;
const SCOPE_METRICS_SCOPE: u32 = 1;
const SCOPE_METRICS_METRICS: u32 = 2;
const METRIC_NAME: u32 = 1;
const METRIC_DESCRIPTION: u32 = 2;
const METRIC_UNIT: u32 = 3;
const METRIC_GAUGE: u32 = 5;
const METRIC_SUM: u32 = 7;
const METRIC_HISTOGRAM: u32 = 9;
const DATA_POINTS: u32 = 1;
const DATA_TEMPORALITY: u32 = 2;
const SUM_MONOTONIC: u32 = 3;
const POINT_START: u32 = 2;
const POINT_TIME: u32 = 3;
const NUMBER_AS_DOUBLE: u32 = 4;
const NUMBER_AS_INT: u32 = 6;
const NUMBER_ATTRIBUTES: u32 = 7;
const HISTOGRAM_COUNT: u32 = 4;
const HISTOGRAM_SUM: u32 = 5;
const HISTOGRAM_BUCKET_COUNTS: u32 = 6;
const HISTOGRAM_EXPLICIT_BOUNDS: u32 = 7;
const HISTOGRAM_ATTRIBUTES: u32 = 9;
const KEY_VALUE_KEY: u32 = 1;
const KEY_VALUE_VALUE: u32 = 2;
const ANY_VALUE_STRING: u32 = 1;

/// Length of a length-delimited field holding `len` bytes.
fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Length of a proto3 string field (absent when empty).
fn string_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        delimited_len(tag, s.len())
    }
}

/// Length of a proto3 fixed64/double field (absent when zero).
fn fixed_len(tag: u32, present: bool) -> usize {
    if present { key_len(tag) + 8 } else { 0 }
}

/// Length of a `KeyValue` with a string `AnyValue` (set even when empty: it is a oneof).
fn key_value_len(k: &str, v: &str) -> usize {
    string_len(KEY_VALUE_KEY, k)
        + delimited_len(KEY_VALUE_VALUE, delimited_len(ANY_VALUE_STRING, v.len()))
}

fn attributes_len(tag: u32, labels: &dyn LabelSet) -> usize {
    match labels.pairs() {
        Some(pairs) => pairs
            .map(|(k, v)| delimited_len(tag, key_value_len(k, v)))
            .sum(),
        None => {
            let mut n = 0;
            labels.visit(&mut |k, v| n += delimited_len(tag, key_value_len(k, v)));
            n
        }
    }
}

/// prost's `encode_varint` goes through `BufMut` a byte at a time; nearly every varint here is
/// one byte (a tag, a label's length), so that case is a plain push.
#[inline]
fn encode_varint(mut v: u64, buf: &mut Vec<u8>) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline]
fn encode_key(tag: u32, wire_type: WireType, buf: &mut Vec<u8>) {
    encode_varint(u64::from(tag << 3 | wire_type as u32), buf);
}

fn put_delimited(buf: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn put_string(buf: &mut Vec<u8>, tag: u32, s: &str) {
    if !s.is_empty() {
        put_delimited(buf, tag, s.len());
        buf.extend_from_slice(s.as_bytes());
    }
}

fn put_fixed(buf: &mut Vec<u8>, tag: u32, bits: u64) {
    encode_key(tag, WireType::SixtyFourBit, buf);
    buf.extend_from_slice(&bits.to_le_bytes());
}

fn put_attributes(buf: &mut Vec<u8>, tag: u32, labels: &dyn LabelSet) {
    labels.visit(&mut |k, v| {
        put_delimited(buf, tag, key_value_len(k, v));
        put_string(buf, KEY_VALUE_KEY, k);
        put_delimited(
            buf,
            KEY_VALUE_VALUE,
            delimited_len(ANY_VALUE_STRING, v.len()),
        );
        put_delimited(buf, ANY_VALUE_STRING, v.len());
        buf.extend_from_slice(v.as_bytes());
    });
}

fn put_message(buf: &mut Vec<u8>, tag: u32, m: &impl Message) {
    put_delimited(buf, tag, m.encoded_len());
    m.encode_raw(buf);
}

impl Encoder {
    /// `start_ns`: when the agent started (start time of every cumulative point).
    pub fn new(resource: Vec<KeyValue>, temporality: Temporality, start_ns: u64) -> Self {
        Encoder {
            resource: Resource {
                attributes: resource,
                ..Default::default()
            },
            scope: InstrumentationScope {
                name: "sockscope".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            },
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
        // First pass: every value (delta-adjusted) and every length.
        let metrics: Vec<MetricOut> = snapshot
            .families
            .iter()
            .map(|f| {
                let name = f.family.name;
                let kind = f.family.kind;
                let mut previous = |p: &Point, now: Baseline| -> Option<Baseline> {
                    let key = (name, p.label_pairs());
                    let before = self.baseline.get(&key).cloned();
                    baseline.push((key, now));
                    before
                };
                let points: Vec<(&Point, Out, usize)> = f
                    .points
                    .iter()
                    .filter_map(|p| {
                        let out = match (&p.value, kind) {
                            (Value::Histogram(h), Kind::Histogram) => {
                                let mut counts = Cow::Borrowed(&h.counts[..]);
                                let (mut sum, mut count) = (h.sum, h.count);
                                if delta {
                                    let now = Baseline::Histogram(h.counts.to_vec(), sum, count);
                                    if let Some(Baseline::Histogram(bc, bs, bn)) = previous(p, now)
                                        && bn <= count
                                        && bc.len() == counts.len()
                                    {
                                        for (c, b) in counts.to_mut().iter_mut().zip(&bc) {
                                            *c = c.saturating_sub(*b);
                                        }
                                        sum -= bs;
                                        count -= bn;
                                    }
                                }
                                Out::Histogram {
                                    counts,
                                    bounds: &h.bounds,
                                    sum,
                                    count,
                                }
                            }
                            (Value::Histogram(_), _) | (_, Kind::Histogram) => return None,
                            (v, Kind::Counter) if delta => {
                                let mut out = number(v);
                                let now = match out {
                                    Out::Int(i) => i as f64,
                                    Out::Double(d) => d,
                                    Out::Histogram { .. } => 0.0,
                                };
                                let before = match previous(p, Baseline::Number(now)) {
                                    Some(Baseline::Number(b)) if b <= now => b,
                                    _ => 0.0,
                                };
                                match &mut out {
                                    Out::Int(i) => *i -= before as i64,
                                    Out::Double(d) => *d -= before,
                                    Out::Histogram { .. } => {}
                                }
                                out
                            }
                            (v, _) => number(v),
                        };
                        let starts = kind != Kind::Gauge;
                        let len = point_len(&out, &*p.labels, starts && start != 0, now_ns != 0);
                        Some((p, out, len))
                    })
                    .collect();
                let mut data_len: usize = points
                    .iter()
                    .map(|(_, _, len)| delimited_len(DATA_POINTS, *len))
                    .sum();
                if kind != Kind::Gauge && temporality != 0 {
                    data_len += key_len(DATA_TEMPORALITY) + encoded_len_varint(temporality as u64);
                }
                if kind == Kind::Counter {
                    data_len += key_len(SUM_MONOTONIC) + 1;
                }
                let description = format!("{}.", f.family.help);
                let unit = f.family.unit.ucum();
                let len = string_len(METRIC_NAME, name)
                    + string_len(METRIC_DESCRIPTION, &description)
                    + string_len(METRIC_UNIT, unit)
                    + delimited_len(data_tag(kind), data_len);
                MetricOut {
                    name,
                    description,
                    unit,
                    kind,
                    points,
                    data_len,
                    len,
                }
            })
            .collect();
        let scope_metrics_len = delimited_len(SCOPE_METRICS_SCOPE, self.scope.encoded_len())
            + metrics
                .iter()
                .map(|m| delimited_len(SCOPE_METRICS_METRICS, m.len))
                .sum::<usize>();
        let resource_metrics_len =
            delimited_len(RESOURCE_METRICS_RESOURCE, self.resource.encoded_len())
                + delimited_len(RESOURCE_METRICS_SCOPE_METRICS, scope_metrics_len);
        let total = delimited_len(REQUEST_RESOURCE_METRICS, resource_metrics_len);

        // Second pass: the bytes, into a buffer of exactly their size.
        let mut buf = Vec::with_capacity(total);
        put_delimited(&mut buf, REQUEST_RESOURCE_METRICS, resource_metrics_len);
        put_message(&mut buf, RESOURCE_METRICS_RESOURCE, &self.resource);
        put_delimited(&mut buf, RESOURCE_METRICS_SCOPE_METRICS, scope_metrics_len);
        put_message(&mut buf, SCOPE_METRICS_SCOPE, &self.scope);
        for m in &metrics {
            put_delimited(&mut buf, SCOPE_METRICS_METRICS, m.len);
            put_string(&mut buf, METRIC_NAME, m.name);
            put_string(&mut buf, METRIC_DESCRIPTION, &m.description);
            put_string(&mut buf, METRIC_UNIT, m.unit);
            put_delimited(&mut buf, data_tag(m.kind), m.data_len);
            let starts = if m.kind != Kind::Gauge { start } else { 0 };
            for (p, out, len) in &m.points {
                put_delimited(&mut buf, DATA_POINTS, *len);
                put_point(&mut buf, out, &*p.labels, starts, now_ns);
            }
            if m.kind != Kind::Gauge && temporality != 0 {
                encode_key(DATA_TEMPORALITY, WireType::Varint, &mut buf);
                encode_varint(temporality as u64, &mut buf);
            }
            if m.kind == Kind::Counter {
                encode_key(SUM_MONOTONIC, WireType::Varint, &mut buf);
                buf.push(1);
            }
        }
        debug_assert_eq!(buf.len(), total);
        Pending {
            body: buf,
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

fn data_tag(kind: Kind) -> u32 {
    match kind {
        Kind::Gauge => METRIC_GAUGE,
        Kind::Counter => METRIC_SUM,
        Kind::Histogram => METRIC_HISTOGRAM,
    }
}

/// A counter or gauge value as OTLP carries it; integers stay integers.
fn number(v: &Value) -> Out<'static> {
    match *v {
        Value::Counter(n) => match i64::try_from(n) {
            Ok(i) => Out::Int(i),
            Err(_) => Out::Double(n as f64),
        },
        Value::Gauge(i) => Out::Int(i),
        Value::CounterF64(d) | Value::GaugeF64(d) => Out::Double(d),
        Value::Histogram(_) => Out::Int(0),
    }
}

/// Length of a `NumberDataPoint` or `HistogramDataPoint`.
fn point_len(out: &Out, labels: &dyn LabelSet, start: bool, time: bool) -> usize {
    let times = fixed_len(POINT_START, start) + fixed_len(POINT_TIME, time);
    match out {
        Out::Int(_) | Out::Double(_) => {
            times + key_len(NUMBER_AS_INT) + 8 + attributes_len(NUMBER_ATTRIBUTES, labels)
        }
        Out::Histogram {
            counts,
            bounds,
            count,
            ..
        } => {
            let packed = |tag, n: usize| if n == 0 { 0 } else { delimited_len(tag, 8 * n) };
            times
                + fixed_len(HISTOGRAM_COUNT, *count != 0)
                + fixed_len(HISTOGRAM_SUM, true)
                + packed(HISTOGRAM_BUCKET_COUNTS, counts.len())
                + packed(HISTOGRAM_EXPLICIT_BOUNDS, bounds.len())
                + attributes_len(HISTOGRAM_ATTRIBUTES, labels)
        }
    }
}

/// Writes a point's fields in tag order, as prost does.
fn put_point(buf: &mut Vec<u8>, out: &Out, labels: &dyn LabelSet, start: u64, now: u64) {
    if start != 0 {
        put_fixed(buf, POINT_START, start);
    }
    if now != 0 {
        put_fixed(buf, POINT_TIME, now);
    }
    match out {
        Out::Double(d) => {
            put_fixed(buf, NUMBER_AS_DOUBLE, d.to_bits());
            put_attributes(buf, NUMBER_ATTRIBUTES, labels);
        }
        Out::Int(i) => {
            put_fixed(buf, NUMBER_AS_INT, *i as u64);
            put_attributes(buf, NUMBER_ATTRIBUTES, labels);
        }
        Out::Histogram {
            counts,
            bounds,
            sum,
            count,
        } => {
            if *count != 0 {
                put_fixed(buf, HISTOGRAM_COUNT, *count);
            }
            put_fixed(buf, HISTOGRAM_SUM, sum.to_bits());
            if !counts.is_empty() {
                put_delimited(buf, HISTOGRAM_BUCKET_COUNTS, 8 * counts.len());
                for c in counts.iter() {
                    buf.extend_from_slice(&c.to_le_bytes());
                }
            }
            if !bounds.is_empty() {
                put_delimited(buf, HISTOGRAM_EXPLICIT_BOUNDS, 8 * bounds.len());
                for b in bounds.iter() {
                    buf.extend_from_slice(&b.to_bits().to_le_bytes());
                }
            }
            put_attributes(buf, HISTOGRAM_ATTRIBUTES, labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use opentelemetry_proto::tonic::{
        collector::metrics::v1::ExportMetricsServiceRequest,
        metrics::v1::{metric::Data, number_data_point},
    };

    use super::*;
    use crate::{
        schema,
        series::snapshot::{FamilySnapshot, HistogramValue, NoLabels},
    };

    struct Labels(Vec<(&'static str, &'static str)>);

    impl LabelSet for Labels {
        fn visit(&self, f: &mut dyn FnMut(&'static str, &str)) {
            for (k, v) in &self.0 {
                f(k, v)
            }
        }
    }

    fn point(labels: Vec<(&'static str, &'static str)>, value: Value) -> Point {
        Point {
            labels: Arc::new(Labels(labels)),
            value,
        }
    }

    /// Bytes sent so far, and a latency histogram with one sample <= 0.1 s and `slow` above;
    /// plus a float counter, gauges of both kinds and a series without labels.
    fn snap(sent: u64, slow: u64) -> Snapshot {
        let family = |family, points| FamilySnapshot { family, points };
        Snapshot {
            families: vec![
                family(
                    &schema::TCP_SENT_BYTES,
                    vec![
                        point(vec![("role", "client")], Value::Counter(sent)),
                        point(
                            vec![("role", ""), ("remote_host", "é\"x")],
                            Value::Counter(0),
                        ),
                        point(vec![], Value::Counter(u64::MAX)),
                    ],
                ),
                family(
                    &schema::DNS_LATENCY,
                    vec![point(
                        vec![("rcode", "NOERROR")],
                        Value::Histogram(Box::new(HistogramValue {
                            bounds: Arc::from([0.1]),
                            counts: Box::from([1, slow]),
                            sum: 0.5,
                            count: 1 + slow,
                        })),
                    )],
                ),
                family(
                    &schema::BPF_PROGRAM_RUN_SECONDS,
                    vec![point(vec![("program", "p")], Value::CounterF64(0.25))],
                ),
                family(
                    &schema::BPF_MAP_ENTRIES,
                    vec![point(vec![("map", "m")], Value::Gauge(-3))],
                ),
                family(
                    &schema::DRAIN_INTERVAL,
                    vec![Point {
                        labels: Arc::new(NoLabels),
                        value: Value::GaugeF64(5.0),
                    }],
                ),
                family(
                    &schema::DRAIN_DURATION,
                    vec![Point {
                        labels: Arc::new(NoLabels),
                        value: Value::Histogram(Box::new(HistogramValue {
                            bounds: Arc::from([]),
                            counts: Box::from([0]),
                            sum: 0.0,
                            count: 0,
                        })),
                    }],
                ),
            ],
        }
    }

    fn decode(p: &Pending) -> ExportMetricsServiceRequest {
        let r = ExportMetricsServiceRequest::decode(&p.body[..]).expect("decodes");
        // Exactly the bytes prost writes for the same message.
        assert_eq!(r.encode_to_vec(), p.body);
        r
    }

    fn sum_value(p: &Pending) -> (number_data_point::Value, u64) {
        let r = decode(p);
        let m = &r.resource_metrics[0].scope_metrics[0].metrics[0];
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

    fn histogram(p: &Pending) -> (Vec<u64>, Vec<f64>, u64) {
        let r = decode(p);
        match &r.resource_metrics[0].scope_metrics[0].metrics[1].data {
            Some(Data::Histogram(h)) => {
                let d = &h.data_points[0];
                (d.bucket_counts.clone(), d.explicit_bounds.clone(), d.count)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn same_bytes_as_prost_for_every_kind_of_value() {
        let enc = Encoder::new(
            vec![kv("service.name", "sockscope"), kv("host.name", "")],
            Temporality::Cumulative,
            10,
        );
        let r = decode(&enc.encode(&snap(1, 2), 50));
        let metrics = &r.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(metrics.len(), 6);
        assert_eq!(metrics[2].unit, "s");
        assert_eq!(
            metrics[0].description,
            format!("{}.", schema::TCP_SENT_BYTES.help)
        );
        match &metrics[0].data {
            Some(Data::Sum(s)) => {
                assert_eq!(
                    s.data_points[2].value,
                    Some(number_data_point::Value::AsDouble(u64::MAX as f64))
                );
                let empty = &s.data_points[1].attributes[0];
                assert_eq!(empty.key, "role");
                assert!(empty.value.is_some());
            }
            other => panic!("{other:?}"),
        }
        // Zero times and the agent's start at 0 are left out, as proto3 does.
        let enc = Encoder::new(vec![], Temporality::Delta, 0);
        decode(&enc.encode(&snap(1, 2), 0));
        decode(&enc.encode(&Snapshot::default(), 7));
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
        assert_eq!(sum_value(&p), (number_data_point::Value::AsInt(250), 10));
        assert_eq!(histogram(&p), (vec![1, 2], vec![0.1], 3));

        let mut enc = Encoder::new(vec![], Temporality::Delta, 10);
        let p1 = enc.encode(&t1, 20);
        assert_eq!(sum_value(&p1), (number_data_point::Value::AsInt(100), 10));
        // Not delivered: the next delta still starts from the agent's start.
        let p1b = enc.encode(&t1, 30);
        assert_eq!(sum_value(&p1b), (number_data_point::Value::AsInt(100), 10));
        enc.delivered(p1b);
        let p2 = enc.encode(&t2, 40);
        assert_eq!(sum_value(&p2), (number_data_point::Value::AsInt(150), 30));
        let (counts, _, count) = histogram(&p2);
        assert_eq!((counts, count), (vec![0, 1], 1));
    }
}
