//! The model's rules on the span shapes real frameworks send. The shape of
//! Strands with ADOT and botocore below is the one a real Strands agent
//! sent in `tests/agent_frameworks.rs`, attributes cut to what the model
//! reads.

use std::collections::BTreeMap;

use super::span::{read, Keys, Origin, SpanHead};
use super::*;
use crate::convert::otlp_view::Value;

type Attrs<'a> = &'a [(&'a str, Value<'a>)];

fn sp(
    id: u64,
    parent: u64,
    name: &str,
    kind: i32,
    status: i32,
    msg: &str,
    attrs: Attrs<'_>,
) -> SpanFacts {
    let (sid, pid) = (id.to_be_bytes(), parent.to_be_bytes());
    let head = SpanHead {
        span_id: &sid,
        parent_span_id: if parent == 0 { &[] } else { &pid },
        name,
        kind,
        start_ns: 1_000 + id * 10,
        end_ns: 2_000 + id * 10,
        status_code: status,
        status_message: msg,
    };
    let origin = Origin {
        service: Some("travel-svc".into()),
        session: None,
    };
    read(
        &head,
        attrs.iter().copied(),
        &origin,
        &Keys::sessions(default_session_keys()),
    )
}

const MODEL: &str = "us.anthropic.claude-3-5-haiku-20241022-v1:0";

fn strands_chat(id: u64, parent: u64, usage: Option<(i64, i64)>, err: Option<&str>) -> SpanFacts {
    let mut a = vec![
        ("session.id", Value::Str("s1")),
        ("gen_ai.operation.name", Value::Str("chat")),
        ("gen_ai.system", Value::Str("strands-agents")),
        ("gen_ai.request.model", Value::Str(MODEL)),
    ];
    if let Some((i, o)) = usage {
        a.push(("gen_ai.usage.prompt_tokens", Value::Int(i)));
        a.push(("gen_ai.usage.input_tokens", Value::Int(i)));
        a.push(("gen_ai.usage.completion_tokens", Value::Int(o)));
        a.push(("gen_ai.usage.output_tokens", Value::Int(o)));
        a.push(("gen_ai.usage.total_tokens", Value::Int(i + o)));
    }
    sp(
        id,
        parent,
        "chat",
        1,
        if err.is_some() { 2 } else { 1 },
        err.unwrap_or(""),
        &a,
    )
}

fn botocore_chat(
    id: u64,
    parent: u64,
    usage: Option<(i64, i64)>,
    error_type: Option<&str>,
) -> SpanFacts {
    let mut a = vec![
        ("rpc.system", Value::Str("aws-api")),
        ("gen_ai.system", Value::Str("aws.bedrock")),
        ("gen_ai.request.model", Value::Str(MODEL)),
        ("gen_ai.operation.name", Value::Str("chat")),
        ("session.id", Value::Str("s1")),
        ("retry_attempts", Value::Int(0)),
    ];
    if let Some((i, o)) = usage {
        a.push(("http.status_code", Value::Int(200)));
        a.push(("gen_ai.usage.input_tokens", Value::Int(i)));
        a.push(("gen_ai.usage.output_tokens", Value::Int(o)));
    }
    if let Some(t) = error_type {
        a.push((
            "http.status_code",
            Value::Int(if t == "ThrottlingException" { 429 } else { 400 }),
        ));
        a.push(("error.type", Value::Str(t)));
    }
    let name = format!("chat {MODEL}");
    sp(
        id,
        parent,
        &name,
        3,
        if error_type.is_some() { 2 } else { 0 },
        error_type.unwrap_or(""),
        &a,
    )
}

fn op(id: u64, parent: u64, operation: &str, status: i32, extra: Attrs<'_>) -> SpanFacts {
    let mut a = vec![
        ("session.id", Value::Str("s1")),
        ("gen_ai.operation.name", Value::Str(operation)),
        ("gen_ai.system", Value::Str("strands-agents")),
    ];
    a.extend_from_slice(extra);
    sp(
        id,
        parent,
        operation,
        1,
        status,
        if status == 2 { "failed" } else { "" },
        &a,
    )
}

/// One invocation of the shape a real Strands agent sent: a throttled
/// attempt retried by Strands, a tool call, a second cycle; the agent span
/// carries lifetime totals (here larger than this invocation's).
fn strands_invocation() -> Vec<SpanFacts> {
    let agent = op(
        1,
        0,
        "invoke_agent",
        1,
        &[
            ("gen_ai.agent.name", Value::Str("travel")),
            ("gen_ai.usage.input_tokens", Value::Int(702)),
            ("gen_ai.usage.output_tokens", Value::Int(145)),
            ("gen_ai.usage.cache_read_input_tokens", Value::Int(0)),
        ],
    );
    vec![
        botocore_chat(11, 10, None, Some("ThrottlingException")),
        strands_chat(
            10,
            2,
            None,
            Some(
                "An error occurred (ThrottlingException) when calling the ConverseStream operation",
            ),
        ),
        botocore_chat(13, 12, Some((64, 31)), None),
        strands_chat(12, 2, Some((64, 31)), None),
        op(
            14,
            2,
            "execute_tool",
            1,
            &[("gen_ai.tool.name", Value::Str("lookup_weather"))],
        ),
        op(2, 1, "execute_event_loop_cycle", 1, &[]),
        botocore_chat(21, 20, Some((119, 17)), None),
        strands_chat(20, 3, Some((119, 17)), None),
        op(3, 1, "execute_event_loop_cycle", 1, &[]),
        agent,
    ]
}

fn pricing() -> Pricing {
    Pricing::new(BTreeMap::new())
}

#[test]
fn strands_with_botocore_counts_each_call_once_from_the_client_span() {
    let n = evaluate(&strands_invocation(), &pricing());
    let t = n.tokens();
    assert_eq!((t.input, t.output), (64 + 119, 31 + 17));
    assert_eq!(n.usage.len(), 2);
    assert!(n.usage.iter().all(|u| u.source == UsageSource::Inference));
    assert_eq!(
        n.usage.iter().map(|u| u.span_id).collect::<Vec<_>>(),
        vec![13, 21],
        "the botocore spans are the ones counted"
    );
    // Three model requests: the throttled one, and two that answered.
    assert_eq!(n.calls.len(), 3);
    assert_eq!(n.requests(), 3);
    assert_eq!(n.retries(), (1, 1));
    let throttled = n.calls.iter().find(|c| c.span_id == 11).unwrap();
    assert_eq!(throttled.outcome, Outcome::Retried { throttled: true });
    // Attributed to the agent and session of the trace, though botocore
    // spans name no agent.
    for c in &n.calls {
        assert_eq!(c.at.agent.as_deref(), Some("travel"));
        assert_eq!(c.at.session.as_deref(), Some("s1"));
        assert_eq!(c.at.model.as_deref(), Some(MODEL));
    }
    assert!(n.failures.is_empty(), "{:?}", n.failures);
    assert_eq!(n.invocations.len(), 1);
    assert!(!n.invocations[0].failed);
    assert_eq!(n.tools.len(), 1);
    // Priced from the built-in table (Claude 3.5 Haiku, profile prefix).
    let want = (183.0 * 0.0008 + 48.0 * 0.004) / 1000.0;
    assert!((n.cost() - want).abs() < 1e-12, "{} != {want}", n.cost());
}

#[test]
fn any_order_gives_the_same_numbers() {
    let spans = strands_invocation();
    let a = evaluate(&spans, &pricing());
    let mut rev = spans.clone();
    rev.reverse();
    let b = evaluate(&rev, &pricing());
    assert_eq!(a.tokens(), b.tokens());
    assert_eq!(a.requests(), b.requests());
    assert_eq!(a.retries(), b.retries());
    assert_eq!(a.failures.len(), b.failures.len());
    // Through the tracker, in reverse and split over offers with time
    // between them: one settlement with the same numbers.
    let mut t = Tracker::new(TrackerLimits::default(), pricing());
    let id = trace_id(&[7; 16]);
    let mut out = Vec::new();
    for (k, s) in rev.into_iter().enumerate() {
        t.offer(id, s, k as u64 * 100, &mut out);
    }
    t.settle_due(2_000, &mut out);
    assert!(out.is_empty(), "not idle yet");
    t.settle_due(6_000, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].numbers.tokens(), a.tokens());
    assert_eq!(out[0].previous, None);
}

#[test]
fn strands_alone_counts_its_chat_spans_and_never_the_lifetime_totals() {
    let spans: Vec<SpanFacts> = strands_invocation()
        .into_iter()
        .filter(|s| s.kind != 3)
        .collect();
    let n = evaluate(&spans, &pricing());
    assert_eq!((n.tokens().input, n.tokens().output), (183, 48));
    assert_eq!(n.calls.len(), 3);
    assert_eq!(n.retries(), (1, 1));
}

#[test]
fn a_rollup_counts_only_when_nothing_beneath_it_reports_usage() {
    // aws/spans as AgentCore documents them with only invoke_agent.
    let spans = vec![op(
        1,
        0,
        "invoke_agent",
        0,
        &[
            ("gen_ai.agent.name", Value::Str("a")),
            ("gen_ai.usage.input_tokens", Value::Int(500)),
            ("gen_ai.usage.output_tokens", Value::Int(50)),
        ],
    )];
    let n = evaluate(&spans, &pricing());
    assert_eq!(n.tokens().total(), 550);
    assert_eq!(n.usage[0].source, UsageSource::Rollup);
    assert!(n.calls.is_empty());
}

#[test]
fn an_invalid_model_is_one_failed_invocation_caused_by_the_client_span() {
    let spans = vec![
        botocore_chat(11, 10, None, Some("ValidationException")),
        strands_chat(10, 2, None, Some("An error occurred (ValidationException)")),
        op(2, 1, "execute_event_loop_cycle", 2, &[]),
        op(
            1,
            0,
            "invoke_agent",
            2,
            &[("gen_ai.agent.name", Value::Str("travel"))],
        ),
    ];
    let n = evaluate(&spans, &pricing());
    assert_eq!(n.failures.len(), 1, "{:?}", n.failures);
    let f = &n.failures[0];
    assert_eq!(f.kind, FailureKind::Invocation);
    assert_eq!(f.span_id, 1);
    assert_eq!(f.cause_span_id, 11);
    assert_eq!(f.error.as_deref(), Some("ValidationException"));
    assert_eq!(n.calls.len(), 1);
    assert_eq!(n.calls[0].outcome, Outcome::Failed);
    assert_eq!(n.retries(), (0, 0));
}

#[test]
fn a_failed_tool_is_one_failure_and_the_invocation_stays_ok() {
    let mut spans = strands_invocation();
    spans.push(op(
        15,
        3,
        "execute_tool",
        2,
        &[("gen_ai.tool.name", Value::Str("flaky"))],
    ));
    let n = evaluate(&spans, &pricing());
    assert_eq!(n.failures.len(), 1);
    assert_eq!(n.failures[0].kind, FailureKind::Tool);
    assert!(!n.invocations[0].failed);
}

#[test]
fn dialects_openinference_openllmetry_and_semconv_cache() {
    let oi = vec![
        sp(
            1,
            0,
            "Agent",
            1,
            0,
            "",
            &[
                ("openinference.span.kind", Value::Str("AGENT")),
                ("llm.token_count.prompt", Value::Int(300)),
            ],
        ),
        sp(
            2,
            1,
            "ChatBedrock",
            1,
            0,
            "",
            &[
                ("openinference.span.kind", Value::Str("LLM")),
                (
                    "llm.model_name",
                    Value::Str("anthropic.claude-3-haiku-20240307-v1:0"),
                ),
                ("llm.token_count.prompt", Value::Int(100)),
                ("llm.token_count.completion", Value::Int(20)),
                ("llm.token_count.prompt_details.cache_read", Value::Int(40)),
            ],
        ),
    ];
    let n = evaluate(&oi, &pricing());
    assert_eq!(
        n.tokens(),
        Tokens {
            input: 100,
            output: 20,
            cache_read: 40,
            cache_write: 0
        }
    );
    assert_eq!(n.calls.len(), 1);
    let tl = vec![
        sp(
            1,
            0,
            "wf.workflow",
            1,
            0,
            "",
            &[("traceloop.span.kind", Value::Str("workflow"))],
        ),
        sp(
            2,
            1,
            "bedrock.completion",
            3,
            0,
            "",
            &[
                ("llm.request.type", Value::Str("chat")),
                ("gen_ai.system", Value::Str("AWS")),
                ("gen_ai.request.model", Value::Str("amazon.nova-lite-v1:0")),
                ("gen_ai.usage.prompt_tokens", Value::Int(10)),
                ("gen_ai.usage.completion_tokens", Value::Int(5)),
            ],
        ),
    ];
    let n = evaluate(&tl, &pricing());
    assert_eq!(n.tokens().total(), 15);
    assert_eq!(n.calls[0].operation.as_ref(), "chat");
    // A leaf without cache counts takes them from the framework span above.
    let semconv = vec![
        sp(
            1,
            0,
            "chat",
            1,
            0,
            "",
            &[
                ("gen_ai.operation.name", Value::Str("chat")),
                ("gen_ai.usage.input_tokens", Value::Int(10)),
                ("gen_ai.usage.cache_read.input_tokens", Value::Int(7)),
            ],
        ),
        sp(
            2,
            1,
            "chat m",
            3,
            0,
            "",
            &[
                ("gen_ai.operation.name", Value::Str("chat")),
                ("gen_ai.usage.input_tokens", Value::Int(3)),
                ("gen_ai.usage.output_tokens", Value::Int(4)),
            ],
        ),
    ];
    let n = evaluate(&semconv, &pricing());
    assert_eq!(
        n.tokens(),
        Tokens {
            input: 3,
            output: 4,
            cache_read: 7,
            cache_write: 0
        }
    );
}

#[test]
fn hostile_usage_is_refused_and_counted() {
    let spans = vec![
        sp(
            1,
            0,
            "chat",
            3,
            0,
            "",
            &[
                ("gen_ai.operation.name", Value::Str("chat")),
                ("gen_ai.usage.input_tokens", Value::Str("100")),
            ],
        ),
        sp(
            2,
            0,
            "chat",
            3,
            0,
            "",
            &[
                ("gen_ai.operation.name", Value::Str("chat")),
                ("gen_ai.usage.input_tokens", Value::Int(-5)),
            ],
        ),
        sp(
            3,
            0,
            "chat",
            3,
            0,
            "",
            &[
                ("gen_ai.operation.name", Value::Str("chat")),
                ("gen_ai.usage.output_tokens", Value::Int(i64::MAX)),
            ],
        ),
        sp(
            4,
            0,
            "chat",
            3,
            0,
            "",
            &[
                ("gen_ai.operation.name", Value::Str("chat")),
                ("gen_ai.usage.output_tokens", Value::Double(1.5)),
            ],
        ),
        sp(
            5,
            0,
            "chat",
            3,
            0,
            "",
            &[
                ("gen_ai.operation.name", Value::Str("chat")),
                ("gen_ai.usage.output_tokens", Value::Int(9)),
            ],
        ),
    ];
    let n = evaluate(&spans, &pricing());
    assert_eq!(n.invalid_usage, 4);
    assert_eq!(n.tokens().total(), 9);
    assert_eq!(n.calls.len(), 5);
}

#[test]
fn parent_cycles_are_cut_and_counted() {
    // 1 -> 2 -> 3 -> 1, and 4 under 3.
    let spans = vec![
        op(
            1,
            3,
            "invoke_agent",
            0,
            &[("gen_ai.agent.name", Value::Str("a"))],
        ),
        op(2, 1, "execute_event_loop_cycle", 0, &[]),
        strands_chat(3, 2, Some((5, 5)), None),
        botocore_chat(4, 3, Some((5, 5)), None),
        sp(5, 5, "self", 1, 0, "", &[]),
    ];
    let n = evaluate(&spans, &pricing());
    assert_eq!(
        n.cycles, 1,
        "one cycle of three spans (a span naming itself is no parent)"
    );
    assert_eq!(n.tokens().total(), 10);
    assert_eq!(n.calls.len(), 1);
}

#[test]
fn a_late_span_reopens_its_trace_and_the_difference_is_zero_for_a_swap() {
    let mut t = Tracker::new(TrackerLimits::default(), pricing());
    let id = trace_id(&[1; 16]);
    let mut out = Vec::new();
    // The Strands span first, settled alone: it counts.
    t.offer(id, strands_chat(10, 0, Some((64, 31)), None), 0, &mut out);
    t.settle_due(10_000, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].numbers.usage[0].span_id, 10);
    // The botocore span under it arrives late: swapped, same tokens.
    out.clear();
    t.offer(
        id,
        botocore_chat(11, 10, Some((64, 31)), None),
        11_000,
        &mut out,
    );
    t.settle_due(20_000, &mut out);
    assert_eq!(out.len(), 1);
    let s = &out[0];
    assert_eq!(s.numbers.usage[0].span_id, 11);
    assert_eq!(
        s.previous.as_ref().map(|p| p.tokens()),
        Some(s.numbers.tokens())
    );
    assert_eq!(t.stats().late_spans, 1);
    assert_eq!(t.stats().reopened, 1);
}

#[test]
fn bounds_hold_for_a_million_traces_and_a_trace_that_never_ends() {
    let limits = TrackerLimits {
        max_traces: 1_000,
        max_bytes: 4 << 20,
        remember: 1_000,
        max_spans_per_trace: 500,
        ..TrackerLimits::default()
    };
    let mut t = Tracker::new(limits.clone(), pricing());
    let mut out = Vec::new();
    let mut tokens = 0u64;
    for i in 0u64..1_000_000 {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&i.to_be_bytes());
        t.offer(
            id,
            botocore_chat(1, 0, Some((1, 1)), None),
            i / 1000,
            &mut out,
        );
        assert!(t.pending() <= limits.max_traces);
        assert!(t.bytes() <= limits.max_bytes, "{} bytes", t.bytes());
        if out.len() > 10_000 {
            tokens += out
                .drain(..)
                .map(|s| s.numbers.tokens().total())
                .sum::<u64>();
        }
    }
    t.drain(&mut out);
    tokens += out
        .drain(..)
        .map(|s| s.numbers.tokens().total())
        .sum::<u64>();
    assert_eq!(tokens, 2_000_000, "every trace counted once");
    assert!(t.stats().early > 0);
    // One trace that never stops: segments, each counted once.
    let id = trace_id(&[9; 16]);
    let mut total = 0u64;
    for i in 1u64..=2_000 {
        t.offer(
            id,
            botocore_chat(i, 0, Some((1, 0)), None),
            2_000_000 + i,
            &mut out,
        );
        t.settle_due(2_000_000 + i, &mut out);
        assert!(t.bytes() <= limits.max_bytes);
    }
    t.drain(&mut out);
    for s in out.drain(..) {
        let before = s.previous.map_or(0, |p| p.tokens().total());
        total += s.numbers.tokens().total() - before;
    }
    assert_eq!(total, 2_000);
    assert!(t.stats().segments >= 3);
}

#[test]
fn a_framework_span_beside_the_client_span_it_wraps_is_the_same_call() {
    // LangChain's LLM span and the Bedrock client's, siblings under the
    // application's span (OpenInference's LangChain and Bedrock
    // instrumentations together), both with the call's usage.
    let llm = |id: u64, name: &str, start: u64, end: u64| {
        let mut f = sp(
            id,
            1,
            name,
            1,
            0,
            "",
            &[
                ("openinference.span.kind", Value::Str("LLM")),
                ("llm.model_name", Value::Str(MODEL)),
                ("llm.token_count.prompt", Value::Int(57)),
                ("llm.token_count.completion", Value::Int(14)),
            ],
        );
        f.start_ns = start;
        f.end_ns = end;
        f
    };
    let spans = vec![
        sp(
            1,
            0,
            "handle",
            1,
            0,
            "",
            &[("session.id", Value::Str("o1"))],
        ),
        llm(2, "ChatBedrockConverse", 100, 900),
        llm(3, "bedrock.converse", 200, 800),
        // A second call of the same size later: not wrapped by either.
        llm(4, "bedrock.converse", 1000, 1500),
    ];
    let n = evaluate(&spans, &pricing());
    assert_eq!(n.tokens().total(), 2 * 71);
    assert_eq!(n.calls.len(), 2);
    assert_eq!(
        n.usage.iter().map(|u| u.span_id).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert_eq!(n.usage[0].at.session.as_deref(), Some("o1"));
}

#[test]
fn three_instrumentations_of_one_streamed_call_are_one_call() {
    // As a Strands agent under opentelemetry-instrument with OpenInference's
    // and Traceloop's Bedrock instrumentations installed beside botocore's
    // sent it: Strands `chat` over Traceloop's CLIENT span and
    // OpenInference's LLM span, botocore's CLIENT span under the latter.
    let with_time = |mut f: SpanFacts, s: u64, e: u64| {
        f.start_ns = s;
        f.end_ns = e;
        f
    };
    let spans = vec![
        op(
            1,
            0,
            "invoke_agent",
            1,
            &[("gen_ai.agent.name", Value::Str("travel"))],
        ),
        op(2, 1, "execute_event_loop_cycle", 1, &[]),
        with_time(strands_chat(10, 2, Some((64, 31)), None), 100, 900),
        with_time(
            sp(
                11,
                10,
                "chat claude",
                3,
                0,
                "",
                &[
                    ("gen_ai.provider.name", Value::Str("aws.bedrock")),
                    ("gen_ai.operation.name", Value::Str("chat")),
                    (
                        "gen_ai.request.model",
                        Value::Str("claude-3-5-haiku-20241022-v1:0"),
                    ),
                    ("gen_ai.usage.input_tokens", Value::Int(64)),
                    ("gen_ai.usage.output_tokens", Value::Int(31)),
                ],
            ),
            110,
            850,
        ),
        with_time(
            sp(
                12,
                10,
                "bedrock.converse_stream",
                1,
                1,
                "",
                &[
                    ("openinference.span.kind", Value::Str("LLM")),
                    ("llm.token_count.prompt", Value::Int(64)),
                    ("llm.token_count.completion", Value::Int(31)),
                ],
            ),
            120,
            860,
        ),
        with_time(botocore_chat(13, 12, Some((64, 31)), None), 130, 300),
    ];
    let n = evaluate(&spans, &pricing());
    assert_eq!((n.tokens().input, n.tokens().output), (64, 31));
    assert_eq!(n.calls.len(), 1);
    assert_eq!(n.usage[0].span_id, 13, "botocore's report, the deepest");
    assert_eq!(n.usage[0].at.agent.as_deref(), Some("travel"));
}

#[test]
fn a_client_span_whose_parent_never_arrived_is_the_call_it_overlaps() {
    // An invalid model id with every instrumentation loaded: OpenInference's
    // span (botocore's parent) was never exported.
    let with_time = |mut f: SpanFacts, s: u64, e: u64| {
        f.start_ns = s;
        f.end_ns = e;
        f
    };
    let traceloop = sp(
        12,
        10,
        "chat invalid-model-id",
        3,
        2,
        "",
        &[
            ("gen_ai.provider.name", Value::Str("aws.bedrock")),
            ("gen_ai.operation.name", Value::Str("chat")),
            ("gen_ai.request.model", Value::Str("invalid-model-id")),
            ("error.type", Value::Str("ValidationException")),
        ],
    );
    let mut strands = strands_chat(10, 2, None, Some("An error occurred (ValidationException)"));
    strands.model = Some("invalid-model-id".into());
    let mut boto = botocore_chat(14, 13, None, Some("ValidationException"));
    boto.model = Some("invalid-model-id".into());
    // Both instrumentations name the span `chat <model>`.
    boto.name = Some("chat invalid-model-id".into());
    let spans = vec![
        with_time(boto, 120, 300),
        with_time(traceloop, 110, 350),
        with_time(strands, 100, 400),
        with_time(op(2, 1, "execute_event_loop_cycle", 2, &[]), 90, 450),
        with_time(
            op(
                1,
                0,
                "invoke_agent",
                2,
                &[("gen_ai.agent.name", Value::Str("support"))],
            ),
            80,
            500,
        ),
    ];
    let n = evaluate(&spans, &pricing());
    assert_eq!(n.calls.len(), 1, "{:?}", n.calls);
    assert_eq!(n.failures.len(), 1, "{:?}", n.failures);
    assert_eq!(n.failures[0].kind, FailureKind::Invocation);
}

#[test]
fn concurrent_calls_without_usage_or_model_stay_apart() {
    // 29 overlapping calls under one invocation, each its own span name,
    // no usage, no model: nothing says two are one call.
    let mut spans = vec![op(
        1,
        0,
        "invoke_agent",
        0,
        &[("gen_ai.agent.name", Value::Str("a"))],
    )];
    for i in 0..29u64 {
        let mut f = sp(
            10 + i,
            1,
            &format!("call-{i}"),
            1,
            0,
            "",
            &[("gen_ai.operation.name", Value::Str("chat"))],
        );
        f.start_ns = 1_000 + i;
        f.end_ns = 1_500 + i;
        spans.push(f);
    }
    let n = evaluate(&spans, &pricing());
    assert_eq!(n.calls.len(), 29);
}
