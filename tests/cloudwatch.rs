//! The `awsemf` and `awscloudwatchlogs` exporters end to end against moto
//! server's CloudWatch Logs: events are read back with GetLogEvents and every
//! EMF directive is checked against the format's rules; agent metrics from
//! the Bedrock fixtures add up to counts taken straight from the spans.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::genai::{replay_bedrock_fixtures, Expected};
use common::{aws_test_env, aws_test_sdk_config, free_port, http_request, metric, Daemon, Moto};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::Value;
use spanwire::signal::string_attribute;

/// Checks one event against the EMF specification: the `_aws` metadata, a
/// namespace, at most 30 keys per dimension set, at most 100 metrics per
/// directive, every dimension a string member and every metric a value.
fn check_emf(message: &str) -> Value {
    let v: Value = serde_json::from_str(message).unwrap_or_else(|e| panic!("{e}: {message}"));
    let aws = &v["_aws"];
    assert!(aws["Timestamp"].is_i64(), "{message}");
    let directives = aws["CloudWatchMetrics"].as_array().expect("directives");
    assert!(!directives.is_empty());
    for d in directives {
        let ns = d["Namespace"].as_str().expect("a namespace");
        assert!(!ns.trim().is_empty() && ns.len() <= 255);
        for set in d["Dimensions"].as_array().expect("dimension sets") {
            let set = set.as_array().expect("a dimension set");
            assert!(set.len() <= 30, "{} dimensions", set.len());
            for k in set {
                let k = k.as_str().unwrap();
                assert!(v[k].is_string(), "dimension {k} missing: {message}");
            }
        }
        let metrics = d["Metrics"].as_array().expect("metrics");
        assert!(
            !metrics.is_empty() && metrics.len() <= 100,
            "{}",
            metrics.len()
        );
        for m in metrics {
            let name = m["Name"].as_str().unwrap();
            let val = &v[name];
            let ok = val.is_number()
                || (val["Values"].as_array().is_some_and(|a| a.len() <= 100)
                    && val["Counts"].as_array().map(Vec::len)
                        == val["Values"].as_array().map(Vec::len)
                    && val["Count"].is_u64()
                    && val["Sum"].is_number()
                    && val["Min"].is_number()
                    && val["Max"].is_number());
            assert!(ok, "metric {name}: {val}");
        }
    }
    v
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_metrics_reach_cloudwatch_as_valid_emf() {
    let moto = Moto::start();
    let (bedrock_port, health) = (free_port(), free_port());
    let config = format!(
        r#"
receivers:
  bedrock:
    endpoint: "127.0.0.1:{bedrock_port}"
    idle_timeout: 300ms
    resource: {{service.name: travel-app}}
connectors:
  agentmetrics:
    metrics_flush_interval: 300ms
exporters:
  awsemf:
    region: us-east-1
    endpoint: "{endpoint}"
    namespace: SpanwireAgents
    log_group_name: "/spanwire/{{ServiceName}}/metrics"
    log_stream_name: "agentmetrics"
    retry_on_failure: {{initial_interval: 50ms}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [bedrock], exporters: [agentmetrics]}}
    metrics: {{receivers: [agentmetrics], exporters: [awsemf]}}
"#,
        endpoint = moto.endpoint()
    );
    let daemon = Daemon::start_with_env(&config, health, &aws_test_env());

    let mut expected = Expected::default();
    replay_bedrock_fixtures(bedrock_port, &mut expected).await;
    let total: f64 = expected.by_operation.values().sum();
    assert!(total > 0.0 && expected.input_tokens > 0.0, "{expected:?}");

    // Read back until the invocation deltas add up (one event per flush).
    let client = aws_sdk_cloudwatchlogs::Client::new(&aws_test_sdk_config(&moto.endpoint()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = loop {
        let events =
            common::read_log_stream(&client, "/spanwire/travel-app/metrics", "agentmetrics").await;
        let got: f64 = events
            .iter()
            .filter_map(|(_, m)| serde_json::from_str::<Value>(m).ok())
            .filter_map(|v| v["agent.invocations"].as_f64())
            .sum();
        if got >= total || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(!events.is_empty(), "no EMF events\n{}", daemon.logs());

    let mut by_operation: BTreeMap<String, f64> = BTreeMap::new();
    let (mut input, mut output, mut durations) = (0.0, 0.0, 0u64);
    for (ts, m) in &events {
        let v = check_emf(m);
        assert_eq!(
            v["_aws"]["Timestamp"].as_i64(),
            Some(*ts),
            "event time = EMF time"
        );
        for d in v["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
            assert_eq!(d["Namespace"], "SpanwireAgents");
        }
        if let Some(n) = v["agent.invocations"].as_f64() {
            let op = v["gen_ai.operation.name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            *by_operation.entry(op).or_default() += n;
        }
        if let Some(n) = v["agent.tokens"].as_f64() {
            match v["gen_ai.token.type"].as_str() {
                Some("input") => input += n,
                Some("output") => output += n,
                _ => {}
            }
        }
        if let Some(c) = v["agent.duration"]["Count"].as_u64() {
            durations += c;
            assert_eq!(
                v["agent.duration"]["Counts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_f64().unwrap())
                    .sum::<f64>(),
                c as f64,
                "Counts add up to Count"
            );
        }
    }
    assert_eq!(by_operation, expected.by_operation, "{}", daemon.logs());
    assert_eq!(input, expected.input_tokens);
    assert_eq!(output, expected.output_tokens);
    assert_eq!(
        durations as f64, total,
        "one duration observation per operation"
    );
}

fn metrics_request(metrics: Vec<Metric>) -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    string_attribute("service.name", "billing"),
                    string_attribute("k8s.pod.name", "billing-0"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn num(attrs: &[(String, String)], start: u64, t: u64, v: i64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs
            .iter()
            .map(|(k, v)| string_attribute(k, v.clone()))
            .collect(),
        start_time_unix_nano: start,
        time_unix_nano: t,
        value: Some(number_data_point::Value::AsInt(v)),
        ..Default::default()
    }
}

fn log_record(t: u64, body: String, i: usize) -> LogRecord {
    LogRecord {
        time_unix_nano: t,
        severity_number: 9,
        severity_text: "INFO".into(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body)),
        }),
        attributes: vec![spanwire::signal::attribute(
            "i",
            any_value::Value::IntValue(i as i64),
        )],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emf_limits_deltas_and_log_records() {
    let moto = Moto::start();
    let (otlp, health, telemetry) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{otlp}"}}
exporters:
  awsemf:
    region: us-east-1
    endpoint: "{endpoint}"
    log_group_name: "/spanwire/emf"
    log_stream_name: "{{ServiceName}}-{{PodName}}"
    sending_queue: {{num_consumers: 1}}
    retry_on_failure: {{initial_interval: 50ms}}
  awscloudwatchlogs:
    region: us-east-1
    endpoint: "{endpoint}"
    log_group_name: "/spanwire/logs"
    log_stream_name: "{{ServiceName}}"
    log_retention: 7
    retry_on_failure: {{initial_interval: 50ms}}
  awscloudwatchlogs/raw:
    region: us-east-1
    endpoint: "{endpoint}"
    log_group_name: "/spanwire/logs"
    log_stream_name: "raw"
    raw_log: true
    retry_on_failure: {{initial_interval: 50ms}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: "127.0.0.1:{telemetry}"}}}}
  pipelines:
    metrics: {{receivers: [otlp], exporters: [awsemf]}}
    logs: {{receivers: [otlp], exporters: [awscloudwatchlogs, awscloudwatchlogs/raw]}}
"#,
        endpoint = moto.endpoint()
    );
    let daemon = Daemon::start_with_env(&config, health, &aws_test_env());
    let post = |path: &'static str, body: Vec<u8>| async move {
        let r = http_request(
            "POST",
            otlp,
            path,
            &[("content-type", "application/x-protobuf")],
            body,
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    };

    // A cumulative counter: 5, 12, then 3 after a restart → deltas 5, 7, 3.
    let start = now_ns();
    let t0 = start + 1_000_000_000;
    let a = vec![("agent".to_string(), "travel".to_string())];
    for (i, v) in [5, 12, 3].into_iter().enumerate() {
        let t = t0 + i as u64 * 1_000_000_000;
        let s = if i == 2 { t - 500_000_000 } else { start };
        post(
            "/v1/metrics",
            metrics_request(vec![Metric {
                name: "requests".into(),
                unit: "{request}".into(),
                data: Some(Data::Sum(Sum {
                    data_points: vec![num(&a, s, t, v)],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })),
                ..Default::default()
            }]),
        )
        .await;
    }
    // 150 gauges sharing 35 labels; a histogram; one gauge 15 days old.
    let t = t0 + 10_000_000_000;
    let labels: Vec<(String, String)> = (0..35)
        .map(|i| (format!("l{i:02}"), format!("v{i}")))
        .collect();
    let mut metrics: Vec<Metric> = (0..150)
        .map(|i| Metric {
            name: format!("gauge.{i:03}"),
            data: Some(Data::Gauge(Gauge {
                data_points: vec![num(&labels, 0, t, i)],
            })),
            ..Default::default()
        })
        .collect();
    metrics.push(Metric {
        name: "latency".into(),
        unit: "ms".into(),
        data: Some(Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                time_unix_nano: t,
                count: 3,
                sum: Some(160.0),
                bucket_counts: vec![1, 1, 1],
                explicit_bounds: vec![10.0, 100.0],
                min: Some(5.0),
                max: Some(120.0),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        })),
        ..Default::default()
    });
    metrics.push(Metric {
        name: "stale".into(),
        data: Some(Data::Gauge(Gauge {
            data_points: vec![num(&[], 0, now_ns() - 15 * 86_400 * 1_000_000_000, 1)],
        })),
        ..Default::default()
    });
    post("/v1/metrics", metrics_request(metrics)).await;

    // 12,000 log records (more than one PutLogEvents call holds), one of
    // 300 KiB (cut to fit), three 15 days old (refused).
    let now = now_ns();
    let mut records: Vec<LogRecord> = (0..12_000)
        .map(|i| {
            log_record(
                now - (12_000 - i as u64) * 1_000_000,
                format!("line {i}"),
                i,
            )
        })
        .collect();
    records.push(log_record(now, "x".repeat(300 * 1024), 12_000));
    for i in 0..3 {
        records.push(log_record(
            now - 15 * 86_400 * 1_000_000_000,
            "too old".into(),
            20_000 + i,
        ));
    }
    post(
        "/v1/logs",
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![string_attribute("service.name", "billing")],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec(),
    )
    .await;

    let client = aws_sdk_cloudwatchlogs::Client::new(&aws_test_sdk_config(&moto.endpoint()));
    let deadline = Instant::now() + Duration::from_secs(40);
    let (emf, logs, raw) = loop {
        let emf = common::read_log_stream(&client, "/spanwire/emf", "billing-billing-0").await;
        let logs = common::read_log_stream(&client, "/spanwire/logs", "billing").await;
        let raw = common::read_log_stream(&client, "/spanwire/logs", "raw").await;
        let gauges = emf.iter().filter(|(_, m)| m.contains("gauge.000")).count();
        if (gauges > 0 && logs.len() >= 12_001 && raw.len() >= 12_001) || Instant::now() > deadline
        {
            break (emf, logs, raw);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };

    // EMF: valid directives; the counter's deltas; all 150 gauges, ≤ 100 per event.
    let parsed: Vec<Value> = emf.iter().map(|(_, m)| check_emf(m)).collect();
    let deltas: Vec<i64> = parsed
        .iter()
        .filter_map(|v| v["requests"].as_i64())
        .collect();
    assert_eq!(deltas, vec![5, 7, 3], "{}", daemon.logs());
    let req = parsed.iter().find(|v| v["requests"].is_i64()).unwrap();
    assert_eq!(
        req["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"],
        "Count"
    );
    assert_eq!(req["_aws"]["CloudWatchMetrics"][0]["Namespace"], "billing");
    let mut gauges = Vec::new();
    for v in &parsed {
        for d in v["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
            for m in d["Metrics"].as_array().unwrap() {
                let name = m["Name"].as_str().unwrap();
                if name.starts_with("gauge.") {
                    gauges.push(name.to_string());
                    // The 35-label set is left out; the empty and single ones stay.
                    assert_eq!(d["Dimensions"].as_array().unwrap().len(), 36);
                }
            }
        }
    }
    gauges.sort();
    gauges.dedup();
    assert_eq!(gauges.len(), 150);
    let latency = parsed
        .iter()
        .find_map(|v| v.get("latency").cloned())
        .expect("the histogram");
    assert_eq!(latency["Count"], 3);
    assert_eq!(latency["Sum"], 160);
    assert_eq!(latency["Min"], 5);
    assert_eq!(latency["Max"], 120);
    assert!(parsed.iter().all(|v| v.get("stale").is_none()));

    // Logs: every record but the refused ones, once, as JSON and as raw text.
    assert_eq!(logs.len(), 12_001, "{}", daemon.logs());
    assert_eq!(raw.len(), 12_001);
    let mut seen = vec![false; 12_001];
    for (_, m) in &logs {
        if m.len() > 200_000 {
            assert!(m.ends_with("[truncated by spanwire]"));
            assert!(m.len() <= 262_144 - 26);
            seen[12_000] = true;
            continue;
        }
        let v: Value = serde_json::from_str(m).unwrap();
        assert_eq!(v["severity_text"], "INFO");
        assert_eq!(v["resource"]["service.name"], "billing");
        let i = v["attributes"]["i"].as_u64().unwrap() as usize;
        assert_eq!(v["body"], format!("line {i}"));
        assert!(!seen[i], "record {i} twice");
        seen[i] = true;
    }
    assert!(seen.iter().all(|s| *s));
    assert_eq!(raw[0].1, "line 0");
    assert!(raw.windows(2).all(|w| w[0].0 <= w[1].0), "sorted by time");

    let text = String::from_utf8(
        http_request("GET", telemetry, "/metrics", &[], Vec::new())
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    assert_eq!(
        metric(
            &text,
            "spanwire_cwlogs_events_dropped_total",
            &["exporter=\"awscloudwatchlogs\"", "reason=\"too_old\""]
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "spanwire_cwlogs_events_dropped_total",
            &["exporter=\"awsemf\"", "reason=\"too_old\""]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "spanwire_cwlogs_events_truncated_total",
            &["exporter=\"awscloudwatchlogs\""]
        ),
        1.0
    );
    assert!(
        metric(
            &text,
            "spanwire_cwlogs_put_calls_total",
            &["exporter=\"awscloudwatchlogs\""]
        ) >= 2.0,
        "12,001 events need at least two calls"
    );
    assert_eq!(
        metric(&text, "spanwire_emf_dimension_sets_dropped_total", &[]),
        150.0
    );
}

/// An agent that names its metric namespace the AgentCore way
/// (`x-aws-metric-namespace` in `OTEL_EXPORTER_OTLP_HEADERS`) gets its EMF
/// metrics in that namespace; an agent that names none gets the exporter's.
/// The batch processor keeps the two apart (`metadata_keys`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metric_namespace_header_names_the_emf_namespace() {
    let moto = Moto::start();
    let (grpc, http, health) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}", include_metadata: true}}
      http: {{endpoint: "127.0.0.1:{http}", include_metadata: true}}
processors:
  batch:
    timeout: 200ms
    metadata_keys: [x-aws-metric-namespace]
exporters:
  awsemf:
    region: us-east-1
    endpoint: "{endpoint}"
    namespace: Spanwire/Default
    log_group_name: "/spanwire/emf"
    log_stream_name: "{{ServiceName}}"
    retry_on_failure: {{initial_interval: 50ms}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    metrics: {{receivers: [otlp], processors: [batch], exporters: [awsemf]}}
"#,
        endpoint = moto.endpoint()
    );
    let daemon = Daemon::start_with_env(&config, health, &aws_test_env());
    let agents = [
        common::python_agent(
            "http",
            &format!("http://127.0.0.1:{http}"),
            "alpha",
            (1, 0),
            "x-aws-log-group=/agents/alpha,x-aws-log-stream=run-1,x-aws-metric-namespace=Agents/Alpha",
        ),
        common::python_agent(
            "grpc",
            &format!("http://127.0.0.1:{grpc}"),
            "beta",
            (1, 0),
            "x-aws-log-group=/agents/beta,x-aws-log-stream=run-2",
        ),
    ];
    for a in agents {
        common::python_agent_done(a);
    }

    let client = aws_sdk_cloudwatchlogs::Client::new(&aws_test_sdk_config(&moto.endpoint()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let (alpha, beta) = loop {
        let alpha = common::read_log_stream(&client, "/spanwire/emf", "py-agent-alpha").await;
        let beta = common::read_log_stream(&client, "/spanwire/emf", "py-agent-beta").await;
        // Each agent sends four metrics (counter, histogram, up-down
        // counter, gauge), all with one attribute set.
        let names = |events: &[(i64, String)]| {
            events
                .iter()
                .flat_map(|(_, m)| {
                    let v: Value = serde_json::from_str(m).unwrap();
                    v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|m| m["Name"].as_str().unwrap().to_string())
                        .collect::<Vec<_>>()
                })
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        };
        if (names(&alpha) >= 4 && names(&beta) >= 4) || Instant::now() > deadline {
            break (alpha, beta);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for (events, tag, namespace) in [
        (&alpha, "alpha", "Agents/Alpha"),
        (&beta, "beta", "Spanwire/Default"),
    ] {
        assert!(
            !events.is_empty(),
            "no EMF events for {tag}\n{}",
            daemon.logs()
        );
        for (_, m) in events {
            let v = check_emf(m);
            assert_eq!(v["test.tag"], tag, "{m}");
            for d in v["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
                assert_eq!(d["Namespace"], namespace, "{m}");
            }
        }
    }
}
