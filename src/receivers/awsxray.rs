//! Receiver `awsxray`: what the X-Ray SDKs send to the X-Ray daemon, so
//! services instrumented with them keep working while their spans flow on as
//! OTLP.
//!
//! - UDP `endpoint` (default `localhost:2000`): segment documents in the
//!   daemon protocol, converted by [`crate::convert::xray::segment`]. An
//!   in-progress segment is held until its complete document arrives (which
//!   replaces it) or `in_progress_timeout` passes (then it is sent as it is,
//!   marked `aws.xray.inprogress`). Datagrams that are not segments (wrong
//!   header, not JSON, not a segment) are counted by reason and dropped;
//!   nothing else is lost.
//! - TCP `proxy_server.endpoint` (default `localhost:2000`): the SDKs'
//!   sampling calls (`POST /GetSamplingRules`, `POST /SamplingTargets`) are
//!   forwarded to X-Ray (`aws_endpoint`, default
//!   `https://xray.<region>.amazonaws.com`), signed with SigV4 by the AWS
//!   default credential chain (or `role_arn`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::component::{ClientAuth, Factory, ReceiverContext, ReceiverFactory};
use crate::consumer::{offer_until_taken, Acks, Backoff, BoxConsumer, Offered, StartError};
use crate::convert::xray::segment::{read_datagram, to_resource_spans, Document};
use crate::net::HttpsConnector;
use crate::settings::de::DeError;
use crate::settings::types::duration;
use crate::signal::{Metadata, Signal, Telemetry};

/// `proxy_server:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxyServerConfig {
    /// TCP address the SDKs' sampling calls come to.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// The X-Ray region (default: the AWS configuration's, e.g. `AWS_REGION`).
    #[serde(default)]
    pub region: Option<String>,
    /// A role to assume for signing.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// Where to forward (default `https://xray.<region>.amazonaws.com`).
    #[serde(default)]
    pub aws_endpoint: Option<String>,
    /// The Collector's switch for not reading EC2 metadata; spanwire never does.
    #[serde(default)]
    pub local_mode: bool,
}

impl Default for ProxyServerConfig {
    fn default() -> Self {
        ProxyServerConfig {
            endpoint: default_endpoint(),
            region: None,
            role_arn: None,
            aws_endpoint: None,
            local_mode: false,
        }
    }
}

/// `receivers.awsxray`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AwsXrayReceiverConfig {
    /// UDP address segments come to.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Only `udp`.
    #[serde(default = "default_transport")]
    pub transport: String,
    /// The sampling proxy.
    #[serde(default)]
    pub proxy_server: ProxyServerConfig,
    /// How long an in-progress segment waits for its complete document.
    #[serde(default = "default_in_progress_timeout", with = "duration")]
    pub in_progress_timeout: Duration,
}

fn default_endpoint() -> String {
    "localhost:2000".into()
}

fn default_transport() -> String {
    "udp".into()
}

fn default_in_progress_timeout() -> Duration {
    Duration::from_secs(300)
}

/// The UDP socket's receive buffer asked for, in bytes.
const RECV_BUFFER: usize = 4 << 20;

/// In-progress segments held at most; past it the oldest is sent as it is.
const MAX_IN_PROGRESS: usize = 10_000;

impl AwsXrayReceiverConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        if self.transport != "udp" {
            return Err(DeError::custom(format!(
                "transport `{}`: only `udp` is supported (the X-Ray daemon protocol)",
                self.transport
            )));
        }
        for (what, e) in [
            ("endpoint", &self.endpoint),
            ("proxy_server.endpoint", &self.proxy_server.endpoint),
        ] {
            crate::settings::types::check_listen_endpoint(e)
                .map_err(|m| DeError::custom(format!("{what}: {m}")))?;
        }
        if let Some(u) = &self.proxy_server.aws_endpoint {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(DeError::custom(format!(
                    "proxy_server.aws_endpoint `{u}` must be an http:// or https:// URL"
                )));
            }
        }
        if self.in_progress_timeout.is_zero() {
            return Err(DeError::custom("in_progress_timeout must be more than 0"));
        }
        Ok(())
    }
}

/// The `awsxray` receiver's factory.
pub struct AwsXrayReceiverFactory;

impl Factory for AwsXrayReceiverFactory {
    type Config = AwsXrayReceiverConfig;
    fn type_name(&self) -> &'static str {
        "awsxray"
    }
    fn validate(&self, config: &AwsXrayReceiverConfig) -> Result<(), DeError> {
        config.validate()
    }
}

#[async_trait::async_trait]
impl ReceiverFactory for AwsXrayReceiverFactory {
    fn signals(&self, _config: &AwsXrayReceiverConfig) -> &'static [Signal] {
        &[Signal::Traces]
    }
    fn endpoints(&self, config: &AwsXrayReceiverConfig) -> Vec<String> {
        // The TCP listener; the UDP socket may share its port.
        vec![config.proxy_server.endpoint.clone()]
    }
    async fn start(
        &self,
        config: &AwsXrayReceiverConfig,
        ctx: ReceiverContext<'_>,
    ) -> Result<Vec<JoinHandle<()>>, StartError> {
        let id = ctx.id.to_string();
        let consumer = ctx
            .consumers
            .traces
            .ok_or_else(|| StartError::component(&id, "no traces pipeline uses it"))?;
        let socket = crate::net::bind_udp(&config.endpoint).await?;
        // SDKs send bursts of small datagrams; a larger kernel buffer holds
        // a burst while segments are converted (capped by net.core.rmem_max).
        if let Err(e) = socket2::SockRef::from(&socket).set_recv_buffer_size(RECV_BUFFER) {
            tracing::warn!(receiver = %id, error = %e, "awsxray: cannot enlarge the UDP receive buffer");
        }
        let proxy = crate::net::bind(&config.proxy_server.endpoint).await?;
        let forward = Forward::new(&config.proxy_server, &id).await?;
        tracing::info!(receiver = %id, udp = %config.endpoint, proxy = %config.proxy_server.endpoint,
            "awsxray receiver listening");
        let (tx, rx) = mpsc::channel::<ResourceSpans>(1024);
        let counters = Counters::new(&id);
        let udp = tokio::spawn(read_udp(
            socket,
            tx,
            config.in_progress_timeout,
            counters.clone(),
            ctx.cancel.clone(),
        ));
        let send = tokio::spawn(deliver(rx, consumer, counters, ctx.stop.clone()));
        let proxy = tokio::spawn(serve_proxy(proxy, Arc::new(forward), ctx.cancel.clone()));
        Ok(vec![udp, send, proxy])
    }
}

#[derive(Clone)]
struct Counters {
    segments: metrics::Counter,
    spans: metrics::Counter,
    bad_header: metrics::Counter,
    bad_json: metrics::Counter,
    bad_segment: metrics::Counter,
    full: metrics::Counter,
    expired: metrics::Counter,
    refused: metrics::Counter,
}

impl Counters {
    fn new(id: &str) -> Counters {
        let dropped = |reason: &'static str| {
            metrics::counter!("spanwire_receiver_xray_dropped_datagrams_total",
                "receiver" => id.to_string(), "reason" => reason)
        };
        Counters {
            segments: metrics::counter!("spanwire_receiver_xray_segments_total", "receiver" => id.to_string()),
            spans: metrics::counter!("spanwire_receiver_accepted_spans_total", "receiver" => id.to_string(), "transport" => "udp"),
            bad_header: dropped("bad_header"),
            bad_json: dropped("bad_json"),
            bad_segment: dropped("bad_segment"),
            full: dropped("pipeline_full"),
            expired: metrics::counter!("spanwire_receiver_xray_in_progress_expired_total", "receiver" => id.to_string()),
            refused: metrics::counter!("spanwire_receiver_refused_spans_total", "receiver" => id.to_string(), "transport" => "udp"),
        }
    }
}

async fn read_udp(
    socket: tokio::net::UdpSocket,
    tx: mpsc::Sender<ResourceSpans>,
    timeout: Duration,
    c: Counters,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; 65_536];
    let mut pending: HashMap<String, (Document, Instant)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(timeout));
    let send = |rs: ResourceSpans| {
        if tx.try_send(rs).is_err() {
            // UDP cannot push back; a full pipeline loses the datagram.
            c.full.increment(1);
        }
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {
                let now = Instant::now();
                let expired: Vec<String> = pending
                    .iter()
                    .filter(|(_, (_, at))| now.duration_since(*at) >= timeout)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in expired {
                    if let Some((d, _)) = pending.remove(&id) {
                        c.expired.increment(1);
                        send(to_resource_spans(&d));
                    }
                }
            }
            r = socket.recv_from(&mut buf) => {
                let Ok((n, _peer)) = r else { continue };
                match read_datagram(&buf[..n]) {
                    Err(e) => {
                        use crate::convert::xray::segment::DatagramError as E;
                        match e {
                            E::BadHeader => c.bad_header.increment(1),
                            E::BadJson(_) => c.bad_json.increment(1),
                            E::BadSegment(_) => c.bad_segment.increment(1),
                        }
                        tracing::debug!(error = %e, bytes = n, "awsxray: datagram dropped");
                    }
                    Ok(d) if d.in_progress => {
                        if pending.len() >= MAX_IN_PROGRESS && !pending.contains_key(&d.id) {
                            let oldest = pending
                                .iter()
                                .min_by_key(|(_, (_, at))| *at)
                                .map(|(id, _)| id.clone());
                            if let Some((old, _)) = oldest.and_then(|id| pending.remove(&id)) {
                                c.expired.increment(1);
                                send(to_resource_spans(&old));
                            }
                        }
                        pending.insert(d.id.clone(), (d, Instant::now()));
                    }
                    Ok(d) => {
                        pending.remove(&d.id);
                        c.segments.increment(1);
                        send(to_resource_spans(&d));
                    }
                }
            }
        }
    }
    // Shutting down: what is still in progress goes as it is.
    for (_, (d, _)) in pending.drain() {
        send(to_resource_spans(&d));
    }
}

/// Passes converted segments to the pipeline, in batches of what is waiting.
async fn deliver(
    mut rx: mpsc::Receiver<ResourceSpans>,
    consumer: BoxConsumer,
    c: Counters,
    stop: CancellationToken,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(rs) => batch.push(rs),
                Err(_) => break,
            }
        }
        let data = Telemetry::Traces(batch);
        let n = data.item_count() as u64;
        let backoff = Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_secs(2),
            retry_after_cap: Duration::ZERO,
        };
        let offer = |d, a| consumer.consume(d, a);
        match offer_until_taken(data, Acks::none(), backoff, &stop, offer, |_| {}).await {
            Offered::Taken => c.spans.increment(n),
            Offered::Stopped(_) => {
                c.refused.increment(n);
                tracing::error!(
                    spans = n,
                    "awsxray receiver: pipeline refused spans at the shutdown deadline; dropped"
                );
            }
            Offered::Failed(reason) => {
                c.refused.increment(n);
                tracing::error!(spans = n, %reason, "awsxray receiver: pipeline failed spans");
            }
        }
    }
}

/// Forwards sampling calls to X-Ray, signed.
struct Forward {
    base: Option<String>,
    region: Option<String>,
    signer: Arc<dyn ClientAuth>,
    client: Client<HttpsConnector, Full<Bytes>>,
}

impl Forward {
    async fn new(cfg: &ProxyServerConfig, id: &str) -> Result<Forward, StartError> {
        let region = cfg
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok());
        let signer =
            crate::extensions::sigv4auth::signer(&crate::extensions::sigv4auth::SigV4AuthConfig {
                region: region.clone(),
                service: Some("xray".into()),
                assume_role: crate::extensions::sigv4auth::AssumeRole {
                    arn: cfg.role_arn.clone().unwrap_or_default(),
                    ..Default::default()
                },
            })
            .await
            .map_err(|e| StartError::component(id, format!("proxy_server: {e}")))?;
        let connector = crate::net::https_connector(&Default::default(), false)
            .map_err(|e| StartError::component(id, e.to_string()))?;
        Ok(Forward {
            base: cfg.aws_endpoint.clone(),
            region,
            signer,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    async fn call(&self, path: &str, body: Bytes) -> Result<(StatusCode, Bytes), String> {
        let base = match (&self.base, &self.region) {
            (Some(b), _) => b.trim_end_matches('/').to_string(),
            (None, Some(r)) => format!("https://xray.{r}.amazonaws.com"),
            (None, None) => return Err("no region: set proxy_server.region or AWS_REGION".into()),
        };
        let url: http::Uri = format!("{base}{path}")
            .parse()
            .map_err(|e| format!("{base}{path}: {e}"))?;
        let req = http::Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())?;
        let (mut parts, full) = req.into_parts();
        self.signer
            .authorize(&mut parts, &body, &Metadata::default())
            .await
            .map_err(|e| e.to_string())?;
        let req = http::Request::from_parts(parts, full);
        let resp = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .map_err(|_| format!("POST {url} timed out"))?
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?
            .to_bytes();
        Ok((status, body))
    }
}

async fn serve_proxy(
    listener: tokio::net::TcpListener,
    forward: Arc<Forward>,
    cancel: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = cancel.cancelled() => return,
            a = crate::net::listen::accept(&listener) => a,
        };
        let forward = forward.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let forward = forward.clone();
                    async move { Ok::<_, std::convert::Infallible>(proxy(req, &forward).await) }
                });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn proxy(
    req: hyper::Request<hyper::body::Incoming>,
    forward: &Forward,
) -> hyper::Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: Bytes| {
        let mut r = hyper::Response::new(Full::new(body));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        r
    };
    let path = req.uri().path().to_string();
    if req.method() != Method::POST
        || !matches!(path.as_str(), "/GetSamplingRules" | "/SamplingTargets")
    {
        return reply(
            StatusCode::NOT_FOUND,
            Bytes::from_static(
                br#"{"message":"only POST /GetSamplingRules and /SamplingTargets are proxied"}"#,
            ),
        );
    }
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                Bytes::from(serde_json::json!({"message": e.to_string()}).to_string()),
            )
        }
    };
    match forward.call(&path, body).await {
        Ok((status, body)) => reply(status, body),
        Err(e) => {
            tracing::warn!(path = %path, error = %e, "awsxray proxy: sampling call failed");
            reply(
                StatusCode::BAD_GATEWAY,
                Bytes::from(serde_json::json!({"message": e}).to_string()),
            )
        }
    }
}
