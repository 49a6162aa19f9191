//! Exporter `awsemf`: metrics → CloudWatch Embedded Metric Format log events
//! ([`crate::convert::emf`]) → PutLogEvents ([`super::cwlogs`]). CloudWatch
//! extracts the metrics from the events; the events stay searchable in Logs
//! Insights.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use metrics::Counter;
use regex::Regex;
use serde::Deserialize;

use super::cwlogs::{check_destination, Pending, Sender, Settings};
use super::prometheus::ResourceToTelemetry;
use crate::aws::AwsSettings;
use crate::component::{
    BuiltExporter, Export, ExportError, ExportOk, ExporterContext, ExporterFactory, Factory,
};
use crate::consumer::StartError;
use crate::convert::emf::{
    self, Deltas, DimensionRollup, LabelMatcher, MetricDeclaration, MAX_DIMENSIONS_PER_SET,
};
use crate::convert::log_events::{expand, LogEvent, NameKind};
use crate::settings::de::DeError;
use crate::settings::types::{duration, QueueConfig, RetryConfig};
use crate::signal::{Metadata, Signal, Telemetry};

/// Signals the exporter takes.
pub const SIGNALS: &[Signal] = &[Signal::Metrics];

fn default_group() -> String {
    "/metrics/spanwire".into()
}
fn default_stream() -> String {
    "spanwire".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_concurrency() -> usize {
    4
}
fn default_resolution() -> u32 {
    60
}
fn default_delta_expiration() -> Duration {
    Duration::from_secs(900)
}
fn default_max_series() -> usize {
    100_000
}
fn default_separator() -> String {
    ";".into()
}

/// A `label_matchers` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LabelMatcherConfig {
    /// Labels whose values are joined with `separator` and matched.
    pub label_names: Vec<String>,
    /// Joiner (default `;`).
    #[serde(default = "default_separator")]
    pub separator: String,
    /// Pattern (matches anywhere unless anchored, as in the OTel Collector).
    pub regex: String,
}

/// A `metric_declarations` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricDeclarationConfig {
    /// Dimension sets for the selected metrics (each used when a point has all its labels).
    #[serde(default)]
    pub dimensions: Vec<Vec<String>>,
    /// Patterns on metric names (match anywhere unless anchored).
    pub metric_name_selectors: Vec<String>,
    /// Label conditions; with any, one must match.
    #[serde(default)]
    pub label_matchers: Vec<LabelMatcherConfig>,
}

/// `exporters.awsemf`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AwsEmfExporterConfig {
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
    /// CloudWatch namespace; default `service.namespace/service.name` of the
    /// resource. Placeholders (`{TaskDefinitionFamily}`) as in the log group.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Log group; placeholders such as `{ServiceName}` are filled from the resource.
    #[serde(default = "default_group")]
    pub log_group_name: String,
    /// Log stream; placeholders as for the group.
    #[serde(default = "default_stream")]
    pub log_stream_name: String,
    /// Retention in days of log groups spanwire creates (0 = never expire).
    #[serde(default)]
    pub log_retention: i32,
    /// Extra dimension sets: `ZeroAndSingleDimensionRollup` (default),
    /// `SingleDimensionRollupOnly`, `NoDimensionRollup`.
    #[serde(default)]
    pub dimension_rollup_option: DimensionRollup,
    /// Which metrics to send and with which dimension sets; empty: all, with
    /// all their labels.
    #[serde(default)]
    pub metric_declarations: Vec<MetricDeclarationConfig>,
    /// Resource attributes become labels (dimensions) too.
    #[serde(default)]
    pub resource_to_telemetry_conversion: ResourceToTelemetry,
    /// 60 (standard) or 1 (high resolution).
    #[serde(default = "default_resolution")]
    pub storage_resolution: u32,
    /// Cumulative series not seen for this long are forgotten.
    #[serde(default = "default_delta_expiration", with = "duration")]
    pub delta_expiration: Duration,
    /// Most cumulative series remembered.
    #[serde(default = "default_max_series")]
    pub max_delta_series: usize,
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

fn compile(pattern: &str, what: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| format!("{what} `{pattern}` is not a valid regex: {e}"))
}

impl AwsEmfExporterConfig {
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
        if let Some(ns) = &self.namespace {
            // Placeholders as in log_group_name; the rest must be valid as it is.
            crate::convert::log_events::check_template(ns)?;
            let fixed = ns
                .split('{')
                .enumerate()
                .map(|(i, part)| match part.split_once('}') {
                    Some((_, after)) if i > 0 => after,
                    _ => part,
                })
                .collect::<String>();
            if !fixed.is_empty() && emf::sanitize_namespace(&fixed) != fixed {
                return Err(format!(
                    "namespace `{ns}` is not a valid CloudWatch namespace (letters, digits, `.-_/#:` and spaces, at most 255, not starting with AWS/)"
                ));
            }
        }
        if self.storage_resolution != 1 && self.storage_resolution != 60 {
            return Err("storage_resolution must be 1 or 60".into());
        }
        for (i, d) in self.metric_declarations.iter().enumerate() {
            if d.metric_name_selectors.is_empty() {
                return Err(format!(
                    "metric_declarations[{i}] needs at least one metric_name_selectors pattern"
                ));
            }
            for s in &d.dimensions {
                if s.len() > MAX_DIMENSIONS_PER_SET {
                    return Err(format!(
                        "metric_declarations[{i}]: a dimension set has {} keys; CloudWatch takes at most {MAX_DIMENSIONS_PER_SET}",
                        s.len()
                    ));
                }
            }
            for p in &d.metric_name_selectors {
                compile(p, "metric_name_selectors pattern")?;
            }
            for m in &d.label_matchers {
                if m.label_names.is_empty() {
                    return Err(format!(
                        "metric_declarations[{i}]: a label matcher needs label_names"
                    ));
                }
                compile(&m.regex, "label_matchers regex")?;
            }
        }
        if self.delta_expiration.is_zero() || self.max_delta_series == 0 {
            return Err("delta_expiration and max_delta_series must be more than 0".into());
        }
        self.sending_queue.validate()?;
        Ok(())
    }

    fn options(&self) -> Result<emf::Options, String> {
        let mut declarations = Vec::new();
        for d in &self.metric_declarations {
            let mut dimensions: Vec<Vec<String>> = Vec::new();
            for set in &d.dimensions {
                let mut s = set.clone();
                s.sort();
                s.dedup();
                if !dimensions.contains(&s) {
                    dimensions.push(s);
                }
            }
            declarations.push(MetricDeclaration {
                dimensions,
                metric_name_selectors: d
                    .metric_name_selectors
                    .iter()
                    .map(|p| compile(p, "pattern"))
                    .collect::<Result<_, _>>()?,
                label_matchers: d
                    .label_matchers
                    .iter()
                    .map(|m| {
                        Ok(LabelMatcher {
                            label_names: m.label_names.clone(),
                            separator: m.separator.clone(),
                            regex: compile(&m.regex, "regex")?,
                        })
                    })
                    .collect::<Result<_, String>>()?,
            });
        }
        Ok(emf::Options {
            namespace: self.namespace.clone(),
            rollup: self.dimension_rollup_option,
            declarations,
            resource_to_telemetry: self.resource_to_telemetry_conversion.enabled,
            storage_resolution: self.storage_resolution,
        })
    }
}

struct Counters {
    baselines: Counter,
    resets: Counter,
    out_of_order: Counter,
    filtered: Counter,
    dropped_non_finite: Counter,
    dropped_collision: Counter,
    dropped_too_large: Counter,
    dimension_sets_dropped: Counter,
}

/// The running exporter.
pub struct AwsEmfExporter {
    name: String,
    cfg: AwsEmfExporterConfig,
    opts: emf::Options,
    deltas: Mutex<Deltas>,
    sender: Sender,
    counters: Counters,
}

/// The header (as client metadata) that names a batch's EMF namespace, as
/// the ADOT SDKs send it (`OTEL_EXPORTER_OTLP_*_HEADERS`).
pub const METRIC_NAMESPACE_HEADER: &str = "x-aws-metric-namespace";

impl AwsEmfExporter {
    /// Builds the exporter; the AWS client is made on first use.
    pub fn new(cfg: &AwsEmfExporterConfig, name: String) -> Result<Self, StartError> {
        let opts = cfg.options().map_err(|e| StartError::component(&name, e))?;
        let c = |metric, reason| crate::telemetry::exporter_counter(metric, &name, reason);
        let counters = Counters {
            baselines: c("spanwire_emf_points_total", "baseline"),
            resets: c("spanwire_emf_resets_total", ""),
            out_of_order: c("spanwire_emf_points_total", "out_of_order"),
            filtered: c("spanwire_emf_points_total", "filtered"),
            dropped_non_finite: c("spanwire_emf_points_dropped_total", "non_finite"),
            dropped_collision: c("spanwire_emf_points_dropped_total", "name_collision"),
            dropped_too_large: c("spanwire_emf_points_dropped_total", "too_large"),
            dimension_sets_dropped: c("spanwire_emf_dimension_sets_dropped_total", ""),
        };
        Ok(AwsEmfExporter {
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
            deltas: Mutex::new(Deltas::new(
                crate::telemetry::process_start_nanos(),
                cfg.delta_expiration.as_nanos() as u64,
                cfg.max_delta_series,
            )),
            opts,
            cfg: cfg.clone(),
            counters,
            name,
        })
    }

    /// Converts a batch; a client that sent `x-aws-metric-namespace` (kept
    /// as the batch's metadata) names the namespace of its metrics.
    fn start(&self, data: &Telemetry, metadata: &Metadata) -> Pending {
        let Telemetry::Metrics(rms) = data else {
            return Pending::default();
        };
        let now_ns = crate::telemetry::unix_nanos_now();
        let converted = {
            let mut deltas = match self.deltas.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            match metadata
                .first(METRIC_NAMESPACE_HEADER)
                .map(emf::sanitize_namespace)
                .filter(|ns| !ns.is_empty())
            {
                Some(ns) => {
                    let opts = emf::Options {
                        namespace: Some(ns),
                        ..self.opts.clone()
                    };
                    emf::convert(rms, &opts, &mut deltas, now_ns)
                }
                None => emf::convert(rms, &self.opts, &mut deltas, now_ns),
            }
        };
        let s = &converted.stats;
        self.counters.baselines.increment(s.baselines as u64);
        self.counters.resets.increment(s.resets as u64);
        self.counters.out_of_order.increment(s.out_of_order as u64);
        self.counters.filtered.increment(s.filtered as u64);
        self.counters
            .dimension_sets_dropped
            .increment(s.dimension_sets_dropped as u64);
        if s.dimension_sets_dropped > 0 {
            tracing::warn!(exporter = %self.name, count = s.dimension_sets_dropped,
                "dimension sets over 30 keys left out (the metrics keep their smaller sets; use metric_declarations to choose dimensions)");
        }
        if s.dropped() > 0 {
            self.counters
                .dropped_non_finite
                .increment(s.non_finite as u64);
            self.counters
                .dropped_collision
                .increment(s.name_collisions as u64);
            self.counters
                .dropped_too_large
                .increment(s.too_large as u64);
            tracing::error!(exporter = %self.name, non_finite = s.non_finite,
                name_collisions = s.name_collisions, too_large = s.too_large,
                "metric points that cannot be EMF; dropping them");
        }
        let mut streams: BTreeMap<(String, String), Vec<LogEvent>> = BTreeMap::new();
        for g in converted.groups {
            if g.events.is_empty() {
                continue;
            }
            let key = (
                expand(&self.cfg.log_group_name, g.resource, NameKind::Group),
                expand(&self.cfg.log_stream_name, g.resource, NameKind::Stream),
            );
            streams.entry(key).or_default().extend(g.events);
        }
        let mut p = self
            .sender
            .pending(streams.into_iter().collect(), (now_ns / 1_000_000) as i64);
        p.dropped += s.dropped();
        p
    }
}

/// The `awsemf` exporter's factory.
pub struct AwsEmfFactory;

impl Factory for AwsEmfFactory {
    type Config = AwsEmfExporterConfig;
    fn type_name(&self) -> &'static str {
        "awsemf"
    }
    fn validate(&self, config: &AwsEmfExporterConfig) -> Result<(), DeError> {
        config.validate()
    }
}

impl ExporterFactory for AwsEmfFactory {
    fn signals(&self, _config: &AwsEmfExporterConfig) -> &'static [Signal] {
        SIGNALS
    }
    fn build(
        &self,
        config: &AwsEmfExporterConfig,
        ctx: ExporterContext<'_>,
    ) -> Result<BuiltExporter, StartError> {
        Ok(BuiltExporter::new(
            AwsEmfExporter::new(config, ctx.name())?,
            config.sending_queue.clone(),
            config.retry_on_failure.clone(),
        ))
    }
}

#[async_trait]
impl Export for AwsEmfExporter {
    type Progress = Option<Pending>;

    async fn export(
        &self,
        data: &Arc<Telemetry>,
        metadata: &Metadata,
        progress: &mut Option<Pending>,
    ) -> Result<ExportOk, ExportError> {
        self.sender
            .export(progress, || self.start(data, metadata))
            .await
    }

    fn pending(&self, _data: &Telemetry, progress: &Option<Pending>) -> Option<usize> {
        super::cwlogs::pending_items(progress)
    }
}
