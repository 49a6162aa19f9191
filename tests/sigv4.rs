//! `sigv4auth` checked by a verifier no one here wrote: a Python server
//! (`tests/python/sigv4_server.py`) recomputes every request's signature
//! with botocore's own `SigV4Auth` and refuses a mismatch with 403. Traces
//! (protobuf, gzip) and logs (JSON, no compression) from spanwire's
//! `otlphttp` exporters are all accepted; with a wrong secret key every
//! request is refused and spanwire says why.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::verifier::{env, start, Verifier, SECRET};
use common::{free_port, Daemon};

fn config(otlp: u16, health: u16, verifier: u16) -> String {
    format!(
        r#"
extensions:
  health_check:
    endpoint: 127.0.0.1:{health}
  sigv4auth/traces:
    region: us-east-1
    service: xray
  sigv4auth/logs:
    region: us-east-1
    service: logs
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp}
exporters:
  otlphttp/traces:
    traces_endpoint: http://127.0.0.1:{verifier}/xray/v1/traces
    compression: gzip
    auth:
      authenticator: sigv4auth/traces
    retry_on_failure:
      enabled: false
  otlphttp/logs:
    logs_endpoint: http://127.0.0.1:{verifier}/logs/v1/logs
    encoding: json
    compression: none
    headers:
      x-aws-log-group: /agents/spanwire-test
      x-aws-log-stream: sigv4
    auth:
      authenticator: sigv4auth/logs
    retry_on_failure:
      enabled: false
service:
  extensions: [health_check, sigv4auth/traces, sigv4auth/logs]
  telemetry:
    metrics:
      address: ""
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp/traces]
    logs:
      receivers: [otlp]
      exporters: [otlphttp/logs]
"#
    )
}

/// POSTs `n` log records as OTLP/HTTP protobuf.
async fn post_logs(port: u16, n: usize) -> common::Reply {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use prost::Message;
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (0..n)
                    .map(|i| LogRecord {
                        time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!("event {i}"))),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    common::http_request(
        "POST",
        port,
        "/v1/logs",
        &[("content-type", "application/x-protobuf")],
        req.encode_to_vec(),
    )
    .await
}

#[tokio::test]
async fn signed_traces_and_logs_pass_botocores_check() {
    let verifier = Verifier::start(SECRET);
    let (otlp, health) = (free_port(), free_port());
    let daemon = start(&config(otlp, health, verifier.port), health, SECRET);
    for i in 0..5 {
        assert_eq!(
            common::post_spans(otlp, 40, &format!("t{i}")).await.status,
            200
        );
        assert_eq!(post_logs(otlp, 30).await.status, 200);
    }
    let done = common::wait_until(Duration::from_secs(20), || {
        verifier.accepted("/xray/v1/traces") == 200 && verifier.accepted("/logs/v1/logs") == 150
    })
    .await;
    let lines = verifier.lines();
    assert!(
        done,
        "verifier saw {lines:#?}\nspanwire:\n{}",
        daemon.logs()
    );
    assert!(lines.iter().all(|l| l["ok"] == true), "{lines:#?}");
    // Both shapes were checked: gzip protobuf traces, uncompressed JSON logs.
    assert!(lines
        .iter()
        .filter(|l| l["path"] == "/xray/v1/traces")
        .all(|l| l["gzip"] == true && l["encoding"] == "application/x-protobuf"));
    assert!(lines
        .iter()
        .filter(|l| l["path"] == "/logs/v1/logs")
        .all(|l| l["gzip"] == false && l["encoding"] == "application/json"));
}

#[tokio::test]
async fn a_wrong_secret_is_refused_and_reported() {
    let verifier = Verifier::start(SECRET);
    let (otlp, health) = (free_port(), free_port());
    let daemon = start(
        &config(otlp, health, verifier.port),
        health,
        "not-the-secret",
    );
    assert_eq!(common::post_spans(otlp, 10, "wrong").await.status, 200);
    let refused = common::wait_until(Duration::from_secs(20), || {
        daemon.logs().contains("HTTP 403 Forbidden")
    })
    .await;
    let logs = daemon.logs();
    assert!(refused, "spanwire:\n{logs}");
    assert!(logs.contains("signature mismatch"), "{logs}");
    assert!(logs.contains("export failed permanently"), "{logs}");
    let lines = verifier.lines();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l["ok"] == false),
        "{lines:#?}"
    );
    assert_eq!(verifier.accepted("/xray/v1/traces"), 0);
}

#[tokio::test]
async fn an_oversized_batch_is_split_into_requests_within_the_limits() {
    // The verifier refuses more than 1,000 spans or 150 kB a request.
    let verifier = Verifier::with_limits(SECRET, 1000, 150_000);
    let (otlp, health) = (free_port(), free_port());
    let config = config(otlp, health, verifier.port)
        .replace(
            "    compression: gzip\n",
            "    compression: gzip\n    max_request_items: 1000\n    max_request_bytes: 150000\n",
        )
        .replace(
            "receivers:\n",
            "processors:\n  batch:\n    send_batch_size: 5000\n    timeout: 2s\n\nreceivers:\n",
        )
        .replace(
            "      exporters: [otlphttp/traces]",
            "      processors: [batch]\n      exporters: [otlphttp/traces]",
        );
    let daemon = start(&config, health, SECRET);
    for i in 0..50 {
        assert_eq!(
            common::post_spans(otlp, 100, &format!("big{i}"))
                .await
                .status,
            200
        );
    }
    let done = common::wait_until(Duration::from_secs(20), || {
        verifier.accepted("/xray/v1/traces") >= 5000
    })
    .await;
    let lines: Vec<_> = verifier
        .lines()
        .into_iter()
        .filter(|l| l["path"] == "/xray/v1/traces")
        .collect();
    assert!(
        done,
        "verifier saw {lines:#?}\nspanwire:\n{}",
        daemon.logs()
    );
    // Every span once, in requests each within both limits, none refused.
    assert_eq!(verifier.accepted("/xray/v1/traces"), 5000);
    assert!(lines.iter().all(|l| l["ok"] == true), "{lines:#?}");
    assert!(lines.len() > 5, "the batch was not split: {lines:#?}");
    for l in &lines {
        assert!(l["items"].as_u64().unwrap() <= 1000, "{l}");
        assert!(l["bytes"].as_u64().unwrap() <= 150_000, "{l}");
    }
}

/// Five minutes at 1,000 spans/s with credentials that expire after 60 s
/// (the container credentials endpoint, as on ECS or EKS Pod Identity):
/// spanwire fetches new ones before the old expire, so the verifier refuses
/// nothing and every span arrives.
#[tokio::test]
async fn expiring_credentials_are_renewed_before_they_expire() {
    let verifier = Verifier::rotating(60);
    let (otlp, health) = (free_port(), free_port());
    let creds_url = format!("http://127.0.0.1:{}/creds", verifier.port);
    let env: Vec<(&str, &str)> = vec![
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", creds_url.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/nonexistent/spanwire-test-aws-config"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/spanwire-test-aws-credentials",
        ),
    ];
    let daemon = Daemon::start_with_env(&config(otlp, health, verifier.port), health, &env);
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while started.elapsed() < Duration::from_secs(300) {
        tick.tick().await;
        let r = common::post_spans(otlp, 100, &format!("rot{sent}")).await;
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
        sent += 100;
    }
    let arrived = common::wait_until(Duration::from_secs(30), || {
        verifier.accepted("/xray/v1/traces") >= sent
    })
    .await;
    let requests: Vec<_> = verifier
        .lines()
        .into_iter()
        .filter(|l| l["path"] == "/xray/v1/traces")
        .collect();
    let refused: Vec<_> = requests.iter().filter(|l| l["ok"] != true).collect();
    assert!(
        refused.is_empty(),
        "refused: {refused:#?}\nspanwire:\n{}",
        daemon.logs()
    );
    assert!(
        arrived,
        "sent {sent}, accepted {}",
        verifier.accepted("/xray/v1/traces")
    );
    assert_eq!(verifier.accepted("/xray/v1/traces"), sent);
    // The keys did rotate: five minutes of 60-second keys.
    let keys: std::collections::BTreeSet<_> = requests
        .iter()
        .map(|l| l["key"].as_str().unwrap().to_string())
        .collect();
    assert!(keys.len() >= 5, "signed with only {keys:?}");
}

/// 429 with Retry-After and 503 without, on two of every five requests:
/// spanwire retries them (signing each attempt anew) and loses nothing.
#[tokio::test]
async fn throttling_and_unavailability_are_retried_and_nothing_is_lost() {
    let verifier = Verifier::throttling(5);
    let (otlp, health) = (free_port(), free_port());
    let config = config(otlp, health, verifier.port).replace(
        "    retry_on_failure:\n      enabled: false\n",
        "    retry_on_failure:\n      initial_interval: 100ms\n      max_interval: 1s\n",
    );
    let daemon = start(&config, health, SECRET);
    for i in 0..20 {
        assert_eq!(
            common::post_spans(otlp, 10, &format!("th{i}")).await.status,
            200
        );
        assert_eq!(post_logs(otlp, 5).await.status, 200);
    }
    let done = common::wait_until(Duration::from_secs(30), || {
        verifier.accepted("/xray/v1/traces") >= 200 && verifier.accepted("/logs/v1/logs") >= 100
    })
    .await;
    let lines = verifier.lines();
    assert!(
        done,
        "verifier saw {lines:#?}\nspanwire:\n{}",
        daemon.logs()
    );
    assert_eq!(verifier.accepted("/xray/v1/traces"), 200);
    assert_eq!(verifier.accepted("/logs/v1/logs"), 100);
    let throttled = |code: u64| lines.iter().filter(|l| l["throttled"] == code).count();
    assert!(throttled(429) >= 3 && throttled(503) >= 3, "{lines:#?}");
    // Nothing else was refused: every failure was a throttle, and was retried.
    assert!(lines
        .iter()
        .all(|l| l["ok"] == true || l["throttled"].is_u64()));
}

#[tokio::test]
async fn two_agents_land_in_their_own_log_groups() {
    let verifier = Verifier::start(SECRET);
    let (grpc, http, health) = (free_port(), free_port(), free_port());
    let v = verifier.port;
    let config = format!(
        r#"
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
  headers_setter:
    headers:
      - {{key: x-aws-log-group, from_context: x-aws-log-group}}
      - {{key: x-aws-log-stream, from_context: x-aws-log-stream, default_value: default}}
  sigv4auth/logs: {{region: us-east-1, service: logs}}
  sigv4auth/traces: {{region: us-east-1, service: xray}}
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}", include_metadata: true}}
      http: {{endpoint: "127.0.0.1:{http}", include_metadata: true}}
processors:
  batch:
    timeout: 300ms
    metadata_keys: [x-aws-log-group, x-aws-log-stream]
exporters:
  otlphttp/logs:
    logs_endpoint: http://127.0.0.1:{v}/logs/v1/logs
    auth: {{authenticator: [headers_setter, sigv4auth/logs]}}
    retry_on_failure: {{enabled: false}}
  otlphttp/traces:
    traces_endpoint: http://127.0.0.1:{v}/xray/v1/traces
    auth: {{authenticator: sigv4auth/traces}}
  debug: {{verbosity: basic}}
service:
  extensions: [health_check, headers_setter, sigv4auth/logs, sigv4auth/traces]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    logs: {{receivers: [otlp], processors: [batch], exporters: [otlphttp/logs]}}
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlphttp/traces]}}
    metrics: {{receivers: [otlp], exporters: [debug]}}
"#
    );
    let daemon = start(&config, health, SECRET);
    // Both at once, one over OTLP/HTTP and one over OTLP/gRPC.
    let agents = [
        common::python_agent(
            "http",
            &format!("http://127.0.0.1:{http}"),
            "alpha",
            (4, 6),
            "x-aws-log-group=/agents/alpha,x-aws-log-stream=run-1,x-aws-metric-namespace=Alpha",
        ),
        common::python_agent(
            "grpc",
            &format!("http://127.0.0.1:{grpc}"),
            "beta",
            (4, 6),
            "x-aws-log-group=/agents/beta,x-aws-log-stream=run-2",
        ),
    ];
    for a in agents {
        common::python_agent_done(a);
    }
    let done = common::wait_until(Duration::from_secs(20), || {
        verifier.accepted("/logs/v1/logs") == 12 && verifier.accepted("/xray/v1/traces") == 8
    })
    .await;
    let lines = verifier.lines();
    assert!(
        done,
        "verifier saw {lines:#?}\nspanwire:\n{}",
        daemon.logs()
    );
    let mut per_group: std::collections::BTreeMap<String, usize> = Default::default();
    for l in lines.iter().filter(|l| l["path"] == "/logs/v1/logs") {
        assert_eq!(l["ok"], true, "{l:#}");
        let group = l["log_group"].as_str().unwrap();
        let (tag, stream) = match group {
            "/agents/alpha" => ("alpha", "run-1"),
            "/agents/beta" => ("beta", "run-2"),
            other => panic!("unexpected log group {other}"),
        };
        assert_eq!(l["log_stream"], stream);
        // The headers are covered by the signature botocore checked.
        let signed: Vec<&str> = l["signed_headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        assert!(
            signed.contains(&"x-aws-log-group") && signed.contains(&"x-aws-log-stream"),
            "{signed:?}"
        );
        // Never a record of the other agent in this group's request.
        for body in l["bodies"].as_array().unwrap() {
            let body = body.as_str().unwrap();
            assert!(
                body.starts_with(&format!("agent log {tag} ")),
                "{body} in {group}"
            );
        }
        *per_group.entry(group.to_string()).or_default() += l["items"].as_u64().unwrap() as usize;
    }
    assert_eq!(
        per_group,
        [
            ("/agents/alpha".to_string(), 6),
            ("/agents/beta".to_string(), 6)
        ]
        .into(),
    );
}

/// The Collector config AWS documents for this path
/// (`tests/fixtures/collector/transaction-search.yaml`, Collector key names,
/// real AWS endpoints) runs unchanged: a second `--config` only moves its
/// addresses to loopback (the verifier, free ports) and adds a health check,
/// as a Collector user layers configs. Spans and logs arrive signed, the logs
/// in the group and stream its headers name.
#[tokio::test]
async fn the_published_collector_config_runs_against_the_verifier() {
    let verifier = Verifier::start(SECRET);
    let (grpc, http, health) = (free_port(), free_port(), free_port());
    let v = verifier.port;
    let overlay = format!(
        r#"
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      http: {{endpoint: "127.0.0.1:{http}"}}
exporters:
  otlp_http/traces: {{traces_endpoint: "http://127.0.0.1:{v}/xray/v1/traces"}}
  otlp_http/logs: {{logs_endpoint: "http://127.0.0.1:{v}/logs/v1/logs"}}
service:
  extensions: [sigv4auth/traces, sigv4auth/logs, health_check]
  telemetry: {{metrics: {{address: ""}}}}
"#
    );
    let published = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/collector/transaction-search.yaml"
    ));
    let env = env(SECRET);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let daemon = Daemon::start_layered(&[published], &overlay, health, &env);
    for i in 0..3 {
        let r = common::post_spans(http, 50, &format!("pub{i}")).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(post_logs(http, 20).await.status, 200);
    }
    let done = common::wait_until(Duration::from_secs(30), || {
        verifier.accepted("/xray/v1/traces") == 150 && verifier.accepted("/logs/v1/logs") == 60
    })
    .await;
    let lines = verifier.lines();
    assert!(
        done,
        "verifier saw {lines:#?}\nspanwire:\n{}",
        daemon.logs()
    );
    for l in &lines {
        assert_eq!(l["ok"], true, "{l:#}");
        if l["path"] == "/logs/v1/logs" {
            assert_eq!(l["log_group"], "MyApplicationLogs");
            assert_eq!(l["log_stream"], "default");
        }
    }
    // `service.telemetry.logs.encoding: json` took effect: every line
    // spanwire logged is a JSON object.
    let logs = daemon.logs();
    assert!(!logs.trim().is_empty());
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(parsed.is_object(), "{line}");
    }
}

/// Metrics from the OpenTelemetry Python SDK to a Prometheus remote-write
/// endpoint signed for Amazon Managed Service for Prometheus (`aps`), as
/// ADOT's `ecs-amp-xray.yaml` sends them: botocore checks each signature,
/// python-snappy and Prometheus's own protobuf classes read every series
/// back, and the values are the ones the SDK recorded.
#[tokio::test]
async fn remote_write_to_amp_is_signed_and_every_series_reads_back() {
    let verifier = Verifier::start(SECRET);
    let (http, health) = (free_port(), free_port());
    let v = verifier.port;
    let config = format!(
        r#"
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
  sigv4auth: {{region: us-east-1, service: aps}}
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
exporters:
  prometheusremotewrite:
    endpoint: http://127.0.0.1:{v}/aps/workspaces/ws-1/api/v1/remote_write
    auth: {{authenticator: sigv4auth}}
    external_labels: {{cluster: test}}
    resource_to_telemetry_conversion: {{enabled: true}}
    retry_on_failure: {{enabled: false}}
service:
  extensions: [health_check, sigv4auth]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    metrics: {{receivers: [otlp], exporters: [prometheusremotewrite]}}
"#
    );
    let daemon = start(&config, health, SECRET);
    common::python_agent_done(common::python_agent(
        "http",
        &format!("http://127.0.0.1:{http}"),
        "amp",
        (1, 0),
        "",
    ));
    let path = "/aps/workspaces/ws-1/api/v1/remote_write";
    let done = common::wait_until(Duration::from_secs(20), || {
        verifier.lines().iter().any(|l| l["path"] == path)
    })
    .await;
    let lines = verifier.lines();
    assert!(
        done,
        "verifier saw {lines:#?}\nspanwire:\n{}",
        daemon.logs()
    );
    let mut series: Vec<serde_json::Value> = Vec::new();
    for l in lines.iter().filter(|l| l["path"] == path) {
        assert_eq!(l["ok"], true, "{l:#}");
        assert_eq!(l["version"], "0.1.0");
        series.extend(l["series"].as_array().unwrap().iter().cloned());
    }
    let value = |name: &str, extra: &[(&str, &str)]| -> f64 {
        let found: Vec<&serde_json::Value> = series
            .iter()
            .filter(|s| {
                s["labels"]["__name__"] == name && extra.iter().all(|(k, v)| s["labels"][*k] == *v)
            })
            .collect();
        assert_eq!(found.len(), 1, "{name} {extra:?} in {series:#?}");
        let s = found[0];
        // Every series carries the resource, job, and the external label.
        assert_eq!(s["labels"]["job"], "py-agent-amp", "{s}");
        assert_eq!(s["labels"]["cluster"], "test", "{s}");
        assert_eq!(s["labels"]["deployment_environment"], "test", "{s}");
        assert_eq!(s["labels"]["test_tag"], "amp", "{s}");
        s["samples"][0][0].as_f64().unwrap()
    };
    assert_eq!(value("e2e_requests_total", &[]), 3.0);
    assert_eq!(value("e2e_sessions", &[]), 2.0);
    assert_eq!(value("e2e_queue", &[]), 7.0);
    // 5, 50 and 500 ms in the SDK's default buckets.
    let bucket = |le: &str| value("e2e_latency_milliseconds_bucket", &[("le", le)]);
    assert_eq!(
        [
            bucket("0"),
            bucket("5"),
            bucket("10"),
            bucket("50"),
            bucket("250"),
            bucket("500"),
            bucket("+Inf")
        ],
        [0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    );
    assert_eq!(value("e2e_latency_milliseconds_sum", &[]), 555.0);
    assert_eq!(value("e2e_latency_milliseconds_count", &[]), 3.0);
    // The resource once more, as target_info.
    assert!(series
        .iter()
        .any(|s| s["labels"]["__name__"] == "target_info" && s["labels"]["job"] == "py-agent-amp"));
}
