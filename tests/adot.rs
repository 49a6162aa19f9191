//! The ADOT Collector's components in spanwire, against local stand-ins for
//! what they talk to: the EC2 instance metadata service (IMDSv2) and the ECS
//! task metadata endpoint v4, served on loopback with the documented answers
//! in `tests/fixtures/metadata/`.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{free_port, Daemon, Sink};
use http_body_util::Full;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use spanwire::signal::Signal;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/metadata/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Requests the fake metadata endpoints answered, by kind.
#[derive(Default)]
struct Seen {
    tokens: AtomicUsize,
    refused: AtomicUsize,
    ecs: AtomicUsize,
}

const TOKEN: &str = "AQAEAFakeImdsV2TokenForSpanwireTests==";

/// IMDSv2 (a token first; a GET without it is refused with 401, as IMDS
/// does when v1 is off) and the ECS v4 endpoint under `/v4/task-1`.
async fn metadata_server(seen: Arc<Seen>) -> u16 {
    common::serve_fake(move |req: hyper::Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            let path = req.uri().path().to_string();
            let ok = |body: String| hyper::Response::new(Full::new(Bytes::from(body)));
            let status = |code: u16| {
                let mut r = hyper::Response::new(Full::new(Bytes::new()));
                *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
                r
            };
            if path.starts_with("/v4/task-1") {
                seen.ecs.fetch_add(1, Ordering::SeqCst);
                return match path.as_str() {
                    "/v4/task-1" => ok(fixture("ecs-container-v4.json")),
                    "/v4/task-1/task" => ok(fixture("ecs-task-v4.json")),
                    _ => status(404),
                };
            }
            if path == "/latest/api/token" {
                let ttl = req.headers().get("x-aws-ec2-metadata-token-ttl-seconds");
                if req.method() != hyper::Method::PUT || ttl.is_none() {
                    return status(400);
                }
                seen.tokens.fetch_add(1, Ordering::SeqCst);
                return ok(TOKEN.to_string());
            }
            if req
                .headers()
                .get("x-aws-ec2-metadata-token")
                .and_then(|v| v.to_str().ok())
                != Some(TOKEN)
            {
                seen.refused.fetch_add(1, Ordering::SeqCst);
                return status(401);
            }
            match path.as_str() {
                "/latest/dynamic/instance-identity/document" => ok(fixture("ec2-identity.json")),
                "/latest/meta-data/hostname" => {
                    ok("ip-10-0-2-15.us-west-2.compute.internal".to_string())
                }
                "/latest/meta-data/tags/instance" => ok("Name\nteam".to_string()),
                "/latest/meta-data/tags/instance/team" => ok("agents".to_string()),
                "/latest/meta-data/tags/instance/Name" => ok("agent-host".to_string()),
                _ => status(404),
            }
        }
    })
    .await
}

fn text<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resourcedetection_reads_imds_v2_and_ecs_once_and_stamps_every_batch() {
    let seen = Arc::new(Seen::default());
    let meta = metadata_server(seen.clone()).await;
    let sink = Sink::start().await;
    let (http, health) = (free_port(), free_port());
    let config = format!(
        r#"
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
processors:
  resourcedetection:
    detectors: [env, system, ecs, ec2]
    timeout: 3s
    ec2: {{tags: ["^team$"]}}
  resource:
    attributes:
      - key: TaskDefinitionFamily
        from_attribute: aws.ecs.task.family
        action: insert
      - key: aws.ecs.task.family
        action: delete
exporters:
  otlp:
    endpoint: "127.0.0.1:{sink}"
    tls: {{insecure: true}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [resourcedetection, resource], exporters: [otlp]}}
"#,
        sink = sink.grpc_port
    );
    let ecs = format!("http://127.0.0.1:{meta}/v4/task-1");
    let imds = format!("http://127.0.0.1:{meta}");
    let daemon = Daemon::start_with_env(
        &config,
        health,
        &[
            ("ECS_CONTAINER_METADATA_URI_V4", ecs.as_str()),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.as_str()),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=test,team.name=a%2Cb",
            ),
        ],
    );
    for i in 0..3 {
        let r = common::post_spans(http, 5, &format!("rd{i}")).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        sink.wait_for(Signal::Traces, 15, Duration::from_secs(15))
            .await,
        15,
        "{}",
        daemon.logs()
    );
    let resources = sink.resources();
    assert!(resources.len() >= 3, "{resources:?}");
    let machine_id = std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    for r in &resources {
        // env
        assert_eq!(text(r, "deployment.environment"), Some("test"), "{r:?}");
        assert_eq!(text(r, "team.name"), Some("a,b"));
        // system (listed before ec2: its host.name and host.id win)
        assert_eq!(text(r, "os.type"), Some("linux"));
        assert!(text(r, "host.name").is_some());
        match &machine_id {
            Some(id) => assert_eq!(text(r, "host.id"), Some(id.as_str())),
            None => assert_eq!(text(r, "host.id"), Some("i-1234567890abcdef0")),
        }
        // ecs (listed before ec2: its cloud.platform wins)
        assert_eq!(text(r, "cloud.platform"), Some("aws_ecs"));
        assert_eq!(
            text(r, "aws.ecs.cluster.arn"),
            Some("arn:aws:ecs:us-west-2:111122223333:cluster/agents")
        );
        assert_eq!(
            text(r, "aws.ecs.task.id"),
            Some("158d1c8083dd49d6b527399fd6414f5c")
        );
        assert_eq!(text(r, "aws.ecs.task.revision"), Some("7"));
        assert_eq!(text(r, "aws.ecs.launchtype"), Some("ec2"));
        assert_eq!(text(r, "container.name"), Some("agent"));
        assert_eq!(text(r, "cloud.availability_zone"), Some("us-west-2b"));
        // ec2, through the IMDSv2 token
        assert_eq!(text(r, "host.type"), Some("m7i.large"));
        assert_eq!(text(r, "host.image.id"), Some("ami-0abcdef1234567890"));
        assert_eq!(text(r, "ec2.tag.team"), Some("agents"));
        assert_eq!(text(r, "ec2.tag.Name"), None, "only tags matching ec2.tags");
        // then the resource processor, with the Collector's `attributes:` list
        assert_eq!(text(r, "TaskDefinitionFamily"), Some("agent-task"));
        assert_eq!(text(r, "aws.ecs.task.family"), None);
        // the sender's own attributes stay
        assert!(text(r, "service.name").is_some());
    }
    // Detected once at start, not per batch; never without a token.
    assert_eq!(seen.tokens.load(Ordering::SeqCst), 1);
    assert_eq!(seen.ecs.load(Ordering::SeqCst), 2, "container + task, once");
    assert_eq!(seen.refused.load(Ordering::SeqCst), 0);
}
