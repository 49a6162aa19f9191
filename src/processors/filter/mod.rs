//! Processor `filter`: drops spans, span events, metrics, data points and
//! log records, as the Collector's does, by
//! - the legacy `include` / `exclude` properties (`match_type: strict` or
//!   `regexp`): `spans` by service, span name, kind, attributes, resource
//!   attributes and library; `metrics` by name and resource attributes;
//!   `logs` by resource and record attributes, severity and body. An item
//!   is kept if it matches `include` (when set) and not `exclude`;
//! - OTTL conditions (`traces.span`, `traces.spanevent`, `metrics.metric`,
//!   `metrics.datapoint`, `logs.log_record`): an item any condition holds
//!   for is dropped. The subset is in [`ottl`]; a condition outside it is a
//!   config error at its line and column.
//!
//! A metric left without data points, and a scope or resource left empty,
//! are removed too. Dropped items are counted in
//! `spanwire_processor_dropped_*_total`.

pub mod ottl;

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point, Metric};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::Event, Span};
use serde::{Deserialize, Deserializer};

use self::ottl::{Condition, Context, Item, Path, Val};
use super::attributes::ConfigValue;
use crate::component::{Factory, ProcessorContext, ProcessorFactory, Stage, SyncProcessor};
use crate::consumer::{ConsumeError, StartError};
use crate::settings::de::DeError;
use crate::signal::{Metadata, Telemetry};

macro_rules! conditions {
    ($name:ident, $ctx:expr) => {
        /// OTTL conditions, parsed (and refused at their position) as the config is read.
        #[derive(Debug, Clone, Default)]
        pub struct $name(pub Vec<Condition>);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let items: Vec<ConditionText<$name>> = Vec::deserialize(d)?;
                Ok($name(items.into_iter().map(|c| c.0).collect()))
            }
        }

        impl ContextOf for $name {
            const CONTEXT: Context = $ctx;
        }
    };
}

trait ContextOf {
    const CONTEXT: Context;
}

/// One condition string, parsed for `C`'s context (so an error carries the
/// string's own position).
struct ConditionText<C>(Condition, std::marker::PhantomData<C>);

impl<'de, C: ContextOf> Deserialize<'de> for ConditionText<C> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Condition::parse(&text, C::CONTEXT)
            .map(|c| ConditionText(c, std::marker::PhantomData))
            .map_err(|e| serde::de::Error::custom(format!("OTTL condition `{text}`: {e}")))
    }
}

conditions!(SpanConditions, Context::Span);
conditions!(SpanEventConditions, Context::SpanEvent);
conditions!(MetricConditions, Context::Metric);
conditions!(DataPointConditions, Context::DataPoint);
conditions!(LogConditions, Context::LogRecord);

/// How the Collector reports condition errors; spanwire's conditions cannot
/// fail at run time (a type mismatch is false), so all three behave alike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorMode {
    /// The Collector's default.
    #[default]
    Propagate,
    /// Log and go on.
    Ignore,
    /// Go on.
    Silent,
}

/// `strict` (equal text) or `regexp` (a regular expression that must match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchType {
    /// Equal.
    Strict,
    /// A regular expression.
    Regexp,
    /// The Collector's `expr` language (not supported).
    Expr,
}

/// An attribute to match: present (no `value`) or with this value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyMatch {
    /// The key.
    pub key: String,
    /// The value (text for `regexp`).
    #[serde(default)]
    pub value: Option<ConfigValue>,
}

/// A library (instrumentation scope) to match.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryMatch {
    /// Its name.
    pub name: String,
    /// Its version (any when absent).
    #[serde(default)]
    pub version: Option<String>,
}

/// Legacy span properties: all that are set must match.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanMatch {
    /// How names and values are compared.
    pub match_type: MatchType,
    /// `service.name` is one of these.
    #[serde(default)]
    pub services: Vec<String>,
    /// The span name is one of these.
    #[serde(default)]
    pub span_names: Vec<String>,
    /// The kind is one of these (`SPAN_KIND_SERVER`, …).
    #[serde(default)]
    pub span_kinds: Vec<String>,
    /// Every one of these attributes matches.
    #[serde(default)]
    pub attributes: Vec<KeyMatch>,
    /// Every one of these resource attributes matches.
    #[serde(default)]
    pub resources: Vec<KeyMatch>,
    /// The scope is one of these.
    #[serde(default)]
    pub libraries: Vec<LibraryMatch>,
}

/// Legacy metric properties.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricMatch {
    /// How names are compared.
    pub match_type: MatchType,
    /// The metric name is one of these.
    #[serde(default)]
    pub metric_names: Vec<String>,
    /// Every one of these resource attributes matches.
    #[serde(default)]
    pub resource_attributes: Vec<KeyMatch>,
}

/// `severity_number: {min, match_undefined}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeverityMatch {
    /// The lowest severity that matches (`WARN`, `ERROR3`, or a number).
    pub min: SeverityLevel,
    /// Whether a record without a severity matches.
    #[serde(default)]
    pub match_undefined: bool,
}

/// A severity level by name (`INFO`, `WARN2`) or number (1-24).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeverityLevel(pub i32);

impl<'de> Deserialize<'de> for SeverityLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(i64),
            S(String),
        }
        let bad = |s: &str| {
            serde::de::Error::custom(format!("`{s}` is not a severity (TRACE…FATAL4, or 1-24)"))
        };
        match Raw::deserialize(d)? {
            Raw::N(n) if (1..=24).contains(&n) => Ok(SeverityLevel(n as i32)),
            Raw::N(n) => Err(bad(&n.to_string())),
            Raw::S(s) => ottl::severity_number(&s.to_ascii_uppercase())
                .map(|n| SeverityLevel(n as i32))
                .ok_or_else(|| bad(&s)),
        }
    }
}

/// Legacy log properties.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogMatch {
    /// How values are compared.
    pub match_type: MatchType,
    /// Every one of these resource attributes matches.
    #[serde(default)]
    pub resource_attributes: Vec<KeyMatch>,
    /// Every one of these record attributes matches.
    #[serde(default)]
    pub record_attributes: Vec<KeyMatch>,
    /// The severity text is one of these.
    #[serde(default)]
    pub severity_texts: Vec<String>,
    /// The body (as text) is one of these.
    #[serde(default)]
    pub bodies: Vec<String>,
    /// The severity number is at least this.
    #[serde(default)]
    pub severity_number: Option<SeverityMatch>,
}

/// `include` / `exclude`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "M: Deserialize<'de>"))]
pub struct Legacy<M> {
    /// Keep only what matches.
    #[serde(default)]
    pub include: Option<M>,
    /// Drop what matches.
    #[serde(default)]
    pub exclude: Option<M>,
}

impl<M> Default for Legacy<M> {
    fn default() -> Self {
        Legacy {
            include: None,
            exclude: None,
        }
    }
}

/// `traces:` (OTTL).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracesConfig {
    /// Spans to drop.
    #[serde(default)]
    pub span: SpanConditions,
    /// Span events to drop.
    #[serde(default)]
    pub spanevent: SpanEventConditions,
}

/// `metrics:` (legacy and OTTL).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Keep only matching metrics.
    #[serde(default)]
    pub include: Option<MetricMatch>,
    /// Drop matching metrics.
    #[serde(default)]
    pub exclude: Option<MetricMatch>,
    /// Metrics to drop.
    #[serde(default)]
    pub metric: MetricConditions,
    /// Data points to drop.
    #[serde(default)]
    pub datapoint: DataPointConditions,
}

/// `logs:` (legacy and OTTL).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {
    /// Keep only matching records.
    #[serde(default)]
    pub include: Option<LogMatch>,
    /// Drop matching records.
    #[serde(default)]
    pub exclude: Option<LogMatch>,
    /// Records to drop.
    #[serde(default)]
    pub log_record: LogConditions,
}

/// `processors.filter`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// `propagate`, `ignore` or `silent` (accepted; see [`ErrorMode`]).
    #[serde(default)]
    pub error_mode: ErrorMode,
    /// OTTL span and span event conditions.
    #[serde(default)]
    pub traces: TracesConfig,
    /// Legacy span properties.
    #[serde(default)]
    pub spans: Legacy<SpanMatch>,
    /// Metrics.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Logs.
    #[serde(default)]
    pub logs: LogsConfig,
}

impl FilterConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        let check = |what: &str, mt: MatchType, patterns: &[&str]| -> Result<(), DeError> {
            if mt == MatchType::Expr {
                return Err(DeError::custom(format!(
                    "{what}.match_type: `expr` is not supported; use `strict`, `regexp` or OTTL conditions"
                )));
            }
            if mt == MatchType::Regexp {
                for p in patterns {
                    regex::Regex::new(p).map_err(|e| {
                        DeError::custom(format!("{what}: `{p}` is not a regular expression: {e}"))
                    })?;
                }
            }
            Ok(())
        };
        let texts = |kms: &[KeyMatch]| -> Vec<String> {
            kms.iter()
                .filter_map(|k| k.value.as_ref().map(config_text))
                .collect()
        };
        for (what, m) in [
            ("spans.include", &self.spans.include),
            ("spans.exclude", &self.spans.exclude),
        ] {
            if let Some(m) = m {
                let mut all: Vec<String> = m.services.clone();
                all.extend(m.span_names.iter().cloned());
                all.extend(texts(&m.attributes));
                all.extend(texts(&m.resources));
                all.extend(m.libraries.iter().map(|l| l.name.clone()));
                check(
                    what,
                    m.match_type,
                    &all.iter().map(String::as_str).collect::<Vec<_>>(),
                )?;
                for k in &m.span_kinds {
                    if kind_number(k).is_none() {
                        return Err(DeError::custom(format!(
                            "{what}.span_kinds: `{k}` is not a span kind (SPAN_KIND_SERVER, …)"
                        )));
                    }
                }
            }
        }
        for (what, m) in [
            ("metrics.include", &self.metrics.include),
            ("metrics.exclude", &self.metrics.exclude),
        ] {
            if let Some(m) = m {
                let mut all: Vec<String> = m.metric_names.clone();
                all.extend(texts(&m.resource_attributes));
                check(
                    what,
                    m.match_type,
                    &all.iter().map(String::as_str).collect::<Vec<_>>(),
                )?;
            }
        }
        for (what, m) in [
            ("logs.include", &self.logs.include),
            ("logs.exclude", &self.logs.exclude),
        ] {
            if let Some(m) = m {
                let mut all: Vec<String> = m.severity_texts.clone();
                all.extend(m.bodies.iter().cloned());
                all.extend(texts(&m.resource_attributes));
                all.extend(texts(&m.record_attributes));
                check(
                    what,
                    m.match_type,
                    &all.iter().map(String::as_str).collect::<Vec<_>>(),
                )?;
            }
        }
        Ok(())
    }
}

fn kind_number(k: &str) -> Option<i32> {
    let k = k.to_ascii_uppercase();
    let k = k.strip_prefix("SPAN_KIND_").unwrap_or(&k);
    Some(match k {
        "UNSPECIFIED" => 0,
        "INTERNAL" => 1,
        "SERVER" => 2,
        "CLIENT" => 3,
        "PRODUCER" => 4,
        "CONSUMER" => 5,
        _ => return None,
    })
}

fn config_text(v: &ConfigValue) -> String {
    match v {
        ConfigValue::Bool(b) => b.to_string(),
        ConfigValue::Int(i) => i.to_string(),
        ConfigValue::Float(f) => f.to_string(),
        ConfigValue::Str(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// The `filter` processor's factory.
pub struct FilterFactory;

impl Factory for FilterFactory {
    type Config = FilterConfig;
    fn type_name(&self) -> &'static str {
        "filter"
    }
    fn validate(&self, config: &FilterConfig) -> Result<(), DeError> {
        config.validate()
    }
}

impl ProcessorFactory for FilterFactory {
    fn build(&self, config: &FilterConfig, ctx: ProcessorContext<'_>) -> Result<Stage, StartError> {
        Ok(ctx.inline(Filter::new(config)))
    }
}

/// Text or regex comparison of names and values.
struct Matcher {
    regexes: Option<Vec<regex::Regex>>,
    values: Vec<String>,
}

impl Matcher {
    fn new(mt: MatchType, values: &[String]) -> Matcher {
        Matcher {
            regexes: (mt == MatchType::Regexp).then(|| {
                values
                    .iter()
                    .filter_map(|v| regex::Regex::new(v).ok())
                    .collect()
            }),
            values: values.to_vec(),
        }
    }

    /// Any value matches `s` (an empty list matches everything).
    fn any(&self, s: &str) -> bool {
        if self.values.is_empty() {
            return true;
        }
        match &self.regexes {
            Some(r) => r.iter().any(|r| r.is_match(s)),
            None => self.values.iter().any(|v| v == s),
        }
    }
}

struct KeyMatcher {
    key: String,
    value: Option<Matcher>,
}

fn key_matchers(mt: MatchType, kms: &[KeyMatch]) -> Vec<KeyMatcher> {
    kms.iter()
        .map(|k| KeyMatcher {
            key: k.key.clone(),
            value: k
                .value
                .as_ref()
                .map(|v| Matcher::new(mt, &[config_text(v)])),
        })
        .collect()
}

/// Every key matcher holds on `attrs`.
fn all_keys(ms: &[KeyMatcher], attrs: &[KeyValue]) -> bool {
    ms.iter().all(|m| {
        let Some(v) = attrs.iter().find(|kv| kv.key == m.key) else {
            return false;
        };
        match &m.value {
            None => true,
            Some(matcher) => matcher.any(&any_text(v.value.as_ref())),
        }
    })
}

fn any_text(v: Option<&AnyValue>) -> String {
    crate::signal::value_text(v.and_then(|v| v.value.as_ref()))
}

struct SpanRule {
    services: Matcher,
    names: Matcher,
    kinds: Vec<i32>,
    attributes: Vec<KeyMatcher>,
    resources: Vec<KeyMatcher>,
    libraries: Vec<(Matcher, Option<String>)>,
}

impl SpanRule {
    fn new(m: &SpanMatch) -> SpanRule {
        SpanRule {
            services: Matcher::new(m.match_type, &m.services),
            names: Matcher::new(m.match_type, &m.span_names),
            kinds: m.span_kinds.iter().filter_map(|k| kind_number(k)).collect(),
            attributes: key_matchers(m.match_type, &m.attributes),
            resources: key_matchers(m.match_type, &m.resources),
            libraries: m
                .libraries
                .iter()
                .map(|l| {
                    (
                        Matcher::new(m.match_type, std::slice::from_ref(&l.name)),
                        l.version.clone(),
                    )
                })
                .collect(),
        }
    }

    fn matches(&self, span: &Span, scope: Option<&InstrumentationScope>, res: &[KeyValue]) -> bool {
        let service = res
            .iter()
            .find(|kv| kv.key == "service.name")
            .map(|kv| any_text(kv.value.as_ref()))
            .unwrap_or_default();
        self.services.any(&service)
            && self.names.any(&span.name)
            && (self.kinds.is_empty() || self.kinds.contains(&span.kind))
            && all_keys(&self.attributes, &span.attributes)
            && all_keys(&self.resources, res)
            && (self.libraries.is_empty()
                || self.libraries.iter().any(|(name, version)| {
                    let (n, v) = scope.map_or(("", ""), |s| (s.name.as_str(), s.version.as_str()));
                    name.any(n) && version.as_deref().is_none_or(|want| want == v)
                }))
    }
}

struct MetricRule {
    names: Matcher,
    resources: Vec<KeyMatcher>,
}

impl MetricRule {
    fn new(m: &MetricMatch) -> MetricRule {
        MetricRule {
            names: Matcher::new(m.match_type, &m.metric_names),
            resources: key_matchers(m.match_type, &m.resource_attributes),
        }
    }

    fn matches(&self, metric: &Metric, res: &[KeyValue]) -> bool {
        self.names.any(&metric.name) && all_keys(&self.resources, res)
    }
}

struct LogRule {
    resources: Vec<KeyMatcher>,
    records: Vec<KeyMatcher>,
    severity_texts: Matcher,
    bodies: Matcher,
    severity: Option<SeverityMatch>,
}

impl LogRule {
    fn new(m: &LogMatch) -> LogRule {
        LogRule {
            resources: key_matchers(m.match_type, &m.resource_attributes),
            records: key_matchers(m.match_type, &m.record_attributes),
            severity_texts: Matcher::new(m.match_type, &m.severity_texts),
            bodies: Matcher::new(m.match_type, &m.bodies),
            severity: m.severity_number.clone(),
        }
    }

    fn matches(&self, rec: &LogRecord, res: &[KeyValue]) -> bool {
        all_keys(&self.resources, res)
            && all_keys(&self.records, &rec.attributes)
            && self.severity_texts.any(&rec.severity_text)
            && self.bodies.any(&any_text(rec.body.as_ref()))
            && self.severity.as_ref().is_none_or(|s| {
                if rec.severity_number == 0 {
                    s.match_undefined
                } else {
                    rec.severity_number >= s.min.0
                }
            })
    }
}

/// The `filter` processor.
pub struct Filter {
    span_include: Option<SpanRule>,
    span_exclude: Option<SpanRule>,
    span_conditions: Vec<Condition>,
    event_conditions: Vec<Condition>,
    metric_include: Option<MetricRule>,
    metric_exclude: Option<MetricRule>,
    metric_conditions: Vec<Condition>,
    point_conditions: Vec<Condition>,
    log_include: Option<LogRule>,
    log_exclude: Option<LogRule>,
    log_conditions: Vec<Condition>,
}

impl Filter {
    /// Compiles a (validated) config.
    pub fn new(c: &FilterConfig) -> Filter {
        Filter {
            span_include: c.spans.include.as_ref().map(SpanRule::new),
            span_exclude: c.spans.exclude.as_ref().map(SpanRule::new),
            span_conditions: c.traces.span.0.clone(),
            event_conditions: c.traces.spanevent.0.clone(),
            metric_include: c.metrics.include.as_ref().map(MetricRule::new),
            metric_exclude: c.metrics.exclude.as_ref().map(MetricRule::new),
            metric_conditions: c.metrics.metric.0.clone(),
            point_conditions: c.metrics.datapoint.0.clone(),
            log_include: c.logs.include.as_ref().map(LogRule::new),
            log_exclude: c.logs.exclude.as_ref().map(LogRule::new),
            log_conditions: c.logs.log_record.0.clone(),
        }
    }
}

fn res_attrs(r: &Option<Resource>) -> &[KeyValue] {
    r.as_ref().map_or(&[], |r| r.attributes.as_slice())
}

fn val(v: Option<&AnyValue>) -> Val<'_> {
    match v.and_then(|v| v.value.as_ref()) {
        None => Val::Nil,
        Some(any_value::Value::StringValue(s)) => Val::Str(Cow::Borrowed(s)),
        Some(any_value::Value::IntValue(i)) => Val::Int(*i),
        Some(any_value::Value::DoubleValue(d)) => Val::Float(*d),
        Some(any_value::Value::BoolValue(b)) => Val::Bool(*b),
        Some(_) => Val::Other,
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Val<'a> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .map_or(Val::Nil, |kv| val(kv.value.as_ref()))
}

fn scope_val(scope: Option<&InstrumentationScope>, version: bool) -> Val<'_> {
    match scope {
        Some(s) if version => Val::Str(Cow::Borrowed(&s.version)),
        Some(s) => Val::Str(Cow::Borrowed(&s.name)),
        None => Val::Str(Cow::Borrowed("")),
    }
}

fn common<'a>(
    path: Path,
    key: &str,
    scope: Option<&'a InstrumentationScope>,
    res: &'a [KeyValue],
) -> Val<'a> {
    match path {
        Path::ResourceAttribute(_) => attr(res, key),
        Path::ScopeName => scope_val(scope, false),
        Path::ScopeVersion => scope_val(scope, true),
        _ => Val::Nil,
    }
}

struct SpanItem<'a> {
    span: &'a Span,
    scope: Option<&'a InstrumentationScope>,
    res: &'a [KeyValue],
}

impl Item for SpanItem<'_> {
    fn get(&self, path: Path, key: &str) -> Val<'_> {
        match path {
            Path::Name => Val::Str(Cow::Borrowed(&self.span.name)),
            Path::Kind => Val::Int(i64::from(self.span.kind)),
            Path::StatusCode => {
                Val::Int(self.span.status.as_ref().map_or(0, |s| i64::from(s.code)))
            }
            Path::StatusMessage => Val::Str(Cow::Borrowed(
                self.span.status.as_ref().map_or("", |s| s.message.as_str()),
            )),
            Path::Attribute(_) => attr(&self.span.attributes, key),
            p => common(p, key, self.scope, self.res),
        }
    }
}

struct EventItem<'a> {
    event: &'a Event,
    span_name: &'a str,
    scope: Option<&'a InstrumentationScope>,
    res: &'a [KeyValue],
}

impl Item for EventItem<'_> {
    fn get(&self, path: Path, key: &str) -> Val<'_> {
        match path {
            Path::Name => Val::Str(Cow::Borrowed(&self.event.name)),
            Path::SpanName => Val::Str(Cow::Borrowed(self.span_name)),
            Path::Attribute(_) => attr(&self.event.attributes, key),
            p => common(p, key, self.scope, self.res),
        }
    }
}

fn metric_type(m: &Metric) -> i64 {
    match &m.data {
        None => 0,
        Some(Data::Gauge(_)) => 1,
        Some(Data::Sum(_)) => 2,
        Some(Data::Histogram(_)) => 3,
        Some(Data::ExponentialHistogram(_)) => 4,
        Some(Data::Summary(_)) => 5,
    }
}

struct MetricItem<'a> {
    metric: &'a Metric,
    scope: Option<&'a InstrumentationScope>,
    res: &'a [KeyValue],
}

impl Item for MetricItem<'_> {
    fn get(&self, path: Path, key: &str) -> Val<'_> {
        match path {
            Path::Name => Val::Str(Cow::Borrowed(&self.metric.name)),
            Path::MetricType => Val::Int(metric_type(self.metric)),
            Path::Unit => Val::Str(Cow::Borrowed(&self.metric.unit)),
            Path::Description => Val::Str(Cow::Borrowed(&self.metric.description)),
            p => common(p, key, self.scope, self.res),
        }
    }
}

struct PointItem<'a> {
    attributes: &'a [KeyValue],
    value: Option<&'a number_data_point::Value>,
    metric: MetricItem<'a>,
}

impl Item for PointItem<'_> {
    fn get(&self, path: Path, key: &str) -> Val<'_> {
        match path {
            Path::Attribute(_) => attr(self.attributes, key),
            Path::ValueDouble => match self.value {
                Some(number_data_point::Value::AsDouble(d)) => Val::Float(*d),
                _ => Val::Nil,
            },
            Path::ValueInt => match self.value {
                Some(number_data_point::Value::AsInt(i)) => Val::Int(*i),
                _ => Val::Nil,
            },
            p => self.metric.get(p, key),
        }
    }
}

struct LogItem<'a> {
    rec: &'a LogRecord,
    scope: Option<&'a InstrumentationScope>,
    res: &'a [KeyValue],
}

impl Item for LogItem<'_> {
    fn get(&self, path: Path, key: &str) -> Val<'_> {
        match path {
            Path::Body => val(self.rec.body.as_ref()),
            Path::SeverityNumber => Val::Int(i64::from(self.rec.severity_number)),
            Path::SeverityText => Val::Str(Cow::Borrowed(&self.rec.severity_text)),
            Path::EventName => Val::Str(Cow::Borrowed(&self.rec.event_name)),
            Path::Attribute(_) => attr(&self.rec.attributes, key),
            p => common(p, key, self.scope, self.res),
        }
    }
}

fn any_holds(conds: &[Condition], item: &dyn Item) -> bool {
    conds.iter().any(|c| c.matches(item))
}

/// Keeps the data points of `m` for which `keep` holds (given the point's
/// attributes, its number value, and the metric without its points).
fn retain_points(
    m: &mut Metric,
    mut keep: impl FnMut(&[KeyValue], Option<&number_data_point::Value>, &Metric) -> bool,
) {
    let shell = shell_of(m);
    match &mut m.data {
        Some(Data::Gauge(g)) => g
            .data_points
            .retain(|p| keep(&p.attributes, p.value.as_ref(), &shell)),
        Some(Data::Sum(s)) => s
            .data_points
            .retain(|p| keep(&p.attributes, p.value.as_ref(), &shell)),
        Some(Data::Histogram(h)) => h.data_points.retain(|p| keep(&p.attributes, None, &shell)),
        Some(Data::ExponentialHistogram(h)) => {
            h.data_points.retain(|p| keep(&p.attributes, None, &shell))
        }
        Some(Data::Summary(s)) => s.data_points.retain(|p| keep(&p.attributes, None, &shell)),
        None => {}
    }
}

/// A copy of a metric without its data points that still has its type.
fn shell_of(m: &Metric) -> Metric {
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, Gauge, Histogram, Sum, Summary,
    };
    Metric {
        name: m.name.clone(),
        description: m.description.clone(),
        unit: m.unit.clone(),
        metadata: Vec::new(),
        data: match &m.data {
            None => None,
            Some(Data::Gauge(_)) => Some(Data::Gauge(Gauge::default())),
            Some(Data::Sum(_)) => Some(Data::Sum(Sum::default())),
            Some(Data::Histogram(_)) => Some(Data::Histogram(Histogram::default())),
            Some(Data::ExponentialHistogram(_)) => {
                Some(Data::ExponentialHistogram(ExponentialHistogram::default()))
            }
            Some(Data::Summary(_)) => Some(Data::Summary(Summary::default())),
        },
    }
}

fn point_count(m: &Metric) -> usize {
    match &m.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

impl SyncProcessor for Filter {
    fn process(&self, mut data: Telemetry, _: &Metadata) -> Result<Telemetry, ConsumeError> {
        match &mut data {
            Telemetry::Traces(v) => {
                for rs in v.iter_mut() {
                    let res = res_attrs(&rs.resource).to_vec();
                    for ss in &mut rs.scope_spans {
                        let scope = ss.scope.clone();
                        ss.spans.retain(|span| {
                            let keep_legacy = self
                                .span_include
                                .as_ref()
                                .is_none_or(|r| r.matches(span, scope.as_ref(), &res))
                                && !self
                                    .span_exclude
                                    .as_ref()
                                    .is_some_and(|r| r.matches(span, scope.as_ref(), &res));
                            keep_legacy
                                && !any_holds(
                                    &self.span_conditions,
                                    &SpanItem {
                                        span,
                                        scope: scope.as_ref(),
                                        res: &res,
                                    },
                                )
                        });
                        if !self.event_conditions.is_empty() {
                            for span in &mut ss.spans {
                                let name = span.name.clone();
                                span.events.retain(|event| {
                                    !any_holds(
                                        &self.event_conditions,
                                        &EventItem {
                                            event,
                                            span_name: &name,
                                            scope: scope.as_ref(),
                                            res: &res,
                                        },
                                    )
                                });
                            }
                        }
                    }
                    rs.scope_spans.retain(|s| !s.spans.is_empty());
                }
                v.retain(|r| !r.scope_spans.is_empty());
            }
            Telemetry::Metrics(v) => {
                for rm in v.iter_mut() {
                    let res = res_attrs(&rm.resource).to_vec();
                    for sm in &mut rm.scope_metrics {
                        let scope = sm.scope.clone();
                        sm.metrics.retain(|m| {
                            self.metric_include
                                .as_ref()
                                .is_none_or(|r| r.matches(m, &res))
                                && !self
                                    .metric_exclude
                                    .as_ref()
                                    .is_some_and(|r| r.matches(m, &res))
                                && !any_holds(
                                    &self.metric_conditions,
                                    &MetricItem {
                                        metric: m,
                                        scope: scope.as_ref(),
                                        res: &res,
                                    },
                                )
                        });
                        if !self.point_conditions.is_empty() {
                            for m in &mut sm.metrics {
                                retain_points(m, |attributes, value, shell| {
                                    !any_holds(
                                        &self.point_conditions,
                                        &PointItem {
                                            attributes,
                                            value,
                                            metric: MetricItem {
                                                metric: shell,
                                                scope: scope.as_ref(),
                                                res: &res,
                                            },
                                        },
                                    )
                                });
                            }
                            sm.metrics.retain(|m| point_count(m) > 0);
                        }
                    }
                    rm.scope_metrics.retain(|s| !s.metrics.is_empty());
                }
                v.retain(|r| !r.scope_metrics.is_empty());
            }
            Telemetry::Logs(v) => {
                for rl in v.iter_mut() {
                    let res = res_attrs(&rl.resource).to_vec();
                    for sl in &mut rl.scope_logs {
                        let scope = sl.scope.clone();
                        sl.log_records.retain(|rec| {
                            self.log_include
                                .as_ref()
                                .is_none_or(|r| r.matches(rec, &res))
                                && !self
                                    .log_exclude
                                    .as_ref()
                                    .is_some_and(|r| r.matches(rec, &res))
                                && !any_holds(
                                    &self.log_conditions,
                                    &LogItem {
                                        rec,
                                        scope: scope.as_ref(),
                                        res: &res,
                                    },
                                )
                        });
                    }
                    rl.scope_logs.retain(|s| !s.log_records.is_empty());
                }
                v.retain(|r| !r.scope_logs.is_empty());
            }
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests;
