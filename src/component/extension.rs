//! Extensions: components outside the data path (health checks, ...).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::auth::ClientAuth;
use super::factory::{any_factory, Configured, Definition, Factory};
use super::id::ComponentId;
use crate::consumer::StartError;

const STARTING: u8 = 0;
const READY: u8 = 1;
const STOPPING: u8 = 2;
const FAILED: u8 = 3;

/// The service's state as health checks see it.
#[derive(Clone, Default)]
pub struct Health(Arc<AtomicU8>);

impl Health {
    /// All pipelines run.
    pub fn set_ready(&self) {
        // Only from starting: a failure seen during start-up stays visible.
        let _ = self
            .0
            .compare_exchange(STARTING, READY, Ordering::SeqCst, Ordering::SeqCst);
    }
    /// Shutdown has begun.
    pub fn set_stopping(&self) {
        self.0.store(STOPPING, Ordering::SeqCst);
    }
    /// A component stopped on its own; the service is no longer whole.
    pub fn set_failed(&self) {
        self.0.store(FAILED, Ordering::SeqCst);
    }
    /// Whether all pipelines run.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst) == READY
    }
    /// The state in words, as the health endpoint answers it.
    pub fn describe(&self) -> &'static str {
        match self.0.load(Ordering::SeqCst) {
            STARTING => "starting",
            READY => "ready",
            FAILED => "a component failed",
            _ => "shutting down",
        }
    }
}

/// What an extension is started with.
pub struct ExtensionContext<'a> {
    /// Its id.
    pub id: &'a ComponentId,
    /// The service's health.
    pub health: Health,
    /// Fires at the very end of shutdown.
    pub cancel: CancellationToken,
}

/// A started extension: its tasks, and the client authenticator it
/// provides, if it is one.
#[derive(Default)]
pub struct StartedExtension {
    /// Its tasks (ended by the context's `cancel`).
    pub tasks: Vec<JoinHandle<()>>,
    /// What exporters that name it under `auth.authenticator` use.
    pub auth: Option<Arc<dyn ClientAuth>>,
}

/// The factory of one extension type.
#[async_trait]
pub trait ExtensionFactory: Factory {
    /// Addresses it listens on (checked for clashes before start).
    fn endpoints(&self, _config: &Self::Config) -> Vec<String> {
        Vec::new()
    }

    /// Whether it is a client authenticator (so exporters may name it).
    fn is_authenticator(&self) -> bool {
        false
    }

    /// Whether, as an authenticator, it signs requests (so it must come
    /// last among an exporter's authenticators).
    fn signs_requests(&self) -> bool {
        false
    }

    /// Starts it.
    async fn start(
        &self,
        config: &Self::Config,
        ctx: ExtensionContext<'_>,
    ) -> Result<StartedExtension, StartError>;
}

/// A configured extension, as the graph sees it.
#[async_trait]
pub trait ExtensionDef: Definition {
    /// Addresses it listens on.
    fn endpoints(&self) -> Vec<String>;
    /// Whether it is a client authenticator.
    fn is_authenticator(&self) -> bool;
    /// Whether, as an authenticator, it signs requests.
    fn signs_requests(&self) -> bool;
    /// Starts it.
    async fn start(&self, ctx: ExtensionContext<'_>) -> Result<StartedExtension, StartError>;
}

#[async_trait]
impl<F: ExtensionFactory> ExtensionDef for Configured<F> {
    fn endpoints(&self) -> Vec<String> {
        self.factory.endpoints(&self.config)
    }
    fn is_authenticator(&self) -> bool {
        self.factory.is_authenticator()
    }
    fn signs_requests(&self) -> bool {
        self.factory.signs_requests()
    }
    async fn start(&self, ctx: ExtensionContext<'_>) -> Result<StartedExtension, StartError> {
        self.factory.start(&self.config, ctx).await
    }
}

any_factory!(ExtensionFactory, ExtensionDef);
