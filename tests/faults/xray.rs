//! The `awsxray` exporter against a local fake X-Ray endpoint that throttles,
//! fails with 5xx, lists documents as unprocessed and rejects invalid ones:
//! every valid document arrives exactly once and only the invalid ones are
//! dropped (and counted). Also: `transport: udp` to a daemon-style listener.

use std::collections::{HashMap, HashSet};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{agent_spans, aws_test_env, free_port, http_request, metric, Daemon};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use prost::Message;
use serde_json::{json, Value};

#[derive(Default)]
struct Fake {
    requests: AtomicUsize,
    inflight: AtomicUsize,
    max_inflight: AtomicUsize,
    /// How many times each (trace id, segment id) was accepted.
    accepted: Mutex<HashMap<(String, String), usize>>,
    /// Documents already answered once as unprocessed.
    bounced: Mutex<HashSet<(String, String)>>,
    /// Names of documents seen in a request rejected as invalid.
    invalid_seen: AtomicUsize,
}

fn reply(status: u16, error_type: Option<&str>, body: Value) -> hyper::Response<Full<Bytes>> {
    let mut b = hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(t) = error_type {
        b = b.header("x-amzn-ErrorType", t);
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

async fn handle(fake: Arc<Fake>, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    assert_eq!(req.uri().path(), "/TraceSegments");
    assert!(
        req.headers().contains_key("authorization"),
        "requests are SigV4-signed"
    );
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let n = fake.requests.fetch_add(1, Ordering::SeqCst);
    let now = fake.inflight.fetch_add(1, Ordering::SeqCst) + 1;
    fake.max_inflight.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(40)).await;
    fake.inflight.fetch_sub(1, Ordering::SeqCst);

    let v: Value = serde_json::from_slice(&body).unwrap();
    let docs: Vec<Value> = v["TraceSegmentDocuments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| serde_json::from_str(d.as_str().unwrap()).unwrap())
        .collect();
    assert!(
        !docs.is_empty() && docs.len() <= 50,
        "{} documents",
        docs.len()
    );
    match n % 6 {
        1 => {
            return reply(
                400,
                Some("ThrottledException"),
                json!({"message": "Rate exceeded"}),
            )
        }
        4 => {
            return reply(
                500,
                Some("InternalFailure"),
                json!({"message": "try again"}),
            )
        }
        _ => {}
    }
    if n % 9 == 7 {
        return reply(429, None, json!({"message": "Too Many Requests"}));
    }
    if docs.iter().any(|d| d["name"] == "poison") {
        fake.invalid_seen.fetch_add(1, Ordering::SeqCst);
        return reply(
            400,
            Some("InvalidRequestException"),
            json!({"message": "bad segment document"}),
        );
    }
    let mut unprocessed = Vec::new();
    for d in &docs {
        let key = (
            d["trace_id"].as_str().unwrap().to_string(),
            d["id"].as_str().unwrap().to_string(),
        );
        if d["name"] == "bad-doc" {
            unprocessed.push(
                json!({"Id": key.1, "ErrorCode": "InvalidSegmentDocument", "Message": "malformed"}),
            );
            continue;
        }
        let bounce =
            key.1.as_bytes()[15] % 3 == 0 && fake.bounced.lock().unwrap().insert(key.clone());
        if bounce {
            unprocessed.push(
                json!({"Id": key.1, "ErrorCode": "ThrottledException", "Message": "slow down"}),
            );
        } else {
            *fake.accepted.lock().unwrap().entry(key).or_default() += 1;
        }
    }
    reply(200, None, json!({"UnprocessedTraceSegments": unprocessed}))
}

async fn start_fake() -> (Arc<Fake>, u16) {
    let fake = Arc::new(Fake::default());
    let f = fake.clone();
    let port = crate::common::serve_fake(move |req| handle(f.clone(), req)).await;
    (fake, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_5xx_and_unprocessed_lose_nothing_and_duplicate_nothing() {
    let (fake, fake_port) = start_fake().await;
    let (otlp, health, metrics) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{otlp}"}}
processors:
  batch: {{timeout: 50ms, send_batch_size: 200}}
exporters:
  awsxray:
    region: us-east-1
    endpoint: "http://127.0.0.1:{fake_port}"
    max_concurrent_requests: 4
    retry_on_failure: {{initial_interval: 20ms, max_interval: 200ms}}
    sending_queue: {{num_consumers: 2}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: "127.0.0.1:{metrics}"}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [awsxray]}}
"#
    );
    let daemon = Daemon::start_with_env(&config, health, &aws_test_env());

    // Six traces of 100 spans (distinct trace ids: the tag length sets them).
    let mut expected = 0;
    for tag in ["a", "bb", "ccc", "dddd", "eeeee", "ffffff"] {
        let r = crate::common::post_spans(otlp, 100, tag).await;
        assert_eq!(r.status, 200);
        expected += 100;
    }
    // One trace with a document X-Ray rejects in a whole request, and one it
    // lists as unprocessed for being invalid.
    let mut req = agent_spans(10, "ggggggg");
    let spans = &mut req.resource_spans[0].scope_spans[0].spans;
    spans[3].name = "poison".into();
    spans[5].name = "bad-doc".into();
    let r = http_request(
        "POST",
        otlp,
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        req.encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
    expected += 8;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let total: usize = fake.accepted.lock().unwrap().values().sum();
        if total >= expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let any stray duplicate arrive before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let accepted = fake.accepted.lock().unwrap().clone();
    let total: usize = accepted.values().sum();
    assert_eq!(
        accepted.len(),
        expected,
        "distinct documents accepted\n{}",
        daemon.logs()
    );
    assert_eq!(total, expected, "no document accepted twice");
    assert!(accepted.values().all(|n| *n == 1));
    assert!(
        fake.bounced.lock().unwrap().len() > 20,
        "the fake bounced documents"
    );
    assert!(
        fake.invalid_seen.load(Ordering::SeqCst) >= 2,
        "the poison request was split"
    );
    assert!(
        fake.max_inflight.load(Ordering::SeqCst) >= 2,
        "several PutTraceSegments calls in flight"
    );

    let m = http_request("GET", metrics, "/metrics", &[], Vec::new()).await;
    let text = String::from_utf8_lossy(&m.body).to_string();
    assert_eq!(
        metric(&text, "spanwire_xray_documents_sent_total", &[]),
        expected as f64,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "spanwire_xray_documents_dropped_total",
            &["reason=\"rejected\""]
        ),
        2.0
    );
    assert!(
        metric(
            &text,
            "spanwire_xray_documents_retried_total",
            &["reason=\"throttled\""]
        ) > 0.0
    );
    assert!(
        metric(
            &text,
            "spanwire_xray_documents_retried_total",
            &["reason=\"unprocessed\""]
        ) > 0.0
    );
    assert!(
        metric(
            &text,
            "spanwire_xray_documents_retried_total",
            &["reason=\"server_error\""]
        ) > 0.0
    );
    let logs = daemon.logs();
    assert_eq!(
        logs.matches("X-Ray rejected a document as invalid").count(),
        2,
        "each dropped document is logged with its reason\n{logs}"
    );
    assert!(logs.contains("InvalidSegmentDocument"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_transport_sends_daemon_framed_documents() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let (otlp, health) = (free_port(), free_port());
    let config = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{otlp}"}}
exporters:
  awsxray:
    transport: udp
    udp_endpoint: "127.0.0.1:{udp_port}"
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [awsxray]}}
"#
    );
    let _daemon = Daemon::start(&config, health);
    let r = crate::common::post_spans(otlp, 30, "udp").await;
    assert_eq!(r.status, 200);
    let mut ids = HashSet::new();
    let mut buf = vec![0u8; 70_000];
    while ids.len() < 30 {
        let n = udp.recv(&mut buf).expect("a datagram within 10s");
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        let (header, doc) = text.split_once('\n').unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(header).unwrap(),
            json!({"format": "json", "version": 1})
        );
        let doc: Value = serde_json::from_str(doc).unwrap();
        assert!(doc["trace_id"].as_str().unwrap().starts_with("1-"));
        assert!(
            ids.insert(doc["id"].as_str().unwrap().to_string()),
            "sent once"
        );
    }
}
