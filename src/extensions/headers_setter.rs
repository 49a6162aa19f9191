//! Extension `headers_setter`: sets request headers of the exporters that
//! name it under `auth: {authenticator: headers_setter}`, from fixed values
//! or from the client metadata of the batch being sent (`from_context`, a
//! header the agent sent, kept by the OTLP receiver's `include_metadata`
//! and the batch processor's `metadata_keys`). Keys as the Collector's:
//! `headers: [{key, value | from_context, default_value, action}]`, with
//! `action` one of `insert`, `update`, `upsert` (default), `delete`.
//!
//! With `sigv4auth`, list both, the signer last, so that the signature
//! covers the headers: `authenticator: [headers_setter, sigv4auth]`.

use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::component::{
    AuthError, ClientAuth, ExtensionContext, ExtensionFactory, Factory, StartedExtension,
};
use crate::consumer::StartError;
use crate::settings::de::DeError;
use crate::signal::Metadata;

/// `extensions.headers_setter`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeadersSetterConfig {
    /// The headers to set, in order.
    pub headers: Vec<HeaderRule>,
}

/// One entry of `headers`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderRule {
    /// The header name.
    pub key: String,
    /// A fixed value.
    #[serde(default)]
    pub value: Option<String>,
    /// The client metadata key (a header the client sent) to take the value from.
    #[serde(default)]
    pub from_context: Option<String>,
    /// The value when `from_context` finds none.
    #[serde(default)]
    pub default_value: Option<String>,
    /// What to do with the header.
    #[serde(default)]
    pub action: Action,
}

/// `action` of a header rule.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Set it only if the request does not have it.
    Insert,
    /// Set it only if the request has it.
    Update,
    /// Set it either way.
    #[default]
    Upsert,
    /// Remove it.
    Delete,
}

impl HeadersSetterConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        if self.headers.is_empty() {
            return Err(DeError::custom("headers: list at least one header"));
        }
        for (i, h) in self.headers.iter().enumerate() {
            let at = format!("headers[{i}] (`{}`)", h.key);
            HeaderName::from_bytes(h.key.as_bytes())
                .map_err(|_| DeError::custom(format!("{at}: `key` is not a header name")))?;
            match (h.action, &h.value, &h.from_context) {
                (Action::Delete, None, None) => {}
                (Action::Delete, _, _) => {
                    return Err(DeError::custom(format!(
                        "{at}: action `delete` takes no value or from_context"
                    )))
                }
                (_, Some(_), Some(_)) => {
                    return Err(DeError::custom(format!(
                        "{at}: set `value` or `from_context`, not both"
                    )))
                }
                (_, None, None) => {
                    return Err(DeError::custom(format!(
                        "{at}: set `value` or `from_context`"
                    )))
                }
                _ => {}
            }
            if h.default_value.is_some() && h.from_context.is_none() {
                return Err(DeError::custom(format!(
                    "{at}: `default_value` goes with `from_context`"
                )));
            }
            for v in [&h.value, &h.default_value].into_iter().flatten() {
                HeaderValue::from_str(v).map_err(|_| {
                    DeError::custom(format!("{at}: `{v}` is not a valid header value"))
                })?;
            }
        }
        Ok(())
    }
}

/// The `headers_setter` extension's factory.
pub struct HeadersSetterFactory;

impl Factory for HeadersSetterFactory {
    type Config = HeadersSetterConfig;
    fn type_name(&self) -> &'static str {
        "headers_setter"
    }
    fn validate(&self, config: &HeadersSetterConfig) -> Result<(), DeError> {
        config.validate()
    }
}

#[async_trait]
impl ExtensionFactory for HeadersSetterFactory {
    fn is_authenticator(&self) -> bool {
        true
    }

    async fn start(
        &self,
        config: &HeadersSetterConfig,
        ctx: ExtensionContext<'_>,
    ) -> Result<StartedExtension, StartError> {
        let name = ctx.id.to_string();
        let rules = config
            .headers
            .iter()
            .map(|h| {
                let key = HeaderName::from_bytes(h.key.as_bytes())
                    .map_err(|e| StartError::component(&name, e.to_string()))?;
                let fixed = |v: &Option<String>| {
                    v.as_deref()
                        .map(HeaderValue::from_str)
                        .transpose()
                        .map_err(|e| StartError::component(&name, e.to_string()))
                };
                let source = match (&h.from_context, fixed(&h.value)?) {
                    (Some(k), _) => Source::Context {
                        key: k.clone(),
                        default: fixed(&h.default_value)?,
                    },
                    (None, Some(v)) => Source::Fixed(v),
                    (None, None) => Source::None,
                };
                Ok(Rule {
                    key,
                    source,
                    action: h.action,
                })
            })
            .collect::<Result<Vec<_>, StartError>>()?;
        Ok(StartedExtension {
            tasks: Vec::new(),
            auth: Some(Arc::new(HeadersSetter { rules })),
        })
    }
}

/// Where a header's value comes from.
enum Source {
    Fixed(HeaderValue),
    Context {
        key: String,
        default: Option<HeaderValue>,
    },
    /// `delete`.
    None,
}

struct Rule {
    key: HeaderName,
    source: Source,
    action: Action,
}

/// Sets the configured headers on each request.
struct HeadersSetter {
    rules: Vec<Rule>,
}

impl Rule {
    /// The value for a batch with `metadata` (`None`: nothing to set).
    fn value(&self, metadata: &Metadata) -> Option<HeaderValue> {
        match &self.source {
            Source::Fixed(v) => Some(v.clone()),
            Source::Context { key, default } => metadata
                .first(key)
                .and_then(|v| HeaderValue::from_str(v).ok())
                .or_else(|| default.clone()),
            Source::None => None,
        }
    }
}

#[async_trait]
impl ClientAuth for HeadersSetter {
    fn sets_headers(&self) -> Vec<String> {
        self.rules
            .iter()
            .filter(|r| matches!(r.action, Action::Insert | Action::Upsert))
            .map(|r| r.key.as_str().to_string())
            .collect()
    }

    async fn authorize(
        &self,
        parts: &mut http::request::Parts,
        _body: &[u8],
        metadata: &Metadata,
    ) -> Result<(), AuthError> {
        for r in &self.rules {
            let has = parts.headers.contains_key(&r.key);
            match r.action {
                Action::Delete => {
                    parts.headers.remove(&r.key);
                }
                Action::Insert if has => {}
                Action::Update if !has => {}
                Action::Insert | Action::Update | Action::Upsert => {
                    if let Some(v) = r.value(metadata) {
                        parts.headers.insert(r.key.clone(), v);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(key: &str, action: Action) -> HeaderRule {
        HeaderRule {
            key: key.into(),
            value: None,
            from_context: None,
            default_value: None,
            action,
        }
    }

    /// Starts the extension as the service does and returns its authenticator.
    async fn start(headers: Vec<HeaderRule>) -> Arc<dyn ClientAuth> {
        let cfg = HeadersSetterConfig { headers };
        cfg.validate().unwrap();
        let id = crate::component::ComponentId::parse("headers_setter").unwrap();
        let started = HeadersSetterFactory
            .start(
                &cfg,
                ExtensionContext {
                    id: &id,
                    health: Default::default(),
                    cancel: Default::default(),
                },
            )
            .await
            .unwrap();
        started.auth.unwrap()
    }

    async fn apply(
        auth: &Arc<dyn ClientAuth>,
        start_with: &[(&str, &str)],
        md: &Metadata,
    ) -> Vec<(String, String)> {
        let mut b = http::Request::post("http://h/v1/logs");
        for (k, v) in start_with {
            b = b.header(*k, *v);
        }
        let (mut parts, ()) = b.body(()).unwrap().into_parts();
        auth.authorize(&mut parts, b"", md).await.unwrap();
        let mut out: Vec<(String, String)> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn values_come_from_the_batch_metadata_then_the_default() {
        let auth = start(vec![
            HeaderRule {
                from_context: Some("x-aws-log-group".into()),
                default_value: Some("fallback".into()),
                ..rule("x-aws-log-group", Action::Upsert)
            },
            HeaderRule {
                value: Some("fixed".into()),
                ..rule("x-tenant", Action::Insert)
            },
            rule("x-drop-me", Action::Delete),
            HeaderRule {
                value: Some("new".into()),
                ..rule("x-only-if-there", Action::Update)
            },
        ])
        .await;
        let md = Metadata::new([("X-AWS-Log-Group".to_string(), "agent-a".to_string())]);
        assert_eq!(
            apply(&auth, &[("x-drop-me", "1"), ("x-tenant", "kept")], &md).await,
            vec![
                ("x-aws-log-group".to_string(), "agent-a".to_string()),
                ("x-tenant".to_string(), "kept".to_string()),
            ],
            "insert keeps what is there, delete removes, update sets nothing absent"
        );
        assert_eq!(
            apply(&auth, &[("x-only-if-there", "old")], &Metadata::default()).await,
            vec![
                ("x-aws-log-group".to_string(), "fallback".to_string()),
                ("x-only-if-there".to_string(), "new".to_string()),
                ("x-tenant".to_string(), "fixed".to_string()),
            ]
        );
        let mut set = auth.sets_headers();
        set.sort();
        assert_eq!(set, vec!["x-aws-log-group", "x-tenant"]);
    }

    #[test]
    fn bad_rules_are_refused() {
        let both = HeaderRule {
            value: Some("a".into()),
            from_context: Some("b".into()),
            ..rule("k", Action::Upsert)
        };
        let neither = rule("k", Action::Upsert);
        let delete_with_value = HeaderRule {
            value: Some("a".into()),
            ..rule("k", Action::Delete)
        };
        for r in [both, neither, delete_with_value] {
            assert!(HeadersSetterConfig { headers: vec![r] }.validate().is_err());
        }
        assert!(HeadersSetterConfig { headers: vec![] }.validate().is_err());
    }
}
