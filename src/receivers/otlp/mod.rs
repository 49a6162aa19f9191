//! Receiver `otlp`: OTLP/gRPC (default `localhost:4317`) and OTLP/HTTP
//! (default `localhost:4318`, protobuf and JSON) for traces, metrics and logs.

mod config;
mod grpc;
mod http;
mod intake;

pub use config::{GrpcConfig, HttpConfig, OtlpReceiverConfig, Protocols, DEFAULT_DELIVERY_TIMEOUT};
use intake::Intake;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::component::{ComponentId, Factory, ReceiverContext, ReceiverFactory};
use crate::consumer::{Consumers, StartError};
use crate::settings::de::DeError;
use crate::signal::Signal;

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
    use crate::settings::{de::from_node, yaml::parse};

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
