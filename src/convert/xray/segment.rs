//! X-Ray segment documents → OTLP spans, as the Collector's `awsxray`
//! receiver maps them.
//!
//! The X-Ray daemon protocol: one UDP datagram per document, a header line
//! `{"format": "json", "version": 1}`, a newline, then a segment document
//! (a segment, or a subsegment sent on its own with `type: "subsegment"`).
//!
//! - a segment becomes a `SERVER` span; a subsegment with `namespace`
//!   `aws` or `remote` a `CLIENT` span (with `rpc.*` for `aws`), others
//!   `INTERNAL`; nested subsegments become child spans;
//! - ids: `1-5759e988-bd862e3fe1be46a994272793` → the 16-byte trace id,
//!   `id` / `parent_id` → span ids; times in float seconds → nanoseconds;
//! - `http`, `aws` and `sql` blocks → `http.*`, `aws.*`, `db.*` attributes;
//!   `annotations` → attributes (their keys listed in `aws.xray.annotations`),
//!   `metadata` → `aws.xray.metadata.<namespace>` (JSON);
//! - `fault` / `error` → status `ERROR`; `throttle` → `aws.xray.throttle`;
//!   `cause.exceptions` → `exception` events (type, message, stack);
//! - `in_progress` documents carry `aws.xray.inprogress: true` (the receiver
//!   holds them until the complete document replaces them);
//! - the segment's `name` is the resource's `service.name`, `service.version`
//!   and `origin` give `service.version` and `cloud.platform`.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::{Event, SpanKind},
    status::StatusCode,
    ResourceSpans, ScopeSpans, Span, Status,
};
use serde_json::Value;

use crate::signal::{attribute, string_attribute};

/// Why a datagram was not a segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// The first line is not the daemon protocol header.
    #[error("the header line is not {{\"format\": \"json\", \"version\": 1}}")]
    BadHeader,
    /// The document is not JSON.
    #[error("the segment document is not JSON: {0}")]
    BadJson(String),
    /// The document is JSON but not a segment.
    #[error("not a segment document: {0}")]
    BadSegment(String),
}

/// A segment document read from a datagram.
#[derive(Debug, Clone)]
pub struct Document {
    /// Its `id`.
    pub id: String,
    /// Whether it is in progress (a complete one will follow).
    pub in_progress: bool,
    /// The document.
    pub doc: Value,
}

/// Reads one daemon-protocol datagram.
pub fn read_datagram(bytes: &[u8]) -> Result<Document, DatagramError> {
    let nl = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or(DatagramError::BadHeader)?;
    let header: Value =
        serde_json::from_slice(&bytes[..nl]).map_err(|_| DatagramError::BadHeader)?;
    if header.get("format").and_then(Value::as_str) != Some("json")
        || header.get("version").and_then(Value::as_i64) != Some(1)
    {
        return Err(DatagramError::BadHeader);
    }
    let doc: Value = serde_json::from_slice(&bytes[nl + 1..])
        .map_err(|e| DatagramError::BadJson(e.to_string()))?;
    let id = doc
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| parse_span_id(id).is_some())
        .ok_or_else(|| DatagramError::BadSegment("`id` must be 16 hex digits".into()))?
        .to_string();
    if doc
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(DatagramError::BadSegment("no `name`".into()));
    }
    let trace = doc.get("trace_id").and_then(Value::as_str).unwrap_or("");
    if parse_trace_id(trace).is_none() {
        return Err(DatagramError::BadSegment(format!(
            "`trace_id` `{trace}` is not 1-xxxxxxxx-xxxxxxxxxxxxxxxxxxxxxxxx"
        )));
    }
    if doc.get("start_time").and_then(Value::as_f64).is_none() {
        return Err(DatagramError::BadSegment("no `start_time`".into()));
    }
    let in_progress = doc.get("in_progress").and_then(Value::as_bool) == Some(true);
    if !in_progress && doc.get("end_time").and_then(Value::as_f64).is_none() {
        return Err(DatagramError::BadSegment(
            "neither `end_time` nor `in_progress`".into(),
        ));
    }
    Ok(Document {
        id,
        in_progress,
        doc,
    })
}

/// `1-5759e988-bd862e3fe1be46a994272793` → 16 bytes.
pub fn parse_trace_id(s: &str) -> Option<Vec<u8>> {
    let mut parts = s.split('-');
    let (v, time, rest) = (parts.next()?, parts.next()?, parts.next()?);
    if v != "1" || time.len() != 8 || rest.len() != 24 || parts.next().is_some() {
        return None;
    }
    hex::decode(format!("{time}{rest}")).ok()
}

/// 16 hex digits → 8 bytes.
pub fn parse_span_id(s: &str) -> Option<Vec<u8>> {
    (s.len() == 16).then(|| hex::decode(s).ok()).flatten()
}

/// Float seconds → nanoseconds, to the microsecond (an f64 of epoch seconds
/// holds no finer digits; X-Ray SDKs write milli- or microseconds).
fn nanos(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_f64)
        .filter(|f| f.is_finite() && *f > 0.0)
        .map_or(0, |f| (f * 1e6).round() as u64 * 1000)
}

fn json_value(v: &Value) -> Option<any_value::Value> {
    Some(match v {
        Value::String(s) => any_value::Value::StringValue(s.clone()),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64()?),
        },
        _ => return None,
    })
}

/// The resource of a segment: its service.
fn resource(doc: &Value) -> Resource {
    let mut attrs = vec![string_attribute("cloud.provider", "aws")];
    if let Some(n) = doc.get("name").and_then(Value::as_str) {
        attrs.push(string_attribute("service.name", n));
    }
    if let Some(v) = doc.pointer("/service/version").and_then(Value::as_str) {
        attrs.push(string_attribute("service.version", v));
    }
    let platform = match doc.get("origin").and_then(Value::as_str) {
        Some("AWS::EC2::Instance") => Some("aws_ec2"),
        Some("AWS::ECS::Container") => Some("aws_ecs"),
        Some("AWS::EKS::Container") => Some("aws_eks"),
        Some("AWS::ElasticBeanstalk::Environment") => Some("aws_elastic_beanstalk"),
        Some("AWS::Lambda::Function") => Some("aws_lambda"),
        _ => None,
    };
    if let Some(p) = platform {
        attrs.push(string_attribute("cloud.platform", p));
    }
    for (path, key) in [
        ("/aws/ec2/instance_id", "host.id"),
        ("/aws/ec2/availability_zone", "cloud.availability_zone"),
        ("/aws/ecs/container", "container.name"),
        ("/aws/ecs/container_id", "container.id"),
        (
            "/aws/elastic_beanstalk/environment_name",
            "service.namespace",
        ),
        ("/aws/account_id", "cloud.account.id"),
    ] {
        if let Some(v) = doc.pointer(path).and_then(Value::as_str) {
            attrs.push(string_attribute(key, v));
        }
    }
    Resource {
        attributes: attrs,
        ..Default::default()
    }
}

/// The spans of a segment document (the segment and every nested
/// subsegment), under the segment's resource.
pub fn to_resource_spans(d: &Document) -> ResourceSpans {
    let mut spans = Vec::new();
    let trace = d
        .doc
        .get("trace_id")
        .and_then(Value::as_str)
        .and_then(parse_trace_id)
        .unwrap_or_default();
    let top_is_segment = d.doc.get("type").and_then(Value::as_str) != Some("subsegment");
    let parent = d
        .doc
        .get("parent_id")
        .and_then(Value::as_str)
        .and_then(parse_span_id)
        .unwrap_or_default();
    add_span(&d.doc, &trace, parent, top_is_segment, &mut spans);
    ResourceSpans {
        resource: Some(resource(&d.doc)),
        scope_spans: vec![ScopeSpans {
            scope: Some(
                opentelemetry_proto::tonic::common::v1::InstrumentationScope {
                    name: "spanwire.awsxray".into(),
                    ..Default::default()
                },
            ),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn add_span(doc: &Value, trace: &[u8], parent: Vec<u8>, is_segment: bool, out: &mut Vec<Span>) {
    let s = |k: &str| doc.get(k).and_then(Value::as_str);
    let Some(id) = s("id").and_then(parse_span_id) else {
        return;
    };
    let namespace = s("namespace");
    let kind = if is_segment {
        SpanKind::Server
    } else if matches!(namespace, Some("aws" | "remote")) {
        SpanKind::Client
    } else {
        SpanKind::Internal
    };
    let name = s("name").unwrap_or_default().to_string();
    let start = nanos(doc.get("start_time"));
    let in_progress = doc.get("in_progress").and_then(Value::as_bool) == Some(true);
    let end = if in_progress {
        start
    } else {
        nanos(doc.get("end_time")).max(start)
    };
    let mut attrs: Vec<KeyValue> = Vec::new();
    let mut put = |key: &str, v: Option<&Value>| {
        if let Some(v) = v.and_then(json_value) {
            attrs.push(attribute(key, v));
        }
    };
    put("http.method", doc.pointer("/http/request/method"));
    put("http.url", doc.pointer("/http/request/url"));
    put("http.user_agent", doc.pointer("/http/request/user_agent"));
    put("http.client_ip", doc.pointer("/http/request/client_ip"));
    put("http.status_code", doc.pointer("/http/response/status"));
    put(
        "http.response_content_length",
        doc.pointer("/http/response/content_length"),
    );
    put("aws.operation", doc.pointer("/aws/operation"));
    put("aws.region", doc.pointer("/aws/region"));
    put("aws.request_id", doc.pointer("/aws/request_id"));
    put("aws.account_id", doc.pointer("/aws/account_id"));
    put("aws.queue_url", doc.pointer("/aws/queue_url"));
    put("aws.table_name", doc.pointer("/aws/table_name"));
    put("aws.xray.retries", doc.pointer("/aws/retries"));
    put("db.connection_string", doc.pointer("/sql/url"));
    put("db.system", doc.pointer("/sql/database_type"));
    put("db.user", doc.pointer("/sql/user"));
    put("db.statement", doc.pointer("/sql/sanitized_query"));
    put("enduser.id", doc.get("user"));
    if namespace == Some("aws") {
        attrs.push(string_attribute("rpc.system", "aws-api"));
        attrs.push(string_attribute("rpc.service", name.clone()));
        if let Some(op) = doc.pointer("/aws/operation").and_then(Value::as_str) {
            attrs.push(string_attribute("rpc.method", op));
        }
    }
    if let Some(ann) = doc.get("annotations").and_then(Value::as_object) {
        let mut keys = Vec::new();
        for (k, v) in ann {
            if let Some(v) = json_value(v) {
                attrs.push(attribute(k, v));
                keys.push(AnyValue {
                    value: Some(any_value::Value::StringValue(k.clone())),
                });
            }
        }
        if !keys.is_empty() {
            attrs.push(attribute(
                "aws.xray.annotations",
                any_value::Value::ArrayValue(ArrayValue { values: keys }),
            ));
        }
    }
    if let Some(meta) = doc.get("metadata").and_then(Value::as_object) {
        for (ns, v) in meta {
            attrs.push(string_attribute(
                &format!("aws.xray.metadata.{ns}"),
                v.to_string(),
            ));
        }
    }
    if doc.get("throttle").and_then(Value::as_bool) == Some(true) {
        attrs.push(attribute(
            "aws.xray.throttle",
            any_value::Value::BoolValue(true),
        ));
    }
    if in_progress {
        attrs.push(attribute(
            "aws.xray.inprogress",
            any_value::Value::BoolValue(true),
        ));
    }
    let failed = doc.get("fault").and_then(Value::as_bool) == Some(true)
        || doc.get("error").and_then(Value::as_bool) == Some(true);
    let mut events = Vec::new();
    let mut first_message = String::new();
    if let Some(exceptions) = doc.pointer("/cause/exceptions").and_then(Value::as_array) {
        for e in exceptions {
            let mut ea = Vec::new();
            if let Some(t) = e.get("type").and_then(Value::as_str) {
                ea.push(string_attribute("exception.type", t));
            }
            if let Some(m) = e.get("message").and_then(Value::as_str) {
                if first_message.is_empty() {
                    first_message = m.to_string();
                }
                ea.push(string_attribute("exception.message", m));
            }
            if let Some(stack) = e.get("stack").and_then(Value::as_array) {
                let text: Vec<String> = stack
                    .iter()
                    .map(|f| {
                        format!(
                            "at {} ({}:{})",
                            f.get("label").and_then(Value::as_str).unwrap_or("?"),
                            f.get("path").and_then(Value::as_str).unwrap_or("?"),
                            f.get("line").and_then(Value::as_i64).unwrap_or(0)
                        )
                    })
                    .collect();
                if !text.is_empty() {
                    ea.push(string_attribute("exception.stacktrace", text.join("\n")));
                }
            }
            events.push(Event {
                time_unix_nano: end,
                name: "exception".into(),
                attributes: ea,
                dropped_attributes_count: 0,
            });
        }
    }
    out.push(Span {
        trace_id: trace.to_vec(),
        span_id: id.clone(),
        parent_span_id: parent,
        name,
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: attrs,
        events,
        status: failed.then_some(Status {
            code: StatusCode::Error as i32,
            message: first_message,
        }),
        ..Default::default()
    });
    if let Some(subs) = doc.get("subsegments").and_then(Value::as_array) {
        for sub in subs {
            add_span(sub, trace, id.clone(), false, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(doc: &str) -> Vec<u8> {
        format!("{{\"format\": \"json\", \"version\": 1}}\n{doc}").into_bytes()
    }

    #[test]
    fn a_segment_with_subsegments_becomes_spans() {
        let d = read_datagram(&datagram(
            r#"{"name":"checkout","id":"70de5b6f19ff9a0a","trace_id":"1-581cf771-a006649127e371903a2de979",
               "start_time":1478293361.271,"end_time":1478293361.449,"origin":"AWS::EC2::Instance",
               "service":{"version":"1.2.3"},
               "http":{"request":{"method":"POST","url":"https://example.com/cart","client_ip":"10.0.0.1"},
                       "response":{"status":500,"content_length":17}},
               "fault":true,"annotations":{"customer":"c-1","items":3},
               "metadata":{"debug":{"cart":[1,2]}},
               "cause":{"exceptions":[{"id":"e1","type":"ValueError","message":"bad cart",
                                        "stack":[{"path":"app.py","line":12,"label":"checkout"}]}]},
               "subsegments":[
                 {"name":"DynamoDB","id":"53995c3f42cd8ad8","start_time":1478293361.3,"end_time":1478293361.4,
                  "namespace":"aws","aws":{"operation":"PutItem","table_name":"carts","region":"us-east-1"},
                  "subsegments":[{"name":"marshal","id":"1234567890abcdef","start_time":1478293361.31,"end_time":1478293361.32}]},
                 {"name":"db","id":"abcdefabcdef0123","start_time":1478293361.35,"end_time":1478293361.36,
                  "namespace":"remote","sql":{"url":"jdbc:postgresql://db/shop","database_type":"PostgreSQL","sanitized_query":"SELECT 1"}}
               ]}"#,
        ))
        .unwrap();
        let rs = to_resource_spans(&d);
        let spans = &rs.scope_spans[0].spans;
        assert_eq!(spans.len(), 4);
        let (root, ddb, marshal, db) = (&spans[0], &spans[1], &spans[2], &spans[3]);
        assert_eq!(
            hex::encode(&root.trace_id),
            "581cf771a006649127e371903a2de979"
        );
        assert_eq!(root.kind, SpanKind::Server as i32);
        assert!(root.parent_span_id.is_empty());
        assert_eq!(root.start_time_unix_nano, 1_478_293_361_271_000_000);
        assert_eq!(root.end_time_unix_nano, 1_478_293_361_449_000_000);
        assert_eq!(root.status.as_ref().unwrap().code, StatusCode::Error as i32);
        assert_eq!(root.status.as_ref().unwrap().message, "bad cart");
        let get = |s: &Span, k: &str| {
            s.attributes
                .iter()
                .find(|kv| kv.key == k)
                .and_then(|kv| kv.value.clone())
                .and_then(|v| v.value)
        };
        assert_eq!(
            get(root, "http.status_code"),
            Some(any_value::Value::IntValue(500))
        );
        assert_eq!(
            get(root, "http.method"),
            Some(any_value::Value::StringValue("POST".into()))
        );
        assert_eq!(
            get(root, "customer"),
            Some(any_value::Value::StringValue("c-1".into()))
        );
        assert_eq!(get(root, "items"), Some(any_value::Value::IntValue(3)));
        assert_eq!(
            get(root, "aws.xray.metadata.debug"),
            Some(any_value::Value::StringValue(r#"{"cart":[1,2]}"#.into()))
        );
        assert_eq!(root.events[0].name, "exception");
        assert_eq!(ddb.kind, SpanKind::Client as i32);
        assert_eq!(ddb.parent_span_id, root.span_id);
        assert_eq!(
            get(ddb, "rpc.method"),
            Some(any_value::Value::StringValue("PutItem".into()))
        );
        assert_eq!(
            get(ddb, "aws.table_name"),
            Some(any_value::Value::StringValue("carts".into()))
        );
        assert_eq!(marshal.kind, SpanKind::Internal as i32);
        assert_eq!(marshal.parent_span_id, ddb.span_id);
        assert_eq!(db.kind, SpanKind::Client as i32);
        assert_eq!(
            get(db, "db.system"),
            Some(any_value::Value::StringValue("PostgreSQL".into()))
        );
        let res = rs.resource.unwrap().attributes;
        assert!(res.contains(&string_attribute("service.name", "checkout")));
        assert!(res.contains(&string_attribute("service.version", "1.2.3")));
        assert!(res.contains(&string_attribute("cloud.platform", "aws_ec2")));
    }

    #[test]
    fn bad_datagrams_are_told_apart() {
        assert_eq!(
            read_datagram(b"garbage").unwrap_err(),
            DatagramError::BadHeader
        );
        assert_eq!(
            read_datagram(b"{\"format\":\"json\",\"version\":2}\n{}").unwrap_err(),
            DatagramError::BadHeader
        );
        assert!(matches!(
            read_datagram(&datagram(r#"{"name":"a","id":"#)).unwrap_err(),
            DatagramError::BadJson(_)
        ));
        assert!(matches!(
            read_datagram(&datagram(
                r#"{"name":"a","id":"70de5b6f19ff9a0a","trace_id":"x","start_time":1,"end_time":2}"#
            ))
            .unwrap_err(),
            DatagramError::BadSegment(_)
        ));
        let garbage = vec![0xffu8; 65_000];
        assert_eq!(
            read_datagram(&garbage).unwrap_err(),
            DatagramError::BadHeader
        );
        let p = read_datagram(&datagram(
            r#"{"name":"a","id":"70de5b6f19ff9a0a","trace_id":"1-581cf771-a006649127e371903a2de979","start_time":1,"in_progress":true}"#,
        ))
        .unwrap();
        assert!(p.in_progress);
    }
}
