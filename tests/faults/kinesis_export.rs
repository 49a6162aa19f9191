//! The `awskinesis` exporter through injected failures: a loopback proxy in
//! front of kinesalite throttles every fifth `PutRecords` call whole and,
//! in the others, fails a third of the records not failed before (as
//! `ProvisionedThroughputExceededException` or `InternalFailure` in the
//! answer), forwarding only the rest. Every span lands in the stream once,
//! a retry carries only records that failed, and every retried record is
//! counted.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use md5::Digest;
use serde_json::{json, Value};

use crate::common::kinesis::read_stream;
use crate::common::{
    aws_test_env, aws_test_sdk_config, free_port, http_request, metric, post_spans, serve_fake,
    wait_until, Daemon, Kinesalite,
};

const STREAM: &str = "export-faults";

/// What the proxy saw.
#[derive(Default)]
struct Log {
    calls: usize,
    throttled_calls: usize,
    /// Per record (by the digest of its data): each appearance, in order:
    /// true if accepted.
    attempts: HashMap<[u8; 16], Vec<bool>>,
    failed_instances: usize,
    codes: HashSet<String>,
}

struct Proxy {
    target: String,
    log: Mutex<Log>,
}

fn digest(data: &[u8]) -> [u8; 16] {
    let d = md5::Md5::digest(data);
    let mut out = [0u8; 16];
    out.copy_from_slice(&d);
    out
}

fn json_reply(status: u16, body: Value, error_type: Option<&str>) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert(
        "content-type",
        "application/x-amz-json-1.1".parse().unwrap(),
    );
    if let Some(t) = error_type {
        r.headers_mut()
            .insert("x-amzn-errortype", t.parse().unwrap());
    }
    r
}

async fn forward(
    target: &str,
    parts: &http::request::Parts,
    body: Bytes,
) -> (http::StatusCode, Bytes) {
    let mut fwd = hyper::Request::builder()
        .method(parts.method.clone())
        .uri(format!(
            "{target}{}",
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        ));
    for (k, v) in &parts.headers {
        // The body may be rewritten: its length is the new one's.
        if k != "host" && k != "content-length" {
            fwd = fwd.header(k, v);
        }
    }
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(fwd.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

async fn handle(
    p: Arc<Proxy>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    if !target.ends_with(".PutRecords") {
        let (status, b) = forward(&p.target, &parts, body).await;
        let mut r = hyper::Response::new(Full::new(b));
        *r.status_mut() = status;
        r.headers_mut().insert(
            "content-type",
            "application/x-amz-json-1.1".parse().unwrap(),
        );
        return r;
    }
    let mut call: Value = serde_json::from_slice(&body).unwrap();
    let records = call["Records"].as_array().cloned().unwrap();
    let digests: Vec<[u8; 16]> = records
        .iter()
        .map(|r| {
            digest(
                &base64::engine::general_purpose::STANDARD
                    .decode(r["Data"].as_str().unwrap())
                    .unwrap(),
            )
        })
        .collect();
    // Decide the fate of each record while holding the log.
    let fail: Vec<Option<&'static str>> = {
        let mut log = p.log.lock().unwrap();
        log.calls += 1;
        if log.calls % 5 == 2 {
            log.throttled_calls += 1;
            for d in &digests {
                log.attempts.entry(*d).or_default().push(false);
                log.failed_instances += 1;
            }
            return json_reply(
                400,
                json!({"__type": "ProvisionedThroughputExceededException",
                       "message": "Rate exceeded for shard shardId-000000000000 in stream export-faults"}),
                Some("ProvisionedThroughputExceededException"),
            );
        }
        digests
            .iter()
            .map(|d| {
                let before = log.attempts.get(d).is_some_and(|a| !a.is_empty());
                // A third of the records that never failed fail now.
                (!before && d[0] % 3 == 0).then_some(if d[1] % 2 == 0 {
                    "ProvisionedThroughputExceededException"
                } else {
                    "InternalFailure"
                })
            })
            .collect()
    };
    let kept: Vec<Value> = records
        .iter()
        .zip(&fail)
        .filter(|(_, f)| f.is_none())
        .map(|(r, _)| r.clone())
        .collect();
    let mut backend: Vec<Value> = Vec::new();
    if !kept.is_empty() {
        call["Records"] = Value::Array(kept);
        let (status, b) = forward(&p.target, &parts, Bytes::from(call.to_string())).await;
        assert!(
            status.is_success(),
            "kinesalite: {}",
            String::from_utf8_lossy(&b)
        );
        let v: Value = serde_json::from_slice(&b).unwrap();
        backend = v["Records"].as_array().cloned().unwrap();
    }
    let mut backend = backend.into_iter();
    let mut out = Vec::new();
    let mut failed = 0;
    let mut log = p.log.lock().unwrap();
    for (d, f) in digests.iter().zip(&fail) {
        match f {
            Some(code) => {
                failed += 1;
                log.failed_instances += 1;
                log.codes.insert(code.to_string());
                log.attempts.entry(*d).or_default().push(false);
                out.push(json!({"ErrorCode": code, "ErrorMessage": format!("injected {code}")}));
            }
            None => {
                let r = backend.next().unwrap();
                assert!(
                    r.get("ErrorCode").is_none(),
                    "kinesalite failed a record: {r}"
                );
                log.attempts.entry(*d).or_default().push(true);
                out.push(r);
            }
        }
    }
    json_reply(
        200,
        json!({"FailedRecordCount": failed, "Records": out}),
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_failures_and_throttling_retry_only_the_failed_records() {
    let kl = Kinesalite::start();
    let k = aws_sdk_kinesis::Client::new(&aws_test_sdk_config(&kl.endpoint()));
    k.create_stream()
        .stream_name(STREAM)
        .shard_count(2)
        .send()
        .await
        .unwrap();
    let proxy = Arc::new(Proxy {
        target: kl.endpoint(),
        log: Mutex::new(Log::default()),
    });
    let p = proxy.clone();
    let port = serve_fake(move |req| handle(p.clone(), req)).await;
    let (otlp, health, metrics) = (free_port(), free_port(), free_port());
    let cfg = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{otlp}"}}
processors:
  batch: {{timeout: 50ms, send_batch_size: 200}}
exporters:
  awskinesis:
    aws: {{stream_name: {STREAM}, region: us-east-1, kinesis_endpoint: "http://127.0.0.1:{port}"}}
    partition_key: trace_id
    max_record_size: 4096
    max_records_per_batch: 8
    retry_on_failure: {{initial_interval: 20ms, max_interval: 200ms, max_elapsed_time: 0s}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: "127.0.0.1:{metrics}"}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [awskinesis]}}
"#
    );
    let daemon = Daemon::start_with_env(&cfg, health, &aws_test_env());
    let (requests, per) = (80, 25);
    for r in 0..requests {
        let reply = post_spans(otlp, per, &format!("r{r}")).await;
        assert_eq!(reply.status, 200);
    }
    let n = requests * per;
    let mut names: Vec<String> = Vec::new();
    let all = wait_until(Duration::from_secs(60), || {
        let (by_shard, _, _) = futures_block(read_stream(&k, STREAM));
        names = by_shard.into_values().flatten().map(|s| s.name).collect();
        names.len() >= n
    })
    .await;
    assert!(
        all,
        "{} of {n} spans in the stream\n{}",
        names.len(),
        daemon.logs()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (by_shard, records, users) = read_stream(&k, STREAM).await;
    let names: Vec<String> = by_shard.into_values().flatten().map(|s| s.name).collect();
    let distinct: HashSet<&String> = names.iter().collect();
    assert_eq!(distinct.len(), n, "every span in the stream");
    assert_eq!(names.len(), n, "and none twice");

    let text = String::from_utf8_lossy(
        &http_request("GET", metrics, "/metrics", &[], Vec::new())
            .await
            .body,
    )
    .to_string();
    let log = proxy.log.lock().unwrap();
    assert!(
        log.throttled_calls >= 2,
        "{} calls throttled",
        log.throttled_calls
    );
    assert_eq!(
        log.codes,
        HashSet::from([
            "ProvisionedThroughputExceededException".to_string(),
            "InternalFailure".to_string()
        ])
    );
    for (d, attempts) in &log.attempts {
        // Accepted once, last; every appearance before it a failure.
        assert_eq!(
            attempts.iter().filter(|a| **a).count(),
            1,
            "record {} accepted once: {attempts:?}",
            hex::encode(d)
        );
        assert_eq!(attempts.last(), Some(&true));
    }
    assert_eq!(
        log.attempts.len(),
        records,
        "the stream holds every record once"
    );
    assert_eq!(
        metric(&text, "spanwire_kinesis_records_retried_total", &[]),
        log.failed_instances as f64,
        "every failed record counted as retried"
    );
    assert_eq!(
        metric(&text, "spanwire_kinesis_records_put_total", &[]),
        records as f64
    );
    eprintln!(
        "kinesis export faults: {n} spans in {records} records ({users} user records), {} calls ({} throttled whole), {} record failures retried",
        log.calls, log.throttled_calls, log.failed_instances
    );
}

/// Runs a future to completion from sync code inside the multi-thread runtime.
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}
