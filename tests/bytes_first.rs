//! The bytes-first path: an OTLP trace request (gRPC or HTTP protobuf) that only travels on to
//! OTLP exporters is checked in one pass and forwarded as its bytes, never
//! decoded. It must deliver exactly what the decode path delivers, and a
//! request the check refuses gets the decode path's own error.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::{Buf, Bytes};
use common::{agent_spans, free_port, http_request, Daemon, Sink};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::trace::v1::{span, Span, Status};
use prost::Message;
use spanwire::signal::Signal;

/// A daemon whose traces go `otlp → memory_limiter → batch → otlp`
/// (bytes-first), or with an `attributes` processor in the way (decoded).
fn config(ports: (u16, u16, u16, u16), sink: &Sink, decoded: bool) -> String {
    let (grpc, http, health, telemetry) = ports;
    let (processors, extra) = if decoded {
        (
            "[memory_limiter, attributes, batch]",
            "  attributes:\n    actions: [{key: never.present, action: delete}]\n",
        )
    } else {
        ("[memory_limiter, batch]", "")
    };
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      http: {{endpoint: "127.0.0.1:{http}"}}
processors:
  memory_limiter: {{check_interval: 1s, limit_mib: 1024}}
  batch: {{send_batch_size: 50, timeout: 50ms}}
{extra}exporters:
  otlp:
    endpoint: "http://127.0.0.1:{sink}"
    tls: {{insecure: true}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry:
    metrics: {{address: "127.0.0.1:{telemetry}"}}
  pipelines:
    traces: {{receivers: [otlp], processors: {processors}, exporters: [otlp]}}
"#,
        sink = sink.grpc_port
    )
}

/// Requests with every kind of value: agent spans, nested lists and maps,
/// unicode and empty strings, events, links and error statuses.
fn requests() -> Vec<ExportTraceServiceRequest> {
    let mut out: Vec<ExportTraceServiceRequest> = (0..6)
        .map(|i| agent_spans(3 + i * 7, &format!("s-{i}")))
        .collect();
    let s = |v: &str| AnyValue {
        value: Some(any_value::Value::StringValue(v.into())),
    };
    let kv = |k: &str, v: AnyValue| KeyValue {
        key: k.into(),
        value: Some(v),
        ..Default::default()
    };
    let mut odd = agent_spans(2, "odd");
    let sp: &mut Span = &mut odd.resource_spans[0].scope_spans[0].spans[0];
    sp.name = "héllo ✓ 日本 \u{0}".into();
    sp.attributes.push(kv(
        "nested",
        AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![
                    s(""),
                    AnyValue {
                        value: Some(any_value::Value::KvlistValue(KeyValueList {
                            values: vec![kv("deep", s("ü"))],
                        })),
                    },
                    AnyValue {
                        value: Some(any_value::Value::DoubleValue(-0.5)),
                    },
                    AnyValue {
                        value: Some(any_value::Value::BytesValue(vec![0, 255])),
                    },
                ],
            })),
        },
    ));
    sp.events.push(span::Event {
        time_unix_nano: 7,
        name: "event ✓".into(),
        attributes: vec![kv("e", s("v"))],
        dropped_attributes_count: 1,
    });
    sp.links.push(span::Link {
        trace_id: vec![9; 16],
        span_id: vec![8; 8],
        trace_state: "k=v".into(),
        ..Default::default()
    });
    sp.status = Some(Status {
        message: "failed ✗".into(),
        code: 2,
    });
    out.push(odd);
    out
}

/// Sends request bodies as they are (the generated client encodes structs,
/// and cannot send bytes that are not a valid request).
async fn send_raw(port: u16, body: Vec<u8>) -> Result<ExportTraceServiceResponse, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    grpc.unary(tonic::Request::new(Bytes::from(body)), path, RawCodec)
        .await
        .map(|r| r.into_inner())
}

struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<ExportTraceServiceResponse>, tonic::Status> {
        let n = src.remaining();
        ExportTraceServiceResponse::decode(src.copy_to_bytes(n))
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

struct Run {
    daemon: Daemon,
    sink: Sink,
    grpc: u16,
    http: u16,
    telemetry: u16,
}

async fn run(decoded: bool) -> Run {
    let sink = Sink::start().await;
    let ports = (free_port(), free_port(), free_port(), free_port());
    let daemon = Daemon::start(&config(ports, &sink, decoded), ports.2);
    Run {
        daemon,
        sink,
        grpc: ports.0,
        http: ports.1,
        telemetry: ports.3,
    }
}

/// Requests passed on as bytes, over `transport`.
async fn bytes_first_requests(port: u16, transport: &str) -> f64 {
    let m = http_request("GET", port, "/metrics", &[], Vec::new()).await;
    common::metric(
        &String::from_utf8_lossy(&m.body),
        "spanwire_receiver_bytes_first_requests_total",
        &[&format!("transport=\"{transport}\"")],
    )
}

/// POSTs a protobuf trace request body; the status and body.
async fn post(port: u16, body: Vec<u8>) -> (u16, String) {
    let r = common::post_traces(port, body).await;
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_first_delivers_what_decoding_delivers_and_refuses_alike() {
    let reqs = requests();
    let want: usize = reqs
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    let mut got = Vec::new();
    for decoded in [false, true] {
        let r = run(decoded).await;
        // Every other request over OTLP/HTTP.
        for (i, req) in reqs.iter().enumerate() {
            if i % 2 == 0 {
                send_raw(r.grpc, req.encode_to_vec()).await.unwrap();
            } else {
                assert_eq!(post(r.http, req.encode_to_vec()).await.0, 200);
            }
        }
        let n = r
            .sink
            .wait_for(Signal::Traces, want, Duration::from_secs(20))
            .await;
        assert_eq!(n, want, "decoded={decoded}:\n{}", r.daemon.logs());
        // The path taken: bytes-first only without the attributes processor.
        let passed = (
            bytes_first_requests(r.telemetry, "grpc").await,
            bytes_first_requests(r.telemetry, "http").await,
        );
        if decoded {
            assert_eq!(passed, (0.0, 0.0), "a pipeline that needs structs decodes");
        } else {
            let (grpc, http) = (reqs.len().div_ceil(2), reqs.len() / 2);
            assert_eq!(
                passed,
                (grpc as f64, http as f64),
                "every request went as bytes"
            );
        }
        // A request the check refuses: the decoder's own error, either way.
        let mut bad = agent_spans(1, "bad").encode_to_vec();
        let name = bad
            .windows(6)
            .position(|w| w == b"invoke")
            .expect("a span name to break");
        bad[name] = 0xff;
        let err = send_raw(r.grpc, bad.clone()).await.unwrap_err();
        let http_err = post(r.http, bad).await;
        // Nothing more arrives, and the daemon still serves.
        send_raw(r.grpc, agent_spans(2, "after").encode_to_vec())
            .await
            .unwrap();
        r.sink
            .wait_for(Signal::Traces, want + 2, Duration::from_secs(20))
            .await;
        let mut spans = r.sink.spans();
        spans.sort_by(|a, b| (&a.trace_id, &a.span_id).cmp(&(&b.trace_id, &b.span_id)));
        got.push((spans, err.code(), err.message().to_string(), http_err));
    }
    let (bytes_first, decoded) = (&got[0], &got[1]);
    assert_eq!(bytes_first.0.len(), want + 2);
    assert!(
        bytes_first.0 == decoded.0,
        "the same spans, field for field, both ways"
    );
    assert_eq!(bytes_first.1, tonic::Code::Internal);
    assert_eq!(
        (bytes_first.1, &bytes_first.2),
        (decoded.1, &decoded.2),
        "the same error both ways"
    );
    assert!(bytes_first.2.contains("UTF-8"), "{}", bytes_first.2);
    assert_eq!(bytes_first.3 .0, 400, "{:?}", bytes_first.3);
    assert_eq!(bytes_first.3, decoded.3, "the same HTTP answer both ways");
}
