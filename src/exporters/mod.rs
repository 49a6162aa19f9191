//! Exporters: where data leaves spanwire. Each exporter is one file here
//! with its config, its [`ExporterFactory`](crate::component::ExporterFactory)
//! and its [`Export`](crate::component::Export); [`FACTORIES`] lists them. The graph puts every
//! exporter behind its own bounded sending queue, consumers and retry loop
//! ([`crate::queue`]), so one slow exporter never stalls another beyond its
//! own queue.

pub mod awscloudwatchlogs;
pub mod awsemf;
pub mod awskinesis;
pub mod awsxray;
pub mod cwlogs;
pub mod debug;
pub mod file;
pub mod http_sender;
pub mod live;
pub mod otlp;
pub mod otlphttp;
mod partial_success;
pub mod prometheus;
pub mod prometheusremotewrite;

use crate::component::{ExporterDef, Factories};

/// The exporter registry: every type a config may name under `exporters:`.
pub static FACTORIES: Factories<dyn ExporterDef> = &[
    &otlp::OtlpFactory,
    &otlphttp::OtlpHttpFactory,
    &debug::DebugFactory,
    &file::FileFactory,
    &awsxray::AwsXrayFactory,
    &prometheus::PrometheusFactory,
    &awsemf::AwsEmfFactory,
    &awscloudwatchlogs::AwsCloudWatchLogsFactory,
    &prometheusremotewrite::PrometheusRemoteWriteFactory,
    &live::LiveFactory,
    &awskinesis::AwsKinesisExporterFactory,
];
