//! The OTLP protobuf codec: every encode and decode of an export request
//! or a batch goes through here, one entry each ([`encode_request`],
//! [`encode_batch`], [`decode_request`], [`decode_batch`]).
//!
//! Traces and logs are encoded in one pass over the data.
//!
//! prost writes a nested message as its length followed by its fields, so
//! before writing a span it asks the span for its encoded length, and before
//! that the scope and the resource asked too: every byte of a batch is sized
//! three or four times over, and for an 8192-span batch that lives far outside
//! the CPU caches each of those passes is a walk through cold memory.
//!
//! This encoder writes each nested message once: it leaves room for a length
//! prefix of a guessed width, writes the fields, and then fills the prefix in.
//! When the guess was wrong it moves the just-written body (still hot in the
//! cache) by the difference, so the output is canonical protobuf, byte for
//! byte what prost writes (fields in tag order, proto3 defaults left out,
//! minimal varints). Guesses are per message type: four bytes for a resource
//! or scope group (up to 256 MiB without a move), two for a span or log
//! record, one for an attribute.
//!
//! Metrics keep prost's encoder: they are far fewer items per byte, and the
//! data point types are many.

use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};

use prost::encoding::{encoded_len_varint, WireType};

use crate::signal::{
    EncodedBatch, ExportLogsServiceRequest, ExportMetricsServiceRequest, ExportTraceServiceRequest,
    Signal, Telemetry,
};

/// Encodes `data` as an OTLP export request body, with its signal and item
/// count.
pub fn encode_batch(data: &Telemetry) -> EncodedBatch {
    // A first guess at the encoded size (a few hundred bytes an item), so
    // the buffer rarely grows; untouched capacity is never paged in.
    let mut buf = Vec::with_capacity((data.item_count() * 512).clamp(4096, 64 << 20));
    encode_request(data, &mut buf);
    EncodedBatch {
        signal: data.signal(),
        items: data.item_count(),
        bytes: buf.into(),
        shape: None,
    }
}

/// Decodes an encoded batch back into structs.
pub fn decode_batch(batch: &EncodedBatch) -> Result<Telemetry, prost::DecodeError> {
    decode_request(batch.signal, &batch.bytes)
}

/// Decodes an OTLP export request body of `signal`.
pub fn decode_request(signal: Signal, bytes: &[u8]) -> Result<Telemetry, prost::DecodeError> {
    use prost::Message;
    Ok(match signal {
        Signal::Traces => {
            Telemetry::Traces(ExportTraceServiceRequest::decode(bytes)?.resource_spans)
        }
        Signal::Metrics => {
            Telemetry::Metrics(ExportMetricsServiceRequest::decode(bytes)?.resource_metrics)
        }
        Signal::Logs => Telemetry::Logs(ExportLogsServiceRequest::decode(bytes)?.resource_logs),
    })
}

/// Appends the batch as the body of an OTLP export request
/// (`Export{Trace,Metrics,Logs}ServiceRequest`: field 1, repeated), without
/// copying it into a request struct first. Appending is concatenating:
/// two request bodies one after the other are the body holding both.
pub fn encode_request(data: &Telemetry, buf: &mut Vec<u8>) {
    match data {
        Telemetry::Traces(v) => v.iter().for_each(|r| resource_spans(buf, 1, r)),
        Telemetry::Logs(v) => v.iter().for_each(|r| resource_logs(buf, 1, r)),
        Telemetry::Metrics(v) => v
            .iter()
            .for_each(|m| prost::encoding::message::encode(1, m, buf)),
    }
}

// Varints are pushed straight onto the `Vec`: prost's `encode_varint` and
// `encode_key` go through `BufMut` and made the whole encoder ~1.5x slower in
// `cargo bench --bench pipeline -- encode_batch`.
#[inline]
fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline]
fn key(buf: &mut Vec<u8>, tag: u32, wire: WireType) {
    varint(buf, u64::from(tag << 3 | wire as u32));
}

/// A nested message: the key, a length prefix of `guess` bytes filled in once
/// `body` has written the fields, moved when the guess was wrong.
#[inline]
fn nested(buf: &mut Vec<u8>, tag: u32, guess: usize, body: impl FnOnce(&mut Vec<u8>)) {
    key(buf, tag, WireType::LengthDelimited);
    let at = buf.len();
    buf.resize(at + guess, 0);
    body(buf);
    let len = buf.len() - at - guess;
    let need = encoded_len_varint(len as u64);
    if need != guess {
        if need > guess {
            buf.resize(buf.len() + need - guess, 0);
        }
        buf.copy_within(at + guess..at + guess + len, at + need);
        buf.truncate(at + need + len);
    }
    let mut v = len as u64;
    for b in &mut buf[at..at + need] {
        *b = if v >= 0x80 { v as u8 | 0x80 } else { v as u8 };
        v >>= 7;
    }
}

#[inline]
fn bytes(buf: &mut Vec<u8>, tag: u32, v: &[u8]) {
    key(buf, tag, WireType::LengthDelimited);
    varint(buf, v.len() as u64);
    buf.extend_from_slice(v);
}

/// A proto3 `bytes`/`string` field: left out when empty.
#[inline]
fn bytes_opt(buf: &mut Vec<u8>, tag: u32, v: &[u8]) {
    if !v.is_empty() {
        bytes(buf, tag, v);
    }
}

#[inline]
fn fixed64(buf: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        key(buf, tag, WireType::SixtyFourBit);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

#[inline]
fn fixed32(buf: &mut Vec<u8>, tag: u32, v: u32) {
    if v != 0 {
        key(buf, tag, WireType::ThirtyTwoBit);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

#[inline]
fn uint32(buf: &mut Vec<u8>, tag: u32, v: u32) {
    if v != 0 {
        key(buf, tag, WireType::Varint);
        varint(buf, u64::from(v));
    }
}

/// `int32` and enums: negative values take ten bytes (sign-extended), as in prost.
#[inline]
fn int32(buf: &mut Vec<u8>, tag: u32, v: i32) {
    if v != 0 {
        key(buf, tag, WireType::Varint);
        varint(buf, i64::from(v) as u64);
    }
}

/// The four group messages (`ResourceSpans`, `ScopeSpans`, `ResourceLogs`,
/// `ScopeLogs`) share one shape: 1 = the resource or scope, 2 = the items,
/// 3 = `schema_url`.
#[inline]
fn group<H, T>(
    buf: &mut Vec<u8>,
    tag: u32,
    head: Option<&H>,
    write_head: fn(&mut Vec<u8>, u32, &H),
    items: &[T],
    write_item: fn(&mut Vec<u8>, u32, &T),
    schema_url: &str,
) {
    nested(buf, tag, 4, |buf| {
        if let Some(h) = head {
            write_head(buf, 1, h);
        }
        for item in items {
            write_item(buf, 2, item);
        }
        bytes_opt(buf, 3, schema_url.as_bytes());
    });
}

fn resource_spans(buf: &mut Vec<u8>, tag: u32, r: &ResourceSpans) {
    let (res, scopes) = (r.resource.as_ref(), &r.scope_spans);
    group(buf, tag, res, resource, scopes, scope_spans, &r.schema_url);
}

fn scope_spans(buf: &mut Vec<u8>, tag: u32, s: &ScopeSpans) {
    let scope = s.scope.as_ref();
    group(
        buf,
        tag,
        scope,
        instrumentation_scope,
        &s.spans,
        span,
        &s.schema_url,
    );
}

fn resource_logs(buf: &mut Vec<u8>, tag: u32, r: &ResourceLogs) {
    let (res, scopes) = (r.resource.as_ref(), &r.scope_logs);
    group(buf, tag, res, resource, scopes, scope_logs, &r.schema_url);
}

fn scope_logs(buf: &mut Vec<u8>, tag: u32, s: &ScopeLogs) {
    let (scope, records) = (s.scope.as_ref(), &s.log_records);
    group(
        buf,
        tag,
        scope,
        instrumentation_scope,
        records,
        log_record,
        &s.schema_url,
    );
}

fn span(buf: &mut Vec<u8>, tag: u32, s: &Span) {
    nested(buf, tag, 2, |buf| {
        bytes_opt(buf, 1, &s.trace_id);
        bytes_opt(buf, 2, &s.span_id);
        bytes_opt(buf, 3, s.trace_state.as_bytes());
        bytes_opt(buf, 4, &s.parent_span_id);
        bytes_opt(buf, 5, s.name.as_bytes());
        int32(buf, 6, s.kind);
        fixed64(buf, 7, s.start_time_unix_nano);
        fixed64(buf, 8, s.end_time_unix_nano);
        for kv in &s.attributes {
            key_value(buf, 9, kv);
        }
        uint32(buf, 10, s.dropped_attributes_count);
        for e in &s.events {
            event(buf, 11, e);
        }
        uint32(buf, 12, s.dropped_events_count);
        for l in &s.links {
            link(buf, 13, l);
        }
        uint32(buf, 14, s.dropped_links_count);
        if let Some(st) = &s.status {
            status(buf, 15, st);
        }
        fixed32(buf, 16, s.flags);
    });
}

fn event(buf: &mut Vec<u8>, tag: u32, e: &span::Event) {
    nested(buf, tag, 1, |buf| {
        fixed64(buf, 1, e.time_unix_nano);
        bytes_opt(buf, 2, e.name.as_bytes());
        for kv in &e.attributes {
            key_value(buf, 3, kv);
        }
        uint32(buf, 4, e.dropped_attributes_count);
    });
}

fn link(buf: &mut Vec<u8>, tag: u32, l: &span::Link) {
    nested(buf, tag, 1, |buf| {
        bytes_opt(buf, 1, &l.trace_id);
        bytes_opt(buf, 2, &l.span_id);
        bytes_opt(buf, 3, l.trace_state.as_bytes());
        for kv in &l.attributes {
            key_value(buf, 4, kv);
        }
        uint32(buf, 5, l.dropped_attributes_count);
        fixed32(buf, 6, l.flags);
    });
}

fn status(buf: &mut Vec<u8>, tag: u32, s: &Status) {
    nested(buf, tag, 1, |buf| {
        bytes_opt(buf, 2, s.message.as_bytes());
        int32(buf, 3, s.code);
    });
}

fn log_record(buf: &mut Vec<u8>, tag: u32, r: &LogRecord) {
    nested(buf, tag, 2, |buf| {
        fixed64(buf, 1, r.time_unix_nano);
        int32(buf, 2, r.severity_number);
        bytes_opt(buf, 3, r.severity_text.as_bytes());
        if let Some(body) = &r.body {
            any_value(buf, 5, body);
        }
        for kv in &r.attributes {
            key_value(buf, 6, kv);
        }
        uint32(buf, 7, r.dropped_attributes_count);
        fixed32(buf, 8, r.flags);
        bytes_opt(buf, 9, &r.trace_id);
        bytes_opt(buf, 10, &r.span_id);
        fixed64(buf, 11, r.observed_time_unix_nano);
        bytes_opt(buf, 12, r.event_name.as_bytes());
    });
}

fn resource(buf: &mut Vec<u8>, tag: u32, r: &Resource) {
    nested(buf, tag, 2, |buf| {
        for kv in &r.attributes {
            key_value(buf, 1, kv);
        }
        uint32(buf, 2, r.dropped_attributes_count);
        for e in &r.entity_refs {
            entity_ref(buf, 3, e);
        }
    });
}

fn entity_ref(buf: &mut Vec<u8>, tag: u32, e: &EntityRef) {
    nested(buf, tag, 1, |buf| {
        bytes_opt(buf, 1, e.schema_url.as_bytes());
        bytes_opt(buf, 2, e.r#type.as_bytes());
        // Repeated strings are written even when empty.
        for k in &e.id_keys {
            bytes(buf, 3, k.as_bytes());
        }
        for k in &e.description_keys {
            bytes(buf, 4, k.as_bytes());
        }
    });
}

fn instrumentation_scope(buf: &mut Vec<u8>, tag: u32, s: &InstrumentationScope) {
    nested(buf, tag, 1, |buf| {
        bytes_opt(buf, 1, s.name.as_bytes());
        bytes_opt(buf, 2, s.version.as_bytes());
        for kv in &s.attributes {
            key_value(buf, 3, kv);
        }
        uint32(buf, 4, s.dropped_attributes_count);
    });
}

fn key_value(buf: &mut Vec<u8>, tag: u32, kv: &KeyValue) {
    nested(buf, tag, 1, |buf| {
        bytes_opt(buf, 1, kv.key.as_bytes());
        if let Some(v) = &kv.value {
            any_value(buf, 2, v);
        }
        int32(buf, 3, kv.key_strindex);
    });
}

fn any_value(buf: &mut Vec<u8>, tag: u32, v: &AnyValue) {
    use any_value::Value;
    // A set oneof member is written even when it holds its type's default.
    match &v.value {
        // The common case, a short string, without a length-prefix guess.
        Some(Value::StringValue(s)) if s.len() < 126 => {
            key(buf, tag, WireType::LengthDelimited);
            buf.push((s.len() + 2) as u8);
            bytes(buf, 1, s.as_bytes());
        }
        value => nested(buf, tag, 1, |buf| match value {
            None => {}
            Some(Value::StringValue(s)) => bytes(buf, 1, s.as_bytes()),
            Some(Value::BoolValue(b)) => {
                key(buf, 2, WireType::Varint);
                buf.push(u8::from(*b));
            }
            Some(Value::IntValue(i)) => {
                key(buf, 3, WireType::Varint);
                varint(buf, *i as u64);
            }
            Some(Value::DoubleValue(d)) => {
                key(buf, 4, WireType::SixtyFourBit);
                buf.extend_from_slice(&d.to_bits().to_le_bytes());
            }
            Some(Value::ArrayValue(a)) => array_value(buf, 5, a),
            Some(Value::KvlistValue(l)) => key_value_list(buf, 6, l),
            Some(Value::BytesValue(b)) => bytes(buf, 7, b),
            Some(Value::StringValueStrindex(i)) => {
                key(buf, 8, WireType::Varint);
                varint(buf, i64::from(*i) as u64);
            }
        }),
    }
}

fn array_value(buf: &mut Vec<u8>, tag: u32, a: &ArrayValue) {
    nested(buf, tag, 1, |buf| {
        for v in &a.values {
            any_value(buf, 1, v);
        }
    });
}

fn key_value_list(buf: &mut Vec<u8>, tag: u32, l: &KeyValueList) {
    nested(buf, tag, 1, |buf| {
        for kv in &l.values {
            key_value(buf, 1, kv);
        }
    });
}

#[cfg(test)]
pub(crate) mod tests;
