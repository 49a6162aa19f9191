//! Real agent software from PyPI against spanwire, with the model's own
//! usage log as the truth: a Strands Agents agent (strands-agents) with two
//! tools, instrumented as AWS documents for AgentCore observability (ADOT
//! Python's `opentelemetry-instrument`, `AGENT_OBSERVABILITY_ENABLED`, the
//! botocore instrumentation, the session id as baggage), calling a local
//! Bedrock Runtime stand-in (`tests/python/bedrock_runtime.py`: moto has no
//! Bedrock Runtime) that throttles and refuses an invalid model id. One
//! agent sends over OTLP/HTTP with only ADOT's and botocore's
//! instrumentation; another over OTLP/gRPC with every instrumentation in
//! the virtualenv loaded (Traceloop's and OpenInference's Bedrock spans
//! too: one model call reported by four spans).
//!
//! Prometheus (`agentmetrics` → `prometheus`) must show exactly the tokens
//! and model requests the stand-in logged, per agent, with throttles
//! counted on their own and failures as a person means them.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{aws_test_env, aws_test_sdk_config, free_port, http_request, Daemon, Moto, Sink};

/// The virtualenv with the agent frameworks (installed by `scripts/test`).
fn agents_python(bin: &str) -> PathBuf {
    let dir = std::env::var("SPANWIRE_AGENTS_VENV").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-agents"),
        PathBuf::from,
    );
    let p = dir.join("bin").join(bin);
    assert!(
        p.exists(),
        "{} is missing: run scripts/test, which installs tests/requirements-agents.txt",
        p.display()
    );
    p
}

/// The Bedrock Runtime stand-in, on a free port; its log is the truth.
struct BedrockRuntime {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl BedrockRuntime {
    fn start() -> BedrockRuntime {
        let dir = tempfile::tempdir().unwrap();
        let (port_file, log) = (dir.path().join("port"), dir.path().join("usage.jsonl"));
        let child = Command::new(agents_python("python"))
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/python/bedrock_runtime.py"
            ))
            .args([&port_file, &log])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(t) = std::fs::read_to_string(&port_file) {
                if let Ok(p) = t.trim().parse() {
                    break p;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the Bedrock stand-in did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        BedrockRuntime {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    fn entries(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for BedrockRuntime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tests/python/strands_agent.py` under `opentelemetry-instrument`
/// (ADOT), sending OTLP over `protocol` to `endpoint`.
fn run_strands(
    bedrock: u16,
    protocol: &str,
    endpoint: &str,
    plan: &serde_json::Value,
    disabled: &str,
) -> String {
    let mut cmd = Command::new(agents_python("opentelemetry-instrument"));
    cmd.arg(agents_python("python"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/strands_agent.py"
        ))
        .arg(format!("http://127.0.0.1:{bedrock}"))
        .arg(plan.to_string())
        .env("OTEL_PYTHON_DISTRO", "aws_distro")
        .env("OTEL_PYTHON_CONFIGURATOR", "aws_configurator")
        .env("AGENT_OBSERVABILITY_ENABLED", "true")
        .env("OTEL_TRACES_EXPORTER", "otlp")
        .env("OTEL_METRICS_EXPORTER", "none")
        .env("OTEL_LOGS_EXPORTER", "none")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", disabled)
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            format!("service.name={}-svc", plan["agent"].as_str().unwrap()),
        )
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1");
    run_agent(&mut cmd, "the Strands agent")
}

/// Runs agent software with the stand-in's test credentials, piped; its
/// output, or the test fails with it.
fn run_agent(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_PROFILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Prometheus samples: (name, labels, value), parsed from the text format.
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (head, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (head, ""),
        };
        let mut map = BTreeMap::new();
        // Label values here hold no `",` (model ids, agent names, types).
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").unwrap();
            map.insert(k.to_string(), v.trim_end_matches('"').to_string());
        }
        out.push((name.to_string(), map, value.parse().unwrap()));
    }
    out
}

fn sum(s: &[(String, BTreeMap<String, String>, f64)], name: &str, filter: &[(&str, &str)]) -> f64 {
    s.iter()
        .filter(|(n, l, _)| {
            n == name
                && filter
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// `tokens_over` and `cost_over` lines: between the sessions' totals, so
/// some sessions are kept and some are not (checked).
const TOKENS_OVER: u64 = 400;
const COST_OVER: f64 = 0.0005;

/// Spans per session (by the `session.id` attribute ADOT copies from
/// baggage onto every span).
fn spans_by_session(sink: &Sink) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for s in sink.spans() {
        let sid = s
            .attributes
            .iter()
            .find(|kv| kv.key == "session.id")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref().cloned());
        if let Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(sid)) =
            sid
        {
            *out.entry(sid).or_default() += 1;
        }
    }
    out
}

/// Input and output tokens and model requests in a log group's EMF events
/// (stream `agentmetrics`), summed over every flush.
/// Also every agent name the events carry.
async fn emf_numbers(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
) -> ((f64, f64, f64), Vec<String>) {
    let (mut input, mut output, mut calls) = (0.0, 0.0, 0.0);
    let mut agents = Vec::new();
    for (_, m) in common::read_log_stream(logs, group, "agentmetrics").await {
        let v: serde_json::Value = serde_json::from_str(&m).unwrap();
        let agent = v["gen_ai.agent.name"].as_str().unwrap_or("").to_string();
        if !agents.contains(&agent) {
            agents.push(agent);
        }
        if let Some(n) = v["agent.tokens"].as_f64() {
            match v["gen_ai.token.type"].as_str() {
                Some("input") => input += n,
                Some("output") => output += n,
                _ => {}
            }
        }
        if v["gen_ai.operation.name"] == "chat" {
            calls += v["agent.invocations"].as_f64().unwrap_or(0.0);
        }
    }
    ((input, output, calls), agents)
}

/// Prometheus samples once `want` model requests are counted (or 30 s
/// passed), and one flush later, so nothing is half-counted.
async fn settled_samples(
    prom: u16,
    filter: &[(&str, &str)],
    want: f64,
) -> (String, Vec<(String, BTreeMap<String, String>, f64)>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http_request("GET", prom, "/metrics", &[], Vec::new()).await;
        let s = samples(&String::from_utf8_lossy(&r.body));
        if sum(&s, "agent_invocations_total", filter) >= want || Instant::now() > deadline {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let r = http_request("GET", prom, "/metrics", &[], Vec::new()).await;
            let text = String::from_utf8_lossy(&r.body).to_string();
            let s = samples(&text);
            return (text, s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Truth {
    input: f64,
    output: f64,
    requests: f64,
    throttled: f64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strands_with_adot_and_botocore_numbers_equal_the_models_usage() {
    let bedrock = BedrockRuntime::start();
    let moto = Moto::start();
    // Sinks: every span, and what each tail-sampling policy keeps.
    let (all, by_tokens, by_cost) = (
        Sink::start().await,
        Sink::start().await,
        Sink::start().await,
    );
    let (grpc, http, prom, health) = (free_port(), free_port(), free_port(), free_port());
    let live = free_port();
    let config = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      http: {{endpoint: "127.0.0.1:{http}"}}
processors:
  batch: {{timeout: 100ms}}
  tail_sampling/tokens:
    group_by: session
    session_idle: 1500ms
    policies: [{{name: big, type: tokens_over, tokens_over: {{tokens: {TOKENS_OVER}}}}}]
  tail_sampling/cost:
    group_by: session
    session_idle: 1500ms
    policies: [{{name: dear, type: cost_over, cost_over: {{usd: {COST_OVER}}}}}]
connectors:
  agentmetrics:
    metrics_flush_interval: 200ms
    trace_idle: 1s
    generic_span_metrics: false
exporters:
  prometheus:
    endpoint: "127.0.0.1:{prom}"
    namespace: ""
  live:
    endpoint: "127.0.0.1:{live}"
  awsemf:
    region: us-east-1
    endpoint: "{}"
    namespace: Agents
    log_group_name: "/spanwire/{{ServiceName}}/metrics"
    log_stream_name: "agentmetrics"
    retry_on_failure: {{initial_interval: 50ms}}
  otlp/all: {{endpoint: "http://127.0.0.1:{}"}}
  otlp/tokens: {{endpoint: "http://127.0.0.1:{}"}}
  otlp/cost: {{endpoint: "http://127.0.0.1:{}"}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [agentmetrics, live, otlp/all]}}
    traces/tokens: {{receivers: [otlp], processors: [tail_sampling/tokens], exporters: [otlp/tokens]}}
    traces/cost: {{receivers: [otlp], processors: [tail_sampling/cost], exporters: [otlp/cost]}}
    metrics: {{receivers: [agentmetrics], exporters: [prometheus, awsemf]}}
"#,
        moto.endpoint(),
        all.grpc_port,
        by_tokens.grpc_port,
        by_cost.grpc_port,
    );
    let daemon = Daemon::start_with_env(&config, health, &aws_test_env());
    let model = "us.anthropic.claude-3-5-haiku-20241022-v1:0";
    // Each prompt starts with its session id: the stand-in logs requests by it.
    let travel = serde_json::json!({"agent": "travel", "model": model, "sessions": [
        {"id": "t1", "prompts": ["t1: weather lookup_weather Paris", "t1: and lookup_weather Rome THROTTLE1", "t1: thanks"]},
        {"id": "t2", "prompts": ["t2: is it in stock flaky_inventory", "t2: ok lookup_weather Lima"]},
        {"id": "t3", "prompts": ["t3: hello THROTTLE2", "t3: lookup_weather Oslo THROTTLE1"]},
        {"id": "t4", "model": "invalid-model-id", "prompts": ["t4: hi"]},
    ]});
    let support = serde_json::json!({"agent": "support", "model": model, "sessions": [
        {"id": "u1", "streaming": false, "prompts": ["u1: lookup_weather Cairo THROTTLE1", "u1: flaky_inventory please"]},
        {"id": "u2", "prompts": ["u2: hi there", "u2: lookup_weather Quito", "u2: bye THROTTLE1"]},
        {"id": "u3", "model": "invalid-model-id", "prompts": ["u3: hi"]},
    ]});
    let agent_of = |s: &str| {
        if s.starts_with('t') {
            "travel"
        } else {
            "support"
        }
    };
    // As AWS documents it: ADOT and botocore's instrumentation only (the
    // other Bedrock and LangChain instrumentations in the virtualenv off).
    let out_http = run_strands(
        bedrock.port,
        "http/protobuf",
        &format!("http://127.0.0.1:{http}/v1/traces"),
        &travel,
        "boto3,bedrock,langchain",
    );
    // Everything installed loads: Traceloop's and OpenInference's Bedrock
    // spans beside and around botocore's, all under Strands' `chat`.
    let out_grpc = run_strands(
        bedrock.port,
        "grpc",
        &format!("http://127.0.0.1:{grpc}"),
        &support,
        "",
    );
    let failed_invocations = format!("{out_http}{out_grpc}")
        .lines()
        .filter(|l| l.contains("\"ok\": false"))
        .count() as f64;
    assert_eq!(failed_invocations, 2.0, "{out_http}{out_grpc}");

    // The truth: what the model was asked and billed.
    let mut truth: BTreeMap<&str, Truth> = BTreeMap::new();
    let mut per_session: BTreeMap<String, Truth> = BTreeMap::new();
    let entries = bedrock.entries();
    for e in &entries {
        let t = per_session
            .entry(e["session"].as_str().unwrap().to_string())
            .or_default();
        t.requests += 1.0;
        t.input += e["input"].as_f64().unwrap();
        t.output += e["output"].as_f64().unwrap();
        t.throttled += f64::from(e["status"] == 429);
        let t = truth
            .entry(agent_of(e["session"].as_str().unwrap()))
            .or_default();
        t.requests += 1.0;
        t.input += e["input"].as_f64().unwrap();
        t.output += e["output"].as_f64().unwrap();
        t.throttled += f64::from(e["status"] == 429);
    }
    eprintln!("the model's usage log, per agent: {truth:?}");
    eprintln!("per session: {per_session:?}");
    let throttles: f64 = truth.values().map(|t| t.throttled).sum();
    assert!(throttles >= 6.0, "the plan throttles: {entries:?}");

    // Prometheus, until the numbers settle (trace_idle 1s, flush 200ms).
    let want: f64 = truth.values().map(|t| t.requests).sum();
    let (text, s) = settled_samples(prom, &[("gen_ai_operation_name", "chat")], want).await;
    for (agent, t) in &truth {
        let a = [("gen_ai_agent_name", *agent)];
        let tok = |ty: &str| {
            sum(
                &s,
                "agent_tokens_total",
                &[("gen_ai_agent_name", agent), ("gen_ai_token_type", ty)],
            )
        };
        assert_eq!(
            (tok("input"), tok("output")),
            (t.input, t.output),
            "tokens of {agent}: Prometheus vs the model's usage log\n{text}"
        );
        let calls = sum(
            &s,
            "agent_invocations_total",
            &[
                ("gen_ai_agent_name", agent),
                ("gen_ai_operation_name", "chat"),
            ],
        );
        assert_eq!(calls, t.requests, "model requests of {agent}\n{text}");
        assert_eq!(
            sum(&s, "agent_throttles_total", &a),
            t.throttled,
            "throttles of {agent}\n{text}"
        );
        // Every throttle here was recovered by Strands' retry.
        assert_eq!(sum(&s, "agent_retries_total", &a), t.throttled, "{text}");
        // Failures: one failing tool call and one invocation on an invalid
        // model id per agent; no throttle is a failure.
        assert_eq!(
            sum(&s, "agent_errors_total", &a),
            2.0,
            "failures of {agent}\n{text}"
        );
        assert_eq!(
            sum(
                &s,
                "agent_errors_total",
                &[
                    ("gen_ai_agent_name", agent),
                    ("gen_ai_operation_name", "execute_tool")
                ]
            ),
            1.0
        );
    }
    // Cost from the built-in table (Claude 3.5 Haiku through a US profile).
    let cost = sum(&s, "agent_cost_USD_total", &[]) + sum(&s, "agent_cost_total", &[]);
    let (tin, tout): (f64, f64) = truth
        .values()
        .fold((0.0, 0.0), |(i, o), t| (i + t.input, o + t.output));
    let want_cost = (tin * 0.0008 + tout * 0.004) / 1000.0;
    assert!(
        (cost - want_cost).abs() < 1e-9,
        "cost {cost} vs {want_cost}\n{text}"
    );
    // No agent series without its agent.
    let orphans: Vec<_> = s
        .iter()
        .filter(|(n, l, _)| {
            n.starts_with("agent_") && l.get("gen_ai_agent_name").is_some_and(|a| a.is_empty())
        })
        .collect();
    assert!(orphans.is_empty(), "series without an agent: {orphans:?}");

    // The live API: each session's numbers equal the model's for it.
    let r = http_request("GET", live, "/api/sessions", &[], Vec::new()).await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let sessions = v["sessions"].as_array().unwrap();
    for (sid, t) in &per_session {
        let s = session_matches(sessions, sid, t, "on the live API");
        let n = |k: &str| s[k].as_f64().unwrap_or(0.0);
        // Failures: a failing tool in t2 and u1, an invalid model in t4
        // and u3; recovered throttles are not failures.
        let want_errors = f64::from(["t2", "t4", "u1", "u3"].contains(&sid.as_str()));
        assert_eq!(n("errors"), want_errors, "session {sid}: {s}");
        assert_eq!(
            s["agents"].as_array().map(Vec::len),
            Some(1),
            "every session has its agent: {s}"
        );
    }

    // EMF in CloudWatch Logs (moto): the cumulative series as deltas, one
    // event per flush; they add up to the same exact numbers.
    let logs = aws_sdk_cloudwatchlogs::Client::new(&aws_test_sdk_config(&moto.endpoint()));
    for (agent, t) in &truth {
        let group = format!("/spanwire/{agent}-svc/metrics");
        let deadline = Instant::now() + Duration::from_secs(20);
        let ((input, output, calls), agents) = loop {
            let got = emf_numbers(&logs, &group).await;
            if got.0 == (t.input, t.output, t.requests) || Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert_eq!(
            agents,
            vec![agent.to_string()],
            "every EMF event names its agent"
        );
        assert_eq!(
            (input, output, calls),
            (t.input, t.output, t.requests),
            "{agent}: EMF tokens and model calls vs the usage log"
        );
    }

    // Tail sampling by session keeps exactly the sessions over the line,
    // whole (every span the unsampled pipeline delivered for them).
    let everything = spans_by_session(&all);
    for (sink, name, over) in [
        (&by_tokens, "tokens_over", &|t: &Truth| {
            t.input + t.output >= TOKENS_OVER as f64
        }),
        (&by_cost, "cost_over", &|t: &Truth| {
            (t.input * 0.0008 + t.output * 0.004) / 1000.0 >= COST_OVER
        }),
    ] as [(&Sink, &str, &dyn Fn(&Truth) -> bool); 2]
    {
        let want: BTreeMap<String, usize> = per_session
            .iter()
            .filter(|(_, t)| over(t))
            .map(|(sid, _)| (sid.clone(), everything.get(sid).copied().unwrap_or(0)))
            .collect();
        assert!(
            !want.is_empty() && want.len() < per_session.len(),
            "{name}: the line must split the sessions: {per_session:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let got = loop {
            let got = spans_by_session(sink);
            if got == want || Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(got, want, "{name}: sessions kept and their spans");
    }
    drop(daemon);

    // The same spans again, into a fresh spanwire: in reverse order, one
    // trace's spans split over many requests (seven spans a request), give
    // the same numbers per session.
    let replay = replay_reversed(&all, 7).await;
    for (sid, t) in &per_session {
        session_matches(&replay, sid, t, "replayed in reverse");
    }
}

/// Checks one session of `/api/sessions` against the usage log: tokens,
/// model calls, throttles. Returns it.
fn session_matches<'a>(
    sessions: &'a [serde_json::Value],
    sid: &str,
    t: &Truth,
    what: &str,
) -> &'a serde_json::Value {
    let s = sessions
        .iter()
        .find(|s| s["session_id"] == sid)
        .unwrap_or_else(|| panic!("no session {sid} {what}"));
    let n = |k: &str| s[k].as_f64().unwrap_or(0.0);
    let tok = |k: &str| s["tokens"][k].as_f64().unwrap_or(0.0);
    assert_eq!(
        (
            tok("input"),
            tok("output"),
            n("model_calls"),
            n("throttles")
        ),
        (t.input, t.output, t.requests, t.throttled),
        "session {sid} {what} vs the model's usage log: {s}"
    );
    s
}

/// Posts every span `sink` received, last first, `per_request` spans a
/// request (each with its resource and scope), to a fresh spanwire with
/// `agentmetrics` and `live`; returns its `/api/sessions` once settled.
async fn replay_reversed(sink: &Sink, per_request: usize) -> Vec<serde_json::Value> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use prost::Message;
    let mut flat: Vec<ResourceSpans> = Vec::new();
    for t in sink.received.lock().unwrap().iter() {
        let spanwire::signal::Telemetry::Traces(rs) = t else {
            continue;
        };
        for r in rs {
            for ss in &r.scope_spans {
                for span in &ss.spans {
                    flat.push(ResourceSpans {
                        resource: r.resource.clone(),
                        scope_spans: vec![ScopeSpans {
                            scope: ss.scope.clone(),
                            spans: vec![span.clone()],
                            schema_url: ss.schema_url.clone(),
                        }],
                        schema_url: r.schema_url.clone(),
                    });
                }
            }
        }
    }
    assert!(flat.len() > 50, "{} spans", flat.len());
    flat.reverse();
    let (http, live, health) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
exporters:
  live:
    endpoint: "127.0.0.1:{live}"
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [live]}}
"#
    );
    let daemon = Daemon::start(&config, health);
    for chunk in flat.chunks(per_request) {
        let body = ExportTraceServiceRequest {
            resource_spans: chunk.to_vec(),
        }
        .encode_to_vec();
        let r = http_request(
            "POST",
            http,
            "/v1/traces",
            &[("content-type", "application/x-protobuf")],
            body,
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let r = http_request("GET", live, "/api/sessions", &[], Vec::new()).await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    drop(daemon);
    v["sessions"].as_array().unwrap().clone()
}

/// Runs `tests/python/framework_agents.py` in `mode`, exporting to `otlp`.
fn run_framework(mode: &str, bedrock: u16, otlp: &str, plan: &serde_json::Value) -> String {
    let mut cmd = Command::new(agents_python("python"));
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/framework_agents.py"
    ))
    .args([mode, &format!("http://127.0.0.1:{bedrock}"), otlp])
    .arg(plan.to_string())
    .env_remove("OTEL_SDK_DISABLED");
    run_agent(&mut cmd, mode)
}

/// OpenInference's Bedrock instrumentation, OpenLLMetry's, and LangChain
/// (langchain-aws) under OpenInference's LangChain and Bedrock
/// instrumentations together, where each call is reported by two sibling
/// LLM spans: tokens and model calls exact per session (live API) and per
/// service (Prometheus, EMF in moto's CloudWatch Logs), against the
/// stand-in's usage log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openinference_openllmetry_and_langchain_numbers_equal_the_models_usage() {
    let bedrock = BedrockRuntime::start();
    let moto = Moto::start();
    let (http, prom, live, health) = (free_port(), free_port(), free_port(), free_port());
    let config = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
processors:
  batch: {{timeout: 100ms}}
connectors:
  agentmetrics:
    metrics_flush_interval: 200ms
    trace_idle: 1s
exporters:
  prometheus:
    endpoint: "127.0.0.1:{prom}"
    namespace: ""
  live:
    endpoint: "127.0.0.1:{live}"
  awsemf:
    region: us-east-1
    endpoint: "{emf}"
    namespace: Agents
    log_group_name: "/spanwire/{{ServiceName}}/metrics"
    log_stream_name: "agentmetrics"
    retry_on_failure: {{initial_interval: 50ms}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [agentmetrics, live]}}
    metrics: {{receivers: [agentmetrics], exporters: [prometheus, awsemf]}}
"#,
        emf = moto.endpoint()
    );
    let daemon = Daemon::start_with_env(&config, health, &aws_test_env());
    let model = "us.anthropic.claude-3-5-haiku-20241022-v1:0";
    let otlp = format!("http://127.0.0.1:{http}/v1/traces");
    let modes = ["openinference", "openllmetry", "langchain"];
    for (k, mode) in modes.iter().enumerate() {
        let sessions: Vec<serde_json::Value> = (0..3)
            .map(|i| {
                let sid = format!("{}{k}{i}", &mode[..2]);
                let prompts: Vec<String> = (0..=i)
                    .map(|p| format!("{sid}: question {p} about the trip"))
                    .collect();
                serde_json::json!({"id": sid, "prompts": prompts})
            })
            .collect();
        let plan = serde_json::json!({"model": model, "sessions": sessions});
        let out = run_framework(mode, bedrock.port, &otlp, &plan);
        assert!(!out.contains("\"ok\": false"), "{mode}: {out}");
    }
    let mut per_session: BTreeMap<String, Truth> = BTreeMap::new();
    for e in bedrock.entries() {
        let t = per_session
            .entry(e["session"].as_str().unwrap().to_string())
            .or_default();
        t.requests += 1.0;
        t.input += e["input"].as_f64().unwrap();
        t.output += e["output"].as_f64().unwrap();
    }
    assert_eq!(per_session.len(), 9, "{per_session:?}");
    // Prometheus per service (`job`), once every trace settled.
    let want_calls: f64 = per_session.values().map(|t| t.requests).sum();
    let (text, s) = settled_samples(prom, &[("gen_ai_operation_name", "chat")], want_calls).await;
    for (k, mode) in modes.iter().enumerate() {
        let prefix = format!("{}{k}", &mode[..2]);
        let t = per_session
            .iter()
            .filter(|(sid, _)| sid.starts_with(&prefix))
            .fold(Truth::default(), |mut a, (_, t)| {
                a.input += t.input;
                a.output += t.output;
                a.requests += t.requests;
                a
            });
        let job = format!("{mode}-app");
        let tok = |ty: &str| {
            sum(
                &s,
                "agent_tokens_total",
                &[("job", job.as_str()), ("gen_ai_token_type", ty)],
            )
        };
        assert_eq!(
            (tok("input"), tok("output")),
            (t.input, t.output),
            "{mode}: tokens in Prometheus vs the usage log\n{text}"
        );
        let calls = sum(
            &s,
            "agent_invocations_total",
            &[("job", job.as_str()), ("gen_ai_operation_name", "chat")],
        );
        assert_eq!(calls, t.requests, "{mode}: model calls\n{text}");
        // EMF in CloudWatch Logs (moto) adds up to the same.
        let logs = aws_sdk_cloudwatchlogs::Client::new(&aws_test_sdk_config(&moto.endpoint()));
        let group = format!("/spanwire/{job}/metrics");
        let deadline = Instant::now() + Duration::from_secs(20);
        let got = loop {
            let (got, _) = emf_numbers(&logs, &group).await;
            if got == (t.input, t.output, t.requests) || Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert_eq!(
            got,
            (t.input, t.output, t.requests),
            "{mode}: EMF tokens and model calls vs the usage log"
        );
    }
    // The live API, per session.
    let r = http_request("GET", live, "/api/sessions", &[], Vec::new()).await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let sessions = v["sessions"].as_array().unwrap();
    for (sid, t) in &per_session {
        let s = sessions
            .iter()
            .find(|s| s["session_id"] == sid.as_str())
            .unwrap_or_else(|| panic!("no session {sid}: {v}"));
        let tok = |k: &str| s["tokens"][k].as_f64().unwrap_or(0.0);
        assert_eq!(
            (
                tok("input"),
                tok("output"),
                s["model_calls"].as_f64().unwrap_or(0.0)
            ),
            (t.input, t.output, t.requests),
            "session {sid} on the live API: {s}"
        );
        assert_eq!(s["errors"], 0, "{s}");
    }
    drop(daemon);
}
