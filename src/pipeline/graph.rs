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

use super::fanout::PipelineFanout;
use crate::component::{
    Authenticators, ComponentId, Connector, DynExport, ExporterContext, ExtensionContext, Health,
    ProcessorContext, ReceiverContext, StageTask,
};
use crate::config::Config;
use crate::consumer::{BoxConsumer, Consumers, StartError};
use crate::queue::{self, ExporterFanout, RunningExporter};
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

/// A processor's own task, kept for shutdown.
struct StageRun {
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
    batches: Vec<StageRun>,
    exporters: Vec<RunningExporterParts>,
    stop: CancellationToken,
    aux_cancel: CancellationToken,
    aux_tasks: Vec<JoinHandle<()>>,
}

struct RunningExporterParts {
    shared: Arc<queue::Shared>,
    workers: Vec<JoinHandle<()>>,
    export: Option<Arc<dyn DynExport>>,
}

/// The exporters and connectors of a config, built and running.
struct Sinks {
    /// Every exporter's (and connector's exporter side's) input, by id.
    inputs: BTreeMap<ComponentId, RunningExporter>,
    /// Running connectors, by id, for their receiver side.
    connectors: BTreeMap<ComponentId, Arc<dyn Connector>>,
}

/// Tasks and tokens of the service while it starts.
struct Starting {
    health: Health,
    /// Client authenticators of the started extensions.
    auth: Authenticators,
    stop: CancellationToken,
    aux_cancel: CancellationToken,
    aux_tasks: Vec<JoinHandle<()>>,
}

impl Service {
    /// Builds and starts everything in `cfg`.
    pub async fn start(cfg: &Config) -> Result<Service, StartError> {
        let handle = crate::telemetry::init_metrics();
        let mut st = Starting {
            health: Health::default(),
            auth: Authenticators::default(),
            stop: CancellationToken::new(),
            aux_cancel: CancellationToken::new(),
            aux_tasks: Vec::new(),
        };
        start_extensions(cfg, &mut st).await?;
        if let Some(t) = crate::telemetry::serve_metrics(
            &cfg.service.telemetry.metrics,
            handle,
            st.aux_cancel.clone(),
        )
        .await?
        {
            st.aux_tasks.push(t);
        }
        let sinks = build_sinks(cfg, &st.auth, &st.stop)?;
        let (entries, batches) = build_pipelines(cfg, &sinks, &st.stop)?;
        let receivers_cancel = CancellationToken::new();
        let connectors_cancel = CancellationToken::new();
        let started = start_sources(
            cfg,
            &sinks,
            &entries,
            &receivers_cancel,
            &connectors_cancel,
            &st,
        )
        .await;
        let (receiver_tasks, connector_tasks) = match started {
            Ok(t) => t,
            Err(e) => {
                // Stop what already runs before reporting the failure.
                receivers_cancel.cancel();
                connectors_cancel.cancel();
                st.aux_cancel.cancel();
                st.stop.cancel();
                return Err(e);
            }
        };
        drop(entries);

        st.health.set_ready();
        tracing::info!(
            pipelines = cfg.service.pipelines.len(),
            exporters = sinks.inputs.len(),
            "spanwire is running"
        );
        Ok(Service {
            health: st.health,
            receivers_cancel,
            receiver_tasks,
            connectors_cancel,
            connector_tasks,
            batches,
            exporters: sinks
                .inputs
                .into_values()
                .map(|e| RunningExporterParts {
                    shared: e.shared,
                    workers: e.workers,
                    export: e.export,
                })
                .collect(),
            stop: st.stop,
            aux_cancel: st.aux_cancel,
            aux_tasks: st.aux_tasks,
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
        let (upstream, downstream): (Vec<StageRun>, Vec<StageRun>) =
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
            if let Some(export) = &e.export {
                export.shutdown().await;
            }
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

/// Extensions first: health answers while the rest starts.
async fn start_extensions(cfg: &Config, st: &mut Starting) -> Result<(), StartError> {
    for id in &cfg.service.extensions {
        if let Some(def) = cfg.extension(id) {
            let ctx = ExtensionContext {
                id,
                health: st.health.clone(),
                cancel: st.aux_cancel.clone(),
            };
            let started = def.config.start(ctx).await?;
            st.aux_tasks.extend(started.tasks);
            if let Some(auth) = started.auth {
                st.auth.insert(id.clone(), auth);
            }
        }
    }
    Ok(())
}

/// Exporters: one instance (and queue) per id, shared by the pipelines that
/// list it; a connector's exporter side has no queue.
fn build_sinks(
    cfg: &Config,
    auth: &Authenticators,
    stop: &CancellationToken,
) -> Result<Sinks, StartError> {
    let mut sinks = Sinks {
        inputs: BTreeMap::new(),
        connectors: BTreeMap::new(),
    };
    for p in &cfg.service.pipelines {
        for id in &p.exporters {
            if sinks.inputs.contains_key(id) {
                continue;
            }
            let name = id.to_string();
            if let Some(def) = cfg.connector(id) {
                let connector = def.config.build(id)?;
                sinks.connectors.insert(id.clone(), connector.clone());
                sinks
                    .inputs
                    .insert(id.clone(), queue::connector_input(&name, connector));
                continue;
            }
            let Some(def) = cfg.exporter(id) else {
                continue;
            };
            let built = def.config.build(ExporterContext { id, auth })?;
            let running =
                queue::spawn(&name, built.export, &built.queue, built.retry, stop.clone())
                    .map_err(|e| StartError::component(&name, e.to_string()))?;
            sinks.inputs.insert(id.clone(), running);
        }
    }
    Ok(sinks)
}

/// Pipelines, built back to front; processors are per pipeline. Returns each
/// pipeline's entry and the processors' own tasks.
fn build_pipelines(
    cfg: &Config,
    sinks: &Sinks,
    stop: &CancellationToken,
) -> Result<(Vec<BoxConsumer>, Vec<StageRun>), StartError> {
    let mut batches = Vec::new();
    let mut entries = Vec::new();
    for p in &cfg.service.pipelines {
        let inputs = p
            .exporters
            .iter()
            .filter_map(|id| sinks.inputs.get(id))
            .map(|e| e.input.clone())
            .collect();
        let mut next: BoxConsumer = Arc::new(ExporterFanout::new(inputs));
        let feeds_connector = p.exporters.iter().any(|e| cfg.connector(e).is_some());
        for id in p.processors.iter().rev() {
            let Some(def) = cfg.processor(id) else {
                continue;
            };
            let name = format!("{id} in {}", p.id);
            let stage = def.config.build(ProcessorContext {
                id,
                name: name.clone(),
                labels: [
                    ("processor", id.to_string()),
                    ("pipeline", p.id.to_string()),
                ],
                next,
                stop: stop.clone(),
            })?;
            if let Some(StageTask { task, pending }) = stage.task {
                batches.push(StageRun {
                    done: false,
                    feeds_connector,
                    name,
                    signal: p.id.signal,
                    task,
                    pending,
                });
            }
            next = stage.input;
        }
        entries.push(next);
    }
    Ok((entries, batches))
}

/// The consumers a receiver (or a connector's receiver side) feeds: every
/// pipeline of each signal that lists it.
fn consumers_of(cfg: &Config, entries: &[BoxConsumer], rid: &ComponentId) -> Consumers {
    let mut consumers = Consumers::default();
    for signal in Signal::ALL {
        let targets: Vec<BoxConsumer> = cfg
            .service
            .pipelines
            .iter()
            .zip(entries)
            .filter(|(p, _)| p.id.signal == signal && p.receivers.contains(rid))
            .map(|(_, c)| c.clone())
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
    consumers
}

/// Receivers and connectors' receiver sides last, each feeding every
/// pipeline that lists it. Returns the receiver tasks (watched: one that
/// ends before shutdown turns health to failed) and the connector tasks.
async fn start_sources(
    cfg: &Config,
    sinks: &Sinks,
    entries: &[BoxConsumer],
    receivers_cancel: &CancellationToken,
    connectors_cancel: &CancellationToken,
    st: &Starting,
) -> Result<(Vec<JoinHandle<()>>, Vec<JoinHandle<()>>), StartError> {
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
        let consumers = consumers_of(cfg, entries, rid);
        if let Some(def) = cfg.receiver(rid) {
            let ctx = ReceiverContext {
                id: rid,
                consumers,
                cancel: receivers_cancel.clone(),
                stop: st.stop.clone(),
            };
            for task in def.config.start(ctx).await? {
                let (health, cancel, id) =
                    (st.health.clone(), receivers_cancel.clone(), rid.to_string());
                receiver_tasks.push(tokio::spawn(async move {
                    let _ = task.await;
                    if !cancel.is_cancelled() {
                        tracing::error!(receiver = %id, "receiver stopped unexpectedly; health now reports failure");
                        health.set_failed();
                    }
                }));
            }
        } else if let Some(conn) = sinks.connectors.get(rid) {
            connector_tasks.extend(conn.start(consumers, connectors_cancel.clone()));
        }
    }
    Ok((receiver_tasks, connector_tasks))
}
