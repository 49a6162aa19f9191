//! Exporters: where data leaves spanwire. Each exporter is one file here
//! with its config, its [`ExporterFactory`](crate::component::ExporterFactory)
//! and its [`Export`]; [`FACTORIES`] lists them. The graph puts every
//! exporter behind its own bounded sending queue, consumers and retry loop
//! ([`crate::queue`]), so one slow exporter never stalls another beyond its
//! own queue.

pub mod awscloudwatchlogs;
pub mod awsemf;
pub mod awsxray;
pub mod cwlogs;
pub mod debug;
pub mod file;
pub mod otlp;
pub mod otlphttp;
pub mod prometheus;

use crate::component::{ExportOk, ExporterDef, Factories};

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
];

/// An OTLP export response (`Export{Trace,Metrics,Logs}ServiceResponse`), read
/// for its partial success by the `otlp` and `otlphttp` exporters.
pub(crate) trait OtlpResponse: prost::Message + Default + Send + Sync + 'static {
    /// `partial_success`, as rejected items and the backend's message.
    fn into_export_ok(self) -> ExportOk;
}

fn export_ok(rejected: i64, message: String) -> ExportOk {
    ExportOk {
        rejected: rejected.max(0) as u64,
        message,
    }
}

impl OtlpResponse for opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse {
    fn into_export_ok(self) -> ExportOk {
        self.partial_success
            .map(|p| export_ok(p.rejected_spans, p.error_message))
            .unwrap_or_default()
    }
}

impl OtlpResponse
    for opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse
{
    fn into_export_ok(self) -> ExportOk {
        self.partial_success
            .map(|p| export_ok(p.rejected_data_points, p.error_message))
            .unwrap_or_default()
    }
}

impl OtlpResponse for opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse {
    fn into_export_ok(self) -> ExportOk {
        self.partial_success
            .map(|p| export_ok(p.rejected_log_records, p.error_message))
            .unwrap_or_default()
    }
}
