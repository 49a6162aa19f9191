//! The `awskinesis` receiver end to end against moto server: spans written
//! to the `aws/spans` log group travel through a real subscription filter
//! into a Kinesis stream (in CloudWatch Logs' own gzip envelope), and spanwire
//! delivers each span once to an OTLP sink — also across kill -9.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use aws_sdk_kinesis::primitives::Blob;
use common::{
    aws_test_env, aws_test_sdk_config, free_port, http_request, metric, wait_until, Daemon, Moto,
    Sink,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value;
use spanwire::signal::Signal;

use common::kinesis::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_spans_arrive_once_completed_and_bad_records_are_skipped() {
    let moto = Moto::start();
    let aws = setup(&moto, 2).await;
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (health, metrics) = (free_port(), free_port());
    let daemon = Daemon::start_with_env(
        &config(&moto.endpoint(), &sink, dir.path(), health, metrics),
        health,
        &aws_test_env(),
    );

    // Real records: X-Ray-origin spans (in progress, then completed), AgentCore spans.
    let mut messages = fixture_lines("coralogix_stepfunctions_aws_spans.jsonl");
    messages.extend(fixture_lines(
        "awsdocs_agentcore_understanding_input_spans.jsonl",
    ));
    messages.extend(fixture_lines("dev7a_lambda_appsignals_span.jsonl"));
    let mut expected: HashMap<(String, String), bool> = HashMap::new();
    for m in &messages {
        let v: Value = serde_json::from_str(m).unwrap();
        let key = (
            v["traceId"].as_str().unwrap().to_string(),
            v["spanId"].as_str().unwrap().to_string(),
        );
        let completed = !v["endTimeUnixNano"].is_null();
        let e = expected.entry(key).or_insert(false);
        *e |= completed;
    }
    // A span spanwire wrote to X-Ray itself (the loop guard drops it), and a
    // log event that is not a span.
    let marked = r#"{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","name":"written-by-spanwire","kind":"SERVER","startTimeUnixNano":1785830304824000000,"endTimeUnixNano":1785830305824000000,"attributes":{"spanwire_exported":true}}"#;
    messages.push(marked.to_string());
    messages.push("this is not a span".to_string());
    put_spans(&aws, &messages, 7).await;

    // Another log group on the same stream (an agent runtime's logs) comes
    // out as log records (`format: auto`).
    let group = "/aws/bedrock-agentcore/runtimes/agent-1";
    aws.logs
        .create_log_group()
        .log_group_name(group)
        .send()
        .await
        .unwrap();
    aws.logs
        .create_log_stream()
        .log_group_name(group)
        .log_stream_name("rt")
        .send()
        .await
        .unwrap();
    let arn = stream_arn(&aws.kinesis).await;
    aws.logs
        .put_subscription_filter()
        .log_group_name(group)
        .filter_name("logs-to-kinesis")
        .filter_pattern("")
        .destination_arn(arn)
        .role_arn("arn:aws:iam::123456789012:role/cwl-to-kinesis")
        .send()
        .await
        .unwrap();
    let t = now_ms();
    aws.logs
        .put_log_events()
        .log_group_name(group)
        .log_stream_name("rt")
        .set_log_events(Some(
            [
                "agent started",
                "tool call: search_flights",
                "agent finished",
            ]
            .iter()
            .map(|m| {
                InputLogEvent::builder()
                    .timestamp(t)
                    .message(*m)
                    .build()
                    .unwrap()
            })
            .collect(),
        ))
        .send()
        .await
        .unwrap();

    // Records no subscription filter writes: a health check, bad gzip, and a
    // KPL aggregate holding one more envelope.
    let control = std::fs::read(format!(
        "{}/tests/fixtures/aws-spans/envelope_control_message_kinesis.clever.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let extra = r#"{"traceId":"11111111111111111111111111111111","spanId":"2222222222222222","name":"via-kpl","kind":"INTERNAL","startTimeUnixNano":1785830304824000000,"endTimeUnixNano":1785830305824000000}"#;
    let envelope = serde_json::json!({
        "messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "aws/spans",
        "logStream": "kpl", "subscriptionFilters": ["f"],
        "logEvents": [{"id": "1", "timestamp": now_ms(), "message": extra}]
    });
    let kpl = spanwire::convert::cwl::aggregate(
        "pk",
        &[&spanwire::net::gzip(envelope.to_string().as_bytes())],
    );
    expected.insert(
        (
            "11111111111111111111111111111111".into(),
            "2222222222222222".into(),
        ),
        true,
    );
    for data in [
        spanwire::net::gzip(&control),
        b"\x1f\x8bnot really gzip".to_vec(),
        kpl,
    ] {
        aws.kinesis
            .put_record()
            .stream_name(STREAM)
            .partition_key("pk")
            .data(Blob::new(data))
            .send()
            .await
            .unwrap();
    }

    let arrived = wait_until(Duration::from_secs(30), || {
        let keys: HashSet<_> = sink.spans().iter().map(span_key).collect();
        expected.keys().all(|k| keys.contains(k))
    })
    .await;
    // Anything late or duplicated has time to show up.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let spans = sink.spans();
    assert!(
        arrived,
        "missing spans; got {} of {}\n{}",
        spans.len(),
        expected.len(),
        daemon.logs()
    );
    let mut seen: HashMap<(String, String), &Span> = HashMap::new();
    for s in &spans {
        assert!(
            seen.insert(span_key(s), s).is_none(),
            "{:?} arrived twice",
            span_key(s)
        );
    }
    assert_eq!(seen.len(), expected.len(), "exactly the expected spans");
    for (k, completed) in &expected {
        let s = seen[k];
        assert_eq!(
            s.end_time_unix_nano != 0,
            *completed,
            "{k:?} {}: completed when a completed record exists",
            s.name
        );
    }
    assert!(
        spans.iter().all(|s| s.name != "written-by-spanwire"),
        "the loop guard drops spanwire's own spans"
    );
    // Times above 2^53 kept exactly.
    // (The fixture has six S3.ListBuckets spans; pick this one by its id, not
    // by arrival order.)
    let s3 = spans
        .iter()
        .find(|s| hex::encode(&s.span_id) == "29d03b80232a080a")
        .unwrap();
    assert_eq!(s3.start_time_unix_nano, 1_785_830_304_947_000_064);
    assert!(s3.attributes.iter().any(|kv| kv.key == "http.status_code"
        && kv.value.as_ref().and_then(|v| v.value.clone())
            == Some(any_value::Value::IntValue(200))));

    let m = http_request("GET", metrics, "/metrics", &[], Vec::new()).await;
    let text = String::from_utf8_lossy(&m.body).to_string();
    assert_eq!(
        metric(&text, "spanwire_kinesis_bad_records_total", &[]),
        1.0,
        "{text}"
    );
    assert_eq!(metric(&text, "spanwire_kinesis_bad_spans_total", &[]), 1.0);
    assert_eq!(
        metric(&text, "spanwire_kinesis_control_messages_total", &[]),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "spanwire_kinesis_loop_guard_dropped_spans_total",
            &[]
        ),
        1.0
    );
    let logs = daemon.logs();
    assert!(
        logs.contains("skipping a Kinesis record") && logs.contains("sequence"),
        "{logs}"
    );

    // Both shards are checkpointed in the file.
    let cp: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(format!("{STREAM}.checkpoints.json"))).unwrap(),
    )
    .unwrap();
    assert!(!cp["shards"].as_object().unwrap().is_empty(), "{cp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_only_the_unacknowledged_tail_is_read_again() {
    let moto = Moto::start();
    let aws = setup(&moto, 1).await;
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (health, metrics) = (free_port(), free_port());
    let cfg = config(&moto.endpoint(), &sink, dir.path(), health, metrics);
    let span = |i: usize| {
        format!(
            r#"{{"traceId":"{:032x}","spanId":"{:016x}","name":"span-{i}","kind":"INTERNAL","startTimeUnixNano":1785830304824000000,"endTimeUnixNano":1785830305824000000}}"#,
            0xabc000 + i / 10,
            i + 1
        )
    };
    // 1. Delivered and checkpointed.
    let mut daemon = Daemon::start_with_env(&cfg, health, &aws_test_env());
    let first: Vec<String> = (0..30).map(span).collect();
    put_spans(&aws, &first, 10).await;
    assert!(
        wait_until(Duration::from_secs(30), || sink.count(Signal::Traces) >= 30).await,
        "{}",
        daemon.logs()
    );
    let cp_file = dir.path().join(format!("{STREAM}.checkpoints.json"));
    let checkpointed = || -> usize {
        std::fs::read(&cp_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map(|v| v["shards"].as_object().map(|o| o.len()).unwrap_or(0))
            .unwrap_or(0)
    };
    assert!(wait_until(Duration::from_secs(10), || checkpointed() == 1).await);
    // Wait for the checkpoint to settle on the last delivered record.
    let mut cp_before = std::fs::read_to_string(&cp_file).unwrap();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = std::fs::read_to_string(&cp_file).unwrap();
        if now == cp_before {
            break;
        }
        cp_before = now;
    }
    // 2. The backend goes down: new records are read but cannot be delivered,
    //    so the checkpoint must not move. Then the process dies hard.
    sink.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
    let second: Vec<String> = (30..50).map(span).collect();
    put_spans(&aws, &second, 10).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        std::fs::read_to_string(&cp_file).unwrap(),
        cp_before,
        "no checkpoint past undelivered data"
    );
    daemon.kill_hard();
    // 3. Back up: exactly the undelivered tail arrives, nothing twice.
    sink.refuse
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let daemon = Daemon::start_with_env(&cfg, health, &aws_test_env());
    assert!(
        wait_until(Duration::from_secs(30), || sink.count(Signal::Traces) >= 50).await,
        "{}",
        daemon.logs()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spans = sink.spans();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let distinct: HashSet<&str> = names.iter().copied().collect();
    assert_eq!(distinct.len(), 50, "every span");
    assert_eq!(names.len(), 50, "none read twice: {names:?}");
    assert_ne!(
        std::fs::read_to_string(&cp_file).unwrap(),
        cp_before,
        "the checkpoint moved on"
    );
}

/// Lease owners by shard, from the lease table.
async fn lease_owners(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> HashMap<String, Option<String>> {
    let Ok(resp) = ddb.scan().table_name(table).send().await else {
        return HashMap::new();
    };
    resp.items()
        .iter()
        .map(|i| {
            (
                i["leaseKey"].as_s().unwrap().clone(),
                i.get("leaseOwner").and_then(|v| v.as_s().ok()).cloned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_shards_through_dynamodb_leases_and_take_over() {
    let moto = Moto::start();
    let aws = setup(&moto, 4).await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws_test_sdk_config(&moto.endpoint()));
    let sink = Sink::start().await;
    let table = "spanwire-leases";
    let cfg = |health: u16| {
        format!(
            r#"
receivers:
  awskinesis:
    stream_name: {STREAM}
    region: us-east-1
    endpoint: "{endpoint}"
    poll_interval: 100ms
    shard_discovery_interval: 2s
    checkpoint:
      store: dynamodb
      table: {table}
    lease:
      failover_time: 3s
      renew_interval: 500ms
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
            endpoint = moto.endpoint(),
            grpc = sink.grpc_port
        )
    };
    let (ha, hb) = (free_port(), free_port());
    let a = Daemon::start_with_env(&cfg(ha), ha, &aws_test_env());
    let mut owners = HashMap::new();
    let all_held_by_one = wait_until(Duration::from_secs(20), || {
        owners = futures_block(lease_owners(&ddb, table));
        owners.len() == 4
            && owners.values().all(|o| o.is_some())
            && owners.values().collect::<HashSet<_>>().len() == 1
    })
    .await;
    assert!(
        all_held_by_one,
        "one instance holds every lease: {owners:?}\n{}",
        a.logs()
    );
    let mut b = Daemon::start_with_env(&cfg(hb), hb, &aws_test_env());
    let balanced = wait_until(Duration::from_secs(20), || {
        owners = futures_block(lease_owners(&ddb, table));
        let mut per: HashMap<&Option<String>, usize> = HashMap::new();
        for o in owners.values() {
            *per.entry(o).or_default() += 1;
        }
        per.len() == 2 && per.values().all(|n| *n == 2) && !per.contains_key(&None)
    })
    .await;
    assert!(
        balanced,
        "two instances share four shards two and two: {owners:?}\n{}\n{}",
        a.logs(),
        b.logs()
    );

    let span = |i: usize| {
        format!(
            r#"{{"traceId":"{:032x}","spanId":"{:016x}","name":"r-{i}","kind":"INTERNAL","startTimeUnixNano":1785830304824000000,"endTimeUnixNano":1785830305824000000}}"#,
            0xdef000 + i,
            i + 1
        )
    };
    let first: Vec<String> = (0..40).map(span).collect();
    put_spans(&aws, &first, 1).await;
    let names =
        |sink: &Sink| -> HashSet<String> { sink.spans().iter().map(|s| s.name.clone()).collect() };
    assert!(
        wait_until(Duration::from_secs(30), || names(&sink).len() >= 40).await,
        "{} of 40\n{}\n{}",
        names(&sink).len(),
        a.logs(),
        b.logs()
    );

    // One replica dies: the other takes its shards after the failover time.
    // Rebalancing hands leases over: nothing was read twice.
    assert_eq!(
        sink.spans().len(),
        40,
        "no duplicates while sharing\n{}\n{}",
        a.logs(),
        b.logs()
    );
    b.kill_hard();
    let taken_over = wait_until(Duration::from_secs(20), || {
        owners = futures_block(lease_owners(&ddb, table));
        owners.values().collect::<HashSet<_>>().len() == 1 && owners.values().all(|o| o.is_some())
    })
    .await;
    assert!(
        taken_over,
        "the survivor holds every lease: {owners:?}\n{}",
        a.logs()
    );
    let second: Vec<String> = (40..80).map(span).collect();
    put_spans(&aws, &second, 1).await;
    assert!(
        wait_until(Duration::from_secs(30), || names(&sink).len() >= 80).await,
        "{} of 80\n{}",
        names(&sink).len(),
        a.logs()
    );
    let spans = sink.spans();
    let dups = spans.len() - names(&sink).len();
    // At least once: what the dead replica had delivered but not yet
    // checkpointed may come again (a few batches at most); nothing else.
    eprintln!("spans read again after the takeover: {dups}");
    assert!(dups <= 20, "{dups} duplicates");
}

/// Runs a future to completion from sync code inside the multi-thread runtime.
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}
