//! Extension `bearertokenauth`: adds `Authorization: Bearer <token>` (or
//! another header and scheme) to the requests of exporters that name it
//! under `auth: {authenticator: bearertokenauth}`. Keys as the Collector's:
//! `token` or `filename` (read at start, trailing whitespace ignored),
//! `scheme` (default `Bearer`), `header` (default `Authorization`).

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use crate::component::{
    AuthError, ClientAuth, ExtensionContext, ExtensionFactory, Factory, StartedExtension,
};
use crate::consumer::StartError;
use crate::settings::de::DeError;
use crate::settings::types::Secret;

/// `extensions.bearertokenauth`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BearerTokenAuthConfig {
    /// The token (use `${env:…}` rather than writing it into the file).
    pub token: Option<Secret>,
    /// A file holding the token.
    pub filename: Option<String>,
    /// The scheme before the token; empty sends the token alone.
    pub scheme: String,
    /// The header that carries it.
    pub header: String,
}

impl Default for BearerTokenAuthConfig {
    fn default() -> Self {
        BearerTokenAuthConfig {
            token: None,
            filename: None,
            scheme: "Bearer".into(),
            header: "Authorization".into(),
        }
    }
}

impl BearerTokenAuthConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        if self.token.is_some() == self.filename.is_some() {
            return Err(DeError::custom("set exactly one of token and filename"));
        }
        http::HeaderName::from_bytes(self.header.as_bytes()).map_err(|_| {
            DeError::custom(format!("header `{}` is not a header name", self.header))
        })?;
        Ok(())
    }
}

/// The `bearertokenauth` extension's factory.
pub struct BearerTokenAuthFactory;

impl Factory for BearerTokenAuthFactory {
    type Config = BearerTokenAuthConfig;
    fn type_name(&self) -> &'static str {
        "bearertokenauth"
    }
    fn validate(&self, config: &BearerTokenAuthConfig) -> Result<(), DeError> {
        config.validate()
    }
}

#[async_trait]
impl ExtensionFactory for BearerTokenAuthFactory {
    fn is_authenticator(&self) -> bool {
        true
    }

    async fn start(
        &self,
        config: &BearerTokenAuthConfig,
        ctx: ExtensionContext<'_>,
    ) -> Result<StartedExtension, StartError> {
        let name = ctx.id.to_string();
        let token = match (&config.token, &config.filename) {
            (Some(t), _) => t.0.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map_err(|e| StartError::component(&name, format!("cannot read `{f}`: {e}")))?
                .trim_end()
                .to_string(),
            (None, None) => return Err(StartError::component(&name, "no token")),
        };
        let text = if config.scheme.is_empty() {
            token
        } else {
            format!("{} {token}", config.scheme)
        };
        let mut value = http::HeaderValue::from_str(&text)
            .map_err(|_| StartError::component(&name, "the token is not a valid header value"))?;
        value.set_sensitive(true);
        let header = http::HeaderName::from_bytes(config.header.as_bytes())
            .map_err(|e| StartError::component(&name, e.to_string()))?;
        Ok(StartedExtension {
            tasks: Vec::new(),
            auth: Some(Arc::new(BearerToken { header, value })),
        })
    }
}

/// Sets one header.
struct BearerToken {
    header: http::HeaderName,
    value: http::HeaderValue,
}

#[async_trait]
impl ClientAuth for BearerToken {
    fn sets_headers(&self) -> Vec<String> {
        vec![self.header.as_str().to_string()]
    }

    async fn authorize(
        &self,
        parts: &mut http::request::Parts,
        _body: &[u8],
        _metadata: &crate::signal::Metadata,
    ) -> Result<(), AuthError> {
        parts
            .headers
            .insert(self.header.clone(), self.value.clone());
        Ok(())
    }
}
