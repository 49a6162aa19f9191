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
/// does when v1 is off) and the ECS v4 endpoint under `/v4/task-1`
/// (container, `/task`, `/task/stats`).
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
                    "/v4/task-1/task/stats" => ok(fixture("ecs-task-stats-v4.json")),
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

const PUBLISHED: [&str; 5] = [
    "apprunner-default-config.yaml",
    "ecs-default-config.yaml",
    "ecs-xray.yaml",
    "ecs-cloudwatch-xray.yaml",
    "ecs-amp-xray.yaml",
];

fn adot(name: &str) -> String {
    format!("{}/tests/fixtures/adot/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_configs_aws_publishes_for_adot_validate_unchanged() {
    let mut files: Vec<String> = PUBLISHED
        .iter()
        .map(|f| adot(&format!("published/{f}")))
        .collect();
    files.push(adot("ecs-sidecar.yaml"));
    for f in files {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_spanwire"))
            .args(["validate", "--config", &f])
            .env("AWS_REGION", "us-east-1")
            .envs(
                [
                    "HEALTH_ENDPOINT",
                    "METRICS_ENDPOINT",
                    "OTLP_GRPC_ENDPOINT",
                    "OTLP_HTTP_ENDPOINT",
                    "XRAY_UDP_ENDPOINT",
                    "XRAY_TCP_ENDPOINT",
                ]
                .iter()
                .enumerate()
                .map(|(i, k)| (*k, format!("127.0.0.1:{}", 40_000 + i))),
            )
            .env("AWS_ENDPOINT", "http://127.0.0.1:4566")
            .env(
                "AWS_PROMETHEUS_ENDPOINT",
                "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1/api/v1/remote_write",
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{f}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every event of a log group (moto's FilterLogEvents), as JSON.
async fn events(
    client: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
) -> Vec<(String, serde_json::Value)> {
    let Ok(r) = client
        .filter_log_events()
        .log_group_name(group)
        .send()
        .await
    else {
        return Vec::new();
    };
    r.events()
        .iter()
        .filter_map(|e| {
            Some((
                e.log_stream_name()?.to_string(),
                serde_json::from_str(e.message()?).ok()?,
            ))
        })
        .collect()
}

/// `tests/fixtures/adot/ecs-sidecar.yaml` runs as an ECS sidecar would: its
/// metadata endpoints played locally, X-Ray and CloudWatch Logs by moto, AMP
/// by the botocore-checked remote-write verifier. An X-Ray SDK segment, an
/// OpenTelemetry SDK's metrics and the task's container metrics arrive
/// where the config sends them, named and placed as it says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adot_shaped_ecs_sidecar_runs_and_everything_lands_where_it_says() {
    use common::verifier::{Verifier, SECRET};
    let seen = Arc::new(Seen::default());
    let meta = metadata_server(seen.clone()).await;
    let moto = common::Moto::start();
    let verifier = Verifier::start(SECRET);
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let (health, grpc, http, udp, tcp) = (ports[0], ports[1], ports[2], ports[3], ports[4]);
    let at = |p: u16| format!("127.0.0.1:{p}");
    let ecs = format!("http://127.0.0.1:{meta}/v4/task-1");
    let imds = format!("http://127.0.0.1:{meta}");
    let amp = format!(
        "http://127.0.0.1:{}/aps/workspaces/ws-1/api/v1/remote_write",
        verifier.port
    );
    let env: Vec<(&str, String)> = vec![
        ("HEALTH_ENDPOINT", at(health)),
        ("METRICS_ENDPOINT", at(free_port())),
        ("OTLP_GRPC_ENDPOINT", at(grpc)),
        ("OTLP_HTTP_ENDPOINT", at(http)),
        ("XRAY_UDP_ENDPOINT", at(udp)),
        ("XRAY_TCP_ENDPOINT", at(tcp)),
        ("AWS_ENDPOINT", moto.endpoint()),
        ("AWS_PROMETHEUS_ENDPOINT", amp),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "AKIDSPANWIRETEST".into()),
        ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
        (
            "AWS_CONFIG_FILE",
            "/nonexistent/spanwire-test-aws-config".into(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/spanwire-test-aws-credentials".into(),
        ),
        ("ECS_CONTAINER_METADATA_URI_V4", ecs),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let config = std::fs::read_to_string(adot("ecs-sidecar.yaml")).unwrap();
    let daemon = Daemon::start_with_env(&config, health, &env);

    // An X-Ray SDK-style segment over UDP, of now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let trace = format!("1-{:08x}-0123456789abcdef01234567", now as u64);
    let segment = format!(
        "{{\"format\": \"json\", \"version\": 1}}\n{{\"name\":\"orders\",\"id\":\"70de5b6f19ff9a0a\",\"trace_id\":\"{trace}\",\"start_time\":{now},\"end_time\":{}}}",
        now + 0.25
    );
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(segment.as_bytes(), ("127.0.0.1", udp))
        .unwrap();
    // An OpenTelemetry SDK's metrics over OTLP/gRPC.
    common::python_agent_done(common::python_agent(
        "grpc",
        &format!("http://127.0.0.1:{grpc}"),
        "ecs",
        (1, 0),
        "",
    ));

    let xray = aws_sdk_xray::Client::new(&common::aws_test_sdk_config(&moto.endpoint()));
    let logs = aws_sdk_cloudwatchlogs::Client::new(&common::aws_test_sdk_config(&moto.endpoint()));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (segments, application, performance, default_group) = loop {
        let segments: Vec<serde_json::Value> = xray
            .batch_get_traces()
            .trace_ids(trace.clone())
            .send()
            .await
            .map(|r| {
                r.traces()
                    .iter()
                    .flat_map(|t| t.segments())
                    .filter_map(|s| serde_json::from_str(s.document()?).ok())
                    .collect()
            })
            .unwrap_or_default();
        let application = events(&logs, "/aws/ecs/agent-task/metrics").await;
        let performance = events(&logs, "/aws/ecs/containerinsights/agents/performance").await;
        let default_group = events(
            &logs,
            "aws/ecs/containerinsights/undefined/application/metrics",
        )
        .await;
        let has = |evs: &[(String, serde_json::Value)], m: &str| {
            evs.iter().any(|(_, e)| e.get(m).is_some())
        };
        if (!segments.is_empty()
            && has(&application, "e2e.requests")
            && has(&performance, "MemoryUtilized")
            && has(&default_group, "e2e.requests"))
            || std::time::Instant::now() > deadline
        {
            break (segments, application, performance, default_group);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // traces: the segment went through resource detection (ECS on EC2) to X-Ray.
    assert_eq!(segments.len(), 1, "spanwire:\n{}", daemon.logs());
    assert_eq!(segments[0]["name"], "orders");
    assert_eq!(segments[0]["origin"], "AWS::ECS::EC2", "{}", segments[0]);
    // metrics/application: namespace and log group from the task family.
    let (_, app) = application
        .iter()
        .find(|(_, e)| e.get("e2e.requests").is_some())
        .unwrap_or_else(|| panic!("{application:#?}\nspanwire:\n{}", daemon.logs()));
    assert_eq!(
        app["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "ECS/AWSOTel/agent-task"
    );
    // metrics: no detection in that pipeline, so {ClusterName} reads undefined.
    assert!(default_group
        .iter()
        .any(|(_, e)| e.get("e2e.requests").is_some()));
    // metrics/performance: the task's metrics, filtered and renamed, in the
    // task's stream with the declared dimensions.
    let (stream, perf) = performance
        .iter()
        .find(|(_, e)| e.get("MemoryUtilized").is_some())
        .unwrap_or_else(|| panic!("{performance:#?}\nspanwire:\n{}", daemon.logs()));
    assert_eq!(stream, "158d1c8083dd49d6b527399fd6414f5c");
    assert_eq!(perf["MemoryUtilized"], 140);
    assert_eq!(perf["MemoryReserved"], 1024);
    assert_eq!(perf["CpuUtilized"], 22.0);
    assert_eq!(
        perf["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "ECS/ContainerInsights"
    );
    assert_eq!(
        perf["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        serde_json::json!([["ClusterName"], ["ClusterName", "TaskDefinitionFamily"]])
    );
    assert!(
        performance
            .iter()
            .all(|(_, e)| e.get("ecs.task.cpu.usage.total").is_none()),
        "filtered out"
    );
    // AMP: both metric pipelines, signed (botocore checked every request).
    let rw: Vec<serde_json::Value> = verifier
        .lines()
        .into_iter()
        .filter(|l| {
            l["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/remote_write"))
        })
        .collect();
    assert!(!rw.is_empty(), "spanwire:\n{}", daemon.logs());
    assert!(rw.iter().all(|l| l["ok"] == true), "{rw:#?}");
    let series: Vec<&serde_json::Value> = rw
        .iter()
        .flat_map(|l| l["series"].as_array().unwrap())
        .collect();
    assert!(series.iter().any(|s| s["labels"]["__name__"]
        .as_str()
        .is_some_and(|n| n.starts_with("MemoryUtilized"))
        && s["labels"]["ClusterName"] == "agents"
        && s["samples"][0][0] == 140.0));
    assert!(series
        .iter()
        .any(|s| s["labels"]["__name__"] == "e2e_requests_total"
            && s["labels"]["TaskDefinitionFamily"] == "agent-task"));
}

/// `published/ecs-cloudwatch-xray.yaml` itself, unchanged, with a second
/// `--config` that only moves its listeners to loopback, its AWS endpoints
/// to moto and its intervals to test speed: the task's metrics reach
/// Container Insights renamed and in the task's stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_ecs_cloudwatch_xray_config_runs_unchanged() {
    let seen = Arc::new(Seen::default());
    let meta = metadata_server(seen.clone()).await;
    let moto = common::Moto::start();
    let (health, grpc, http, telemetry) = (free_port(), free_port(), free_port(), free_port());
    let m = moto.endpoint();
    let overlay = format!(
        r#"
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      http: {{endpoint: "127.0.0.1:{http}"}}
  awsecscontainermetrics: {{collection_interval: 1s}}
processors:
  batch/metrics: {{timeout: 1s}}
exporters:
  awsxray: {{endpoint: "{m}"}}
  awsemf/application: {{endpoint: "{m}"}}
  awsemf/performance: {{endpoint: "{m}"}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{telemetry}"}}}}
"#
    );
    let ecs = format!("http://127.0.0.1:{meta}/v4/task-1");
    let imds = format!("http://127.0.0.1:{meta}");
    let mut env = common::aws_test_env();
    env.retain(|(k, _)| *k != "AWS_EC2_METADATA_DISABLED");
    env.push(("ECS_CONTAINER_METADATA_URI_V4", ecs.as_str()));
    env.push(("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.as_str()));
    let published = adot("published/ecs-cloudwatch-xray.yaml");
    let daemon = Daemon::start_layered(&[std::path::Path::new(&published)], &overlay, health, &env);
    common::python_agent_done(common::python_agent(
        "http",
        &format!("http://127.0.0.1:{http}"),
        "pub",
        (1, 0),
        "",
    ));
    let logs = aws_sdk_cloudwatchlogs::Client::new(&common::aws_test_sdk_config(&m));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (application, performance) = loop {
        let application = events(&logs, "/aws/ecs/agent-task/metrics").await;
        let performance = events(&logs, "/aws/ecs/containerinsights/agents/performance").await;
        let has = |evs: &[(String, serde_json::Value)], k: &str| {
            evs.iter().any(|(_, e)| e.get(k).is_some())
        };
        if (has(&application, "e2e.requests") && has(&performance, "MemoryUtilized"))
            || std::time::Instant::now() > deadline
        {
            break (application, performance);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let (_, app) = application
        .iter()
        .find(|(_, e)| e.get("e2e.requests").is_some())
        .unwrap_or_else(|| panic!("{application:#?}\nspanwire:\n{}", daemon.logs()));
    assert_eq!(
        app["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "ECS/AWSOTel/agent-task"
    );
    let (stream, perf) = performance
        .iter()
        .find(|(_, e)| e.get("MemoryUtilized").is_some())
        .unwrap_or_else(|| panic!("{performance:#?}\nspanwire:\n{}", daemon.logs()));
    assert_eq!(stream, "158d1c8083dd49d6b527399fd6414f5c");
    assert_eq!(perf["MemoryUtilized"], 140);
    assert_eq!(perf["StorageWriteBytes"], 9216);
    // resource_to_telemetry_conversion: the renamed resource attributes are members.
    assert_eq!(perf["TaskDefinitionFamily"], "agent-task");
    assert_eq!(perf["LaunchType"], "ec2");
    // Container metrics: only container.duration passes the filter.
    assert!(performance
        .iter()
        .any(|(_, e)| e.get("container.duration").is_some()));
    assert!(performance
        .iter()
        .all(|(_, e)| e.get("container.memory.usage").is_none()));
}
