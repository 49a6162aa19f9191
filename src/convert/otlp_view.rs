//! Reading one encoded OTLP `Span` (a field [`crate::convert::otlp_index`]
//! found) without decoding it: its ids, name, kind, times and status in one
//! pass, and its attributes as typed values, lazily. For a consumer that
//! needs a few fields of each span and then hands the bytes on (the live
//! session store).
//!
//! The bytes must have passed the index's check; on bytes that did not, the
//! view reads what it can and stops at the first fault. It reads what the
//! decoder reads: a singular field given twice keeps its last value, as
//! proto3 decoders do.

use std::ops::Range;

/// The fields of one span read from its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpanView<'a> {
    /// The span's message body.
    body: &'a [u8],
    /// `trace_id`.
    pub trace_id: &'a [u8],
    /// `span_id`.
    pub span_id: &'a [u8],
    /// `parent_span_id`.
    pub parent_span_id: &'a [u8],
    /// `name`.
    pub name: &'a str,
    /// `kind` (the enum's number).
    pub kind: i32,
    /// `start_time_unix_nano`.
    pub start_time_unix_nano: u64,
    /// `end_time_unix_nano`.
    pub end_time_unix_nano: u64,
    /// `status.code` (0 when there is no status).
    pub status_code: i32,
    /// `status.message`.
    pub status_message: &'a str,
}

/// An attribute value read from bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// No value set.
    Empty,
    /// `string_value`.
    Str(&'a str),
    /// `bool_value`.
    Bool(bool),
    /// `int_value`.
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// `bytes_value`.
    Bytes(&'a [u8]),
    /// `array_value`, `kvlist_value`, `string_value_strindex`: the encoded
    /// `AnyValue`, to decode if needed.
    Other(&'a [u8]),
}

/// One field: its tag and what it holds.
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Delimited(&'a [u8]),
}

/// The fields of a message body, in order; stops at the first fault.
struct Fields<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = *self.buf.get(self.at)?;
            self.at += 1;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Some(value);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.buf.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u32, Field<'a>);

    fn next(&mut self) -> Option<(u32, Field<'a>)> {
        if self.at >= self.buf.len() {
            return None;
        }
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).ok()?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().ok()?)),
            2 => {
                let n = usize::try_from(self.varint()?).ok()?;
                Field::Delimited(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed32
            }
            // Groups are not in OTLP; a checked request skipped them, a view stops.
            _ => return None,
        };
        Some((tag, field))
    }
}

fn fields(buf: &[u8]) -> Fields<'_> {
    Fields { buf, at: 0 }
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or_default()
}

/// The body of a length-delimited field (its key and length skipped): what
/// [`crate::convert::otlp_index::RequestIndex::items`] ranges hold.
pub fn field_body(field: &[u8]) -> Option<&[u8]> {
    let mut f = fields(field);
    match f.next()? {
        (_, Field::Delimited(body)) => Some(body),
        _ => None,
    }
}

impl<'a> SpanView<'a> {
    /// Reads the span whose whole field (key, length, body) is
    /// `request[range]`, one of an index's `items`.
    pub fn of_field(request: &'a [u8], range: Range<usize>) -> Option<SpanView<'a>> {
        request
            .get(range)
            .and_then(field_body)
            .map(SpanView::of_body)
    }

    /// Reads the span whose message body is `body`.
    pub fn of_body(body: &'a [u8]) -> SpanView<'a> {
        let mut v = SpanView {
            body,
            ..SpanView::default()
        };
        for (tag, f) in fields(body) {
            match (tag, f) {
                (1, Field::Delimited(b)) => v.trace_id = b,
                (2, Field::Delimited(b)) => v.span_id = b,
                (4, Field::Delimited(b)) => v.parent_span_id = b,
                (5, Field::Delimited(b)) => v.name = text(b),
                (6, Field::Varint(k)) => v.kind = k as i32,
                (7, Field::Fixed64(t)) => v.start_time_unix_nano = t,
                (8, Field::Fixed64(t)) => v.end_time_unix_nano = t,
                // A status given twice merges, as the decoder merges it.
                (15, Field::Delimited(b)) => {
                    for (tag, f) in fields(b) {
                        match (tag, f) {
                            (2, Field::Delimited(m)) => v.status_message = text(m),
                            (3, Field::Varint(c)) => v.status_code = c as i32,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        v
    }

    /// The span's attributes, in order: each key and its value.
    pub fn attributes(&self) -> impl Iterator<Item = (&'a str, Value<'a>)> + 'a {
        fields(self.body).filter_map(|(tag, f)| match (tag, f) {
            (9, Field::Delimited(kv)) => Some(key_value(kv)),
            _ => None,
        })
    }

    /// The first attribute named `key`, if any.
    pub fn attribute(&self, key: &str) -> Option<Value<'a>> {
        self.attributes().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// The fields of a message body as they are: each one's tag, its whole
/// bytes (key, length or value), and the body of a length-delimited one.
/// Stops at the first fault, as the rest of this module does: for bytes a
/// decoder or [`crate::convert::otlp_index`] already accepted.
pub fn raw_fields(body: &[u8]) -> impl Iterator<Item = (u32, &[u8], Option<&[u8]>)> + '_ {
    let mut f = fields(body);
    std::iter::from_fn(move || {
        let start = f.at;
        let (tag, field) = f.next()?;
        let whole = f.buf.get(start..f.at)?;
        let inner = match field {
            Field::Delimited(b) => Some(b),
            _ => None,
        };
        Some((tag, whole, inner))
    })
}

/// The attributes (`KeyValue` fields numbered `tag`) of a message body:
/// field 1 of a `Resource` or an `InstrumentationScope`, for instance.
pub fn attributes_in(body: &[u8], tag: u32) -> impl Iterator<Item = (&str, Value<'_>)> + '_ {
    fields(body).filter_map(move |(t, f)| match (t, f) {
        (t, Field::Delimited(kv)) if t == tag => Some(key_value(kv)),
        _ => None,
    })
}

/// The body of the last message field numbered `tag` in a message body
/// (the `resource` of a `ResourceSpans`, say); None if it has none.
pub fn message_in(body: &[u8], tag: u32) -> Option<&[u8]> {
    fields(body)
        .filter_map(|(t, f)| match f {
            Field::Delimited(b) if t == tag => Some(b),
            _ => None,
        })
        .last()
}

/// A `KeyValue`: its key and value.
fn key_value(kv: &[u8]) -> (&str, Value<'_>) {
    let (mut key, mut value) = ("", Value::Empty);
    for (tag, f) in fields(kv) {
        match (tag, f) {
            (1, Field::Delimited(k)) => key = text(k),
            (2, Field::Delimited(v)) => value = any_value(v),
            _ => {}
        }
    }
    (key, value)
}

/// An `AnyValue`: its last value field, as the decoder keeps it.
fn any_value(v: &[u8]) -> Value<'_> {
    let mut out = Value::Empty;
    for (tag, f) in fields(v) {
        out = match (tag, f) {
            (1, Field::Delimited(s)) => Value::Str(text(s)),
            (2, Field::Varint(b)) => Value::Bool(b != 0),
            (3, Field::Varint(i)) => Value::Int(i as i64),
            (4, Field::Fixed64(d)) => Value::Double(f64::from_bits(d)),
            (7, Field::Delimited(b)) => Value::Bytes(b),
            (5 | 6, Field::Delimited(_)) | (8, Field::Varint(_)) => Value::Other(v),
            _ => continue,
        };
    }
    out
}

#[cfg(test)]
mod tests;

/// Appends `v` as a protobuf varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The bytes `v` takes as a protobuf varint.
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends one `resource_spans` (`resource_logs`) field of an export
/// request: `resource` (the `ResourceSpans` fields but its scopes) with one
/// scope, `scope` (the `ScopeSpans` fields but its spans), holding `items`
/// (whole span or log record fields, tag 2 as both messages number them),
/// each with `extra` (a whole attribute field) appended to its body when
/// given. Concatenated blocks are a request body.
pub fn write_block(
    out: &mut Vec<u8>,
    resource: &[u8],
    scope: &[u8],
    items: &[&[u8]],
    extra: Option<&[u8]>,
) {
    let item_len = |f: &[u8]| -> usize {
        match extra {
            None => f.len(),
            Some(x) => {
                let body = field_body(f).map_or(0, <[u8]>::len) + x.len();
                1 + varint_len(body as u64) + body
            }
        }
    };
    let items_total: usize = items.iter().map(|f| item_len(f)).sum();
    let scope_body = scope.len() + items_total;
    let scope_field = 1 + varint_len(scope_body as u64) + scope_body;
    let res_body = resource.len() + scope_field;
    out.reserve(1 + 10 + res_body);
    out.push(0x0a);
    put_varint(out, res_body as u64);
    out.extend_from_slice(resource);
    out.push(0x12);
    put_varint(out, scope_body as u64);
    out.extend_from_slice(scope);
    for f in items {
        match extra {
            None => out.extend_from_slice(f),
            Some(x) => {
                let body = field_body(f).unwrap_or_default();
                out.push(0x12);
                put_varint(out, (body.len() + x.len()) as u64);
                out.extend_from_slice(body);
                out.extend_from_slice(x);
            }
        }
    }
}

/// One scope of an encoded export request, as [`for_each_scope`] finds it.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a, 'b> {
    /// The `ResourceSpans` (`ResourceLogs`) body it is in.
    pub resource_body: &'a [u8],
    /// Whether it is the first scope of that resource.
    pub first_in_resource: bool,
    /// That body's fields but its scopes.
    pub resource_fields: &'b [u8],
    /// The `ScopeSpans` (`ScopeLogs`) fields but its items.
    pub scope_fields: &'b [u8],
    /// Its spans (log records): each one's whole field and its body.
    pub items: &'b [(&'a [u8], &'a [u8])],
}

/// Calls `f` with each scope of a traces (logs) export request body, in
/// order: the pieces [`write_block`] puts together again.
pub fn for_each_scope<'a>(request: &'a [u8], mut f: impl FnMut(Scope<'a, '_>)) {
    let mut resource_fields = Vec::new();
    let mut scope_fields = Vec::new();
    let mut scopes: Vec<&[u8]> = Vec::new();
    let mut items: Vec<(&[u8], &[u8])> = Vec::new();
    for (tag, _, rs) in raw_fields(request) {
        let (1, Some(rs)) = (tag, rs) else { continue };
        resource_fields.clear();
        scopes.clear();
        for (t, whole, inner) in raw_fields(rs) {
            match (t, inner) {
                (2, Some(ss)) => scopes.push(ss),
                _ => resource_fields.extend_from_slice(whole),
            }
        }
        for (n, ss) in scopes.iter().enumerate() {
            scope_fields.clear();
            items.clear();
            for (t, whole, inner) in raw_fields(ss) {
                match (t, inner) {
                    (2, Some(body)) => items.push((whole, body)),
                    _ => scope_fields.extend_from_slice(whole),
                }
            }
            f(Scope {
                resource_body: rs,
                first_in_resource: n == 0,
                resource_fields: &resource_fields,
                scope_fields: &scope_fields,
                items: &items,
            });
        }
    }
}
