//! Building the span tree of Bedrock agent invocations and timing it.
//!
//! Tree: one root `invoke_agent` per top-level invocation; one span per step
//! (keyed by the event `traceId`); under a step its model call (`chat`, input
//! and output merged), tools (`execute_tool`), knowledge-base lookups
//! (`retrieval`), guardrail checks, failures, and collaborator calls
//! (`invoke_agent {collaborator}`), whose children are the collaborator's own
//! steps. A collaborator invocation is joined to its call by the call's output
//! `metadata.clientRequestId` (= the child's trace id UUID), else by
//! `callerChain`.
//!
//! Time: spans with `metadata.startTime/endTime` use them exactly; the root
//! uses the final response (or failure) metadata, ending at `endTime` and
//! lasting `operationTotalTimeMs`. Other spans take the tightest bounds their
//! children allow, or, with no timed children, the span from the previous
//! sibling's end to their latest `eventTime`. Spans without metadata are then
//! clamped into their parent; finally every parent is widened to cover its
//! children, so parents always cover children.

use std::collections::{HashMap, VecDeque};

use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::event::{parse_time, CaptureContent, Event, Options, Stage};

const KIND_INTERNAL: i32 = 1;
const KIND_CLIENT: i32 = 3;

#[derive(Default)]
struct Node {
    key: String,
    name: String,
    kind: i32,
    start: Option<u64>,
    end: Option<u64>,
    /// Times come from metadata and are not to be moved.
    exact: bool,
    attrs: Vec<KeyValue>,
    events: Vec<(Option<u64>, String, Vec<KeyValue>)>,
    error: Option<(String, String)>,
    children: Vec<usize>,
    /// `eventTime`s of the events behind this span.
    times: Vec<u64>,
}

use crate::signal::{attribute as kv, string_attribute as s};

fn i(k: &str, v: i64) -> KeyValue {
    kv(k, any_value::Value::IntValue(v))
}

fn f(k: &str, v: f64) -> KeyValue {
    kv(k, any_value::Value::DoubleValue(v))
}

fn b(k: &str, v: bool) -> KeyValue {
    kv(k, any_value::Value::BoolValue(v))
}

fn str_array(k: &str, items: &[&str]) -> KeyValue {
    let values = items
        .iter()
        .map(|v| AnyValue {
            value: Some(any_value::Value::StringValue((*v).to_string())),
        })
        .collect();
    kv(k, any_value::Value::ArrayValue(ArrayValue { values }))
}

fn get_str<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    o.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn get_obj<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a Map<String, Value>> {
    o.get(k).and_then(Value::as_object)
}

/// Compact JSON of a value without `__type` keys.
fn json_text(v: &Value) -> String {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(o) => Value::Object(
                o.iter()
                    .filter(|(k, _)| k.as_str() != "__type")
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&strip(v)).unwrap_or_default()
}

/// Text as `capture_content` allows; `None` when no text may be kept.
fn content(mode: CaptureContent, text: &str) -> Option<String> {
    match mode {
        CaptureContent::None => None,
        CaptureContent::Full => Some(text.to_string()),
        CaptureContent::Truncated(max) => {
            if text.len() <= max {
                return Some(text.to_string());
            }
            let mut cut = max;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            Some(text[..cut].to_string())
        }
    }
}

/// Start and end from a Bedrock `metadata` object, if both are there.
fn md_times(md: &Map<String, Value>) -> Option<(u64, u64)> {
    let start = parse_time(md.get("startTime"));
    let end = parse_time(md.get("endTime"));
    match (start, end, md.get("totalTimeMs").and_then(Value::as_u64)) {
        (Some(s), Some(e), _) if e >= s => Some((s, e)),
        (Some(s), None, Some(ms)) => Some((s, s + ms * 1_000_000)),
        (None, Some(e), Some(ms)) => Some((e.saturating_sub(ms * 1_000_000), e)),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ToolKind {
    ActionGroup,
    KnowledgeBase,
    CodeInterpreter,
    Collaborator,
}

struct Call {
    node: usize,
    alias_arn: Option<String>,
    client_request_id: Option<String>,
    joined: bool,
}

struct Invocation<'a> {
    key: &'a str,
    first: Event<'a>,
    caller_chain: Vec<&'a str>,
    steps: Vec<usize>,
    /// Metadata of the final response or failure that bounds the whole invocation.
    root_md: Option<&'a Map<String, Value>>,
    final_text: Option<(&'a str, Option<u64>)>,
    calls: Vec<Call>,
    failed: bool,
    joined: bool,
}

struct Builder<'o> {
    nodes: Vec<Node>,
    opts: &'o Options,
}

impl Builder<'_> {
    fn add(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn text_event(
        &mut self,
        node: usize,
        time: Option<u64>,
        name: &str,
        key: &str,
        text: Option<&str>,
    ) {
        let attrs = match text.and_then(|t| content(self.opts.capture_content, t)) {
            Some(t) => vec![s(key, t)],
            None => Vec::new(),
        };
        self.nodes[node]
            .events
            .push((time, name.to_string(), attrs));
    }

    fn set_exact(&mut self, node: usize, md: Option<&Map<String, Value>>) {
        if let Some((start, end)) = md.and_then(md_times) {
            let n = &mut self.nodes[node];
            n.start = Some(start);
            n.end = Some(end);
            n.exact = true;
        }
        if let Some(id) = md.and_then(|m| get_str(m, "clientRequestId")) {
            self.nodes[node].attrs.push(s("aws.request_id", id));
        }
    }
}

fn step_name(key: &str, trace_id: &str) -> (String, &'static str) {
    let suffix = trace_id
        .strip_prefix(key)
        .unwrap_or(trace_id)
        .trim_start_matches('-');
    let num = suffix.rsplit('-').next().unwrap_or("");
    if suffix.starts_with("guardrail-pre") {
        ("guardrail pre".into(), "guardrail_pre")
    } else if suffix.starts_with("guardrail-post") {
        ("guardrail post".into(), "guardrail_post")
    } else if suffix.starts_with("pre") {
        ("pre_processing".into(), "pre_processing")
    } else if suffix.starts_with("post") {
        ("post_processing".into(), "post_processing")
    } else if suffix.starts_with("routing") {
        ("routing_classifier".into(), "routing_classifier")
    } else if suffix.starts_with("KB") {
        (
            "knowledge_base_response_generation".into(),
            "knowledge_base_response_generation",
        )
    } else if !suffix.is_empty() && suffix.bytes().all(|c| c.is_ascii_digit()) {
        (format!("orchestration step {num}"), "orchestration")
    } else {
        (format!("step {suffix}"), "other")
    }
}

/// Builds spans for grouped invocations. Returns the resource spans and the
/// number of top-level invocations.
pub(super) fn build(
    groups: Vec<(&str, Vec<Event<'_>>)>,
    opts: &Options,
) -> (Vec<ResourceSpans>, usize) {
    let mut bld = Builder {
        nodes: Vec::new(),
        opts,
    };
    let mut invs: Vec<Invocation<'_>> = Vec::new();
    for (key, events) in groups {
        if let Some(inv) = invocation(&mut bld, key, events) {
            invs.push(inv);
        }
    }
    join_collaborators(&mut bld, &mut invs);

    let mut roots = Vec::new();
    for inv in invs.iter().filter(|inv| !inv.joined) {
        roots.push((root_node(&mut bld, inv), inv.key.to_string()));
    }
    let mut spans = Vec::new();
    for (root, key) in &roots {
        time_tree(&mut bld.nodes, *root);
        propagate_error(&mut bld.nodes, *root);
        let trace_id = match opts.traceparent {
            Some(tp) => tp.trace_id.to_vec(),
            None => trace_id_for(key),
        };
        let parent = opts
            .traceparent
            .map(|tp| tp.span_id.to_vec())
            .unwrap_or_default();
        emit(&bld.nodes, *root, &trace_id, key, &parent, &mut spans);
    }
    if spans.is_empty() {
        return (Vec::new(), 0);
    }
    let mut resource = opts.resource_attributes.clone();
    if !resource.iter().any(|kv| kv.key == "service.name") {
        resource.push(s("service.name", "bedrock-agent"));
    }
    if !resource.iter().any(|kv| kv.key == "cloud.provider") {
        resource.push(s("cloud.provider", "aws"));
    }
    let rs = ResourceSpans {
        resource: Some(Resource {
            attributes: resource,
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "spanwire.bedrock".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            }),
            spans,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    };
    (vec![rs], roots.len())
}

/// Reads one invocation's events into step spans and their children.
fn invocation<'a>(
    bld: &mut Builder<'_>,
    key: &'a str,
    events: Vec<Event<'a>>,
) -> Option<Invocation<'a>> {
    let first = events.first()?.clone();
    let mut walk = Walk {
        bld,
        inv: Invocation {
            key,
            caller_chain: first.caller_chain(),
            first,
            steps: Vec::new(),
            root_md: None,
            final_text: None,
            calls: Vec::new(),
            failed: false,
            joined: false,
        },
        step_of: HashMap::new(),
        open_model: HashMap::new(),
        pending: HashMap::new(),
        ordinals: HashMap::new(),
    };
    for e in events {
        walk.event(e);
    }
    Some(walk.inv)
}

/// One invocation's events, taken in order into nodes.
struct Walk<'a, 'b, 'o> {
    bld: &'b mut Builder<'o>,
    inv: Invocation<'a>,
    /// The step node of each trace id.
    step_of: HashMap<&'a str, usize>,
    /// A step's model call still waiting for its output.
    open_model: HashMap<usize, usize>,
    /// Tool calls of a step waiting for their output, by kind, oldest first.
    pending: HashMap<(usize, ToolKind), VecDeque<usize>>,
    /// How many nodes of each role each step (trace id) has made so far.
    ordinals: HashMap<(String, &'a str), usize>,
}

/// A node key unique in the invocation and a function of the event's
/// identity: `role:trace_id:n`, the n-th node of that role in that step.
/// Exact duplicate events are left out before building, so a stream sent
/// twice, or interleaved with itself, makes the same keys (and span ids).
fn node_key<'a>(
    ordinals: &mut HashMap<(String, &'a str), usize>,
    what: &str,
    trace_id: &'a str,
) -> String {
    let n = ordinals.entry((what.to_string(), trace_id)).or_insert(0);
    *n += 1;
    format!("{what}:{trace_id}:{n}")
}

impl<'a> Walk<'a, '_, '_> {
    fn next_key(&mut self, what: &str, trace_id: &'a str) -> String {
        node_key(&mut self.ordinals, what, trace_id)
    }

    fn event(&mut self, e: Event<'a>) {
        let step = self.step(&e);
        let body = e.body;
        match (e.stage, e.member) {
            (Stage::Guardrail, _) => {
                let k = self.next_key("guardrail", e.trace_id);
                let node = guardrail(self.bld, &e, k);
                self.bld.nodes[step].children.push(node);
            }
            (Stage::Failure, _) => self.failure(step, &e),
            (Stage::Unknown, key) => self.unknown_member(step, &e, key),
            (_, "modelInvocationInput") => {
                let k = self.next_key("model", e.trace_id);
                let node = self.bld.add(Node {
                    key: k,
                    kind: KIND_CLIENT,
                    times: e.time.into_iter().collect(),
                    ..Default::default()
                });
                model_input(self.bld, node, body, e.time);
                self.open_model.insert(step, node);
                self.bld.nodes[step].children.push(node);
            }
            (_, "modelInvocationOutput") => self.model_output(step, &e),
            (_, "rationale") => self.bld.text_event(
                step,
                e.time,
                "aws.bedrock.rationale",
                "text",
                get_str(body, "text"),
            ),
            (_, "invocationInput") => self.invocation_input(step, &e),
            (_, "observation") => self.observation(step, &e),
            (Stage::CustomOrchestration, _) => self.bld.text_event(
                step,
                e.time,
                "aws.bedrock.custom_orchestration",
                "text",
                get_str(body, "text"),
            ),
            (_, other) => {
                let text = json_text(&Value::Object(body.clone()));
                let key = format!("aws.bedrock.unknown.{other}");
                if let Some(t) = content(self.bld.opts.capture_content, &text) {
                    self.bld.nodes[step].attrs.push(s(&key, t));
                }
            }
        }
    }

    /// The step node of the event's trace id (made on its first event), with
    /// the event's time and the fields this converter does not read.
    fn step(&mut self, e: &Event<'a>) -> usize {
        let unknown = unknown_fields(e);
        let key = self.inv.key;
        let (bld, inv) = (&mut *self.bld, &mut self.inv);
        let step = *self.step_of.entry(e.trace_id).or_insert_with(|| {
            let (name, kind) = step_name(key, e.trace_id);
            let idx = bld.add(Node {
                key: format!("step:{}", e.trace_id),
                name,
                kind: KIND_INTERNAL,
                attrs: vec![
                    s("aws.bedrock.trace_id", e.trace_id),
                    s("aws.bedrock.step.type", kind),
                ],
                ..Default::default()
            });
            inv.steps.push(idx);
            idx
        });
        if let Some(t) = e.time {
            bld.nodes[step].times.push(t);
        }
        for (k, v) in unknown {
            if let Some(t) = content(bld.opts.capture_content, &json_text(v)) {
                bld.nodes[step]
                    .attrs
                    .push(s(&format!("aws.bedrock.unknown.{k}"), t));
            }
        }
        step
    }

    /// A trace member this converter does not know: a span of its own under
    /// its step, named after the member, with its JSON (within the content
    /// limit) so nothing AWS adds is lost.
    fn unknown_member(&mut self, step: usize, e: &Event<'a>, key: &str) {
        let mut attrs = vec![s("bedrock.trace.type", key)];
        let raw = json_text(&Value::Object(e.body.clone()));
        if let Some(t) = content(self.bld.opts.capture_content, &raw) {
            attrs.push(s("bedrock.trace.raw", t));
        }
        let node_key = self.next_key(&format!("unknown.{key}"), e.trace_id);
        let node = self.bld.add(Node {
            key: node_key,
            name: key.to_string(),
            kind: KIND_INTERNAL,
            times: e.time.into_iter().collect(),
            attrs,
            ..Default::default()
        });
        self.bld.set_exact(node, get_obj(e.body, "metadata"));
        self.bld.nodes[step].children.push(node);
    }

    fn failure(&mut self, step: usize, e: &Event<'a>) {
        let body = e.body;
        let code = body.get("failureCode").and_then(Value::as_i64);
        let reason = get_str(body, "failureReason").unwrap_or("failure");
        let mut n = Node {
            key: self.next_key("failure", e.trace_id),
            name: "failure".into(),
            kind: KIND_INTERNAL,
            times: e.time.into_iter().collect(),
            error: Some((
                code.map(|c| c.to_string())
                    .unwrap_or_else(|| "failure".into()),
                reason.to_string(),
            )),
            ..Default::default()
        };
        if let Some(c) = code {
            n.attrs.push(i("aws.bedrock.failure.code", c));
        }
        n.attrs.push(s("aws.bedrock.failure.reason", reason));
        let node = self.bld.add(n);
        let md = get_obj(body, "metadata");
        self.bld.set_exact(node, md);
        self.bld.nodes[step].children.push(node);
        self.inv.failed = true;
        if md.is_some_and(|m| m.contains_key("operationTotalTimeMs")) {
            self.inv.root_md = md;
        }
    }

    fn model_output(&mut self, step: usize, e: &Event<'a>) {
        let node = match self.open_model.remove(&step) {
            Some(n) => n,
            None => {
                let k = self.next_key("model", e.trace_id);
                let n = self.bld.add(Node {
                    key: k,
                    kind: KIND_CLIENT,
                    ..Default::default()
                });
                model_input(self.bld, n, &Map::new(), None);
                self.bld.nodes[step].children.push(n);
                n
            }
        };
        if let Some(t) = e.time {
            self.bld.nodes[node].times.push(t);
        }
        model_output(self.bld, node, e.body, e.time);
    }

    fn invocation_input(&mut self, step: usize, e: &Event<'a>) {
        let body = e.body;
        if let Some(t) = get_str(body, "invocationType") {
            self.bld.nodes[step]
                .attrs
                .push(s("aws.bedrock.invocation_type", t));
        }
        let ordinals = &mut self.ordinals;
        let trace_id = e.trace_id;
        let mut next_key = |what: &str| node_key(ordinals, what, trace_id);
        let made = tool_input(self.bld, body, e.time, &mut next_key);
        if let Some((kind, node, call)) = made {
            self.bld.nodes[step].children.push(node);
            self.pending
                .entry((step, kind))
                .or_default()
                .push_back(node);
            if let Some(c) = call {
                self.inv.calls.push(c);
            }
        }
    }

    fn observation(&mut self, step: usize, e: &Event<'a>) {
        let body = e.body;
        let outputs = [
            ("actionGroupInvocationOutput", ToolKind::ActionGroup),
            ("knowledgeBaseLookupOutput", ToolKind::KnowledgeBase),
            ("codeInterpreterInvocationOutput", ToolKind::CodeInterpreter),
            ("agentCollaboratorInvocationOutput", ToolKind::Collaborator),
        ];
        if let Some((field, kind)) = outputs.iter().find(|(k, _)| body.contains_key(*k)) {
            self.tool_observation(step, e, get_obj(body, field), *kind);
        } else if let Some(fr) = get_obj(body, "finalResponse") {
            let md = get_obj(fr, "metadata");
            if md.is_some() {
                self.inv.root_md = md;
            }
            self.inv.final_text = Some((get_str(fr, "text").unwrap_or(""), e.time));
            self.bld.text_event(
                step,
                e.time,
                "aws.bedrock.final_response",
                "text",
                get_str(fr, "text"),
            );
        } else if let Some(rp) = get_obj(body, "repromptResponse") {
            let mut attrs = Vec::new();
            if let Some(src) = get_str(rp, "source") {
                attrs.push(s("source", src));
            }
            if let Some(t) =
                get_str(rp, "text").and_then(|t| content(self.bld.opts.capture_content, t))
            {
                attrs.push(s("text", t));
            }
            self.bld.nodes[step]
                .events
                .push((e.time, "aws.bedrock.reprompt".into(), attrs));
        } else {
            // An observation type we do not model: kept as an event with its JSON.
            let mut attrs = vec![s("type", get_str(body, "type").unwrap_or("unknown"))];
            if let Some(t) = content(
                self.bld.opts.capture_content,
                &json_text(&Value::Object(body.clone())),
            ) {
                attrs.push(s("json", t));
            }
            self.bld.nodes[step]
                .events
                .push((e.time, "aws.bedrock.observation".into(), attrs));
        }
    }

    /// A tool's output: closes the oldest call of that kind in the step, or
    /// stands alone if its input never came.
    fn tool_observation(
        &mut self,
        step: usize,
        e: &Event<'a>,
        out: Option<&'a Map<String, Value>>,
        kind: ToolKind,
    ) {
        let node = match self
            .pending
            .get_mut(&(step, kind))
            .and_then(VecDeque::pop_front)
        {
            Some(n) => n,
            None => {
                // An output without its input: a span all the same.
                let k = self.next_key("tool", e.trace_id);
                let n = self.bld.add(Node {
                    key: k,
                    kind: KIND_INTERNAL,
                    ..Default::default()
                });
                tool_shell(self.bld, n, kind, out);
                self.bld.nodes[step].children.push(n);
                if kind == ToolKind::Collaborator {
                    self.inv.calls.push(Call {
                        node: n,
                        alias_arn: out
                            .and_then(|o| get_str(o, "agentCollaboratorAliasArn"))
                            .map(String::from),
                        client_request_id: None,
                        joined: false,
                    });
                }
                n
            }
        };
        if let Some(t) = e.time {
            self.bld.nodes[node].times.push(t);
        }
        if let Some(out) = out {
            tool_output(self.bld, node, kind, out, e.time);
            if kind == ToolKind::Collaborator {
                let id = get_obj(out, "metadata").and_then(|m| get_str(m, "clientRequestId"));
                if let Some(c) = self.inv.calls.iter_mut().find(|c| c.node == node) {
                    c.client_request_id = id.map(String::from);
                }
            }
        }
    }
}

/// Fields of an event that this converter does not read, with their path, so
/// that data newer than the published model is kept rather than lost.
fn unknown_fields<'a>(e: &Event<'a>) -> Vec<(String, &'a Value)> {
    const PART: &[&str] = &[
        "agentAliasId",
        "agentId",
        "agentVersion",
        "callerChain",
        "collaboratorName",
        "eventTime",
        "sessionId",
        "trace",
    ];
    let known: &[&str] = match (e.stage, e.member) {
        (Stage::Guardrail, _) => &[
            "traceId",
            "action",
            "inputAssessments",
            "outputAssessments",
            "metadata",
        ],
        (Stage::Failure, _) => &["traceId", "failureCode", "failureReason", "metadata"],
        (Stage::CustomOrchestration, _) => &["traceId", "text"],
        (_, "modelInvocationInput") => &[
            "traceId",
            "text",
            "type",
            "foundationModel",
            "inferenceConfiguration",
            "overrideLambda",
            "parserMode",
            "promptCreationMode",
        ],
        (_, "modelInvocationOutput") => &[
            "traceId",
            "metadata",
            "rawResponse",
            "reasoningContent",
            "parsedResponse",
        ],
        (_, "rationale") => &["traceId", "text"],
        (_, "invocationInput") => &[
            "traceId",
            "invocationType",
            "actionGroupInvocationInput",
            "knowledgeBaseLookupInput",
            "codeInterpreterInvocationInput",
            "agentCollaboratorInvocationInput",
        ],
        (_, "observation") => &[
            "traceId",
            "type",
            "actionGroupInvocationOutput",
            "knowledgeBaseLookupOutput",
            "codeInterpreterInvocationOutput",
            "agentCollaboratorInvocationOutput",
            "finalResponse",
            "repromptResponse",
        ],
        // Members not modelled at all are kept whole by the caller.
        _ => return Vec::new(),
    };
    let mut out: Vec<(String, &'a Value)> = e
        .part
        .iter()
        .filter(|(k, _)| !PART.contains(&k.as_str()) && k.as_str() != "__type")
        .map(|(k, v)| (k.clone(), v))
        .collect();
    let prefix = if e.member.is_empty() {
        "trace"
    } else {
        e.member
    };
    out.extend(
        e.body
            .iter()
            .filter(|(k, _)| !known.contains(&k.as_str()) && k.as_str() != "__type")
            .map(|(k, v)| (format!("{prefix}.{k}"), v)),
    );
    out
}

fn model_input(bld: &mut Builder<'_>, node: usize, body: &Map<String, Value>, time: Option<u64>) {
    let model = get_str(body, "foundationModel");
    let prompt_type = get_str(body, "type");
    let n = &mut bld.nodes[node];
    n.name = match (model, prompt_type) {
        (Some(m), _) => format!("chat {m}"),
        (None, Some(t)) => format!("chat {}", t.to_ascii_lowercase()),
        (None, None) => "chat".into(),
    };
    n.attrs.push(s("gen_ai.operation.name", "chat"));
    n.attrs.push(s("gen_ai.provider.name", "aws.bedrock"));
    if let Some(m) = model {
        n.attrs.push(s("gen_ai.request.model", m));
    }
    if let Some(t) = prompt_type {
        n.attrs.push(s("aws.bedrock.prompt.type", t));
    }
    for (k, attr) in [
        ("parserMode", "aws.bedrock.parser_mode"),
        ("promptCreationMode", "aws.bedrock.prompt_creation_mode"),
        ("overrideLambda", "aws.bedrock.override_lambda"),
    ] {
        if let Some(v) = get_str(body, k) {
            n.attrs.push(s(attr, v));
        }
    }
    if let Some(ic) = get_obj(body, "inferenceConfiguration") {
        if let Some(v) = ic.get("temperature").and_then(Value::as_f64) {
            n.attrs.push(f("gen_ai.request.temperature", v));
        }
        if let Some(v) = ic.get("topP").and_then(Value::as_f64) {
            n.attrs.push(f("gen_ai.request.top_p", v));
        }
        if let Some(v) = ic.get("topK").and_then(Value::as_i64) {
            n.attrs.push(i("gen_ai.request.top_k", v));
        }
        if let Some(v) = ic.get("maximumLength").and_then(Value::as_i64) {
            n.attrs.push(i("gen_ai.request.max_tokens", v));
        }
        if let Some(seq) = ic.get("stopSequences").and_then(Value::as_array) {
            let seqs: Vec<&str> = seq.iter().filter_map(Value::as_str).collect();
            n.attrs
                .push(str_array("gen_ai.request.stop_sequences", &seqs));
        }
    }
    bld.text_event(
        node,
        time,
        "gen_ai.content.prompt",
        "gen_ai.prompt",
        get_str(body, "text"),
    );
}

fn model_output(bld: &mut Builder<'_>, node: usize, body: &Map<String, Value>, time: Option<u64>) {
    let md = get_obj(body, "metadata");
    bld.set_exact(node, md);
    if let Some(u) = md.and_then(|m| get_obj(m, "usage")) {
        let n = &mut bld.nodes[node];
        if let Some(v) = u.get("inputTokens").and_then(Value::as_i64) {
            n.attrs.push(i("gen_ai.usage.input_tokens", v));
        }
        if let Some(v) = u.get("outputTokens").and_then(Value::as_i64) {
            n.attrs.push(i("gen_ai.usage.output_tokens", v));
        }
    }
    if let Some(pr) = get_obj(body, "parsedResponse") {
        if let Some(v) = pr.get("isValid").and_then(Value::as_bool) {
            bld.nodes[node]
                .attrs
                .push(b("aws.bedrock.parsed_response.is_valid", v));
        }
        let text = get_str(pr, "rationale").or_else(|| get_str(pr, "text"));
        bld.text_event(node, time, "aws.bedrock.parsed_response", "text", text);
    }
    if let Some(r) = get_obj(body, "reasoningContent") {
        // `reasoningText` may come without `text` in real data.
        let text = get_obj(r, "reasoningText").and_then(|t| get_str(t, "text"));
        if text.is_some() {
            bld.text_event(node, time, "gen_ai.content.reasoning", "text", text);
        } else if r.contains_key("redactedContent") {
            bld.nodes[node].events.push((
                time,
                "gen_ai.content.reasoning".into(),
                vec![b("redacted", true)],
            ));
        }
    }
    let raw = get_obj(body, "rawResponse").and_then(|r| get_str(r, "content"));
    bld.text_event(
        node,
        time,
        "gen_ai.content.completion",
        "gen_ai.completion",
        raw,
    );
}

/// Names and types a tool span before its input or output is known.
fn tool_shell(
    bld: &mut Builder<'_>,
    node: usize,
    kind: ToolKind,
    out: Option<&Map<String, Value>>,
) {
    let n = &mut bld.nodes[node];
    match kind {
        ToolKind::ActionGroup => {
            n.name = "execute_tool".into();
            n.attrs.push(s("gen_ai.operation.name", "execute_tool"));
            n.attrs.push(s("gen_ai.tool.type", "function"));
        }
        ToolKind::CodeInterpreter => {
            n.name = "execute_tool code_interpreter".into();
            n.attrs.push(s("gen_ai.operation.name", "execute_tool"));
            n.attrs.push(s("gen_ai.tool.name", "code_interpreter"));
            n.attrs.push(s("gen_ai.tool.type", "extension"));
        }
        ToolKind::KnowledgeBase => {
            n.name = "retrieval".into();
            n.attrs.push(s("gen_ai.operation.name", "retrieval"));
        }
        ToolKind::Collaborator => {
            let name = out
                .and_then(|o| get_str(o, "agentCollaboratorName"))
                .unwrap_or("collaborator");
            n.name = format!("invoke_agent {name}");
            n.kind = KIND_CLIENT;
            n.attrs.push(s("gen_ai.operation.name", "invoke_agent"));
            n.attrs.push(s("gen_ai.agent.name", name));
        }
    }
    n.attrs.push(s("gen_ai.provider.name", "aws.bedrock"));
}

type ToolMade = (ToolKind, usize, Option<Call>);

fn tool_input(
    bld: &mut Builder<'_>,
    body: &Map<String, Value>,
    time: Option<u64>,
    next_key: &mut impl FnMut(&str) -> String,
) -> Option<ToolMade> {
    let capture = bld.opts.capture_content;
    if let Some(ag) = get_obj(body, "actionGroupInvocationInput") {
        let node = bld.add(Node {
            key: next_key("tool"),
            kind: KIND_INTERNAL,
            times: time.into_iter().collect(),
            ..Default::default()
        });
        tool_shell(bld, node, ToolKind::ActionGroup, None);
        let group = get_str(ag, "actionGroupName").unwrap_or("action_group");
        let tool = get_str(ag, "function").or_else(|| get_str(ag, "apiPath"));
        let n = &mut bld.nodes[node];
        n.name = match tool {
            Some(t) => format!("execute_tool {group}/{t}"),
            None => format!("execute_tool {group}"),
        };
        n.attrs.push(s("gen_ai.tool.name", tool.unwrap_or(group)));
        n.attrs.push(s("aws.bedrock.action_group.name", group));
        for (k, attr) in [
            ("executionType", "aws.bedrock.action_group.execution_type"),
            ("invocationId", "gen_ai.tool.call.id"),
            ("verb", "http.request.method"),
            ("apiPath", "url.path"),
        ] {
            if let Some(v) = get_str(ag, k) {
                n.attrs.push(s(attr, v));
            }
        }
        let args: Option<Value> = match ag.get("parameters").and_then(Value::as_array) {
            Some(params) => Some(Value::Object(
                params
                    .iter()
                    .filter_map(|p| {
                        Some((
                            p.get("name")?.as_str()?.to_string(),
                            p.get("value")?.clone(),
                        ))
                    })
                    .collect(),
            )),
            None => ag.get("requestBody").cloned(),
        };
        if let Some(t) = args.as_ref().and_then(|a| content(capture, &json_text(a))) {
            n.attrs.push(s("gen_ai.tool.call.arguments", t));
        }
        return Some((ToolKind::ActionGroup, node, None));
    }
    if let Some(kb) = get_obj(body, "knowledgeBaseLookupInput") {
        let node = bld.add(Node {
            key: next_key("retrieval"),
            kind: KIND_CLIENT,
            times: time.into_iter().collect(),
            ..Default::default()
        });
        tool_shell(bld, node, ToolKind::KnowledgeBase, None);
        if let Some(id) = get_str(kb, "knowledgeBaseId") {
            let n = &mut bld.nodes[node];
            n.name = format!("retrieval {id}");
            n.attrs.push(s("gen_ai.data_source.id", id));
            n.attrs.push(s("aws.bedrock.knowledge_base.id", id));
        }
        bld.text_event(
            node,
            time,
            "gen_ai.retrieval.query",
            "text",
            get_str(kb, "text"),
        );
        return Some((ToolKind::KnowledgeBase, node, None));
    }
    if let Some(ci) = get_obj(body, "codeInterpreterInvocationInput") {
        let node = bld.add(Node {
            key: next_key("tool"),
            kind: KIND_INTERNAL,
            times: time.into_iter().collect(),
            ..Default::default()
        });
        tool_shell(bld, node, ToolKind::CodeInterpreter, None);
        if let Some(t) = get_str(ci, "code").and_then(|c| content(capture, c)) {
            bld.nodes[node]
                .attrs
                .push(s("gen_ai.tool.call.arguments", t));
        }
        if let Some(files) = ci.get("files").and_then(Value::as_array) {
            let names: Vec<&str> = files.iter().filter_map(Value::as_str).collect();
            bld.nodes[node]
                .attrs
                .push(str_array("aws.bedrock.code_interpreter.files", &names));
        }
        return Some((ToolKind::CodeInterpreter, node, None));
    }
    if let Some(ac) = get_obj(body, "agentCollaboratorInvocationInput") {
        let node = bld.add(Node {
            key: next_key("collaborator"),
            kind: KIND_CLIENT,
            times: time.into_iter().collect(),
            ..Default::default()
        });
        // The name comes from the caller's input, not from `collaboratorName`.
        let mut shell = Map::new();
        if let Some(n) = ac.get("agentCollaboratorName") {
            shell.insert("agentCollaboratorName".into(), n.clone());
        }
        tool_shell(bld, node, ToolKind::Collaborator, Some(&shell));
        let arn = get_str(ac, "agentCollaboratorAliasArn");
        if let Some(a) = arn {
            bld.nodes[node]
                .attrs
                .push(s("aws.bedrock.agent.alias_arn", a));
            if let Some(id) = agent_id_from_arn(a) {
                bld.nodes[node].attrs.push(s("gen_ai.agent.id", id));
            }
        }
        let input = get_obj(ac, "input");
        bld.text_event(
            node,
            time,
            "aws.bedrock.collaborator.input",
            "text",
            input.and_then(|i| get_str(i, "text")),
        );
        let call = Call {
            node,
            alias_arn: arn.map(String::from),
            client_request_id: None,
            joined: false,
        };
        return Some((ToolKind::Collaborator, node, Some(call)));
    }
    None
}

fn agent_id_from_arn(arn: &str) -> Option<&str> {
    let rest = arn.split("agent-alias/").nth(1)?;
    rest.split('/').next().filter(|s| !s.is_empty())
}

fn tool_output(
    bld: &mut Builder<'_>,
    node: usize,
    kind: ToolKind,
    out: &Map<String, Value>,
    time: Option<u64>,
) {
    bld.set_exact(node, get_obj(out, "metadata"));
    match kind {
        ToolKind::ActionGroup => bld.text_event(
            node,
            time,
            "gen_ai.tool.output",
            "text",
            get_str(out, "text"),
        ),
        ToolKind::CodeInterpreter => {
            bld.text_event(
                node,
                time,
                "gen_ai.tool.output",
                "text",
                get_str(out, "executionOutput"),
            );
            if let Some(err) = get_str(out, "executionError") {
                bld.nodes[node].error = Some(("code_execution_error".into(), err.to_string()));
            }
            if out.get("executionTimeout").and_then(Value::as_bool) == Some(true) {
                bld.nodes[node].error = Some(("timeout".into(), "code execution timed out".into()));
            }
            if let Some(files) = out.get("files").and_then(Value::as_array) {
                let names: Vec<&str> = files.iter().filter_map(Value::as_str).collect();
                bld.nodes[node].attrs.push(str_array(
                    "aws.bedrock.code_interpreter.output_files",
                    &names,
                ));
            }
        }
        ToolKind::KnowledgeBase => {
            let refs = out.get("retrievedReferences").and_then(Value::as_array);
            let count = refs.map(|r| r.len()).unwrap_or(0);
            bld.nodes[node].attrs.push(i(
                "aws.bedrock.knowledge_base.retrieved_references",
                count as i64,
            ));
            let mut uris: Vec<&str> = refs
                .into_iter()
                .flatten()
                .filter_map(|r| r.get("location"))
                .filter_map(|l| {
                    l.get("s3Location")
                        .and_then(|x| x.get("uri"))
                        .or_else(|| l.get("webLocation").and_then(|x| x.get("url")))
                        .or_else(|| l.get("confluenceLocation").and_then(|x| x.get("url")))
                        .or_else(|| l.get("sharePointLocation").and_then(|x| x.get("url")))
                        .or_else(|| l.get("salesforceLocation").and_then(|x| x.get("url")))
                        .and_then(Value::as_str)
                })
                .collect();
            uris.dedup();
            if !uris.is_empty() {
                bld.nodes[node]
                    .attrs
                    .push(str_array("aws.bedrock.knowledge_base.locations", &uris));
            }
        }
        ToolKind::Collaborator => {
            let text = get_obj(out, "output").and_then(|o| get_str(o, "text"));
            bld.text_event(node, time, "aws.bedrock.collaborator.output", "text", text);
        }
    }
}

fn guardrail(bld: &mut Builder<'_>, e: &Event<'_>, key: String) -> usize {
    let body = e.body;
    let origin = if e.trace_id.contains("guardrail-post") {
        "output"
    } else {
        "input"
    };
    let action = get_str(body, "action").unwrap_or("NONE");
    let mut n = Node {
        key,
        name: format!("guardrail {origin}"),
        kind: KIND_INTERNAL,
        times: e.time.into_iter().collect(),
        attrs: vec![
            s("aws.bedrock.guardrail.action", action),
            s("aws.bedrock.guardrail.origin", origin),
        ],
        ..Default::default()
    };
    let mut hits: Vec<String> = Vec::new();
    for field in ["inputAssessments", "outputAssessments"] {
        let Some(list) = body.get(field).and_then(Value::as_array) else {
            continue;
        };
        for a in list.iter().filter_map(Value::as_object) {
            for (policy, detail) in a.iter().filter(|(k, _)| k.as_str() != "__type") {
                let Some(detail) = detail.as_object() else {
                    continue;
                };
                for items in detail.values().filter_map(Value::as_array) {
                    for it in items {
                        let ty = it
                            .get("type")
                            .or_else(|| it.get("name"))
                            .and_then(Value::as_str)
                            .unwrap_or("?");
                        let act = it.get("action").and_then(Value::as_str).unwrap_or("?");
                        hits.push(format!("{policy}:{ty}:{act}"));
                    }
                }
            }
        }
    }
    if !hits.is_empty() {
        let refs: Vec<&str> = hits.iter().map(String::as_str).collect();
        n.attrs
            .push(str_array("aws.bedrock.guardrail.findings", &refs));
    }
    if action != "NONE" {
        n.error = Some((
            "guardrail_intervened".into(),
            format!("guardrail {action} on the {origin}"),
        ));
    }
    let node = bld.add(n);
    bld.set_exact(node, get_obj(body, "metadata"));
    node
}

/// Attaches each collaborator invocation to the call that made it.
fn join_collaborators(bld: &mut Builder<'_>, invs: &mut [Invocation<'_>]) {
    for child in 0..invs.len() {
        let key = invs[child].key;
        let mut found = None;
        'outer: for (p, inv) in invs.iter().enumerate() {
            if p == child {
                continue;
            }
            for (c, call) in inv.calls.iter().enumerate() {
                if !call.joined && call.client_request_id.as_deref() == Some(key) {
                    found = Some((p, c));
                    break 'outer;
                }
            }
        }
        if found.is_none() {
            // Fallback: the caller's chain is the child's chain without its last element,
            // and the call went to the child's alias.
            let chain = invs[child].caller_chain.clone();
            if chain.len() >= 2 {
                let (parent_chain, last) = chain.split_at(chain.len() - 1);
                'fallback: for (p, inv) in invs.iter().enumerate() {
                    if p == child || inv.caller_chain != parent_chain {
                        continue;
                    }
                    for (c, call) in inv.calls.iter().enumerate() {
                        if !call.joined
                            && call.client_request_id.is_none()
                            && call.alias_arn.as_deref() == Some(last[0])
                        {
                            found = Some((p, c));
                            break 'fallback;
                        }
                    }
                }
            }
        }
        let Some((p, c)) = found else { continue };
        invs[p].calls[c].joined = true;
        invs[child].joined = true;
        let node = invs[p].calls[c].node;
        let steps = invs[child].steps.clone();
        bld.nodes[node].children.extend(steps);
        let first = invs[child].first.clone();
        let attrs = &mut bld.nodes[node].attrs;
        if let Some(id) = first.part_str("agentId") {
            if !attrs.iter().any(|kv| kv.key == "gen_ai.agent.id") {
                attrs.push(s("gen_ai.agent.id", id));
            }
        }
        if let Some(v) = first.part_str("agentVersion") {
            attrs.push(s("gen_ai.agent.version", v));
        }
        if let Some(sid) = first.part_str("sessionId") {
            attrs.push(s("gen_ai.conversation.id", sid));
        }
        attrs.push(s("aws.bedrock.invocation_id", invs[child].key));
        if !bld.nodes[node].exact {
            let md = invs[child].root_md;
            bld.set_exact(node, md);
        }
        if invs[child].failed && bld.nodes[node].error.is_none() {
            bld.nodes[node].error = Some((
                "collaborator_failed".into(),
                "the collaborator invocation failed".into(),
            ));
        }
    }
}

fn root_node(bld: &mut Builder<'_>, inv: &Invocation<'_>) -> usize {
    let e = &inv.first;
    let agent = e.part_str("agentId");
    let mut attrs = vec![
        s("gen_ai.operation.name", "invoke_agent"),
        s("gen_ai.provider.name", "aws.bedrock"),
        s("aws.bedrock.invocation_id", inv.key),
    ];
    match agent {
        Some(a) => attrs.push(s("gen_ai.agent.id", a)),
        None => attrs.push(b("aws.bedrock.inline_agent", true)),
    }
    if let Some(v) = e.part_str("agentVersion") {
        attrs.push(s("gen_ai.agent.version", v));
    }
    if let Some(v) = e.part_str("agentAliasId") {
        attrs.push(s("aws.bedrock.agent.alias_id", v));
    }
    if let Some(v) = e.part_str("sessionId") {
        attrs.push(s("gen_ai.conversation.id", v));
        attrs.push(s("session.id", v));
    }
    if let Some(arn) = inv.caller_chain.last() {
        attrs.push(s("aws.bedrock.agent.alias_arn", *arn));
    }
    let node = bld.add(Node {
        key: format!("root:{}", inv.key),
        name: format!("invoke_agent {}", agent.unwrap_or("inline_agent")),
        kind: KIND_CLIENT,
        attrs,
        children: inv.steps.clone(),
        ..Default::default()
    });
    if let Some(md) = inv.root_md {
        let end = parse_time(md.get("endTime"));
        let total = md.get("operationTotalTimeMs").and_then(Value::as_u64);
        match (end, total) {
            (Some(end), Some(ms)) => {
                let n = &mut bld.nodes[node];
                n.start = Some(end.saturating_sub(ms * 1_000_000));
                n.end = Some(end);
                n.exact = true;
            }
            _ => bld.set_exact(node, Some(md)),
        }
    }
    if let Some((text, time)) = inv.final_text {
        bld.text_event(node, time, "aws.bedrock.final_response", "text", Some(text));
    }
    if inv.failed {
        bld.nodes[node].error = Some((
            "agent_invocation_failed".into(),
            "the agent invocation failed".into(),
        ));
    }
    node
}

/// Bounds for every span in the tree under `root` (see the module doc).
fn time_tree(nodes: &mut [Node], root: usize) {
    initial_bounds(nodes, root, None);
    clamp_into_parent(nodes, root);
    cover_children(nodes, root);
}

/// Bottom-up: spans without metadata take their children's extent, or run
/// from the previous sibling's end to their last event time.
fn initial_bounds(nodes: &mut [Node], idx: usize, prev_sibling_end: Option<u64>) {
    let children = nodes[idx].children.clone();
    let mut prev = None;
    for c in &children {
        initial_bounds(nodes, *c, prev);
        if let Some(e) = nodes[*c].end {
            prev = Some(prev.map_or(e, |p: u64| p.max(e)));
        }
    }
    if nodes[idx].exact {
        return;
    }
    let starts = children.iter().filter_map(|c| nodes[*c].start).min();
    let ends = children.iter().filter_map(|c| nodes[*c].end).max();
    let n = &mut nodes[idx];
    match (starts, ends) {
        (Some(s), Some(e)) => {
            n.start = Some(s);
            n.end = Some(e);
        }
        _ => {
            let last = n.times.iter().copied().max();
            let first = n.times.iter().copied().min();
            n.end = last;
            n.start = match (prev_sibling_end, last) {
                (Some(p), Some(l)) if p <= l => Some(p),
                _ => first,
            };
        }
    }
}

/// Top-down: spans without metadata are kept inside their parent.
fn clamp_into_parent(nodes: &mut [Node], idx: usize) {
    let (ps, pe) = (nodes[idx].start, nodes[idx].end);
    let children = nodes[idx].children.clone();
    for c in children {
        if !nodes[c].exact {
            if let (Some(ps), Some(pe)) = (ps, pe) {
                let n = &mut nodes[c];
                n.start = Some(n.start.unwrap_or(ps).clamp(ps, pe));
                n.end = Some(n.end.unwrap_or(pe).clamp(ps, pe));
                if n.end < n.start {
                    n.end = n.start;
                }
            }
        }
        clamp_into_parent(nodes, c);
    }
}

/// Bottom-up: parents widen to cover their children.
fn cover_children(nodes: &mut [Node], idx: usize) {
    let children = nodes[idx].children.clone();
    for c in &children {
        cover_children(nodes, *c);
    }
    let cs = children.iter().filter_map(|c| nodes[*c].start).min();
    let ce = children.iter().filter_map(|c| nodes[*c].end).max();
    let n = &mut nodes[idx];
    if let Some(cs) = cs {
        n.start = Some(n.start.map_or(cs, |s| s.min(cs)));
    }
    if let Some(ce) = ce {
        n.end = Some(n.end.map_or(ce, |e| e.max(ce)));
    }
    if let (Some(s), None) = (n.start, n.end) {
        n.end = Some(s);
    }
}

/// Marks the root ERROR when a guardrail blocked something under it (a failed
/// invocation is marked already). Tool errors the agent recovered from stay
/// on their own spans.
fn propagate_error(nodes: &mut [Node], root: usize) {
    fn first_error(nodes: &[Node], idx: usize) -> Option<(String, String)> {
        if let Some(e) = nodes[idx]
            .error
            .as_ref()
            .filter(|e| e.0 == "guardrail_intervened")
        {
            return Some(e.clone());
        }
        nodes[idx]
            .children
            .iter()
            .find_map(|c| first_error(nodes, *c))
    }
    if nodes[root].error.is_none() {
        nodes[root].error = nodes[root]
            .children
            .iter()
            .find_map(|c| first_error(nodes, *c));
    }
}

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize().into()
}

/// The trace id of a top-level invocation: its UUID's bytes, or a hash of its key.
fn trace_id_for(key: &str) -> Vec<u8> {
    let hexed: String = key.chars().filter(|c| *c != '-').collect();
    if let Ok(bytes) = hex::decode(&hexed) {
        if bytes.len() == 16 && bytes.iter().any(|b| *b != 0) {
            return bytes;
        }
    }
    digest(&["spanwire.bedrock.trace", key])[..16].to_vec()
}

fn span_id_for(root_key: &str, node_key: &str) -> Vec<u8> {
    let d = digest(&["spanwire.bedrock.span", root_key, node_key]);
    let mut id = d[..8].to_vec();
    if id.iter().all(|b| *b == 0) {
        id[7] = 1;
    }
    id
}

fn emit(
    nodes: &[Node],
    idx: usize,
    trace_id: &[u8],
    root_key: &str,
    parent: &[u8],
    out: &mut Vec<Span>,
) {
    let n = &nodes[idx];
    let span_id = span_id_for(root_key, &n.key);
    let start = n.start.unwrap_or(0);
    let end = n.end.unwrap_or(start).max(start);
    let events = n
        .events
        .iter()
        .map(|(t, name, attrs)| span::Event {
            time_unix_nano: t.unwrap_or(end).clamp(start, end),
            name: name.clone(),
            attributes: attrs.clone(),
            dropped_attributes_count: 0,
        })
        .collect();
    let mut attributes = n.attrs.clone();
    let status = match &n.error {
        Some((ty, message)) => {
            attributes.push(s("error.type", ty.clone()));
            Some(Status {
                message: message.clone(),
                code: status::StatusCode::Error as i32,
            })
        }
        None => None,
    };
    out.push(Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.clone(),
        parent_span_id: parent.to_vec(),
        name: n.name.clone(),
        kind: n.kind,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        events,
        status,
        ..Default::default()
    });
    for c in &n.children {
        emit(nodes, *c, trace_id, root_key, &span_id, out);
    }
}
