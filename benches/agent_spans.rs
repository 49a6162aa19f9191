//! Realistic agent spans for benchmarks: one `invoke_agent` root per trace
//! with model calls and tool calls under it, carrying `gen_ai.*` attributes.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        key_strindex: 0,
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

/// One agent invocation: a root `invoke_agent` span with model calls and tool calls under it.
#[allow(dead_code)] // benches/pipeline.rs uses it; the load generator the `_in` form
pub fn agent_request(seed: u64, spans: usize) -> ExportTraceServiceRequest {
    agent_request_in(seed, spans, 97)
}

/// [`agent_request`] in session `sess-{seed % sessions}`.
pub fn agent_request_in(seed: u64, spans: usize, sessions: u64) -> ExportTraceServiceRequest {
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&seed.to_be_bytes());
    trace_id[8..].copy_from_slice(&(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_be_bytes());
    let start = 1_763_000_000_000_000_000u64 + seed * 1_000_000;
    let root_id = (seed << 16 | 1).to_be_bytes().to_vec();
    let list = (0..spans)
        .map(|i| {
            let (name, op, attrs) = match (i, i % 3) {
                (0, _) => (
                    "invoke_agent travel-planner".to_string(),
                    "invoke_agent",
                    vec![
                        kv("gen_ai.agent.id", s("AGENT7X2Q")),
                        kv("gen_ai.agent.name", s("travel-planner")),
                        kv("session.id", s(&format!("sess-{}", seed % sessions.max(1)))),
                    ],
                ),
                (_, 1) => (
                    "chat anthropic.claude-3-5-sonnet".to_string(),
                    "chat",
                    vec![
                        kv(
                            "gen_ai.request.model",
                            s("anthropic.claude-3-5-sonnet-20241022-v2:0"),
                        ),
                        kv(
                            "gen_ai.usage.input_tokens",
                            any_value::Value::IntValue(1200 + i as i64),
                        ),
                        kv(
                            "gen_ai.usage.output_tokens",
                            any_value::Value::IntValue(180),
                        ),
                        kv(
                            "gen_ai.request.temperature",
                            any_value::Value::DoubleValue(0.2),
                        ),
                        kv("gen_ai.response.finish_reasons", s("end_turn")),
                    ],
                ),
                _ => (
                    "execute_tool search_flights".to_string(),
                    "execute_tool",
                    vec![
                        kv("gen_ai.tool.name", s("search_flights")),
                        kv("gen_ai.tool.call.id", s(&format!("toolu_{seed}_{i}"))),
                    ],
                ),
            };
            let mut attributes = vec![
                kv("gen_ai.system", s("aws.bedrock")),
                kv("gen_ai.operation.name", s(op)),
            ];
            attributes.extend(attrs);
            Span {
                trace_id: trace_id.to_vec(),
                span_id: if i == 0 {
                    root_id.clone()
                } else {
                    (seed << 16 | (i as u64 + 1)).to_be_bytes().to_vec()
                },
                parent_span_id: if i == 0 { vec![] } else { root_id.clone() },
                name,
                kind: if i == 0 { 3 } else { 1 },
                start_time_unix_nano: start + i as u64 * 10_000,
                end_time_unix_nano: start + i as u64 * 10_000 + 8_000_000,
                attributes,
                status: Some(Status {
                    code: 1,
                    message: String::new(),
                }),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s("travel-agent")),
                    kv("cloud.provider", s("aws")),
                    kv("cloud.region", s("us-east-1")),
                    kv("telemetry.sdk.language", s("python")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "opentelemetry.instrumentation.bedrock".into(),
                    version: "0.40.0".into(),
                    ..Default::default()
                }),
                spans: list,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}
