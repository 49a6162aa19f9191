//! `wait_for_delivery`: the OTLP receiver answers only once the data is
//! delivered (or durably queued), and says so when it was not.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::{agent_spans, free_port, post_spans, Daemon, Sink};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use spanwire::signal::Signal;

fn config(
    grpc: u16,
    http: u16,
    health: u16,
    sink_grpc: u16,
    exporter_extra: &str,
    timeout: &str,
) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}", wait_for_delivery: true, delivery_timeout: {timeout}}}
      http: {{endpoint: "127.0.0.1:{http}", wait_for_delivery: true, delivery_timeout: {timeout}}}
processors:
  batch: {{timeout: 50ms}}
exporters:
  otlp:
    endpoint: "http://127.0.0.1:{sink_grpc}"
{exporter_extra}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_waits_for_the_target() {
    let sink = Sink::start().await;
    sink.refuse.store(true, Ordering::SeqCst);
    let (grpc, http, health) = (free_port(), free_port(), free_port());
    let extra = "    retry_on_failure: {initial_interval: 50ms, max_interval: 100ms}";
    let _daemon = Daemon::start(
        &config(grpc, http, health, sink.grpc_port, extra, "30s"),
        health,
    );
    let pending = tokio::spawn(post_spans(http, 25, "wait"));
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    let grpc_pending = tokio::spawn(async move { client.export(agent_spans(5, "g")).await });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!pending.is_finished(), "no answer while the target refuses");
    assert!(!grpc_pending.is_finished());
    sink.refuse.store(false, Ordering::SeqCst);
    let r = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200);
    // When the answer came, the spans were already at the target.
    assert!(sink.count(Signal::Traces) >= 25);
    let g = tokio::time::timeout(Duration::from_secs(10), grpc_pending)
        .await
        .unwrap()
        .unwrap();
    assert!(g.is_ok(), "{g:?}");
    assert_eq!(sink.count(Signal::Traces), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_data_gets_an_error_and_a_slow_target_a_retryable_one() {
    let sink = Sink::start().await;
    sink.refuse.store(true, Ordering::SeqCst);
    let (grpc, http, health) = (free_port(), free_port(), free_port());
    // Retry disabled: the exporter drops the batch at the first refusal.
    let extra = "    retry_on_failure: {enabled: false}";
    let daemon = Daemon::start(
        &config(grpc, http, health, sink.grpc_port, extra, "30s"),
        health,
    );
    let r = post_spans(http, 10, "drop").await;
    assert_eq!(r.status, 500, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        String::from_utf8_lossy(&r.body).contains("dropped"),
        "{}",
        daemon.logs()
    );
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    let e = client.export(agent_spans(3, "gd")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal, "{e:?}");
    drop(daemon);

    // Retrying for longer than delivery_timeout: 503, and the data may still arrive.
    let (grpc, http, health) = (free_port(), free_port(), free_port());
    let extra = "    retry_on_failure: {initial_interval: 50ms, max_interval: 100ms}";
    let _daemon = Daemon::start(
        &config(grpc, http, health, sink.grpc_port, extra, "700ms"),
        health,
    );
    let r = post_spans(http, 10, "slow").await;
    assert_eq!(r.status, 503);
    assert!(String::from_utf8_lossy(&r.body).contains("delivery_timeout"));
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    let e = client.export(agent_spans(3, "gs")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    sink.refuse.store(false, Ordering::SeqCst);
    assert_eq!(
        sink.wait_for(Signal::Traces, 13, Duration::from_secs(10))
            .await,
        13
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_disk_queue_the_answer_comes_once_the_data_is_on_disk() {
    let store = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.refuse.store(true, Ordering::SeqCst);
    let (grpc, http, health) = (free_port(), free_port(), free_port());
    let extra = format!(
        "    retry_on_failure: {{initial_interval: 50ms, max_interval: 100ms}}\n    sending_queue: {{storage: \"{}\"}}",
        store.path().display()
    );
    let _daemon = Daemon::start(
        &config(grpc, http, health, sink.grpc_port, &extra, "30s"),
        health,
    );
    let r = tokio::time::timeout(Duration::from_secs(5), post_spans(http, 10, "disk"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "durably queued counts as delivered");
    assert_eq!(sink.count(Signal::Traces), 0);
    sink.refuse.store(false, Ordering::SeqCst);
    assert_eq!(
        sink.wait_for(Signal::Traces, 10, Duration::from_secs(10))
            .await,
        10
    );
}
