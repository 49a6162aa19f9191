//! Exporters: where data leaves spanwire. Each exporter implements [`Export`]
//! (send one batch, say whether a failure is worth retrying); the shared
//! [`queue`] gives every exporter its own bounded sending queue, consumers and
//! retry loop, so one slow exporter never stalls another beyond its own queue.

pub mod awscloudwatchlogs;
pub mod awsemf;
pub mod awsxray;
pub mod cwlogs;
pub mod debug;
pub mod disk_queue;
pub mod file;
pub mod otlp;
pub mod otlphttp;
pub mod prometheus;
pub mod queue;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::de::{from_node, DeError};
use crate::config::types::{QueueConfig, RetryConfig};
use crate::config::yaml::Node;
use crate::config::ComponentId;
use crate::consumer::StartError;
use crate::signal::{EncodedBatch, Signal, Telemetry};

/// The typed config of one exporter.
#[derive(Debug, Clone)]
pub enum ExporterConfig {
    /// `otlp` / `otlp_grpc`: OTLP over gRPC.
    Otlp(otlp::OtlpExporterConfig),
    /// `otlphttp` / `otlp_http`: OTLP over HTTP.
    OtlpHttp(otlphttp::OtlpHttpExporterConfig),
    /// `debug`: to stderr.
    Debug(debug::DebugConfig),
    /// `file`: OTLP/JSON lines to a file.
    File(file::FileConfig),
    /// `awsxray`: spans to AWS X-Ray.
    AwsXray(awsxray::AwsXrayExporterConfig),
    /// `prometheus`: a `/metrics` endpoint to scrape.
    Prometheus(prometheus::PrometheusExporterConfig),
    /// `awsemf`: metrics as CloudWatch Embedded Metric Format log events.
    AwsEmf(awsemf::AwsEmfExporterConfig),
    /// `awscloudwatchlogs`: log records to a CloudWatch Logs stream.
    AwsCloudWatchLogs(awscloudwatchlogs::AwsCloudWatchLogsExporterConfig),
}

impl ExporterConfig {
    /// Exporter types spanwire knows.
    pub const KINDS: &'static [&'static str] = &[
        "otlp",
        "otlp_grpc",
        "otlphttp",
        "otlp_http",
        "debug",
        "file",
        "awsxray",
        "prometheus",
        "awsemf",
        "awscloudwatchlogs",
    ];

    /// Parses the section of an exporter of type `kind`; `None` for an unknown type.
    pub fn parse(kind: &str, node: &Node) -> Option<Result<ExporterConfig, DeError>> {
        Some(match kind {
            "otlp" | "otlp_grpc" => from_node::<otlp::OtlpExporterConfig>(node)
                .and_then(|c| c.validate().map(|_| c))
                .map(ExporterConfig::Otlp),
            "otlphttp" | "otlp_http" => from_node::<otlphttp::OtlpHttpExporterConfig>(node)
                .and_then(|c| c.validate().map(|_| c))
                .map(ExporterConfig::OtlpHttp),
            "debug" => from_node::<debug::DebugConfig>(node).map(ExporterConfig::Debug),
            "file" => from_node::<file::FileConfig>(node)
                .and_then(|c| c.validate().map(|_| c))
                .map(ExporterConfig::File),
            "awsxray" => from_node::<awsxray::AwsXrayExporterConfig>(node)
                .and_then(|c| c.validate().map(|_| c))
                .map(ExporterConfig::AwsXray),
            "prometheus" => from_node::<prometheus::PrometheusExporterConfig>(node)
                .and_then(|c| c.validate().map(|_| c))
                .map(ExporterConfig::Prometheus),
            "awsemf" => from_node::<awsemf::AwsEmfExporterConfig>(node)
                .and_then(|c| c.validate().map(|_| c))
                .map(ExporterConfig::AwsEmf),
            "awscloudwatchlogs" => {
                from_node::<awscloudwatchlogs::AwsCloudWatchLogsExporterConfig>(node)
                    .and_then(|c| c.validate().map(|_| c))
                    .map(ExporterConfig::AwsCloudWatchLogs)
            }
            _ => return None,
        })
    }

    /// Signals the exporter takes.
    pub fn signals(&self) -> &'static [Signal] {
        match self {
            ExporterConfig::AwsXray(_) => &[Signal::Traces],
            ExporterConfig::Prometheus(_) => prometheus::SIGNALS,
            ExporterConfig::AwsEmf(_) => awsemf::SIGNALS,
            ExporterConfig::AwsCloudWatchLogs(_) => awscloudwatchlogs::SIGNALS,
            _ => &Signal::ALL,
        }
    }

    /// Addresses the exporter itself listens on (e.g. a scrape endpoint).
    pub fn listen_endpoints(&self) -> Vec<String> {
        match self {
            ExporterConfig::Prometheus(c) => vec![c.endpoint.clone()],
            _ => Vec::new(),
        }
    }

    /// Builds the exporter with its queue and retry settings.
    pub fn build(&self, id: &ComponentId) -> Result<Built, StartError> {
        let name = id.to_string();
        Ok(match self {
            ExporterConfig::Otlp(c) => Built {
                export: Arc::new(otlp::OtlpExporter::new(c, name)?),
                queue: c.sending_queue.clone(),
                retry: c.retry_on_failure.clone(),
            },
            ExporterConfig::OtlpHttp(c) => Built {
                export: Arc::new(otlphttp::OtlpHttpExporter::new(c, name)?),
                queue: c.sending_queue.clone(),
                retry: c.retry_on_failure.clone(),
            },
            ExporterConfig::Debug(c) => Built {
                export: Arc::new(debug::DebugExporter::new(c)),
                queue: QueueConfig {
                    enabled: true,
                    num_consumers: 1,
                    queue_size: 100,
                    ..QueueConfig::default()
                },
                retry: RetryConfig {
                    enabled: false,
                    ..RetryConfig::default()
                },
            },
            ExporterConfig::AwsXray(c) => Built {
                export: Arc::new(awsxray::AwsXrayExporter::new(c, name)?),
                queue: c.sending_queue.clone(),
                retry: c.retry_on_failure.clone(),
            },
            ExporterConfig::AwsEmf(c) => Built {
                export: Arc::new(awsemf::AwsEmfExporter::new(c, name)?),
                queue: c.sending_queue.clone(),
                retry: c.retry_on_failure.clone(),
            },
            ExporterConfig::AwsCloudWatchLogs(c) => Built {
                export: Arc::new(awscloudwatchlogs::AwsCloudWatchLogsExporter::new(c, name)?),
                queue: c.sending_queue.clone(),
                retry: c.retry_on_failure.clone(),
            },
            ExporterConfig::Prometheus(c) => Built {
                export: Arc::new(prometheus::PrometheusExporter::new(c, name)?),
                queue: QueueConfig {
                    enabled: true,
                    num_consumers: 1,
                    queue_size: 100,
                    ..QueueConfig::default()
                },
                retry: RetryConfig {
                    enabled: false,
                    ..RetryConfig::default()
                },
            },
            ExporterConfig::File(c) => Built {
                export: Arc::new(file::FileExporter::new(c)?),
                queue: QueueConfig {
                    enabled: true,
                    num_consumers: 1,
                    queue_size: 1000,
                    ..QueueConfig::default()
                },
                retry: RetryConfig {
                    enabled: true,
                    initial_interval: Duration::from_millis(100),
                    max_interval: Duration::from_secs(5),
                    max_elapsed_time: Duration::from_secs(60),
                    ..RetryConfig::default()
                },
            },
        })
    }
}

/// An exporter ready to run.
pub struct Built {
    /// The sender.
    pub export: Arc<dyn Export>,
    /// Its queue settings.
    pub queue: QueueConfig,
    /// Its retry settings.
    pub retry: RetryConfig,
}

/// What a successful export reports.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ExportOk {
    /// Items the backend rejected (OTLP partial success).
    pub rejected: u64,
    /// The backend's message about them.
    pub message: String,
}

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

/// Why an export failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExportError {
    /// Worth retrying (UNAVAILABLE, 429, 502–504, connection errors, timeouts).
    #[error("{reason}")]
    Retryable {
        /// What happened.
        reason: String,
        /// The backend's hint (Retry-After / RetryInfo).
        retry_after: Option<Duration>,
    },
    /// Not worth retrying (400, invalid data, auth).
    #[error("{0}")]
    Permanent(String),
}

/// What an exporter remembers about one batch between attempts (e.g. which
/// documents are still unsent), so a retry re-sends only what is missing. It
/// starts as `None` and is handed back on every retry of the same batch.
pub type Progress = Option<Box<dyn std::any::Any + Send + Sync>>;

/// Sends one batch to a destination.
#[async_trait]
pub trait Export: Send + Sync + 'static {
    /// Sends `data`; may be called again with the same data and `progress` to retry.
    async fn export(
        &self,
        data: &Arc<Telemetry>,
        progress: &mut Progress,
    ) -> Result<ExportOk, ExportError>;

    /// Items of `data` still undelivered according to `progress`, for exact
    /// loss counts when retries end; `None` means all of them.
    fn pending(&self, _data: &Telemetry, _progress: &Progress) -> Option<usize> {
        None
    }

    /// Whether [`Export::export_encoded`] works: true for exporters that send
    /// OTLP protobuf as is (so the batch processor may hand them bytes).
    fn takes_encoded(&self) -> bool {
        false
    }

    /// Sends a batch already encoded as an OTLP export request; may be called
    /// again to retry. Only called when [`Export::takes_encoded`] is true.
    async fn export_encoded(
        &self,
        data: &EncodedBatch,
        _progress: &mut Progress,
    ) -> Result<ExportOk, ExportError> {
        Err(ExportError::Permanent(format!(
            "this exporter does not send encoded batches ({} {})",
            data.items,
            data.signal.item_name()
        )))
    }

    /// Flushes and closes, after the last export.
    async fn shutdown(&self) {}
}
