//! Processors: stages between receivers and exporters in one pipeline.
//!
//! Most processors are synchronous transformations ([`SyncProcessor`]) run
//! inline in the sender's call; `batch` is an asynchronous stage with its own
//! bounded input and timer.

pub mod attributes;
pub mod batch;
pub mod limits;
pub mod memory_limiter;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::de::{from_node, DeError};
use crate::config::yaml::Node;
use crate::consumer::{AckOutcome, Acks, BoxConsumer, ConsumeError, Consumer};
use crate::signal::{Signal, Telemetry};
use crate::telemetry::SignalCounters;

/// The typed config of one processor.
#[derive(Debug, Clone)]
pub enum ProcessorConfig {
    /// `batch`.
    Batch(batch::BatchConfig),
    /// `memory_limiter`.
    MemoryLimiter(memory_limiter::MemoryLimiterConfig),
    /// `resource`: actions on resource attributes.
    Resource(attributes::ActionsConfig),
    /// `attributes`: actions on span, log record and data point attributes.
    Attributes(attributes::ActionsConfig),
    /// `limits`: attribute count and value length, span events and links.
    Limits(limits::LimitsConfig),
}

impl ProcessorConfig {
    /// Processor types spanwire knows.
    pub const KINDS: &'static [&'static str] = &[
        "batch",
        "memory_limiter",
        "resource",
        "attributes",
        "limits",
    ];

    /// Parses the section of a processor of type `kind`; `None` for an unknown type.
    pub fn parse(kind: &str, node: &Node) -> Option<Result<ProcessorConfig, DeError>> {
        Some(match kind {
            "batch" => from_node::<batch::BatchConfig>(node)
                .and_then(|c| c.validate().map(|_| c))
                .map(ProcessorConfig::Batch),
            "memory_limiter" => from_node::<memory_limiter::MemoryLimiterConfig>(node)
                .and_then(|c| c.validate().map(|_| c))
                .map(ProcessorConfig::MemoryLimiter),
            "resource" => from_node::<attributes::ActionsConfig>(node)
                .and_then(|c| c.validate().map(|_| c))
                .map(ProcessorConfig::Resource),
            "attributes" => from_node::<attributes::ActionsConfig>(node)
                .and_then(|c| c.validate().map(|_| c))
                .map(ProcessorConfig::Attributes),
            "limits" => from_node::<limits::LimitsConfig>(node)
                .and_then(|c| c.validate().map(|_| c))
                .map(ProcessorConfig::Limits),
            _ => return None,
        })
    }

    /// Signals the processor handles.
    pub fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }
}

/// A processor that transforms data inline.
pub trait SyncProcessor: Send + Sync + 'static {
    /// Transforms `data`, or refuses it (handing it back).
    fn process(&self, data: Telemetry) -> Result<Telemetry, ConsumeError>;
}

/// Runs a [`SyncProcessor`] and passes its output on.
pub struct ProcessorStage {
    processor: Arc<dyn SyncProcessor>,
    next: BoxConsumer,
    dropped: SignalCounters,
}

impl ProcessorStage {
    /// Wraps `processor` in front of `next`; `labels` name it in self-metrics.
    pub fn new(
        processor: Arc<dyn SyncProcessor>,
        next: BoxConsumer,
        labels: &[(&'static str, String)],
    ) -> Self {
        ProcessorStage {
            processor,
            next,
            dropped: SignalCounters::new("spanwire_processor_dropped", labels),
        }
    }
}

#[async_trait]
impl Consumer for ProcessorStage {
    async fn consume(&self, data: Telemetry, acks: Acks) -> Result<(), ConsumeError> {
        let signal = data.signal();
        let before = data.item_count();
        let out = match self.processor.process(data) {
            Ok(out) => out,
            Err(ConsumeError::Refused(mut r)) => {
                r.acks = acks;
                return Err(ConsumeError::Refused(r));
            }
            Err(e) => {
                acks.mark(AckOutcome::Dropped);
                return Err(e);
            }
        };
        let after = out.item_count();
        if after < before {
            self.dropped.add(signal, before - after);
        }
        if after == 0 {
            // Nothing left to deliver: the acknowledgements resolve as delivered.
            return Ok(());
        }
        self.next.consume(out, acks).await
    }
}
