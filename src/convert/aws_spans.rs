//! `aws/spans` span JSON → OTLP spans. Pure: no I/O; the clock is passed in.
//!
//! CloudWatch Transaction Search stores each span as one flat JSON object:
//! `resource.attributes` and `attributes` as JSON objects, hex ids, `kind` and
//! `status.code` as strings, nanosecond times as JSON integers (above 2^53:
//! read as u64, never through f64), events and links, and an `_aws.xray`
//! object for spans that came from X-Ray. [`span_from_json`] converts one.
//!
//! [`SpanStream`] adds what a stream of records needs:
//! - X-Ray-origin spans arrive twice, first in progress (`endTimeUnixNano:
//!   null` / `aws.xray.inprogress`) then completed: the in-progress record is
//!   held and replaced by the completed one; one never completed is emitted as
//!   it is after `in_progress_timeout`. Memory is bounded (`max_held`).
//! - subsegments without `service.name` take it from their trace's segment
//!   when it has been seen (a bounded map);
//! - spans spanwire itself wrote to X-Ray (the loop guard's mark) are dropped.

use std::collections::{HashMap, HashSet, VecDeque};

use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::{Event, Link, SpanKind},
    status::StatusCode,
    ResourceSpans, ScopeSpans, Span, Status,
};
use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::signal::string_attribute;

/// Why a span record could not be converted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpanJsonError {
    /// Not JSON.
    #[error("not JSON: {0}")]
    Json(String),
    /// JSON, but not an object.
    #[error("a span must be a JSON object")]
    NotObject,
    /// A required field is missing or has the wrong type.
    #[error("field `{0}` is missing or not {1}")]
    Field(&'static str, &'static str),
    /// An id is not hex of the right length.
    #[error("field `{field}`: expected {len} hex digits, got `{value}`")]
    Id {
        /// Which id.
        field: &'static str,
        /// Hex digits expected.
        len: usize,
        /// What was there (cut to 40 characters).
        value: String,
    },
}

/// One converted span with its resource and scope.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    /// Resource attributes.
    pub resource: Vec<KeyValue>,
    /// Instrumentation scope.
    pub scope: Option<InstrumentationScope>,
    /// The span.
    pub span: Span,
}

impl SpanRecord {
    /// True when the span is not finished (no end time, or `aws.xray.inprogress`).
    pub fn in_progress(&self) -> bool {
        self.span.end_time_unix_nano == 0
            || self.span.attributes.iter().any(|kv| {
                kv.key == "aws.xray.inprogress"
                    && matches!(
                        kv.value.as_ref().and_then(|v| v.value.as_ref()),
                        Some(any_value::Value::BoolValue(true))
                    )
            })
    }
}

// Span JSON is read straight into OTLP structs by serde visitors: no
// intermediate `serde_json::Value` tree (half the cost of a conversion).

/// A JSON value as an OTLP value: objects become key/value lists, arrays
/// arrays, integers stay integers (u64 above i64's range becomes a double),
/// `null` an empty value.
struct JAny(AnyValue);

impl<'de> Deserialize<'de> for JAny {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JAny;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<JAny, E> {
                Ok(JAny::of(any_value::Value::BoolValue(b)))
            }
            fn visit_i64<E: de::Error>(self, i: i64) -> Result<JAny, E> {
                Ok(JAny::of(any_value::Value::IntValue(i)))
            }
            fn visit_u64<E: de::Error>(self, u: u64) -> Result<JAny, E> {
                Ok(JAny::of(match i64::try_from(u) {
                    Ok(i) => any_value::Value::IntValue(i),
                    Err(_) => any_value::Value::DoubleValue(u as f64),
                }))
            }
            fn visit_f64<E: de::Error>(self, f: f64) -> Result<JAny, E> {
                Ok(JAny::of(any_value::Value::DoubleValue(f)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<JAny, E> {
                Ok(JAny::of(any_value::Value::StringValue(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<JAny, E> {
                Ok(JAny::of(any_value::Value::StringValue(s)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<JAny, E> {
                Ok(JAny(AnyValue { value: None }))
            }
            fn visit_none<E: de::Error>(self) -> Result<JAny, E> {
                self.visit_unit()
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JAny, A::Error> {
                let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(JAny(v)) = seq.next_element()? {
                    values.push(v);
                }
                Ok(JAny::of(any_value::Value::ArrayValue(ArrayValue {
                    values,
                })))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<JAny, A::Error> {
                Ok(JAny::of(any_value::Value::KvlistValue(KeyValueList {
                    values: attrs_from_map(map)?,
                })))
            }
        }
        d.deserialize_any(V)
    }
}

impl JAny {
    fn of(v: any_value::Value) -> JAny {
        JAny(AnyValue { value: Some(v) })
    }
}

fn attrs_from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Vec<KeyValue>, A::Error> {
    let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
    while let Some(key) = map.next_key::<Cow<'de, str>>()? {
        let JAny(value) = map.next_value()?;
        out.push(KeyValue {
            key: key.into_owned(),
            value: Some(value),
            key_strindex: 0,
        });
    }
    Ok(out)
}

/// A JSON object as OTLP attributes (`null` or missing: none).
#[derive(Default)]
struct JAttrs(Vec<KeyValue>);

impl<'de> Deserialize<'de> for JAttrs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JAttrs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of attributes")
            }
            fn visit_unit<E: de::Error>(self) -> Result<JAttrs, E> {
                Ok(JAttrs::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<JAttrs, E> {
                Ok(JAttrs::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<JAttrs, A::Error> {
                Ok(JAttrs(attrs_from_map(map)?))
            }
        }
        d.deserialize_any(V)
    }
}

/// Nanoseconds as u64: JSON integers exactly (never through f64), numeric
/// strings, floats as a last resort; `null` is 0.
#[derive(Default, Clone, Copy)]
struct JNanos(u64);

impl<'de> Deserialize<'de> for JNanos {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = JNanos;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("nanoseconds")
            }
            fn visit_u64<E: de::Error>(self, u: u64) -> Result<JNanos, E> {
                Ok(JNanos(u))
            }
            fn visit_i64<E: de::Error>(self, i: i64) -> Result<JNanos, E> {
                Ok(JNanos(i.max(0) as u64))
            }
            fn visit_f64<E: de::Error>(self, f: f64) -> Result<JNanos, E> {
                Ok(JNanos(if f > 0.0 { f as u64 } else { 0 }))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<JNanos, E> {
                s.trim()
                    .parse()
                    .map(JNanos)
                    .map_err(|_| E::custom(format!("`{s}` is not a number of nanoseconds")))
            }
            fn visit_unit<E: de::Error>(self) -> Result<JNanos, E> {
                Ok(JNanos(0))
            }
            fn visit_none<E: de::Error>(self) -> Result<JNanos, E> {
                Ok(JNanos(0))
            }
        }
        d.deserialize_any(V)
    }
}

/// A span kind or status code: a name (`SERVER`, `SPAN_KIND_SERVER`) or its number.
#[derive(Default)]
struct JEnum<'a>(Option<Cow<'a, str>>, Option<i64>);

impl<'de: 'a, 'a> Deserialize<'de> for JEnum<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JEnum<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a name or a number")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<JEnum<'de>, E> {
                Ok(JEnum(Some(Cow::Borrowed(s)), None))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<JEnum<'de>, E> {
                Ok(JEnum(Some(Cow::Owned(s.to_string())), None))
            }
            fn visit_i64<E: de::Error>(self, i: i64) -> Result<JEnum<'de>, E> {
                Ok(JEnum(None, Some(i)))
            }
            fn visit_u64<E: de::Error>(self, u: u64) -> Result<JEnum<'de>, E> {
                Ok(JEnum(None, i64::try_from(u).ok()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<JEnum<'de>, E> {
                Ok(JEnum(None, None))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize, Default)]
struct RawResource {
    #[serde(default)]
    attributes: JAttrs,
}

#[derive(Deserialize)]
struct RawScope<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    version: Option<Cow<'a, str>>,
    #[serde(default)]
    attributes: JAttrs,
}

#[derive(Deserialize, Default)]
struct RawStatus<'a> {
    #[serde(default, borrow)]
    code: JEnum<'a>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default)]
    time_unix_nano: JNanos,
    #[serde(default)]
    attributes: JAttrs,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLink<'a> {
    #[serde(default, borrow)]
    trace_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    span_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    trace_state: Option<Cow<'a, str>>,
    #[serde(default)]
    attributes: JAttrs,
    #[serde(default)]
    flags: Option<u32>,
}

#[derive(Deserialize, Default)]
struct RawXray<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    namespace: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct RawAws<'a> {
    #[serde(default, borrow)]
    xray: Option<RawXray<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpan<'a> {
    #[serde(default)]
    resource: Option<RawResource>,
    #[serde(default, borrow)]
    scope: Option<RawScope<'a>>,
    #[serde(default, borrow)]
    trace_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    span_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    parent_span_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    trace_state: Option<Cow<'a, str>>,
    #[serde(default)]
    flags: Option<u32>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    kind: JEnum<'a>,
    #[serde(default)]
    start_time_unix_nano: JNanos,
    #[serde(default)]
    end_time_unix_nano: JNanos,
    #[serde(default)]
    attributes: JAttrs,
    #[serde(default, borrow)]
    status: Option<RawStatus<'a>>,
    #[serde(default, borrow)]
    events: Option<Vec<RawEvent<'a>>>,
    #[serde(default, borrow)]
    links: Option<Vec<RawLink<'a>>>,
    #[serde(default, borrow, rename = "_aws")]
    aws: Option<RawAws<'a>>,
}

fn hex_id(
    v: Option<&str>,
    field: &'static str,
    len: usize,
    required: bool,
) -> Result<Vec<u8>, SpanJsonError> {
    let s = match v {
        Some(s) if !s.is_empty() => s,
        _ if !required => return Ok(Vec::new()),
        _ => return Err(SpanJsonError::Field(field, "a hex string")),
    };
    let bad = || SpanJsonError::Id {
        field,
        len,
        value: s.chars().take(40).collect(),
    };
    if s.len() != len {
        return Err(bad());
    }
    hex::decode(s).map_err(|_| bad())
}

fn kind(k: &JEnum<'_>) -> SpanKind {
    match k.0.as_deref().map(|s| s.trim_start_matches("SPAN_KIND_")) {
        Some("SERVER") => SpanKind::Server,
        Some("CLIENT") => SpanKind::Client,
        Some("PRODUCER") => SpanKind::Producer,
        Some("CONSUMER") => SpanKind::Consumer,
        Some("INTERNAL") => SpanKind::Internal,
        Some(_) => SpanKind::Unspecified,
        None => {
            k.1.and_then(|n| SpanKind::try_from(n as i32).ok())
                .unwrap_or(SpanKind::Unspecified)
        }
    }
}

fn status(st: Option<RawStatus<'_>>) -> Option<Status> {
    let st = st?;
    let code = match st
        .code
        .0
        .as_deref()
        .map(|s| s.trim_start_matches("STATUS_CODE_"))
    {
        Some("OK") => StatusCode::Ok,
        Some("ERROR") => StatusCode::Error,
        Some(_) => StatusCode::Unset,
        None => st
            .code
            .1
            .and_then(|n| StatusCode::try_from(n as i32).ok())
            .unwrap_or(StatusCode::Unset),
    };
    Some(Status {
        code: code as i32,
        message: st.message.map(Cow::into_owned).unwrap_or_default(),
    })
}

fn owned(c: Option<Cow<'_, str>>) -> String {
    c.map(Cow::into_owned).unwrap_or_default()
}

fn from_raw(raw: RawSpan<'_>) -> Result<SpanRecord, SpanJsonError> {
    let trace_id = hex_id(raw.trace_id.as_deref(), "traceId", 32, true)?;
    let span_id = hex_id(raw.span_id.as_deref(), "spanId", 16, true)?;
    let parent_span_id = hex_id(raw.parent_span_id.as_deref(), "parentSpanId", 16, false)?;
    let mut attributes = raw.attributes.0;
    let mut name = owned(raw.name);
    if let Some(x) = raw.aws.and_then(|a| a.xray) {
        if name.is_empty() {
            name = owned(x.name);
        }
        for (value, key) in [
            (x.namespace, "aws.xray.namespace"),
            (x.kind, "aws.xray.type"),
        ] {
            if let Some(v) = value {
                if !attributes.iter().any(|kv| kv.key == key) {
                    attributes.push(string_attribute(key, v.into_owned()));
                }
            }
        }
    }
    let events = raw
        .events
        .unwrap_or_default()
        .into_iter()
        .map(|e| Event {
            time_unix_nano: e.time_unix_nano.0,
            name: owned(e.name),
            attributes: e.attributes.0,
            dropped_attributes_count: 0,
        })
        .collect();
    let links = raw
        .links
        .unwrap_or_default()
        .into_iter()
        .filter_map(|l| {
            Some(Link {
                trace_id: hex_id(l.trace_id.as_deref(), "traceId", 32, true).ok()?,
                span_id: hex_id(l.span_id.as_deref(), "spanId", 16, true).ok()?,
                trace_state: owned(l.trace_state),
                attributes: l.attributes.0,
                dropped_attributes_count: 0,
                flags: l.flags.unwrap_or(0),
            })
        })
        .collect();
    let span = Span {
        trace_id,
        span_id,
        trace_state: owned(raw.trace_state),
        parent_span_id,
        flags: raw.flags.unwrap_or(0),
        name,
        kind: kind(&raw.kind) as i32,
        start_time_unix_nano: raw.start_time_unix_nano.0,
        end_time_unix_nano: raw.end_time_unix_nano.0,
        attributes,
        dropped_attributes_count: 0,
        events,
        dropped_events_count: 0,
        links,
        dropped_links_count: 0,
        status: status(raw.status),
    };
    Ok(SpanRecord {
        resource: raw.resource.map(|r| r.attributes.0).unwrap_or_default(),
        scope: raw.scope.map(|s| InstrumentationScope {
            name: owned(s.name),
            version: owned(s.version),
            attributes: s.attributes.0,
            dropped_attributes_count: 0,
        }),
        span,
    })
}

/// Converts one `aws/spans` span from its JSON text (the fast path).
pub fn span_from_str(text: &str) -> Result<SpanRecord, SpanJsonError> {
    if !text.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => SpanJsonError::NotObject,
            Err(e) => SpanJsonError::Json(e.to_string()),
        });
    }
    let raw: RawSpan<'_> =
        serde_json::from_str(text).map_err(|e| SpanJsonError::Json(e.to_string()))?;
    from_raw(raw)
}

/// Converts one `aws/spans` span object already parsed.
pub fn span_from_json(v: &Value) -> Result<SpanRecord, SpanJsonError> {
    if !v.is_object() {
        return Err(SpanJsonError::NotObject);
    }
    let raw = RawSpan::deserialize(v).map_err(|e| SpanJsonError::Json(e.to_string()))?;
    from_raw(raw)
}

/// Groups spans into `ResourceSpans` by resource, then `ScopeSpans` by scope.
pub fn group(records: Vec<SpanRecord>) -> Vec<ResourceSpans> {
    let mut out: Vec<ResourceSpans> = Vec::new();
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    for r in records {
        use prost::Message;
        let key = Resource {
            attributes: r.resource.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        let i = *index.entry(key).or_insert_with(|| {
            out.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: r.resource,
                    ..Default::default()
                }),
                scope_spans: Vec::new(),
                schema_url: String::new(),
            });
            out.len() - 1
        });
        let rs = &mut out[i];
        let scope_slot = rs.scope_spans.iter().position(|s| s.scope == r.scope);
        match scope_slot {
            Some(j) => rs.scope_spans[j].spans.push(r.span),
            None => rs.scope_spans.push(ScopeSpans {
                scope: r.scope,
                spans: vec![r.span],
                schema_url: String::new(),
            }),
        }
    }
    out
}

/// Settings of a [`SpanStream`].
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Hold an in-progress span this long for its completed record.
    pub in_progress_timeout_ms: u64,
    /// Most in-progress spans held (the oldest are emitted as they are beyond it).
    pub max_held: usize,
    /// Traces whose segment's `service.name` is remembered.
    pub max_traces: usize,
    /// Drop spans carrying the loop guard's mark (written by spanwire's `awsxray`).
    pub drop_loop_marked: bool,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            in_progress_timeout_ms: 5 * 60 * 1000,
            max_held: 10_000,
            max_traces: 10_000,
            drop_loop_marked: true,
        }
    }
}

type SpanKey = ([u8; 16], [u8; 8]);

fn key(s: &Span) -> SpanKey {
    let mut t = [0u8; 16];
    let mut i = [0u8; 8];
    if s.trace_id.len() == 16 {
        t.copy_from_slice(&s.trace_id);
    }
    if s.span_id.len() == 8 {
        i.copy_from_slice(&s.span_id);
    }
    (t, i)
}

/// What [`SpanStream::push`] did with a record.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PushStats {
    /// In-progress records held for their completed version.
    pub held: usize,
    /// Records dropped as duplicates (an in-progress record after its completion).
    pub duplicates: usize,
    /// Records dropped by the loop guard.
    pub loop_marked: usize,
}

/// Turns a stream of span records into spans to emit: each span once,
/// completed when possible. See the module docs.
pub struct SpanStream {
    opts: StreamOptions,
    held: HashMap<SpanKey, (SpanRecord, u64)>,
    held_order: VecDeque<(SpanKey, u64)>,
    completed: HashSet<SpanKey>,
    completed_order: VecDeque<SpanKey>,
    services: HashMap<[u8; 16], KeyValue>,
    services_order: VecDeque<[u8; 16]>,
}

impl SpanStream {
    /// A stream with `opts`.
    pub fn new(opts: StreamOptions) -> SpanStream {
        SpanStream {
            opts,
            held: HashMap::new(),
            held_order: VecDeque::new(),
            completed: HashSet::new(),
            completed_order: VecDeque::new(),
            services: HashMap::new(),
            services_order: VecDeque::new(),
        }
    }

    /// In-progress spans held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Takes one converted record at `now_ms`; appends what is ready to `out`.
    pub fn push(
        &mut self,
        mut r: SpanRecord,
        now_ms: u64,
        out: &mut Vec<SpanRecord>,
        stats: &mut PushStats,
    ) {
        if self.opts.drop_loop_marked && crate::convert::xray::is_loop_marked(&r.span.attributes) {
            stats.loop_marked += 1;
            return;
        }
        self.remember_service(&r);
        let k = key(&r.span);
        if r.in_progress() {
            if self.completed.contains(&k) {
                stats.duplicates += 1;
                return;
            }
            stats.held += 1;
            let first = self.held.insert(k, (r, now_ms)).is_none();
            if first {
                self.held_order.push_back((k, now_ms));
            }
            while self.held.len() > self.opts.max_held {
                match self.held_order.pop_front() {
                    Some((old, _)) => {
                        if let Some((rec, _)) = self.held.remove(&old) {
                            out.push(self.finish(rec));
                        }
                    }
                    None => break,
                }
            }
            return;
        }
        if self.held.remove(&k).is_some() && self.held_order.len() > 2 * self.opts.max_held + 16 {
            // Drop queue entries of spans no longer held.
            let held = &self.held;
            self.held_order
                .retain(|(k, since)| held.get(k).is_some_and(|(_, s)| s == since));
        }
        if self.completed.insert(k) {
            self.completed_order.push_back(k);
            if self.completed_order.len() > self.opts.max_held.max(1) * 4 {
                if let Some(old) = self.completed_order.pop_front() {
                    self.completed.remove(&old);
                }
            }
        }
        r = self.finish(r);
        out.push(r);
    }

    /// Emits in-progress spans held longer than the timeout (all when `all`).
    pub fn expire(&mut self, now_ms: u64, all: bool, out: &mut Vec<SpanRecord>) {
        while let Some((k, since)) = self.held_order.front().copied() {
            if !all && now_ms.saturating_sub(since) < self.opts.in_progress_timeout_ms {
                break;
            }
            self.held_order.pop_front();
            if let Some((rec, _)) = self.held.remove(&k) {
                let rec = self.finish(rec);
                out.push(rec);
            }
        }
    }

    fn remember_service(&mut self, r: &SpanRecord) {
        let is_segment = r.span.parent_span_id.is_empty()
            || r.span.attributes.iter().any(|kv| {
                kv.key == "aws.xray.type"
                    && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()), Some(any_value::Value::StringValue(s)) if s == "segment")
            })
            || r.span.kind == SpanKind::Server as i32;
        if !is_segment {
            return;
        }
        let Some(svc) = r.resource.iter().find(|kv| kv.key == "service.name") else {
            return;
        };
        let (t, _) = key(&r.span);
        if self.services.insert(t, svc.clone()).is_none() {
            self.services_order.push_back(t);
            if self.services_order.len() > self.opts.max_traces {
                if let Some(old) = self.services_order.pop_front() {
                    self.services.remove(&old);
                }
            }
        }
    }

    /// Fills in `service.name` from the trace's segment when missing.
    fn finish(&self, mut r: SpanRecord) -> SpanRecord {
        if !r.resource.iter().any(|kv| kv.key == "service.name") {
            let (t, _) = key(&r.span);
            if let Some(svc) = self.services.get(&t) {
                r.resource.push(svc.clone());
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(format!(
            "{}/tests/fixtures/aws-spans/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn attr<'a>(attrs: &'a [KeyValue], k: &str) -> Option<&'a any_value::Value> {
        attrs
            .iter()
            .find(|kv| kv.key == k)?
            .value
            .as_ref()?
            .value
            .as_ref()
    }

    #[test]
    fn converts_every_field_of_a_real_span() {
        let v = &fixture("coralogix_stepfunctions_aws_spans.jsonl")[2];
        let r = span_from_json(v).unwrap();
        let s = &r.span;
        assert_eq!(hex::encode(&s.trace_id), "6a719ba03dce37b129b5432cd44db566");
        assert_eq!(hex::encode(&s.span_id), "29d03b80232a080a");
        assert_eq!(hex::encode(&s.parent_span_id), "3b65215f9ddfbb8f");
        assert_eq!(s.name, "S3.ListBuckets");
        assert_eq!(s.kind, SpanKind::Client as i32);
        // Above 2^53: exact, not rounded through f64.
        assert_eq!(s.start_time_unix_nano, 1_785_830_304_947_000_064);
        assert_eq!(s.end_time_unix_nano, 1_785_830_304_997_999_872);
        assert_eq!(
            attr(&s.attributes, "http.status_code"),
            Some(&any_value::Value::IntValue(200))
        );
        assert_eq!(
            attr(&s.attributes, "aws.retries"),
            Some(&any_value::Value::IntValue(0))
        );
        assert_eq!(
            attr(&s.attributes, "aws.xray.namespace"),
            Some(&any_value::Value::StringValue("aws".into()))
        );
        assert_eq!(
            attr(&r.resource, "cloud.provider"),
            Some(&any_value::Value::StringValue("aws".into()))
        );
        assert_eq!(s.status.as_ref().unwrap().code, StatusCode::Unset as i32);
        assert!(!r.in_progress());
    }

    #[test]
    fn objects_arrays_events_scope_and_status() {
        let v: Value = serde_json::json!({
            "traceId": "0123456789abcdef0123456789abcdef", "spanId": "0123456789abcdef",
            "name": "", "kind": "SPAN_KIND_SERVER",
            "startTimeUnixNano": 1, "endTimeUnixNano": 2,
            "scope": {"name": "s", "version": "1"},
            "attributes": {"obj": {"a": [1, 2.5, "x", true, null]}, "big": 18446744073709551615u64},
            "status": {"code": "ERROR", "message": "boom"},
            "events": [{"name": "exception", "timeUnixNano": 3, "attributes": {"exception.type": "E"}}],
            "links": [{"traceId": "0123456789abcdef0123456789abcdef", "spanId": "fedcba9876543210"}],
            "_aws": {"xray": {"name": "from-xray", "type": "segment"}}
        });
        let r = span_from_json(&v).unwrap();
        assert_eq!(
            r.span.name, "from-xray",
            "the X-Ray name fills an empty span name"
        );
        assert_eq!(r.span.kind, SpanKind::Server as i32);
        assert_eq!(r.scope.as_ref().unwrap().version, "1");
        let Some(any_value::Value::KvlistValue(obj)) = attr(&r.span.attributes, "obj") else {
            panic!("object attribute")
        };
        let Some(any_value::Value::ArrayValue(a)) =
            obj.values[0].value.as_ref().and_then(|v| v.value.as_ref())
        else {
            panic!("array")
        };
        assert_eq!(a.values.len(), 5);
        assert_eq!(a.values[1].value, Some(any_value::Value::DoubleValue(2.5)));
        assert_eq!(a.values[4].value, None);
        assert!(matches!(
            attr(&r.span.attributes, "big"),
            Some(any_value::Value::DoubleValue(_))
        ));
        let st = r.span.status.as_ref().unwrap();
        assert_eq!(
            (st.code, st.message.as_str()),
            (StatusCode::Error as i32, "boom")
        );
        assert_eq!(r.span.events[0].time_unix_nano, 3);
        assert_eq!(r.span.links.len(), 1);
    }

    #[test]
    fn text_and_parsed_json_convert_alike() {
        for f in [
            "coralogix_stepfunctions_aws_spans.jsonl",
            "awsdocs_agentcore_understanding_input_spans.jsonl",
            "awsdocs_strands_unified_spans.ABBREVIATED.jsonl",
        ] {
            for v in fixture(f) {
                let text = v.to_string();
                assert_eq!(span_from_str(&text).unwrap(), span_from_json(&v).unwrap());
            }
        }
        assert_eq!(span_from_str("[1]"), Err(SpanJsonError::NotObject));
        assert!(matches!(
            span_from_str("not json"),
            Err(SpanJsonError::Json(_))
        ));
        assert!(matches!(
            span_from_str("{\"traceId\": 5}"),
            Err(SpanJsonError::Json(_))
        ));
        assert!(matches!(
            span_from_str("{\"spanId\": \"0123456789abcdef\"}"),
            Err(SpanJsonError::Field("traceId", _))
        ));
    }

    #[test]
    fn bad_spans_are_errors() {
        assert_eq!(
            span_from_json(&serde_json::json!([1])),
            Err(SpanJsonError::NotObject)
        );
        assert!(matches!(
            span_from_json(&serde_json::json!({"spanId": "0123456789abcdef"})),
            Err(SpanJsonError::Field("traceId", _))
        ));
        assert!(matches!(
            span_from_json(&serde_json::json!({"traceId": "xyz", "spanId": "0123456789abcdef"})),
            Err(SpanJsonError::Id {
                field: "traceId",
                ..
            })
        ));
    }

    #[test]
    fn xray_spans_are_emitted_once_completed_and_subsegments_get_the_service() {
        let records: Vec<SpanRecord> = fixture("coralogix_stepfunctions_aws_spans.jsonl")
            .iter()
            .map(|v| span_from_json(v).unwrap())
            .collect();
        let in_progress = records.iter().filter(|r| r.in_progress()).count();
        assert!(in_progress > 0, "the fixture has in-progress records");
        let distinct: HashSet<SpanKey> = records.iter().map(|r| key(&r.span)).collect();
        let has_completed: HashSet<SpanKey> = records
            .iter()
            .filter(|r| !r.in_progress())
            .map(|r| key(&r.span))
            .collect();
        let mut stream = SpanStream::new(StreamOptions::default());
        let mut out = Vec::new();
        let mut stats = PushStats::default();
        for r in records {
            stream.push(r, 0, &mut out, &mut stats);
        }
        stream.expire(1, true, &mut out);
        let keys: Vec<SpanKey> = out.iter().map(|r| key(&r.span)).collect();
        let unique: HashSet<SpanKey> = keys.iter().copied().collect();
        assert_eq!(keys.len(), unique.len(), "each span once");
        assert_eq!(unique, distinct, "every span");
        // Spans that had a completed record come out completed.
        for r in &out {
            assert_eq!(
                !r.in_progress(),
                has_completed.contains(&key(&r.span)),
                "{}",
                r.span.name
            );
        }
        assert!(!has_completed.is_empty());
        // Subsegments without a service.name took their segment's.
        let named = out
            .iter()
            .filter(|r| r.resource.iter().any(|kv| kv.key == "service.name"))
            .count();
        assert_eq!(
            named,
            out.len(),
            "every span of the trace carries the service name"
        );
    }

    #[test]
    fn in_progress_spans_wait_for_the_timeout_and_memory_is_bounded() {
        let mk = |i: u8, end: u64| SpanRecord {
            resource: vec![],
            scope: None,
            span: Span {
                trace_id: vec![1; 16],
                span_id: vec![i; 8],
                start_time_unix_nano: 1,
                end_time_unix_nano: end,
                ..Default::default()
            },
        };
        let opts = StreamOptions {
            in_progress_timeout_ms: 100,
            max_held: 2,
            ..Default::default()
        };
        let mut s = SpanStream::new(opts);
        let mut out = Vec::new();
        let mut stats = PushStats::default();
        s.push(mk(1, 0), 0, &mut out, &mut stats);
        s.push(mk(2, 0), 10, &mut out, &mut stats);
        assert!(out.is_empty());
        s.push(mk(3, 0), 20, &mut out, &mut stats);
        assert_eq!(out.len(), 1, "over max_held the oldest goes out as it is");
        s.expire(115, false, &mut out);
        assert_eq!(out.len(), 2);
        s.push(mk(3, 5), 106, &mut out, &mut stats);
        assert_eq!(out.len(), 3);
        assert!(!out[2].in_progress());
        s.push(mk(3, 0), 107, &mut out, &mut stats);
        assert_eq!(stats.duplicates, 1, "a late in-progress copy is dropped");
        assert_eq!(s.held(), 0);
    }

    #[test]
    fn loop_marked_spans_are_dropped() {
        let v = serde_json::json!({
            "traceId": "0123456789abcdef0123456789abcdef", "spanId": "0123456789abcdef",
            "name": "x", "startTimeUnixNano": 1, "endTimeUnixNano": 2,
            "attributes": {"spanwire_exported": true}
        });
        let mut s = SpanStream::new(StreamOptions::default());
        let (mut out, mut stats) = (Vec::new(), PushStats::default());
        s.push(span_from_json(&v).unwrap(), 0, &mut out, &mut stats);
        assert!(out.is_empty());
        assert_eq!(stats.loop_marked, 1);
        let mut s = SpanStream::new(StreamOptions {
            drop_loop_marked: false,
            ..Default::default()
        });
        s.push(span_from_json(&v).unwrap(), 0, &mut out, &mut stats);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn grouping_by_resource_and_scope() {
        let mut recs = Vec::new();
        for f in [
            "awsdocs_agentcore_understanding_input_spans.jsonl",
            "coralogix_stepfunctions_aws_spans.jsonl",
        ] {
            recs.extend(fixture(f).iter().map(|v| span_from_json(v).unwrap()));
        }
        let n = recs.len();
        let grouped = group(recs);
        let total: usize = grouped
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        assert_eq!(total, n);
        let resources: HashSet<Vec<u8>> = grouped
            .iter()
            .map(|r| prost::Message::encode_to_vec(r.resource.as_ref().unwrap()))
            .collect();
        assert_eq!(
            resources.len(),
            grouped.len(),
            "one ResourceSpans per distinct resource"
        );
    }
}
