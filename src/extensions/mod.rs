//! Extensions: components outside the data path (health checks, ...).

pub mod health_check;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::de::{from_node, DeError};
use crate::config::yaml::Node;
use crate::consumer::StartError;
pub use health_check::Health;

/// The typed config of one extension.
#[derive(Debug, Clone)]
pub enum ExtensionConfig {
    /// `health_check`.
    HealthCheck(health_check::HealthCheckConfig),
}

impl ExtensionConfig {
    /// Extension types spanwire knows.
    pub const KINDS: &'static [&'static str] = &["health_check"];

    /// Parses the section of an extension of type `kind`; `None` for an unknown type.
    pub fn parse(kind: &str, node: &Node) -> Option<Result<ExtensionConfig, DeError>> {
        match kind {
            "health_check" => Some(
                from_node::<health_check::HealthCheckConfig>(node)
                    .and_then(|c| c.validate().map(|_| c))
                    .map(ExtensionConfig::HealthCheck),
            ),
            _ => None,
        }
    }

    /// Addresses it listens on.
    pub fn endpoints(&self) -> Vec<String> {
        match self {
            ExtensionConfig::HealthCheck(c) => vec![c.endpoint.clone()],
        }
    }

    /// Starts it.
    pub async fn start(
        &self,
        health: &Health,
        cancel: CancellationToken,
    ) -> Result<Vec<JoinHandle<()>>, StartError> {
        match self {
            ExtensionConfig::HealthCheck(c) => {
                Ok(vec![health_check::start(c, health.clone(), cancel).await?])
            }
        }
    }
}
