//! Shutdown: data accepted before SIGTERM is delivered before exit, even when
//! it sits in a batcher or the target is refusing for a while.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::{free_port, post_spans, Daemon, Sink};
use spanwire::signal::Signal;

fn config(http: u16, health: u16, sink: &Sink, timeout: &str) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
processors:
  batch: {{send_batch_size: 100000, timeout: 60s}}
exporters:
  otlp:
    endpoint: "http://127.0.0.1:{sg}"
    retry_on_failure: {{initial_interval: 100ms, max_interval: 200ms}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  shutdown_timeout: {timeout}
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}
"#,
        sg = sink.grpc_port
    )
}

async fn send(http: u16, n: usize, tag: &str) {
    assert_eq!(post_spans(http, n, tag).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_data_is_flushed_on_sigterm() {
    let sink = Sink::start().await;
    let (http, health) = (free_port(), free_port());
    let mut daemon = Daemon::start(&config(http, health, &sink, "10s"), health);
    for i in 0..5 {
        send(http, 100, &format!("s{i}")).await;
    }
    // The batcher holds everything (60s timeout, huge size): nothing has left yet.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sink.count(Signal::Traces), 0);
    let status = daemon.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit {status}:\n{}", daemon.logs());
    assert_eq!(sink.count(Signal::Traces), 500, "{}", daemon.logs());
    assert!(daemon.logs().contains("nothing was left queued"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_continue_during_shutdown_until_the_target_returns() {
    let sink = Sink::start().await;
    sink.refuse.store(true, Ordering::SeqCst);
    let (http, health) = (free_port(), free_port());
    let mut daemon = Daemon::start(&config(http, health, &sink, "20s"), health);
    send(http, 50, "retry").await;
    let refuse = sink.refuse.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        refuse.store(false, Ordering::SeqCst);
    });
    let status = tokio::task::spawn_blocking(move || {
        let s = daemon.terminate(Duration::from_secs(25));
        (s, daemon)
    })
    .await
    .unwrap();
    assert!(status.0.success());
    assert_eq!(sink.count(Signal::Traces), 50, "{}", status.1.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_at_the_deadline_is_logged_with_exact_counts() {
    let sink = Sink::start().await;
    sink.refuse.store(true, Ordering::SeqCst);
    let (http, health) = (free_port(), free_port());
    let mut daemon = Daemon::start(&config(http, health, &sink, "1s"), health);
    send(http, 37, "lost").await;
    let status = tokio::task::spawn_blocking(move || {
        let s = daemon.terminate(Duration::from_secs(10));
        (s, daemon)
    })
    .await
    .unwrap();
    assert!(status.0.success());
    let logs = status.1.logs();
    assert_eq!(sink.count(Signal::Traces), 0);
    assert!(
        logs.contains("still queued at the shutdown deadline; dropped")
            && logs.contains("items=37"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let sink = Sink::start().await;
    let (http, health) = (free_port(), free_port());
    let cfg = config(http, health, &sink, "5s").replace(
        "  telemetry: {metrics: {address: \"\"}}",
        "  telemetry: {metrics: {address: \"\"}, logs: {level: debug, format: json}}",
    );
    assert!(cfg.contains("format: json"));
    let mut daemon = Daemon::start(&cfg, health);
    send(http, 3, "json").await;
    assert!(daemon.terminate(Duration::from_secs(10)).success());
    let logs = daemon.logs();
    let mut messages = Vec::new();
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        messages.push(v["message"].as_str().unwrap_or_default().to_string());
    }
    assert!(
        messages.iter().any(|m| m == "spanwire is running"),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("shutdown complete")),
        "{messages:?}"
    );
}
