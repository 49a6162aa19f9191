//! Processors: stages between receivers and exporters in one pipeline. A
//! processor is built once per pipeline that lists it, in front of the
//! stage after it; most transform data inline ([`SyncProcessor`], wrapped
//! by [`ProcessorContext::inline`]), others run as their own task with a
//! bounded input ([`StageTask`]).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::factory::{any_factory, Configured, Definition, Factory};
use super::id::ComponentId;
use crate::consumer::{AckOutcome, Acks, BoxConsumer, ConsumeError, Consumer, StartError};
use crate::signal::{EncodedBatch, Metadata, Signal, Telemetry};
use crate::telemetry::SignalCounters;

/// What a processor is built with, in one pipeline.
pub struct ProcessorContext<'a> {
    /// Its id.
    pub id: &'a ComponentId,
    /// `"{id} in {pipeline}"`, for logs.
    pub name: String,
    /// Its self-metrics labels (`processor`, `pipeline`).
    pub labels: [(&'static str, String); 2],
    /// The stage after it.
    pub next: BoxConsumer,
    /// Fires at the shutdown deadline: stop retrying, give up what is held.
    pub stop: CancellationToken,
}

impl ProcessorContext<'_> {
    /// A stage that runs `processor` inline in the caller's task, then `next`.
    pub fn inline(self, processor: impl SyncProcessor) -> Stage {
        Stage {
            input: Arc::new(ProcessorStage::new(
                Arc::new(processor),
                self.next,
                &self.labels,
            )),
            task: None,
        }
    }
}

/// A processor's own task, drained at shutdown.
pub struct StageTask {
    /// Ends after its input closes and everything was passed on (or `stop` fired).
    pub task: JoinHandle<()>,
    /// Items it holds, counted as lost if the deadline comes first.
    pub pending: Arc<AtomicU64>,
}

/// A built processor: where the stage before it sends, and its task if any.
pub struct Stage {
    /// Its input.
    pub input: BoxConsumer,
    /// Its own task (asynchronous processors such as `batch`).
    pub task: Option<StageTask>,
}

/// The factory of one processor type.
pub trait ProcessorFactory: Factory {
    /// Signals it handles.
    fn signals(&self, _config: &Self::Config) -> &'static [Signal] {
        &Signal::ALL
    }

    /// Builds it in front of `ctx.next`.
    fn build(&self, config: &Self::Config, ctx: ProcessorContext<'_>) -> Result<Stage, StartError>;
}

/// A configured processor, as the graph sees it.
pub trait ProcessorDef: Definition {
    /// Signals it handles.
    fn signals(&self) -> &'static [Signal];
    /// Builds it in front of `ctx.next`.
    fn build(&self, ctx: ProcessorContext<'_>) -> Result<Stage, StartError>;
}

impl<F: ProcessorFactory> ProcessorDef for Configured<F> {
    fn signals(&self) -> &'static [Signal] {
        self.factory.signals(&self.config)
    }
    fn build(&self, ctx: ProcessorContext<'_>) -> Result<Stage, StartError> {
        self.factory.build(&self.config, ctx)
    }
}

any_factory!(ProcessorFactory, ProcessorDef);

/// A processor that transforms data inline.
pub trait SyncProcessor: Send + Sync + 'static {
    /// Transforms `data`, or refuses it (handing it back). `metadata` is
    /// the client metadata that came with it (see `include_metadata`).
    fn process(&self, data: Telemetry, metadata: &Metadata) -> Result<Telemetry, ConsumeError>;

    /// Whether it can judge OTLP request bytes as they are
    /// ([`SyncProcessor::admit`]): true for a processor that only admits or
    /// refuses data (`memory_limiter`), or that can tell from the bytes that
    /// it would change nothing (`limits`).
    fn passes_encoded(&self) -> bool {
        false
    }

    /// For one that passes bytes: what to do with `data`.
    fn admit(&self, _data: &EncodedBatch) -> Admit {
        Admit::Pass
    }
}

/// What a processor that passes bytes does with an encoded batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Pass the bytes on as they are: processing would change nothing.
    Pass,
    /// Decode it and [`SyncProcessor::process`] it.
    Decode,
    /// Not now: why, and when to retry.
    Refuse(String, Duration),
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
        let out = match self.processor.process(data, acks.metadata()) {
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

    fn takes_encoded(&self) -> bool {
        self.processor.passes_encoded() && self.next.takes_encoded()
    }

    async fn consume_encoded(
        &self,
        data: EncodedBatch,
        acks: Acks,
    ) -> Result<(), ConsumeError<EncodedBatch>> {
        match self.processor.admit(&data) {
            Admit::Pass => self.next.consume_encoded(data, acks).await,
            Admit::Refuse(reason, retry_after) => {
                Err(ConsumeError::refused(reason, retry_after, data, acks))
            }
            Admit::Decode => {
                let decoded = crate::convert::otlp_proto::decode_batch(&data)
                    .map_err(ConsumeError::undecodable)?;
                self.consume(decoded, acks)
                    .await
                    .map_err(|e| e.for_bytes(data))
            }
        }
    }
}
