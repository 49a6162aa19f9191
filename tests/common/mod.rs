//! Test harness: run the real `spanwire` binary on free loopback ports, an
//! OTLP sink (gRPC and HTTP) it exports to, and a small HTTP client.
#![allow(dead_code)]

pub mod genai;
pub mod kinesis;
pub mod verifier;

use std::io::Read;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use spanwire::signal::{Signal, Telemetry};
use tokio_util::sync::CancellationToken;

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The Python interpreter with the OpenTelemetry SDK (installed by `scripts/test`).
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("SPANWIRE_PYTHON") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/test, which installs the Python test dependencies",
        p.display()
    );
    p
}

/// Runs `tests/python/send_otel.py`: the OpenTelemetry Python SDK sends
/// `spans` spans, four metrics and `logs` log records over OTLP `protocol`
/// (`grpc` or `http`) to `endpoint`, with `headers` as
/// `OTEL_EXPORTER_OTLP_HEADERS` (how AgentCore-style agents name their log
/// group, stream and metric namespace). Output is piped.
pub fn python_agent(
    protocol: &str,
    endpoint: &str,
    tag: &str,
    (spans, logs): (usize, usize),
    headers: &str,
) -> Child {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/send_otel.py");
    Command::new(python())
        .args([script, "--protocol", protocol, "--endpoint", endpoint])
        .args(["--tag", tag])
        .args(["--spans", &spans.to_string(), "--logs", &logs.to_string()])
        .env("OTEL_SDK_DISABLED", "false")
        .env("OTEL_EXPORTER_OTLP_HEADERS", headers)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a [`python_agent`] and fails the test if it failed.
pub fn python_agent_done(agent: Child) {
    let out = agent.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python sender failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `spanwire run` process.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    log: PathBuf,
    pub health_port: u16,
}

impl Daemon {
    /// Starts spanwire with `config` (which must include a health_check on `health_port`)
    /// and waits until it reports ready.
    pub fn start(config: &str, health_port: u16) -> Daemon {
        Daemon::start_with_env(config, health_port, &[])
    }

    /// Like [`Daemon::start`], with extra environment variables.
    pub fn start_with_env(config: &str, health_port: u16, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_layered(&[], config, health_port, env)
    }

    /// Starts spanwire with the config files `files`, unchanged, and then
    /// `overlay` as a last `--config` (merged over them: how a test moves a
    /// published config's addresses to loopback and adds a health_check).
    pub fn start_layered(
        files: &[&std::path::Path],
        overlay: &str,
        health_port: u16,
        env: &[(&str, &str)],
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.yaml");
        std::fs::write(&cfg, overlay).unwrap();
        let log = dir.path().join("spanwire.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_spanwire"));
        cmd.arg("run");
        for f in files.iter().copied().chain([cfg.as_path()]) {
            cmd.arg("--config").arg(f);
        }
        let child = cmd
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child: Some(child),
            dir,
            log,
            health_port,
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("spanwire exited early with {status}:\n{}", self.logs());
            }
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.health_port)) {
                use std::io::Write;
                let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "spanwire not ready in 30s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident memory in bytes.
    pub fn rss(&self) -> u64 {
        rss_of(self.pid()).unwrap()
    }

    /// Kills it with SIGKILL (no chance to flush or checkpoint) and waits.
    pub fn kill_hard(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Sends SIGTERM and waits (at most `limit`) for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let pid = self.pid();
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child.take();
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "spanwire did not exit after SIGTERM:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Resident memory of process `pid` in bytes (None once it has exited).
pub fn rss_of(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Sum of the samples of `name` in Prometheus text whose line contains every
/// one of `labels` (e.g. `reason="throttled"`).
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `f` every 100 ms until it holds or `limit` passes; its last answer.
pub async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f()
}

/// Environment for a daemon that talks to a local AWS stand-in: fixed test
/// credentials, no instance metadata, no shared config files, so the SDK
/// never reaches for anything but 127.0.0.1.
pub fn aws_test_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/nonexistent/spanwire-test-aws-config"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/spanwire-test-aws-credentials",
        ),
    ]
}

/// A moto server (a local stand-in for AWS APIs) on a free loopback port.
/// Fails, never skips, when moto is not installed: run `scripts/test`.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        let bin = std::env::var("SPANWIRE_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server")
            });
        assert!(
            bin.exists(),
            "{} is missing: run scripts/test, which installs moto server into .venv",
            bin.display()
        );
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto server did not start in 30s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Moto { child, port }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kinesalite (a local Kinesis with realistic iterators, sequence numbers and
/// resharding) on a free loopback port. Fails, never skips, when it is not
/// installed: run `scripts/test`, which installs it into `.node`.
pub struct Kinesalite {
    child: Child,
    pub port: u16,
}

impl Kinesalite {
    pub fn start() -> Kinesalite {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let modules = std::env::var("SPANWIRE_NODE_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join(".node/node_modules"));
        assert!(
            modules.join("kinesalite").exists(),
            "{} has no kinesalite: run scripts/test, which installs it",
            modules.display()
        );
        let port = free_port();
        let child = Command::new("node")
            .arg(root.join("tests/kinesalite.js"))
            .arg(port.to_string())
            .env("NODE_PATH", &modules)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "kinesalite did not start in 30s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Kinesalite { child, port }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Kinesalite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An AWS SDK config for test clients talking to a local server.
pub fn aws_test_sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    use aws_config::{BehaviorVersion, Region};
    use aws_credential_types::{provider::SharedCredentialsProvider, Credentials};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .http_client(http)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "testing", "testing", None, None, "test",
        )))
        .build()
}

/// An OTLP receiver (gRPC and HTTP) that stores what it gets, and can refuse.
pub struct Sink {
    pub grpc_port: u16,
    pub http_port: u16,
    pub received: Arc<Mutex<Vec<Telemetry>>>,
    /// While set, answers UNAVAILABLE / 503.
    pub refuse: Arc<AtomicBool>,
    /// Milliseconds each request takes (a slow target).
    pub delay_ms: Arc<std::sync::atomic::AtomicU64>,
    cancel: CancellationToken,
}

#[derive(Clone)]
struct SinkSvc {
    received: Arc<Mutex<Vec<Telemetry>>>,
    refuse: Arc<AtomicBool>,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl SinkSvc {
    async fn take(&self, t: Telemetry) -> Result<(), tonic::Status> {
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.refuse.load(Ordering::SeqCst) {
            return Err(tonic::Status::unavailable("sink is refusing"));
        }
        self.received.lock().unwrap().push(t);
        Ok(())
    }
}

#[tonic::async_trait]
impl TraceService for SinkSvc {
    async fn export(
        &self,
        r: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.take(Telemetry::Traces(r.into_inner().resource_spans))
            .await?;
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for SinkSvc {
    async fn export(
        &self,
        r: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.take(Telemetry::Metrics(r.into_inner().resource_metrics))
            .await?;
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tonic::async_trait]
impl LogsService for SinkSvc {
    async fn export(
        &self,
        r: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.take(Telemetry::Logs(r.into_inner().resource_logs))
            .await?;
        Ok(tonic::Response::new(Default::default()))
    }
}

/// Binds 127.0.0.1:`port` (0: a free one). A sink restarted where it was
/// may find its port briefly held by a socket of another test on this
/// machine: it tries again for up to 10 s before failing.
async fn bind_again(port: u16) -> tokio::net::TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => return l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("cannot bind 127.0.0.1:{port}: {e}"),
        }
    }
}

impl Sink {
    /// Starts both servers on free ports.
    pub async fn start() -> Sink {
        Sink::start_on(0, 0, Arc::new(Mutex::new(Vec::new()))).await
    }

    /// Starts both servers on the given ports (0: a free one), storing into
    /// `received` (to restart a stopped sink where it was, with its data).
    pub async fn start_on(
        grpc_port: u16,
        http_port: u16,
        received: Arc<Mutex<Vec<Telemetry>>>,
    ) -> Sink {
        let refuse = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let cancel = CancellationToken::new();
        let svc = SinkSvc {
            received: received.clone(),
            refuse: refuse.clone(),
            delay_ms: delay_ms.clone(),
        };
        let grpc = bind_again(grpc_port).await;
        let grpc_port = grpc.local_addr().unwrap().port();
        let c = cancel.clone();
        let s = svc.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(
                    TraceServiceServer::new(s.clone())
                        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                        .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
                        .max_decoding_message_size(64 << 20),
                )
                .add_service(
                    MetricsServiceServer::new(s.clone())
                        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                        .accept_compressed(tonic::codec::CompressionEncoding::Zstd),
                )
                .add_service(
                    LogsServiceServer::new(s)
                        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                        .accept_compressed(tonic::codec::CompressionEncoding::Zstd),
                )
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(grpc),
                    c.cancelled_owned(),
                )
                .await
                .unwrap();
        });
        let http = bind_again(http_port).await;
        let http_port = http.local_addr().unwrap().port();
        let c = cancel.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    a = http.accept() => a.unwrap(),
                    _ = c.cancelled() => break,
                };
                let svc = svc.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let svc = svc.clone();
                            async move { Ok::<_, std::convert::Infallible>(sink_http(&svc, req).await) }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Sink {
            grpc_port,
            http_port,
            received,
            refuse,
            delay_ms,
            cancel,
        }
    }

    /// Items received of a signal.
    pub fn count(&self, signal: Signal) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|t| t.signal() == signal)
            .map(|t| t.item_count())
            .sum()
    }

    /// The resource attributes of every resource received, in order.
    pub fn resources(&self) -> Vec<Vec<opentelemetry_proto::tonic::common::v1::KeyValue>> {
        let attrs = |r: &Option<opentelemetry_proto::tonic::resource::v1::Resource>| {
            r.as_ref().map(|r| r.attributes.clone()).unwrap_or_default()
        };
        let mut out = Vec::new();
        for t in self.received.lock().unwrap().iter() {
            match t {
                Telemetry::Traces(v) => out.extend(v.iter().map(|r| attrs(&r.resource))),
                Telemetry::Metrics(v) => out.extend(v.iter().map(|r| attrs(&r.resource))),
                Telemetry::Logs(v) => out.extend(v.iter().map(|r| attrs(&r.resource))),
            }
        }
        out
    }

    /// All spans received.
    pub fn spans(&self) -> Vec<Span> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter_map(|t| match t {
                Telemetry::Traces(rs) => Some(rs.clone()),
                _ => None,
            })
            .flatten()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .collect()
    }

    /// Waits (bounded) until `count(signal) >= n`; returns the count.
    pub async fn wait_for(&self, signal: Signal, n: usize, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let c = self.count(signal);
            if c >= n || Instant::now() > deadline {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn sink_http(
    svc: &SinkSvc,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let json = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("application/json"));
    let enc = req
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap_or("").to_string());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let body = spanwire::net::decompress(enc.as_deref(), body, 256 << 20).unwrap();
    let signal = match path.as_str() {
        "/v1/traces" => Signal::Traces,
        "/v1/metrics" => Signal::Metrics,
        "/v1/logs" => Signal::Logs,
        _ => return response(404, Bytes::new()),
    };
    let t = if json {
        spanwire::convert::otlp_json::decode(signal, &body).unwrap()
    } else {
        match signal {
            Signal::Traces => Telemetry::Traces(
                ExportTraceServiceRequest::decode(&body[..])
                    .unwrap()
                    .resource_spans,
            ),
            Signal::Metrics => Telemetry::Metrics(
                ExportMetricsServiceRequest::decode(&body[..])
                    .unwrap()
                    .resource_metrics,
            ),
            Signal::Logs => Telemetry::Logs(
                ExportLogsServiceRequest::decode(&body[..])
                    .unwrap()
                    .resource_logs,
            ),
        }
    };
    if svc.take(t).await.is_err() {
        return response(503, Bytes::from_static(b"refusing"));
    }
    response(
        200,
        if json {
            Bytes::from_static(b"{}")
        } else {
            Bytes::new()
        },
    )
}

fn response(status: u16, body: Bytes) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::new(Full::new(body));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    r
}

/// A minimal HTTP client result.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Sends one HTTP request to 127.0.0.1.
pub async fn http_request(
    method: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// POSTs an OTLP/HTTP protobuf trace request body to `/v1/traces`.
pub async fn post_traces(port: u16, body: Vec<u8>) -> Reply {
    http_request(
        "POST",
        port,
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        body,
    )
    .await
}

/// POSTs `n` agent spans tagged `tag` as OTLP/HTTP protobuf to `/v1/traces`.
pub async fn post_spans(port: u16, n: usize, tag: &str) -> Reply {
    use prost::Message;
    post_traces(port, agent_spans(n, tag).encode_to_vec()).await
}

/// An export request of `n` agent-like spans (one trace, parent/child ids, gen_ai attributes).
pub fn agent_spans(n: usize, tag: &str) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        key_strindex: 0,
    };
    let trace_id: Vec<u8> = (0..16u8)
        .map(|i| i.wrapping_mul(7).wrapping_add(tag.len() as u8))
        .collect();
    let spans = (0..n)
        .map(|i| Span {
            trace_id: trace_id.clone(),
            span_id: ((i as u64) + 1).to_be_bytes().to_vec(),
            parent_span_id: if i == 0 {
                vec![]
            } else {
                1u64.to_be_bytes().to_vec()
            },
            name: format!("{tag}-{i}"),
            kind: if i == 0 { 3 } else { 1 },
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64 * 1000,
            end_time_unix_nano: 1_700_000_000_000_500_000 + i as u64 * 1000,
            attributes: vec![
                kv(
                    "gen_ai.operation.name",
                    if i == 0 { "invoke_agent" } else { "chat" },
                ),
                kv("gen_ai.agent.name", "travel-agent"),
                kv("test.tag", tag),
            ],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "agent")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

/// Serves HTTP/1 and HTTP/2 on a free loopback port with `handler` (a fake
/// AWS endpoint, say) until the test's runtime ends; returns the port.
pub async fn serve_fake<F, Fut>(handler: F) -> u16
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = hyper::Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, std::convert::Infallible>(fut.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

/// Every event of a log stream, oldest first (GetLogEvents, all pages).
pub async fn read_log_stream(
    client: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let r = client
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await;
        let Ok(r) = r else { return out };
        let n = r.events().len();
        for e in r.events() {
            out.push((
                e.timestamp().unwrap_or(0),
                e.message().unwrap_or("").to_string(),
            ));
        }
        let next = r.next_forward_token().map(str::to_string);
        if n == 0 || next.is_none() || next == token {
            return out;
        }
        token = next;
    }
}
