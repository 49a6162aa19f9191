//! Bedrock agent trace events (the `trace` parts of an InvokeAgent or
//! InvokeInlineAgent response stream) → OTLP spans. Pure: no I/O.
//!
//! The events are read loosely (real data breaks the published model in
//! places) into events, grouped into invocations by the UUID part of their
//! `traceId`, and each invocation into steps keyed by the full `traceId`.
//! Collaborator invocations are joined to the call that made them. Spans are
//! then built and timed in `build.rs`: see that module for the rules.

pub mod assemble;
mod build;

mod event;

use event::{invocation_key, read_event, Event};
pub use event::{CaptureContent, Conversion, EventError, Options, TraceParent};

use std::collections::{HashMap, HashSet};

use serde_json::Value;

/// The identity of an event for de-duplication: a digest of its JSON
/// (object keys sorted, so key order does not matter).
pub(crate) fn event_digest(v: &Value) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    // Writing a `Value` to a Vec cannot fail; an empty text would only
    // merge events that could not be written, and there are none.
    h.update(serde_json::to_vec(v).unwrap_or_default());
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// Converts trace events (in stream order; invocations may be interleaved).
///
/// Idempotent: an event that is an exact duplicate of an earlier one (a
/// re-sent event, or a whole stream sent twice or interleaved with itself)
/// is left out and counted, and span ids are a function of the invocation
/// and of each event's identity (its step's trace id and its role in the
/// step), so the same events give the same spans and ids whenever they
/// are converted.
pub fn convert(events: &[Value], opts: &Options) -> Conversion {
    let mut read = Vec::with_capacity(events.len());
    let mut errors = Vec::new();
    let mut seen = HashSet::with_capacity(events.len());
    let mut duplicates = 0;
    let mut unknown_members = Vec::new();
    for (i, v) in events.iter().enumerate() {
        match read_event(v) {
            Ok(e) => {
                if !seen.insert(event_digest(v)) {
                    duplicates += 1;
                    continue;
                }
                if e.stage == event::Stage::Unknown {
                    unknown_members.push(e.member.to_string());
                }
                read.push(e);
            }
            Err(message) => errors.push(EventError { index: i, message }),
        }
    }
    let n = read.len();
    let mut groups: Vec<(&str, Vec<Event<'_>>)> = Vec::new();
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    for e in read {
        let key = invocation_key(e.trace_id);
        let slot = *by_key.entry(key).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[slot].1.push(e);
    }
    let (resource_spans, invocations) = build::build(groups, opts);
    Conversion {
        resource_spans,
        errors,
        events: n,
        duplicates,
        unknown_members,
        invocations,
    }
}

/// Converts a JSON document: an array of events, one event, or NDJSON.
pub fn parse_events(text: &str) -> Result<Vec<Value>, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(a)) => Ok(a),
            Ok(_) => Err("expected a JSON array of events".into()),
            Err(e) => Err(format!("invalid JSON: {e}")),
        };
    }
    let mut out = Vec::new();
    for (i, item) in serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .enumerate()
    {
        match item {
            Ok(v) => out.push(v),
            Err(e) => return Err(format!("invalid JSON in event {}: {e}", i + 1)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::event::parse_time;
    use super::*;

    #[test]
    fn invocation_keys() {
        assert_eq!(
            invocation_key("203bd987-ced4-4ddd-a370-633c8b668e7f-guardrail-post-0"),
            "203bd987-ced4-4ddd-a370-633c8b668e7f"
        );
        assert_eq!(
            invocation_key("7fc9fdb8-204f-4ef9-bc55-59257d478f30-KB-null-0"),
            "7fc9fdb8-204f-4ef9-bc55-59257d478f30"
        );
        assert_eq!(invocation_key("test-trace-id-1"), "test-trace-id");
        assert_eq!(invocation_key("plain"), "plain");
    }

    #[test]
    fn timestamps_with_offsets() {
        let z = parse_time(Some(&Value::from("2025-05-21T09:49:01.981822147Z"))).unwrap();
        let py = parse_time(Some(&Value::from("2025-05-21 09:49:01.981822147+00:00"))).unwrap();
        let cet = parse_time(Some(&Value::from("2025-05-21T11:49:01.981822147+02:00"))).unwrap();
        assert_eq!(z, py);
        assert_eq!(z, cet);
        assert_eq!(z % 1_000_000_000, 981_822_147);
        assert!(parse_time(Some(&Value::from("yesterday"))).is_none());
    }

    #[test]
    fn traceparent_parses() {
        let t =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert!(
            TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(TraceParent::parse("garbage").is_none());
    }

    #[test]
    fn unreadable_events_are_reported_and_skipped() {
        let events: Vec<Value> = serde_json::from_str(
            r#"[42, {"trace": {"weirdTrace": {}}}, {"trace": {"orchestrationTrace": {"rationale": {"text": "x"}}}},
                {"trace": {"failureTrace": {"failureCode": 500, "traceId": "abc-0"}}}]"#,
        )
        .unwrap();
        let c = convert(&events, &Options::default());
        assert_eq!(c.errors.len(), 3, "{:?}", c.errors);
        assert_eq!(c.events, 1);
        assert_eq!(c.invocations, 1);
    }

    #[test]
    fn ndjson_and_arrays() {
        assert_eq!(parse_events("{\"a\":1}\n{\"b\":2}\n").unwrap().len(), 2);
        assert_eq!(parse_events("[{\"a\":1}]").unwrap().len(), 1);
        assert!(parse_events("{\"a\":").is_err());
    }
}
