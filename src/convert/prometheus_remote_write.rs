//! OTLP metrics → Prometheus remote write 1.0 (`WriteRequest`, snappy),
//! named as the Prometheus exporter names them ([`super::prometheus`]):
//!
//! - gauges and non-monotonic sums: one sample per point;
//! - cumulative monotonic sums: `<name>_total`;
//! - cumulative histograms: `<name>_bucket{le=…}` (cumulative counts, up to
//!   `+Inf`), `<name>_sum`, `<name>_count`;
//! - summaries: `<name>{quantile=…}`, `<name>_sum`, `<name>_count`;
//! - delta sums and histograms, and exponential histograms, have no remote
//!   write 1.0 form: they are counted as dropped (the Collector drops them too);
//! - a point flagged "no recorded value" becomes Prometheus's stale marker.
//!
//! Labels: point attributes, `job` / `instance` from `service.namespace`,
//! `service.name` and `service.instance.id`, every resource attribute with
//! `resource_to_telemetry`, then the external labels (which win), then
//! `__name__`; sorted by name. `target_info` carries the resource of each
//! `job`/`instance` once per request.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, DataPointFlags, Metric,
    ResourceMetrics,
};
use prost::Message;

use super::prometheus::{job_instance, label_value, labels, metric_name, number, sanitize_name};
use crate::proto::prometheus::{
    metric_metadata::MetricType, Label, MetricMetadata, Sample, TimeSeries, WriteRequest,
};

/// Prometheus's stale marker: a NaN with this bit pattern.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// How series are named and labelled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// Prefix of every metric name (`<namespace>_`).
    pub namespace: String,
    /// Every resource attribute becomes a label.
    pub resource_to_telemetry: bool,
    /// Labels added to every series (they win over attributes).
    pub external_labels: Vec<(String, String)>,
    /// Unit and `_total` suffixes, as the Prometheus exporter adds them.
    pub add_metric_suffixes: bool,
    /// A `target_info` series per resource.
    pub target_info: bool,
    /// Type, unit and help of each family in `WriteRequest.metadata`.
    pub send_metadata: bool,
}

/// What a batch became.
#[derive(Debug, Default)]
pub struct Converted {
    /// Series, samples oldest first, labels sorted.
    pub series: Vec<TimeSeries>,
    /// One entry per family (with `send_metadata`).
    pub metadata: Vec<MetricMetadata>,
    /// Points with no remote write 1.0 form.
    pub dropped: usize,
}

type Key = Vec<(String, String)>;

#[derive(Default)]
struct Builder {
    series: BTreeMap<Key, Vec<Sample>>,
    metadata: BTreeMap<String, MetricMetadata>,
    dropped: usize,
}

impl Builder {
    fn push(&mut self, base: &Key, name: &str, extra: &[(&str, String)], value: f64, t_ms: i64) {
        let mut key: Key = base.clone();
        for (k, v) in extra {
            key.retain(|(n, _)| n != k);
            key.push(((*k).to_string(), v.clone()));
        }
        key.retain(|(n, _)| n != "__name__");
        key.push(("__name__".into(), name.to_string()));
        key.sort();
        self.series.entry(key).or_default().push(Sample {
            value,
            timestamp: t_ms,
        });
    }
}

fn ms(ns: u64) -> i64 {
    (ns / 1_000_000) as i64
}

fn value_of(flags: u32, v: f64) -> f64 {
    if flags & DataPointFlags::NoRecordedValueMask as u32 != 0 {
        f64::from_bits(STALE_NAN)
    } else {
        v
    }
}

fn number_value(v: &Option<number_data_point::Value>) -> f64 {
    match v {
        Some(number_data_point::Value::AsDouble(d)) => *d,
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        None => 0.0,
    }
}

/// Converts a batch of OTLP metrics.
pub fn convert(rms: &[ResourceMetrics], opts: &Options) -> Converted {
    let mut b = Builder::default();
    let mut targets: BTreeMap<Key, i64> = BTreeMap::new();
    for rm in rms {
        let res: &[KeyValue] = rm
            .resource
            .as_ref()
            .map_or(&[], |r| r.attributes.as_slice());
        let ji = job_instance(res);
        let res_pairs: Vec<(String, String)> = res
            .iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    label_value(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                )
            })
            .collect();
        let base_for = |attrs: &[KeyValue]| -> Key {
            let mut pairs: Vec<(String, String)> = Vec::new();
            if opts.resource_to_telemetry {
                pairs.extend(res_pairs.iter().cloned());
            }
            pairs.extend(attrs.iter().map(|kv| {
                (
                    kv.key.clone(),
                    label_value(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                )
            }));
            let mut key = labels(pairs);
            for (k, v) in ji.iter().chain(opts.external_labels.iter()) {
                key.retain(|(n, _)| n != k);
                key.push((k.clone(), v.clone()));
            }
            key
        };
        let mut latest = 0i64;
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                latest = latest.max(convert_metric(&mut b, m, opts, &base_for));
            }
        }
        if opts.target_info && !ji.is_empty() && latest > 0 {
            let mut pairs: Vec<(String, String)> = res_pairs
                .iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "service.name" | "service.namespace" | "service.instance.id"
                    )
                })
                .cloned()
                .collect();
            pairs.extend(ji.iter().cloned());
            let key = labels(pairs);
            let t = targets.entry(key).or_insert(latest);
            *t = (*t).max(latest);
        }
    }
    for (key, t) in targets {
        b.push(&key, "target_info", &[], 1.0, t);
    }
    let series = b
        .series
        .into_iter()
        .map(|(key, mut samples)| {
            samples.sort_by_key(|s| s.timestamp);
            TimeSeries {
                labels: key
                    .into_iter()
                    .map(|(name, value)| Label { name, value })
                    .collect(),
                samples,
            }
        })
        .collect();
    Converted {
        series,
        metadata: if opts.send_metadata {
            b.metadata.into_values().collect()
        } else {
            Vec::new()
        },
        dropped: b.dropped,
    }
}

/// Adds a metric's series; the latest point time (ms) it had.
fn convert_metric(
    b: &mut Builder,
    m: &Metric,
    opts: &Options,
    base_for: &dyn Fn(&[KeyValue]) -> Key,
) -> i64 {
    let name = |counter: bool, gauge: bool| {
        if opts.add_metric_suffixes {
            metric_name(&opts.namespace, &m.name, &m.unit, counter, gauge)
        } else if opts.namespace.is_empty() {
            sanitize_name(&m.name)
        } else {
            format!(
                "{}_{}",
                sanitize_name(&opts.namespace),
                sanitize_name(&m.name)
            )
        }
    };
    let meta = |b: &mut Builder, family: &str, t: MetricType| {
        b.metadata
            .entry(family.to_string())
            .or_insert(MetricMetadata {
                r#type: t as i32,
                metric_family_name: family.to_string(),
                help: m.description.clone(),
                unit: m.unit.clone(),
            });
    };
    let cumulative = AggregationTemporality::Cumulative as i32;
    let mut latest = 0;
    match &m.data {
        Some(Data::Sum(s)) if s.is_monotonic && s.aggregation_temporality != cumulative => {
            b.dropped += s.data_points.len();
        }
        Some(Data::Gauge(_)) | Some(Data::Sum(_)) => {
            // Gauges and non-monotonic sums are gauges; cumulative
            // monotonic sums counters.
            let (points, counter) = match &m.data {
                Some(Data::Sum(s)) => (&s.data_points, s.is_monotonic),
                Some(Data::Gauge(g)) => (&g.data_points, false),
                _ => return latest,
            };
            let n = name(counter, !counter);
            let kind = if counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            meta(b, &n, kind);
            for p in points {
                let t = ms(p.time_unix_nano);
                latest = latest.max(t);
                b.push(
                    &base_for(&p.attributes),
                    &n,
                    &[],
                    value_of(p.flags, number_value(&p.value)),
                    t,
                );
            }
        }
        Some(Data::Histogram(h)) if h.aggregation_temporality != cumulative => {
            b.dropped += h.data_points.len();
        }
        Some(Data::Histogram(h)) => {
            let n = name(false, false);
            meta(b, &n, MetricType::Histogram);
            for p in &h.data_points {
                let t = ms(p.time_unix_nano);
                latest = latest.max(t);
                let base = base_for(&p.attributes);
                let mut cumulative_count = 0u64;
                for (i, bound) in p.explicit_bounds.iter().enumerate() {
                    cumulative_count += p.bucket_counts.get(i).copied().unwrap_or(0);
                    b.push(
                        &base,
                        &format!("{n}_bucket"),
                        &[("le", number(*bound))],
                        value_of(p.flags, cumulative_count as f64),
                        t,
                    );
                }
                b.push(
                    &base,
                    &format!("{n}_bucket"),
                    &[("le", "+Inf".into())],
                    value_of(p.flags, p.count as f64),
                    t,
                );
                if let Some(sum) = p.sum {
                    b.push(&base, &format!("{n}_sum"), &[], value_of(p.flags, sum), t);
                }
                b.push(
                    &base,
                    &format!("{n}_count"),
                    &[],
                    value_of(p.flags, p.count as f64),
                    t,
                );
            }
        }
        Some(Data::Summary(s)) => {
            let n = name(false, false);
            meta(b, &n, MetricType::Summary);
            for p in &s.data_points {
                let t = ms(p.time_unix_nano);
                latest = latest.max(t);
                let base = base_for(&p.attributes);
                for q in &p.quantile_values {
                    b.push(
                        &base,
                        &n,
                        &[("quantile", number(q.quantile))],
                        value_of(p.flags, q.value),
                        t,
                    );
                }
                b.push(&base, &format!("{n}_sum"), &[], value_of(p.flags, p.sum), t);
                b.push(
                    &base,
                    &format!("{n}_count"),
                    &[],
                    value_of(p.flags, p.count as f64),
                    t,
                );
            }
        }
        Some(Data::ExponentialHistogram(h)) => b.dropped += h.data_points.len(),
        None => {}
    }
    latest
}

/// Cuts the series into requests of at most `max_bytes` encoded (0: one
/// request); metadata goes with the first. A series larger than the limit
/// alone is sent alone.
pub fn requests(c: Converted, max_bytes: usize) -> Vec<WriteRequest> {
    let mut out = Vec::new();
    let mut current = WriteRequest {
        timeseries: Vec::new(),
        metadata: c.metadata,
    };
    let mut size = current.encoded_len();
    for ts in c.series {
        let len = ts.encoded_len() + 8;
        if max_bytes > 0 && size + len > max_bytes && !current.timeseries.is_empty() {
            out.push(std::mem::take(&mut current));
            size = 0;
        }
        size += len;
        current.timeseries.push(ts);
    }
    if !current.timeseries.is_empty() || !current.metadata.is_empty() {
        out.push(current);
    }
    out
}

/// A request's body: its encoding, snappy-compressed (block format).
pub fn body(req: &WriteRequest) -> Vec<u8> {
    let raw = req.encode_to_vec();
    // Compressing a byte slice into a fresh buffer cannot fail for inputs
    // under snappy's 4 GiB limit; an empty body is sent if it ever does.
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::string_attribute;
    use opentelemetry_proto::tonic::metrics::v1::{
        summary_data_point::ValueAtQuantile, ExponentialHistogram, ExponentialHistogramDataPoint,
        Gauge, Histogram, HistogramDataPoint, NumberDataPoint, ScopeMetrics, Sum, Summary,
        SummaryDataPoint,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;

    const T: u64 = 1_800_000_000_000_000_000;

    fn batch(metrics: Vec<Metric>) -> Vec<ResourceMetrics> {
        vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    string_attribute("service.name", "agent"),
                    string_attribute("service.instance.id", "i-1"),
                    string_attribute("cloud.region", "us-west-2"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }]
    }

    fn find<'a>(c: &'a Converted, name: &str, extra: &[(&str, &str)]) -> Option<&'a TimeSeries> {
        c.series.iter().find(|s| {
            s.labels
                .iter()
                .any(|l| l.name == "__name__" && l.value == name)
                && extra
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|l| l.name == *k && l.value == *v))
        })
    }

    fn opts() -> Options {
        Options {
            add_metric_suffixes: true,
            target_info: true,
            external_labels: vec![("cluster".into(), "prod".into())],
            ..Default::default()
        }
    }

    #[test]
    fn every_kind_of_metric_becomes_series() {
        let p = |v: number_data_point::Value, attrs: Vec<KeyValue>| NumberDataPoint {
            attributes: attrs,
            time_unix_nano: T,
            value: Some(v),
            ..Default::default()
        };
        let c = convert(
            &batch(vec![
                Metric {
                    name: "agent.queue".into(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: vec![p(
                            number_data_point::Value::AsDouble(2.5),
                            vec![string_attribute("cluster", "mine")],
                        )],
                    })),
                    ..Default::default()
                },
                Metric {
                    name: "agent.invocations".into(),
                    data: Some(Data::Sum(Sum {
                        data_points: vec![p(
                            number_data_point::Value::AsInt(7),
                            vec![string_attribute("gen_ai.operation.name", "chat")],
                        )],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                },
                Metric {
                    name: "agent.deltas".into(),
                    data: Some(Data::Sum(Sum {
                        data_points: vec![p(number_data_point::Value::AsInt(1), vec![])],
                        aggregation_temporality: AggregationTemporality::Delta as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                },
                Metric {
                    name: "agent.duration".into(),
                    unit: "s".into(),
                    data: Some(Data::Histogram(Histogram {
                        data_points: vec![HistogramDataPoint {
                            time_unix_nano: T,
                            count: 6,
                            sum: Some(9.5),
                            bucket_counts: vec![1, 2, 3],
                            explicit_bounds: vec![0.5, 1.0],
                            ..Default::default()
                        }],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    })),
                    ..Default::default()
                },
                Metric {
                    name: "rpc.latency".into(),
                    data: Some(Data::Summary(Summary {
                        data_points: vec![SummaryDataPoint {
                            time_unix_nano: T,
                            count: 4,
                            sum: 2.0,
                            quantile_values: vec![ValueAtQuantile {
                                quantile: 0.99,
                                value: 1.5,
                            }],
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                },
                Metric {
                    name: "exp".into(),
                    data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                        data_points: vec![ExponentialHistogramDataPoint::default()],
                        ..Default::default()
                    })),
                    ..Default::default()
                },
            ]),
            &opts(),
        );
        let t_ms = (T / 1_000_000) as i64;
        let g = find(
            &c,
            "agent_queue",
            &[("job", "agent"), ("instance", "i-1"), ("cluster", "prod")],
        )
        .unwrap();
        assert_eq!(
            g.samples,
            vec![Sample {
                value: 2.5,
                timestamp: t_ms
            }]
        );
        assert!(find(
            &c,
            "agent_invocations_total",
            &[("gen_ai_operation_name", "chat")]
        )
        .is_some());
        let bucket = |le: &str| {
            find(&c, "agent_duration_seconds_bucket", &[("le", le)])
                .unwrap()
                .samples[0]
                .value
        };
        assert_eq!(
            (bucket("0.5"), bucket("1"), bucket("+Inf")),
            (1.0, 3.0, 6.0)
        );
        assert_eq!(
            find(&c, "agent_duration_seconds_sum", &[]).unwrap().samples[0].value,
            9.5
        );
        assert_eq!(
            find(&c, "agent_duration_seconds_count", &[])
                .unwrap()
                .samples[0]
                .value,
            6.0
        );
        assert_eq!(
            find(&c, "rpc_latency", &[("quantile", "0.99")])
                .unwrap()
                .samples[0]
                .value,
            1.5
        );
        assert_eq!(
            find(&c, "rpc_latency_count", &[]).unwrap().samples[0].value,
            4.0
        );
        let ti = find(
            &c,
            "target_info",
            &[("job", "agent"), ("cloud_region", "us-west-2")],
        )
        .unwrap();
        assert_eq!(ti.samples[0].value, 1.0);
        assert_eq!(c.dropped, 2, "the delta sum and the exponential histogram");
        // Labels are sorted, as remote write requires.
        for s in &c.series {
            let names: Vec<&str> = s.labels.iter().map(|l| l.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted);
        }
    }

    #[test]
    fn requests_stay_under_the_byte_limit_and_round_trip_through_snappy() {
        let points: Vec<NumberDataPoint> = (0..500)
            .map(|i| NumberDataPoint {
                attributes: vec![string_attribute("n", i.to_string())],
                time_unix_nano: T,
                value: Some(number_data_point::Value::AsDouble(i as f64)),
                ..Default::default()
            })
            .collect();
        let c = convert(
            &batch(vec![Metric {
                name: "g".into(),
                data: Some(Data::Gauge(Gauge {
                    data_points: points,
                })),
                ..Default::default()
            }]),
            &Options::default(),
        );
        let reqs = requests(c, 4096);
        assert!(reqs.len() > 1);
        let mut total = 0;
        for r in &reqs {
            assert!(r.encoded_len() <= 4096, "{}", r.encoded_len());
            let raw = snap::raw::Decoder::new().decompress_vec(&body(r)).unwrap();
            let back = WriteRequest::decode(raw.as_slice()).unwrap();
            total += back.timeseries.len();
        }
        assert_eq!(total, 500);
    }
}
