//! The contract: [`Consumer`], how it refuses, and [`StartError`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::ack::Acks;
use crate::signal::{EncodedBatch, Telemetry};

/// Why a component could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on `{address}`: {source}")]
    Listen {
        /// The address as configured.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// A TLS certificate or key could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// A component could not be built.
    #[error("{component}: {message}")]
    Component {
        /// The component id.
        component: String,
        /// What went wrong.
        message: String,
    },
}

impl StartError {
    /// An error about `component`.
    pub fn component(component: &str, message: impl Into<String>) -> StartError {
        StartError::Component {
            component: component.to_string(),
            message: message.into(),
        }
    }
}

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

impl ConsumeError {
    /// This error of a stage that took `data` decoded, for the stage that
    /// was handed `data` as bytes: a refusal gives back the bytes (and its
    /// acks), for the sender to retry.
    pub fn for_bytes(self, data: EncodedBatch) -> ConsumeError<EncodedBatch> {
        match self {
            ConsumeError::Refused(r) => {
                ConsumeError::refused(r.reason, r.retry_after, data, r.acks)
            }
            ConsumeError::Failed(f) => ConsumeError::Failed(f),
        }
    }
}

impl<T: std::fmt::Debug> ConsumeError<T> {
    /// A batch handed on as bytes that does not decode, for a stage that
    /// needs structs (the receiver checked it, so it does): failed for good.
    pub fn undecodable(e: impl std::fmt::Display) -> ConsumeError<T> {
        ConsumeError::Failed(format!("an encoded batch does not decode: {e}"))
    }

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
