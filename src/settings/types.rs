//! Config value types shared by several components.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration written as `200ms`, `5s`, `1m30s` (Go / humantime syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 200ms, 5s or 1m")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                if s.trim() == "0" {
                    return Ok(HumanDuration(Duration::ZERO));
                }
                humantime::parse_duration(s.trim())
                    .map(HumanDuration)
                    .map_err(|e| {
                        E::custom(format!(
                            "invalid duration `{s}`: {e} (write e.g. 200ms, 5s or 1m)"
                        ))
                    })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                if v == 0 {
                    Ok(HumanDuration(Duration::ZERO))
                } else {
                    Err(E::custom(format!(
                        "a bare number `{v}` is ambiguous as a duration; add a unit, e.g. {v}s"
                    )))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                self.visit_i64(v as i64)
            }
        }
        d.deserialize_any(V)
    }
}

/// Serde helpers for `Duration` fields.
pub mod duration {
    use super::*;

    /// Deserialises a [`Duration`] from `200ms`-style text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        HumanDuration::deserialize(d).map(|h| h.0)
    }
}

/// Serde helpers for `Option<Duration>` fields (use with `#[serde(default)]`).
pub mod opt_duration {
    use super::*;

    /// Deserialises a present value as `Some` of a `200ms`-style duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        HumanDuration::deserialize(d).map(|h| Some(h.0))
    }
}

/// Compression for exporters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip (the default, as in the OTel Collector).
    #[default]
    Gzip,
    /// zstd.
    Zstd,
    /// No compression.
    None,
}

/// Client TLS settings.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsClientConfig {
    /// Plain text, no TLS (for `host:port` endpoints without a scheme).
    pub insecure: bool,
    /// Use TLS but do not verify the server certificate (testing only).
    pub insecure_skip_verify: bool,
    /// PEM file with CA certificates to trust instead of the built-in roots.
    pub ca_file: Option<String>,
    /// PEM client certificate (for mutual TLS).
    pub cert_file: Option<String>,
    /// PEM client key (for mutual TLS).
    pub key_file: Option<String>,
    /// Server name to verify instead of the endpoint's host.
    pub server_name_override: Option<String>,
}

/// Server TLS settings of a receiver (`tls:` next to `endpoint`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// PEM certificate chain the receiver presents.
    pub cert_file: String,
    /// PEM private key of that certificate.
    pub key_file: String,
    /// PEM CA certificates: when set, clients must present a certificate
    /// signed by one of them (mutual TLS).
    #[serde(default)]
    pub client_ca_file: Option<String>,
    /// Lowest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default = "default_tls_min")]
    pub min_version: String,
}

fn default_tls_min() -> String {
    "1.2".into()
}

impl TlsServerConfig {
    /// Checks values without reading the files (they are read at start).
    pub fn validate(&self) -> Result<(), String> {
        if self.cert_file.is_empty() || self.key_file.is_empty() {
            return Err("tls: cert_file and key_file are required".into());
        }
        if self.client_ca_file.as_deref() == Some("") {
            return Err("tls: client_ca_file must not be empty".into());
        }
        if self.min_version != "1.2" && self.min_version != "1.3" {
            return Err(format!(
                "tls: min_version `{}` must be \"1.2\" or \"1.3\"",
                self.min_version
            ));
        }
        Ok(())
    }
}

/// `retry_on_failure` of exporters.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retry at all.
    pub enabled: bool,
    /// First wait.
    #[serde(with = "duration")]
    pub initial_interval: Duration,
    /// Longest single wait.
    #[serde(with = "duration")]
    pub max_interval: Duration,
    /// Give up after this long (0 = never).
    #[serde(with = "duration")]
    pub max_elapsed_time: Duration,
    /// Growth factor between waits.
    pub multiplier: f64,
    /// Jitter: each wait is drawn from `[w·(1−f), w·(1+f)]`.
    pub randomization_factor: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
            multiplier: 1.5,
            randomization_factor: 0.5,
        }
    }
}

/// `sending_queue` of exporters.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Queue at all; when false the export happens in the sender's call.
    pub enabled: bool,
    /// Concurrent senders draining the queue.
    pub num_consumers: usize,
    /// Capacity in batches. With `storage`, the number of batches also kept
    /// in memory so workers need not read them back from disk.
    pub queue_size: usize,
    /// A directory for a disk-backed queue (one subdirectory per exporter).
    /// Queued data survives restarts and outages; unset, the queue is in memory.
    pub storage: Option<std::path::PathBuf>,
    /// Most disk space the queue may use, in MiB.
    pub max_size_mib: u64,
    /// Size of one segment file, in MiB (at most a quarter of `max_size_mib`).
    pub segment_size_mib: u64,
    /// What to do when the disk queue is full.
    pub when_full: WhenFull,
    /// When queued data is flushed to the device.
    pub fsync: FsyncPolicy,
    /// With `fsync: interval`, how often.
    #[serde(with = "duration")]
    pub fsync_interval: Duration,
}

/// What a full disk queue does with new data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Refuse it, so the pipeline pushes back on senders (they retry).
    #[default]
    Block,
    /// Drop the oldest queued segment to make room (counted).
    DropOldest,
    /// Drop the new batch (counted).
    DropNewest,
}

/// When the disk queue calls fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// After every queued batch, before it is acknowledged (survives power loss).
    #[default]
    Always,
    /// Every `fsync_interval` (survives a crash of spanwire, not of the machine).
    Interval,
    /// Never; the OS writes back when it likes.
    Never,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            enabled: true,
            num_consumers: 10,
            queue_size: 1000,
            storage: None,
            max_size_mib: 1024,
            segment_size_mib: 8,
            when_full: WhenFull::Block,
            fsync: FsyncPolicy::Always,
            fsync_interval: Duration::from_secs(1),
        }
    }
}

impl RetryConfig {
    /// No retries: a failed batch is dropped (and counted) at once.
    pub fn off() -> RetryConfig {
        RetryConfig {
            enabled: false,
            ..RetryConfig::default()
        }
    }
}

impl QueueConfig {
    /// An in-memory queue of `queue_size` batches with one consumer, for
    /// exporters whose settings have no `sending_queue` (local sinks).
    pub fn local(queue_size: usize) -> QueueConfig {
        QueueConfig {
            enabled: true,
            num_consumers: 1,
            queue_size,
            ..QueueConfig::default()
        }
    }

    /// Checks the values make sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.enabled && self.num_consumers == 0 {
            return Err("sending_queue.num_consumers must be at least 1".into());
        }
        if self.enabled && self.queue_size == 0 {
            return Err("sending_queue.queue_size must be at least 1".into());
        }
        if let Some(dir) = &self.storage {
            if !self.enabled {
                return Err("sending_queue.storage needs the queue enabled".into());
            }
            if dir.as_os_str().is_empty() {
                return Err("sending_queue.storage must be a directory path".into());
            }
            if self.max_size_mib == 0 {
                return Err("sending_queue.max_size_mib must be at least 1".into());
            }
            if self.segment_size_mib == 0 {
                return Err("sending_queue.segment_size_mib must be at least 1".into());
            }
            if self.fsync == FsyncPolicy::Interval && self.fsync_interval.is_zero() {
                return Err("sending_queue.fsync_interval must be more than 0".into());
            }
        }
        Ok(())
    }
}

/// Splits `host:port` (or `[v6]:port`) and checks the port.
pub fn check_listen_endpoint(ep: &str) -> Result<(), String> {
    let (host, port) = ep
        .rsplit_once(':')
        .ok_or_else(|| format!("endpoint `{ep}` must be host:port"))?;
    if host.is_empty() {
        return Err(format!(
            "endpoint `{ep}` has no host; write e.g. 0.0.0.0{ep} or localhost{ep}"
        ));
    }
    port.parse::<u16>()
        .map_err(|_| format!("endpoint `{ep}` has an invalid port `{port}`"))?;
    Ok(())
}

/// A secret from config (a token): shown as `<redacted>` in debug output and
/// never logged.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `auth:` of an exporter: the extension that adds its credentials, as the
/// Collector writes it (`auth: {authenticator: sigv4auth/traces}`), or
/// several applied in turn (`authenticator: [headers_setter, sigv4auth/logs]`:
/// headers first, then the signature that covers them).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterAuth {
    /// The ids of client authenticator extensions (`sigv4auth`,
    /// `bearertokenauth`, `headers_setter`) listed under `service.extensions`.
    pub authenticator: OneOrMany,
}

/// One string, or a list of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            One(String),
            Many(Vec<String>),
        }
        match Either::deserialize(d) {
            Ok(Either::One(s)) => Ok(OneOrMany(vec![s])),
            Ok(Either::Many(v)) if !v.is_empty() => Ok(OneOrMany(v)),
            Ok(Either::Many(_)) => Err(serde::de::Error::custom(
                "name at least one authenticator extension",
            )),
            Err(_) => Err(serde::de::Error::custom(
                "expected an extension id or a list of them",
            )),
        }
    }
}

/// `auth:` of a receiver: senders must present `Authorization: Bearer <token>`.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The token (use `${env:…}` rather than writing it into the file).
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// A file holding the token (trailing whitespace ignored), e.g. a mounted
    /// Kubernetes Secret.
    #[serde(default)]
    pub bearer_token_file: Option<String>,
}

impl AuthConfig {
    /// Exactly one source, and a token that is not empty.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.bearer_token, &self.bearer_token_file) {
            (Some(_), Some(_)) => {
                Err("auth: set bearer_token or bearer_token_file, not both".into())
            }
            (None, None) => Err("auth: set bearer_token or bearer_token_file".into()),
            (Some(t), None) if t.0.trim().is_empty() => Err("auth.bearer_token is empty".into()),
            _ => Ok(()),
        }
    }

    /// The token, read from the file if configured so.
    pub fn token(&self) -> Result<Secret, String> {
        match (&self.bearer_token, &self.bearer_token_file) {
            (Some(t), _) => Ok(t.clone()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("auth.bearer_token_file `{path}`: {e}"))?;
                let t = text.trim_end().to_string();
                if t.is_empty() {
                    return Err(format!("auth.bearer_token_file `{path}` is empty"));
                }
                Ok(Secret(t))
            }
            (None, None) => Err("auth: no token configured".into()),
        }
    }
}

/// `wal` of a receiver that can answer `wait_for_delivery: durable`: where
/// and how big its write-ahead log is.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// A directory for the log (one subdirectory per receiver). Required
    /// when a protocol answers `durable`.
    pub directory: Option<std::path::PathBuf>,
    /// Most disk space the log may use, in MiB; when it is full, requests
    /// are refused as retryable until exporters catch up.
    pub max_size_mib: u64,
    /// Size of one segment file, in MiB (at most a quarter of `max_size_mib`).
    pub segment_size_mib: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            directory: None,
            max_size_mib: 1024,
            segment_size_mib: 8,
        }
    }
}

impl WalConfig {
    /// Checks values serde cannot (the directory is checked by whoever needs it).
    pub fn validate(&self) -> Result<(), String> {
        if self.max_size_mib == 0 || self.segment_size_mib == 0 {
            return Err("wal.max_size_mib and wal.segment_size_mib must be at least 1".into());
        }
        Ok(())
    }
}
