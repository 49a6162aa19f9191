//! Agent sessions at scale, end to end on kinesalite (the stream) and moto
//! (DynamoDB leases): a sidecar spanwire writes 1,000 synthetic agent
//! sessions to a 4-shard stream, partitioned by session and KPL-aggregated;
//! three consumer replicas share the shards through leases and sample
//! whole sessions (`tail_sampling`, `group_by: session`); one replica is
//! killed with SIGKILL mid-run. Every session a policy keeps arrives
//! complete, no span of a dropped session arrives, duplicates come only
//! from the killed replica's shards, and the policy that kept each session
//! is the one the generator's truth says.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::StreamStatus;
use common::kinesis::read_stream;
use common::{
    aws_test_env, aws_test_sdk_config, free_port, post_traces, wait_until, Daemon, Kinesalite,
    Moto, Sink,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use rand::{Rng, SeedableRng};
use spanwire::processors::tail_sampling::policy::{sampling_hash, sampling_threshold};
use spanwire::signal::string_attribute;

const STREAM: &str = "agent-sessions";
const SESSIONS: usize = 1000;

/// A span's (trace id, span id).
type SpanKey = (Vec<u8>, Vec<u8>);

/// One synthetic session, and the truth about it.
struct Plan {
    id: String,
    traces: usize,
    start_ms: u64,
    error_trace: Option<usize>,
    guardrail_trace: Option<usize>,
    expensive: bool,
}

impl Plan {
    /// What each policy (in the consumers' order) says of it on its own.
    fn verdicts(&self) -> [(&'static str, bool); 4] {
        [
            // The agent-trace model counts a guardrail intervention as a
            // failure too (an unrecovered throttle is one as well).
            (
                "errors",
                self.error_trace.is_some() || self.guardrail_trace.is_some(),
            ),
            ("guardrails", self.guardrail_trace.is_some()),
            ("expensive", self.expensive),
            (
                "sample",
                sampling_hash(b"", self.id.as_bytes()) <= sampling_threshold(10.0),
            ),
        ]
    }

    /// The first policy (in the consumers' order) that keeps it.
    fn truth(&self) -> Option<&'static str> {
        self.verdicts()
            .into_iter()
            .find(|(_, keeps)| *keeps)
            .map(|(name, _)| name)
    }

    /// The spans of trace `t`: an `invoke_agent` root and its `chat` child,
    /// both carrying the session (as baggage propagation puts it on every span).
    fn trace(&self, index: usize, t: usize) -> Vec<Span> {
        let mut trace_id = [0u8; 16];
        trace_id[..4].copy_from_slice(&(index as u32).to_be_bytes());
        trace_id[4..8].copy_from_slice(&(t as u32).to_be_bytes());
        trace_id[15] = 1;
        let id = |k: u8| {
            let mut s = [0u8; 8];
            s[..4].copy_from_slice(&(index as u32).to_be_bytes());
            s[4..6].copy_from_slice(&(t as u16).to_be_bytes());
            s[7] = k;
            s.to_vec()
        };
        let now = 1_800_000_000_000_000_000u64 + (self.start_ms + t as u64 * 40) * 1_000_000;
        let tokens = if self.expensive {
            30_000
        } else {
            100 + (index % 400) as i64
        };
        let mut chat_attrs = vec![
            string_attribute("session.id", &self.id),
            string_attribute("gen_ai.operation.name", "chat"),
            string_attribute("gen_ai.request.model", "anthropic.claude"),
            attr_int("gen_ai.usage.input_tokens", tokens),
            attr_int("gen_ai.usage.output_tokens", tokens),
        ];
        let mut status = None;
        if self.error_trace == Some(t) {
            chat_attrs.push(string_attribute("error.type", "ThrottlingException"));
            status = Some(Status {
                code: status::StatusCode::Error as i32,
                message: "throttled".into(),
            });
        }
        if self.guardrail_trace == Some(t) {
            chat_attrs.push(string_attribute(
                "aws.bedrock.guardrail.action",
                "INTERVENED",
            ));
        }
        vec![
            Span {
                trace_id: trace_id.to_vec(),
                span_id: id(1),
                name: "invoke_agent travel".into(),
                kind: 3,
                start_time_unix_nano: now,
                end_time_unix_nano: now + 30_000_000,
                attributes: vec![
                    string_attribute("session.id", &self.id),
                    string_attribute("gen_ai.operation.name", "invoke_agent"),
                    string_attribute("gen_ai.agent.name", "travel"),
                ],
                ..Default::default()
            },
            Span {
                trace_id: trace_id.to_vec(),
                span_id: id(2),
                parent_span_id: id(1),
                name: "chat anthropic.claude".into(),
                kind: 3,
                start_time_unix_nano: now + 1_000_000,
                end_time_unix_nano: now + 29_000_000,
                attributes: chat_attrs,
                status,
                ..Default::default()
            },
        ]
    }
}

fn attr_int(k: &str, v: i64) -> KeyValue {
    spanwire::signal::attribute(k, any_value::Value::IntValue(v))
}

fn plans() -> Vec<Plan> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2222);
    (0..SESSIONS)
        .map(|i| {
            let traces = rng.random_range(5..=50);
            let pick = |rng: &mut rand::rngs::StdRng, p: f64| {
                rng.random_bool(p).then(|| rng.random_range(0..traces))
            };
            let error_trace = pick(&mut rng, 0.08);
            let guardrail_trace = pick(&mut rng, 0.05);
            Plan {
                id: format!("session-{i:04}-{:08x}", rng.random::<u32>()),
                traces,
                start_ms: rng.random_range(0..9_000),
                error_trace,
                guardrail_trace,
                expensive: rng.random_bool(0.04),
            }
        })
        .collect()
}

fn request(spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_attribute("service.name", "travel-agent")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

fn sidecar(otlp: u16, health: u16, kinesis: &str) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{otlp}"}}
processors:
  batch: {{timeout: 100ms}}
exporters:
  awskinesis:
    aws: {{stream_name: {STREAM}, region: us-east-1, kinesis_endpoint: "{kinesis}"}}
    partition_key: session
    retry_on_failure: {{initial_interval: 50ms, max_interval: 500ms, max_elapsed_time: 0s}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [awskinesis]}}
"#
    )
}

fn consumer(health: u16, metrics: u16, kinesis: &str, dynamodb: &str, sink: &Sink) -> String {
    format!(
        r#"
receivers:
  awskinesis:
    stream_name: {STREAM}
    region: us-east-1
    endpoint: "{kinesis}"
    encoding: otlp_proto
    poll_interval: 100ms
    shard_discovery_interval: 2s
    max_in_flight_batches: 512
    checkpoint:
      store: dynamodb
      table: leases
      endpoint: "{dynamodb}"
    lease: {{failover_time: 3s, renew_interval: 500ms}}
processors:
  tail_sampling:
    group_by: session
    session_idle: 2s
    record_policy: true
    policies:
      - {{name: errors, type: agent_error}}
      - {{name: guardrails, type: guardrail_intervened}}
      - {{name: expensive, type: tokens_over, tokens_over: {{tokens: 100000}}}}
      - {{name: sample, type: probabilistic, probabilistic: {{sampling_percentage: 10}}}}
exporters:
  otlp:
    endpoint: "http://127.0.0.1:{grpc}"
    retry_on_failure: {{initial_interval: 50ms, max_interval: 200ms, max_elapsed_time: 0s}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: "127.0.0.1:{metrics}"}}}}
  pipelines:
    traces: {{receivers: [awskinesis], processors: [tail_sampling], exporters: [otlp]}}
"#,
        grpc = sink.grpc_port
    )
}

async fn lease_owners(ddb: &aws_sdk_dynamodb::Client) -> HashMap<String, Option<String>> {
    let Ok(resp) = ddb.scan().table_name("leases").send().await else {
        return HashMap::new();
    };
    resp.items()
        .iter()
        .map(|i| {
            (
                i["leaseKey"].as_s().unwrap().clone(),
                i.get("leaseOwner").and_then(|v| v.as_s().ok()).cloned(),
            )
        })
        .collect()
}

fn attr<'a>(s: &'a Span, k: &str) -> Option<&'a str> {
    s.attributes.iter().find(|kv| kv.key == k).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(v) => Some(v.as_str()),
            _ => None,
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_stay_whole_across_replicas_and_a_kill() {
    let kl = Kinesalite::start();
    let moto = Moto::start();
    let k = aws_sdk_kinesis::Client::new(&aws_test_sdk_config(&kl.endpoint()));
    let ddb = aws_sdk_dynamodb::Client::new(&aws_test_sdk_config(&moto.endpoint()));
    k.create_stream()
        .stream_name(STREAM)
        .shard_count(4)
        .send()
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || {
            futures_block(k.describe_stream_summary().stream_name(STREAM).send()).is_ok_and(|d| {
                d.stream_description_summary()
                    .is_some_and(|s| s.stream_status() == &StreamStatus::Active)
            })
        })
        .await
    );
    let sink = Sink::start().await;
    let env = aws_test_env();
    let mut replicas = Vec::new();
    let mut metrics_ports = Vec::new();
    for _ in 0..3 {
        let (h, m) = (free_port(), free_port());
        let cfg = consumer(h, m, &kl.endpoint(), &moto.endpoint(), &sink);
        replicas.push(Daemon::start_with_env(&cfg, h, &env));
        metrics_ports.push(m);
    }
    // Three replicas, four shards: 2 + 1 + 1 before any data is written.
    let mut owners = HashMap::new();
    let balanced = wait_until(Duration::from_secs(30), || {
        owners = futures_block(lease_owners(&ddb));
        let per: HashSet<&Option<String>> = owners.values().collect();
        owners.len() == 4 && per.len() == 3 && !per.contains(&None)
    })
    .await;
    assert!(
        balanced,
        "three replicas share four shards: {owners:?}\n{}",
        replicas[0].logs()
    );
    let (otlp, health) = (free_port(), free_port());
    let side = Daemon::start_with_env(&sidecar(otlp, health, &kl.endpoint()), health, &env);

    // The generator: every session's traces 40 ms apart from its start.
    let plans = plans();
    let mut due: Vec<(u64, usize, usize)> = plans
        .iter()
        .enumerate()
        .flat_map(|(i, p)| (0..p.traces).map(move |t| (p.start_ms + t as u64 * 40, i, t)))
        .collect();
    due.sort();
    let total_spans = due.len() * 2;
    // Who holds which shard when the kill comes: the victim's shards are
    // where duplicates may come from.
    let victim = 1usize;
    let started = Instant::now();
    let mut killed_at = None;
    let mut victim_shards: HashSet<String> = HashSet::new();
    let mut next = 0;
    while next < due.len() {
        let now = started.elapsed().as_millis() as u64;
        let mut spans = Vec::new();
        while next < due.len() && due[next].0 <= now {
            let (_, i, t) = due[next];
            spans.extend(plans[i].trace(i, t));
            next += 1;
        }
        if !spans.is_empty() {
            let r = post_traces(otlp, request(spans)).await;
            assert_eq!(r.status, 200, "{}", side.logs());
        }
        if killed_at.is_none() && now >= 5_000 {
            let owners = futures_block(lease_owners(&ddb));
            let victim_id = owners_of(&owners, &replicas[victim]);
            victim_shards = owners
                .iter()
                .filter(|(_, o)| o.as_deref() == victim_id.as_deref())
                .map(|(s, _)| s.clone())
                .collect();
            replicas[victim].kill_hard();
            killed_at = Some(now);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!victim_shards.is_empty(), "the victim held shards");

    // What should arrive: every span of every kept session.
    let kept: HashMap<&str, &'static str> = plans
        .iter()
        .filter_map(|p| p.truth().map(|t| (p.id.as_str(), t)))
        .collect();
    let expected: usize = plans
        .iter()
        .filter(|p| kept.contains_key(p.id.as_str()))
        .map(|p| p.traces * 2)
        .sum();
    let distinct = |sink: &Sink| -> usize {
        sink.spans()
            .iter()
            .map(|s| (s.trace_id.clone(), s.span_id.clone()))
            .collect::<HashSet<_>>()
            .len()
    };
    let all = wait_until(Duration::from_secs(120), || distinct(&sink) >= expected).await;
    // Stragglers (late duplicates, a wrong extra) would come now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let logs = || {
        replicas
            .iter()
            .map(Daemon::logs)
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    assert!(
        all,
        "{} of {expected} kept spans arrived\n{}",
        distinct(&sink),
        logs()
    );

    // The stream holds every span once, each session on one shard, aggregated.
    let (by_shard, records, user_records) = read_stream(&k, STREAM).await;
    let mut shard_of: HashMap<String, HashSet<String>> = HashMap::new();
    let mut in_stream = HashSet::new();
    for (shard, spans) in &by_shard {
        for s in spans {
            assert!(
                in_stream.insert((s.trace_id.clone(), s.span_id.clone())),
                "a span twice in the stream"
            );
            shard_of
                .entry(attr(s, "session.id").unwrap().to_string())
                .or_default()
                .insert(shard.clone());
        }
    }
    assert_eq!(in_stream.len(), total_spans, "every span written once");
    assert!(
        shard_of.values().all(|s| s.len() == 1),
        "each session on one shard"
    );
    assert!(
        records * 4 < user_records,
        "aggregation packs user records: {records} records for {user_records}"
    );

    // Downstream: kept sessions complete, dropped sessions absent, the
    // policy recorded on each session's first spans the truth's.
    let got = sink.spans();
    let mut seen: HashMap<(Vec<u8>, Vec<u8>), usize> = HashMap::new();
    let mut first_policy: HashMap<String, String> = HashMap::new();
    let mut sessions_got: HashMap<String, HashSet<SpanKey>> = HashMap::new();
    for s in &got {
        *seen
            .entry((s.trace_id.clone(), s.span_id.clone()))
            .or_default() += 1;
        let sid = attr(s, "session.id").unwrap().to_string();
        first_policy
            .entry(sid.clone())
            .or_insert_with(|| attr(s, "tailsampling.policy").unwrap_or("").to_string());
        sessions_got
            .entry(sid)
            .or_default()
            .insert((s.trace_id.clone(), s.span_id.clone()));
    }
    let mut per_policy_truth: HashMap<&str, usize> = HashMap::new();
    let mut per_policy_got: HashMap<String, usize> = HashMap::new();
    for (i, p) in plans.iter().enumerate() {
        let want: HashSet<(Vec<u8>, Vec<u8>)> = (0..p.traces)
            .flat_map(|t| p.trace(i, t))
            .map(|s| (s.trace_id, s.span_id))
            .collect();
        let have = sessions_got.get(&p.id);
        match p.truth() {
            Some(policy) => {
                *per_policy_truth.entry(policy).or_default() += 1;
                assert_eq!(have, Some(&want), "kept session {} arrives complete", p.id);
            }
            None => assert!(
                have.is_none(),
                "no span of dropped session {} arrives",
                p.id
            ),
        }
    }
    for policy in first_policy.values() {
        *per_policy_got.entry(policy.clone()).or_default() += 1;
    }
    for (policy, n) in &per_policy_truth {
        assert_eq!(
            per_policy_got.get(*policy),
            Some(n),
            "sessions kept by {policy}"
        );
    }
    assert_eq!(per_policy_got.values().sum::<usize>(), kept.len());
    // Duplicates: only spans of sessions on the killed replica's shards.
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    let session_of_span: HashMap<(Vec<u8>, Vec<u8>), String> = got
        .iter()
        .map(|s| {
            (
                (s.trace_id.clone(), s.span_id.clone()),
                attr(s, "session.id").unwrap().to_string(),
            )
        })
        .collect();
    for (key, _) in &dups {
        let sid = &session_of_span[*key];
        let shard = shard_of[sid].iter().next().unwrap();
        assert!(
            victim_shards.contains(shard),
            "a duplicate of session {sid} on shard {shard}, which the killed replica did not hold"
        );
    }
    eprintln!(
        "sessions kept {} of {SESSIONS} ({per_policy_got:?}); spans {} of {total_spans} exported, \
         {} duplicated after the kill at {:?} ms; {records} records for {user_records} user records",
        kept.len(),
        expected,
        dups.len(),
        killed_at
    );
    // The survivors' self-metrics count every policy's verdicts. They
    // decided every session on the shards they held all along, and of the
    // killed replica's sessions those after its last checkpoint, each once
    // (no shard moves between survivors: 2 + 2 after the kill). So each
    // count lies between the generator's truth for the survivors' own
    // sessions and its truth for all sessions.
    let mut survivors_text = String::new();
    for (i, port) in metrics_ports.iter().enumerate() {
        if i != victim {
            survivors_text.push_str(&String::from_utf8_lossy(
                &common::http_request("GET", *port, "/metrics", &[], Vec::new())
                    .await
                    .body,
            ));
        }
    }
    let on_survivors = |p: &Plan| {
        shard_of[&p.id]
            .iter()
            .all(|shard| !victim_shards.contains(shard))
    };
    for (k, (policy, _)) in plans[0].verdicts().iter().enumerate() {
        for (decision, keeps) in [("sampled", true), ("not_sampled", false)] {
            let count = |only_survivors: bool| {
                plans
                    .iter()
                    .filter(|p| !only_survivors || on_survivors(p))
                    .filter(|p| p.verdicts()[k].1 == keeps)
                    .count() as f64
            };
            let (low, high) = (count(true), count(false));
            let got = common::metric(
                &survivors_text,
                "spanwire_processor_tail_sampling_policy_decisions_total",
                &[
                    &format!("policy=\"{policy}\""),
                    &format!("decision=\"{decision}\""),
                ],
            );
            assert!(
                low <= got && got <= high,
                "{policy} {decision}: the survivors counted {got}, truth {low}..={high}"
            );
        }
    }
    drop(side);
}

fn owners_of(owners: &HashMap<String, Option<String>>, d: &Daemon) -> Option<String> {
    // Owner ids are `{host}-{pid}-{random}`.
    let pid = format!("-{}-", d.pid());
    owners
        .values()
        .flatten()
        .find(|o| o.contains(&pid))
        .cloned()
}

/// Runs a future to completion from sync code inside the multi-thread runtime.
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}
