//! The sending queue every exporter gets: a bounded channel of batches (or,
//! with `sending_queue.storage`, a [`DiskQueue`]), `num_consumers` workers
//! draining it, and a jittered exponential retry loop that honours the
//! backend's Retry-After / RetryInfo.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use metrics::Gauge;
use rand::Rng;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub mod disk;
pub mod wal;

use self::disk::{Appended, DiskConfig, DiskQueue, DiskQueueError};
use crate::component::{Connector, DynExport, ExportError};
use crate::consumer::{AckOutcome, Acks, ConsumeError, Consumer};
use crate::convert::otlp_proto::decode_batch;
use crate::settings::types::RetryConfig;
use crate::signal::{EncodedBatch, Metadata, Payload, Signal, Telemetry};
use crate::telemetry::{gauge, SignalCounters};

/// Counters shared by an exporter's input and workers.
pub struct Shared {
    name: String,
    /// Items queued or being sent, per signal (traces, metrics, logs).
    outstanding: [AtomicU64; 3],
    queued_batches: AtomicU64,
    queue_gauge: Gauge,
    sent: SignalCounters,
    failed: SignalCounters,
    disk: Option<Arc<DiskQueue>>,
}

impl Shared {
    fn new(name: &str) -> Shared {
        let labels = [("exporter", name.to_string())];
        Shared {
            name: name.to_string(),
            outstanding: Default::default(),
            queued_batches: AtomicU64::new(0),
            queue_gauge: gauge("spanwire_exporter_queue_size", &labels),
            sent: SignalCounters::new("spanwire_exporter_sent", &labels),
            failed: SignalCounters::new("spanwire_exporter_send_failed", &labels),
            disk: None,
        }
    }

    /// Items still queued or in flight, per signal.
    pub fn outstanding(&self) -> Vec<(Signal, u64)> {
        Signal::ALL
            .iter()
            .map(|s| (*s, self.outstanding[s.index()].load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Items left in the disk queue, kept for the next run (`None` without one).
    pub fn kept_on_disk(&self) -> Option<(u64, &str)> {
        self.disk.as_ref().map(|d| (d.pending_items(), d.dir()))
    }

    /// The exporter's id.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The consumer side of an exporter.
pub struct ExporterInput {
    shared: Arc<Shared>,
    mode: Mode,
    /// Takes [`Payload::Encoded`] batches (its exporter sends OTLP protobuf
    /// as is).
    encoded: bool,
}

/// One queued batch, with this exporter's clone of its acknowledgements.
type Item = (Payload, Acks);

enum Mode {
    Queued(mpsc::Sender<Item>),
    Disk(Arc<DiskQueue>),
    Direct {
        export: Arc<dyn DynExport>,
        retry: RetryConfig,
        stop: CancellationToken,
    },
    /// A connector's exporter side: no queue, no retry.
    Connector(Arc<dyn Connector>),
}

/// Room reserved in one exporter's queue.
pub enum Slot<'a> {
    /// A slot in the in-memory queue.
    Memory(mpsc::Permit<'a, Item>),
    /// Room in the disk queue.
    Disk(disk::Reservation),
    /// No queue: the export happens in the caller's task.
    Direct,
}

impl Drop for ExporterInput {
    fn drop(&mut self) {
        if let Mode::Disk(d) = &self.mode {
            d.close();
        }
    }
}

impl ExporterInput {
    /// Whether this exporter queues on disk (and so needs the encoded record).
    pub fn is_disk(&self) -> bool {
        matches!(self.mode, Mode::Disk(_))
    }

    /// Reserves room for a batch (`record_len`: its encoded size, for a disk queue).
    pub fn try_reserve(&self, record_len: u64) -> Result<Slot<'_>, String> {
        match &self.mode {
            Mode::Queued(tx) => tx.try_reserve().map(Slot::Memory).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    format!("exporter {}: sending queue is full", self.shared.name)
                }
                mpsc::error::TrySendError::Closed(_) => {
                    format!("exporter {}: shutting down", self.shared.name)
                }
            }),
            Mode::Disk(d) => match d.reserve(record_len) {
                Ok(Some(r)) => Ok(Slot::Disk(r)),
                Ok(None) => Err(format!(
                    "exporter {}: disk queue is full (max_size_mib)",
                    self.shared.name
                )),
                Err(e) => Err(format!("exporter {}: {e}", self.shared.name)),
            },
            Mode::Direct { .. } | Mode::Connector(_) => Ok(Slot::Direct),
        }
    }

    /// Puts `data` in the reserved slot.
    pub fn send_reserved(&self, permit: mpsc::Permit<'_, Item>, data: Payload, acks: Acks) {
        let n = data.item_count() as u64;
        self.shared.outstanding[data.signal().index()].fetch_add(n, Ordering::Relaxed);
        let depth = self.shared.queued_batches.fetch_add(1, Ordering::Relaxed) + 1;
        self.shared.queue_gauge.set(depth as f64);
        permit.send((data, acks));
    }

    /// Appends `data` (encoded as `record`) to the disk queue. Its acks are
    /// settled once it is on disk: durably queued counts as delivered.
    async fn append_disk(
        &self,
        res: disk::Reservation,
        record: disk::Record,
        data: Payload,
        acks: &Acks,
    ) -> Result<(), DiskQueueError> {
        let Mode::Disk(d) = &self.mode else {
            return Err(DiskQueueError::Closed);
        };
        let d = d.clone();
        let metadata = acks.metadata().clone();
        let appended =
            tokio::task::spawn_blocking(move || d.append(res, &record, &data, &metadata))
                .await
                .map_err(|_| DiskQueueError::Closed)??;
        if appended == Appended::Dropped {
            acks.mark(AckOutcome::Dropped);
        }
        Ok(())
    }

    /// Exports `data` in the caller's task (for exporters whose queue is disabled).
    pub async fn send_direct(&self, data: Payload, acks: Acks) -> Result<(), String> {
        match &self.mode {
            Mode::Direct {
                export,
                retry,
                stop,
            } => {
                let n = data.item_count() as u64;
                let s = data.signal().index();
                self.shared.outstanding[s].fetch_add(n, Ordering::Relaxed);
                let outcome = deliver(
                    export,
                    &data,
                    acks.metadata(),
                    retry,
                    stop,
                    &self.shared,
                    false,
                )
                .await;
                self.shared.outstanding[s].fetch_sub(outcome.settled(n), Ordering::Relaxed);
                outcome.mark(&acks);
                if outcome == Outcome::Delivered {
                    Ok(())
                } else {
                    Err(format!(
                        "exporter {} could not deliver the data",
                        self.shared.name
                    ))
                }
            }
            Mode::Connector(c) => self.send_connector(c.as_ref(), data, &acks).await,
            Mode::Queued(_) | Mode::Disk(_) => Err("send_direct on a queued exporter".into()),
        }
    }
}

impl ExporterInput {
    /// Hands `data` to a connector's exporter side, counting it as sent or failed.
    async fn send_connector(
        &self,
        connector: &dyn Connector,
        data: Payload,
        acks: &Acks,
    ) -> Result<(), String> {
        let (signal, n) = (data.signal(), data.item_count());
        let Payload::Structs(data) = data else {
            return Err(format!(
                "connector {} does not take encoded batches",
                self.shared.name
            ));
        };
        match connector.consume(data).await {
            Ok(()) => {
                self.shared.sent.add(signal, n);
                Ok(())
            }
            Err(reason) => {
                self.shared.failed.add(signal, n);
                acks.mark(AckOutcome::Dropped);
                tracing::error!(connector = %self.shared.name, %signal, items = n, %reason, "connector did not take the data; dropping");
                Err(format!("connector {}: {reason}", self.shared.name))
            }
        }
    }
}

/// Fans a pipeline's output out to its exporters, all or nothing: a batch is
/// queued to every exporter only if every queue has room, so a refused
/// batch is retried without duplicating it anywhere.
pub struct ExporterFanout {
    targets: Vec<Arc<ExporterInput>>,
}

impl ExporterFanout {
    /// A fan-out over `targets`.
    pub fn new(targets: Vec<Arc<ExporterInput>>) -> ExporterFanout {
        ExporterFanout { targets }
    }

    /// Makes the batch's disk record (only when a target queues on disk)
    /// and reserves room in every target's queue, or says which one is full.
    fn reserve_all(
        &self,
        record: impl FnOnce() -> disk::Record,
    ) -> Result<(Vec<Slot<'_>>, Option<disk::Record>), String> {
        let record = self.targets.iter().any(|t| t.is_disk()).then(record);
        let len = record.as_ref().map_or(0, |r| r.len() as u64);
        let slots = self
            .targets
            .iter()
            .map(|t| t.try_reserve(len))
            .collect::<Result<_, _>>()?;
        Ok((slots, record))
    }

    /// Hands the batch to every reserved slot, each target getting it as
    /// `payload` says: disk queues first (a failed write refuses the batch
    /// before any memory queue has it), then memory queues, then each
    /// queue-less target in turn. `record` is the batch's disk record when a
    /// slot is on disk.
    async fn dispatch(
        &self,
        slots: Vec<Slot<'_>>,
        payload: impl Fn(&ExporterInput) -> Payload,
        record: Option<disk::Record>,
        acks: Acks,
    ) -> Result<(), Dispatch> {
        let mut memory = Vec::new();
        let mut direct = Vec::new();
        for (t, s) in self.targets.iter().zip(slots) {
            match s {
                Slot::Memory(p) => memory.push((t, p)),
                Slot::Direct => direct.push(t),
                Slot::Disk(res) => {
                    // Always there: the caller encodes it when any target is on disk.
                    let Some(record) = record.clone() else {
                        return Err(Dispatch::DiskWrite(format!(
                            "exporter {}: no disk record for the batch",
                            t.shared.name
                        )));
                    };
                    if let Err(e) = t.append_disk(res, record, payload(t), &acks).await {
                        tracing::error!(exporter = %t.shared.name, error = %e, "could not write to the disk queue; refusing the batch");
                        return Err(Dispatch::DiskWrite(format!(
                            "exporter {}: {e}",
                            t.shared.name
                        )));
                    }
                }
            }
        }
        for (t, p) in memory {
            t.send_reserved(p, payload(t), acks.clone());
        }
        let mut result = Ok(());
        for t in direct {
            if let Err(e) = t.send_direct(payload(t), acks.clone()).await {
                result = Err(Dispatch::Failed(e));
            }
        }
        result
    }
}

#[async_trait]
impl Consumer for ExporterFanout {
    async fn consume(&self, data: Telemetry, acks: Acks) -> Result<(), ConsumeError> {
        // A disk queue needs the encoded batch; encode it once for all of them.
        let (slots, record) = match self.reserve_all(|| disk::encode_record(&data, acks.metadata()))
        {
            Ok(r) => r,
            Err(reason) => return Err(ConsumeError::refused(reason, REFUSED_RETRY, data, acks)),
        };
        // Exporters only read the batch, so they share one copy.
        let data = Arc::new(data);
        let payload = Payload::Structs(data.clone());
        self.dispatch(slots, |_| payload.clone(), record, acks.clone())
            .await
            .map_err(|e| {
                e.into_consume_error(
                    || Arc::try_unwrap(data).unwrap_or_else(|d| (*d).clone()),
                    acks,
                )
            })
    }

    /// True when some exporter sends the bytes as they are: the others
    /// then share one decoded copy (see [`Consumer::consume_encoded`]).
    fn takes_encoded(&self) -> bool {
        self.targets.iter().any(|t| t.encoded)
    }

    /// Exporters that send OTLP as is get the bytes; the others share the
    /// batch decoded once, here, only if there are any.
    async fn consume_encoded(
        &self,
        data: EncodedBatch,
        acks: Acks,
    ) -> Result<(), ConsumeError<EncodedBatch>> {
        let structs = match self.targets.iter().all(|t| t.encoded) {
            true => None,
            false => Some(Payload::Structs(Arc::new(
                decode_batch(&data).map_err(ConsumeError::undecodable)?,
            ))),
        };
        // A disk queue writes the batch's bytes as they are, after a header.
        let (slots, record) = match self
            .reserve_all(|| disk::encoded_record(&data, acks.metadata()))
        {
            Ok(r) => r,
            Err(reason) => return Err(ConsumeError::refused(reason, REFUSED_RETRY, data, acks)),
        };
        let encoded = Payload::Encoded(data.clone());
        let payload = |t: &ExporterInput| match (&structs, t.encoded) {
            (Some(s), false) => s.clone(),
            _ => encoded.clone(),
        };
        self.dispatch(slots, payload, record, acks.clone())
            .await
            .map_err(|e| e.into_consume_error(|| data, acks))
    }
}

/// How long a sender is asked to wait when a queue is full or a disk write failed.
const REFUSED_RETRY: Duration = Duration::from_secs(1);

/// Why [`ExporterFanout::dispatch`] failed.
enum Dispatch {
    /// A disk queue could not be written: the batch is refused (retryable).
    DiskWrite(String),
    /// A queue-less exporter could not deliver it.
    Failed(String),
}

impl Dispatch {
    /// The error for the sender; `data` gives the batch back for a refusal.
    fn into_consume_error<T: std::fmt::Debug>(
        self,
        data: impl FnOnce() -> T,
        acks: Acks,
    ) -> ConsumeError<T> {
        match self {
            Dispatch::Failed(e) => ConsumeError::Failed(e),
            Dispatch::DiskWrite(reason) => {
                ConsumeError::refused(reason, REFUSED_RETRY, data(), acks)
            }
        }
    }
}

/// A running exporter.
pub struct RunningExporter {
    /// Where pipelines send.
    pub input: Arc<ExporterInput>,
    /// Counters for the shutdown report.
    pub shared: Arc<Shared>,
    /// Queue workers (none without a queue).
    pub workers: Vec<JoinHandle<()>>,
    /// The exporter, to shut down after the workers (none for a connector).
    pub export: Option<Arc<dyn DynExport>>,
}

/// A connector's exporter side as a pipeline's exporters see it: no queue,
/// no retry (it takes a batch at once or refuses it).
pub fn connector_input(name: &str, connector: Arc<dyn Connector>) -> RunningExporter {
    let shared = Arc::new(Shared::new(name));
    gauge(
        "spanwire_exporter_queue_capacity",
        &[("exporter", name.to_string())],
    )
    .set(0.0);
    RunningExporter {
        input: Arc::new(ExporterInput {
            shared: shared.clone(),
            mode: Mode::Connector(connector),
            encoded: false,
        }),
        shared,
        workers: Vec::new(),
        export: None,
    }
}

/// Starts the queue and its workers. `stop` ends retries at the shutdown deadline.
pub fn spawn(
    name: &str,
    export: Arc<dyn DynExport>,
    queue: &crate::settings::types::QueueConfig,
    retry: RetryConfig,
    stop: CancellationToken,
) -> Result<RunningExporter, DiskQueueError> {
    let mut shared = Shared::new(name);
    let labels = [("exporter", name.to_string())];
    if !queue.enabled {
        let shared = Arc::new(shared);
        gauge("spanwire_exporter_queue_capacity", &labels).set(0.0);
        return Ok(RunningExporter {
            input: Arc::new(ExporterInput {
                shared: shared.clone(),
                encoded: export.takes_encoded(),
                mode: Mode::Direct {
                    export: export.clone(),
                    retry,
                    stop,
                },
            }),
            shared,
            workers: Vec::new(),
            export: Some(export),
        });
    }
    gauge("spanwire_exporter_queue_capacity", &labels).set(queue.queue_size as f64);
    if let Some(root) = &queue.storage {
        let encoded = export.takes_encoded();
        let cfg = DiskConfig {
            read_encoded: encoded,
            ..DiskConfig::from_queue(queue, root, name)
        };
        let (disk, _) = DiskQueue::open(cfg, name)?;
        if queue.fsync == crate::settings::types::FsyncPolicy::Interval {
            disk.spawn_syncer(queue.fsync_interval, stop.clone());
        }
        shared.disk = Some(disk.clone());
        let shared = Arc::new(shared);
        let workers = (0..queue.num_consumers)
            .map(|_| {
                let (disk, export, shared, retry, stop) = (
                    disk.clone(),
                    export.clone(),
                    shared.clone(),
                    retry.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    while let Some(entry) = disk.next(&stop).await {
                        let outcome = deliver(
                            &export,
                            &entry.data,
                            &entry.metadata,
                            &retry,
                            &stop,
                            &shared,
                            true,
                        )
                        .await;
                        // A batch kept at shutdown stays queued for the next run.
                        if outcome != Outcome::Kept {
                            disk.done(entry.seq);
                        }
                    }
                })
            })
            .collect();
        return Ok(RunningExporter {
            input: Arc::new(ExporterInput {
                shared: shared.clone(),
                mode: Mode::Disk(disk),
                encoded,
            }),
            shared,
            workers,
            export: Some(export),
        });
    }
    let shared = Arc::new(shared);
    let encoded = export.takes_encoded();
    let (tx, rx) = mpsc::channel::<Item>(queue.queue_size);
    let rx = Arc::new(Mutex::new(rx));
    let workers = (0..queue.num_consumers)
        .map(|_| {
            let rx = rx.clone();
            let export = export.clone();
            let shared = shared.clone();
            let retry = retry.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    let next = {
                        let mut rx = rx.lock().await;
                        tokio::select! {
                            v = rx.recv() => v,
                            _ = stop.cancelled() => None,
                        }
                    };
                    let Some((data, acks)) = next else { break };
                    let depth = shared
                        .queued_batches
                        .fetch_sub(1, Ordering::Relaxed)
                        .saturating_sub(1);
                    shared.queue_gauge.set(depth as f64);
                    let n = data.item_count() as u64;
                    let outcome = deliver(
                        &export,
                        &data,
                        acks.metadata(),
                        &retry,
                        &stop,
                        &shared,
                        false,
                    )
                    .await;
                    shared.outstanding[data.signal().index()]
                        .fetch_sub(outcome.settled(n), Ordering::Relaxed);
                    outcome.mark(&acks);
                }
            })
        })
        .collect();
    Ok(RunningExporter {
        input: Arc::new(ExporterInput {
            shared: shared.clone(),
            mode: Mode::Queued(tx),
            encoded,
        }),
        shared,
        workers,
        export: Some(export),
    })
}

/// How one batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Sent (possibly with items the backend rejected, which are counted).
    Delivered,
    /// Dropped for good: permanent error or retries exhausted (counted, logged).
    Failed,
    /// Given up at the shutdown deadline with this many items undelivered;
    /// they stay counted as outstanding for the shutdown report.
    Abandoned(u64),
    /// Stopped at the shutdown deadline; the batch stays in the disk queue.
    Kept,
}

impl Outcome {
    /// Marks the batch's acknowledgements (this exporter's clone is dropped next).
    fn mark(self, acks: &Acks) {
        match self {
            Outcome::Delivered | Outcome::Kept => {}
            Outcome::Failed => acks.mark(AckOutcome::Dropped),
            Outcome::Abandoned(_) => acks.mark(AckOutcome::Abandoned),
        }
    }

    /// Items of an `n`-item batch no longer outstanding.
    fn settled(self, n: u64) -> u64 {
        match self {
            Outcome::Abandoned(lost) => n.saturating_sub(lost),
            _ => n,
        }
    }
}

/// Sends one batch, retrying as configured. A `durable` batch (from a disk
/// queue) is kept, not dropped, when shutdown stops the retries.
#[allow(clippy::too_many_arguments)]
async fn deliver(
    export: &Arc<dyn DynExport>,
    data: &Payload,
    metadata: &Metadata,
    retry: &RetryConfig,
    stop: &CancellationToken,
    shared: &Shared,
    durable: bool,
) -> Outcome {
    let signal = data.signal();
    let n = data.item_count();
    let started = Instant::now();
    let mut interval = retry.initial_interval;
    let mut delivery = export.clone().begin(data.clone(), metadata.clone());
    // Counts a batch given up: what the exporter says is still pending is lost,
    // the rest was delivered by earlier attempts.
    let give_up = |delivery: &dyn crate::component::Delivery| -> usize {
        let lost = delivery.pending().unwrap_or(n).min(n);
        shared.sent.add(signal, n - lost);
        shared.failed.add(signal, lost);
        lost
    };
    loop {
        match delivery.attempt().await {
            Ok(ok) => {
                let rejected = (ok.rejected as usize).min(n);
                shared.sent.add(signal, n - rejected);
                if rejected > 0 {
                    shared.failed.add(signal, rejected);
                    tracing::warn!(exporter = %shared.name, %signal, rejected, message = %ok.message,
                        "backend rejected part of a batch (partial success)");
                }
                return Outcome::Delivered;
            }
            Err(ExportError::Permanent(reason)) => {
                let lost = give_up(delivery.as_ref());
                tracing::error!(exporter = %shared.name, %signal, items = lost, %reason, "export failed permanently; dropping");
                return Outcome::Failed;
            }
            Err(ExportError::Retryable {
                reason,
                retry_after,
            }) => {
                if !retry.enabled {
                    let lost = give_up(delivery.as_ref());
                    tracing::error!(exporter = %shared.name, %signal, items = lost, %reason, "export failed and retry is disabled; dropping");
                    return Outcome::Failed;
                }
                let wait =
                    retry_after.unwrap_or_else(|| jitter(interval, retry.randomization_factor));
                if !retry.max_elapsed_time.is_zero()
                    && started.elapsed() + wait > retry.max_elapsed_time
                {
                    let lost = give_up(delivery.as_ref());
                    tracing::error!(exporter = %shared.name, %signal, items = lost, %reason,
                        elapsed_s = started.elapsed().as_secs_f64(), "giving up after max_elapsed_time; dropping");
                    return Outcome::Failed;
                }
                let pending = delivery.pending().unwrap_or(n);
                tracing::warn!(exporter = %shared.name, %signal, items = pending, %reason, wait_ms = wait.as_millis() as u64,
                    "export failed; will retry");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => {
                        if durable {
                            tracing::warn!(exporter = %shared.name, %signal, items = n, %reason,
                                "shutdown deadline reached while retrying; the batch stays in the disk queue for the next run");
                            return Outcome::Kept;
                        }
                        let lost = give_up(delivery.as_ref());
                        tracing::error!(exporter = %shared.name, %signal, items = lost, %reason,
                            "shutdown deadline reached while retrying; dropping");
                        return Outcome::Abandoned(lost as u64);
                    }
                }
                interval = Duration::from_secs_f64(
                    (interval.as_secs_f64() * retry.multiplier)
                        .min(retry.max_interval.as_secs_f64()),
                );
            }
        }
    }
}

fn jitter(d: Duration, factor: f64) -> Duration {
    if factor <= 0.0 {
        return d;
    }
    let f = factor.min(1.0);
    let r: f64 = rand::rng().random_range((1.0 - f)..=(1.0 + f));
    Duration::from_secs_f64(d.as_secs_f64() * r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::{Export, ExportOk};
    use crate::settings::types::QueueConfig;
    use std::sync::atomic::AtomicUsize;

    /// Fails `fail_first` times with a retryable error, then succeeds; counts items.
    struct Flaky {
        fail_first: usize,
        calls: AtomicUsize,
        delivered: AtomicUsize,
    }

    #[async_trait]
    impl Export for Flaky {
        type Progress = ();

        async fn export(
            &self,
            data: &Arc<Telemetry>,
            _metadata: &crate::signal::Metadata,
            _progress: &mut (),
        ) -> Result<ExportOk, ExportError> {
            let c = self.calls.fetch_add(1, Ordering::SeqCst);
            if c < self.fail_first {
                return Err(ExportError::Retryable {
                    reason: "down".into(),
                    retry_after: Some(Duration::from_millis(5)),
                });
            }
            self.delivered
                .fetch_add(data.item_count(), Ordering::SeqCst);
            Ok(ExportOk::default())
        }
    }

    fn one_span() -> Telemetry {
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        Telemetry::Traces(vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span::default()],
                ..Default::default()
            }],
            ..Default::default()
        }])
    }

    #[tokio::test]
    async fn retries_until_delivered_and_refuses_when_full() {
        let flaky = Arc::new(Flaky {
            fail_first: 3,
            calls: AtomicUsize::new(0),
            delivered: AtomicUsize::new(0),
        });
        let q = QueueConfig {
            enabled: true,
            num_consumers: 1,
            queue_size: 2,
            ..Default::default()
        };
        let stop = CancellationToken::new();
        let running = spawn("t", flaky.clone(), &q, RetryConfig::default(), stop.clone()).unwrap();
        let fan = ExporterFanout::new(vec![running.input.clone()]);
        let mut accepted = 0;
        let mut refused = 0;
        for _ in 0..10 {
            match fan.consume(one_span(), Acks::none()).await {
                Ok(()) => accepted += 1,
                Err(ConsumeError::Refused(r)) => {
                    assert_eq!(r.data.item_count(), 1, "refused data is handed back");
                    refused += 1
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            refused > 0,
            "a queue of 2 must refuse some of 10 immediate sends"
        );
        drop(fan);
        drop(running.input);
        for w in running.workers {
            w.await.unwrap();
        }
        assert_eq!(flaky.delivered.load(Ordering::SeqCst), accepted);
        assert!(running.shared.outstanding().is_empty());
    }

    /// Sends encoded batches only, failing the first `fail_first` attempts; keeps the bytes.
    struct EncodedOnly {
        fail_first: AtomicUsize,
        got: std::sync::Mutex<Vec<EncodedBatch>>,
    }

    #[async_trait]
    impl Export for EncodedOnly {
        type Progress = ();

        async fn export(
            &self,
            _data: &Arc<Telemetry>,
            _metadata: &crate::signal::Metadata,
            _progress: &mut (),
        ) -> Result<ExportOk, ExportError> {
            Err(ExportError::Permanent("structs".into()))
        }

        fn takes_encoded(&self) -> bool {
            true
        }

        async fn export_encoded(
            &self,
            data: &EncodedBatch,
            _metadata: &Metadata,
            _progress: &mut (),
        ) -> Result<ExportOk, ExportError> {
            if self.fail_first.load(Ordering::SeqCst) > 0 {
                self.fail_first.fetch_sub(1, Ordering::SeqCst);
                return Err(ExportError::Retryable {
                    reason: "down".into(),
                    retry_after: Some(Duration::from_millis(5)),
                });
            }
            self.got.lock().unwrap().push(data.clone());
            Ok(ExportOk::default())
        }
    }

    #[tokio::test]
    async fn encoded_batches_are_queued_retried_and_delivered_whole() {
        let enc = Arc::new(EncodedOnly {
            fail_first: AtomicUsize::new(2),
            got: std::sync::Mutex::new(Vec::new()),
        });
        let stop = CancellationToken::new();
        let q = QueueConfig {
            enabled: true,
            num_consumers: 1,
            queue_size: 4,
            ..Default::default()
        };
        let running = spawn("enc", enc.clone(), &q, RetryConfig::default(), stop.clone()).unwrap();
        let direct = spawn(
            "enc-direct",
            enc.clone(),
            &QueueConfig {
                enabled: false,
                ..Default::default()
            },
            RetryConfig::default(),
            stop.clone(),
        )
        .unwrap();
        let fan = ExporterFanout::new(vec![running.input.clone(), direct.input.clone()]);
        assert!(fan.takes_encoded());
        let batch = crate::convert::otlp_proto::encode_batch(&one_span());
        fan.consume_encoded(batch.clone(), Acks::none())
            .await
            .unwrap();
        drop(fan);
        drop(running.input);
        drop(direct.input);
        for w in running.workers {
            w.await.unwrap();
        }
        let got = enc.got.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![batch.clone(), batch],
            "one copy per exporter, after the retries"
        );
        assert!(running.shared.outstanding().is_empty());
        assert!(direct.shared.outstanding().is_empty());
    }

    #[tokio::test]
    async fn a_fanout_takes_encoded_batches_if_some_exporter_does_and_decodes_once_for_the_rest() {
        let flaky = Arc::new(Flaky {
            fail_first: 0,
            calls: AtomicUsize::new(0),
            delivered: AtomicUsize::new(0),
        });
        let enc = Arc::new(EncodedOnly {
            fail_first: AtomicUsize::new(0),
            got: std::sync::Mutex::new(Vec::new()),
        });
        let q = QueueConfig {
            enabled: true,
            num_consumers: 1,
            queue_size: 4,
            ..Default::default()
        };
        let stop = CancellationToken::new();
        let a = spawn(
            "structs",
            flaky.clone(),
            &q,
            RetryConfig::default(),
            stop.clone(),
        )
        .unwrap();
        let b = spawn("enc", enc.clone(), &q, RetryConfig::default(), stop.clone()).unwrap();
        let mixed = ExporterFanout::new(vec![b.input.clone(), a.input.clone()]);
        assert!(mixed.takes_encoded());
        let batch = crate::convert::otlp_proto::encode_batch(&one_span());
        mixed
            .consume_encoded(batch.clone(), Acks::none())
            .await
            .unwrap();
        // The bytes to the one that sends them; the decoded batch to the other.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while flaky.delivered.load(Ordering::SeqCst) == 0 || enc.got.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "not delivered to both"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(*enc.got.lock().unwrap(), vec![batch]);
        assert_eq!(
            flaky.delivered.load(Ordering::SeqCst),
            one_span().item_count()
        );
        enc.got.lock().unwrap().clear();
        assert!(!ExporterFanout::new(Vec::new()).takes_encoded());
        assert!(!ExporterFanout::new(vec![a.input.clone()]).takes_encoded());
        // A disk queue takes what its exporter takes.
        let dir = tempfile::tempdir().unwrap();
        let disk = QueueConfig {
            enabled: true,
            storage: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let enc_on_disk =
            spawn("disk-enc", enc, &disk, RetryConfig::default(), stop.clone()).unwrap();
        assert!(ExporterFanout::new(vec![enc_on_disk.input.clone()]).takes_encoded());
        let flaky = Arc::new(Flaky {
            fail_first: 0,
            calls: AtomicUsize::new(0),
            delivered: AtomicUsize::new(0),
        });
        let structs_on_disk = spawn(
            "disk-structs",
            flaky,
            &disk,
            RetryConfig::default(),
            stop.clone(),
        )
        .unwrap();
        assert!(!ExporterFanout::new(vec![structs_on_disk.input.clone()]).takes_encoded());
        stop.cancel();
    }

    #[tokio::test]
    async fn encoded_batches_go_through_a_disk_queue_as_the_same_bytes() {
        let enc = Arc::new(EncodedOnly {
            fail_first: AtomicUsize::new(2),
            got: std::sync::Mutex::new(Vec::new()),
        });
        let dir = tempfile::tempdir().unwrap();
        // queue_size 0: no batch is kept in memory, every one is read back.
        let q = QueueConfig {
            enabled: true,
            num_consumers: 1,
            queue_size: 0,
            storage: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let stop = CancellationToken::new();
        let running = spawn("enc", enc.clone(), &q, RetryConfig::default(), stop.clone()).unwrap();
        let fan = ExporterFanout::new(vec![running.input.clone()]);
        assert!(fan.takes_encoded());
        let mut sent = Vec::new();
        for i in 0..3u64 {
            use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
            let t = Telemetry::Traces(vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (0..=i)
                        .map(|j| Span {
                            name: format!("s{i}-{j}"),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }]);
            let batch = crate::convert::otlp_proto::encode_batch(&t);
            let (ack, waiter) = crate::consumer::Ack::new();
            fan.consume_encoded(batch.clone(), Acks::one(ack))
                .await
                .unwrap();
            // Durably queued counts as delivered.
            assert_eq!(waiter.wait().await, AckOutcome::Delivered);
            sent.push(batch);
        }
        // Wait for the worker to send all three (after two refusals).
        for _ in 0..200 {
            if enc.got.lock().unwrap().len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*enc.got.lock().unwrap(), sent, "in order, byte for byte");
        assert_eq!(
            running.shared.disk.as_ref().map(|d| d.pending_items()),
            Some(0)
        );
        stop.cancel();
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(10), 0.5);
            assert!(j >= Duration::from_secs(5) && j <= Duration::from_secs(15));
        }
    }
}
