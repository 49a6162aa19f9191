//! Shared AWS SDK set-up for components that call AWS: one HTTPS client
//! (rustls with ring), the standard credential chain (environment, profile,
//! web identity / IRSA, ECS and EKS Pod Identity, IMDS), an optional role to
//! assume, and region and timeout settings. The SDK's own retries are off:
//! spanwire's sending queues retry with their own backoff and counters, so
//! every retry is visible in self-metrics and bounded by `retry_on_failure`.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

/// Where and as whom to call AWS.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// Region; `None` uses AWS_REGION, the profile, or IMDS.
    pub region: Option<String>,
    /// A role to assume with the base credentials.
    pub role_arn: Option<String>,
    /// Deadline of one API call (including its connection).
    pub timeout: Duration,
}

/// Why AWS set-up failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AwsError {
    /// No region could be found anywhere.
    #[error(
        "no AWS region: set `region` in the component's config, or AWS_REGION in the environment"
    )]
    NoRegion,
}

/// The SDK config loader every AWS component starts from: the standard
/// chain, spanwire's HTTPS client (rustls with ring), no SDK retries, and
/// `timeout` for one call.
pub fn loader(timeout: Duration) -> aws_config::ConfigLoader {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(10)))
                .build(),
        )
}

/// Loads the SDK config: region, credentials (assuming `role_arn` if set),
/// the HTTPS client and timeouts. Does not call AWS.
pub async fn sdk_config(s: &AwsSettings) -> Result<SdkConfig, AwsError> {
    let mut loader = loader(s.timeout);
    if let Some(r) = &s.region {
        loader = loader.region(Region::new(r.clone()));
    }
    let base = loader.load().await;
    if base.region().is_none() {
        return Err(AwsError::NoRegion);
    }
    if let Some(role) = &s.role_arn {
        let provider = aws_config::sts::AssumeRoleProvider::builder(role.clone())
            .session_name("spanwire")
            .configure(&base)
            .build()
            .await;
        return Ok(base
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build());
    }
    Ok(base)
}

/// `(service, region)` of an AWS endpoint host `<service>.<region>.amazonaws.com`
/// (or `.amazonaws.com.cn`); `None` for any other host.
pub fn endpoint_host(host: &str) -> Option<(&str, &str)> {
    let base = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let (service, region) = base.split_once('.')?;
    (!service.is_empty() && region.contains('-') && !region.contains('.'))
        .then_some((service, region))
}

/// Checks the settings AWS exporters share: `endpoint`, `role_arn`,
/// `request_timeout` and `max_concurrent_requests`.
pub fn check_settings(
    endpoint: Option<&str>,
    role_arn: Option<&str>,
    request_timeout: Duration,
    max_concurrent_requests: usize,
) -> Result<(), String> {
    if let Some(e) = endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(format!(
                "endpoint `{e}` must start with http:// or https://"
            ));
        }
        e.parse::<http::Uri>()
            .map_err(|err| format!("invalid endpoint `{e}`: {err}"))?;
    }
    if let Some(r) = role_arn {
        if !r.starts_with("arn:") {
            return Err(format!("role_arn `{r}` is not an ARN"));
        }
    }
    if max_concurrent_requests == 0 {
        return Err("max_concurrent_requests must be at least 1".into());
    }
    if request_timeout.is_zero() {
        return Err("request_timeout must be more than 0".into());
    }
    Ok(())
}

/// An error with its sources, for logs (the SDK's top-level messages are
/// often just "service error").
pub fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    aws_smithy_types::error::display::DisplayErrorContext(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_and_region_come_from_aws_hosts_only() {
        assert_eq!(
            endpoint_host("xray.us-west-2.amazonaws.com"),
            Some(("xray", "us-west-2"))
        );
        assert_eq!(
            endpoint_host("logs.cn-north-1.amazonaws.com.cn"),
            Some(("logs", "cn-north-1"))
        );
        assert_eq!(endpoint_host("127.0.0.1"), None);
        assert_eq!(endpoint_host("collector.example.com"), None);
        assert_eq!(endpoint_host("amazonaws.com"), None);
    }
}
