use super::*;
use crate::signal::{attribute, string_attribute};
use opentelemetry_proto::tonic::common::v1::ArrayValue;
use opentelemetry_proto::tonic::trace::v1::{span, Status};
use serde_json::Value;

const TRACE: [u8; 16] = [
    0x5f, 0x84, 0xc7, 0xa1, 0xe7, 0xd1, 0x85, 0x2d, 0xb8, 0xc4, 0xd3, 0x5d, 0x0a, 0x1b, 0x2c, 0x3d,
];

fn span(name: &str, kind: SpanKind, parent: bool, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: TRACE.to_vec(),
        span_id: vec![0, 1, 2, 3, 4, 5, 6, 7],
        parent_span_id: if parent { vec![9; 8] } else { Vec::new() },
        name: name.into(),
        kind: kind as i32,
        start_time_unix_nano: 1_700_000_000_123_456_789,
        end_time_unix_nano: 1_700_000_001_000_000_000,
        attributes: attrs,
        ..Default::default()
    }
}

fn resource(attrs: Vec<KeyValue>) -> Resource {
    Resource {
        attributes: attrs,
        ..Default::default()
    }
}

fn doc(s: &Span, r: Option<&Resource>, opts: &Options) -> Value {
    let d = span_to_document(s, r, opts).expect("converts");
    let v: Value = serde_json::from_str(&d.json).expect("valid JSON");
    assert!(d.json.len() <= opts.max_document_bytes);
    v
}

fn plain() -> Options {
    Options {
        mark_exported: false,
        ..Options::default()
    }
}

fn int(k: &str, v: i64) -> KeyValue {
    attribute(k, any_value::Value::IntValue(v))
}

#[test]
fn trace_id_is_split_after_the_first_four_bytes() {
    assert_eq!(
        xray_trace_id(&TRACE).unwrap(),
        "1-5f84c7a1-e7d1852db8c4d35d0a1b2c3d"
    );
    assert_eq!(xray_trace_id(&[0; 16]), None);
    assert_eq!(xray_trace_id(&[1; 8]), None);
    let v = doc(&span("x", SpanKind::Server, false, vec![]), None, &plain());
    assert_eq!(v["trace_id"], "1-5f84c7a1-e7d1852db8c4d35d0a1b2c3d");
    assert_eq!(v["id"], "0001020304050607");
    assert_eq!(v["start_time"].to_string(), "1700000000.123456");
    assert_eq!(v["end_time"].to_string(), "1700000001.0");
}

#[test]
fn bad_ids_are_errors_not_documents() {
    let mut s = span("x", SpanKind::Server, false, vec![]);
    s.trace_id = vec![1, 2, 3];
    assert!(matches!(
        span_to_document(&s, None, &plain()),
        Err(XrayError::TraceId { len: 3, .. })
    ));
    let mut s = span("x", SpanKind::Server, false, vec![]);
    s.span_id = vec![0; 8];
    assert!(matches!(
        span_to_document(&s, None, &plain()),
        Err(XrayError::SpanId { .. })
    ));
    let mut s = span("x", SpanKind::Server, false, vec![]);
    s.parent_span_id = vec![1; 4];
    assert!(matches!(
        span_to_document(&s, None, &plain()),
        Err(XrayError::ParentId { len: 4, .. })
    ));
    let mut s = span("x", SpanKind::Server, false, vec![]);
    s.start_time_unix_nano = 0;
    assert!(matches!(
        span_to_document(&s, None, &plain()),
        Err(XrayError::NoStartTime { .. })
    ));
}

#[test]
fn segments_and_subsegments() {
    let root = doc(
        &span("GET /", SpanKind::Internal, false, vec![]),
        None,
        &plain(),
    );
    assert!(root.get("type").is_none() && root.get("parent_id").is_none());
    let server = doc(
        &span("GET /", SpanKind::Server, true, vec![]),
        None,
        &plain(),
    );
    assert!(
        server.get("type").is_none(),
        "a SERVER span with a remote parent is a segment"
    );
    assert_eq!(server["parent_id"], "0909090909090909");
    let consumer = doc(
        &span("recv", SpanKind::Consumer, true, vec![]),
        None,
        &plain(),
    );
    assert!(consumer.get("type").is_none());
    for kind in [SpanKind::Internal, SpanKind::Client, SpanKind::Producer] {
        let sub = doc(&span("call", kind, true, vec![]), None, &plain());
        assert_eq!(sub["type"], "subsegment");
        assert_eq!(sub["parent_id"], "0909090909090909");
        assert_eq!(sub["trace_id"], "1-5f84c7a1-e7d1852db8c4d35d0a1b2c3d");
    }
}

#[test]
fn names_follow_the_collector_precedence() {
    let res = resource(vec![string_attribute("service.name", "checkout")]);
    let name = |kind, parent, attrs: Vec<KeyValue>| {
        doc(
            &span("span-name", kind, parent, attrs),
            Some(&res),
            &plain(),
        )["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        name(
            SpanKind::Server,
            false,
            vec![string_attribute("aws.local.service", "local-svc")]
        ),
        "local-svc"
    );
    assert_eq!(name(SpanKind::Server, false, vec![]), "checkout");
    assert_eq!(
        name(
            SpanKind::Client,
            true,
            vec![
                string_attribute("aws.remote.service", "AWS::S3"),
                string_attribute("peer.service", "peer")
            ]
        ),
        "AWS::S3"
    );
    assert_eq!(
        name(
            SpanKind::Client,
            true,
            vec![string_attribute("peer.service", "payments")]
        ),
        "payments"
    );
    assert_eq!(
        name(
            SpanKind::Client,
            true,
            vec![
                string_attribute("rpc.system", "aws-api"),
                string_attribute("rpc.service", "DynamoDB")
            ]
        ),
        "DynamoDB"
    );
    assert_eq!(
        name(
            SpanKind::Client,
            true,
            vec![
                string_attribute("db.system", "postgresql"),
                string_attribute("db.name", "orders"),
                string_attribute("server.address", "db.internal")
            ]
        ),
        "orders@db.internal"
    );
    // A subsegment never takes the resource's service name.
    assert_eq!(name(SpanKind::Internal, true, vec![]), "span-name");
}

#[test]
fn every_name_is_sanitized_and_cut() {
    assert_eq!(sanitize_name("GET /users/(id)").unwrap(), "GET /users/id");
    assert_eq!(
        sanitize_name("invoke_agent 🤖 Travel<Bot>").unwrap(),
        "invoke_agent  TravelBot"
    );
    assert_eq!(
        sanitize_name("агент 代理 エージェント").unwrap(),
        "агент 代理 エージェント"
    );
    assert_eq!(
        sanitize_name("a@b.c:d/e%f&g#h=i+j-k\\l").unwrap(),
        "a@b.c:d/e%f&g#h=i+j-k\\l"
    );
    assert_eq!(sanitize_name("🤖()[]"), None);
    let long: String = "代".repeat(300);
    let cut = sanitize_name(&long).unwrap();
    assert_eq!(cut.chars().count(), 200);
    assert!(long.starts_with(&cut));
    // Not only the fallback: an attribute-derived name is cleaned too, and a
    // candidate with nothing left falls through to the next one.
    let s = span(
        "(fallback)",
        SpanKind::Server,
        false,
        vec![string_attribute("aws.local.service", "svc (prod) ✅")],
    );
    assert_eq!(doc(&s, None, &plain())["name"], "svc prod");
    let s = span(
        "op (v2)",
        SpanKind::Server,
        false,
        vec![string_attribute("aws.local.service", "✅✅")],
    );
    assert_eq!(doc(&s, None, &plain())["name"], "op v2");
    let s = span("💥", SpanKind::Server, false, vec![]);
    assert_eq!(doc(&s, None, &plain())["name"], "span");
}

#[test]
fn http_status_maps_to_error_fault_throttle() {
    let flags = |attrs: Vec<KeyValue>, status: Option<StatusCode>| {
        let mut s = span("GET", SpanKind::Server, false, attrs);
        s.status = status.map(|c| Status {
            code: c as i32,
            message: String::new(),
        });
        let v = doc(&s, None, &plain());
        (
            v.get("error").is_some(),
            v.get("fault").is_some(),
            v.get("throttle").is_some(),
        )
    };
    assert_eq!(
        flags(vec![int("http.response.status_code", 200)], None),
        (false, false, false)
    );
    assert_eq!(
        flags(vec![int("http.response.status_code", 404)], None),
        (true, false, false)
    );
    assert_eq!(
        flags(vec![int("http.status_code", 429)], None),
        (true, false, true)
    );
    assert_eq!(
        flags(vec![int("http.response.status_code", 503)], None),
        (false, true, false)
    );
    // The HTTP status wins over the span status, as in the collector.
    assert_eq!(
        flags(
            vec![int("http.response.status_code", 404)],
            Some(StatusCode::Error)
        ),
        (true, false, false)
    );
    assert_eq!(flags(vec![], Some(StatusCode::Error)), (false, true, false));
    assert_eq!(flags(vec![], Some(StatusCode::Ok)), (false, false, false));
    assert_eq!(
        flags(vec![string_attribute("http.status_code", "502")], None),
        (false, true, false)
    );
}

#[test]
fn http_object_and_url() {
    let s = span(
        "GET",
        SpanKind::Server,
        false,
        vec![
            string_attribute("http.request.method", "GET"),
            string_attribute("url.scheme", "https"),
            string_attribute("server.address", "api.example.com"),
            int("server.port", 8443),
            string_attribute("url.path", "/v1/agents"),
            string_attribute("url.query", "limit=5"),
            string_attribute("user_agent.original", "curl/8"),
            string_attribute("client.address", "10.0.0.7"),
            int("http.response.status_code", 200),
            string_attribute("custom", "kept"),
        ],
    );
    let v = doc(&s, None, &plain());
    assert_eq!(v["http"]["request"]["method"], "GET");
    assert_eq!(
        v["http"]["request"]["url"],
        "https://api.example.com:8443/v1/agents?limit=5"
    );
    assert_eq!(v["http"]["request"]["user_agent"], "curl/8");
    assert_eq!(v["http"]["request"]["client_ip"], "10.0.0.7");
    assert_eq!(v["http"]["request"]["x_forwarded_for"], true);
    assert_eq!(v["http"]["response"]["status"], 200);
    let meta = &v["metadata"]["default"];
    assert_eq!(meta["custom"], "kept");
    assert!(
        meta.get("http.request.method").is_none(),
        "consumed attributes are not repeated"
    );
    let s = span(
        "GET",
        SpanKind::Client,
        true,
        vec![string_attribute("url.full", "http://x/y?z")],
    );
    let v = doc(&s, None, &plain());
    assert_eq!(v["http"]["request"]["url"], "http://x/y?z");
    assert_eq!(v["namespace"], "remote");
}

#[test]
fn aws_sql_origin_and_namespace() {
    let res = resource(vec![
        string_attribute("cloud.provider", "aws"),
        string_attribute("cloud.platform", "aws_eks"),
        string_attribute("cloud.account.id", "123456789012"),
        string_attribute("k8s.cluster.name", "agents"),
        string_attribute("k8s.pod.name", "agent-0"),
        string_attribute("telemetry.sdk.name", "opentelemetry"),
        string_attribute("telemetry.sdk.language", "python"),
        string_attribute(
            "aws.log.group.arns",
            "arn:aws:logs:us-east-1:123456789012:log-group:/agents/app:*",
        ),
    ]);
    let s = span(
        "S3.ListBuckets",
        SpanKind::Client,
        true,
        vec![
            string_attribute("rpc.system", "aws-api"),
            string_attribute("rpc.service", "S3"),
            string_attribute("rpc.method", "ListBuckets"),
            string_attribute("aws.region", "eu-west-1"),
            string_attribute("aws.request_id", "GDP5Z1T6"),
        ],
    );
    let v = doc(&s, Some(&res), &plain());
    assert_eq!(v["name"], "S3");
    assert_eq!(v["namespace"], "aws");
    assert_eq!(v["aws"]["operation"], "ListBuckets");
    assert_eq!(v["aws"]["region"], "eu-west-1");
    assert_eq!(v["aws"]["request_id"], "GDP5Z1T6");
    assert_eq!(v["aws"]["account_id"], "123456789012");
    assert_eq!(v["aws"]["eks"]["cluster_name"], "agents");
    assert_eq!(v["aws"]["cloudwatch_logs"][0]["log_group"], "/agents/app");
    assert_eq!(v["aws"]["xray"]["sdk"], "opentelemetry for python");
    assert!(v.get("origin").is_none(), "subsegments carry no origin");
    let seg = doc(
        &span("GET", SpanKind::Server, false, vec![]),
        Some(&res),
        &plain(),
    );
    assert_eq!(seg["origin"], "AWS::EKS::Container");
    assert_eq!(
        seg["metadata"]["default"]["otel.resource.k8s.pod.name"],
        "agent-0"
    );

    let s = span(
        "SELECT orders",
        SpanKind::Client,
        true,
        vec![
            string_attribute("db.system", "postgresql"),
            string_attribute("db.name", "shop"),
            string_attribute("db.statement", "SELECT * FROM orders WHERE id = ?"),
            string_attribute("db.user", "app"),
        ],
    );
    let v = doc(&s, None, &plain());
    assert_eq!(v["sql"]["database_type"], "postgresql");
    assert_eq!(v["sql"]["connection_string"], "localhost/shop");
    assert_eq!(
        v["sql"]["sanitized_query"],
        "SELECT * FROM orders WHERE id = ?"
    );
    assert_eq!(v["sql"]["url"], "SELECT orders");
    assert_eq!(v["namespace"], "remote");

    // A non-AWS cloud gets no aws object.
    let gcp = resource(vec![string_attribute("cloud.provider", "gcp")]);
    assert!(doc(
        &span("x", SpanKind::Server, false, vec![]),
        Some(&gcp),
        &plain()
    )
    .get("aws")
    .is_none());
}

#[test]
fn exceptions_become_the_cause() {
    let mut s = span("tool", SpanKind::Client, true, vec![]);
    s.status = Some(Status {
        code: StatusCode::Error as i32,
        message: "boom".into(),
    });
    s.events = vec![
        span::Event {
            name: "exception".into(),
            time_unix_nano: 1_700_000_000_500_000_000,
            attributes: vec![
                string_attribute("exception.type", "ValueError"),
                string_attribute("exception.message", "bad input"),
                string_attribute(
                    "exception.stacktrace",
                    "Traceback (most recent call last):\n  File \"/app/a.py\", line 5, in f\n    g()\nValueError: bad input\n",
                ),
            ],
            dropped_attributes_count: 0,
        },
        span::Event {
            name: "retry".into(),
            time_unix_nano: 1_700_000_000_600_000_000,
            attributes: vec![int("attempt", 2)],
            dropped_attributes_count: 0,
        },
    ];
    let res = resource(vec![string_attribute("telemetry.sdk.language", "python")]);
    let v = doc(&s, Some(&res), &plain());
    assert_eq!(v["fault"], true);
    let ex = &v["cause"]["exceptions"][0];
    assert_eq!(ex["type"], "ValueError");
    assert_eq!(ex["message"], "bad input");
    assert_eq!(ex["remote"], true);
    assert_eq!(ex["stack"][0]["path"], "/app/a.py");
    assert_eq!(ex["stack"][0]["line"], 5);
    assert_eq!(ex["id"].as_str().unwrap().len(), 16);
    let events = &v["metadata"]["default"]["otel.events"];
    assert_eq!(
        events.as_array().unwrap().len(),
        1,
        "only non-exception events go to metadata"
    );
    assert_eq!(events[0]["name"], "retry");
    assert_eq!(events[0]["attributes"]["attempt"], 2);

    // No exception event: the status message is the cause.
    let mut s = span(
        "op",
        SpanKind::Internal,
        true,
        vec![string_attribute("error.type", "Timeout")],
    );
    s.status = Some(Status {
        code: StatusCode::Error as i32,
        message: "deadline exceeded".into(),
    });
    let v = doc(&s, None, &plain());
    assert_eq!(v["cause"]["exceptions"][0]["message"], "deadline exceeded");
    assert_eq!(v["cause"]["exceptions"][0]["type"], "Timeout");
}

#[test]
fn in_progress_spans_have_no_end_time() {
    let mut s = span("x", SpanKind::Server, false, vec![]);
    s.end_time_unix_nano = 0;
    let v = doc(&s, None, &plain());
    assert_eq!(v["in_progress"], true);
    assert!(v.get("end_time").is_none());
    let s = span(
        "x",
        SpanKind::Server,
        false,
        vec![attribute(
            "aws.xray.inprogress",
            any_value::Value::BoolValue(true),
        )],
    );
    let v = doc(&s, None, &plain());
    assert_eq!(v["in_progress"], true);
    assert!(v["metadata"]
        .get("default")
        .is_none_or(|m| m.get("aws.xray.inprogress").is_none()));
}

#[test]
fn annotations_from_config_attribute_and_agent_defaults() {
    let s = span(
        "invoke_agent",
        SpanKind::Internal,
        true,
        vec![
            string_attribute("gen_ai.agent.name", "travel"),
            string_attribute("gen_ai.request.model", "anthropic.claude-3"),
            int("gen_ai.usage.input_tokens", 1200),
            string_attribute("gen_ai.prompt", "a long prompt"),
            string_attribute("order.id", "o-1"),
            attribute("ratio", any_value::Value::DoubleValue(0.5)),
            attribute("flag", any_value::Value::BoolValue(true)),
            attribute(
                "aws.xray.annotations",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(any_value::Value::StringValue("flag".into())),
                    }],
                }),
            ),
            attribute(
                "list",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(any_value::Value::IntValue(1)),
                    }],
                }),
            ),
        ],
    );
    let opts = Options {
        indexed_attributes: vec!["order.id".into(), "list".into()],
        ..Options::default()
    };
    let v = doc(&s, None, &opts);
    let ann = &v["annotations"];
    assert_eq!(ann["spanwire_exported"], true);
    assert_eq!(ann["gen_ai_agent_name"], "travel");
    assert_eq!(ann["gen_ai_request_model"], "anthropic.claude-3");
    assert_eq!(ann["gen_ai_usage_input_tokens"], 1200);
    assert_eq!(ann["order_id"], "o-1");
    assert_eq!(ann["flag"], true);
    assert!(ann.get("ratio").is_none(), "not indexed");
    assert!(ann.get("list").is_none(), "arrays cannot be annotations");
    let meta = &v["metadata"]["default"];
    assert_eq!(meta["list"], serde_json::json!([1]));
    assert_eq!(meta["ratio"], 0.5);
    assert_eq!(meta["gen_ai.prompt"], "a long prompt");
    assert!(meta.get("gen_ai.agent.name").is_none());

    let all = Options {
        index_all_attributes: true,
        ..plain()
    };
    let v = doc(&s, None, &all);
    assert_eq!(v["annotations"]["ratio"], 0.5);
    let none = Options {
        agent_annotations: false,
        ..plain()
    };
    assert!(doc(&s, None, &none)["annotations"]
        .get("gen_ai_agent_name")
        .is_none());
}

#[test]
fn annotation_limits() {
    let attrs: Vec<KeyValue> = (0..80)
        .map(|i| {
            string_attribute(
                &format!("k.{i:02}-x"),
                "v".repeat(if i == 0 { 1500 } else { 3 }),
            )
        })
        .collect();
    let s = span("x", SpanKind::Server, false, attrs);
    let opts = Options {
        index_all_attributes: true,
        ..Options::default()
    };
    let v = doc(&s, None, &opts);
    let ann = v["annotations"].as_object().unwrap();
    assert_eq!(ann.len(), MAX_ANNOTATIONS);
    assert!(
        ann.contains_key("spanwire_exported"),
        "the marker always comes first"
    );
    assert_eq!(
        ann["k_00_x"].as_str().unwrap().chars().count(),
        MAX_ANNOTATION_VALUE_CHARS
    );
    for k in ann.keys() {
        assert!(
            k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{k}"
        );
    }
    // The 31 that did not fit are kept as metadata.
    assert_eq!(v["metadata"]["default"].as_object().unwrap().len(), 80 - 49);
    assert_eq!(
        annotation_key(&"é".repeat(600)).chars().count(),
        MAX_ANNOTATION_KEY_CHARS
    );
}

#[test]
fn oversize_documents_drop_the_largest_metadata_first() {
    let s = span(
        "big",
        SpanKind::Server,
        false,
        vec![
            string_attribute("small", "keep me"),
            string_attribute("huge", "x".repeat(100_000)),
            string_attribute("medium", "y".repeat(30_000)),
        ],
    );
    let d = span_to_document(&s, None, &plain()).unwrap();
    assert!(d.truncated);
    assert!(d.json.len() <= MAX_DOCUMENT_BYTES);
    let v: Value = serde_json::from_str(&d.json).unwrap();
    let meta = &v["metadata"]["default"];
    assert_eq!(meta["small"], "keep me");
    assert_eq!(
        meta["medium"].as_str().unwrap().len(),
        30_000,
        "what fits is kept whole"
    );
    assert!(meta.get("huge").is_none());
    assert_eq!(v["metadata"]["spanwire"]["truncated"], true);
    assert_eq!(v["metadata"]["spanwire"]["dropped_metadata"][0], "huge");
}

#[test]
fn oversize_documents_cut_strings_when_dropping_metadata_is_not_enough() {
    let mut s = span(
        "big",
        SpanKind::Server,
        false,
        vec![string_attribute("db.statement", "z".repeat(10))],
    );
    s.status = Some(Status {
        code: StatusCode::Error as i32,
        message: String::new(),
    });
    s.events = (0..200)
        .map(|i| span::Event {
            name: "exception".into(),
            time_unix_nano: 1,
            attributes: vec![
                string_attribute("exception.type", "E"),
                string_attribute("exception.message", format!("{i} {}", "m".repeat(2000))),
            ],
            dropped_attributes_count: 0,
        })
        .collect();
    let d = span_to_document(&s, None, &plain()).unwrap();
    assert!(d.truncated);
    assert!(d.json.len() <= MAX_DOCUMENT_BYTES, "{}", d.json.len());
    let v: Value = serde_json::from_str(&d.json).unwrap();
    let ex = v["cause"]["exceptions"].as_array().unwrap();
    assert_eq!(ex.len(), 200, "every exception kept, messages cut");
    assert!(ex[0]["message"].as_str().unwrap().len() < 2000);
    assert!(
        v["metadata"]["spanwire"]["strings_cut_to"]
            .as_i64()
            .unwrap()
            < 2000
    );

    // Nothing can make a document too big: thousands of exceptions with stacks.
    let mut s = span("worst", SpanKind::Server, false, vec![]);
    s.events = (0..5000)
        .map(|_| span::Event {
            name: "exception".into(),
            time_unix_nano: 1,
            attributes: vec![string_attribute("exception.message", "m".repeat(100))],
            dropped_attributes_count: 0,
        })
        .collect();
    let d = span_to_document(&s, None, &plain()).unwrap();
    assert!(d.json.len() <= MAX_DOCUMENT_BYTES);
    let v: Value = serde_json::from_str(&d.json).unwrap();
    assert_eq!(v["name"], "worst");
    assert_eq!(v["metadata"]["spanwire"]["exceptions_dropped"], true);
}

#[test]
fn loop_marker_is_recognised_however_it_comes_back() {
    assert!(is_loop_marked(&[attribute(
        LOOP_MARKER,
        any_value::Value::BoolValue(true)
    )]));
    assert!(is_loop_marked(&[attribute(
        "annotation.spanwire_exported",
        any_value::Value::BoolValue(true)
    )]));
    assert!(!is_loop_marked(&[attribute(
        "not_spanwire_exported",
        any_value::Value::BoolValue(true)
    )]));
    assert!(!is_loop_marked(&[string_attribute("service.name", "x")]));
    let map = any_value::Value::KvlistValue(opentelemetry_proto::tonic::common::v1::KeyValueList {
        values: vec![attribute(LOOP_MARKER, any_value::Value::BoolValue(true))],
    });
    assert!(is_loop_marked(&[attribute("aws.xray.annotations", map)]));
}

#[test]
fn convert_reports_bad_spans_and_keeps_the_rest() {
    let good = span("good", SpanKind::Server, false, vec![]);
    let mut bad = span("bad", SpanKind::Server, false, vec![]);
    bad.trace_id.clear();
    let data = vec![ResourceSpans {
        resource: None,
        scope_spans: vec![opentelemetry_proto::tonic::trace::v1::ScopeSpans {
            spans: vec![bad, good],
            ..Default::default()
        }],
        ..Default::default()
    }];
    let c = convert(&data, &plain());
    assert_eq!(c.documents.len(), 1);
    assert_eq!(c.errors.len(), 1);
    assert!(c.errors[0].to_string().contains("span bad"));
    // Deterministic: the same span gives the same bytes (retries are idempotent).
    assert_eq!(convert(&data, &plain()).documents, c.documents);
}

#[test]
fn agent_annotations_follow_the_agent_trace_model() {
    // Strands `chat` (INTERNAL) over botocore `chat <model>` (CLIENT), both
    // with the call's usage, under `invoke_agent` with running totals.
    let with = |mut s: Span, id: u8, parent: u8| {
        s.span_id = vec![id; 8];
        s.parent_span_id = if parent == 0 { vec![] } else { vec![parent; 8] };
        s
    };
    let agent = with(
        span(
            "invoke_agent travel",
            SpanKind::Internal,
            false,
            vec![
                string_attribute("gen_ai.operation.name", "invoke_agent"),
                string_attribute("gen_ai.agent.name", "travel"),
                string_attribute("session.id", "s1"),
                int("gen_ai.usage.input_tokens", 900),
            ],
        ),
        1,
        0,
    );
    let strands = with(
        span(
            "chat",
            SpanKind::Internal,
            true,
            vec![
                string_attribute("gen_ai.operation.name", "chat"),
                int("gen_ai.usage.input_tokens", 64),
            ],
        ),
        2,
        1,
    );
    let botocore = with(
        span(
            "chat m",
            SpanKind::Client,
            true,
            vec![
                string_attribute("gen_ai.operation.name", "chat"),
                string_attribute("gen_ai.system", "aws.bedrock"),
                int("gen_ai.usage.input_tokens", 64),
            ],
        ),
        3,
        2,
    );
    let batch = vec![ResourceSpans {
        scope_spans: vec![opentelemetry_proto::tonic::trace::v1::ScopeSpans {
            spans: vec![botocore, strands, agent],
            ..Default::default()
        }],
        ..Default::default()
    }];
    let out = convert(&batch, &plain());
    let docs: Vec<Value> = out
        .documents
        .iter()
        .map(|d| serde_json::from_str(&d.json).unwrap())
        .collect();
    let by_id = |id: &str| docs.iter().find(|d| d["id"] == id).unwrap();
    let client = by_id("0303030303030303");
    assert_eq!(client["annotations"]["gen_ai_usage_counted"], true);
    assert_eq!(client["annotations"]["gen_ai_usage_input_tokens"], 64);
    assert_eq!(client["annotations"]["gen_ai_agent_name"], "travel");
    assert_eq!(client["annotations"]["session_id"], "s1");
    let framework = by_id("0202020202020202");
    assert_eq!(framework["annotations"]["gen_ai_usage_counted"], false);
    assert!(framework["annotations"]
        .get("gen_ai_usage_input_tokens")
        .is_none());
    let root = by_id("0101010101010101");
    assert_eq!(root["annotations"]["gen_ai_usage_counted"], false);
    assert_eq!(root["annotations"]["gen_ai_agent_name"], "travel");
}
