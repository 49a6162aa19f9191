//! spanwire: a telemetry pipeline daemon for AI agents on AWS.
//!
//! Configured like the OpenTelemetry Collector (receivers → processors →
//! exporters wired in `service.pipelines`); the data inside pipelines is the
//! `opentelemetry-proto` structs. See `ARCHITECTURE.md` for the map.

pub mod aws;
pub mod component;
pub mod config;
pub mod connectors;
pub mod consumer;
pub mod convert;
pub mod exporters;
pub mod extensions;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod net;
pub mod pipeline;
pub mod processors;
pub mod proto;
pub mod queue;
pub mod receivers;
pub mod rpc;
pub mod settings;
pub mod signal;
pub mod telemetry;

/// Every component spanwire ships: the five registries, one per kind.
pub fn components() -> component::Registry {
    component::Registry {
        receivers: receivers::FACTORIES,
        processors: processors::FACTORIES,
        exporters: exporters::FACTORIES,
        connectors: connectors::FACTORIES,
        extensions: extensions::FACTORIES,
    }
}
