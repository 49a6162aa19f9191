use std::collections::{BTreeMap, HashSet};

use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};

use super::*;
use crate::consumer::{Ack, AckOutcome};
use crate::processors::tail_sampling::policy::PolicyConfig;
use crate::signal::Telemetry;

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    crate::signal::attribute(k, v)
}

fn str_kv(k: &str, v: &str) -> KeyValue {
    kv(k, any_value::Value::StringValue(v.into()))
}

fn span(trace: u8, id: u8, mut attrs: Vec<KeyValue>, error: bool) -> Span {
    if error || attrs.iter().any(|kv| kv.key == "error.type") {
        // A failed agent invocation: a failure `agent_error` keeps.
        attrs.push(str_kv("gen_ai.operation.name", "invoke_agent"));
    }
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        name: format!("s{trace}-{id}"),
        start_time_unix_nano: 1_000_000_000 + u64::from(id) * 1_000_000,
        end_time_unix_nano: 1_000_000_000 + u64::from(id) * 1_000_000 + 500_000,
        attributes: attrs,
        status: error.then(|| Status {
            code: status::StatusCode::Error as i32,
            message: "boom".into(),
        }),
        ..Default::default()
    }
}

fn request(service: &str, spans: Vec<Span>) -> Vec<u8> {
    let data = Telemetry::Traces(vec![ResourceSpans {
        resource: Some(Resource {
            attributes: vec![str_kv("service.name", service)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
    }]);
    crate::convert::otlp_proto::encode_batch(&data)
        .bytes
        .to_vec()
}

fn sampler(yaml: &str, group_by: GroupBy, max_groups: usize, record: bool) -> Sampler {
    let (node, _) = crate::settings::yaml::parse("t", yaml, &|_| None).unwrap();
    let cfgs: Vec<PolicyConfig> = crate::settings::de::from_node(&node).unwrap();
    let policies = Policies::compile(&cfgs, &BTreeMap::new()).unwrap();
    Sampler::new(
        Settings {
            group_by,
            session_keys: vec!["session.id".into(), "gen_ai.conversation.id".into()],
            wait_ms: 1000,
            max_groups,
            max_bytes: 64 << 20,
            sampled_cache: 100,
            non_sampled_cache: 100,
            record_policy: record,
        },
        policies,
    )
}

fn decoded(out: &Output) -> Vec<(ResourceSpans, Span)> {
    let Telemetry::Traces(rs) =
        crate::convert::otlp_proto::decode_request(Signal::Traces, &out.bytes).unwrap()
    else {
        panic!("not traces");
    };
    let mut v = Vec::new();
    for r in rs {
        for ss in &r.scope_spans {
            for s in &ss.spans {
                let mut head = r.clone();
                head.scope_spans.clear();
                v.push((head, s.clone()));
            }
        }
    }
    v
}

const ERRORS: &str =
    "- {name: errors, type: agent_error}\n- {name: guard, type: guardrail_intervened}";

#[test]
fn whole_traces_are_kept_or_dropped_after_the_wait() {
    let mut s = sampler(ERRORS, GroupBy::Trace, 1000, false);
    let mut late = Output::default();
    // Trace 1 fails in its second request; trace 2 is fine; trace 3 hit a guardrail.
    let a = request(
        "app",
        vec![span(1, 1, vec![], false), span(2, 1, vec![], false)],
    );
    let b = request(
        "app",
        vec![
            span(1, 2, vec![str_kv("error.type", "Timeout")], false),
            span(2, 2, vec![], false),
            span(
                3,
                1,
                vec![str_kv("aws.bedrock.guardrail.action", "INTERVENED")],
                false,
            ),
            span(
                3,
                2,
                vec![str_kv("aws.bedrock.guardrail.action", "NONE")],
                false,
            ),
        ],
    );
    s.intake(&a, &Acks::none(), 0, &mut late).unwrap();
    s.intake(&b, &Acks::none(), 500, &mut late).unwrap();
    assert_eq!(late.spans, 0);
    let mut out = Output::default();
    s.expire(999, 1, &mut out);
    assert_eq!(out.spans, 0, "nothing before the wait");
    // Traces 1 and 2 began at 0, trace 3 at 500.
    s.expire(1000, 1, &mut out);
    let got = decoded(&out);
    let names: Vec<&str> = got.iter().map(|(_, s)| s.name.as_str()).collect();
    assert_eq!(names, vec!["s1-1", "s1-2"]);
    // Resource and schema go with the spans.
    assert_eq!(
        got[0].0.schema_url,
        "https://opentelemetry.io/schemas/1.30.0"
    );
    assert_eq!(
        got[0].0.resource.as_ref().unwrap().attributes,
        vec![str_kv("service.name", "app")]
    );
    let mut out = Output::default();
    s.expire(1500, 1, &mut out);
    let names: Vec<String> = decoded(&out).into_iter().map(|(_, s)| s.name).collect();
    assert_eq!(names, vec!["s3-1", "s3-2"]);
    let st = s.stats();
    assert_eq!((st.kept, st.dropped), (2, 1));
    assert_eq!((st.spans_kept, st.spans_dropped), (4, 2));
    // errors: trace 1 (a failed invocation) and trace 3 (a guardrail
    // intervention is a failure to the model), not 2; guard: trace 3.
    assert_eq!(st.per_policy, vec![(2, 1), (1, 2)]);
    assert_eq!(s.groups(), 0);
    assert_eq!(s.bytes(), 0);
    assert_eq!(s.spans(), 0);

    // Late spans follow the decision.
    let c = request(
        "app",
        vec![span(1, 9, vec![], false), span(2, 9, vec![], false)],
    );
    let mut late = Output::default();
    s.intake(&c, &Acks::none(), 2000, &mut late).unwrap();
    let names: Vec<String> = decoded(&late).into_iter().map(|(_, s)| s.name).collect();
    assert_eq!(names, vec!["s1-9"]);
    assert_eq!((s.stats().late_kept, s.stats().late_dropped), (1, 1));
    assert_eq!(s.groups(), 0);
}

#[test]
fn kept_spans_are_the_spans_sent_field_for_field() {
    let mut s = sampler(
        "- {name: all, type: always_sample}",
        GroupBy::Trace,
        1000,
        false,
    );
    let mut spans = Vec::new();
    for t in 0..20u8 {
        for i in 0..5u8 {
            let mut sp = span(
                t,
                i,
                vec![str_kv("k", &"v".repeat(usize::from(i) * 40))],
                i == 3,
            );
            sp.parent_span_id = vec![t; 8];
            spans.push(sp);
        }
    }
    let (first, second) = spans.split_at(37);
    let mut late = Output::default();
    s.intake(&request("a", first.to_vec()), &Acks::none(), 0, &mut late)
        .unwrap();
    s.intake(&request("b", second.to_vec()), &Acks::none(), 10, &mut late)
        .unwrap();
    let mut out = Output::default();
    s.expire(5000, 1, &mut out);
    let got = decoded(&out);
    assert_eq!(got.len(), 100);
    let mut sent: Vec<Span> = spans.clone();
    let mut kept: Vec<Span> = got.iter().map(|(_, s)| s.clone()).collect();
    sent.sort_by(|a, b| (&a.trace_id, &a.span_id).cmp(&(&b.trace_id, &b.span_id)));
    kept.sort_by(|a, b| (&a.trace_id, &a.span_id).cmp(&(&b.trace_id, &b.span_id)));
    assert_eq!(kept, sent);
    // Each span keeps its own resource.
    for (r, sp) in &got {
        let service = &r.resource.as_ref().unwrap().attributes[0];
        let from_first = first
            .iter()
            .any(|f| f.trace_id == sp.trace_id && f.span_id == sp.span_id);
        assert_eq!(
            service,
            &str_kv("service.name", if from_first { "a" } else { "b" })
        );
    }
}

#[test]
fn a_full_buffer_decides_the_oldest_early_and_loses_nothing() {
    let mut s = sampler(
        "- {name: half, type: probabilistic, probabilistic: {sampling_percentage: 50}}",
        GroupBy::Trace,
        10,
        false,
    );
    let mut out = Output::default();
    let mut late = Output::default();
    for t in 0..50u8 {
        s.intake(
            &request(
                "a",
                vec![span(t, 1, vec![], false), span(t, 2, vec![], false)],
            ),
            &Acks::none(),
            u64::from(t),
            &mut late,
        )
        .unwrap();
        s.expire(u64::from(t), 1, &mut out);
        assert!(s.groups() <= 10);
    }
    let st = s.stats().clone();
    assert_eq!(st.early, 40);
    assert_eq!(st.kept + st.dropped, 40);
    assert_eq!(st.spans_kept as usize, out.spans);
    assert_eq!(st.spans_kept + st.spans_dropped, 80);
    assert!(st.kept > 5 && st.dropped > 5, "{st:?}");
    // The oldest went first.
    let kept: HashSet<u8> = decoded(&out).iter().map(|(_, s)| s.trace_id[0]).collect();
    assert!(kept.iter().all(|t| *t < 40));
}

#[test]
fn sessions_are_decided_whole_once_idle_and_traces_join_their_session() {
    let mut s = sampler(ERRORS, GroupBy::Session, 100, true);
    let mut late = Output::default();
    let sid = |v: &str| vec![str_kv("session.id", v)];
    // Session A: trace 1 (fine), trace 2 whose child comes before its root
    // names the session, and which fails.
    s.intake(
        &request(
            "agent",
            vec![span(1, 1, sid("A"), false), span(2, 2, vec![], true)],
        ),
        &Acks::none(),
        0,
        &mut late,
    )
    .unwrap();
    // Session B in the resource (one per process): fine.
    let b = {
        let data = Telemetry::Traces(vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![str_kv("gen_ai.conversation.id", "B")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span(5, 1, vec![], false), span(6, 1, vec![], false)],
                ..Default::default()
            }],
            ..Default::default()
        }]);
        crate::convert::otlp_proto::encode_batch(&data)
            .bytes
            .to_vec()
    };
    s.intake(&b, &Acks::none(), 100, &mut late).unwrap();
    s.intake(
        &request(
            "agent",
            vec![span(2, 1, sid("A"), false), span(1, 2, vec![], false)],
        ),
        &Acks::none(),
        800,
        &mut late,
    )
    .unwrap();
    assert_eq!(s.stats().merged, 1, "trace 2 joined session A");
    assert_eq!(s.groups(), 2);
    let mut out = Output::default();
    // B idle since 100: decided (dropped) at 1100; A is still active until 1800.
    s.expire(1100, 1, &mut out);
    assert_eq!(out.spans, 0);
    assert_eq!(s.stats().dropped, 1);
    s.expire(1799, 1, &mut out);
    assert_eq!(out.spans, 0);
    s.expire(1800, 1, &mut out);
    let got = decoded(&out);
    let mut names: Vec<&str> = got.iter().map(|(_, s)| s.name.as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["s1-1", "s1-2", "s2-1", "s2-2"]);
    // record_policy names the policy that kept it.
    assert!(got
        .iter()
        .all(|(_, s)| s.attributes.last() == Some(&str_kv("tailsampling.policy", "errors"))));
    // A late span of session A (by its trace) follows the decision.
    let mut late = Output::default();
    s.intake(
        &request("agent", vec![span(2, 7, vec![], false)]),
        &Acks::none(),
        2000,
        &mut late,
    )
    .unwrap();
    assert_eq!(late.spans, 1);
}

#[tokio::test]
async fn acknowledgements_settle_with_the_decision() {
    let mut s = sampler(ERRORS, GroupBy::Trace, 100, false);
    let (ack_a, mut wait_a) = Ack::new();
    let (ack_b, mut wait_b) = Ack::new();
    let mut late = Output::default();
    // Request a: trace 1 (kept) and trace 2 (dropped); request b: trace 2 again.
    s.intake(
        &request(
            "x",
            vec![span(1, 1, vec![], true), span(2, 1, vec![], false)],
        ),
        &Acks::one(ack_a),
        0,
        &mut late,
    )
    .unwrap();
    s.intake(
        &request("x", vec![span(2, 2, vec![], false)]),
        &Acks::one(ack_b),
        0,
        &mut late,
    )
    .unwrap();
    assert!(wait_a.try_outcome().is_none());
    let mut out = Output::default();
    s.expire(1000, 1, &mut out);
    // b held only the dropped trace: settled. a waits for the kept spans.
    assert_eq!(wait_b.try_outcome(), Some(AckOutcome::Delivered));
    assert!(wait_a.try_outcome().is_none());
    drop(out);
    assert_eq!(wait_a.try_outcome(), Some(AckOutcome::Delivered));

    // At shutdown a group that can be read again is given up, not decided.
    let (ack_c, mut wait_c) = Ack::new();
    s.intake(
        &request("x", vec![span(9, 1, vec![], true)]),
        &Acks::one(ack_c),
        2000,
        &mut late,
    )
    .unwrap();
    s.intake(
        &request("x", vec![span(8, 1, vec![], true)]),
        &Acks::none(),
        2000,
        &mut late,
    )
    .unwrap();
    let mut out = Output::default();
    s.drain(1, &mut out);
    assert_eq!(wait_c.try_outcome(), Some(AckOutcome::Abandoned));
    assert_eq!(s.stats().abandoned, 1);
    let names: Vec<String> = decoded(&out).into_iter().map(|(_, s)| s.name).collect();
    assert_eq!(names, vec!["s8-1"]);
}

#[test]
fn a_request_that_is_not_otlp_is_refused_whole() {
    let mut s = sampler(ERRORS, GroupBy::Trace, 100, false);
    let mut late = Output::default();
    assert!(s
        .intake(&[0x0a, 0x05, 0x01], &Acks::none(), 0, &mut late)
        .is_err());
    assert_eq!(s.groups(), 0);
}
