//! Exporter `otlphttp` (also `otlp_http`): OTLP over HTTP, protobuf or JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderName, HeaderValue};
use serde::Deserialize;

use super::http_sender::HttpSender;
use super::partial_success::OtlpResponse;
use crate::component::{
    BuiltExporter, ClientAuth, Export, ExportError, ExportOk, ExporterContext, ExporterFactory,
    Factory,
};
use crate::consumer::StartError;
use crate::convert::split;
use crate::settings::de::DeError;
use crate::settings::types::{
    duration, Compression, ExporterAuth, QueueConfig, RetryConfig, TlsClientConfig,
};
use crate::signal::{EncodedBatch, Metadata, Signal, Telemetry};

/// Wire encoding of request bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HttpEncoding {
    /// `application/x-protobuf`.
    #[default]
    Proto,
    /// `application/json` (OTLP/JSON).
    Json,
}

/// `exporters.otlphttp`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpHttpExporterConfig {
    /// Base URL; `/v1/traces` etc. are appended.
    pub endpoint: Option<String>,
    /// Full URL for traces, overriding `endpoint`.
    #[serde(default)]
    pub traces_endpoint: Option<String>,
    /// Full URL for metrics, overriding `endpoint`.
    #[serde(default)]
    pub metrics_endpoint: Option<String>,
    /// Full URL for logs, overriding `endpoint`.
    #[serde(default)]
    pub logs_endpoint: Option<String>,
    /// `proto` (default) or `json`.
    #[serde(default)]
    pub encoding: HttpEncoding,
    /// Extra HTTP headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `gzip` (default), `zstd` or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// Deadline of one request.
    #[serde(default = "super::otlp::default_timeout", with = "duration")]
    pub timeout: Duration,
    /// TLS settings (used for `https://` URLs).
    #[serde(default)]
    pub tls: TlsClientConfig,
    /// Retry settings.
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    /// Queue settings.
    #[serde(default)]
    pub sending_queue: QueueConfig,
    /// The extension that adds credentials to every request.
    #[serde(default)]
    pub auth: Option<ExporterAuth>,
    /// Most items (spans, data points, log records) in one request; a
    /// larger batch is split. Default: 10,000 for the CloudWatch OTLP traces
    /// endpoint (`xray.<region>.amazonaws.com`), else no limit (0).
    #[serde(default)]
    pub max_request_items: Option<usize>,
    /// Most bytes in one request body before compression; a larger batch is
    /// split. Default: 5,000,000 for the CloudWatch OTLP traces endpoint,
    /// else no limit (0).
    #[serde(default)]
    pub max_request_bytes: Option<usize>,
    /// Largest span or log record (its own encoded size) the endpoint
    /// takes; larger ones are dropped before sending, counted and logged.
    /// Default: 200,000 for spans to the CloudWatch OTLP traces endpoint,
    /// else no limit (0).
    #[serde(default)]
    pub max_item_bytes: Option<usize>,
    /// Most time between the earliest and latest item of one request; a
    /// batch whose items are further apart is split by time. Default: 24h
    /// for the CloudWatch OTLP endpoints, else no limit (0s).
    #[serde(default, with = "crate::settings::types::opt_duration")]
    pub max_request_time_range: Option<Duration>,
}

/// What one request may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Limits {
    /// Items; 0 for no limit.
    items: usize,
    /// Uncompressed body bytes; 0 for no limit.
    bytes: usize,
    /// Encoded bytes of one item; 0 for no limit.
    item_bytes: usize,
    /// Nanoseconds between the earliest and latest item; 0 for no limit.
    time_range_ns: u64,
}

impl Limits {
    fn none(&self) -> bool {
        *self == Limits::default()
    }
}

const DAY_NS: u64 = 24 * 3_600 * 1_000_000_000;

/// The documented limits of the CloudWatch OTLP traces endpoint (the
/// CloudWatch "OTLP endpoints" page): 10,000 spans and 5 MB uncompressed a
/// request, spans of at most 200 KB, at most 24 hours between a request's
/// spans.
const CLOUDWATCH_TRACES: Limits = Limits {
    items: 10_000,
    bytes: 5_000_000,
    item_bytes: 200_000,
    time_range_ns: DAY_NS,
};

/// The same page's limits for the CloudWatch Logs OTLP endpoint (the
/// endpoint itself truncates a log event over 1 MB, so no item limit).
const CLOUDWATCH_LOGS: Limits = Limits {
    items: 10_000,
    bytes: 5_000_000,
    item_bytes: 0,
    time_range_ns: DAY_NS,
};

impl OtlpHttpExporterConfig {
    /// The request limits for `signal`: the configured ones, else the
    /// endpoint's documented ones.
    fn limits(&self, signal: Signal) -> Limits {
        let host = self
            .url(signal)
            .and_then(|u| u.parse::<http::Uri>().ok())
            .and_then(|u| u.host().map(str::to_string));
        let service = host
            .as_deref()
            .and_then(crate::aws::endpoint_host)
            .map(|h| h.0);
        let known = match service {
            Some("xray") if signal == Signal::Traces => CLOUDWATCH_TRACES,
            Some("logs") if signal == Signal::Logs => CLOUDWATCH_LOGS,
            _ => Limits::default(),
        };
        Limits {
            items: self.max_request_items.unwrap_or(known.items),
            bytes: self.max_request_bytes.unwrap_or(known.bytes),
            item_bytes: self.max_item_bytes.unwrap_or(known.item_bytes),
            time_range_ns: self
                .max_request_time_range
                .map_or(known.time_range_ns, |d| d.as_nanos() as u64),
        }
    }

    fn url(&self, signal: Signal) -> Option<String> {
        let specific = match signal {
            Signal::Traces => &self.traces_endpoint,
            Signal::Metrics => &self.metrics_endpoint,
            Signal::Logs => &self.logs_endpoint,
        };
        specific.clone().or_else(|| {
            self.endpoint
                .as_ref()
                .map(|e| format!("{}/v1/{}", e.trim_end_matches('/'), signal.as_str()))
        })
    }

    /// Whether the logs URL is the CloudWatch Logs OTLP endpoint.
    fn logs_to_cloudwatch(&self) -> bool {
        self.url(Signal::Logs)
            .and_then(|u| u.parse::<http::Uri>().ok())
            .and_then(|u| {
                u.host()
                    .and_then(crate::aws::endpoint_host)
                    .map(|h| h.0 == "logs")
            })
            .unwrap_or(false)
    }

    /// The CloudWatch Logs OTLP endpoint puts records in the group and
    /// stream that `x-aws-log-group` / `x-aws-log-stream` name, and refuses
    /// a request without them: the first of the two that neither `headers`
    /// nor the authenticators (`set_by`) provide.
    fn missing_log_header(&self, set_by: &[String]) -> Option<&'static str> {
        if !self.logs_to_cloudwatch() {
            return None;
        }
        LOG_HEADERS.into_iter().find(|need| {
            !self.headers.keys().any(|k| k.eq_ignore_ascii_case(need))
                && !set_by.iter().any(|k| k.eq_ignore_ascii_case(need))
        })
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        if Signal::ALL.iter().all(|s| self.url(*s).is_none()) {
            return Err(DeError::custom(
                "set endpoint, or traces_endpoint, metrics_endpoint or logs_endpoint",
            ));
        }
        for u in Signal::ALL.iter().filter_map(|s| self.url(*s)) {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(DeError::custom(format!(
                    "endpoint `{u}` must start with http:// or https://"
                )));
            }
            u.parse::<http::Uri>()
                .map_err(|e| DeError::custom(format!("invalid endpoint `{u}`: {e}")))?;
        }
        // With authenticators, what they set is known only at start (build).
        if self.auth.is_none() {
            if let Some(need) = self.missing_log_header(&[]) {
                return Err(DeError::custom(format!(
                    "headers: the CloudWatch Logs OTLP endpoint needs `{need}` (the log group and stream to write to)"
                )));
            }
        }
        for (k, v) in &self.headers {
            HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| DeError::custom(format!("headers: invalid name `{k}`")))?;
            HeaderValue::from_str(v)
                .map_err(|_| DeError::custom(format!("headers: invalid value for `{k}`")))?;
        }
        self.sending_queue.validate().map_err(DeError::custom)?;
        Ok(())
    }
}

/// The running exporter.
pub struct OtlpHttpExporter {
    sender: HttpSender,
    /// Per signal (traces, metrics, logs): where to POST, if configured.
    urls: [Option<http::Uri>; 3],
    encoding: HttpEncoding,
    compression: Compression,
    /// Per signal (traces, metrics, logs).
    limits: [Limits; 3],
    /// Logs go to the CloudWatch Logs OTLP endpoint.
    logs_to_cloudwatch: bool,
    name: String,
}

impl OtlpHttpExporter {
    /// Builds the client; `auth` adds credentials to every request.
    pub fn new(
        cfg: &OtlpHttpExporterConfig,
        name: String,
        auth: Option<Arc<dyn ClientAuth>>,
    ) -> Result<Self, StartError> {
        let sender = HttpSender::new(&name, &cfg.tls, &cfg.headers, cfg.timeout, auth)?;
        let url = |s: Signal| -> Result<Option<http::Uri>, StartError> {
            let Some(u) = cfg.url(s) else {
                return Ok(None);
            };
            u.parse()
                .map(Some)
                .map_err(|e| StartError::component(&name, format!("invalid endpoint `{u}`: {e}")))
        };
        Ok(OtlpHttpExporter {
            sender,
            urls: [
                url(Signal::Traces)?,
                url(Signal::Metrics)?,
                url(Signal::Logs)?,
            ],
            encoding: cfg.encoding,
            compression: cfg.compression,
            limits: [
                cfg.limits(Signal::Traces),
                cfg.limits(Signal::Metrics),
                cfg.limits(Signal::Logs),
            ],
            logs_to_cloudwatch: cfg.logs_to_cloudwatch(),
            name,
        })
    }

    fn body(&self, data: &Telemetry) -> Bytes {
        match self.encoding {
            HttpEncoding::Json => Bytes::from(crate::convert::otlp_json::encode_to_vec(data)),
            HttpEncoding::Proto => crate::convert::otlp_proto::encode_batch(data).bytes,
        }
    }
}

/// Reads `partialSuccess` from a response body.
fn partial_success(signal: Signal, encoding: HttpEncoding, body: &[u8]) -> ExportOk {
    if body.is_empty() {
        return ExportOk::default();
    }
    match encoding {
        HttpEncoding::Proto => {
            use opentelemetry_proto::tonic::collector::{logs, metrics, trace};
            fn read<R: OtlpResponse>(body: &[u8]) -> ExportOk {
                R::decode(body).map(R::into_export_ok).unwrap_or_default()
            }
            match signal {
                Signal::Traces => read::<trace::v1::ExportTraceServiceResponse>(body),
                Signal::Metrics => read::<metrics::v1::ExportMetricsServiceResponse>(body),
                Signal::Logs => read::<logs::v1::ExportLogsServiceResponse>(body),
            }
        }
        HttpEncoding::Json => {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
                return ExportOk::default();
            };
            let Some(p) = v.get("partialSuccess").or_else(|| v.get("partial_success")) else {
                return ExportOk::default();
            };
            let rejected = p
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("rejected"))
                .find_map(|(_, n)| {
                    n.as_u64()
                        .or_else(|| n.as_str().and_then(|s| s.parse().ok()))
                })
                .unwrap_or(0);
            let message = p
                .get("errorMessage")
                .or_else(|| p.get("error_message"))
                .and_then(|m| m.as_str())
                .unwrap_or_default()
                .to_string();
            ExportOk { rejected, message }
        }
    }
}

/// The `otlphttp` exporter's factory.
pub struct OtlpHttpFactory;

impl Factory for OtlpHttpFactory {
    type Config = OtlpHttpExporterConfig;
    fn type_name(&self) -> &'static str {
        "otlphttp"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["otlp_http"]
    }
    fn validate(&self, config: &OtlpHttpExporterConfig) -> Result<(), DeError> {
        config.validate()
    }
}

/// The headers the CloudWatch Logs OTLP endpoint requires.
const LOG_HEADERS: [&str; 2] = ["x-aws-log-group", "x-aws-log-stream"];

/// The client authenticators the config names, from the started extensions,
/// as one; checks that the log group and stream headers will be set.
fn authenticator(
    config: &OtlpHttpExporterConfig,
    ctx: &ExporterContext<'_>,
) -> Result<Option<Arc<dyn ClientAuth>>, StartError> {
    let names = config.auth.as_ref().map_or(&[][..], |a| &a.authenticator.0);
    let auth = ctx
        .auth
        .chain(names)
        .map_err(|e| StartError::component(&ctx.name(), e))?;
    let set_by = auth.as_ref().map(|a| a.sets_headers()).unwrap_or_default();
    if let Some(need) = config.missing_log_header(&set_by) {
        return Err(StartError::component(
            &ctx.name(),
            format!("the CloudWatch Logs OTLP endpoint needs the header `{need}` (the log group and stream to write to): set it under `headers`, or have a headers_setter in `auth.authenticator` set it"),
        ));
    }
    Ok(auth)
}

impl ExporterFactory for OtlpHttpFactory {
    fn signals(&self, config: &OtlpHttpExporterConfig) -> &'static [Signal] {
        // Only the signals it has a URL for (`traces_endpoint` alone: traces).
        let has = |s| config.url(s).is_some();
        match (has(Signal::Traces), has(Signal::Metrics), has(Signal::Logs)) {
            (true, true, true) => &Signal::ALL,
            (true, false, false) => &[Signal::Traces],
            (false, true, false) => &[Signal::Metrics],
            (false, false, true) => &[Signal::Logs],
            (true, true, false) => &[Signal::Traces, Signal::Metrics],
            (true, false, true) => &[Signal::Traces, Signal::Logs],
            (false, true, true) => &[Signal::Metrics, Signal::Logs],
            (false, false, false) => &[],
        }
    }
    fn authenticators<'c>(&self, config: &'c OtlpHttpExporterConfig) -> &'c [String] {
        config.auth.as_ref().map_or(&[], |a| &a.authenticator.0)
    }
    fn build(
        &self,
        config: &OtlpHttpExporterConfig,
        ctx: ExporterContext<'_>,
    ) -> Result<BuiltExporter, StartError> {
        Ok(BuiltExporter::new(
            OtlpHttpExporter::new(config, ctx.name(), authenticator(config, &ctx)?)?,
            config.sending_queue.clone(),
            config.retry_on_failure.clone(),
        ))
    }
}

#[async_trait]
impl Export for OtlpHttpExporter {
    /// The requests of a batch split to fit the endpoint's limits, those
    /// not yet accepted (`None` until the first attempt, and for a batch
    /// sent whole).
    type Progress = Option<Requests>;

    async fn export(
        &self,
        data: &Arc<Telemetry>,
        metadata: &Metadata,
        progress: &mut Option<Requests>,
    ) -> Result<ExportOk, ExportError> {
        let limits = self.limits[data.signal().index()];
        if limits.none() {
            return self.post(data.signal(), self.body(data), metadata).await;
        }
        let requests = progress.get_or_insert_with(|| self.split(data, limits));
        while let Some((body, _)) = requests.bodies.front() {
            let ok = self.post(data.signal(), body.clone(), metadata).await?;
            requests.bodies.pop_front();
            requests.ok.rejected += ok.rejected;
            if !ok.message.is_empty() {
                requests.ok.message = ok.message;
            }
        }
        Ok(requests.ok.clone())
    }

    fn pending(&self, _data: &Telemetry, progress: &Option<Requests>) -> Option<usize> {
        let r = progress.as_ref()?;
        Some(r.bodies.iter().map(|(_, n)| n).sum::<usize>() + r.ok.rejected as usize)
    }

    fn takes_encoded(&self) -> bool {
        // Encoded batches are sent whole: only when nothing needs splitting.
        self.encoding == HttpEncoding::Proto && self.limits.iter().all(Limits::none)
    }

    async fn export_encoded(
        &self,
        data: &EncodedBatch,
        metadata: &Metadata,
        _progress: &mut Option<Requests>,
    ) -> Result<ExportOk, ExportError> {
        if self.encoding != HttpEncoding::Proto {
            return Err(ExportError::Permanent(
                "encoded batches are OTLP protobuf; this exporter sends JSON".into(),
            ));
        }
        self.post(data.signal, data.bytes.clone(), metadata).await
    }
}

/// A batch as the requests that fit the endpoint's limits.
#[derive(Debug, Default)]
pub struct Requests {
    /// Bodies (uncompressed) not yet accepted, with their item counts.
    bodies: std::collections::VecDeque<(Bytes, usize)>,
    /// Items rejected so far: partial success, and items too large for any
    /// request.
    ok: ExportOk,
}

impl OtlpHttpExporter {
    /// Splits `data` into request bodies within `limits`: items over
    /// `limits.item_bytes` are left out (the endpoint would reject them),
    /// then the batch is cut into `limits.time_range_ns` windows, each into
    /// at most `limits.items` items, then halved until each body fits
    /// `limits.bytes`. An item that cannot be sent is counted as rejected
    /// and logged once per batch, with the reason.
    fn split(&self, data: &Telemetry, limits: Limits) -> Requests {
        let mut out = Requests::default();
        let mut owned: Option<Telemetry> = None;
        if limits.item_bytes > 0 && split::has_item_over(data, limits.item_bytes) {
            let mut kept = data.clone();
            let (removed, largest) = split::remove_items_over(&mut kept, limits.item_bytes);
            tracing::error!(exporter = %self.name, signal = %data.signal(), items = removed, largest,
                limit = limits.item_bytes, "items larger than max_item_bytes cannot be sent (the endpoint rejects them); dropped");
            out.ok.rejected += removed as u64;
            out.ok.message = format!(
                "{removed} {} over max_item_bytes ({}; the largest {largest} bytes)",
                data.signal().item_name(),
                limits.item_bytes
            );
            owned = Some(kept);
        }
        let data = owned.as_ref().unwrap_or(data);
        if limits.time_range_ns > 0 && split::time_extent(data) > limits.time_range_ns {
            for part in split::by_time_window(data.clone(), limits.time_range_ns) {
                self.split_part(&part, limits, &mut out);
            }
        } else {
            self.split_part(data, limits, &mut out);
        }
        out
    }

    /// Adds the bodies of `data` (within one time window) to `out`: at most
    /// `limits.items` items, halved until each fits `limits.bytes`.
    fn split_part(&self, data: &Telemetry, limits: Limits, out: &mut Requests) {
        // Most batches fit: one body, and no copy of the batch to split.
        let items = data.item_count();
        if limits.items == 0 || items <= limits.items {
            let body = self.body(data);
            if limits.bytes == 0 || body.len() <= limits.bytes {
                out.bodies.push_back((body, items));
                return;
            }
        }
        let mut rest = data.clone();
        let mut todo: Vec<Telemetry> = Vec::new();
        while rest.item_count() > 0 {
            let n = if limits.items == 0 {
                rest.item_count()
            } else {
                limits.items
            };
            todo.push(split::split_front(&mut rest, n));
        }
        // Bodies of this part go after `first`, in the batch's order.
        let mut part: std::collections::VecDeque<(Bytes, usize)> = Default::default();
        while let Some(mut chunk) = todo.pop() {
            let body = self.body(&chunk);
            let items = chunk.item_count();
            if limits.bytes == 0 || body.len() <= limits.bytes {
                part.push_front((body, items));
            } else if items > 1 {
                // Taken from the end of `todo`: the tail first, so that
                // `part` keeps the batch's order.
                let head = split::split_front(&mut chunk, items / 2);
                todo.push(head);
                todo.push(chunk);
            } else {
                tracing::error!(exporter = %self.name, signal = %data.signal(), bytes = body.len(),
                    limit = limits.bytes, "one item is larger than max_request_bytes; it cannot be sent and is dropped");
                out.ok.rejected += 1;
                out.ok.message = format!(
                    "an item of {} bytes exceeds max_request_bytes ({})",
                    body.len(),
                    limits.bytes
                );
            }
        }
        out.bodies.extend(part);
    }

    /// POSTs one request body (`raw`, in this exporter's encoding) for
    /// `signal`, of a batch that carries `metadata`.
    async fn post(
        &self,
        signal: Signal,
        raw: Bytes,
        metadata: &Metadata,
    ) -> Result<ExportOk, ExportError> {
        let (body, content_encoding) = match self.compression {
            Compression::Gzip => (Bytes::from(crate::net::gzip(&raw)), Some("gzip")),
            Compression::Zstd => (Bytes::from(crate::net::zstd_compress(&raw)), Some("zstd")),
            Compression::None => (raw, None),
        };
        let Some(url) = &self.urls[signal.index()] else {
            return Err(ExportError::Permanent(format!(
                "no {}_endpoint configured",
                signal.as_str()
            )));
        };
        let content_type = match self.encoding {
            HttpEncoding::Proto => "application/x-protobuf",
            HttpEncoding::Json => "application/json",
        };
        let mut headers = vec![(header::CONTENT_TYPE, content_type)];
        if let Some(ce) = content_encoding {
            headers.push((header::CONTENT_ENCODING, ce));
        }
        let to_cloudwatch_logs = signal == Signal::Logs && self.logs_to_cloudwatch;
        let answer = self
            .sender
            .post(url, &headers, body, metadata, |h| {
                if !to_cloudwatch_logs {
                    return Ok(());
                }
                // A header taken from the batch's metadata may be missing;
                // the endpoint would answer 400 for the whole request.
                match LOG_HEADERS.into_iter().find(|n| !h.contains_key(*n)) {
                    Some(need) => Err(ExportError::Permanent(format!(
                        "the batch has no `{need}` header for the CloudWatch Logs OTLP endpoint (its client metadata did not carry one, and no default_value or fixed header is set)"
                    ))),
                    None => Ok(()),
                }
            })
            .await?;
        Ok(partial_success(signal, self.encoding, &answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_partial_success_is_read() {
        let ok = partial_success(
            Signal::Traces,
            HttpEncoding::Json,
            br#"{"partialSuccess":{"rejectedSpans":"3","errorMessage":"bad ids"}}"#,
        );
        assert_eq!(ok.rejected, 3);
        assert_eq!(ok.message, "bad ids");
        assert_eq!(
            partial_success(Signal::Traces, HttpEncoding::Json, b"{}").rejected,
            0
        );
    }

    #[test]
    fn urls_come_from_base_or_override() {
        let c = OtlpHttpExporterConfig {
            endpoint: Some("http://h:4318/".into()),
            traces_endpoint: Some("http://t/x".into()),
            metrics_endpoint: None,
            logs_endpoint: None,
            encoding: HttpEncoding::Proto,
            headers: BTreeMap::new(),
            compression: Compression::Gzip,
            timeout: Duration::from_secs(1),
            tls: TlsClientConfig::default(),
            retry_on_failure: RetryConfig::default(),
            sending_queue: QueueConfig::default(),
            auth: None,
            max_request_items: None,
            max_request_bytes: None,
            max_item_bytes: None,
            max_request_time_range: None,
        };
        assert_eq!(c.url(Signal::Traces).unwrap(), "http://t/x");
        assert_eq!(c.url(Signal::Logs).unwrap(), "http://h:4318/v1/logs");
        assert!(c.validate().is_ok());
    }
}
