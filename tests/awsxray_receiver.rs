//! The `awsxray` receiver: the real AWS X-Ray SDK for Python sends segments
//! to it and makes its sampling calls through its proxy (to the botocore
//! SigV4 verifier playing X-Ray); bad datagrams are counted and lose nothing
//! else.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::verifier::{start, Verifier, SECRET};
use common::{free_port, Sink};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use spanwire::signal::Signal;

fn config(udp: u16, tcp: u16, health: u16, sink: u16, xray: u16, telemetry: u16) -> String {
    format!(
        r#"
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
receivers:
  awsxray:
    endpoint: "127.0.0.1:{udp}"
    transport: udp
    in_progress_timeout: 1s
    proxy_server:
      endpoint: "127.0.0.1:{tcp}"
      region: us-east-1
      aws_endpoint: "http://127.0.0.1:{xray}/xray"
exporters:
  otlp:
    endpoint: "127.0.0.1:{sink}"
    tls: {{insecure: true}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: "127.0.0.1:{telemetry}"}}}}
  pipelines:
    traces: {{receivers: [awsxray], exporters: [otlp]}}
"#
    )
}

fn attr(s: &Span, k: &str) -> Option<any_value::Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key == k)
        .and_then(|kv| kv.value.clone())
        .and_then(|v| v.value)
}

fn text(v: &str) -> Option<any_value::Value> {
    Some(any_value::Value::StringValue(v.into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_xray_sdk_for_python_sends_segments_and_samples_through_the_proxy() {
    let verifier = Verifier::start(SECRET);
    let sink = Sink::start().await;
    let (udp, tcp, health, telemetry) = (free_port(), free_port(), free_port(), free_port());
    let daemon = start(
        &config(udp, tcp, health, sink.grpc_port, verifier.port, telemetry),
        health,
        SECRET,
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/send_xray.py");
    let out = Command::new(common::python())
        .args([script, &udp.to_string(), &tcp.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}\nspanwire:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        daemon.logs()
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sent = report["sent"].as_array().unwrap();
    assert_eq!(sent.len(), 15, "a segment, 14 subsegments");
    let got = sink
        .wait_for(Signal::Traces, sent.len(), Duration::from_secs(15))
        .await;
    assert_eq!(got, sent.len(), "spanwire:\n{}", daemon.logs());
    let spans = sink.spans();
    for e in sent {
        let id = e["id"].as_str().unwrap();
        let span = spans
            .iter()
            .find(|s| hex::encode(&s.span_id) == id)
            .unwrap_or_else(|| panic!("{e} did not arrive"));
        assert_eq!(span.name, e["name"].as_str().unwrap());
        let trace = e["trace_id"].as_str().unwrap().replace('-', "");
        assert_eq!(hex::encode(&span.trace_id), trace[1..], "{e}");
        match e["parent"].as_str() {
            Some(p) => assert_eq!(hex::encode(&span.parent_span_id), p, "{e}"),
            None => assert!(span.parent_span_id.is_empty(), "{e}"),
        }
        let us = |f: &serde_json::Value| (f.as_f64().unwrap() * 1e6).round() as u64 * 1000;
        assert_eq!(span.start_time_unix_nano, us(&e["start"]), "{e}");
        assert_eq!(span.end_time_unix_nano, us(&e["end"]), "{e}");
    }
    let by_name = |n: &str| spans.iter().find(|s| s.name == n).unwrap();
    let root = by_name("checkout");
    assert_eq!(root.kind, 2, "a segment is a SERVER span");
    assert_eq!(attr(root, "http.method"), text("POST"));
    assert_eq!(
        attr(root, "http.url"),
        text("https://shop.example.com/cart")
    );
    assert_eq!(
        attr(root, "http.status_code"),
        Some(any_value::Value::IntValue(500))
    );
    assert_eq!(attr(root, "customer"), text("c-42"));
    assert_eq!(attr(root, "items"), Some(any_value::Value::IntValue(3)));
    assert_eq!(
        attr(root, "aws.xray.metadata.debug"),
        text(r#"{"cart":{"skus":["a","b"]}}"#)
    );
    let ddb = by_name("DynamoDB");
    assert_eq!(ddb.kind, 3, "an aws subsegment is a CLIENT span");
    assert_eq!(attr(ddb, "rpc.method"), text("PutItem"));
    assert_eq!(attr(ddb, "aws.table_name"), text("carts"));
    let failed = by_name("step-5");
    assert_eq!(failed.events[0].name, "exception");
    assert!(failed.events[0]
        .attributes
        .iter()
        .any(|kv| kv.key == "exception.message"
            && kv.value.as_ref().and_then(|v| v.value.clone()) == text("bad cart")));
    // The sampling calls went through the proxy, signed (botocore checked).
    assert_eq!(report["rules"], serde_json::json!(["spanwire-test"]));
    assert_eq!(report["targets"]["spanwire-test"]["quota"], 7);
    let sampling: Vec<_> = verifier
        .lines()
        .into_iter()
        .filter(|l| l.get("sampling").is_some())
        .collect();
    assert_eq!(sampling.len(), 2, "{sampling:#?}");
    assert!(sampling.iter().all(|l| l["ok"] == true));
    assert_eq!(sampling[0]["path"], "/xray/GetSamplingRules");
    assert_eq!(
        sampling[1]["sampling"]["SamplingStatisticsDocuments"][0]["RuleName"],
        "spanwire-test"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_datagrams_are_counted_and_nothing_else_is_lost() {
    let verifier = Verifier::start(SECRET);
    let sink = Sink::start().await;
    let (udp, tcp, health, telemetry) = (free_port(), free_port(), free_port(), free_port());
    let daemon = start(
        &config(udp, tcp, health, sink.grpc_port, verifier.port, telemetry),
        health,
        SECRET,
    );
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = ("127.0.0.1", udp);
    let header = "{\"format\": \"json\", \"version\": 1}\n";
    let trace = "1-6a1b2c3d-0123456789abcdef01234567";
    let doc = |id: &str, extra: &str| {
        format!(
            r#"{header}{{"name":"svc","id":"{id}","trace_id":"{trace}","start_time":1800000000.5{extra}}}"#
        )
    };
    // Garbage, a wrong header, truncated JSON.
    sock.send_to(&vec![0xa5u8; 65_000], to).unwrap();
    sock.send_to(b"{\"format\": \"xml\", \"version\": 1}\n{}", to)
        .unwrap();
    sock.send_to(
        format!("{header}{{\"name\":\"svc\",\"id\":\"0000").as_bytes(),
        to,
    )
    .unwrap();
    // A segment, then 10,000 subsegments of it sent on their own.
    let root = "a000000000000001";
    sock.send_to(doc(root, r#","end_time":1800000001.5"#).as_bytes(), to)
        .unwrap();
    for i in 0..10_000u32 {
        let d = doc(
            &format!("b{i:015x}"),
            &format!(r#","end_time":1800000001.0,"type":"subsegment","parent_id":"{root}""#),
        );
        sock.send_to(d.as_bytes(), to).unwrap();
        if i % 100 == 99 {
            // Paced by what arrived, like an SDK that cannot outrun its
            // daemon for long: at most ~600 datagrams in flight, under the
            // receiver's 1,024-deep hand-off (past it a datagram is lost
            // and counted as pipeline_full), however slow this machine is.
            let arrived = (i as usize + 2).saturating_sub(500);
            sink.wait_for(Signal::Traces, arrived, Duration::from_secs(10))
                .await;
        }
    }
    // In progress then complete: one span, complete. In progress alone: sent
    // marked after in_progress_timeout.
    sock.send_to(
        doc("c000000000000001", r#","in_progress":true"#).as_bytes(),
        to,
    )
    .unwrap();
    sock.send_to(
        doc("c000000000000001", r#","end_time":1800000002.0"#).as_bytes(),
        to,
    )
    .unwrap();
    sock.send_to(
        doc("d000000000000001", r#","in_progress":true"#).as_bytes(),
        to,
    )
    .unwrap();
    let want = 1 + 10_000 + 1 + 1;
    let got = sink
        .wait_for(Signal::Traces, want, Duration::from_secs(20))
        .await;
    assert_eq!(got, want, "spanwire:\n{}", daemon.logs());
    let spans = sink.spans();
    let find = |id: &str| {
        spans
            .iter()
            .find(|s| hex::encode(&s.span_id) == id)
            .unwrap()
    };
    assert_eq!(attr(find("c000000000000001"), "aws.xray.inprogress"), None);
    assert_eq!(
        attr(find("d000000000000001"), "aws.xray.inprogress"),
        Some(any_value::Value::BoolValue(true))
    );
    assert_eq!(
        spans
            .iter()
            .filter(|s| hex::encode(&s.parent_span_id) == root)
            .count(),
        10_000
    );
    let metrics = common::http_request("GET", telemetry, "/metrics", &[], Vec::new()).await;
    let text = String::from_utf8_lossy(&metrics.body);
    let dropped = |reason: &str| {
        common::metric(
            &text,
            "spanwire_receiver_xray_dropped_datagrams_total",
            &[&format!("reason=\"{reason}\"")],
        )
    };
    assert_eq!(dropped("bad_header"), 2.0, "{text}");
    assert_eq!(dropped("bad_json"), 1.0, "{text}");
    assert_eq!(dropped("pipeline_full"), 0.0);
    assert_eq!(
        common::metric(
            &text,
            "spanwire_receiver_xray_in_progress_expired_total",
            &[]
        ),
        1.0
    );
    drop(verifier);
}
