//! CloudWatch Logs events going out: OTLP log records → event messages, the
//! `{ServiceName}`-style placeholders of log group and stream names, and the
//! PutLogEvents rules a batch of events must follow ([`plan`]).

use std::fmt::Write as _;

use opentelemetry_proto::tonic::common::v1::{any_value, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;

use crate::convert::json::{push_hex, Writer};

/// Bytes CloudWatch Logs counts for each event on top of its message.
pub const EVENT_OVERHEAD_BYTES: usize = 26;
/// Largest event message: 256 KiB including the per-event overhead.
pub const MAX_EVENT_BYTES: usize = 262_144 - EVENT_OVERHEAD_BYTES;
/// Most events in one PutLogEvents call.
pub const MAX_EVENTS_PER_CALL: usize = 10_000;
/// Most bytes in one call: messages plus 26 bytes per event.
pub const MAX_BYTES_PER_CALL: usize = 1_048_576;
/// Longest time from the first to the last event of one call.
pub const MAX_CALL_SPAN_MS: i64 = 24 * 3600 * 1000;
/// Events older than this are refused.
pub const MAX_AGE_MS: i64 = 14 * 24 * 3600 * 1000;
/// Events further ahead than this are refused.
pub const MAX_AHEAD_MS: i64 = 2 * 3600 * 1000;

/// One log event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The message (UTF-8).
    pub message: String,
    /// Data items it carries (metric points for EMF, 1 for a log record),
    /// for exact loss counts.
    pub items: u32,
}

/// Events arranged into PutLogEvents calls.
#[derive(Debug, Default)]
pub struct Plan {
    /// Each call's events: sorted by time, ≤ 10,000, ≤ 1 MiB with overhead,
    /// spanning < 24 h.
    pub calls: Vec<Vec<LogEvent>>,
    /// Events older than 14 days (not sent).
    pub too_old: usize,
    /// Events more than 2 hours ahead (not sent).
    pub too_new: usize,
    /// Events over 256 KiB (not sent).
    pub too_large: usize,
    /// Data items in the events left out.
    pub refused_items: usize,
}

/// Sorts `events` by time and cuts them into calls that follow the
/// PutLogEvents rules; events CloudWatch would refuse are counted instead.
pub fn plan(mut events: Vec<LogEvent>, now_ms: i64) -> Plan {
    let mut p = Plan::default();
    events.retain(|e| {
        let slot = if e.timestamp_ms < now_ms - MAX_AGE_MS {
            &mut p.too_old
        } else if e.timestamp_ms > now_ms + MAX_AHEAD_MS {
            &mut p.too_new
        } else if e.message.len() > MAX_EVENT_BYTES {
            &mut p.too_large
        } else {
            return true;
        };
        *slot += 1;
        p.refused_items += e.items as usize;
        false
    });
    events.sort_by_key(|e| e.timestamp_ms);
    let mut call: Vec<LogEvent> = Vec::new();
    let mut bytes = 0usize;
    for e in events {
        let size = e.message.len() + EVENT_OVERHEAD_BYTES;
        let full = call.len() >= MAX_EVENTS_PER_CALL
            || bytes + size > MAX_BYTES_PER_CALL
            || call
                .first()
                .is_some_and(|f| e.timestamp_ms - f.timestamp_ms >= MAX_CALL_SPAN_MS);
        if full && !call.is_empty() {
            p.calls.push(std::mem::take(&mut call));
            bytes = 0;
        }
        bytes += size;
        call.push(e);
    }
    if !call.is_empty() {
        p.calls.push(call);
    }
    p
}

/// Placeholders a log group or stream name may hold, and the resource
/// attributes they read.
pub const PLACEHOLDERS: &[(&str, &[&str])] = &[
    ("ServiceName", &["service.name"]),
    ("ServiceNamespace", &["service.namespace"]),
    ("ServiceInstanceId", &["service.instance.id"]),
    ("PodName", &["k8s.pod.name"]),
    ("NodeName", &["k8s.node.name"]),
    ("K8sNamespace", &["k8s.namespace.name"]),
    ("ContainerName", &["k8s.container.name", "container.name"]),
    ("ClusterName", &["k8s.cluster.name", "aws.ecs.cluster.name"]),
    ("TaskId", &["aws.ecs.task.id"]),
    ("TaskDefinitionFamily", &["aws.ecs.task.family"]),
    ("InstanceId", &["host.id"]),
    ("HostName", &["host.name"]),
];

/// Checks that every `{...}` in `template` is a known placeholder.
pub fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!("`{template}`: `{{` without a closing `}}`"));
        };
        let name = &after[..close];
        if !PLACEHOLDERS.iter().any(|(p, _)| *p == name) {
            let known: Vec<&str> = PLACEHOLDERS.iter().map(|(p, _)| *p).collect();
            return Err(format!(
                "`{template}`: unknown placeholder `{{{name}}}` (known: {})",
                known.join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

fn attr_string(res: &[KeyValue], key: &str) -> Option<String> {
    res.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::StringValue(s)) if !s.is_empty() => Some(s.clone()),
            Some(any_value::Value::IntValue(i)) => Some(i.to_string()),
            _ => None,
        })
}

/// What names may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// Log group: `[A-Za-z0-9._/#-]`, ≤ 512 characters.
    Group,
    /// Log stream: anything but `:` and `*`, ≤ 512 characters.
    Stream,
    /// EMF namespace: `[A-Za-z0-9.\-_/#: ]`.
    Namespace,
}

/// Fills the placeholders of a (checked) template from resource attributes;
/// a missing attribute reads `undefined`. Characters the name may not hold
/// become `_`.
pub fn expand(template: &str, res: &[KeyValue], kind: NameKind) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let name = &after[..close];
        let value = PLACEHOLDERS
            .iter()
            .find(|(p, _)| *p == name)
            .and_then(|(_, keys)| {
                // The placeholder's own name first (a `resource` processor
                // may have set `ClusterName`), then the OTel keys.
                std::iter::once(&name)
                    .chain(keys.iter())
                    .find_map(|k| attr_string(res, k))
            })
            .unwrap_or_else(|| "undefined".to_string());
        out.push_str(&value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    let cleaned: String = out
        .chars()
        .map(|c| match kind {
            NameKind::Group if c.is_ascii_alphanumeric() || "._/#-".contains(c) => c,
            NameKind::Group => '_',
            NameKind::Stream if c == ':' || c == '*' => '_',
            NameKind::Stream => c,
            NameKind::Namespace if c.is_ascii_alphanumeric() || ".-_/#: ".contains(c) => c,
            NameKind::Namespace => '_',
        })
        .take(512)
        .collect();
    if cleaned.is_empty() {
        "undefined".into()
    } else {
        cleaned
    }
}

/// How a log record becomes a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// A JSON object with body, severity, attributes, resource, scope, ids.
    Json,
    /// The body alone: a string as it is, anything else as JSON.
    Raw,
}

/// A record's time in ms: its own time, else when it was observed, else now.
pub fn record_time_ms(r: &LogRecord, now_ms: i64) -> i64 {
    let ns = if r.time_unix_nano != 0 {
        r.time_unix_nano
    } else {
        r.observed_time_unix_nano
    };
    if ns == 0 {
        now_ms
    } else {
        (ns / 1_000_000) as i64
    }
}

/// A log record as an event message, cut to [`MAX_EVENT_BYTES`] (the second
/// value says whether it was cut).
pub fn record_message(
    res: &[KeyValue],
    scope: Option<&InstrumentationScope>,
    r: &LogRecord,
    format: LogFormat,
) -> (String, bool) {
    let mut out = String::with_capacity(256);
    match format {
        LogFormat::Raw => match r.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => out.push_str(s),
            None => {}
            Some(_) => {
                let mut w = Writer::new(&mut out, usize::MAX);
                w.any_value(r.body.as_ref());
            }
        },
        LogFormat::Json => {
            let mut w = Writer::new(&mut out, usize::MAX);
            w.begin_object();
            if r.body.is_some() {
                w.key("body");
                w.any_value(r.body.as_ref());
            }
            if r.severity_number != 0 {
                w.int_field("severity_number", r.severity_number as i64);
            }
            if !r.severity_text.is_empty() {
                w.str_field("severity_text", &r.severity_text);
            }
            if !r.event_name.is_empty() {
                w.str_field("event_name", &r.event_name);
            }
            if r.flags != 0 {
                w.int_field("flags", r.flags as i64);
            }
            if r.trace_id.iter().any(|b| *b != 0) {
                w.key("trace_id");
                let mut s = String::with_capacity(32);
                push_hex(&mut s, &r.trace_id);
                w.str_value(&s);
            }
            if r.span_id.iter().any(|b| *b != 0) {
                w.key("span_id");
                let mut s = String::with_capacity(16);
                push_hex(&mut s, &r.span_id);
                w.str_value(&s);
            }
            if !r.attributes.is_empty() {
                w.key("attributes");
                w.begin_object();
                for kv in &r.attributes {
                    w.key(&kv.key);
                    w.any_value(kv.value.as_ref());
                }
                w.end_object();
            }
            if !res.is_empty() {
                w.key("resource");
                w.begin_object();
                for kv in res {
                    w.key(&kv.key);
                    w.any_value(kv.value.as_ref());
                }
                w.end_object();
            }
            if let Some(s) = scope.filter(|s| !s.name.is_empty()) {
                w.key("scope");
                w.begin_object();
                w.str_field("name", &s.name);
                if !s.version.is_empty() {
                    w.str_field("version", &s.version);
                }
                w.end_object();
            }
            w.end_object();
        }
    }
    if out.len() <= MAX_EVENT_BYTES {
        return (out, false);
    }
    // Too large: keep the start, say it was cut. A JSON message stops being
    // JSON here; CloudWatch takes it as text.
    const MARK: &str = "…[truncated by spanwire]";
    let mut cut = MAX_EVENT_BYTES - MARK.len();
    while !out.is_char_boundary(cut) {
        cut -= 1;
    }
    out.truncate(cut);
    let _ = write!(out, "{MARK}");
    (out, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::string_attribute;

    fn ev(ts: i64, len: usize) -> LogEvent {
        LogEvent {
            timestamp_ms: ts,
            message: "x".repeat(len),
            items: 1,
        }
    }

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn calls_hold_at_most_10000_events() {
        let events: Vec<LogEvent> = (0..25_001).map(|i| ev(NOW - i, 10)).collect();
        let p = plan(events, NOW);
        assert_eq!(
            p.calls.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![10_000, 10_000, 5_001]
        );
        for c in &p.calls {
            assert!(c.windows(2).all(|w| w[0].timestamp_ms <= w[1].timestamp_ms));
        }
        // Sorted across calls too: the oldest first.
        assert_eq!(p.calls[0][0].timestamp_ms, NOW - 25_000);
    }

    #[test]
    fn calls_hold_at_most_a_mebibyte_with_overhead() {
        // 100 KiB events: 10 fit (10 × (102,400 + 26) = 1,024,260), 11 do not.
        let events: Vec<LogEvent> = (0..25).map(|i| ev(NOW + i, 102_400)).collect();
        let p = plan(events, NOW);
        assert_eq!(
            p.calls.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![10, 10, 5]
        );
        for c in &p.calls {
            let bytes: usize = c.iter().map(|e| e.message.len() + 26).sum();
            assert!(bytes <= MAX_BYTES_PER_CALL);
        }
        // Exactly at the limit: 1,048,576 = 8 × (131,046 + 26).
        let events: Vec<LogEvent> = (0..9).map(|i| ev(NOW + i, 131_046)).collect();
        let p = plan(events, NOW);
        assert_eq!(p.calls.iter().map(Vec::len).collect::<Vec<_>>(), vec![8, 1]);
    }

    #[test]
    fn a_call_spans_less_than_a_day() {
        let h = 3600 * 1000;
        let events = vec![
            ev(NOW - 13 * 24 * h, 1),
            ev(NOW - 13 * 24 * h + 23 * h, 1),
            ev(NOW - 12 * 24 * h, 1), // exactly 24 h after the first
            ev(NOW, 1),
        ];
        let p = plan(events, NOW);
        assert_eq!(
            p.calls.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 1, 1]
        );
    }

    #[test]
    fn refuses_too_old_too_new_and_too_large() {
        let events = vec![
            ev(NOW - MAX_AGE_MS - 1, 1),
            ev(NOW - MAX_AGE_MS, 1),
            ev(NOW + MAX_AHEAD_MS, 1),
            ev(NOW + MAX_AHEAD_MS + 1, 1),
            ev(NOW, MAX_EVENT_BYTES),
            ev(NOW, MAX_EVENT_BYTES + 1),
        ];
        let p = plan(events, NOW);
        assert_eq!((p.too_old, p.too_new, p.too_large), (1, 1, 1));
        assert_eq!(p.refused_items, 3);
        assert_eq!(p.calls.iter().map(Vec::len).sum::<usize>(), 3);
    }

    #[test]
    fn placeholders() {
        let res = vec![
            string_attribute("service.name", "travel agent"),
            string_attribute("k8s.pod.name", "agent-7f9c"),
            string_attribute("k8s.node.name", "ip-10-0-0-1"),
        ];
        assert_eq!(
            expand("/spanwire/{ServiceName}/metrics", &res, NameKind::Group),
            "/spanwire/travel_agent/metrics"
        );
        assert_eq!(
            expand("{NodeName}:{PodName}*", &res, NameKind::Stream),
            "ip-10-0-0-1_agent-7f9c_"
        );
        assert_eq!(expand("{TaskId}", &res, NameKind::Stream), "undefined");
        assert!(check_template("/a/{ServiceName}/{PodName}").is_ok());
        let e = check_template("/a/{Nope}").unwrap_err();
        assert!(e.contains("unknown placeholder `{Nope}`"), "{e}");
        assert!(check_template("/a/{ServiceName").is_err());
    }

    #[test]
    fn record_messages() {
        let r = LogRecord {
            time_unix_nano: 1_700_000_000_123_456_789,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                value: Some(any_value::Value::StringValue("hello \"world\"".into())),
            }),
            attributes: vec![string_attribute("k", "v")],
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            ..Default::default()
        };
        let res = vec![string_attribute("service.name", "svc")];
        let (m, cut) = record_message(&res, None, &r, LogFormat::Json);
        assert!(!cut);
        let v: serde_json::Value = serde_json::from_str(&m).unwrap();
        assert_eq!(v["body"], "hello \"world\"");
        assert_eq!(v["severity_number"], 9);
        assert_eq!(v["severity_text"], "INFO");
        assert_eq!(v["attributes"]["k"], "v");
        assert_eq!(v["resource"]["service.name"], "svc");
        assert_eq!(v["trace_id"], "01".repeat(16));
        assert_eq!(v["span_id"], "02".repeat(8));
        assert_eq!(record_time_ms(&r, 5), 1_700_000_000_123);
        let (m, _) = record_message(&res, None, &r, LogFormat::Raw);
        assert_eq!(m, "hello \"world\"");

        let big = LogRecord {
            body: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                value: Some(any_value::Value::StringValue("é".repeat(200_000))),
            }),
            ..Default::default()
        };
        let (m, cut) = record_message(&res, None, &big, LogFormat::Raw);
        assert!(cut);
        assert!(m.len() <= MAX_EVENT_BYTES);
        assert!(m.ends_with("[truncated by spanwire]"));
        assert_eq!(record_time_ms(&big, 42), 42);
    }
}
