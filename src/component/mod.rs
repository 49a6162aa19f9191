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
//! the pipeline graph only calls `build`/`start` and wires [`Consumer`]s
//! (crate::consumer::Consumer); neither names a concrete component.

mod connector;
mod exporter;
mod extension;
mod id;
mod processor;
mod receiver;

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;

pub use connector::{Connector, ConnectorDef, ConnectorFactory};
pub use exporter::{
    BuiltExporter, Delivery, DynExport, Export, ExportError, ExportOk, ExporterContext,
    ExporterDef, ExporterFactory,
};
pub use extension::{ExtensionContext, ExtensionDef, ExtensionFactory, Health};
pub use id::ComponentId;
pub use processor::{
    ProcessorContext, ProcessorDef, ProcessorFactory, ProcessorStage, Stage, StageTask,
    SyncProcessor,
};
pub use receiver::{ReceiverContext, ReceiverDef, ReceiverFactory};

use crate::config::de::{from_node, DeError};
use crate::config::yaml::Node;

/// What every factory has, whatever its kind: a type name, aliases, and a
/// config type read from YAML and validated.
pub trait Factory: Send + Sync + 'static {
    /// The typed config, deserialised from the component's YAML section
    /// (`#[serde(deny_unknown_fields)]`, defaults as the Collector's).
    type Config: DeserializeOwned + fmt::Debug + Send + Sync + 'static;

    /// The type name under its section (`otlp`, `batch`, ...).
    fn type_name(&self) -> &'static str;

    /// Other names the same type answers to (`otlp_grpc` for `otlp`).
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }

    /// Checks what serde cannot (ranges, combinations, endpoints).
    fn validate(&self, _config: &Self::Config) -> Result<(), DeError> {
        Ok(())
    }
}

/// A component as configured: its factory and its validated config. The
/// per-kind definition traits ([`ReceiverDef`], [`ExporterDef`], ...) are
/// implemented for it, so the graph builds it without knowing its type.
pub struct Configured<F: Factory> {
    factory: &'static F,
    config: F::Config,
}

impl<F: Factory> Configured<F> {
    /// The factory.
    pub fn factory(&self) -> &'static F {
        self.factory
    }

    /// The typed config.
    pub fn config(&self) -> &F::Config {
        &self.config
    }
}

impl<F: Factory> fmt::Debug for Configured<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(self.factory.type_name())
            .field("config", &self.config)
            .finish()
    }
}

/// Common to the per-kind definitions: reading the config back, typed.
pub trait Definition: fmt::Debug + Send + Sync {
    /// The component's type name.
    fn type_name(&self) -> &'static str;

    /// The typed config, for inspection (`downcast_ref` it to the
    /// component's config type).
    fn config_as(&self) -> &dyn std::any::Any;
}

impl<F: Factory> Definition for Configured<F> {
    fn type_name(&self) -> &'static str {
        self.factory.type_name()
    }

    fn config_as(&self) -> &dyn std::any::Any {
        &self.config
    }
}

/// A factory as a registry holds it: it parses a YAML section into `D`, the
/// kind's definition trait object. Implemented for every factory of a kind.
pub trait AnyFactory<D: ?Sized>: Send + Sync {
    /// The type name.
    fn name(&self) -> &'static str;
    /// Other names it answers to.
    fn other_names(&self) -> &'static [&'static str];
    /// Deserialises and validates a section.
    fn parse(&'static self, node: &Node) -> Result<Arc<D>, DeError>;
}

/// Deserialises and validates `node` for `factory`.
fn configure<F: Factory>(factory: &'static F, node: &Node) -> Result<Configured<F>, DeError> {
    let config: F::Config = from_node(node)?;
    factory.validate(&config)?;
    Ok(Configured { factory, config })
}

/// Implements [`AnyFactory`] for every factory of one kind.
macro_rules! any_factory {
    ($factory:ident, $def:ident) => {
        impl<F: $factory> $crate::component::AnyFactory<dyn $def> for F {
            fn name(&self) -> &'static str {
                $crate::component::Factory::type_name(self)
            }
            fn other_names(&self) -> &'static [&'static str] {
                $crate::component::Factory::aliases(self)
            }
            fn parse(
                &'static self,
                node: &$crate::config::yaml::Node,
            ) -> Result<std::sync::Arc<dyn $def>, $crate::config::de::DeError> {
                Ok(std::sync::Arc::new($crate::component::configure(
                    self, node,
                )?))
            }
        }
    };
}
use any_factory;

/// The factories of one kind, as a registry lists them.
pub type Factories<D> = &'static [&'static dyn AnyFactory<D>];

/// Finds the factory for `type_name` (its name or an alias).
pub fn find<D: ?Sized>(
    factories: Factories<D>,
    type_name: &str,
) -> Option<&'static dyn AnyFactory<D>> {
    factories
        .iter()
        .copied()
        .find(|f| f.name() == type_name || f.other_names().contains(&type_name))
}

/// The type names of a registry, aliases included, for error messages.
pub fn names<D: ?Sized>(factories: Factories<D>) -> Vec<&'static str> {
    factories
        .iter()
        .flat_map(|f| std::iter::once(f.name()).chain(f.other_names().iter().copied()))
        .collect()
}

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
