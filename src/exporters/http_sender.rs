//! The HTTP POST shared by the exporters that speak HTTP (`otlphttp`,
//! `prometheusremotewrite`): configured headers, the authenticators of
//! `auth.authenticator` (signing the final body), a deadline, and the
//! answer mapped to retry or not as the Collector does (429, 502, 503, 504,
//! 408 and connection errors are retried, honouring `Retry-After`; other
//! statuses are not).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::component::{AuthError, ClientAuth, ExportError};
use crate::consumer::StartError;
use crate::net::HttpsConnector;
use crate::settings::types::TlsClientConfig;
use crate::signal::Metadata;

/// A client that POSTs bodies with an exporter's headers and authenticators.
pub struct HttpSender {
    client: Client<HttpsConnector, Full<Bytes>>,
    headers: HeaderMap,
    timeout: Duration,
    auth: Option<Arc<dyn ClientAuth>>,
}

impl HttpSender {
    /// A client for `name` with TLS settings, extra `headers`, a per-request
    /// `timeout` and the authenticators `auth`.
    pub fn new(
        name: &str,
        tls: &TlsClientConfig,
        headers: &BTreeMap<String, String>,
        timeout: Duration,
        auth: Option<Arc<dyn ClientAuth>>,
    ) -> Result<HttpSender, StartError> {
        let connector = crate::net::https_connector(tls, false)
            .map_err(|e| StartError::component(name, e.to_string()))?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            let key = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| StartError::component(name, e.to_string()))?;
            let value =
                HeaderValue::from_str(v).map_err(|e| StartError::component(name, e.to_string()))?;
            map.insert(key, value);
        }
        Ok(HttpSender {
            client,
            headers: map,
            timeout,
            auth,
        })
    }

    /// POSTs `body` (as sent: already compressed) to `url` with the
    /// protocol's own `headers`, then the configured ones, then the
    /// authenticators' (given the batch's `metadata`). `check` sees the
    /// final headers and may refuse to send. The answer's body on success.
    pub async fn post(
        &self,
        url: &Uri,
        headers: &[(HeaderName, &str)],
        body: Bytes,
        metadata: &Metadata,
        check: impl FnOnce(&HeaderMap) -> Result<(), ExportError>,
    ) -> Result<Bytes, ExportError> {
        let mut req = http::Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header(
                header::USER_AGENT,
                concat!("spanwire/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            req = req.header(k, *v);
        }
        let mut req = req
            .body(Full::new(body.clone()))
            .map_err(|e| ExportError::Permanent(format!("cannot build request: {e}")))?;
        req.headers_mut().extend(self.headers.clone());
        if let Some(auth) = &self.auth {
            let (mut parts, full) = req.into_parts();
            auth.authorize(&mut parts, &body, metadata)
                .await
                .map_err(|e| match e {
                    AuthError::Retryable(reason) => ExportError::Retryable {
                        reason,
                        retry_after: None,
                    },
                    AuthError::Permanent(reason) => ExportError::Permanent(reason),
                })?;
            req = http::Request::from_parts(parts, full);
        }
        check(req.headers())?;
        let resp = match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => {
                return Err(ExportError::Retryable {
                    reason: format!("POST {url} timed out after {:?}", self.timeout),
                    retry_after: None,
                })
            }
            Ok(Err(e)) => {
                return Err(ExportError::Retryable {
                    reason: format!("POST {url}: {}", error_chain(&e)),
                    retry_after: None,
                })
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let hint = retry_after(resp.headers());
        let body = match tokio::time::timeout(
            self.timeout,
            Limited::new(resp.into_body(), 4 * 1024 * 1024).collect(),
        )
        .await
        {
            Ok(Ok(b)) => b.to_bytes(),
            _ => Bytes::new(),
        };
        if status.is_success() {
            return Ok(body);
        }
        let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
        let reason = format!("POST {url}: HTTP {status}: {}", text.trim());
        match status {
            StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
            | StatusCode::REQUEST_TIMEOUT => Err(ExportError::Retryable {
                reason,
                retry_after: hint,
            }),
            _ => Err(ExportError::Permanent(reason)),
        }
    }
}

/// An error and its sources, e.g. `client error (Connect): invalid peer certificate: UnknownIssuer`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Seconds or an HTTP date in a Retry-After header (dates are taken as "soon": 1s).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    match v.trim().parse::<u64>() {
        Ok(s) => Some(Duration::from_secs(s)),
        Err(_) => Some(Duration::from_secs(1)),
    }
}
