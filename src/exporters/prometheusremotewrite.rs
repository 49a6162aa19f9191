//! Exporter `prometheusremotewrite`: metrics to a Prometheus remote write
//! 1.0 endpoint (Prometheus, Mimir, Amazon Managed Service for Prometheus
//! with `auth: {authenticator: sigv4auth}`), with the Collector's keys. The
//! conversion is [`crate::convert::prometheus_remote_write`]; a batch larger
//! than `max_batch_size_bytes` goes as several requests, retried one by one.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderName};
use serde::Deserialize;

use super::http_sender::HttpSender;
use super::prometheus::ResourceToTelemetry;
use crate::component::{
    BuiltExporter, Export, ExportError, ExportOk, ExporterContext, ExporterFactory, Factory,
};
use crate::consumer::StartError;
use crate::convert::prometheus_remote_write as prw;
use crate::settings::de::DeError;
use crate::settings::types::{duration, ExporterAuth, QueueConfig, RetryConfig, TlsClientConfig};
use crate::signal::{Metadata, Signal, Telemetry};

/// `target_info:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetInfo {
    /// Send a `target_info` series per resource.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for TargetInfo {
    fn default() -> Self {
        TargetInfo { enabled: true }
    }
}

fn yes() -> bool {
    true
}

/// `remote_write_queue:` (the Collector's own queue keys for this exporter).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteQueue {
    /// Queue at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Capacity in batches.
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    /// Concurrent senders.
    #[serde(default = "default_consumers")]
    pub num_consumers: usize,
}

fn default_queue_size() -> usize {
    10_000
}

fn default_consumers() -> usize {
    5
}

fn default_max_bytes() -> usize {
    3_000_000
}

/// `exporters.prometheusremotewrite`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrometheusRemoteWriteConfig {
    /// The remote write URL.
    pub endpoint: String,
    /// Extra HTTP headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Deadline of one request.
    #[serde(default = "super::otlp::default_timeout", with = "duration")]
    pub timeout: Duration,
    /// TLS settings (for `https://`).
    #[serde(default)]
    pub tls: TlsClientConfig,
    /// Prefix of every metric name.
    #[serde(default)]
    pub namespace: String,
    /// Labels added to every series.
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    /// Resource attributes as labels.
    #[serde(default)]
    pub resource_to_telemetry_conversion: ResourceToTelemetry,
    /// Unit and `_total` suffixes.
    #[serde(default = "yes")]
    pub add_metric_suffixes: bool,
    /// Send family metadata (type, unit, help).
    #[serde(default)]
    pub send_metadata: bool,
    /// `target_info` series.
    #[serde(default)]
    pub target_info: TargetInfo,
    /// Most bytes of one request before compression.
    #[serde(default = "default_max_bytes")]
    pub max_batch_size_bytes: usize,
    /// The Collector's queue keys for this exporter (they set `sending_queue`).
    #[serde(default)]
    pub remote_write_queue: Option<RemoteWriteQueue>,
    /// Queue settings.
    #[serde(default)]
    pub sending_queue: QueueConfig,
    /// Retry settings.
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    /// The extension(s) that add credentials (`sigv4auth` for AMP).
    #[serde(default)]
    pub auth: Option<ExporterAuth>,
}

impl PrometheusRemoteWriteConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        let e = &self.endpoint;
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(DeError::custom(format!(
                "endpoint `{e}` must be an http:// or https:// URL"
            )));
        }
        e.parse::<http::Uri>()
            .map_err(|err| DeError::custom(format!("invalid endpoint `{e}`: {err}")))?;
        for k in self.external_labels.keys() {
            if k.is_empty() || k.starts_with("__") {
                return Err(DeError::custom(format!(
                    "external_labels: `{k}` is not a label name a series may carry"
                )));
            }
        }
        if self.max_batch_size_bytes == 0 {
            return Err(DeError::custom("max_batch_size_bytes must be more than 0"));
        }
        if let Some(q) = &self.remote_write_queue {
            if q.enabled && (q.queue_size == 0 || q.num_consumers == 0) {
                return Err(DeError::custom(
                    "remote_write_queue: queue_size and num_consumers must be more than 0",
                ));
            }
        }
        Ok(())
    }

    fn queue(&self) -> QueueConfig {
        let mut q = self.sending_queue.clone();
        if let Some(r) = &self.remote_write_queue {
            q.enabled = r.enabled;
            q.queue_size = r.queue_size;
            q.num_consumers = r.num_consumers;
        }
        q
    }

    fn options(&self) -> prw::Options {
        prw::Options {
            namespace: self.namespace.clone(),
            resource_to_telemetry: self.resource_to_telemetry_conversion.enabled,
            external_labels: self
                .external_labels
                .iter()
                .map(|(k, v)| (crate::convert::prometheus::sanitize_label(k), v.clone()))
                .collect(),
            add_metric_suffixes: self.add_metric_suffixes,
            target_info: self.target_info.enabled,
            send_metadata: self.send_metadata,
        }
    }
}

/// The exporter.
pub struct PrometheusRemoteWrite {
    sender: HttpSender,
    url: http::Uri,
    options: prw::Options,
    max_bytes: usize,
    name: String,
}

/// The `prometheusremotewrite` exporter's factory.
pub struct PrometheusRemoteWriteFactory;

impl Factory for PrometheusRemoteWriteFactory {
    type Config = PrometheusRemoteWriteConfig;
    fn type_name(&self) -> &'static str {
        "prometheusremotewrite"
    }
    fn validate(&self, config: &PrometheusRemoteWriteConfig) -> Result<(), DeError> {
        config.validate()
    }
}

impl ExporterFactory for PrometheusRemoteWriteFactory {
    fn signals(&self, _config: &PrometheusRemoteWriteConfig) -> &'static [Signal] {
        &[Signal::Metrics]
    }
    fn authenticators<'c>(&self, config: &'c PrometheusRemoteWriteConfig) -> &'c [String] {
        config.auth.as_ref().map_or(&[], |a| &a.authenticator.0)
    }
    fn build(
        &self,
        config: &PrometheusRemoteWriteConfig,
        ctx: ExporterContext<'_>,
    ) -> Result<BuiltExporter, StartError> {
        let name = ctx.name();
        let names = config.auth.as_ref().map_or(&[][..], |a| &a.authenticator.0);
        let auth = ctx
            .auth
            .chain(names)
            .map_err(|e| StartError::component(&name, e))?;
        let url = config.endpoint.parse().map_err(|e| {
            StartError::component(
                &name,
                format!("invalid endpoint `{}`: {e}", config.endpoint),
            )
        })?;
        let sender = HttpSender::new(&name, &config.tls, &config.headers, config.timeout, auth)?;
        Ok(BuiltExporter::new(
            PrometheusRemoteWrite {
                sender,
                url,
                options: config.options(),
                max_bytes: config.max_batch_size_bytes,
                name,
            },
            config.queue(),
            config.retry_on_failure.clone(),
        ))
    }
}

/// Request bodies of a batch not yet accepted, with their sample counts.
#[derive(Debug, Default)]
pub struct Pending {
    bodies: VecDeque<(Bytes, usize)>,
    dropped: u64,
}

#[async_trait]
impl Export for PrometheusRemoteWrite {
    type Progress = Option<Pending>;

    async fn export(
        &self,
        data: &Arc<Telemetry>,
        metadata: &Metadata,
        progress: &mut Option<Pending>,
    ) -> Result<ExportOk, ExportError> {
        let Telemetry::Metrics(rms) = data.as_ref() else {
            return Ok(ExportOk::default());
        };
        let pending = progress.get_or_insert_with(|| {
            let converted = prw::convert(rms, &self.options);
            let dropped = converted.dropped as u64;
            if dropped > 0 {
                tracing::warn!(exporter = %self.name, points = dropped,
                    "delta sums and histograms, and exponential histograms, have no Prometheus remote write 1.0 form; dropped");
            }
            Pending {
                bodies: prw::requests(converted, self.max_bytes)
                    .iter()
                    .map(|r| {
                        let samples = r.timeseries.iter().map(|t| t.samples.len()).sum();
                        (Bytes::from(prw::body(r)), samples)
                    })
                    .collect(),
                dropped,
            }
        });
        let headers: [(HeaderName, &str); 4] = [
            (header::CONTENT_TYPE, "application/x-protobuf"),
            (header::CONTENT_ENCODING, "snappy"),
            (
                HeaderName::from_static("x-prometheus-remote-write-version"),
                "0.1.0",
            ),
            (header::ACCEPT_ENCODING, "identity"),
        ];
        while let Some((body, _)) = pending.bodies.front() {
            self.sender
                .post(&self.url, &headers, body.clone(), metadata, |_| Ok(()))
                .await?;
            pending.bodies.pop_front();
        }
        Ok(ExportOk {
            rejected: pending.dropped,
            message: if pending.dropped > 0 {
                "points with no remote write 1.0 form (delta or exponential histograms)".into()
            } else {
                String::new()
            },
        })
    }

    fn pending(&self, _data: &Telemetry, progress: &Option<Pending>) -> Option<usize> {
        let p = progress.as_ref()?;
        Some(p.bodies.iter().map(|(_, n)| n).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{de::from_node, yaml::parse};

    fn cfg(text: &str) -> Result<PrometheusRemoteWriteConfig, DeError> {
        let (n, _) = parse("t", text, &|_| None).unwrap();
        from_node::<PrometheusRemoteWriteConfig>(&n).and_then(|c| c.validate().map(|_| c))
    }

    #[test]
    fn the_collectors_keys_and_defaults() {
        let c = cfg("endpoint: https://aps-workspaces.us-west-2.amazonaws.com/workspaces/ws-1/api/v1/remote_write
auth: {authenticator: sigv4auth}
resource_to_telemetry_conversion: {enabled: true}
remote_write_queue: {queue_size: 100}
external_labels: {cluster: prod}
")
        .unwrap();
        assert!(c.add_metric_suffixes && c.target_info.enabled && !c.send_metadata);
        assert_eq!(c.max_batch_size_bytes, 3_000_000);
        let q = c.queue();
        assert_eq!((q.queue_size, q.num_consumers), (100, 5));
        assert!(cfg("endpoint: localhost:9090").is_err());
        assert!(cfg("endpoint: http://x\nexternal_labels: {__name__: x}").is_err());
        assert!(cfg("endpoint: http://x\ncompression: gzip").is_err());
    }
}
