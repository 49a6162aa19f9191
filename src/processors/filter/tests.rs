use super::*;
use crate::settings::{de::from_node, yaml::parse};
use crate::signal::string_attribute;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Status};

fn cfg(text: &str) -> Result<FilterConfig, DeError> {
    let (n, _) = parse("t.yaml", text, &|_| None).unwrap();
    from_node::<FilterConfig>(&n).and_then(|c| c.validate().map(|_| c))
}

fn span(name: &str, kind: i32, attrs: Vec<KeyValue>, error: bool) -> Span {
    Span {
        name: name.into(),
        kind,
        attributes: attrs,
        status: error.then(|| Status {
            code: status::StatusCode::Error as i32,
            message: "boom".into(),
        }),
        events: vec![
            Event {
                name: "exception".into(),
                ..Default::default()
            },
            Event {
                name: "gen_ai.choice".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

fn traces(service: &str, spans: Vec<Span>) -> Telemetry {
    Telemetry::Traces(vec![ResourceSpans {
        resource: Some(Resource {
            attributes: vec![string_attribute("service.name", service)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "agent.lib".into(),
                version: "1.2".into(),
                ..Default::default()
            }),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }])
}

fn names(t: &Telemetry) -> Vec<String> {
    match t {
        Telemetry::Traces(v) => v
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.name.clone())
            .collect(),
        Telemetry::Metrics(v) => v
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| format!("{}:{}", m.name, point_count(m)))
            .collect(),
        Telemetry::Logs(v) => v
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
            .map(|l| any_text(l.body.as_ref()))
            .collect(),
    }
}

fn run(c: &str, t: Telemetry) -> Telemetry {
    Filter::new(&cfg(c).unwrap())
        .process(t, &Metadata::default())
        .unwrap()
}

fn sample_spans() -> Telemetry {
    traces(
        "travel",
        vec![
            span(
                "GET /health",
                2,
                vec![string_attribute("http.route", "/health")],
                false,
            ),
            span(
                "invoke_agent travel",
                1,
                vec![string_attribute("gen_ai.system", "aws.bedrock")],
                false,
            ),
            span(
                "chat",
                3,
                vec![string_attribute("gen_ai.system", "openai")],
                true,
            ),
        ],
    )
}

#[test]
fn ottl_span_and_spanevent_conditions_drop_what_they_hold_for() {
    let out = run(
        r#"
traces:
  span:
    - 'attributes["http.route"] == "/health"'
    - 'kind == SPAN_KIND_CLIENT and status.code == STATUS_CODE_ERROR'
  spanevent:
    - 'IsMatch(name, "^gen_ai\\.")'
"#,
        sample_spans(),
    );
    assert_eq!(names(&out), ["invoke_agent travel"]);
    let Telemetry::Traces(v) = &out else { panic!() };
    let events: Vec<_> = v[0].scope_spans[0].spans[0]
        .events
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(events, ["exception"]);
}

#[test]
fn legacy_span_include_and_exclude() {
    let out = run(
        r#"
spans:
  include:
    match_type: regexp
    services: ["^trav"]
    span_names: ["^(invoke_agent|chat|GET)"]
  exclude:
    match_type: strict
    attributes: [{key: gen_ai.system, value: openai}]
"#,
        sample_spans(),
    );
    assert_eq!(names(&out), ["GET /health", "invoke_agent travel"]);
    // A service that does not match include: everything goes, and so does the resource.
    let out = run(
        "spans:\n  include: {match_type: strict, services: [other]}\n",
        sample_spans(),
    );
    let Telemetry::Traces(v) = &out else { panic!() };
    assert!(v.is_empty());
    // Kinds and libraries.
    let out = run(
        "spans:\n  exclude: {match_type: strict, span_kinds: [SPAN_KIND_SERVER], libraries: [{name: agent.lib, version: '1.2'}]}\n",
        sample_spans(),
    );
    assert_eq!(names(&out), ["invoke_agent travel", "chat"]);
}

fn gauges(points: &[(&str, f64)]) -> Telemetry {
    let metric = |name: &str| Metric {
        name: name.into(),
        data: Some(Data::Gauge(Gauge {
            data_points: points
                .iter()
                .map(|(tag, v)| NumberDataPoint {
                    attributes: vec![string_attribute("tag", *tag)],
                    value: Some(number_data_point::Value::AsDouble(*v)),
                    ..Default::default()
                })
                .collect(),
        })),
        ..Default::default()
    };
    Telemetry::Metrics(vec![ResourceMetrics {
        resource: Some(Resource {
            attributes: vec![string_attribute("service.name", "ecs")],
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            metrics: vec![
                metric("ecs.task.memory.utilized"),
                metric("ecs.task.cpu.utilized"),
                metric("container.duration"),
                metric("other.metric"),
            ],
            ..Default::default()
        }],
        ..Default::default()
    }])
}

#[test]
fn metrics_by_name_condition_and_data_point() {
    // ADOT's ECS configs: a strict include list of metric names.
    let out = run(
        "metrics:\n  include:\n    match_type: strict\n    metric_names: [ecs.task.memory.utilized, ecs.task.cpu.utilized, container.duration]\n",
        gauges(&[("a", 1.0)]),
    );
    assert_eq!(
        names(&out),
        [
            "ecs.task.memory.utilized:1",
            "ecs.task.cpu.utilized:1",
            "container.duration:1"
        ]
    );
    let out = run(
        r#"
metrics:
  exclude: {match_type: regexp, metric_names: ["^other\\."]}
  metric: ['name == "container.duration"']
  datapoint: ['value_double > 10.0 or attributes["tag"] == "drop"', 'metric.name == "ecs.task.cpu.utilized" and value_double < 0.5']
"#,
        gauges(&[("a", 1.0), ("b", 20.0), ("drop", 2.0), ("c", 0.25)]),
    );
    // memory: a, c stay; cpu: a stays (c < 0.5 dropped).
    assert_eq!(
        names(&out),
        ["ecs.task.memory.utilized:2", "ecs.task.cpu.utilized:1"]
    );
    // Every point dropped: the metric goes too.
    let out = run(
        "metrics:\n  datapoint: ['metric.type == METRIC_DATA_TYPE_GAUGE']\n",
        gauges(&[("a", 1.0)]),
    );
    let Telemetry::Metrics(v) = &out else {
        panic!()
    };
    assert!(v.is_empty());
}

fn logs() -> Telemetry {
    let rec = |body: &str, sev: i32, text: &str| LogRecord {
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body.into())),
        }),
        severity_number: sev,
        severity_text: text.into(),
        attributes: vec![string_attribute("session.id", body)],
        ..Default::default()
    };
    Telemetry::Logs(vec![ResourceLogs {
        resource: Some(Resource::default()),
        scope_logs: vec![ScopeLogs {
            log_records: vec![
                rec("debug line", 5, "DEBUG"),
                rec("warned", 13, "WARN"),
                rec("failed", 17, "ERROR"),
                rec("plain", 0, ""),
            ],
            ..Default::default()
        }],
        ..Default::default()
    }])
}

#[test]
fn logs_by_severity_body_and_condition() {
    let out = run(
        "logs:\n  include:\n    match_type: strict\n    severity_number: {min: WARN, match_undefined: true}\n",
        logs(),
    );
    assert_eq!(names(&out), ["warned", "failed", "plain"]);
    let out = run(
        "logs:\n  exclude: {match_type: regexp, bodies: ['^fail']}\n  log_record: ['severity_number < SEVERITY_NUMBER_INFO and severity_number > 0']\n",
        logs(),
    );
    assert_eq!(names(&out), ["warned", "plain"]);
}

#[test]
fn bad_filters_are_refused_with_the_condition_position() {
    let e = cfg("traces:\n  span:\n    - 'name == \"ok\"'\n    - 'Concat(name) == \"x\"'\n")
        .unwrap_err();
    assert_eq!(
        e.mark.as_ref().map(|m| (m.line, m.col)),
        Some((4, 7)),
        "{e}"
    );
    assert!(
        e.to_string().contains("function `Concat` is not supported"),
        "{e}"
    );
    let e = cfg("metrics:\n  datapoint: ['kind == 1']\n").unwrap_err();
    assert!(
        e.to_string()
            .contains("path `kind` is not supported in the datapoint context"),
        "{e}"
    );
    let e = cfg("metrics:\n  include: {match_type: expr, metric_names: ['x']}\n").unwrap_err();
    assert!(e.to_string().contains("`expr` is not supported"), "{e}");
    let e = cfg("spans:\n  include: {match_type: regexp, span_names: ['(']}\n").unwrap_err();
    assert!(e.to_string().contains("is not a regular expression"), "{e}");
    let e =
        cfg("logs:\n  include: {match_type: strict, severity_number: {min: LOUD}}\n").unwrap_err();
    assert!(e.to_string().contains("`LOUD` is not a severity"), "{e}");
    let e = cfg("spans:\n  include: {services: [a]}\n").unwrap_err();
    assert!(e.to_string().contains("match_type"), "{e}");
}
