//! `spanwire convert`: Bedrock trace events and OTLP/JSON to X-Ray segment
//! documents on stdout, exactly as the awsxray exporter would send them.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;

fn fixture(dir: &str, name: &str) -> String {
    format!("{}/tests/fixtures/{dir}/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spanwire"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn bedrock_to_xray_prints_one_valid_document_per_span() {
    let f = fixture("bedrock", "oi-py_multi-agent-3-level-supervisor.json");
    let (code, out, err) = run(&["convert", "--from", "bedrock", "--to", "xray", &f]);
    assert_eq!(code, 0, "{err}");
    let (_, otlp, _) = run(&["convert", "--from", "bedrock", "--to", "otlp-json", &f]);
    let spans = otlp.matches("\"spanId\"").count();
    let docs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), spans, "one document per span");
    let ids: std::collections::HashSet<&str> =
        docs.iter().map(|d| d["id"].as_str().unwrap()).collect();
    for d in &docs {
        let t = d["trace_id"].as_str().unwrap();
        assert!(t.starts_with("1-") && t.len() == 35, "{t}");
        assert_eq!(d["annotations"]["spanwire_exported"], true);
        if let Some(p) = d["parent_id"].as_str() {
            assert!(ids.contains(p), "parent {p} is among the documents");
        }
    }
    assert_eq!(
        docs.iter().filter(|d| d.get("type").is_none()).count(),
        1,
        "one segment: the invocation"
    );
}

#[test]
fn otlp_json_to_xray_with_indexed_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("req.json");
    std::fs::write(
        &path,
        r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
          "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
          "name":"GET /cart (v2)","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000001000000000",
          "attributes":[{"key":"order.id","value":{"stringValue":"o-7"}},{"key":"http.response.status_code","value":{"intValue":"503"}}]}]}]}]}"#,
    )
    .unwrap();
    let (code, out, err) = run(&[
        "convert",
        "--from",
        "otlp-json",
        "--to",
        "xray",
        "--indexed-attribute",
        "order.id",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let d: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(d["name"], "checkout");
    assert_eq!(d["trace_id"], "1-5b8efff7-98038103d269b633813fc60c");
    assert_eq!(d["annotations"]["order_id"], "o-7");
    assert_eq!(d["fault"], true);
    assert_eq!(d["http"]["response"]["status"], 503);

    // A span that cannot become a document is reported, and the exit code says so.
    std::fs::write(
        &path,
        r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"","spanId":"eee19b7ec3c1b174","name":"x","startTimeUnixNano":"1"}]}]}]}"#,
    )
    .unwrap();
    let (code, out, err) = run(&[
        "convert",
        "--from",
        "otlp-json",
        "--to",
        "xray",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, 3);
    assert!(out.is_empty());
    assert!(err.contains("trace id"), "{err}");
}
