//! `agentmetrics` on hand-made traces: attribution, cost, counts, cardinality.
use super::*;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

fn cfg() -> AgentMetricsConfig {
    serde_json::from_str::<AgentMetricsConfig>("{}").unwrap()
}

fn attr_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

fn display(v: &any_value::Value) -> String {
    crate::signal::value_text(Some(v))
}

/// A span of a trace of its own (tests put spans in one trace by
/// setting the same trace id).
fn span(attrs: Vec<KeyValue>, secs: f64, status: i32) -> Span {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Span {
        trace_id: [n.to_be_bytes(), [1; 8]].concat(),
        span_id: n.to_be_bytes().to_vec(),
        name: "s".into(),
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_000_000_000 + (secs * 1e9) as u64,
        attributes: attrs,
        status: Some(Status {
            code: status,
            message: String::new(),
        }),
        ..Default::default()
    }
}

fn batch(spans: Vec<Span>) -> Telemetry {
    Telemetry::Traces(vec![ResourceSpans {
        resource: Some(Resource {
            attributes: vec![string_attribute("service.name", "travel")],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }])
}

fn int(k: &str, v: i64) -> KeyValue {
    crate::signal::attribute(k, any_value::Value::IntValue(v))
}

fn find<'a>(m: &'a [ResourceMetrics], name: &str) -> &'a Metric {
    m.iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .find(|x| x.name == name)
        .unwrap_or_else(|| panic!("{name}"))
}

#[test]
fn spans_without_an_agent_name_count_for_their_traces_agent() {
    let c = AgentMetrics::new(cfg(), "t");
    let mut root = span(
        vec![
            string_attribute("gen_ai.operation.name", "invoke_agent"),
            string_attribute("gen_ai.agent.name", "planner"),
        ],
        1.0,
        0,
    );
    root.trace_id = vec![7; 16];
    let mut chat = span(
        vec![
            string_attribute("gen_ai.operation.name", "chat"),
            int("gen_ai.usage.input_tokens", 10),
        ],
        0.5,
        0,
    );
    chat.trace_id = vec![7; 16];
    // Another trace with no agent anywhere stays unattributed.
    let lone = span(
        vec![string_attribute("gen_ai.operation.name", "chat")],
        0.1,
        0,
    );
    c.record(&batch(vec![chat, root, lone]));
    c.settle_all();
    let m = c.snapshot();
    let Some(Data::Sum(inv)) = &find(&m, "agent.invocations").data else {
        panic!()
    };
    let agent_of = |op: &str| -> Vec<String> {
        inv.data_points
            .iter()
            .filter(|p| attr_str(&p.attributes, "gen_ai.operation.name") == Some(op))
            .map(|p| {
                attr_str(&p.attributes, "gen_ai.agent.name")
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    assert_eq!(agent_of("invoke_agent"), vec!["planner"]);
    let mut chats = agent_of("chat");
    chats.sort();
    assert_eq!(chats, vec!["", "planner"]);
}

#[test]
fn cost_is_priced_per_agent_and_model() {
    let c = AgentMetrics::new(
        serde_json::from_str::<AgentMetricsConfig>(
            r#"{"pricing": {"claude": {"input": 0.25, "output": 1.25}}}"#,
        )
        .unwrap(),
        "t",
    );
    let chat = |model: &str| {
        span(
            vec![
                string_attribute("gen_ai.operation.name", "chat"),
                string_attribute("gen_ai.agent.name", "planner"),
                string_attribute("gen_ai.request.model", model),
                int("gen_ai.usage.input_tokens", 2000),
                int("gen_ai.usage.output_tokens", 400),
            ],
            0.1,
            0,
        )
    };
    c.record(&batch(vec![
        chat("claude"),
        chat("claude"),
        chat("unpriced"),
    ]));
    c.settle_all();
    let m = c.snapshot();
    let Some(Data::Sum(cost)) = &find(&m, "agent.cost").data else {
        panic!()
    };
    assert_eq!(cost.data_points.len(), 1, "only priced models");
    let p = &cost.data_points[0];
    assert_eq!(
        attr_str(&p.attributes, "gen_ai.request.model"),
        Some("claude")
    );
    let Some(number_data_point::Value::AsDouble(v)) = p.value else {
        panic!()
    };
    assert!((v - 2.0 * (2.0 * 0.25 + 0.4 * 1.25)).abs() < 1e-9, "{v}");
    assert_eq!(find(&m, "agent.cost").unit, "USD");
}

#[test]
fn counts_durations_errors_throttles_tokens_and_sessions() {
    let c = AgentMetrics::new(cfg(), "t");
    let chat = |secs, status, extra: Vec<KeyValue>| {
        let mut a = vec![
            string_attribute("gen_ai.operation.name", "chat"),
            string_attribute("gen_ai.agent.name", "planner"),
            string_attribute("gen_ai.request.model", "claude"),
            int("gen_ai.usage.input_tokens", 100),
            int("gen_ai.usage.output_tokens", 20),
        ];
        a.extend(extra);
        span(a, secs, status)
    };
    c.record(&batch(vec![
        chat(0.2, 0, vec![string_attribute("session.id", "s1")]),
        chat(
            3.0,
            2,
            vec![
                string_attribute("session.id", "s2"),
                string_attribute("error.type", "ThrottlingException"),
            ],
        ),
        chat(
            0.03,
            0,
            vec![string_attribute("gen_ai.conversation.id", "s1")],
        ),
        span(vec![string_attribute("http.route", "/health")], 0.001, 0),
    ]));
    c.settle_all();
    let m = c.snapshot();
    let Some(Data::Sum(inv)) = &find(&m, "agent.invocations").data else {
        panic!()
    };
    assert_eq!(inv.data_points.len(), 1);
    assert_eq!(
        inv.data_points[0].value,
        Some(number_data_point::Value::AsInt(3))
    );
    let Some(Data::Histogram(h)) = &find(&m, "agent.duration").data else {
        panic!()
    };
    let p = &h.data_points[0];
    assert_eq!(p.count, 3);
    assert!((p.sum.unwrap() - 3.23).abs() < 1e-9);
    assert_eq!(p.bucket_counts.iter().sum::<u64>(), 3);
    assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
    let Some(Data::Sum(err)) = &find(&m, "agent.errors").data else {
        panic!()
    };
    assert_eq!(
        err.data_points[0].value,
        Some(number_data_point::Value::AsInt(1))
    );
    let Some(Data::Sum(thr)) = &find(&m, "agent.throttles").data else {
        panic!()
    };
    assert_eq!(
        thr.data_points[0].value,
        Some(number_data_point::Value::AsInt(1))
    );
    let Some(Data::Sum(tok)) = &find(&m, "agent.tokens").data else {
        panic!()
    };
    let total = |t: &str| -> i64 {
        tok.data_points
            .iter()
            .filter(|p| {
                p.attributes.iter().any(|kv| {
                    kv.key == "gen_ai.token.type"
                        && display(kv.value.as_ref().unwrap().value.as_ref().unwrap()) == t
                })
            })
            .map(|p| match p.value {
                Some(number_data_point::Value::AsInt(i)) => i,
                _ => 0,
            })
            .sum()
    };
    assert_eq!((total("input"), total("output")), (300, 60));
    let Some(Data::Gauge(g)) = &find(&m, "agent.active_sessions").data else {
        panic!()
    };
    assert_eq!(
        g.data_points[0].value,
        Some(number_data_point::Value::AsInt(2))
    );
    let Some(Data::Sum(calls)) = &find(&m, "span.calls").data else {
        panic!()
    };
    assert_eq!(
        calls.data_points[0].value,
        Some(number_data_point::Value::AsInt(1))
    );
}

#[test]
fn cardinality_is_capped_into_an_other_series() {
    let c = AgentMetrics::new(
        AgentMetricsConfig {
            max_series: 4,
            ..cfg()
        },
        "t",
    );
    let spans = (0..50)
        .map(|i| {
            span(
                vec![
                    string_attribute("gen_ai.operation.name", "execute_tool"),
                    string_attribute("gen_ai.tool.name", format!("tool-{i}")),
                ],
                0.1,
                0,
            )
        })
        .collect();
    c.record(&batch(spans));
    c.settle_all();
    let m = c.snapshot();
    let Some(Data::Sum(inv)) = &find(&m, "agent.invocations").data else {
        panic!()
    };
    let total: i64 = inv
        .data_points
        .iter()
        .map(|p| match p.value {
            Some(number_data_point::Value::AsInt(i)) => i,
            _ => 0,
        })
        .sum();
    assert_eq!(total, 50, "nothing lost: overflow goes to `other`");
    let series: usize = m
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|x| match &x.data {
            Some(Data::Sum(s)) => s.data_points.len(),
            Some(Data::Histogram(h)) => h.data_points.len(),
            _ => 0,
        })
        .sum();
    assert!(
        series <= 6,
        "{series} series for a cap of 4 (+ the other series)"
    );
}
