//! The CloudWatch Logs exporters against a local fake CloudWatch Logs that
//! starts with no log group, throttles, fails with 5xx, refuses a whole call
//! over one invalid event and reports expired events: every other event
//! arrives exactly once, every call follows the PutLogEvents rules, and what
//! is lost is counted.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{aws_test_env, free_port, http_request, metric, Daemon};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::{json, Value};

#[derive(Default)]
struct Fake {
    puts: AtomicUsize,
    groups: Mutex<HashSet<String>>,
    streams: Mutex<HashSet<(String, String)>>,
    /// Times each message was accepted.
    accepted: Mutex<HashMap<String, usize>>,
    retention: Mutex<Option<i64>>,
    /// Rule breaches seen (should stay empty).
    breaches: Mutex<Vec<String>>,
}

fn reply(status: u16, body: Value) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn error(status: u16, kind: &str, message: &str) -> hyper::Response<Full<Bytes>> {
    reply(status, json!({"__type": kind, "message": message}))
}

async fn handle(fake: Arc<Fake>, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    assert!(req.headers().contains_key("authorization"), "SigV4-signed");
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    let group = v["logGroupName"].as_str().unwrap_or("").to_string();
    match target.rsplit('.').next().unwrap_or("") {
        "CreateLogGroup" => {
            if !fake.groups.lock().unwrap().insert(group) {
                return error(400, "ResourceAlreadyExistsException", "exists");
            }
            reply(200, json!({}))
        }
        "PutRetentionPolicy" => {
            *fake.retention.lock().unwrap() = v["retentionInDays"].as_i64();
            reply(200, json!({}))
        }
        "CreateLogStream" => {
            let stream = v["logStreamName"].as_str().unwrap().to_string();
            if !fake.groups.lock().unwrap().contains(&group) {
                return error(400, "ResourceNotFoundException", "no such group");
            }
            fake.streams.lock().unwrap().insert((group, stream));
            reply(200, json!({}))
        }
        "PutLogEvents" => {
            let stream = v["logStreamName"].as_str().unwrap().to_string();
            let n = fake.puts.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if !fake
                .streams
                .lock()
                .unwrap()
                .contains(&(group.clone(), stream))
            {
                return error(
                    400,
                    "ResourceNotFoundException",
                    "The specified log stream does not exist.",
                );
            }
            let events = v["logEvents"].as_array().unwrap();
            // The PutLogEvents rules.
            let mut breaches = Vec::new();
            let bytes: usize = events
                .iter()
                .map(|e| e["message"].as_str().unwrap().len() + 26)
                .sum();
            if events.is_empty() || events.len() > 10_000 {
                breaches.push(format!("{} events", events.len()));
            }
            if bytes > 1_048_576 {
                breaches.push(format!("{bytes} bytes"));
            }
            let ts: Vec<i64> = events
                .iter()
                .map(|e| e["timestamp"].as_i64().unwrap())
                .collect();
            if ts.windows(2).any(|w| w[0] > w[1]) {
                breaches.push("not sorted".into());
            }
            if ts.last().unwrap_or(&0) - ts.first().unwrap_or(&0) >= 24 * 3_600_000 {
                breaches.push("spans 24 h".into());
            }
            fake.breaches.lock().unwrap().extend(breaches);
            match n % 7 {
                2 => return error(400, "ThrottlingException", "Rate exceeded"),
                5 => return error(503, "ServiceUnavailableException", "try later"),
                _ => {}
            }
            let messages: Vec<&str> = events
                .iter()
                .map(|e| e["message"].as_str().unwrap())
                .collect();
            if messages.iter().any(|m| m.contains("poison")) {
                return error(400, "InvalidParameterException", "bad event");
            }
            // Events marked expired are the oldest: a prefix.
            let expired = messages
                .iter()
                .take_while(|m| m.contains("expired"))
                .count();
            let mut acc = fake.accepted.lock().unwrap();
            for m in &messages[expired..] {
                *acc.entry(m.to_string()).or_default() += 1;
            }
            let mut out = json!({"nextSequenceToken": "1"});
            if expired > 0 {
                out["rejectedLogEventsInfo"] = json!({"expiredLogEventEndIndex": expired - 1});
            }
            reply(200, out)
        }
        other => error(400, "UnknownOperationException", other),
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn record(t: u64, body: String) -> LogRecord {
    LogRecord {
        time_unix_nano: t,
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body)),
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_5xx_invalid_and_expired_events() {
    let fake = Arc::new(Fake::default());
    let f = fake.clone();
    let fake_port = crate::common::serve_fake(move |req| handle(f.clone(), req)).await;
    let (otlp, health, telemetry) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{otlp}"}}
exporters:
  awscloudwatchlogs:
    region: us-east-1
    endpoint: "http://127.0.0.1:{fake_port}"
    log_group_name: "/agents/{{ServiceName}}"
    log_stream_name: "{{HostName}}"
    log_retention: 30
    raw_log: true
    max_concurrent_requests: 3
    retry_on_failure: {{initial_interval: 20ms, max_interval: 200ms}}
    sending_queue: {{num_consumers: 2}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: "127.0.0.1:{telemetry}"}}}}
  pipelines:
    logs: {{receivers: [otlp], exporters: [awscloudwatchlogs]}}
"#
    );
    let daemon = Daemon::start_with_env(&config, health, &aws_test_env());

    // Four requests of 6,000 records over two hosts; some 100 KiB records
    // make the byte limit bite; one poison record; five expired ones (10 days old).
    let now = now_ns();
    let mut want: HashSet<String> = HashSet::new();
    for r in 0..4 {
        let mut by_host: Vec<ResourceLogs> = Vec::new();
        for host in ["node-a", "node-b"] {
            let mut records = Vec::new();
            for i in 0..3_000 {
                let mut body = format!("r{r} {host} #{i}");
                if i % 200 == 7 {
                    body.push_str(&" pad".repeat(25_000));
                }
                want.insert(body.clone());
                records.push(record(now - (3_000 - i as u64) * 1_000_000, body));
            }
            if r == 1 && host == "node-a" {
                records.push(record(now, "poison".into()));
                for i in 0..5 {
                    records.push(record(
                        now - 10 * 86_400 * 1_000_000_000 + i,
                        format!("expired {i}"),
                    ));
                }
            }
            by_host.push(ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        spanwire::signal::string_attribute("service.name", "travel"),
                        spanwire::signal::string_attribute("host.name", host),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        let resp = http_request(
            "POST",
            otlp,
            "/v1/logs",
            &[("content-type", "application/x-protobuf")],
            ExportLogsServiceRequest {
                resource_logs: by_host,
            }
            .encode_to_vec(),
        )
        .await;
        assert_eq!(resp.status, 200);
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && fake.accepted.lock().unwrap().len() < want.len() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let accepted = fake.accepted.lock().unwrap().clone();
    let missing = want.iter().filter(|m| !accepted.contains_key(*m)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} missing\n{}",
        want.len(),
        daemon.logs()
    );
    let twice: Vec<_> = accepted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "accepted twice: {}", twice.len());
    assert!(!accepted.contains_key("poison"));
    assert_eq!(accepted.len(), want.len());
    assert!(
        fake.breaches.lock().unwrap().is_empty(),
        "{:?}",
        fake.breaches.lock().unwrap()
    );
    assert_eq!(
        *fake.streams.lock().unwrap(),
        HashSet::from([
            ("/agents/travel".to_string(), "node-a".to_string()),
            ("/agents/travel".to_string(), "node-b".to_string()),
        ])
    );
    assert_eq!(*fake.retention.lock().unwrap(), Some(30));

    // The poison event's last half-call, and the counting of the last
    // accepted call, may still be in flight: wait for both to be counted.
    let scrape = || async {
        String::from_utf8(
            http_request("GET", telemetry, "/metrics", &[], Vec::new())
                .await
                .body
                .to_vec(),
        )
        .unwrap()
    };
    let mut text = scrape().await;
    while Instant::now() < deadline
        && (metric(
            &text,
            "spanwire_cwlogs_events_dropped_total",
            &["reason=\"invalid\""],
        ) < 1.0
            || metric(&text, "spanwire_cwlogs_events_sent_total", &[]) < want.len() as f64)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        text = scrape().await;
    }
    assert_eq!(
        metric(
            &text,
            "spanwire_cwlogs_events_dropped_total",
            &["reason=\"invalid\""]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "spanwire_cwlogs_events_dropped_total",
            &["reason=\"expired\""]
        ),
        5.0
    );
    assert!(
        metric(
            &text,
            "spanwire_cwlogs_events_retried_total",
            &["reason=\"throttled\""]
        ) > 0.0
    );
    assert!(
        metric(
            &text,
            "spanwire_cwlogs_events_retried_total",
            &["reason=\"server_error\""]
        ) > 0.0
    );
    assert_eq!(
        metric(&text, "spanwire_cwlogs_events_sent_total", &[]),
        want.len() as f64
    );
    assert!(daemon
        .logs()
        .contains("CloudWatch Logs refused an event as invalid"));
}
