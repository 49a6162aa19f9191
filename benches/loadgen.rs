//! `spanwire-loadgen`: drives a running daemon with realistic agent spans over
//! OTLP/gRPC or OTLP/HTTP and reports spans/s and latency percentiles; with
//! `--pid` it also reports the daemon's CPU share and peak RSS. `sink` runs an
//! OTLP/gRPC receiver that counts what the daemon forwards. `watch` holds
//! WebSocket subscribers on a `live` exporter (some never reading) and
//! reports what they got.
//!
//! ```text
//! spanwire-loadgen sink --listen 127.0.0.1:14317
//! spanwire-loadgen send --grpc 127.0.0.1:4317 --rate 10000 --duration 30 --pid $(pgrep -x spanwire)
//! ```

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use spanwire::exporters::otlp::RawCodec;

#[path = "agent_spans.rs"]
mod agent_spans;
use agent_spans::agent_request_in;

#[derive(Parser)]
#[command(about = "Load generator and OTLP sink for spanwire benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send agent spans to a daemon.
    Send {
        /// OTLP/gRPC endpoint, host:port.
        #[arg(long, conflicts_with = "http")]
        grpc: Option<String>,
        /// OTLP/HTTP base URL, e.g. http://127.0.0.1:4318.
        #[arg(long)]
        http: Option<String>,
        /// Target spans per second over all workers (0 = as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Seconds to run.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Concurrent requests in flight.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Spans per request.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Daemon pid: report its CPU share and peak RSS over the run.
        #[arg(long)]
        pid: Option<u32>,
        /// Agent sessions the requests are spread over (`sess-0` …); at
        /// least this many distinct requests are cycled.
        #[arg(long, default_value_t = 97)]
        sessions: u64,
        /// Fresh trace ids on every request, this many spans per trace
        /// (0: the cycled requests keep theirs, one trace each). For the
        /// tail sampler, which holds each trace until it is decided.
        #[arg(long, default_value_t = 0)]
        trace_spans: usize,
    },
    /// Count spans received over OTLP/gRPC.
    Sink {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:14317")]
        listen: String,
        /// Decode every request in full (prost) instead of only counting:
        /// the "decode-only ceiling" server of the rotel comparison.
        #[arg(long)]
        decode: bool,
        /// Also take OTLP/HTTP protobuf (`POST /v1/traces`, gzip or not) here.
        #[arg(long)]
        http_listen: Option<String>,
        /// Also stand in for Kinesis here: `ListShards` (4 shards over the
        /// hash space) and `PutRecords` (every record accepted; its spans,
        /// KPL-aggregated or not, counted).
        #[arg(long)]
        kinesis_listen: Option<String>,
    },
    /// Subscribe to a `live` exporter's `/api/live` over WebSocket.
    Watch {
        /// The exporter's host:port.
        #[arg(long, default_value = "127.0.0.1:4321")]
        live: String,
        /// Subscribers in all.
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        /// Of them, how many never read a byte (all-session subscribers).
        #[arg(long, default_value_t = 10)]
        stalled: usize,
        /// The readers each watch one session `sess-N` (N < 97); with this
        /// flag half of them watch every session.
        #[arg(long)]
        firehose: bool,
        /// Seconds to hold the subscriptions.
        #[arg(long, default_value_t = 25)]
        duration: u64,
    },
}

/// The offsets of the 16 trace id bytes of every span in a trace export
/// request: each span's first field, as prost writes it.
fn trace_id_offsets(body: &[u8]) -> anyhow::Result<Vec<usize>> {
    let ix = spanwire::convert::otlp_index::index_traces(body)
        .map_err(|e| anyhow::anyhow!("a generated request does not index: {e}"))?;
    let mut out = Vec::new();
    for item in &ix.items {
        let field = &body[item.clone()];
        let span = spanwire::convert::otlp_view::field_body(field)
            .ok_or_else(|| anyhow::anyhow!("a span field without a body"))?;
        let start = item.end - span.len();
        anyhow::ensure!(
            span.len() > 18 && span[0] == 0x0a && span[1] == 16,
            "a span that does not start with its trace id"
        );
        out.push(start + 2);
    }
    Ok(out)
}

/// Holds the subscribers for `duration` and prints what the readers got.
async fn watch(
    live: String,
    subscribers: usize,
    stalled: usize,
    firehose: bool,
    duration: u64,
) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let frames = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let lagged = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let mut held = Vec::new();
    for i in 0..subscribers {
        let path = if i < stalled || (firehose && i % 2 == 0) {
            "/api/live".to_string()
        } else {
            format!("/api/live?session=sess-{}", i % 97)
        };
        let tcp = tokio::net::TcpStream::connect(&live).await?;
        let (ws, _) = tokio_tungstenite::client_async(format!("ws://{live}{path}"), tcp).await?;
        if i < stalled {
            held.push(ws);
            continue;
        }
        let (frames, bytes, lagged, closed) = (
            frames.clone(),
            bytes.clone(),
            lagged.clone(),
            closed.clone(),
        );
        tokio::spawn(async move {
            let (_out, mut incoming) = ws.split();
            while let Some(Ok(m)) = incoming.next().await {
                let text = m.into_data();
                frames.fetch_add(1, Ordering::Relaxed);
                bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
                // A lagged notice is short; span frames are not scanned.
                if text.len() < 64 && String::from_utf8_lossy(&text).contains("\"lagged\"") {
                    lagged.fetch_add(1, Ordering::Relaxed);
                }
            }
            closed.fetch_add(1, Ordering::Relaxed);
        });
    }
    eprintln!(
        "watch: {subscribers} subscribers ({stalled} never reading{})",
        if firehose {
            ", half the readers on every session"
        } else {
            ""
        }
    );
    tokio::time::sleep(Duration::from_secs(duration)).await;
    println!(
        "watch: readers got {} frames ({:.1} MiB), {} lagged notices, {} subscribers cut off",
        frames.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
        lagged.load(Ordering::Relaxed),
        closed.load(Ordering::Relaxed),
    );
    drop(held);
    Ok(())
}

fn proc_stat(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let cpu = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?;
    Some((cpu, hwm * 1024))
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
>;

#[derive(Clone)]
enum Target {
    Grpc(tonic::transport::Channel),
    Http(Box<HttpClient>, String),
}

async fn send_one(target: &Target, body: Bytes) -> Result<(), String> {
    match target {
        Target::Grpc(ch) => {
            let mut grpc = tonic::client::Grpc::new(ch.clone());
            grpc.ready().await.map_err(|e| e.to_string())?;
            let path = http::uri::PathAndQuery::from_static(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            );
            grpc.unary::<Bytes, ExportTraceServiceResponse, _>(
                tonic::Request::new(body),
                path,
                RawCodec(PhantomData),
            )
            .await
            .map(|_| ())
            .map_err(|e| format!("{:?}", e.code()))
        }
        Target::Http(client, url) => {
            let req = http::Request::post(url.as_str())
                .header("content-type", "application/x-protobuf")
                .body(http_body_util::Full::new(body))
                .map_err(|e| e.to_string())?;
            let resp = client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            use http_body_util::BodyExt;
            let _ = resp.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {status}"))
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn send(
    grpc: Option<String>,
    http_url: Option<String>,
    rate: u64,
    duration: u64,
    concurrency: usize,
    batch: usize,
    pid: Option<u32>,
    sessions: u64,
    trace_spans: usize,
) -> anyhow::Result<()> {
    let target = match (grpc, http_url) {
        (Some(g), None) => {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{g}"))
                .map_err(|e| anyhow::anyhow!("endpoint http://{g}: {e}"))?
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|e| anyhow::anyhow!("connect to {g}: {e}"))?;
            Target::Grpc(ch)
        }
        (None, Some(h)) => {
            let mut conn = hyper_util::client::legacy::connect::HttpConnector::new();
            conn.set_nodelay(true);
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(conn);
            Target::Http(
                Box::new(client),
                format!("{}/v1/traces", h.trim_end_matches('/')),
            )
        }
        _ => anyhow::bail!("give exactly one of --grpc or --http"),
    };
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..256u64.max(sessions))
            .map(|i| Bytes::from(agent_request_in(i + 1, batch, sessions).encode_to_vec()))
            .collect(),
    );
    // Where each body's span trace ids are (field 1 of each span, written
    // first by prost): rewritten per request with --trace-spans.
    let trace_offsets: Arc<Vec<Vec<usize>>> = Arc::new(if trace_spans > 0 {
        bodies
            .iter()
            .map(|b| trace_id_offsets(b))
            .collect::<anyhow::Result<_>>()?
    } else {
        Vec::new()
    });
    let next_trace = Arc::new(AtomicU64::new(1));
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let before = pid.and_then(proc_stat);
    let started = Instant::now();
    let end = started + Duration::from_secs(duration);
    let per_worker_interval = (rate > 0)
        .then(|| Duration::from_secs_f64(batch as f64 * concurrency as f64 / rate as f64));
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let target = target.clone();
        let bodies = bodies.clone();
        let sent = sent.clone();
        let errors = errors.clone();
        let trace_offsets = trace_offsets.clone();
        let next_trace = next_trace.clone();
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut tick = per_worker_interval.map(|d| {
                let mut t = tokio::time::interval_at(
                    tokio::time::Instant::now() + d.mul_f64(w as f64 / concurrency as f64),
                    d,
                );
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                t
            });
            let mut i = w;
            while Instant::now() < end {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let mut body = bodies[i % bodies.len()].clone();
                if let Some(offsets) = trace_offsets.get(i % bodies.len()) {
                    let traces = offsets.len().div_ceil(trace_spans) as u64;
                    let first = next_trace.fetch_add(traces, Ordering::Relaxed);
                    let mut b = body.to_vec();
                    for (k, off) in offsets.iter().enumerate() {
                        let id = first + (k / trace_spans) as u64;
                        b[*off..*off + 8].copy_from_slice(&id.to_be_bytes());
                        b[*off + 8..*off + 16]
                            .copy_from_slice(&id.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
                    }
                    body = Bytes::from(b);
                }
                i += concurrency;
                let t0 = Instant::now();
                match send_one(&target, body).await {
                    Ok(()) => {
                        lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        sent.fetch_add(batch as u64, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await?);
    }
    let wall = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let spans = sent.load(Ordering::Relaxed);
    println!(
        "sent {spans} spans in {wall:.1}s = {:.0} spans/s; requests {} (errors {}); latency ms p50 {:.3} p90 {:.3} p99 {:.3} max {:.3}",
        spans as f64 / wall,
        lat.len(),
        errors.load(Ordering::Relaxed),
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );
    if let (Some(pid), Some((cpu0, _))) = (pid, before) {
        if let Some((cpu1, hwm)) = proc_stat(pid) {
            let cores = (cpu1 - cpu0) / wall;
            println!(
                "daemon pid {pid}: cpu {:.1}% of one core; {:.0} spans/s per core used; peak RSS {:.1} MiB",
                cores * 100.0,
                if cores > 0.0 { spans as f64 / wall / cores } else { 0.0 },
                hwm as f64 / 1048576.0
            );
        }
    }
    Ok(())
}

/// Export requests decoded only as far as counting spans needs: the sink must
/// stay cheap so it does not compete with the daemon for CPU.
#[derive(Clone, PartialEq, prost::Message)]
struct CountRequest {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<CountResource>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CountResource {
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<CountScope>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CountScope {
    #[prost(bytes = "bytes", repeated, tag = "2")]
    spans: Vec<Bytes>,
}

/// A tonic codec that decodes requests as [`CountRequest`] and encodes empty responses.
#[derive(Clone, Default)]
struct CountCodec;

impl tonic::codec::Codec for CountCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = CountRequest;
    type Encoder = CountEncoder;
    type Decoder = CountDecoder;
    fn encoder(&mut self) -> CountEncoder {
        CountEncoder
    }
    fn decoder(&mut self) -> CountDecoder {
        CountDecoder
    }
}

struct CountEncoder;
impl tonic::codec::Encoder for CountEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Self::Item,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        item.encode(dst)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

struct CountDecoder;
impl tonic::codec::Decoder for CountDecoder {
    type Item = CountRequest;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<CountRequest>, tonic::Status> {
        CountRequest::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

/// The trace Export method, served with [`CountCodec`].
#[derive(Clone)]
struct CountService(Arc<AtomicU64>);

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for CountService {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let count = self.0.clone();
        Box::pin(async move {
            struct Unary(Arc<AtomicU64>);
            impl tonic::server::UnaryService<CountRequest> for Unary {
                type Response = ExportTraceServiceResponse;
                type Future =
                    std::future::Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;
                fn call(&mut self, request: tonic::Request<CountRequest>) -> Self::Future {
                    let n: usize = request
                        .get_ref()
                        .resource_spans
                        .iter()
                        .flat_map(|r| &r.scope_spans)
                        .map(|s| s.spans.len())
                        .sum();
                    self.0.fetch_add(n as u64, Ordering::Relaxed);
                    std::future::ready(Ok(tonic::Response::new(
                        ExportTraceServiceResponse::default(),
                    )))
                }
            }
            let mut grpc = tonic::server::Grpc::new(CountCodec)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
                .apply_max_message_size_config(Some(64 << 20), None);
            Ok(grpc.unary(Unary(count), req).await)
        })
    }
}

impl tonic::server::NamedService for CountService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

/// Decodes every request in full with the standard OTLP service and counts its spans.
struct DecodeService(Arc<AtomicU64>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for DecodeService
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Counts the spans of OTLP/HTTP protobuf requests (gunzipped first).
/// Answers one Kinesis JSON call: ListShards or PutRecords.
fn kinesis_answer(target: &str, body: &[u8], count: &AtomicU64) -> (http::StatusCode, String) {
    use base64::Engine;
    if target.ends_with(".ListShards") {
        let step = u128::MAX / 4;
        let shards: Vec<serde_json::Value> = (0..4u128)
            .map(|i| {
                let end = if i == 3 { u128::MAX } else { (i + 1) * step - 1 };
                serde_json::json!({
                    "ShardId": format!("shardId-{i:012}"),
                    "HashKeyRange": {"StartingHashKey": (i * step).to_string(), "EndingHashKey": end.to_string()},
                    "SequenceNumberRange": {"StartingSequenceNumber": "1"}
                })
            })
            .collect();
        return (
            http::StatusCode::OK,
            serde_json::json!({"Shards": shards}).to_string(),
        );
    }
    if !target.ends_with(".PutRecords") {
        return (
            http::StatusCode::BAD_REQUEST,
            format!("{{\"__type\":\"UnknownOperationException\",\"message\":\"{target}\"}}"),
        );
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (http::StatusCode::BAD_REQUEST, "{}".into());
    };
    let records = v["Records"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::with_capacity(records.len());
    for r in &records {
        let data = base64::engine::general_purpose::STANDARD
            .decode(r["Data"].as_str().unwrap_or_default())
            .unwrap_or_default();
        let parts = spanwire::convert::cwl::deaggregate(&data).unwrap_or_default();
        for p in parts {
            if let Ok(ix) = spanwire::convert::otlp_index::index_traces(&p) {
                count.fetch_add(ix.items.len() as u64, Ordering::Relaxed);
            }
        }
        out.push(serde_json::json!({"SequenceNumber": "49590338271490256608559692538361571095921575989136588898", "ShardId": "shardId-000000000000"}));
    }
    (
        http::StatusCode::OK,
        serde_json::json!({"FailedRecordCount": 0, "Records": out}).to_string(),
    )
}

/// A Kinesis stand-in for the `awskinesis` exporter's benchmark.
async fn kinesis_sink(listen: String, count: Arc<AtomicU64>) -> anyhow::Result<()> {
    let listener = spanwire::net::bind(&listen).await?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let served = spanwire::net::serve_http(
        listener,
        None,
        move |req: http::Request<hyper::body::Incoming>| {
            let count = count.clone();
            async move {
                let target = req
                    .headers()
                    .get("x-amz-target")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let (status, text) = match spanwire::net::read_body(req, 64 << 20).await {
                    Ok(body) => kinesis_answer(&target, &body, &count),
                    Err(e) => (e.status(), String::new()),
                };
                let mut r = http::Response::new(http_body_util::Full::new(Bytes::from(text)));
                *r.status_mut() = status;
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/x-amz-json-1.1"),
                );
                r
            }
        },
        cancel,
        Duration::from_secs(1),
    );
    served.await?;
    Ok(())
}

async fn http_sink(listen: String, count: Arc<AtomicU64>) -> anyhow::Result<()> {
    let listener = spanwire::net::bind(&listen).await?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let served = spanwire::net::serve_http(
        listener,
        None,
        move |req: http::Request<hyper::body::Incoming>| {
            let count = count.clone();
            async move {
                let status = match spanwire::net::read_body(req, 64 << 20).await {
                    Ok(body) => match CountRequest::decode(body) {
                        Ok(r) => {
                            let n: usize = r
                                .resource_spans
                                .iter()
                                .flat_map(|r| &r.scope_spans)
                                .map(|s| s.spans.len())
                                .sum();
                            count.fetch_add(n as u64, Ordering::Relaxed);
                            http::StatusCode::OK
                        }
                        Err(_) => http::StatusCode::BAD_REQUEST,
                    },
                    Err(e) => e.status(),
                };
                let mut r = http::Response::new(http_body_util::Full::new(Bytes::new()));
                *r.status_mut() = status;
                r
            }
        },
        cancel,
        Duration::from_secs(1),
    );
    served.await?;
    Ok(())
}

async fn sink(
    listen: String,
    decode: bool,
    http_listen: Option<String>,
    kinesis_listen: Option<String>,
) -> anyhow::Result<()> {
    let count = Arc::new(AtomicU64::new(0));
    if let Some(k) = kinesis_listen {
        let c = count.clone();
        tokio::spawn(async move {
            if let Err(e) = kinesis_sink(k, c).await {
                eprintln!("sink: kinesis: {e}");
            }
        });
    }
    if let Some(h) = http_listen {
        let c = count.clone();
        tokio::spawn(async move {
            if let Err(e) = http_sink(h, c).await {
                eprintln!("sink: http: {e}");
            }
        });
    }
    let c = count.clone();
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = c.load(Ordering::Relaxed);
            if now != last {
                eprintln!("sink: {now} spans total, {} spans/s", now - last);
                last = now;
            }
        }
    });
    let addr = listen
        .parse()
        .map_err(|e| anyhow::anyhow!("listen address {listen}: {e}"))?;
    let mut server = tonic::transport::Server::builder().tcp_nodelay(true);
    let served = if decode {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
        server
            .add_service(
                TraceServiceServer::new(DecodeService(count))
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                    .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
                    .max_decoding_message_size(64 << 20),
            )
            .serve(addr)
            .await
    } else {
        server.add_service(CountService(count)).serve(addr).await
    };
    served.map_err(|e| anyhow::anyhow!("sink server: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Send {
            grpc,
            http,
            rate,
            duration,
            concurrency,
            batch,
            pid,
            sessions,
            trace_spans,
        } => {
            send(
                grpc,
                http,
                rate,
                duration,
                concurrency,
                batch,
                pid,
                sessions,
                trace_spans,
            )
            .await
        }
        Cmd::Sink {
            listen,
            decode,
            http_listen,
            kinesis_listen,
        } => sink(listen, decode, http_listen, kinesis_listen).await,
        Cmd::Watch {
            live,
            subscribers,
            stalled,
            firehose,
            duration,
        } => watch(live, subscribers, stalled, firehose, duration).await,
    }
}
