//! One span read for the agent-trace model: what it is (its [`Role`]),
//! the usage it reports, and what it is attributed to. Every dialect is
//! read here and nowhere else (see the table in the module doc of
//! [`super`]).

use std::sync::Arc;

use crate::convert::otlp_view::Value;

/// What a span is, for the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A model call: `gen_ai.operation.name` `chat`, `text_completion`,
    /// `completion`, `generate_content`, `generate`, `embeddings`;
    /// OpenInference `LLM`/`EMBEDDING`; OpenLLMetry `llm.request.type`.
    Inference,
    /// An agent invocation: `invoke_agent`, `create_agent`; OpenInference
    /// `AGENT`; Traceloop `agent`.
    Agent,
    /// A span that may carry running totals of what is beneath it: an
    /// event-loop cycle, a chain, a workflow or task.
    Rollup,
    /// A tool call.
    Tool,
    /// A knowledge-base retrieval.
    Retrieval,
    /// A guardrail check.
    Guardrail,
    /// Anything else (kept only for the tree).
    Other,
}

/// Token counts one span reports, each as the span wrote it (none when the
/// span has no attribute for it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input (prompt) tokens.
    pub input: Option<u64>,
    /// Output (completion) tokens.
    pub output: Option<u64>,
    /// Input tokens read from a prompt cache.
    pub cache_read: Option<u64>,
    /// Input tokens written to a prompt cache.
    pub cache_write: Option<u64>,
}

impl Usage {
    /// Whether any count is present.
    pub fn any(&self) -> bool {
        self.input.is_some()
            || self.output.is_some()
            || self.cache_read.is_some()
            || self.cache_write.is_some()
    }
}

/// Tokens by type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Cache-read input tokens.
    pub cache_read: u64,
    /// Cache-write input tokens.
    pub cache_write: u64,
}

impl Tokens {
    /// Input plus output.
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }

    /// Adds `o`.
    pub fn add(&mut self, o: &Tokens) {
        self.input = self.input.saturating_add(o.input);
        self.output = self.output.saturating_add(o.output);
        self.cache_read = self.cache_read.saturating_add(o.cache_read);
        self.cache_write = self.cache_write.saturating_add(o.cache_write);
    }

    /// The counts by type name (`input`, `output`, `cache_read`,
    /// `cache_write`), zeros left out.
    pub fn by_type(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("input", self.input),
            ("output", self.output),
            ("cache_read", self.cache_read),
            ("cache_write", self.cache_write),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
    }
}

/// The largest token count believed: a larger one (or a negative one, a
/// string, a fraction) is refused and counted as invalid usage.
pub const MAX_TOKENS: u64 = 1 << 40;

/// Longest text kept from a span (names, messages, ids), in bytes.
pub const MAX_TEXT: usize = 256;

/// What the model keeps of one span. Strings are shared, not copied, once
/// read.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanFacts {
    /// Its span id (8 bytes, big-endian; zero-padded or cut).
    pub span_id: u64,
    /// Its parent's span id; 0 for a root.
    pub parent: u64,
    /// What it is.
    pub role: Role,
    /// Its OTLP span kind.
    pub kind: i32,
    /// Its name (cut to [`MAX_TEXT`]), kept for inference spans, errors and
    /// guardrail interventions (where it tells calls and causes apart).
    pub name: Option<Arc<str>>,
    /// Start, Unix ns.
    pub start_ns: u64,
    /// End, Unix ns (0: not ended, as an in-progress `aws/spans` copy).
    pub end_ns: u64,
    /// Status ERROR, or an `error.type`.
    pub error: bool,
    /// The error says the call was throttled (HTTP 429, `Throttling…`,
    /// `TooManyRequests`, rate exceeded).
    pub throttled: bool,
    /// `error.type` (else the status message), cut.
    pub error_type: Option<Arc<str>>,
    /// The status message, cut.
    pub message: Option<Arc<str>>,
    /// The usage it reports.
    pub usage: Usage,
    /// Usage attributes refused as invalid (strings, negatives, beyond
    /// [`MAX_TOKENS`]).
    pub invalid_usage: u32,
    /// Its usage is a running total over the agent object's life (Strands'
    /// `invoke_agent`), not this invocation's.
    pub lifetime_totals: bool,
    /// The GenAI operation name (or the dialect's equivalent).
    pub operation: Option<Arc<str>>,
    /// The model (request model, else response model).
    pub model: Option<Arc<str>>,
    /// The agent's name (or id).
    pub agent: Option<Arc<str>>,
    /// The session it names (span attributes, then resource).
    pub session: Option<Arc<str>>,
    /// Its resource's `service.name`.
    pub service: Option<Arc<str>>,
    /// The tool it calls.
    pub tool: Option<Arc<str>>,
    /// A guardrail intervened here.
    pub guardrail_intervened: bool,
    /// Retries made inside this one span (botocore's `retry_attempts`).
    pub retries: u32,
    /// Values of the attributes a consumer asked to carry (by their index
    /// in its list), as text.
    pub carried: Vec<(u8, Arc<str>)>,
}

/// What a span says of itself outside its attributes.
#[derive(Debug, Clone, Copy)]
pub struct SpanHead<'a> {
    /// Span id bytes.
    pub span_id: &'a [u8],
    /// Parent span id bytes (empty for a root).
    pub parent_span_id: &'a [u8],
    /// Name.
    pub name: &'a str,
    /// OTLP kind.
    pub kind: i32,
    /// Start, Unix ns.
    pub start_ns: u64,
    /// End, Unix ns.
    pub end_ns: u64,
    /// OTLP status code (2 = ERROR).
    pub status_code: i32,
    /// Status message.
    pub status_message: &'a str,
}

/// What a span's resource and scope say: read once per resource.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// `service.name`.
    pub service: Option<Arc<str>>,
    /// The session the resource names.
    pub session: Option<Arc<str>>,
}

impl Origin {
    /// Reads a resource's attributes: `service.name` and the first of
    /// `session_keys` it names.
    pub fn read<'a>(
        attrs: impl Iterator<Item = (&'a str, Value<'a>)>,
        session_keys: &[String],
    ) -> Origin {
        let mut o = Origin::default();
        let mut best = usize::MAX;
        for (k, v) in attrs {
            let Value::Str(s) = v else { continue };
            if s.is_empty() {
                continue;
            }
            if k == "service.name" {
                o.service = Some(text(s));
            } else if let Some(i) = session_keys.iter().position(|x| x == k) {
                if i < best {
                    best = i;
                    o.session = Some(text(s));
                }
            }
        }
        o
    }
}

/// An 8-byte id as a number (zero-padded or cut).
pub fn id64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(b)
}

/// FNV-1a: a fast hash for the model's bounded maps (ids and short texts;
/// chosen keys cost at most a full, bounded table).
#[derive(Default)]
pub struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u64(&mut self, v: u64) {
        // Span ids are random already: one multiply spreads them.
        self.0 = (self.0 ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A map keyed by ids or short texts, with a fast hash (FNV-1a for bytes,
/// one multiply for numbers): the model's maps are bounded.
pub type FastMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

type Interned = FastMap<Box<str>, Arc<str>>;

/// Texts interned per thread at most; past it the table starts afresh.
const MAX_INTERNED: usize = 4096;
/// Texts longer than this are not interned.
const MAX_INTERNED_LEN: usize = 96;

thread_local! {
    /// Names, models, agents, sessions, operations repeat span after span:
    /// each is allocated once per thread, then shared.
    static INTERNED: std::cell::RefCell<Interned> = std::cell::RefCell::new(Interned::default());
}

/// `s` cut to [`MAX_TEXT`] on a character boundary, shared.
fn text(s: &str) -> Arc<str> {
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let s = &s[..end];
    if s.len() > MAX_INTERNED_LEN {
        return Arc::from(s);
    }
    INTERNED.with(|cell| {
        let Ok(mut m) = cell.try_borrow_mut() else {
            return Arc::from(s);
        };
        if let Some(a) = m.get(s) {
            return a.clone();
        }
        if m.len() >= MAX_INTERNED {
            m.clear();
        }
        let a: Arc<str> = Arc::from(s);
        m.insert(s.into(), a.clone());
        a
    })
}

/// Which token count an attribute holds, and its rank among the names for
/// that count (lower wins when a span writes several).
fn usage_slot(key: &str) -> Option<(usize, u8)> {
    Some(match key {
        "gen_ai.usage.input_tokens" => (0, 0),
        "gen_ai.usage.prompt_tokens" => (0, 1),
        "llm.token_count.prompt" => (0, 2),
        "gen_ai.usage.output_tokens" => (1, 0),
        "gen_ai.usage.completion_tokens" => (1, 1),
        "llm.token_count.completion" => (1, 2),
        "gen_ai.usage.cache_read.input_tokens" => (2, 0),
        "gen_ai.usage.cache_read_input_tokens" => (2, 1),
        "llm.token_count.prompt_details.cache_read" => (2, 2),
        "gen_ai.usage.cache_write.input_tokens" => (3, 0),
        "gen_ai.usage.cache_creation.input_tokens" => (3, 1),
        "gen_ai.usage.cache_creation_input_tokens" => (3, 2),
        "gen_ai.usage.cache_write_input_tokens" => (3, 3),
        "llm.token_count.prompt_details.cache_write" => (3, 4),
        _ => return None,
    })
}

/// Whether an attribute is a token count the model reads (any dialect).
pub fn is_usage_attribute(key: &str) -> bool {
    usage_slot(key).is_some()
}

/// The usage one span reports, read as the model reads it (for a view of
/// that one span; totals come from [`super::evaluate`]).
pub fn usage_of<'a>(attrs: impl Iterator<Item = (&'a str, Value<'a>)>) -> Usage {
    let mut usage = [None::<(u8, u64)>; 4];
    for (k, v) in attrs {
        if let (Some((slot, rank)), Some(n)) = (usage_slot(k), token_count(&v)) {
            if usage[slot].is_none_or(|(r, _)| rank < r) {
                usage[slot] = Some((rank, n));
            }
        }
    }
    let count = |i: usize| usage[i].map(|(_, n)| n);
    Usage {
        input: count(0),
        output: count(1),
        cache_read: count(2),
        cache_write: count(3),
    }
}

/// A token count, if the value is one: a non-negative integer (or an
/// integral double) up to [`MAX_TOKENS`].
fn token_count(v: &Value<'_>) -> Option<u64> {
    match *v {
        Value::Int(i) if i >= 0 && (i as u64) <= MAX_TOKENS => Some(i as u64),
        Value::Double(d) if d >= 0.0 && d.fract() == 0.0 && d <= MAX_TOKENS as f64 => {
            Some(d as u64)
        }
        _ => None,
    }
}

fn role_of_operation(op: &str) -> Option<Role> {
    Some(match op {
        "chat" | "text_completion" | "completion" | "generate_content" | "generate"
        | "embeddings" | "embedding" => Role::Inference,
        "invoke_agent" | "create_agent" => Role::Agent,
        "execute_event_loop_cycle"
        | "agent_step"
        | "invoke_workflow"
        | "workflow"
        | "task"
        | "chain" => Role::Rollup,
        "execute_tool" | "code_interpreter" | "function" | "tool" => Role::Tool,
        "retrieval" | "retrieve" | "retriever" => Role::Retrieval,
        "guardrail" | "apply_guardrail" => Role::Guardrail,
        _ => return None,
    })
}

/// Whether an error text names throttling.
pub fn names_throttling(t: &str) -> bool {
    let t = t.to_ascii_lowercase();
    t.contains("throttl")
        || t.contains("toomanyrequests")
        || t.contains("too many requests")
        || t.contains("rate exceeded")
        || t.contains("ratelimit")
        || t.contains("rate_limit")
}

/// Reads one span: `head` and its attributes, its resource's [`Origin`],
/// and the attribute keys that name a session, in order of preference.
pub fn read<'a>(
    head: &SpanHead<'_>,
    attrs: impl Iterator<Item = (&'a str, Value<'a>)>,
    origin: &Origin,
    keys: &Keys,
) -> SpanFacts {
    let session_keys = &keys.session;
    let mut carried: Vec<(u8, Arc<str>)> = Vec::new();
    let mut usage = [None::<(u8, u64)>; 4];
    let mut invalid = 0u32;
    let (mut op, mut oi_kind, mut tl_kind, mut llm_type) = (None, None, None, None);
    let (mut request_model, mut response_model, mut oi_model) = (None, None, None);
    let (mut agent, mut agent_id, mut tool, mut provider) = (None, None, None, None);
    let (mut session, mut session_rank) = (None, usize::MAX);
    let (mut error_type, mut http_status) = (None, None::<i64>);
    let (mut guardrail, mut guardrail_named, mut retries) = (false, false, 0u32);
    let mut entity = None;
    for (k, v) in attrs {
        if !keys.carry.is_empty() {
            if let Some(i) = keys.carry.iter().position(|c| c == k) {
                if let Some(t) = scalar_text(&v) {
                    carried.push((i as u8, text(&t)));
                }
            }
        }
        if let Some((slot, rank)) = usage_slot(k) {
            match token_count(&v) {
                Some(n) => {
                    if usage[slot].is_none_or(|(r, _)| rank < r) {
                        usage[slot] = Some((rank, n));
                    }
                }
                None => invalid += 1,
            }
            continue;
        }
        let s = match v {
            Value::Str(s) if !s.is_empty() => Some(s),
            _ => None,
        };
        match k {
            "gen_ai.operation.name" => op = s,
            "openinference.span.kind" => oi_kind = s,
            "traceloop.span.kind" => tl_kind = s,
            "llm.request.type" => llm_type = s,
            "gen_ai.request.model" => request_model = s,
            "gen_ai.response.model" => response_model = s,
            "llm.model_name" | "llm.request.model" => oi_model = oi_model.or(s),
            "gen_ai.agent.name" => agent = s,
            "gen_ai.agent.id" => agent_id = s,
            "traceloop.entity.name" => entity = s,
            "gen_ai.tool.name" | "tool.name" => tool = tool.or(s),
            "gen_ai.provider.name" | "gen_ai.system" | "llm.provider" | "llm.system" => {
                provider = provider.or(s)
            }
            "error.type" => error_type = s.or(Some("_OTHER")),
            "http.response.status_code" | "http.status_code" => {
                http_status = match v {
                    Value::Int(i) => Some(i),
                    Value::Str(t) => t.parse().ok(),
                    _ => http_status,
                }
            }
            "aws.bedrock.guardrail.action" => {
                guardrail_named = true;
                guardrail |= s.is_some_and(|a| a != "NONE");
            }
            "retry_attempts" => {
                if let Value::Int(i) = v {
                    retries = i.clamp(0, 100) as u32;
                }
            }
            _ => {
                if let (Some(s), Some(i)) = (s, session_keys.iter().position(|x| x == k)) {
                    if i < session_rank {
                        session_rank = i;
                        session = Some(s);
                    }
                }
            }
        }
    }
    let role = op
        .and_then(role_of_operation)
        .or_else(|| {
            oi_kind.and_then(|k| {
                Some(match k {
                    "LLM" | "EMBEDDING" => Role::Inference,
                    "AGENT" => Role::Agent,
                    "CHAIN" => Role::Rollup,
                    "TOOL" => Role::Tool,
                    "RETRIEVER" => Role::Retrieval,
                    "GUARDRAIL" => Role::Guardrail,
                    _ => return None,
                })
            })
        })
        .or_else(|| llm_type.map(|_| Role::Inference))
        .or_else(|| {
            tl_kind.and_then(|k| {
                Some(match k {
                    "agent" => Role::Agent,
                    "workflow" | "task" => Role::Rollup,
                    "tool" => Role::Tool,
                    _ => return None,
                })
            })
        })
        .or_else(|| {
            // Older instrumentations name only the system: a tool call if
            // it names a tool, a model call if it names a model or usage.
            provider.and_then(|_| {
                if tool.is_some() {
                    Some(Role::Tool)
                } else if request_model.is_some() || usage.iter().any(Option::is_some) {
                    Some(Role::Inference)
                } else {
                    None
                }
            })
        })
        .or_else(|| {
            (guardrail_named || head.name.starts_with("guardrail")).then_some(Role::Guardrail)
        })
        .unwrap_or(Role::Other);
    let agent = agent.or(agent_id).or(match (role, tl_kind) {
        (Role::Agent, Some("agent")) => entity,
        _ => None,
    });
    let status_error = head.status_code == 2;
    let error = status_error || error_type.is_some();
    let message =
        (status_error && !head.status_message.is_empty()).then(|| text(head.status_message));
    let throttled = error
        && (http_status == Some(429)
            || error_type.is_some_and(names_throttling)
            || names_throttling(head.status_message));
    let operation: Option<&str> = op.or(match role {
        Role::Inference => Some(match llm_type {
            Some("embedding") => "embeddings",
            Some("completion") => "text_completion",
            _ => "chat",
        }),
        Role::Agent => Some("invoke_agent"),
        Role::Tool => Some("execute_tool"),
        Role::Retrieval => Some("retrieval"),
        _ => None,
    });
    let lifetime_totals = role == Role::Agent && provider == Some("strands-agents");
    let count = |i: usize| usage[i].map(|(_, n)| n);
    SpanFacts {
        span_id: id64(head.span_id),
        parent: id64(head.parent_span_id),
        role,
        kind: head.kind,
        name: (role == Role::Inference || error || guardrail).then(|| text(head.name)),
        start_ns: head.start_ns,
        end_ns: head.end_ns,
        error,
        throttled,
        error_type: error_type
            .map(text)
            .or_else(|| message.clone().filter(|_| error)),
        message,
        usage: Usage {
            input: count(0),
            output: count(1),
            cache_read: count(2),
            cache_write: count(3),
        },
        invalid_usage: invalid,
        lifetime_totals,
        operation: operation.map(text),
        model: request_model.or(response_model).or(oi_model).map(text),
        agent: agent.map(text),
        session: session.map(text).or_else(|| origin.session.clone()),
        service: origin.service.clone(),
        tool: tool.map(text),
        guardrail_intervened: guardrail,
        retries,
        carried,
    }
}

/// What a consumer reads besides the model's own attributes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Keys {
    /// Attribute keys that name a session, in order of preference.
    pub session: Vec<String>,
    /// Attribute keys whose values are carried with the span (at most 255).
    pub carry: Vec<String>,
}

impl Keys {
    /// Session keys only.
    pub fn sessions(session: Vec<String>) -> Keys {
        Keys {
            session,
            carry: Vec::new(),
        }
    }
}

/// A scalar value as text.
fn scalar_text(v: &Value<'_>) -> Option<String> {
    Some(match *v {
        Value::Str(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Double(d) => d.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    })
}

/// Reads a decoded span (the struct path), with its resource's origin.
pub fn read_struct(
    span: &opentelemetry_proto::tonic::trace::v1::Span,
    origin: &Origin,
    keys: &Keys,
) -> SpanFacts {
    let status = span.status.as_ref();
    let head = SpanHead {
        span_id: &span.span_id,
        parent_span_id: &span.parent_span_id,
        name: &span.name,
        kind: span.kind,
        start_ns: span.start_time_unix_nano,
        end_ns: span.end_time_unix_nano,
        status_code: status.map_or(0, |s| s.code),
        status_message: status.map_or("", |s| s.message.as_str()),
    };
    read(&head, struct_attributes(&span.attributes), origin, keys)
}

/// Decoded attributes as the model reads them (the byte path's values).
pub fn struct_attributes(
    attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> impl Iterator<Item = (&str, Value<'_>)> + '_ {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    attrs.iter().map(|kv| {
        let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            None => Value::Empty,
            Some(V::StringValue(s)) => Value::Str(s),
            Some(V::BoolValue(b)) => Value::Bool(*b),
            Some(V::IntValue(i)) => Value::Int(*i),
            Some(V::DoubleValue(d)) => Value::Double(*d),
            Some(V::BytesValue(b)) => Value::Bytes(b),
            Some(_) => Value::Other(&[]),
        };
        (kv.key.as_str(), v)
    })
}

/// The origin of a decoded resource.
pub fn struct_origin(
    resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>,
    session_keys: &[String],
) -> Origin {
    match resource {
        Some(r) => Origin::read(struct_attributes(&r.attributes), session_keys),
        None => Origin::default(),
    }
}

/// Reads a span from its encoded bytes (the byte path).
pub fn read_view(
    view: &crate::convert::otlp_view::SpanView<'_>,
    origin: &Origin,
    keys: &Keys,
) -> SpanFacts {
    let head = SpanHead {
        span_id: view.span_id,
        parent_span_id: view.parent_span_id,
        name: view.name,
        kind: view.kind,
        start_ns: view.start_time_unix_nano,
        end_ns: view.end_time_unix_nano,
        status_code: view.status_code,
        status_message: view.status_message,
    };
    read(&head, view.attributes(), origin, keys)
}

impl SpanFacts {
    /// An estimate of the bytes it holds (the struct; shared strings are
    /// counted where they were first read, at most [`MAX_TEXT`] each).
    pub fn bytes(&self) -> usize {
        let strings = [
            self.name.as_ref(),
            self.error_type.as_ref(),
            self.message.as_ref(),
            self.operation.as_ref(),
            self.model.as_ref(),
            self.agent.as_ref(),
            self.tool.as_ref(),
        ];
        std::mem::size_of::<SpanFacts>()
            + self
                .carried
                .iter()
                .map(|(_, s)| s.len() + 24)
                .sum::<usize>()
            + strings
                .iter()
                .flatten()
                .map(|s| s.len() + 16)
                .sum::<usize>()
    }
}
