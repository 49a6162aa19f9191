//! Criterion benches for the data path's CPU work: protobuf decode → batch
//! (append and split) → protobuf encode, and OTLP/JSON decode and encode.
//! Run with `cargo bench --bench pipeline`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use spanwire::exporters::otlp::encode_request;
use spanwire::processors::batch::{append, split_front};
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
                        if let Telemetry::Traces(rs) = &head {
                            out += encode_request(rs).len();
                        }
                    }
                    std::hint::black_box(out)
                })
            },
        );
    }
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

criterion_group!(
    benches,
    decode_batch_encode,
    bedrock_convert,
    xray_convert,
    aws_spans_convert,
    agent_metrics
);
criterion_main!(benches);
