//! End to end with real clients: the OpenTelemetry Python SDK sends over
//! OTLP/gRPC and OTLP/HTTP to `spanwire run`, which forwards through its
//! `otlp` and `otlphttp` exporters to an OTLP sink in the test.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{free_port, http_request, Daemon, Sink};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use spanwire::signal::{Signal, Telemetry};

fn config(grpc: u16, http: u16, health: u16, sink_grpc: u16, sink_http: u16) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      http: {{endpoint: "127.0.0.1:{http}"}}
processors:
  batch: {{timeout: 50ms}}
exporters:
  otlp/sink:
    endpoint: "http://127.0.0.1:{sg}"
    compression: zstd
    retry_on_failure: {{initial_interval: 50ms}}
  otlphttp/sink:
    endpoint: "http://127.0.0.1:{sh}"
    retry_on_failure: {{initial_interval: 50ms}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp/sink, otlphttp/sink]}}
    metrics: {{receivers: [otlp], processors: [batch], exporters: [otlp/sink, otlphttp/sink]}}
    logs: {{receivers: [otlp], exporters: [otlp/sink, otlphttp/sink]}}
"#,
        sg = sink_grpc,
        sh = sink_http
    )
}

fn send_with_python(protocol: &str, endpoint: &str, tag: &str, spans: usize, logs: usize) {
    common::python_agent_done(common::python_agent(
        protocol,
        endpoint,
        tag,
        (spans, logs),
        "",
    ));
}

fn attr<'a>(
    attrs: &'a [opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn metric_names(sink: &Sink) -> Vec<(String, Data)> {
    sink.received
        .lock()
        .unwrap()
        .iter()
        .filter_map(|t| match t {
            Telemetry::Metrics(rm) => Some(rm.clone()),
            _ => None,
        })
        .flatten()
        .flat_map(|r| r.scope_metrics)
        .flat_map(|s| s.metrics)
        .filter_map(|m| m.data.map(|d| (m.name, d)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_grpc_and_http_arrives_through_both_exporters() {
    // Two sinks, so each exporter's delivery is checked on its own:
    // `otlp/sink` (gRPC) to one, `otlphttp/sink` to the other.
    let sink_grpc = Sink::start().await;
    let sink_http = Sink::start().await;
    let (grpc, http, health) = (free_port(), free_port(), free_port());
    let cfg = config(grpc, http, health, sink_grpc.grpc_port, sink_http.http_port);
    let daemon = Daemon::start(&cfg, health);

    send_with_python(
        "grpc",
        &format!("http://127.0.0.1:{grpc}"),
        "viagrpc",
        12,
        4,
    );
    send_with_python("http", &format!("http://127.0.0.1:{http}"), "viahttp", 9, 3);

    for sink in [&sink_grpc, &sink_http] {
        let n = sink
            .wait_for(Signal::Traces, 21, Duration::from_secs(20))
            .await;
        assert_eq!(n, 21, "spans at a sink; daemon log:\n{}", daemon.logs());
        let l = sink
            .wait_for(Signal::Logs, 7, Duration::from_secs(20))
            .await;
        assert_eq!(l, 7, "log records at a sink");
        let metrics = {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let m = metric_names(sink);
                if m.len() >= 8 || std::time::Instant::now() > deadline {
                    break m;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        };
        // Each sender exports 4 instruments: counter, histogram, up-down counter, gauge.
        assert_eq!(metrics.len(), 8, "{metrics:?}");
        let hist = metrics
            .iter()
            .find_map(|(n, d)| match d {
                Data::Histogram(h) if n == "e2e.latency" => Some(h.clone()),
                _ => None,
            })
            .expect("histogram arrives");
        let p = &hist.data_points[0];
        assert_eq!(p.count, 3);
        assert_eq!(p.sum, Some(555.0));
        assert_eq!(p.bucket_counts.iter().sum::<u64>(), 3);
        assert!(!p.explicit_bounds.is_empty());
        assert!(metrics
            .iter()
            .any(|(n, d)| n == "e2e.requests" && matches!(d, Data::Sum(s) if s.is_monotonic)));
        assert!(metrics
            .iter()
            .any(|(n, d)| n == "e2e.queue" && matches!(d, Data::Gauge(_))));

        // Log records keep their body, severity and attributes.
        let logs: Vec<_> = sink
            .received
            .lock()
            .unwrap()
            .iter()
            .filter_map(|t| match t {
                Telemetry::Logs(rl) => Some(rl.clone()),
                _ => None,
            })
            .flatten()
            .flat_map(|r| r.scope_logs)
            .flat_map(|s| s.log_records)
            .collect();
        for tag in ["viagrpc", "viahttp"] {
            let mut bodies: Vec<String> = logs
                .iter()
                .filter(|l| {
                    attr(&l.attributes, "test.tag")
                        == Some(&any_value::Value::StringValue(tag.into()))
                })
                .map(|l| {
                    assert_eq!(l.severity_text, "WARN");
                    assert_eq!(l.severity_number, 13);
                    match l.body.as_ref().and_then(|b| b.value.as_ref()) {
                        Some(any_value::Value::StringValue(s)) => s.clone(),
                        other => panic!("log body {other:?}"),
                    }
                })
                .collect();
            bodies.sort();
            let n = if tag == "viagrpc" { 4 } else { 3 };
            let expected: Vec<String> = (0..n).map(|i| format!("agent log {tag} {i}")).collect();
            assert_eq!(bodies, expected);
        }
        // Metric points keep their attributes.
        for (_, d) in &metrics {
            let tagged = match d {
                Data::Sum(s) => s
                    .data_points
                    .iter()
                    .all(|p| attr(&p.attributes, "test.tag").is_some()),
                Data::Gauge(g) => g
                    .data_points
                    .iter()
                    .all(|p| attr(&p.attributes, "test.tag").is_some()),
                Data::Histogram(h) => h
                    .data_points
                    .iter()
                    .all(|p| attr(&p.attributes, "test.tag").is_some()),
                other => panic!("unexpected metric type {other:?}"),
            };
            assert!(tagged, "{d:?}");
        }

        let spans = sink.spans();
        for tag in ["viagrpc", "viahttp"] {
            let tagged: Vec<_> = spans
                .iter()
                .filter(|s| {
                    attr(&s.attributes, "test.tag")
                        == Some(&any_value::Value::StringValue(tag.into()))
                })
                .collect();
            assert_eq!(tagged.len(), if tag == "viagrpc" { 12 } else { 9 });
            let root = tagged
                .iter()
                .find(|s| s.parent_span_id.is_empty())
                .expect("root span");
            assert_eq!(root.name, format!("invoke_agent travel-{tag}"));
            for child in tagged.iter().filter(|s| !s.parent_span_id.is_empty()) {
                assert_eq!(child.parent_span_id, root.span_id);
                assert_eq!(child.trace_id, root.trace_id);
                assert!(
                    matches!(attr(&child.attributes, "gen_ai.usage.input_tokens"), Some(any_value::Value::IntValue(v)) if *v >= 100)
                );
                assert_eq!(
                    attr(&child.attributes, "gen_ai.request.temperature"),
                    Some(&any_value::Value::DoubleValue(0.5))
                );
            }
        }
    }
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_otlp_json_with_all_metric_types_arrives_intact() {
    let sink = Sink::start().await;
    let (grpc, http, health) = (free_port(), free_port(), free_port());
    let daemon = Daemon::start(
        &config(grpc, http, health, sink.grpc_port, sink.http_port),
        health,
    );

    let traces = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"raw"}}]},
      "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
      "name":"raw-json","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":1700000000500000000,
      "attributes":[{"key":"big","value":{"intValue":"9007199254740993"}}]}]}]}]}"#;
    let r = http_request(
        "POST",
        http,
        "/v1/traces",
        &[("content-type", "application/json")],
        traces.into(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"{}");
    assert_eq!(r.headers["content-type"], "application/json");

    let metrics = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
      {"name":"g","gauge":{"dataPoints":[{"asDouble":1.5,"timeUnixNano":"1"}]}},
      {"name":"s","sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{"asInt":"42"}]}},
      {"name":"h","histogram":{"aggregationTemporality":2,"dataPoints":[{"count":"6","sum":12.5,"bucketCounts":["1","2","3"],"explicitBounds":[1,5]}]}},
      {"name":"e","exponentialHistogram":{"aggregationTemporality":2,"dataPoints":[{"count":"3","scale":2,"zeroCount":"1","positive":{"offset":1,"bucketCounts":["1","1"]}}]}},
      {"name":"q","summary":{"dataPoints":[{"count":"3","sum":7,"quantileValues":[{"quantile":0.5,"value":2}]}]}}]}]}]}"#;
    let r = http_request(
        "POST",
        http,
        "/v1/metrics",
        &[("content-type", "application/json")],
        metrics.into(),
    )
    .await;
    assert_eq!(r.status, 200);

    assert_eq!(
        sink.wait_for(Signal::Traces, 2, Duration::from_secs(10))
            .await,
        2,
        "{}",
        daemon.logs()
    );
    assert_eq!(
        sink.wait_for(Signal::Metrics, 10, Duration::from_secs(10))
            .await,
        10
    );
    let span = sink
        .spans()
        .into_iter()
        .find(|s| s.name == "raw-json")
        .unwrap();
    assert_eq!(span.end_time_unix_nano, 1_700_000_000_500_000_000);
    assert_eq!(
        attr(&span.attributes, "big"),
        Some(&any_value::Value::IntValue(9_007_199_254_740_993))
    );
    let metrics = metric_names(&sink);
    let h = metrics
        .iter()
        .find_map(|(n, d)| match d {
            Data::Histogram(h) if n == "h" => Some(h.data_points[0].clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(h.bucket_counts, vec![1, 2, 3]);
    assert_eq!(h.explicit_bounds, vec![1.0, 5.0]);
    assert_eq!(h.count, 6);
    let e = metrics
        .iter()
        .find_map(|(n, d)| match d {
            Data::ExponentialHistogram(h) if n == "e" => Some(h.data_points[0].clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(e.positive.unwrap().bucket_counts, vec![1, 1]);
    assert!(metrics.iter().any(|(n, d)| n == "q"
        && matches!(d, Data::Summary(s) if s.data_points[0].quantile_values.len() == 1)));
}
