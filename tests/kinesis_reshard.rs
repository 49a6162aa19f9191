//! The `awskinesis` receiver against kinesalite, whose shard iterators,
//! 56-digit sequence numbers and resharding behave like Kinesis: a shard is
//! split while spanwire reads; the parent is read to its end and checkpointed
//! `SHARD_END`, then both children are read, and every span arrives once.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::StreamStatus;
use common::{aws_test_env, aws_test_sdk_config, free_port, Daemon, Kinesalite, Sink};
use serde_json::Value;
use spanwire::signal::Signal;

const STREAM: &str = "resharded";

async fn wait_active(k: &aws_sdk_kinesis::Client) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = k
            .describe_stream_summary()
            .stream_name(STREAM)
            .send()
            .await
            .unwrap();
        if d.stream_description_summary().unwrap().stream_status() == &StreamStatus::Active {
            return;
        }
        assert!(Instant::now() < deadline, "stream not ACTIVE");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One span per record, in CloudWatch Logs' gzip envelope.
async fn put(k: &aws_sdk_kinesis::Client, range: std::ops::Range<usize>) {
    for i in range {
        let span = format!(
            r#"{{"traceId":"{:032x}","spanId":"{:016x}","name":"k-{i}","kind":"INTERNAL","startTimeUnixNano":1785830304824000000,"endTimeUnixNano":1785830305824000000}}"#,
            0x5ca1e000 + i,
            i + 1
        );
        let env = serde_json::json!({
            "messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "aws/spans",
            "logStream": "s", "subscriptionFilters": ["f"],
            "logEvents": [{"id": i.to_string(), "timestamp": 1785830305824i64, "message": span}]
        });
        k.put_record()
            .stream_name(STREAM)
            .partition_key(format!("pk-{i}"))
            .data(Blob::new(spanwire::net::gzip(env.to_string().as_bytes())))
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_shard_is_read_to_its_end_before_its_children() {
    let kl = Kinesalite::start();
    let k = aws_sdk_kinesis::Client::new(&aws_test_sdk_config(&kl.endpoint()));
    k.create_stream()
        .stream_name(STREAM)
        .shard_count(1)
        .send()
        .await
        .unwrap();
    wait_active(&k).await;
    put(&k, 0..20).await;

    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let health = free_port();
    let config = format!(
        r#"
receivers:
  awskinesis:
    stream_name: {STREAM}
    region: us-east-1
    endpoint: "{endpoint}"
    poll_interval: 100ms
    shard_discovery_interval: 1s
    checkpoint: {{directory: "{dir}"}}
processors:
  batch: {{timeout: 50ms}}
exporters:
  otlp:
    endpoint: "http://127.0.0.1:{grpc}"
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [awskinesis], processors: [batch], exporters: [otlp]}}
"#,
        endpoint = kl.endpoint(),
        dir = dir.path().display(),
        grpc = sink.grpc_port
    );
    let daemon = Daemon::start_with_env(&config, health, &aws_test_env());
    assert_eq!(
        sink.wait_for(Signal::Traces, 20, Duration::from_secs(30))
            .await,
        20,
        "{}",
        daemon.logs()
    );

    // Split the only shard in two while spanwire reads it.
    let parent = k
        .list_shards()
        .stream_name(STREAM)
        .send()
        .await
        .unwrap()
        .shards()[0]
        .shard_id()
        .to_string();
    k.split_shard()
        .stream_name(STREAM)
        .shard_to_split(&parent)
        .new_starting_hash_key("170141183460469231731687303715884105728")
        .send()
        .await
        .unwrap();
    wait_active(&k).await;
    put(&k, 20..60).await;

    assert_eq!(
        sink.wait_for(Signal::Traces, 60, Duration::from_secs(30))
            .await,
        60,
        "{}",
        daemon.logs()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spans = sink.spans();
    let mut count: HashMap<String, usize> = HashMap::new();
    for s in &spans {
        *count.entry(s.name.clone()).or_default() += 1;
    }
    assert_eq!(count.len(), 60, "every span");
    assert!(count.values().all(|n| *n == 1), "none twice");

    let cp: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(format!("{STREAM}.checkpoints.json"))).unwrap(),
    )
    .unwrap();
    let shards = cp["shards"].as_object().unwrap();
    assert_eq!(shards[&parent], "SHARD_END", "{cp}");
    let children: Vec<&String> = shards.keys().filter(|k| **k != parent).collect();
    assert_eq!(children.len(), 2, "both children read: {cp}");
    for c in children {
        let seq = shards[c].as_str().unwrap();
        assert!(
            seq.len() > 20 && seq.chars().all(|c| c.is_ascii_digit()),
            "{c}: {seq}"
        );
    }
    assert!(daemon.logs().contains("shard read to its end"));
}
