//! What every factory shares, whatever its kind: the [`Factory`] trait,
//! a component as configured ([`Configured`]), and the registries' view of
//! a factory ([`AnyFactory`]).

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::settings::de::{from_node, DeError};
use crate::settings::yaml::Node;

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
/// per-kind definition traits ([`ReceiverDef`](super::ReceiverDef), [`ExporterDef`](super::ExporterDef), ...) are
/// implemented for it, so the graph builds it without knowing its type.
pub struct Configured<F: Factory> {
    pub(super) factory: &'static F,
    pub(super) config: F::Config,
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
pub(crate) fn configure<F: Factory>(
    factory: &'static F,
    node: &Node,
) -> Result<Configured<F>, DeError> {
    let config: F::Config = from_node(node)?;
    factory.validate(&config)?;
    Ok(Configured { factory, config })
}

/// Implements [`AnyFactory`] for every factory of one kind.
macro_rules! any_factory {
    ($factory:ident, $def:ident) => {
        impl<F: $factory> $crate::component::factory::AnyFactory<dyn $def> for F {
            fn name(&self) -> &'static str {
                $crate::component::factory::Factory::type_name(self)
            }
            fn other_names(&self) -> &'static [&'static str] {
                $crate::component::factory::Factory::aliases(self)
            }
            fn parse(
                &'static self,
                node: &$crate::settings::yaml::Node,
            ) -> Result<std::sync::Arc<dyn $def>, $crate::settings::de::DeError> {
                Ok(std::sync::Arc::new($crate::component::factory::configure(
                    self, node,
                )?))
            }
        }
    };
}
pub(crate) use any_factory;

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
