//! Receiver `otlp`: OTLP/gRPC (default `localhost:4317`) and OTLP/HTTP
//! (default `localhost:4318`, protobuf and JSON) for traces, metrics and logs.

mod grpc;
mod http;

use std::time::Duration;

use serde::{Deserialize, Deserializer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::component::{ComponentId, Factory, ReceiverContext, ReceiverFactory};
use crate::config::de::DeError;
use crate::config::types::{check_listen_endpoint, AuthConfig, TlsServerConfig};
use crate::consumer::{
    Ack, AckOutcome, AckWaiter, Acks, BoxConsumer, ConsumeError, Consumers, StartError,
};
use crate::signal::{Signal, Telemetry};
use crate::telemetry::SignalCounters;

/// `receivers.otlp`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    /// The protocols to serve; a protocol key present (even empty) enables it.
    pub protocols: Protocols,
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
    /// Answer only once the data is delivered by every exporter (or durably
    /// queued on disk), instead of when the pipeline accepts it.
    pub wait_for_delivery: bool,
    /// With `wait_for_delivery`, how long to wait before answering
    /// `UNAVAILABLE` (the data may still be delivered; a retry may duplicate it).
    #[serde(with = "crate::config::types::duration")]
    pub delivery_timeout: Duration,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            endpoint: "localhost:4317".into(),
            max_recv_msg_size_mib: 4,
            max_concurrent_streams: None,
            auth: None,
            tls: None,
            wait_for_delivery: false,
            delivery_timeout: DEFAULT_DELIVERY_TIMEOUT,
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
    /// Answer only once the data is delivered by every exporter (or durably
    /// queued on disk), instead of when the pipeline accepts it.
    pub wait_for_delivery: bool,
    /// With `wait_for_delivery`, how long to wait before answering 503 (the
    /// data may still be delivered; a retry may duplicate it).
    #[serde(with = "crate::config::types::duration")]
    pub delivery_timeout: Duration,
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
            wait_for_delivery: false,
            delivery_timeout: DEFAULT_DELIVERY_TIMEOUT,
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

/// Why data was not taken, as a receiver reports it to the sender.
pub(crate) enum Rejection {
    /// Retry later (UNAVAILABLE / 503).
    Unavailable {
        reason: String,
        retry_after: Duration,
    },
    /// Failed for good (INTERNAL / 500).
    Failed(String),
}

/// Hands decoded data to the pipelines and counts it.
#[derive(Clone)]
pub(crate) struct Intake {
    consumers: Consumers,
    /// `wait_for_delivery`: answer after delivery, waiting at most this long.
    wait: Option<Duration>,
    accepted: SignalCounters,
    refused: SignalCounters,
    unauthenticated: metrics::Counter,
}

impl Intake {
    fn new(
        id: &ComponentId,
        transport: &str,
        consumers: Consumers,
        wait: Option<Duration>,
    ) -> Intake {
        let labels = [
            ("receiver", id.to_string()),
            ("transport", transport.to_string()),
        ];
        Intake {
            consumers,
            wait,
            accepted: SignalCounters::new("spanwire_receiver_accepted", &labels),
            refused: SignalCounters::new("spanwire_receiver_refused", &labels),
            unauthenticated: crate::telemetry::unauthenticated_counter(&labels),
        }
    }

    /// Counts a request refused for a missing or wrong token.
    fn unauthenticated(&self) {
        self.unauthenticated.increment(1);
    }

    fn consumer(&self, signal: Signal) -> Option<&BoxConsumer> {
        self.consumers.get(signal)
    }

    async fn deliver(&self, consumer: &BoxConsumer, data: Telemetry) -> Result<(), Rejection> {
        let signal = data.signal();
        let n = data.item_count();
        if n == 0 {
            return Ok(());
        }
        let (acks, waiter) = match self.wait {
            Some(_) => {
                let (ack, waiter) = Ack::new();
                (Acks::one(ack), Some(waiter))
            }
            None => (Acks::none(), None),
        };
        match consumer.consume(data, acks).await {
            Ok(()) => {
                self.accepted.add(signal, n);
                match (waiter, self.wait) {
                    (Some(w), Some(timeout)) => delivery_result(w, timeout).await,
                    _ => Ok(()),
                }
            }
            Err(ConsumeError::Refused(r)) => {
                self.refused.add(signal, n);
                Err(Rejection::Unavailable {
                    reason: r.reason,
                    retry_after: r.retry_after,
                })
            }
            Err(ConsumeError::Failed(reason)) => {
                self.refused.add(signal, n);
                Err(Rejection::Failed(reason))
            }
        }
    }
}

/// Waits for the data's acknowledgement and says how to answer.
async fn delivery_result(waiter: AckWaiter, timeout: Duration) -> Result<(), Rejection> {
    match tokio::time::timeout(timeout, waiter.wait()).await {
        Ok(AckOutcome::Delivered) => Ok(()),
        Ok(AckOutcome::Dropped) => Err(Rejection::Failed(
            "accepted, but an exporter dropped the data for good (see its log)".into(),
        )),
        Ok(AckOutcome::Abandoned) => Err(Rejection::Unavailable {
            reason: "spanwire shut down before the data was delivered".into(),
            retry_after: Duration::from_secs(1),
        }),
        Err(_) => Err(Rejection::Unavailable {
            reason: format!(
                "not delivered within delivery_timeout ({}s); it may still be",
                timeout.as_secs_f64()
            ),
            retry_after: Duration::from_secs(1),
        }),
    }
}

/// The `otlp` receiver's factory.
pub struct OtlpReceiverFactory;

impl Factory for OtlpReceiverFactory {
    type Config = OtlpReceiverConfig;
    fn type_name(&self) -> &'static str {
        "otlp"
    }
    fn validate(&self, config: &OtlpReceiverConfig) -> Result<(), DeError> {
        config.validate()
    }
}

#[async_trait::async_trait]
impl ReceiverFactory for OtlpReceiverFactory {
    fn signals(&self, _config: &OtlpReceiverConfig) -> &'static [Signal] {
        &Signal::ALL
    }
    fn endpoints(&self, config: &OtlpReceiverConfig) -> Vec<String> {
        config.endpoints()
    }
    async fn start(
        &self,
        config: &OtlpReceiverConfig,
        ctx: ReceiverContext<'_>,
    ) -> Result<Vec<JoinHandle<()>>, StartError> {
        start(config, ctx.id, ctx.consumers, ctx.cancel).await
    }
}

/// Starts the enabled protocols.
async fn start(
    cfg: &OtlpReceiverConfig,
    id: &ComponentId,
    consumers: Consumers,
    cancel: CancellationToken,
) -> Result<Vec<JoinHandle<()>>, StartError> {
    let mut tasks = Vec::new();
    if let Some(g) = &cfg.protocols.grpc {
        tasks.push(
            grpc::start(
                g,
                Intake::new(
                    id,
                    "grpc",
                    consumers.clone(),
                    g.wait_for_delivery.then_some(g.delivery_timeout),
                ),
                cancel.clone(),
            )
            .await?,
        );
    }
    if let Some(h) = &cfg.protocols.http {
        let wait = h.wait_for_delivery.then_some(h.delivery_timeout);
        tasks.push(http::start(h, Intake::new(id, "http", consumers, wait), cancel).await?);
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{de::from_node, yaml::parse};

    fn cfg(text: &str) -> Result<OtlpReceiverConfig, DeError> {
        let (n, _) = parse("t", text, &|_| None).unwrap();
        from_node::<OtlpReceiverConfig>(&n).and_then(|c| c.validate().map(|_| c))
    }

    #[test]
    fn empty_protocol_key_enables_defaults() {
        let c = cfg("protocols:\n  grpc:\n").unwrap();
        assert_eq!(c.protocols.grpc, Some(GrpcConfig::default()));
        assert_eq!(c.protocols.http, None);
        assert!(cfg("protocols: {}\n").is_err());
        assert!(cfg("protocols:\n  http:\n    endpoint: nohost\n").is_err());
    }
}
