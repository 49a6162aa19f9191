//! Extension `health_check`: `GET /` (or the configured path) answers 200
//! while every pipeline runs, 503 while starting or shutting down.

use std::time::Duration;

use bytes::Bytes;
use http::{header, StatusCode};
use http_body_util::Full;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::component::{ExtensionContext, ExtensionFactory, Factory, Health, StartedExtension};
use crate::consumer::StartError;
use crate::settings::de::DeError;
use crate::settings::types::check_listen_endpoint;

/// `extensions.health_check`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// `host:port` to listen on.
    pub endpoint: String,
    /// The path that answers.
    pub path: String,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            endpoint: "localhost:13133".into(),
            path: "/".into(),
        }
    }
}

impl HealthCheckConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        check_listen_endpoint(&self.endpoint).map_err(DeError::custom)?;
        if !self.path.starts_with('/') {
            return Err(DeError::custom("path must start with `/`"));
        }
        Ok(())
    }
}

/// The `health_check` extension's factory.
pub struct HealthCheckFactory;

impl Factory for HealthCheckFactory {
    type Config = HealthCheckConfig;
    fn type_name(&self) -> &'static str {
        "health_check"
    }
    fn validate(&self, config: &HealthCheckConfig) -> Result<(), DeError> {
        config.validate()
    }
}

#[async_trait::async_trait]
impl ExtensionFactory for HealthCheckFactory {
    fn endpoints(&self, config: &HealthCheckConfig) -> Vec<String> {
        vec![config.endpoint.clone()]
    }
    async fn start(
        &self,
        config: &HealthCheckConfig,
        ctx: ExtensionContext<'_>,
    ) -> Result<StartedExtension, StartError> {
        Ok(StartedExtension {
            tasks: vec![start(config, ctx.health, ctx.cancel).await?],
            auth: None,
        })
    }
}

/// Binds and serves.
async fn start(
    cfg: &HealthCheckConfig,
    health: Health,
    cancel: CancellationToken,
) -> Result<JoinHandle<()>, StartError> {
    let listener = crate::net::bind(&cfg.endpoint).await?;
    tracing::info!(endpoint = %cfg.endpoint, "health_check listening");
    let path = cfg.path.clone();
    Ok(crate::net::serve_http(
        listener,
        None,
        move |req| {
            let health = health.clone();
            let path = path.clone();
            async move {
                let (status, body) = if req.uri().path() != path {
                    (StatusCode::NOT_FOUND, "not found".to_string())
                } else if health.is_ready() {
                    (
                        StatusCode::OK,
                        r#"{"status":"Server available"}"#.to_string(),
                    )
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            r#"{{"status":"Server not available","state":"{}"}}"#,
                            health.describe()
                        ),
                    )
                };
                let mut r = http::Response::new(Full::new(Bytes::from(body)));
                *r.status_mut() = status;
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                r
            }
        },
        cancel,
        Duration::from_secs(1),
    ))
}
