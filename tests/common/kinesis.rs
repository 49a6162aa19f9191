//! Kinesis and CloudWatch Logs helpers for the `awskinesis` tests: a stream
//! fed by a real `aws/spans` subscription filter on moto.

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use opentelemetry_proto::tonic::trace::v1::Span;
use spanwire::signal::{Signal, Telemetry};

use super::{aws_test_sdk_config, Moto, Sink};

pub const STREAM: &str = "spans-stream";

pub fn fixture_lines(name: &str) -> Vec<String> {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/aws-spans/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .lines()
    .filter(|l| !l.trim().is_empty())
    .map(String::from)
    .collect()
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub struct Aws {
    pub kinesis: aws_sdk_kinesis::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
}

/// A stream with `shards` shards and an `aws/spans` log group subscribed to it.
pub async fn setup(moto: &Moto, shards: i32) -> Aws {
    let conf = aws_test_sdk_config(&moto.endpoint());
    let kinesis = aws_sdk_kinesis::Client::new(&conf);
    let logs = aws_sdk_cloudwatchlogs::Client::new(&conf);
    kinesis
        .create_stream()
        .stream_name(STREAM)
        .shard_count(shards)
        .send()
        .await
        .unwrap();
    let arn = stream_arn(&kinesis).await;
    logs.create_log_group()
        .log_group_name("aws/spans")
        .send()
        .await
        .unwrap();
    logs.create_log_stream()
        .log_group_name("aws/spans")
        .log_stream_name("default")
        .send()
        .await
        .unwrap();
    logs.put_subscription_filter()
        .log_group_name("aws/spans")
        .filter_name("to-kinesis")
        .filter_pattern("")
        .destination_arn(arn)
        .role_arn("arn:aws:iam::123456789012:role/cwl-to-kinesis")
        .send()
        .await
        .unwrap();
    Aws { kinesis, logs }
}

/// Writes `messages` to `aws/spans` (one PutLogEvents call each `per_call`).
pub async fn put_spans(aws: &Aws, messages: &[String], per_call: usize) {
    for chunk in messages.chunks(per_call) {
        let t = now_ms();
        let events: Vec<InputLogEvent> = chunk
            .iter()
            .map(|m| {
                InputLogEvent::builder()
                    .timestamp(t)
                    .message(m)
                    .build()
                    .unwrap()
            })
            .collect();
        aws.logs
            .put_log_events()
            .log_group_name("aws/spans")
            .log_stream_name("default")
            .set_log_events(Some(events))
            .send()
            .await
            .unwrap();
    }
}

pub fn config(endpoint: &str, sink: &Sink, dir: &Path, health: u16, metrics: u16) -> String {
    format!(
        r#"
receivers:
  awskinesis:
    stream_name: {STREAM}
    region: us-east-1
    endpoint: "{endpoint}"
    poll_interval: 100ms
    shard_discovery_interval: 1s
    # long enough that a completed record is never later than this under load
    in_progress_timeout: 8s
    checkpoint:
      directory: "{dir}"
processors:
  batch: {{timeout: 50ms}}
exporters:
  otlp:
    endpoint: "http://127.0.0.1:{grpc}"
    retry_on_failure: {{initial_interval: 50ms, max_interval: 200ms, max_elapsed_time: 0s}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: "127.0.0.1:{metrics}"}}}}
  pipelines:
    traces: {{receivers: [awskinesis], processors: [batch], exporters: [otlp]}}
    logs: {{receivers: [awskinesis], processors: [batch], exporters: [otlp]}}
"#,
        dir = dir.display(),
        grpc = sink.grpc_port
    )
}

pub fn span_key(s: &Span) -> (String, String) {
    (hex::encode(&s.trace_id), hex::encode(&s.span_id))
}

/// The stream's ARN.
pub async fn stream_arn(kinesis: &aws_sdk_kinesis::Client) -> String {
    kinesis
        .describe_stream_summary()
        .stream_name(STREAM)
        .send()
        .await
        .unwrap()
        .stream_description_summary()
        .unwrap()
        .stream_arn()
        .to_string()
}

/// Every record of every shard, de-aggregated and decoded: per shard, the
/// spans in it; also the number of Kinesis records and of user records.
pub async fn read_stream(
    k: &aws_sdk_kinesis::Client,
    stream: &str,
) -> (HashMap<String, Vec<Span>>, usize, usize) {
    let mut out = HashMap::new();
    let (mut records, mut users) = (0, 0);
    let shards = k.list_shards().stream_name(stream).send().await.unwrap();
    for s in shards.shards() {
        let mut it = k
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(s.shard_id())
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator()
            .map(String::from);
        let spans: &mut Vec<Span> = out.entry(s.shard_id().to_string()).or_default();
        while let Some(i) = it {
            let r = k
                .get_records()
                .shard_iterator(i)
                .limit(1000)
                .send()
                .await
                .unwrap();
            for rec in r.records() {
                records += 1;
                let parts = spanwire::convert::cwl::deaggregate(rec.data().as_ref()).unwrap();
                for p in parts {
                    users += 1;
                    let Telemetry::Traces(rs) =
                        spanwire::convert::otlp_proto::decode_request(Signal::Traces, &p).unwrap()
                    else {
                        panic!("not traces")
                    };
                    spans.extend(
                        rs.into_iter()
                            .flat_map(|r| r.scope_spans)
                            .flat_map(|s| s.spans),
                    );
                }
            }
            if r.records().is_empty() && r.millis_behind_latest() == Some(0) {
                break;
            }
            it = r.next_shard_iterator().map(String::from);
        }
    }
    (out, records, users)
}
