//! Exporter `prometheus`: serves the metrics it receives at `/metrics` for
//! Prometheus to scrape, in the text format (OpenMetrics when the scraper's
//! `Accept` asks for it). Names and labels follow the OpenTelemetry ↔
//! Prometheus rules ([`crate::convert::prometheus`]). Delta sums and
//! histograms are accumulated into cumulative series; series not updated for
//! `metric_expiration` disappear.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::component::{
    BuiltExporter, Export, ExportError, ExportOk, ExporterContext, ExporterFactory, Factory,
};
use crate::consumer::StartError;
use crate::convert::prometheus::{
    job_instance, label_value, labels, metric_name, render, Family, FamilyType, SeriesValue,
};
use crate::settings::de::DeError;
use crate::settings::types::{check_listen_endpoint, duration};
use crate::settings::types::{QueueConfig, RetryConfig};
use crate::signal::{Signal, Telemetry};

fn default_endpoint() -> String {
    "localhost:8889".into()
}
fn default_expiration() -> Duration {
    Duration::from_secs(300)
}

/// `resource_to_telemetry_conversion:`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourceToTelemetry {
    /// Put every resource attribute on every series as a label.
    #[serde(default)]
    pub enabled: bool,
}

/// `exporters.prometheus`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrometheusExporterConfig {
    /// `host:port` to serve `/metrics` on.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Prefix of every metric name.
    #[serde(default)]
    pub namespace: String,
    /// Labels added to every series.
    #[serde(default)]
    pub const_labels: BTreeMap<String, String>,
    /// Series not updated for this long are dropped.
    #[serde(default = "default_expiration", with = "duration")]
    pub metric_expiration: Duration,
    /// Resource attributes as labels on every series (else in `target_info`).
    #[serde(default)]
    pub resource_to_telemetry_conversion: ResourceToTelemetry,
}

impl PrometheusExporterConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        check_listen_endpoint(&self.endpoint).map_err(DeError::custom)?;
        if self.metric_expiration.is_zero() {
            return Err(DeError::custom("metric_expiration must be more than 0"));
        }
        Ok(())
    }
}

struct Series {
    value: SeriesValue,
    updated: Instant,
}

struct FamilyState {
    kind: FamilyType,
    help: String,
    series: HashMap<Vec<(String, String)>, Series>,
}

#[derive(Default)]
struct State {
    families: BTreeMap<String, FamilyState>,
    /// target_info per job/instance: labels and last update.
    targets: HashMap<Vec<(String, String)>, Instant>,
}

/// The running exporter.
pub struct PrometheusExporter {
    cfg: PrometheusExporterConfig,
    state: Arc<Mutex<State>>,
    cancel: CancellationToken,
}

const RESOURCE_IDENTITY: [&str; 3] = ["service.name", "service.namespace", "service.instance.id"];

impl PrometheusExporter {
    /// Binds `endpoint` and starts serving.
    pub fn new(cfg: &PrometheusExporterConfig, name: String) -> Result<Self, StartError> {
        let listener = crate::net::listen::bind_now(&cfg.endpoint)
            .map_err(|e| StartError::component(&name, e.to_string()))?;
        tracing::info!(exporter = %name, endpoint = %cfg.endpoint, "prometheus exporter serving /metrics");
        let state = Arc::new(Mutex::new(State::default()));
        let cancel = CancellationToken::new();
        let serve_state = state.clone();
        let expiration = cfg.metric_expiration;
        crate::net::serve_http(
            listener,
            None,
            move |req: hyper::Request<hyper::body::Incoming>| {
                let state = serve_state.clone();
                async move {
                    let open_metrics = req
                        .headers()
                        .get(http::header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|a| a.contains("application/openmetrics-text"));
                    let (status, body, ctype) = if req.uri().path() == "/metrics" {
                        let text = scrape(&state, expiration, open_metrics);
                        let ctype = if open_metrics {
                            "application/openmetrics-text; version=1.0.0; charset=utf-8"
                        } else {
                            "text/plain; version=0.0.4; charset=utf-8"
                        };
                        (http::StatusCode::OK, text, ctype)
                    } else {
                        (
                            http::StatusCode::NOT_FOUND,
                            "see /metrics\n".to_string(),
                            "text/plain",
                        )
                    };
                    let mut r = http::Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = status;
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static(ctype),
                    );
                    r
                }
            },
            cancel.clone(),
            Duration::from_secs(1),
        );
        Ok(PrometheusExporter {
            cfg: cfg.clone(),
            state,
            cancel,
        })
    }

    fn update(&self, rms: &[opentelemetry_proto::tonic::metrics::v1::ResourceMetrics]) {
        let now = Instant::now();
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        for rm in rms {
            let res: &[KeyValue] = rm
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            let base = self.base_labels(&mut st, res, now);
            for m in rm.scope_metrics.iter().flat_map(|sm| &sm.metrics) {
                self.update_metric(&mut st, m, &base, now);
            }
        }
    }

    /// The labels every series of a resource carries: job and instance,
    /// `const_labels`, and the resource's other attributes when
    /// `resource_to_telemetry_conversion` is on (otherwise they go to
    /// `target_info`).
    fn base_labels(&self, st: &mut State, res: &[KeyValue], now: Instant) -> Vec<(String, String)> {
        let ji = job_instance(res);
        let others = || {
            res.iter()
                .filter(|kv| !RESOURCE_IDENTITY.contains(&kv.key.as_str()))
                .map(|kv| (kv.key.clone(), attribute_label(kv).1))
        };
        let mut base: Vec<(String, String)> = ji.clone();
        base.extend(
            self.cfg
                .const_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        if self.cfg.resource_to_telemetry_conversion.enabled {
            base.extend(others());
        } else {
            let mut target: Vec<(String, String)> = ji.clone();
            target.extend(others());
            if target.len() > ji.len() {
                st.targets.insert(labels(target), now);
            }
        }
        base
    }

    /// Updates the series of one metric.
    fn update_metric(
        &self,
        st: &mut State,
        m: &opentelemetry_proto::tonic::metrics::v1::Metric,
        base: &[(String, String)],
        now: Instant,
    ) {
        let Some(data) = &m.data else { return };
        let point_labels = |attrs: &[KeyValue]| {
            labels(
                base.iter()
                    .cloned()
                    .chain(attrs.iter().map(attribute_label)),
            )
        };
        let ns = &self.cfg.namespace;
        match data {
            Data::Gauge(g) => {
                let name = metric_name(ns, &m.name, &m.unit, false, true);
                let fam = family(st, name, FamilyType::Gauge, &m.description);
                for p in &g.data_points {
                    let value = SeriesValue::Number(number(&p.value));
                    let series = Series {
                        value,
                        updated: now,
                    };
                    fam.series.insert(point_labels(&p.attributes), series);
                }
            }
            Data::Sum(s) => {
                let counter = s.is_monotonic;
                let delta = s.aggregation_temporality == AggregationTemporality::Delta as i32;
                let kind = if counter {
                    FamilyType::Counter
                } else {
                    FamilyType::Gauge
                };
                let name = metric_name(ns, &m.name, &m.unit, counter, !counter);
                let fam = family(st, name, kind, &m.description);
                for p in &s.data_points {
                    let v = number(&p.value);
                    let entry = fam
                        .series
                        .entry(point_labels(&p.attributes))
                        .or_insert(Series {
                            value: SeriesValue::Number(0.0),
                            updated: now,
                        });
                    entry.value = match (&entry.value, delta) {
                        (SeriesValue::Number(old), true) => SeriesValue::Number(old + v),
                        _ => SeriesValue::Number(v),
                    };
                    entry.updated = now;
                }
            }
            Data::Histogram(h) => {
                let delta = h.aggregation_temporality == AggregationTemporality::Delta as i32;
                let name = metric_name(ns, &m.name, &m.unit, false, false);
                let fam = family(st, name, FamilyType::Histogram, &m.description);
                for p in &h.data_points {
                    let mut counts = p.bucket_counts.clone();
                    counts.resize(p.explicit_bounds.len() + 1, 0);
                    let new = SeriesValue::Histogram {
                        counts,
                        bounds: p.explicit_bounds.clone(),
                        sum: p.sum.unwrap_or(0.0),
                        count: p.count,
                    };
                    let key = point_labels(&p.attributes);
                    let old = fam.series.get(&key).map(|s| &s.value);
                    let value = if delta { add_histograms(old, new) } else { new };
                    fam.series.insert(
                        key,
                        Series {
                            value,
                            updated: now,
                        },
                    );
                }
            }
            Data::Summary(s) => {
                let name = metric_name(ns, &m.name, &m.unit, false, false);
                let fam = family(st, name, FamilyType::Summary, &m.description);
                for p in &s.data_points {
                    let value = SeriesValue::Summary {
                        quantiles: p
                            .quantile_values
                            .iter()
                            .map(|q| (q.quantile, q.value))
                            .collect(),
                        sum: p.sum,
                        count: p.count,
                    };
                    let series = Series {
                        value,
                        updated: now,
                    };
                    fam.series.insert(point_labels(&p.attributes), series);
                }
            }
            Data::ExponentialHistogram(_) => {
                tracing::debug!(metric = %m.name, "exponential histograms are not exposed to Prometheus");
            }
        }
    }
}

/// An attribute as a label: its key and its value as text.
fn attribute_label(kv: &KeyValue) -> (String, String) {
    (
        kv.key.clone(),
        label_value(kv.value.as_ref().and_then(|v| v.value.as_ref())),
    )
}

/// A number data point's value.
fn number(v: &Option<number_data_point::Value>) -> f64 {
    match v {
        Some(number_data_point::Value::AsDouble(d)) => *d,
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        None => 0.0,
    }
}

/// A delta histogram point added to the series so far (same bounds), or
/// the new point alone.
fn add_histograms(old: Option<&SeriesValue>, new: SeriesValue) -> SeriesValue {
    match (old, &new) {
        (
            Some(SeriesValue::Histogram {
                counts: oc,
                bounds: ob,
                sum: os,
                count: on,
            }),
            SeriesValue::Histogram {
                counts: nc,
                bounds: nb,
                sum: ns,
                count: nn,
            },
        ) if ob == nb => SeriesValue::Histogram {
            counts: oc.iter().zip(nc).map(|(a, b)| a + b).collect(),
            bounds: nb.clone(),
            sum: os + ns,
            count: on + nn,
        },
        _ => new,
    }
}

fn family<'s>(
    st: &'s mut State,
    name: String,
    kind: FamilyType,
    help: &str,
) -> &'s mut FamilyState {
    st.families.entry(name).or_insert_with(|| FamilyState {
        kind,
        help: help.to_string(),
        series: HashMap::new(),
    })
}

/// Drops expired series and renders the rest.
fn scrape(state: &Mutex<State>, expiration: Duration, open_metrics: bool) -> String {
    let mut st = match state.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let now = Instant::now();
    for f in st.families.values_mut() {
        f.series
            .retain(|_, s| now.duration_since(s.updated) < expiration);
    }
    st.families.retain(|_, f| !f.series.is_empty());
    st.targets
        .retain(|_, t| now.duration_since(*t) < expiration);
    let mut families: BTreeMap<String, Family> = st
        .families
        .iter()
        .map(|(n, f)| {
            (
                n.clone(),
                Family {
                    kind: f.kind,
                    help: f.help.clone(),
                    series: f
                        .series
                        .iter()
                        .map(|(k, s)| (k.clone(), s.value.clone()))
                        .collect(),
                },
            )
        })
        .collect();
    if !st.targets.is_empty() {
        families.insert(
            "target_info".into(),
            Family {
                kind: FamilyType::Gauge,
                help: "Target metadata".into(),
                series: st
                    .targets
                    .keys()
                    .map(|k| (k.clone(), SeriesValue::Number(1.0)))
                    .collect(),
            },
        );
    }
    render(&families, open_metrics)
}

/// The `prometheus` exporter's factory.
pub struct PrometheusFactory;

impl Factory for PrometheusFactory {
    type Config = PrometheusExporterConfig;
    fn type_name(&self) -> &'static str {
        "prometheus"
    }
    fn validate(&self, config: &PrometheusExporterConfig) -> Result<(), DeError> {
        config.validate()
    }
}

impl ExporterFactory for PrometheusFactory {
    fn signals(&self, _config: &PrometheusExporterConfig) -> &'static [Signal] {
        SIGNALS
    }
    fn listen_endpoints(&self, config: &PrometheusExporterConfig) -> Vec<String> {
        vec![config.endpoint.clone()]
    }
    fn build(
        &self,
        config: &PrometheusExporterConfig,
        ctx: ExporterContext<'_>,
    ) -> Result<BuiltExporter, StartError> {
        // Updates its own registry: a small queue, nothing to retry.
        Ok(BuiltExporter::new(
            PrometheusExporter::new(config, ctx.name())?,
            QueueConfig::local(100),
            RetryConfig::off(),
        ))
    }
}

#[async_trait]
impl Export for PrometheusExporter {
    type Progress = ();

    async fn export(
        &self,
        data: &Arc<Telemetry>,
        _metadata: &crate::signal::Metadata,
        _progress: &mut (),
    ) -> Result<ExportOk, ExportError> {
        if let Telemetry::Metrics(rms) = data.as_ref() {
            self.update(rms);
        }
        Ok(ExportOk::default())
    }

    async fn shutdown(&self) {
        self.cancel.cancel();
    }
}

/// Signals the exporter takes.
pub const SIGNALS: &[Signal] = &[Signal::Metrics];
