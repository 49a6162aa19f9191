//! OTLP spans → AWS X-Ray segment documents. Pure: no I/O.
//!
//! One span becomes one document, sent on its own: SERVER and CONSUMER spans
//! and roots are *segments*; every other span with a parent is a
//! *subsegment* (`type: subsegment`, `parent_id`, `trace_id`). The rules follow
//! the OpenTelemetry Collector's `awsxray` translator where it is right, and
//! go further where it loses data or produces documents X-Ray rejects:
//!
//! - trace id `1-xxxxxxxx-yyyyyyyyyyyyyyyyyyyyyyyy` straight from the 16 bytes
//!   (no epoch check: X-Ray accepts W3C ids);
//! - the name (from `aws.local.service`, `aws.remote.service`, `peer.service`,
//!   `aws.service`, the database, `service.name`, `rpc.service`, the host, or
//!   the span name) is *always* cut down to X-Ray's characters and 200
//!   characters, falling through to the next candidate when nothing is left;
//! - `http`, `aws`, `sql` and `cause` objects from the semantic conventions
//!   (old and new attribute names), `error`/`fault`/`throttle`, `origin`,
//!   `user`, `in_progress`;
//! - annotations: the loop-guard marker, GenAI agent defaults, the keys named
//!   in `aws.xray.annotations`, `indexed_attributes`, then (with
//!   `index_all_attributes`) the rest, at most 50, keys cut to `[A-Za-z0-9_]`
//!   and 500 characters, string values to 1000 characters;
//! - everything else in `metadata.default`: attributes of every type, resource
//!   attributes as `otel.resource.*` (segments), non-exception events as
//!   `otel.events`, links as `otel.links`;
//! - a document never exceeds [`MAX_DOCUMENT_BYTES`]: metadata is dropped
//!   largest first, then long strings are cut, then stacks and exceptions, and
//!   the document says so in `metadata.spanwire`.

mod cause;
pub mod segment;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status::StatusCode, ResourceSpans, Span,
};

use std::collections::HashMap;
use std::sync::Arc;

use crate::convert::genai;
use crate::convert::json::{self, Writer};
use cause::Exception;

/// The largest document spanwire sends (X-Ray's limit is 64 kB).
pub const MAX_DOCUMENT_BYTES: usize = 64_000;
/// Longest segment name X-Ray accepts, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Most annotations X-Ray indexes.
pub const MAX_ANNOTATIONS: usize = 50;
/// Longest annotation key, in characters.
pub const MAX_ANNOTATION_KEY_CHARS: usize = 500;
/// Longest annotation string value, in characters.
pub const MAX_ANNOTATION_VALUE_CHARS: usize = 1000;
/// The annotation that marks documents spanwire wrote (the loop guard).
pub const LOOP_MARKER: &str = "spanwire_exported";

/// Attributes of agent spans that become annotations by default, so traces
/// can be filtered by agent, model, session and token use in the X-Ray console.
pub const AGENT_ANNOTATIONS: &[&str] = &[
    "gen_ai.agent.id",
    "gen_ai.agent.name",
    "gen_ai.operation.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.provider.name",
    "gen_ai.system",
    "gen_ai.conversation.id",
    "session.id",
    "gen_ai.tool.name",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.completion_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
];

/// Conversion settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Attribute keys to index as annotations.
    pub indexed_attributes: Vec<String>,
    /// Index every attribute that can be an annotation.
    pub index_all_attributes: bool,
    /// Log groups to name in `aws.cloudwatch_logs` when the resource names none.
    pub log_groups: Vec<String>,
    /// Annotate GenAI agent attributes ([`AGENT_ANNOTATIONS`]).
    pub agent_annotations: bool,
    /// Add the [`LOOP_MARKER`] annotation.
    pub mark_exported: bool,
    /// Size limit of one document in bytes.
    pub max_document_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            indexed_attributes: Vec::new(),
            index_all_attributes: false,
            log_groups: Vec::new(),
            agent_annotations: true,
            mark_exported: true,
            max_document_bytes: MAX_DOCUMENT_BYTES,
        }
    }
}

/// One segment document, ready for PutTraceSegments.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The segment id (16 hex digits), as X-Ray reports it in `UnprocessedTraceSegments`.
    pub id: String,
    /// The X-Ray trace id.
    pub trace_id: String,
    /// The JSON text.
    pub json: String,
    /// True when something was dropped or cut to fit the size limit.
    pub truncated: bool,
}

/// Why a span cannot become a document.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum XrayError {
    /// The trace id is not 16 bytes (or is all zero).
    #[error("span {span}: trace id must be 16 non-zero bytes, got {len} bytes")]
    TraceId {
        /// The span's name.
        span: String,
        /// Length seen.
        len: usize,
    },
    /// The span id is not 8 bytes (or is all zero).
    #[error("span {span}: span id must be 8 non-zero bytes, got {len} bytes")]
    SpanId {
        /// The span's name.
        span: String,
        /// Length seen.
        len: usize,
    },
    /// The parent span id is neither empty nor 8 bytes.
    #[error("span {span}: parent span id must be empty or 8 bytes, got {len} bytes")]
    ParentId {
        /// The span's name.
        span: String,
        /// Length seen.
        len: usize,
    },
    /// No start time.
    #[error("span {span}: start time is missing")]
    NoStartTime {
        /// The span's name.
        span: String,
    },
}

/// Documents made from a batch, and the spans that could not be converted.
#[derive(Debug, Default)]
pub struct Converted {
    /// One per convertible span, in input order.
    pub documents: Vec<Document>,
    /// One per span that cannot become a document.
    pub errors: Vec<XrayError>,
}

/// Converts every span of `data`.
pub fn convert(data: &[ResourceSpans], opts: &Options) -> Converted {
    let mut out = Converted::default();
    let marks = if opts.agent_annotations {
        agent_marks(data)
    } else {
        HashMap::new()
    };
    for rs in data {
        for ss in &rs.scope_spans {
            out.documents.reserve(ss.spans.len());
            for span in &ss.spans {
                let m = (!marks.is_empty())
                    .then(|| {
                        marks.get(&(
                            genai::trace_id(&span.trace_id),
                            genai::span::id64(&span.span_id),
                        ))
                    })
                    .flatten();
                match span_to_document_with(span, rs.resource.as_ref(), opts, m) {
                    Ok(d) => out.documents.push(d),
                    Err(e) => out.errors.push(e),
                }
            }
        }
    }
    out
}

/// `1-xxxxxxxx-yyyyyyyyyyyyyyyyyyyyyyyy` from a 16-byte trace id.
pub fn xray_trace_id(trace_id: &[u8]) -> Option<String> {
    if trace_id.len() != 16 || trace_id.iter().all(|b| *b == 0) {
        return None;
    }
    let mut s = String::with_capacity(35);
    s.push_str("1-");
    json::push_hex(&mut s, &trace_id[..4]);
    s.push('-');
    json::push_hex(&mut s, &trace_id[4..]);
    Some(s)
}

/// True when a span carries the loop-guard marker, as an attribute named
/// [`LOOP_MARKER`] (or ending in `.spanwire_exported`, as X-Ray annotations
/// may come back prefixed), or inside an `annotations` map attribute.
pub fn is_loop_marked(attributes: &[KeyValue]) -> bool {
    attributes.iter().any(|kv| {
        kv.key == LOOP_MARKER
            || kv
                .key
                .strip_suffix(LOOP_MARKER)
                .is_some_and(|p| p.ends_with('.'))
            || match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::KvlistValue(l)) if kv.key.ends_with("annotations") => {
                    l.values.iter().any(|kv| kv.key == LOOP_MARKER)
                }
                _ => false,
            }
    })
}

/// X-Ray's name characters: letters, numbers, whitespace and `_ . : / % & # = + \ - @`.
fn name_char(c: char) -> bool {
    c.is_alphanumeric() || c.is_whitespace() || "_.:/%&#=+\\-@".contains(c)
}

/// Removes characters X-Ray does not allow in names and cuts to 200
/// characters; `None` when nothing is left.
pub fn sanitize_name(raw: &str) -> Option<String> {
    let s: String = raw
        .chars()
        .filter(|c| name_char(*c))
        .take(MAX_NAME_CHARS)
        .collect();
    let trimmed = s.trim();
    if trimmed.is_empty() {
        None
    } else if trimmed.len() == s.len() {
        Some(s)
    } else {
        Some(trimmed.to_string())
    }
}

/// An annotation key: `[A-Za-z0-9_]` only, at most 500 characters.
pub fn annotation_key(raw: &str) -> String {
    raw.chars()
        .take(MAX_ANNOTATION_KEY_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn value(kv: &KeyValue) -> Option<&any_value::Value> {
    kv.value.as_ref().and_then(|v| v.value.as_ref())
}

fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs.iter().find(|kv| kv.key == key).and_then(value)
}

fn as_str(v: Option<&any_value::Value>) -> Option<&str> {
    match v {
        Some(any_value::Value::StringValue(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

fn as_int(v: Option<&any_value::Value>) -> Option<i64> {
    match v {
        Some(any_value::Value::IntValue(i)) => Some(*i),
        Some(any_value::Value::DoubleValue(d)) if d.fract() == 0.0 && d.is_finite() => {
            Some(*d as i64)
        }
        Some(any_value::Value::StringValue(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

/// An annotation value.
#[derive(Debug, Clone, Copy)]
enum Ann<'a> {
    Str(&'a str),
    Int(i64),
    F64(f64),
    Bool(bool),
}

fn annotation_value(v: Option<&any_value::Value>) -> Option<Ann<'_>> {
    match v? {
        any_value::Value::StringValue(s) => Some(Ann::Str(s)),
        any_value::Value::IntValue(i) => Some(Ann::Int(*i)),
        any_value::Value::DoubleValue(d) if d.is_finite() => Some(Ann::F64(*d)),
        any_value::Value::BoolValue(b) => Some(Ann::Bool(*b)),
        _ => None,
    }
}

/// One entry of `metadata.default`.
enum Meta<'a> {
    Attr(&'a KeyValue),
    Resource(&'a KeyValue),
    Events(Vec<&'a opentelemetry_proto::tonic::trace::v1::span::Event>),
    Links(&'a [opentelemetry_proto::tonic::trace::v1::span::Link]),
}

#[derive(Default)]
struct Http<'a> {
    method: Option<&'a str>,
    url: Option<String>,
    user_agent: Option<&'a str>,
    client_ip: Option<&'a str>,
    x_forwarded_for: bool,
    status: Option<i64>,
    content_length: Option<i64>,
}

#[derive(Default)]
struct Aws<'a> {
    account_id: Option<&'a str>,
    operation: Option<&'a str>,
    region: Option<&'a str>,
    request_id: Option<&'a str>,
    queue_url: Option<&'a str>,
    table_name: Option<&'a str>,
    table_names: Vec<&'a str>,
    sdk: Option<String>,
    sdk_version: Option<&'a str>,
    auto_instrumentation: bool,
    ec2: Option<[Option<&'a str>; 4]>,
    ecs: Option<[Option<&'a str>; 3]>,
    eks: Option<[Option<&'a str>; 3]>,
    log_groups: Vec<(&'a str, Option<&'a str>)>,
}

struct Sql<'a> {
    url: &'a str,
    connection_string: String,
    database_type: &'a str,
    user: Option<&'a str>,
    sanitized_query: Option<&'a str>,
}

/// Everything a document is rendered from.
struct Seg<'a> {
    span: &'a Span,
    trace_id: String,
    id: String,
    parent_id: Option<String>,
    name: String,
    subsegment: bool,
    namespace: Option<&'static str>,
    origin: Option<&'static str>,
    user: Option<&'a str>,
    error: bool,
    fault: bool,
    throttle: bool,
    in_progress: bool,
    http: Option<Http<'a>>,
    aws: Option<Aws<'a>>,
    sql: Option<Sql<'a>>,
    exceptions: Vec<Exception<'a>>,
    annotations: Vec<(String, Ann<'a>)>,
    metadata: Vec<Meta<'a>>,
}

// Attribute categories: which structured field an attribute feeds.
const CAT_NONE: u8 = 0;
const CAT_HTTP: u8 = 1;
const CAT_AWS: u8 = 2;
const CAT_SQL: u8 = 3;
const CAT_ALWAYS: u8 = 4;

/// Converts one span.
pub fn span_to_document(
    span: &Span,
    resource: Option<&Resource>,
    opts: &Options,
) -> Result<Document, XrayError> {
    span_to_document_with(span, resource, opts, None)
}

/// What the agent-trace model says of one span, for its annotations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentMarks {
    /// The span reports usage: whether it is the report that counts
    /// (`gen_ai_usage_counted`; only a counted span's `gen_ai.usage.*`
    /// are annotations, the others go to metadata).
    pub counted: Option<bool>,
    /// The agent it is attributed to (annotated as `gen_ai_agent_name`
    /// when the span names none).
    pub agent: Option<Arc<str>>,
    /// The session it is attributed to (`session_id`, likewise).
    pub session: Option<Arc<str>>,
}

/// The agent-trace model over the traces of a batch (each trace as far as
/// the batch holds it): marks by (trace, span).
pub fn agent_marks(data: &[ResourceSpans]) -> HashMap<(genai::TraceId, u64), AgentMarks> {
    let keys = genai::Keys::sessions(genai::default_session_keys());
    let mut traces: HashMap<genai::TraceId, Vec<genai::SpanFacts>> = HashMap::new();
    let mut any = false;
    for rs in data {
        let origin = genai::span::struct_origin(rs.resource.as_ref(), &keys.session);
        for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
            let f = genai::span::read_struct(span, &origin, &keys);
            any |= f.role != genai::Role::Other;
            traces
                .entry(genai::trace_id(&span.trace_id))
                .or_default()
                .push(f);
        }
    }
    let mut out = HashMap::new();
    if !any {
        return out;
    }
    let pricing = genai::Pricing::only(Default::default());
    for (t, spans) in traces {
        if spans.iter().all(|f| f.role == genai::Role::Other) {
            continue;
        }
        let n = genai::evaluate(&spans, &pricing);
        let counted: std::collections::HashSet<u64> = n.usage.iter().map(|u| u.span_id).collect();
        let mut mark = |id: u64, at: &genai::Attribution| {
            let m: &mut AgentMarks = out.entry((t, id)).or_default();
            m.agent = at.agent.clone();
            m.session = at.session.clone();
        };
        for c in &n.calls {
            mark(c.span_id, &c.at);
        }
        for i in &n.invocations {
            mark(i.span_id, &i.at);
        }
        for x in n.tools.iter().chain(&n.retrievals) {
            mark(x.span_id, &x.at);
        }
        for u in &n.usage {
            mark(u.span_id, &u.at);
        }
        for f in &spans {
            let reports = f.usage.any()
                && matches!(
                    f.role,
                    genai::Role::Inference | genai::Role::Agent | genai::Role::Rollup
                );
            if reports {
                out.entry((t, f.span_id)).or_default().counted = Some(counted.contains(&f.span_id));
            }
        }
    }
    out
}

/// Converts one span with what the agent-trace model says of it.
pub fn span_to_document_with(
    span: &Span,
    resource: Option<&Resource>,
    opts: &Options,
    marks: Option<&AgentMarks>,
) -> Result<Document, XrayError> {
    let seg = build(span, resource, opts, marks)?;
    Ok(finish(&seg, opts.max_document_bytes))
}

fn build<'a>(
    span: &'a Span,
    resource: Option<&'a Resource>,
    opts: &'a Options,
    marks: Option<&'a AgentMarks>,
) -> Result<Seg<'a>, XrayError> {
    let (trace_id, id, parent_id) = ids(span)?;
    let kind = SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified);
    let subsegment = parent_id.is_some() && !matches!(kind, SpanKind::Server | SpanKind::Consumer);
    let is_segment = !subsegment;
    let res: &[KeyValue] = resource.map(|r| r.attributes.as_slice()).unwrap_or(&[]);
    let attrs = span.attributes.as_slice();

    // One pass: structured fields, and the category of each attribute.
    let mut scan = Scan::new(attrs.len());
    for (i, kv) in attrs.iter().enumerate() {
        scan.cats[i] = scan.attribute(&kv.key, value(kv));
    }

    let is_sql = scan.db_system.is_some_and(is_sql_system);
    let http_out = scan.has_http.then(|| {
        let mut http = std::mem::take(&mut scan.http);
        http.url = scan.url.build(kind == SpanKind::Server);
        http
    });
    let platform = as_str(find(res, "cloud.platform"));
    let aws_out = aws_block(&mut scan, res, platform, opts);
    let sql = is_sql.then(|| scan.sql(span));
    let is_status_error = span
        .status
        .as_ref()
        .is_some_and(|s| s.code == StatusCode::Error as i32);
    let (error, fault, throttle) = error_flags(http_out.as_ref(), is_status_error);
    let exceptions = exceptions(span, res, kind, is_status_error);
    let name = segment_name(
        span,
        attrs,
        res,
        kind,
        is_segment,
        scan.db_system,
        scan.db_name,
        &scan.url,
    );
    let namespace = subsegment
        .then(|| namespace(attrs, kind, http_out.is_some() || is_sql))
        .flatten();
    let origin = if is_segment {
        origin(platform, res)
    } else {
        None
    };

    let consumed: Vec<bool> = scan
        .cats
        .iter()
        .map(|c| match *c {
            CAT_HTTP => http_out.is_some(),
            CAT_AWS => aws_out.is_some(),
            CAT_SQL => is_sql,
            CAT_ALWAYS => true,
            _ => false,
        })
        .collect();
    let (annotations, annotated) =
        annotations(attrs, &consumed, scan.xray_annotations, opts, marks);
    let metadata = metadata(span, res, &consumed, &annotated, is_segment);

    Ok(Seg {
        span,
        trace_id,
        id,
        parent_id,
        name,
        subsegment,
        namespace,
        origin,
        user: scan.user,
        error,
        fault,
        throttle,
        in_progress: scan.in_progress || span.end_time_unix_nano == 0,
        http: http_out,
        aws: aws_out,
        sql,
        exceptions,
        annotations,
        metadata,
    })
}

/// The span's X-Ray trace id, its id and its parent's (`None` for a root),
/// or why the span cannot become a document.
fn ids(span: &Span) -> Result<(String, String, Option<String>), XrayError> {
    let trace_id = xray_trace_id(&span.trace_id).ok_or_else(|| XrayError::TraceId {
        span: span.name.clone(),
        len: span.trace_id.len(),
    })?;
    if span.span_id.len() != 8 || span.span_id.iter().all(|b| *b == 0) {
        return Err(XrayError::SpanId {
            span: span.name.clone(),
            len: span.span_id.len(),
        });
    }
    let has_parent = match span.parent_span_id.len() {
        0 => false,
        8 => span.parent_span_id.iter().any(|b| *b != 0),
        len => {
            return Err(XrayError::ParentId {
                span: span.name.clone(),
                len,
            })
        }
    };
    if span.start_time_unix_nano == 0 {
        return Err(XrayError::NoStartTime {
            span: span.name.clone(),
        });
    }
    let hex = |b: &[u8]| {
        let mut s = String::with_capacity(16);
        json::push_hex(&mut s, b);
        s
    };
    Ok((
        trace_id,
        hex(&span.span_id),
        has_parent.then(|| hex(&span.parent_span_id)),
    ))
}

/// What one pass over a span's attributes found: the structured blocks'
/// fields, and each attribute's category (which block it feeds).
#[derive(Default)]
struct Scan<'a> {
    cats: Vec<u8>,
    http: Http<'a>,
    has_http: bool,
    url: UrlParts<'a>,
    aws: Aws<'a>,
    db_system: Option<&'a str>,
    db_name: Option<&'a str>,
    db_statement: Option<&'a str>,
    db_user: Option<&'a str>,
    db_conn: Option<&'a str>,
    user: Option<&'a str>,
    in_progress: bool,
    rpc_method: Option<&'a str>,
    xray_annotations: Option<&'a [AnyValue]>,
}

impl<'a> Scan<'a> {
    fn new(attributes: usize) -> Scan<'a> {
        Scan {
            cats: vec![CAT_NONE; attributes],
            ..Scan::default()
        }
    }

    /// Takes one attribute; returns its category.
    fn attribute(&mut self, key: &str, v: Option<&'a any_value::Value>) -> u8 {
        match key {
            "http.method" | "http.request.method" => {
                self.http.method = as_str(v);
                self.has_http = true;
                CAT_HTTP
            }
            "http.status_code" | "http.response.status_code" => {
                self.http.status = as_int(v);
                self.has_http = true;
                CAT_HTTP
            }
            "http.url" | "url.full" => {
                self.url.full = as_str(v);
                self.has_http = true;
                CAT_HTTP
            }
            "http.scheme" | "url.scheme" => {
                self.url.scheme = as_str(v);
                CAT_HTTP
            }
            "http.host" => {
                self.url.host = as_str(v);
                CAT_HTTP
            }
            "server.address" | "http.server_name" | "net.host.name" => {
                self.url.server = self.url.server.or(as_str(v));
                CAT_HTTP
            }
            "net.peer.name" => {
                self.url.peer = as_str(v);
                CAT_HTTP
            }
            "net.peer.ip" | "network.peer.address" => {
                self.url.peer_ip = as_str(v);
                CAT_HTTP
            }
            "server.port" | "net.peer.port" | "net.host.port" => {
                self.url.port = as_int(v);
                CAT_HTTP
            }
            "http.target" => {
                self.url.target = as_str(v);
                CAT_HTTP
            }
            "url.path" => {
                self.url.path = as_str(v);
                CAT_HTTP
            }
            "url.query" => {
                self.url.query = as_str(v);
                CAT_HTTP
            }
            "http.user_agent" | "user_agent.original" => {
                self.http.user_agent = as_str(v);
                CAT_HTTP
            }
            "http.client_ip" | "client.address" => {
                self.http.client_ip = as_str(v);
                self.http.x_forwarded_for = true;
                CAT_HTTP
            }
            "http.response_content_length" | "http.response.body.size" => {
                self.http.content_length = as_int(v);
                CAT_HTTP
            }
            "aws.operation" => {
                self.aws.operation = as_str(v);
                CAT_AWS
            }
            "rpc.method" => {
                self.rpc_method = as_str(v);
                CAT_NONE
            }
            "aws.account_id" => {
                self.aws.account_id = as_str(v);
                CAT_AWS
            }
            "aws.region" => {
                self.aws.region = as_str(v);
                CAT_AWS
            }
            "aws.request_id" | "aws.requestId" => {
                self.aws.request_id = as_str(v);
                CAT_AWS
            }
            "aws.queue_url" | "aws.queue.url" | "aws.sqs.queue_url" => {
                self.aws.queue_url = as_str(v);
                CAT_AWS
            }
            "aws.table_name" | "aws.table.name" => {
                self.aws.table_name = as_str(v);
                CAT_AWS
            }
            "aws.dynamodb.table_names" => {
                match v {
                    Some(any_value::Value::ArrayValue(a)) => {
                        self.aws.table_names = a
                            .values
                            .iter()
                            .filter_map(|v| as_str(v.value.as_ref()))
                            .collect()
                    }
                    other => self.aws.table_name = as_str(other),
                }
                CAT_AWS
            }
            "db.system" | "db.system.name" => {
                self.db_system = as_str(v);
                CAT_SQL
            }
            "db.name" | "db.namespace" => {
                self.db_name = as_str(v);
                CAT_SQL
            }
            "db.statement" | "db.query.text" => {
                self.db_statement = as_str(v);
                CAT_SQL
            }
            "db.user" => {
                self.db_user = as_str(v);
                CAT_SQL
            }
            "db.connection_string" => {
                self.db_conn = as_str(v);
                CAT_SQL
            }
            "enduser.id" => {
                self.user = as_str(v);
                CAT_ALWAYS
            }
            "aws.xray.inprogress" => {
                self.in_progress = matches!(v, Some(any_value::Value::BoolValue(true)));
                CAT_ALWAYS
            }
            "aws.xray.annotations" => {
                if let Some(any_value::Value::ArrayValue(a)) = v {
                    self.xray_annotations = Some(&a.values);
                }
                CAT_ALWAYS
            }
            _ => CAT_NONE,
        }
    }

    /// The `sql` block of a SQL database span.
    fn sql(&self, span: &'a Span) -> Sql<'a> {
        let conn = format!(
            "{}/{}",
            self.db_conn.unwrap_or("localhost"),
            self.db_name.unwrap_or_default()
        );
        Sql {
            url: &span.name,
            connection_string: conn,
            database_type: self.db_system.unwrap_or_default(),
            user: self.db_user,
            sanitized_query: self.db_statement,
        }
    }
}

/// `aws`: from the resource and the span's aws.* attributes, for AWS (or
/// unknown) clouds.
fn aws_block<'a>(
    scan: &mut Scan<'a>,
    res: &'a [KeyValue],
    platform: Option<&'a str>,
    opts: &'a Options,
) -> Option<Aws<'a>> {
    let cloud_provider = as_str(find(res, "cloud.provider"));
    if cloud_provider.is_some_and(|p| p != "aws") {
        return None;
    }
    let mut aws = std::mem::take(&mut scan.aws);
    aws.operation = aws.operation.or(scan.rpc_method);
    fill_aws_from_resource(&mut aws, res, platform, &opts.log_groups);
    Some(aws)
}

/// `error`, `fault`, `throttle`: from the HTTP status, else the span status.
fn error_flags(http: Option<&Http<'_>>, is_status_error: bool) -> (bool, bool, bool) {
    match http.and_then(|h| h.status) {
        Some(c) if (400..500).contains(&c) => (true, false, c == 429),
        Some(c) if (500..600).contains(&c) => (false, true, false),
        _ => (false, is_status_error, false),
    }
}

/// A subsegment's namespace: `aws` for AWS SDK calls, `remote` for other
/// outgoing calls.
fn namespace(attrs: &[KeyValue], kind: SpanKind, remote_block: bool) -> Option<&'static str> {
    if find(attrs, "rpc.system").and_then(|v| as_str(Some(v))) == Some("aws-api")
        || find(attrs, "aws.service").is_some()
    {
        Some("aws")
    } else if matches!(kind, SpanKind::Client | SpanKind::Producer) || remote_block {
        Some("remote")
    } else {
        None
    }
}

/// Annotations, in priority order (loop-guard mark, agent defaults,
/// `aws.xray.annotations`, `indexed_attributes`, then all), and which
/// attributes became one.
fn annotations<'a>(
    attrs: &'a [KeyValue],
    consumed: &[bool],
    xray_annotations: Option<&'a [AnyValue]>,
    opts: &Options,
    marks: Option<&'a AgentMarks>,
) -> (Vec<(String, Ann<'a>)>, Vec<bool>) {
    let mut annotations: Vec<(String, Ann<'a>)> = Vec::new();
    if opts.mark_exported {
        annotations.push((LOOP_MARKER.to_string(), Ann::Bool(true)));
    }
    let has = |k: &str| attrs.iter().any(|kv| kv.key == k);
    if let Some(m) = marks {
        if let Some(c) = m.counted {
            annotations.push(("gen_ai_usage_counted".into(), Ann::Bool(c)));
        }
        if let (Some(a), false) = (m.agent.as_deref(), has("gen_ai.agent.name")) {
            annotations.push(("gen_ai_agent_name".into(), Ann::Str(a)));
        }
        let named = has("session.id") || has("gen_ai.conversation.id");
        if let (Some(sid), false) = (m.session.as_deref(), named) {
            annotations.push(("session_id".into(), Ann::Str(sid)));
        }
    }
    // A usage report that does not count (the model counts another span's
    // report of the same call) is metadata, not an annotation.
    let uncounted = marks.is_some_and(|m| m.counted == Some(false));
    let mut annotated = vec![false; attrs.len()];
    let mut candidates: Vec<(u8, usize)> = Vec::new();
    for (i, kv) in attrs.iter().enumerate() {
        if consumed[i] {
            continue;
        }
        let k = kv.key.as_str();
        let prio = if opts.agent_annotations
            && (k.starts_with("gen_ai.") || k == "session.id")
            && AGENT_ANNOTATIONS.contains(&k)
            && !(uncounted && k.starts_with("gen_ai.usage."))
        {
            0
        } else if xray_annotations
            .is_some_and(|l| l.iter().any(|v| as_str(v.value.as_ref()) == Some(k)))
        {
            1
        } else if opts.indexed_attributes.iter().any(|x| x == k) {
            2
        } else if opts.index_all_attributes {
            3
        } else {
            continue;
        };
        candidates.push((prio, i));
    }
    candidates.sort_by_key(|c| c.0);
    for (_, i) in candidates {
        if annotations.len() >= MAX_ANNOTATIONS {
            break;
        }
        let Some(v) = annotation_value(value(&attrs[i])) else {
            continue;
        };
        let key = annotation_key(&attrs[i].key);
        if key.is_empty() || annotations.iter().any(|(k, _)| *k == key) {
            continue;
        }
        let v = match v {
            Ann::Str(s) => Ann::Str(cut_chars(s, MAX_ANNOTATION_VALUE_CHARS)),
            other => other,
        };
        annotations.push((key, v));
        annotated[i] = true;
    }
    (annotations, annotated)
}

/// Metadata: the attributes no block or annotation took, the resource (on
/// segments), events other than exceptions, and links.
fn metadata<'a>(
    span: &'a Span,
    res: &'a [KeyValue],
    consumed: &[bool],
    annotated: &[bool],
    is_segment: bool,
) -> Vec<Meta<'a>> {
    let attrs = &span.attributes;
    let mut metadata: Vec<Meta<'a>> = Vec::with_capacity(attrs.len() + 2);
    for (i, kv) in attrs.iter().enumerate() {
        if !consumed[i] && !annotated[i] {
            metadata.push(Meta::Attr(kv));
        }
    }
    if is_segment {
        metadata.extend(res.iter().map(Meta::Resource));
    }
    let events: Vec<_> = span
        .events
        .iter()
        .filter(|e| e.name != "exception")
        .collect();
    if !events.is_empty() {
        metadata.push(Meta::Events(events));
    }
    if !span.links.is_empty() {
        metadata.push(Meta::Links(&span.links));
    }
    metadata
}

fn cut_chars(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn is_sql_system(system: &str) -> bool {
    matches!(
        system,
        "db2"
            | "derby"
            | "hive"
            | "mariadb"
            | "mssql"
            | "mysql"
            | "oracle"
            | "postgresql"
            | "sqlite"
            | "teradata"
            | "other_sql"
            | "h2"
            | "hsqldb"
            | "cockroachdb"
            | "redshift"
            | "trino"
            | "clickhouse"
            | "spanner"
            | "microsoft.sql_server"
            | "oracle.db"
            | "ibm.db2"
    )
}

#[derive(Default)]
struct UrlParts<'a> {
    full: Option<&'a str>,
    scheme: Option<&'a str>,
    host: Option<&'a str>,
    server: Option<&'a str>,
    peer: Option<&'a str>,
    peer_ip: Option<&'a str>,
    port: Option<i64>,
    target: Option<&'a str>,
    path: Option<&'a str>,
    query: Option<&'a str>,
}

impl UrlParts<'_> {
    /// The request URL: `url.full`/`http.url`, else assembled from its parts.
    fn build(&self, server: bool) -> Option<String> {
        if let Some(f) = self.full {
            return Some(f.to_string());
        }
        let host = if server {
            self.host.or(self.server)
        } else {
            self.host.or(self.server).or(self.peer).or(self.peer_ip)
        }?;
        let scheme = self.scheme.unwrap_or("http");
        let mut url = format!("{scheme}://{host}");
        if let Some(p) = self.port {
            if self.host.is_none()
                && !(scheme == "http" && p == 80)
                && !(scheme == "https" && p == 443)
            {
                url.push_str(&format!(":{p}"));
            }
        }
        match (self.target, self.path) {
            (Some(t), _) => url.push_str(t),
            (None, Some(p)) => {
                url.push_str(p);
                if let Some(q) = self.query {
                    url.push('?');
                    url.push_str(q);
                }
            }
            (None, None) => url.push('/'),
        }
        Some(url)
    }
}

#[allow(clippy::too_many_arguments)]
fn segment_name(
    span: &Span,
    attrs: &[KeyValue],
    res: &[KeyValue],
    kind: SpanKind,
    is_segment: bool,
    db_system: Option<&str>,
    db_name: Option<&str>,
    url: &UrlParts<'_>,
) -> String {
    let attr = |k: &str| as_str(find(attrs, k));
    let local_root = attr("aws.span.kind") == Some("LOCAL_ROOT");
    let mut candidates: [Option<std::borrow::Cow<'_, str>>; 10] = Default::default();
    if kind == SpanKind::Server || local_root {
        candidates[0] = attr("aws.local.service").map(Into::into);
    }
    if matches!(
        kind,
        SpanKind::Client | SpanKind::Producer | SpanKind::Consumer
    ) {
        candidates[1] = attr("aws.remote.service").map(Into::into);
    }
    candidates[2] = attr("peer.service").map(Into::into);
    candidates[3] = attr("aws.service").map(Into::into);
    if attr("rpc.system") == Some("aws-api") {
        candidates[4] = attr("rpc.service").map(Into::into);
    }
    if let (Some(_), Some(name)) = (db_system, db_name) {
        candidates[5] = Some(match url.server.or(url.peer) {
            Some(host) => format!("{name}@{host}").into(),
            None => name.into(),
        });
    }
    if is_segment {
        candidates[6] = as_str(find(res, "service.name")).map(Into::into);
    }
    candidates[7] = attr("rpc.service").map(Into::into);
    candidates[8] = url.host.or(url.peer).map(Into::into);
    candidates[9] = Some(span.name.as_str().into());
    candidates
        .iter()
        .flatten()
        .find_map(|c| sanitize_name(c))
        .unwrap_or_else(|| "span".to_string())
}

fn origin(platform: Option<&str>, res: &[KeyValue]) -> Option<&'static str> {
    Some(match platform? {
        "aws_ec2" => "AWS::EC2::Instance",
        "aws_ecs" => match as_str(find(res, "aws.ecs.launchtype")) {
            Some("ec2") => "AWS::ECS::EC2",
            Some("fargate") => "AWS::ECS::Fargate",
            _ => "AWS::ECS::Container",
        },
        "aws_eks" => "AWS::EKS::Container",
        "aws_elastic_beanstalk" => "AWS::ElasticBeanstalk::Environment",
        "aws_lambda" => "AWS::Lambda::Function",
        "aws_app_runner" => "AWS::AppRunner::Service",
        _ => return None,
    })
}

fn fill_aws_from_resource<'a>(
    aws: &mut Aws<'a>,
    res: &'a [KeyValue],
    platform: Option<&'a str>,
    config_log_groups: &'a [String],
) {
    let r = |k: &str| as_str(find(res, k));
    aws.account_id = aws.account_id.or(r("cloud.account.id"));
    let (sdk, lang) = (r("telemetry.sdk.name"), r("telemetry.sdk.language"));
    aws.sdk = match (sdk, lang) {
        (Some(s), Some(l)) => Some(format!("{s} for {l}")),
        (Some(s), None) => Some(s.to_string()),
        _ => None,
    };
    aws.sdk_version = r("telemetry.sdk.version");
    aws.auto_instrumentation =
        r("telemetry.auto.version").is_some() || r("telemetry.distro.version").is_some();
    let host_id = r("host.id");
    if platform == Some("aws_ec2") || host_id.is_some() {
        aws.ec2 = Some([
            host_id,
            r("cloud.availability_zone"),
            r("host.type"),
            r("host.image.id"),
        ]);
    }
    if platform == Some("aws_ecs") {
        aws.ecs = Some([
            r("container.name"),
            r("container.id"),
            r("cloud.availability_zone"),
        ]);
    }
    let cluster = r("k8s.cluster.name");
    if platform == Some("aws_eks") || cluster.is_some() {
        aws.eks = Some([cluster, r("k8s.pod.name"), r("container.id")]);
    }
    let list = |k: &str| -> Vec<&'a str> {
        match find(res, k) {
            Some(any_value::Value::StringValue(s)) => {
                s.split('&').filter(|s| !s.is_empty()).collect()
            }
            Some(any_value::Value::ArrayValue(a)) => a
                .values
                .iter()
                .filter_map(|v| as_str(v.value.as_ref()))
                .collect(),
            _ => Vec::new(),
        }
    };
    let arns = list("aws.log.group.arns");
    if !arns.is_empty() {
        aws.log_groups = arns
            .into_iter()
            .map(|arn| (arn.split(':').nth(6).unwrap_or(arn), Some(arn)))
            .collect();
    } else {
        let names = list("aws.log.group.names");
        aws.log_groups = if names.is_empty() {
            config_log_groups
                .iter()
                .map(|n| (n.as_str(), None))
                .collect()
        } else {
            names.into_iter().map(|n| (n, None)).collect()
        };
    }
}

fn exceptions<'a>(
    span: &'a Span,
    res: &'a [KeyValue],
    kind: SpanKind,
    is_status_error: bool,
) -> Vec<Exception<'a>> {
    let remote = matches!(kind, SpanKind::Client | SpanKind::Producer);
    let language = as_str(find(res, "telemetry.sdk.language")).unwrap_or("");
    let mut out = Vec::new();
    let mut n = 0usize;
    for e in span.events.iter().filter(|e| e.name == "exception") {
        let a = |k: &str| as_str(find(&e.attributes, k));
        let first = Exception {
            id: cause::exception_id(&span.span_id, n),
            kind: a("exception.type").unwrap_or(""),
            message: a("exception.message").unwrap_or(""),
            remote,
            stack: Vec::new(),
            cause: None,
        };
        n += 1;
        match a("exception.stacktrace") {
            Some(trace) => out.extend(cause::parse_stack(
                language,
                trace,
                &span.span_id,
                first,
                &mut n,
            )),
            None => out.push(first),
        }
    }
    if out.is_empty() && is_status_error {
        let message = span
            .status
            .as_ref()
            .map(|s| s.message.as_str())
            .unwrap_or("");
        let message = if message.is_empty() {
            as_str(find(&span.attributes, "http.status_text")).unwrap_or("")
        } else {
            message
        };
        if !message.is_empty() {
            out.push(Exception {
                id: cause::exception_id(&span.span_id, 0),
                kind: as_str(find(&span.attributes, "error.type")).unwrap_or(""),
                message,
                remote,
                stack: Vec::new(),
                cause: None,
            });
        }
    }
    out
}

/// What to leave out of a rendering, to fit the size limit.
struct Fit<'d> {
    max_str: usize,
    dropped_meta: &'d [bool],
    stacks: bool,
    exceptions: bool,
    metadata: bool,
    /// Say in `metadata.spanwire` what was left out.
    note: bool,
}

fn finish(seg: &Seg<'_>, limit: usize) -> Document {
    let mut json = String::with_capacity(512 + 64 * seg.metadata.len());
    let full = Fit {
        max_str: usize::MAX,
        dropped_meta: &[],
        stacks: true,
        exceptions: true,
        metadata: true,
        note: false,
    };
    render(seg, &full, &mut json);
    if json.len() <= limit {
        return document(seg, json, false);
    }

    // 1. Drop metadata entries, largest first.
    let mut sizes: Vec<(usize, usize)> = seg
        .metadata
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut s = String::new();
            let mut w = Writer::new(&mut s, usize::MAX);
            w.begin_object();
            render_meta(&mut w, m);
            w.end_object();
            (s.len(), i)
        })
        .collect();
    sizes.sort_by(|a, b| b.cmp(a));
    let mut dropped = vec![false; seg.metadata.len()];
    let mut size = json.len();
    // Room for the note naming what was dropped.
    let note_room = 200;
    for (len, i) in &sizes {
        if size + note_room <= limit {
            break;
        }
        dropped[*i] = true;
        size = size.saturating_sub(*len) + meta_key(&seg.metadata[*i]).len() + 3;
    }
    let mut fit = Fit {
        dropped_meta: &dropped,
        note: true,
        ..full
    };
    for max_str in [usize::MAX, 4096, 1024, 256, 64] {
        fit.max_str = max_str;
        json.clear();
        render(seg, &fit, &mut json);
        if json.len() <= limit {
            return document(seg, json, true);
        }
    }
    // 2. Stacks, then exceptions, then the rest of the metadata.
    fit.stacks = false;
    for step in 0..3 {
        match step {
            0 => {}
            1 => fit.exceptions = false,
            _ => fit.metadata = false,
        }
        json.clear();
        render(seg, &fit, &mut json);
        if json.len() <= limit {
            return document(seg, json, true);
        }
    }
    // Ids, name (≤ 200 characters), times and flags always fit.
    document(seg, json, true)
}

fn document(seg: &Seg<'_>, json: String, truncated: bool) -> Document {
    Document {
        id: seg.id.clone(),
        trace_id: seg.trace_id.clone(),
        json,
        truncated,
    }
}

fn meta_key<'m>(m: &'m Meta<'_>) -> std::borrow::Cow<'m, str> {
    match m {
        Meta::Attr(kv) => kv.key.as_str().into(),
        Meta::Resource(kv) => format!("otel.resource.{}", kv.key).into(),
        Meta::Events(_) => "otel.events".into(),
        Meta::Links(_) => "otel.links".into(),
    }
}

fn render_meta(w: &mut Writer<'_>, m: &Meta<'_>) {
    w.key(&meta_key(m));
    match m {
        Meta::Attr(kv) | Meta::Resource(kv) => w.any_value(kv.value.as_ref()),
        Meta::Events(events) => {
            w.begin_array();
            for e in events {
                w.elem();
                w.begin_object();
                w.str_field("name", &e.name);
                w.time_field("timestamp", e.time_unix_nano);
                if !e.attributes.is_empty() {
                    w.key("attributes");
                    w.begin_object();
                    for kv in &e.attributes {
                        w.key(&kv.key);
                        w.any_value(kv.value.as_ref());
                    }
                    w.end_object();
                }
                w.end_object();
            }
            w.end_array();
        }
        Meta::Links(links) => {
            w.begin_array();
            for l in links.iter() {
                w.elem();
                w.begin_object();
                if let Some(t) = xray_trace_id(&l.trace_id) {
                    w.str_field("trace_id", &t);
                }
                let mut id = String::with_capacity(16);
                json::push_hex(&mut id, &l.span_id);
                w.str_field("id", &id);
                if !l.attributes.is_empty() {
                    w.key("attributes");
                    w.begin_object();
                    for kv in &l.attributes {
                        w.key(&kv.key);
                        w.any_value(kv.value.as_ref());
                    }
                    w.end_object();
                }
                w.end_object();
            }
            w.end_array();
        }
    }
}

fn render(seg: &Seg<'_>, fit: &Fit<'_>, out: &mut String) {
    let mut w = Writer::new(out, fit.max_str);
    w.begin_object();
    // Names are already ≤ 200 characters; never cut them further.
    w.key("name");
    json::escape(w.out, &seg.name);
    w.str_field("id", &seg.id);
    w.str_field("trace_id", &seg.trace_id);
    w.time_field("start_time", seg.span.start_time_unix_nano);
    if seg.in_progress {
        w.bool_field("in_progress", true);
    } else {
        w.time_field("end_time", seg.span.end_time_unix_nano);
    }
    if seg.subsegment {
        w.str_field("type", "subsegment");
    }
    if let Some(p) = &seg.parent_id {
        w.str_field("parent_id", p);
    }
    if let Some(ns) = seg.namespace {
        w.str_field("namespace", ns);
    }
    if let Some(o) = seg.origin {
        w.str_field("origin", o);
    }
    w.opt_str_field("user", seg.user);
    if seg.error {
        w.bool_field("error", true);
    }
    if seg.fault {
        w.bool_field("fault", true);
    }
    if seg.throttle {
        w.bool_field("throttle", true);
    }
    if let Some(h) = &seg.http {
        render_http(&mut w, h);
    }
    if let Some(a) = &seg.aws {
        render_aws(&mut w, a);
    }
    if let Some(s) = &seg.sql {
        render_sql(&mut w, s);
    }
    if fit.exceptions && !seg.exceptions.is_empty() {
        render_cause(&mut w, &seg.exceptions, fit.stacks);
    }
    if !seg.annotations.is_empty() {
        render_annotations(&mut w, &seg.annotations);
    }
    render_metadata(&mut w, seg, fit);
    w.end_object();
}

fn render_sql(w: &mut Writer<'_>, s: &Sql<'_>) {
    w.key("sql");
    w.begin_object();
    w.str_field("url", s.url);
    w.str_field("connection_string", &s.connection_string);
    w.str_field("database_type", s.database_type);
    w.opt_str_field("user", s.user);
    w.opt_str_field("sanitized_query", s.sanitized_query);
    w.end_object();
}

fn render_cause(w: &mut Writer<'_>, exceptions: &[Exception<'_>], stacks: bool) {
    w.key("cause");
    w.begin_object();
    w.key("exceptions");
    w.begin_array();
    for e in exceptions {
        w.elem();
        w.begin_object();
        w.str_field("id", &e.id);
        if !e.kind.is_empty() {
            w.str_field("type", e.kind);
        }
        w.str_field("message", e.message);
        if e.remote {
            w.bool_field("remote", true);
        }
        if let Some(c) = &e.cause {
            w.str_field("cause", c);
        }
        if stacks && !e.stack.is_empty() {
            w.key("stack");
            w.begin_array();
            for f in &e.stack {
                w.elem();
                w.begin_object();
                w.str_field("path", f.path);
                w.int_field("line", f.line);
                w.str_field("label", f.label);
                w.end_object();
            }
            w.end_array();
        } else if !e.stack.is_empty() {
            w.int_field("truncated", e.stack.len() as i64);
        }
        w.end_object();
    }
    w.end_array();
    w.end_object();
}

fn render_annotations(w: &mut Writer<'_>, annotations: &[(String, Ann<'_>)]) {
    w.key("annotations");
    w.begin_object();
    for (k, v) in annotations {
        w.key(k);
        match v {
            Ann::Str(s) => w.str_value(s),
            Ann::Int(i) => w.out.push_str(&i.to_string()),
            Ann::F64(f) => w.f64_value(*f),
            Ann::Bool(b) => w.out.push_str(if *b { "true" } else { "false" }),
        }
    }
    w.end_object();
}

/// `metadata.default` (what the fitting kept) and `metadata.spanwire` (what
/// it left out, when it left out anything).
fn render_metadata(w: &mut Writer<'_>, seg: &Seg<'_>, fit: &Fit<'_>) {
    let any_meta = fit.metadata
        && seg
            .metadata
            .iter()
            .enumerate()
            .any(|(i, _)| !fit.dropped_meta.get(i).copied().unwrap_or(false));
    let truncated = fit.note;
    if any_meta || truncated {
        w.key("metadata");
        w.begin_object();
        if any_meta {
            w.key("default");
            w.begin_object();
            for (i, m) in seg.metadata.iter().enumerate() {
                if !fit.dropped_meta.get(i).copied().unwrap_or(false) {
                    render_meta(w, m);
                }
            }
            w.end_object();
        }
        if truncated {
            let cut = w.cut;
            w.key("spanwire");
            w.begin_object();
            w.bool_field("truncated", true);
            w.key("dropped_metadata");
            w.begin_array();
            let mut listed = 0;
            for (i, m) in seg.metadata.iter().enumerate() {
                let dropped = !fit.metadata || fit.dropped_meta.get(i).copied().unwrap_or(false);
                if dropped && listed < 5 {
                    w.elem();
                    json::escape(w.out, cut_chars(&meta_key(m), 30));
                    listed += 1;
                }
            }
            w.end_array();
            if cut || fit.max_str != usize::MAX {
                w.int_field("strings_cut_to", fit.max_str.min(i64::MAX as usize) as i64);
            }
            if !fit.stacks {
                w.bool_field("stacks_dropped", true);
            }
            if !fit.exceptions {
                w.bool_field("exceptions_dropped", true);
            }
            w.end_object();
        }
        w.end_object();
    }
}

fn render_http(w: &mut Writer<'_>, h: &Http<'_>) {
    w.key("http");
    w.begin_object();
    let req =
        h.method.is_some() || h.url.is_some() || h.user_agent.is_some() || h.client_ip.is_some();
    if req {
        w.key("request");
        w.begin_object();
        w.opt_str_field("method", h.method);
        w.opt_str_field("url", h.url.as_deref());
        w.opt_str_field("user_agent", h.user_agent);
        w.opt_str_field("client_ip", h.client_ip);
        if h.x_forwarded_for {
            w.bool_field("x_forwarded_for", true);
        }
        w.end_object();
    }
    if h.status.is_some() || h.content_length.is_some() {
        w.key("response");
        w.begin_object();
        if let Some(s) = h.status {
            w.int_field("status", s);
        }
        if let Some(l) = h.content_length {
            w.int_field("content_length", l);
        }
        w.end_object();
    }
    w.end_object();
}

fn render_aws(w: &mut Writer<'_>, a: &Aws<'_>) {
    let has_any = a.account_id.is_some()
        || a.operation.is_some()
        || a.region.is_some()
        || a.request_id.is_some()
        || a.queue_url.is_some()
        || a.table_name.is_some()
        || !a.table_names.is_empty()
        || a.sdk.is_some()
        || a.ec2.is_some()
        || a.ecs.is_some()
        || a.eks.is_some()
        || !a.log_groups.is_empty();
    if !has_any {
        return;
    }
    w.key("aws");
    w.begin_object();
    w.opt_str_field("account_id", a.account_id);
    w.opt_str_field("operation", a.operation);
    w.opt_str_field("region", a.region);
    w.opt_str_field("request_id", a.request_id);
    w.opt_str_field("queue_url", a.queue_url);
    w.opt_str_field("table_name", a.table_name);
    if !a.table_names.is_empty() {
        w.key("table_names");
        w.begin_array();
        for t in &a.table_names {
            w.elem();
            w.str_value(t);
        }
        w.end_array();
    }
    let obj = |w: &mut Writer<'_>, name: &str, keys: &[&str], vals: &[Option<&str>]| {
        w.key(name);
        w.begin_object();
        for (k, v) in keys.iter().zip(vals) {
            w.opt_str_field(k, *v);
        }
        w.end_object();
    };
    if let Some(v) = &a.ec2 {
        obj(
            w,
            "ec2",
            &[
                "instance_id",
                "availability_zone",
                "instance_size",
                "ami_id",
            ],
            v,
        );
    }
    if let Some(v) = &a.ecs {
        obj(
            w,
            "ecs",
            &["container", "container_id", "availability_zone"],
            v,
        );
    }
    if let Some(v) = &a.eks {
        obj(w, "eks", &["cluster_name", "pod", "container_id"], v);
    }
    if !a.log_groups.is_empty() {
        w.key("cloudwatch_logs");
        w.begin_array();
        for (name, arn) in &a.log_groups {
            w.elem();
            w.begin_object();
            w.str_field("log_group", name);
            w.opt_str_field("arn", *arn);
            w.end_object();
        }
        w.end_array();
    }
    if a.sdk.is_some() || a.sdk_version.is_some() {
        w.key("xray");
        w.begin_object();
        w.opt_str_field("sdk", a.sdk.as_deref());
        w.opt_str_field("sdk_version", a.sdk_version);
        if a.auto_instrumentation {
            w.bool_field("auto_instrumentation", true);
        }
        w.end_object();
    }
    w.end_object();
}

#[cfg(test)]
mod tests;
