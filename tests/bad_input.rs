//! Bad input gets its status and a reason; the daemon keeps serving; valid
//! requests sent alongside all arrive.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{agent_spans, free_port, http_request, Daemon, Sink};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use spanwire::signal::Signal;

fn config(grpc: u16, http: u16, health: u16, sink: &Sink) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}", max_recv_msg_size_mib: 1}}
      http: {{endpoint: "127.0.0.1:{http}", max_request_body_size: 1048576}}
exporters:
  otlp:
    endpoint: "127.0.0.1:{sg}"
    tls: {{insecure: true}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
"#,
        sg = sink.grpc_port
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_and_good_ones_all_arrive() {
    let sink = Sink::start().await;
    let (grpc, http, health) = (free_port(), free_port(), free_port());
    let daemon = Daemon::start(&config(grpc, http, health, &sink), health);
    let proto = ("content-type", "application/x-protobuf");
    let json = ("content-type", "application/json");

    let mut good = 0usize;
    for round in 0..3 {
        // A valid protobuf request and a valid JSON request every round.
        let req = agent_spans(5, &format!("good-{round}"));
        let r = http_request("POST", http, "/v1/traces", &[proto], req.encode_to_vec()).await;
        assert_eq!(r.status, 200);
        good += 5;
        let body = format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"00000000000000{round:02}","name":"json-{round}"}}]}}]}}]}}"#
        );
        let r = http_request("POST", http, "/v1/traces", &[json], body.into_bytes()).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        good += 1;

        // Truncated protobuf.
        let bytes = agent_spans(20, "cut").encode_to_vec();
        let r = http_request(
            "POST",
            http,
            "/v1/traces",
            &[proto],
            bytes[..bytes.len() / 2].to_vec(),
        )
        .await;
        assert_eq!(r.status, 400);
        let status = spanwire::rpc::RpcStatus::decode(&r.body[..]).unwrap();
        assert!(
            status.message.contains("invalid OTLP protobuf"),
            "{}",
            status.message
        );

        // Invalid JSON: the reason names the problem, in JSON.
        let r = http_request(
            "POST",
            http,
            "/v1/traces",
            &[json],
            b"{\"resourceSpans\": [".to_vec(),
        )
        .await;
        assert_eq!(r.status, 400);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(
            v["message"].as_str().unwrap().contains("invalid OTLP/JSON"),
            "{v}"
        );
        let r = http_request(
            "POST",
            http,
            "/v1/traces",
            &[json],
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"nothex"}]}]}]}"#.to_vec(),
        )
        .await;
        assert_eq!(r.status, 400);
        assert!(String::from_utf8_lossy(&r.body).contains("traceId"));

        // A gzip bomb: 64 MiB of zeros in ~64 KiB.
        let bomb = spanwire::net::gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        let r = http_request(
            "POST",
            http,
            "/v1/traces",
            &[proto, ("content-encoding", "gzip")],
            bomb,
        )
        .await;
        assert_eq!(r.status, 413);

        // Corrupt gzip.
        let r = http_request(
            "POST",
            http,
            "/v1/traces",
            &[proto, ("content-encoding", "gzip")],
            b"not gzip".to_vec(),
        )
        .await;
        assert_eq!(r.status, 400);

        // Wrong content type, oversize body, wrong method, unknown path.
        let r = http_request(
            "POST",
            http,
            "/v1/traces",
            &[("content-type", "text/plain")],
            b"hi".to_vec(),
        )
        .await;
        assert_eq!(r.status, 415);
        let r = http_request("POST", http, "/v1/traces", &[proto], vec![b'x'; 2 << 20]).await;
        assert_eq!(r.status, 413);
        let r = http_request("GET", http, "/v1/traces", &[], vec![]).await;
        assert_eq!(r.status, 405);
        assert_eq!(r.headers["allow"], "POST");
        let r = http_request("POST", http, "/v2/spans", &[proto], vec![]).await;
        assert_eq!(r.status, 404);
    }

    // gRPC: an oversize message and a compressed bomb are refused, good ones pass.
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_encoding_message_size(usize::MAX);
    let mut big = agent_spans(1, "big");
    big.resource_spans[0].scope_spans[0].spans[0].name = "a".repeat(32 << 20);
    let err = client.export(big).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{err:?}"
    );
    let mut plain = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap()
        .max_encoding_message_size(usize::MAX);
    let mut over = agent_spans(1, "over");
    over.resource_spans[0].scope_spans[0].spans[0].name = "b".repeat(2 << 20);
    assert!(plain.export(over).await.is_err());
    client.export(agent_spans(7, "grpc-good")).await.unwrap();
    good += 7;

    // Still serving, and nothing good was lost; nothing bad got through.
    assert!(daemon.rss() < 200 << 20, "RSS {} after bombs", daemon.rss());
    let n = sink
        .wait_for(Signal::Traces, good, Duration::from_secs(15))
        .await;
    assert_eq!(n, good, "{}", daemon.logs());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.count(Signal::Traces), good);
    let r = http_request(
        "POST",
        http,
        "/v1/traces",
        &[proto],
        agent_spans(1, "last").encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
}
