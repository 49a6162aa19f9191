//! spanwire's own telemetry: `tracing` logs (text or JSON) and Prometheus
//! self-metrics (per component counters, queue gauges, process RSS and CPU).

use std::sync::OnceLock;

use metrics::{Counter, Gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::signal::Signal;

/// Log output settings (`service.telemetry.logs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsTelemetry {
    /// `trace`, `debug`, `info`, `warn` or `error` (or any `tracing` filter directive).
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
    /// The Collector's key for the same choice: `console` (text) or `json`;
    /// when set it decides the format.
    pub encoding: Option<LogEncoding>,
}

impl Default for LogsTelemetry {
    fn default() -> Self {
        LogsTelemetry {
            level: "info".into(),
            format: LogFormat::Text,
            encoding: None,
        }
    }
}

impl LogsTelemetry {
    /// The format in effect: `encoding` if set, else `format`.
    pub fn effective_format(&self) -> LogFormat {
        match self.encoding {
            Some(LogEncoding::Console) => LogFormat::Text,
            Some(LogEncoding::Json) => LogFormat::Json,
            None => self.format,
        }
    }
}

/// `service.telemetry.logs.encoding`, as the Collector names the formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogEncoding {
    /// Human-readable lines.
    Console,
    /// One JSON object per line.
    Json,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Self-metrics settings (`service.telemetry.metrics`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsTelemetry {
    /// Where to serve self-metrics in Prometheus text format; empty disables the endpoint.
    pub address: String,
    /// `none` disables the endpoint; `basic`, `normal` and `detailed` serve everything.
    pub level: MetricsLevel,
}

/// How much self-metrics to expose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsLevel {
    /// No self-metrics endpoint.
    None,
    /// Everything (spanwire has one level of detail today).
    Basic,
    /// Everything.
    Normal,
    /// Everything.
    Detailed,
}

impl Default for MetricsTelemetry {
    fn default() -> Self {
        MetricsTelemetry {
            address: "localhost:8888".into(),
            level: MetricsLevel::Normal,
        }
    }
}

/// `service.telemetry`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Logs.
    pub logs: LogsTelemetry,
    /// Self-metrics.
    pub metrics: MetricsTelemetry,
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log level is not a valid filter.
    #[error("invalid service.telemetry.logs.level `{0}`: {1}")]
    Level(String, String),
}

/// Starts logging to stderr. Calling it twice keeps the first setup.
pub fn init_logging(cfg: &LogsTelemetry) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_new(&cfg.level)
        .map_err(|e| TelemetryError::Level(cfg.level.clone(), e.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = match cfg.effective_format() {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(())
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global metrics recorder (once) and returns its handle.
pub fn init_metrics() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; the handle still renders ours.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Renders all self-metrics in the Prometheus text format, process metrics included.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut out = handle.render();
    if let Some(p) = process_stats() {
        out.push_str("# HELP spanwire_process_resident_memory_bytes Resident set size of the spanwire process.\n");
        out.push_str("# TYPE spanwire_process_resident_memory_bytes gauge\n");
        out.push_str(&format!(
            "spanwire_process_resident_memory_bytes {}\n",
            p.rss_bytes
        ));
        out.push_str("# HELP spanwire_process_cpu_seconds_total CPU time (user + system) used by the spanwire process.\n");
        out.push_str("# TYPE spanwire_process_cpu_seconds_total counter\n");
        out.push_str(&format!(
            "spanwire_process_cpu_seconds_total {:.3}\n",
            p.cpu_seconds
        ));
    }
    out
}

/// Resident memory and CPU time of this process.
#[derive(Debug, Clone, Copy)]
pub struct ProcessStats {
    /// Resident set size.
    pub rss_bytes: u64,
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
}

/// Reads RSS and CPU time from `/proc/self` (Linux); `None` elsewhere.
pub fn process_stats() -> Option<ProcessStats> {
    let rss_bytes = current_rss()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are 14th and 15th overall.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux we run on.
    Some(ProcessStats {
        rss_bytes,
        cpu_seconds: (utime + stime) / 100.0,
    })
}

/// Current resident set size in bytes, from `/proc/self/status`.
pub fn current_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// One counter per signal, for a metric family like `spanwire_receiver_accepted_*_total`.
#[derive(Clone)]
pub struct SignalCounters {
    spans: Counter,
    metric_points: Counter,
    log_records: Counter,
}

impl SignalCounters {
    /// Creates `{prefix}_{spans|metric_points|log_records}_total` with the given labels.
    pub fn new(prefix: &str, labels: &[(&'static str, String)]) -> SignalCounters {
        let make = |signal: Signal| {
            let name = format!("{prefix}_{}_total", signal.item_name());
            let labels: Vec<metrics::Label> = labels
                .iter()
                .map(|(k, v)| metrics::Label::new(*k, v.clone()))
                .collect();
            metrics::counter!(name, labels)
        };
        SignalCounters {
            spans: make(Signal::Traces),
            metric_points: make(Signal::Metrics),
            log_records: make(Signal::Logs),
        }
    }

    /// Adds `n` items of `signal`.
    pub fn add(&self, signal: Signal, n: usize) {
        match signal {
            Signal::Traces => self.spans.increment(n as u64),
            Signal::Metrics => self.metric_points.increment(n as u64),
            Signal::Logs => self.log_records.increment(n as u64),
        }
    }
}

/// A gauge with labels.
pub fn gauge(name: &'static str, labels: &[(&'static str, String)]) -> Gauge {
    metrics::gauge!(name, to_labels(labels))
}

/// A counter handle with the given labels.
pub fn counter(name: &'static str, labels: &[(&'static str, String)]) -> Counter {
    metrics::counter!(name, to_labels(labels))
}

fn to_labels(labels: &[(&'static str, String)]) -> Vec<metrics::Label> {
    labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect()
}

/// Now, in nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_nanos_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// When this process started (Unix ns): the first call's time, and `main`
/// calls it first. Cumulative series that started after it are new to the
/// world, so their first value is all news (see `convert::emf`).
pub fn process_start_nanos() -> u64 {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *START.get_or_init(unix_nanos_now)
}

/// `spanwire_receiver_unauthenticated_requests_total`: requests refused for a
/// missing or wrong token.
pub fn unauthenticated_counter(labels: &[(&'static str, String)]) -> metrics::Counter {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect();
    metrics::counter!("spanwire_receiver_unauthenticated_requests_total", labels)
}

/// A counter of one exporter, labelled `reason` too unless `reason` is empty.
pub fn exporter_counter(metric: &'static str, exporter: &str, reason: &'static str) -> Counter {
    if reason.is_empty() {
        metrics::counter!(metric, "exporter" => exporter.to_string())
    } else {
        metrics::counter!(metric, "exporter" => exporter.to_string(), "reason" => reason)
    }
}

/// Serves the self-metrics of `handle` at `cfg.address` `/metrics`
/// (`None` when the endpoint is disabled); it stops when `cancel` fires.
pub async fn serve_metrics(
    cfg: &MetricsTelemetry,
    handle: PrometheusHandle,
    cancel: CancellationToken,
) -> Result<Option<JoinHandle<()>>, crate::net::NetError> {
    if cfg.address.is_empty() || cfg.level == MetricsLevel::None {
        return Ok(None);
    }
    let listener = crate::net::bind(&cfg.address).await?;
    tracing::info!(endpoint = %cfg.address, "self-metrics at /metrics");
    Ok(Some(crate::net::serve_http(
        listener,
        None,
        move |req| {
            let handle = handle.clone();
            async move {
                let (status, body) = if req.uri().path() == "/metrics" {
                    (http::StatusCode::OK, render(&handle))
                } else {
                    (http::StatusCode::NOT_FOUND, "see /metrics\n".to_string())
                };
                let mut r =
                    http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
                *r.status_mut() = status;
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
        },
        cancel,
        std::time::Duration::from_secs(1),
    )))
}
