//! Connector `agentmetrics`: spans in (as an exporter of a traces pipeline),
//! metrics out (as a receiver of a metrics pipeline), like the Collector's
//! `spanmetrics`, with GenAI agents in mind.
//!
//! From spans with `gen_ai.*` attributes:
//! - `agent.invocations` (count) and `agent.duration` (histogram, seconds) per
//!   service, agent, operation, model and tool;
//! - `agent.errors` (status ERROR, `error.type`, HTTP 5xx) and `agent.throttles`
//!   (HTTP 429, `error.type` naming throttling) on the same dimensions;
//! - `agent.tokens` per service, agent, model and `gen_ai.token.type`
//!   (`input`, `output`, `cache_read`, `cache_write`);
//! - `agent.active_sessions` (gauge): distinct `gen_ai.conversation.id` /
//!   `session.id` per service and agent seen within `session_window`.
//!
//! Other spans give `span.calls` and `span.duration` by service, span name,
//! kind and status. All sums and histograms are cumulative since start.
//! Series are capped at `max_series`; beyond it new combinations go to one
//! series whose dimensions are `other`, counted in
//! `spanwire_connector_series_overflow_total`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::component::{ComponentId, Connector, ConnectorFactory, Factory};
use crate::consumer::{Acks, BoxConsumer, Consumers, StartError};
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
    /// Per-model prices per 1,000 tokens (`{model: {input, output}}`, as the
    /// `live` exporter's): `agent.cost` sums them per agent and model.
    #[serde(default)]
    pub pricing: BTreeMap<String, crate::exporters::live::store::Price>,
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
            Kind::Tokens => "agent.tokens",
            Kind::Cost => "agent.cost",
            Kind::SpanCalls => "span.calls",
            Kind::SpanDuration => "span.duration",
        }
    }
    fn description(self) -> &'static str {
        match self {
            Kind::Invocations => {
                "GenAI operations (agent invocations, model calls, tool calls, retrievals)"
            }
            Kind::Duration => "Duration of GenAI operations",
            Kind::Errors => "GenAI operations that failed",
            Kind::Throttles => "GenAI operations that were throttled",
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

#[derive(Default)]
struct State {
    series: HashMap<Key, Value>,
    /// (service, agent) -> session id -> last seen.
    sessions: HashMap<(String, String), HashMap<String, Session>>,
    session_count: usize,
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
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()
}

fn attr_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attrs, key)? {
        any_value::Value::StringValue(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

fn attr_int(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key)? {
        any_value::Value::IntValue(i) => Some(*i),
        any_value::Value::DoubleValue(d) => Some(*d as i64),
        any_value::Value::StringValue(s) => s.parse().ok(),
        _ => None,
    }
}

fn display(v: &any_value::Value) -> String {
    match v {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        any_value::Value::BoolValue(b) => b.to_string(),
        _ => String::new(),
    }
}

/// The GenAI operation of a span, if it is one.
fn operation(span: &Span) -> Option<String> {
    if let Some(op) = attr_str(&span.attributes, "gen_ai.operation.name") {
        return Some(op.to_string());
    }
    // Older instrumentations name only the system or the kind of span.
    if attr_str(&span.attributes, "gen_ai.system").is_some()
        || attr_str(&span.attributes, "gen_ai.provider.name").is_some()
    {
        return Some(match attr_str(&span.attributes, "gen_ai.tool.name") {
            Some(_) => "execute_tool".into(),
            None => "chat".into(),
        });
    }
    None
}

fn throttled(span: &Span) -> bool {
    let status = attr_int(&span.attributes, "http.response.status_code")
        .or_else(|| attr_int(&span.attributes, "http.status_code"));
    status == Some(429)
        || attr_str(&span.attributes, "error.type").is_some_and(|t| {
            let t = t.to_ascii_lowercase();
            t.contains("throttl") || t.contains("toomanyrequests") || t.contains("rate")
        })
}

fn failed(span: &Span) -> bool {
    let status_error = span
        .status
        .as_ref()
        .is_some_and(|s| s.code == StatusCode::Error as i32);
    let http = attr_int(&span.attributes, "http.response.status_code")
        .or_else(|| attr_int(&span.attributes, "http.status_code"));
    status_error
        || http.is_some_and(|c| c >= 500)
        || attr_str(&span.attributes, "error.type").is_some()
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
        AgentMetrics {
            cfg,
            state: Mutex::new(State::default()),
            start_unix_nano: crate::telemetry::unix_nanos_now(),
            overflow: metrics::counter!("spanwire_connector_series_overflow_total", "connector" => name.to_string()),
            epoch: std::time::Instant::now(),
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

    /// Adds a batch of spans to the aggregates.
    pub fn record(&self, data: &Telemetry) {
        let Telemetry::Traces(rs) = data else { return };
        let now = self.now_ms();
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let trace_agents = trace_agents(rs);
        for r in rs {
            let res: &[KeyValue] = r
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            let service = attr_str(res, "service.name").unwrap_or("unknown_service");
            for span in r.scope_spans.iter().flat_map(|s| &s.spans) {
                match operation(span) {
                    Some(op) => self.record_genai(&mut st, span, service, op, &trace_agents, now),
                    None if self.cfg.generic_span_metrics => {
                        self.record_generic(&mut st, span, service)
                    }
                    None => {}
                }
            }
        }
        // Bounded memory: forget sessions past the window, then the oldest.
        if st.session_count > self.cfg.max_sessions {
            let window = self.cfg.session_window.as_millis() as u64;
            prune_sessions(&mut st, now, window, self.cfg.max_sessions);
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

    /// Invocations, duration, throttles, errors, tokens and the session of
    /// one GenAI operation span.
    fn record_genai(
        &self,
        st: &mut State,
        span: &Span,
        service: &str,
        op: String,
        trace_agents: &HashMap<&[u8], &str>,
        now: u64,
    ) {
        let a = &span.attributes;
        let agent = attr_str(a, "gen_ai.agent.name")
            .or_else(|| attr_str(a, "gen_ai.agent.id"))
            .or_else(|| trace_agents.get(span.trace_id.as_slice()).copied())
            .unwrap_or("")
            .to_string();
        let model = attr_str(a, "gen_ai.request.model")
            .or_else(|| attr_str(a, "gen_ai.response.model"))
            .unwrap_or("")
            .to_string();
        let tool = attr_str(a, "gen_ai.tool.name").unwrap_or("").to_string();
        let extra: Vec<(String, String)> = self
            .cfg
            .dimensions
            .iter()
            .map(|k| (k.clone(), attr(a, k).map(display).unwrap_or_default()))
            .collect();
        let dims = vec![
            ("gen_ai.agent.name", agent.clone()),
            ("gen_ai.operation.name", op),
            ("gen_ai.request.model", model.clone()),
            ("gen_ai.tool.name", tool),
        ];
        let key = |kind, dims: &Vec<(&'static str, String)>| Key {
            kind,
            service: service.to_string(),
            dims: dims.clone(),
            extra: extra.clone(),
        };
        self.count(st, key(Kind::Invocations, &dims), 1);
        self.observe(st, key(Kind::Duration, &dims), span_seconds(span));
        if throttled(span) {
            self.count(st, key(Kind::Throttles, &dims), 1);
        }
        if failed(span) {
            let mut d = dims.clone();
            d.push((
                "error.type",
                attr_str(a, "error.type").unwrap_or("_OTHER").to_string(),
            ));
            self.count(st, key(Kind::Errors, &d), 1);
        }
        let mut cost = 0.0;
        let price = self.cfg.pricing.get(&model).copied();
        for (token_type, n) in token_counts(a) {
            let d = vec![
                ("gen_ai.agent.name", agent.clone()),
                ("gen_ai.request.model", model.clone()),
                ("gen_ai.token.type", token_type.to_string()),
            ];
            self.count(st, key(Kind::Tokens, &d), n);
            if let Some(p) = price {
                cost += n as f64 / 1000.0
                    * match token_type {
                        "input" => p.input,
                        "output" => p.output,
                        _ => 0.0,
                    };
            }
        }
        if price.is_some() {
            let d = vec![
                ("gen_ai.agent.name", agent.clone()),
                ("gen_ai.request.model", model.clone()),
            ];
            self.add(
                st,
                key(Kind::Cost, &d),
                |v| {
                    if let Value::Cost(c) = v {
                        *c += cost;
                    }
                },
                || Value::Cost(0.0),
            );
        }
        let session = attr_str(a, "gen_ai.conversation.id").or_else(|| attr_str(a, "session.id"));
        if let Some(sid) = session {
            let sessions = st.sessions.entry((service.to_string(), agent)).or_default();
            if sessions
                .insert(sid.to_string(), Session { last_ms: now })
                .is_none()
            {
                st.session_count += 1;
            }
        }
    }

    /// The aggregates as OTLP metrics (cumulative since start), one resource per service.
    pub fn snapshot(&self) -> Vec<ResourceMetrics> {
        let now_ns = crate::telemetry::unix_nanos_now();
        let now_ms = self.now_ms();
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
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

/// A span without its own agent name counts for the agent of its trace
/// (the invoke_agent span's), when that span is in the batch: model and
/// tool calls rarely repeat the agent's name.
fn trace_agents(rs: &[crate::signal::ResourceSpans]) -> HashMap<&[u8], &str> {
    let mut trace_agents: HashMap<&[u8], &str> = HashMap::new();
    for span in rs
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
    {
        if let Some(a) = attr_str(&span.attributes, "gen_ai.agent.name")
            .or_else(|| attr_str(&span.attributes, "gen_ai.agent.id"))
        {
            trace_agents.entry(span.trace_id.as_slice()).or_insert(a);
        }
    }
    trace_agents
}

fn span_seconds(span: &Span) -> f64 {
    span.end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano) as f64
        / 1e9
}

/// Token counts by type. Each type once, from the first of its names
/// present (some instrumentations write both the current and the old name).
fn token_counts(a: &[KeyValue]) -> Vec<(&'static str, u64)> {
    const TYPES: [(&[&str], &str); 4] = [
        (
            &["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"],
            "input",
        ),
        (
            &[
                "gen_ai.usage.output_tokens",
                "gen_ai.usage.completion_tokens",
            ],
            "output",
        ),
        (
            &[
                "gen_ai.usage.cache_read_input_tokens",
                "gen_ai.usage.cache_read.input_tokens",
            ],
            "cache_read",
        ),
        (
            &[
                "gen_ai.usage.cache_creation_input_tokens",
                "gen_ai.usage.cache_creation.input_tokens",
                "gen_ai.usage.cache_write_input_tokens",
            ],
            "cache_write",
        ),
    ];
    TYPES
        .iter()
        .filter_map(|(names, token_type)| {
            let n = names
                .iter()
                .find_map(|k| attr_int(a, k))
                .filter(|n| *n > 0)?;
            Some((*token_type, n as u64))
        })
        .collect()
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
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    fn cfg() -> AgentMetricsConfig {
        serde_json::from_str::<AgentMetricsConfig>("{}").unwrap()
    }

    fn span(attrs: Vec<KeyValue>, secs: f64, status: i32) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
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
}
