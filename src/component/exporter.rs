//! Exporters: where data leaves. An exporter implements [`Export`] (send one
//! batch, say whether a failure is worth retrying); its factory returns it
//! with its queue and retry settings ([`BuiltExporter`]), and the graph puts
//! it behind its own bounded sending queue and workers.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::auth::Authenticators;
use super::factory::{any_factory, Configured, Definition, Factory};
use super::id::ComponentId;
use crate::consumer::StartError;
use crate::settings::types::{QueueConfig, RetryConfig};
use crate::signal::{EncodedBatch, Metadata, Payload, Signal, Telemetry};

/// What a successful export reports.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ExportOk {
    /// Items the backend rejected (OTLP partial success).
    pub rejected: u64,
    /// The backend's message about them.
    pub message: String,
}

/// Why an export failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExportError {
    /// Worth retrying (UNAVAILABLE, 429, 502–504, connection errors, timeouts).
    #[error("{reason}")]
    Retryable {
        /// What happened.
        reason: String,
        /// The backend's hint (Retry-After / RetryInfo).
        retry_after: Option<Duration>,
    },
    /// Not worth retrying (400, invalid data, auth).
    #[error("{0}")]
    Permanent(String),
}

/// Sends one batch to a destination.
#[async_trait]
pub trait Export: Send + Sync + 'static {
    /// What the exporter remembers about one batch between attempts (e.g.
    /// the X-Ray documents still unsent), so a retry re-sends only what is
    /// missing: `Default` for the first attempt, then handed back on every
    /// retry of the same batch. `()` for exporters that send a batch whole.
    type Progress: Default + Send + Sync + 'static;

    /// Sends `data`; may be called again with the same data and `progress`
    /// to retry. `metadata` is the client metadata the batch carries (empty
    /// unless a receiver kept it and every stage since let it through).
    async fn export(
        &self,
        data: &Arc<Telemetry>,
        metadata: &Metadata,
        progress: &mut Self::Progress,
    ) -> Result<ExportOk, ExportError>;

    /// Items of `data` still undelivered according to `progress`, for exact
    /// loss counts when retries end; `None` means all of them.
    fn pending(&self, _data: &Telemetry, _progress: &Self::Progress) -> Option<usize> {
        None
    }

    /// Whether [`Export::export_encoded`] works: true for exporters that send
    /// OTLP protobuf as is (so the batch processor may hand them bytes).
    fn takes_encoded(&self) -> bool {
        false
    }

    /// Sends a batch already encoded as an OTLP export request; may be
    /// called again with the same data and `progress` to retry, as
    /// [`Export::export`]. Only called when [`Export::takes_encoded`] is true.
    async fn export_encoded(
        &self,
        data: &EncodedBatch,
        _metadata: &Metadata,
        _progress: &mut Self::Progress,
    ) -> Result<ExportOk, ExportError> {
        Err(ExportError::Permanent(format!(
            "this exporter does not send encoded batches ({} {})",
            data.items,
            data.signal.item_name()
        )))
    }

    /// [`Export::pending`] for an encoded batch; `None` (all of it) unless
    /// the exporter sends encoded batches in parts.
    fn pending_encoded(&self, _data: &EncodedBatch, _progress: &Self::Progress) -> Option<usize> {
        None
    }

    /// Flushes and closes, after the last export.
    async fn shutdown(&self) {}
}

/// One batch on its way out: the exporter, the batch, and the exporter's
/// typed [`Export::Progress`] for it. The retry loop drives it.
#[async_trait]
pub trait Delivery: Send {
    /// One attempt at sending what is still unsent.
    async fn attempt(&mut self) -> Result<ExportOk, ExportError>;

    /// Items still undelivered (`None`: all of them).
    fn pending(&self) -> Option<usize>;
}

struct TypedDelivery<E: Export> {
    export: Arc<E>,
    data: Payload,
    metadata: Metadata,
    progress: E::Progress,
}

#[async_trait]
impl<E: Export> Delivery for TypedDelivery<E> {
    async fn attempt(&mut self) -> Result<ExportOk, ExportError> {
        match &self.data {
            Payload::Structs(d) => {
                self.export
                    .export(d, &self.metadata, &mut self.progress)
                    .await
            }
            Payload::Encoded(e) => {
                self.export
                    .export_encoded(e, &self.metadata, &mut self.progress)
                    .await
            }
        }
    }

    fn pending(&self) -> Option<usize> {
        match &self.data {
            Payload::Structs(d) => self.export.pending(d, &self.progress),
            Payload::Encoded(e) => self.export.pending_encoded(e, &self.progress),
        }
    }
}

/// An exporter as queues hold it, whatever its progress type.
#[async_trait]
pub trait DynExport: Send + Sync + 'static {
    /// Begins delivering `data`, which carries `metadata` (no I/O until
    /// [`Delivery::attempt`]).
    fn begin(self: Arc<Self>, data: Payload, metadata: Metadata) -> Box<dyn Delivery>;
    /// See [`Export::takes_encoded`].
    fn takes_encoded(&self) -> bool;
    /// See [`Export::shutdown`].
    async fn shutdown(&self);
}

#[async_trait]
impl<E: Export> DynExport for E {
    fn begin(self: Arc<Self>, data: Payload, metadata: Metadata) -> Box<dyn Delivery> {
        Box::new(TypedDelivery {
            export: self,
            data,
            metadata,
            progress: E::Progress::default(),
        })
    }

    fn takes_encoded(&self) -> bool {
        Export::takes_encoded(self)
    }

    async fn shutdown(&self) {
        Export::shutdown(self).await
    }
}

/// An exporter ready to run, with its queue and retry settings.
pub struct BuiltExporter {
    /// The sender.
    pub export: Arc<dyn DynExport>,
    /// Its queue settings.
    pub queue: QueueConfig,
    /// Its retry settings.
    pub retry: RetryConfig,
}

impl BuiltExporter {
    /// `export` behind `queue`, retried as `retry` says.
    pub fn new(export: impl Export, queue: QueueConfig, retry: RetryConfig) -> BuiltExporter {
        BuiltExporter {
            export: Arc::new(export),
            queue,
            retry,
        }
    }
}

/// What an exporter is built with.
pub struct ExporterContext<'a> {
    /// Its id.
    pub id: &'a ComponentId,
    /// The client authenticators of the started extensions.
    pub auth: &'a Authenticators,
}

impl ExporterContext<'_> {
    /// The id as text, for logs and self-metrics labels.
    pub fn name(&self) -> String {
        self.id.to_string()
    }
}

/// The factory of one exporter type.
pub trait ExporterFactory: Factory {
    /// Signals an exporter with `config` takes.
    fn signals(&self, _config: &Self::Config) -> &'static [Signal] {
        &Signal::ALL
    }

    /// Addresses the exporter itself listens on (e.g. a scrape endpoint).
    fn listen_endpoints(&self, _config: &Self::Config) -> Vec<String> {
        Vec::new()
    }

    /// The extensions it names under `auth.authenticator`, in order.
    fn authenticators<'c>(&self, _config: &'c Self::Config) -> &'c [String] {
        &[]
    }

    /// Builds it (no I/O that may block start-up).
    fn build(
        &self,
        config: &Self::Config,
        ctx: ExporterContext<'_>,
    ) -> Result<BuiltExporter, StartError>;
}

/// A configured exporter, as the graph sees it.
pub trait ExporterDef: Definition {
    /// Signals it takes.
    fn signals(&self) -> &'static [Signal];
    /// Addresses it listens on.
    fn listen_endpoints(&self) -> Vec<String>;
    /// The extensions it names under `auth.authenticator`, in order.
    fn authenticators(&self) -> &[String];
    /// Builds it.
    fn build(&self, ctx: ExporterContext<'_>) -> Result<BuiltExporter, StartError>;
}

impl<F: ExporterFactory> ExporterDef for Configured<F> {
    fn signals(&self) -> &'static [Signal] {
        self.factory.signals(&self.config)
    }
    fn listen_endpoints(&self) -> Vec<String> {
        self.factory.listen_endpoints(&self.config)
    }
    fn authenticators(&self) -> &[String] {
        self.factory.authenticators(&self.config)
    }
    fn build(&self, ctx: ExporterContext<'_>) -> Result<BuiltExporter, StartError> {
        self.factory.build(&self.config, ctx)
    }
}

any_factory!(ExporterFactory, ExporterDef);
