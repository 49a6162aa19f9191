//! Processors `resource` and `attributes`: `insert`, `update`, `upsert`,
//! `delete` and `hash` actions on attribute keys — resource attributes for
//! `resource`; span, span event, log record and metric data point attributes
//! for `attributes`.

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
use crate::signal::Telemetry;

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
    /// The attribute key.
    pub key: String,
    /// What to do.
    pub action: ActionKind,
    /// The value for insert/update/upsert.
    #[serde(default)]
    pub value: Option<ConfigValue>,
    /// Take the value from this attribute instead (insert/update/upsert).
    #[serde(default)]
    pub from_attribute: Option<String>,
}

/// `processors.resource` / `processors.attributes`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionsConfig {
    /// Actions applied in order.
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
            if a.key.is_empty() {
                return Err(DeError::custom(format!(
                    "actions[{i}]: key must not be empty"
                )));
            }
            match a.action {
                ActionKind::Insert | ActionKind::Update | ActionKind::Upsert => {
                    if a.value.is_some() == a.from_attribute.is_some() {
                        return Err(DeError::custom(format!(
                            "actions[{i}] ({:?} `{}`): set exactly one of value or from_attribute",
                            a.action, a.key
                        )));
                    }
                }
                ActionKind::Delete | ActionKind::Hash => {
                    if a.value.is_some() || a.from_attribute.is_some() {
                        return Err(DeError::custom(format!(
                            "actions[{i}] ({:?} `{}`): takes neither value nor from_attribute",
                            a.action, a.key
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

struct Compiled {
    key: String,
    kind: ActionKind,
    value: Option<AnyValue>,
    from: Option<String>,
}

/// Applies actions to a list of attributes.
struct Actions(Vec<Compiled>);

impl Actions {
    fn new(cfg: &ActionsConfig) -> Actions {
        Actions(
            cfg.actions
                .iter()
                .map(|a| Compiled {
                    key: a.key.clone(),
                    kind: a.action,
                    value: a.value.as_ref().map(ConfigValue::to_any),
                    from: a.from_attribute.clone(),
                })
                .collect(),
        )
    }

    fn apply(&self, attrs: &mut Vec<KeyValue>) {
        for a in &self.0 {
            let pos = attrs.iter().position(|kv| kv.key == a.key);
            let new_value = || -> Option<AnyValue> {
                match &a.from {
                    Some(from) => attrs
                        .iter()
                        .find(|kv| &kv.key == from)
                        .and_then(|kv| kv.value.clone()),
                    None => a.value.clone(),
                }
            };
            match (a.kind, pos) {
                (ActionKind::Insert, None) | (ActionKind::Upsert, None) => {
                    if let Some(v) = new_value() {
                        attrs.push(KeyValue {
                            key: a.key.clone(),
                            value: Some(v),
                            key_strindex: 0,
                        });
                    }
                }
                (ActionKind::Update, Some(i)) | (ActionKind::Upsert, Some(i)) => {
                    if let Some(v) = new_value() {
                        attrs[i].value = Some(v);
                    }
                }
                (ActionKind::Delete, Some(i)) => {
                    attrs.remove(i);
                }
                (ActionKind::Hash, Some(i)) => {
                    let text = attrs[i].value.as_ref().map(value_text).unwrap_or_default();
                    let digest = Sha256::digest(text.as_bytes());
                    attrs[i].value = Some(AnyValue {
                        value: Some(any_value::Value::StringValue(hex::encode(digest))),
                    });
                }
                _ => {}
            }
        }
    }
}

/// The text a value is hashed as: strings as they are, other values in their usual textual form.
fn value_text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex::encode(b),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
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

    fn on(&self, r: &mut Option<Resource>) {
        let res = r.get_or_insert_with(Resource::default);
        self.0.apply(&mut res.attributes);
    }
}

impl SyncProcessor for ResourceProcessor {
    fn process(&self, mut data: Telemetry) -> Result<Telemetry, ConsumeError> {
        match &mut data {
            Telemetry::Traces(v) => v.iter_mut().for_each(|r| self.on(&mut r.resource)),
            Telemetry::Metrics(v) => v.iter_mut().for_each(|r| self.on(&mut r.resource)),
            Telemetry::Logs(v) => v.iter_mut().for_each(|r| self.on(&mut r.resource)),
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
    fn process(&self, mut data: Telemetry) -> Result<Telemetry, ConsumeError> {
        let a = &self.0;
        match &mut data {
            Telemetry::Traces(v) => {
                for span in v
                    .iter_mut()
                    .flat_map(|r| &mut r.scope_spans)
                    .flat_map(|s| &mut s.spans)
                {
                    a.apply(&mut span.attributes);
                    for e in &mut span.events {
                        a.apply(&mut e.attributes);
                    }
                }
            }
            Telemetry::Logs(v) => {
                for rec in v
                    .iter_mut()
                    .flat_map(|r| &mut r.scope_logs)
                    .flat_map(|s| &mut s.log_records)
                {
                    a.apply(&mut rec.attributes);
                }
            }
            Telemetry::Metrics(v) => {
                for m in v
                    .iter_mut()
                    .flat_map(|r| &mut r.scope_metrics)
                    .flat_map(|s| &mut s.metrics)
                {
                    crate::signal::for_each_point_attributes(m, |attrs| a.apply(attrs));
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
        Actions::new(&c).apply(&mut attrs);
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
}
