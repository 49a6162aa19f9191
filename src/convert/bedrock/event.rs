//! Bedrock agent trace events as read: the options and results of a
//! conversion, the stage of an event, and reading one event loosely.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use serde_json::{Map, Value};

/// How much prompt and response text goes into spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureContent {
    /// No text at all.
    None,
    /// Text cut to this many bytes (on a character boundary).
    Truncated(usize),
    /// All text.
    Full,
}

impl Default for CaptureContent {
    fn default() -> Self {
        CaptureContent::Truncated(4096)
    }
}

/// A W3C trace context the agent's spans should join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id.
    pub trace_id: [u8; 16],
    /// The caller's span, parent of each root `invoke_agent` span.
    pub span_id: [u8; 8],
}

impl TraceParent {
    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`.
    pub fn parse(s: &str) -> Option<TraceParent> {
        let mut parts = s.trim().split('-');
        let (version, trace, span, _flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(span, &mut span_id).ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent { trace_id, span_id })
    }
}

/// Conversion settings.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Prompt and response text in spans.
    pub capture_content: CaptureContent,
    /// Join this trace instead of starting one per invocation.
    pub traceparent: Option<TraceParent>,
    /// Resource attributes for the produced spans (e.g. `service.name`).
    pub resource_attributes: Vec<KeyValue>,
}

/// An event that could not be read; the other events still convert.
#[derive(Debug, Clone, PartialEq)]
pub struct EventError {
    /// Position of the event in the input.
    pub index: usize,
    /// Why it was skipped.
    pub message: String,
}

/// The result of a conversion.
#[derive(Debug, Clone, Default)]
pub struct Conversion {
    /// The spans, one `ResourceSpans` for all invocations.
    pub resource_spans: Vec<ResourceSpans>,
    /// Events that were skipped, with the reason.
    pub errors: Vec<EventError>,
    /// Events that were read.
    pub events: usize,
    /// Exact duplicates of an earlier event (same JSON), left out.
    pub duplicates: usize,
    /// Trace members this converter does not know (their keys, one per
    /// event); each became a span of its own.
    pub unknown_members: Vec<String>,
    /// Top-level invocations found.
    pub invocations: usize,
}

/// Which member of the `Trace` union an event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    PreProcessing,
    Orchestration,
    PostProcessing,
    RoutingClassifier,
    Guardrail,
    Failure,
    CustomOrchestration,
    /// A member this converter does not know (AWS adds some over time):
    /// the event's `member` is its key and `body` its object.
    Unknown,
}

impl Stage {
    fn from_key(k: &str) -> Option<Stage> {
        Some(match k {
            "preProcessingTrace" => Stage::PreProcessing,
            "orchestrationTrace" => Stage::Orchestration,
            "postProcessingTrace" => Stage::PostProcessing,
            "routingClassifierTrace" => Stage::RoutingClassifier,
            "guardrailTrace" => Stage::Guardrail,
            "failureTrace" => Stage::Failure,
            "customOrchestrationTrace" => Stage::CustomOrchestration,
            _ => return None,
        })
    }
}

/// One trace event, read loosely.
#[derive(Debug, Clone)]
pub(crate) struct Event<'a> {
    /// The TracePart (agent ids, session, caller chain, event time).
    pub part: &'a Map<String, Value>,
    pub stage: Stage,
    /// The member of the stage object (`modelInvocationInput`, `observation`, ...);
    /// empty for guardrail and failure traces, whose object is the body itself.
    pub member: &'a str,
    pub body: &'a Map<String, Value>,
    pub trace_id: &'a str,
    pub time: Option<u64>,
}

impl<'a> Event<'a> {
    pub fn part_str(&self, key: &str) -> Option<&'a str> {
        self.part
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The caller chain as alias ARNs.
    pub fn caller_chain(&self) -> Vec<&'a str> {
        self.part
            .get("callerChain")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.get("agentAliasArn").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Parses an RFC 3339 timestamp into Unix nanoseconds: `Z` or a `±HH:MM`
/// offset (as Python's `isoformat()` writes), `T` or a space between date and time.
pub(crate) fn parse_time(v: Option<&Value>) -> Option<u64> {
    let s = v?.as_str()?.trim();
    let (base, offset_s): (&str, i64) = match s.len().checked_sub(6).map(|i| (i, &s[i..])) {
        Some((i, tz))
            if (tz.starts_with('+') || tz.starts_with('-'))
                && tz.as_bytes()[3] == b':'
                && s.as_bytes()
                    .get(i.wrapping_sub(1))
                    .is_some_and(|b| b.is_ascii_digit()) =>
        {
            let h: i64 = tz[1..3].parse().ok()?;
            let m: i64 = tz[4..6].parse().ok()?;
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            (&s[..i], sign * (h * 3600 + m * 60))
        }
        _ => (s, 0),
    };
    let t = humantime::parse_rfc3339_weak(base).ok()?;
    let nanos = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos() as i128;
    u64::try_from(nanos - offset_s as i128 * 1_000_000_000).ok()
}

/// Unwraps `{"trace": TracePart}` to the TracePart.
fn trace_part(v: &Value) -> Option<&Map<String, Value>> {
    let o = v.as_object()?;
    if let Some(inner) = o.get("trace").and_then(Value::as_object) {
        let wrapped = inner.contains_key("trace")
            || inner.contains_key("agentId")
            || inner.contains_key("sessionId")
            || inner.contains_key("eventTime");
        if wrapped {
            return Some(inner);
        }
    }
    Some(o)
}

/// Reads one event; `Err` says why it cannot be used.
pub(crate) fn read_event(v: &Value) -> Result<Event<'_>, String> {
    let part = trace_part(v).ok_or("an event must be a JSON object")?;
    let trace = part
        .get("trace")
        .and_then(Value::as_object)
        .ok_or("no `trace` object in the event")?;
    let known = trace.iter().find(|(k, _)| Stage::from_key(k).is_some());
    let Some((key, stage_obj)) = known else {
        return unknown_member(part, trace);
    };
    let stage = Stage::from_key(key).ok_or("unknown trace type")?;
    let stage_obj = stage_obj
        .as_object()
        .ok_or_else(|| format!("`{key}` is not an object"))?;
    let (member, body): (&str, &Map<String, Value>) = match stage {
        Stage::Guardrail | Stage::Failure => ("", stage_obj),
        Stage::CustomOrchestration => ("event", stage_obj),
        _ => stage_obj
            .iter()
            .filter(|(k, _)| k.as_str() != "__type")
            .find_map(|(k, v)| v.as_object().map(|o| (k.as_str(), o)))
            .ok_or_else(|| format!("`{key}` holds no member object"))?,
    };
    let trace_id = body
        .get("traceId")
        .or_else(|| stage_obj.get("traceId"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("`{key}.{member}` has no traceId"))?;
    Ok(Event {
        part,
        stage,
        member,
        body,
        trace_id,
        time: parse_time(part.get("eventTime")),
    })
}

/// An event whose trace holds only members this converter does not know:
/// the first one whose value is an object becomes the event, as long as a
/// `traceId` can be found in it or in one of its member objects.
fn unknown_member<'a>(
    part: &'a Map<String, Value>,
    trace: &'a Map<String, Value>,
) -> Result<Event<'a>, String> {
    let found = || trace.keys().cloned().collect::<Vec<_>>().join(", ");
    let (key, body) = trace
        .iter()
        .filter(|(k, _)| k.as_str() != "__type")
        .find_map(|(k, v)| v.as_object().map(|o| (k.as_str(), o)))
        .ok_or_else(|| {
            format!(
                "the trace holds none of the known trace types, and no member object (found: {})",
                found()
            )
        })?;
    let own = body.get("traceId").and_then(Value::as_str);
    let nested = || {
        body.values()
            .filter_map(Value::as_object)
            .find_map(|o| o.get("traceId").and_then(Value::as_str))
    };
    let trace_id = own
        .or_else(nested)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("the unknown trace member `{key}` has no traceId"))?;
    Ok(Event {
        part,
        stage: Stage::Unknown,
        member: key,
        body,
        trace_id,
        time: parse_time(part.get("eventTime")),
    })
}

/// The invocation a step trace id belongs to: its UUID, or the id without its
/// step suffix when it is not a UUID.
pub(crate) fn invocation_key(trace_id: &str) -> &str {
    if trace_id.len() >= 36 && is_uuid(&trace_id[..36]) {
        return &trace_id[..36];
    }
    match trace_id.rsplit_once('-') {
        Some((head, tail)) if !head.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => trace_id,
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}
