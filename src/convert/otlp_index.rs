//! One pass over the bytes of an OTLP `ExportTraceServiceRequest`: it checks
//! them as the decoder (prost, which the receivers use) would, and records
//! where each `ResourceSpans`, `ScopeSpans` and `Span` lies, so that a
//! request can travel on as bytes and be cut or joined at those boundaries
//! without being decoded.
//!
//! It accepts exactly what the decoder accepts:
//! - well-formed protobuf: keys (tag ≥ 1, wire types 0–5), varints of at
//!   most ten bytes that fit 64 bits, lengths within their message, and
//!   fields that end where their message ends;
//! - every known field with its declared wire type, and UTF-8 in every
//!   `string` field, as proto3 requires;
//! - unknown fields skipped (groups matched to their end tag);
//! - nesting no deeper than prost's recursion limit (100), counted as prost
//!   counts it: each message entered, and each unknown field skipped, needs
//!   one level left.
//!
//! A request it refuses is one the decoder refuses too; the receiver then
//! decodes it to report the decoder's own error. It allocates nothing per
//! span: the index is three vectors that grow as a whole.

use std::ops::Range;

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

/// A `ResourceSpans` or `ScopeSpans` in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Its field's bytes in the request: key, length and body.
    pub field: Range<usize>,
    /// Its children: a range of [`TracesIndex::scopes`] for a resource, of
    /// [`TracesIndex::spans`] for a scope.
    pub children: Range<usize>,
}

/// Where the parts of a valid trace request lie, in request order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TracesIndex {
    /// Each `ResourceSpans`.
    pub resources: Vec<Part>,
    /// Each `ScopeSpans`.
    pub scopes: Vec<Part>,
    /// Each `Span` field (key, length and body).
    pub spans: Vec<Range<usize>>,
}

/// Checks a trace export request and indexes it.
pub fn index_traces(bytes: &[u8]) -> Result<TracesIndex, Invalid> {
    let mut index = TracesIndex::default();
    fields(Msg::Request, bytes, 0, RECURSION_LIMIT, &mut index)?;
    Ok(index)
}

/// The messages of a trace request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    Request,
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
}

impl Kind {
    fn wire_type(self) -> u64 {
        match self {
            Kind::Varint => 0,
            Kind::Fixed64 => 1,
            Kind::Str | Kind::Bytes | Kind::Message(_) => 2,
            Kind::Fixed32 => 5,
        }
    }
}

/// The fields of each message, as `opentelemetry-proto` declares them.
fn kind(m: Msg, tag: u32) -> Option<Kind> {
    use Kind::{Bytes, Fixed32, Fixed64, Message, Str, Varint};
    Some(match (m, tag) {
        (Msg::Request, 1) => Message(Msg::ResourceSpans),
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
        _ => return None,
    })
}

/// A cursor over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, Invalid> {
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
/// with `depth` levels left), indexing resources, scopes and spans.
fn fields(
    m: Msg,
    buf: &[u8],
    base: usize,
    depth: u32,
    index: &mut TracesIndex,
) -> Result<(), Invalid> {
    let mut r = Reader { buf, at: 0 };
    while r.at < buf.len() {
        let start = r.at;
        let (tag, wire) = r.key()?;
        let Some(k) = kind(m, tag) else {
            r.skip(tag, wire, depth)?;
            continue;
        };
        if wire != k.wire_type() {
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
                r.delimited()?;
            }
            Kind::Str => {
                let (_, s) = r.delimited()?;
                std::str::from_utf8(s).map_err(|_| Invalid::Utf8)?;
            }
            Kind::Message(inner) => {
                if depth == 0 {
                    return Err(Invalid::Depth);
                }
                let (at, body) = r.delimited()?;
                let (scopes, spans) = (index.scopes.len(), index.spans.len());
                fields(inner, body, base + at, depth - 1, index)?;
                let field = base + start..base + r.at;
                match inner {
                    Msg::ResourceSpans => index.resources.push(Part {
                        field,
                        children: scopes..index.scopes.len(),
                    }),
                    Msg::ScopeSpans => index.scopes.push(Part {
                        field,
                        children: spans..index.spans.len(),
                    }),
                    Msg::Span => index.spans.push(field),
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
