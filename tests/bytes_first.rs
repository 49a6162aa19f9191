//! The bytes-first path: an OTLP request (gRPC or HTTP protobuf; traces, metrics or logs) that only travels on to
//! OTLP exporters is checked in one pass and forwarded as its bytes, never
//! decoded. It must deliver exactly what the decode path delivers, and a
//! request the check refuses gets the decode path's own error.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::{Buf, Bytes};
use common::{agent_spans, free_port, http_request, Daemon, Sink};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::trace::v1::{span, Span, Status};
use prost::Message;
use spanwire::signal::{Signal, Telemetry};

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
    let pipelines = format!(
        "    traces: {{receivers: [otlp], processors: {processors}, exporters: [otlp]}}
    metrics: {{receivers: [otlp], processors: {processors}, exporters: [otlp]}}
    logs: {{receivers: [otlp], processors: {processors}, exporters: [otlp]}}"
    );
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
{pipelines}
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
    send_raw_to(port, Signal::Traces, body).await
}

/// [`send_raw`] to the service of `signal` (every export response is read
/// as a trace response: all are empty here).
async fn send_raw_to(
    port: u16,
    signal: Signal,
    body: Vec<u8>,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(match signal {
        Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    });
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
        // Requests share trace and span ids (the tags are as long): the
        // name tells their spans apart, whatever order they arrived in.
        spans.sort_by(|a, b| {
            (&a.trace_id, &a.span_id, &a.name).cmp(&(&b.trace_id, &b.span_id, &b.name))
        });
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

/// Metrics of every kind of data (with exemplars and packed counts) and
/// logs with every kind of body, `n` of each, tagged.
fn metrics_and_logs(
    n: usize,
    tag: &str,
) -> (ExportMetricsServiceRequest, ExportLogsServiceRequest) {
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
        summary_data_point::ValueAtQuantile, Exemplar, ExponentialHistogram,
        ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric,
        NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
    };
    let attr = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let number = |i: usize| NumberDataPoint {
        attributes: vec![attr("gen_ai.request.model", "claude ✓")],
        time_unix_nano: 1_000 + i as u64,
        exemplars: vec![Exemplar {
            span_id: vec![1; 8],
            trace_id: vec![2; 16],
            value: Some(opentelemetry_proto::tonic::metrics::v1::exemplar::Value::AsInt(-3)),
            ..Default::default()
        }],
        value: Some(number_data_point::Value::AsDouble(i as f64 / 3.0)),
        ..Default::default()
    };
    let metrics = (0..n)
        .map(|i| {
            let data = match i % 5 {
                0 => Data::Gauge(Gauge {
                    data_points: vec![number(i), number(i + 1)],
                }),
                1 => Data::Sum(Sum {
                    data_points: vec![number(i)],
                    aggregation_temporality: 2,
                    is_monotonic: true,
                }),
                2 => Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        count: 6,
                        bucket_counts: vec![1, 2, 3],
                        explicit_bounds: vec![0.5, 1.5],
                        sum: Some(4.5),
                        min: Some(0.1),
                        ..Default::default()
                    }],
                    aggregation_temporality: 1,
                }),
                3 => Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: vec![ExponentialHistogramDataPoint {
                        scale: -2,
                        positive: Some(Buckets {
                            offset: -1,
                            bucket_counts: vec![300, 0, 7],
                        }),
                        ..Default::default()
                    }],
                    aggregation_temporality: 2,
                }),
                _ => Data::Summary(Summary {
                    data_points: vec![SummaryDataPoint {
                        count: 2,
                        quantile_values: vec![ValueAtQuantile {
                            quantile: 0.99,
                            value: 12.0,
                        }],
                        ..Default::default()
                    }],
                }),
            };
            Metric {
                name: format!("{tag}-{i}"),
                unit: "ms".into(),
                data: Some(data),
                ..Default::default()
            }
        })
        .collect();
    let logs = (0..n)
        .map(|i| LogRecord {
            time_unix_nano: i as u64,
            severity_number: 9,
            event_name: format!("{tag}-{i}"),
            body: Some(AnyValue {
                value: Some(match i % 3 {
                    0 => any_value::Value::StringValue("héllo 日本".into()),
                    1 => any_value::Value::KvlistValue(KeyValueList {
                        values: vec![attr("k", "")],
                    }),
                    _ => any_value::Value::BytesValue(vec![0, 255]),
                }),
            }),
            attributes: vec![attr("session.id", tag)],
            trace_id: vec![3; 16],
            ..Default::default()
        })
        .collect();
    (
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        },
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: logs,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        },
    )
}

/// Every metric and log record the sink got, each encoded, sorted.
fn delivered(sink: &Sink) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut metrics, mut logs) = (Vec::new(), Vec::new());
    for t in sink.received.lock().unwrap().iter() {
        match t {
            Telemetry::Metrics(rm) => metrics.extend(
                rm.iter()
                    .flat_map(|r| &r.scope_metrics)
                    .flat_map(|s| &s.metrics)
                    .map(|m| m.encode_to_vec()),
            ),
            Telemetry::Logs(rl) => logs.extend(
                rl.iter()
                    .flat_map(|r| &r.scope_logs)
                    .flat_map(|s| &s.log_records)
                    .map(|l| l.encode_to_vec()),
            ),
            Telemetry::Traces(_) => {}
        }
    }
    metrics.sort();
    logs.sort();
    (metrics, logs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_logs_go_as_bytes_and_arrive_as_decoding_delivers_them() {
    let mut got = Vec::new();
    for decoded in [false, true] {
        let r = run(decoded).await;
        let mut points = 0;
        for i in 0..4 {
            let (m, l) = metrics_and_logs(10, &format!("r{i}"));
            points += Telemetry::Metrics(m.resource_metrics.clone()).item_count();
            if i % 2 == 0 {
                send_raw_to(r.grpc, Signal::Metrics, m.encode_to_vec())
                    .await
                    .unwrap();
                send_raw_to(r.grpc, Signal::Logs, l.encode_to_vec())
                    .await
                    .unwrap();
            } else {
                for (path, body) in [
                    ("/v1/metrics", m.encode_to_vec()),
                    ("/v1/logs", l.encode_to_vec()),
                ] {
                    let reply = http_request(
                        "POST",
                        r.http,
                        path,
                        &[("content-type", "application/x-protobuf")],
                        body,
                    )
                    .await;
                    assert_eq!(reply.status, 200, "{path}");
                }
            }
        }
        assert_eq!(points, 4 * 12, "a gauge here has two points");
        let m = r
            .sink
            .wait_for(Signal::Metrics, points, Duration::from_secs(20))
            .await;
        let l = r
            .sink
            .wait_for(Signal::Logs, 40, Duration::from_secs(20))
            .await;
        assert_eq!(
            (m, l),
            (points, 40),
            "decoded={decoded}:\n{}",
            r.daemon.logs()
        );
        let passed = (
            bytes_first_requests(r.telemetry, "grpc").await,
            bytes_first_requests(r.telemetry, "http").await,
        );
        if decoded {
            assert_eq!(passed, (0.0, 0.0), "a pipeline that needs structs decodes");
        } else {
            assert_eq!(passed, (4.0, 4.0), "every request went as bytes");
        }
        // A metrics request the check refuses (a packed run cut short): the
        // decoder's own error, either way.
        let (m, _) = metrics_and_logs(4, "bad");
        let mut bad = m.encode_to_vec();
        let at = bad
            .windows(4)
            .position(|w| w == [0xac, 0x02, 0x00, 0x07])
            .expect("the packed counts 300, 0, 7");
        bad[at + 3] = 0x87; // the last varint now runs past the packed field
        let err = send_raw_to(r.grpc, Signal::Metrics, bad).await.unwrap_err();
        got.push((delivered(&r.sink), err.code(), err.message().to_string()));
    }
    let (bytes_first, decoded) = (&got[0], &got[1]);
    assert_eq!(bytes_first.0 .0.len(), 40);
    assert!(
        bytes_first.0 == decoded.0,
        "the same metrics and logs, field for field"
    );
    assert_eq!(bytes_first.1, tonic::Code::Internal);
    assert_eq!(
        (bytes_first.1, &bytes_first.2),
        (decoded.1, &decoded.2),
        "the same error"
    );
}

/// A receiver feeding a pipeline whose exporters mix an OTLP one (bytes)
/// and a `file` one (structs), and a second pipeline whose `attributes`
/// processor needs structs: requests still go on as bytes, each batch is
/// decoded once for those that need it, and every destination gets every
/// span as the decode path would give it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_pipelines_take_bytes_and_decode_once_for_those_that_need_structs() {
    let (a, b) = (Sink::start().await, Sink::start().await);
    let (grpc, http, health, telemetry) = (free_port(), free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spans.jsonl");
    let cfg = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      http: {{endpoint: "127.0.0.1:{http}"}}
processors:
  batch: {{send_batch_size: 50, timeout: 50ms}}
  attributes:
    actions: [{{key: pipeline, value: decoded, action: insert}}]
exporters:
  otlp:
    endpoint: "http://127.0.0.1:{a}"
    tls: {{insecure: true}}
  otlp/decoded:
    endpoint: "http://127.0.0.1:{b}"
    tls: {{insecure: true}}
  file:
    path: "{file}"
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry:
    metrics: {{address: "127.0.0.1:{telemetry}"}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp, file]}}
    traces/decoded: {{receivers: [otlp], processors: [attributes], exporters: [otlp/decoded]}}
"#,
        a = a.grpc_port,
        b = b.grpc_port,
        file = file.display()
    );
    let daemon = Daemon::start(&cfg, health);
    let reqs = requests();
    let mut want: Vec<Span> = reqs
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| s.spans.clone())
        .collect();
    for (i, req) in reqs.iter().enumerate() {
        if i % 2 == 0 {
            send_raw(grpc, req.encode_to_vec()).await.unwrap();
        } else {
            assert_eq!(post(http, req.encode_to_vec()).await.0, 200);
        }
    }
    let n = want.len();
    assert_eq!(
        a.wait_for(Signal::Traces, n, Duration::from_secs(20)).await,
        n
    );
    assert_eq!(
        b.wait_for(Signal::Traces, n, Duration::from_secs(20)).await,
        n,
        "{}",
        daemon.logs()
    );
    let by_id = |v: &mut Vec<Span>| {
        v.sort_by(|x, y| {
            (&x.trace_id, &x.span_id, &x.name).cmp(&(&y.trace_id, &y.span_id, &y.name))
        })
    };
    by_id(&mut want);
    let mut got_a = a.spans();
    by_id(&mut got_a);
    assert!(
        got_a == want,
        "the bytes pipeline's OTLP exporter: the spans as sent"
    );
    // The file exporter (structs, decoded from the same batch).
    let mut from_file = Vec::new();
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            from_file = std::fs::read_to_string(&file)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    spanwire::convert::otlp_json::decode(Signal::Traces, l.as_bytes()).ok()
                })
                .flat_map(|t| match t {
                    Telemetry::Traces(rs) => rs
                        .into_iter()
                        .flat_map(|r| r.scope_spans)
                        .flat_map(|s| s.spans)
                        .collect::<Vec<_>>(),
                    _ => Vec::new(),
                })
                .collect();
            from_file.len() == n
        })
        .await,
        "{} spans in the file",
        from_file.len()
    );
    by_id(&mut from_file);
    assert!(from_file == want, "the file exporter: the same spans");
    // The decoded pipeline: the same spans, each with the attribute added.
    let mut got_b = b.spans();
    by_id(&mut got_b);
    let added = KeyValue {
        key: "pipeline".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue("decoded".into())),
        }),
        ..Default::default()
    };
    assert_eq!(got_b.len(), want.len());
    for (got, sent) in got_b.iter().zip(&want) {
        assert!(got.attributes.contains(&added), "{got:?}");
        // Without what the processor added, the span as sent.
        let mut stripped = got.clone();
        stripped.attributes.retain(|kv| kv != &added);
        for e in &mut stripped.events {
            e.attributes.retain(|kv| kv != &added);
        }
        assert!(stripped == *sent, "{got:?}");
    }
    // Every request went on as bytes: the fan-outs decoded for the others.
    let passed = (
        bytes_first_requests(telemetry, "grpc").await,
        bytes_first_requests(telemetry, "http").await,
    );
    assert_eq!(
        passed,
        (reqs.len().div_ceil(2) as f64, (reqs.len() / 2) as f64)
    );
}
