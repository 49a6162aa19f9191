//! Exporter `awscloudwatchlogs`: log records → CloudWatch Logs events (a JSON
//! object per record, or the raw body) → PutLogEvents ([`super::cwlogs`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use metrics::Counter;
use serde::Deserialize;

use super::cwlogs::{check_destination, Pending, Sender, Settings};
use crate::aws::AwsSettings;
use crate::component::{
    BuiltExporter, Export, ExportError, ExportOk, ExporterContext, ExporterFactory, Factory,
};
use crate::consumer::StartError;
use crate::convert::log_events::{
    expand, record_message, record_time_ms, LogEvent, LogFormat, NameKind,
};
use crate::settings::de::DeError;
use crate::settings::types::{duration, QueueConfig, RetryConfig};
use crate::signal::{Signal, Telemetry};

/// Signals the exporter takes.
pub const SIGNALS: &[Signal] = &[Signal::Logs];

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_concurrency() -> usize {
    4
}

/// `exporters.awscloudwatchlogs`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AwsCloudWatchLogsExporterConfig {
    /// AWS region; default from AWS_REGION, the profile or IMDS.
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint URL override (VPC endpoint, or a local test server).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Role to assume for the calls.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// Deadline of one call.
    #[serde(default = "default_timeout", with = "duration")]
    pub request_timeout: Duration,
    /// Log group (required); placeholders such as `{ServiceName}` are filled
    /// from the resource.
    pub log_group_name: String,
    /// Log stream (required); placeholders as for the group.
    pub log_stream_name: String,
    /// Retention in days of log groups spanwire creates (0 = never expire).
    #[serde(default)]
    pub log_retention: i32,
    /// Write the body alone instead of a JSON object per record.
    #[serde(default)]
    pub raw_log: bool,
    /// PutLogEvents calls in flight.
    #[serde(default = "default_concurrency")]
    pub max_concurrent_requests: usize,
    /// Retry settings.
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    /// Queue settings.
    #[serde(default)]
    pub sending_queue: QueueConfig,
}

impl AwsCloudWatchLogsExporterConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        self.check().map_err(DeError::custom)
    }

    fn check(&self) -> Result<(), String> {
        crate::aws::check_settings(
            self.endpoint.as_deref(),
            self.role_arn.as_deref(),
            self.request_timeout,
            self.max_concurrent_requests,
        )?;
        check_destination(
            &self.log_group_name,
            &self.log_stream_name,
            self.log_retention,
        )?;
        self.sending_queue.validate()?;
        Ok(())
    }
}

/// The running exporter.
pub struct AwsCloudWatchLogsExporter {
    name: String,
    cfg: AwsCloudWatchLogsExporterConfig,
    sender: Sender,
    truncated: Counter,
}

impl AwsCloudWatchLogsExporter {
    /// Builds the exporter; the AWS client is made on first use.
    pub fn new(cfg: &AwsCloudWatchLogsExporterConfig, name: String) -> Result<Self, StartError> {
        Ok(AwsCloudWatchLogsExporter {
            sender: Sender::new(
                &name,
                Settings {
                    aws: AwsSettings {
                        region: cfg.region.clone(),
                        role_arn: cfg.role_arn.clone(),
                        timeout: cfg.request_timeout,
                    },
                    endpoint: cfg.endpoint.clone(),
                    log_retention: (cfg.log_retention != 0).then_some(cfg.log_retention),
                    concurrency: cfg.max_concurrent_requests,
                },
            ),
            truncated: metrics::counter!("spanwire_cwlogs_events_truncated_total", "exporter" => name.clone()),
            cfg: cfg.clone(),
            name,
        })
    }

    fn start(&self, data: &Telemetry) -> Pending {
        let Telemetry::Logs(rls) = data else {
            return Pending::default();
        };
        let now_ms = (crate::telemetry::unix_nanos_now() / 1_000_000) as i64;
        let format = if self.cfg.raw_log {
            LogFormat::Raw
        } else {
            LogFormat::Json
        };
        let mut streams: BTreeMap<(String, String), Vec<LogEvent>> = BTreeMap::new();
        let mut truncated = 0u64;
        for rl in rls {
            let res = rl
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            let key = (
                expand(&self.cfg.log_group_name, res, NameKind::Group),
                expand(&self.cfg.log_stream_name, res, NameKind::Stream),
            );
            let events = streams.entry(key).or_default();
            for sl in &rl.scope_logs {
                for r in &sl.log_records {
                    let (message, cut) = record_message(res, sl.scope.as_ref(), r, format);
                    truncated += cut as u64;
                    events.push(LogEvent {
                        timestamp_ms: record_time_ms(r, now_ms),
                        message,
                        items: 1,
                    });
                }
            }
        }
        if truncated > 0 {
            self.truncated.increment(truncated);
            tracing::warn!(exporter = %self.name, truncated, "log records over 256 KiB cut to fit one event");
        }
        self.sender.pending(streams.into_iter().collect(), now_ms)
    }
}

/// The `awscloudwatchlogs` exporter's factory.
pub struct AwsCloudWatchLogsFactory;

impl Factory for AwsCloudWatchLogsFactory {
    type Config = AwsCloudWatchLogsExporterConfig;
    fn type_name(&self) -> &'static str {
        "awscloudwatchlogs"
    }
    fn validate(&self, config: &AwsCloudWatchLogsExporterConfig) -> Result<(), DeError> {
        config.validate()
    }
}

impl ExporterFactory for AwsCloudWatchLogsFactory {
    fn signals(&self, _config: &AwsCloudWatchLogsExporterConfig) -> &'static [Signal] {
        SIGNALS
    }
    fn build(
        &self,
        config: &AwsCloudWatchLogsExporterConfig,
        ctx: ExporterContext<'_>,
    ) -> Result<BuiltExporter, StartError> {
        Ok(BuiltExporter::new(
            AwsCloudWatchLogsExporter::new(config, ctx.name())?,
            config.sending_queue.clone(),
            config.retry_on_failure.clone(),
        ))
    }
}

#[async_trait]
impl Export for AwsCloudWatchLogsExporter {
    type Progress = Option<Pending>;

    async fn export(
        &self,
        data: &Arc<Telemetry>,
        _metadata: &crate::signal::Metadata,
        progress: &mut Option<Pending>,
    ) -> Result<ExportOk, ExportError> {
        self.sender.export(progress, || self.start(data)).await
    }

    fn pending(&self, _data: &Telemetry, progress: &Option<Pending>) -> Option<usize> {
        super::cwlogs::pending_items(progress)
    }
}
