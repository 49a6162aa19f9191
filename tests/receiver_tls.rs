//! TLS on the receivers: OTLP/gRPC with client certificates (mutual TLS),
//! OTLP/HTTP and the bedrock receiver over HTTPS. Trusted clients deliver;
//! plain-text clients, clients without a certificate and clients with a
//! certificate from another CA are refused at the handshake, and counted.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::{agent_spans, free_port, http_request, metric, Daemon, Sink};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use spanwire::settings::types::TlsClientConfig;
use spanwire::signal::Signal;

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// A CA; a server certificate for 127.0.0.1 and a client certificate from
/// it; and a client certificate from another CA.
fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
    };
    let ca1 = ca("spanwire test CA");
    let ca2 = ca("a stranger's CA");
    write(dir.path(), "ca.pem", &ca1.pem());
    let leaf = |names: Vec<String>, issuer: &CertifiedIssuer<'_, KeyPair>, prefix: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, issuer)
            .unwrap();
        write(dir.path(), &format!("{prefix}.pem"), &cert.pem());
        write(
            dir.path(),
            &format!("{prefix}-key.pem"),
            &key.serialize_pem(),
        );
    };
    leaf(vec!["127.0.0.1".into(), "localhost".into()], &ca1, "server");
    leaf(vec!["agent-1".into()], &ca1, "client");
    leaf(vec!["agent-1".into()], &ca2, "stranger");
    Pki { dir }
}

fn client_tls(pki: &Pki, cert: Option<&str>) -> TlsClientConfig {
    TlsClientConfig {
        ca_file: Some(pki.path("ca.pem")),
        cert_file: cert.map(|c| pki.path(&format!("{c}.pem"))),
        key_file: cert.map(|c| pki.path(&format!("{c}-key.pem"))),
        ..Default::default()
    }
}

async fn grpc_export(port: u16, tls: &TlsClientConfig) -> Result<(), String> {
    let connector = spanwire::net::https_connector(tls, true).map_err(|e| e.to_string())?;
    let channel = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    TraceServiceClient::new(channel)
        .export(agent_spans(4, "grpc-tls"))
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

async fn https_post(
    port: u16,
    path: &str,
    tls: &TlsClientConfig,
    body: Vec<u8>,
) -> Result<u16, String> {
    let connector = spanwire::net::https_connector(tls, false).map_err(|e| e.to_string())?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let req = hyper::Request::post(format!("https://127.0.0.1:{port}{path}"))
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_serve_tls_and_grpc_requires_a_client_certificate() {
    let pki = pki();
    let sink = Sink::start().await;
    let (grpc, http, bedrock, health, metrics) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let server_tls = format!(
        "cert_file: \"{}\", key_file: \"{}\"",
        pki.path("server.pem"),
        pki.path("server-key.pem")
    );
    let cfg = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "127.0.0.1:{grpc}"
        tls: {{{server_tls}, client_ca_file: "{ca}"}}
      http:
        endpoint: "127.0.0.1:{http}"
        tls: {{{server_tls}, min_version: "1.3"}}
  bedrock:
    endpoint: "127.0.0.1:{bedrock}"
    tls: {{{server_tls}}}
processors:
  batch: {{timeout: 50ms}}
exporters:
  otlp: {{endpoint: "http://127.0.0.1:{sg}"}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: "127.0.0.1:{metrics}"}}}}
  pipelines:
    traces: {{receivers: [otlp, bedrock], processors: [batch], exporters: [otlp]}}
"#,
        ca = pki.path("ca.pem"),
        sg = sink.grpc_port
    );
    let daemon = Daemon::start(&cfg, health);

    // gRPC: a client certificate from the CA is required.
    grpc_export(grpc, &client_tls(&pki, Some("client")))
        .await
        .unwrap();
    let no_cert = grpc_export(grpc, &client_tls(&pki, None)).await;
    assert!(no_cert.is_err(), "no client certificate must be refused");
    let stranger = grpc_export(grpc, &client_tls(&pki, Some("stranger"))).await;
    assert!(
        stranger.is_err(),
        "a certificate from another CA must be refused"
    );

    // HTTP: server TLS only; the client verifies the server against the CA.
    let body = agent_spans(6, "http-tls").encode_to_vec();
    assert_eq!(
        https_post(http, "/v1/traces", &client_tls(&pki, None), body.clone()).await,
        Ok(200)
    );
    // A client that does not trust the server's CA gives up.
    let untrusted = TlsClientConfig {
        ca_file: Some(pki.path("stranger.pem")),
        ..Default::default()
    };
    assert!(https_post(http, "/v1/traces", &untrusted, body.clone())
        .await
        .is_err());
    // Plain text to a TLS port gets no HTTP answer.
    let plain = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", http))
            .await
            .unwrap();
        s.write_all(b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        buf
    })
    .await
    .unwrap();
    assert!(
        !plain.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&plain)
    );

    // Bedrock over HTTPS: an empty JSON body is a 400 from the receiver itself, so TLS worked.
    let r = https_post(
        bedrock,
        "/v1/bedrock/traces",
        &client_tls(&pki, None),
        b"{".to_vec(),
    )
    .await;
    assert_eq!(r, Ok(400));

    assert_eq!(
        sink.wait_for(Signal::Traces, 10, Duration::from_secs(10))
            .await,
        10,
        "{}",
        daemon.logs()
    );
    let text = String::from_utf8_lossy(
        &http_request("GET", metrics, "/metrics", &[], Vec::new())
            .await
            .body,
    )
    .to_string();
    let grpc_fail = metric(
        &text,
        "spanwire_receiver_tls_handshake_failures_total",
        &["receiver=\"otlp grpc\""],
    );
    let http_fail = metric(
        &text,
        "spanwire_receiver_tls_handshake_failures_total",
        &["receiver=\"otlp http\""],
    );
    assert!(grpc_fail >= 2.0, "{grpc_fail}\n{text}");
    assert!(http_fail >= 2.0, "{http_fail}");
    assert!(daemon.logs().contains("TLS handshake failed"));
}

#[tokio::test]
async fn bad_tls_files_stop_the_start_with_a_clear_error() {
    let pki = pki();
    let (http, health) = (free_port(), free_port());
    let cfg = |cert: &str, key: &str| {
        format!(
            r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}", tls: {{cert_file: "{cert}", key_file: "{key}"}}}}
exporters:
  debug: {{}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"#
        )
    };
    let run = |text: String| {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_spanwire"))
            .args(["run", "--config"])
            .arg(&p)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = run(cfg("/nonexistent/cert.pem", &pki.path("server-key.pem")));
    assert!(!ok);
    assert!(err.contains("cert_file `/nonexistent/cert.pem`"), "{err}");
    // A key that does not match the certificate.
    let (ok, err) = run(cfg(&pki.path("server.pem"), &pki.path("client-key.pem")));
    assert!(!ok);
    assert!(err.contains("TLS"), "{err}");
    let (ok, err) = run(cfg(&pki.path("server.pem"), "")
        .replace("key_file: \"\"", "key_file: \"\", min_version: \"1.1\""));
    assert!(!ok);
    assert!(
        err.contains("key_file are required") || err.contains("min_version"),
        "{err}"
    );
}
