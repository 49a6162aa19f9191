//! Pure conversions between data formats: no I/O, easy to test and benchmark.

pub mod bedrock;
pub mod otlp_json;
pub mod xray;
