//! The data path: the [`Consumer`] contract every stage implements, fan-out,
//! and the [`Service`] that builds the component graph from a [`Config`],
//! runs it, and shuts it down in order.
//!
//! Data moves as owned [`Telemetry`] values. Every hand-off is bounded and
//! non-blocking: a stage that cannot take data right now refuses it and gives
//! it back ([`Refused`]), and receivers turn that into gRPC `UNAVAILABLE` or
//! HTTP 503 so the sender retries.

mod ack;
mod graph;

pub use ack::{Ack, AckOutcome, AckWaiter, Acks};

pub use graph::{Service, ShutdownReport, StartError};

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::signal::{EncodedBatch, Telemetry};

/// Data a stage could not take now; the caller gets it back to retry or refuse.
#[derive(Debug)]
pub struct Refused<T = Telemetry> {
    /// Why (e.g. `exporter otlp: queue is full`).
    pub reason: String,
    /// A hint for the sender's next try.
    pub retry_after: Duration,
    /// The data, untouched.
    pub data: T,
    /// Its acknowledgements, untouched.
    pub acks: Acks,
}

/// Why a stage did not take data (`T`: structs, or an [`EncodedBatch`]).
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError<T: std::fmt::Debug = Telemetry> {
    /// Temporary: a queue is full or memory is short. Retry later.
    #[error("refused: {}", .0.reason)]
    Refused(Box<Refused<T>>),
    /// The data was dropped or failed for good (reason given).
    #[error("failed: {0}")]
    Failed(String),
}

impl ConsumeError {
    /// A refusal from a stage that never saw the acks (its caller adds them).
    pub fn refused_without_acks(
        reason: impl Into<String>,
        retry_after: Duration,
        data: Telemetry,
    ) -> ConsumeError {
        ConsumeError::refused(reason, retry_after, data, Acks::none())
    }
}

impl<T: std::fmt::Debug> ConsumeError<T> {
    /// Builds a refusal that hands `data` and its `acks` back.
    pub fn refused(
        reason: impl Into<String>,
        retry_after: Duration,
        data: T,
        acks: Acks,
    ) -> ConsumeError<T> {
        ConsumeError::Refused(Box::new(Refused {
            reason: reason.into(),
            retry_after,
            data,
            acks,
        }))
    }
}

/// Anything that accepts telemetry: a processor stage, a fan-out, an exporter queue.
#[async_trait]
pub trait Consumer: Send + Sync + 'static {
    /// Takes ownership of `data` and its `acks` (see [`Acks`]), or refuses
    /// them (handing both back).
    async fn consume(&self, data: Telemetry, acks: Acks) -> Result<(), ConsumeError>;

    /// Whether this consumer also takes batches already encoded as OTLP
    /// request bytes ([`Consumer::consume_encoded`]): true only when every
    /// exporter behind it sends OTLP protobuf as is. Fixed for its lifetime.
    fn takes_encoded(&self) -> bool {
        false
    }

    /// Takes an encoded batch, or refuses it (handing it back). Only called
    /// when [`Consumer::takes_encoded`] is true.
    async fn consume_encoded(
        &self,
        data: EncodedBatch,
        _acks: Acks,
    ) -> Result<(), ConsumeError<EncodedBatch>> {
        Err(ConsumeError::Failed(format!(
            "this stage does not take encoded batches ({} {})",
            data.items,
            data.signal.item_name()
        )))
    }
}

/// A shared consumer.
pub type BoxConsumer = Arc<dyn Consumer>;

/// The consumers a receiver feeds, one per signal it is wired for.
#[derive(Clone, Default)]
pub struct Consumers {
    /// Where spans go, if any traces pipeline uses the receiver.
    pub traces: Option<BoxConsumer>,
    /// Where metrics go.
    pub metrics: Option<BoxConsumer>,
    /// Where logs go.
    pub logs: Option<BoxConsumer>,
}

impl Consumers {
    /// The consumer for a signal.
    pub fn get(&self, signal: crate::signal::Signal) -> Option<&BoxConsumer> {
        match signal {
            crate::signal::Signal::Traces => self.traces.as_ref(),
            crate::signal::Signal::Metrics => self.metrics.as_ref(),
            crate::signal::Signal::Logs => self.logs.as_ref(),
        }
    }
}

/// Feeds several pipelines from one receiver: every pipeline gets a copy.
///
/// If one pipeline refuses, the refusal is returned after the others have
/// been offered their copy, so a retrying sender may duplicate data in the
/// pipelines that accepted; this is the OTel Collector's behaviour too.
pub struct PipelineFanout {
    targets: Vec<BoxConsumer>,
}

impl PipelineFanout {
    /// A fan-out over `targets`; with one target, use it directly instead.
    pub fn new(targets: Vec<BoxConsumer>) -> PipelineFanout {
        PipelineFanout { targets }
    }
}

#[async_trait]
impl Consumer for PipelineFanout {
    async fn consume(&self, data: Telemetry, acks: Acks) -> Result<(), ConsumeError> {
        let mut first_error = None;
        let n = self.targets.len();
        let mut data = Some(data);
        for (i, t) in self.targets.iter().enumerate() {
            let copy = if i + 1 == n {
                data.take()
            } else {
                data.as_ref().cloned()
            };
            let Some(copy) = copy else { break };
            if let Err(e) = t.consume(copy, acks.clone()).await {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}
