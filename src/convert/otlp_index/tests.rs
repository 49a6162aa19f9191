use super::*;
use crate::convert::otlp_proto::tests::Gen;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn encode(v: Vec<ResourceSpans>) -> Vec<u8> {
    ExportTraceServiceRequest { resource_spans: v }.encode_to_vec()
}

fn decodes(b: &[u8]) -> bool {
    ExportTraceServiceRequest::decode(b).is_ok()
}

/// The body of a length-delimited field (its key and length skipped).
fn body(field: &[u8]) -> &[u8] {
    let mut r = Reader { buf: field, at: 0 };
    r.key().unwrap();
    r.delimited().unwrap().1
}

#[test]
fn random_requests_are_indexed_part_by_part() {
    let mut g = Gen(StdRng::seed_from_u64(21));
    for _ in 0..300 {
        let v = g.traces();
        let bytes = encode(v.clone());
        let ix = index_traces(&bytes).unwrap();
        assert_eq!(ix.resources.len(), v.len());
        let scopes: Vec<&ScopeSpans> = v.iter().flat_map(|r| &r.scope_spans).collect();
        let spans: Vec<&Span> = scopes.iter().flat_map(|s| &s.spans).collect();
        assert_eq!(ix.scopes.len(), scopes.len());
        assert_eq!(ix.items.len(), spans.len());
        // Each part is its own message, whole, and the parts nest.
        for (part, rs) in ix.resources.iter().zip(&v) {
            let got = ResourceSpans::decode(body(&bytes[part.field.clone()])).unwrap();
            assert_eq!(&got, rs);
            assert_eq!(part.children.len(), rs.scope_spans.len());
        }
        for (part, ss) in ix.scopes.iter().zip(&scopes) {
            let got = ScopeSpans::decode(body(&bytes[part.field.clone()])).unwrap();
            assert_eq!(&got, *ss);
            assert_eq!(part.children.len(), ss.spans.len());
        }
        for (range, span) in ix.items.iter().zip(&spans) {
            assert_eq!(&Span::decode(body(&bytes[range.clone()])).unwrap(), *span);
        }
        // The resources are the request: concatenated, they are its bytes.
        let joined: Vec<u8> = ix
            .resources
            .iter()
            .flat_map(|p| bytes[p.field.clone()].iter().copied())
            .collect();
        assert_eq!(joined, bytes);
    }
}

/// Damage of every kind: flipped bits, bytes overwritten with values that
/// make keys, lengths and varints go wrong, cuts, inserts and swaps.
fn damage(rng: &mut StdRng, mut b: Vec<u8>) -> Vec<u8> {
    let n = rng.random_range(1..4);
    for _ in 0..n {
        if b.is_empty() {
            b.push(rng.random());
            continue;
        }
        let at = rng.random_range(0..b.len());
        match rng.random_range(0..7) {
            0 => b[at] ^= 1 << rng.random_range(0..8),
            1 => {
                const EDGES: [u8; 12] = [0, 1, 2, 0x7f, 0x80, 0xff, 3, 4, 0x0b, 0x0c, 0xc0, 0xfe];
                b[at] = EDGES[rng.random_range(0..EDGES.len())];
            }
            2 => b.truncate(at),
            3 => {
                let extra: Vec<u8> = (0..rng.random_range(1..6)).map(|_| rng.random()).collect();
                b.splice(at..at, extra);
            }
            4 => b[at] = rng.random(),
            5 => {
                let other = rng.random_range(0..b.len());
                b.swap(at, other);
            }
            _ => {
                // A UTF-8 breaker inside whatever string is there.
                b[at] = 0xc3;
            }
        }
    }
    b
}

#[test]
fn damaged_requests_are_refused_exactly_when_the_decoder_refuses_them() {
    let mut g = Gen(StdRng::seed_from_u64(5));
    let mut rng = StdRng::seed_from_u64(99);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..400 {
        let bytes = encode(g.traces());
        for _ in 0..50 {
            let bad = damage(&mut rng, bytes.clone());
            let ours = index_traces(&bad);
            assert_eq!(
                ours.is_ok(),
                decodes(&bad),
                "{ours:?} for {}",
                hex::encode(&bad)
            );
            if ours.is_ok() {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
    }
    // Both kinds were tried many times.
    assert!(accepted > 1000 && refused > 1000, "{accepted} / {refused}");
}

/// A key for `tag` and wire type `wire`.
fn key(tag: u32, wire: u8) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_varint(u64::from(tag) << 3 | u64::from(wire), &mut out);
    out
}

/// `body` as a length-delimited field `tag`.
fn field(tag: u32, body: &[u8]) -> Vec<u8> {
    let mut out = key(tag, 2);
    prost::encoding::encode_varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// A request with one span whose one attribute is `levels` arrays deep.
fn nested(levels: usize) -> Vec<u8> {
    let mut any = field(1, b"leaf"); // AnyValue.string_value
    for _ in 0..levels {
        any = field(5, &field(1, &any)); // AnyValue.array_value.values
    }
    let kv = [field(1, b"k"), field(2, &any)].concat();
    let span = field(9, &kv);
    field(1, &field(2, &field(2, &span)))
}

#[test]
fn the_recursion_limit_is_the_decoders() {
    let mut seen = (false, false);
    for levels in 40..60 {
        let bytes = nested(levels);
        let ours = index_traces(&bytes);
        assert_eq!(ours.is_ok(), decodes(&bytes), "{levels} levels");
        match ours {
            Ok(_) => seen.0 = true,
            Err(e) => {
                assert_eq!(e, Invalid::Depth);
                seen.1 = true;
            }
        }
    }
    assert_eq!(seen, (true, true), "the limit falls inside the range tried");
}

#[test]
fn each_kind_of_fault_is_named() {
    let span = |b: &[u8]| field(1, &field(2, &field(2, b)));
    let cases: Vec<(Vec<u8>, Invalid)> = vec![
        (span(&field(5, &[0x66, 0xff])), Invalid::Utf8),
        (span(&[key(5, 0), vec![1]].concat()), Invalid::WireType),
        (span(&[0x80; 11]), Invalid::Varint),
        (span(&[key(0, 0), vec![1]].concat()), Invalid::Key),
        (span(&[0x0e]), Invalid::Key),
        (span(&[key(1, 2), vec![5, 1]].concat()), Invalid::Truncated),
        (span(&key(40, 4)), Invalid::Group),
        (span(&[key(40, 3), key(41, 4)].concat()), Invalid::Group),
    ];
    for (bytes, want) in cases {
        assert_eq!(index_traces(&bytes), Err(want), "{}", hex::encode(&bytes));
        assert!(!decodes(&bytes), "the decoder refuses it too");
    }
    // Unknown fields of every wire type, a group with a nested group among
    // them, are skipped by both.
    let unknown = [
        key(40, 0),
        vec![0x96, 0x01],
        key(41, 1),
        vec![0; 8],
        key(42, 5),
        vec![0; 4],
        field(43, b"\xff\xfe"),
        key(44, 3),
        key(45, 3),
        key(45, 4),
        key(44, 4),
    ]
    .concat();
    let bytes = span(&[unknown, field(5, b"ok")].concat());
    let ix = index_traces(&bytes).unwrap();
    assert_eq!(ix.items.len(), 1);
    assert!(decodes(&bytes));
}

/// Random logs and metrics requests: indexed part by part, counted as the
/// decoded structs count, refused exactly when the decoder refuses them.
#[test]
fn logs_and_metrics_are_indexed_and_checked_as_the_decoder_does() {
    use crate::convert::otlp_proto::decode_request;
    use crate::signal::Telemetry;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs};
    use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics};
    let mut g = Gen(StdRng::seed_from_u64(77));
    let mut rng = StdRng::seed_from_u64(78);
    let (mut accepted, mut refused, mut points) = (0, 0, 0);
    for round in 0..400 {
        let signal = if round % 2 == 0 {
            Signal::Logs
        } else {
            Signal::Metrics
        };
        let (bytes, data) = match signal {
            Signal::Logs => {
                let v = g.logs();
                let b = ExportLogsServiceRequest {
                    resource_logs: v.clone(),
                }
                .encode_to_vec();
                (b, Telemetry::Logs(v))
            }
            _ => {
                let v = g.metrics();
                let b = ExportMetricsServiceRequest {
                    resource_metrics: v.clone(),
                }
                .encode_to_vec();
                (b, Telemetry::Metrics(v))
            }
        };
        let ix = index_request(signal, &bytes).unwrap();
        assert_eq!(ix.item_count(), data.item_count());
        points += ix.points;
        match &data {
            Telemetry::Logs(v) => {
                assert_eq!(ix.resources.len(), v.len());
                let records: Vec<&LogRecord> = v
                    .iter()
                    .flat_map(|r| &r.scope_logs)
                    .flat_map(|s| &s.log_records)
                    .collect();
                assert_eq!(ix.items.len(), records.len());
                for (range, rec) in ix.items.iter().zip(records) {
                    assert_eq!(
                        &LogRecord::decode(body(&bytes[range.clone()])).unwrap(),
                        rec
                    );
                }
                for (part, rl) in ix.resources.iter().zip(v) {
                    let got = ResourceLogs::decode(body(&bytes[part.field.clone()])).unwrap();
                    assert_eq!(&got, rl);
                }
            }
            Telemetry::Metrics(v) => {
                assert_eq!(ix.resources.len(), v.len());
                let metrics: Vec<&Metric> = v
                    .iter()
                    .flat_map(|r| &r.scope_metrics)
                    .flat_map(|s| &s.metrics)
                    .collect();
                assert_eq!(ix.items.len(), metrics.len());
                for (range, m) in ix.items.iter().zip(metrics) {
                    assert_eq!(&Metric::decode(body(&bytes[range.clone()])).unwrap(), m);
                }
                for (part, rm) in ix.resources.iter().zip(v) {
                    let got = ResourceMetrics::decode(body(&bytes[part.field.clone()])).unwrap();
                    assert_eq!(&got, rm);
                    assert_eq!(part.children.len(), rm.scope_metrics.len());
                }
            }
            Telemetry::Traces(_) => unreachable!(),
        }
        for _ in 0..50 {
            let bad = damage(&mut rng, bytes.clone());
            let ours = index_request(signal, &bad);
            let theirs = decode_request(signal, &bad);
            assert_eq!(
                ours.is_ok(),
                theirs.is_ok(),
                "{signal}: {ours:?} for {}",
                hex::encode(&bad)
            );
            match (ours, theirs) {
                (Ok(ix), Ok(t)) => {
                    accepted += 1;
                    assert_eq!(ix.item_count(), t.item_count(), "{}", hex::encode(&bad));
                }
                _ => refused += 1,
            }
        }
    }
    assert!(points > 1000, "{points} data points");
    assert!(accepted > 1000 && refused > 1000, "{accepted} / {refused}");
}

/// A `Metric` with two kinds of data keeps the last (the points counted are
/// its); the same kind twice merges; packed and unpacked repeated numbers
/// are both taken, and a packed run must end on a value.
#[test]
fn metric_data_counts_and_packed_fields_follow_the_decoder() {
    use crate::convert::otlp_proto::decode_request;
    let point = field(1, &[]); // an empty data point
    let gauge = field(5, &[point.clone(), point.clone()].concat());
    let sum = field(7, &point);
    let check = |metric: Vec<u8>| {
        let req = field(1, &field(2, &field(2, &metric)));
        let ours = index_request(Signal::Metrics, &req);
        let theirs = decode_request(Signal::Metrics, &req);
        assert_eq!(ours.is_ok(), theirs.is_ok(), "{}", hex::encode(&req));
        ours.ok().map(|ix| {
            assert_eq!(ix.item_count(), theirs.map(|t| t.item_count()).unwrap_or(0));
            ix.points
        })
    };
    assert_eq!(check([gauge.clone(), sum.clone()].concat()), Some(1));
    assert_eq!(check([sum.clone(), gauge.clone()].concat()), Some(2));
    assert_eq!(check([gauge.clone(), gauge.clone()].concat()), Some(4));
    assert_eq!(check([gauge.clone(), sum, gauge].concat()), Some(2));
    // A histogram point's bucket_counts (6): one fixed64 or packed.
    let hist = |counts: Vec<u8>| field(9, &field(1, &counts));
    let mut one = key(6, 1);
    one.extend([0; 8]);
    assert_eq!(check(hist(one)), Some(1));
    assert_eq!(check(hist(field(6, &[0; 16]))), Some(1));
    assert_eq!(check(hist(field(6, &[0; 12]))), None);
    // An exponential histogram's bucket counts: packed varints.
    let exp = |counts: &[u8]| field(10, &field(1, &field(8, &field(2, counts))));
    assert_eq!(check(exp(&[1, 0x80, 1, 5])), Some(1));
    assert_eq!(check(exp(&[1, 0x80])), None);
}

/// The shape the `limits` processor reads, counted from the structs the
/// decoder gives, as the index defines it.
fn shape_of(v: &[ResourceSpans]) -> Shape {
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    fn value(v: &AnyValue, s: &mut Shape) {
        match &v.value {
            Some(Value::StringValue(t)) => s.value_len = s.value_len.max(t.len()),
            Some(Value::BytesValue(b)) => s.value_len = s.value_len.max(b.len()),
            Some(Value::ArrayValue(a)) => {
                s.elements = s.elements.max(a.values.len());
                a.values.iter().for_each(|e| value(e, s));
            }
            Some(Value::KvlistValue(l)) => {
                s.elements = s.elements.max(l.values.len());
                l.values
                    .iter()
                    .filter_map(|kv| kv.value.as_ref())
                    .for_each(|e| value(e, s));
            }
            _ => {}
        }
    }
    fn attrs(list: &[KeyValue], s: &mut Shape) {
        s.attributes = s.attributes.max(list.len());
        list.iter()
            .filter_map(|kv| kv.value.as_ref())
            .for_each(|v| value(v, s));
    }
    let mut s = Shape::default();
    for rs in v {
        if let Some(r) = &rs.resource {
            attrs(&r.attributes, &mut s);
        }
        for ss in &rs.scope_spans {
            if let Some(sc) = &ss.scope {
                attrs(&sc.attributes, &mut s);
            }
            for sp in &ss.spans {
                attrs(&sp.attributes, &mut s);
                s.events = s.events.max(sp.events.len());
                s.links = s.links.max(sp.links.len());
                sp.events.iter().for_each(|e| attrs(&e.attributes, &mut s));
                sp.links.iter().for_each(|l| attrs(&l.attributes, &mut s));
            }
        }
    }
    s
}

#[test]
fn the_shape_is_the_largest_counts_of_the_decoded_request() {
    let mut g = Gen(StdRng::seed_from_u64(31));
    let mut seen = Shape::default();
    for _ in 0..300 {
        let v = g.traces();
        let ix = index_traces(&encode(v.clone())).unwrap();
        assert_eq!(ix.shape, shape_of(&v));
        seen.attributes = seen.attributes.max(ix.shape.attributes);
        seen.value_len = seen.value_len.max(ix.shape.value_len);
        seen.events = seen.events.max(ix.shape.events);
    }
    // The generator reached non-trivial shapes.
    assert!(
        seen.attributes >= 6 && seen.value_len > 16_000 && seen.events >= 2,
        "{seen:?}"
    );
}

/// Cut as bytes, a request decodes to what cutting its structs gives, for
/// every cut point of random traces and logs requests; and a request in
/// field order is cut to the very bytes the cut structs encode to.
#[test]
fn requests_cut_as_bytes_match_the_cut_structs() {
    use crate::convert::otlp_proto::{decode_request, encode_request};
    use crate::convert::split::split_front;
    use crate::signal::Telemetry;
    let mut g = Gen(StdRng::seed_from_u64(12));
    let mut cuts = 0;
    for round in 0..200 {
        let data = if round % 2 == 0 {
            Telemetry::Traces(g.traces())
        } else {
            Telemetry::Logs(g.logs())
        };
        let signal = data.signal();
        let mut bytes = Vec::new();
        encode_request(&data, &mut bytes);
        let ix = index_request(signal, &bytes).unwrap();
        for n in 0..=data.item_count() {
            let (head, tail) = split_request(&bytes, &ix, n).unwrap();
            let mut rest = data.clone();
            let front = split_front(&mut rest, n);
            let enc = |t: &Telemetry| {
                let mut b = Vec::new();
                encode_request(t, &mut b);
                b
            };
            assert_eq!(decode_request(signal, &head).unwrap(), front, "n={n}");
            assert_eq!(decode_request(signal, &tail).unwrap(), rest, "n={n}");
            assert_eq!(head, enc(&front), "the bytes the cut structs encode to");
            assert_eq!(tail, enc(&rest));
            cuts += 1;
        }
    }
    assert!(cuts > 1000, "{cuts} cuts");
    assert_eq!(
        split_request(&[], &index_request(Signal::Metrics, &[]).unwrap(), 0),
        None
    );
}
