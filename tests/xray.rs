//! The `awsxray` exporter end to end: OTLP spans and every Bedrock fixture go
//! through a real spanwire to moto server's X-Ray, and BatchGetTraces returns
//! each segment with its parent link and annotations.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{
    aws_test_env, aws_test_sdk_config, free_port, http_request, post_spans, Daemon, Moto,
};
use serde_json::Value;
use spanwire::convert::{bedrock, xray};

fn fixtures() -> Vec<(String, String)> {
    let dir = format!("{}/tests/fixtures/bedrock", env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 13, "every Bedrock fixture is used");
    out
}

/// Fetches every segment document of `trace_ids` from X-Ray (moto).
async fn segments(client: &aws_sdk_xray::Client, trace_ids: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for ids in trace_ids.chunks(5) {
        let r = client
            .batch_get_traces()
            .set_trace_ids(Some(ids.to_vec()))
            .send()
            .await
            .unwrap();
        for t in r.traces() {
            for s in t.segments() {
                out.push(serde_json::from_str(s.document().unwrap()).unwrap());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_and_bedrock_spans_arrive_in_xray() {
    let moto = Moto::start();
    let (otlp, bedrock_port, health) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{otlp}"}}
  bedrock:
    endpoint: "127.0.0.1:{bedrock_port}"
    idle_timeout: 300ms
    resource: {{service.name: travel-app}}
processors:
  batch: {{timeout: 50ms}}
exporters:
  awsxray:
    region: us-east-1
    endpoint: "{endpoint}"
    indexed_attributes: [test.tag]
    retry_on_failure: {{initial_interval: 50ms}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [otlp, bedrock], processors: [batch], exporters: [awsxray]}}
"#,
        endpoint = moto.endpoint()
    );
    let daemon = Daemon::start_with_env(&config, health, &aws_test_env());

    // What should arrive: computed offline with the same converters.
    let opts = bedrock::Options {
        resource_attributes: vec![spanwire::signal::string_attribute(
            "service.name",
            "travel-app",
        )],
        ..Default::default()
    };
    let mut expected: BTreeMap<(String, String), Value> = BTreeMap::new();
    for (name, text) in fixtures() {
        let events = bedrock::parse_events(&text).unwrap();
        let c = bedrock::convert(&events, &opts);
        let docs = xray::convert(&c.resource_spans, &xray::Options::default());
        assert!(docs.errors.is_empty(), "{name}: {:?}", docs.errors);
        assert!(!docs.documents.is_empty(), "{name} gives documents");
        for d in docs.documents {
            expected.insert(
                (d.trace_id.clone(), d.id.clone()),
                serde_json::from_str(&d.json).unwrap(),
            );
        }
        let r = http_request(
            "POST",
            bedrock_port,
            "/v1/bedrock/traces",
            &[("content-type", "application/json")],
            text.into_bytes(),
        )
        .await;
        assert_eq!(
            r.status,
            200,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let r = post_spans(otlp, 20, "xray-e2e").await;
    assert_eq!(r.status, 200);
    let otlp_req = common::agent_spans(20, "xray-e2e");
    let otlp_docs = xray::convert(
        &otlp_req.resource_spans,
        &xray::Options {
            indexed_attributes: vec!["test.tag".into()],
            ..Default::default()
        },
    );
    for d in otlp_docs.documents {
        expected.insert(
            (d.trace_id.clone(), d.id.clone()),
            serde_json::from_str(&d.json).unwrap(),
        );
    }

    let trace_ids: Vec<String> = expected
        .keys()
        .map(|(t, _)| t.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let client = aws_sdk_xray::Client::new(&aws_test_sdk_config(&moto.endpoint()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        let got = segments(&client, &trace_ids).await;
        if got.len() >= expected.len() || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut seen: BTreeMap<(String, String), Value> = BTreeMap::new();
    for doc in got {
        let key = (
            doc["trace_id"].as_str().unwrap().to_string(),
            doc["id"].as_str().unwrap().to_string(),
        );
        if let Some(prev) = seen.insert(key.clone(), doc.clone()) {
            panic!("{key:?} arrived twice:\n{prev}\n{doc}\n{}", daemon.logs());
        }
    }
    let missing: Vec<_> = expected.keys().filter(|k| !seen.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} segments missing, e.g. {:?}\n{}",
        missing.len(),
        expected.len(),
        missing.first(),
        daemon.logs()
    );
    assert_eq!(seen.len(), expected.len());

    let mut subsegments = 0;
    for (key, want) in &expected {
        let got = &seen[key];
        for field in [
            "name",
            "parent_id",
            "type",
            "start_time",
            "end_time",
            "annotations",
            "namespace",
        ] {
            assert_eq!(got.get(field), want.get(field), "{key:?}: {field}");
        }
        assert_eq!(
            got["annotations"]["spanwire_exported"], true,
            "{key:?}: loop-guard mark"
        );
        if got["type"] == "subsegment" {
            subsegments += 1;
            let parent = (
                key.0.clone(),
                got["parent_id"].as_str().unwrap().to_string(),
            );
            assert!(
                seen.contains_key(&parent),
                "{key:?}: parent {parent:?} is in X-Ray too"
            );
        }
    }
    assert!(
        subsegments > expected.len() / 2,
        "agent traces are mostly subsegments"
    );
    // Agent annotations make the traces filterable by model and tokens.
    assert!(seen
        .values()
        .any(|d| d["annotations"]["gen_ai_request_model"].is_string()));
    assert!(seen
        .values()
        .any(|d| d["annotations"]["gen_ai_usage_input_tokens"].is_number()));
    assert!(seen
        .values()
        .any(|d| d["annotations"]["test_tag"] == "xray-e2e"));
}
