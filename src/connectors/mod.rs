//! Connectors: an exporter at the end of one pipeline and a receiver at the
//! start of another, as in the OpenTelemetry Collector (e.g. spans in, metrics
//! out). A connector id is listed under a pipeline's `exporters` on its input
//! side and under another pipeline's `receivers` on its output side.

pub mod agentmetrics;

use crate::config::de::{from_node, DeError};
use crate::config::yaml::Node;
use crate::signal::Signal;

/// The typed config of one connector.
#[derive(Debug, Clone)]
pub enum ConnectorConfig {
    /// `agentmetrics`: GenAI agent metrics from spans.
    AgentMetrics(agentmetrics::AgentMetricsConfig),
}

impl ConnectorConfig {
    /// Connector types spanwire knows.
    pub const KINDS: &'static [&'static str] = &["agentmetrics"];

    /// Parses the section of a connector of type `kind`; `None` for an unknown type.
    pub fn parse(kind: &str, node: &Node) -> Option<Result<ConnectorConfig, DeError>> {
        Some(match kind {
            "agentmetrics" => from_node::<agentmetrics::AgentMetricsConfig>(node)
                .and_then(|c| c.validate().map(|_| c))
                .map(ConnectorConfig::AgentMetrics),
            _ => return None,
        })
    }

    /// Signals it takes (where it is listed as an exporter).
    pub fn input_signals(&self) -> &'static [Signal] {
        match self {
            ConnectorConfig::AgentMetrics(_) => &[Signal::Traces],
        }
    }

    /// Signals it produces (where it is listed as a receiver).
    pub fn output_signals(&self) -> &'static [Signal] {
        match self {
            ConnectorConfig::AgentMetrics(_) => &[Signal::Metrics],
        }
    }
}
