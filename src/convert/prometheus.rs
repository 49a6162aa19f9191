//! OTLP metrics → Prometheus names, labels and the text exposition format
//! (0.0.4, and OpenMetrics 1.0 on request), by the OpenTelemetry ↔
//! Prometheus compatibility rules: names sanitised with unit suffixes
//! (`_seconds`, `_bytes`, …) and `_total` on monotonic counters; label names
//! sanitised; `job` and `instance` from `service.namespace`/`service.name`
//! and `service.instance.id`; other resource attributes in `target_info`
//! (or on every series with `resource_to_telemetry_conversion`). Pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};

/// A metric name made of Prometheus's characters (`[a-zA-Z_:][a-zA-Z0-9_:]*`),
/// runs of `_` collapsed.
pub fn sanitize_name(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = if c.is_ascii_alphanumeric() || c == ':' {
            c
        } else {
            '_'
        };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    let out = out.trim_matches('_').to_string();
    match out.chars().next() {
        None => "_".into(),
        Some(c) if c.is_ascii_digit() => format!("_{out}"),
        _ => out,
    }
}

/// A label name: `[a-zA-Z_][a-zA-Z0-9_]*`; a leading digit gets `key_`.
pub fn sanitize_label(raw: &str) -> String {
    let mut out: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        return "key_".into();
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    }
    out
}

fn unit_word(u: &str) -> Option<&'static str> {
    Some(match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

/// The unit suffix of a UCUM unit: `s` → `seconds`, `By/s` → `bytes_per_second`;
/// annotations in braces are dropped (`{token}` → nothing).
pub fn unit_suffix(unit: &str, is_gauge: bool) -> Option<String> {
    let u: String = {
        // Drop `{...}` annotations.
        let mut out = String::new();
        let mut depth = 0;
        for c in unit.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ if depth == 0 => out.push(c),
                _ => {}
            }
        }
        out
    };
    let u = u.trim();
    if u.is_empty() {
        return None;
    }
    if u == "1" {
        return is_gauge.then(|| "ratio".to_string());
    }
    let (num, per) = match u.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (u, None),
    };
    let word = |w: &str| {
        unit_word(w)
            .map(String::from)
            .unwrap_or_else(|| sanitize_name(w))
    };
    let mut out = if num.is_empty() {
        String::new()
    } else {
        word(num)
    };
    if let Some(p) = per {
        let p = match p {
            "s" => "second".to_string(),
            "m" => "minute".to_string(),
            "h" => "hour".to_string(),
            "d" => "day".to_string(),
            other => word(other),
        };
        out = if out.is_empty() {
            format!("per_{p}")
        } else {
            format!("{out}_per_{p}")
        };
    }
    (!out.is_empty()).then_some(out)
}

/// The Prometheus name of an OTLP metric.
pub fn metric_name(
    namespace: &str,
    name: &str,
    unit: &str,
    is_counter: bool,
    is_gauge: bool,
) -> String {
    let mut n = sanitize_name(name);
    if !namespace.is_empty() {
        n = format!("{}_{n}", sanitize_name(namespace));
    }
    if let Some(s) = unit_suffix(unit, is_gauge) {
        if !n.ends_with(&format!("_{s}")) {
            n.push('_');
            n.push_str(&s);
        }
    }
    if is_counter && !n.ends_with("_total") {
        n.push_str("_total");
    }
    n
}

/// A label value from an OTLP value.
pub fn label_value(v: Option<&any_value::Value>) -> String {
    match v {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => json(other).to_string(),
        None => String::new(),
    }
}

fn json(v: &any_value::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        any_value::Value::StringValue(s) => J::String(s.clone()),
        any_value::Value::IntValue(i) => J::from(*i),
        any_value::Value::DoubleValue(d) => J::from(*d),
        any_value::Value::BoolValue(b) => J::Bool(*b),
        any_value::Value::ArrayValue(a) => J::Array(
            a.values
                .iter()
                .map(|v| v.value.as_ref().map(json).unwrap_or(J::Null))
                .collect(),
        ),
        any_value::Value::KvlistValue(l) => J::Object(
            l.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        kv.value
                            .as_ref()
                            .and_then(|v| v.value.as_ref())
                            .map(json)
                            .unwrap_or(J::Null),
                    )
                })
                .collect(),
        ),
        any_value::Value::BytesValue(b) => J::String(hex::encode(b)),
        any_value::Value::StringValueStrindex(_) => J::Null,
    }
}

/// Labels: sanitised names; values of names that collide are joined with `;`
/// in the order given; sorted by name.
pub fn labels(pairs: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in pairs {
        let k = sanitize_label(&k);
        match m.get_mut(&k) {
            Some(existing) => {
                existing.push(';');
                existing.push_str(&v);
            }
            None => {
                m.insert(k, v);
            }
        }
    }
    m.into_iter().collect()
}

/// `job` and `instance` from resource attributes.
pub fn job_instance(resource: &[KeyValue]) -> Vec<(String, String)> {
    let get = |k: &str| {
        resource
            .iter()
            .find(|kv| kv.key == k)
            .map(|kv| label_value(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .filter(|v| !v.is_empty())
    };
    let mut out = Vec::new();
    match (get("service.namespace"), get("service.name")) {
        (Some(ns), Some(n)) => out.push(("job".to_string(), format!("{ns}/{n}"))),
        (None, Some(n)) => out.push(("job".to_string(), n)),
        _ => {}
    }
    if let Some(i) = get("service.instance.id") {
        out.push(("instance".to_string(), i));
    }
    out
}

/// What kind of family a series belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyType {
    /// Monotonic sum.
    Counter,
    /// Gauge or non-monotonic sum.
    Gauge,
    /// Explicit-bucket histogram.
    Histogram,
    /// Summary.
    Summary,
}

impl FamilyType {
    fn word(self) -> &'static str {
        match self {
            FamilyType::Counter => "counter",
            FamilyType::Gauge => "gauge",
            FamilyType::Histogram => "histogram",
            FamilyType::Summary => "summary",
        }
    }
}

/// One series' current value.
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesValue {
    /// Counter or gauge.
    Number(f64),
    /// Cumulative bucket counts (not yet summed), bounds, sum, count.
    Histogram {
        /// Per-bucket counts (len = bounds + 1).
        counts: Vec<u64>,
        /// Upper bounds.
        bounds: Vec<f64>,
        /// Sum.
        sum: f64,
        /// Count.
        count: u64,
    },
    /// Quantiles, sum, count.
    Summary {
        /// (quantile, value).
        quantiles: Vec<(f64, f64)>,
        /// Sum.
        sum: f64,
        /// Count.
        count: u64,
    },
}

/// A family: name, type, help, and its series (labels → value).
#[derive(Debug, Clone)]
pub struct Family {
    /// Type.
    pub kind: FamilyType,
    /// HELP text.
    pub help: String,
    /// Series by sorted labels.
    pub series: BTreeMap<Vec<(String, String)>, SeriesValue>,
}

fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A float as Prometheus writes it (`+Inf`, `NaN`, `0.25`, `1`): sample
/// values in the text format and `le` / `quantile` label values.
pub fn number(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f == f64::INFINITY {
        "+Inf".into()
    } else if f == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{f}")
    }
}

fn series_line(
    out: &mut String,
    name: &str,
    labels: &[(String, String)],
    extra: Option<(&str, &str)>,
    value: &str,
) {
    out.push_str(name);
    if !labels.is_empty() || extra.is_some() {
        out.push('{');
        let mut first = true;
        for (k, v) in labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra)
        {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(k);
            out.push_str("=\"");
            escape_label(v, out);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// Writes `families` in the text format; OpenMetrics when `open_metrics`.
pub fn render(families: &BTreeMap<String, Family>, open_metrics: bool) -> String {
    let mut out = String::with_capacity(4096);
    for (name, f) in families {
        // OpenMetrics names a counter family without `_total`.
        let family = if open_metrics && f.kind == FamilyType::Counter {
            name.strip_suffix("_total").unwrap_or(name)
        } else {
            name.as_str()
        };
        if !f.help.is_empty() {
            let _ = write!(out, "# HELP {family} ");
            escape_help(&f.help, &mut out);
            out.push('\n');
        }
        let _ = writeln!(out, "# TYPE {family} {}", f.kind.word());
        for (labels, v) in &f.series {
            match v {
                SeriesValue::Number(x) => series_line(&mut out, name, labels, None, &number(*x)),
                SeriesValue::Histogram {
                    counts,
                    bounds,
                    sum,
                    count,
                } => {
                    let mut cum = 0u64;
                    for (i, b) in bounds.iter().enumerate() {
                        cum += counts.get(i).copied().unwrap_or(0);
                        series_line(
                            &mut out,
                            &format!("{family}_bucket"),
                            labels,
                            Some(("le", &number(*b))),
                            &cum.to_string(),
                        );
                    }
                    series_line(
                        &mut out,
                        &format!("{family}_bucket"),
                        labels,
                        Some(("le", "+Inf")),
                        &count.to_string(),
                    );
                    series_line(
                        &mut out,
                        &format!("{family}_sum"),
                        labels,
                        None,
                        &number(*sum),
                    );
                    series_line(
                        &mut out,
                        &format!("{family}_count"),
                        labels,
                        None,
                        &count.to_string(),
                    );
                }
                SeriesValue::Summary {
                    quantiles,
                    sum,
                    count,
                } => {
                    for (q, v) in quantiles {
                        series_line(
                            &mut out,
                            family,
                            labels,
                            Some(("quantile", &number(*q))),
                            &number(*v),
                        );
                    }
                    series_line(
                        &mut out,
                        &format!("{family}_sum"),
                        labels,
                        None,
                        &number(*sum),
                    );
                    series_line(
                        &mut out,
                        &format!("{family}_count"),
                        labels,
                        None,
                        &count.to_string(),
                    );
                }
            }
        }
    }
    if open_metrics {
        out.push_str("# EOF\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_compatibility_rules() {
        assert_eq!(
            metric_name("", "agent.duration", "s", false, false),
            "agent_duration_seconds"
        );
        assert_eq!(
            metric_name("", "agent.invocations", "{call}", true, false),
            "agent_invocations_total"
        );
        assert_eq!(
            metric_name("", "http.server.request.size", "By", false, false),
            "http_server_request_size_bytes"
        );
        assert_eq!(
            metric_name("", "throughput", "By/s", false, true),
            "throughput_bytes_per_second"
        );
        assert_eq!(
            metric_name("", "cpu.utilization", "1", false, true),
            "cpu_utilization_ratio"
        );
        assert_eq!(
            metric_name("", "requests_total", "", true, false),
            "requests_total"
        );
        assert_eq!(
            metric_name("app", "latency.seconds", "s", false, false),
            "app_latency_seconds"
        );
        assert_eq!(metric_name("", "9lives..x", "", false, true), "_9lives_x");
        assert_eq!(sanitize_label("gen_ai.agent.name"), "gen_ai_agent_name");
        assert_eq!(sanitize_label("0day"), "key_0day");
    }

    #[test]
    fn colliding_labels_are_joined() {
        let l = labels([
            ("a.b".to_string(), "1".to_string()),
            ("a_b".to_string(), "2".to_string()),
        ]);
        assert_eq!(l, vec![("a_b".to_string(), "1;2".to_string())]);
    }

    #[test]
    fn renders_histograms_cumulatively_and_openmetrics_ends_with_eof() {
        let mut families = BTreeMap::new();
        let mut series = BTreeMap::new();
        series.insert(
            vec![("job".to_string(), "x\"y".to_string())],
            SeriesValue::Histogram {
                counts: vec![1, 2, 3],
                bounds: vec![0.1, 1.0],
                sum: 4.5,
                count: 6,
            },
        );
        families.insert(
            "d_seconds".to_string(),
            Family {
                kind: FamilyType::Histogram,
                help: "h".into(),
                series,
            },
        );
        let text = render(&families, false);
        assert!(
            text.contains("d_seconds_bucket{job=\"x\\\"y\",le=\"0.1\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("le=\"1\"} 3\n"));
        assert!(text.contains("le=\"+Inf\"} 6\n"));
        assert!(text.contains("d_seconds_count{job=\"x\\\"y\"} 6\n"));
        assert!(render(&families, true).ends_with("# EOF\n"));
    }
}
