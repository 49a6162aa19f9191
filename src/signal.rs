//! The data that flows through pipelines: OTLP protobuf structs, one enum per batch.

use std::fmt;
use std::sync::Arc;

pub use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
pub use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
pub use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
pub use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::Metric;
pub use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
pub use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

/// One of the three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// Spans.
    Traces,
    /// Metric data points.
    Metrics,
    /// Log records.
    Logs,
}

impl Signal {
    /// All signals.
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    /// Its position in [`Signal::ALL`], for per-signal arrays.
    pub fn index(self) -> usize {
        match self {
            Signal::Traces => 0,
            Signal::Metrics => 1,
            Signal::Logs => 2,
        }
    }

    /// The name used in pipeline ids (`traces`, `metrics`, `logs`).
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    /// The unit items are counted in, as used in self-metric names.
    pub fn item_name(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "metric_points",
            Signal::Logs => "log_records",
        }
    }

    /// Parses a pipeline type.
    pub fn parse(s: &str) -> Option<Signal> {
        match s {
            "traces" => Some(Signal::Traces),
            "metrics" => Some(Signal::Metrics),
            "logs" => Some(Signal::Logs),
            _ => None,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A batch of telemetry of one signal.
#[derive(Debug, Clone, PartialEq)]
pub enum Telemetry {
    /// Spans grouped by resource and scope.
    Traces(Vec<ResourceSpans>),
    /// Metrics grouped by resource and scope.
    Metrics(Vec<ResourceMetrics>),
    /// Log records grouped by resource and scope.
    Logs(Vec<ResourceLogs>),
}

/// A batch already encoded as the body of an OTLP export request
/// (`Export{Trace,Metrics,Logs}ServiceRequest`), for exporters that send
/// OTLP protobuf as is.
///
/// The batch processor builds these when everything after it only sends
/// bytes (see `Consumer::takes_encoded`): it encodes each request as it
/// arrives, while the request's memory is still in cache, and drops the
/// structs at once. Encoded requests concatenate: two request bodies one
/// after the other are the body of the request holding both.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedBatch {
    /// The signal of the encoded data.
    pub signal: Signal,
    /// Number of items (spans, data points, log records) it holds.
    pub items: usize,
    /// The request body.
    pub bytes: bytes::Bytes,
    /// Its largest counts, when the receiver's one-pass check read them
    /// (None: whoever needs them reads the bytes again).
    pub shape: Option<Shape>,
}

/// The largest counts in a request: if they are within the `limits`
/// processor's limits, it would change nothing. Each is an upper bound of
/// what the processor looks at (it counts over every message of a kind,
/// not only those the processor bounds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// Most `KeyValue`s in one attribute list (any message's, but a map value's).
    pub attributes: usize,
    /// Longest string or bytes value (`AnyValue`), in bytes, anywhere.
    pub value_len: usize,
    /// Most elements in one array value or entries in one map value.
    pub elements: usize,
    /// Most events of one span.
    pub events: usize,
    /// Most links of one span.
    pub links: usize,
}

impl Telemetry {
    /// The signal of this batch.
    pub fn signal(&self) -> Signal {
        match self {
            Telemetry::Traces(_) => Signal::Traces,
            Telemetry::Metrics(_) => Signal::Metrics,
            Telemetry::Logs(_) => Signal::Logs,
        }
    }

    /// Number of items: spans, metric data points or log records.
    pub fn item_count(&self) -> usize {
        match self {
            Telemetry::Traces(rs) => rs
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum(),
            Telemetry::Metrics(rm) => rm
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .map(metric_points)
                .sum(),
            Telemetry::Logs(rl) => rl
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum(),
        }
    }

    /// True when the batch holds no items.
    pub fn is_empty(&self) -> bool {
        self.item_count() == 0
    }

    /// An empty batch of the given signal.
    pub fn empty(signal: Signal) -> Telemetry {
        match signal {
            Signal::Traces => Telemetry::Traces(Vec::new()),
            Signal::Metrics => Telemetry::Metrics(Vec::new()),
            Signal::Logs => Telemetry::Logs(Vec::new()),
        }
    }
}

/// Number of data points in one metric.
pub fn metric_points(m: &Metric) -> usize {
    match &m.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// Calls `f` on the attribute list of every data point of `m`, whatever its type.
pub fn for_each_point_attributes(m: &mut Metric, mut f: impl FnMut(&mut Vec<KeyValue>)) {
    match &mut m.data {
        Some(Data::Gauge(g)) => g.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        Some(Data::Sum(s)) => s.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        Some(Data::Histogram(h)) => h.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        Some(Data::ExponentialHistogram(h)) => {
            h.data_points.iter_mut().for_each(|p| f(&mut p.attributes))
        }
        Some(Data::Summary(s)) => s.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        None => {}
    }
}

/// A value as text: strings as they are, numbers and bools in their usual
/// form, bytes in hex, lists and maps in their debug form, absent as empty.
/// How processors compare, hash and show attribute values.
pub fn value_text(v: Option<&any_value::Value>) -> String {
    match v {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex::encode(b),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// An attribute with the given value.
pub fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

/// A string attribute.
pub fn string_attribute(key: &str, value: impl Into<String>) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.into()))
}

/// A batch as an exporter's queue holds it and its exporter sends it.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Structs, shared by every exporter of the pipeline.
    Structs(Arc<Telemetry>),
    /// Already encoded as an OTLP request (see [`EncodedBatch`]).
    Encoded(EncodedBatch),
}

impl Payload {
    /// The signal of the batch.
    pub fn signal(&self) -> Signal {
        match self {
            Payload::Structs(d) => d.signal(),
            Payload::Encoded(e) => e.signal,
        }
    }

    /// Its items (spans, data points, log records).
    pub fn item_count(&self) -> usize {
        match self {
            Payload::Structs(d) => d.item_count(),
            Payload::Encoded(e) => e.items,
        }
    }
}

/// Client metadata kept with a batch: the request headers (HTTP) or gRPC
/// metadata a receiver with `include_metadata: true` saw, names in lower
/// case, in the order received (a name may repeat). Empty for most data,
/// and then it allocates nothing; clones share one list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Metadata(Option<Arc<[(String, String)]>>);

impl Metadata {
    /// Metadata holding `pairs` (names are lower-cased).
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Metadata {
        let v: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        if v.is_empty() {
            Metadata(None)
        } else {
            Metadata(Some(v.into()))
        }
    }

    /// True when it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Every `(name, value)` pair.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .flat_map(|v| v.iter())
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The values of `name` (any case), in order.
    pub fn get<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value of `name`, if any.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Only the values of `keys`, in the order of `keys` (what the batch
    /// processor's `metadata_keys` keeps, and batches by).
    pub fn select(&self, keys: &[String]) -> Metadata {
        Metadata::new(keys.iter().flat_map(|k| {
            self.get(k)
                .map(move |v| (k.clone(), v.to_string()))
                .collect::<Vec<_>>()
        }))
    }
}
