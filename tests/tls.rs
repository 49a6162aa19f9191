//! TLS on the exporters: `otlp` (gRPC) and `otlphttp` deliver to a TLS
//! backend whose certificate they verify against `tls.ca_file`, and refuse
//! (and keep retrying) when the certificate is not trusted.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{free_port, post_spans, Daemon};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use rustls_pki_types::pem::PemObject;

type BoxBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Clone)]
struct Count(Arc<AtomicUsize>);

#[tonic::async_trait]
impl TraceService for Count {
    async fn export(
        &self,
        r: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = r
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(n, Ordering::SeqCst);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A TLS server (h2 and HTTP/1.1 by ALPN) answering OTLP/gRPC and OTLP/HTTP traces.
async fn tls_sink(
    cert_pem: &str,
    key_pem: &str,
    grpc_count: Arc<AtomicUsize>,
    http_count: Arc<AtomicUsize>,
) -> u16 {
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let grpc = TraceServiceServer::new(Count(grpc_count))
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                break;
            };
            let acceptor = acceptor.clone();
            let grpc = grpc.clone();
            let http_count = http_count.clone();
            tokio::spawn(async move {
                // A client that does not trust us fails here; that is the point of one test.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let mut grpc = grpc.clone();
                        let http_count = http_count.clone();
                        async move {
                            if req.uri().path().starts_with("/opentelemetry.proto.") {
                                use tonic::codegen::Service;
                                let resp = grpc.call(req).await.unwrap();
                                return Ok::<_, Infallible>(
                                    resp.map(|b| b.map_err(|e| e.into()).boxed_unsync()),
                                );
                            }
                            let gz = req.headers().get("content-encoding").is_some();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let body =
                                spanwire::net::decompress(gz.then_some("gzip"), body, 64 << 20)
                                    .unwrap();
                            let r = ExportTraceServiceRequest::decode(&body[..]).unwrap();
                            let n: usize = r
                                .resource_spans
                                .iter()
                                .flat_map(|r| &r.scope_spans)
                                .map(|s| s.spans.len())
                                .sum();
                            http_count.fetch_add(n, Ordering::SeqCst);
                            let b: BoxBody = Full::new(Bytes::new())
                                .map_err(|e| match e {})
                                .boxed_unsync();
                            Ok(hyper::Response::new(b))
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    port
}

fn config(http: u16, health: u16, sink: u16, ca_file: &str) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
exporters:
  otlp:
    endpoint: "127.0.0.1:{sink}"
    tls: {{ca_file: "{ca_file}"}}
    retry_on_failure: {{initial_interval: 100ms, max_interval: 200ms}}
  otlphttp:
    endpoint: "https://127.0.0.1:{sink}"
    tls: {{ca_file: "{ca_file}"}}
    retry_on_failure: {{initial_interval: 100ms, max_interval: 200ms}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp, otlphttp]}}
"#
    )
}

async fn wait(counter: &AtomicUsize, n: usize, limit: Duration) -> usize {
    let deadline = std::time::Instant::now() + limit;
    while counter.load(Ordering::SeqCst) < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    counter.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporters_verify_the_backend_against_ca_file() {
    let server =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let stranger = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let trusted = dir.path().join("ca.pem");
    std::fs::write(&trusted, server.cert.pem()).unwrap();
    let untrusted = dir.path().join("other-ca.pem");
    std::fs::write(&untrusted, stranger.cert.pem()).unwrap();

    let (grpc_count, http_count) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sink = tls_sink(
        &server.cert.pem(),
        &server.signing_key.serialize_pem(),
        grpc_count.clone(),
        http_count.clone(),
    )
    .await;

    // Trusted: both exporters deliver over TLS.
    let (http, health) = (free_port(), free_port());
    let daemon = Daemon::start(
        &config(http, health, sink, &trusted.to_string_lossy()),
        health,
    );
    let r = post_spans(http, 12, "tls").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        wait(&grpc_count, 12, Duration::from_secs(10)).await,
        12,
        "{}",
        daemon.logs()
    );
    assert_eq!(
        wait(&http_count, 12, Duration::from_secs(10)).await,
        12,
        "{}",
        daemon.logs()
    );
    drop(daemon);

    // Not trusted: nothing is delivered, and the exporters say why and keep retrying.
    let (http, health) = (free_port(), free_port());
    let daemon = Daemon::start(
        &config(http, health, sink, &untrusted.to_string_lossy()),
        health,
    );
    let r = post_spans(http, 5, "untrusted").await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(grpc_count.load(Ordering::SeqCst), 12);
    assert_eq!(http_count.load(Ordering::SeqCst), 12);
    let logs = daemon.logs();
    assert!(
        logs.contains("export failed; will retry") && logs.contains("exporter=otlphttp"),
        "{logs}"
    );
    let reasons: Vec<&str> = logs.lines().filter(|l| l.contains("will retry")).collect();
    assert!(
        reasons
            .iter()
            .any(|l| l.contains("exporter=otlp ") && l.contains("certificate")),
        "{logs}"
    );
    assert!(
        reasons
            .iter()
            .any(|l| l.contains("exporter=otlphttp") && l.contains("certificate")),
        "{logs}"
    );
}
