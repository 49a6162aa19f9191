//! Connector `agentmetrics`: spans in (as an exporter of a traces pipeline),
//! metrics out (as a receiver of a metrics pipeline), like the Collector's
//! `spanmetrics`, with GenAI agents in mind.
//!
//! Every span goes to the agent-trace model ([`crate::convert::genai`]): a
//! trace is counted once it has had no new span for `trace_idle`, and its
//! numbers become the series:
//! - `agent.invocations` (count) and `agent.duration` (histogram, seconds)
//!   per service, agent, operation, model and tool: invocations, model
//!   requests (each once, however many spans report it), tool calls,
//!   retrievals;
//! - `agent.errors` (failures as the model counts them), `agent.throttles`
//!   and `agent.retries` on the same dimensions;
//! - `agent.tokens` per service, agent, model and `gen_ai.token.type`
//!   (`input`, `output`, `cache_read`, `cache_write`), each call once;
//! - `agent.cost` from `pricing` over the built-in Bedrock table;
//! - `agent.active_sessions` (gauge): distinct sessions of invocations and
//!   calls per service and agent seen within `session_window`.
//!
//! A trace reopened by a late span adds only the difference (a counter that
//! would go down is left and counted). Spans no agent series counts give
//! `span.calls` and `span.duration` by service, span name, kind and status.
//! All sums and histograms are cumulative since start. Series are capped at
//! `max_series`; beyond it new combinations go to one series whose
//! dimensions are `other`, counted in `spanwire_connector_series_overflow_total`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, Span};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::component::{ComponentId, Connector, ConnectorFactory, Factory};
use crate::consumer::{Acks, BoxConsumer, Consumers, StartError};
use crate::convert::genai::span::FastMap;
use crate::convert::genai::{
    self, Attribution, FailureKind, Keys, Outcome, Price, Pricing, Role, Settled, TraceNumbers,
    Tracker, TrackerLimits,
};
use crate::settings::de::DeError;
use crate::settings::types::duration;
use crate::signal::{string_attribute, Signal, Telemetry};

fn default_buckets() -> Vec<f64> {
    vec![
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    ]
}
fn default_flush() -> Duration {
    Duration::from_secs(15)
}
fn default_window() -> Duration {
    Duration::from_secs(300)
}
fn default_max_series() -> usize {
    10_000
}
fn default_max_sessions() -> usize {
    100_000
}
fn yes() -> bool {
    true
}

/// `connectors.agentmetrics`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentMetricsConfig {
    /// Histogram bucket bounds, in seconds.
    #[serde(default = "default_buckets")]
    pub histogram_buckets: Vec<f64>,
    /// Extra span attributes to add as dimensions of the agent series.
    #[serde(default)]
    pub dimensions: Vec<String>,
    /// How often metrics are emitted.
    #[serde(default = "default_flush", with = "duration")]
    pub metrics_flush_interval: Duration,
    /// Sessions count as active this long after their last span.
    #[serde(default = "default_window", with = "duration")]
    pub session_window: Duration,
    /// Most series kept; further combinations go to an `other` series.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    /// Most sessions tracked (the oldest are forgotten first).
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Also count spans that are not GenAI spans (`span.calls`, `span.duration`).
    #[serde(default = "yes")]
    pub generic_span_metrics: bool,
    /// Per-model prices per 1,000 tokens (`{model: {input, output,
    /// cache_read, cache_write}}`), over the built-in Bedrock table:
    /// `agent.cost` sums them per agent and model.
    #[serde(default)]
    pub pricing: BTreeMap<String, Price>,
    /// Attribute keys that name a session (span, then resource), first
    /// found wins.
    #[serde(default = "crate::convert::genai::default_session_keys")]
    pub session_keys: Vec<String>,
    /// A trace's numbers are counted once it has had no new span for this
    /// long (spans of a trace arrive in any order and across batches).
    #[serde(default = "default_trace_idle", with = "duration")]
    pub trace_idle: Duration,
    /// A trace still receiving spans this long after its first is counted
    /// anyway (a trace that never ends); later spans reopen it.
    #[serde(default = "default_max_trace_duration", with = "duration")]
    pub max_trace_duration: Duration,
    /// Traces held until they settle at most (the oldest settle early).
    #[serde(default = "default_max_traces")]
    pub max_traces: usize,
    /// Memory for traces until they settle, in MiB (the oldest settle early).
    #[serde(default = "default_max_memory_mib")]
    pub max_memory_mib: usize,
}

fn default_trace_idle() -> Duration {
    Duration::from_secs(5)
}
fn default_max_trace_duration() -> Duration {
    Duration::from_secs(300)
}
fn default_max_traces() -> usize {
    50_000
}
fn default_max_memory_mib() -> usize {
    64
}

impl AgentMetricsConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        if self.histogram_buckets.is_empty()
            || self.histogram_buckets.windows(2).any(|w| w[0] >= w[1])
            || self.histogram_buckets.iter().any(|b| !b.is_finite())
        {
            return Err(DeError::custom(
                "histogram_buckets must be finite and strictly increasing",
            ));
        }
        if self.metrics_flush_interval.is_zero() {
            return Err(DeError::custom(
                "metrics_flush_interval must be more than 0",
            ));
        }
        if self.max_series == 0 {
            return Err(DeError::custom("max_series must be at least 1"));
        }
        if self.trace_idle.is_zero() || self.max_trace_duration < self.trace_idle {
            return Err(DeError::custom(
                "trace_idle must be more than 0 and max_trace_duration at least trace_idle",
            ));
        }
        if self.max_traces == 0 || self.max_memory_mib == 0 {
            return Err(DeError::custom(
                "max_traces and max_memory_mib must be at least 1",
            ));
        }
        if self.dimensions.len() > 32 {
            return Err(DeError::custom("at most 32 dimensions"));
        }
        Ok(())
    }
}

/// Which metric a series belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Invocations,
    Duration,
    Errors,
    Throttles,
    Retries,
    Tokens,
    Cost,
    SpanCalls,
    SpanDuration,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Invocations => "agent.invocations",
            Kind::Duration => "agent.duration",
            Kind::Errors => "agent.errors",
            Kind::Throttles => "agent.throttles",
            Kind::Retries => "agent.retries",
            Kind::Tokens => "agent.tokens",
            Kind::Cost => "agent.cost",
            Kind::SpanCalls => "span.calls",
            Kind::SpanDuration => "span.duration",
        }
    }
    fn description(self) -> &'static str {
        match self {
            Kind::Invocations => {
                "GenAI operations: agent invocations, model requests (each once, however many spans report it), tool calls"
            }
            Kind::Duration => "Duration of GenAI operations",
            Kind::Errors => "Failures: failed invocations, failed tool calls, unrecovered model calls, guardrail interventions",
            Kind::Throttles => "Model calls that were throttled",
            Kind::Retries => "Model call attempts that a retry recovered, and retries inside one call",
            Kind::Tokens => "Tokens used, by type",
            Kind::Cost => "Estimated cost of the tokens used, from `pricing`",
            Kind::SpanCalls => "Spans that are not GenAI operations",
            Kind::SpanDuration => "Duration of spans that are not GenAI operations",
        }
    }
    fn unit(self) -> &'static str {
        match self {
            Kind::Duration | Kind::SpanDuration => "s",
            Kind::Tokens => "{token}",
            Kind::Cost => "USD",
            _ => "{call}",
        }
    }
    fn histogram(self) -> bool {
        matches!(self, Kind::Duration | Kind::SpanDuration)
    }
}

/// One series: its metric, the service it belongs to, and its dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: Kind,
    service: String,
    dims: Vec<(&'static str, String)>,
    extra: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
enum Value {
    Count(u64),
    Cost(f64),
    Hist {
        counts: Vec<u64>,
        sum: f64,
        count: u64,
        min: f64,
        max: f64,
    },
}

struct Session {
    last_ms: u64,
}

struct State {
    series: HashMap<Key, Value>,
    tracker: Tracker,
    /// (service, agent) -> session id -> last seen.
    sessions: HashMap<(String, String), HashMap<String, Session>>,
    session_count: usize,
}

/// A GenAI operation's name: fixed, or as the span wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Op {
    None,
    Static(&'static str),
    Shared(Arc<str>),
}

impl Op {
    fn as_str(&self) -> &str {
        match self {
            Op::None => "",
            Op::Static(s) => s,
            Op::Shared(s) => s,
        }
    }
}

/// A series before its strings are made: shared texts, hashed fast, so a
/// trace's records fold into few series before a [`Key`] is built.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Light {
    kind: Kind,
    service: Option<Arc<str>>,
    agent: Option<Arc<str>>,
    op: Op,
    model: Option<Arc<str>>,
    tool: Option<Arc<str>>,
    error: Option<Arc<str>>,
    token: &'static str,
    carried: Vec<(u8, Arc<str>)>,
}

/// Series of one service, by metric.
type ByKind<'a> = BTreeMap<Kind, Vec<(&'a Key, &'a Value)>>;

/// The running connector: aggregation state shared by its two sides.
pub struct AgentMetrics {
    cfg: AgentMetricsConfig,
    state: Mutex<State>,
    start_unix_nano: u64,
    overflow: metrics::Counter,
    epoch: std::time::Instant,
    keys: Keys,
    model: ModelCounters,
}

/// The model's self-metrics (`spanwire_connector_agent_*`).
struct ModelCounters {
    settled: metrics::Counter,
    early: metrics::Counter,
    late: metrics::Counter,
    cycles: metrics::Counter,
    invalid_usage: metrics::Counter,
    corrections: metrics::Counter,
    segments: metrics::Counter,
    reopened: metrics::Counter,
    pending: metrics::Gauge,
    bytes: metrics::Gauge,
}

fn kind_name(k: i32) -> &'static str {
    match SpanKind::try_from(k).unwrap_or(SpanKind::Unspecified) {
        SpanKind::Server => "SPAN_KIND_SERVER",
        SpanKind::Client => "SPAN_KIND_CLIENT",
        SpanKind::Producer => "SPAN_KIND_PRODUCER",
        SpanKind::Consumer => "SPAN_KIND_CONSUMER",
        SpanKind::Internal => "SPAN_KIND_INTERNAL",
        SpanKind::Unspecified => "SPAN_KIND_UNSPECIFIED",
    }
}

impl AgentMetrics {
    /// A connector with `cfg`.
    pub fn new(cfg: AgentMetricsConfig, name: &str) -> AgentMetrics {
        let limits = TrackerLimits {
            idle_ms: cfg.trace_idle.as_millis() as u64,
            max_age_ms: cfg.max_trace_duration.as_millis() as u64,
            max_traces: cfg.max_traces,
            max_bytes: cfg.max_memory_mib.saturating_mul(1 << 20),
            ..TrackerLimits::default()
        };
        let tracker = Tracker::new(limits, Pricing::new(cfg.pricing.clone()));
        let c = |n: &'static str| metrics::counter!(n, "connector" => name.to_string());
        AgentMetrics {
            keys: Keys {
                session: cfg.session_keys.clone(),
                carry: cfg.dimensions.clone(),
            },
            cfg,
            state: Mutex::new(State {
                series: HashMap::new(),
                tracker,
                sessions: HashMap::new(),
                session_count: 0,
            }),
            start_unix_nano: crate::telemetry::unix_nanos_now(),
            overflow: c("spanwire_connector_series_overflow_total"),
            epoch: std::time::Instant::now(),
            model: ModelCounters {
                settled: c("spanwire_connector_agent_traces_settled_total"),
                early: c("spanwire_connector_agent_traces_settled_early_total"),
                late: c("spanwire_connector_agent_late_spans_total"),
                cycles: c("spanwire_connector_agent_parent_cycles_total"),
                invalid_usage: c("spanwire_connector_agent_invalid_usage_total"),
                corrections: c("spanwire_connector_agent_corrections_dropped_total"),
                segments: c("spanwire_connector_agent_trace_segments_total"),
                reopened: c("spanwire_connector_agent_traces_reopened_total"),
                bytes: metrics::gauge!("spanwire_connector_agent_memory_bytes", "connector" => name.to_string()),
                pending: metrics::gauge!("spanwire_connector_agent_traces_pending", "connector" => name.to_string()),
            },
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn add(
        &self,
        st: &mut State,
        mut key: Key,
        f: impl FnOnce(&mut Value),
        new: impl FnOnce() -> Value,
    ) {
        if !st.series.contains_key(&key) && st.series.len() >= self.cfg.max_series {
            self.overflow.increment(1);
            for d in &mut key.dims {
                d.1 = "other".into();
            }
            for d in &mut key.extra {
                d.1 = "other".into();
            }
        }
        f(st.series.entry(key).or_insert_with(new));
    }

    fn observe(&self, st: &mut State, key: Key, seconds: f64) {
        let bounds = &self.cfg.histogram_buckets;
        let i = bounds
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(bounds.len());
        self.add(
            st,
            key,
            |v| {
                if let Value::Hist {
                    counts,
                    sum,
                    count,
                    min,
                    max,
                } = v
                {
                    counts[i] += 1;
                    *sum += seconds;
                    *count += 1;
                    *min = min.min(seconds);
                    *max = max.max(seconds);
                }
            },
            || Value::Hist {
                counts: vec![0; bounds.len() + 1],
                sum: 0.0,
                count: 0,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
            },
        );
    }

    fn count(&self, st: &mut State, key: Key, n: u64) {
        self.add(
            st,
            key,
            |v| {
                if let Value::Count(c) = v {
                    *c += n;
                }
            },
            || Value::Count(0),
        );
    }

    fn add_cost(&self, st: &mut State, key: Key, usd: f64) {
        self.add(
            st,
            key,
            |v| {
                if let Value::Cost(c) = v {
                    *c += usd;
                }
            },
            || Value::Cost(0.0),
        );
    }

    /// Adds a batch of spans: GenAI spans go to the agent-trace model
    /// (counted when their trace settles), others to `span.calls` at once.
    pub fn record(&self, data: &Telemetry) {
        let Telemetry::Traces(rs) = data else { return };
        let now = self.now_ms();
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut settled = Vec::new();
        for r in rs {
            let origin = genai::span::struct_origin(r.resource.as_ref(), &self.keys.session);
            let service = origin.service.as_deref().unwrap_or("unknown_service");
            for span in r.scope_spans.iter().flat_map(|s| &s.spans) {
                let facts = genai::span::read_struct(span, &origin, &self.keys);
                // Spans that no agent series counts (cycles, chains,
                // guardrail checks that did not intervene, the rest).
                let generic = matches!(facts.role, Role::Other | Role::Rollup | Role::Guardrail);
                if generic && self.cfg.generic_span_metrics {
                    self.record_generic(&mut st, span, service);
                }
                st.tracker
                    .offer(genai::trace_id(&span.trace_id), facts, now, &mut settled);
            }
        }
        for s in &settled {
            self.apply(&mut st, s, now);
        }
        self.publish(&st);
        // Bounded memory: forget sessions past the window, then the oldest.
        if st.session_count > self.cfg.max_sessions {
            let window = self.cfg.session_window.as_millis() as u64;
            prune_sessions(&mut st, now, window, self.cfg.max_sessions);
        }
    }

    /// Counts the traces settled by `now` (all of them when `all`).
    fn settle(&self, st: &mut State, now: u64, all: bool) {
        let mut settled = Vec::new();
        if all {
            st.tracker.drain(&mut settled);
        } else {
            st.tracker.settle_due(now, &mut settled);
        }
        for s in &settled {
            self.apply(st, s, now);
        }
        self.publish(st);
    }

    /// The model's self-metrics, once per batch or settlement pass.
    fn publish(&self, st: &State) {
        let stats = st.tracker.stats();
        self.model.settled.absolute(stats.settled);
        self.model.early.absolute(stats.early);
        self.model.late.absolute(stats.late_spans);
        self.model.cycles.absolute(stats.cycles);
        self.model.invalid_usage.absolute(stats.invalid_usage);
        self.model.segments.absolute(stats.segments);
        self.model.reopened.absolute(stats.reopened);
        self.model.pending.set(st.tracker.pending() as f64);
        self.model.bytes.set(st.tracker.bytes() as f64);
    }

    /// Adds a settled trace's numbers (less what was counted for it
    /// before, for a trace a late span reopened).
    fn apply(&self, st: &mut State, s: &Settled, now: u64) {
        let mut counts: FastMap<Light, i128> = FastMap::default();
        let mut costs: FastMap<Light, f64> = FastMap::default();
        let mut durations: FastMap<Light, Vec<f64>> = FastMap::default();
        self.contributions(&s.numbers, 1, &mut counts, &mut costs, &mut durations, None);
        if let Some(prev) = &s.previous {
            let mut seen_durations = FastMap::default();
            self.contributions(prev, -1, &mut counts, &mut costs, &mut seen_durations, None);
            // Durations are observed once per span: only new spans add.
            let before: std::collections::HashSet<u64> = prev
                .calls
                .iter()
                .map(|c| c.span_id)
                .chain(prev.invocations.iter().map(|i| i.span_id))
                .chain(prev.tools.iter().map(|t| t.span_id))
                .chain(prev.retrievals.iter().map(|t| t.span_id))
                .collect();
            durations.clear();
            self.contributions(
                &s.numbers,
                0,
                &mut counts,
                &mut costs,
                &mut durations,
                Some(&before),
            );
        }
        for (k, n) in counts {
            match u64::try_from(n) {
                Ok(n) if n > 0 => self.count(st, self.key_of(&k), n),
                Ok(_) => {}
                Err(_) => self.model.corrections.increment(1),
            }
        }
        for (k, c) in costs {
            if c > 0.0 {
                self.add_cost(st, self.key_of(&k), c);
            } else if c < -1e-12 {
                self.model.corrections.increment(1);
            }
        }
        for (k, all) in durations {
            let key = self.key_of(&k);
            for secs in all {
                self.observe(st, key.clone(), secs);
            }
        }
        // Active sessions: the sessions of the trace's invocations and calls.
        let numbers = &s.numbers;
        let at = numbers
            .invocations
            .iter()
            .map(|i| &i.at)
            .chain(numbers.calls.iter().map(|c| &c.at));
        let mut seen: Vec<(String, String, String)> = Vec::new();
        for a in at {
            let Some(sid) = a.session.as_deref() else {
                continue;
            };
            let svc = a
                .service
                .as_deref()
                .unwrap_or("unknown_service")
                .to_string();
            let agent = a.agent.as_deref().unwrap_or("").to_string();
            let k = (svc, agent, sid.to_string());
            if !seen.contains(&k) {
                seen.push(k);
            }
        }
        for (svc, agent, sid) in seen {
            let sessions = st.sessions.entry((svc, agent)).or_default();
            if sessions.insert(sid, Session { last_ms: now }).is_none() {
                st.session_count += 1;
            }
        }
    }

    /// The series a trace's numbers add to, times `sign` (0: durations
    /// only, of spans not in `skip`).
    fn contributions(
        &self,
        n: &TraceNumbers,
        sign: i128,
        counts: &mut FastMap<Light, i128>,
        costs: &mut FastMap<Light, f64>,
        durations: &mut FastMap<Light, Vec<f64>>,
        skip: Option<&std::collections::HashSet<u64>>,
    ) {
        let light = |kind: Kind, a: &Attribution, op: Op, tool: Option<&Arc<str>>| Light {
            kind,
            service: a.service.clone(),
            agent: a.agent.clone(),
            op,
            model: a.model.clone(),
            tool: tool.cloned(),
            error: None,
            token: "",
            carried: a.carried.clone(),
        };
        let mut bump = |k: Light, by: u64| {
            if sign != 0 && by > 0 {
                *counts.entry(k).or_default() += sign * i128::from(by);
            }
        };
        let mut time = |k: Light, span: u64, secs: f64| {
            let new = skip.is_none_or(|s| !s.contains(&span));
            if (sign > 0 && skip.is_none()) || (sign == 0 && new) {
                durations.entry(k).or_default().push(secs);
            }
        };
        for i in &n.invocations {
            let l = light(Kind::Invocations, &i.at, Op::Static("invoke_agent"), None);
            time(
                Light {
                    kind: Kind::Duration,
                    ..l.clone()
                },
                i.span_id,
                i.seconds,
            );
            bump(l, 1);
        }
        for c in &n.calls {
            let l = light(
                Kind::Invocations,
                &c.at,
                Op::Shared(c.operation.clone()),
                None,
            );
            time(
                Light {
                    kind: Kind::Duration,
                    ..l.clone()
                },
                c.span_id,
                c.seconds,
            );
            let retried = matches!(c.outcome, Outcome::Retried { .. });
            bump(
                Light {
                    kind: Kind::Retries,
                    ..l.clone()
                },
                u64::from(c.requests - 1) + u64::from(retried),
            );
            if c.throttled {
                bump(
                    Light {
                        kind: Kind::Throttles,
                        ..l.clone()
                    },
                    1,
                );
            }
            bump(l, u64::from(c.requests));
        }
        for t in &n.tools {
            let l = light(
                Kind::Invocations,
                &t.at,
                Op::Static("execute_tool"),
                t.tool.as_ref(),
            );
            time(
                Light {
                    kind: Kind::Duration,
                    ..l.clone()
                },
                t.span_id,
                t.seconds,
            );
            bump(l, 1);
        }
        for r in &n.retrievals {
            let l = light(Kind::Invocations, &r.at, Op::Static("retrieval"), None);
            time(
                Light {
                    kind: Kind::Duration,
                    ..l.clone()
                },
                r.span_id,
                r.seconds,
            );
            bump(l, 1);
        }
        for f in &n.failures {
            let (op, tool) = match f.kind {
                FailureKind::Invocation => ("invoke_agent", None),
                FailureKind::Tool => (
                    "execute_tool",
                    n.tools
                        .iter()
                        .find(|t| t.span_id == f.span_id)
                        .and_then(|t| t.tool.as_ref()),
                ),
                FailureKind::Model => ("chat", None),
                FailureKind::Guardrail => ("guardrail", None),
            };
            let mut l = light(Kind::Errors, &f.at, Op::Static(op), tool);
            l.error = Some(f.error.clone().unwrap_or_else(|| Arc::from("_OTHER")));
            bump(l, 1);
        }
        for u in &n.usage {
            let base = light(Kind::Tokens, &u.at, Op::None, None);
            for (token_type, count) in u.tokens.by_type() {
                bump(
                    Light {
                        token: token_type,
                        ..base.clone()
                    },
                    count,
                );
            }
            if let (Some(c), true) = (u.cost, sign != 0) {
                *costs
                    .entry(Light {
                        kind: Kind::Cost,
                        ..base
                    })
                    .or_default() += sign as f64 * c;
            }
        }
    }

    /// The series of a [`Light`] key.
    fn key_of(&self, l: &Light) -> Key {
        let text = |s: &Option<Arc<str>>| s.as_deref().unwrap_or("").to_string();
        let mut dims = vec![("gen_ai.agent.name", text(&l.agent))];
        match l.kind {
            Kind::Tokens | Kind::Cost => {
                dims.push(("gen_ai.request.model", text(&l.model)));
                if l.kind == Kind::Tokens {
                    dims.push(("gen_ai.token.type", l.token.to_string()));
                }
            }
            _ => {
                dims.push(("gen_ai.operation.name", l.op.as_str().to_string()));
                dims.push(("gen_ai.request.model", text(&l.model)));
                dims.push(("gen_ai.tool.name", text(&l.tool)));
                if let Some(e) = &l.error {
                    dims.push(("error.type", e.to_string()));
                }
            }
        }
        Key {
            kind: l.kind,
            service: l
                .service
                .as_deref()
                .unwrap_or("unknown_service")
                .to_string(),
            dims,
            extra: self
                .cfg
                .dimensions
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let v = l
                        .carried
                        .iter()
                        .find(|(j, _)| usize::from(*j) == i)
                        .map(|(_, v)| v.to_string())
                        .unwrap_or_default();
                    (d.clone(), v)
                })
                .collect(),
        }
    }

    /// Calls and duration of a span that is not a GenAI operation
    /// (`generic_span_metrics`).
    fn record_generic(&self, st: &mut State, span: &Span, service: &str) {
        let status = match span.status.as_ref().map(|s| s.code) {
            Some(2) => "STATUS_CODE_ERROR",
            Some(1) => "STATUS_CODE_OK",
            _ => "STATUS_CODE_UNSET",
        };
        let dims = vec![
            ("span.name", span.name.clone()),
            ("span.kind", kind_name(span.kind).to_string()),
            ("status.code", status.to_string()),
        ];
        let key = |kind| Key {
            kind,
            service: service.to_string(),
            dims: dims.clone(),
            extra: Vec::new(),
        };
        self.count(st, key(Kind::SpanCalls), 1);
        self.observe(st, key(Kind::SpanDuration), span_seconds(span));
    }

    /// Counts every trace held now, settled or not (at shutdown).
    pub fn settle_all(&self) {
        let now = self.now_ms();
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        self.settle(&mut st, now, true);
    }

    /// The aggregates as OTLP metrics (cumulative since start), one
    /// resource per service; traces due to settle are counted first.
    pub fn snapshot(&self) -> Vec<ResourceMetrics> {
        let now_ns = crate::telemetry::unix_nanos_now();
        let now_ms = self.now_ms();
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        self.settle(&mut st, now_ms, false);
        prune_sessions(
            &mut st,
            now_ms,
            self.cfg.session_window.as_millis() as u64,
            self.cfg.max_sessions,
        );
        // service -> kind -> points
        let mut by_service: BTreeMap<String, ByKind<'_>> = BTreeMap::new();
        for (k, v) in &st.series {
            by_service
                .entry(k.service.clone())
                .or_default()
                .entry(k.kind)
                .or_default()
                .push((k, v));
        }
        let mut sessions: BTreeMap<String, Vec<(String, usize)>> = Default::default();
        for ((svc, agent), s) in &st.sessions {
            sessions
                .entry(svc.clone())
                .or_default()
                .push((agent.clone(), s.len()));
            by_service.entry(svc.clone()).or_default();
        }
        let bounds = &self.cfg.histogram_buckets;
        let start = self.start_unix_nano;
        by_service
            .into_iter()
            .map(|(service, kinds)| {
                let mut metrics: Vec<Metric> = kinds
                    .into_iter()
                    .map(|(kind, points)| {
                        let attrs = |k: &Key| -> Vec<KeyValue> {
                            k.dims
                                .iter()
                                .map(|(n, v)| string_attribute(n, v.clone()))
                                .chain(k.extra.iter().map(|(n, v)| string_attribute(n, v.clone())))
                                .collect()
                        };
                        let data = if kind.histogram() {
                            Data::Histogram(Histogram {
                                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                                data_points: points
                                    .iter()
                                    .filter_map(|(k, v)| match v {
                                        Value::Hist {
                                            counts,
                                            sum,
                                            count,
                                            min,
                                            max,
                                        } => Some(HistogramDataPoint {
                                            attributes: attrs(k),
                                            start_time_unix_nano: start,
                                            time_unix_nano: now_ns,
                                            count: *count,
                                            sum: Some(*sum),
                                            bucket_counts: counts.clone(),
                                            explicit_bounds: bounds.clone(),
                                            min: min.is_finite().then_some(*min),
                                            max: max.is_finite().then_some(*max),
                                            ..Default::default()
                                        }),
                                        _ => None,
                                    })
                                    .collect(),
                            })
                        } else {
                            Data::Sum(Sum {
                                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                                is_monotonic: true,
                                data_points: points
                                    .iter()
                                    .filter_map(|(k, v)| match v {
                                        Value::Count(c) => Some(NumberDataPoint {
                                            attributes: attrs(k),
                                            start_time_unix_nano: start,
                                            time_unix_nano: now_ns,
                                            value: Some(number_data_point::Value::AsInt(*c as i64)),
                                            ..Default::default()
                                        }),
                                        Value::Cost(c) => Some(NumberDataPoint {
                                            attributes: attrs(k),
                                            start_time_unix_nano: start,
                                            time_unix_nano: now_ns,
                                            value: Some(number_data_point::Value::AsDouble(*c)),
                                            ..Default::default()
                                        }),
                                        _ => None,
                                    })
                                    .collect(),
                            })
                        };
                        Metric {
                            name: kind.name().into(),
                            description: kind.description().into(),
                            unit: kind.unit().into(),
                            data: Some(data),
                            ..Default::default()
                        }
                    })
                    .collect();
                if let Some(list) = sessions.get(&service) {
                    metrics.push(Metric {
                        name: "agent.active_sessions".into(),
                        description: "Distinct sessions with a span within the session window"
                            .into(),
                        unit: "{session}".into(),
                        data: Some(Data::Gauge(Gauge {
                            data_points: list
                                .iter()
                                .map(|(agent, n)| NumberDataPoint {
                                    attributes: vec![string_attribute(
                                        "gen_ai.agent.name",
                                        agent.clone(),
                                    )],
                                    time_unix_nano: now_ns,
                                    value: Some(number_data_point::Value::AsInt(*n as i64)),
                                    ..Default::default()
                                })
                                .collect(),
                        })),
                        ..Default::default()
                    });
                }
                ResourceMetrics {
                    resource: Some(Resource {
                        attributes: vec![string_attribute("service.name", service)],
                        ..Default::default()
                    }),
                    scope_metrics: vec![ScopeMetrics {
                        scope: Some(
                            opentelemetry_proto::tonic::common::v1::InstrumentationScope {
                                name: "spanwire/agentmetrics".into(),
                                version: env!("CARGO_PKG_VERSION").into(),
                                ..Default::default()
                            },
                        ),
                        metrics,
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }
            })
            .collect()
    }
}

fn span_seconds(span: &Span) -> f64 {
    span.end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano) as f64
        / 1e9
}

fn prune_sessions(st: &mut State, now_ms: u64, window_ms: u64, max: usize) {
    for s in st.sessions.values_mut() {
        s.retain(|_, v| now_ms.saturating_sub(v.last_ms) < window_ms);
    }
    st.sessions.retain(|_, s| !s.is_empty());
    let mut total: usize = st.sessions.values().map(HashMap::len).sum();
    if total > max {
        // Oldest first.
        let mut all: Vec<(u64, (String, String), String)> = st
            .sessions
            .iter()
            .flat_map(|(k, s)| {
                s.iter()
                    .map(move |(id, v)| (v.last_ms, k.clone(), id.clone()))
            })
            .collect();
        all.sort();
        for (_, k, id) in all {
            if total <= max {
                break;
            }
            if let Some(s) = st.sessions.get_mut(&k) {
                s.remove(&id);
                total -= 1;
            }
        }
    }
    st.session_count = total;
}

/// The `agentmetrics` connector's factory.
pub struct AgentMetricsFactory;

impl Factory for AgentMetricsFactory {
    type Config = AgentMetricsConfig;
    fn type_name(&self) -> &'static str {
        "agentmetrics"
    }
    fn validate(&self, config: &AgentMetricsConfig) -> Result<(), DeError> {
        config.validate()
    }
}

impl ConnectorFactory for AgentMetricsFactory {
    fn input_signals(&self, _config: &AgentMetricsConfig) -> &'static [Signal] {
        &[Signal::Traces]
    }
    fn output_signals(&self, _config: &AgentMetricsConfig) -> &'static [Signal] {
        &[Signal::Metrics]
    }
    fn build(
        &self,
        config: &AgentMetricsConfig,
        id: &ComponentId,
    ) -> Result<Arc<dyn Connector>, StartError> {
        Ok(Arc::new(AgentMetricsConnector(Arc::new(
            AgentMetrics::new(config.clone(), &id.to_string()),
        ))))
    }
}

/// A running `agentmetrics` connector: spans in (aggregated at once, never
/// refused), metric snapshots out.
pub struct AgentMetricsConnector(pub Arc<AgentMetrics>);

#[async_trait]
impl Connector for AgentMetricsConnector {
    async fn consume(&self, data: Arc<Telemetry>) -> Result<(), String> {
        self.0.record(&data);
        Ok(())
    }

    fn start(&self, output: Consumers, cancel: CancellationToken) -> Vec<JoinHandle<()>> {
        match output.metrics {
            Some(next) => vec![start_emitter(self.0.clone(), next, cancel)],
            None => Vec::new(),
        }
    }
}

/// The metrics side: emits a snapshot every `metrics_flush_interval` into
/// `next` (the metrics pipelines), and once more at shutdown.
pub fn start_emitter(
    conn: Arc<AgentMetrics>,
    next: BoxConsumer,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(conn.cfg.metrics_flush_interval);
        tick.tick().await;
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                _ = cancel.cancelled() => true,
            };
            if stopping {
                conn.settle_all();
            }
            let snapshot = conn.snapshot();
            if !snapshot.is_empty() {
                if let Err(e) = next
                    .consume(Telemetry::Metrics(snapshot), Acks::none())
                    .await
                {
                    // Cumulative: the next snapshot carries everything again.
                    tracing::warn!(error = %e, "agentmetrics: the metrics pipeline did not take a snapshot");
                }
            }
            if stopping {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests;
