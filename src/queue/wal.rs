//! A receiver's write-ahead log, for `wait_for_delivery: durable`: a request
//! is appended to the log and flushed to the device before it is answered,
//! so what a sender was told is accepted survives `kill -9` and power loss
//! without the answer waiting for delivery.
//!
//! - **Format**: the log is a [`DiskQueue`] directory
//!   (`<wal.directory>/<receiver id>/`) in the disk queue's format (see
//!   [`crate::queue::disk`]): segments of checksummed records, each the
//!   body of an OTLP `Export*ServiceRequest` (protobuf, as the sender sent
//!   it or as the receiver decoded it once) and its client metadata, plus a
//!   cursor of what is done. Torn tails and damaged records are skipped and
//!   counted, as there.
//! - **Group commit**: appends go to one committer thread. It takes every
//!   request waiting, writes them, calls `fdatasync` once for all of them,
//!   and only then answers each. Requests that arrive while an fsync runs
//!   share the next one.
//! - **Leaving the log**: each logged request travels the pipelines with an
//!   [`Ack`]. When every exporter has delivered its copy, queued it on
//!   disk, or dropped it for good, the record is done. Data given up at
//!   shutdown stays in the log.
//! - **Replay**: at start, the records a previous run left that are not
//!   done are handed to the pipelines again ([`Wal::take_recovered`]).
//!
//! Duplicates: a record is marked done when its delivery is settled. If the
//! process dies between an exporter's successful send and that mark, the
//! record is sent again after restart. So at most the data in flight in the
//! pipelines at the crash (open batches, exporter queues and requests in
//! flight) is delivered twice. Nothing acknowledged is lost.

use std::path::Path;
use std::sync::Arc;

use metrics::Counter;
use tokio::sync::{mpsc, oneshot};

use super::disk::{
    dir_name, encoded_record, DiskConfig, DiskQueue, DiskQueueError, Record, Recovered,
    Reservation, Role,
};
use crate::consumer::{Ack, AckOutcome};
use crate::settings::types::{FsyncPolicy, WalConfig, WhenFull};
use crate::signal::{EncodedBatch, Metadata, Payload};

/// Most requests written under one fsync.
const MAX_GROUP: usize = 4096;

/// Why a request could not be logged; the receiver answers it as retryable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    /// No room until exporters catch up.
    #[error("the write-ahead log is full ({0} MiB); retry once the exporters catch up")]
    Full(u64),
    /// Writing or flushing failed.
    #[error("the write-ahead log could not be written: {0}")]
    Io(String),
    /// Shutting down.
    #[error("the write-ahead log is closed (spanwire is shutting down)")]
    Closed,
}

struct Job {
    res: Reservation,
    record: Record,
    data: Payload,
    metadata: Metadata,
    reply: oneshot::Sender<Result<Logged, WalError>>,
}

/// A record on the device whose request is not yet handed on. Dropped
/// unused (its sender went away before the answer), it marks the record
/// done: the sender was not told it is accepted, so it is not owed.
struct Logged {
    disk: Arc<DiskQueue>,
    seq: Option<u64>,
}

impl Logged {
    /// The acknowledgement that marks the record done once its data is
    /// settled, unless it is given up at shutdown (then the next run
    /// replays it).
    fn into_ack(mut self) -> Ack {
        let (disk, seq) = (self.disk.clone(), self.seq.take());
        Ack::on_settled(move |outcome| {
            if outcome != AckOutcome::Abandoned {
                seq.into_iter().for_each(|seq| disk.done(seq));
            }
        })
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(seq) = self.seq.take() {
            self.disk.done(seq);
        }
    }
}

/// One receiver's write-ahead log.
pub struct Wal {
    disk: Arc<DiskQueue>,
    jobs: mpsc::Sender<Job>,
    max_mib: u64,
    replayed: Counter,
    unreplayable: Counter,
}

/// A request read back from the log at start, with the [`Ack`] that marks
/// it done.
pub struct Replay {
    /// The request as logged.
    pub batch: EncodedBatch,
    /// Its client metadata.
    pub metadata: Metadata,
    /// Hand it on with the data; it marks the record done once settled.
    pub ack: Ack,
}

impl Wal {
    /// Opens (or creates) the log of receiver `receiver` under
    /// `cfg.directory` (which must be set) and starts its committer thread.
    pub fn open(
        cfg: &WalConfig,
        root: &Path,
        receiver: &str,
    ) -> Result<(Arc<Wal>, Recovered), DiskQueueError> {
        let max_bytes = cfg.max_size_mib.saturating_mul(1024 * 1024);
        let disk_cfg = DiskConfig {
            dir: root.join(dir_name(receiver)),
            max_bytes,
            segment_bytes: cfg
                .segment_size_mib
                .saturating_mul(1024 * 1024)
                .min(max_bytes / 4)
                .max(4096),
            when_full: WhenFull::Block,
            // Appends only write; the committer flushes once per group.
            fsync: FsyncPolicy::Interval,
            memory_batches: 0,
            read_encoded: true,
            role: Role::ReceiverWal,
        };
        let (disk, recovered) = DiskQueue::open(disk_cfg, receiver)?;
        let (tx, rx) = mpsc::channel(MAX_GROUP);
        let labels = [("receiver", receiver.to_string())];
        let fsyncs = crate::telemetry::counter("spanwire_receiver_wal_fsyncs_total", &labels);
        let appends = crate::telemetry::counter("spanwire_receiver_wal_appends_total", &labels);
        let committer = disk.clone();
        // The committer holds the queue; it ends when the last sender of
        // jobs (this `Wal`) goes.
        std::thread::Builder::new()
            .name("spanwire-wal".into())
            .spawn(move || commit_loop(&committer, rx, &fsyncs, &appends))
            .map_err(|source| DiskQueueError::Io {
                dir: disk.dir().to_string(),
                what: "start the committer thread".into(),
                source,
            })?;
        if recovered.batches > 0 {
            tracing::info!(wal = %disk.dir(), requests = recovered.batches, items = recovered.items,
                "write-ahead log: replaying requests accepted by a previous run and not yet delivered");
        }
        Ok((
            Arc::new(Wal {
                disk,
                jobs: tx,
                max_mib: cfg.max_size_mib,
                replayed: crate::telemetry::counter(
                    "spanwire_receiver_wal_replayed_items_total",
                    &labels,
                ),
                unreplayable: crate::telemetry::counter(
                    "spanwire_receiver_wal_unreplayable_items_total",
                    &labels,
                ),
            }),
            recovered,
        ))
    }

    /// Appends `batch` (with its client `metadata`) and waits until it is on
    /// the device. The [`Ack`] returned marks the record done once every
    /// exporter has settled it: hand it on with the data. Dropped unused
    /// (the pipeline refused the data), it marks the record done at once.
    pub async fn append(
        self: &Arc<Self>,
        batch: &EncodedBatch,
        metadata: &Metadata,
    ) -> Result<Ack, WalError> {
        let record = encoded_record(batch, metadata);
        let res = match self.disk.reserve(record.len() as u64) {
            Ok(Some(res)) => res,
            Ok(None) => return Err(WalError::Full(self.max_mib)),
            Err(_) => return Err(WalError::Closed),
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            res,
            record,
            data: Payload::Encoded(batch.clone()),
            metadata: metadata.clone(),
            reply,
        };
        self.jobs.send(job).await.map_err(|_| WalError::Closed)?;
        let logged = answer.await.map_err(|_| WalError::Closed)??;
        Ok(logged.into_ack())
    }

    fn logged(&self, seq: u64) -> Logged {
        Logged {
            disk: self.disk.clone(),
            seq: Some(seq),
        }
    }

    /// The next request a previous run left (numbered below `end`, the
    /// [`Recovered::end_seq`] of [`Wal::open`]); None once all are handed
    /// out. Reads the disk: call from a blocking thread.
    pub fn take_recovered(&self, end: u64) -> Option<Replay> {
        loop {
            let entry = self.disk.take_recovered(end)?;
            match entry.data {
                Payload::Encoded(batch) => {
                    self.replayed.increment(batch.items as u64);
                    return Some(Replay {
                        batch,
                        metadata: entry.metadata,
                        ack: self.logged(entry.seq).into_ack(),
                    });
                }
                // The log reads records back encoded; never structs.
                Payload::Structs(_) => self.disk.done(entry.seq),
            }
        }
    }

    /// Counts `items` of a replayed request that no pipeline takes any more
    /// (the config changed), and logs why.
    pub fn unreplayable(&self, items: usize, why: &str) {
        self.unreplayable.increment(items as u64);
        tracing::error!(wal = %self.disk.dir(), items, reason = why,
            "write-ahead log: a request from a previous run cannot be replayed; dropping it");
    }

    /// Requests logged and not yet done.
    pub fn pending_items(&self) -> u64 {
        self.disk.pending_items()
    }
}

/// The committer: writes every waiting request, flushes once, answers all.
fn commit_loop(
    disk: &Arc<DiskQueue>,
    mut jobs: mpsc::Receiver<Job>,
    fsyncs: &Counter,
    appends: &Counter,
) {
    let mut group = Vec::with_capacity(64);
    let mut written: Vec<(u64, oneshot::Sender<Result<Logged, WalError>>)> = Vec::with_capacity(64);
    while let Some(first) = jobs.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        for job in group.drain(..) {
            match disk.append_numbered(job.res, &job.record, &job.data, &job.metadata) {
                Ok(Some(seq)) => written.push((seq, job.reply)),
                // `when_full: block` never drops a reserved record.
                Ok(None) => {
                    let _ = job.reply.send(Err(WalError::Closed));
                }
                Err(e) => {
                    let _ = job.reply.send(Err(WalError::Io(e.to_string())));
                }
            }
        }
        if written.is_empty() {
            continue;
        }
        let synced = disk.sync_checked();
        fsyncs.increment(1);
        appends.increment(written.len() as u64);
        for (seq, reply) in written.drain(..) {
            let logged = Logged {
                disk: disk.clone(),
                seq: Some(seq),
            };
            // Not durable: not accepted (dropping `logged` marks it done).
            // A send that fails drops it the same way.
            let _ = reply.send(match &synced {
                Ok(()) => Ok(logged),
                Err(e) => Err(WalError::Io(e.to_string())),
            });
        }
    }
}

#[cfg(test)]
mod tests;
