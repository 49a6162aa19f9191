//! End-to-end acknowledgements: a receiver that must know when its data is
//! delivered (the Kinesis receiver, to checkpoint) attaches an [`Ack`] to the
//! data it hands to a pipeline. Every stage passes acks along with the data
//! (fan-outs clone them, the batcher attaches them to the batches holding the
//! data, exporter queues keep them with each queued batch), and each exporter
//! drops its clone once its copy is delivered, marking it first if the copy
//! was dropped or abandoned. When the last clone is gone the receiver's
//! [`AckWaiter`] resolves with the worst outcome.
//!
//! Data without acks carries an empty [`Acks`] (no allocation).
//!
//! [`Acks`] also carries the batch's client [`Metadata`] (the request
//! headers a receiver with `include_metadata` kept), since it is what every
//! stage already hands on with the data: the batch processor keeps only its
//! `metadata_keys` (and keeps batches of different values apart), and the
//! exporter queue gives it to the exporter with the batch.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::signal::Metadata;

/// How the data behind an acknowledgement ended, best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AckOutcome {
    /// Every exporter delivered its copy (or nothing was left to deliver,
    /// e.g. a processor filtered it out).
    Delivered = 0,
    /// An exporter dropped its copy for good (invalid data, retries
    /// exhausted); counted and logged there. Reading it again would not help.
    Dropped = 1,
    /// Given up at shutdown while still held: read it again after restart.
    Abandoned = 2,
}

impl AckOutcome {
    fn from_u8(v: u8) -> AckOutcome {
        match v {
            0 => AckOutcome::Delivered,
            1 => AckOutcome::Dropped,
            _ => AckOutcome::Abandoned,
        }
    }
}

/// Who learns the outcome.
enum Settle {
    /// An [`AckWaiter`].
    Waiter(oneshot::Sender<AckOutcome>),
    /// A function, called where the last clone is dropped.
    Call(Box<dyn FnOnce(AckOutcome) + Send>),
}

struct AckState {
    worst: AtomicU8,
    tx: Mutex<Option<Settle>>,
}

impl Drop for AckState {
    fn drop(&mut self) {
        let outcome = AckOutcome::from_u8(self.worst.load(Ordering::Acquire));
        if let Ok(tx) = self.tx.get_mut() {
            match tx.take() {
                Some(Settle::Waiter(tx)) => {
                    let _ = tx.send(outcome);
                }
                Some(Settle::Call(f)) => f(outcome),
                None => {}
            }
        }
    }
}

/// One acknowledgement; clones share it, and it resolves when the last is dropped.
#[derive(Clone)]
pub struct Ack(Arc<AckState>);

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Ack({:?})",
            AckOutcome::from_u8(self.0.worst.load(Ordering::Relaxed))
        )
    }
}

impl Ack {
    /// A new acknowledgement and the waiter that learns its outcome.
    pub fn new() -> (Ack, AckWaiter) {
        let (tx, rx) = oneshot::channel();
        (Ack::settled_by(Settle::Waiter(tx)), AckWaiter(rx))
    }

    /// A new acknowledgement that calls `f` with its outcome, on the thread
    /// that drops its last clone (so `f` must be quick and not block), with
    /// no task waiting for it.
    pub fn on_settled(f: impl FnOnce(AckOutcome) + Send + 'static) -> Ack {
        Ack::settled_by(Settle::Call(Box::new(f)))
    }

    fn settled_by(settle: Settle) -> Ack {
        Ack(Arc::new(AckState {
            worst: AtomicU8::new(AckOutcome::Delivered as u8),
            tx: Mutex::new(Some(settle)),
        }))
    }

    /// Records an outcome; the worst one recorded wins.
    pub fn mark(&self, outcome: AckOutcome) {
        self.0.worst.fetch_max(outcome as u8, Ordering::AcqRel);
    }
}

/// Learns how the acknowledged data ended.
pub struct AckWaiter(oneshot::Receiver<AckOutcome>);

impl AckWaiter {
    /// Waits until every copy of the data is settled.
    pub async fn wait(self) -> AckOutcome {
        self.0.await.unwrap_or(AckOutcome::Abandoned)
    }

    /// The outcome if already settled.
    pub fn try_outcome(&mut self) -> Option<AckOutcome> {
        match self.0.try_recv() {
            Ok(o) => Some(o),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(AckOutcome::Abandoned),
        }
    }
}

/// The acknowledgements travelling with one piece of data, and its client
/// metadata.
#[derive(Clone, Default, Debug)]
pub struct Acks {
    acks: Vec<Ack>,
    metadata: Metadata,
}

impl Acks {
    /// No acknowledgements (most data).
    pub fn none() -> Acks {
        Acks::default()
    }

    /// One acknowledgement.
    pub fn one(a: Ack) -> Acks {
        Acks {
            acks: vec![a],
            metadata: Metadata::default(),
        }
    }

    /// The same, carrying `metadata`.
    pub fn with_metadata(mut self, metadata: Metadata) -> Acks {
        self.metadata = metadata;
        self
    }

    /// The client metadata of the data.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// True when there are no acknowledgements.
    pub fn is_empty(&self) -> bool {
        self.acks.is_empty()
    }

    /// Marks every acknowledgement.
    pub fn mark(&self, outcome: AckOutcome) {
        for a in &self.acks {
            a.mark(outcome);
        }
    }

    /// Adds `other`'s acknowledgements. Data of different metadata joined
    /// into one has none (the batch processor keeps such data apart when
    /// `metadata_keys` asks it to).
    pub fn extend(&mut self, other: Acks) {
        if self.metadata != other.metadata {
            self.metadata = Metadata::default();
        }
        self.acks.extend(other.acks);
    }

    /// Takes the acknowledgements, leaving none; the result carries a copy
    /// of the metadata, which stays.
    pub fn take(&mut self) -> Acks {
        Acks {
            acks: std::mem::take(&mut self.acks),
            metadata: self.metadata.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_when_the_last_clone_goes_with_the_worst_outcome() {
        let (ack, mut waiter) = Ack::new();
        let a = Acks::one(ack);
        let b = a.clone();
        let c = a.clone();
        drop(a);
        assert_eq!(waiter.try_outcome(), None);
        b.mark(AckOutcome::Dropped);
        drop(b);
        assert_eq!(waiter.try_outcome(), None);
        c.mark(AckOutcome::Delivered);
        drop(c);
        assert_eq!(waiter.wait().await, AckOutcome::Dropped);

        let (ack, waiter) = Ack::new();
        drop(ack);
        assert_eq!(waiter.wait().await, AckOutcome::Delivered);
    }

    #[test]
    fn a_callback_learns_the_worst_outcome_once() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let a = Acks::one(Ack::on_settled(move |o| s.lock().unwrap().push(o)));
        let b = a.clone();
        b.mark(AckOutcome::Abandoned);
        drop(b);
        assert!(seen.lock().unwrap().is_empty(), "a clone is still held");
        a.mark(AckOutcome::Delivered);
        drop(a);
        assert_eq!(*seen.lock().unwrap(), vec![AckOutcome::Abandoned]);
    }
}
