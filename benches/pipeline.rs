//! Criterion benches for the data path's CPU work: protobuf decode → batch
//! (append and split) → protobuf encode, and OTLP/JSON decode and encode.
//! Run with `cargo bench --bench pipeline`.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use spanwire::convert::split::{append, split_front};
use spanwire::signal::{Signal, Telemetry};

#[path = "agent_spans.rs"]
mod agent_spans;
use agent_spans::agent_request;

fn decode_batch_encode(c: &mut Criterion) {
    // 16 requests of 100 spans, as 16 concurrent agents would send them.
    let bodies: Vec<Vec<u8>> = (0..16u64)
        .map(|i| agent_request(i + 1, 100).encode_to_vec())
        .collect();
    let spans = 16 * 100;
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(spans as u64));
    g.bench_function("decode", |b| {
        b.iter(|| {
            for body in &bodies {
                let r = ExportTraceServiceRequest::decode(&body[..]).expect("valid");
                std::hint::black_box(r);
            }
        })
    });
    // The one-pass check and index of the same bytes (no structs).
    g.bench_function("index", |b| {
        b.iter(|| {
            for body in &bodies {
                let ix = spanwire::convert::otlp_index::index_traces(body).expect("valid");
                std::hint::black_box(ix);
            }
        })
    });
    for max in [512usize, 1024] {
        g.bench_with_input(
            BenchmarkId::new("decode_batch_encode", max),
            &max,
            |b, &max| {
                b.iter(|| {
                    let mut batch: Option<Telemetry> = None;
                    for body in &bodies {
                        let r = ExportTraceServiceRequest::decode(&body[..]).expect("valid");
                        let t = Telemetry::Traces(r.resource_spans);
                        match &mut batch {
                            Some(b) => append(b, t),
                            None => batch = Some(t),
                        }
                    }
                    let mut batch = batch.expect("non-empty");
                    let mut out = 0usize;
                    while batch.item_count() > 0 {
                        let head = split_front(&mut batch, max);
                        out += spanwire::convert::otlp_proto::encode_batch(&head)
                            .bytes
                            .len();
                    }
                    std::hint::black_box(out)
                })
            },
        );
    }
    g.finish();

    // The exporter's encode of one full batch: 82 requests of 100 agent spans
    // merged as the batch processor does, prost's nested sizing against the
    // one-pass encoder (same bytes).
    let mut batch = Telemetry::Traces(agent_request(1, 100).resource_spans);
    for i in 2..=82u64 {
        append(
            &mut batch,
            Telemetry::Traces(agent_request(i, 100).resource_spans),
        );
    }
    let mut g = c.benchmark_group("encode_batch_8200_spans");
    g.throughput(Throughput::Elements(batch.item_count() as u64));
    g.bench_function("prost", |b| {
        b.iter(|| {
            let mut buf = Vec::with_capacity(8200 * 512);
            if let Telemetry::Traces(v) = &batch {
                for m in v {
                    prost::encoding::message::encode(1, m, &mut buf);
                }
            }
            std::hint::black_box(buf.len())
        })
    });
    g.bench_function("one_pass", |b| {
        b.iter(|| {
            spanwire::convert::otlp_proto::encode_batch(&batch)
                .bytes
                .len()
        })
    });
    g.finish();

    // Why the batch processor encodes on arrival when its exporters send OTLP
    // protobuf as is: 82 requests of 100 spans decoded, then (a) dropped one
    // by one, as the decode-only ceiling does; (b) held as one batch of
    // structs, encoded and dropped, as struct batching does; (c) each encoded
    // and dropped as it arrives, as encoded batching does.
    let bodies: Vec<Vec<u8>> = (0..82u64)
        .map(|i| agent_request(i + 1, 100).encode_to_vec())
        .collect();
    let decode = |body: &[u8]| {
        Telemetry::Traces(
            ExportTraceServiceRequest::decode(body)
                .expect("valid")
                .resource_spans,
        )
    };
    let mut g = c.benchmark_group("batch_8200_spans");
    g.throughput(Throughput::Elements(8200));
    g.bench_function("decode_drop_each", |b| {
        b.iter(|| {
            for body in &bodies {
                std::hint::black_box(decode(body));
            }
        })
    });
    g.bench_function("hold_structs_encode_drop", |b| {
        b.iter(|| {
            let mut batch = decode(&bodies[0]);
            for body in &bodies[1..] {
                append(&mut batch, decode(body));
            }
            let bytes = spanwire::convert::otlp_proto::encode_batch(&batch).bytes;
            drop(batch);
            std::hint::black_box(bytes.len())
        })
    });
    g.bench_function("encode_each_on_arrival", |b| {
        b.iter(|| {
            let mut buf = Vec::with_capacity(8200 * 512);
            for body in &bodies {
                spanwire::convert::otlp_proto::encode_request(&decode(body), &mut buf);
            }
            std::hint::black_box(buf.len())
        })
    });
    g.finish();

    let one = Telemetry::Traces(agent_request(7, 100).resource_spans);
    let json = spanwire::convert::otlp_json::encode_to_vec(&one);
    let mut g = c.benchmark_group("otlp_json");
    g.throughput(Throughput::Elements(100));
    g.bench_function("decode_100_spans", |b| {
        b.iter(|| spanwire::convert::otlp_json::decode(Signal::Traces, &json).expect("valid"))
    });
    g.bench_function("encode_100_spans", |b| {
        b.iter(|| spanwire::convert::otlp_json::encode_to_vec(&one))
    });
    g.finish();
}

/// Bedrock trace events → spans, over every recorded stream in tests/fixtures/bedrock.
fn bedrock_convert(c: &mut Criterion) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bedrock");
    let mut streams: Vec<Vec<serde_json::Value>> = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    for p in names {
        let text = std::fs::read_to_string(&p).expect("fixture");
        streams.push(spanwire::convert::bedrock::parse_events(&text).expect("events"));
    }
    let events: usize = streams.iter().map(Vec::len).sum();
    let opts = spanwire::convert::bedrock::Options::default();
    let mut g = c.benchmark_group("bedrock");
    g.throughput(Throughput::Elements(events as u64));
    g.bench_function("convert_all_fixtures", |b| {
        b.iter(|| {
            let mut spans = 0;
            for s in &streams {
                let c = spanwire::convert::bedrock::convert(s, &opts);
                spans += c.resource_spans.len();
            }
            std::hint::black_box(spans)
        })
    });
    g.finish();
}

/// OTLP spans → X-Ray segment documents: synthetic agent traces, and the
/// spans made from every Bedrock fixture.
fn xray_convert(c: &mut Criterion) {
    use spanwire::convert::xray;
    let agent: Vec<_> = (1..=10)
        .flat_map(|seed| agent_request(seed, 100).resource_spans)
        .collect();
    let agent_spans = Telemetry::Traces(agent.clone()).item_count();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bedrock");
    let mut bedrock = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    for p in names {
        let text = std::fs::read_to_string(&p).expect("fixture");
        let events = spanwire::convert::bedrock::parse_events(&text).expect("events");
        bedrock.extend(
            spanwire::convert::bedrock::convert(&events, &Default::default()).resource_spans,
        );
    }
    let bedrock_spans = Telemetry::Traces(bedrock.clone()).item_count();
    let opts = xray::Options::default();
    let mut g = c.benchmark_group("xray");
    g.throughput(Throughput::Elements(agent_spans as u64));
    g.bench_function("convert_1000_agent_spans", |b| {
        b.iter(|| {
            let c = xray::convert(&agent, &opts);
            assert!(c.errors.is_empty());
            std::hint::black_box(c.documents.len())
        })
    });
    g.throughput(Throughput::Elements(bedrock_spans as u64));
    g.bench_function("convert_bedrock_fixture_spans", |b| {
        b.iter(|| std::hint::black_box(xray::convert(&bedrock, &opts).documents.len()))
    });
    g.finish();
}

/// `aws/spans` span JSON text → OTLP spans: parse, convert, de-duplicate
/// in-progress records, group by resource — what the Kinesis receiver does
/// per log event.
fn aws_spans_convert(c: &mut Criterion) {
    use spanwire::convert::aws_spans;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/aws-spans");
    let mut lines: Vec<String> = Vec::new();
    for f in [
        "coralogix_stepfunctions_aws_spans.jsonl",
        "awsdocs_agentcore_understanding_input_spans.jsonl",
        "dev7a_lambda_appsignals_span.jsonl",
        "awsdocs_strands_split_spans.ABBREVIATED.jsonl",
    ] {
        let text = std::fs::read_to_string(format!("{dir}/{f}")).expect("fixture");
        lines.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from),
        );
    }
    let mut g = c.benchmark_group("aws_spans");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("json_to_otlp_fixture_spans", |b| {
        b.iter(|| {
            let mut stream = aws_spans::SpanStream::new(aws_spans::StreamOptions::default());
            let mut out = Vec::with_capacity(lines.len());
            let mut stats = aws_spans::PushStats::default();
            for l in &lines {
                let r = aws_spans::span_from_str(l).expect("span");
                stream.push(r, 0, &mut out, &mut stats);
            }
            stream.expire(1, true, &mut out);
            std::hint::black_box(aws_spans::group(out).len())
        })
    });
    g.finish();
}

/// Spans → agent metrics: the `agentmetrics` connector's aggregation.
fn agent_metrics(c: &mut Criterion) {
    use spanwire::connectors::agentmetrics::{AgentMetrics, AgentMetricsConfig};
    let batch = Telemetry::Traces(
        (1..=10)
            .flat_map(|seed| agent_request(seed, 100).resource_spans)
            .collect(),
    );
    let n = batch.item_count();
    let cfg: AgentMetricsConfig = serde_json::from_str("{}").expect("defaults");
    let conn = AgentMetrics::new(cfg, "bench");
    let mut g = c.benchmark_group("agentmetrics");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("record_1000_agent_spans", |b| {
        b.iter(|| conn.record(&batch))
    });
    g.finish();
}

/// The live exporter's store: 1000 agent spans (10 invocations over 97
/// sessions, as the load generator sends them) filed into sessions, with
/// the default limits; each iteration a later batch (new span ids), so the
/// sessions grow to their bounds and stay there, as at saturation.
fn live_store(c: &mut Criterion) {
    use spanwire::exporters::live::store::{Limits, Store};
    let limits = Limits {
        session_keys: vec!["session.id".into(), "gen_ai.conversation.id".into()],
        max_sessions: 1000,
        max_spans_per_session: 2000,
        max_events_per_session: 1000,
        retention_ns: 3_600_000_000_000,
        max_bytes: 64 << 20,
        pricing: Default::default(),
    };
    let mut store = Store::new(limits);
    let mut seed = 0u64;
    let mut g = c.benchmark_group("live");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("ingest_1000_agent_spans", |b| {
        b.iter_batched(
            || {
                seed += 10;
                (seed..seed + 10)
                    .flat_map(|s| agent_request(s, 100).resource_spans)
                    .collect::<Vec<_>>()
            },
            |batch| {
                store
                    .ingest(&batch, 1_763_000_000_000_000_000)
                    .by_session
                    .len()
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// Metrics → EMF events: a report of 1000 series × (a cumulative counter and
/// a cumulative 12-bucket histogram), each report a minute after the last,
/// so every point goes through the delta state and is rendered.
fn emf_convert(c: &mut Criterion) {
    use opentelemetry_proto::tonic::metrics::v1::{
        metric::Data, number_data_point, AggregationTemporality, Histogram, HistogramDataPoint,
        Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use spanwire::convert::emf;
    use spanwire::signal::string_attribute;
    let start = 1_800_000_000_000_000_000u64;
    let report = |k: u64| {
        let mut counters = Vec::new();
        let mut hists = Vec::new();
        for a in 0..50 {
            for op in ["invoke_agent", "chat", "execute_tool", "retrieval"] {
                for m in 0..5 {
                    let attrs = vec![
                        string_attribute("gen_ai.agent.name", format!("agent-{a}")),
                        string_attribute("gen_ai.operation.name", op),
                        string_attribute("gen_ai.request.model", format!("model-{m}")),
                    ];
                    let t = start + k * 60_000_000_000;
                    counters.push(NumberDataPoint {
                        attributes: attrs.clone(),
                        start_time_unix_nano: start,
                        time_unix_nano: t,
                        value: Some(number_data_point::Value::AsInt((k * 7 + a) as i64)),
                        ..Default::default()
                    });
                    hists.push(HistogramDataPoint {
                        attributes: attrs,
                        start_time_unix_nano: start,
                        time_unix_nano: t,
                        count: k * 12,
                        sum: Some(k as f64 * 30.0),
                        bucket_counts: vec![k; 12],
                        explicit_bounds: (1..12).map(|b| b as f64 * 0.25).collect(),
                        ..Default::default()
                    });
                }
            }
        }
        vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![string_attribute("service.name", "travel-app")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "agent.invocations".into(),
                        data: Some(Data::Sum(Sum {
                            data_points: counters,
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "agent.duration".into(),
                        unit: "s".into(),
                        data: Some(Data::Histogram(Histogram {
                            data_points: hists,
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }]
    };
    // Each report is a minute later; values go up, and every other report
    // they fall back (a counter reset), so both delta paths run.
    let mut rms = report(1);
    let mut k = 0u64;
    let mut next = move || {
        k += 1;
        let t = start + k * 60_000_000_000;
        let level = 1 + k % 2;
        for m in &mut rms[0].scope_metrics[0].metrics {
            match &mut m.data {
                Some(Data::Sum(s)) => {
                    for (i, p) in s.data_points.iter_mut().enumerate() {
                        p.time_unix_nano = t;
                        p.value = Some(number_data_point::Value::AsInt(
                            (level * 7 + i as u64) as i64,
                        ));
                    }
                }
                Some(Data::Histogram(h)) => {
                    for p in &mut h.data_points {
                        p.time_unix_nano = t;
                        p.count = level * 12;
                        p.sum = Some(level as f64 * 30.0);
                        p.bucket_counts = vec![level; 12];
                    }
                }
                _ => {}
            }
        }
        rms.clone()
    };
    let batches: Vec<Vec<ResourceMetrics>> = (0..64).map(|_| next()).collect();
    let opts = emf::Options {
        storage_resolution: 60,
        ..Default::default()
    };
    let mut deltas = emf::Deltas::new(start - 1, u64::MAX / 2, 1_000_000);
    let mut i = 0usize;
    let mut minute = 64u64;
    let mut g = c.benchmark_group("emf");
    g.throughput(Throughput::Elements(2000));
    g.bench_function("report_of_2000_cumulative_points", |bench| {
        bench.iter_batched(
            || {
                // A later copy of a prepared report (cloned outside the timing).
                i = (i + 1) % batches.len();
                minute += 1;
                let mut b = batches[i].clone();
                for m in &mut b[0].scope_metrics[0].metrics {
                    match &mut m.data {
                        Some(Data::Sum(s)) => s
                            .data_points
                            .iter_mut()
                            .for_each(|p| p.time_unix_nano = start + minute * 60_000_000_000),
                        Some(Data::Histogram(h)) => h
                            .data_points
                            .iter_mut()
                            .for_each(|p| p.time_unix_nano = start + minute * 60_000_000_000),
                        _ => {}
                    }
                }
                b
            },
            |b| {
                let n = emf::convert(&b, &opts, &mut deltas, start).stats.values;
                assert_eq!(n, 2000);
                b
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The disk-backed sending queue (`sending_queue.storage`): what one queued
/// batch costs, written and then handed to a worker and marked done. The
/// record is made as the exporter fan-out makes it (from structs, or from an
/// encoded batch without a copy), appended to a segment in a temporary
/// directory, taken back with `next` and released with `done`, so segments
/// are written, rotated and deleted as in a long run.
/// `cached`: the worker gets the batch from memory (the default keeps
/// `queue_size` batches there). `read_back`: it reads the record from the
/// file, as after a restart or when the backlog outgrows memory, and decodes
/// it (`structs`) or hands the checked bytes out as they are (`encoded`, for
/// `otlp` / `otlphttp` exporters). `fsync_always` (the default policy) adds
/// one `fdatasync` per batch and measures this machine's disk more than
/// spanwire.
fn disk_queue(c: &mut Criterion) {
    use spanwire::queue::disk::{encode_record, encoded_record, DiskConfig, DiskQueue};
    use spanwire::settings::types::{FsyncPolicy, WhenFull};
    use spanwire::signal::EncodedBatch;
    use spanwire::signal::Payload;
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;

    const BATCHES: u64 = 16;
    const SPANS: u64 = 1000;
    let batches: Vec<Arc<Telemetry>> = (0..BATCHES)
        .map(|i| {
            let mut t = Telemetry::Traces(agent_request(i * 10 + 1, 100).resource_spans);
            for j in 2..=(SPANS / 100) {
                append(
                    &mut t,
                    Telemetry::Traces(agent_request(i * 10 + j, 100).resource_spans),
                );
            }
            Arc::new(t)
        })
        .collect();
    let encoded: Vec<EncodedBatch> = batches
        .iter()
        .map(|b| spanwire::convert::otlp_proto::encode_batch(b))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let stop = CancellationToken::new();
    let mut g = c.benchmark_group("disk_queue_16x1000_spans");
    g.throughput(Throughput::Elements(BATCHES * SPANS));
    g.sample_size(20);
    for (name, enc, fsync, memory_batches) in [
        ("structs/cached/fsync_never", false, FsyncPolicy::Never, 64),
        (
            "structs/read_back/fsync_never",
            false,
            FsyncPolicy::Never,
            0,
        ),
        ("encoded/read_back/fsync_never", true, FsyncPolicy::Never, 0),
        (
            "structs/cached/fsync_always",
            false,
            FsyncPolicy::Always,
            64,
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = DiskConfig {
            dir: dir.path().join("q"),
            max_bytes: 1 << 30,
            segment_bytes: 8 << 20,
            when_full: WhenFull::Block,
            fsync,
            memory_batches,
            read_encoded: enc,
            role: Default::default(),
        };
        let (q, _) = DiskQueue::open(cfg, "bench").expect("open");
        let none = spanwire::signal::Metadata::default();
        g.bench_function(name, |b| {
            b.iter(|| {
                for i in 0..BATCHES as usize {
                    let (record, payload) = if enc {
                        let e = &encoded[i];
                        (encoded_record(e, &none), Payload::Encoded(e.clone()))
                    } else {
                        let d = &batches[i];
                        (encode_record(d, &none), Payload::Structs(d.clone()))
                    };
                    let res = q
                        .reserve(record.len() as u64)
                        .expect("open queue")
                        .expect("room");
                    q.append(res, &record, &payload, &none).expect("append");
                }
                let mut spans = 0;
                for _ in 0..BATCHES {
                    let e = rt.block_on(q.next(&stop)).expect("a batch");
                    spans += e.data.item_count();
                    q.done(e.seq);
                }
                assert_eq!(spans as u64, BATCHES * SPANS);
            })
        });
        q.close();
    }
    g.finish();
}

/// The cost `sigv4auth` adds to one request: signing (SHA-256 of the body,
/// the canonical request, four HMACs) the gzip body of an 8200-span batch,
/// beside encoding and compressing that batch.
fn sigv4_sign(c: &mut Criterion) {
    use spanwire::component::{ComponentId, ExtensionContext, ExtensionDef, Health};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut batch = Telemetry::Traces(agent_request(1, 100).resource_spans);
    for i in 2..=82u64 {
        append(
            &mut batch,
            Telemetry::Traces(agent_request(i, 100).resource_spans),
        );
    }
    let raw = spanwire::convert::otlp_proto::encode_batch(&batch).bytes;
    let body = spanwire::net::gzip(&raw);
    // Static credentials from the environment: the chain finds them first.
    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDBENCH");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench-secret");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let sources = [(
        "bench.yaml".to_string(),
        "extensions:\n  sigv4auth: {region: us-east-1, service: xray}\n\
         receivers:\n  otlp: {protocols: {http: {}}}\n\
         exporters:\n  debug: {}\n\
         service:\n  extensions: [sigv4auth]\n  pipelines:\n    traces: {receivers: [otlp], exporters: [debug]}\n"
            .to_string(),
    )];
    let cfg = spanwire::config::load_sources(&sources, &|_| None, &spanwire::components()).unwrap();
    let id = ComponentId::parse("sigv4auth").unwrap();
    let def: &dyn ExtensionDef = cfg.extension(&id).unwrap().config.as_ref();
    let started = rt
        .block_on(def.start(ExtensionContext {
            id: &id,
            health: Health::default(),
            cancel: tokio_util::sync::CancellationToken::new(),
        }))
        .unwrap();
    let auth = started.auth.unwrap();
    let request = || {
        http::Request::post("https://xray.us-east-1.amazonaws.com/v1/traces")
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "gzip")
            .body(())
            .unwrap()
            .into_parts()
            .0
    };
    let mut g = c.benchmark_group("sigv4_8200_spans");
    g.throughput(Throughput::Elements(batch.item_count() as u64));
    g.bench_function("sign_gzip_body", |b| {
        b.iter(|| {
            let mut parts = request();
            rt.block_on(auth.authorize(&mut parts, &body, &Default::default()))
                .unwrap();
            std::hint::black_box(parts.headers.len())
        })
    });
    g.bench_function("encode_and_gzip", |b| {
        b.iter(|| {
            let raw = spanwire::convert::otlp_proto::encode_batch(&batch).bytes;
            std::hint::black_box(spanwire::net::gzip(&raw).len())
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    sigv4_sign,
    emf_convert,
    decode_batch_encode,
    bedrock_convert,
    xray_convert,
    aws_spans_convert,
    agent_metrics,
    live_store,
    disk_queue
);
criterion_main!(benches);
