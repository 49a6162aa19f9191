//! Connectors: an exporter at the end of one pipeline and a receiver at the
//! start of another, as in the OpenTelemetry Collector (e.g. spans in,
//! metrics out). Each connector is one file here with its config and its
//! [`ConnectorFactory`](crate::component::ConnectorFactory); [`FACTORIES`]
//! lists them.

pub mod agentmetrics;

use crate::component::{ConnectorDef, Factories};

/// The connector registry: every type a config may name under `connectors:`.
pub static FACTORIES: Factories<dyn ConnectorDef> = &[&agentmetrics::AgentMetricsFactory];
