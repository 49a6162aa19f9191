use super::*;
use crate::convert::otlp_index::index_traces;
use crate::convert::otlp_proto::tests::Gen;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use rand::SeedableRng;

/// What the view should read for a decoded value.
fn expected(v: &Option<AnyValue>) -> Option<Vec<u8>> {
    // Encoded, for the kinds the view hands out as bytes.
    v.as_ref().map(|a| a.encode_to_vec())
}

fn same(got: Value<'_>, want: &Option<AnyValue>) -> bool {
    match (got, want.as_ref().and_then(|a| a.value.as_ref())) {
        (Value::Empty, None) => true,
        (Value::Str(s), Some(any_value::Value::StringValue(w))) => s == w,
        (Value::Bool(b), Some(any_value::Value::BoolValue(w))) => b == *w,
        (Value::Int(i), Some(any_value::Value::IntValue(w))) => i == *w,
        (Value::Double(d), Some(any_value::Value::DoubleValue(w))) => d.to_bits() == w.to_bits(),
        (Value::Bytes(b), Some(any_value::Value::BytesValue(w))) => b == w.as_slice(),
        (
            Value::Other(b),
            Some(
                any_value::Value::ArrayValue(_)
                | any_value::Value::KvlistValue(_)
                | any_value::Value::StringValueStrindex(_),
            ),
        ) => Some(b.to_vec()) == expected(want),
        _ => false,
    }
}

#[test]
fn a_view_reads_what_the_decoder_reads() {
    let mut g = Gen(rand::rngs::StdRng::seed_from_u64(8));
    let (mut spans, mut attrs) = (0, 0);
    for _ in 0..300 {
        let v = g.traces();
        let bytes = ExportTraceServiceRequest {
            resource_spans: v.clone(),
        }
        .encode_to_vec();
        let ix = index_traces(&bytes).unwrap();
        let decoded: Vec<&Span> = v
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .collect();
        assert_eq!(ix.items.len(), decoded.len());
        for (range, span) in ix.items.iter().zip(decoded) {
            let view = SpanView::of_field(&bytes, range.clone()).unwrap();
            assert_eq!(view.trace_id, span.trace_id.as_slice());
            assert_eq!(view.span_id, span.span_id.as_slice());
            assert_eq!(view.parent_span_id, span.parent_span_id.as_slice());
            assert_eq!(view.name, span.name);
            assert_eq!(view.kind, span.kind);
            assert_eq!(view.start_time_unix_nano, span.start_time_unix_nano);
            assert_eq!(view.end_time_unix_nano, span.end_time_unix_nano);
            let (code, message) = span
                .status
                .as_ref()
                .map_or((0, ""), |s| (s.code, s.message.as_str()));
            assert_eq!((view.status_code, view.status_message), (code, message));
            let got: Vec<(&str, Value<'_>)> = view.attributes().collect();
            assert_eq!(got.len(), span.attributes.len());
            for ((k, val), kv) in got.iter().zip(&span.attributes) {
                assert_eq!(*k, kv.key);
                assert!(same(*val, &kv.value), "{val:?} for {:?}", kv.value);
                attrs += 1;
            }
            if let Some(first) = span.attributes.first() {
                assert!(same(view.attribute(&first.key).unwrap(), &first.value));
            }
            spans += 1;
        }
    }
    assert!(
        spans > 1000 && attrs > 3000,
        "{spans} spans, {attrs} attributes"
    );
}

#[test]
fn a_field_given_twice_keeps_its_last_value_and_a_status_merges() {
    // name "a" then name "b"; status {code 2} then status {message "m"}.
    let body = [
        &[0x2a, 1, b'a'][..],
        &[0x2a, 1, b'b'],
        &[0x7a, 2, 0x18, 2],
        &[0x7a, 3, 0x12, 1, b'm'],
    ]
    .concat();
    let decoded = Span::decode(body.as_slice()).unwrap();
    let view = SpanView::of_body(&body);
    assert_eq!(view.name, decoded.name);
    assert_eq!(view.name, "b");
    let status = decoded.status.unwrap();
    assert_eq!(
        (view.status_code, view.status_message),
        (status.code, status.message.as_str())
    );
    assert_eq!((view.status_code, view.status_message), (2, "m"));
}
