//! Processor `tail_sampling`: holds each trace (or, with `group_by:
//! session`, each agent session) until it is complete, then keeps or
//! drops it whole by the Collector's policies and spanwire's agent
//! policies (`agent_error`, `guardrail_intervened`, `tokens_over`,
//! `cost_over`, `tool_failed`).
//!
//! It runs as its own task with a bounded input (like `batch`), takes
//! requests as OTLP bytes (structs are encoded once on the way in) and
//! holds spans as their bytes ([`sampler`]). Kept spans go on as one
//! request per decision tick, as bytes when the next stage takes bytes.
//! Acknowledgements (the Kinesis receiver's checkpoints, `wait_for_delivery`)
//! are held with the spans until the decision: a kept group's settle when
//! its spans are delivered, a dropped group's at once. So a Kinesis
//! consumer never checkpoints past a session that is still undecided.

pub mod policy;
pub mod sampler;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::policy::{Policies, PolicyConfig};
use self::sampler::{GroupBy, Output, Sampler, Settings};
use crate::component::{Factory, ProcessorContext, ProcessorFactory, Stage, StageTask};
use crate::consumer::{
    offer_until_taken, AckOutcome, Acks, Backoff, BoxConsumer, ConsumeError, Consumer, Offered,
    StartError,
};
use crate::exporters::live::store::Price;
use crate::settings::de::DeError;
use crate::settings::types::duration;
use crate::signal::{EncodedBatch, Signal, Telemetry};

/// Requests waiting for the sampler's task.
const INPUT_CAPACITY: usize = 64;

fn d30s() -> Duration {
    Duration::from_secs(30)
}
fn d_num_traces() -> usize {
    50_000
}
fn d_max_sessions() -> usize {
    10_000
}
fn d_memory() -> usize {
    512
}
fn d_session_keys() -> Vec<String> {
    vec!["session.id".into(), "gen_ai.conversation.id".into()]
}

/// What a decision is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GroupByConfig {
    /// Each trace (the Collector's behaviour).
    #[default]
    Trace,
    /// Each agent session (all its traces).
    Session,
}

/// `decision_cache:`.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DecisionCacheConfig {
    /// Kept decisions remembered for late spans (default: `num_traces` or `max_sessions`).
    #[serde(default)]
    pub sampled_cache_size: Option<usize>,
    /// Drop decisions remembered for late spans (default: as above).
    #[serde(default)]
    pub non_sampled_cache_size: Option<usize>,
}

/// `processors.tail_sampling`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailSamplingConfig {
    /// How long after a trace's first span it is decided.
    #[serde(default = "d30s", with = "duration")]
    pub decision_wait: Duration,
    /// Traces held at most; past it the oldest is decided early.
    #[serde(default = "d_num_traces")]
    pub num_traces: usize,
    /// Sizing hint for the trace table.
    #[serde(default)]
    pub expected_new_traces_per_sec: usize,
    /// Decisions remembered for spans that come after them.
    #[serde(default)]
    pub decision_cache: DecisionCacheConfig,
    /// The policies: a trace is kept if one keeps it and no inverted match vetoes.
    pub policies: Vec<PolicyConfig>,
    /// `trace` (default) or `session`.
    #[serde(default)]
    pub group_by: GroupByConfig,
    /// Attributes naming a session (span first, then resource), in order.
    #[serde(default = "d_session_keys")]
    pub session_keys: Vec<String>,
    /// A session is decided once it has had no span for this long.
    #[serde(default = "d30s", with = "duration")]
    pub session_idle: Duration,
    /// Sessions held at most; past it the oldest is decided early.
    #[serde(default = "d_max_sessions")]
    pub max_sessions: usize,
    /// Bytes of held spans at most (MiB); past it the oldest is decided early.
    #[serde(default = "d_memory")]
    pub max_memory_mib: usize,
    /// Per-model prices (per 1,000 input and output tokens) for `cost_over`.
    #[serde(default)]
    pub pricing: BTreeMap<String, Price>,
    /// Add `tailsampling.policy` (the first policy that kept it) to kept spans.
    #[serde(default)]
    pub record_policy: bool,
}

impl TailSamplingConfig {
    /// Checks values serde cannot (policies compile).
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        if self.policies.is_empty() {
            return Err(DeError::custom("policies: at least one policy is needed"));
        }
        if self.decision_wait.is_zero() || self.session_idle.is_zero() {
            return Err(DeError::custom(
                "decision_wait and session_idle must be more than 0",
            ));
        }
        if self.num_traces == 0 || self.max_sessions == 0 || self.max_memory_mib == 0 {
            return Err(DeError::custom(
                "num_traces, max_sessions and max_memory_mib must be at least 1",
            ));
        }
        if self.group_by == GroupByConfig::Session && self.session_keys.is_empty() {
            return Err(DeError::custom("group_by: session needs session_keys"));
        }
        Policies::compile(&self.policies, &self.pricing).map(|_| ())
    }

    /// The buffer's settings.
    pub fn settings(&self) -> Settings {
        let (group_by, wait, max_groups) = match self.group_by {
            GroupByConfig::Trace => (GroupBy::Trace, self.decision_wait, self.num_traces),
            GroupByConfig::Session => (GroupBy::Session, self.session_idle, self.max_sessions),
        };
        Settings {
            group_by,
            session_keys: self.session_keys.clone(),
            wait_ms: wait.as_millis() as u64,
            max_groups,
            max_bytes: self.max_memory_mib << 20,
            sampled_cache: self.decision_cache.sampled_cache_size.unwrap_or(max_groups),
            non_sampled_cache: self
                .decision_cache
                .non_sampled_cache_size
                .unwrap_or(max_groups),
            record_policy: self.record_policy,
        }
    }
}

/// The `tail_sampling` processor's factory.
pub struct TailSamplingFactory;

impl Factory for TailSamplingFactory {
    type Config = TailSamplingConfig;
    fn type_name(&self) -> &'static str {
        "tail_sampling"
    }
    fn validate(&self, config: &TailSamplingConfig) -> Result<(), DeError> {
        config.validate()
    }
}

impl ProcessorFactory for TailSamplingFactory {
    fn signals(&self, _config: &TailSamplingConfig) -> &'static [Signal] {
        &[Signal::Traces]
    }

    fn build(
        &self,
        config: &TailSamplingConfig,
        ctx: ProcessorContext<'_>,
    ) -> Result<Stage, StartError> {
        let policies = Policies::compile(&config.policies, &config.pricing)
            .map_err(|e| StartError::component(&ctx.name, e.to_string()))?;
        let sampler = Sampler::new(config.settings(), policies);
        let (tx, rx) = mpsc::channel(INPUT_CAPACITY);
        let pending = Arc::new(AtomicU64::new(0));
        let metrics = Metrics::new(&ctx.labels, &sampler.policy_names());
        let task = tokio::spawn(run(
            sampler,
            rx,
            ctx.next,
            Tick(tick_of(config)),
            pending.clone(),
            metrics,
            ctx.name.clone(),
            ctx.stop,
        ));
        Ok(Stage {
            input: Arc::new(Input {
                tx,
                pending: pending.clone(),
                name: ctx.name,
            }),
            task: Some(StageTask { task, pending }),
        })
    }
}

/// How often deadlines are checked: a tenth of the wait, 10 ms to 1 s.
fn tick_of(c: &TailSamplingConfig) -> Duration {
    let wait = match c.group_by {
        GroupByConfig::Trace => c.decision_wait,
        GroupByConfig::Session => c.session_idle,
    };
    (wait / 10).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

struct Tick(Duration);

/// The processor's input: requests as bytes, refused when the task is behind.
struct Input {
    tx: mpsc::Sender<(Bytes, usize, Acks)>,
    pending: Arc<AtomicU64>,
    name: String,
}

impl Input {
    fn offer<T: std::fmt::Debug>(
        &self,
        data: T,
        bytes: impl FnOnce(&T) -> (Bytes, usize),
        acks: Acks,
    ) -> Result<(), ConsumeError<T>> {
        let (why, retry) = match self.tx.try_reserve() {
            Ok(permit) => {
                let (b, n) = bytes(&data);
                self.pending.fetch_add(n as u64, Ordering::Relaxed);
                permit.send((b, n, acks));
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Full(())) => ("pipeline is full", 1),
            Err(mpsc::error::TrySendError::Closed(())) => ("shutting down", 5),
        };
        Err(ConsumeError::refused(
            format!("{}: {why}", self.name),
            Duration::from_secs(retry),
            data,
            acks,
        ))
    }
}

#[async_trait]
impl Consumer for Input {
    async fn consume(&self, data: Telemetry, acks: Acks) -> Result<(), ConsumeError> {
        self.offer(
            data,
            |d| {
                let e = crate::convert::otlp_proto::encode_batch(d);
                (e.bytes, e.items)
            },
            acks,
        )
    }

    fn takes_encoded(&self) -> bool {
        true
    }

    async fn consume_encoded(
        &self,
        data: EncodedBatch,
        acks: Acks,
    ) -> Result<(), ConsumeError<EncodedBatch>> {
        if data.signal != Signal::Traces {
            return Err(ConsumeError::Failed(format!(
                "{}: only traces are sampled",
                self.name
            )));
        }
        self.offer(data, |d| (d.bytes.clone(), d.items), acks)
    }
}

/// Self-metrics of one processor.
struct Metrics {
    per_policy: Vec<(metrics::Counter, metrics::Counter)>,
    kept: metrics::Counter,
    dropped: metrics::Counter,
    spans_kept: metrics::Counter,
    spans_dropped: metrics::Counter,
    early: metrics::Counter,
    late_kept: metrics::Counter,
    late_dropped: metrics::Counter,
    merged: metrics::Counter,
    abandoned: metrics::Counter,
    invalid: metrics::Counter,
    held_groups: metrics::Gauge,
    held_bytes: metrics::Gauge,
    last: sampler::Stats,
}

impl Metrics {
    fn new(labels: &[(&'static str, String)], policies: &[String]) -> Metrics {
        let c = |name: &'static str| crate::telemetry::counter(name, labels);
        let decision = |name: &str, d: &str| {
            let mut l = labels.to_vec();
            l.push(("policy", name.to_string()));
            l.push(("decision", d.to_string()));
            crate::telemetry::counter(
                "spanwire_processor_tail_sampling_policy_decisions_total",
                &l,
            )
        };
        let outcome = |d: &str| {
            let mut l = labels.to_vec();
            l.push(("decision", d.to_string()));
            l
        };
        Metrics {
            per_policy: policies
                .iter()
                .map(|p| (decision(p, "sampled"), decision(p, "not_sampled")))
                .collect(),
            kept: crate::telemetry::counter(
                "spanwire_processor_tail_sampling_decisions_total",
                &outcome("sampled"),
            ),
            dropped: crate::telemetry::counter(
                "spanwire_processor_tail_sampling_decisions_total",
                &outcome("not_sampled"),
            ),
            spans_kept: crate::telemetry::counter(
                "spanwire_processor_tail_sampling_spans_total",
                &outcome("sampled"),
            ),
            spans_dropped: crate::telemetry::counter(
                "spanwire_processor_tail_sampling_spans_total",
                &outcome("not_sampled"),
            ),
            early: c("spanwire_processor_tail_sampling_early_decisions_total"),
            late_kept: crate::telemetry::counter(
                "spanwire_processor_tail_sampling_late_spans_total",
                &outcome("sampled"),
            ),
            late_dropped: crate::telemetry::counter(
                "spanwire_processor_tail_sampling_late_spans_total",
                &outcome("not_sampled"),
            ),
            merged: c("spanwire_processor_tail_sampling_traces_joined_to_sessions_total"),
            abandoned: c("spanwire_processor_tail_sampling_abandoned_total"),
            invalid: c("spanwire_processor_tail_sampling_invalid_requests_total"),
            held_groups: crate::telemetry::gauge("spanwire_processor_tail_sampling_held", labels),
            held_bytes: crate::telemetry::gauge(
                "spanwire_processor_tail_sampling_held_bytes",
                labels,
            ),
            last: sampler::Stats::default(),
        }
    }

    /// Adds what changed since the last call.
    fn publish(&mut self, s: &Sampler) {
        let now = s.stats();
        let last = &self.last;
        let d = |a: u64, b: u64| a.saturating_sub(b);
        for (i, (yes, no)) in self.per_policy.iter().enumerate() {
            let (a, b) = now.per_policy.get(i).copied().unwrap_or_default();
            let (la, lb) = last.per_policy.get(i).copied().unwrap_or_default();
            yes.increment(d(a, la));
            no.increment(d(b, lb));
        }
        self.kept.increment(d(now.kept, last.kept));
        self.dropped.increment(d(now.dropped, last.dropped));
        self.spans_kept
            .increment(d(now.spans_kept, last.spans_kept));
        self.spans_dropped
            .increment(d(now.spans_dropped, last.spans_dropped));
        self.early.increment(d(now.early, last.early));
        self.late_kept.increment(d(now.late_kept, last.late_kept));
        self.late_dropped
            .increment(d(now.late_dropped, last.late_dropped));
        self.merged.increment(d(now.merged, last.merged));
        self.abandoned.increment(d(now.abandoned, last.abandoned));
        self.held_groups.set(s.groups() as f64);
        self.held_bytes.set(s.bytes() as f64);
        self.last = now.clone();
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    mut sampler: Sampler,
    mut rx: mpsc::Receiver<(Bytes, usize, Acks)>,
    next: BoxConsumer,
    tick: Tick,
    pending: Arc<AtomicU64>,
    mut metrics: Metrics,
    name: String,
    stop: CancellationToken,
) {
    let epoch = Instant::now();
    let now_ms = || epoch.elapsed().as_millis() as u64;
    let now_s = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let mut ticker = tokio::time::interval(tick.0);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sender = Sender {
        next,
        name: name.clone(),
        stop,
    };
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some((bytes, items, acks)) = msg else { break };
                let mut late = Output::default();
                if let Err(e) = sampler.intake(&bytes, &acks, now_ms(), &mut late) {
                    metrics.invalid.increment(1);
                    tracing::warn!(processor = %name, error = %e, spans = items,
                        "a request the sampler cannot read; dropped");
                    acks.mark(AckOutcome::Dropped);
                }
                drop(acks);
                // Held spans are counted when their group is decided.
                pending.store(sampler.spans(), Ordering::Relaxed);
                sender.send(late).await;
            }
            _ = ticker.tick() => {
                let mut out = Output::default();
                sampler.expire(now_ms(), now_s(), &mut out);
                sender.send(out).await;
                pending.store(sampler.spans(), Ordering::Relaxed);
                metrics.publish(&sampler);
            }
        }
    }
    // Input closed (shutdown): what can be delivered again is given up,
    // the rest decided and sent.
    let mut out = Output::default();
    sampler.drain(now_s(), &mut out);
    sender.send(out).await;
    pending.store(0, Ordering::Relaxed);
    metrics.publish(&sampler);
}

struct Sender {
    next: BoxConsumer,
    name: String,
    stop: CancellationToken,
}

impl Sender {
    /// Passes kept spans on (as bytes when the next stage takes them),
    /// retrying while it refuses.
    async fn send(&self, out: Output) {
        if out.spans == 0 {
            return;
        }
        let n = out.spans;
        let batch = EncodedBatch {
            signal: Signal::Traces,
            items: n,
            bytes: out.bytes.into(),
            shape: None,
        };
        let backoff = Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(500),
            retry_after_cap: Duration::ZERO,
        };
        let next = self.next.as_ref();
        let result = if next.takes_encoded() {
            let offered = offer_until_taken(
                batch,
                out.acks,
                backoff,
                &self.stop,
                |d, a| next.consume_encoded(d, a),
                |_| {},
            )
            .await;
            settle(offered)
        } else {
            let data = match crate::convert::otlp_proto::decode_batch(&batch) {
                Ok(d) => d,
                Err(e) => {
                    // The bytes were checked on intake; this does not happen.
                    out.acks.mark(AckOutcome::Dropped);
                    tracing::error!(processor = %self.name, error = %e, spans = n, "kept spans do not decode; dropped");
                    return;
                }
            };
            let offered = offer_until_taken(
                data,
                out.acks,
                backoff,
                &self.stop,
                |d, a| next.consume(d, a),
                |_| {},
            )
            .await;
            settle(offered)
        };
        if let Err(reason) = result {
            tracing::error!(processor = %self.name, spans = n, %reason, "kept spans were not passed on");
        }
    }
}

/// What an offer came to: the spans given up at the shutdown deadline are
/// marked abandoned (a Kinesis consumer reads them again).
fn settle<T: std::fmt::Debug>(offered: Offered<T>) -> Result<(), String> {
    match offered {
        Offered::Taken => Ok(()),
        Offered::Failed(r) => Err(r),
        Offered::Stopped(r) => {
            r.acks.mark(AckOutcome::Abandoned);
            Err(format!("shutdown deadline: {}", r.reason))
        }
    }
}
