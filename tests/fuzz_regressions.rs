//! The fuzz harnesses (`spanwire::fuzzing`) over their seed inputs — the
//! real fixtures — and over every input a fuzzer has crashed on, kept in
//! `tests/fixtures/fuzz/<target>/`. A harness panics when an invariant
//! breaks, so each input here is a check that the decoder still holds.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use spanwire::fuzzing;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Inputs a fuzzer crashed on, for `target`.
fn crashes(target: &str) -> Vec<Vec<u8>> {
    files(&fixtures().join("fuzz").join(target))
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

fn aws_spans_lines() -> Vec<Vec<u8>> {
    files(&fixtures().join("aws-spans"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.as_bytes().to_vec())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn otlp_json() {
    let mut n = 0;
    for line in aws_spans_lines() {
        // Not OTLP/JSON: must be refused or decoded, without a panic.
        fuzzing::otlp_json(&[0].iter().chain(&line).copied().collect::<Vec<_>>());
        n += 1;
    }
    let doc = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"a"}}]},"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"x","startTimeUnixNano":"1","endTimeUnixNano":"2","attributes":[{"key":"n","value":{"doubleValue":"NaN"}}]}]}]}]}"#;
    fuzzing::otlp_json(&[0].iter().chain(doc.iter()).copied().collect::<Vec<_>>());
    for c in crashes("otlp_json") {
        fuzzing::otlp_json(&c);
        n += 1;
    }
    assert!(n > 10);
}

#[test]
fn bedrock() {
    let seeds = files(&fixtures().join("bedrock"));
    assert!(seeds.len() >= 10);
    for p in seeds {
        fuzzing::bedrock(&std::fs::read(p).unwrap());
    }
    for c in crashes("bedrock") {
        fuzzing::bedrock(&c);
    }
}

#[test]
fn aws_spans() {
    let lines = aws_spans_lines();
    assert!(lines.len() >= 20);
    for l in lines {
        fuzzing::aws_spans(&l);
    }
    for c in crashes("aws_spans") {
        fuzzing::aws_spans(&c);
    }
}

#[test]
fn envelope() {
    let mut n = 0;
    for p in files(&fixtures().join("aws-spans")) {
        let raw = std::fs::read(&p).unwrap();
        fuzzing::envelope(&raw);
        fuzzing::envelope(&spanwire::net::gzip(&raw));
        n += 1;
    }
    for c in crashes("envelope") {
        fuzzing::envelope(&c);
    }
    assert!(n >= 5);
}

#[test]
fn config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for p in files(&root.join("pipelines"))
        .into_iter()
        .chain([root.join("deploy/config.yaml")])
    {
        fuzzing::config(&std::fs::read(p).unwrap());
        n += 1;
    }
    for c in crashes("config") {
        fuzzing::config(&c);
    }
    assert!(n >= 5);
}

#[test]
fn otlp_proto_xray() {
    use prost::Message;
    for p in files(&fixtures().join("bedrock")) {
        let events =
            spanwire::convert::bedrock::parse_events(&std::fs::read_to_string(p).unwrap()).unwrap();
        let c = spanwire::convert::bedrock::convert(&events, &Default::default());
        let req = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
            resource_spans: c.resource_spans,
        };
        fuzzing::otlp_proto_xray(&req.encode_to_vec());
    }
    for c in crashes("otlp_proto_xray") {
        fuzzing::otlp_proto_xray(&c);
    }
}

#[test]
fn otlp_index() {
    use prost::Message;
    let mut n = 0;
    for p in files(&fixtures().join("bedrock")) {
        let events =
            spanwire::convert::bedrock::parse_events(&std::fs::read_to_string(p).unwrap()).unwrap();
        let c = spanwire::convert::bedrock::convert(&events, &Default::default());
        let bytes = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
            resource_spans: c.resource_spans,
        }
        .encode_to_vec();
        fuzzing::otlp_index(&bytes);
        // Every prefix: cut anywhere, it is refused or indexed as decoded.
        for cut in 0..bytes.len() {
            fuzzing::otlp_index(&bytes[..cut]);
        }
        n += 1;
    }
    assert!(n > 0, "no Bedrock fixtures");
    for c in crashes("otlp_index") {
        fuzzing::otlp_index(&c);
    }
}
