//! Config: every file in `pipelines/` validates; bad configs are reported
//! with the right file, line and component.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn validate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spanwire"))
        .arg("validate")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().to_string()
}

#[test]
fn every_shipped_pipeline_validates() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let p = path.to_string_lossy().to_string();
        let (ok, _, err) = validate(&["--config", &p]);
        assert!(ok, "{p} does not validate:\n{err}");
        assert!(spanwire::config::load_files(&[p], &spanwire::components()).is_ok());
        n += 1;
    }
    assert!(
        n >= 3,
        "expected local, sidecar and gateway pipelines, found {n}"
    );
}

const GOOD: &str = "receivers:
  otlp:
    protocols:
      grpc:
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
";

#[test]
fn unknown_key_wrong_type_and_undefined_component_are_reported_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let text = "receivers:
  otlp:
    protocols:
      grpc:
        endpiont: localhost:4317
processors:
  batch:
    send_batch_size: lots
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug, otlp/missing]
";
    let f = write(&dir, "bad.yaml", text);
    let (ok, _, err) = validate(&["--config", &f]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{f}:5:9: receivers::otlp: protocols.grpc.endpiont: unknown field `endpiont`"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{f}:8:22: processors::batch: send_batch_size: invalid type: string \"lots\""
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{f}:16:26: service::pipelines::traces: exporter `otlp/missing` is used but not defined"
        )),
        "{err}"
    );
    assert!(err.contains("3 error(s) found"), "{err}");
}

#[test]
fn unsupported_signal_unknown_type_and_unused_warning() {
    let dir = tempfile::tempdir().unwrap();
    let text = "receivers:
  otlp:
    protocols: {http: }
  kafka: {}
exporters:
  debug:
  file/unused: {path: /tmp/x}
service:
  pipelines:
    spans:
      receivers: [otlp]
      exporters: [debug]
    traces:
      receivers: [otlp]
      exporters: [debug]
";
    let f = write(&dir, "c.yaml", text);
    let (ok, _, err) = validate(&["--config", &f]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{f}:4:3: receivers::kafka: unknown receiver type `kafka`"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{f}:10:5: service::pipelines::spans: unknown pipeline type `spans`"
        )),
        "{err}"
    );

    // Without the errors, the unused exporter is only a warning.
    let ok_text = text.replace("  kafka: {}\n", "").replace(
        "    spans:\n      receivers: [otlp]\n      exporters: [debug]\n",
        "",
    );
    let f = write(&dir, "w.yaml", &ok_text);
    let (ok, _, err) = validate(&["--config", &f]);
    assert!(ok, "{err}");
    assert!(
        err.contains("exporters::file/unused: defined but not used"),
        "{err}"
    );
}

#[test]
fn later_files_override_earlier_and_env_is_substituted() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(&dir, "a.yaml", GOOD);
    let b = write(
        &dir,
        "b.yaml",
        "exporters:\n  debug:\n    verbosity: ${env:SPANWIRE_TEST_VERBOSITY:-detailed}\n",
    );
    let cfg = spanwire::config::load_files(&[a.clone(), b], &spanwire::components()).unwrap();
    let debug = cfg.exporters.iter().find(|e| e.id.kind == "debug").unwrap();
    match debug
        .config
        .config_as()
        .downcast_ref::<spanwire::exporters::debug::DebugConfig>()
    {
        Some(d) => assert_eq!(d.verbosity, spanwire::exporters::debug::Verbosity::Detailed),
        None => panic!("{:?}", debug.config),
    }
    // A bad override is reported in the file that made it.
    let c = write(
        &dir,
        "c.yaml",
        "exporters:\n  debug:\n    verbosity: loud\n",
    );
    let (ok, _, err) = validate(&["--config", &a, "--config", &c]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{c}:3:16: exporters::debug: verbosity: unknown variant `loud`"
        )),
        "{err}"
    );
}

#[test]
fn yaml_syntax_error_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "s.yaml",
        "receivers:\n  otlp: [unclosed\nservice: {}\n",
    );
    let (ok, _, err) = validate(&["--config", &f]);
    assert!(!ok);
    assert!(err.contains(&format!("{f}:")), "{err}");
    let (ok, _, err) = validate(&["--config", "/nonexistent/spanwire.yaml"]);
    assert!(!ok);
    assert!(err.contains("cannot read config file"), "{err}");
}

#[test]
fn run_fails_clearly_when_a_port_is_taken() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "busy.yaml",
        &format!(
            "receivers:\n  otlp:\n    protocols:\n      http: {{endpoint: \"127.0.0.1:{port}\"}}\nexporters:\n  debug:\nservice:\n  telemetry: {{metrics: {{address: \"\"}}}}\n  pipelines:\n    logs: {{receivers: [otlp], exporters: [debug]}}\n"
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_spanwire"))
        .args(["run", "--config", &f])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on `127.0.0.1:{port}`")),
        "{err}"
    );
    drop(busy);
}

#[test]
fn connectors_need_both_sides_and_the_right_signals() {
    let dir = tempfile::tempdir().unwrap();
    let one_sided = write(
        &dir,
        "one.yaml",
        "receivers:\n  otlp:\n    protocols: {http: {endpoint: \"127.0.0.1:0\"}}\nconnectors:\n  agentmetrics: {}\nexporters:\n  debug: {}\nservice:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [agentmetrics]}\n",
    );
    let (ok, _, err) = validate(&["--config", &one_sided]);
    assert!(!ok);
    assert!(
        err.contains("connectors::agentmetrics")
            && err.contains("no pipeline lists it as a receiver"),
        "{err}"
    );
    let wrong_signal = write(
        &dir,
        "wrong.yaml",
        "receivers:\n  otlp:\n    protocols: {http: {endpoint: \"127.0.0.1:0\"}}\nconnectors:\n  agentmetrics: {histogram_buckets: [1, 0.5]}\nexporters:\n  debug: {}\nservice:\n  pipelines:\n    metrics: {receivers: [otlp], exporters: [agentmetrics]}\n    logs: {receivers: [agentmetrics], exporters: [debug]}\n",
    );
    let (ok, _, err) = validate(&["--config", &wrong_signal]);
    assert!(!ok);
    assert!(err.contains("strictly increasing"), "{err}");
    let good = write(
        &dir,
        "good.yaml",
        "receivers:\n  otlp:\n    protocols: {http: {endpoint: \"127.0.0.1:0\"}}\nconnectors:\n  agentmetrics: {}\nexporters:\n  prometheus: {endpoint: \"127.0.0.1:8889\"}\nservice:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [agentmetrics]}\n    metrics: {receivers: [agentmetrics], exporters: [prometheus]}\n",
    );
    let (ok, _, err) = validate(&["--config", &good]);
    assert!(ok, "{err}");
}

#[test]
fn cloudwatch_exporters_report_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |exporter: &str, signal: &str| {
        format!(
            "receivers:\n  otlp:\n    protocols: {{http: {{endpoint: \"127.0.0.1:0\"}}}}\nexporters:\n  {exporter}\nservice:\n  pipelines:\n    {signal}: {{receivers: [otlp], exporters: [{}]}}\n",
            exporter.split(':').next().unwrap()
        )
    };
    for (i, (exporter, signal, want)) in [
        (
            "awsemf: {log_group_name: \"/m/{Pod}\"}",
            "metrics",
            "unknown placeholder `{Pod}`",
        ),
        (
            "awsemf: {metric_declarations: [{metric_name_selectors: [\"(\"]}]}",
            "metrics",
            "not a valid regex",
        ),
        (
            "awsemf: {metric_declarations: [{dimensions: [[a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q,r,s,t,u,v,w,x,y,z,aa,bb,cc,dd,ee]], metric_name_selectors: [x]}]}",
            "metrics",
            "at most 30",
        ),
        ("awsemf: {log_retention: 4}", "metrics", "log_retention 4"),
        ("awsemf: {namespace: \"AWS/Bedrock\"}", "metrics", "not a valid CloudWatch namespace"),
        ("awsemf: {storage_resolution: 5}", "metrics", "1 or 60"),
        ("awsemf: {}", "traces", "does not support traces"),
        ("awscloudwatchlogs: {log_group_name: g}", "logs", "log_stream_name"),
        (
            "awscloudwatchlogs: {log_group_name: g, log_stream_name: s, endpoint: \"localhost:4566\"}",
            "logs",
            "must start with http",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let p = write(&dir, &format!("c{i}.yaml"), &cfg(exporter, signal));
        let (ok, _, err) = validate(&["--config", &p]);
        assert!(!ok, "{exporter} should not validate");
        assert!(err.contains(want), "{exporter}: {err}");
    }
    let p = write(
        &dir,
        "good.yaml",
        &cfg(
            "awscloudwatchlogs: {log_group_name: \"/a/{ServiceName}\", log_stream_name: \"{PodName}\", log_retention: 14}",
            "logs",
        ),
    );
    let (ok, _, err) = validate(&["--config", &p]);
    assert!(ok, "{err}");
}

#[test]
fn the_collector_config_for_transaction_search_validates_unchanged() {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/collector/transaction-search.yaml"
    );
    let (ok, _, err) = validate(&["--config", p]);
    assert!(ok, "{err}");
    let cfg = spanwire::config::load_files(&[p.to_string()], &spanwire::components()).unwrap();
    assert_eq!(
        cfg.service.telemetry.logs.effective_format(),
        spanwire::config::LogFormat::Json
    );
}

#[test]
fn exporter_authenticators_are_checked_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let config = |authenticator: &str, started: &str| {
        format!(
            "extensions:\n  health_check: {{}}\n  sigv4auth: {{region: us-east-1}}\n\
             receivers:\n  otlp: {{protocols: {{http: {{}}}}}}\n\
             exporters:\n  otlphttp:\n    traces_endpoint: https://xray.us-east-1.amazonaws.com/v1/traces\n    auth:\n      authenticator: {authenticator}\n\
             service:\n  extensions: [{started}]\n  pipelines:\n    traces: {{receivers: [otlp], exporters: [otlphttp]}}\n"
        )
    };
    for (authenticator, started, message) in [
        (
            "sigv4auth/missing",
            "sigv4auth",
            "extension `sigv4auth/missing` is not defined under `extensions`",
        ),
        (
            "health_check",
            "health_check",
            "extension `health_check` is a health_check, not an authenticator",
        ),
        (
            "sigv4auth",
            "health_check",
            "extension `sigv4auth` must also be listed under `service.extensions`",
        ),
    ] {
        let f = write(&dir, "auth.yaml", &config(authenticator, started));
        let (ok, _, err) = validate(&["--config", &f]);
        assert!(!ok, "{authenticator}: accepted");
        assert!(
            err.contains(&format!(
                "{f}:10:22: exporters::otlphttp: auth.authenticator: {message}"
            )),
            "{err}"
        );
    }
    // Named right, it validates; and a traces-only otlphttp is refused in a logs pipeline.
    let f = write(&dir, "auth.yaml", &config("sigv4auth", "sigv4auth"));
    let (ok, _, err) = validate(&["--config", &f]);
    assert!(ok, "{err}");
    let logs = config("sigv4auth", "sigv4auth").replace("traces: {receivers", "logs: {receivers");
    let f = write(&dir, "auth.yaml", &logs);
    let (ok, _, err) = validate(&["--config", &f]);
    assert!(!ok);
    assert!(
        err.contains("exporter `otlphttp` does not support logs"),
        "{err}"
    );
}

#[test]
fn the_cloudwatch_logs_endpoint_needs_its_group_and_stream_headers() {
    let dir = tempfile::tempdir().unwrap();
    let config = |headers: &str| {
        format!(
            "receivers:\n  otlp: {{protocols: {{http: {{}}}}}}\n\
             exporters:\n  otlphttp:\n    logs_endpoint: https://logs.us-east-1.amazonaws.com/v1/logs\n    headers: {{{headers}}}\n\
             service:\n  pipelines:\n    logs: {{receivers: [otlp], exporters: [otlphttp]}}\n"
        )
    };
    let f = write(&dir, "l.yaml", &config("x-aws-log-group: agents"));
    let (ok, _, err) = validate(&["--config", &f]);
    assert!(!ok);
    assert!(
        err.contains("exporters::otlphttp: headers: the CloudWatch Logs OTLP endpoint needs `x-aws-log-stream`"),
        "{err}"
    );
    let f = write(
        &dir,
        "l.yaml",
        &config("x-aws-log-group: agents, x-aws-log-stream: s"),
    );
    let (ok, _, err) = validate(&["--config", &f]);
    assert!(ok, "{err}");
}

#[test]
fn an_authenticator_list_is_checked_element_by_element() {
    let dir = tempfile::tempdir().unwrap();
    let config = |list: &str, setter: &str| {
        format!(
            "extensions:\n  sigv4auth: {{region: us-east-1}}\n  headers_setter:\n    headers: {setter}\n\
             receivers:\n  otlp: {{protocols: {{http: {{include_metadata: true}}}}}}\n\
             exporters:\n  otlphttp:\n    logs_endpoint: https://logs.us-east-1.amazonaws.com/v1/logs\n    auth:\n      authenticator: {list}\n\
             service:\n  extensions: [sigv4auth, headers_setter]\n  pipelines:\n    logs: {{receivers: [otlp], exporters: [otlphttp]}}\n"
        )
    };
    let setter = "[{key: x-aws-log-group, from_context: x-aws-log-group}, {key: x-aws-log-stream, value: s}]";
    // Headers from the client's metadata, then signed: valid, and the
    // CloudWatch Logs header check is left to the setter.
    let f = write(
        &dir,
        "a.yaml",
        &config("[headers_setter, sigv4auth]", setter),
    );
    let (ok, _, err) = validate(&["--config", &f]);
    assert!(ok, "{err}");
    // The signer must come last: its signature covers the headers set before it.
    let f = write(
        &dir,
        "a.yaml",
        &config("[sigv4auth, headers_setter]", setter),
    );
    let (ok, _, err) = validate(&["--config", &f]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{f}:11:34: exporters::otlphttp: auth.authenticator: `headers_setter` comes after `sigv4auth`, which signs the request"
        )),
        "{err}"
    );
    // An unknown id in the list is named at its own position.
    let f = write(&dir, "a.yaml", &config("[headers_setter, nope]", setter));
    let (ok, _, err) = validate(&["--config", &f]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{f}:11:39: exporters::otlphttp: auth.authenticator: extension `nope` is not defined under `extensions`"
        )),
        "{err}"
    );
    // headers_setter's own rules.
    for (setter, message) in [
        ("[]", "headers: list at least one header"),
        (
            "[{key: x-aws-log-group}]",
            "headers[0] (`x-aws-log-group`): set `value` or `from_context`",
        ),
        (
            "[{key: a, value: b, from_context: c}]",
            "headers[0] (`a`): set `value` or `from_context`, not both",
        ),
        (
            "[{key: a, value: b, action: delete}]",
            "headers[0] (`a`): action `delete` takes no value or from_context",
        ),
        (
            "[{key: a, value: b, default_value: c}]",
            "headers[0] (`a`): `default_value` goes with `from_context`",
        ),
        ("[{key: 'a b', value: c}]", "`key` is not a header name"),
    ] {
        let f = write(
            &dir,
            "a.yaml",
            &config("[headers_setter, sigv4auth]", setter),
        );
        let (ok, _, err) = validate(&["--config", &f]);
        assert!(!ok, "{setter}: accepted");
        assert!(
            err.contains("extensions::headers_setter") && err.contains(message),
            "{setter}: {err}"
        );
    }
}
