//! spanwire: a telemetry pipeline daemon for AI agents on AWS.
//!
//! Configured like the OpenTelemetry Collector (receivers → processors →
//! exporters wired in `service.pipelines`); the data inside pipelines is the
//! `opentelemetry-proto` structs. See `ARCHITECTURE.md` for the map.
#![warn(missing_docs)]

pub mod aws;
pub mod config;
pub mod consumer;
pub mod connectors;
pub mod convert;
pub mod exporters;
pub mod extensions;
pub mod fuzzing;
pub mod net;
pub mod pipeline;
pub mod processors;
pub mod receivers;
pub mod rpc;
pub mod signal;
pub mod telemetry;
