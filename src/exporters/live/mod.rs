//! Exporter `live`: agent sessions as their spans arrive, held in a bounded
//! [`store`] and served on the exporter's own endpoint (default
//! `localhost:4321`, with the receivers' `tls` and bearer-token `auth`):
//!
//! - `GET /`: the page (embedded: `page.html`, `app.js`, `app.css`): agent
//!   cards, the live session list, and a session's growing waterfall;
//! - `GET /api/sessions` (`?agent=`, `?status=active|ok|error`, `?since=`
//!   Unix ms): summaries, most recently updated first, as JSON;
//! - `GET /api/sessions/{id}`: one session with its spans and GenAI events;
//! - `GET /api/failures`: the last error spans with their sessions, newest
//!   first;
//! - `GET /api/live` (`?session=`, `?agent=`, `?errors=true`): the events as
//!   they happen, over a WebSocket (text frames) when the request asks to
//!   upgrade, else as server-sent events (`curl -N`). Each event is JSON:
//!   `{"type":"spans","session_id",…,"spans":[…]}`, `{"type":"summary",…}`,
//!   or `{"type":"lagged","dropped":N}`. A subscriber to one session first
//!   gets the spans already held, then the new ones: each span once, in
//!   arrival order.
//!
//! Subscribers never slow the pipeline: they are indexed by what they asked
//! for (a batch costs O(matching subscribers)), and each has a queue
//! bounded in events (`subscriber_queue`) and bytes
//! (`subscriber_buffer_mib`); one that falls behind gets a single "lagged"
//! event with the count it missed once it has worked off half its queue,
//! and is disconnected if it has not by its next event. With no
//! subscriber, nothing is encoded.

pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use self::store::{Limits, Price, Store, Summary};
use crate::component::{
    BuiltExporter, Export, ExportError, ExportOk, ExporterContext, ExporterFactory, Factory,
};
use crate::consumer::StartError;
use crate::settings::de::DeError;
use crate::settings::types::{duration, AuthConfig, QueueConfig, RetryConfig, TlsServerConfig};
use crate::signal::{Metadata, Signal, Telemetry};

/// `exporters.live`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LiveExporterConfig {
    /// Where the API, the live streams and the page are served.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Serve HTTPS.
    #[serde(default)]
    pub tls: Option<TlsServerConfig>,
    /// Require a bearer token.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Attribute keys that name a session, first found wins (then the trace id).
    #[serde(default = "default_keys")]
    pub session_keys: Vec<String>,
    /// Sessions held at most (least recently updated evicted first).
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Span records kept per session at most.
    #[serde(default = "default_max_spans")]
    pub max_spans_per_session: usize,
    /// GenAI event records kept per session at most.
    #[serde(default = "default_max_events")]
    pub max_events_per_session: usize,
    /// A session idle this long is forgotten.
    #[serde(default = "default_retention", with = "duration")]
    pub retention: Duration,
    /// What the store holds at most, in MiB: its span log chunks and event
    /// records (the least recently updated sessions are evicted first).
    #[serde(default = "default_max_memory")]
    pub max_memory_mib: usize,
    /// Per-model prices per 1,000 tokens: `{model: {input, output}}`.
    #[serde(default)]
    pub pricing: BTreeMap<String, Price>,
    /// Events queued per subscriber at most.
    #[serde(default = "default_queue")]
    pub subscriber_queue: usize,
    /// What the events queued for one subscriber may hold, in MiB (their
    /// JSON frames and OTLP bytes; GenAI event records counted twice, for
    /// their JSON).
    #[serde(default = "default_buffer")]
    pub subscriber_buffer_mib: usize,
}

fn default_endpoint() -> String {
    "localhost:4321".into()
}
fn default_keys() -> Vec<String> {
    vec!["session.id".into(), "gen_ai.conversation.id".into()]
}
fn default_max_sessions() -> usize {
    1000
}
fn default_max_spans() -> usize {
    2000
}
fn default_max_memory() -> usize {
    64
}
fn default_max_events() -> usize {
    1000
}
fn default_retention() -> Duration {
    Duration::from_secs(3600)
}
fn default_buffer() -> usize {
    4
}
fn default_queue() -> usize {
    1024
}

impl LiveExporterConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        crate::settings::types::check_listen_endpoint(&self.endpoint).map_err(DeError::custom)?;
        for (what, n) in [
            ("max_sessions", self.max_sessions),
            ("max_spans_per_session", self.max_spans_per_session),
            ("max_events_per_session", self.max_events_per_session),
            ("max_memory_mib", self.max_memory_mib),
            ("subscriber_buffer_mib", self.subscriber_buffer_mib),
            ("subscriber_queue", self.subscriber_queue),
        ] {
            if n == 0 {
                return Err(DeError::custom(format!("{what} must be more than 0")));
            }
        }
        if self.retention.is_zero() {
            return Err(DeError::custom("retention must be more than 0"));
        }
        for (model, p) in &self.pricing {
            if !(p.input >= 0.0 && p.output >= 0.0) {
                return Err(DeError::custom(format!(
                    "pricing.{model}: prices must be 0 or more"
                )));
            }
        }
        Ok(())
    }

    /// The store's bound in bytes: `max_memory_mib`, or less when sessions
    /// × (spans × kept span + a chunk + events × event record) is less, plus
    /// the free chunks it keeps for reuse.
    pub fn memory_bound(&self) -> usize {
        let per_session = self
            .max_spans_per_session
            .saturating_mul(store::MAX_SPAN_BYTES + 4)
            .saturating_add(store::CHUNK_BYTES)
            .saturating_add(
                self.max_events_per_session
                    .saturating_mul(store::MAX_EVENT_BYTES),
            );
        let max = self.max_memory_mib.saturating_mul(1 << 20);
        self.max_sessions
            .saturating_mul(per_session)
            .min(max)
            .saturating_add(store::free_chunk_bytes(max))
    }
}

/// What a subscriber asked for.
#[derive(Debug, Clone, Default, PartialEq)]
struct Filter {
    session: Option<String>,
    agent: Option<String>,
    errors: bool,
}

impl Filter {
    fn from_query(q: Option<&str>) -> Filter {
        let mut f = Filter::default();
        for (k, v) in query(q) {
            match k.as_str() {
                "session" => f.session = Some(v),
                "agent" => f.agent = Some(v),
                "errors" => f.errors = v == "true" || v == "1",
                _ => {}
            }
        }
        f
    }

    fn wants(&self, s: &Summary) -> bool {
        self.session.as_ref().is_none_or(|id| *id == s.session_id)
            && self.agent.as_ref().is_none_or(|a| s.agents.contains(a))
    }
}

fn query(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let plus = |s: &str| crate::net::percent_decode(&s.replace('+', " "));
            (plus(k), plus(v))
        })
        .collect()
}

/// `{"type":KIND,"session_id":…,KIND:[records…]}` frames, each closed
/// once it holds [`FRAME_BYTES`] or more (at least one record, at least one
/// frame), in order.
fn chunked<T>(
    kind: &str,
    session: &str,
    items: impl IntoIterator<Item = T>,
    mut write: impl FnMut(T, &mut String),
) -> Vec<Utf8Bytes> {
    let open = |buf: &mut String| {
        buf.push_str("{\"type\":\"");
        buf.push_str(kind);
        buf.push_str("\",\"session_id\":");
        crate::convert::json::escape(buf, session);
        buf.push_str(",\"");
        buf.push_str(kind);
        buf.push_str("\":[");
    };
    let mut out = Vec::new();
    let mut buf = String::new();
    open(&mut buf);
    let mut n = 0;
    for item in items {
        if n > 0 {
            buf.push(',');
        }
        write(item, &mut buf);
        n += 1;
        if buf.len() >= FRAME_BYTES {
            buf.push_str("]}");
            out.push(Utf8Bytes::from(std::mem::take(&mut buf)));
            open(&mut buf);
            n = 0;
        }
    }
    if n > 0 || out.is_empty() {
        buf.push_str("]}");
        out.push(Utf8Bytes::from(buf));
    }
    out
}

/// One event, encoded for a transport when first needed.
pub struct Event {
    kind: EventKind,
    json: std::sync::OnceLock<Vec<Utf8Bytes>>,
    /// What holding it may cost: its records, OTLP bytes, and as much
    /// again for its JSON.
    size: usize,
}

/// A JSON frame is closed once it holds this many bytes: a batch of
/// thousands of spans goes as several frames, each well under a
/// WebSocket's unsent-bytes bound.
const FRAME_BYTES: usize = 128 << 10;

enum EventKind {
    Spans {
        session: String,
        /// The session's new spans as JSON frames (only made when a
        /// WebSocket or SSE subscriber watches it).
        json: Vec<Utf8Bytes>,
        /// The session's new spans as encoded OTLP `ResourceSpans` (only
        /// made when a gRPC subscriber watches it).
        otlp: Vec<Bytes>,
    },
    Events {
        session: String,
        records: Vec<Arc<store::EventRecord>>,
    },
    Summary(Summary),
    Lagged(u64),
}

impl Event {
    fn new(kind: EventKind) -> Arc<Event> {
        let records = match &kind {
            EventKind::Spans { json, otlp, .. } => {
                json.iter().map(|f| f.len()).sum::<usize>()
                    + otlp.iter().map(|b| b.len()).sum::<usize>()
            }
            // Records, and as much again for their JSON.
            EventKind::Events { records, .. } => {
                2 * records.iter().map(|r| r.bytes()).sum::<usize>()
            }
            EventKind::Summary(_) | EventKind::Lagged(_) => 512,
        };
        Arc::new(Event {
            kind,
            json: std::sync::OnceLock::new(),
            size: records,
        })
    }

    /// The event as JSON frames (WebSocket messages, SSE events), shared
    /// by every subscriber: span batches as made with the event, GenAI
    /// event batches made when first needed, in chunks of about
    /// [`FRAME_BYTES`], in order.
    fn frames(&self) -> &[Utf8Bytes] {
        if let EventKind::Spans { json, .. } = &self.kind {
            return json;
        }
        self.json.get_or_init(|| match &self.kind {
            EventKind::Spans { json, .. } => json.clone(),
            EventKind::Events { session, records } => {
                chunked("events", session, records, |r, out| r.write_json(out))
            }
            EventKind::Summary(s) => vec![Utf8Bytes::from(summary_json(s).to_string())],
            EventKind::Lagged(n) => vec![Utf8Bytes::from(
                serde_json::json!({"type": "lagged", "dropped": n}).to_string(),
            )],
        })
    }

    /// The event as the gRPC stream's message.
    fn grpc(&self, now_ns: u64) -> crate::proto::live::LiveEvent {
        use crate::proto::live::{
            live_event, Lagged, LiveEvent, SessionEvents, SessionSpans, SessionStatus,
            SessionSummary,
        };
        let event = match &self.kind {
            EventKind::Spans { session, otlp, .. } => live_event::Event::Spans(SessionSpans {
                session_id: session.clone(),
                resource_spans: otlp.iter().map(|b| b.to_vec()).collect(),
            }),
            EventKind::Events { session, records } => live_event::Event::Events(SessionEvents {
                session_id: session.clone(),
                resource_logs: vec![events_as_otlp(records)],
            }),
            EventKind::Summary(s) => live_event::Event::Summary(SessionSummary {
                session_id: s.session_id.clone(),
                agents: s.agents.iter().cloned().collect(),
                models: s.models.iter().cloned().collect(),
                start_time_unix_nano: if s.start_ns == u64::MAX {
                    0
                } else {
                    s.start_ns
                },
                end_time_unix_nano: s.end_ns,
                status: match status_of(s, now_ns) {
                    "active" => SessionStatus::Active,
                    "error" => SessionStatus::Error,
                    _ => SessionStatus::Ok,
                } as i32,
                span_count: s.span_count,
                input_tokens: s.tokens.get("input").copied().unwrap_or(0),
                output_tokens: s.tokens.get("output").copied().unwrap_or(0),
                tool_calls: s.tool_calls,
                retrievals: s.retrievals,
                guardrail_interventions: s.guardrail_interventions,
                errors: s.errors,
                cost_usd: s.cost,
            }),
            EventKind::Lagged(n) => live_event::Event::Lagged(Lagged { dropped: *n }),
        };
        LiveEvent { event: Some(event) }
    }
}

struct Subscriber {
    filter: Filter,
    /// A gRPC subscriber: it needs the spans as OTLP, the others JSON.
    grpc: bool,
    tx: mpsc::Sender<Arc<Event>>,
    /// Events it missed since it last kept up.
    dropped: u64,
    /// The sizes of the events in its queue (taken off as it reads).
    queued: Arc<AtomicUsize>,
    /// What its queue may hold, in bytes.
    max_queued: usize,
}

/// The subscribers, indexed by what they asked for, so that a batch costs
/// O(matching subscribers) per session it touches, not O(all).
#[derive(Default)]
struct Subscribers {
    next_id: u64,
    all: HashMap<u64, Subscriber>,
    /// `?session=` subscribers by session.
    by_session: HashMap<String, Vec<u64>>,
    /// `?agent=` subscribers (without a session) by agent.
    by_agent: HashMap<String, Vec<u64>>,
    /// Subscribers to every session.
    any: Vec<u64>,
    /// How many are gRPC subscribers (they need OTLP bytes).
    grpc: usize,
}

impl Subscribers {
    fn add(&mut self, sub: Subscriber) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        match (&sub.filter.session, &sub.filter.agent) {
            (Some(s), _) => self.by_session.entry(s.clone()).or_default().push(id),
            (None, Some(a)) => self.by_agent.entry(a.clone()).or_default().push(id),
            (None, None) => self.any.push(id),
        }
        self.grpc += usize::from(sub.grpc);
        self.all.insert(id, sub);
        id
    }

    fn remove(&mut self, id: u64) {
        let Some(sub) = self.all.remove(&id) else {
            return;
        };
        self.grpc -= usize::from(sub.grpc);
        fn take(map: &mut HashMap<String, Vec<u64>>, key: &str, id: u64) {
            if let Some(ids) = map.get_mut(key) {
                ids.retain(|i| *i != id);
                if ids.is_empty() {
                    map.remove(key);
                }
            }
        }
        match (&sub.filter.session, &sub.filter.agent) {
            (Some(s), _) => take(&mut self.by_session, s, id),
            (None, Some(a)) => take(&mut self.by_agent, a, id),
            (None, None) => self.any.retain(|i| *i != id),
        }
    }

    /// The subscribers whose filter wants session `summary`, into `out`.
    fn matching(&self, summary: &Summary, out: &mut Vec<u64>) {
        out.clear();
        let candidates = self
            .by_session
            .get(&summary.session_id)
            .into_iter()
            .flatten()
            .chain(
                summary
                    .agents
                    .iter()
                    .filter_map(|a| self.by_agent.get(a))
                    .flatten(),
            )
            .chain(&self.any);
        for id in candidates {
            if self.all.get(id).is_some_and(|s| s.filter.wants(summary)) {
                out.push(*id);
            }
        }
    }
}

/// The store and the subscribers, under one lock so a new subscriber's
/// snapshot and its first live event never overlap or leave a gap.
struct Hub {
    store: Store,
    subs: Subscribers,
}

struct Shared {
    hub: Mutex<Hub>,
    queue: usize,
    max_queued: usize,
    auth: Option<crate::net::BearerAuth>,
    evicted: metrics::Counter,
    not_kept: metrics::Counter,
    logs_ignored: metrics::Counter,
    lagged: metrics::Counter,
    subscribers: metrics::Gauge,
    store_bytes: metrics::Gauge,
    sessions: metrics::Gauge,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Hub> {
        match self.hub.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

/// A subscriber's end of its queue; dropping it (the client went away)
/// takes the subscriber out of the hub.
struct Subscription {
    rx: mpsc::Receiver<Arc<Event>>,
    shared: Arc<Shared>,
    id: u64,
    queued: Arc<AtomicUsize>,
}

impl Subscription {
    async fn recv(&mut self) -> Option<Arc<Event>> {
        let ev = self.rx.recv().await?;
        self.queued.fetch_sub(ev.size, Ordering::Relaxed);
        Some(ev)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut hub = self.shared.lock();
        hub.subs.remove(self.id);
        self.shared.subscribers.set(hub.subs.all.len() as f64);
    }
}

/// The exporter.
pub struct LiveExporter {
    shared: Arc<Shared>,
    cancel: CancellationToken,
}

/// The `live` exporter's factory.
pub struct LiveFactory;

impl Factory for LiveFactory {
    type Config = LiveExporterConfig;
    fn type_name(&self) -> &'static str {
        "live"
    }
    fn validate(&self, config: &LiveExporterConfig) -> Result<(), DeError> {
        config.validate()
    }
}

impl ExporterFactory for LiveFactory {
    fn signals(&self, _config: &LiveExporterConfig) -> &'static [Signal] {
        &[Signal::Traces, Signal::Logs]
    }
    fn listen_endpoints(&self, config: &LiveExporterConfig) -> Vec<String> {
        vec![config.endpoint.clone()]
    }
    fn build(
        &self,
        config: &LiveExporterConfig,
        ctx: ExporterContext<'_>,
    ) -> Result<BuiltExporter, StartError> {
        let name = ctx.name();
        let listener = crate::net::listen::bind_now(&config.endpoint)
            .map_err(|e| StartError::component(&name, e.to_string()))?;
        let tls = crate::net::TlsAcceptor::optional(config.tls.as_ref(), &[b"http/1.1"], "live")?;
        let auth = crate::net::bearer_auth(config.auth.as_ref(), &name)?;
        let labels = [("exporter", name.clone())];
        let shared = Arc::new(Shared {
            hub: Mutex::new(Hub {
                store: Store::new(Limits {
                    session_keys: config.session_keys.clone(),
                    max_sessions: config.max_sessions,
                    max_spans_per_session: config.max_spans_per_session,
                    max_events_per_session: config.max_events_per_session,
                    retention_ns: config.retention.as_nanos() as u64,
                    max_bytes: config.max_memory_mib.saturating_mul(1 << 20),
                    pricing: config.pricing.clone(),
                }),
                subs: Subscribers::default(),
            }),
            queue: config.subscriber_queue,
            max_queued: config.subscriber_buffer_mib.saturating_mul(1 << 20),
            auth,
            evicted: crate::telemetry::counter("spanwire_live_sessions_evicted_total", &labels),
            not_kept: crate::telemetry::counter("spanwire_live_spans_not_kept_total", &labels),
            logs_ignored: crate::telemetry::counter("spanwire_live_logs_ignored_total", &labels),
            lagged: crate::telemetry::counter("spanwire_live_subscribers_lagged_total", &labels),
            subscribers: metrics::gauge!("spanwire_live_subscribers", "exporter" => name.clone()),
            store_bytes: metrics::gauge!("spanwire_live_store_bytes", "exporter" => name.clone()),
            sessions: metrics::gauge!("spanwire_live_sessions", "exporter" => name.clone()),
        });
        let cancel = CancellationToken::new();
        let serve = shared.clone();
        let stop = cancel.clone();
        crate::net::serve_http(
            listener,
            tls,
            move |req| {
                let shared = serve.clone();
                let stop = stop.clone();
                async move { handle(shared, req, stop).await }
            },
            cancel.clone(),
            Duration::from_secs(1),
        );
        tracing::info!(exporter = %name, endpoint = %config.endpoint,
            memory_bound_mib = config.memory_bound() >> 20, "live sessions served");
        // Updates its own store: a small queue, nothing to retry.
        Ok(BuiltExporter::new(
            LiveExporter { shared, cancel },
            QueueConfig::local(100),
            RetryConfig::off(),
        ))
    }
}

/// A batch's spans for one exporter call, by session, before anyone is
/// known to watch them.
enum New<'a> {
    Spans(Vec<store::SpanAt<'a>>),
    Events(Vec<Arc<store::EventRecord>>),
}

/// Spans of a batch as encoded OTLP `ResourceSpans`, one per run of spans
/// from the same resource and scope.
fn spans_as_otlp(spans: &[store::SpanAt<'_>]) -> Vec<Bytes> {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use prost::Message;
    spans
        .chunk_by(|a, b| std::ptr::eq(a.scope, b.scope))
        .filter_map(|run| {
            let first = run.first()?;
            let one = ResourceSpans {
                resource: first.resource.resource.clone(),
                scope_spans: vec![ScopeSpans {
                    scope: first.scope.scope.clone(),
                    spans: run.iter().map(|at| at.span.clone()).collect(),
                    schema_url: first.scope.schema_url.clone(),
                }],
                schema_url: first.resource.schema_url.clone(),
            };
            Some(Bytes::from(one.encode_to_vec()))
        })
        .collect()
}

#[async_trait]
impl Export for LiveExporter {
    type Progress = ();

    async fn export(
        &self,
        data: &Arc<Telemetry>,
        _metadata: &Metadata,
        _progress: &mut (),
    ) -> Result<ExportOk, ExportError> {
        let now = crate::telemetry::unix_nanos_now();
        let mut hub = self.shared.lock();
        let Hub { store, subs } = &mut *hub;
        // Each session's new spans or events; made into an event only for
        // a session someone watches.
        let mut news: Vec<(String, New<'_>)> = Vec::new();
        // Sessions evicted while this batch went in: their subscribers
        // still get what it brought.
        let mut evicted: HashMap<String, Summary> = HashMap::new();
        match data.as_ref() {
            Telemetry::Traces(rs) => {
                let got = store.ingest(rs, now);
                self.shared.evicted.increment(got.evicted);
                self.shared.not_kept.increment(got.not_kept);
                let new = for_subscribers(subs, got.evicted_sessions, got.by_session, &mut evicted);
                news.extend(new.into_iter().map(|(s, spans)| (s, New::Spans(spans))));
            }
            Telemetry::Logs(rl) => {
                let got = store.ingest_events(rl, now);
                self.shared.evicted.increment(got.evicted);
                self.shared.not_kept.increment(got.not_kept);
                self.shared.logs_ignored.increment(got.ignored);
                let new = for_subscribers(subs, got.evicted_sessions, got.by_session, &mut evicted);
                news.extend(
                    new.into_iter()
                        .map(|(s, records)| (s, New::Events(records))),
                );
            }
            Telemetry::Metrics(_) => {}
        }
        self.shared.store_bytes.set(store.bytes() as f64);
        self.shared.sessions.set(store.len() as f64);
        let mut matched = Vec::new();
        let mut gone = Vec::new();
        for (session, new) in news {
            let Some(held) = store
                .get(&session)
                .map(|s| &s.summary)
                .or_else(|| evicted.get(&session))
            else {
                continue;
            };
            subs.matching(held, &mut matched);
            if matched.is_empty() {
                continue;
            }
            // Someone watches it: its numbers counted before they go out.
            store.refresh_session(&session);
            let Some(held) = store
                .get(&session)
                .map(|s| &s.summary)
                .or_else(|| evicted.get(&session))
            else {
                continue;
            };
            // Records (and OTLP, for a gRPC subscriber) for this session
            // only: someone watches it.
            let (kind, has_error) = match new {
                New::Spans(spans) => {
                    let (mut grpc, mut json) = (false, false);
                    for id in &matched {
                        if let Some(s) = subs.all.get(id) {
                            grpc |= s.grpc;
                            json |= !s.grpc;
                        }
                    }
                    let has_error = spans.iter().any(|at| store::is_error(at.span));
                    let kind = EventKind::Spans {
                        json: if json {
                            chunked("spans", &session, &spans, |at, out| {
                                store.write_span_json(at.span, out)
                            })
                        } else {
                            Vec::new()
                        },
                        otlp: if grpc {
                            spans_as_otlp(&spans)
                        } else {
                            Vec::new()
                        },
                        session: session.clone(),
                    };
                    (kind, has_error)
                }
                New::Events(records) => (
                    EventKind::Events {
                        session: session.clone(),
                        records,
                    },
                    false,
                ),
            };
            let event = Event::new(kind);
            let summary = Event::new(EventKind::Summary(held.clone()));
            for id in &matched {
                let Some(sub) = subs.all.get_mut(id) else {
                    continue;
                };
                // An errors-only subscriber gets a batch with an error, and
                // the summaries.
                let wants_event = !sub.filter.errors || has_error;
                if !wants_event || offer(sub, event.clone(), &self.shared.lagged) {
                    offer(sub, summary.clone(), &self.shared.lagged);
                }
                if sub.tx.is_closed() || sub.dropped > self.shared.queue as u64 {
                    gone.push(*id);
                }
            }
        }
        // Subscribers still behind (or gone) are cut off: their queue's
        // sender goes, so their connection ends after what it holds.
        for id in gone {
            subs.remove(id);
        }
        self.shared.subscribers.set(subs.all.len() as f64);
        Ok(ExportOk::default())
    }

    async fn shutdown(&self) {
        self.cancel.cancel();
    }
}

fn summary_json(s: &Summary) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    v["type"] = "summary".into();
    v
}

/// Queues `event` for `sub`; a full queue counts the event as missed. A
/// subscriber that missed some is first told how many. False if not queued.
fn offer(sub: &mut Subscriber, event: Arc<Event>, lagged: &metrics::Counter) -> bool {
    if sub.dropped > 0 {
        // It missed some: it is told once it has worked off half its
        // queue; if it has not by the next event, it is cut off.
        let behind = sub.queued.load(Ordering::Relaxed) > sub.max_queued / 2
            || sub.tx.capacity() < sub.tx.max_capacity() / 2;
        let note = Event::new(EventKind::Lagged(sub.dropped));
        if behind || !queue(sub, note) {
            // Still behind: disconnected at the end of this batch.
            sub.dropped = u64::MAX;
            return false;
        }
        sub.dropped = 0;
    }
    if queue(sub, event) {
        return true;
    }
    if !sub.tx.is_closed() {
        if sub.dropped == 0 {
            lagged.increment(1);
        }
        sub.dropped = sub.dropped.saturating_add(1);
    }
    false
}

/// What an ingest brought, by session, when someone may want it (nothing
/// when no subscriber is connected); the summaries of sessions it evicted
/// go into `evicted`, so their subscribers still get what it brought.
fn for_subscribers<T>(
    subs: &Subscribers,
    evicted_sessions: Vec<Summary>,
    by_session: Vec<(String, T)>,
    evicted: &mut HashMap<String, Summary>,
) -> Vec<(String, T)> {
    if subs.all.is_empty() {
        return Vec::new();
    }
    evicted.extend(
        evicted_sessions
            .into_iter()
            .map(|s| (s.session_id.clone(), s)),
    );
    by_session
}

/// Puts `event` in `sub`'s queue if the queue has room for it, in events
/// and in bytes (`subscriber_buffer_mib`; one event always fits an empty
/// queue).
fn queue(sub: &mut Subscriber, event: Arc<Event>) -> bool {
    let size = event.size;
    let before = sub.queued.fetch_add(size, Ordering::Relaxed);
    if before > 0 && before + size > sub.max_queued {
        sub.queued.fetch_sub(size, Ordering::Relaxed);
        return false;
    }
    if sub.tx.try_send(event).is_err() {
        sub.queued.fetch_sub(size, Ordering::Relaxed);
        return false;
    }
    true
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Bytes a WebSocket may hold unsent before its subscriber is cut off.
const WS_WRITE_BUFFER: usize = 1 << 20;

fn full(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    r
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    full(status, "application/json", v.to_string())
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    stop: CancellationToken,
) -> Response<Body> {
    if let Some(auth) = &shared.auth {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        // Browsers cannot set headers on a WebSocket: `?token=` too.
        let token_param = query(req.uri().query())
            .into_iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| format!("Bearer {v}"));
        let ok = auth.check(given)
            || token_param
                .as_deref()
                .is_some_and(|t| auth.check(Some(t.as_bytes())));
        if !ok {
            return full(
                StatusCode::UNAUTHORIZED,
                "text/plain",
                "missing or wrong bearer token\n",
            );
        }
    }
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        use tonic::codegen::Service;
        let mut svc = crate::proto::live::live_server::LiveServer::new(LiveService {
            shared: shared.clone(),
            stop,
        });
        return match svc.call(req).await {
            Ok(r) => r.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()),
            Err(never) => match never {},
        };
    }
    if req.method() != Method::GET {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "GET only"}),
        );
    }
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/api/sessions" => {
            let params = query(req.uri().query());
            let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let (agent, status) = (get("agent"), get("status"));
            let since_ns = get("since")
                .and_then(|s| s.parse::<u64>().ok())
                .map(|ms| ms * 1_000_000);
            let now = crate::telemetry::unix_nanos_now();
            let mut hub = shared.lock();
            hub.store.refresh();
            let list = hub.store.summaries(|s| {
                agent.as_ref().is_none_or(|a| s.agents.contains(a))
                    && since_ns.is_none_or(|t| s.updated_ns >= t)
                    && status
                        .as_deref()
                        .is_none_or(|want| status_of(s, now) == want)
            });
            json(StatusCode::OK, &serde_json::json!({"sessions": list}))
        }
        p if p.starts_with("/api/sessions/") => {
            let id = crate::net::percent_decode(&p["/api/sessions/".len()..]);
            let mut hub = shared.lock();
            hub.store.refresh_session(&id);
            match hub.store.get(&id) {
                Some(s) => full(
                    StatusCode::OK,
                    "application/json",
                    hub.store.session_json(s),
                ),
                None => json(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({"error": format!("no session `{id}`")}),
                ),
            }
        }
        "/api/failures" => {
            let hub = shared.lock();
            let mut out = String::from("{\"failures\":[");
            for (i, (session, span)) in hub.store.recent_errors().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"session_id\":");
                crate::convert::json::escape(&mut out, session);
                out.push_str(",\"span\":");
                span.write_json(&mut out);
                out.push('}');
            }
            out.push_str("]}");
            full(StatusCode::OK, "application/json", out)
        }
        "/api/live" => subscribe(shared, req, stop),
        "/" | "/index.html" => page(PAGE, "text/html; charset=utf-8"),
        "/app.js" => page(APP_JS, "text/javascript; charset=utf-8"),
        "/app.css" => page(APP_CSS, "text/css; charset=utf-8"),
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "see /api/sessions, /api/sessions/{id}, /api/live"}),
        ),
    }
}

/// The page, embedded in the binary.
const PAGE: &str = include_str!("page.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// A page asset, with a policy that runs only its own script: span text is
/// inserted as text, and even markup that got in could not run.
fn page(body: &'static str, ctype: &'static str) -> Response<Body> {
    let mut r = full(StatusCode::OK, ctype, body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    r
}

/// `active` when updated in the last 30 s, else `error` or `ok`.
fn status_of(s: &Summary, now_ns: u64) -> &'static str {
    if now_ns.saturating_sub(s.updated_ns) < 30_000_000_000 {
        "active"
    } else if s.errors > 0 {
        "error"
    } else {
        "ok"
    }
}

/// Registers a subscriber for `filter`: the spans and events already held
/// for its session first (under the same lock as the registration, so
/// nothing is missed or repeated), then live events.
fn register(shared: &Arc<Shared>, filter: Filter, grpc: bool) -> Subscription {
    let (tx, rx) = mpsc::channel::<Arc<Event>>(shared.queue);
    let queued = Arc::new(AtomicUsize::new(0));
    // The snapshot: it always goes in whole (it is what the store holds).
    let snapshot = |ev: Arc<Event>| {
        queued.fetch_add(ev.size, Ordering::Relaxed);
        // Fails only for a queue smaller than the three snapshot events.
        if let Err(e) = tx.try_send(ev) {
            queued.fetch_sub(e.into_inner().size, Ordering::Relaxed);
        }
    };
    let mut hub = shared.lock();
    if let Some(id) = &filter.session {
        hub.store.refresh_session(id);
        if let Some(s) = hub.store.get(id) {
            let spans: Vec<_> = s
                .spans
                .spans()
                .filter(|span| !filter.errors || store::is_error(span))
                .collect();
            let (json, otlp) = if grpc {
                (Vec::new(), vec![held_as_otlp(spans)])
            } else {
                let store = &hub.store;
                let json = chunked("spans", id, &spans, |span, out| {
                    store.write_span_json(span, out)
                });
                (json, Vec::new())
            };
            snapshot(Event::new(EventKind::Spans {
                session: id.clone(),
                json,
                otlp,
            }));
            if !s.events.is_empty() && !filter.errors {
                snapshot(Event::new(EventKind::Events {
                    session: id.clone(),
                    records: s.events.clone(),
                }));
            }
            snapshot(Event::new(EventKind::Summary(s.summary.clone())));
        }
    }
    let id = hub.subs.add(Subscriber {
        filter,
        tx,
        grpc,
        dropped: 0,
        queued: queued.clone(),
        max_queued: shared.max_queued,
    });
    shared.subscribers.set(hub.subs.all.len() as f64);
    Subscription {
        rx,
        shared: shared.clone(),
        id,
        queued,
    }
}

/// Held spans as one encoded OTLP `ResourceSpans` (the store keeps no
/// resource or scope).
fn held_as_otlp(spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>) -> Bytes {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use prost::Message;
    Bytes::from(
        ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec(),
    )
}

/// Kept attributes (texts) as OTLP string attributes.
fn text_attributes(
    pairs: Vec<(String, String)>,
) -> Vec<opentelemetry_proto::tonic::common::v1::KeyValue> {
    pairs
        .into_iter()
        .map(|(k, v)| crate::signal::string_attribute(&k, v))
        .collect()
}

/// Event records as one encoded OTLP `ResourceLogs` (attributes and body
/// as text, as the store keeps them).
fn events_as_otlp(records: &[Arc<store::EventRecord>]) -> Vec<u8> {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use prost::Message;
    let log_records = records
        .iter()
        .map(|r| LogRecord {
            time_unix_nano: r.time_ns,
            trace_id: hex::decode(&r.trace_id).unwrap_or_default(),
            span_id: hex::decode(&r.span_id).unwrap_or_default(),
            event_name: r.name.clone(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(r.body.clone())),
            }),
            attributes: text_attributes(r.attribute_pairs()),
            ..Default::default()
        })
        .collect();
    ResourceLogs {
        scope_logs: vec![ScopeLogs {
            log_records,
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_to_vec()
}

/// Answers `/api/live` with a WebSocket upgrade or an SSE stream.
fn subscribe(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
    stop: CancellationToken,
) -> Response<Body> {
    let filter = Filter::from_query(req.uri().query());
    let rx = register(&shared, filter, false);
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade {
        let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": "no Sec-WebSocket-Key"}),
            );
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            // A client that stops reading fills the socket, then this
            // bounded buffer; the send then fails and the subscriber ends
            // (memory never grows for it).
            let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .write_buffer_size(64 << 10)
                .max_write_buffer_size(WS_WRITE_BUFFER);
            let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                Some(config),
            )
            .await;
            websocket(ws, rx, stop).await;
        });
        let mut r = Response::new(
            Full::new(Bytes::new())
                .map_err(|e| match e {})
                .boxed_unsync(),
        );
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(
            header::UPGRADE,
            header::HeaderValue::from_static("websocket"),
        );
        h.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("Upgrade"),
        );
        if let Ok(v) = header::HeaderValue::from_str(&accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        return r;
    }
    // Server-sent events: one `data:` line per event.
    let stream = futures_util::stream::unfold((rx, stop), |(mut rx, stop)| async move {
        let ev = tokio::select! {
            ev = rx.recv() => ev?,
            _ = stop.cancelled() => return None,
        };
        // One SSE event per JSON frame, without copying the shared JSON.
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = ev
            .frames()
            .iter()
            .flat_map(|f| {
                [
                    Bytes::from_static(b"data: "),
                    AsRef::<Bytes>::as_ref(f).clone(),
                    Bytes::from_static(b"\n\n"),
                ]
            })
            .map(|b| Ok(Frame::data(b)))
            .collect();
        Some((futures_util::stream::iter(frames), (rx, stop)))
    });
    let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream.flatten())));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    r
}

async fn websocket<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    mut rx: Subscription,
    stop: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio_tungstenite::tungstenite::Message;
    let (mut out, mut incoming) = ws.split();
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => {
                    for frame in ev.frames() {
                        if out.send(Message::Text(frame.clone())).await.is_err() {
                            return;
                        }
                    }
                }
                None => {
                    let _ = out.send(Message::Close(None)).await;
                    return;
                }
            },
            msg = incoming.next() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = stop.cancelled() => {
                let _ = out.send(Message::Close(None)).await;
                return;
            }
        }
    }
}

/// `spanwire.live.v1.Live`, served on the same endpoint (HTTP/2, by
/// content type).
struct LiveService {
    shared: Arc<Shared>,
    stop: CancellationToken,
}

type LiveStream = std::pin::Pin<
    Box<
        dyn futures_util::Stream<Item = Result<crate::proto::live::LiveEvent, tonic::Status>>
            + Send,
    >,
>;

#[tonic::async_trait]
impl crate::proto::live::live_server::Live for LiveService {
    type SubscribeStream = LiveStream;

    async fn subscribe(
        &self,
        request: tonic::Request<crate::proto::live::SubscribeRequest>,
    ) -> Result<tonic::Response<LiveStream>, tonic::Status> {
        let r = request.into_inner();
        let some = |s: String| (!s.is_empty()).then_some(s);
        let filter = Filter {
            session: some(r.session_id),
            agent: some(r.agent),
            errors: r.errors_only,
        };
        let rx = register(&self.shared, filter, true);
        let stream =
            futures_util::stream::unfold((rx, self.stop.clone()), |(mut rx, stop)| async move {
                let ev = tokio::select! {
                    ev = rx.recv() => ev?,
                    _ = stop.cancelled() => return None,
                };
                let msg = ev.grpc(crate::telemetry::unix_nanos_now());
                Some((Ok(msg), (rx, stop)))
            });
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::string_attribute;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    #[test]
    fn a_large_batch_goes_as_several_json_frames_in_order() {
        let mut store = Store::new(store::Limits {
            session_keys: vec!["session.id".into()],
            max_sessions: 10,
            max_spans_per_session: 10_000,
            max_events_per_session: 10,
            retention_ns: u64::MAX,
            max_bytes: usize::MAX,
            pricing: Default::default(),
        });
        let spans = (0..3000u64)
            .map(|i| Span {
                trace_id: vec![1; 16],
                span_id: (i + 1).to_be_bytes().to_vec(),
                name: format!("span \"{i}\""),
                attributes: vec![
                    string_attribute("session.id", "s"),
                    string_attribute("note", "x".repeat(100)),
                ],
                ..Default::default()
            })
            .collect();
        let batch = vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }];
        let got = store.ingest(&batch, 1);
        let (session, spans) = got.by_session.into_iter().next().unwrap();
        let json = chunked("spans", &session, &spans, |at, out| {
            store.write_span_json(at.span, out)
        });
        let event = Event::new(EventKind::Spans {
            session,
            json,
            otlp: Vec::new(),
        });
        let frames = event.frames();
        assert!(frames.len() > 1, "one frame of {} spans", 3000);
        let mut ids = Vec::new();
        for f in frames {
            assert!(f.len() <= 2 * FRAME_BYTES, "{} bytes", f.len());
            let v: serde_json::Value = serde_json::from_str(f.as_str()).unwrap();
            assert_eq!(
                (v["type"].as_str(), v["session_id"].as_str()),
                (Some("spans"), Some("s"))
            );
            for s in v["spans"].as_array().unwrap() {
                ids.push(u64::from_str_radix(s["span_id"].as_str().unwrap(), 16).unwrap());
                assert!(s["name"].as_str().unwrap().starts_with("span \""));
            }
        }
        assert_eq!(
            ids,
            (1..=3000).collect::<Vec<_>>(),
            "every span once, in order"
        );
    }
}
