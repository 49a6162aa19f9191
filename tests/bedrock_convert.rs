//! The Bedrock converter on every real recorded stream in
//! `tests/fixtures/bedrock/` (copied from the shared fixtures): tree shape,
//! times equal to the metadata, token sums, error status, stable ids, and no
//! panic on arbitrary input.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};

use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use spanwire::convert::bedrock::{self, CaptureContent, Options, TraceParent};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bedrock");

fn fixture(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(format!("{DIR}/{name}")).unwrap();
    bedrock::parse_events(&text).unwrap()
}

fn all_fixtures() -> Vec<(String, Vec<Value>)> {
    let mut v: Vec<_> = std::fs::read_dir(DIR)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".json"))
        .map(|n| {
            let ev = fixture(&n);
            (n, ev)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn spans(events: &[Value], opts: &Options) -> Vec<Span> {
    let c = bedrock::convert(events, opts);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    c.resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect()
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a any_value::Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn attr_str<'a>(s: &'a Span, key: &str) -> Option<&'a str> {
    match attr(s, key) {
        Some(any_value::Value::StringValue(v)) => Some(v),
        _ => None,
    }
}

fn attr_int(s: &Span, key: &str) -> Option<i64> {
    match attr(s, key) {
        Some(any_value::Value::IntValue(v)) => Some(*v),
        _ => None,
    }
}

fn nanos(v: &Value) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(v.as_str()?).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos() as u64)
}

/// Every `metadata` object with a start and end time in the fixture.
fn metadata_intervals(v: &Value, out: &mut Vec<(u64, u64, bool)>) {
    match v {
        Value::Object(o) => {
            if let Some(md) = o.get("metadata").and_then(Value::as_object) {
                if let (Some(s), Some(e)) = (
                    md.get("startTime").and_then(nanos),
                    md.get("endTime").and_then(nanos),
                ) {
                    out.push((s, e, md.contains_key("operationTotalTimeMs")));
                }
            }
            o.values().for_each(|x| metadata_intervals(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| metadata_intervals(x, out)),
        _ => {}
    }
}

fn usage_sums(v: &Value, input: &mut i64, output: &mut i64) {
    match v {
        Value::Object(o) => {
            if let Some(u) = o.get("usage").and_then(Value::as_object) {
                *input += u.get("inputTokens").and_then(Value::as_i64).unwrap_or(0);
                *output += u.get("outputTokens").and_then(Value::as_i64).unwrap_or(0);
            }
            o.values().for_each(|x| usage_sums(x, input, output));
        }
        Value::Array(a) => a.iter().for_each(|x| usage_sums(x, input, output)),
        _ => {}
    }
}

fn by_id(spans: &[Span]) -> HashMap<Vec<u8>, &Span> {
    spans.iter().map(|s| (s.span_id.clone(), s)).collect()
}

fn count_by_op(spans: &[Span]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for s in spans {
        let op = attr_str(s, "gen_ai.operation.name")
            .unwrap_or("step")
            .to_string();
        *m.entry(op).or_insert(0) += 1;
    }
    m
}

#[test]
fn every_fixture_converts_with_exact_times_tokens_and_covering_parents() {
    let fixtures = all_fixtures();
    assert_eq!(fixtures.len(), 13);
    for (name, events) in &fixtures {
        let spans = spans(events, &Options::default());
        assert!(!spans.is_empty(), "{name}");
        let ids = by_id(&spans);
        assert_eq!(ids.len(), spans.len(), "{name}: span ids are unique");
        let roots: Vec<&Span> = spans
            .iter()
            .filter(|s| s.parent_span_id.is_empty())
            .collect();
        assert_eq!(roots.len(), 1, "{name}: one root");
        assert_eq!(roots[0].kind, 3, "{name}: root is CLIENT");
        assert_eq!(
            attr_str(roots[0], "gen_ai.operation.name"),
            Some("invoke_agent")
        );
        for s in &spans {
            assert_eq!(s.trace_id, roots[0].trace_id, "{name}: one trace");
            assert!(
                s.end_time_unix_nano >= s.start_time_unix_nano,
                "{name}: {} ends before it starts",
                s.name
            );
            if !s.parent_span_id.is_empty() {
                let p = ids
                    .get(&s.parent_span_id)
                    .unwrap_or_else(|| panic!("{name}: orphan {}", s.name));
                assert!(
                    p.start_time_unix_nano <= s.start_time_unix_nano
                        && p.end_time_unix_nano >= s.end_time_unix_nano,
                    "{name}: {} does not cover {}",
                    p.name,
                    s.name
                );
            }
            for e in &s.events {
                assert!(
                    e.time_unix_nano >= s.start_time_unix_nano
                        && e.time_unix_nano <= s.end_time_unix_nano
                );
            }
        }
        // Times equal to the metadata: every interval in the source is a span's
        // interval; the final response's is the root's.
        let mut intervals = Vec::new();
        metadata_intervals(&Value::Array(events.clone()), &mut intervals);
        assert!(!intervals.is_empty(), "{name}");
        for (start, end, operation) in intervals {
            if operation {
                // finalResponse / failure: [startTime, endTime] of the operation, or a failure inside it.
                continue;
            }
            assert!(
                spans
                    .iter()
                    .any(|s| s.start_time_unix_nano == start && s.end_time_unix_nano == end),
                "{name}: no span spans the metadata interval {start}..{end}"
            );
        }
        // Token sums equal the source's.
        let (mut input, mut output) = (0, 0);
        usage_sums(&Value::Array(events.clone()), &mut input, &mut output);
        let span_in: i64 = spans
            .iter()
            .filter_map(|s| attr_int(s, "gen_ai.usage.input_tokens"))
            .sum();
        let span_out: i64 = spans
            .iter()
            .filter_map(|s| attr_int(s, "gen_ai.usage.output_tokens"))
            .sum();
        assert_eq!((span_in, span_out), (input, output), "{name}: token sums");
    }
}

#[test]
fn root_time_comes_from_the_final_response() {
    let events = fixture("oi-py_action-group-function-lambda.json");
    let spans = spans(&events, &Options::default());
    let root = spans.iter().find(|s| s.parent_span_id.is_empty()).unwrap();
    // finalResponse: startTime 09:50:19.244209213, endTime 09:50:25.600372955, operationTotalTimeMs 6356.
    let end = nanos(&Value::String("2025-05-21T09:50:25.600372955Z".into())).unwrap();
    assert_eq!(root.end_time_unix_nano, end);
    assert_eq!(
        root.end_time_unix_nano - root.start_time_unix_nano,
        6_356_000_000
    );
    let ops = count_by_op(&spans);
    assert_eq!(ops["chat"], 2);
    assert_eq!(ops["execute_tool"], 1);
    assert_eq!(ops["step"], 2);
    let tool = spans
        .iter()
        .find(|s| attr_str(s, "gen_ai.operation.name") == Some("execute_tool"))
        .unwrap();
    assert_eq!(
        tool.name,
        "execute_tool action_group_quick_start_6gq19/add_two_numbers"
    );
    assert_eq!(
        attr_str(tool, "gen_ai.tool.call.arguments"),
        Some(r#"{"n1":"10","n2":"20"}"#)
    );
    // The tool ran before its input event was emitted: its time is the output's metadata.
    let tool_end = nanos(&Value::String("2025-05-21T09:50:23.451272531Z".into())).unwrap();
    assert_eq!(tool.end_time_unix_nano, tool_end);
}

#[test]
fn three_level_collaborators_nest_with_names_from_the_caller() {
    let events = fixture("oi-py_multi-agent-3-level-supervisor.json");
    let spans = spans(&events, &Options::default());
    let ids = by_id(&spans);
    let agents: Vec<&Span> = spans
        .iter()
        .filter(|s| attr_str(s, "gen_ai.operation.name") == Some("invoke_agent"))
        .collect();
    assert_eq!(agents.len(), 3);
    let math = agents
        .iter()
        .find(|s| s.name == "invoke_agent MathSolverAgent")
        .expect("depth-3 name from the caller");
    let supervisor = agents
        .iter()
        .find(|s| s.name == "invoke_agent SimpleSupervisor")
        .unwrap();
    let root = spans.iter().find(|s| s.parent_span_id.is_empty()).unwrap();
    // MathSolverAgent -> step of SimpleSupervisor -> SimpleSupervisor -> step of root -> root.
    let step = ids[&math.parent_span_id];
    assert_eq!(step.parent_span_id, supervisor.span_id);
    let root_step = ids[&supervisor.parent_span_id];
    assert_eq!(root_step.parent_span_id, root.span_id);
    // The depth-3 agent's five model calls are under it.
    let under_math = spans
        .iter()
        .filter(|s| attr_str(s, "gen_ai.operation.name") == Some("chat"))
        .filter(|s| {
            ids.get(&s.parent_span_id)
                .is_some_and(|p| p.parent_span_id == math.span_id)
        })
        .count();
    assert_eq!(under_math, 5);
    assert_eq!(attr_str(math, "gen_ai.agent.id"), Some("ZRPPXH8SBU"));
    // The collaborator span starts before its own children.
    for s in spans.iter().filter(|s| s.parent_span_id == math.span_id) {
        assert!(math.start_time_unix_nano <= s.start_time_unix_nano);
    }
}

#[test]
fn routing_classifier_joins_its_collaborator_by_client_request_id() {
    let events = fixture("oi-py_routing-classifier-to-collaborator.json");
    let spans = spans(&events, &Options::default());
    let ids = by_id(&spans);
    let math = spans
        .iter()
        .find(|s| s.name == "invoke_agent MathAgent")
        .unwrap();
    assert_eq!(ids[&math.parent_span_id].name, "routing_classifier");
    assert_eq!(
        attr_str(math, "aws.bedrock.invocation_id"),
        Some("2663576e-2580-4275-acff-48653898c1ec")
    );
    assert!(spans.iter().any(|s| s
        .name
        .starts_with("execute_tool prime_numbers_action_group")));
}

#[test]
fn failures_and_guardrails_are_errors() {
    for (name, ty) in [
        ("oi-py-testfixture_failure-trace-throttling.json", "429"),
        ("pika_failure-trace-inline-agent-model-access.json", "400"),
        (
            "oi-py_guardrail-intervened-input.json",
            "guardrail_intervened",
        ),
    ] {
        let spans = spans(&fixture(name), &Options::default());
        let root = spans.iter().find(|s| s.parent_span_id.is_empty()).unwrap();
        assert_eq!(
            root.status.as_ref().map(|s| s.code),
            Some(2),
            "{name}: root ERROR"
        );
        assert!(
            spans.iter().any(|s| attr_str(s, "error.type") == Some(ty)
                && s.status.as_ref().map(|s| s.code) == Some(2)),
            "{name}: a span with error.type {ty}"
        );
    }
    // Streamed output checks are each their own span, and passing ones are not errors.
    let streamed = spans(
        &fixture("oi-py_guardrail-streaming-output-assessments.json"),
        &Options::default(),
    );
    let checks: Vec<_> = streamed
        .iter()
        .filter(|s| s.name == "guardrail output")
        .collect();
    assert_eq!(checks.len(), 5);
    assert!(streamed.iter().all(|s| s.status.is_none()));
    // A code-interpreter error marks the tool span, not the recovered invocation.
    let code = spans(&fixture("oi-js_code-interpreter.json"), &Options::default());
    let failed: Vec<_> = code.iter().filter(|s| s.status.is_some()).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        attr_str(failed[0], "error.type"),
        Some("code_execution_error")
    );
}

#[test]
fn ids_are_stable_and_traceparent_is_joined() {
    for (name, events) in all_fixtures() {
        let a = spans(&events, &Options::default());
        let b = spans(&events, &Options::default());
        let ids = |v: &[Span]| {
            v.iter()
                .map(|s| (s.trace_id.clone(), s.span_id.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&a), ids(&b), "{name}");
    }
    let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let opts = Options {
        traceparent: Some(tp),
        ..Default::default()
    };
    let spans = spans(&fixture("oi-py_inline-agent.json"), &opts);
    assert!(spans.iter().all(|s| s.trace_id == tp.trace_id));
    let root = spans
        .iter()
        .find(|s| s.parent_span_id == tp.span_id)
        .unwrap();
    assert_eq!(
        attr(root, "aws.bedrock.inline_agent"),
        Some(&any_value::Value::BoolValue(true))
    );
}

#[test]
fn content_capture_modes() {
    let events = fixture("oi-py_knowledge-base-lookup.json");
    let prompts = |opts: &Options| -> Vec<usize> {
        spans(&events, opts)
            .iter()
            .flat_map(|s| &s.events)
            .filter(|e| e.name == "gen_ai.content.prompt")
            .map(|e| {
                match e
                    .attributes
                    .first()
                    .and_then(|kv| kv.value.as_ref())
                    .and_then(|v| v.value.as_ref())
                {
                    Some(any_value::Value::StringValue(t)) => t.len(),
                    _ => 0,
                }
            })
            .collect()
    };
    let full = prompts(&Options {
        capture_content: CaptureContent::Full,
        ..Default::default()
    });
    let cut = prompts(&Options::default());
    let none = prompts(&Options {
        capture_content: CaptureContent::None,
        ..Default::default()
    });
    assert!(full.iter().any(|&n| n > 4096), "{full:?}");
    assert!(cut.iter().all(|&n| n <= 4096) && cut.iter().any(|&n| n > 0));
    assert!(none.iter().all(|&n| n == 0));
}

#[test]
fn interleaved_invocations_convert_as_if_separate() {
    let a = fixture("oi-py_action-group-function-lambda.json");
    let b = fixture("oi-py_pre-processing.json");
    let mut mixed = Vec::new();
    for i in 0..a.len().max(b.len()) {
        mixed.extend(a.get(i).cloned());
        mixed.extend(b.get(i).cloned());
    }
    let together = spans(&mixed, &Options::default());
    let apart: Vec<Span> = [
        spans(&a, &Options::default()),
        spans(&b, &Options::default()),
    ]
    .concat();
    let key = |s: &Span| {
        (
            s.span_id.clone(),
            s.start_time_unix_nano,
            s.end_time_unix_nano,
            s.name.clone(),
        )
    };
    let t: HashSet<_> = together.iter().map(key).collect();
    let p: HashSet<_> = apart.iter().map(key).collect();
    assert_eq!(t, p);
}

/// Random edits of real events (keys dropped, values replaced by other JSON
/// types, events shuffled) and random JSON never panic, and unreadable events
/// are reported rather than failing the rest.
#[test]
fn arbitrary_input_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let base: Vec<Value> = all_fixtures().into_iter().flat_map(|(_, e)| e).collect();
    fn random_value(rng: &mut rand::rngs::StdRng, depth: u32) -> Value {
        match rng.random_range(0..if depth > 3 { 4 } else { 7 }) {
            0 => Value::Null,
            1 => Value::Bool(rng.random()),
            2 => Value::from(rng.random_range(-1_000_000i64..1_000_000)),
            3 => Value::String(
                [
                    "",
                    "x",
                    "2025-05-21T09:49:01Z",
                    "abc-0",
                    "NONE",
                    "INTERVENED",
                ][rng.random_range(0..6)]
                .into(),
            ),
            4 => Value::Array(
                (0..rng.random_range(0..3))
                    .map(|_| random_value(rng, depth + 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.random_range(0..4))
                    .map(|_| {
                        let k = [
                            "trace",
                            "traceId",
                            "metadata",
                            "startTime",
                            "observation",
                            "usage",
                            "callerChain",
                        ][rng.random_range(0..7)];
                        (k.to_string(), random_value(rng, depth + 1))
                    })
                    .collect(),
            ),
        }
    }
    fn mutate(v: &mut Value, rng: &mut rand::rngs::StdRng) {
        match v {
            Value::Object(o) => {
                let keys: Vec<String> = o.keys().cloned().collect();
                for k in keys {
                    match rng.random_range(0..12) {
                        0 => {
                            o.remove(&k);
                        }
                        1 => {
                            o.insert(k, random_value(rng, 2));
                        }
                        _ => {
                            if let Some(x) = o.get_mut(&k) {
                                mutate(x, rng)
                            }
                        }
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| mutate(x, rng)),
            _ => {}
        }
    }
    for round in 0..400 {
        let mut events: Vec<Value> = (0..rng.random_range(1..20))
            .map(|_| base[rng.random_range(0..base.len())].clone())
            .collect();
        events.iter_mut().for_each(|e| mutate(e, &mut rng));
        if round % 4 == 0 {
            events.push(random_value(&mut rng, 0));
        }
        let c = bedrock::convert(&events, &Options::default());
        assert_eq!(c.events + c.duplicates + c.errors.len(), events.len());
    }
}

/// Span counts per kind for every fixture: steps, model calls, tools,
/// retrievals, guardrail checks, failures, and agents (root + collaborators).
#[test]
fn tree_shape_per_fixture() {
    let expected: &[(&str, [usize; 7])] = &[
        //                                                   step chat tool retr guard fail agent
        ("oi-js_code-interpreter.json", [3, 3, 2, 0, 0, 0, 1]),
        (
            "oi-py-testfixture_failure-trace-throttling.json",
            [1, 0, 0, 0, 0, 1, 1],
        ),
        (
            "oi-py_action-group-function-lambda.json",
            [2, 2, 1, 0, 0, 0, 1],
        ),
        (
            "oi-py_action-group-function-noparams.json",
            [2, 2, 1, 0, 0, 0, 1],
        ),
        (
            "oi-py_guardrail-intervened-input.json",
            [1, 0, 0, 0, 1, 0, 1],
        ),
        (
            "oi-py_guardrail-streaming-output-assessments.json",
            [3, 1, 0, 0, 6, 0, 1],
        ),
        ("oi-py_inline-agent.json", [1, 1, 0, 0, 0, 0, 1]),
        ("oi-py_knowledge-base-lookup.json", [3, 1, 0, 1, 0, 0, 1]),
        (
            "oi-py_multi-agent-3-level-supervisor.json",
            [9, 9, 0, 0, 0, 0, 3],
        ),
        ("oi-py_post-processing.json", [2, 2, 0, 0, 0, 0, 1]),
        ("oi-py_pre-processing.json", [2, 2, 0, 0, 0, 0, 1]),
        (
            "oi-py_routing-classifier-to-collaborator.json",
            [3, 3, 1, 0, 0, 0, 2],
        ),
        (
            "pika_failure-trace-inline-agent-model-access.json",
            [1, 0, 0, 0, 0, 1, 1],
        ),
    ];
    for (name, want) in expected {
        let spans = spans(&fixture(name), &Options::default());
        let mut got = [0usize; 7];
        for s in &spans {
            let slot = match (attr_str(s, "gen_ai.operation.name"), s.name.as_str()) {
                (Some("chat"), _) => 1,
                (Some("execute_tool"), _) => 2,
                (Some("retrieval"), _) => 3,
                (Some("invoke_agent"), _) => 6,
                (_, "guardrail input" | "guardrail output") => 4,
                (_, "failure") => 5,
                _ => 0,
            };
            got[slot] += 1;
        }
        assert_eq!(&got, want, "{name}");
        // Every model call, tool, retrieval, guardrail check and failure sits under a step.
        let ids = by_id(&spans);
        for s in spans.iter().filter(|s| {
            matches!(
                attr_str(s, "gen_ai.operation.name"),
                Some("chat" | "execute_tool" | "retrieval")
            ) || s.name.starts_with("guardrail ")
                && attr_str(s, "aws.bedrock.guardrail.action").is_some()
                || s.name == "failure"
        }) {
            let parent = ids[&s.parent_span_id];
            assert!(
                attr_str(parent, "aws.bedrock.step.type").is_some(),
                "{name}: {} under {}",
                s.name,
                parent.name
            );
        }
    }
}

#[test]
fn unknown_fields_are_kept_not_rejected() {
    let mut events = fixture("oi-py_inline-agent.json");
    events[0]["newTopLevelField"] = serde_json::json!({"a": 1});
    events[0]["trace"]["orchestrationTrace"]["modelInvocationInput"]["futureKnob"] =
        serde_json::json!(42);
    events[0]["trace"]["orchestrationTrace"]["modelInvocationInput"]["__type"] =
        serde_json::json!("ignored");
    let converted = spans(&events, &Options::default());
    let step = converted
        .iter()
        .find(|s| s.name == "orchestration step 0")
        .unwrap();
    assert_eq!(
        attr_str(step, "aws.bedrock.unknown.newTopLevelField"),
        Some(r#"{"a":1}"#)
    );
    assert_eq!(
        attr_str(step, "aws.bedrock.unknown.modelInvocationInput.futureKnob"),
        Some("42")
    );
    assert!(step.attributes.iter().all(|kv| !kv.key.contains("__type")));
    // Nothing from the recorded fixtures is unknown.
    for (name, events) in all_fixtures() {
        let spans = spans(&events, &Options::default());
        let unknown: Vec<_> = spans
            .iter()
            .flat_map(|s| &s.attributes)
            .filter(|kv| kv.key.starts_with("aws.bedrock.unknown"))
            .map(|kv| kv.key.clone())
            .collect();
        assert!(unknown.is_empty(), "{name}: {unknown:?}");
    }
}

#[test]
fn the_convert_command_writes_otlp_json_and_trees() {
    let file = format!("{DIR}/oi-py_multi-agent-3-level-supervisor.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spanwire"))
        .args(["convert", "--from", "bedrock", &file])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let decoded = spanwire::convert::otlp_json::decode(
        spanwire::signal::Signal::Traces,
        line.trim().as_bytes(),
    )
    .unwrap();
    let expected = spans(
        &fixture("oi-py_multi-agent-3-level-supervisor.json"),
        &Options::default(),
    );
    assert_eq!(decoded.item_count(), expected.len());

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spanwire"))
        .args([
            "convert",
            "--from",
            "bedrock",
            "--to",
            "tree",
            "--capture-content",
            "none",
            &file,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let tree = String::from_utf8(out.stdout).unwrap();
    assert!(tree.contains("invoke_agent MathSolverAgent"), "{tree}");
    assert!(tree.contains("33 events, 1 invocation(s)"), "{tree}");

    // A file with an unreadable event: the rest converts, the event is reported, exit 3.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.ndjson");
    std::fs::write(&bad, "{\"trace\": {\"nothing\": {}}}\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spanwire"))
        .args(["convert", "--from", "bedrock", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("event 0: skipped"));
}

/// Every span, keyed by (trace id, span id), for comparing conversions whole.
fn keyed(v: Vec<Span>) -> Vec<(Vec<u8>, Vec<u8>, Span)> {
    let mut out: Vec<_> = v
        .into_iter()
        .map(|s| (s.trace_id.clone(), s.span_id.clone(), s))
        .collect();
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

#[test]
fn replayed_and_interleaved_streams_give_the_spans_of_one_replay() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(22);
    for (name, events) in all_fixtures() {
        let once = keyed(spans(&events, &Options::default()));
        let ids: HashSet<_> = once
            .iter()
            .map(|(t, s, _)| (t.clone(), s.clone()))
            .collect();
        assert_eq!(ids.len(), once.len(), "{name}: span ids are unique");
        let twice: Vec<Value> = events.iter().chain(&events).cloned().collect();
        let interleaved: Vec<Value> = events
            .iter()
            .zip(&events)
            .flat_map(|(a, b)| [a.clone(), b.clone()])
            .collect();
        // The second copy starts halfway through the first, and a random
        // merge of the two copies (each keeps its order).
        let half = events.len() / 2;
        let offset: Vec<Value> = events[..half]
            .iter()
            .chain(events[half..].iter().zip(&events).flat_map(|(a, b)| [a, b]))
            .chain(&events[events.len() - half..])
            .cloned()
            .collect();
        let (mut a, mut b) = (0, 0);
        let mut merged = Vec::new();
        while a < events.len() || b < events.len() {
            if b == events.len() || (a < events.len() && rng.random_bool(0.5)) {
                merged.push(events[a].clone());
                a += 1;
            } else {
                merged.push(events[b].clone());
                b += 1;
            }
        }
        for (how, input) in [
            ("twice", &twice),
            ("interleaved", &interleaved),
            ("offset", &offset),
            ("merged", &merged),
        ] {
            let c = bedrock::convert(input, &Options::default());
            assert_eq!(
                c.duplicates,
                input.len() - events.len(),
                "{name} {how}: every second copy is a duplicate"
            );
            let got = keyed(
                c.resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans)
                    .flat_map(|s| s.spans)
                    .collect(),
            );
            assert_eq!(got, once, "{name} {how}: the spans of one replay");
        }
    }
}

#[test]
fn an_unknown_trace_member_becomes_a_span_of_its_own() {
    let mut events = fixture("oi-py_action-group-function-lambda.json");
    let step_id = events[0]["trace"]["orchestrationTrace"]["modelInvocationInput"]["traceId"]
        .as_str()
        .unwrap()
        .to_string();
    let time = events[0]["eventTime"].clone();
    let part = |trace: Value| {
        let mut e = events[0].clone();
        e["trace"] = trace;
        e["eventTime"] = time.clone();
        e
    };
    // A member with its own traceId, and one whose traceId is one level down.
    let flat = part(serde_json::json!({"plannerTrace": {"traceId": step_id, "plan": ["a", "b"]}}));
    let nested = part(serde_json::json!({
        "memoryTrace": {"memoryWrite": {"traceId": step_id, "bytes": 12}}
    }));
    events.insert(1, flat);
    events.insert(2, nested);
    let c = bedrock::convert(&events, &Options::default());
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert_eq!(c.unknown_members, vec!["plannerTrace", "memoryTrace"]);
    let spans: Vec<Span> = c
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect();
    let step = spans
        .iter()
        .find(|s| attr_str(s, "aws.bedrock.trace_id") == Some(step_id.as_str()))
        .unwrap();
    for (member, raw) in [
        ("plannerTrace", r#"{"plan":["a","b"],"traceId":"#),
        ("memoryTrace", r#"{"memoryWrite":{"bytes":12,"traceId":"#),
    ] {
        let s = spans.iter().find(|s| s.name == member).unwrap();
        assert_eq!(attr_str(s, "bedrock.trace.type"), Some(member));
        assert!(
            attr_str(s, "bedrock.trace.raw").unwrap().starts_with(raw),
            "{:?}",
            attr_str(s, "bedrock.trace.raw")
        );
        assert_eq!(
            s.parent_span_id, step.span_id,
            "{member} sits under its step"
        );
    }
    // Without content capture the member's JSON is not kept; the span is.
    let opts = Options {
        capture_content: CaptureContent::None,
        ..Default::default()
    };
    let bare = spans_of(&events, &opts);
    let s = bare.iter().find(|s| s.name == "plannerTrace").unwrap();
    assert_eq!(attr_str(s, "bedrock.trace.raw"), None);
    // Known spans keep their ids: the new member takes no ordinal from them.
    let plain = spans_of(
        &fixture("oi-py_action-group-function-lambda.json"),
        &Options::default(),
    );
    let with: HashSet<_> = spans.iter().map(|s| s.span_id.clone()).collect();
    assert!(plain.iter().all(|s| with.contains(&s.span_id)));
    assert_eq!(with.len(), plain.len() + 2);
}

fn spans_of(events: &[Value], opts: &Options) -> Vec<Span> {
    bedrock::convert(events, opts)
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect()
}

#[test]
fn the_convert_command_warns_of_unknown_members_and_strict_fails() {
    let mut events = fixture("oi-py_inline-agent.json");
    let step_id =
        events[0]["trace"]["orchestrationTrace"]["modelInvocationInput"]["traceId"].clone();
    let mut e = events[0].clone();
    e["trace"] = serde_json::json!({"futureTrace": {"traceId": step_id, "x": 1}});
    events.push(e);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("future.json");
    // Sent twice: the duplicates are left out.
    let twice: Vec<Value> = events.iter().chain(&events).cloned().collect();
    std::fs::write(&file, serde_json::to_string(&twice).unwrap()).unwrap();
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_spanwire"))
            .args(["convert", "--from", "bedrock"])
            .args(extra)
            .arg(&file)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: the trace member `futureTrace`"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{} exact duplicate event(s)", events.len())),
        "{stderr}"
    );
    let decoded = spanwire::convert::otlp_json::decode(
        spanwire::signal::Signal::Traces,
        String::from_utf8(out.stdout).unwrap().trim().as_bytes(),
    )
    .unwrap();
    assert_eq!(
        decoded.item_count(),
        spans_of(&events, &Options::default()).len()
    );
    let strict = run(&["--strict"]);
    assert_eq!(strict.status.code(), Some(3));
}
