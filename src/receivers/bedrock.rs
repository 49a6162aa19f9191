//! Receiver `bedrock`: applications POST the trace events of their
//! InvokeAgent / InvokeInlineAgent streams; each completed invocation becomes
//! a trace (see `convert::bedrock`).
//!
//! `POST /v1/bedrock/traces` with a JSON array or NDJSON of events, each the
//! bare TracePart or `{"trace": TracePart}` as the AWS SDKs yield them. An
//! optional `traceparent` header joins the application's trace; an optional
//! `x-resource-attributes: k=v,k2=v2` header adds resource attributes. Events
//! may be posted while the agent streams: an invocation is converted when its
//! final response or failure arrives, or after `idle_timeout`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::component::{ComponentId, Factory, ReceiverContext, ReceiverFactory};
use crate::consumer::{offer_until_taken, Acks, Backoff, BoxConsumer, Offered, StartError};
use crate::convert::bedrock::assemble::{Assembler, Released};
use crate::convert::bedrock::{self, CaptureContent, Options, TraceParent};
use crate::net::{self, Body};
use crate::settings::de::DeError;
use crate::settings::types::{check_listen_endpoint, duration, AuthConfig, TlsServerConfig};
use crate::signal::{string_attribute, Signal, Telemetry};
use crate::telemetry::SignalCounters;

/// `receivers.bedrock.capture_content`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    /// No prompt or response text.
    None,
    /// Text cut to `max_content_bytes`.
    #[default]
    Truncated,
    /// All text.
    Full,
}

/// `receivers.bedrock`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BedrockReceiverConfig {
    /// `host:port` to listen on.
    pub endpoint: String,
    /// Path events are posted to.
    pub path: String,
    /// An invocation with no new event for this long is converted as it is.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// How long to wait after an orchestration's final response for
    /// post-processing or output guardrail events before converting.
    #[serde(with = "duration")]
    pub final_grace: Duration,
    /// Largest accepted body in bytes.
    pub max_request_body_size: usize,
    /// Prompt and response text in spans: `none`, `truncated` or `full`.
    pub capture_content: CaptureMode,
    /// Bytes kept per text under `truncated`.
    pub max_content_bytes: usize,
    /// Resource attributes of the produced spans (`service.name` defaults to `bedrock-agent`).
    pub resource: BTreeMap<String, String>,
    /// Events buffered while invocations are incomplete; past this the oldest are converted early.
    pub max_pending_events: usize,
    /// Require a bearer token (`Authorization` header).
    pub auth: Option<AuthConfig>,
    /// Serve HTTPS with these certificates.
    pub tls: Option<TlsServerConfig>,
}

impl Default for BedrockReceiverConfig {
    fn default() -> Self {
        BedrockReceiverConfig {
            endpoint: "localhost:4320".into(),
            path: "/v1/bedrock/traces".into(),
            idle_timeout: Duration::from_secs(30),
            final_grace: Duration::from_millis(500),
            max_request_body_size: 20 * 1024 * 1024,
            capture_content: CaptureMode::Truncated,
            max_content_bytes: 4096,
            resource: BTreeMap::new(),
            max_pending_events: 100_000,
            auth: None,
            tls: None,
        }
    }
}

impl BedrockReceiverConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        check_listen_endpoint(&self.endpoint).map_err(DeError::custom)?;
        if let Some(a) = &self.auth {
            a.validate().map_err(DeError::custom)?;
        }
        if let Some(t) = &self.tls {
            t.validate().map_err(DeError::custom)?;
        }
        if !self.path.starts_with('/') {
            return Err(DeError::custom("path must start with `/`"));
        }
        if self.idle_timeout.is_zero() {
            return Err(DeError::custom("idle_timeout must be above 0"));
        }
        if self.max_request_body_size == 0 || self.max_pending_events == 0 {
            return Err(DeError::custom(
                "max_request_body_size and max_pending_events must be above 0",
            ));
        }
        Ok(())
    }
}

/// Per-request context carried with an invocation.
#[derive(Clone, Default)]
struct Ctx {
    traceparent: Option<TraceParent>,
    resource: Vec<(String, String)>,
}

struct State {
    cfg: BedrockReceiverConfig,
    assembler: Mutex<Assembler<Ctx>>,
    out: mpsc::Sender<Released<Ctx>>,
    epoch: Instant,
    accepted_events: metrics::Counter,
    refused_events: metrics::Counter,
    duplicate_events: metrics::Counter,
    auth: Option<net::BearerAuth>,
    unauthenticated: metrics::Counter,
}

impl State {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// The `bedrock` receiver's factory.
pub struct BedrockReceiverFactory;

impl Factory for BedrockReceiverFactory {
    type Config = BedrockReceiverConfig;
    fn type_name(&self) -> &'static str {
        "bedrock"
    }
    fn validate(&self, config: &BedrockReceiverConfig) -> Result<(), DeError> {
        config.validate()
    }
}

#[async_trait::async_trait]
impl ReceiverFactory for BedrockReceiverFactory {
    fn signals(&self, _config: &BedrockReceiverConfig) -> &'static [Signal] {
        &[Signal::Traces]
    }
    fn endpoints(&self, config: &BedrockReceiverConfig) -> Vec<String> {
        vec![config.endpoint.clone()]
    }
    async fn start(
        &self,
        config: &BedrockReceiverConfig,
        ctx: ReceiverContext<'_>,
    ) -> Result<Vec<JoinHandle<()>>, StartError> {
        start(config, ctx.id, ctx.consumers.traces, ctx.cancel, ctx.stop).await
    }
}

/// Starts the HTTP listener, the idle flusher and the sender.
async fn start(
    cfg: &BedrockReceiverConfig,
    id: &ComponentId,
    consumer: Option<BoxConsumer>,
    cancel: CancellationToken,
    stop: CancellationToken,
) -> Result<Vec<JoinHandle<()>>, StartError> {
    let consumer = consumer
        .ok_or_else(|| StartError::component(&id.to_string(), "no traces pipeline uses it"))?;
    let auth = net::bearer_auth(cfg.auth.as_ref(), &id.to_string())?;
    let tls = net::TlsAcceptor::optional(cfg.tls.as_ref(), &[b"h2", b"http/1.1"], "bedrock")?;
    let listener = net::bind(&cfg.endpoint).await?;
    tracing::info!(endpoint = %cfg.endpoint, path = %cfg.path, auth = auth.is_some(), "bedrock receiver listening");
    let labels = [
        ("receiver", id.to_string()),
        ("transport", "http".to_string()),
    ];
    let (tx, rx) = mpsc::channel::<Released<Ctx>>(256);
    let state = Arc::new(State {
        cfg: cfg.clone(),
        assembler: Mutex::new(Assembler::new(
            cfg.max_pending_events,
            cfg.final_grace.as_millis() as u64,
        )),
        out: tx,
        epoch: Instant::now(),
        accepted_events: metrics::counter!(
            "spanwire_receiver_accepted_bedrock_events_total",
            &labels
        ),
        refused_events: metrics::counter!(
            "spanwire_receiver_refused_bedrock_events_total",
            &labels
        ),
        duplicate_events: metrics::counter!(
            "spanwire_receiver_duplicate_bedrock_events_total",
            &labels
        ),
        auth,
        unauthenticated: crate::telemetry::unauthenticated_counter(&labels),
    });
    let mut tasks = Vec::new();
    let http_state = state.clone();
    tasks.push(net::serve_http(
        listener,
        tls,
        move |req| {
            let state = http_state.clone();
            async move { handle(&state, req).await }
        },
        cancel.clone(),
        Duration::from_secs(10),
    ));
    // Idle flusher: releases quiet invocations; at shutdown releases everything.
    let flush_state = state.clone();
    let flush_cancel = cancel.clone();
    tasks.push(tokio::spawn(async move {
        let idle = flush_state.cfg.idle_timeout.as_millis() as u64;
        let mut tick = tokio::time::interval(
            Duration::from_millis(500)
                .min(flush_state.cfg.idle_timeout)
                .min((flush_state.cfg.final_grace / 2).max(Duration::from_millis(50))),
        );
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                _ = flush_cancel.cancelled() => true,
            };
            let released = match flush_state.assembler.lock() {
                Ok(mut a) => a.expire(flush_state.now_ms(), if stopping { 0 } else { idle }),
                Err(_) => Vec::new(),
            };
            for r in released {
                if flush_state.out.send(r).await.is_err() {
                    return;
                }
            }
            if stopping {
                return;
            }
        }
    }));
    // Sender: converts released invocations and hands them to the pipelines, retrying refusals.
    let opts_base = Options {
        capture_content: match cfg.capture_content {
            CaptureMode::None => CaptureContent::None,
            CaptureMode::Truncated => CaptureContent::Truncated(cfg.max_content_bytes),
            CaptureMode::Full => CaptureContent::Full,
        },
        traceparent: None,
        resource_attributes: cfg
            .resource
            .iter()
            .map(|(k, v)| string_attribute(k, v.as_str()))
            .collect(),
    };
    let counters = SignalCounters::new("spanwire_receiver_accepted", &labels);
    let unknown = metrics::counter!("spanwire_receiver_unknown_bedrock_members_total", &labels);
    drop(state);
    tasks.push(tokio::spawn(sender(
        rx, consumer, opts_base, counters, unknown, stop,
    )));
    Ok(tasks)
}

async fn sender(
    mut rx: mpsc::Receiver<Released<Ctx>>,
    consumer: BoxConsumer,
    base: Options,
    accepted: SignalCounters,
    unknown: metrics::Counter,
    stop: CancellationToken,
) {
    while let Some(r) = rx.recv().await {
        let mut opts = base.clone();
        opts.traceparent = r.ctx.traceparent;
        for (k, v) in &r.ctx.resource {
            opts.resource_attributes.retain(|kv| &kv.key != k);
            opts.resource_attributes
                .push(string_attribute(k, v.as_str()));
        }
        let c = bedrock::convert(&r.events, &opts);
        if !c.unknown_members.is_empty() {
            unknown.increment(c.unknown_members.len() as u64);
            tracing::warn!(members = ?c.unknown_members, "bedrock receiver: trace members this version does not know; each became a span of its own (bedrock.trace.type)");
        }
        let data = Telemetry::Traces(c.resource_spans);
        let n = data.item_count();
        if n == 0 {
            continue;
        }
        let backoff = Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_secs(2),
            retry_after_cap: Duration::ZERO,
        };
        let offer = |d, a| consumer.consume(d, a);
        match offer_until_taken(data, Acks::none(), backoff, &stop, offer, |_| {}).await {
            Offered::Taken => accepted.add(Signal::Traces, n),
            Offered::Stopped(_) => {
                tracing::error!(spans = n, "bedrock receiver: pipeline refused converted spans at the shutdown deadline; dropped");
            }
            Offered::Failed(reason) => {
                tracing::error!(spans = n, %reason, "bedrock receiver: pipeline failed converted spans");
            }
        }
    }
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// `k=v,k2=v2` (the OTEL_RESOURCE_ATTRIBUTES format).
fn parse_resource_header(v: &str) -> Result<Vec<(String, String)>, String> {
    v.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("x-resource-attributes: `{p}` is not key=value"))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    if let Some(auth) = &state.auth {
        let given = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !auth.check(given) {
            state.unauthenticated.increment(1);
            return net::unauthorized();
        }
    }
    if req.uri().path() != state.cfg.path {
        return reply(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("POST events to {}", state.cfg.path)}),
        );
    }
    if req.method() != Method::POST {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"error": "use POST"}),
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return r;
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let traceparent = match header("traceparent") {
        Some(t) => match TraceParent::parse(&t) {
            Some(tp) => Some(tp),
            None => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": format!("invalid traceparent `{t}`")}),
                )
            }
        },
        None => None,
    };
    let resource = match header("x-resource-attributes").map(|v| parse_resource_header(&v)) {
        Some(Ok(r)) => r,
        Some(Err(e)) => return reply(StatusCode::BAD_REQUEST, serde_json::json!({"error": e})),
        None => Vec::new(),
    };
    let body = match net::read_body(req, state.cfg.max_request_body_size).await {
        Ok(b) => b,
        Err(e) => return reply(e.status(), serde_json::json!({"error": e.to_string()})),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return reply(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "body is not UTF-8"}),
        );
    };
    let events = match bedrock::parse_events(text) {
        Ok(e) => e,
        Err(e) => return reply(StatusCode::BAD_REQUEST, serde_json::json!({"error": e})),
    };
    if events.is_empty() {
        return reply(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "no events in the body"}),
        );
    }
    // Refuse before taking anything if converted invocations cannot be handed on.
    if state.out.capacity() == 0 {
        state.refused_events.increment(events.len() as u64);
        let mut r = reply(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": "pipeline is full; retry later"}),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(1u64));
        return r;
    }
    let ctx = Ctx {
        traceparent,
        resource,
    };
    let mut accepted = 0usize;
    let mut rejected = Vec::new();
    let mut released = Vec::new();
    let duplicates;
    {
        let now = state.now_ms();
        let Ok(mut a) = state.assembler.lock() else {
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"error": "internal state poisoned"}),
            );
        };
        let before = a.duplicates();
        for (i, e) in events.into_iter().enumerate() {
            match a.push(e, now, &ctx) {
                Ok(r) => {
                    accepted += 1;
                    released.extend(r);
                }
                Err(message) => rejected.push(serde_json::json!({"index": i, "error": message})),
            }
        }
        duplicates = a.duplicates() - before;
    }
    state.duplicate_events.increment(duplicates);
    for r in released {
        // Capacity was checked; this waits only if several requests raced for the last slots.
        let _ = state.out.send(r).await;
    }
    state.accepted_events.increment(accepted as u64);
    if accepted == 0 {
        return reply(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "no event could be read", "rejected": rejected}),
        );
    }
    reply(
        StatusCode::OK,
        serde_json::json!({"accepted": accepted, "duplicates": duplicates, "rejected": rejected}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_header_parses() {
        assert_eq!(
            parse_resource_header("service.name=a, deployment.environment = prod").unwrap(),
            vec![
                ("service.name".to_string(), "a".to_string()),
                ("deployment.environment".to_string(), "prod".to_string())
            ]
        );
        assert!(parse_resource_header("novalue").is_err());
    }
}
