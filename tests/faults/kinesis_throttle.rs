//! The `awskinesis` receiver through a ProvisionedThroughputExceeded storm:
//! a loopback proxy in front of moto refuses every GetRecords call for the
//! first seconds, then two calls in three. Every span arrives exactly once
//! and every refusal is counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::common::kinesis::{config, put_spans, setup, span_key};
use crate::common::{
    aws_test_env, free_port, http_request, metric, serve_fake, Daemon, Moto, Sink,
};
use spanwire::signal::Signal;

struct Storm {
    moto: String,
    started: Instant,
    get_records: AtomicUsize,
    throttled: AtomicUsize,
}

async fn proxy(
    storm: Arc<Storm>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if target.ends_with(".GetRecords") {
        let n = storm.get_records.fetch_add(1, Ordering::SeqCst);
        if storm.started.elapsed() < Duration::from_secs(4) || !n.is_multiple_of(3) {
            storm.throttled.fetch_add(1, Ordering::SeqCst);
            let mut r = hyper::Response::new(Full::new(Bytes::from_static(
                br#"{"__type":"ProvisionedThroughputExceededException","message":"Rate exceeded for shard in account 123456789012."}"#,
            )));
            *r.status_mut() = hyper::StatusCode::BAD_REQUEST;
            r.headers_mut().insert(
                "content-type",
                "application/x-amz-json-1.1".parse().unwrap(),
            );
            r.headers_mut().insert(
                "x-amzn-errortype",
                "ProvisionedThroughputExceededException".parse().unwrap(),
            );
            return r;
        }
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let mut fwd = hyper::Request::builder().method(parts.method).uri(format!(
        "{}{}",
        storm.moto,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    ));
    for (k, v) in &parts.headers {
        if k != "host" {
            fwd = fwd.header(k, v);
        }
    }
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(fwd.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    hyper::Response::from_parts(parts, Full::new(body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioned_throughput_storm_loses_and_duplicates_nothing() {
    let moto = Moto::start();
    let aws = setup(&moto, 2).await;
    let storm = Arc::new(Storm {
        moto: moto.endpoint(),
        started: Instant::now(),
        get_records: AtomicUsize::new(0),
        throttled: AtomicUsize::new(0),
    });
    let s = storm.clone();
    let port = serve_fake(move |req| proxy(s.clone(), req)).await;
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (health, metrics) = (free_port(), free_port());
    // Small reads, so many GetRecords calls are needed.
    let cfg = config(
        &format!("http://127.0.0.1:{port}"),
        &sink,
        dir.path(),
        health,
        metrics,
    )
    .replace(
        "    poll_interval: 100ms\n",
        "    poll_interval: 100ms\n    max_records: 5\n",
    );
    let daemon = Daemon::start_with_env(&cfg, health, &aws_test_env());

    let n = 600;
    let messages: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"traceId":"{:032x}","spanId":"{:016x}","name":"storm-{i}","kind":"INTERNAL","startTimeUnixNano":1785830304824000000,"endTimeUnixNano":1785830305824000000}}"#,
                0xabc000 + i / 10,
                0x5000 + i
            )
        })
        .collect();
    put_spans(&aws, &messages, 10).await;
    let got = sink
        .wait_for(Signal::Traces, n, Duration::from_secs(120))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for s in sink.spans() {
        *seen.entry(span_key(&s)).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), n, "{got} of {n}:\n{}", daemon.logs());
    assert!(seen.values().all(|c| *c == 1), "each span exactly once");
    let throttled = storm.throttled.load(Ordering::SeqCst);
    let calls = storm.get_records.load(Ordering::SeqCst);
    assert!(
        throttled >= 10 && throttled * 3 >= calls,
        "{throttled} of {calls} GetRecords throttled"
    );
    let text = String::from_utf8_lossy(
        &http_request("GET", metrics, "/metrics", &[], Vec::new())
            .await
            .body,
    )
    .to_string();
    assert_eq!(
        metric(&text, "spanwire_kinesis_throttled_total", &[]),
        throttled as f64,
        "every refusal counted"
    );
    eprintln!("storm: {throttled} of {calls} GetRecords calls throttled; {n} spans once each");
}
