//! Processor `metricstransform`: renames metrics, or copies them under a new
//! name, and changes their labels (data point attributes), with the
//! Collector's `transforms` list: `include` (or the older `metric_name`),
//! `match_type` (`strict` or `regexp`, whose groups `$1` may appear in
//! `new_name`), `action` (`update` in place, or `insert` a transformed copy)
//! and `operations` applied in order: `add_label`, `update_label`,
//! `delete_label_value`, `aggregate_labels`, `toggle_scalar_data_type`.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Metric, NumberDataPoint,
};
use serde::Deserialize;

use crate::component::{Factory, ProcessorContext, ProcessorFactory, Stage, SyncProcessor};
use crate::consumer::{ConsumeError, StartError};
use crate::settings::de::DeError;
use crate::signal::{for_each_point_attributes, string_attribute, Metadata, Signal, Telemetry};

/// `strict` or `regexp`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchType {
    /// The whole name.
    #[default]
    Strict,
    /// A regular expression.
    Regexp,
}

/// `update` or `insert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransformAction {
    /// Change the matching metric.
    Update,
    /// Add a changed copy of the matching metric.
    Insert,
    /// The Collector's `combine` (not supported).
    Combine,
}

/// How `aggregate_labels` merges points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    /// Their sum.
    Sum,
    /// Their mean.
    Mean,
    /// The smallest.
    Min,
    /// The largest.
    Max,
    /// How many there were.
    Count,
    /// The median.
    Median,
}

/// One label value rename of `update_label`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueAction {
    /// The value to change.
    pub value: String,
    /// What it becomes.
    pub new_value: String,
}

/// An operation's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    /// Add `new_label: new_value` to every point that lacks it.
    AddLabel,
    /// Rename `label` to `new_label` and/or its values (`value_actions`).
    UpdateLabel,
    /// Drop the points whose `label` is `label_value`.
    DeleteLabelValue,
    /// Keep only the labels in `label_set`, merging points that become
    /// alike with `aggregation_type`.
    AggregateLabels,
    /// Int points become double and double points int.
    ToggleScalarDataType,
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// What to do.
    pub action: OperationKind,
    /// The label acted on.
    #[serde(default)]
    pub label: Option<String>,
    /// The new label's name.
    #[serde(default)]
    pub new_label: Option<String>,
    /// The new label's value (`add_label`).
    #[serde(default)]
    pub new_value: Option<String>,
    /// The value whose points are deleted (`delete_label_value`).
    #[serde(default)]
    pub label_value: Option<String>,
    /// Value renames (`update_label`).
    #[serde(default)]
    pub value_actions: Vec<ValueAction>,
    /// Labels kept (`aggregate_labels`).
    #[serde(default)]
    pub label_set: Vec<String>,
    /// How merged points combine (`aggregate_labels`).
    #[serde(default)]
    pub aggregation_type: Option<Aggregation>,
}

/// One transform.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transform {
    /// The metric name, or a regular expression for `regexp`.
    #[serde(alias = "metric_name")]
    pub include: String,
    /// How `include` matches.
    #[serde(default)]
    pub match_type: MatchType,
    /// `update` or `insert`.
    pub action: TransformAction,
    /// The new name (`$1` … from `regexp` groups); required for `insert`.
    #[serde(default)]
    pub new_name: Option<String>,
    /// Operations in order.
    #[serde(default)]
    pub operations: Vec<Operation>,
}

/// `processors.metricstransform`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsTransformConfig {
    /// Transforms, applied in order.
    pub transforms: Vec<Transform>,
}

impl MetricsTransformConfig {
    /// Checks each transform has what its action and operations need.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        if self.transforms.is_empty() {
            return Err(DeError::custom("transforms: list at least one transform"));
        }
        for (i, t) in self.transforms.iter().enumerate() {
            let at = format!("transforms[{i}] (`{}`)", t.include);
            let fail = |m: &str| Err(DeError::custom(format!("{at}: {m}")));
            if t.include.is_empty() {
                return fail("include must name a metric");
            }
            if t.match_type == MatchType::Regexp {
                if let Err(e) = regex::Regex::new(&t.include) {
                    return fail(&format!("include is not a regular expression: {e}"));
                }
            }
            match t.action {
                TransformAction::Combine => {
                    return fail("action `combine` is not supported (update or insert)")
                }
                TransformAction::Insert if t.new_name.as_deref().is_none_or(str::is_empty) => {
                    return fail("action `insert` needs new_name")
                }
                _ => {}
            }
            for (j, op) in t.operations.iter().enumerate() {
                let need = |field: &str, v: bool| {
                    if v {
                        Ok(())
                    } else {
                        Err(DeError::custom(format!(
                            "{at}: operations[{j}] ({:?}) needs {field}",
                            op.action
                        )))
                    }
                };
                match op.action {
                    OperationKind::AddLabel => {
                        need("new_label", op.new_label.is_some())?;
                        need("new_value", op.new_value.is_some())?;
                    }
                    OperationKind::UpdateLabel => {
                        need("label", op.label.is_some())?;
                        need(
                            "new_label or value_actions",
                            op.new_label.is_some() || !op.value_actions.is_empty(),
                        )?;
                    }
                    OperationKind::DeleteLabelValue => {
                        need("label", op.label.is_some())?;
                        need("label_value", op.label_value.is_some())?;
                    }
                    OperationKind::AggregateLabels => {
                        need("aggregation_type", op.aggregation_type.is_some())?;
                    }
                    OperationKind::ToggleScalarDataType => {}
                }
            }
        }
        Ok(())
    }
}

/// The `metricstransform` processor's factory.
pub struct MetricsTransformFactory;

impl Factory for MetricsTransformFactory {
    type Config = MetricsTransformConfig;
    fn type_name(&self) -> &'static str {
        "metricstransform"
    }
    fn validate(&self, config: &MetricsTransformConfig) -> Result<(), DeError> {
        config.validate()
    }
}

impl ProcessorFactory for MetricsTransformFactory {
    fn signals(&self, _config: &MetricsTransformConfig) -> &'static [Signal] {
        &[Signal::Metrics]
    }
    fn build(
        &self,
        config: &MetricsTransformConfig,
        ctx: ProcessorContext<'_>,
    ) -> Result<Stage, StartError> {
        Ok(ctx.inline(MetricsTransform::new(config)))
    }
}

enum Matcher {
    Strict(String),
    Regexp(regex::Regex),
}

struct Compiled {
    matcher: Matcher,
    action: TransformAction,
    new_name: Option<String>,
    operations: Vec<Operation>,
}

impl Compiled {
    /// The metric's name after the transform, if the transform applies.
    fn renamed(&self, name: &str) -> Option<String> {
        match &self.matcher {
            Matcher::Strict(n) if n == name => {
                Some(self.new_name.clone().unwrap_or_else(|| name.to_string()))
            }
            Matcher::Strict(_) => None,
            Matcher::Regexp(re) => {
                let caps = re.captures(name)?;
                // The whole name must match, as the Collector anchors it.
                if caps.get(0).map(|m| m.as_str()) != Some(name) {
                    return None;
                }
                Some(match &self.new_name {
                    Some(t) => {
                        let mut out = String::new();
                        caps.expand(t, &mut out);
                        out
                    }
                    None => name.to_string(),
                })
            }
        }
    }
}

/// The `metricstransform` processor.
pub struct MetricsTransform(Vec<Compiled>);

impl MetricsTransform {
    /// Compiles a (validated) config.
    pub fn new(c: &MetricsTransformConfig) -> MetricsTransform {
        MetricsTransform(
            c.transforms
                .iter()
                .filter_map(|t| {
                    let matcher = match t.match_type {
                        MatchType::Strict => Matcher::Strict(t.include.clone()),
                        MatchType::Regexp => Matcher::Regexp(regex::Regex::new(&t.include).ok()?),
                    };
                    Some(Compiled {
                        matcher,
                        action: t.action,
                        new_name: t.new_name.clone(),
                        operations: t.operations.clone(),
                    })
                })
                .collect(),
        )
    }

    fn apply(&self, metrics: &mut Vec<Metric>) {
        for t in &self.0 {
            let mut inserted = Vec::new();
            for m in metrics.iter_mut() {
                let Some(name) = t.renamed(&m.name) else {
                    continue;
                };
                match t.action {
                    TransformAction::Insert => {
                        let mut copy = m.clone();
                        copy.name = name;
                        operate(&mut copy, &t.operations);
                        inserted.push(copy);
                    }
                    _ => {
                        m.name = name;
                        operate(m, &t.operations);
                    }
                }
            }
            metrics.extend(inserted);
        }
    }
}

impl SyncProcessor for MetricsTransform {
    fn process(&self, mut data: Telemetry, _: &Metadata) -> Result<Telemetry, ConsumeError> {
        if let Telemetry::Metrics(v) = &mut data {
            for sm in v.iter_mut().flat_map(|r| &mut r.scope_metrics) {
                self.apply(&mut sm.metrics);
            }
        }
        Ok(data)
    }
}

fn text(v: Option<&AnyValue>) -> String {
    crate::signal::value_text(v.and_then(|v| v.value.as_ref()))
}

fn operate(m: &mut Metric, ops: &[Operation]) {
    for op in ops {
        match op.action {
            OperationKind::AddLabel => {
                let (Some(k), Some(v)) = (&op.new_label, &op.new_value) else {
                    continue;
                };
                for_each_point_attributes(m, |attrs| {
                    if !attrs.iter().any(|kv| &kv.key == k) {
                        attrs.push(string_attribute(k, v.clone()));
                    }
                });
            }
            OperationKind::UpdateLabel => {
                let Some(label) = &op.label else { continue };
                for_each_point_attributes(m, |attrs| {
                    for kv in attrs.iter_mut().filter(|kv| &kv.key == label) {
                        let current = text(kv.value.as_ref());
                        if let Some(va) = op.value_actions.iter().find(|va| va.value == current) {
                            kv.value = Some(AnyValue {
                                value: Some(any_value::Value::StringValue(va.new_value.clone())),
                            });
                        }
                        if let Some(n) = &op.new_label {
                            kv.key = n.clone();
                        }
                    }
                });
            }
            OperationKind::DeleteLabelValue => {
                let (Some(label), Some(value)) = (&op.label, &op.label_value) else {
                    continue;
                };
                let drop = |attrs: &[KeyValue]| {
                    attrs
                        .iter()
                        .any(|kv| &kv.key == label && text(kv.value.as_ref()) == *value)
                };
                match &mut m.data {
                    Some(Data::Gauge(g)) => g.data_points.retain(|p| !drop(&p.attributes)),
                    Some(Data::Sum(s)) => s.data_points.retain(|p| !drop(&p.attributes)),
                    Some(Data::Histogram(h)) => h.data_points.retain(|p| !drop(&p.attributes)),
                    Some(Data::ExponentialHistogram(h)) => {
                        h.data_points.retain(|p| !drop(&p.attributes))
                    }
                    Some(Data::Summary(s)) => s.data_points.retain(|p| !drop(&p.attributes)),
                    None => {}
                }
            }
            OperationKind::ToggleScalarDataType => {
                let points = match &mut m.data {
                    Some(Data::Gauge(g)) => &mut g.data_points,
                    Some(Data::Sum(s)) => &mut s.data_points,
                    _ => continue,
                };
                for p in points {
                    p.value = match p.value {
                        Some(number_data_point::Value::AsInt(i)) => {
                            Some(number_data_point::Value::AsDouble(i as f64))
                        }
                        Some(number_data_point::Value::AsDouble(d)) => {
                            Some(number_data_point::Value::AsInt(d as i64))
                        }
                        None => None,
                    };
                }
            }
            OperationKind::AggregateLabels => {
                let Some(agg) = op.aggregation_type else {
                    continue;
                };
                let keep = &op.label_set;
                let points = match &mut m.data {
                    Some(Data::Gauge(g)) => &mut g.data_points,
                    Some(Data::Sum(s)) => &mut s.data_points,
                    Some(Data::Histogram(h)) => {
                        // Histograms: attributes narrowed; points with the
                        // same attributes and bounds are summed.
                        for p in &mut h.data_points {
                            p.attributes.retain(|kv| keep.contains(&kv.key));
                            p.attributes.sort_by(|a, b| a.key.cmp(&b.key));
                        }
                        let mut merged: Vec<
                            opentelemetry_proto::tonic::metrics::v1::HistogramDataPoint,
                        > = Vec::new();
                        for p in std::mem::take(&mut h.data_points) {
                            match merged.iter_mut().find(|q| {
                                q.attributes == p.attributes
                                    && q.explicit_bounds == p.explicit_bounds
                                    && q.bucket_counts.len() == p.bucket_counts.len()
                            }) {
                                Some(q) => {
                                    q.count += p.count;
                                    q.sum = Some(q.sum.unwrap_or(0.0) + p.sum.unwrap_or(0.0));
                                    for (a, b) in q.bucket_counts.iter_mut().zip(&p.bucket_counts) {
                                        *a += b;
                                    }
                                    q.min = match (q.min, p.min) {
                                        (Some(a), Some(b)) => Some(a.min(b)),
                                        (a, b) => a.or(b),
                                    };
                                    q.max = match (q.max, p.max) {
                                        (Some(a), Some(b)) => Some(a.max(b)),
                                        (a, b) => a.or(b),
                                    };
                                    q.time_unix_nano = q.time_unix_nano.max(p.time_unix_nano);
                                    q.start_time_unix_nano =
                                        q.start_time_unix_nano.min(p.start_time_unix_nano);
                                }
                                None => merged.push(p),
                            }
                        }
                        h.data_points = merged;
                        continue;
                    }
                    _ => continue,
                };
                aggregate(points, keep, agg);
            }
        }
    }
}

/// Narrows number points to `keep` labels and merges those left alike.
fn aggregate(points: &mut Vec<NumberDataPoint>, keep: &[String], agg: Aggregation) {
    let mut groups: BTreeMap<Vec<(String, String)>, Vec<NumberDataPoint>> = BTreeMap::new();
    for mut p in std::mem::take(points) {
        p.attributes.retain(|kv| keep.contains(&kv.key));
        p.attributes.sort_by(|a, b| a.key.cmp(&b.key));
        let key = p
            .attributes
            .iter()
            .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
            .collect();
        groups.entry(key).or_default().push(p);
    }
    for (_, group) in groups {
        let ints = group
            .iter()
            .all(|p| matches!(p.value, Some(number_data_point::Value::AsInt(_))));
        let values: Vec<f64> = group
            .iter()
            .map(|p| match p.value {
                Some(number_data_point::Value::AsInt(i)) => i as f64,
                Some(number_data_point::Value::AsDouble(d)) => d,
                None => 0.0,
            })
            .collect();
        let n = values.len() as f64;
        let v = match agg {
            Aggregation::Sum => values.iter().sum(),
            Aggregation::Mean => values.iter().sum::<f64>() / n,
            Aggregation::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
            Aggregation::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Aggregation::Count => n,
            Aggregation::Median => {
                let mut s = values.clone();
                s.sort_by(f64::total_cmp);
                let mid = s.len() / 2;
                if s.len().is_multiple_of(2) {
                    (s[mid - 1] + s[mid]) / 2.0
                } else {
                    s[mid]
                }
            }
        };
        let mut out = group[0].clone();
        out.time_unix_nano = group.iter().map(|p| p.time_unix_nano).max().unwrap_or(0);
        out.start_time_unix_nano = group
            .iter()
            .map(|p| p.start_time_unix_nano)
            .min()
            .unwrap_or(0);
        let whole = matches!(
            agg,
            Aggregation::Sum | Aggregation::Min | Aggregation::Max | Aggregation::Count
        );
        out.value = Some(if ints && whole {
            number_data_point::Value::AsInt(v as i64)
        } else {
            number_data_point::Value::AsDouble(v)
        });
        out.exemplars.clear();
        points.push(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{de::from_node, yaml::parse};
    use opentelemetry_proto::tonic::metrics::v1::{Gauge, Sum};

    fn cfg(text: &str) -> Result<MetricsTransformConfig, DeError> {
        let (n, _) = parse("t", text, &|_| None).unwrap();
        from_node::<MetricsTransformConfig>(&n).and_then(|c| c.validate().map(|_| c))
    }

    fn point(labels: &[(&str, &str)], t: u64, v: number_data_point::Value) -> NumberDataPoint {
        NumberDataPoint {
            attributes: labels
                .iter()
                .map(|(k, v)| string_attribute(k, *v))
                .collect(),
            time_unix_nano: t,
            start_time_unix_nano: 1,
            value: Some(v),
            ..Default::default()
        }
    }

    fn gauge(name: &str, points: Vec<NumberDataPoint>) -> Metric {
        Metric {
            name: name.into(),
            data: Some(Data::Gauge(Gauge {
                data_points: points,
            })),
            ..Default::default()
        }
    }

    fn points(m: &Metric) -> Vec<(Vec<(String, String)>, number_data_point::Value)> {
        let ps = match &m.data {
            Some(Data::Gauge(g)) => &g.data_points,
            Some(Data::Sum(s)) => &s.data_points,
            _ => panic!(),
        };
        ps.iter()
            .map(|p| {
                (
                    p.attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                    p.value.unwrap(),
                )
            })
            .collect()
    }

    use number_data_point::Value::{AsDouble, AsInt};

    #[test]
    fn adot_renames_and_regexp_insert() {
        // As ADOT's ECS config writes them (`metric_name`, update, new_name).
        let c = cfg("transforms:
  - {metric_name: ecs.task.memory.utilized, action: update, new_name: MemoryUtilized}
  - {include: '^ecs\\.task\\.(.*)\\.reserved$', match_type: regexp, action: insert, new_name: 'Reserved.$1'}
")
        .unwrap();
        let mut ms = vec![
            gauge("ecs.task.memory.utilized", vec![point(&[], 5, AsInt(3))]),
            gauge("ecs.task.cpu.reserved", vec![point(&[], 5, AsInt(1))]),
            gauge("xecs.task.cpu.reserved.y", vec![point(&[], 5, AsInt(1))]),
        ];
        MetricsTransform::new(&c).apply(&mut ms);
        let names: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "MemoryUtilized",
                "ecs.task.cpu.reserved",
                "xecs.task.cpu.reserved.y",
                "Reserved.cpu"
            ]
        );
    }

    #[test]
    fn label_operations() {
        let c = cfg("transforms:
  - include: requests
    action: update
    operations:
      - {action: add_label, new_label: env, new_value: prod}
      - {action: update_label, label: code, new_label: status, value_actions: [{value: '200', new_value: ok}]}
      - {action: delete_label_value, label: path, label_value: /health}
      - {action: toggle_scalar_data_type}
  - include: latency
    action: update
    operations:
      - {action: aggregate_labels, label_set: [region], aggregation_type: mean}
  - include: latency
    action: insert
    new_name: latency.max
    operations:
      - {action: aggregate_labels, label_set: [], aggregation_type: max}
")
        .unwrap();
        let mut ms = vec![
            gauge(
                "requests",
                vec![
                    point(
                        &[("code", "200"), ("path", "/a"), ("env", "dev")],
                        5,
                        AsInt(3),
                    ),
                    point(&[("code", "500"), ("path", "/a")], 5, AsInt(1)),
                    point(&[("code", "200"), ("path", "/health")], 5, AsInt(9)),
                ],
            ),
            gauge(
                "latency",
                vec![
                    point(&[("region", "eu"), ("host", "a")], 5, AsDouble(1.0)),
                    point(&[("region", "eu"), ("host", "b")], 7, AsDouble(3.0)),
                    point(&[("region", "us"), ("host", "c")], 6, AsDouble(10.0)),
                ],
            ),
        ];
        MetricsTransform::new(&c).apply(&mut ms);
        let s = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            points(&ms[0]),
            vec![
                (
                    s(&[("status", "ok"), ("path", "/a"), ("env", "dev")]),
                    AsDouble(3.0)
                ),
                (
                    s(&[("status", "500"), ("path", "/a"), ("env", "prod")]),
                    AsDouble(1.0)
                ),
            ]
        );
        assert_eq!(
            points(&ms[1]),
            vec![
                (s(&[("region", "eu")]), AsDouble(2.0)),
                (s(&[("region", "us")]), AsDouble(10.0))
            ]
        );
        // The insert ran after the update: it aggregates the already-averaged points.
        assert_eq!(ms[2].name, "latency.max");
        assert_eq!(points(&ms[2]), vec![(vec![], AsDouble(10.0))]);
        let Some(Data::Gauge(g)) = &ms[1].data else {
            panic!()
        };
        assert_eq!(
            g.data_points[0].time_unix_nano, 7,
            "latest time of the merged points"
        );
        // Sums of ints stay ints.
        let mut sum = vec![Metric {
            name: "c".into(),
            data: Some(Data::Sum(Sum {
                data_points: vec![
                    point(&[("a", "1")], 1, AsInt(2)),
                    point(&[("a", "2")], 1, AsInt(5)),
                ],
                ..Default::default()
            })),
            ..Default::default()
        }];
        let c = cfg("transforms: [{include: c, action: update, operations: [{action: aggregate_labels, label_set: [], aggregation_type: sum}]}]").unwrap();
        MetricsTransform::new(&c).apply(&mut sum);
        assert_eq!(points(&sum[0]), vec![(vec![], AsInt(7))]);
    }

    #[test]
    fn incomplete_transforms_are_refused() {
        for (text, message) in [
            ("transforms: [{include: a, action: insert}]", "needs new_name"),
            ("transforms: [{include: a, action: combine}]", "`combine` is not supported"),
            ("transforms: [{include: '(', match_type: regexp, action: update}]", "not a regular expression"),
            ("transforms: [{include: a, action: update, operations: [{action: add_label, new_label: x}]}]", "needs new_value"),
            ("transforms: [{include: a, action: update, operations: [{action: aggregate_labels, label_set: [x]}]}]", "needs aggregation_type"),
            ("transforms: [{include: a, action: update, operations: [{action: scale_value}]}]", "unknown variant"),
            ("transforms: []", "at least one"),
        ] {
            let e = cfg(text).unwrap_err().to_string();
            assert!(e.contains(message), "{text}: {e}");
        }
    }
}
