//! Telemetry → Kinesis Data Streams records, for the `awskinesis`
//! exporter. Pure: no I/O.
//!
//! 1. **Partition** ([`partition`]): each span (log record) goes under its
//!    partition key: its agent session (the first of `session_keys` on the
//!    span, then on its resource; else the session its trace named earlier,
//!    else its trace id), its trace id, or an attribute's value. Items with
//!    no key (metrics, logs without a trace) share one random key per batch.
//! 2. **Encode** ([`user_records`]): the items of one key become one OTLP
//!    export request (protobuf or JSON, optionally gzip), halved until it
//!    fits a record; an item that alone is over the limit is dropped.
//! 3. **Aggregate** ([`aggregate`]): user records that map to the same
//!    shard (MD5 of the partition key in the shard's hash key range, as
//!    Kinesis maps them) are packed into KPL aggregated records up to the
//!    record limit (`F3 89 9A C2`, a protobuf `AggregatedRecord`, its MD5),
//!    which the `awskinesis` receiver and every KCL consumer unpack. Without
//!    a shard map, only user records of the same key are packed together.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::io::Write;

use md5::{Digest, Md5};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

use super::cwl::KPL_MAGIC;
use super::otlp_view::{self, Value};
use crate::signal::Telemetry;

/// The largest record Kinesis takes: data and partition key, in bytes.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Records per `PutRecords` call at most.
pub const MAX_RECORDS_PER_CALL: usize = 500;
/// Bytes per `PutRecords` call at most (data and partition keys).
pub const MAX_CALL_BYTES: usize = 5 * 1024 * 1024;
/// The longest partition key, in characters (bytes here: keys are cut on a
/// character boundary to at most this many bytes).
pub const MAX_PARTITION_KEY: usize = 256;

/// What a record's partition key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionKey {
    /// The agent session (see the module doc), by these attributes in order.
    Session(Vec<String>),
    /// The trace id (hex).
    TraceId,
    /// This attribute's value (span or record first, then resource).
    Attribute(String),
}

/// How user records are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// An OTLP protobuf export request.
    OtlpProto,
    /// An OTLP/JSON export request.
    OtlpJson,
}

/// One user record: an export request for one partition key.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    /// Its partition key.
    pub key: String,
    /// The (possibly compressed) request.
    pub data: Vec<u8>,
    /// Items (spans, records, points) in it.
    pub items: usize,
}

/// One Kinesis record as sent: a user record, or several aggregated.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The partition key Kinesis hashes.
    pub partition_key: String,
    /// The record's data.
    pub data: Vec<u8>,
    /// Items in it.
    pub items: usize,
    /// User records in it.
    pub user_records: usize,
    /// Its shard by the shard map, if one was given.
    pub shard: Option<usize>,
}

impl Record {
    /// What the record counts against call and shard limits.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// The open shards of a stream and their hash key ranges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardMap {
    /// (first hash key, last hash key, shard id), by first hash key.
    pub shards: Vec<(u128, u128, String)>,
}

impl ShardMap {
    /// A map from `(starting, ending hash key as decimal text, shard id)`.
    pub fn new(
        ranges: impl IntoIterator<Item = (String, String, String)>,
    ) -> Result<ShardMap, String> {
        let mut shards = Vec::new();
        for (start, end, id) in ranges {
            let s: u128 = start
                .parse()
                .map_err(|_| format!("shard {id}: bad starting hash key `{start}`"))?;
            let e: u128 = end
                .parse()
                .map_err(|_| format!("shard {id}: bad ending hash key `{end}`"))?;
            shards.push((s, e, id));
        }
        shards.sort_by_key(|(s, _, _)| *s);
        Ok(ShardMap { shards })
    }

    /// The shard (index into `shards`) a partition key maps to.
    pub fn shard_of(&self, partition_key: &str) -> Option<usize> {
        let h = hash_key(partition_key);
        let i = self.shards.partition_point(|(s, _, _)| *s <= h);
        let i = i.checked_sub(1)?;
        (h <= self.shards[i].1).then_some(i)
    }
}

/// The 128-bit hash key Kinesis computes for a partition key: its MD5, as
/// a big-endian number.
pub fn hash_key(partition_key: &str) -> u128 {
    let d = Md5::digest(partition_key.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d);
    u128::from_be_bytes(b)
}

/// Trace-to-session links, so spans that do not name their session follow
/// the span of their trace that did; the oldest are forgotten past `cap`.
#[derive(Debug, Default)]
pub struct SessionLinks {
    map: HashMap<Vec<u8>, String>,
    order: VecDeque<Vec<u8>>,
    cap: usize,
}

impl SessionLinks {
    /// Links for at most `cap` traces.
    pub fn new(cap: usize) -> SessionLinks {
        SessionLinks {
            cap: cap.max(1),
            ..SessionLinks::default()
        }
    }

    fn link(&mut self, trace: &[u8], session: &str) {
        if self.map.contains_key(trace) {
            return;
        }
        self.map.insert(trace.to_vec(), session.to_string());
        self.order.push_back(trace.to_vec());
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

fn text(kv: &KeyValue) -> Option<String> {
    match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) if !s.is_empty() => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

fn first_of(keys: &[String], attrs: &[KeyValue], res: &[KeyValue]) -> Option<String> {
    keys.iter().find_map(|k| {
        attrs
            .iter()
            .chain(res)
            .find(|kv| &kv.key == k)
            .and_then(text)
    })
}

/// `s` cut to a valid partition key (1–256 bytes on a character boundary).
fn cut_key(mut s: String) -> String {
    let end = cut_str(&s).len();
    s.truncate(end);
    s
}

/// `s` cut to at most [`MAX_PARTITION_KEY`] bytes on a character boundary.
fn cut_str(s: &str) -> &str {
    let mut end = s.len().min(MAX_PARTITION_KEY);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Splits a batch by partition key, keeping each item's resource and
/// scope. Keys come out in first-seen order. `fallback` is the key of items
/// that have none.
pub fn partition(
    data: &Telemetry,
    key: &PartitionKey,
    links: &mut SessionLinks,
    fallback: &str,
) -> Vec<(String, Telemetry)> {
    let mut order: Vec<String> = Vec::new();
    let mut parts: HashMap<String, Telemetry> = HashMap::new();
    fn slot<'p>(
        parts: &'p mut HashMap<String, Telemetry>,
        order: &mut Vec<String>,
        k: String,
        empty: fn() -> Telemetry,
    ) -> &'p mut Telemetry {
        if !parts.contains_key(&k) {
            order.push(k.clone());
        }
        parts.entry(k).or_insert_with(empty)
    }
    match data {
        Telemetry::Traces(rss) => {
            for rs in rss {
                let res = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes);
                for ss in &rs.scope_spans {
                    // Per key, the ScopeSpans this scope became in its part.
                    let mut here: HashMap<String, usize> = HashMap::new();
                    for span in &ss.spans {
                        let k = match key {
                            PartitionKey::TraceId => hex::encode(&span.trace_id),
                            PartitionKey::Attribute(a) => {
                                first_of(std::slice::from_ref(a), &span.attributes, res)
                                    .unwrap_or_else(|| fallback.to_string())
                            }
                            PartitionKey::Session(keys) => {
                                match first_of(keys, &span.attributes, res) {
                                    Some(s) => {
                                        links.link(&span.trace_id, &s);
                                        s
                                    }
                                    None => links
                                        .map
                                        .get(&span.trace_id)
                                        .cloned()
                                        .unwrap_or_else(|| hex::encode(&span.trace_id)),
                                }
                            }
                        };
                        let k = cut_key(if k.is_empty() {
                            fallback.to_string()
                        } else {
                            k
                        });
                        let Telemetry::Traces(out) =
                            slot(&mut parts, &mut order, k.clone(), || {
                                Telemetry::Traces(Vec::new())
                            })
                        else {
                            continue;
                        };
                        let i = *here.entry(k).or_insert_with(|| {
                            out.push(ResourceSpans {
                                resource: rs.resource.clone(),
                                scope_spans: vec![ScopeSpans {
                                    scope: ss.scope.clone(),
                                    spans: Vec::new(),
                                    schema_url: ss.schema_url.clone(),
                                }],
                                schema_url: rs.schema_url.clone(),
                            });
                            out.len() - 1
                        });
                        out[i].scope_spans[0].spans.push(span.clone());
                    }
                }
            }
        }
        Telemetry::Logs(rls) => {
            for rl in rls {
                let res = rl.resource.as_ref().map_or(&[][..], |r| &r.attributes);
                for sl in &rl.scope_logs {
                    let mut here: HashMap<String, usize> = HashMap::new();
                    for rec in &sl.log_records {
                        let trace = (!rec.trace_id.is_empty()).then(|| hex::encode(&rec.trace_id));
                        let k = match key {
                            PartitionKey::TraceId => trace,
                            PartitionKey::Attribute(a) => {
                                first_of(std::slice::from_ref(a), &rec.attributes, res)
                            }
                            PartitionKey::Session(keys) => first_of(keys, &rec.attributes, res)
                                .or_else(|| links.map.get(&rec.trace_id).cloned())
                                .or(trace),
                        }
                        .unwrap_or_else(|| fallback.to_string());
                        let k = cut_key(k);
                        let Telemetry::Logs(out) = slot(&mut parts, &mut order, k.clone(), || {
                            Telemetry::Logs(Vec::new())
                        }) else {
                            continue;
                        };
                        let i = *here.entry(k).or_insert_with(|| {
                            out.push(ResourceLogs {
                                resource: rl.resource.clone(),
                                scope_logs: vec![ScopeLogs {
                                    scope: sl.scope.clone(),
                                    log_records: Vec::new(),
                                    schema_url: sl.schema_url.clone(),
                                }],
                                schema_url: rl.schema_url.clone(),
                            });
                            out.len() - 1
                        });
                        out[i].scope_logs[0].log_records.push(rec.clone());
                    }
                }
            }
        }
        Telemetry::Metrics(rms) => {
            for rm in rms {
                let res = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes);
                let k = match key {
                    PartitionKey::Attribute(a) => first_of(std::slice::from_ref(a), &[], res),
                    _ => None,
                }
                .unwrap_or_else(|| fallback.to_string());
                if let Telemetry::Metrics(out) = slot(&mut parts, &mut order, cut_key(k), || {
                    Telemetry::Metrics(Vec::new())
                }) {
                    out.push(rm.clone());
                }
            }
        }
    }
    order
        .into_iter()
        .filter_map(|k| parts.remove(&k).map(|t| (k, t)))
        .collect()
}

fn encode(data: &Telemetry, encoding: Encoding, gzip: bool) -> Vec<u8> {
    let raw = match encoding {
        Encoding::OtlpProto => {
            let mut buf = Vec::new();
            super::otlp_proto::encode_request(data, &mut buf);
            buf
        }
        Encoding::OtlpJson => super::otlp_json::encode_to_vec(data),
    };
    if gzip {
        gzip_bytes(&raw)
    } else {
        raw
    }
}

fn gzip_bytes(raw: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec does not fail.
    let _ = z.write_all(raw);
    z.finish().unwrap_or_default()
}

/// Encodes each part as user records of at most `max_bytes` (data and
/// key). Returns them and the items dropped because one alone is larger.
pub fn user_records(
    parts: Vec<(String, Telemetry)>,
    encoding: Encoding,
    gzip: bool,
    max_bytes: usize,
) -> (Vec<UserRecord>, usize) {
    let mut out = Vec::new();
    let mut dropped = 0;
    let mut todo: Vec<(String, Telemetry)> = parts.into_iter().rev().collect();
    while let Some((key, data)) = todo.pop() {
        let items = data.item_count();
        if items == 0 {
            continue;
        }
        let bytes = encode(&data, encoding, gzip);
        if bytes.len() + key.len() <= max_bytes {
            out.push(UserRecord {
                key,
                data: bytes,
                items,
            });
            continue;
        }
        if items == 1 {
            dropped += 1;
            continue;
        }
        let mut rest = data;
        let head = super::split::split_front(&mut rest, items / 2);
        todo.push((key.clone(), rest));
        todo.push((key, head));
    }
    (out, dropped)
}

fn varint_len(v: usize) -> usize {
    otlp_view::varint_len(v as u64)
}

fn put_varint(out: &mut Vec<u8>, v: usize) {
    otlp_view::put_varint(out, v as u64);
}

/// A value as partition key text: what [`text`] makes of the same value
/// decoded (a string borrowed from the request).
fn view_text<'a>(v: &Value<'a>) -> Option<Cow<'a, str>> {
    match v {
        Value::Str(s) if !s.is_empty() => Some(Cow::Borrowed(*s)),
        Value::Int(i) => Some(Cow::Owned(i.to_string())),
        Value::Bool(b) => Some(Cow::Owned(b.to_string())),
        Value::Double(d) => Some(Cow::Owned(d.to_string())),
        _ => None,
    }
}

/// The first of `keys` on the span (`attrs`: its attribute fields), then on
/// its resource, as [`first_of`] reads decoded attributes.
fn first_of_view<'a>(
    keys: &[String],
    attrs: &[(&'a str, Value<'a>)],
    res: &[(&'a str, Value<'a>)],
) -> Option<Cow<'a, str>> {
    keys.iter().find_map(|k| {
        attrs
            .iter()
            .chain(res)
            .find(|(name, _)| *name == k)
            .and_then(|(_, v)| view_text(v))
    })
}

/// An encoded traces request split by partition key, as [`partition`]
/// splits structs, without decoding it: each span stays its bytes.
#[derive(Debug, Default)]
pub struct EncodedParts<'a> {
    /// Per resource and scope: the `ResourceSpans` fields but its scopes,
    /// and the `ScopeSpans` fields but its spans.
    blocks: Vec<(Vec<u8>, Vec<u8>)>,
    /// Per key, in first-seen order: its spans.
    parts: Vec<(String, Vec<SpanRef<'a>>)>,
}

/// The attributes of a span or resource that name a key, as read.
type KeyAttrs<'a> = Vec<(&'a str, Value<'a>)>;

/// One span of an encoded request: its block's index and its whole field.
type SpanRef<'a> = (usize, &'a [u8]);

impl EncodedParts<'_> {
    /// Writes `spans` as an export request body.
    fn encode(&self, spans: &[SpanRef<'_>], out: &mut Vec<u8>) {
        let mut run: Vec<&[u8]> = Vec::new();
        let mut current = None;
        for (b, field) in spans {
            if current.is_some_and(|c| c != *b) {
                self.write_run(current, &run, out);
                run.clear();
            }
            current = Some(*b);
            run.push(field);
        }
        self.write_run(current, &run, out);
    }

    fn write_run(&self, block: Option<usize>, run: &[&[u8]], out: &mut Vec<u8>) {
        if let Some((resource, scope)) = block.and_then(|b| self.blocks.get(b)) {
            otlp_view::write_block(out, resource, scope, run, None);
        }
    }
}

/// Splits the body of an `ExportTraceServiceRequest` (one a receiver has
/// checked) by partition key, as [`partition`] does decoded traces.
pub fn partition_encoded<'a>(
    request: &'a [u8],
    key: &PartitionKey,
    links: &mut SessionLinks,
    fallback: &str,
) -> EncodedParts<'a> {
    let mut out = EncodedParts::default();
    let mut index: HashMap<String, usize> = HashMap::new();
    let keys: &[String] = match key {
        PartitionKey::Session(keys) => keys,
        PartitionKey::Attribute(a) => std::slice::from_ref(a),
        PartitionKey::TraceId => &[],
    };
    // The key attributes of the current resource and span (buffers reused).
    let mut res_attrs: KeyAttrs<'a> = Vec::new();
    let mut attrs: KeyAttrs<'a> = Vec::new();
    otlp_view::for_each_scope(request, |scope| {
        if scope.first_in_resource {
            res_attrs.clear();
            if !keys.is_empty() {
                let resource = otlp_view::message_in(scope.resource_body, 1).unwrap_or_default();
                res_attrs.extend(
                    otlp_view::attributes_in(resource, 1)
                        .filter(|(k, _)| keys.iter().any(|w| w == k)),
                );
            }
        }
        let block = out.blocks.len();
        out.blocks
            .push((scope.resource_fields.to_vec(), scope.scope_fields.to_vec()));
        for (field, body) in scope.items {
            let view = otlp_view::SpanView::of_body(body);
            attrs.clear();
            if !keys.is_empty() {
                attrs.extend(
                    view.attributes()
                        .filter(|(k, _)| keys.iter().any(|w| w == k)),
                );
            }
            let k: Cow<'_, str> = match key {
                PartitionKey::TraceId => Cow::Owned(hex::encode(view.trace_id)),
                PartitionKey::Attribute(_) => {
                    first_of_view(keys, &attrs, &res_attrs).unwrap_or(Cow::Borrowed(fallback))
                }
                PartitionKey::Session(_) => match first_of_view(keys, &attrs, &res_attrs) {
                    Some(s) => {
                        links.link(view.trace_id, &s);
                        s
                    }
                    None => match links.map.get(view.trace_id) {
                        Some(s) => Cow::Borrowed(s.as_str()),
                        None => Cow::Owned(hex::encode(view.trace_id)),
                    },
                },
            };
            // The key as `partition` makes it; allocated once per new key.
            let k = cut_str(if k.is_empty() { fallback } else { &k });
            let i = match index.get(k) {
                Some(i) => *i,
                None => {
                    index.insert(k.to_string(), out.parts.len());
                    out.parts.push((k.to_string(), Vec::new()));
                    out.parts.len() - 1
                }
            };
            if let Some((_, list)) = out.parts.get_mut(i) {
                list.push((block, *field));
            }
        }
    });
    out
}

/// [`user_records`] for an encoded request's parts (OTLP protobuf).
pub fn user_records_encoded(
    parts: EncodedParts<'_>,
    gzip: bool,
    max_bytes: usize,
) -> (Vec<UserRecord>, usize) {
    let mut out = Vec::new();
    let mut dropped = 0;
    let mut todo: Vec<(String, &[SpanRef<'_>])> = parts
        .parts
        .iter()
        .rev()
        .map(|(k, s)| (k.clone(), s.as_slice()))
        .collect();
    while let Some((key, spans)) = todo.pop() {
        if spans.is_empty() {
            continue;
        }
        let mut raw = Vec::new();
        parts.encode(spans, &mut raw);
        let bytes = if gzip { gzip_bytes(&raw) } else { raw };
        if bytes.len() + key.len() <= max_bytes {
            out.push(UserRecord {
                key,
                data: bytes,
                items: spans.len(),
            });
            continue;
        }
        if spans.len() == 1 {
            dropped += 1;
            continue;
        }
        let (head, rest) = spans.split_at(spans.len() / 2);
        todo.push((key.clone(), rest));
        todo.push((key, head));
    }
    (out, dropped)
}

/// One aggregated record being filled.
struct Agg {
    keys: Vec<String>,
    records: Vec<(usize, UserRecord)>,
    /// Its encoded size so far (magic and digest included).
    size: usize,
    shard: Option<usize>,
}

impl Agg {
    fn new(shard: Option<usize>) -> Agg {
        Agg {
            keys: Vec::new(),
            records: Vec::new(),
            size: KPL_MAGIC.len() + 16,
            shard,
        }
    }

    /// What adding `r` would make its size.
    fn with(&self, r: &UserRecord) -> (usize, Option<usize>) {
        let known = self.keys.iter().position(|k| *k == r.key);
        let key_cost = match known {
            Some(_) => 0,
            None => 1 + varint_len(r.key.len()) + r.key.len(),
        };
        let idx = known.unwrap_or(self.keys.len());
        let inner = 1 + varint_len(idx) + 1 + varint_len(r.data.len()) + r.data.len();
        (self.size + key_cost + 1 + varint_len(inner) + inner, known)
    }

    fn push(&mut self, r: UserRecord) {
        let (size, known) = self.with(&r);
        let idx = match known {
            Some(i) => i,
            None => {
                self.keys.push(r.key.clone());
                self.keys.len() - 1
            }
        };
        self.size = size;
        self.records.push((idx, r));
    }

    fn finish(self) -> Option<Record> {
        let shard = self.shard;
        let mut records = self.records;
        if records.len() <= 1 {
            // One user record goes as it is.
            let (_, r) = records.pop()?;
            return Some(Record {
                partition_key: r.key,
                items: r.items,
                data: r.data,
                user_records: 1,
                shard,
            });
        }
        // Magic, body, then the body's MD5: written in place, one copy.
        let mut body = Vec::with_capacity(self.size);
        body.extend_from_slice(&KPL_MAGIC);
        for k in &self.keys {
            body.push(0x0a);
            put_varint(&mut body, k.len());
            body.extend_from_slice(k.as_bytes());
        }
        let items = records.iter().map(|(_, r)| r.items).sum();
        let n = records.len();
        for (idx, r) in &records {
            let inner = 1 + varint_len(*idx) + 1 + varint_len(r.data.len()) + r.data.len();
            body.push(0x1a);
            put_varint(&mut body, inner);
            body.push(0x08);
            put_varint(&mut body, *idx);
            body.push(0x1a);
            put_varint(&mut body, r.data.len());
            body.extend_from_slice(&r.data);
        }
        let digest = Md5::digest(&body[KPL_MAGIC.len()..]);
        body.extend_from_slice(&digest);
        let data = body;
        let partition_key = records.swap_remove(0).1.key;
        Some(Record {
            partition_key,
            data,
            items,
            user_records: n,
            shard,
        })
    }
}

/// Packs user records into Kinesis records of at most `max_bytes` (data
/// and partition key): those of one shard together when `map` is given,
/// else those of one key. With `aggregate` false, each user record is a
/// record.
pub fn aggregate(
    users: Vec<UserRecord>,
    map: Option<&ShardMap>,
    aggregate: bool,
    max_bytes: usize,
) -> Vec<Record> {
    let mut out = Vec::new();
    if !aggregate {
        for r in users {
            let shard = map.and_then(|m| m.shard_of(&r.key));
            out.push(Record {
                partition_key: r.key,
                items: r.items,
                data: r.data,
                user_records: 1,
                shard,
            });
        }
        return out;
    }
    // One open aggregate per shard (or per key without a map).
    let mut open: HashMap<String, Agg> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for r in users {
        let shard = map.and_then(|m| m.shard_of(&r.key));
        let group = match (shard, map) {
            (Some(s), _) => format!("#{s}"),
            _ => r.key.clone(),
        };
        let agg = open.entry(group.clone()).or_insert_with(|| {
            order.push(group.clone());
            Agg::new(shard)
        });
        // The aggregate's partition key is its first record's.
        let first_key_len = agg
            .records
            .first()
            .map_or(r.key.len(), |(_, f)| f.key.len());
        if !agg.records.is_empty() && agg.with(&r).0 + first_key_len > max_bytes {
            let full = std::mem::replace(agg, Agg::new(shard));
            out.extend(full.finish());
        }
        agg.push(r);
    }
    for g in order {
        if let Some(agg) = open.remove(&g) {
            out.extend(agg.finish());
        }
    }
    out
}

/// Cuts records into `PutRecords` calls: at most [`MAX_RECORDS_PER_CALL`]
/// records and [`MAX_CALL_BYTES`] each.
pub fn calls(records: Vec<Record>, max_records: usize) -> Vec<Vec<Record>> {
    let max_records = max_records.clamp(1, MAX_RECORDS_PER_CALL);
    let mut out: Vec<Vec<Record>> = Vec::new();
    let mut bytes = 0;
    for r in records {
        let fits = out
            .last()
            .is_some_and(|c| c.len() < max_records && bytes + r.size() <= MAX_CALL_BYTES);
        if !fits {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += r.size();
        if let Some(c) = out.last_mut() {
            c.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::cwl::deaggregate;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Span;

    fn span(trace: u8, id: u8, session: Option<&str>) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            name: format!("s{trace}.{id}"),
            attributes: session
                .map(|s| vec![crate::signal::string_attribute("session.id", s)])
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    fn batch(spans: Vec<Span>) -> Telemetry {
        Telemetry::Traces(vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![crate::signal::string_attribute("service.name", "agent")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }])
    }

    fn names(t: &Telemetry) -> Vec<String> {
        match t {
            Telemetry::Traces(rs) => rs
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
                .map(|s| s.name.clone())
                .collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn spans_go_under_their_session_and_unnamed_ones_follow_their_trace() {
        let mut links = SessionLinks::new(100);
        let key = PartitionKey::Session(vec!["session.id".into()]);
        let parts = partition(
            &batch(vec![
                span(1, 1, Some("A")),
                span(2, 1, None),
                span(1, 2, None),
                span(3, 1, Some("B")),
            ]),
            &key,
            &mut links,
            "fb",
        );
        let got: Vec<(String, Vec<String>)> =
            parts.iter().map(|(k, t)| (k.clone(), names(t))).collect();
        assert_eq!(
            got,
            vec![
                (
                    "A".to_string(),
                    vec!["s1.1".to_string(), "s1.2".to_string()]
                ),
                (hex::encode([2u8; 16]), vec!["s2.1".to_string()]),
                ("B".to_string(), vec!["s3.1".to_string()]),
            ]
        );
        // A later batch: trace 1's spans still go to A.
        let parts = partition(&batch(vec![span(1, 3, None)]), &key, &mut links, "fb");
        assert_eq!(parts[0].0, "A");
        let by_trace = partition(
            &batch(vec![span(1, 3, Some("A"))]),
            &PartitionKey::TraceId,
            &mut links,
            "fb",
        );
        assert_eq!(by_trace[0].0, hex::encode([1u8; 16]));
    }

    /// A batch of two resources (one naming session C), two scopes, spans
    /// naming sessions A and B or none, ints and empty values.
    fn mixed_batch() -> Telemetry {
        let mut t = batch(vec![
            span(1, 1, Some("A")),
            span(2, 1, None),
            span(1, 2, None),
            span(3, 1, Some("B")),
            span(4, 1, Some("")),
        ]);
        if let Telemetry::Traces(rss) = &mut t {
            let mut other = rss[0].clone();
            other.resource = Some(Resource {
                attributes: vec![crate::signal::string_attribute("session.id", "C")],
                ..Default::default()
            });
            other.scope_spans[0].spans = vec![span(5, 1, None), span(3, 2, Some("B"))];
            let mut second = other.scope_spans[0].clone();
            second.scope = Some(Default::default());
            second.schema_url = "s".into();
            second.spans = vec![span(6, 1, None)];
            other.scope_spans.push(second);
            rss.push(other);
            rss[0].scope_spans[0].spans[1]
                .attributes
                .push(crate::signal::attribute(
                    "tenant",
                    any_value::Value::IntValue(7),
                ));
        }
        t
    }

    #[test]
    fn an_encoded_request_splits_into_the_same_records_as_its_structs() {
        let data = mixed_batch();
        let mut bytes = Vec::new();
        crate::convert::otlp_proto::encode_request(&data, &mut bytes);
        for key in [
            PartitionKey::Session(vec!["session.id".into()]),
            PartitionKey::TraceId,
            PartitionKey::Attribute("tenant".into()),
        ] {
            // Whole, and halved until each fits 120 bytes (down to one span).
            for max in [MAX_RECORD_BYTES, 120] {
                let (mut l1, mut l2) = (SessionLinks::new(10), SessionLinks::new(10));
                let from_structs = user_records(
                    partition(&data, &key, &mut l1, "fb"),
                    Encoding::OtlpProto,
                    false,
                    max,
                );
                let parts = partition_encoded(&bytes, &key, &mut l2, "fb");
                let keys: Vec<String> = parts.parts.iter().map(|(k, _)| k.clone()).collect();
                let from_bytes = user_records_encoded(parts, false, max);
                // The same records, but for field order inside a scope
                // (the bytes keep the sender's).
                let decoded = |r: &(Vec<UserRecord>, usize)| {
                    let records: Vec<_> =
                        r.0.iter()
                            .map(|u| {
                                let t = crate::convert::otlp_proto::decode_request(
                                    crate::signal::Signal::Traces,
                                    &u.data,
                                )
                                .unwrap();
                                (u.key.clone(), t, u.items, u.data.len())
                            })
                            .collect();
                    (records, r.1)
                };
                assert_eq!(
                    decoded(&from_bytes),
                    decoded(&from_structs),
                    "{key:?}, {max} bytes"
                );
                let mut want: Vec<String> = from_structs.0.iter().map(|r| r.key.clone()).collect();
                want.dedup();
                assert_eq!(keys, want);
                assert_eq!(l1.map, l2.map, "the same trace links");
            }
        }
        // The session split: A (with its unnamed trace-1 span), trace 2's
        // own key, B, an empty name as none (trace 4's key), C from the
        // resource.
        let (users, _) = user_records_encoded(
            partition_encoded(
                &bytes,
                &PartitionKey::Session(vec!["session.id".into()]),
                &mut SessionLinks::new(10),
                "fb",
            ),
            false,
            MAX_RECORD_BYTES,
        );
        let got: Vec<(String, usize)> = users.iter().map(|r| (r.key.clone(), r.items)).collect();
        assert_eq!(
            got,
            vec![
                ("A".to_string(), 2),
                (hex::encode([2u8; 16]), 1),
                ("B".to_string(), 2),
                (hex::encode([4u8; 16]), 1),
                ("C".to_string(), 2),
            ]
        );
        // One span over the limit alone is dropped and counted, as for structs.
        let (users, dropped) = user_records_encoded(
            partition_encoded(
                &bytes,
                &PartitionKey::TraceId,
                &mut SessionLinks::new(10),
                "fb",
            ),
            false,
            40,
        );
        assert!(users.is_empty());
        assert_eq!(dropped, 8);
    }

    #[test]
    fn records_are_aggregated_per_shard_and_unpack_to_the_user_records() {
        // Two shards splitting the hash space in half, as CreateStream makes them.
        let half = u128::MAX / 2;
        let map = ShardMap::new([
            ("0".to_string(), half.to_string(), "shard-0".to_string()),
            (
                (half + 1).to_string(),
                u128::MAX.to_string(),
                "shard-1".to_string(),
            ),
        ])
        .unwrap();
        let users: Vec<UserRecord> = (0..200)
            .map(|i| UserRecord {
                key: format!("session-{i}"),
                data: vec![i as u8; 3000],
                items: 1,
            })
            .collect();
        let records = aggregate(users.clone(), Some(&map), true, 64 * 1024);
        // 200 × ~3 kB in records of ≤ 64 kB: ~10 records, each one shard's.
        assert!(records.len() < 20, "{}", records.len());
        let mut unpacked = Vec::new();
        for r in &records {
            assert!(r.size() <= 64 * 1024, "{}", r.size());
            let shard = r.shard.unwrap();
            assert_eq!(map.shard_of(&r.partition_key), Some(shard));
            let parts = deaggregate(&r.data).unwrap();
            assert_eq!(parts.len(), r.user_records);
            unpacked.extend(parts.into_iter().map(|p| p.into_owned()));
        }
        let mut want: Vec<Vec<u8>> = users.iter().map(|u| u.data.clone()).collect();
        want.sort();
        unpacked.sort();
        assert_eq!(unpacked, want);
        // Each user record sits in its own key's shard.
        for r in &records {
            let n = r.user_records;
            if n > 1 {
                let agg: crate::proto::kpl::AggregatedRecord =
                    prost::Message::decode(&r.data[4..r.data.len() - 16]).unwrap();
                for k in &agg.partition_key_table {
                    assert_eq!(map.shard_of(k), r.shard);
                }
            }
        }
        // Without aggregation: one record each.
        assert_eq!(aggregate(users, Some(&map), false, 64 * 1024).len(), 200);
    }

    #[test]
    fn shard_map_follows_kinesis_hashing() {
        // MD5("a") = 0cc175b9...: the lower half of the space.
        let h = hash_key("a");
        assert_eq!(h >> 120, 0x0c);
        let map = ShardMap::new([
            (
                "0".to_string(),
                (u128::MAX / 2).to_string(),
                "lo".to_string(),
            ),
            (
                (u128::MAX / 2 + 1).to_string(),
                u128::MAX.to_string(),
                "hi".to_string(),
            ),
        ])
        .unwrap();
        assert_eq!(map.shard_of("a"), Some(0));
        assert!(ShardMap::new([("x".into(), "1".into(), "s".into())]).is_err());
    }

    #[test]
    fn oversized_parts_are_halved_and_single_giants_dropped() {
        let mut spans: Vec<Span> = (0..40).map(|i| span(1, i, Some("A"))).collect();
        for s in &mut spans {
            s.attributes
                .push(crate::signal::string_attribute("blob", "x".repeat(1000)));
        }
        let mut giant = span(1, 99, Some("A"));
        giant
            .attributes
            .push(crate::signal::string_attribute("blob", "y".repeat(20_000)));
        spans.push(giant);
        let (records, dropped) = user_records(
            vec![("A".into(), batch(spans))],
            Encoding::OtlpProto,
            false,
            10_000,
        );
        assert_eq!(dropped, 1);
        assert_eq!(records.iter().map(|r| r.items).sum::<usize>(), 40);
        assert!(records.iter().all(|r| r.data.len() < 10_000));
        // Each decodes to its spans; gzip round-trips.
        let (gz, _) = user_records(
            vec![("A".into(), batch(vec![span(1, 1, None)]))],
            Encoding::OtlpJson,
            true,
            MAX_RECORD_BYTES,
        );
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(&gz[0].data[..]),
            &mut text,
        )
        .unwrap();
        assert!(text.contains("\"resourceSpans\""), "{text}");
    }

    #[test]
    fn calls_respect_the_record_and_byte_limits() {
        let rec = |n: usize| Record {
            partition_key: "k".into(),
            data: vec![0; n],
            items: 1,
            user_records: 1,
            shard: None,
        };
        let many: Vec<Record> = (0..1200).map(|_| rec(10)).collect();
        let c = calls(many, 500);
        assert_eq!(
            c.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![500, 500, 200]
        );
        let big: Vec<Record> = (0..12).map(|_| rec(1024 * 1024 - 1)).collect();
        let c = calls(big, 500);
        assert!(c
            .iter()
            .all(|c| c.iter().map(Record::size).sum::<usize>() <= MAX_CALL_BYTES));
        assert_eq!(c.len(), 3);
    }
}
