//! Connectors: the exporter at the end of one pipeline and the receiver at
//! the start of another (e.g. spans in, metrics out). A connector id is
//! listed under a pipeline's `exporters` on its input side and under another
//! pipeline's `receivers` on its output side.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::factory::{any_factory, Configured, Definition, Factory};
use super::id::ComponentId;
use crate::consumer::{Consumers, StartError};
use crate::signal::{Signal, Telemetry};

/// A running connector's two sides.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// The exporter side: a batch from a pipeline that lists it as an
    /// exporter, shared with that pipeline's other exporters (read it, or
    /// `Arc::unwrap_or_clone` it to own it). It has no queue and no retry:
    /// it takes the batch at once, or says why not (the batch is then
    /// counted as failed and its acknowledgements marked dropped).
    async fn consume(&self, data: Arc<Telemetry>) -> Result<(), String>;

    /// The receiver side: starts emitting into `output`, the pipelines that
    /// list it as a receiver. Its tasks end after `cancel` fires, once they
    /// have passed on what they hold.
    fn start(&self, output: Consumers, cancel: CancellationToken) -> Vec<JoinHandle<()>>;
}

/// The factory of one connector type.
pub trait ConnectorFactory: Factory {
    /// Signals it takes (where it is listed as an exporter).
    fn input_signals(&self, config: &Self::Config) -> &'static [Signal];

    /// Signals it produces (where it is listed as a receiver).
    fn output_signals(&self, config: &Self::Config) -> &'static [Signal];

    /// Builds it.
    fn build(
        &self,
        config: &Self::Config,
        id: &ComponentId,
    ) -> Result<Arc<dyn Connector>, StartError>;
}

/// A configured connector, as the graph sees it.
pub trait ConnectorDef: Definition {
    /// Signals it takes.
    fn input_signals(&self) -> &'static [Signal];
    /// Signals it produces.
    fn output_signals(&self) -> &'static [Signal];
    /// Builds it.
    fn build(&self, id: &ComponentId) -> Result<Arc<dyn Connector>, StartError>;
}

impl<F: ConnectorFactory> ConnectorDef for Configured<F> {
    fn input_signals(&self) -> &'static [Signal] {
        self.factory.input_signals(&self.config)
    }
    fn output_signals(&self) -> &'static [Signal] {
        self.factory.output_signals(&self.config)
    }
    fn build(&self, id: &ComponentId) -> Result<Arc<dyn Connector>, StartError> {
        self.factory.build(&self.config, id)
    }
}

any_factory!(ConnectorFactory, ConnectorDef);
