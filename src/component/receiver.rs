//! Receivers: where data enters. A receiver binds its listeners (or starts
//! its readers) and feeds the [`Consumers`] of the pipelines that list it.

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::factory::{any_factory, Configured, Definition, Factory};
use super::id::ComponentId;
use crate::consumer::{Consumers, StartError};
use crate::signal::Signal;

/// What a receiver is started with.
pub struct ReceiverContext<'a> {
    /// Its id.
    pub id: &'a ComponentId,
    /// The consumers of the pipelines that list it, one per signal.
    pub consumers: Consumers,
    /// Fires when the service stops accepting data.
    pub cancel: CancellationToken,
    /// Fires at the shutdown deadline: stop retrying refused data and give
    /// up what is still held.
    pub stop: CancellationToken,
}

/// The factory of one receiver type.
#[async_trait]
pub trait ReceiverFactory: Factory {
    /// Signals a receiver with `config` can produce.
    fn signals(&self, config: &Self::Config) -> &'static [Signal];

    /// Addresses it listens on (checked for clashes before start).
    fn endpoints(&self, _config: &Self::Config) -> Vec<String> {
        Vec::new()
    }

    /// Binds and starts it; its tasks end when `ctx.cancel` fires.
    async fn start(
        &self,
        config: &Self::Config,
        ctx: ReceiverContext<'_>,
    ) -> Result<Vec<JoinHandle<()>>, StartError>;
}

/// A configured receiver, as the graph sees it.
#[async_trait]
pub trait ReceiverDef: Definition {
    /// Signals it can produce.
    fn signals(&self) -> &'static [Signal];
    /// Addresses it listens on.
    fn endpoints(&self) -> Vec<String>;
    /// Binds and starts it.
    async fn start(&self, ctx: ReceiverContext<'_>) -> Result<Vec<JoinHandle<()>>, StartError>;
}

#[async_trait]
impl<F: ReceiverFactory> ReceiverDef for Configured<F> {
    fn signals(&self) -> &'static [Signal] {
        self.factory.signals(&self.config)
    }
    fn endpoints(&self) -> Vec<String> {
        self.factory.endpoints(&self.config)
    }
    async fn start(&self, ctx: ReceiverContext<'_>) -> Result<Vec<JoinHandle<()>>, StartError> {
        self.factory.start(&self.config, ctx).await
    }
}

any_factory!(ReceiverFactory, ReceiverDef);
