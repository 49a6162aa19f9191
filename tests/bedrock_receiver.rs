//! End to end: Bedrock trace events posted to the `bedrock` receiver arrive
//! as spans at an OTLP sink — streamed in parts, as NDJSON of SDK-style
//! `{"trace": ...}` events, with a traceparent, and after an idle timeout.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{free_port, http_request, Daemon, Sink};
use opentelemetry_proto::tonic::common::v1::any_value;
use serde_json::Value;
use spanwire::convert::bedrock;
use spanwire::signal::{Signal, Telemetry};

fn fixture(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/bedrock/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    bedrock::parse_events(&text).unwrap()
}

fn offline_span_count(events: &[Value]) -> usize {
    Telemetry::Traces(bedrock::convert(events, &bedrock::Options::default()).resource_spans)
        .item_count()
}

fn config(port: u16, health: u16, sink: &Sink) -> String {
    format!(
        r#"
receivers:
  bedrock:
    endpoint: "127.0.0.1:{port}"
    idle_timeout: 400ms
    resource: {{service.name: travel-app}}
processors:
  batch: {{timeout: 50ms}}
exporters:
  otlp:
    endpoint: "http://127.0.0.1:{sg}"
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [bedrock], processors: [batch], exporters: [otlp]}}
"#,
        sg = sink.grpc_port
    )
}

async fn post(port: u16, headers: &[(&str, &str)], body: String) -> (u16, Value) {
    let r = http_request(
        "POST",
        port,
        "/v1/bedrock/traces",
        headers,
        body.into_bytes(),
    )
    .await;
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_events_arrive_as_spans() {
    let sink = Sink::start().await;
    let (port, health) = (free_port(), free_port());
    let daemon = Daemon::start(&config(port, health, &sink), health);
    let json = ("content-type", "application/json");

    // A routed, collaborating invocation streamed in two posts, joining the app's trace.
    let routed = fixture("oi-py_routing-classifier-to-collaborator.json");
    let expected_routed = offline_span_count(&routed);
    let (first, second) = routed.split_at(routed.len() / 2);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = [
        json,
        ("traceparent", tp),
        ("x-resource-attributes", "deployment.environment=test"),
    ];
    let (status, v) = post(port, &headers, serde_json::to_string(first).unwrap()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["accepted"], first.len());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        sink.count(Signal::Traces),
        0,
        "nothing is sent before the invocation completes"
    );
    let (status, v) = post(port, &[json], serde_json::to_string(second).unwrap()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        sink.wait_for(Signal::Traces, expected_routed, Duration::from_secs(10))
            .await,
        expected_routed,
        "{}",
        daemon.logs()
    );
    let spans = sink.spans();
    assert!(spans
        .iter()
        .all(|s| hex::encode(&s.trace_id) == "4bf92f3577b34da6a3ce929d0e0e4736"));
    assert!(spans.iter().any(|s| s.name == "invoke_agent MathAgent"));
    let resource = sink
        .received
        .lock()
        .unwrap()
        .iter()
        .find_map(|t| match t {
            Telemetry::Traces(rs) => rs[0].resource.clone(),
            _ => None,
        })
        .unwrap();
    let res = |k: &str| {
        resource
            .attributes
            .iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| kv.value.clone())
            .and_then(|v| v.value)
    };
    assert_eq!(
        res("service.name"),
        Some(any_value::Value::StringValue("travel-app".into()))
    );
    assert_eq!(
        res("deployment.environment"),
        Some(any_value::Value::StringValue("test".into()))
    );

    // NDJSON of SDK-style `{"trace": TracePart}` events.
    let kb = fixture("oi-py_knowledge-base-lookup.json");
    let ndjson: String = kb
        .iter()
        .map(|e| format!("{}\n", serde_json::json!({ "trace": e })))
        .collect();
    let before = sink.count(Signal::Traces);
    let (status, v) = post(port, &[("content-type", "application/x-ndjson")], ndjson).await;
    assert_eq!(status, 200, "{v}");
    let expected = before + offline_span_count(&kb);
    assert_eq!(
        sink.wait_for(Signal::Traces, expected, Duration::from_secs(10))
            .await,
        expected
    );

    // An invocation that never completes is converted after idle_timeout.
    let mut cut = fixture("oi-py_action-group-function-lambda.json");
    cut.pop();
    let before = sink.count(Signal::Traces);
    let (status, _) = post(port, &[json], serde_json::to_string(&cut).unwrap()).await;
    assert_eq!(status, 200);
    let expected = before + offline_span_count(&cut);
    assert_eq!(
        sink.wait_for(Signal::Traces, expected, Duration::from_secs(10))
            .await,
        expected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_reason() {
    let sink = Sink::start().await;
    let (port, health) = (free_port(), free_port());
    let _daemon = Daemon::start(&config(port, health, &sink), health);
    let json = ("content-type", "application/json");
    let (status, v) = post(port, &[json], "[{\"trace\": ".into()).await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("invalid JSON"), "{v}");
    let (status, v) = post(port, &[json], r#"[{"foo": 1}, 7]"#.into()).await;
    assert_eq!(status, 400);
    assert_eq!(v["rejected"].as_array().unwrap().len(), 2, "{v}");
    let (status, _) = post(port, &[json, ("traceparent", "nonsense")], "[]".into()).await;
    assert_eq!(status, 400);
    let r = http_request("GET", port, "/v1/bedrock/traces", &[], vec![]).await;
    assert_eq!(r.status, 405);
    // One bad event among good ones: the rest still converts.
    let mut events = fixture("oi-py_inline-agent.json");
    events.insert(1, serde_json::json!({"trace": {"unknownTrace": {}}}));
    let (status, v) = post(port, &[json], serde_json::to_string(&events).unwrap()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["accepted"], events.len() - 1);
    assert_eq!(v["rejected"][0]["index"], 1);
    let expected = offline_span_count(&fixture("oi-py_inline-agent.json"));
    assert_eq!(
        sink.wait_for(Signal::Traces, expected, Duration::from_secs(10))
            .await,
        expected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_invocations_are_converted_on_shutdown() {
    let sink = Sink::start().await;
    let (port, health) = (free_port(), free_port());
    let cfg = config(port, health, &sink).replace("idle_timeout: 400ms", "idle_timeout: 1h");
    let mut daemon = Daemon::start(&cfg, health);
    let mut cut = fixture("oi-py_action-group-function-lambda.json");
    cut.pop();
    let (status, _) = post(
        port,
        &[("content-type", "application/json")],
        serde_json::to_string(&cut).unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sink.count(Signal::Traces), 0);
    let status = tokio::task::spawn_blocking(move || {
        let s = daemon.terminate(Duration::from_secs(15));
        (s, daemon)
    })
    .await
    .unwrap();
    assert!(status.0.success());
    assert_eq!(
        sink.count(Signal::Traces),
        offline_span_count(&cut),
        "{}",
        status.1.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_stream_converts_once() {
    let sink = Sink::start().await;
    let (port, health) = (free_port(), free_port());
    let daemon = Daemon::start(&config(port, health, &sink), health);
    let json = ("content-type", "application/json");
    let events = fixture("oi-py_multi-agent-3-level-supervisor.json");
    let expected: std::collections::HashSet<Vec<u8>> =
        bedrock::convert(&events, &bedrock::Options::default())
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.span_id.clone())
            .collect();
    // The stream interleaved with itself in one post, then re-sent whole
    // after the tree was released (an at-least-once sender retrying).
    let interleaved: Vec<Value> = events
        .iter()
        .zip(&events)
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();
    let (status, v) = post(port, &[json], serde_json::to_string(&interleaved).unwrap()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["duplicates"], events.len());
    assert_eq!(
        sink.wait_for(Signal::Traces, expected.len(), Duration::from_secs(10))
            .await,
        expected.len(),
        "{}",
        daemon.logs()
    );
    let (status, v) = post(port, &[json], serde_json::to_string(&events).unwrap()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["duplicates"], events.len(), "the re-sent stream is known");
    // Longer than idle_timeout: anything buffered would have been released.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let got: Vec<Vec<u8>> = sink.spans().iter().map(|s| s.span_id.clone()).collect();
    assert_eq!(got.len(), expected.len(), "{}", daemon.logs());
    assert_eq!(
        got.into_iter().collect::<std::collections::HashSet<_>>(),
        expected
    );
}
