//! Processors `resource` and `attributes`: the Collector's `insert`,
//! `update`, `upsert`, `delete`, `hash`, `extract` and `convert` actions on
//! attribute keys — resource attributes for `resource`; span, span event, log
//! record and metric data point attributes for `attributes`. Values come from
//! the config (`value`), another attribute (`from_attribute`) or the client
//! metadata of the batch (`from_context`). The list is `attributes:` (the
//! Collector's key for `resource`) or `actions:` (its key for `attributes`);
//! both processors take either.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::component::{Factory, ProcessorContext, ProcessorFactory, Stage, SyncProcessor};
use crate::consumer::{ConsumeError, StartError};
use crate::settings::de::DeError;
use crate::signal::{Metadata, Telemetry};

/// What to do with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// Add the key if it is absent.
    Insert,
    /// Change the key if it is present.
    Update,
    /// Set the key either way.
    Upsert,
    /// Remove the key.
    Delete,
    /// Replace the value by the hex SHA-256 of its text.
    Hash,
    /// Set one string attribute per named group of `pattern` matched
    /// against the value of `key`.
    Extract,
    /// Change the value's type to `converted_type`.
    Convert,
}

/// The type `convert` changes a value to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvertedType {
    /// A 64-bit integer (from a whole number, a float (truncated), text or a bool).
    Int,
    /// A float (from a number, text or a bool).
    Double,
    /// Text (from any value).
    String,
}

/// A literal attribute value in the config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Text.
    Str(String),
    /// A list.
    List(Vec<ConfigValue>),
    /// A map.
    Map(BTreeMap<String, ConfigValue>),
}

impl ConfigValue {
    fn to_any(&self) -> AnyValue {
        let value = match self {
            ConfigValue::Bool(b) => any_value::Value::BoolValue(*b),
            ConfigValue::Int(i) => any_value::Value::IntValue(*i),
            ConfigValue::Float(f) => any_value::Value::DoubleValue(*f),
            ConfigValue::Str(s) => any_value::Value::StringValue(s.clone()),
            ConfigValue::List(l) => any_value::Value::ArrayValue(ArrayValue {
                values: l.iter().map(ConfigValue::to_any).collect(),
            }),
            ConfigValue::Map(m) => any_value::Value::KvlistValue(KeyValueList {
                values: m
                    .iter()
                    .map(|(k, v)| KeyValue {
                        key: k.clone(),
                        value: Some(v.to_any()),
                        key_strindex: 0,
                    })
                    .collect(),
            }),
        };
        AnyValue { value: Some(value) }
    }
}

/// One action.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// The attribute key (optional for `delete` / `hash` with a `pattern`).
    #[serde(default)]
    pub key: String,
    /// What to do.
    pub action: ActionKind,
    /// The value for insert/update/upsert.
    #[serde(default)]
    pub value: Option<ConfigValue>,
    /// Take the value from this attribute instead (insert/update/upsert).
    #[serde(default)]
    pub from_attribute: Option<String>,
    /// Take the value from the batch's client metadata: `metadata.<key>`
    /// or `<key>` (insert/update/upsert); several values are joined by `;`.
    #[serde(default)]
    pub from_context: Option<String>,
    /// A regular expression: for `extract`, matched against the value of
    /// `key` (its named groups become attributes); for `delete` / `hash`,
    /// matched against keys (every key it matches is acted on).
    #[serde(default)]
    pub pattern: Option<String>,
    /// For `convert`: the type to convert to.
    #[serde(default)]
    pub converted_type: Option<ConvertedType>,
}

/// `processors.resource` / `processors.attributes`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionsConfig {
    /// Actions applied in order (`attributes:` is the same list).
    #[serde(alias = "attributes")]
    pub actions: Vec<Action>,
}

impl ActionsConfig {
    /// Checks every action has what it needs.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        if self.actions.is_empty() {
            return Err(DeError::custom("actions: at least one action is required"));
        }
        for (i, a) in self.actions.iter().enumerate() {
            let at = format!("actions[{i}] ({:?} `{}`)", a.action, a.key);
            let fail = |m: &str| Err(DeError::custom(format!("{at}: {m}")));
            let sources = [
                a.value.is_some(),
                a.from_attribute.is_some(),
                a.from_context.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if let Some(p) = &a.pattern {
                if let Err(e) = regex::Regex::new(p) {
                    return fail(&format!("pattern `{p}` is not a regular expression: {e}"));
                }
            }
            if let Some(c) = &a.from_context {
                if c.starts_with("auth.") {
                    return fail("from_context `auth.*` is not available: spanwire keeps no authentication data with a batch; use `metadata.<key>`");
                }
                if c.trim_start_matches("metadata.").is_empty() {
                    return fail("from_context names no metadata key");
                }
            }
            let extra = a.pattern.is_some() || a.converted_type.is_some();
            match a.action {
                ActionKind::Insert | ActionKind::Update | ActionKind::Upsert => {
                    if a.key.is_empty() {
                        return fail("key must not be empty");
                    }
                    if sources != 1 {
                        return fail("set exactly one of value, from_attribute or from_context");
                    }
                    if extra {
                        return fail(
                            "pattern and converted_type go with extract, delete, hash and convert",
                        );
                    }
                }
                ActionKind::Delete | ActionKind::Hash => {
                    if a.key.is_empty() && a.pattern.is_none() {
                        return fail("set key or pattern");
                    }
                    if sources != 0 || a.converted_type.is_some() {
                        return fail("takes only key and/or pattern");
                    }
                }
                ActionKind::Extract => {
                    let Some(p) = &a.pattern else {
                        return fail("extract needs a pattern");
                    };
                    if a.key.is_empty() {
                        return fail("key must not be empty");
                    }
                    let named = regex::Regex::new(p)
                        .map(|r| r.capture_names().flatten().count())
                        .unwrap_or(0);
                    if named == 0 {
                        return fail(
                            "the pattern of extract needs at least one named group, (?P<name>...)",
                        );
                    }
                    if sources != 0 || a.converted_type.is_some() {
                        return fail("extract takes only key and pattern");
                    }
                }
                ActionKind::Convert => {
                    if a.key.is_empty() {
                        return fail("key must not be empty");
                    }
                    if a.converted_type.is_none() {
                        return fail("convert needs converted_type (int, double or string)");
                    }
                    if sources != 0 || a.pattern.is_some() {
                        return fail("convert takes only key and converted_type");
                    }
                }
            }
        }
        Ok(())
    }
}

enum Source {
    Value(AnyValue),
    Attribute(String),
    Context(String),
    None,
}

struct Compiled {
    key: String,
    kind: ActionKind,
    source: Source,
    pattern: Option<regex::Regex>,
    converted_type: Option<ConvertedType>,
}

/// Applies actions to a list of attributes.
struct Actions(Vec<Compiled>);

impl Actions {
    /// Compiles validated actions (a pattern that does not compile, which
    /// validation refuses, is left out).
    fn new(cfg: &ActionsConfig) -> Actions {
        Actions(
            cfg.actions
                .iter()
                .map(|a| Compiled {
                    key: a.key.clone(),
                    kind: a.action,
                    source: match (&a.value, &a.from_attribute, &a.from_context) {
                        (Some(v), _, _) => Source::Value(v.to_any()),
                        (_, Some(f), _) => Source::Attribute(f.clone()),
                        (_, _, Some(c)) => Source::Context(
                            c.strip_prefix("metadata.")
                                .unwrap_or(c)
                                .to_ascii_lowercase(),
                        ),
                        _ => Source::None,
                    },
                    pattern: a.pattern.as_deref().and_then(|p| regex::Regex::new(p).ok()),
                    converted_type: a.converted_type,
                })
                .collect(),
        )
    }

    fn apply(&self, attrs: &mut Vec<KeyValue>, metadata: &Metadata) {
        for a in &self.0 {
            match a.kind {
                ActionKind::Insert | ActionKind::Update | ActionKind::Upsert => {
                    let pos = attrs.iter().position(|kv| kv.key == a.key);
                    if matches!(
                        (a.kind, pos),
                        (ActionKind::Insert, Some(_)) | (ActionKind::Update, None)
                    ) {
                        continue;
                    }
                    let v = match &a.source {
                        Source::Value(v) => Some(v.clone()),
                        Source::Attribute(from) => attrs
                            .iter()
                            .find(|kv| &kv.key == from)
                            .and_then(|kv| kv.value.clone()),
                        Source::Context(key) => {
                            let vals: Vec<&str> = metadata.get(key).collect();
                            (!vals.is_empty()).then(|| string(vals.join(";")))
                        }
                        Source::None => None,
                    };
                    let Some(v) = v else { continue };
                    match pos {
                        Some(i) => attrs[i].value = Some(v),
                        None => attrs.push(KeyValue {
                            key: a.key.clone(),
                            value: Some(v),
                            key_strindex: 0,
                        }),
                    }
                }
                ActionKind::Delete => attrs.retain(|kv| !a.selects(&kv.key)),
                ActionKind::Hash => {
                    for kv in attrs.iter_mut().filter(|kv| a.selects(&kv.key)) {
                        let text = kv.value.as_ref().map(value_text).unwrap_or_default();
                        let digest = Sha256::digest(text.as_bytes());
                        kv.value = Some(string(hex::encode(digest)));
                    }
                }
                ActionKind::Extract => {
                    let Some(re) = &a.pattern else { continue };
                    let Some(text) = attrs
                        .iter()
                        .find(|kv| kv.key == a.key)
                        .and_then(|kv| kv.value.as_ref())
                        .and_then(|v| match &v.value {
                            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                            _ => None,
                        })
                    else {
                        continue;
                    };
                    let Some(caps) = re.captures(&text) else {
                        continue;
                    };
                    for name in re.capture_names().flatten() {
                        let Some(m) = caps.name(name) else { continue };
                        let v = string(m.as_str().to_string());
                        match attrs.iter_mut().find(|kv| kv.key == name) {
                            Some(kv) => kv.value = Some(v),
                            None => attrs.push(KeyValue {
                                key: name.to_string(),
                                value: Some(v),
                                key_strindex: 0,
                            }),
                        }
                    }
                }
                ActionKind::Convert => {
                    let Some(to) = a.converted_type else { continue };
                    if let Some(kv) = attrs.iter_mut().find(|kv| kv.key == a.key) {
                        if let Some(v) = kv.value.as_ref().and_then(|v| convert(v, to)) {
                            kv.value = Some(v);
                        }
                    }
                }
            }
        }
    }
}

impl Compiled {
    /// Whether `delete` / `hash` act on `key`: it is the key, or the
    /// pattern matches it.
    fn selects(&self, key: &str) -> bool {
        (!self.key.is_empty() && key == self.key)
            || self.pattern.as_ref().is_some_and(|p| p.is_match(key))
    }
}

fn string(s: String) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s)),
    }
}

/// `v` as `to`, or `None` (left as it is) when it does not convert, as the
/// Collector does: text that is not a number stays text.
fn convert(v: &AnyValue, to: ConvertedType) -> Option<AnyValue> {
    use any_value::Value as V;
    let out = match (to, v.value.as_ref()?) {
        (ConvertedType::Int, V::IntValue(i)) => V::IntValue(*i),
        (ConvertedType::Int, V::DoubleValue(d)) if d.is_finite() => V::IntValue(d.trunc() as i64),
        (ConvertedType::Int, V::BoolValue(b)) => V::IntValue(i64::from(*b)),
        (ConvertedType::Int, V::StringValue(s)) => V::IntValue(s.trim().parse().ok()?),
        (ConvertedType::Double, V::DoubleValue(d)) => V::DoubleValue(*d),
        (ConvertedType::Double, V::IntValue(i)) => V::DoubleValue(*i as f64),
        (ConvertedType::Double, V::BoolValue(b)) => V::DoubleValue(f64::from(u8::from(*b))),
        (ConvertedType::Double, V::StringValue(s)) => V::DoubleValue(s.trim().parse().ok()?),
        (ConvertedType::String, _) => V::StringValue(value_text(v)),
        _ => return None,
    };
    Some(AnyValue { value: Some(out) })
}

/// The text a value is hashed as (see [`crate::signal::value_text`]).
fn value_text(v: &AnyValue) -> String {
    crate::signal::value_text(v.value.as_ref())
}

/// The `resource` processor's factory.
pub struct ResourceFactory;

impl Factory for ResourceFactory {
    type Config = ActionsConfig;
    fn type_name(&self) -> &'static str {
        "resource"
    }
    fn validate(&self, config: &ActionsConfig) -> Result<(), DeError> {
        config.validate()
    }
}

impl ProcessorFactory for ResourceFactory {
    fn build(
        &self,
        config: &ActionsConfig,
        ctx: ProcessorContext<'_>,
    ) -> Result<Stage, StartError> {
        Ok(ctx.inline(ResourceProcessor::new(config)))
    }
}

/// The `attributes` processor's factory.
pub struct AttributesFactory;

impl Factory for AttributesFactory {
    type Config = ActionsConfig;
    fn type_name(&self) -> &'static str {
        "attributes"
    }
    fn validate(&self, config: &ActionsConfig) -> Result<(), DeError> {
        config.validate()
    }
}

impl ProcessorFactory for AttributesFactory {
    fn build(
        &self,
        config: &ActionsConfig,
        ctx: ProcessorContext<'_>,
    ) -> Result<Stage, StartError> {
        Ok(ctx.inline(AttributesProcessor::new(config)))
    }
}

/// The `resource` processor.
pub struct ResourceProcessor(Actions);

impl ResourceProcessor {
    /// Compiles the actions.
    pub fn new(cfg: &ActionsConfig) -> Self {
        ResourceProcessor(Actions::new(cfg))
    }

    fn on(&self, r: &mut Option<Resource>, metadata: &Metadata) {
        let res = r.get_or_insert_with(Resource::default);
        self.0.apply(&mut res.attributes, metadata);
    }
}

impl SyncProcessor for ResourceProcessor {
    fn process(&self, mut data: Telemetry, md: &Metadata) -> Result<Telemetry, ConsumeError> {
        match &mut data {
            Telemetry::Traces(v) => v.iter_mut().for_each(|r| self.on(&mut r.resource, md)),
            Telemetry::Metrics(v) => v.iter_mut().for_each(|r| self.on(&mut r.resource, md)),
            Telemetry::Logs(v) => v.iter_mut().for_each(|r| self.on(&mut r.resource, md)),
        }
        Ok(data)
    }
}

/// The `attributes` processor.
pub struct AttributesProcessor(Actions);

impl AttributesProcessor {
    /// Compiles the actions.
    pub fn new(cfg: &ActionsConfig) -> Self {
        AttributesProcessor(Actions::new(cfg))
    }
}

impl SyncProcessor for AttributesProcessor {
    fn process(&self, mut data: Telemetry, md: &Metadata) -> Result<Telemetry, ConsumeError> {
        let a = &self.0;
        match &mut data {
            Telemetry::Traces(v) => {
                for span in v
                    .iter_mut()
                    .flat_map(|r| &mut r.scope_spans)
                    .flat_map(|s| &mut s.spans)
                {
                    a.apply(&mut span.attributes, md);
                    for e in &mut span.events {
                        a.apply(&mut e.attributes, md);
                    }
                }
            }
            Telemetry::Logs(v) => {
                for rec in v
                    .iter_mut()
                    .flat_map(|r| &mut r.scope_logs)
                    .flat_map(|s| &mut s.log_records)
                {
                    a.apply(&mut rec.attributes, md);
                }
            }
            Telemetry::Metrics(v) => {
                for m in v
                    .iter_mut()
                    .flat_map(|r| &mut r.scope_metrics)
                    .flat_map(|s| &mut s.metrics)
                {
                    crate::signal::for_each_point_attributes(m, |attrs| a.apply(attrs, md));
                }
            }
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{de::from_node, yaml::parse};

    fn cfg(text: &str) -> Result<ActionsConfig, DeError> {
        let (n, _) = parse("t", text, &|_| None).unwrap();
        from_node::<ActionsConfig>(&n).and_then(|c| c.validate().map(|_| c))
    }

    fn s(v: &str) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        })
    }

    #[test]
    fn actions_apply_in_order() {
        let c = cfg("actions:
  - {key: env, action: insert, value: prod}
  - {key: env, action: insert, value: ignored}
  - {key: region, action: update, value: x}
  - {key: prompt, action: hash}
  - {key: secret, action: delete}
  - {key: copy, action: upsert, from_attribute: env}
  - {key: n, action: upsert, value: 3}
")
        .unwrap();
        let mut attrs = vec![
            KeyValue {
                key: "prompt".into(),
                value: s("hello"),
                key_strindex: 0,
            },
            KeyValue {
                key: "secret".into(),
                value: s("pw"),
                key_strindex: 0,
            },
        ];
        Actions::new(&c).apply(&mut attrs, &Metadata::default());
        let get = |k: &str| {
            attrs
                .iter()
                .find(|kv| kv.key == k)
                .and_then(|kv| kv.value.clone())
        };
        assert_eq!(get("env"), s("prod"));
        assert_eq!(get("region"), None);
        assert_eq!(
            get("prompt"),
            s("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        );
        assert_eq!(get("secret"), None);
        assert_eq!(get("copy"), s("prod"));
        assert_eq!(
            get("n"),
            Some(AnyValue {
                value: Some(any_value::Value::IntValue(3))
            })
        );
    }

    #[test]
    fn invalid_actions_are_rejected() {
        assert!(cfg("actions:\n  - {key: a, action: insert}\n").is_err());
        assert!(cfg("actions:\n  - {key: a, action: delete, value: 1}\n").is_err());
        assert!(cfg("actions:\n  - {key: a, action: rename}\n").is_err());
    }

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            key_strindex: 0,
        }
    }

    fn get(attrs: &[KeyValue], k: &str) -> Option<any_value::Value> {
        attrs
            .iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| kv.value.clone())
            .and_then(|v| v.value)
    }

    #[test]
    fn the_collectors_resource_list_with_context_extract_and_convert() {
        use any_value::Value as V;
        // `attributes:` (the Collector's key for `resource`), as ADOT's ECS
        // configs write it.
        let c = cfg("attributes:
  - {key: ClusterName, from_attribute: aws.ecs.cluster.name, action: insert}
  - {key: aws.ecs.cluster.name, action: delete}
  - {key: tenant, from_context: metadata.X-Tenant, action: upsert}
  - {key: region, from_context: x-region, action: insert}
  - {key: http.url, pattern: '^(?P<scheme>[a-z]+)://(?P<host>[^/]+)/', action: extract}
  - {key: count, action: convert, converted_type: int}
  - {key: ratio, action: convert, converted_type: double}
  - {key: code, action: convert, converted_type: string}
  - {key: word, action: convert, converted_type: int}
  - {pattern: '^secret\\.', action: delete}
  - {pattern: '^user\\.', action: hash}
")
        .unwrap();
        let mut attrs = vec![
            kv("aws.ecs.cluster.name", V::StringValue("prod".into())),
            kv(
                "http.url",
                V::StringValue("https://api.example.com/v1/x".into()),
            ),
            kv("count", V::StringValue(" 42 ".into())),
            kv("ratio", V::IntValue(3)),
            kv("code", V::IntValue(404)),
            kv("word", V::StringValue("many".into())),
            kv("secret.a", V::StringValue("1".into())),
            kv("secret.b", V::StringValue("2".into())),
            kv("user.email", V::StringValue("hello".into())),
        ];
        let md = Metadata::new([
            ("x-tenant".to_string(), "acme".to_string()),
            ("x-tenant".to_string(), "beta".to_string()),
        ]);
        Actions::new(&c).apply(&mut attrs, &md);
        assert_eq!(
            get(&attrs, "ClusterName"),
            Some(V::StringValue("prod".into()))
        );
        assert_eq!(get(&attrs, "aws.ecs.cluster.name"), None);
        assert_eq!(
            get(&attrs, "tenant"),
            Some(V::StringValue("acme;beta".into()))
        );
        // No such metadata: nothing set.
        assert_eq!(get(&attrs, "region"), None);
        assert_eq!(get(&attrs, "scheme"), Some(V::StringValue("https".into())));
        assert_eq!(
            get(&attrs, "host"),
            Some(V::StringValue("api.example.com".into()))
        );
        assert_eq!(get(&attrs, "count"), Some(V::IntValue(42)));
        assert_eq!(get(&attrs, "ratio"), Some(V::DoubleValue(3.0)));
        assert_eq!(get(&attrs, "code"), Some(V::StringValue("404".into())));
        // Text that is not a number stays as it is.
        assert_eq!(get(&attrs, "word"), Some(V::StringValue("many".into())));
        assert!(attrs.iter().all(|kv| !kv.key.starts_with("secret.")));
        assert_eq!(
            get(&attrs, "user.email"),
            Some(V::StringValue(
                "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".into()
            ))
        );
    }

    #[test]
    fn the_new_keys_are_checked() {
        for (text, message) in [
            (
                "actions:\n  - {key: a, action: extract, pattern: 'a(b)'}\n",
                "named group",
            ),
            (
                "actions:\n  - {key: a, action: extract}\n",
                "needs a pattern",
            ),
            (
                "actions:\n  - {key: a, action: convert}\n",
                "needs converted_type",
            ),
            (
                "actions:\n  - {key: a, action: convert, converted_type: float}\n",
                "unknown variant",
            ),
            ("actions:\n  - {action: delete}\n", "set key or pattern"),
            (
                "actions:\n  - {key: a, action: delete, pattern: '('}\n",
                "not a regular expression",
            ),
            (
                "actions:\n  - {key: a, action: insert, value: 1, from_context: b}\n",
                "exactly one",
            ),
            (
                "actions:\n  - {key: a, action: insert, from_context: auth.sub}\n",
                "auth",
            ),
            (
                "actions:\n  - {key: a, action: upsert, value: 1, pattern: x}\n",
                "go with extract",
            ),
        ] {
            let e = cfg(text).unwrap_err().to_string();
            assert!(e.contains(message), "{text}: {e}");
        }
    }
}
