//! The session store on hand-made spans: totals, bounds, eviction, events.
use super::*;
use crate::signal::{attribute, string_attribute};
use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Status};

const SEC: u64 = 1_000_000_000;

fn limits() -> Limits {
    Limits {
        session_keys: vec!["session.id".into(), "gen_ai.conversation.id".into()],
        max_sessions: 3,
        max_spans_per_session: 4,
        max_events_per_session: 2,
        max_bytes: 1 << 30,
        retention_ns: 60 * SEC,
        pricing: [(
            "anthropic.claude-3-haiku".to_string(),
            Price {
                input: 0.25,
                output: 1.25,
                ..Price::default()
            },
        )]
        .into(),
    }
}

/// A session's kept spans as records, in arrival order.
fn records(st: &Store, session: &Session) -> Vec<SpanRecord> {
    session.spans.spans().map(|span| st.record(&span)).collect()
}

fn span(id: u8, parent: u8, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![7; 16],
        span_id: vec![id; 8],
        parent_span_id: if parent == 0 { vec![] } else { vec![parent; 8] },
        name: format!("span-{id}"),
        start_time_unix_nano: 100 * SEC + u64::from(id),
        end_time_unix_nano: 101 * SEC + u64::from(id),
        attributes: attrs,
        ..Default::default()
    }
}

fn batch(session: Option<&str>, spans: Vec<Span>) -> Vec<ResourceSpans> {
    vec![ResourceSpans {
        resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
            attributes: session
                .map(|s| vec![string_attribute("session.id", s)])
                .unwrap_or_default(),
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }]
}

#[test]
fn a_session_sums_its_spans() {
    let mut st = Store::new(limits());
    let op = |o: &str| string_attribute("gen_ai.operation.name", o);
    let tokens = |i: i64, o: i64| {
        vec![
            attribute("gen_ai.usage.input_tokens", any_value::Value::IntValue(i)),
            attribute("gen_ai.usage.output_tokens", any_value::Value::IntValue(o)),
        ]
    };
    let mut model = vec![
        op("chat"),
        string_attribute("gen_ai.request.model", "anthropic.claude-3-haiku"),
    ];
    model.extend(tokens(2000, 400));
    let mut failed = span(4, 1, vec![op("execute_tool")]);
    failed.status = Some(Status {
        code: StatusCode::Error as i32,
        message: "tool failed".into(),
    });
    let first = batch(
        Some("s-1"),
        vec![
            span(
                1,
                0,
                vec![
                    op("invoke_agent"),
                    string_attribute("gen_ai.agent.name", "travel"),
                ],
            ),
            span(2, 1, model),
            span(3, 1, vec![op("retrieval")]),
            failed,
            span(
                5,
                1,
                vec![string_attribute("aws.bedrock.guardrail.action", "BLOCKED")],
            ),
        ],
    );
    let got = st.ingest(&first, 200 * SEC);
    assert_eq!(got.by_session.len(), 1);
    assert_eq!(got.by_session[0].1.len(), 5, "every new span is reported");
    assert_eq!(
        got.not_kept, 1,
        "a fifth span is past max_spans_per_session"
    );
    st.refresh();
    let s = st.get("s-1").unwrap();
    let records: Vec<SpanRecord> = records(&st, s);
    let sum = &s.summary;
    assert_eq!(sum.span_count, 5);
    assert_eq!(s.spans.len(), 4);
    assert_eq!(sum.agents, ["travel".to_string()].into());
    assert_eq!(sum.models, ["anthropic.claude-3-haiku".to_string()].into());
    assert_eq!(sum.tokens["input"], 2000);
    assert_eq!(sum.tokens["output"], 400);
    // Failures as the model counts them: the failed tool call and the
    // guardrail intervention.
    assert_eq!((sum.tool_calls, sum.retrievals, sum.errors), (1, 1, 2));
    assert_eq!(sum.model_calls, 1);
    assert_eq!(sum.guardrail_interventions, 1);
    assert!((sum.cost - (2.0 * 0.25 + 0.4 * 1.25)).abs() < 1e-9);
    assert_eq!(records[3].message, "tool failed");
    let recent: Vec<_> = st.recent_errors().collect();
    assert_eq!(recent.len(), 1);
    assert_eq!(
        (recent[0].0.as_str(), recent[0].1.name.as_str()),
        ("s-1", "span-4")
    );
    assert_eq!(records[1].class, SpanClass::Model);
    assert_eq!(records[1].parent_id, Some([1u8; 8]));
    // As JSON: ids in hex, the class by name, attributes an object of texts.
    let j = records[1].to_json();
    assert_eq!(j["parent_id"], hex::encode([1u8; 8]));
    assert_eq!(j["trace_id"], hex::encode([7u8; 16]));
    assert_eq!(j["class"], "model");
    assert_eq!(j["attributes"]["gen_ai.usage.input_tokens"], "2000");
    assert_eq!(
        j["attributes"]["gen_ai.request.model"],
        "anthropic.claude-3-haiku"
    );
    assert_eq!(j["input_tokens"], 2000);
    // Written straight from a span, the JSON is the record's.
    for (span, record) in s.spans.spans().zip(&records) {
        let (mut direct, mut via) = (String::new(), String::new());
        st.write_span_json(&span, &mut direct);
        record.write_json(&mut via);
        assert_eq!(direct, via);
    }
    assert_eq!(records[0].to_json()["parent_id"], "");
}

#[test]
fn sessions_are_keyed_bounded_and_expire() {
    let mut st = Store::new(limits());
    // No session key: the trace id keys it.
    st.ingest(&batch(None, vec![span(1, 0, vec![])]), SEC);
    assert!(st.get(&hex::encode([7u8; 16])).is_some());
    // ... unless another span of the trace names one (Bedrock: the root).
    let mut named = span(9, 0, vec![string_attribute("session.id", "named")]);
    named.trace_id = vec![9; 16];
    let mut child = span(10, 9, vec![]);
    child.trace_id = vec![9; 16];
    st.ingest(&batch(None, vec![child.clone(), named]), SEC);
    assert_eq!(st.get("named").unwrap().spans.len(), 2);
    child.span_id = vec![11; 8];
    st.ingest(&batch(None, vec![child]), SEC);
    assert_eq!(
        st.get("named").unwrap().spans.len(),
        3,
        "and in later batches"
    );
    // A trace whose named span comes in a later batch: its earlier
    // spans move into the named session.
    let mut early = span(20, 21, vec![]);
    early.trace_id = vec![5; 16];
    st.ingest(&batch(None, vec![early]), SEC);
    assert!(st.get(&hex::encode([5u8; 16])).is_some());
    let mut root = span(21, 0, vec![string_attribute("session.id", "late")]);
    root.trace_id = vec![5; 16];
    st.ingest(&batch(None, vec![root]), SEC);
    assert!(st.get(&hex::encode([5u8; 16])).is_none());
    let late = st.get("late").unwrap();
    assert_eq!((late.spans.len(), late.summary.span_count), (2, 2));
    let names: Vec<String> = records(&st, late).into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["span-20", "span-21"], "moved whole, in order");
    assert_eq!(counted(&st), st.bytes(), "merges move the bytes too");
    st.forget("named");
    st.forget("late");
    // A span attribute wins over the resource's.
    let mut s = span(2, 0, vec![string_attribute("session.id", "from-span")]);
    s.trace_id = vec![8; 16];
    st.ingest(&batch(Some("from-resource"), vec![s]), 2 * SEC);
    assert!(st.get("from-span").is_some() && st.get("from-resource").is_none());
    let own_trace = |id: u8| {
        let mut s = span(id, 0, vec![]);
        s.trace_id = vec![id; 16];
        s
    };
    st.ingest(&batch(Some("c"), vec![own_trace(3)]), 3 * SEC);
    // A fourth session evicts the least recently updated (the trace-id one).
    let fourth = batch(Some("d"), vec![own_trace(4)]);
    let got = st.ingest(&fourth, 4 * SEC);
    assert_eq!(
        got.evicted,
        1,
        "{:?}",
        st.summaries(|_| true)
            .iter()
            .map(|s| s.session_id.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(st.len(), 3);
    assert!(st.get(&hex::encode([7u8; 16])).is_none());
    let order: Vec<String> = st
        .summaries(|_| true)
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(order, ["d", "c", "from-span"]);
    // Idle past retention: gone.
    assert_eq!(st.expire(63 * SEC + 1), 2);
    assert_eq!(st.summaries(|_| true).len(), 1);
}

#[test]
fn genai_events_join_their_traces_session() {
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::logs::v1::ScopeLogs;
    let mut st = Store::new(limits());
    // The trace's root names session s-1.
    st.ingest(
        &batch(
            None,
            vec![span(1, 0, vec![string_attribute("session.id", "s-1")])],
        ),
        SEC,
    );
    let event = |name: &str, by_field: bool, trace: u8, body: &str| LogRecord {
        trace_id: if trace == 0 { vec![] } else { vec![trace; 16] },
        span_id: vec![1; 8],
        time_unix_nano: 5 * SEC,
        event_name: if by_field { name.into() } else { String::new() },
        attributes: if by_field {
            vec![]
        } else {
            vec![string_attribute("event.name", name)]
        },
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body.into())),
        }),
        ..Default::default()
    };
    let logs = vec![ResourceLogs {
        scope_logs: vec![ScopeLogs {
            log_records: vec![
                event("gen_ai.user.message", true, 7, "where to?"),
                event("gen_ai.choice", false, 7, &"x".repeat(10 * MAX_BODY_BYTES)),
                // Not a GenAI event: not a session's.
                event("app.started", true, 7, "hi"),
                // A GenAI event with neither trace nor session: nowhere to go.
                event("gen_ai.choice", true, 0, "lost"),
                // Past max_events_per_session (2): counted, not kept.
                event("gen_ai.choice", true, 7, "third"),
                // Another trace: keyed by its trace id.
                event("gen_ai.choice", true, 3, "other"),
            ],
            ..Default::default()
        }],
        ..Default::default()
    }];
    let got = st.ingest_events(&logs, 2 * SEC);
    assert_eq!((got.ignored, got.not_kept), (2, 1));
    assert_eq!(got.by_session.len(), 2);
    assert_eq!(got.by_session[0].0, "s-1");
    assert_eq!(got.by_session[0].1.len(), 3, "every new event is reported");
    let s = st.get("s-1").unwrap();
    assert_eq!(s.summary.events, 3);
    assert_eq!(s.events.len(), 2);
    assert_eq!(s.events[0].name, "gen_ai.user.message");
    assert_eq!(s.events[0].body, "where to?");
    assert_eq!(s.events[0].span_id, hex::encode([1u8; 8]));
    assert_eq!(s.events[1].name, "gen_ai.choice");
    assert_eq!(s.events[1].body.len(), MAX_BODY_BYTES);
    assert_eq!(st.get(&hex::encode([3u8; 16])).unwrap().events.len(), 1);
    assert_eq!(counted(&st), st.bytes());
    // A structured body reads as JSON.
    let kv = |k: &str, v: any_value::Value| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    };
    let mut msg = event("gen_ai.choice", true, 3, "");
    msg.body = Some(AnyValue {
        value: Some(any_value::Value::KvlistValue(
            opentelemetry_proto::tonic::common::v1::KeyValueList {
                values: vec![
                    kv("index", any_value::Value::IntValue(0)),
                    kv(
                        "content",
                        any_value::Value::StringValue("hi \"there\"".into()),
                    ),
                ],
            },
        )),
    });
    let json = ResourceLogs {
        scope_logs: vec![ScopeLogs {
            log_records: vec![msg],
            ..Default::default()
        }],
        ..Default::default()
    };
    st.ingest_events(&[json], 3 * SEC);
    let other = st.get(&hex::encode([3u8; 16])).unwrap();
    assert_eq!(
        other.events[1].body,
        r#"{"index":0,"content":"hi \"there\""}"#
    );
}

#[test]
fn the_store_stays_under_max_bytes_whatever_arrives() {
    let mut l = limits();
    l.max_sessions = 10_000;
    l.max_spans_per_session = 10_000;
    l.max_bytes = 256 << 10;
    let mut st = Store::new(l);
    let mut evicted = 0;
    for i in 0..2_000u32 {
        let mut s = span(
            1,
            0,
            vec![
                string_attribute("session.id", format!("s-{}", i % 50)),
                string_attribute("big", "y".repeat(900)),
            ],
        );
        s.span_id = i.to_be_bytes().repeat(2);
        evicted += st.ingest(&batch(None, vec![s]), SEC).evicted;
        assert!(st.bytes() <= 256 << 10, "{} bytes", st.bytes());
    }
    assert!(evicted > 0, "sessions were evicted to stay under the bound");
    // The estimate holds what is kept: every session's records counted.
    assert_eq!(counted(&st), st.bytes());
}

/// The bytes of what the store holds, counted afresh.
fn counted(st: &Store) -> usize {
    st.summaries(|_| true)
        .iter()
        .map(|s| {
            let held = st.get(&s.session_id).unwrap();
            SESSION_BYTES
                + held.spans.bytes()
                + held.events.iter().map(|r| r.bytes()).sum::<usize>()
        })
        .sum()
}

#[test]
fn span_logs_round_trip_across_chunks_and_reuse_them() {
    let mut pool = ChunkPool::new(1 << 20);
    let mut scratch = Vec::new();
    let mut log = SpanLog::default();
    let mut want = Vec::new();
    for i in 0..300u32 {
        let mut sp = span(
            (i % 250) as u8 + 1,
            1,
            vec![string_attribute("v", "x".repeat(i as usize * 37 % 1000))],
        );
        sp.name = format!("span {i}");
        sp.status = (i % 7 == 0).then(|| Status {
            code: StatusCode::Error as i32,
            message: format!("failed {i}"),
        });
        want.push(sp);
    }
    // Bigger than a chunk: it runs on over two more.
    let attrs = (0..64)
        .map(|i| string_attribute(&format!("k{i}"), "é".repeat(500)))
        .collect();
    want.insert(150, span(9, 0, attrs));
    for sp in &want {
        log.push(sp, &mut pool, &mut scratch);
    }
    assert_eq!(log.len(), want.len());
    assert!(log.bytes() > 10 * CHUNK_BYTES, "{} bytes", log.bytes());
    assert!(log.frames().all(|f| f.len() <= MAX_SPAN_BYTES));
    let got: Vec<Span> = log.spans().collect();
    assert_eq!(got, want, "every span comes back whole, in order");
    // A log's chunks go back to the pool, and the next log takes them.
    let n = log.chunks.len();
    pool.give(std::mem::take(&mut log.chunks));
    assert_eq!(pool.bytes(), n * CHUNK_BYTES);
    let mut again = SpanLog::default();
    again.push(&want[0], &mut pool, &mut scratch);
    assert_eq!(pool.bytes(), (n - 1) * CHUNK_BYTES);
    assert_eq!(again.spans().collect::<Vec<_>>(), vec![want[0].clone()]);
    // The pool keeps no more than it was given room for.
    let mut small = ChunkPool::new(2 * CHUNK_BYTES);
    small.give(vec![vec![0u8; CHUNK_BYTES].into_boxed_slice(); 5]);
    assert_eq!(small.bytes(), 2 * CHUNK_BYTES);
}

#[test]
fn values_are_cut_to_the_bound() {
    let mut st = Store::new(limits());
    let big = "é".repeat(1_000_000);
    let mut attrs: Vec<KeyValue> = (0..200)
        .map(|i| string_attribute(&format!("k{i}"), big.clone()))
        .collect();
    attrs.push(string_attribute("session.id", "big"));
    let mut s = span(1, 0, attrs);
    s.name = big.clone();
    st.ingest(&batch(None, vec![s]), SEC);
    // session.id is past the first 64 attributes: keyed by it, not kept as a record attribute.
    let rec = &records(&st, st.get("big").unwrap())[0];
    assert!(rec.name.len() <= MAX_VALUE_BYTES);
    let attrs = rec.attribute_pairs();
    assert_eq!(attrs.len(), MAX_ATTRIBUTES);
    assert!(attrs.iter().all(|(_, v)| v.len() <= MAX_VALUE_BYTES));
    assert!(rec.bytes() <= MAX_RECORD_BYTES);
    // Hostile text: quotes, backslashes and control characters stay
    // valid JSON and come back as they were.
    let nasty = "\"}<script>\\\u{0}\n".repeat(300);
    let mut s = span(2, 0, vec![string_attribute(&nasty, nasty.clone())]);
    s.name = nasty.clone();
    s.trace_id = vec![3; 16];
    st.ingest(&batch(Some("nasty"), vec![s]), SEC);
    let rec = &records(&st, st.get("nasty").unwrap())[0];
    assert!(rec.bytes() <= MAX_RECORD_BYTES);
    let j = rec.to_json();
    assert_eq!(j["name"].as_str().unwrap(), rec.name);
    let (k, v) = &rec.attribute_pairs()[0];
    assert!(nasty.starts_with(k.as_str()) && nasty.starts_with(v.as_str()));
    assert!(k.len() > MAX_VALUE_BYTES - 10 && k.len() <= MAX_VALUE_BYTES);
}
