//! Spans → `agentmetrics` connector → `prometheus` exporter, end to end: every
//! Bedrock fixture (through the bedrock receiver) and every aws/spans fixture
//! span (as OTLP), scraped over HTTP and parsed by the Python
//! `prometheus_client` parser, with exact counts, token sums and histogram counts.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::genai::{expect, replay_bedrock_fixtures, Expected};
use common::{free_port, http_request, python, Daemon};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value;
use spanwire::convert::aws_spans;

fn parse(text: &str) -> Vec<Value> {
    let mut child = Command::new(python())
        .arg(format!(
            "{}/tests/python/parse_prom.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser rejected the output: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn samples<'a>(fams: &'a [Value], name: &str) -> Vec<&'a Value> {
    fams.iter()
        .flat_map(|f| f["samples"].as_array().unwrap())
        .filter(|s| s["name"] == name)
        .collect()
}

fn sum_by(fams: &[Value], name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in samples(fams, name) {
        let key = s["labels"][label].as_str().unwrap_or("").to_string();
        *out.entry(key).or_default() += s["value"].as_f64().unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_metrics_from_bedrock_and_aws_spans_scraped_by_prometheus() {
    let (bedrock_port, otlp, prom, health) = (free_port(), free_port(), free_port(), free_port());
    let config = format!(
        r#"
receivers:
  bedrock:
    endpoint: "127.0.0.1:{bedrock_port}"
    idle_timeout: 300ms
    resource: {{service.name: travel-app}}
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{otlp}"}}
connectors:
  agentmetrics:
    metrics_flush_interval: 200ms
exporters:
  prometheus:
    endpoint: "127.0.0.1:{prom}"
    namespace: ""
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [bedrock, otlp], exporters: [agentmetrics]}}
    metrics: {{receivers: [agentmetrics], exporters: [prometheus]}}
"#
    );
    let daemon = Daemon::start(&config, health);

    let mut expected = Expected::default();
    replay_bedrock_fixtures(bedrock_port, &mut expected).await;
    // aws/spans fixtures, each span once (completed when it was), as OTLP.
    let mut stream = aws_spans::SpanStream::new(aws_spans::StreamOptions::default());
    let (mut recs, mut stats) = (Vec::new(), aws_spans::PushStats::default());
    for f in [
        "coralogix_stepfunctions_aws_spans.jsonl",
        "awsdocs_agentcore_understanding_input_spans.jsonl",
        "awsdocs_strands_split_spans.ABBREVIATED.jsonl",
    ] {
        let text = std::fs::read_to_string(format!(
            "{}/tests/fixtures/aws-spans/{f}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        for l in text.lines().filter(|l| !l.trim().is_empty()) {
            stream.push(
                aws_spans::span_from_str(l).unwrap(),
                0,
                &mut recs,
                &mut stats,
            );
        }
    }
    stream.expire(0, true, &mut recs);
    let rs = aws_spans::group(recs);
    expect(&rs, &mut expected);
    let r = http_request(
        "POST",
        otlp,
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        ExportTraceServiceRequest { resource_spans: rs }.encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        expected.input_tokens > 0.0 && expected.by_operation.len() >= 3,
        "{expected:?}"
    );

    // Scrape until the totals match (the connector emits every 200 ms).
    let deadline = Instant::now() + Duration::from_secs(20);
    let total: f64 = expected.by_operation.values().sum();
    let (text, fams) = loop {
        let r = http_request("GET", prom, "/metrics", &[], Vec::new()).await;
        assert_eq!(r.status, 200);
        assert!(r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"));
        let text = String::from_utf8(r.body.to_vec()).unwrap();
        let fams = parse(&text);
        let got: f64 = samples(&fams, "agent_invocations_total")
            .iter()
            .map(|s| s["value"].as_f64().unwrap())
            .sum();
        if got >= total || Instant::now() > deadline {
            break (text, fams);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let types: HashMap<&str, &str> = fams
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f["type"].as_str().unwrap()))
        .collect();
    assert_eq!(types.get("agent_invocations"), Some(&"counter"), "{text}");
    assert_eq!(types.get("agent_duration_seconds"), Some(&"histogram"));
    assert_eq!(types.get("agent_tokens"), Some(&"counter"));
    assert_eq!(types.get("agent_active_sessions"), Some(&"gauge"));

    assert_eq!(
        sum_by(&fams, "agent_invocations_total", "gen_ai_operation_name"),
        expected.by_operation,
        "{}",
        daemon.logs()
    );
    let tokens = sum_by(&fams, "agent_tokens_total", "gen_ai_token_type");
    assert_eq!(
        tokens.get("input").copied().unwrap_or(0.0),
        expected.input_tokens
    );
    assert_eq!(
        tokens.get("output").copied().unwrap_or(0.0),
        expected.output_tokens
    );
    let hist_count: f64 = samples(&fams, "agent_duration_seconds_count")
        .iter()
        .map(|s| s["value"].as_f64().unwrap())
        .sum();
    assert_eq!(hist_count, total, "one duration observation per operation");
    let inf: f64 = samples(&fams, "agent_duration_seconds_bucket")
        .iter()
        .filter(|s| s["labels"]["le"] == "+Inf")
        .map(|s| s["value"].as_f64().unwrap())
        .sum();
    assert_eq!(inf, total);
    let calls: f64 = samples(&fams, "span_calls_total")
        .iter()
        .map(|s| s["value"].as_f64().unwrap())
        .sum();
    assert_eq!(
        calls, expected.other_spans,
        "spans that are not GenAI operations"
    );
    assert!(
        samples(&fams, "agent_invocations_total")
            .iter()
            .all(|s| s["labels"]["job"].is_string()),
        "job from service.name"
    );

    // OpenMetrics on request.
    let r = http_request(
        "GET",
        prom,
        "/metrics",
        &[("accept", "application/openmetrics-text; version=1.0.0")],
        Vec::new(),
    )
    .await;
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let om = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(om.ends_with("# EOF\n") && om.contains("# TYPE agent_invocations counter"));
}

/// Spans still in a batch processor at SIGTERM are counted in the
/// connector's last snapshot: the traces pipeline drains before the
/// connector emits for the last time, and the metrics pipeline after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_snapshot_at_shutdown_holds_every_span() {
    let (otlp, health) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("metrics.jsonl");
    let config = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{otlp}"}}
processors:
  batch: {{timeout: 30s}}
  batch/metrics: {{timeout: 30s}}
connectors:
  agentmetrics:
    metrics_flush_interval: 1h
exporters:
  file: {{path: "{path}"}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [agentmetrics]}}
    metrics: {{receivers: [agentmetrics], processors: [batch/metrics], exporters: [file]}}
"#,
        path = out.display()
    );
    let mut daemon = Daemon::start(&config, health);
    let r = common::post_spans(otlp, 30, "final").await;
    assert_eq!(r.status, 200);
    let status = daemon.terminate(Duration::from_secs(20));
    assert!(status.success(), "{}", daemon.logs());

    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let mut invocations: BTreeMap<String, i64> = BTreeMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        for m in v["resourceMetrics"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["scopeMetrics"].as_array().unwrap())
            .flat_map(|s| s["metrics"].as_array().unwrap())
            .filter(|m| m["name"] == "agent.invocations")
        {
            for p in m["sum"]["dataPoints"].as_array().unwrap() {
                let op = p["attributes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|a| a["key"] == "gen_ai.operation.name")
                    .and_then(|a| a["value"]["stringValue"].as_str())
                    .unwrap_or("")
                    .to_string();
                let n = p["asInt"].as_str().unwrap().parse::<i64>().unwrap();
                // Cumulative: the last value per operation is the total.
                invocations.insert(op, n);
            }
        }
    }
    assert_eq!(
        invocations,
        BTreeMap::from([("chat".to_string(), 29), ("invoke_agent".to_string(), 1)]),
        "{text}\n{}",
        daemon.logs()
    );
}
