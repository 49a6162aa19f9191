//! Extension `health_check`: `GET /` (or the configured path) answers 200
//! while every pipeline runs, 503 while starting or shutting down.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, StatusCode};
use http_body_util::Full;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::de::DeError;
use crate::config::types::check_listen_endpoint;
use crate::consumer::StartError;

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

const STARTING: u8 = 0;
const READY: u8 = 1;
const STOPPING: u8 = 2;
const FAILED: u8 = 3;

/// The service's state as health checks see it.
#[derive(Clone, Default)]
pub struct Health(Arc<AtomicU8>);

impl Health {
    /// All pipelines run.
    pub fn set_ready(&self) {
        // Only from starting: a failure seen during start-up stays visible.
        let _ = self
            .0
            .compare_exchange(STARTING, READY, Ordering::SeqCst, Ordering::SeqCst);
    }
    /// Shutdown has begun.
    pub fn set_stopping(&self) {
        self.0.store(STOPPING, Ordering::SeqCst);
    }
    /// A component stopped on its own; the service is no longer whole.
    pub fn set_failed(&self) {
        self.0.store(FAILED, Ordering::SeqCst);
    }
    /// Whether all pipelines run.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst) == READY
    }
    fn describe(&self) -> &'static str {
        match self.0.load(Ordering::SeqCst) {
            STARTING => "starting",
            READY => "ready",
            FAILED => "a component failed",
            _ => "shutting down",
        }
    }
}

/// Binds and serves.
pub async fn start(
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
