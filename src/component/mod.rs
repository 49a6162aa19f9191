//! The component model: one factory trait per kind of component, one
//! registry per kind, and the contexts a factory builds from.
//!
//! A component is one file (or folder) under its kind's folder holding its
//! config struct, a unit struct implementing the kind's factory trait
//! ([`ReceiverFactory`], [`ProcessorFactory`], [`ExporterFactory`],
//! [`ConnectorFactory`], [`ExtensionFactory`]), and the running parts. Adding
//! one means that file plus one line in the kind's registry
//! (`receivers::FACTORIES`, ...). Every factory shares [`Factory`]: its type
//! name, the config it reads from the position-keeping YAML tree and that
//! config's validation, so errors keep file:line:col.
//!
//! `config` knows only registries (it asks a [`Registry`] to parse each
//! section into an opaque, already validated [`Configured`] component), and
//! the pipeline graph only calls `build`/`start` and wires
//! [`Consumer`](crate::consumer::Consumer)s; neither names a concrete component.

mod auth;
mod connector;
mod exporter;
mod extension;
mod factory;
mod id;
mod processor;
mod receiver;

pub use auth::{AuthError, Authenticators, ClientAuth};
pub use connector::{Connector, ConnectorDef, ConnectorFactory};
pub use exporter::{
    BuiltExporter, Delivery, DynExport, Export, ExportError, ExportOk, ExporterContext,
    ExporterDef, ExporterFactory,
};
pub use extension::{ExtensionContext, ExtensionDef, ExtensionFactory, Health, StartedExtension};
pub use factory::{find, names, AnyFactory, Configured, Definition, Factories, Factory};
pub use id::ComponentId;
pub use processor::{
    Admit, ProcessorContext, ProcessorDef, ProcessorFactory, ProcessorStage, Stage, StageTask,
    SyncProcessor,
};
pub use receiver::{ReceiverContext, ReceiverDef, ReceiverFactory};

/// One registry per kind: what a config may name.
#[derive(Clone, Copy)]
pub struct Registry {
    /// `receivers:` types.
    pub receivers: Factories<dyn ReceiverDef>,
    /// `processors:` types.
    pub processors: Factories<dyn ProcessorDef>,
    /// `exporters:` types.
    pub exporters: Factories<dyn ExporterDef>,
    /// `connectors:` types.
    pub connectors: Factories<dyn ConnectorDef>,
    /// `extensions:` types.
    pub extensions: Factories<dyn ExtensionDef>,
}
