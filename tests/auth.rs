//! Bearer-token authentication on the OTLP (gRPC and HTTP) and bedrock
//! receivers: no token or a wrong one is refused before the body is used
//! (401 / UNAUTHENTICATED, counted), the right one delivers, and the token
//! never appears in spanwire's logs.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{agent_spans, free_port, http_request, metric, Daemon, Sink};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use spanwire::signal::Signal;

/// A secret in an exporter header: also never logged.
const EXPORTER_SECRET: &str = "exp-5ecret-9f3a";
const TOKEN: &str = "tok-7f3a9c2e51d84b60";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_require_the_bearer_token() {
    let sink = Sink::start().await;
    let (grpc, http, bedrock, health, telemetry) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let config = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "127.0.0.1:{grpc}"
        auth: {{bearer_token: "${{env:SPANWIRE_TEST_TOKEN}}"}}
      http:
        endpoint: "127.0.0.1:{http}"
        auth: {{bearer_token_file: "{file}"}}
  bedrock:
    endpoint: "127.0.0.1:{bedrock}"
    idle_timeout: 200ms
    auth: {{bearer_token_file: "{file}"}}
exporters:
  otlp:
    endpoint: "http://127.0.0.1:{sink}"
    headers: {{authorization: "Bearer {EXPORTER_SECRET}"}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry:
    logs: {{level: debug}}
    metrics: {{address: "127.0.0.1:{telemetry}"}}
  pipelines:
    traces: {{receivers: [otlp, bedrock], exporters: [otlp]}}
"#,
        file = token_file.display(),
        sink = sink.grpc_port,
    );
    let daemon = Daemon::start_with_env(&config, health, &[("SPANWIRE_TEST_TOKEN", TOKEN)]);
    let body = agent_spans(5, "auth").encode_to_vec();
    let proto = ("content-type", "application/x-protobuf");
    let bearer = format!("Bearer {TOKEN}");

    // OTLP/HTTP.
    let r = http_request("POST", http, "/v1/traces", &[proto], body.clone()).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    let wrong = format!("Bearer {TOKEN}x");
    let r = http_request(
        "POST",
        http,
        "/v1/traces",
        &[proto, ("authorization", &wrong)],
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 401);
    let r = http_request(
        "POST",
        http,
        "/v1/traces",
        &[proto, ("authorization", &bearer)],
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 200);

    // OTLP/gRPC.
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    let err = client.export(agent_spans(5, "auth")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(agent_spans(5, "auth"));
    req.metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(
        client.export(req).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    let mut req = tonic::Request::new(agent_spans(5, "auth"));
    req.metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    client.export(req).await.unwrap();

    // Bedrock.
    let events = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/bedrock/oi-py_action-group-function-lambda.json"
    ))
    .unwrap();
    let json = ("content-type", "application/json");
    let r = http_request(
        "POST",
        bedrock,
        "/v1/bedrock/traces",
        &[json],
        events.clone(),
    )
    .await;
    assert_eq!(r.status, 401);
    let r = http_request(
        "POST",
        bedrock,
        "/v1/bedrock/traces",
        &[json, ("authorization", &bearer)],
        events,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // Only the authenticated requests arrived: 5 + 5 OTLP spans, plus Bedrock's.
    let got = sink
        .wait_for(Signal::Traces, 11, Duration::from_secs(10))
        .await;
    assert!(got >= 11, "{got} spans");
    let tags = sink
        .spans()
        .iter()
        .filter(|s| s.name.starts_with("auth-"))
        .count();
    assert_eq!(tags, 10, "only the two authenticated OTLP requests");

    let text = String::from_utf8(
        http_request("GET", telemetry, "/metrics", &[], Vec::new())
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    let refused = |transport: &str| {
        metric(
            &text,
            "spanwire_receiver_unauthenticated_requests_total",
            &[&format!("transport=\"{transport}\"")],
        )
    };
    assert_eq!(refused("grpc"), 2.0, "{text}");
    assert_eq!(
        refused("http"),
        3.0,
        "two OTLP/HTTP and one bedrock request"
    );
    let logs = daemon.logs();
    assert!(!logs.contains(TOKEN), "the token was logged:\n{logs}");
    assert!(
        !logs.contains(EXPORTER_SECRET),
        "an exporter header was logged:\n{logs}"
    );
}

#[test]
fn auth_needs_exactly_one_token_source() {
    let dir = tempfile::tempdir().unwrap();
    for (auth, want) in [
        ("{}", "set bearer_token or bearer_token_file"),
        ("{bearer_token: a, bearer_token_file: /x}", "not both"),
        ("{bearer_token: \"\"}", "empty"),
        ("{bearer: a}", "unknown field"),
    ] {
        let p = dir.path().join("c.yaml");
        std::fs::write(
            &p,
            format!("receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: \"127.0.0.1:0\"\n        auth: {auth}\nexporters:\n  debug: {{}}\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], exporters: [debug]}}\n"),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_spanwire"))
            .args(["validate", "--config"])
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{auth}");
        assert!(err.contains(want), "{auth}: {err}");
    }
}

/// `bearertokenauth` on the `otlp` (gRPC) and `otlphttp` exporters, checked
/// by a second spanwire whose receivers require the token: the right token
/// delivers everything, a wrong one is refused (UNAUTHENTICATED / 401) and
/// reported, and neither token appears in the sender's logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporters_send_the_bearertokenauth_token() {
    let sink = Sink::start().await;
    let (b_grpc, b_http, b_health) = (free_port(), free_port(), free_port());
    let receiver = Daemon::start(
        &format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{b_grpc}", auth: {{bearer_token: "{TOKEN}"}}}}
      http: {{endpoint: "127.0.0.1:{b_http}", auth: {{bearer_token: "{TOKEN}"}}}}
exporters:
  otlp: {{endpoint: "http://127.0.0.1:{sink}"}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{b_health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
"#,
            sink = sink.grpc_port
        ),
        b_health,
    );
    let sender = |token: &str| {
        let (a_http, a_health) = (free_port(), free_port());
        let d = Daemon::start(
            &format!(
                r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{a_http}"}}
exporters:
  otlp/grpc:
    endpoint: "http://127.0.0.1:{b_grpc}"
    auth: {{authenticator: bearertokenauth}}
    retry_on_failure: {{enabled: false}}
  otlphttp:
    traces_endpoint: "http://127.0.0.1:{b_http}/v1/traces"
    auth: {{authenticator: bearertokenauth}}
    retry_on_failure: {{enabled: false}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{a_health}"}}
  bearertokenauth: {{token: "{token}"}}
service:
  extensions: [health_check, bearertokenauth]
  telemetry: {{logs: {{level: debug}}, metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp/grpc, otlphttp]}}
"#
            ),
            a_health,
        );
        (d, a_http)
    };
    let (right, port) = sender(TOKEN);
    for i in 0..3 {
        assert_eq!(
            common::post_spans(port, 20, &format!("b{i}")).await.status,
            200
        );
    }
    // Each span twice: once through gRPC, once through HTTP.
    assert!(
        sink.wait_for(Signal::Traces, 120, Duration::from_secs(10))
            .await
            >= 120,
        "sink has {}; receiver:\n{}",
        sink.count(Signal::Traces),
        receiver.logs()
    );
    assert!(!right.logs().contains(TOKEN), "{}", right.logs());

    let (wrong, port) = sender("not-the-token");
    assert_eq!(common::post_spans(port, 10, "w").await.status, 200);
    let refused = common::wait_until(Duration::from_secs(10), || {
        let logs = wrong.logs();
        logs.contains("Unauthenticated") && logs.contains("401")
    })
    .await;
    assert!(refused, "{}", wrong.logs());
    assert!(!wrong.logs().contains("not-the-token"), "{}", wrong.logs());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.count(Signal::Traces), 120);
}
