//! The pipeline graph: the [`Service`] that builds the components of a
//! [`Config`](crate::config::Config) through their factories, wires their
//! [`Consumer`](crate::consumer::Consumer)s, runs them, and shuts them down in order; and the fan-out
//! from one receiver to several pipelines.
//!
//! Data moves as owned [`Telemetry`](crate::signal::Telemetry) values. Every hand-off is bounded and
//! non-blocking: a stage that cannot take data right now refuses it and gives
//! it back ([`Refused`](crate::consumer::Refused)), and receivers turn that
//! into gRPC `UNAVAILABLE` or HTTP 503 so the sender retries.

mod fanout;
mod graph;

pub use fanout::PipelineFanout;
pub use graph::{Service, ShutdownReport};
