//! OTLP/JSON, as the OTLP specification defines it, to and from the
//! `opentelemetry-proto` structs.
//!
//! Decoding follows the proto3 JSON mapping with OTLP's deviations: trace and
//! span ids are hex (not base64), field names may be lowerCamelCase or the
//! original snake_case, enums may be numbers or names, 64-bit integers may be
//! strings or numbers, and unknown fields are ignored. Encoding writes
//! lowerCamelCase keys, hex ids, enums as numbers and 64-bit integers as
//! strings, and omits default values.

use base64::Engine;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric, number_data_point,
    summary_data_point::ValueAtQuantile, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use serde_json::{Map, Number, Value};

use crate::signal::{Signal, Telemetry};

/// Why an OTLP/JSON document could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid OTLP/JSON at {path}: {message}")]
pub struct JsonError {
    /// JSON path of the offending value, e.g. `resourceSpans[0].scopeSpans[1].spans[3].traceId`.
    pub path: String,
    /// What was wrong.
    pub message: String,
}

type Obj = Map<String, Value>;

struct Ctx {
    path: Vec<String>,
}

impl Ctx {
    fn err(&self, message: impl Into<String>) -> JsonError {
        let mut path = String::from("$");
        for p in &self.path {
            if p.starts_with('[') {
                path.push_str(p);
            } else {
                path.push('.');
                path.push_str(p);
            }
        }
        JsonError {
            path,
            message: message.into(),
        }
    }

    fn with<T>(
        &mut self,
        seg: impl Into<String>,
        f: impl FnOnce(&mut Ctx) -> Result<T, JsonError>,
    ) -> Result<T, JsonError> {
        self.path.push(seg.into());
        let r = f(self);
        self.path.pop();
        r
    }
}

/// Decodes the body of an OTLP/HTTP JSON export request of `signal`.
pub fn decode(signal: Signal, body: &[u8]) -> Result<Telemetry, JsonError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| JsonError {
        path: "$".into(),
        message: e.to_string(),
    })?;
    decode_value(signal, &value)
}

/// Decodes an already parsed OTLP/JSON export request of `signal`.
pub fn decode_value(signal: Signal, value: &Value) -> Result<Telemetry, JsonError> {
    let mut cx = Ctx { path: Vec::new() };
    let root = as_obj(&mut cx, value)?;
    Ok(match signal {
        Signal::Traces => Telemetry::Traces(list(
            &mut cx,
            root,
            "resourceSpans",
            "resource_spans",
            resource_spans,
        )?),
        Signal::Metrics => Telemetry::Metrics(list(
            &mut cx,
            root,
            "resourceMetrics",
            "resource_metrics",
            resource_metrics,
        )?),
        Signal::Logs => Telemetry::Logs(list(
            &mut cx,
            root,
            "resourceLogs",
            "resource_logs",
            resource_logs,
        )?),
    })
}

// ---------------------------------------------------------------- helpers

fn as_obj<'a>(cx: &mut Ctx, v: &'a Value) -> Result<&'a Obj, JsonError> {
    match v {
        Value::Object(o) => Ok(o),
        other => Err(cx.err(format!("expected an object, found {}", kind(other)))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Finds a field by its JSON name or its proto name; `null` counts as absent.
fn get<'a>(o: &'a Obj, camel: &str, snake: &str) -> Option<&'a Value> {
    o.get(camel)
        .or_else(|| if camel == snake { None } else { o.get(snake) })
        .filter(|v| !v.is_null())
}

fn list<T>(
    cx: &mut Ctx,
    o: &Obj,
    camel: &str,
    snake: &str,
    f: impl Fn(&mut Ctx, &Value) -> Result<T, JsonError>,
) -> Result<Vec<T>, JsonError> {
    match get(o, camel, snake) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => cx.with(camel, |cx| {
            items
                .iter()
                .enumerate()
                .map(|(i, v)| cx.with(format!("[{i}]"), |cx| f(cx, v)))
                .collect()
        }),
        Some(other) => cx.with(camel, |cx| {
            Err(cx.err(format!("expected an array, found {}", kind(other))))
        }),
    }
}

fn opt_msg<T>(
    cx: &mut Ctx,
    o: &Obj,
    camel: &str,
    snake: &str,
    f: impl FnOnce(&mut Ctx, &Value) -> Result<T, JsonError>,
) -> Result<Option<T>, JsonError> {
    match get(o, camel, snake) {
        None => Ok(None),
        Some(v) => cx.with(camel, |cx| f(cx, v)).map(Some),
    }
}

fn string(cx: &mut Ctx, o: &Obj, camel: &str, snake: &str) -> Result<String, JsonError> {
    match get(o, camel, snake) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => cx.with(camel, |cx| {
            Err(cx.err(format!("expected a string, found {}", kind(other))))
        }),
    }
}

fn boolean(cx: &mut Ctx, o: &Obj, camel: &str, snake: &str) -> Result<bool, JsonError> {
    match get(o, camel, snake) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => cx.with(camel, |cx| {
            Err(cx.err(format!("expected a boolean, found {}", kind(other))))
        }),
    }
}

/// An integer given as a JSON number (possibly in exponent form) or a string.
fn integer(cx: &mut Ctx, v: &Value) -> Result<i128, JsonError> {
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Ok(u as i128)
            } else if let Some(i) = n.as_i64() {
                Ok(i as i128)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() == 0.0 && f.abs() < 1.8e19 {
                    Ok(f as i128)
                } else {
                    Err(cx.err(format!("expected an integer, found {n}")))
                }
            }
        }
        Value::String(s) => {
            let t = s.trim();
            t.parse::<i128>()
                .or_else(|_| {
                    t.parse::<f64>()
                        .ok()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 1.8e19)
                        .map(|f| f as i128)
                        .ok_or(())
                })
                .map_err(|_| cx.err(format!("expected an integer, found string {s:?}")))
        }
        other => Err(cx.err(format!("expected an integer, found {}", kind(other)))),
    }
}

fn ranged<T: TryFrom<i128>>(cx: &mut Ctx, v: &Value, what: &str) -> Result<T, JsonError> {
    let i = integer(cx, v)?;
    T::try_from(i).map_err(|_| cx.err(format!("{i} is out of range for {what}")))
}

fn u64_field(cx: &mut Ctx, o: &Obj, camel: &str, snake: &str) -> Result<u64, JsonError> {
    match get(o, camel, snake) {
        None => Ok(0),
        Some(v) => cx.with(camel, |cx| ranged(cx, v, "uint64")),
    }
}

fn u32_field(cx: &mut Ctx, o: &Obj, camel: &str, snake: &str) -> Result<u32, JsonError> {
    match get(o, camel, snake) {
        None => Ok(0),
        Some(v) => cx.with(camel, |cx| ranged(cx, v, "uint32")),
    }
}

fn i32_field(cx: &mut Ctx, o: &Obj, camel: &str, snake: &str) -> Result<i32, JsonError> {
    match get(o, camel, snake) {
        None => Ok(0),
        Some(v) => cx.with(camel, |cx| ranged(cx, v, "int32")),
    }
}

fn double(cx: &mut Ctx, v: &Value) -> Result<f64, JsonError> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| cx.err("number is not representable as a double")),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            t => t
                .trim()
                .parse::<f64>()
                .map_err(|_| cx.err(format!("expected a number, found string {s:?}"))),
        },
        other => Err(cx.err(format!("expected a number, found {}", kind(other)))),
    }
}

fn f64_field(cx: &mut Ctx, o: &Obj, camel: &str, snake: &str) -> Result<f64, JsonError> {
    match get(o, camel, snake) {
        None => Ok(0.0),
        Some(v) => cx.with(camel, |cx| double(cx, v)),
    }
}

fn opt_f64_field(
    cx: &mut Ctx,
    o: &Obj,
    camel: &str,
    snake: &str,
) -> Result<Option<f64>, JsonError> {
    match get(o, camel, snake) {
        None => Ok(None),
        Some(v) => cx.with(camel, |cx| double(cx, v)).map(Some),
    }
}

/// An enum given as a number or as one of its names.
fn enum_field(
    cx: &mut Ctx,
    o: &Obj,
    camel: &str,
    snake: &str,
    names: &[&str],
) -> Result<i32, JsonError> {
    match get(o, camel, snake) {
        None => Ok(0),
        Some(Value::String(s)) => match names.iter().position(|n| *n == s) {
            Some(i) => Ok(i as i32),
            None => match s.parse::<i32>() {
                Ok(i) => Ok(i),
                Err(_) => cx.with(camel, |cx| Err(cx.err(format!("unknown enum value {s:?}")))),
            },
        },
        Some(v) => cx.with(camel, |cx| ranged(cx, v, "enum")),
    }
}

/// A trace or span id in hex (OTLP/JSON), of `len` bytes; empty means unset.
fn id_field(
    cx: &mut Ctx,
    o: &Obj,
    camel: &str,
    snake: &str,
    len: usize,
) -> Result<Vec<u8>, JsonError> {
    match get(o, camel, snake) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => cx.with(camel, |cx| {
            let bytes = hex::decode(s).map_err(|e| cx.err(format!("id {s:?} is not hex: {e}")))?;
            if bytes.len() != len {
                return Err(cx.err(format!(
                    "id {s:?} has {} bytes; expected {len}",
                    bytes.len()
                )));
            }
            Ok(bytes)
        }),
        Some(other) => cx.with(camel, |cx| {
            Err(cx.err(format!("expected a hex string, found {}", kind(other))))
        }),
    }
}

fn u64_list(cx: &mut Ctx, o: &Obj, camel: &str, snake: &str) -> Result<Vec<u64>, JsonError> {
    list(cx, o, camel, snake, |cx, v| ranged(cx, v, "uint64"))
}

fn f64_list(cx: &mut Ctx, o: &Obj, camel: &str, snake: &str) -> Result<Vec<f64>, JsonError> {
    list(cx, o, camel, snake, double)
}

fn string_list(cx: &mut Ctx, o: &Obj, camel: &str, snake: &str) -> Result<Vec<String>, JsonError> {
    list(cx, o, camel, snake, |cx, v| match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(cx.err(format!("expected a string, found {}", kind(other)))),
    })
}

// ---------------------------------------------------------------- common

fn any_value(cx: &mut Ctx, v: &Value) -> Result<AnyValue, JsonError> {
    let o = as_obj(cx, v)?;
    let value = if let Some(s) = get(o, "stringValue", "string_value") {
        match s {
            Value::String(s) => Some(any_value::Value::StringValue(s.clone())),
            other => {
                return cx.with("stringValue", |cx| {
                    Err(cx.err(format!("expected a string, found {}", kind(other))))
                })
            }
        }
    } else if get(o, "boolValue", "bool_value").is_some() {
        Some(any_value::Value::BoolValue(boolean(
            cx,
            o,
            "boolValue",
            "bool_value",
        )?))
    } else if let Some(i) = get(o, "intValue", "int_value") {
        Some(any_value::Value::IntValue(
            cx.with("intValue", |cx| ranged(cx, i, "int64"))?,
        ))
    } else if let Some(d) = get(o, "doubleValue", "double_value") {
        Some(any_value::Value::DoubleValue(
            cx.with("doubleValue", |cx| double(cx, d))?,
        ))
    } else if let Some(a) = get(o, "arrayValue", "array_value") {
        Some(any_value::Value::ArrayValue(cx.with(
            "arrayValue",
            |cx| {
                let ao = as_obj(cx, a)?;
                Ok(ArrayValue {
                    values: list(cx, ao, "values", "values", any_value)?,
                })
            },
        )?))
    } else if let Some(k) = get(o, "kvlistValue", "kvlist_value") {
        Some(any_value::Value::KvlistValue(cx.with(
            "kvlistValue",
            |cx| {
                let ko = as_obj(cx, k)?;
                Ok(KeyValueList {
                    values: list(cx, ko, "values", "values", key_value)?,
                })
            },
        )?))
    } else if let Some(b) = get(o, "bytesValue", "bytes_value") {
        Some(any_value::Value::BytesValue(cx.with(
            "bytesValue",
            |cx| {
                match b {
                    Value::String(s) => base64::engine::general_purpose::STANDARD
                        .decode(s)
                        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s))
                        .map_err(|e| cx.err(format!("bytesValue is not base64: {e}"))),
                    other => {
                        Err(cx.err(format!("expected a base64 string, found {}", kind(other))))
                    }
                }
            },
        )?))
    } else {
        None
    };
    Ok(AnyValue { value })
}

fn key_value(cx: &mut Ctx, v: &Value) -> Result<KeyValue, JsonError> {
    let o = as_obj(cx, v)?;
    Ok(KeyValue {
        key: string(cx, o, "key", "key")?,
        value: opt_msg(cx, o, "value", "value", any_value)?,
        key_strindex: i32_field(cx, o, "keyStrindex", "key_strindex")?,
    })
}

fn attributes(cx: &mut Ctx, o: &Obj) -> Result<Vec<KeyValue>, JsonError> {
    list(cx, o, "attributes", "attributes", key_value)
}

fn resource(cx: &mut Ctx, v: &Value) -> Result<Resource, JsonError> {
    let o = as_obj(cx, v)?;
    Ok(Resource {
        attributes: attributes(cx, o)?,
        dropped_attributes_count: u32_field(
            cx,
            o,
            "droppedAttributesCount",
            "dropped_attributes_count",
        )?,
        entity_refs: list(cx, o, "entityRefs", "entity_refs", |cx, v| {
            let e = as_obj(cx, v)?;
            Ok(EntityRef {
                schema_url: string(cx, e, "schemaUrl", "schema_url")?,
                r#type: string(cx, e, "type", "type")?,
                id_keys: string_list(cx, e, "idKeys", "id_keys")?,
                description_keys: string_list(cx, e, "descriptionKeys", "description_keys")?,
            })
        })?,
    })
}

fn scope(cx: &mut Ctx, v: &Value) -> Result<InstrumentationScope, JsonError> {
    let o = as_obj(cx, v)?;
    Ok(InstrumentationScope {
        name: string(cx, o, "name", "name")?,
        version: string(cx, o, "version", "version")?,
        attributes: attributes(cx, o)?,
        dropped_attributes_count: u32_field(
            cx,
            o,
            "droppedAttributesCount",
            "dropped_attributes_count",
        )?,
    })
}

// ---------------------------------------------------------------- traces

const SPAN_KINDS: &[&str] = &[
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];
const STATUS_CODES: &[&str] = &["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];

fn resource_spans(cx: &mut Ctx, v: &Value) -> Result<ResourceSpans, JsonError> {
    let o = as_obj(cx, v)?;
    Ok(ResourceSpans {
        resource: opt_msg(cx, o, "resource", "resource", resource)?,
        scope_spans: list(cx, o, "scopeSpans", "scope_spans", |cx, v| {
            let s = as_obj(cx, v)?;
            Ok(ScopeSpans {
                scope: opt_msg(cx, s, "scope", "scope", scope)?,
                spans: list(cx, s, "spans", "spans", span)?,
                schema_url: string(cx, s, "schemaUrl", "schema_url")?,
            })
        })?,
        schema_url: string(cx, o, "schemaUrl", "schema_url")?,
    })
}

fn span(cx: &mut Ctx, v: &Value) -> Result<Span, JsonError> {
    let o = as_obj(cx, v)?;
    Ok(Span {
        trace_id: id_field(cx, o, "traceId", "trace_id", 16)?,
        span_id: id_field(cx, o, "spanId", "span_id", 8)?,
        trace_state: string(cx, o, "traceState", "trace_state")?,
        parent_span_id: id_field(cx, o, "parentSpanId", "parent_span_id", 8)?,
        flags: u32_field(cx, o, "flags", "flags")?,
        name: string(cx, o, "name", "name")?,
        kind: enum_field(cx, o, "kind", "kind", SPAN_KINDS)?,
        start_time_unix_nano: u64_field(cx, o, "startTimeUnixNano", "start_time_unix_nano")?,
        end_time_unix_nano: u64_field(cx, o, "endTimeUnixNano", "end_time_unix_nano")?,
        attributes: attributes(cx, o)?,
        dropped_attributes_count: u32_field(
            cx,
            o,
            "droppedAttributesCount",
            "dropped_attributes_count",
        )?,
        events: list(cx, o, "events", "events", |cx, v| {
            let e = as_obj(cx, v)?;
            Ok(span::Event {
                time_unix_nano: u64_field(cx, e, "timeUnixNano", "time_unix_nano")?,
                name: string(cx, e, "name", "name")?,
                attributes: attributes(cx, e)?,
                dropped_attributes_count: u32_field(
                    cx,
                    e,
                    "droppedAttributesCount",
                    "dropped_attributes_count",
                )?,
            })
        })?,
        dropped_events_count: u32_field(cx, o, "droppedEventsCount", "dropped_events_count")?,
        links: list(cx, o, "links", "links", |cx, v| {
            let l = as_obj(cx, v)?;
            Ok(span::Link {
                trace_id: id_field(cx, l, "traceId", "trace_id", 16)?,
                span_id: id_field(cx, l, "spanId", "span_id", 8)?,
                trace_state: string(cx, l, "traceState", "trace_state")?,
                attributes: attributes(cx, l)?,
                dropped_attributes_count: u32_field(
                    cx,
                    l,
                    "droppedAttributesCount",
                    "dropped_attributes_count",
                )?,
                flags: u32_field(cx, l, "flags", "flags")?,
            })
        })?,
        dropped_links_count: u32_field(cx, o, "droppedLinksCount", "dropped_links_count")?,
        status: opt_msg(cx, o, "status", "status", |cx, v| {
            let s = as_obj(cx, v)?;
            Ok(Status {
                message: string(cx, s, "message", "message")?,
                code: enum_field(cx, s, "code", "code", STATUS_CODES)?,
            })
        })?,
    })
}

// ---------------------------------------------------------------- metrics

const TEMPORALITIES: &[&str] = &[
    "AGGREGATION_TEMPORALITY_UNSPECIFIED",
    "AGGREGATION_TEMPORALITY_DELTA",
    "AGGREGATION_TEMPORALITY_CUMULATIVE",
];

fn resource_metrics(cx: &mut Ctx, v: &Value) -> Result<ResourceMetrics, JsonError> {
    let o = as_obj(cx, v)?;
    Ok(ResourceMetrics {
        resource: opt_msg(cx, o, "resource", "resource", resource)?,
        scope_metrics: list(cx, o, "scopeMetrics", "scope_metrics", |cx, v| {
            let s = as_obj(cx, v)?;
            Ok(ScopeMetrics {
                scope: opt_msg(cx, s, "scope", "scope", scope)?,
                metrics: list(cx, s, "metrics", "metrics", metric)?,
                schema_url: string(cx, s, "schemaUrl", "schema_url")?,
            })
        })?,
        schema_url: string(cx, o, "schemaUrl", "schema_url")?,
    })
}

fn metric(cx: &mut Ctx, v: &Value) -> Result<Metric, JsonError> {
    let o = as_obj(cx, v)?;
    let data = if let Some(g) = get(o, "gauge", "gauge") {
        Some(metric::Data::Gauge(cx.with("gauge", |cx| {
            let g = as_obj(cx, g)?;
            Ok(Gauge {
                data_points: list(cx, g, "dataPoints", "data_points", number_point)?,
            })
        })?))
    } else if let Some(s) = get(o, "sum", "sum") {
        Some(metric::Data::Sum(cx.with("sum", |cx| {
            let s = as_obj(cx, s)?;
            Ok(Sum {
                data_points: list(cx, s, "dataPoints", "data_points", number_point)?,
                aggregation_temporality: enum_field(
                    cx,
                    s,
                    "aggregationTemporality",
                    "aggregation_temporality",
                    TEMPORALITIES,
                )?,
                is_monotonic: boolean(cx, s, "isMonotonic", "is_monotonic")?,
            })
        })?))
    } else if let Some(h) = get(o, "histogram", "histogram") {
        Some(metric::Data::Histogram(cx.with("histogram", |cx| {
            let h = as_obj(cx, h)?;
            Ok(Histogram {
                data_points: list(cx, h, "dataPoints", "data_points", histogram_point)?,
                aggregation_temporality: enum_field(
                    cx,
                    h,
                    "aggregationTemporality",
                    "aggregation_temporality",
                    TEMPORALITIES,
                )?,
            })
        })?))
    } else if let Some(h) = get(o, "exponentialHistogram", "exponential_histogram") {
        Some(metric::Data::ExponentialHistogram(cx.with(
            "exponentialHistogram",
            |cx| {
                let h = as_obj(cx, h)?;
                Ok(ExponentialHistogram {
                    data_points: list(cx, h, "dataPoints", "data_points", exp_histogram_point)?,
                    aggregation_temporality: enum_field(
                        cx,
                        h,
                        "aggregationTemporality",
                        "aggregation_temporality",
                        TEMPORALITIES,
                    )?,
                })
            },
        )?))
    } else if let Some(s) = get(o, "summary", "summary") {
        Some(metric::Data::Summary(cx.with("summary", |cx| {
            let s = as_obj(cx, s)?;
            Ok(Summary {
                data_points: list(cx, s, "dataPoints", "data_points", summary_point)?,
            })
        })?))
    } else {
        None
    };
    Ok(Metric {
        name: string(cx, o, "name", "name")?,
        description: string(cx, o, "description", "description")?,
        unit: string(cx, o, "unit", "unit")?,
        metadata: list(cx, o, "metadata", "metadata", key_value)?,
        data,
    })
}

fn exemplars(cx: &mut Ctx, o: &Obj) -> Result<Vec<Exemplar>, JsonError> {
    list(cx, o, "exemplars", "exemplars", |cx, v| {
        let e = as_obj(cx, v)?;
        let value = if let Some(d) = get(e, "asDouble", "as_double") {
            Some(exemplar::Value::AsDouble(
                cx.with("asDouble", |cx| double(cx, d))?,
            ))
        } else if let Some(i) = get(e, "asInt", "as_int") {
            Some(exemplar::Value::AsInt(
                cx.with("asInt", |cx| ranged(cx, i, "int64"))?,
            ))
        } else {
            None
        };
        Ok(Exemplar {
            filtered_attributes: list(
                cx,
                e,
                "filteredAttributes",
                "filtered_attributes",
                key_value,
            )?,
            time_unix_nano: u64_field(cx, e, "timeUnixNano", "time_unix_nano")?,
            span_id: id_field(cx, e, "spanId", "span_id", 8)?,
            trace_id: id_field(cx, e, "traceId", "trace_id", 16)?,
            value,
        })
    })
}

fn number_point(cx: &mut Ctx, v: &Value) -> Result<NumberDataPoint, JsonError> {
    let o = as_obj(cx, v)?;
    let value = if let Some(d) = get(o, "asDouble", "as_double") {
        Some(number_data_point::Value::AsDouble(
            cx.with("asDouble", |cx| double(cx, d))?,
        ))
    } else if let Some(i) = get(o, "asInt", "as_int") {
        Some(number_data_point::Value::AsInt(
            cx.with("asInt", |cx| ranged(cx, i, "int64"))?,
        ))
    } else {
        None
    };
    Ok(NumberDataPoint {
        attributes: attributes(cx, o)?,
        start_time_unix_nano: u64_field(cx, o, "startTimeUnixNano", "start_time_unix_nano")?,
        time_unix_nano: u64_field(cx, o, "timeUnixNano", "time_unix_nano")?,
        exemplars: exemplars(cx, o)?,
        flags: u32_field(cx, o, "flags", "flags")?,
        value,
    })
}

fn histogram_point(cx: &mut Ctx, v: &Value) -> Result<HistogramDataPoint, JsonError> {
    let o = as_obj(cx, v)?;
    Ok(HistogramDataPoint {
        attributes: attributes(cx, o)?,
        start_time_unix_nano: u64_field(cx, o, "startTimeUnixNano", "start_time_unix_nano")?,
        time_unix_nano: u64_field(cx, o, "timeUnixNano", "time_unix_nano")?,
        count: u64_field(cx, o, "count", "count")?,
        sum: opt_f64_field(cx, o, "sum", "sum")?,
        bucket_counts: u64_list(cx, o, "bucketCounts", "bucket_counts")?,
        explicit_bounds: f64_list(cx, o, "explicitBounds", "explicit_bounds")?,
        exemplars: exemplars(cx, o)?,
        flags: u32_field(cx, o, "flags", "flags")?,
        min: opt_f64_field(cx, o, "min", "min")?,
        max: opt_f64_field(cx, o, "max", "max")?,
    })
}

fn buckets(cx: &mut Ctx, v: &Value) -> Result<Buckets, JsonError> {
    let o = as_obj(cx, v)?;
    Ok(Buckets {
        offset: i32_field(cx, o, "offset", "offset")?,
        bucket_counts: u64_list(cx, o, "bucketCounts", "bucket_counts")?,
    })
}

fn exp_histogram_point(
    cx: &mut Ctx,
    v: &Value,
) -> Result<ExponentialHistogramDataPoint, JsonError> {
    let o = as_obj(cx, v)?;
    Ok(ExponentialHistogramDataPoint {
        attributes: attributes(cx, o)?,
        start_time_unix_nano: u64_field(cx, o, "startTimeUnixNano", "start_time_unix_nano")?,
        time_unix_nano: u64_field(cx, o, "timeUnixNano", "time_unix_nano")?,
        count: u64_field(cx, o, "count", "count")?,
        sum: opt_f64_field(cx, o, "sum", "sum")?,
        scale: i32_field(cx, o, "scale", "scale")?,
        zero_count: u64_field(cx, o, "zeroCount", "zero_count")?,
        positive: opt_msg(cx, o, "positive", "positive", buckets)?,
        negative: opt_msg(cx, o, "negative", "negative", buckets)?,
        flags: u32_field(cx, o, "flags", "flags")?,
        exemplars: exemplars(cx, o)?,
        min: opt_f64_field(cx, o, "min", "min")?,
        max: opt_f64_field(cx, o, "max", "max")?,
        zero_threshold: f64_field(cx, o, "zeroThreshold", "zero_threshold")?,
    })
}

fn summary_point(cx: &mut Ctx, v: &Value) -> Result<SummaryDataPoint, JsonError> {
    let o = as_obj(cx, v)?;
    Ok(SummaryDataPoint {
        attributes: attributes(cx, o)?,
        start_time_unix_nano: u64_field(cx, o, "startTimeUnixNano", "start_time_unix_nano")?,
        time_unix_nano: u64_field(cx, o, "timeUnixNano", "time_unix_nano")?,
        count: u64_field(cx, o, "count", "count")?,
        sum: f64_field(cx, o, "sum", "sum")?,
        quantile_values: list(cx, o, "quantileValues", "quantile_values", |cx, v| {
            let q = as_obj(cx, v)?;
            Ok(ValueAtQuantile {
                quantile: f64_field(cx, q, "quantile", "quantile")?,
                value: f64_field(cx, q, "value", "value")?,
            })
        })?,
        flags: u32_field(cx, o, "flags", "flags")?,
    })
}

// ---------------------------------------------------------------- logs

fn resource_logs(cx: &mut Ctx, v: &Value) -> Result<ResourceLogs, JsonError> {
    let o = as_obj(cx, v)?;
    Ok(ResourceLogs {
        resource: opt_msg(cx, o, "resource", "resource", resource)?,
        scope_logs: list(cx, o, "scopeLogs", "scope_logs", |cx, v| {
            let s = as_obj(cx, v)?;
            Ok(ScopeLogs {
                scope: opt_msg(cx, s, "scope", "scope", scope)?,
                log_records: list(cx, s, "logRecords", "log_records", log_record)?,
                schema_url: string(cx, s, "schemaUrl", "schema_url")?,
            })
        })?,
        schema_url: string(cx, o, "schemaUrl", "schema_url")?,
    })
}

const SEVERITIES: &[&str] = &[
    "SEVERITY_NUMBER_UNSPECIFIED",
    "SEVERITY_NUMBER_TRACE",
    "SEVERITY_NUMBER_TRACE2",
    "SEVERITY_NUMBER_TRACE3",
    "SEVERITY_NUMBER_TRACE4",
    "SEVERITY_NUMBER_DEBUG",
    "SEVERITY_NUMBER_DEBUG2",
    "SEVERITY_NUMBER_DEBUG3",
    "SEVERITY_NUMBER_DEBUG4",
    "SEVERITY_NUMBER_INFO",
    "SEVERITY_NUMBER_INFO2",
    "SEVERITY_NUMBER_INFO3",
    "SEVERITY_NUMBER_INFO4",
    "SEVERITY_NUMBER_WARN",
    "SEVERITY_NUMBER_WARN2",
    "SEVERITY_NUMBER_WARN3",
    "SEVERITY_NUMBER_WARN4",
    "SEVERITY_NUMBER_ERROR",
    "SEVERITY_NUMBER_ERROR2",
    "SEVERITY_NUMBER_ERROR3",
    "SEVERITY_NUMBER_ERROR4",
    "SEVERITY_NUMBER_FATAL",
    "SEVERITY_NUMBER_FATAL2",
    "SEVERITY_NUMBER_FATAL3",
    "SEVERITY_NUMBER_FATAL4",
];

fn log_record(cx: &mut Ctx, v: &Value) -> Result<LogRecord, JsonError> {
    let o = as_obj(cx, v)?;
    Ok(LogRecord {
        time_unix_nano: u64_field(cx, o, "timeUnixNano", "time_unix_nano")?,
        observed_time_unix_nano: u64_field(
            cx,
            o,
            "observedTimeUnixNano",
            "observed_time_unix_nano",
        )?,
        severity_number: enum_field(cx, o, "severityNumber", "severity_number", SEVERITIES)?,
        severity_text: string(cx, o, "severityText", "severity_text")?,
        body: opt_msg(cx, o, "body", "body", any_value)?,
        attributes: attributes(cx, o)?,
        dropped_attributes_count: u32_field(
            cx,
            o,
            "droppedAttributesCount",
            "dropped_attributes_count",
        )?,
        flags: u32_field(cx, o, "flags", "flags")?,
        trace_id: id_field(cx, o, "traceId", "trace_id", 16)?,
        span_id: id_field(cx, o, "spanId", "span_id", 8)?,
        event_name: string(cx, o, "eventName", "event_name")?,
    })
}

// ================================================================ encoding

/// Encodes a batch as an OTLP/JSON export request (`{"resourceSpans": [...]}` etc.).
pub fn encode(data: &Telemetry) -> Value {
    let mut o = Obj::new();
    match data {
        Telemetry::Traces(rs) => {
            o.insert(
                "resourceSpans".into(),
                Value::Array(rs.iter().map(enc_resource_spans).collect()),
            );
        }
        Telemetry::Metrics(rm) => {
            o.insert(
                "resourceMetrics".into(),
                Value::Array(rm.iter().map(enc_resource_metrics).collect()),
            );
        }
        Telemetry::Logs(rl) => {
            o.insert(
                "resourceLogs".into(),
                Value::Array(rl.iter().map(enc_resource_logs).collect()),
            );
        }
    }
    Value::Object(o)
}

/// Encodes a batch to OTLP/JSON bytes.
pub fn encode_to_vec(data: &Telemetry) -> Vec<u8> {
    // Serialising a `Value` cannot fail.
    serde_json::to_vec(&encode(data)).unwrap_or_default()
}

struct W(Obj);

impl W {
    fn new() -> W {
        W(Obj::new())
    }
    fn str(mut self, k: &str, v: &str) -> W {
        if !v.is_empty() {
            self.0.insert(k.into(), Value::String(v.into()));
        }
        self
    }
    fn u64s(mut self, k: &str, v: u64) -> W {
        if v != 0 {
            self.0.insert(k.into(), Value::String(v.to_string()));
        }
        self
    }
    fn num(mut self, k: &str, v: i64) -> W {
        if v != 0 {
            self.0.insert(k.into(), Value::Number(v.into()));
        }
        self
    }
    fn f64(mut self, k: &str, v: f64) -> W {
        if v != 0.0 || v.is_sign_negative() {
            self.0.insert(k.into(), enc_double(v));
        }
        self
    }
    fn opt_f64(mut self, k: &str, v: Option<f64>) -> W {
        if let Some(v) = v {
            self.0.insert(k.into(), enc_double(v));
        }
        self
    }
    fn bool(mut self, k: &str, v: bool) -> W {
        if v {
            self.0.insert(k.into(), Value::Bool(true));
        }
        self
    }
    fn id(mut self, k: &str, v: &[u8]) -> W {
        if !v.is_empty() {
            self.0.insert(k.into(), Value::String(hex::encode(v)));
        }
        self
    }
    fn val(mut self, k: &str, v: Option<Value>) -> W {
        if let Some(v) = v {
            self.0.insert(k.into(), v);
        }
        self
    }
    fn arr<T>(mut self, k: &str, items: &[T], f: impl Fn(&T) -> Value) -> W {
        if !items.is_empty() {
            self.0
                .insert(k.into(), Value::Array(items.iter().map(f).collect()));
        }
        self
    }
    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn enc_double(v: f64) -> Value {
    if v.is_nan() {
        Value::String("NaN".into())
    } else if v.is_infinite() {
        Value::String(if v > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        Number::from_f64(v)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

fn enc_any(v: &AnyValue) -> Value {
    let w = W::new();
    match &v.value {
        None => w.done(),
        Some(any_value::Value::StringValue(s)) => {
            let mut o = Obj::new();
            o.insert("stringValue".into(), Value::String(s.clone()));
            Value::Object(o)
        }
        Some(any_value::Value::BoolValue(b)) => {
            let mut o = Obj::new();
            o.insert("boolValue".into(), Value::Bool(*b));
            Value::Object(o)
        }
        Some(any_value::Value::IntValue(i)) => {
            let mut o = Obj::new();
            o.insert("intValue".into(), Value::String(i.to_string()));
            Value::Object(o)
        }
        Some(any_value::Value::DoubleValue(d)) => {
            let mut o = Obj::new();
            o.insert("doubleValue".into(), enc_double(*d));
            Value::Object(o)
        }
        Some(any_value::Value::ArrayValue(a)) => w
            .val(
                "arrayValue",
                Some(W::new().arr("values", &a.values, enc_any).done()),
            )
            .done(),
        Some(any_value::Value::KvlistValue(k)) => w
            .val(
                "kvlistValue",
                Some(W::new().arr("values", &k.values, enc_kv).done()),
            )
            .done(),
        Some(any_value::Value::BytesValue(b)) => w
            .str(
                "bytesValue",
                &base64::engine::general_purpose::STANDARD.encode(b),
            )
            .done(),
        Some(any_value::Value::StringValueStrindex(i)) => {
            w.num("stringValueStrindex", *i as i64).done()
        }
    }
}

fn enc_kv(kv: &KeyValue) -> Value {
    let mut o = Obj::new();
    o.insert("key".into(), Value::String(kv.key.clone()));
    if let Some(v) = &kv.value {
        o.insert("value".into(), enc_any(v));
    }
    Value::Object(o)
}

fn enc_resource(r: &Resource) -> Value {
    W::new()
        .arr("attributes", &r.attributes, enc_kv)
        .num("droppedAttributesCount", r.dropped_attributes_count as i64)
        .arr("entityRefs", &r.entity_refs, |e| {
            let strs = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
            let mut w = W::new()
                .str("schemaUrl", &e.schema_url)
                .str("type", &e.r#type);
            if !e.id_keys.is_empty() {
                w = w.val("idKeys", Some(strs(&e.id_keys)));
            }
            if !e.description_keys.is_empty() {
                w = w.val("descriptionKeys", Some(strs(&e.description_keys)));
            }
            w.done()
        })
        .done()
}

fn enc_scope(s: &InstrumentationScope) -> Value {
    W::new()
        .str("name", &s.name)
        .str("version", &s.version)
        .arr("attributes", &s.attributes, enc_kv)
        .num("droppedAttributesCount", s.dropped_attributes_count as i64)
        .done()
}

fn enc_resource_spans(r: &ResourceSpans) -> Value {
    W::new()
        .val("resource", r.resource.as_ref().map(enc_resource))
        .arr("scopeSpans", &r.scope_spans, |s| {
            W::new()
                .val("scope", s.scope.as_ref().map(enc_scope))
                .arr("spans", &s.spans, enc_span)
                .str("schemaUrl", &s.schema_url)
                .done()
        })
        .str("schemaUrl", &r.schema_url)
        .done()
}

fn enc_span(s: &Span) -> Value {
    W::new()
        .id("traceId", &s.trace_id)
        .id("spanId", &s.span_id)
        .str("traceState", &s.trace_state)
        .id("parentSpanId", &s.parent_span_id)
        .num("flags", s.flags as i64)
        .str("name", &s.name)
        .num("kind", s.kind as i64)
        .u64s("startTimeUnixNano", s.start_time_unix_nano)
        .u64s("endTimeUnixNano", s.end_time_unix_nano)
        .arr("attributes", &s.attributes, enc_kv)
        .num("droppedAttributesCount", s.dropped_attributes_count as i64)
        .arr("events", &s.events, |e| {
            W::new()
                .u64s("timeUnixNano", e.time_unix_nano)
                .str("name", &e.name)
                .arr("attributes", &e.attributes, enc_kv)
                .num("droppedAttributesCount", e.dropped_attributes_count as i64)
                .done()
        })
        .num("droppedEventsCount", s.dropped_events_count as i64)
        .arr("links", &s.links, |l| {
            W::new()
                .id("traceId", &l.trace_id)
                .id("spanId", &l.span_id)
                .str("traceState", &l.trace_state)
                .arr("attributes", &l.attributes, enc_kv)
                .num("droppedAttributesCount", l.dropped_attributes_count as i64)
                .num("flags", l.flags as i64)
                .done()
        })
        .num("droppedLinksCount", s.dropped_links_count as i64)
        .val(
            "status",
            s.status.as_ref().map(|st| {
                W::new()
                    .str("message", &st.message)
                    .num("code", st.code as i64)
                    .done()
            }),
        )
        .done()
}

fn enc_resource_metrics(r: &ResourceMetrics) -> Value {
    W::new()
        .val("resource", r.resource.as_ref().map(enc_resource))
        .arr("scopeMetrics", &r.scope_metrics, |s| {
            W::new()
                .val("scope", s.scope.as_ref().map(enc_scope))
                .arr("metrics", &s.metrics, enc_metric)
                .str("schemaUrl", &s.schema_url)
                .done()
        })
        .str("schemaUrl", &r.schema_url)
        .done()
}

fn enc_exemplar(e: &Exemplar) -> Value {
    let w = W::new()
        .arr("filteredAttributes", &e.filtered_attributes, enc_kv)
        .u64s("timeUnixNano", e.time_unix_nano)
        .id("spanId", &e.span_id)
        .id("traceId", &e.trace_id);
    match e.value {
        Some(exemplar::Value::AsDouble(d)) => w.val("asDouble", Some(enc_double(d))),
        Some(exemplar::Value::AsInt(i)) => w.val("asInt", Some(Value::String(i.to_string()))),
        None => w,
    }
    .done()
}

fn enc_number_point(p: &NumberDataPoint) -> Value {
    let w = W::new()
        .arr("attributes", &p.attributes, enc_kv)
        .u64s("startTimeUnixNano", p.start_time_unix_nano)
        .u64s("timeUnixNano", p.time_unix_nano)
        .arr("exemplars", &p.exemplars, enc_exemplar)
        .num("flags", p.flags as i64);
    match p.value {
        Some(number_data_point::Value::AsDouble(d)) => w.val("asDouble", Some(enc_double(d))),
        Some(number_data_point::Value::AsInt(i)) => {
            w.val("asInt", Some(Value::String(i.to_string())))
        }
        None => w,
    }
    .done()
}

fn u64_strings(v: &[u64]) -> Value {
    Value::Array(v.iter().map(|c| Value::String(c.to_string())).collect())
}

fn enc_buckets(b: &Buckets) -> Value {
    let mut w = W::new().num("offset", b.offset as i64);
    if !b.bucket_counts.is_empty() {
        w = w.val("bucketCounts", Some(u64_strings(&b.bucket_counts)));
    }
    w.done()
}

fn enc_metric(m: &Metric) -> Value {
    let w = W::new()
        .str("name", &m.name)
        .str("description", &m.description)
        .str("unit", &m.unit)
        .arr("metadata", &m.metadata, enc_kv);
    let w = match &m.data {
        None => w,
        Some(metric::Data::Gauge(g)) => w.val(
            "gauge",
            Some(
                W::new()
                    .arr("dataPoints", &g.data_points, enc_number_point)
                    .done(),
            ),
        ),
        Some(metric::Data::Sum(s)) => w.val(
            "sum",
            Some(
                W::new()
                    .arr("dataPoints", &s.data_points, enc_number_point)
                    .num("aggregationTemporality", s.aggregation_temporality as i64)
                    .bool("isMonotonic", s.is_monotonic)
                    .done(),
            ),
        ),
        Some(metric::Data::Histogram(h)) => w.val(
            "histogram",
            Some(
                W::new()
                    .arr("dataPoints", &h.data_points, |p| {
                        let mut w = W::new()
                            .arr("attributes", &p.attributes, enc_kv)
                            .u64s("startTimeUnixNano", p.start_time_unix_nano)
                            .u64s("timeUnixNano", p.time_unix_nano)
                            .u64s("count", p.count)
                            .opt_f64("sum", p.sum);
                        if !p.bucket_counts.is_empty() {
                            w = w.val("bucketCounts", Some(u64_strings(&p.bucket_counts)));
                        }
                        if !p.explicit_bounds.is_empty() {
                            w = w.val(
                                "explicitBounds",
                                Some(Value::Array(
                                    p.explicit_bounds.iter().map(|b| enc_double(*b)).collect(),
                                )),
                            );
                        }
                        w.arr("exemplars", &p.exemplars, enc_exemplar)
                            .num("flags", p.flags as i64)
                            .opt_f64("min", p.min)
                            .opt_f64("max", p.max)
                            .done()
                    })
                    .num("aggregationTemporality", h.aggregation_temporality as i64)
                    .done(),
            ),
        ),
        Some(metric::Data::ExponentialHistogram(h)) => w.val(
            "exponentialHistogram",
            Some(
                W::new()
                    .arr("dataPoints", &h.data_points, |p| {
                        W::new()
                            .arr("attributes", &p.attributes, enc_kv)
                            .u64s("startTimeUnixNano", p.start_time_unix_nano)
                            .u64s("timeUnixNano", p.time_unix_nano)
                            .u64s("count", p.count)
                            .opt_f64("sum", p.sum)
                            .num("scale", p.scale as i64)
                            .u64s("zeroCount", p.zero_count)
                            .val("positive", p.positive.as_ref().map(enc_buckets))
                            .val("negative", p.negative.as_ref().map(enc_buckets))
                            .num("flags", p.flags as i64)
                            .arr("exemplars", &p.exemplars, enc_exemplar)
                            .opt_f64("min", p.min)
                            .opt_f64("max", p.max)
                            .f64("zeroThreshold", p.zero_threshold)
                            .done()
                    })
                    .num("aggregationTemporality", h.aggregation_temporality as i64)
                    .done(),
            ),
        ),
        Some(metric::Data::Summary(s)) => w.val(
            "summary",
            Some(
                W::new()
                    .arr("dataPoints", &s.data_points, |p| {
                        W::new()
                            .arr("attributes", &p.attributes, enc_kv)
                            .u64s("startTimeUnixNano", p.start_time_unix_nano)
                            .u64s("timeUnixNano", p.time_unix_nano)
                            .u64s("count", p.count)
                            .f64("sum", p.sum)
                            .arr("quantileValues", &p.quantile_values, |q| {
                                W::new()
                                    .f64("quantile", q.quantile)
                                    .f64("value", q.value)
                                    .done()
                            })
                            .num("flags", p.flags as i64)
                            .done()
                    })
                    .done(),
            ),
        ),
    };
    w.done()
}

fn enc_resource_logs(r: &ResourceLogs) -> Value {
    W::new()
        .val("resource", r.resource.as_ref().map(enc_resource))
        .arr("scopeLogs", &r.scope_logs, |s| {
            W::new()
                .val("scope", s.scope.as_ref().map(enc_scope))
                .arr("logRecords", &s.log_records, |l| {
                    W::new()
                        .u64s("timeUnixNano", l.time_unix_nano)
                        .u64s("observedTimeUnixNano", l.observed_time_unix_nano)
                        .num("severityNumber", l.severity_number as i64)
                        .str("severityText", &l.severity_text)
                        .val("body", l.body.as_ref().map(enc_any))
                        .arr("attributes", &l.attributes, enc_kv)
                        .num("droppedAttributesCount", l.dropped_attributes_count as i64)
                        .num("flags", l.flags as i64)
                        .id("traceId", &l.trace_id)
                        .id("spanId", &l.span_id)
                        .str("eventName", &l.event_name)
                        .done()
                })
                .str("schemaUrl", &s.schema_url)
                .done()
        })
        .str("schemaUrl", &r.schema_url)
        .done()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_spec_example_trace() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"my.service"}}]},
          "scopeSpans":[{"scope":{"name":"my.library","version":"1.0.0"},
          "spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","parentSpanId":"EEE19B7EC3C1B173",
            "name":"I'm a server span","startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,"kind":2,
            "attributes":[{"key":"my.span.attr","value":{"intValue":"18446744073709551"}},{"key":"b","value":{"bytesValue":"AAE="}}],
            "status":{"code":"STATUS_CODE_ERROR","message":"x"}}]}]}]}"#;
        let t = decode(Signal::Traces, body).unwrap();
        let Telemetry::Traces(rs) = &t else { panic!() };
        let s = &rs[0].scope_spans[0].spans[0];
        assert_eq!(
            s.trace_id,
            hex::decode("5b8efff798038103d269b633813fc60c").unwrap()
        );
        assert_eq!(s.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(s.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(s.kind, 2);
        assert_eq!(s.status.as_ref().unwrap().code, 2);
        assert_eq!(
            s.attributes[0].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(18_446_744_073_709_551))
        );
        assert_eq!(
            s.attributes[1].value.as_ref().unwrap().value,
            Some(any_value::Value::BytesValue(vec![0, 1]))
        );
        // Round trip through our encoder gives the same structs.
        let again = decode(Signal::Traces, &encode_to_vec(&t)).unwrap();
        assert_eq!(again, t);
    }

    #[test]
    fn all_five_metric_types_round_trip_with_their_points() {
        let body = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
          {"name":"g","gauge":{"dataPoints":[{"asDouble":1.5,"timeUnixNano":"1"}]}},
          {"name":"s","sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{"asInt":"9007199254740993"}]}},
          {"name":"h","histogram":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_DELTA","dataPoints":[
             {"count":"6","sum":12.5,"bucketCounts":["1","2",3],"explicitBounds":[1,5],"min":0.5,"max":9}]}},
          {"name":"e","exponentialHistogram":{"aggregationTemporality":2,"dataPoints":[
             {"count":"4","scale":-1,"zeroCount":"1","positive":{"offset":-2,"bucketCounts":["1","2"]},"negative":{"bucketCounts":[]},"zeroThreshold":0.001}]}},
          {"name":"q","summary":{"dataPoints":[{"count":"3","sum":"7","quantileValues":[{"quantile":0.5,"value":2},{"quantile":1,"value":"Infinity"}]}]}}
        ]}]}]}"#;
        let t = decode(Signal::Metrics, body).unwrap();
        assert_eq!(t.item_count(), 5);
        let Telemetry::Metrics(rm) = &t else { panic!() };
        let m = &rm[0].scope_metrics[0].metrics;
        match &m[1].data {
            Some(metric::Data::Sum(s)) => {
                assert_eq!(
                    s.data_points[0].value,
                    Some(number_data_point::Value::AsInt(9_007_199_254_740_993))
                );
                assert!(s.is_monotonic);
            }
            other => panic!("{other:?}"),
        }
        match &m[2].data {
            Some(metric::Data::Histogram(h)) => {
                let p = &h.data_points[0];
                assert_eq!(h.aggregation_temporality, 1);
                assert_eq!(p.bucket_counts, vec![1, 2, 3]);
                assert_eq!(p.explicit_bounds, vec![1.0, 5.0]);
                assert_eq!(
                    (p.count, p.sum, p.min, p.max),
                    (6, Some(12.5), Some(0.5), Some(9.0))
                );
            }
            other => panic!("{other:?}"),
        }
        match &m[3].data {
            Some(metric::Data::ExponentialHistogram(h)) => {
                let p = &h.data_points[0];
                assert_eq!(p.scale, -1);
                assert_eq!(p.positive.as_ref().unwrap().bucket_counts, vec![1, 2]);
                assert_eq!(p.positive.as_ref().unwrap().offset, -2);
            }
            other => panic!("{other:?}"),
        }
        match &m[4].data {
            Some(metric::Data::Summary(s)) => {
                assert_eq!(s.data_points[0].quantile_values[1].value, f64::INFINITY);
                assert_eq!(s.data_points[0].sum, 7.0);
            }
            other => panic!("{other:?}"),
        }
        let again = decode(Signal::Metrics, &encode_to_vec(&t)).unwrap();
        assert_eq!(again, t);
    }

    #[test]
    fn snake_case_and_logs() {
        let body = br#"{"resource_logs":[{"scope_logs":[{"log_records":[{"severity_number":"SEVERITY_NUMBER_WARN","body":{"string_value":"hi"},"trace_id":"","span_id":"0102030405060708"}]}]}]}"#;
        let t = decode(Signal::Logs, body).unwrap();
        let Telemetry::Logs(rl) = &t else { panic!() };
        let l = &rl[0].scope_logs[0].log_records[0];
        assert_eq!(l.severity_number, 13);
        assert_eq!(l.span_id, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn errors_name_the_path() {
        let err = decode(
            Signal::Traces,
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.path,
            "$.resourceSpans[0].scopeSpans[0].spans[0].traceId"
        );
        let err = decode(
            Signal::Traces,
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"soon"}]}]}]}"#,
        )
        .unwrap_err();
        assert!(err.message.contains("integer"), "{err}");
        let err = decode(Signal::Traces, b"{not json").unwrap_err();
        assert_eq!(err.path, "$");
        let err = decode(Signal::Metrics, br#"{"resourceMetrics":{}}"#).unwrap_err();
        assert!(err.message.contains("array"));
        let err = decode(
            Signal::Traces,
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"spanId":"0102"}]}]}]}"#,
        )
        .unwrap_err();
        assert!(err.message.contains("expected 8"), "{err}");
    }
}
