//! Fuzz harnesses: one function per decoder that takes untrusted bytes.
//! Each feeds arbitrary input to the decoder and checks what must hold for
//! any input (no panic, and the invariants below). The cargo-fuzz targets in
//! `fuzz/` call them, and `tests/fuzz_regressions.rs` runs them over the
//! seed corpus and every input a fuzzer ever crashed on, so a fixed crash
//! stays fixed.

use crate::convert::{aws_spans, bedrock, cwl, otlp_json, xray};
use crate::receivers::awskinesis::decode;
use crate::signal::{Signal, Telemetry};

/// OTLP/JSON decoding (first byte picks the signal). A decoded batch
/// encodes back to JSON that decodes to the same number of items.
pub fn otlp_json(data: &[u8]) {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let signal = Signal::ALL[first as usize % 3];
    if let Ok(t) = otlp_json::decode(signal, body) {
        let again = otlp_json::decode(signal, &otlp_json::encode_to_vec(&t));
        match again {
            Ok(u) => assert_eq!(
                t.item_count(),
                u.item_count(),
                "round trip changed the item count"
            ),
            Err(e) => panic!("our own JSON does not decode: {e}"),
        }
    }
}

/// The Bedrock trace converter on a JSON array or JSON-lines of events.
/// Every span it makes has a 16-byte trace id and an 8-byte span id, and
/// every span's parent is in the output or is the caller's.
pub fn bedrock(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(events) = bedrock::parse_events(text) else {
        return;
    };
    let c = bedrock::convert(&events, &bedrock::Options::default());
    let spans: Vec<_> = c
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    for s in &spans {
        assert_eq!(s.trace_id.len(), 16, "trace id length");
        assert_eq!(s.span_id.len(), 8, "span id length");
        assert!(
            s.parent_span_id.is_empty() || spans.iter().any(|p| p.span_id == s.parent_span_id),
            "a parent outside the output"
        );
        assert!(
            s.end_time_unix_nano >= s.start_time_unix_nano,
            "ends before it starts"
        );
    }
    assert!(c.errors.len() <= c.events.max(events.len()));
}

/// One `aws/spans` log event (Transaction Search JSON). A span that parses
/// converts to X-Ray or says why not, and groups into one resource.
pub fn aws_spans(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rec) = aws_spans::span_from_str(text) {
        let grouped = aws_spans::group(vec![rec]);
        let n: usize = grouped
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        assert_eq!(n, 1, "grouping lost or duplicated the span");
        xray_documents(&grouped);
    }
}

/// A Kinesis record as the `awskinesis` receiver reads it: KPL
/// de-aggregation, the gzip CloudWatch Logs envelope (bounded to 1 MiB
/// decompressed), and the spans or log records inside.
pub fn envelope(data: &[u8]) {
    for format in [decode::Format::Auto, decode::Format::CloudwatchLogs] {
        let mut out = decode::Decoded::default();
        decode::record(data, "shard-0", "1", format, 1 << 20, 1, &mut out);
        assert!(out.bad_records <= 1 + data.len() as u64);
    }
    if let Ok(env) = cwl::decode_envelope(data, 1 << 20) {
        let logs = cwl::logs_from_envelope(&env, 1);
        assert!(
            logs.scope_logs
                .iter()
                .map(|s| s.log_records.len())
                .sum::<usize>()
                <= env.log_events.len()
        );
    }
}

/// The config loader on arbitrary YAML: it loads or reports errors, never panics.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sources = [("fuzz.yaml".to_string(), text.to_string())];
    if let Err(e) = crate::config::load_sources(&sources, &|_| None, &crate::components()) {
        assert!(!e.to_string().is_empty(), "an error without a message");
    }
}

/// The one-pass index of OTLP request bytes: it accepts exactly what the
/// decoder accepts, and what it accepts has as many resources, scopes and
/// spans as the decoded request, each part decoding to the decoder's (and,
/// read as metrics or logs, as many items).
pub fn otlp_index(data: &[u8]) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;
    let ours = crate::convert::otlp_index::index_traces(data);
    let theirs = ExportTraceServiceRequest::decode(data);
    assert_eq!(ours.is_ok(), theirs.is_ok(), "{ours:?} against {theirs:?}");
    let (Ok(ix), Ok(req)) = (ours, theirs) else {
        return;
    };
    let spans: Vec<&Span> = req
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    assert_eq!(ix.resources.len(), req.resource_spans.len());
    assert_eq!(ix.items.len(), spans.len());
    for (range, span) in ix.items.iter().zip(spans) {
        // The field's key and length, then the span.
        let mut field = &data[range.clone()];
        let _key = prost::encoding::decode_varint(&mut field);
        let _len = prost::encoding::decode_varint(&mut field);
        assert_eq!(Span::decode(field).ok().as_ref(), Some(span));
    }
    // The same bytes as a metrics and a logs request: accepted exactly when
    // the decoder accepts them, with the items the decoded structs count.
    for signal in [Signal::Metrics, Signal::Logs] {
        let ours = crate::convert::otlp_index::index_request(signal, data);
        let theirs = crate::convert::otlp_proto::decode_request(signal, data);
        assert_eq!(
            ours.is_ok(),
            theirs.is_ok(),
            "{signal}: {ours:?} against {theirs:?}"
        );
        if let (Ok(ix), Ok(t)) = (ours, theirs) {
            assert_eq!(ix.item_count(), t.item_count(), "{signal}");
        }
    }
}

/// OTLP protobuf spans (as the receivers decode them) to X-Ray documents:
/// each document is JSON whose `id` is the document's id. Whatever decodes
/// (as spans, and as logs) also re-encodes with the one-pass encoder to
/// exactly prost's bytes.
pub fn otlp_proto_xray(data: &[u8]) {
    if let Ok(t) = crate::convert::otlp_proto::decode_request(Signal::Logs, data) {
        same_bytes_as_prost(&t);
    }
    if let Ok(t) = crate::convert::otlp_proto::decode_request(Signal::Traces, data) {
        same_bytes_as_prost(&t);
        if let Telemetry::Traces(rs) = &t {
            xray_documents(rs);
        }
    }
}

fn same_bytes_as_prost(t: &Telemetry) {
    fn prost_request<M: prost::Message>(items: &[M]) -> Vec<u8> {
        let mut buf = Vec::new();
        items
            .iter()
            .for_each(|m| prost::encoding::message::encode(1, m, &mut buf));
        buf
    }
    let expected = match t {
        Telemetry::Traces(v) => prost_request(v),
        Telemetry::Logs(v) => prost_request(v),
        Telemetry::Metrics(v) => prost_request(v),
    };
    let mut ours = Vec::new();
    crate::convert::otlp_proto::encode_request(t, &mut ours);
    assert!(ours == expected, "one-pass encoding differs from prost's");
}

fn xray_documents(rs: &[opentelemetry_proto::tonic::trace::v1::ResourceSpans]) {
    let converted = xray::convert(rs, &xray::Options::default());
    for d in converted.documents {
        let v: serde_json::Value = match serde_json::from_str(&d.json) {
            Ok(v) => v,
            Err(e) => panic!("segment document is not JSON: {e}: {}", d.json),
        };
        assert_eq!(v["id"].as_str(), Some(d.id.as_str()));
        assert_eq!(d.id.len(), 16);
        assert!(
            d.json.len() <= xray::MAX_DOCUMENT_BYTES,
            "document over the size limit"
        );
    }
}
