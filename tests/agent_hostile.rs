//! Hostile input for the agent-trace model, end to end (OTLP/HTTP →
//! `agentmetrics` → `prometheus`, and `live`): usage written as strings,
//! negative or 2^63; parent ids that form a cycle; a trace that never ends;
//! a million distinct trace ids. Each case is counted in self-metrics,
//! nothing crashes, the model's memory stays within `max_memory_mib`, and a
//! well-formed session's numbers stay exact throughout.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{free_port, http_request, metric, Daemon};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use spanwire::signal::{attribute, string_attribute};

const MAX_MEMORY_MIB: u64 = 16;
const MAX_TRACES: u64 = 20_000;

fn int(k: &str, v: i64) -> KeyValue {
    attribute(k, any_value::Value::IntValue(v))
}

fn span(trace: u64, id: u64, parent: u64, attrs: Vec<KeyValue>) -> Span {
    let now = spanwire::telemetry::unix_nanos_now();
    Span {
        trace_id: [trace.to_be_bytes(), [7; 8]].concat(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: if parent == 0 {
            Vec::new()
        } else {
            parent.to_be_bytes().to_vec()
        },
        name: "s".into(),
        kind: 3,
        start_time_unix_nano: now,
        end_time_unix_nano: now + 1_000_000,
        attributes: attrs,
        ..Default::default()
    }
}

fn chat(session: &str, input: KeyValue, output: KeyValue) -> Vec<KeyValue> {
    vec![
        string_attribute("gen_ai.operation.name", "chat"),
        string_attribute("gen_ai.request.model", "amazon.nova-lite-v1:0"),
        string_attribute("session.id", session),
        input,
        output,
    ]
}

async fn post(port: u16, spans: Vec<Span>) {
    let body = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_attribute("service.name", "hostile-app")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let r = http_request(
        "POST",
        port,
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

async fn text(port: u16) -> String {
    let r = http_request("GET", port, "/metrics", &[], Vec::new()).await;
    String::from_utf8_lossy(&r.body).to_string()
}

/// The good session: an agent invocation with one model call, 100 in and
/// 20 out, sent again (one more invocation) after every hostile case.
async fn good(port: u16, n: u64) {
    let trace = 1_000_000_000 + n;
    post(
        port,
        vec![
            span(
                trace,
                2,
                1,
                chat(
                    "good",
                    int("gen_ai.usage.input_tokens", 100),
                    int("gen_ai.usage.output_tokens", 20),
                ),
            ),
            span(
                trace,
                1,
                0,
                vec![
                    string_attribute("gen_ai.operation.name", "invoke_agent"),
                    string_attribute("gen_ai.agent.name", "good-agent"),
                    string_attribute("session.id", "good"),
                ],
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_counted_bounded_and_leaves_other_sessions_exact() {
    let (http, prom, live, own, health) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let config = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
connectors:
  agentmetrics:
    metrics_flush_interval: 200ms
    trace_idle: 500ms
    max_trace_duration: 2s
    max_traces: {MAX_TRACES}
    max_memory_mib: {MAX_MEMORY_MIB}
    generic_span_metrics: false
exporters:
  prometheus:
    endpoint: "127.0.0.1:{prom}"
    namespace: ""
  live:
    endpoint: "127.0.0.1:{live}"
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: "127.0.0.1:{own}"}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [agentmetrics, live]}}
    metrics: {{receivers: [agentmetrics], exporters: [prometheus]}}
"#
    );
    let daemon = Daemon::start(&config, health);
    let mut goods = 0u64;
    good(http, goods).await;
    goods += 1;

    // Usage as a string, negative, and 2^63 - 1: refused, counted.
    post(
        http,
        vec![
            span(
                1,
                1,
                0,
                chat(
                    "hostile",
                    string_attribute("gen_ai.usage.input_tokens", "500"),
                    int("gen_ai.usage.output_tokens", -7),
                ),
            ),
            span(
                1,
                2,
                0,
                chat(
                    "hostile",
                    int("gen_ai.usage.input_tokens", i64::MAX),
                    int("gen_ai.usage.output_tokens", 3),
                ),
            ),
        ],
    )
    .await;
    good(http, goods).await;
    goods += 1;

    // Parent ids that form a cycle: 1 -> 2 -> 3 -> 1, a call with usage inside.
    post(
        http,
        vec![
            span(
                2,
                1,
                3,
                vec![
                    string_attribute("gen_ai.operation.name", "invoke_agent"),
                    string_attribute("session.id", "cycle"),
                ],
            ),
            span(
                2,
                2,
                1,
                vec![string_attribute(
                    "gen_ai.operation.name",
                    "execute_event_loop_cycle",
                )],
            ),
            span(
                2,
                3,
                2,
                chat(
                    "cycle",
                    int("gen_ai.usage.input_tokens", 5),
                    int("gen_ai.usage.output_tokens", 5),
                ),
            ),
        ],
    )
    .await;
    good(http, goods).await;
    goods += 1;

    // A trace that never ends: a call every 100 ms for 4 s (past
    // max_trace_duration 2s): every call counted once.
    let endless_calls = 40u64;
    for i in 0..endless_calls {
        post(
            http,
            vec![span(
                3,
                10 + i,
                0,
                chat(
                    "endless",
                    int("gen_ai.usage.input_tokens", 1),
                    int("gen_ai.usage.output_tokens", 0),
                ),
            )],
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    good(http, goods).await;
    goods += 1;

    // A million distinct trace ids, a call of 1 + 1 tokens each, all in one
    // session: the model's memory stays within its bound, and so does the
    // live session's (its per-trace contributions are folded).
    let flood = 1_000_000u64;
    let mut peak_bytes = 0.0f64;
    let mut peak_pending = 0.0f64;
    let mut peak_rss = 0u64;
    for batch in 0..flood / 2000 {
        let spans = (0..2000)
            .map(|k| {
                let t = 10_000_000 + batch * 2000 + k;
                span(
                    t,
                    1,
                    0,
                    vec![
                        string_attribute("gen_ai.operation.name", "chat"),
                        string_attribute("session.id", "flood"),
                        int("gen_ai.usage.input_tokens", 1),
                        int("gen_ai.usage.output_tokens", 1),
                    ],
                )
            })
            .collect();
        post(http, spans).await;
        if batch % 50 == 0 {
            let own_text = text(own).await;
            peak_bytes = peak_bytes.max(metric(
                &own_text,
                "spanwire_connector_agent_memory_bytes",
                &[],
            ));
            peak_pending = peak_pending.max(metric(
                &own_text,
                "spanwire_connector_agent_traces_pending",
                &[],
            ));
            peak_rss = peak_rss.max(daemon.rss());
        }
    }
    good(http, goods).await;
    goods += 1;

    // Everything settles (trace_idle 500ms, flush 200ms).
    let deadline = Instant::now() + Duration::from_secs(60);
    let want_input = (goods * 100 + 5 + endless_calls + flood) as f64;
    let prom_text = loop {
        let t = text(prom).await;
        let input = metric(&t, "agent_tokens_total", &["gen_ai_token_type=\"input\""]);
        if input >= want_input || Instant::now() > deadline {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let own_text = text(own).await;
    eprintln!(
        "peak model memory {peak_bytes} bytes, peak traces pending {peak_pending}, peak RSS {} MiB",
        peak_rss >> 20
    );
    // Counted: three invalid usage attributes, one cycle, the endless trace
    // reopened, early settlements under the flood.
    let own_count = |n: &str| metric(&own_text, n, &[]);
    assert_eq!(
        own_count("spanwire_connector_agent_invalid_usage_total"),
        3.0,
        "{own_text}"
    );
    assert_eq!(
        own_count("spanwire_connector_agent_parent_cycles_total"),
        1.0,
        "{own_text}"
    );
    assert!(
        own_count("spanwire_connector_agent_traces_reopened_total") >= 1.0,
        "{own_text}"
    );
    assert!(
        own_count("spanwire_connector_agent_traces_settled_early_total") > 0.0,
        "{own_text}"
    );
    // Bounded.
    assert!(
        peak_bytes > 0.0 && peak_bytes <= (MAX_MEMORY_MIB << 20) as f64,
        "{peak_bytes}"
    );
    assert!(peak_pending <= MAX_TRACES as f64, "{peak_pending}");
    // Exact: every token once (the invalid counts left out: 3 output
    // tokens of the 2^63 call count, its input does not).
    let tokens = |ty: &str| {
        metric(
            &prom_text,
            "agent_tokens_total",
            &[&format!("gen_ai_token_type=\"{ty}\"")],
        )
    };
    assert_eq!(tokens("input"), want_input, "{prom_text}");
    assert_eq!(tokens("output"), (goods * 20 + 3 + 5 + flood) as f64);
    let good_agent = |ty: &str| {
        metric(
            &prom_text,
            "agent_tokens_total",
            &[
                "gen_ai_agent_name=\"good-agent\"",
                &format!("gen_ai_token_type=\"{ty}\""),
            ],
        )
    };
    assert_eq!(
        (good_agent("input"), good_agent("output")),
        ((goods * 100) as f64, (goods * 20) as f64)
    );
    // The live API: the good session and the endless one, exact.
    let r = http_request("GET", live, "/api/sessions/good", &[], Vec::new()).await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        v["summary"]["tokens"]["input"],
        goods * 100,
        "{}",
        v["summary"]
    );
    assert_eq!(v["summary"]["model_calls"], goods);
    let r = http_request("GET", live, "/api/sessions/endless", &[], Vec::new()).await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        v["summary"]["tokens"]["input"], endless_calls,
        "{}",
        v["summary"]
    );
    assert_eq!(v["summary"]["model_calls"], endless_calls);
    let r = http_request("GET", live, "/api/sessions", &[], Vec::new()).await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let flood_session = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["session_id"] == "flood")
        .unwrap()
        .clone();
    assert_eq!(flood_session["tokens"]["input"], flood, "{flood_session}");
    assert_eq!(flood_session["model_calls"], flood);
    drop(daemon);
}
