//! The disk-backed sending queue under faults: nothing accepted is lost.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{free_port, http_request, metric, post_spans, Daemon, Sink};
use crate::{missing_and_duplicates, post_spans_raw};
use spanwire::signal::Signal;

struct Ports {
    http: u16,
    health: u16,
    metrics: u16,
}

fn ports() -> Ports {
    Ports {
        http: free_port(),
        health: free_port(),
        metrics: free_port(),
    }
}

/// otlp/http → batch → otlp (gRPC) with a disk queue in `dir`.
fn config(p: &Ports, sink_grpc: u16, dir: &Path, extra_queue: &str, wait: bool) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}", wait_for_delivery: {wait}}}
processors:
  batch: {{send_batch_size: 200, timeout: 50ms}}
exporters:
  otlp:
    endpoint: "http://127.0.0.1:{sink_grpc}"
    timeout: 2s
    retry_on_failure: {{initial_interval: 100ms, max_interval: 1s, max_elapsed_time: 0s}}
    sending_queue: {{storage: "{dir}", num_consumers: 4, queue_size: 20{extra_queue}}}
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

async fn scrape(port: u16) -> String {
    let r = http_request("GET", port, "/metrics", &[], Vec::new()).await;
    String::from_utf8_lossy(&r.body).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_down_for_60s_under_load_loses_nothing() {
    let _heavy = crate::HEAVY.lock().await;
    let store = tempfile::tempdir().unwrap();
    let received_store = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink::start_on(0, 0, received_store.clone()).await;
    let sink_grpc = sink.grpc_port;
    let p = ports();
    let daemon = Daemon::start(&config(&p, sink_grpc, store.path(), "", false), p.health);

    // Load: 50 spans every 20 ms from one sender, for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let why = Arc::new(Mutex::new(Vec::<String>::new()));
    let load = {
        let (stop, accepted, refused, http, why) = (
            stop.clone(),
            accepted.clone(),
            refused.clone(),
            p.http,
            why.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let tag = format!("L{i}");
                // A refused request is retried, as OTLP senders do, until taken.
                loop {
                    let r = post_spans(http, 50, &tag).await;
                    if r.status == 200 {
                        accepted.lock().unwrap().push(tag);
                        break;
                    }
                    assert_eq!(r.status, 503, "only retryable refusals");
                    refused.fetch_add(1, Ordering::SeqCst);
                    {
                        let mut why = why.lock().unwrap();
                        if why.len() < 5 {
                            why.push(String::from_utf8_lossy(&r.body).to_string());
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_outage = sink.count(Signal::Traces);
    assert!(before_outage > 0, "delivering before the outage");
    drop(sink); // the target goes down
    tokio::time::sleep(Duration::from_secs(30)).await;
    let mid = scrape(p.metrics).await;
    let queued_batches = metric(&mid, "spanwire_exporter_disk_queue_batches", &[]);
    let queued_bytes = metric(&mid, "spanwire_exporter_disk_queue_bytes", &[]);
    assert!(
        queued_batches > 100.0,
        "the outage backlog is on disk: {queued_batches} batches"
    );
    assert!(queued_bytes > 1e6, "{queued_bytes} bytes on disk");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let sink = Sink::start_on(sink_grpc, 0, received_store.clone()).await; // back after 60 s
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();

    let accepted = accepted.lock().unwrap().clone();
    let expected = accepted.len() * 50;
    assert!(expected > 50_000, "load was {expected} spans");
    let got = sink
        .wait_for(Signal::Traces, expected, Duration::from_secs(120))
        .await;
    let (missing, dup) = missing_and_duplicates(&sink, &accepted, 50);
    assert_eq!(
        missing,
        0,
        "{got} of {expected} arrived:\n{}",
        daemon.logs()
    );
    // Refusals are backpressure, not loss: on an idle machine there are none,
    // but a loaded one (a debug build fsyncing every batch) may push back.
    let refused = refused.load(Ordering::SeqCst);
    // In-flight batches at the moment the target went down may be sent twice.
    assert!(dup <= 4 * 200, "{dup} duplicates");
    let after = scrape(p.metrics).await;
    assert_eq!(
        metric(&after, "spanwire_exporter_disk_queue_batches", &[]),
        0.0
    );
    eprintln!(
        "outage: {expected} spans accepted, {queued_batches} batches / {queued_bytes} bytes on disk at 30 s, {dup} duplicates, {refused} requests refused and retried {:?}",
        why.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_restart_delivers_every_acknowledged_span() {
    let store = tempfile::tempdir().unwrap();
    let received_store = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink::start_on(0, 0, received_store.clone()).await;
    // The target refuses until after the crash: everything acknowledged is on disk only.
    sink.refuse.store(true, Ordering::SeqCst);
    let p = ports();
    let cfg = config(&p, sink.grpc_port, store.path(), "", true);
    let mut daemon = Daemon::start(&cfg, p.health);
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut senders = Vec::new();
    for s in 0..4 {
        let (accepted, http) = (accepted.clone(), p.http);
        senders.push(tokio::spawn(async move {
            for i in 0.. {
                let tag = format!("K{s}x{i}");
                match tokio::time::timeout(Duration::from_secs(5), post_spans_raw(http, 40, &tag))
                    .await
                {
                    Ok(Some(200)) => accepted.lock().unwrap().push(tag),
                    Ok(Some(_)) => {}
                    // The daemon died mid-request: not acknowledged, so not owed.
                    Ok(None) | Err(_) => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    daemon.kill_hard();
    for s in senders {
        s.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() > 10,
        "{} requests acknowledged before the crash",
        accepted.len()
    );
    assert_eq!(sink.count(Signal::Traces), 0);

    sink.refuse.store(false, Ordering::SeqCst);
    let daemon = Daemon::start(&cfg, p.health);
    let expected = accepted.len() * 40;
    sink.wait_for(Signal::Traces, expected, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (missing, dup) = missing_and_duplicates(&sink, &accepted, 40);
    assert_eq!(missing, 0, "of {expected}:\n{}", daemon.logs());
    assert_eq!(
        dup, 0,
        "nothing was delivered before the crash, so nothing twice"
    );
    assert!(
        daemon
            .logs()
            .contains("resuming data queued by a previous run"),
        "{}",
        daemon.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_retrying_keeps_the_batch_on_disk_for_the_next_run() {
    let store = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.refuse.store(true, Ordering::SeqCst);
    let p = ports();
    let cfg = config(&p, sink.grpc_port, store.path(), "", false);
    let mut daemon = Daemon::start(&cfg, p.health);
    assert_eq!(post_spans(p.http, 37, "term").await.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = tokio::task::spawn_blocking(move || {
        let s = daemon.terminate(Duration::from_secs(15));
        (s, daemon)
    })
    .await
    .unwrap();
    assert!(status.0.success());
    let logs = status.1.logs();
    assert!(
        logs.contains("left in the disk queue; sent when spanwire next starts")
            && logs.contains("items=37"),
        "{logs}"
    );
    assert!(
        !logs.contains("dropped"),
        "nothing is dropped with a disk queue:\n{logs}"
    );
    assert_eq!(sink.count(Signal::Traces), 0);

    sink.refuse.store(false, Ordering::SeqCst);
    let daemon = Daemon::start(&cfg, p.health);
    assert_eq!(
        sink.wait_for(Signal::Traces, 37, Duration::from_secs(20))
            .await,
        37,
        "{}",
        daemon.logs()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.count(Signal::Traces), 37, "exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_queue_pushes_back_and_drains_when_the_target_returns() {
    let store = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.refuse.store(true, Ordering::SeqCst);
    let p = ports();
    let cfg = config(
        &p,
        sink.grpc_port,
        store.path(),
        ", max_size_mib: 1, segment_size_mib: 1",
        false,
    );
    let daemon = Daemon::start(&cfg, p.health);
    let mut accepted = Vec::new();
    let mut refusal = None;
    for i in 0..400 {
        let tag = format!("F{i}");
        let r = post_spans(p.http, 100, &tag).await;
        if r.status == 200 {
            accepted.push(tag);
        } else {
            refusal = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The batcher may take one more request before the queue's refusal reaches the receiver.
    let r = refusal.expect("1 MiB must fill up");
    assert!(r.status == 503, "{}", r.status);
    // The refusal reaches the receiver through the batcher's full input.
    assert!(String::from_utf8_lossy(&r.body).contains("full"));
    let text = scrape(p.metrics).await;
    let bytes = metric(&text, "spanwire_exporter_disk_queue_bytes", &[]);
    assert!(
        bytes > 0.8 * 1048576.0 && bytes <= 1048576.0,
        "the queue filled to its cap: {bytes}"
    );
    let on_disk: u64 = walk_size(store.path());
    assert!(
        on_disk <= 1024 * 1024 + 64 * 1024,
        "{on_disk} bytes on disk, cap 1 MiB"
    );
    sink.refuse.store(false, Ordering::SeqCst);
    let expected = accepted.len() * 100;
    sink.wait_for(Signal::Traces, expected, Duration::from_secs(30))
        .await;
    let (missing, dup) = missing_and_duplicates(&sink, &accepted, 100);
    assert_eq!((missing, dup), (0, 0), "{}", daemon.logs());
}

fn walk_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                walk_size(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}
