//! OTLP partial success, as the `otlp` and `otlphttp` exporters read it.

use crate::component::ExportOk;

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
