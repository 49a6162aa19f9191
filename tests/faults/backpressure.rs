//! Backpressure: the export target refuses → queues fill → the receiver
//! answers UNAVAILABLE / 503 with memory bounded; the target returns → every
//! accepted span is delivered exactly once.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::{agent_spans, free_port, http_request, post_spans, Daemon, Sink};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use spanwire::signal::Signal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queues_push_back_and_drain_when_the_target_returns() {
    let sink = Sink::start().await;
    sink.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
    let (grpc, http, health, metrics) = (free_port(), free_port(), free_port(), free_port());
    let cfg = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      http: {{endpoint: "127.0.0.1:{http}"}}
processors:
  batch: {{send_batch_size: 200, timeout: 20ms}}
exporters:
  otlp:
    endpoint: "http://127.0.0.1:{sg}"
    retry_on_failure: {{initial_interval: 50ms, max_interval: 200ms, max_elapsed_time: 0s}}
    sending_queue: {{num_consumers: 2, queue_size: 10}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: "127.0.0.1:{metrics}"}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}
"#,
        sg = sink.grpc_port
    );
    let daemon = Daemon::start(&cfg, health);
    let rss_before = daemon.rss();

    // Push until the daemon pushes back, over HTTP; count what it accepted.
    let mut accepted = 0usize;
    let mut refused = 0usize;
    let mut peak_rss = 0u64;
    for i in 0..3000 {
        let body = agent_spans(100, &format!("bp{i}")).encode_to_vec();
        let r = http_request(
            "POST",
            http,
            "/v1/traces",
            &[("content-type", "application/x-protobuf")],
            body,
        )
        .await;
        match r.status {
            200 => accepted += 100,
            503 => {
                assert!(
                    r.headers.contains_key("retry-after"),
                    "503 carries Retry-After"
                );
                refused += 1;
                if refused >= 20 {
                    break;
                }
            }
            other => panic!("unexpected status {other}"),
        }
        if i % 50 == 0 {
            peak_rss = peak_rss.max(daemon.rss());
        }
    }
    assert!(refused >= 20, "never pushed back after {accepted} spans");
    // Batcher input (64 requests) + 200-span batches in 10 queue slots + 2 in flight bound what is held.
    assert!(
        accepted <= 64 * 100 + 13 * 200 + 400,
        "accepted {accepted} spans while the target was down"
    );

    // gRPC senders are told UNAVAILABLE too, with a RetryInfo delay.
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    let err = client.export(agent_spans(10, "grpc-bp")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(spanwire::rpc::retry_delay(&err).is_some());

    peak_rss = peak_rss.max(daemon.rss());
    assert!(
        peak_rss < rss_before + (64 << 20),
        "RSS grew from {rss_before} to {peak_rss} while refusing"
    );

    // Self-metrics show the refusals and a full queue.
    let m = http_request("GET", metrics, "/metrics", &[], vec![]).await;
    let text = String::from_utf8_lossy(&m.body).to_string();
    assert!(text
        .contains("spanwire_receiver_refused_spans_total{receiver=\"otlp\",transport=\"http\"}"));
    assert!(text.contains("spanwire_exporter_queue_capacity{exporter=\"otlp\"} 10"));
    assert!(
        text.contains("spanwire_exporter_queue_size{exporter=\"otlp\"} 10"),
        "{text}"
    );

    // The target comes back: everything accepted arrives, once.
    sink.refuse
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let n = sink
        .wait_for(Signal::Traces, accepted, Duration::from_secs(30))
        .await;
    assert_eq!(n, accepted, "{}", daemon.logs());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans = sink.spans();
    assert_eq!(spans.len(), accepted);
    let unique: HashSet<(String, Vec<u8>)> = spans
        .iter()
        .map(|s| (s.name.clone(), s.span_id.clone()))
        .collect();
    assert_eq!(unique.len(), accepted, "duplicates delivered");

    // And it accepts again.
    let r = post_spans(http, 3, "after").await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_exporter_does_not_stall_a_fast_one_while_its_queue_has_room() {
    let fast = Sink::start().await;
    let slow = Sink::start().await;
    slow.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
    let (http, health) = (free_port(), free_port());
    let cfg = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
exporters:
  otlp/fast:
    endpoint: "http://127.0.0.1:{f}"
  otlp/slow:
    endpoint: "http://127.0.0.1:{s}"
    retry_on_failure: {{initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 0s}}
    sending_queue: {{num_consumers: 1, queue_size: 50}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp/fast, otlp/slow]}}
"#,
        f = fast.grpc_port,
        s = slow.grpc_port
    );
    let daemon = Daemon::start(&cfg, health);
    // 30 requests fit in the slow exporter's queue of 50: all are accepted and
    // the fast exporter delivers them while the slow one is still retrying.
    for i in 0..30 {
        let r = http_request(
            "POST",
            http,
            "/v1/traces",
            &[("content-type", "application/x-protobuf")],
            agent_spans(10, &format!("fan{i}")).encode_to_vec(),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        fast.wait_for(Signal::Traces, 300, Duration::from_secs(10))
            .await,
        300,
        "{}",
        daemon.logs()
    );
    assert_eq!(slow.count(Signal::Traces), 0);
    // The slow one comes back and gets everything too.
    slow.refuse
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        slow.wait_for(Signal::Traces, 300, Duration::from_secs(10))
            .await,
        300
    );
    assert_eq!(fast.count(Signal::Traces), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limiter_refusals_reach_senders_as_unavailable_and_503() {
    let sink = Sink::start().await;
    let (grpc, http, health) = (free_port(), free_port(), free_port());
    // A 1 MiB limit is always exceeded by a running process: every request is refused.
    let cfg = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      http: {{endpoint: "127.0.0.1:{http}"}}
processors:
  memory_limiter: {{check_interval: 100ms, limit_mib: 1}}
exporters:
  otlp: {{endpoint: "http://127.0.0.1:{sg}"}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [memory_limiter], exporters: [otlp]}}
"#,
        sg = sink.grpc_port
    );
    let daemon = Daemon::start(&cfg, health);
    let r = http_request(
        "POST",
        http,
        "/v1/traces",
        &[("content-type", "application/json")],
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"x"}]}]}]}"#.to_vec(),
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["retry-after"], "1");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(v["message"].as_str().unwrap().contains("soft limit"), "{v}");
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    let err = client.export(agent_spans(3, "ml")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        err.message().contains("memory_limiter"),
        "{}",
        err.message()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sink.count(Signal::Traces), 0);
    assert!(daemon.logs().contains("refusing data"), "{}", daemon.logs());
}

/// Ten times more load than the target takes: the memory limiter keeps the
/// daemon's RSS under its limit by telling senders to retry (503), and every
/// span it accepted is delivered once the load stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_times_overload_stays_under_the_memory_limit() {
    let _heavy = crate::HEAVY.lock().await;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let sink = Sink::start().await;
    // The target takes one 500-span batch per 250 ms: 2,000 spans/s.
    sink.delay_ms.store(250, Ordering::SeqCst);
    let (http, health) = (free_port(), free_port());
    let limit_mib = 160u64;
    let cfg = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
processors:
  memory_limiter: {{check_interval: 20ms, limit_mib: {limit_mib}, spike_limit_mib: 60}}
  batch: {{send_batch_size: 500, send_batch_max_size: 500, timeout: 50ms}}
exporters:
  otlp:
    endpoint: "http://127.0.0.1:{sg}"
    timeout: 30s
    sending_queue: {{num_consumers: 1, queue_size: 100000}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  shutdown_timeout: 5s
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [memory_limiter, batch], exporters: [otlp]}}
"#,
        sg = sink.grpc_port
    );
    let daemon = Daemon::start(&cfg, health);
    let base_rss = daemon.rss();
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let pid = daemon.pid();
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some(rss) = crate::common::rss_of(pid) {
                    peak.fetch_max(rss, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let started = std::time::Instant::now();
    let mut senders = Vec::new();
    for s in 0..4 {
        let (stop, accepted, refused) = (stop.clone(), accepted.clone(), refused.clone());
        senders.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let tag = format!("O{s}x{i}");
                let r = post_spans(http, 1000, &tag).await;
                match r.status {
                    200 => accepted.lock().unwrap().push(tag),
                    503 => {
                        refused.fetch_add(1, Ordering::SeqCst);
                        assert!(r.headers.contains_key("retry-after"));
                    }
                    other => panic!("unexpected status {other}"),
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    sampler.join().unwrap();
    let accepted = accepted.lock().unwrap().clone();
    let refused = refused.load(Ordering::SeqCst);
    let offered_per_s = (accepted.len() + refused) as f64 * 1000.0 / elapsed;
    let peak = peak.load(Ordering::SeqCst);
    eprintln!(
        "overload: offered {offered_per_s:.0} spans/s against 2000/s, {} accepted, {refused} refused, RSS {} → peak {} MiB (limit {limit_mib})",
        accepted.len(),
        base_rss >> 20,
        peak >> 20
    );
    assert!(
        offered_per_s >= 10.0 * 2000.0,
        "the load must be 10× the target's rate: {offered_per_s:.0}/s"
    );
    assert!(refused > 0, "senders were told to retry");
    assert!(
        peak < limit_mib * 1024 * 1024,
        "peak RSS {} MiB over the {limit_mib} MiB limit",
        peak >> 20
    );
    sink.delay_ms.store(0, Ordering::SeqCst);
    let expected = accepted.len() * 1000;
    sink.wait_for(Signal::Traces, expected, Duration::from_secs(60))
        .await;
    assert_eq!(
        crate::missing_and_duplicates(&sink, &accepted, 1000),
        (0, 0),
        "every accepted span exactly once"
    );
}
