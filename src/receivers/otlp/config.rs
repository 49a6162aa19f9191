//! `receivers.otlp`: the config of the OTLP receiver.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::settings::de::DeError;
use crate::settings::types::{check_listen_endpoint, AuthConfig, TlsServerConfig, WalConfig};

/// `receivers.otlp`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    /// The protocols to serve; a protocol key present (even empty) enables it.
    pub protocols: Protocols,
    /// The write-ahead log of `wait_for_delivery: durable`.
    #[serde(default)]
    pub wal: WalConfig,
}

/// `wait_for_delivery`: when a request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitFor {
    /// `false`: once the pipeline has taken it (it may still be in a batch
    /// or an exporter's memory queue).
    #[default]
    Accepted,
    /// `true` (or `delivered`): once every exporter has delivered it or
    /// queued it on disk, waiting at most `delivery_timeout`.
    Delivered,
    /// `durable`: once it is in the receiver's write-ahead log on the
    /// device (`wal`); it leaves the log when every exporter has delivered
    /// it, and is replayed after a crash.
    Durable,
}

impl<'de> Deserialize<'de> for WaitFor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<WaitFor, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = WaitFor;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`false`, `true` (= `delivered`) or `durable`")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<WaitFor, E> {
                Ok(if v {
                    WaitFor::Delivered
                } else {
                    WaitFor::Accepted
                })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<WaitFor, E> {
                // Also as text, as an `${env:…}` substitution gives it.
                match v {
                    "false" => Ok(WaitFor::Accepted),
                    "true" | "delivered" => Ok(WaitFor::Delivered),
                    "durable" => Ok(WaitFor::Durable),
                    other => Err(E::custom(format!(
                        "wait_for_delivery: `{other}` is not one of `false`, `true` (= `delivered`) or `durable`"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `receivers.otlp.protocols`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    /// gRPC settings; absent means gRPC is off.
    #[serde(default, deserialize_with = "present")]
    pub grpc: Option<GrpcConfig>,
    /// HTTP settings; absent means HTTP is off.
    #[serde(default, deserialize_with = "present")]
    pub http: Option<HttpConfig>,
}

/// A key that is present enables the section, even with no settings under it.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `protocols.grpc`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// `host:port` to listen on.
    pub endpoint: String,
    /// Largest accepted message, after decompression, in MiB.
    pub max_recv_msg_size_mib: usize,
    /// Most concurrent streams per HTTP/2 connection.
    pub max_concurrent_streams: Option<u32>,
    /// Require a bearer token (`authorization` metadata).
    pub auth: Option<AuthConfig>,
    /// Serve TLS with these certificates.
    pub tls: Option<TlsServerConfig>,
    /// When to answer: `false` when the pipeline accepts the data, `true`
    /// once every exporter delivered it (or durably queued it on disk),
    /// `durable` once it is in the write-ahead log.
    pub wait_for_delivery: WaitFor,
    /// With `wait_for_delivery: true`, how long to wait before answering
    /// `UNAVAILABLE` (the data may still be delivered; a retry may duplicate it).
    #[serde(with = "crate::settings::types::duration")]
    pub delivery_timeout: Duration,
    /// Keep each request's gRPC metadata with its data as client metadata
    /// (for the batch processor's `metadata_keys`, `headers_setter`'s
    /// `from_context`, awsemf's `x-aws-metric-namespace`).
    pub include_metadata: bool,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            endpoint: "localhost:4317".into(),
            max_recv_msg_size_mib: 4,
            max_concurrent_streams: None,
            auth: None,
            tls: None,
            wait_for_delivery: WaitFor::Accepted,
            delivery_timeout: DEFAULT_DELIVERY_TIMEOUT,
            include_metadata: false,
        }
    }
}

/// How long `wait_for_delivery` waits by default.
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// `protocols.http`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `host:port` to listen on.
    pub endpoint: String,
    /// Largest accepted body in bytes, compressed or not (decompression is bounded by it too).
    pub max_request_body_size: usize,
    /// Path for traces.
    pub traces_url_path: String,
    /// Path for metrics.
    pub metrics_url_path: String,
    /// Path for logs.
    pub logs_url_path: String,
    /// Require a bearer token (`Authorization` header).
    pub auth: Option<AuthConfig>,
    /// Serve HTTPS with these certificates.
    pub tls: Option<TlsServerConfig>,
    /// When to answer (see the gRPC side).
    pub wait_for_delivery: WaitFor,
    /// With `wait_for_delivery: true`, how long to wait before answering 503 (the
    /// data may still be delivered; a retry may duplicate it).
    #[serde(with = "crate::settings::types::duration")]
    pub delivery_timeout: Duration,
    /// Keep each request's HTTP headers with its data as client metadata
    /// (see the gRPC side).
    pub include_metadata: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            endpoint: "localhost:4318".into(),
            max_request_body_size: 20 * 1024 * 1024,
            traces_url_path: "/v1/traces".into(),
            metrics_url_path: "/v1/metrics".into(),
            logs_url_path: "/v1/logs".into(),
            auth: None,
            tls: None,
            wait_for_delivery: WaitFor::Accepted,
            delivery_timeout: DEFAULT_DELIVERY_TIMEOUT,
            include_metadata: false,
        }
    }
}

impl OtlpReceiverConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        if self.protocols.grpc.is_none() && self.protocols.http.is_none() {
            return Err(DeError::custom(
                "protocols: enable at least one of `grpc` or `http` (an empty `grpc:` uses the defaults)",
            ));
        }
        self.wal.validate().map_err(DeError::custom)?;
        if self.durable() && self.wal.directory.is_none() {
            return Err(DeError::custom(
                "wait_for_delivery: durable needs `wal.directory` (where this receiver keeps its write-ahead log)",
            ));
        }
        if let Some(g) = &self.protocols.grpc {
            check_listen_endpoint(&g.endpoint)
                .map_err(|e| DeError::custom(format!("protocols.grpc: {e}")))?;
            if let Some(a) = &g.auth {
                a.validate()
                    .map_err(|e| DeError::custom(format!("protocols.grpc.{e}")))?;
            }
            if let Some(t) = &g.tls {
                t.validate()
                    .map_err(|e| DeError::custom(format!("protocols.grpc.{e}")))?;
            }
            if g.max_recv_msg_size_mib == 0 {
                return Err(DeError::custom(
                    "protocols.grpc.max_recv_msg_size_mib must be at least 1",
                ));
            }
        }
        if let Some(h) = &self.protocols.http {
            check_listen_endpoint(&h.endpoint)
                .map_err(|e| DeError::custom(format!("protocols.http: {e}")))?;
            if let Some(a) = &h.auth {
                a.validate()
                    .map_err(|e| DeError::custom(format!("protocols.http.{e}")))?;
            }
            if let Some(t) = &h.tls {
                t.validate()
                    .map_err(|e| DeError::custom(format!("protocols.http.{e}")))?;
            }
            if h.max_request_body_size == 0 {
                return Err(DeError::custom(
                    "protocols.http.max_request_body_size must be at least 1",
                ));
            }
            for p in [&h.traces_url_path, &h.metrics_url_path, &h.logs_url_path] {
                if !p.starts_with('/') {
                    return Err(DeError::custom(format!(
                        "protocols.http: url path `{p}` must start with `/`"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether a protocol answers `wait_for_delivery: durable` (so the
    /// receiver keeps a write-ahead log).
    pub fn durable(&self) -> bool {
        let g = self.protocols.grpc.as_ref().map(|g| g.wait_for_delivery);
        let h = self.protocols.http.as_ref().map(|h| h.wait_for_delivery);
        [g, h].contains(&Some(WaitFor::Durable))
    }

    /// Addresses it listens on.
    pub fn endpoints(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(g) = &self.protocols.grpc {
            v.push(g.endpoint.clone());
        }
        if let Some(h) = &self.protocols.http {
            v.push(h.endpoint.clone());
        }
        v
    }
}
