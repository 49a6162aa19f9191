//! The fault suite: spanwire under failures, checked for exactly what is
//! lost, duplicated and refused.
//!
//! - `disk_queue`: the export target down for 60 s under load; `kill -9` and
//!   restart; SIGTERM while retrying; a full disk queue pushing back.
//! - `delivery`: `wait_for_delivery` answers only after delivery.
//! - `durable`: `wait_for_delivery: durable` through an outage and `kill -9`.
//! - `backpressure`: full queues and the memory limiter push back on senders;
//!   10× overload keeps RSS under the limit.
//! - `shutdown`: SIGTERM flushes batches, keeps retrying to the deadline, and
//!   logs exact loss counts without a disk queue.
//! - `xray`: throttling, 5xx and UnprocessedTraceSegments storms.
//! - `cloudwatch`: throttling, 5xx, invalid and expired events.
//! - `kinesis_throttle`: ProvisionedThroughputExceeded storms on GetRecords.
//! - `kinesis_export`: PutRecords partial failures and throttling.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod backpressure;
mod cloudwatch;
mod delivery;
mod disk_queue;
mod durable;
mod kinesis_export;
mod kinesis_throttle;
mod shutdown;
mod xray;

/// Held by the tests that load the machine (10× overload, the 60 s outage),
/// so they do not run at the same time and skew each other's results.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Of the spans of every accepted request (`tag`, `n` spans named
/// `{tag}-{i}` each): how many never reached `sink`, and how many extra
/// copies arrived.
pub fn missing_and_duplicates(
    sink: &common::Sink,
    accepted: &[String],
    n: usize,
) -> (usize, usize) {
    let mut got = std::collections::HashMap::new();
    for s in sink.spans() {
        *got.entry(s.name).or_insert(0usize) += 1;
    }
    let (mut missing, mut dup) = (0, 0);
    for tag in accepted {
        for i in 0..n {
            match got.get(&format!("{tag}-{i}")) {
                None => missing += 1,
                Some(c) => dup += c - 1,
            }
        }
    }
    (missing, dup)
}

/// POSTs `n` spans; the status, or None if the connection failed.
pub async fn post_spans_raw(port: u16, n: usize, tag: &str) -> Option<u16> {
    use prost::Message;
    let body = common::agent_spans(n, tag).encode_to_vec();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let req = hyper::Request::post(format!("http://127.0.0.1:{port}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    client.request(req).await.ok().map(|r| r.status().as_u16())
}
