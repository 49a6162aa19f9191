//! Exporter `debug`: writes what arrives to stderr, at three levels of detail.

use std::io::Write;

use std::sync::Arc;

use async_trait::async_trait;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use serde::Deserialize;

use crate::component::{
    BuiltExporter, Export, ExportError, ExportOk, ExporterContext, ExporterFactory, Factory,
};
use crate::consumer::StartError;
use crate::settings::types::{QueueConfig, RetryConfig};
use crate::signal::Telemetry;

/// How much to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    /// One line per batch: counts.
    #[default]
    Basic,
    /// One line per span, log record or metric.
    Normal,
    /// The whole batch as OTLP/JSON.
    Detailed,
}

/// `exporters.debug`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// `basic` (default), `normal` or `detailed`.
    pub verbosity: Verbosity,
}

/// The running exporter.
pub struct DebugExporter {
    verbosity: Verbosity,
}

impl DebugExporter {
    /// Creates it.
    pub fn new(cfg: &DebugConfig) -> Self {
        DebugExporter {
            verbosity: cfg.verbosity,
        }
    }
}

fn value_text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs_text(attrs: &[KeyValue]) -> String {
    attrs
        .iter()
        .map(|kv| format!("{}={}", kv.key, value_text(&kv.value)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Renders a batch as text at the given verbosity.
pub fn render(data: &Telemetry, verbosity: Verbosity) -> String {
    let mut out = String::new();
    let (resources, what) = match data {
        Telemetry::Traces(v) => (v.len(), "spans"),
        Telemetry::Metrics(v) => (v.len(), "data points"),
        Telemetry::Logs(v) => (v.len(), "log records"),
    };
    out.push_str(&format!(
        "{}: {} resource(s), {} {}\n",
        data.signal(),
        resources,
        data.item_count(),
        what
    ));
    match verbosity {
        Verbosity::Basic => {}
        Verbosity::Detailed => {
            let json = crate::convert::otlp_json::encode(data);
            out.push_str(&serde_json::to_string_pretty(&json).unwrap_or_default());
            out.push('\n');
        }
        Verbosity::Normal => match data {
            Telemetry::Traces(v) => {
                for s in v.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans) {
                    let dur =
                        s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) as f64 / 1e6;
                    out.push_str(&format!(
                        "  span {} trace={} id={} parent={} kind={} {:.3}ms {}\n",
                        s.name,
                        hex::encode(&s.trace_id),
                        hex::encode(&s.span_id),
                        hex::encode(&s.parent_span_id),
                        s.kind,
                        dur,
                        attrs_text(&s.attributes)
                    ));
                }
            }
            Telemetry::Logs(v) => {
                for l in v
                    .iter()
                    .flat_map(|r| &r.scope_logs)
                    .flat_map(|s| &s.log_records)
                {
                    out.push_str(&format!(
                        "  log {} {} {}\n",
                        l.severity_text,
                        value_text(&l.body),
                        attrs_text(&l.attributes)
                    ));
                }
            }
            Telemetry::Metrics(v) => {
                for m in v
                    .iter()
                    .flat_map(|r| &r.scope_metrics)
                    .flat_map(|s| &s.metrics)
                {
                    out.push_str(&format!(
                        "  metric {} ({}) {} point(s)\n",
                        m.name,
                        m.unit,
                        crate::signal::metric_points(m)
                    ));
                }
            }
        },
    }
    out
}

/// The `debug` exporter's factory.
pub struct DebugFactory;

impl Factory for DebugFactory {
    type Config = DebugConfig;
    fn type_name(&self) -> &'static str {
        "debug"
    }
}

impl ExporterFactory for DebugFactory {
    fn build(
        &self,
        config: &DebugConfig,
        _ctx: ExporterContext<'_>,
    ) -> Result<BuiltExporter, StartError> {
        // Writes to stderr: a small queue, nothing to retry.
        Ok(BuiltExporter::new(
            DebugExporter::new(config),
            QueueConfig::local(100),
            RetryConfig::off(),
        ))
    }
}

#[async_trait]
impl Export for DebugExporter {
    type Progress = ();

    async fn export(
        &self,
        data: &Arc<Telemetry>,
        _metadata: &crate::signal::Metadata,
        _progress: &mut (),
    ) -> Result<ExportOk, ExportError> {
        let text = render(data, self.verbosity);
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
        Ok(ExportOk::default())
    }
}

/// Renders the spans of a batch as indented trees (children under parents,
/// times relative to each tree's root), for reading converted traces.
pub fn tree(data: &Telemetry) -> String {
    let Telemetry::Traces(rs) = data else {
        return render(data, Verbosity::Normal);
    };
    let spans: Vec<&opentelemetry_proto::tonic::trace::v1::Span> = rs
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    let ids: std::collections::HashSet<&[u8]> =
        spans.iter().map(|s| s.span_id.as_slice()).collect();
    let mut out = String::new();
    fn walk(
        spans: &[&opentelemetry_proto::tonic::trace::v1::Span],
        idx: usize,
        depth: usize,
        t0: u64,
        out: &mut String,
    ) {
        let s = spans[idx];
        let ms = |t: u64| t.saturating_sub(t0) as f64 / 1e6;
        let keep = [
            "gen_ai.agent.name",
            "gen_ai.request.model",
            "gen_ai.tool.name",
            "gen_ai.data_source.id",
            "aws.bedrock.guardrail.action",
            "error.type",
        ];
        let attrs: Vec<&KeyValue> = s
            .attributes
            .iter()
            .filter(|kv| {
                keep.contains(&kv.key.as_str())
                    || crate::convert::genai::span::is_usage_attribute(&kv.key)
            })
            .collect();
        let attrs: Vec<KeyValue> = attrs.into_iter().cloned().collect();
        let status = match &s.status {
            Some(st) if st.code == 2 => {
                format!(" ERROR({})", st.message.lines().next().unwrap_or(""))
            }
            _ => String::new(),
        };
        out.push_str(&format!(
            "{}{} [{:.3}ms +{:.3}ms]{} {}\n",
            "  ".repeat(depth),
            s.name,
            ms(s.start_time_unix_nano),
            (s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano)) as f64 / 1e6,
            status,
            attrs_text(&attrs)
        ));
        for (i, c) in spans.iter().enumerate() {
            if c.parent_span_id == s.span_id && c.trace_id == s.trace_id {
                walk(spans, i, depth + 1, t0, out);
            }
        }
    }
    for (i, s) in spans.iter().enumerate() {
        if !ids.contains(s.parent_span_id.as_slice()) {
            out.push_str(&format!("trace {}\n", hex::encode(&s.trace_id)));
            walk(&spans, i, 1, s.start_time_unix_nano, &mut out);
        }
    }
    out
}
