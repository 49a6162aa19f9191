//! Building, running and stopping the component graph.
//!
//! Start order: extensions and self-metrics → exporters (queues and workers)
//! → pipelines from their exporters back to their first processor →
//! receivers (listeners bound last, so nothing is accepted before the path
//! behind it exists). Shutdown runs the other way: receivers stop accepting,
//! batchers flush, exporter queues drain, all within one deadline; whatever
//! is still held at the deadline is counted and logged.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::PipelineFanout;
use crate::consumer::{BoxConsumer, Consumers, StartError};
use crate::config::{ComponentId, Config};
use crate::exporters::queue::{self, ExporterFanout, RunningExporter};
use crate::extensions::Health;
use crate::processors::attributes::{AttributesProcessor, ResourceProcessor};
use crate::processors::batch::{self, RunningBatch};
use crate::processors::memory_limiter::MemoryLimiter;
use crate::processors::{ProcessorConfig, ProcessorStage};
use crate::signal::Signal;

/// What shutdown could not deliver.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ShutdownReport {
    /// `(component, signal, items)` still held at the deadline and dropped.
    pub lost: Vec<(String, Signal, u64)>,
    /// Whether everything drained before the deadline.
    pub drained: bool,
    /// `(exporter, items)` left in disk queues, to be sent by the next run.
    pub kept_on_disk: Vec<(String, u64)>,
}

struct BatchRun {
    /// The task has finished (and must not be polled again).
    done: bool,
    /// In a pipeline that ends in a connector: drained before connectors
    /// emit their last snapshot.
    feeds_connector: bool,
    name: String,
    signal: Signal,
    task: JoinHandle<()>,
    pending: Arc<std::sync::atomic::AtomicU64>,
}

/// The running graph.
pub struct Service {
    health: Health,
    receivers_cancel: CancellationToken,
    receiver_tasks: Vec<JoinHandle<()>>,
    connectors_cancel: CancellationToken,
    connector_tasks: Vec<JoinHandle<()>>,
    batches: Vec<BatchRun>,
    exporters: Vec<RunningExporterParts>,
    stop: CancellationToken,
    aux_cancel: CancellationToken,
    aux_tasks: Vec<JoinHandle<()>>,
}

struct RunningExporterParts {
    shared: Arc<queue::Shared>,
    workers: Vec<JoinHandle<()>>,
    export: Arc<dyn crate::exporters::Export>,
}

impl Service {
    /// Builds and starts everything in `cfg`.
    pub async fn start(cfg: &Config) -> Result<Service, StartError> {
        let handle = crate::telemetry::init_metrics();
        let health = Health::default();
        let aux_cancel = CancellationToken::new();
        let stop = CancellationToken::new();
        let mut aux_tasks = Vec::new();

        for id in &cfg.service.extensions {
            if let Some(def) = cfg.extension(id) {
                aux_tasks.extend(def.config.start(&health, aux_cancel.clone()).await?);
            }
        }
        let m = &cfg.service.telemetry.metrics;
        if !m.address.is_empty() && m.level != crate::config::MetricsLevel::None {
            let listener = crate::net::bind(&m.address).await?;
            tracing::info!(endpoint = %m.address, "self-metrics at /metrics");
            aux_tasks.push(crate::net::serve_http(
                listener,
                None,
                move |req| {
                    let handle = handle.clone();
                    async move {
                        let (status, body) = if req.uri().path() == "/metrics" {
                            (http::StatusCode::OK, crate::telemetry::render(&handle))
                        } else {
                            (http::StatusCode::NOT_FOUND, "see /metrics\n".to_string())
                        };
                        let mut r = http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(body),
                        ));
                        *r.status_mut() = status;
                        r.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static(
                                "text/plain; version=0.0.4; charset=utf-8",
                            ),
                        );
                        r
                    }
                },
                aux_cancel.clone(),
                Duration::from_secs(1),
            ));
        }

        // Exporters: one instance (and queue) per id, shared by the pipelines that list it.
        let mut exporters: BTreeMap<ComponentId, RunningExporter> = BTreeMap::new();
        let mut connectors: BTreeMap<
            ComponentId,
            Arc<crate::connectors::agentmetrics::AgentMetrics>,
        > = BTreeMap::new();
        for p in &cfg.service.pipelines {
            for id in &p.exporters {
                if exporters.contains_key(id) {
                    continue;
                }
                if let Some(def) = cfg.connector(id) {
                    // A connector's input side: an exporter without a queue
                    // (aggregating is quick and never fails).
                    let crate::connectors::ConnectorConfig::AgentMetrics(c) = &def.config;
                    let conn = Arc::new(crate::connectors::agentmetrics::AgentMetrics::new(
                        c.clone(),
                        &id.to_string(),
                    ));
                    connectors.insert(id.clone(), conn.clone());
                    let running = queue::spawn(
                        &id.to_string(),
                        Arc::new(crate::connectors::agentmetrics::AgentMetricsInput(conn)),
                        &crate::config::types::QueueConfig {
                            enabled: false,
                            ..Default::default()
                        },
                        crate::config::types::RetryConfig {
                            enabled: false,
                            ..Default::default()
                        },
                        stop.clone(),
                    )
                    .map_err(|e| StartError::component(&id.to_string(), e.to_string()))?;
                    exporters.insert(id.clone(), running);
                    continue;
                }
                let Some(def) = cfg.exporter(id) else {
                    continue;
                };
                let built = def.config.build(id)?;
                let running = queue::spawn(
                    &id.to_string(),
                    built.export,
                    &built.queue,
                    built.retry,
                    stop.clone(),
                )
                .map_err(|e| StartError::component(&id.to_string(), e.to_string()))?;
                exporters.insert(id.clone(), running);
            }
        }

        // Pipelines, built back to front; processors are per pipeline.
        let mut batches = Vec::new();
        let mut entries: Vec<(crate::config::PipelineId, BoxConsumer)> = Vec::new();
        for p in &cfg.service.pipelines {
            let inputs = p
                .exporters
                .iter()
                .filter_map(|id| exporters.get(id))
                .map(|e| e.input.clone())
                .collect();
            let mut next: BoxConsumer = Arc::new(ExporterFanout::new(inputs));
            for id in p.processors.iter().rev() {
                let Some(def) = cfg.processor(id) else {
                    continue;
                };
                let name = format!("{id} in {}", p.id);
                let labels = [
                    ("processor", id.to_string()),
                    ("pipeline", p.id.to_string()),
                ];
                next = match &def.config {
                    ProcessorConfig::Batch(c) => {
                        let RunningBatch {
                            input,
                            task,
                            pending,
                        } = batch::spawn(c.clone(), next, name.clone(), &labels, stop.clone());
                        batches.push(BatchRun {
                            done: false,
                            feeds_connector: p.exporters.iter().any(|e| cfg.connector(e).is_some()),
                            name,
                            signal: p.id.signal,
                            task,
                            pending,
                        });
                        input
                    }
                    ProcessorConfig::MemoryLimiter(c) => Arc::new(ProcessorStage::new(
                        Arc::new(MemoryLimiter::start(c, name)),
                        next,
                        &labels,
                    )),
                    ProcessorConfig::Resource(c) => Arc::new(ProcessorStage::new(
                        Arc::new(ResourceProcessor::new(c)),
                        next,
                        &labels,
                    )),
                    ProcessorConfig::Attributes(c) => Arc::new(ProcessorStage::new(
                        Arc::new(AttributesProcessor::new(c)),
                        next,
                        &labels,
                    )),
                    ProcessorConfig::Limits(c) => Arc::new(ProcessorStage::new(
                        Arc::new(crate::processors::limits::Limits::new(c, &labels)),
                        next,
                        &labels,
                    )),
                };
            }
            entries.push((p.id.clone(), next));
        }

        // Receivers last: each feeds every pipeline that lists it.
        let receivers_cancel = CancellationToken::new();
        let connectors_cancel = CancellationToken::new();
        let mut receiver_tasks = Vec::new();
        let mut connector_tasks = Vec::new();
        let mut receiver_ids: Vec<&ComponentId> = Vec::new();
        for p in &cfg.service.pipelines {
            for r in &p.receivers {
                if !receiver_ids.contains(&r) {
                    receiver_ids.push(r);
                }
            }
        }
        for rid in receiver_ids {
            let mut consumers = Consumers::default();
            for signal in Signal::ALL {
                let targets: Vec<BoxConsumer> = cfg
                    .service
                    .pipelines
                    .iter()
                    .zip(&entries)
                    .filter(|(p, _)| p.id.signal == signal && p.receivers.contains(rid))
                    .map(|(_, (_, c))| c.clone())
                    .collect();
                let consumer: Option<BoxConsumer> = match targets.len() {
                    0 => None,
                    1 => targets.into_iter().next(),
                    _ => Some(Arc::new(PipelineFanout::new(targets))),
                };
                match signal {
                    Signal::Traces => consumers.traces = consumer,
                    Signal::Metrics => consumers.metrics = consumer,
                    Signal::Logs => consumers.logs = consumer,
                }
            }
            let started = match (cfg.receiver(rid), connectors.get(rid)) {
                (Some(def), _) => {
                    def.config
                        .start(rid, consumers, receivers_cancel.clone())
                        .await
                }
                (None, Some(conn)) => match consumers.metrics {
                    Some(next) => {
                        connector_tasks.push(crate::connectors::agentmetrics::start_emitter(
                            conn.clone(),
                            next,
                            connectors_cancel.clone(),
                        ));
                        Ok(Vec::new())
                    }
                    None => Ok(Vec::new()),
                },
                (None, None) => continue,
            };
            let tasks = match started {
                Ok(t) => t,
                Err(e) => {
                    // Stop what already runs before reporting the failure.
                    receivers_cancel.cancel();
                    connectors_cancel.cancel();
                    aux_cancel.cancel();
                    stop.cancel();
                    return Err(e);
                }
            };
            // A receiver that ends before shutdown leaves the service incomplete: say so in health.
            for task in tasks {
                let (health, cancel, id) =
                    (health.clone(), receivers_cancel.clone(), rid.to_string());
                receiver_tasks.push(tokio::spawn(async move {
                    let _ = task.await;
                    if !cancel.is_cancelled() {
                        tracing::error!(receiver = %id, "receiver stopped unexpectedly; health now reports failure");
                        health.set_failed();
                    }
                }));
            }
        }
        drop(entries);

        health.set_ready();
        tracing::info!(
            pipelines = cfg.service.pipelines.len(),
            exporters = exporters.len(),
            "spanwire is running"
        );
        Ok(Service {
            health,
            receivers_cancel,
            receiver_tasks,
            connectors_cancel,
            connector_tasks,
            batches,
            exporters: exporters
                .into_values()
                .map(|e| RunningExporterParts {
                    shared: e.shared,
                    workers: e.workers,
                    export: e.export,
                })
                .collect(),
            stop,
            aux_cancel,
            aux_tasks,
        })
    }

    /// The health state (for embedding).
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Stops accepting, drains processors and queues within `timeout`, and
    /// reports (and logs) whatever could not be delivered by then.
    pub async fn shutdown(self, timeout: Duration) -> ShutdownReport {
        let deadline = Instant::now() + timeout;
        self.health.set_stopping();
        tracing::info!(
            timeout_s = timeout.as_secs_f64(),
            "shutting down: no longer accepting data, draining"
        );
        self.receivers_cancel.cancel();
        let mut drained = true;
        for t in self.receiver_tasks {
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                drained = false;
            }
        }
        // Pipelines that end in a connector drain first, so the connector's
        // last snapshot holds everything; then connectors emit and stop.
        let (upstream, downstream): (Vec<BatchRun>, Vec<BatchRun>) =
            self.batches.into_iter().partition(|b| b.feeds_connector);
        let mut batches = Vec::new();
        for mut b in upstream {
            if drained && tokio::time::timeout_at(deadline, &mut b.task).await.is_ok() {
                b.done = true;
            } else {
                drained = false;
            }
            batches.push(b);
        }
        self.connectors_cancel.cancel();
        for t in self.connector_tasks {
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                drained = false;
            }
        }
        batches.extend(downstream);
        let mut batch_tasks = Vec::new();
        for b in batches {
            if b.done {
                batch_tasks.push((b.name, b.signal, None, b.pending));
                continue;
            }
            let mut task = b.task;
            // A finished task must not be polled again, so keep only unfinished ones.
            let unfinished = if drained {
                match tokio::time::timeout_at(deadline, &mut task).await {
                    Ok(_) => None,
                    Err(_) => {
                        drained = false;
                        Some(task)
                    }
                }
            } else {
                Some(task)
            };
            batch_tasks.push((b.name, b.signal, unfinished, b.pending));
        }
        let mut exporter_parts = Vec::new();
        for mut e in self.exporters {
            let mut unfinished = Vec::new();
            for mut w in std::mem::take(&mut e.workers) {
                if drained && tokio::time::timeout_at(deadline, &mut w).await.is_ok() {
                    continue;
                }
                drained = false;
                unfinished.push(w);
            }
            e.workers = unfinished;
            exporter_parts.push(e);
        }
        if !drained {
            // Deadline: make retry loops and batchers give up, then count what is left.
            self.stop.cancel();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut report = ShutdownReport {
            lost: Vec::new(),
            drained,
            kept_on_disk: Vec::new(),
        };
        for (name, signal, task, pending) in batch_tasks {
            if let Some(task) = task {
                let _ = tokio::time::timeout(Duration::from_millis(200), task).await;
            }
            let n = pending.load(Ordering::Relaxed);
            if n > 0 {
                report.lost.push((format!("processor {name}"), signal, n));
            }
        }
        for e in exporter_parts {
            for (signal, n) in e.shared.outstanding() {
                report
                    .lost
                    .push((format!("exporter {}", e.shared.name()), signal, n));
            }
            for w in e.workers {
                w.abort();
            }
            if let Some((n, dir)) = e.shared.kept_on_disk() {
                if n > 0 {
                    tracing::warn!(exporter = %e.shared.name(), items = n, queue = %dir,
                        "left in the disk queue; sent when spanwire next starts");
                    report.kept_on_disk.push((e.shared.name().to_string(), n));
                }
            }
            e.export.shutdown().await;
        }
        for (component, signal, n) in &report.lost {
            tracing::error!(%component, %signal, items = n, "still queued at the shutdown deadline; dropped");
        }
        if report.lost.is_empty() {
            tracing::info!("shutdown complete; nothing was left queued");
        }
        self.aux_cancel.cancel();
        for t in self.aux_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        report
    }
}
