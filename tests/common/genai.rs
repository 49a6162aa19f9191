//! Expected agent metrics, counted straight from spans.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

fn attr<'a>(attrs: &'a [KeyValue], k: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == k)?
        .value
        .as_ref()?
        .value
        .as_ref()
}

fn int(attrs: &[KeyValue], k: &str) -> i64 {
    match attr(attrs, k) {
        Some(any_value::Value::IntValue(i)) => *i,
        _ => 0,
    }
}

/// Expected totals, counted straight from the spans.
#[derive(Default, Debug, PartialEq)]
pub struct Expected {
    pub by_operation: BTreeMap<String, f64>,
    pub input_tokens: f64,
    pub output_tokens: f64,
    pub other_spans: f64,
}

pub fn expect(rs: &[ResourceSpans], e: &mut Expected) {
    let ids: std::collections::HashSet<&[u8]> = rs
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.span_id.as_slice())
        .collect();
    for s in rs
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
    {
        // OpenLLMetry names tools and workflows by `traceloop.span.kind`:
        // a tool is a tool call, a workflow root (no parent among the spans
        // sent) an invocation (the model's dialect table).
        let traceloop = match attr(&s.attributes, "traceloop.span.kind") {
            Some(any_value::Value::StringValue(k)) if k == "tool" => Some("execute_tool"),
            Some(any_value::Value::StringValue(k))
                if k == "workflow" && !ids.contains(s.parent_span_id.as_slice()) =>
            {
                Some("invoke_agent")
            }
            _ => None,
        };
        match (attr(&s.attributes, "gen_ai.operation.name"), traceloop) {
            (Some(any_value::Value::StringValue(op)), _) => {
                *e.by_operation.entry(op.clone()).or_default() += 1.0;
                e.input_tokens += int(&s.attributes, "gen_ai.usage.input_tokens") as f64;
                e.output_tokens += int(&s.attributes, "gen_ai.usage.output_tokens") as f64;
            }
            (_, Some(op)) => {
                *e.by_operation.entry(op.into()).or_default() += 1.0;
                // A workflow is a rollup: also in `span.calls`.
                if op == "invoke_agent" {
                    e.other_spans += 1.0;
                }
            }
            _ => e.other_spans += 1.0,
        }
    }
}

/// Posts every Bedrock fixture to a bedrock receiver on `port` (whose
/// resource is `service.name: travel-app`) and adds what each converts to
/// into `expected`.
pub async fn replay_bedrock_fixtures(port: u16, expected: &mut Expected) {
    use spanwire::convert::bedrock;
    let opts = bedrock::Options {
        resource_attributes: vec![spanwire::signal::string_attribute(
            "service.name",
            "travel-app",
        )],
        ..Default::default()
    };
    let dir = format!("{}/tests/fixtures/bedrock", env!("CARGO_MANIFEST_DIR"));
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap();
        let events = bedrock::parse_events(&text).unwrap();
        expect(&bedrock::convert(&events, &opts).resource_spans, expected);
        let r = super::http_request(
            "POST",
            port,
            "/v1/bedrock/traces",
            &[("content-type", "application/json")],
            text.into_bytes(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", p.display());
    }
}
