//! Extension `sigv4auth`: signs outgoing HTTP requests with AWS Signature
//! Version 4 (the AWS SDK's own signer, `aws-sigv4`), for exporters that name
//! it under `auth: {authenticator: sigv4auth}` — the CloudWatch OTLP
//! endpoints (`https://xray.<region>.amazonaws.com/v1/traces`,
//! `https://logs.<region>.amazonaws.com/v1/logs`) take nothing else.
//!
//! Keys as the Collector's: `region` and `service` (both inferred from an
//! endpoint host `<service>.<region>.amazonaws.com` when absent) and
//! `assume_role` (`arn`, `sts_region`, `session_name`). Credentials come
//! from the AWS default chain (environment, profile, web identity / IRSA,
//! EKS Pod Identity, ECS task role, IMDSv2) and are fetched again before
//! they expire. The final body (after compression) is signed, and its
//! SHA-256 is sent as `x-amz-content-sha256`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::component::{
    AuthError, ClientAuth, ExtensionContext, ExtensionFactory, Factory, StartedExtension,
};
use crate::consumer::StartError;
use crate::settings::de::DeError;

/// `extensions.sigv4auth`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SigV4AuthConfig {
    /// The signing region; inferred from the endpoint host when absent.
    pub region: Option<String>,
    /// The signing service name (`xray`, `logs`, `aps`); inferred from the
    /// endpoint host when absent.
    pub service: Option<String>,
    /// A role to assume with the base credentials.
    pub assume_role: AssumeRole,
}

/// `sigv4auth.assume_role`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AssumeRole {
    /// The role's ARN; empty assumes no role.
    pub arn: String,
    /// The region of the STS endpoint (default: `region`, then the chain's).
    pub sts_region: Option<String>,
    /// The role session name (default `spanwire`).
    pub session_name: Option<String>,
}

impl SigV4AuthConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        if !self.assume_role.arn.is_empty() && !self.assume_role.arn.starts_with("arn:") {
            return Err(DeError::custom(format!(
                "assume_role.arn `{}` is not an ARN",
                self.assume_role.arn
            )));
        }
        for (key, v) in [("region", &self.region), ("service", &self.service)] {
            if v.as_deref().is_some_and(str::is_empty) {
                return Err(DeError::custom(format!("{key} must not be empty")));
            }
        }
        Ok(())
    }
}

/// The `sigv4auth` extension's factory.
pub struct SigV4AuthFactory;

impl Factory for SigV4AuthFactory {
    type Config = SigV4AuthConfig;
    fn type_name(&self) -> &'static str {
        "sigv4auth"
    }
    fn validate(&self, config: &SigV4AuthConfig) -> Result<(), DeError> {
        config.validate()
    }
}

#[async_trait]
impl ExtensionFactory for SigV4AuthFactory {
    fn is_authenticator(&self) -> bool {
        true
    }

    fn signs_requests(&self) -> bool {
        true
    }

    async fn start(
        &self,
        config: &SigV4AuthConfig,
        ctx: ExtensionContext<'_>,
    ) -> Result<StartedExtension, StartError> {
        let auth = signer(config)
            .await
            .map_err(|e| StartError::component(&ctx.id.to_string(), e))?;
        tracing::info!(extension = %ctx.id, region = ?config.region, service = ?config.service,
            assume_role = !config.assume_role.arn.is_empty(), "sigv4auth ready");
        Ok(StartedExtension {
            tasks: Vec::new(),
            auth: Some(auth),
        })
    }
}

/// A SigV4 signer as this extension's, for a component that signs its own
/// calls (the `awsxray` receiver's sampling proxy): `config` as the
/// extension's keys. Nothing is fetched until the first request.
pub async fn signer(config: &SigV4AuthConfig) -> Result<Arc<dyn ClientAuth>, String> {
    let provider = credentials(config).await?;
    Ok(Arc::new(SigV4Signer {
        region: config.region.clone(),
        service: config.service.clone(),
        provider,
        cached: Mutex::new(None),
    }))
}

/// The credentials provider: the default chain, or a role assumed with it.
/// Nothing is fetched here: the first request fetches.
async fn credentials(config: &SigV4AuthConfig) -> Result<SharedCredentialsProvider, String> {
    let mut loader = crate::aws::loader(Duration::from_secs(10));
    if let Some(r) = config.region.clone() {
        loader = loader.region(aws_config::Region::new(r));
    }
    let base = loader.load().await;
    let role = &config.assume_role;
    let chain = base
        .credentials_provider()
        .ok_or("the AWS configuration has no credentials provider")?;
    if role.arn.is_empty() {
        return Ok(chain);
    }
    let mut sts = aws_config::sts::AssumeRoleProvider::builder(role.arn.clone())
        .session_name(
            role.session_name
                .clone()
                .unwrap_or_else(|| "spanwire".into()),
        )
        .configure(&base);
    if let Some(r) = role.sts_region.clone().or_else(|| config.region.clone()) {
        sts = sts.region(aws_config::Region::new(r));
    }
    Ok(SharedCredentialsProvider::new(sts.build().await))
}

/// Signs requests with cached credentials.
struct SigV4Signer {
    region: Option<String>,
    service: Option<String>,
    provider: SharedCredentialsProvider,
    /// Credentials, when they were fetched.
    cached: Mutex<Option<(Credentials, SystemTime)>>,
}

/// Credentials are fetched again this long before they expire (or a
/// quarter of their lifetime, for short-lived ones).
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

/// Whether credentials fetched at `fetched` must be fetched again at `now`.
fn stale(creds: &Credentials, fetched: SystemTime, now: SystemTime) -> bool {
    let Some(expiry) = creds.expiry() else {
        return false;
    };
    let lifetime = expiry.duration_since(fetched).unwrap_or_default();
    let margin = REFRESH_BEFORE.min(lifetime / 4);
    match expiry.duration_since(now) {
        Ok(left) => left <= margin,
        Err(_) => true,
    }
}

impl SigV4Signer {
    async fn credentials(&self) -> Result<Credentials, AuthError> {
        let mut cached = self.cached.lock().await;
        let now = SystemTime::now();
        if let Some((c, fetched)) = cached.as_ref() {
            if !stale(c, *fetched, now) {
                return Ok(c.clone());
            }
        }
        let fresh = self.provider.provide_credentials().await.map_err(|e| {
            AuthError::Retryable(format!(
                "sigv4auth: cannot get AWS credentials: {}",
                crate::aws::error_text(&e)
            ))
        })?;
        *cached = Some((fresh.clone(), now));
        Ok(fresh)
    }
}

#[async_trait]
impl ClientAuth for SigV4Signer {
    fn signs_body(&self) -> bool {
        true
    }

    async fn authorize(
        &self,
        parts: &mut http::request::Parts,
        body: &[u8],
        _metadata: &crate::signal::Metadata,
    ) -> Result<(), AuthError> {
        let host = parts.uri.host().unwrap_or_default().to_string();
        let inferred = crate::aws::endpoint_host(&host);
        let (inferred_service, inferred_region) = (inferred.map(|i| i.0), inferred.map(|i| i.1));
        let service = self
            .service
            .as_deref()
            .or(inferred_service)
            .ok_or_else(|| {
                AuthError::Permanent(format!(
                    "sigv4auth: set `service`: it cannot be inferred from the host `{host}`"
                ))
            })?;
        let region = self.region.as_deref().or(inferred_region).ok_or_else(|| {
            AuthError::Permanent(format!(
                "sigv4auth: set `region`: it cannot be inferred from the host `{host}`"
            ))
        })?;
        let identity: Identity = self.credentials().await?.into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(service)
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| AuthError::Permanent(format!("sigv4auth: {e}")))?
            .into();
        let uri = parts.uri.to_string();
        let headers: Vec<(&str, &str)> = parts
            .headers
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
            .collect();
        let signable = SignableRequest::new(
            parts.method.as_str(),
            &uri,
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| AuthError::Permanent(format!("sigv4auth: cannot sign: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| AuthError::Permanent(format!("sigv4auth: cannot sign: {e}")))?
            .into_parts();
        for (name, value) in instructions.headers() {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| AuthError::Permanent(format!("sigv4auth: {e}")))?;
            let value = http::HeaderValue::from_str(value)
                .map_err(|e| AuthError::Permanent(format!("sigv4auth: {e}")))?;
            parts.headers.insert(name, value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_refreshed_before_they_expire() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Credentials::new("a", "b", None, Some(t0 + Duration::from_secs(3600)), "t");
        assert!(!stale(&hour, t0, t0 + Duration::from_secs(3000)));
        assert!(stale(&hour, t0, t0 + Duration::from_secs(3301)));
        // Valid for 60 s: fetched again in its last 15 s, never used expired.
        let minute = Credentials::new("a", "b", None, Some(t0 + Duration::from_secs(60)), "t");
        assert!(!stale(&minute, t0, t0 + Duration::from_secs(44)));
        assert!(stale(&minute, t0, t0 + Duration::from_secs(46)));
        assert!(stale(&minute, t0, t0 + Duration::from_secs(61)));
        let forever = Credentials::new("a", "b", None, None, "t");
        assert!(!stale(&forever, t0, t0 + Duration::from_secs(1 << 30)));
    }
}
