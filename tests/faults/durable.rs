//! `wait_for_delivery: durable`: the receiver answers once a request is in
//! its write-ahead log, and every request answered that way is delivered
//! through an outage and a `kill -9`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{free_port, http_request, metric, Daemon, Sink};
use crate::missing_and_duplicates;
use crate::post_spans_raw;
use spanwire::signal::Signal;

const SPANS: usize = 40;
/// What the pipeline below holds in memory at most, in spans: the batch
/// being filled, `queue_size` batches and `num_consumers` in flight, of
/// `send_batch_max_size` each. A crash can send this much twice.
const IN_MEMORY_BOUND: usize = (1 + 20 + 4) * 400;

struct Ports {
    http: u16,
    health: u16,
    metrics: u16,
}

/// otlp/http (durable) → batch → otlp (gRPC) with a memory queue only.
fn config(p: &Ports, sink_grpc: u16, dir: &Path) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}", wait_for_delivery: durable}}
    wal: {{directory: "{dir}"}}
processors:
  batch: {{send_batch_size: 200, send_batch_max_size: 400, timeout: 50ms}}
exporters:
  otlp:
    endpoint: "http://127.0.0.1:{sink_grpc}"
    timeout: 2s
    retry_on_failure: {{initial_interval: 100ms, max_interval: 500ms, max_elapsed_time: 0s}}
    sending_queue: {{num_consumers: 4, queue_size: 20}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  shutdown_timeout: 2s
  telemetry: {{metrics: {{address: "127.0.0.1:{metrics}"}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}
"#,
        http = p.http,
        health = p.health,
        metrics = p.metrics,
        dir = dir.display(),
    )
}

/// `n` senders posting until the daemon dies; the tags of the requests
/// answered 200.
fn senders(
    n: usize,
    http: u16,
    prefix: &str,
) -> (Arc<Mutex<Vec<String>>>, Vec<tokio::task::JoinHandle<()>>) {
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let tasks = (0..n)
        .map(|s| {
            let (accepted, prefix) = (accepted.clone(), prefix.to_string());
            tokio::spawn(async move {
                for i in 0.. {
                    let tag = format!("{prefix}{s}x{i}");
                    match tokio::time::timeout(
                        Duration::from_secs(5),
                        post_spans_raw(http, SPANS, &tag),
                    )
                    .await
                    {
                        Ok(Some(200)) => accepted.lock().unwrap().push(tag),
                        // Pushed back while the target is down: not owed.
                        Ok(Some(503)) => tokio::time::sleep(Duration::from_millis(50)).await,
                        Ok(Some(other)) => panic!("status {other}"),
                        // The daemon died mid-request: not acknowledged, so not owed.
                        Ok(None) | Err(_) => break,
                    }
                }
            })
        })
        .collect();
    (accepted, tasks)
}

/// A durable daemon in front of a sink, its log in a directory of its own.
struct Run {
    wal: tempfile::TempDir,
    sink: Sink,
    p: Ports,
    cfg: String,
    daemon: Daemon,
}

impl Run {
    async fn start() -> Run {
        let wal = tempfile::tempdir().unwrap();
        let sink = Sink::start_on(0, 0, Arc::new(Mutex::new(Vec::new()))).await;
        let p = Ports {
            http: free_port(),
            health: free_port(),
            metrics: free_port(),
        };
        let cfg = config(&p, sink.grpc_port, wal.path());
        let daemon = Daemon::start(&cfg, p.health);
        Run {
            wal,
            sink,
            p,
            cfg,
            daemon,
        }
    }
}

async fn scrape(port: u16) -> String {
    let r = http_request("GET", port, "/metrics", &[], Vec::new()).await;
    String::from_utf8_lossy(&r.body).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_then_kill_9_delivers_every_acknowledged_span() {
    let Run {
        wal,
        sink,
        p,
        cfg,
        mut daemon,
    } = Run::start().await;
    let (accepted, tasks) = senders(8, p.http, "D");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_outage = sink.count(Signal::Traces);
    assert!(before_outage > 0, "delivering before the outage");
    sink.refuse.store(true, Ordering::SeqCst); // the target goes down
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = scrape(p.metrics).await;
    let fsyncs = metric(&m, "spanwire_receiver_wal_fsyncs_total", &[]);
    let appends = metric(&m, "spanwire_receiver_wal_appends_total", &[]);
    let logged = metric(&m, "spanwire_receiver_wal_requests", &[]);
    daemon.kill_hard();
    for t in tasks {
        t.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    // Group commit: 8 senders share flushes.
    assert!(
        fsyncs > 0.0 && fsyncs < appends,
        "{fsyncs} fsyncs for {appends} appends"
    );
    assert!(logged > 0.0, "the outage backlog is in the log");
    let delivered_before = sink.count(Signal::Traces);

    sink.refuse.store(false, Ordering::SeqCst);
    let daemon = Daemon::start(&cfg, p.health);
    let expected = accepted.len() * SPANS;
    sink.wait_for(Signal::Traces, expected, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (missing, dup) = missing_and_duplicates(&sink, &accepted, SPANS);
    assert_eq!(missing, 0, "of {expected}:\n{}", daemon.logs());
    // Everything delivered before the outage was marked done long before the
    // crash; what the outage held was never delivered: nothing comes twice.
    assert_eq!(dup, 0, "{}", daemon.logs());
    assert!(
        daemon
            .logs()
            .contains("replaying requests accepted by a previous run"),
        "{}",
        daemon.logs()
    );
    let m = scrape(p.metrics).await;
    let replayed = metric(&m, "spanwire_receiver_wal_replayed_items_total", &[]);
    // Every acknowledged span not yet delivered, plus at most the one
    // request per sender that was logged but not yet answered at the crash.
    let owed = expected - delivered_before;
    assert!(
        replayed as usize >= owed && replayed as usize <= owed + 8 * SPANS,
        "{replayed} replayed, {owed} owed"
    );
    assert!(
        crate::common::wait_until(Duration::from_secs(10), || {
            std::fs::read_dir(wal.path().join("otlp"))
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
                        .count()
                        <= 1
                })
                .unwrap_or(false)
        })
        .await,
        "delivered segments leave the log"
    );
    eprintln!(
        "durable: {} spans acknowledged, {delivered_before} delivered before the crash, {replayed} replayed, {fsyncs} fsyncs for {appends} appends",
        expected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_delivering_duplicates_at_most_what_was_in_flight() {
    let Run {
        wal: _wal,
        sink,
        p,
        cfg,
        mut daemon,
    } = Run::start().await;
    let (accepted, tasks) = senders(8, p.http, "F");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    daemon.kill_hard();
    for t in tasks {
        t.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    let before = sink.count(Signal::Traces);
    assert!(before > 0, "delivering when killed");

    let daemon = Daemon::start(&cfg, p.health);
    let expected = accepted.len() * SPANS;
    sink.wait_for(Signal::Traces, expected, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (missing, dup) = missing_and_duplicates(&sink, &accepted, SPANS);
    assert_eq!(missing, 0, "of {expected}:\n{}", daemon.logs());
    assert!(
        dup <= IN_MEMORY_BOUND,
        "{dup} duplicates, more than the pipeline holds ({IN_MEMORY_BOUND})"
    );
    eprintln!("durable, killed mid-delivery: {expected} spans acknowledged, {before} delivered before the crash, {dup} delivered twice");
}
