//! The live exporter's session store: agent sessions as spans arrive,
//! bounded in sessions, spans per session and age, with the summaries a
//! live view shows. Pure: time is passed in, nothing is read or written.
//!
//! - All spans of a trace go to one session: the one its root span names
//!   (the first of `session_keys` found on the span, then on its resource),
//!   else the first one a span of the trace names, else the trace id (hex).
//!   A Bedrock multi-agent invocation thus stays one session (collaborators
//!   carry session ids of their own), and spans without a key join their
//!   trace's. Trace-to-session links are remembered for the last
//!   `16 × max_sessions` traces; spans keyed by the trace id before the
//!   trace's root named a session move into that session when it does.
//! - Per session: agents (`gen_ai.agent.name`), models
//!   (`gen_ai.request.model`, `gen_ai.response.model`), first start and last
//!   end, and from the agent-trace model ([`crate::convert::genai`]): tokens
//!   by type (each model call once), model calls, throttles, retries, tool
//!   calls, retrievals, guardrail interventions, failures, cost (`pricing`
//!   over the built-in table). Each trace's contribution is kept apart and
//!   replaced when its numbers change (spans arrive in any order), at most
//!   [`MAX_TRACES_PER_SESSION`] per session. And the spans themselves in
//!   arrival order, each encoded as OTLP in the
//!   session's [`SpanLog`] (with parent ids for the tree). Filing a span is
//!   one read of its attributes for the totals and one copy into the log;
//!   a [`SpanRecord`] (and its JSON) is made only for a reader: a watched
//!   session's new spans, a snapshot, the API, recent failures.
//! - GenAI events (OTLP log records whose event name, the record's
//!   `event_name` or its `event.name` attribute, starts with `gen_ai.`:
//!   `gen_ai.user.message`, `gen_ai.choice`, …) join the session of their
//!   trace (else the one their attributes or resource name, else their
//!   trace id), kept in arrival order with their span id, bounded by
//!   `max_events_per_session`. Other log records are not a session's.
//! - Bounds: at most `max_sessions` (the least recently updated is evicted
//!   first), `max_spans_per_session` spans per session (later spans are
//!   counted in the summary but not kept), sessions idle for `retention`
//!   expire; every attribute value kept is cut to [`MAX_VALUE_BYTES`] and a
//!   span keeps at most [`MAX_ATTRIBUTES`] attributes, so a kept span is at
//!   most [`MAX_SPAN_BYTES`] encoded (an event record, with its body cut to
//!   [`MAX_BODY_BYTES`], at most ~[`MAX_EVENT_BYTES`]). The store holds at
//!   most `max_bytes` of span log chunks ([`CHUNK_BYTES`] each), event
//!   records ([`EventRecord::bytes`]) and small per-session totals: past it
//!   the least recently updated sessions are evicted, whatever arrives. Their
//!   chunks are kept for reuse up to [`free_chunk_bytes`] (a sixteenth of
//!   `max_bytes`, at most 4 MiB); the rest go back to the allocator.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};

use crate::convert::genai::{
    self, FailureKind, Keys, Pricing, Tokens, TraceId, TraceNumbers, Tracker, TrackerLimits,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs};
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, ResourceSpans, ScopeSpans, Span};

/// Longest attribute value kept in a record, in bytes (cut on a character
/// boundary).
pub const MAX_VALUE_BYTES: usize = 1024;
/// Most attributes kept per record.
pub const MAX_ATTRIBUTES: usize = 64;
/// The bound of one span record (what a reader gets): its struct, name,
/// message and attributes as JSON (keys and values escaped: at most six bytes for one, for
/// control characters).
pub const MAX_RECORD_BYTES: usize =
    MAX_ATTRIBUTES * (2 * 6 * MAX_VALUE_BYTES + 8) + 2 * MAX_VALUE_BYTES + 256;
/// The bound of one kept span, encoded: per attribute a key and value
/// within [`MAX_VALUE_BYTES`] (a list or map within twice that) and their
/// framing, the name and status message, ids, times and kind.
pub const MAX_SPAN_BYTES: usize =
    MAX_ATTRIBUTES * (3 * MAX_VALUE_BYTES + 16) + 2 * MAX_VALUE_BYTES + 128;
/// Longest event body kept, in bytes (cut on a character boundary).
pub const MAX_BODY_BYTES: usize = 4 * MAX_VALUE_BYTES;
/// The bound of one event record: its attributes, body, name and ids.
pub const MAX_EVENT_BYTES: usize = MAX_RECORD_BYTES + MAX_BODY_BYTES;

pub use crate::convert::genai::Price;

/// How sessions are keyed and bounded.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Attribute keys that name a session, in order of preference.
    pub session_keys: Vec<String>,
    /// Sessions held at most.
    pub max_sessions: usize,
    /// Span records kept per session at most.
    pub max_spans_per_session: usize,
    /// GenAI event records kept per session at most.
    pub max_events_per_session: usize,
    /// A session not updated for this long (ns) expires.
    pub retention_ns: u64,
    /// The records' estimated bytes at most (least recently updated
    /// sessions are evicted first to stay under it).
    pub max_bytes: usize,
    /// Per-model prices (by `gen_ai.request.model` / `gen_ai.response.model`).
    pub pricing: BTreeMap<String, Price>,
}

/// What a span is, for a live view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanClass {
    /// An agent invocation (`invoke_agent`; a collaborator when nested).
    Agent,
    /// A model call (`chat`, `text_completion`, `generate_content`).
    Model,
    /// A tool call (`execute_tool`, action groups, code interpreter).
    Tool,
    /// A knowledge-base retrieval.
    Retrieval,
    /// A guardrail check.
    Guardrail,
    /// Anything else.
    Other,
}

/// One span as the store keeps it: what a live view shows, made in one
/// pass over the span, with its attributes rendered once as a JSON object
/// of texts (they are only ever sent or shown).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    /// Trace id (zero-padded or cut to 16 bytes).
    pub trace_id: [u8; 16],
    /// Span id (zero-padded or cut to 8 bytes).
    pub span_id: [u8; 8],
    /// Parent span id; none for a root.
    pub parent_id: Option<[u8; 8]>,
    /// Span name.
    pub name: String,
    /// What it is.
    pub class: SpanClass,
    /// Start, Unix ns.
    pub start_ns: u64,
    /// End, Unix ns.
    pub end_ns: u64,
    /// It has an error status.
    pub error: bool,
    /// The status message.
    pub message: String,
    /// A guardrail intervened here.
    pub guardrail_intervened: bool,
    /// Input tokens it reports.
    pub input_tokens: u64,
    /// Output tokens it reports.
    pub output_tokens: u64,
    /// Its cost from `pricing` (0 when no price applies).
    pub cost: f64,
    /// Its attributes as a JSON object of texts (at most
    /// [`MAX_ATTRIBUTES`], keys and values cut to [`MAX_VALUE_BYTES`]).
    pub attributes: String,
}

/// `bytes` as fixed-size id (zero-padded or cut).
fn id<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = bytes.len().min(N);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

/// Appends `bytes` in lower-case hex.
fn hex_into(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
}

/// A span record's fields but its attributes, borrowed: what a record
/// holds, or what a span gives when it is written straight to JSON.
struct RecordFields<'a> {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_id: Option<[u8; 8]>,
    name: &'a str,
    class: SpanClass,
    start_ns: u64,
    end_ns: u64,
    error: bool,
    message: &'a str,
    guardrail_intervened: bool,
    input_tokens: u64,
    output_tokens: u64,
    cost: f64,
}

impl RecordFields<'_> {
    /// Appends the JSON object of a record, its attributes by `attributes`.
    fn write_json(&self, out: &mut String, attributes: impl FnOnce(&mut String)) {
        use std::fmt::Write;
        out.push_str("{\"trace_id\":\"");
        hex_into(out, &self.trace_id);
        out.push_str("\",\"span_id\":\"");
        hex_into(out, &self.span_id);
        out.push_str("\",\"parent_id\":\"");
        if let Some(p) = &self.parent_id {
            hex_into(out, p);
        }
        out.push_str("\",\"name\":");
        crate::convert::json::escape(out, self.name);
        let _ = write!(
            out,
            ",\"class\":\"{}\",\"start_ns\":{},\"end_ns\":{},\"error\":{},\"message\":",
            self.class.as_str(),
            self.start_ns,
            self.end_ns,
            self.error
        );
        crate::convert::json::escape(out, self.message);
        let cost = if self.cost.is_finite() {
            self.cost
        } else {
            0.0
        };
        let _ = write!(
            out,
            ",\"guardrail_intervened\":{},\"input_tokens\":{},\"output_tokens\":{},\"cost\":{cost:?},\"attributes\":",
            self.guardrail_intervened, self.input_tokens, self.output_tokens
        );
        attributes(out);
        out.push('}');
    }
}

impl SpanClass {
    /// Its name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SpanClass::Agent => "agent",
            SpanClass::Model => "model",
            SpanClass::Tool => "tool",
            SpanClass::Retrieval => "retrieval",
            SpanClass::Guardrail => "guardrail",
            SpanClass::Other => "other",
        }
    }
}

impl SpanRecord {
    /// Appends the record as a JSON object: ids in hex (`parent_id` empty
    /// for a root), `class` by name, `attributes` as an object of texts.
    pub fn write_json(&self, out: &mut String) {
        let fields = RecordFields {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_id: self.parent_id,
            name: &self.name,
            class: self.class,
            start_ns: self.start_ns,
            end_ns: self.end_ns,
            error: self.error,
            message: &self.message,
            guardrail_intervened: self.guardrail_intervened,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost: self.cost,
        };
        fields.write_json(out, |out| out.push_str(&self.attributes));
    }

    /// The record as a JSON value (for tests and the rare snapshot paths).
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = String::new();
        self.write_json(&mut out);
        serde_json::from_str(&out).unwrap_or_default()
    }

    /// Its attributes as text pairs.
    pub fn attribute_pairs(&self) -> Vec<(String, String)> {
        pairs(&self.attributes)
    }

    /// Its estimated size in memory: the struct and its strings.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<SpanRecord>()
            + self.name.len()
            + self.message.len()
            + self.attributes.len()
    }
}

impl EventRecord {
    /// Its estimated size in memory, as [`SpanRecord::bytes`].
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<EventRecord>()
            + self.trace_id.len()
            + self.span_id.len()
            + self.name.len()
            + self.body.len()
            + self.attributes.len()
    }

    /// Appends the event as a JSON object, `attributes` as an object of
    /// texts.
    pub fn write_json(&self, out: &mut String) {
        use crate::convert::json::escape;
        use std::fmt::Write;
        out.push_str("{\"trace_id\":");
        escape(out, &self.trace_id);
        out.push_str(",\"span_id\":");
        escape(out, &self.span_id);
        out.push_str(",\"name\":");
        escape(out, &self.name);
        let _ = write!(out, ",\"time_ns\":{},\"body\":", self.time_ns);
        escape(out, &self.body);
        out.push_str(",\"attributes\":");
        out.push_str(&self.attributes);
        out.push('}');
    }

    /// Its attributes as text pairs.
    pub fn attribute_pairs(&self) -> Vec<(String, String)> {
        pairs(&self.attributes)
    }
}

/// A JSON object of texts as pairs.
fn pairs(json: &str) -> Vec<(String, String)> {
    serde_json::from_str::<BTreeMap<String, String>>(json)
        .map(|m| m.into_iter().collect())
        .unwrap_or_default()
}

/// A session's own bytes before any record (its summary's sets and maps).
const SESSION_BYTES: usize = 1024;

/// Bytes in one chunk of a session's [`SpanLog`].
pub const CHUNK_BYTES: usize = 8 << 10;

/// A session's kept spans, in arrival order: each span encoded as an OTLP
/// `Span` (ids, name, kind, times, status and at most [`MAX_ATTRIBUTES`]
/// attributes, values cut to [`MAX_VALUE_BYTES`]; no span events or links)
/// behind its length (4 bytes, little-endian), written end to end into
/// chunks of [`CHUNK_BYTES`] (a span may run on into the next chunk).
/// Chunks come from the store's [`ChunkPool`] and go back to it when the
/// session goes, so filing a span allocates nothing, and a busy store
/// reuses its memory instead of churning the allocator. Records and JSON
/// are made only when someone reads the session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanLog {
    chunks: Vec<Box<[u8]>>,
    /// Bytes written into the last chunk.
    used: usize,
    len: usize,
}

/// Chunks that sessions gave back, for the next ones to take: at most
/// `max_free` of them are kept; the rest go back to the allocator.
#[derive(Debug, Default)]
pub struct ChunkPool {
    free: Vec<Box<[u8]>>,
    max_free: usize,
}

impl ChunkPool {
    /// A pool that keeps at most `max_bytes` of free chunks.
    fn new(max_bytes: usize) -> ChunkPool {
        ChunkPool {
            free: Vec::new(),
            max_free: max_bytes / CHUNK_BYTES,
        }
    }

    fn take(&mut self) -> Box<[u8]> {
        self.free
            .pop()
            .unwrap_or_else(|| vec![0u8; CHUNK_BYTES].into_boxed_slice())
    }

    fn give(&mut self, chunks: Vec<Box<[u8]>>) {
        let room = self.max_free.saturating_sub(self.free.len());
        self.free.extend(chunks.into_iter().take(room));
    }

    /// Bytes held free.
    pub fn bytes(&self) -> usize {
        self.free.len() * CHUNK_BYTES
    }
}

impl SpanLog {
    /// Spans held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no span.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes it holds in memory (its chunks).
    pub fn bytes(&self) -> usize {
        self.chunks.len() * CHUNK_BYTES
    }

    /// Appends `bytes`, taking chunks from `pool` as it needs them.
    fn write(&mut self, mut bytes: &[u8], pool: &mut ChunkPool) {
        while !bytes.is_empty() {
            if self.chunks.is_empty() || self.used == CHUNK_BYTES {
                self.chunks.push(pool.take());
                self.used = 0;
            }
            let Some(last) = self.chunks.last_mut() else {
                return;
            };
            let n = bytes.len().min(CHUNK_BYTES - self.used);
            last[self.used..self.used + n].copy_from_slice(&bytes[..n]);
            self.used += n;
            bytes = &bytes[n..];
        }
    }

    /// Appends one encoded span.
    fn push_frame(&mut self, frame: &[u8], pool: &mut ChunkPool) {
        self.write(&(frame.len() as u32).to_le_bytes(), pool);
        self.write(frame, pool);
        self.len += 1;
    }

    /// Appends `span`, within the bounds (encoded into `scratch` first).
    fn push(&mut self, span: &Span, pool: &mut ChunkPool, scratch: &mut Vec<u8>) {
        scratch.clear();
        encode_span(span, scratch);
        self.push_frame(scratch, pool);
    }

    /// The encoded spans, in arrival order: borrowed when a span lies in
    /// one chunk, gathered when it runs on into the next.
    fn frames(&self) -> impl Iterator<Item = std::borrow::Cow<'_, [u8]>> + '_ {
        use std::borrow::Cow;
        let (mut chunk, mut at) = (0usize, 0usize);
        // `n` bytes from the cursor, moving it on.
        let mut read = move |n: usize| -> Option<Cow<'_, [u8]>> {
            if chunk + 1 == self.chunks.len() && at + n > self.used {
                return None;
            }
            let first = self.chunks.get(chunk)?;
            if at + n <= CHUNK_BYTES {
                let out = &first[at..at + n];
                at += n;
                return Some(Cow::Borrowed(out));
            }
            let mut out = Vec::with_capacity(n);
            while out.len() < n {
                if at == CHUNK_BYTES {
                    chunk += 1;
                    at = 0;
                }
                let c = self.chunks.get(chunk)?;
                let k = (n - out.len()).min(CHUNK_BYTES - at);
                out.extend_from_slice(&c[at..at + k]);
                at += k;
            }
            Some(Cow::Owned(out))
        };
        let mut left = self.len;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let head = read(4)?;
            let n = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            read(n)
        })
    }

    /// The spans, decoded, in arrival order.
    pub fn spans(&self) -> impl Iterator<Item = Span> + '_ {
        use prost::Message;
        // The store wrote every frame, so none fails to decode.
        self.frames().filter_map(|f| Span::decode(f.as_ref()).ok())
    }
}

/// Free chunks a store keeps for reuse: a sixteenth of its bound, at most
/// 4 MiB.
pub fn free_chunk_bytes(max_bytes: usize) -> usize {
    (max_bytes / 16).min(4 << 20)
}

/// Appends a length-delimited field.
fn put_bytes(tag: u32, bytes: &[u8], buf: &mut Vec<u8>) {
    use prost::encoding::{encode_key, encode_varint, WireType};
    if bytes.is_empty() {
        return;
    }
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

/// Whether an attribute is kept as it is: key and value within
/// [`MAX_VALUE_BYTES`] (a list or map within twice that, encoded).
fn fits(kv: &KeyValue) -> bool {
    use prost::Message;
    kv.key.len() <= MAX_VALUE_BYTES
        && match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => s.len() <= MAX_VALUE_BYTES,
            Some(any_value::Value::BytesValue(b)) => b.len() <= MAX_VALUE_BYTES,
            Some(any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_)) => {
                kv.encoded_len() <= 2 * MAX_VALUE_BYTES
            }
            _ => true,
        }
}

/// An attribute past the bounds, cut: its key and string value to
/// [`MAX_VALUE_BYTES`], bytes likewise, a list or map as its JSON text cut.
fn cut_attribute(kv: &KeyValue) -> KeyValue {
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => {
            any_value::Value::StringValue(cut_str(s, MAX_VALUE_BYTES).to_string())
        }
        Some(any_value::Value::BytesValue(b)) => {
            any_value::Value::BytesValue(b[..b.len().min(MAX_VALUE_BYTES)].to_vec())
        }
        other => any_value::Value::StringValue(cut(text(other).unwrap_or_default())),
    };
    KeyValue {
        key: cut_str(&kv.key, MAX_VALUE_BYTES).to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// Encodes what a live view keeps of `span` as an OTLP `Span`.
fn encode_span(span: &Span, buf: &mut Vec<u8>) {
    use opentelemetry_proto::tonic::trace::v1::Status;
    use prost::encoding::{fixed64, int32, message};
    put_bytes(1, &span.trace_id, buf);
    put_bytes(2, &span.span_id, buf);
    put_bytes(4, &span.parent_span_id, buf);
    put_bytes(5, cut_str(&span.name, MAX_VALUE_BYTES).as_bytes(), buf);
    if span.kind != 0 {
        int32::encode(6, &span.kind, buf);
    }
    if span.start_time_unix_nano != 0 {
        fixed64::encode(7, &span.start_time_unix_nano, buf);
    }
    if span.end_time_unix_nano != 0 {
        fixed64::encode(8, &span.end_time_unix_nano, buf);
    }
    for kv in span.attributes.iter().take(MAX_ATTRIBUTES) {
        if fits(kv) {
            message::encode(9, kv, buf);
        } else {
            message::encode(9, &cut_attribute(kv), buf);
        }
    }
    if let Some(st) = &span.status {
        if st.message.len() <= MAX_VALUE_BYTES {
            message::encode(15, st, buf);
        } else {
            let cut = Status {
                message: cut_str(&st.message, MAX_VALUE_BYTES).to_string(),
                code: st.code,
            };
            message::encode(15, &cut, buf);
        }
    }
}

/// One GenAI event (an OTLP log record named `gen_ai.*`) as the store
/// keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Trace id, hex (empty when it has none).
    pub trace_id: String,
    /// The span it belongs to, hex (empty when it has none).
    pub span_id: String,
    /// The event name (`gen_ai.choice`, `gen_ai.user.message`, …).
    pub name: String,
    /// When it happened (else when it was observed), Unix ns.
    pub time_ns: u64,
    /// Its body as text, cut to [`MAX_BODY_BYTES`].
    pub body: String,
    /// Its attributes as a JSON object of texts, bounded as a span's.
    pub attributes: String,
}

/// A session's running totals.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    /// The session key.
    pub session_id: String,
    /// Agents seen.
    pub agents: BTreeSet<String>,
    /// Models seen.
    pub models: BTreeSet<String>,
    /// First span start, Unix ns.
    pub start_ns: u64,
    /// Last span end, Unix ns.
    pub end_ns: u64,
    /// Spans seen (kept or not).
    pub span_count: u64,
    /// Spans seen but not kept (past `max_spans_per_session`).
    pub spans_not_kept: u64,
    /// GenAI events seen (kept or not).
    pub events: u64,
    /// Failures as the agent-trace model counts them: failed invocations,
    /// failed tool calls, unrecovered model calls, guardrail interventions
    /// (a throttle a retry recovered is not one).
    pub errors: u64,
    /// Tokens by type (`input`, `output`, `cache_read`, `cache_write`),
    /// each model call counted once.
    pub tokens: BTreeMap<String, u64>,
    /// Model requests (each once, however many spans report it).
    pub model_calls: u64,
    /// Model calls that were throttled.
    pub throttles: u64,
    /// Failed attempts a retry recovered, and retries inside one call.
    pub retries: u64,
    /// Tool calls.
    pub tool_calls: u64,
    /// Retrievals.
    pub retrievals: u64,
    /// Guardrail interventions.
    pub guardrail_interventions: u64,
    /// Cost from `pricing` (0 when no price applies).
    pub cost: f64,
    /// When it was last updated, Unix ns (receipt time).
    pub updated_ns: u64,
}

/// A session: its totals and kept spans.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Totals.
    pub summary: Summary,
    /// Kept spans, in arrival order.
    pub spans: SpanLog,
    /// Kept GenAI events, in arrival order.
    pub events: Vec<Arc<EventRecord>>,
    /// The estimated bytes of its records and itself.
    bytes: usize,
    /// What each of its traces adds to the totals, as the model last said
    /// (at most [`MAX_TRACES_PER_SESSION`]).
    traces: HashMap<TraceId, Contribution>,
}

/// Traces whose contributions a session keeps apart (to replace them when
/// their numbers change); past it, those of traces the model has forgotten
/// are folded into the totals for good.
pub const MAX_TRACES_PER_SESSION: usize = 4096;

/// What one trace adds to its session's totals (from the agent-trace
/// model; replaced whenever the trace's numbers change).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Contribution {
    tokens: Tokens,
    cost: f64,
    errors: u64,
    tools: u64,
    retrievals: u64,
    guardrails: u64,
    calls: u64,
    throttles: u64,
    retries: u64,
}

impl Contribution {
    fn of(n: &TraceNumbers) -> Contribution {
        let (retries, _) = n.retries();
        Contribution {
            tokens: n.tokens(),
            cost: n.cost(),
            errors: n.failures.len() as u64,
            tools: n.tools.len() as u64,
            retrievals: n.retrievals.len() as u64,
            guardrails: n.failed(FailureKind::Guardrail) as u64,
            calls: n.requests(),
            throttles: n.calls.iter().filter(|c| c.throttled).count() as u64,
            retries,
        }
    }

    /// The two added up.
    fn plus(&self, o: &Contribution) -> Contribution {
        let mut tokens = self.tokens;
        tokens.add(&o.tokens);
        Contribution {
            tokens,
            cost: self.cost + o.cost,
            errors: self.errors + o.errors,
            tools: self.tools + o.tools,
            retrievals: self.retrievals + o.retrievals,
            guardrails: self.guardrails + o.guardrails,
            calls: self.calls + o.calls,
            throttles: self.throttles + o.throttles,
            retries: self.retries + o.retries,
        }
    }

    /// Adds (`sign` 1) or takes away (-1) this from a summary.
    fn apply(&self, sum: &mut Summary, sign: i64) {
        let f = |v: &mut u64, by: u64| {
            *v = if sign > 0 {
                v.saturating_add(by)
            } else {
                v.saturating_sub(by)
            }
        };
        for (kind, n) in self.tokens.by_type() {
            match sum.tokens.get_mut(kind) {
                Some(t) => f(t, n),
                None if sign > 0 => {
                    sum.tokens.insert(kind.into(), n);
                }
                None => {}
            }
        }
        sum.tokens.retain(|_, v| *v > 0);
        f(&mut sum.errors, self.errors);
        f(&mut sum.tool_calls, self.tools);
        f(&mut sum.retrievals, self.retrievals);
        f(&mut sum.guardrail_interventions, self.guardrails);
        f(&mut sum.model_calls, self.calls);
        f(&mut sum.throttles, self.throttles);
        f(&mut sum.retries, self.retries);
        sum.cost += sign as f64 * self.cost;
        if sum.cost.abs() < 1e-12 {
            sum.cost = 0.0;
        }
    }
}

impl Session {
    fn new(id: &str, now_ns: u64) -> Session {
        Session {
            summary: Summary {
                session_id: id.to_string(),
                agents: BTreeSet::new(),
                models: BTreeSet::new(),
                start_ns: u64::MAX,
                end_ns: 0,
                span_count: 0,
                spans_not_kept: 0,
                events: 0,
                errors: 0,
                tokens: BTreeMap::new(),
                model_calls: 0,
                throttles: 0,
                retries: 0,
                tool_calls: 0,
                retrievals: 0,
                guardrail_interventions: 0,
                cost: 0.0,
                updated_ns: now_ns,
            },
            spans: SpanLog::default(),
            events: Vec::new(),
            // Counted by whoever inserts it.
            bytes: 0,
            traces: HashMap::new(),
        }
    }
}

/// A span of a batch, with the resource and scope it came with.
#[derive(Debug, Clone, Copy)]
pub struct SpanAt<'a> {
    /// Its resource's spans.
    pub resource: &'a ResourceSpans,
    /// Its scope's spans.
    pub scope: &'a ScopeSpans,
    /// The span.
    pub span: &'a Span,
}

/// What `ingest` did, for counters and subscribers.
#[derive(Debug, Default)]
pub struct Ingested<'a> {
    /// The batch's spans by session, in arrival order.
    pub by_session: Vec<(String, Vec<SpanAt<'a>>)>,
    /// Sessions evicted to stay under `max_sessions` or `max_bytes`.
    pub evicted: u64,
    /// Their last summaries (subscribers of a session evicted in this
    /// batch still get its new spans).
    pub evicted_sessions: Vec<Summary>,
    /// Spans (or events) counted but not kept.
    pub not_kept: u64,
}

/// What `ingest_events` did.
#[derive(Debug, Default)]
pub struct IngestedEvents {
    /// New GenAI events by session, in arrival order.
    pub by_session: Vec<(String, Vec<Arc<EventRecord>>)>,
    /// Sessions evicted to stay under `max_sessions` or `max_bytes`.
    pub evicted: u64,
    /// Their last summaries, as [`Ingested::evicted_sessions`].
    pub evicted_sessions: Vec<Summary>,
    /// Events counted but not kept.
    pub not_kept: u64,
    /// Log records that are not GenAI events, or name no session.
    pub ignored: u64,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    limits: Limits,
    sessions: HashMap<String, Session>,
    /// (updated_ns, seq) → session id: eviction order.
    order: BTreeMap<(u64, u64), String>,
    /// session id → its key in `order`.
    position: HashMap<String, (u64, u64)>,
    seq: u64,
    /// trace id → the session a span of it named, most recent last.
    traces: HashMap<Vec<u8>, String>,
    trace_order: std::collections::VecDeque<Vec<u8>>,
    /// Estimated bytes of all sessions.
    bytes: usize,
    /// The last [`RECENT_ERRORS`] error spans, newest last, with their
    /// sessions.
    recent_errors: std::collections::VecDeque<(String, Arc<SpanRecord>)>,
    /// Span log chunks given back by sessions that went.
    pool: ChunkPool,
    /// Where a span is encoded before it is filed.
    scratch: Vec<u8>,
    /// The agent-trace model: every session's numbers come from it.
    model: Tracker,
    keys: Keys,
    /// Traces with spans not yet counted in their session's totals, and
    /// their sessions: counted when read ([`Store::refresh`]) or when the
    /// trace settles, whichever comes first.
    dirty: genai::span::FastMap<TraceId, String>,
    /// The same by session (entries already counted may stay behind, and
    /// are dropped when they outnumber the live ones).
    dirty_by_session: HashMap<String, Vec<TraceId>>,
    /// Entries in `dirty_by_session`.
    dirty_listed: usize,
}

/// Traces waiting to be counted at most; past it they are counted at once.
pub const DIRTY_TRACES: usize = 8192;

/// Error spans remembered for "recent failures", whatever their sessions.
pub const RECENT_ERRORS: usize = 50;

/// A value as text: scalars as `signal::value_text` gives them, maps and
/// lists (message bodies, structured attributes) as JSON.
fn text(v: Option<&any_value::Value>) -> Option<String> {
    match v {
        Some(any_value::Value::KvlistValue(_) | any_value::Value::ArrayValue(_)) => {
            let mut out = String::new();
            crate::convert::json::Writer::new(&mut out, MAX_BODY_BYTES).value(v);
            Some(out)
        }
        Some(v) => Some(crate::signal::value_text(Some(v))),
        None => None,
    }
}

fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn cut(s: String) -> String {
    cut_to(s, MAX_VALUE_BYTES)
}

fn cut_to(mut s: String, max: usize) -> String {
    let end = cut_str(&s, max).len();
    s.truncate(end);
    s
}

/// What the store reads off a span's attributes, in one pass.
#[derive(Default)]
struct Picked<'a> {
    operation: &'a str,
    agent: Option<&'a str>,
    request_model: Option<&'a str>,
    response_model: Option<&'a str>,
    guardrail_action: Option<&'a str>,
    input_tokens: u64,
    output_tokens: u64,
}

impl<'a> Picked<'a> {
    fn from(attrs: &'a [KeyValue]) -> Picked<'a> {
        let mut p = Picked::default();
        for kv in attrs {
            let v = kv.value.as_ref().and_then(|v| v.value.as_ref());
            let s = match v {
                Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
                _ => None,
            };
            match kv.key.as_str() {
                "gen_ai.operation.name" => p.operation = s.unwrap_or(""),
                "gen_ai.agent.name" => p.agent = s.or(p.agent),
                "gen_ai.request.model" => p.request_model = s.or(p.request_model),
                "gen_ai.response.model" => p.response_model = s.or(p.response_model),
                "aws.bedrock.guardrail.action" => {
                    p.guardrail_action = Some(s.unwrap_or(""));
                }
                _ => {}
            }
        }
        // The span's own report, read as the agent-trace model reads it.
        let u = genai::span::usage_of(genai::span::struct_attributes(attrs));
        p.input_tokens = u.input.unwrap_or(0);
        p.output_tokens = u.output.unwrap_or(0);
        p
    }

    fn class(&self, name: &str) -> SpanClass {
        match self.operation {
            "invoke_agent" | "create_agent" => SpanClass::Agent,
            "chat" | "text_completion" | "generate_content" | "embeddings" => SpanClass::Model,
            "execute_tool" | "code_interpreter" | "function" => SpanClass::Tool,
            "retrieval" | "retrieve" => SpanClass::Retrieval,
            _ if self.guardrail_action.is_some() || name.starts_with("guardrail") => {
                SpanClass::Guardrail
            }
            _ => SpanClass::Other,
        }
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Attributes as a JSON object of texts: at most [`MAX_ATTRIBUTES`], keys
/// and values cut to [`MAX_VALUE_BYTES`], maps and lists as JSON text.
fn attributes_json(attrs: &[KeyValue]) -> String {
    // Sized once (keys and string values plus quotes and separators; other
    // values and escapes rarely add more): no regrowth, and no copy.
    let want: usize = attrs
        .iter()
        .take(MAX_ATTRIBUTES)
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.len().min(MAX_VALUE_BYTES),
                _ => 24,
            };
            kv.key.len().min(MAX_VALUE_BYTES) + v + 6
        })
        .sum();
    let mut out = String::with_capacity(2 + want);
    write_attributes(&mut out, attrs);
    out
}

/// Appends attributes as [`attributes_json`] renders them.
fn write_attributes(out: &mut String, attrs: &[KeyValue]) {
    use crate::convert::json::escape;
    use std::fmt::Write;
    out.push('{');
    let mut first = true;
    for kv in attrs.iter().take(MAX_ATTRIBUTES) {
        let Some(v) = kv.value.as_ref().and_then(|v| v.value.as_ref()) else {
            continue;
        };
        if !first {
            out.push(',');
        }
        first = false;
        escape(out, cut_str(&kv.key, MAX_VALUE_BYTES));
        out.push(':');
        match v {
            any_value::Value::StringValue(s) => escape(out, cut_str(s, MAX_VALUE_BYTES)),
            any_value::Value::IntValue(i) => {
                let _ = write!(out, "\"{i}\"");
            }
            other => {
                let t = text(Some(other)).unwrap_or_default();
                escape(out, cut_str(&t, MAX_VALUE_BYTES));
            }
        }
    }
    out.push('}');
}

impl Store {
    /// An empty store.
    pub fn new(limits: Limits) -> Store {
        Store {
            sessions: HashMap::new(),
            order: BTreeMap::new(),
            position: HashMap::new(),
            seq: 0,
            traces: HashMap::new(),
            trace_order: std::collections::VecDeque::new(),
            bytes: 0,
            recent_errors: std::collections::VecDeque::new(),
            pool: ChunkPool::new(free_chunk_bytes(limits.max_bytes)),
            scratch: Vec::new(),
            model: Tracker::new(
                TrackerLimits {
                    max_traces: limits.max_sessions.saturating_mul(16).max(1024),
                    max_bytes: (limits.max_bytes / 8).max(1 << 20),
                    ..TrackerLimits::default()
                },
                Pricing::new(limits.pricing.clone()),
            ),
            keys: Keys::sessions(limits.session_keys.clone()),
            dirty: Default::default(),
            dirty_by_session: HashMap::new(),
            dirty_listed: 0,
            limits,
        }
    }

    /// Counts every trace with new spans into its session's totals (the
    /// API and subscribers call it before they read).
    pub fn refresh(&mut self) {
        self.dirty_by_session.clear();
        self.dirty_listed = 0;
        let dirty = std::mem::take(&mut self.dirty);
        for (trace, session) in dirty {
            if let Some(n) = self.model.peek(&trace) {
                self.set_contribution(&session, trace, &n);
            }
        }
    }

    /// [`Store::refresh`] for one session.
    pub fn refresh_session(&mut self, id: &str) {
        let Some(traces) = self.dirty_by_session.remove(id) else {
            return;
        };
        self.dirty_listed = self.dirty_listed.saturating_sub(traces.len());
        for trace in traces {
            if self.dirty.remove(&trace).is_some() {
                if let Some(n) = self.model.peek(&trace) {
                    self.set_contribution(id, trace, &n);
                }
            }
        }
    }

    /// Counts settled traces that were waiting to be counted.
    fn apply_settled(&mut self, settled: Vec<genai::Settled>) {
        for s in settled {
            if let Some(session) = self.dirty.remove(&s.trace_id) {
                self.set_contribution(&session, s.trace_id, &s.numbers);
            }
        }
    }

    /// Replaces what a trace adds to its session's totals.
    fn set_contribution(&mut self, session: &str, trace: TraceId, numbers: &TraceNumbers) {
        let model = &self.model;
        let Some(session) = self.sessions.get_mut(session) else {
            return;
        };
        let new = Contribution::of(numbers);
        if let Some(old) = session.traces.insert(trace, new) {
            old.apply(&mut session.summary, -1);
        }
        new.apply(&mut session.summary, 1);
        if session.traces.len() > MAX_TRACES_PER_SESSION {
            session.traces.retain(|t, _| model.knows(t) || *t == trace);
            if session.traces.len() > MAX_TRACES_PER_SESSION {
                // Still over: the oldest part goes for good.
                let extra = session.traces.len() - MAX_TRACES_PER_SESSION / 2;
                let drop: Vec<TraceId> = session.traces.keys().take(extra).copied().collect();
                for t in drop {
                    session.traces.remove(&t);
                }
            }
        }
    }

    /// The last error spans with their sessions, newest first.
    pub fn recent_errors(&self) -> impl Iterator<Item = &(String, Arc<SpanRecord>)> {
        self.recent_errors.iter().rev()
    }

    /// The estimated bytes held (sessions and their records).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Evicts the least recently updated sessions while the store is over
    /// `max_bytes`, their summaries into `out`.
    fn enforce_bytes(&mut self, out: &mut Vec<Summary>) {
        while self.bytes > self.limits.max_bytes {
            if !self.evict_oldest(out) {
                break;
            }
        }
    }

    /// Evicts the least recently updated session, its summary into `out`.
    /// False when there is none.
    fn evict_oldest(&mut self, out: &mut Vec<Summary>) -> bool {
        let Some((_, oldest)) = self.order.pop_first() else {
            return false;
        };
        self.position.remove(&oldest);
        if let Some(s) = self.drop_session(&oldest) {
            self.pool.give(s.spans.chunks);
            out.push(s.summary);
        }
        true
    }

    /// Takes a session out of the map and its bytes off the total.
    fn drop_session(&mut self, id: &str) -> Option<Session> {
        let s = self.sessions.remove(id)?;
        self.bytes = self.bytes.saturating_sub(s.bytes);
        Some(s)
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether it holds no session.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The session a span names itself, if any.
    fn named_session(&self, attrs: &[KeyValue], res: &[KeyValue]) -> Option<String> {
        for k in &self.limits.session_keys {
            if let Some(v) = find(attrs, k).or_else(|| find(res, k)) {
                if let Some(t) = text(Some(v)).filter(|t| !t.is_empty()) {
                    return Some(cut(t));
                }
            }
        }
        None
    }

    /// The session a span belongs to (see the module doc).
    pub fn session_of(&self, span: &Span, res: &[KeyValue]) -> String {
        self.traces
            .get(&span.trace_id)
            .cloned()
            .or_else(|| self.named_session(&span.attributes, res))
            .unwrap_or_else(|| hex::encode(&span.trace_id))
    }

    /// Links `trace` to `session`: a root's link replaces another.
    fn link_trace(&mut self, trace: &[u8], session: String, root: bool) {
        if !root && self.traces.contains_key(trace) {
            return;
        }
        if self.traces.insert(trace.to_vec(), session).is_none() {
            self.trace_order.push_back(trace.to_vec());
            let cap = self.limits.max_sessions.saturating_mul(16).max(16);
            while self.trace_order.len() > cap {
                if let Some(old) = self.trace_order.pop_front() {
                    self.traces.remove(&old);
                }
            }
        }
    }

    fn touch(&mut self, id: &str, now_ns: u64) {
        if let Some(old) = self.position.remove(id) {
            self.order.remove(&old);
        }
        self.seq += 1;
        let key = (now_ns, self.seq);
        self.order.insert(key, id.to_string());
        self.position.insert(id.to_string(), key);
    }

    fn remove(&mut self, id: &str) -> Option<Session> {
        if let Some(k) = self.position.remove(id) {
            self.order.remove(&k);
        }
        self.drop_session(id)
    }

    /// Adds a batch received at `now_ns`; expired sessions go first. Each
    /// span is read once for its session's totals and copied once into its
    /// session's [`SpanLog`]; records are made only for error spans (recent
    /// failures). The batch's spans come back by session for subscribers.
    pub fn ingest<'a>(&mut self, batch: &'a [ResourceSpans], now_ns: u64) -> Ingested<'a> {
        self.expire(now_ns);
        let mut out = Ingested::default();
        // Spans that name their session link their trace to it, for the
        // spans of that trace that do not (in this batch and later ones).
        // Roots first: their session wins the trace. A non-root span right
        // after another named span of its trace would change nothing.
        let mut named: Vec<(&[u8], String, bool)> = Vec::new();
        for rs in batch {
            let res: &[KeyValue] = rs
                .resource
                .as_ref()
                .map_or(&[], |r| r.attributes.as_slice());
            for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                let root = span.parent_span_id.is_empty();
                if !root && named.last().is_some_and(|(t, _, _)| *t == span.trace_id) {
                    continue;
                }
                if let Some(id) = self.named_session(&span.attributes, res) {
                    named.push((&span.trace_id, id, root));
                }
            }
        }
        named.sort_by_key(|(_, _, root)| !*root);
        for (trace, id, root) in named {
            if !root && self.traces.contains_key(trace) {
                continue;
            }
            // Spans of this trace that came first were keyed by the trace
            // id: they join the named session now.
            let by_trace = hex::encode(trace);
            if by_trace != id && self.sessions.contains_key(&by_trace) {
                self.merge(&by_trace, &id, now_ns);
            }
            self.link_trace(trace, id, root);
        }
        // The batch by session. The session of the previous span's trace:
        // most spans follow one of their trace, and need no lookup.
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut last: Option<(&[u8], usize)> = None;
        for rs in batch {
            let res: &[KeyValue] = rs
                .resource
                .as_ref()
                .map_or(&[], |r| r.attributes.as_slice());
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    let at = match last {
                        Some((trace, at)) if trace == span.trace_id.as_slice() => at,
                        _ => {
                            let id = self.session_of(span, res);
                            let at = match index.get(&id) {
                                Some(at) => *at,
                                None => {
                                    out.by_session.push((id.clone(), Vec::new()));
                                    index.insert(id, out.by_session.len() - 1);
                                    out.by_session.len() - 1
                                }
                            };
                            last = Some((span.trace_id.as_slice(), at));
                            at
                        }
                    };
                    out.by_session[at].1.push(SpanAt {
                        resource: rs,
                        scope: ss,
                        span,
                    });
                }
            }
        }
        let mut errors: Vec<(usize, &Span)> = Vec::new();
        let now_ms = now_ns / 1_000_000;
        let mut settled = Vec::new();
        self.model.settle_due(now_ms, &mut settled);
        // (session, trace) pairs whose numbers may have changed.
        let mut touched: Vec<(usize, TraceId)> = Vec::new();
        let mut origin: Option<(*const ResourceSpans, genai::Origin)> = None;
        for (group, (id, spans)) in out.by_session.iter().enumerate() {
            let mut rest = spans.as_slice();
            while !rest.is_empty() {
                // Made the most recently updated (after making room, if
                // new, or evicted since).
                self.open(id, now_ns, &mut out.evicted_sessions);
                let (max_spans, max_bytes) =
                    (self.limits.max_spans_per_session, self.limits.max_bytes);
                let Some(session) = self.sessions.get_mut(id.as_str()) else {
                    break;
                };
                let before = session.spans.bytes();
                let mut filed = 0;
                for at in rest {
                    filed += 1;
                    let span = at.span;
                    let error = is_error(span);
                    let resource: *const ResourceSpans = at.resource;
                    if origin.as_ref().is_none_or(|(r, _)| *r != resource) {
                        let o = genai::span::struct_origin(
                            at.resource.resource.as_ref(),
                            &self.keys.session,
                        );
                        origin = Some((resource, o));
                    }
                    if let Some((_, o)) = &origin {
                        let trace = genai::trace_id(&span.trace_id);
                        if !self.model.knows(&trace) {
                            // A trace the model forgot: what it added stays
                            // in the totals; its new spans start anew.
                            session.traces.remove(&trace);
                        }
                        let facts = genai::span::read_struct(span, o, &self.keys);
                        add(&mut session.summary, &facts, span, now_ns);
                        self.model.offer(trace, facts, now_ms, &mut settled);
                        if touched.last() != Some(&(group, trace)) {
                            touched.push((group, trace));
                        }
                    }
                    if session.spans.len() < max_spans {
                        session.spans.push(span, &mut self.pool, &mut self.scratch);
                    } else {
                        session.summary.spans_not_kept += 1;
                        out.not_kept += 1;
                    }
                    if error {
                        errors.push((group, span));
                    }
                    // Past the bound: older sessions go before more is filed.
                    if self.bytes + (session.spans.bytes() - before) > max_bytes {
                        break;
                    }
                }
                let grown = session.spans.bytes() - before;
                session.bytes += grown;
                self.bytes += grown;
                rest = &rest[filed..];
                if self.bytes > max_bytes {
                    self.enforce_bytes(&mut out.evicted_sessions);
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for (group, trace) in touched {
            let session = &out.by_session[group].0;
            if self.dirty.insert(trace, session.clone()).is_none() {
                self.dirty_by_session
                    .entry(session.clone())
                    .or_default()
                    .push(trace);
                self.dirty_listed += 1;
            }
        }
        self.apply_settled(settled);
        if self.dirty_listed > 2 * self.dirty.len() + 1024 {
            // Rebuilt from the live entries: stale ones go.
            self.dirty_by_session.clear();
            for (t, s) in &self.dirty {
                self.dirty_by_session.entry(s.clone()).or_default().push(*t);
            }
            self.dirty_listed = self.dirty.len();
        }
        if self.dirty.len() > DIRTY_TRACES {
            self.refresh();
        }
        for (group, span) in errors {
            if self.recent_errors.len() >= RECENT_ERRORS {
                self.recent_errors.pop_front();
            }
            let record = Arc::new(self.record(span));
            self.recent_errors
                .push_back((out.by_session[group].0.clone(), record));
        }
        out.evicted = out.evicted_sessions.len() as u64;
        out
    }

    /// Makes `id` the most recently updated session, creating it (and
    /// counting its bytes) after making room when it is new.
    fn open(&mut self, id: &str, now_ns: u64, evicted: &mut Vec<Summary>) {
        if !self.sessions.contains_key(id) {
            self.make_room(evicted);
            let mut session = Session::new(id, now_ns);
            session.bytes = SESSION_BYTES;
            self.sessions.insert(id.to_string(), session);
            self.bytes += SESSION_BYTES;
        }
        self.touch(id, now_ns);
    }

    /// Evicts the least recently updated sessions until one more fits under
    /// `max_sessions`, their summaries into `out`.
    fn make_room(&mut self, out: &mut Vec<Summary>) {
        while self.sessions.len() >= self.limits.max_sessions.max(1) {
            if !self.evict_oldest(out) {
                break;
            }
        }
    }

    /// The session a GenAI event belongs to: its trace's, else the one it
    /// or its resource names, else its trace id; none without either.
    fn session_of_event(&self, lr: &LogRecord, res: &[KeyValue]) -> Option<String> {
        self.traces
            .get(&lr.trace_id)
            .cloned()
            .or_else(|| self.named_session(&lr.attributes, res))
            .or_else(|| (!lr.trace_id.is_empty()).then(|| hex::encode(&lr.trace_id)))
    }

    /// Adds the GenAI events of a log batch received at `now_ns`; other
    /// records are counted as ignored.
    pub fn ingest_events(&mut self, batch: &[ResourceLogs], now_ns: u64) -> IngestedEvents {
        self.expire(now_ns);
        let mut out = IngestedEvents::default();
        let mut index: HashMap<String, usize> = HashMap::new();
        for rl in batch {
            let res: &[KeyValue] = rl
                .resource
                .as_ref()
                .map_or(&[], |r| r.attributes.as_slice());
            for lr in rl.scope_logs.iter().flat_map(|s| &s.log_records) {
                let Some(name) = event_name(lr).filter(|n| n.starts_with("gen_ai.")) else {
                    out.ignored += 1;
                    continue;
                };
                let Some(id) = self.session_of_event(lr, res) else {
                    out.ignored += 1;
                    continue;
                };
                let record = Arc::new(EventRecord {
                    trace_id: hex::encode(&lr.trace_id),
                    span_id: hex::encode(&lr.span_id),
                    name: cut(name.to_string()),
                    time_ns: if lr.time_unix_nano > 0 {
                        lr.time_unix_nano
                    } else {
                        lr.observed_time_unix_nano
                    },
                    body: cut_to(
                        text(lr.body.as_ref().and_then(|b| b.value.as_ref())).unwrap_or_default(),
                        MAX_BODY_BYTES,
                    ),
                    attributes: attributes_json(&lr.attributes),
                });
                self.open(&id, now_ns, &mut out.evicted_sessions);
                let max = self.limits.max_events_per_session;
                if let Some(session) = self.sessions.get_mut(&id) {
                    session.summary.events += 1;
                    session.summary.updated_ns = now_ns;
                    if session.events.len() < max {
                        let n = record.bytes();
                        session.bytes += n;
                        self.bytes += n;
                        session.events.push(record.clone());
                    } else {
                        out.not_kept += 1;
                    }
                }
                self.enforce_bytes(&mut out.evicted_sessions);
                let at = *index.entry(id.clone()).or_insert_with(|| {
                    out.by_session.push((id.clone(), Vec::new()));
                    out.by_session.len() - 1
                });
                out.by_session[at].1.push(record);
            }
        }
        out.evicted = out.evicted_sessions.len() as u64;
        out
    }

    /// What a record of `span` holds but its attributes.
    fn fields<'s>(&self, span: &'s Span) -> RecordFields<'s> {
        let p = Picked::from(&span.attributes);
        let message = match &span.status {
            Some(s) if s.code == StatusCode::Error as i32 => cut_str(&s.message, MAX_VALUE_BYTES),
            _ => "",
        };
        RecordFields {
            trace_id: id(&span.trace_id),
            span_id: id(&span.span_id),
            parent_id: (!span.parent_span_id.is_empty()).then(|| id(&span.parent_span_id)),
            name: cut_str(&span.name, MAX_VALUE_BYTES),
            class: p.class(&span.name),
            start_ns: span.start_time_unix_nano,
            end_ns: span.end_time_unix_nano,
            error: is_error(span),
            message,
            guardrail_intervened: p.guardrail_action.is_some_and(|a| a != "NONE"),
            input_tokens: p.input_tokens,
            output_tokens: p.output_tokens,
            cost: cost(&self.limits.pricing, &p),
        }
    }

    /// A span as the record a live view shows.
    pub fn record(&self, span: &Span) -> SpanRecord {
        let f = self.fields(span);
        SpanRecord {
            trace_id: f.trace_id,
            span_id: f.span_id,
            parent_id: f.parent_id,
            name: f.name.to_string(),
            class: f.class,
            start_ns: f.start_ns,
            end_ns: f.end_ns,
            error: f.error,
            message: f.message.to_string(),
            guardrail_intervened: f.guardrail_intervened,
            input_tokens: f.input_tokens,
            output_tokens: f.output_tokens,
            cost: f.cost,
            attributes: attributes_json(&span.attributes),
        }
    }

    /// Appends `span` as the JSON of its record ([`SpanRecord::write_json`]),
    /// written straight from the span.
    pub fn write_span_json(&self, span: &Span, out: &mut String) {
        self.fields(span)
            .write_json(out, |out| write_attributes(out, &span.attributes));
    }

    /// Moves session `from` into `into` (created if new): spans (within
    /// the bound) and totals.
    fn merge(&mut self, from: &str, into: &str, now_ns: u64) {
        let Some(src) = self.remove(from) else {
            return;
        };
        let max = self.limits.max_spans_per_session;
        let existed = self.sessions.contains_key(into);
        let dst = self
            .sessions
            .entry(into.to_string())
            .or_insert_with(|| Session {
                summary: Summary {
                    session_id: into.to_string(),
                    ..src.summary.clone()
                },
                spans: SpanLog::default(),
                events: Vec::new(),
                bytes: 0,
                traces: HashMap::new(),
            });
        // Traces waiting to be counted follow their session.
        if let Some(list) = self.dirty_by_session.remove(from) {
            for t in &list {
                if let Some(s) = self.dirty.get_mut(t) {
                    *s = into.to_string();
                }
            }
            self.dirty_by_session
                .entry(into.to_string())
                .or_default()
                .extend(list);
        }
        // The traces' contributions move with the totals they are in.
        for (t, c) in &src.traces {
            let slot = dst.traces.entry(*t).or_default();
            *slot = slot.plus(c);
        }
        let mut added = if existed { 0 } else { SESSION_BYTES };
        if existed {
            let (d, s) = (&mut dst.summary, &src.summary);
            d.agents.extend(s.agents.iter().cloned());
            d.models.extend(s.models.iter().cloned());
            d.start_ns = d.start_ns.min(s.start_ns);
            d.end_ns = d.end_ns.max(s.end_ns);
            d.span_count += s.span_count;
            d.spans_not_kept += s.spans_not_kept;
            d.events += s.events;
            d.errors += s.errors;
            for (k, v) in &s.tokens {
                *d.tokens.entry(k.clone()).or_default() += v;
            }
            d.model_calls += s.model_calls;
            d.throttles += s.throttles;
            d.retries += s.retries;
            d.tool_calls += s.tool_calls;
            d.retrievals += s.retrievals;
            d.guardrail_interventions += s.guardrail_interventions;
            d.cost += s.cost;
        }
        let before = dst.spans.bytes();
        for frame in src.spans.frames() {
            if dst.spans.len() < max {
                dst.spans.push_frame(&frame, &mut self.pool);
            } else {
                dst.summary.spans_not_kept += 1;
            }
        }
        added += dst.spans.bytes() - before;
        self.pool.give(src.spans.chunks);
        let max_events = self.limits.max_events_per_session;
        for e in src.events {
            if dst.events.len() < max_events {
                added += e.bytes();
                dst.events.push(e);
            }
        }
        dst.bytes += added;
        self.bytes += added;
        dst.summary.updated_ns = now_ns;
        self.touch(into, now_ns);
    }

    /// Drops sessions not updated within `retention` of `now_ns`.
    pub fn expire(&mut self, now_ns: u64) -> u64 {
        let cutoff = now_ns.saturating_sub(self.limits.retention_ns);
        let mut n = 0;
        while let Some(((updated, _), _)) = self.order.first_key_value() {
            if *updated >= cutoff {
                break;
            }
            if let Some((_, id)) = self.order.pop_first() {
                self.position.remove(&id);
                if let Some(s) = self.drop_session(&id) {
                    self.pool.give(s.spans.chunks);
                }
                n += 1;
            }
        }
        n
    }

    /// A session, whole.
    pub fn get(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id)
    }

    /// A session as JSON: `{"summary", "spans", "events"}`.
    pub fn session_json(&self, session: &Session) -> String {
        let mut out = String::from("{\"summary\":");
        out.push_str(&serde_json::to_string(&session.summary).unwrap_or_default());
        out.push_str(",\"spans\":[");
        for (i, span) in session.spans.spans().enumerate() {
            if i > 0 {
                out.push(',');
            }
            self.write_span_json(&span, &mut out);
        }
        out.push_str("],\"events\":[");
        for (i, e) in session.events.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            e.write_json(&mut out);
        }
        out.push_str("]}");
        out
    }

    /// Summaries, most recently updated first, that `keep` selects.
    pub fn summaries(&self, keep: impl Fn(&Summary) -> bool) -> Vec<Summary> {
        self.order
            .values()
            .rev()
            .filter_map(|id| self.sessions.get(id))
            .map(|s| s.summary.clone())
            .filter(|s| keep(s))
            .collect()
    }

    /// Forgets a session (a client deleted it, or a test).
    pub fn forget(&mut self, id: &str) {
        if let Some(s) = self.remove(id) {
            self.pool.give(s.spans.chunks);
        }
    }
}

/// Whether a span has an error status.
pub fn is_error(span: &Span) -> bool {
    span.status
        .as_ref()
        .is_some_and(|s| s.code == StatusCode::Error as i32)
}

/// A span's cost from `pricing` by its request or response model (0 when
/// no price applies).
fn cost(pricing: &BTreeMap<String, Price>, p: &Picked<'_>) -> f64 {
    if pricing.is_empty() {
        return 0.0;
    }
    [p.request_model, p.response_model]
        .into_iter()
        .flatten()
        .find_map(|m| pricing.get(m))
        .map_or(0.0, |price| {
            p.input_tokens as f64 / 1000.0 * price.input
                + p.output_tokens as f64 / 1000.0 * price.output
        })
}

/// Adds one span to a session's span count, agents, models and times;
/// its numbers come from the agent-trace model.
fn add(sum: &mut Summary, f: &genai::SpanFacts, span: &Span, now_ns: u64) {
    sum.span_count += 1;
    sum.updated_ns = now_ns;
    if span.start_time_unix_nano > 0 {
        sum.start_ns = sum.start_ns.min(span.start_time_unix_nano);
    }
    sum.end_ns = sum.end_ns.max(span.end_time_unix_nano);
    if let Some(a) = f.agent.as_deref() {
        if sum.agents.len() < 64 && !sum.agents.contains(a) {
            sum.agents.insert(a.to_string());
        }
    }
    if let Some(m) = f.model.as_deref() {
        if sum.models.len() < 64 && !sum.models.contains(m) {
            sum.models.insert(m.to_string());
        }
    }
}

/// A log record's event name: its `event_name` field, else its
/// `event.name` attribute.
fn event_name(lr: &LogRecord) -> Option<&str> {
    if !lr.event_name.is_empty() {
        return Some(&lr.event_name);
    }
    match find(&lr.attributes, "event.name") {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
