//! Pure conversions between data formats: no I/O, easy to test and benchmark.

pub mod aws_spans;
pub mod bedrock;
pub mod cwl;
pub mod ecs_stats;
pub mod emf;
pub mod genai;
pub(crate) mod json;
pub mod kinesis;
pub mod log_events;
pub mod otlp_index;
pub mod otlp_json;
pub mod otlp_proto;
pub mod otlp_view;
pub mod prometheus;
pub mod prometheus_remote_write;
pub mod split;
pub mod xray;
