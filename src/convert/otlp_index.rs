//! One pass over the bytes of an OTLP export request (traces, metrics or
//! logs): it checks them as the decoder (prost, which the receivers use)
//! would, and records where each resource part (`ResourceSpans`, …), scope
//! part (`ScopeSpans`, …) and item (`Span`, `Metric`, `LogRecord`) lies, so
//! that a request can travel on as bytes and be cut or joined at those
//! boundaries without being decoded.
//!
//! It accepts exactly what the decoder accepts:
//! - well-formed protobuf: keys (tag ≥ 1, wire types 0–5), varints of at
//!   most ten bytes that fit 64 bits, lengths within their message, and
//!   fields that end where their message ends;
//! - every known field with its declared wire type (a repeated number
//!   field packed or not, a packed one ending on a value boundary), and
//!   UTF-8 in every `string` field, as proto3 requires;
//! - unknown fields skipped (groups matched to their end tag);
//! - nesting no deeper than prost's recursion limit (100), counted as prost
//!   counts it: each message entered, and each unknown field skipped, needs
//!   one level left.
//!
//! A request it refuses is one the decoder refuses too; the receiver then
//! decodes it to report the decoder's own error. It allocates nothing per
//! item: the index is three vectors that grow as a whole. For metrics it also
//! counts data points as the decoder's structs hold them (of a `Metric` with
//! several kinds of data, the last kind's; two fields of the same kind merge).

use std::ops::Range;

use crate::signal::Signal;

/// prost's recursion limit (`prost::RECURSION_LIMIT`).
const RECURSION_LIMIT: u32 = 100;

/// Why bytes are not a valid request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// A varint longer than ten bytes, past 64 bits, or cut off.
    #[error("invalid varint")]
    Varint,
    /// A key with tag 0, wire type 6 or 7, or past 32 bits.
    #[error("invalid field key")]
    Key,
    /// A length or fixed-width value past the end of its message.
    #[error("a field runs past the end of its message")]
    Truncated,
    /// A known field with a wire type other than its own.
    #[error("a field has the wrong wire type")]
    WireType,
    /// A `string` field that is not UTF-8.
    #[error("a string field is not UTF-8")]
    Utf8,
    /// Nested deeper than the decoder's recursion limit.
    #[error("nested too deep")]
    Depth,
    /// An end-group key without its start, or for another group.
    #[error("unexpected end-group tag")]
    Group,
}

/// A resource or scope part (`ResourceSpans`, `ScopeLogs`, …) of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Its field's bytes in the request: key, length and body.
    pub field: Range<usize>,
    /// Its children: a range of [`RequestIndex::scopes`] for a resource, of
    /// [`RequestIndex::items`] for a scope.
    pub children: Range<usize>,
}

/// Where the parts of a valid request lie, in request order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestIndex {
    /// Each `ResourceSpans`, `ResourceMetrics` or `ResourceLogs`.
    pub resources: Vec<Part>,
    /// Each `ScopeSpans`, `ScopeMetrics` or `ScopeLogs`.
    pub scopes: Vec<Part>,
    /// Each `Span`, `Metric` or `LogRecord` field (key, length and body).
    pub items: Vec<Range<usize>>,
    /// Metrics: the data points, as [`crate::signal::Telemetry::item_count`]
    /// counts them once decoded.
    pub points: usize,
    /// The largest counts in it, for the `limits` processor.
    pub shape: Shape,
    signal: Option<Signal>,
}

pub use crate::signal::Shape;

impl RequestIndex {
    /// What the pipeline counts of it: spans, data points or log records.
    pub fn item_count(&self) -> usize {
        match self.signal {
            Some(Signal::Metrics) => self.points,
            _ => self.items.len(),
        }
    }
}

/// Checks a trace export request and indexes it.
pub fn index_traces(bytes: &[u8]) -> Result<RequestIndex, Invalid> {
    index_request(Signal::Traces, bytes)
}

/// Checks an export request of `signal` and indexes it.
pub fn index_request(signal: Signal, bytes: &[u8]) -> Result<RequestIndex, Invalid> {
    let mut index = RequestIndex {
        signal: Some(signal),
        ..RequestIndex::default()
    };
    let top = match signal {
        Signal::Traces => Msg::TracesRequest,
        Signal::Metrics => Msg::MetricsRequest,
        Signal::Logs => Msg::LogsRequest,
    };
    fields(top, bytes, 0, RECURSION_LIMIT, &mut index)?;
    Ok(index)
}

/// The messages of the three requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    TracesRequest,
    ResourceSpans,
    Resource,
    EntityRef,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KvList,
    LogsRequest,
    ResourceLogs,
    ScopeLogs,
    LogRecord,
    MetricsRequest,
    ResourceMetrics,
    ScopeMetrics,
    Metric,
    /// `Gauge`, `Sum`, `Histogram`, `ExponentialHistogram` or `Summary`:
    /// field 1 holds its data points (of the kind named), field 2 and 3
    /// are varints where they exist.
    MetricData(Point),
    NumberPoint,
    HistogramPoint,
    ExpHistogramPoint,
    Buckets,
    SummaryPoint,
    ValueAtQuantile,
    Exemplar,
}

/// The data point message of a kind of metric data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    Number,
    Histogram,
    ExpHistogram,
    Summary,
}

/// What a known field holds.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Varint,
    Fixed32,
    Fixed64,
    Str,
    Bytes,
    Message(Msg),
    /// A repeated `fixed64`/`double`: one value, or packed values.
    RepeatedFixed64,
    /// A repeated `uint64`: one varint, or packed varints.
    RepeatedVarint,
}

impl Kind {
    /// Whether a field of this kind may come with wire type `wire`.
    fn takes(self, wire: u64) -> bool {
        match self {
            Kind::Varint => wire == 0,
            Kind::Fixed64 => wire == 1,
            Kind::Str | Kind::Bytes | Kind::Message(_) => wire == 2,
            Kind::Fixed32 => wire == 5,
            Kind::RepeatedFixed64 => wire == 1 || wire == 2,
            Kind::RepeatedVarint => wire == 0 || wire == 2,
        }
    }
}

/// The fields of each message, as `opentelemetry-proto` declares them.
fn kind(m: Msg, tag: u32) -> Option<Kind> {
    use Kind::{Bytes, Fixed32, Fixed64, Message, RepeatedFixed64, RepeatedVarint, Str, Varint};
    Some(match (m, tag) {
        (Msg::TracesRequest, 1) => Message(Msg::ResourceSpans),
        (Msg::ResourceSpans, 1) => Message(Msg::Resource),
        (Msg::ResourceSpans, 2) => Message(Msg::ScopeSpans),
        (Msg::ResourceSpans, 3) => Str,
        (Msg::Resource, 1) => Message(Msg::KeyValue),
        (Msg::Resource, 2) => Varint,
        (Msg::Resource, 3) => Message(Msg::EntityRef),
        (Msg::EntityRef, 1..=4) => Str,
        (Msg::ScopeSpans, 1) => Message(Msg::Scope),
        (Msg::ScopeSpans, 2) => Message(Msg::Span),
        (Msg::ScopeSpans, 3) => Str,
        (Msg::Scope, 1 | 2) => Str,
        (Msg::Scope, 3) => Message(Msg::KeyValue),
        (Msg::Scope, 4) => Varint,
        (Msg::Span, 1 | 2 | 4) => Bytes,
        (Msg::Span, 3 | 5) => Str,
        (Msg::Span, 6 | 10 | 12 | 14) => Varint,
        (Msg::Span, 7 | 8) => Fixed64,
        (Msg::Span, 9) => Message(Msg::KeyValue),
        (Msg::Span, 11) => Message(Msg::Event),
        (Msg::Span, 13) => Message(Msg::Link),
        (Msg::Span, 15) => Message(Msg::Status),
        (Msg::Span, 16) => Fixed32,
        (Msg::Event, 1) => Fixed64,
        (Msg::Event, 2) => Str,
        (Msg::Event, 3) => Message(Msg::KeyValue),
        (Msg::Event, 4) => Varint,
        (Msg::Link, 1 | 2) => Bytes,
        (Msg::Link, 3) => Str,
        (Msg::Link, 4) => Message(Msg::KeyValue),
        (Msg::Link, 5) => Varint,
        (Msg::Link, 6) => Fixed32,
        (Msg::Status, 2) => Str,
        (Msg::Status, 3) => Varint,
        (Msg::KeyValue, 1) => Str,
        (Msg::KeyValue, 2) => Message(Msg::AnyValue),
        (Msg::KeyValue, 3) => Varint,
        (Msg::AnyValue, 1) => Str,
        (Msg::AnyValue, 2 | 3 | 8) => Varint,
        (Msg::AnyValue, 4) => Fixed64,
        (Msg::AnyValue, 5) => Message(Msg::ArrayValue),
        (Msg::AnyValue, 6) => Message(Msg::KvList),
        (Msg::AnyValue, 7) => Bytes,
        (Msg::ArrayValue, 1) => Message(Msg::AnyValue),
        (Msg::KvList, 1) => Message(Msg::KeyValue),
        (Msg::LogsRequest, 1) => Message(Msg::ResourceLogs),
        (Msg::ResourceLogs, 1) => Message(Msg::Resource),
        (Msg::ResourceLogs, 2) => Message(Msg::ScopeLogs),
        (Msg::ResourceLogs | Msg::ScopeLogs, 3) => Str,
        (Msg::ScopeLogs, 1) => Message(Msg::Scope),
        (Msg::ScopeLogs, 2) => Message(Msg::LogRecord),
        (Msg::LogRecord, 1 | 11) => Fixed64,
        (Msg::LogRecord, 2 | 7) => Varint,
        (Msg::LogRecord, 3 | 12) => Str,
        (Msg::LogRecord, 5) => Message(Msg::AnyValue),
        (Msg::LogRecord, 6) => Message(Msg::KeyValue),
        (Msg::LogRecord, 8) => Fixed32,
        (Msg::LogRecord, 9 | 10) => Bytes,
        (Msg::MetricsRequest, 1) => Message(Msg::ResourceMetrics),
        (Msg::ResourceMetrics, 1) => Message(Msg::Resource),
        (Msg::ResourceMetrics, 2) => Message(Msg::ScopeMetrics),
        (Msg::ResourceMetrics | Msg::ScopeMetrics, 3) => Str,
        (Msg::ScopeMetrics, 1) => Message(Msg::Scope),
        (Msg::ScopeMetrics, 2) => Message(Msg::Metric),
        (Msg::Metric, 1..=3) => Str,
        (Msg::Metric, 5 | 7) => Message(Msg::MetricData(Point::Number)),
        (Msg::Metric, 9) => Message(Msg::MetricData(Point::Histogram)),
        (Msg::Metric, 10) => Message(Msg::MetricData(Point::ExpHistogram)),
        (Msg::Metric, 11) => Message(Msg::MetricData(Point::Summary)),
        (Msg::Metric, 12) => Message(Msg::KeyValue),
        (Msg::MetricData(p), 1) => Message(match p {
            Point::Number => Msg::NumberPoint,
            Point::Histogram => Msg::HistogramPoint,
            Point::ExpHistogram => Msg::ExpHistogramPoint,
            Point::Summary => Msg::SummaryPoint,
        }),
        // Aggregation temporality; `is_monotonic` of a sum. (A gauge or
        // summary has no field 2 or 3; an unknown varint is skipped the same.)
        (Msg::MetricData(Point::Number | Point::Histogram | Point::ExpHistogram), 2) => Varint,
        (Msg::MetricData(Point::Number), 3) => Varint,
        (Msg::NumberPoint, 7) => Message(Msg::KeyValue),
        (Msg::NumberPoint, 2..=4 | 6) => Fixed64,
        (Msg::NumberPoint, 5) => Message(Msg::Exemplar),
        (Msg::NumberPoint, 8) => Varint,
        (Msg::HistogramPoint, 9) => Message(Msg::KeyValue),
        (Msg::HistogramPoint, 2..=5 | 11 | 12) => Fixed64,
        (Msg::HistogramPoint, 6 | 7) => RepeatedFixed64,
        (Msg::HistogramPoint, 8) => Message(Msg::Exemplar),
        (Msg::HistogramPoint, 10) => Varint,
        (Msg::ExpHistogramPoint, 1) => Message(Msg::KeyValue),
        (Msg::ExpHistogramPoint, 2..=5 | 7 | 12..=14) => Fixed64,
        (Msg::ExpHistogramPoint, 6 | 10) => Varint,
        (Msg::ExpHistogramPoint, 8 | 9) => Message(Msg::Buckets),
        (Msg::ExpHistogramPoint, 11) => Message(Msg::Exemplar),
        (Msg::Buckets, 1) => Varint,
        (Msg::Buckets, 2) => RepeatedVarint,
        (Msg::SummaryPoint, 7) => Message(Msg::KeyValue),
        (Msg::SummaryPoint, 2..=5) => Fixed64,
        (Msg::SummaryPoint, 6) => Message(Msg::ValueAtQuantile),
        (Msg::SummaryPoint, 8) => Varint,
        (Msg::ValueAtQuantile, 1 | 2) => Fixed64,
        (Msg::Exemplar, 7) => Message(Msg::KeyValue),
        (Msg::Exemplar, 2 | 3 | 6) => Fixed64,
        (Msg::Exemplar, 4 | 5) => Bytes,
        _ => return None,
    })
}

/// A cursor over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn varint(&mut self) -> Result<u64, Invalid> {
        // Most keys and lengths are one byte.
        if let Some(&b) = self.buf.get(self.at).filter(|b| **b < 0x80) {
            self.at += 1;
            return Ok(u64::from(b));
        }
        let mut value = 0u64;
        for i in 0..10 {
            let b = *self.buf.get(self.at).ok_or(Invalid::Varint)?;
            self.at += 1;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                // The tenth byte may carry only bit 63.
                return if i == 9 && b >= 0x02 {
                    Err(Invalid::Varint)
                } else {
                    Ok(value)
                };
            }
        }
        Err(Invalid::Varint)
    }

    /// A key: (tag, wire type).
    fn key(&mut self) -> Result<(u32, u64), Invalid> {
        let key = u32::try_from(self.varint()?).map_err(|_| Invalid::Key)?;
        let tag = key >> 3;
        let wire = u64::from(key & 7);
        if wire > 5 || tag == 0 {
            return Err(Invalid::Key);
        }
        Ok((tag, wire))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Invalid> {
        let end = self.at.checked_add(n).ok_or(Invalid::Truncated)?;
        let out = self.buf.get(self.at..end).ok_or(Invalid::Truncated)?;
        self.at = end;
        Ok(out)
    }

    /// A length-delimited value: where its body starts, and the body.
    fn delimited(&mut self) -> Result<(usize, &'a [u8]), Invalid> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| Invalid::Truncated)?;
        let at = self.at;
        Ok((at, self.take(len)?))
    }

    /// Skips an unknown field (`depth` levels left), as the decoder does.
    fn skip(&mut self, tag: u32, wire: u64, depth: u32) -> Result<(), Invalid> {
        if depth == 0 {
            return Err(Invalid::Depth);
        }
        match wire {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.delimited().map(drop),
            5 => self.take(4).map(drop),
            3 => loop {
                let (inner, w) = self.key()?;
                if w == 4 {
                    return if inner == tag {
                        Ok(())
                    } else {
                        Err(Invalid::Group)
                    };
                }
                self.skip(inner, w, depth - 1)?;
            },
            _ => Err(Invalid::Group),
        }
    }
}

/// Checks the fields of one `m` (its body `buf`, at `base` in the request,
/// with `depth` levels left), indexing resource and scope parts and items.
/// Returns the data points it holds (a `Metric`, or metric data).
fn fields(
    m: Msg,
    buf: &[u8],
    base: usize,
    depth: u32,
    index: &mut RequestIndex,
) -> Result<usize, Invalid> {
    let mut r = Reader { buf, at: 0 };
    // A `Metric`'s points: of the kind of data last seen (its field tag).
    let mut points = 0usize;
    let mut data_tag = 0u32;
    // Repeated fields of this message, for the shape.
    let (mut key_values, mut values, mut events, mut links) = (0usize, 0usize, 0usize, 0usize);
    while r.at < buf.len() {
        let start = r.at;
        let (tag, wire) = r.key()?;
        let Some(k) = kind(m, tag) else {
            r.skip(tag, wire, depth)?;
            continue;
        };
        if !k.takes(wire) {
            return Err(Invalid::WireType);
        }
        match k {
            Kind::Varint => {
                r.varint()?;
            }
            Kind::Fixed64 => {
                r.take(8)?;
            }
            Kind::Fixed32 => {
                r.take(4)?;
            }
            Kind::Bytes => {
                let (_, b) = r.delimited()?;
                if m == Msg::AnyValue {
                    index.shape.value_len = index.shape.value_len.max(b.len());
                }
            }
            Kind::Str => {
                let (_, s) = r.delimited()?;
                // ASCII (most keys and values) is UTF-8; check the rest in full.
                if !s.is_ascii() {
                    std::str::from_utf8(s).map_err(|_| Invalid::Utf8)?;
                }
                if m == Msg::AnyValue {
                    index.shape.value_len = index.shape.value_len.max(s.len());
                }
            }
            Kind::RepeatedFixed64 if wire == 1 => {
                r.take(8)?;
            }
            Kind::RepeatedFixed64 => {
                if r.delimited()?.1.len() % 8 != 0 {
                    return Err(Invalid::Truncated);
                }
            }
            Kind::RepeatedVarint if wire == 0 => {
                r.varint()?;
            }
            Kind::RepeatedVarint => {
                let (_, packed) = r.delimited()?;
                let mut values = Reader { buf: packed, at: 0 };
                while values.at < packed.len() {
                    values.varint()?;
                }
            }
            Kind::Message(inner) => {
                if depth == 0 {
                    return Err(Invalid::Depth);
                }
                let (at, body) = r.delimited()?;
                let (scopes, items) = (index.scopes.len(), index.items.len());
                let inner_points = fields(inner, body, base + at, depth - 1, index)?;
                let field = base + start..base + r.at;
                match (m, inner) {
                    (_, Msg::KeyValue) => key_values += 1,
                    (Msg::ArrayValue, Msg::AnyValue) => values += 1,
                    (Msg::Span, Msg::Event) => events += 1,
                    (Msg::Span, Msg::Link) => links += 1,
                    _ => {}
                }
                match inner {
                    Msg::ResourceSpans | Msg::ResourceMetrics | Msg::ResourceLogs => {
                        index.resources.push(Part {
                            field,
                            children: scopes..index.scopes.len(),
                        })
                    }
                    Msg::ScopeSpans | Msg::ScopeMetrics | Msg::ScopeLogs => {
                        index.scopes.push(Part {
                            field,
                            children: items..index.items.len(),
                        })
                    }
                    Msg::Span | Msg::LogRecord => index.items.push(field),
                    Msg::Metric => {
                        index.items.push(field);
                        index.points += inner_points;
                    }
                    // One of a `Metric`'s data: the same kind again merges
                    // into it, another replaces it.
                    Msg::MetricData(_) => {
                        if tag != data_tag {
                            points = 0;
                        }
                        data_tag = tag;
                        points += inner_points;
                    }
                    Msg::NumberPoint
                    | Msg::HistogramPoint
                    | Msg::ExpHistogramPoint
                    | Msg::SummaryPoint => points += 1,
                    _ => {}
                }
            }
        }
    }
    let shape = &mut index.shape;
    match m {
        Msg::KvList => shape.elements = shape.elements.max(key_values),
        _ => shape.attributes = shape.attributes.max(key_values),
    }
    shape.elements = shape.elements.max(values);
    shape.events = shape.events.max(events);
    shape.links = shape.links.max(links);
    Ok(points)
}

/// Cuts a traces or logs request (`bytes`, indexed as `ix`) after its first
/// `n` items, as [`crate::convert::split::split_front`] cuts the decoded
/// request: whole resources while they fit, then whole scopes of the next
/// resource, then the first items of the next scope; a resource or scope
/// that is cut goes to both halves with its other fields. The halves are
/// built from the request's own bytes, never decoded; a request encoded in
/// field order gives the bytes the cut structs encode to. None for metrics
/// (their items are data points, which a cut may split inside a metric).
pub fn split_request(bytes: &[u8], ix: &RequestIndex, n: usize) -> Option<(Vec<u8>, Vec<u8>)> {
    if ix.signal == Some(Signal::Metrics) {
        return None;
    }
    let items_of = |p: &Part| -> usize {
        ix.scopes[p.children.clone()]
            .iter()
            .map(|s| s.children.len())
            .sum()
    };
    let (mut head, mut tail) = (Vec::with_capacity(bytes.len()), Vec::new());
    let mut budget = n;
    let mut r = 0;
    while let Some(res) = ix.resources.get(r) {
        let size = items_of(res);
        if size > budget {
            break;
        }
        budget -= size;
        head.extend_from_slice(&bytes[res.field.clone()]);
        r += 1;
    }
    if let Some(res) = ix.resources.get(r).filter(|_| budget > 0) {
        let (mut head_scopes, mut tail_scopes) = (Vec::new(), Vec::new());
        let mut s = res.children.start;
        while let Some(scope) = ix.scopes.get(s).filter(|_| s < res.children.end) {
            if scope.children.len() > budget {
                break;
            }
            budget -= scope.children.len();
            head_scopes.push(scope.field.clone());
            s += 1;
        }
        let (mut head_cut, mut tail_cut) = (Vec::new(), Vec::new());
        if let Some(scope) = ix
            .scopes
            .get(s)
            .filter(|_| s < res.children.end && budget > 0)
        {
            let items = &ix.items[scope.children.clone()];
            let (first, rest) = items.split_at(budget);
            rebuild(bytes, &scope.field, items, first, &mut head_cut);
            rebuild(bytes, &scope.field, items, rest, &mut tail_cut);
            s += 1;
        }
        tail_scopes.extend(
            ix.scopes[s..res.children.end]
                .iter()
                .map(|p| p.field.clone()),
        );
        let children: Vec<Range<usize>> = ix.scopes[res.children.clone()]
            .iter()
            .map(|p| p.field.clone())
            .collect();
        // The resource's halves: its other fields, and its scopes of each half.
        let mut body = Vec::new();
        for r in &head_scopes {
            body.extend_from_slice(&bytes[r.clone()]);
        }
        body.extend_from_slice(&head_cut);
        wrap(bytes, &res.field, &children, &body, &mut head);
        body.clear();
        body.extend_from_slice(&tail_cut);
        for r in &tail_scopes {
            body.extend_from_slice(&bytes[r.clone()]);
        }
        wrap(bytes, &res.field, &children, &body, &mut tail);
        r += 1;
    }
    for res in &ix.resources[r..] {
        tail.extend_from_slice(&bytes[res.field.clone()]);
    }
    Some((head, tail))
}

/// Writes the message field `field` again with `selected` (some of its
/// `children`, whole fields) in place of all its children: its key, a new
/// length, and its body with every other field kept.
fn rebuild(
    bytes: &[u8],
    field: &Range<usize>,
    children: &[Range<usize>],
    selected: &[Range<usize>],
    out: &mut Vec<u8>,
) {
    let mut body = Vec::new();
    for r in selected {
        body.extend_from_slice(&bytes[r.clone()]);
    }
    wrap(bytes, field, children, &body, out);
}

/// Writes message field `field` with `children` (whole fields inside it)
/// replaced by `body`: the fields before the first child, then `body`, then
/// every other field after it, in order.
fn wrap(
    bytes: &[u8],
    field: &Range<usize>,
    children: &[Range<usize>],
    body: &[u8],
    out: &mut Vec<u8>,
) {
    let whole = &bytes[field.clone()];
    let mut r = Reader { buf: whole, at: 0 };
    // The field was checked when indexed: its key and length read back.
    let key_at = r.at;
    let _ = r.key();
    let key = &whole[key_at..r.at];
    let _ = r.varint();
    let body_start = field.start + r.at;
    let first = children.first().map_or(field.end, |c| c.start);
    let mut kept = Vec::with_capacity(body.len() + 64);
    kept.extend_from_slice(&bytes[body_start..first]);
    kept.extend_from_slice(body);
    let mut at = first;
    for c in children {
        kept.extend_from_slice(&bytes[at..c.start]);
        at = c.end;
    }
    kept.extend_from_slice(&bytes[at.max(first)..field.end]);
    out.extend_from_slice(key);
    let mut len = kept.len() as u64;
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(&kept);
}

#[cfg(test)]
mod tests;
