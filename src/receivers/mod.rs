//! Receivers: where data enters spanwire. Each receiver type has a config
//! struct (deserialised from its YAML section) and a `start` that binds its
//! listeners and feeds the [`Consumers`] of the pipelines that list it.

pub mod awskinesis;
pub mod bedrock;
pub mod otlp;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::de::{from_node, DeError};
use crate::config::yaml::Node;
use crate::config::ComponentId;
use crate::consumer::{Consumers, StartError};
use crate::signal::Signal;

/// The typed config of one receiver.
#[derive(Debug, Clone)]
pub enum ReceiverConfig {
    /// `otlp`: OTLP over gRPC and HTTP.
    Otlp(otlp::OtlpReceiverConfig),
    /// `bedrock`: Bedrock agent trace events over HTTP, converted to spans.
    Bedrock(bedrock::BedrockReceiverConfig),
    /// `awskinesis`: CloudWatch Logs subscription records from Kinesis.
    AwsKinesis(awskinesis::AwsKinesisReceiverConfig),
}

impl ReceiverConfig {
    /// Receiver types spanwire knows.
    pub const KINDS: &'static [&'static str] = &["otlp", "bedrock", "awskinesis"];

    /// Parses the section of a receiver of type `kind`; `None` for an unknown type.
    pub fn parse(kind: &str, node: &Node) -> Option<Result<ReceiverConfig, DeError>> {
        match kind {
            "otlp" => Some(
                from_node::<otlp::OtlpReceiverConfig>(node)
                    .and_then(|c| c.validate().map(|_| c))
                    .map(ReceiverConfig::Otlp),
            ),
            "bedrock" => Some(
                from_node::<bedrock::BedrockReceiverConfig>(node)
                    .and_then(|c| c.validate().map(|_| c))
                    .map(ReceiverConfig::Bedrock),
            ),
            "awskinesis" => Some(
                from_node::<awskinesis::AwsKinesisReceiverConfig>(node)
                    .and_then(|c| c.validate().map(|_| c))
                    .map(ReceiverConfig::AwsKinesis),
            ),
            _ => None,
        }
    }

    /// Signals the receiver can produce.
    pub fn signals(&self) -> &'static [Signal] {
        match self {
            ReceiverConfig::Otlp(_) => &Signal::ALL,
            ReceiverConfig::Bedrock(_) => &[Signal::Traces],
            ReceiverConfig::AwsKinesis(c) => c.signals(),
        }
    }

    /// Addresses the receiver listens on.
    pub fn endpoints(&self) -> Vec<String> {
        match self {
            ReceiverConfig::Otlp(c) => c.endpoints(),
            ReceiverConfig::Bedrock(c) => vec![c.endpoint.clone()],
            ReceiverConfig::AwsKinesis(_) => Vec::new(),
        }
    }

    /// Binds and starts the receiver; it stops when `cancel` fires.
    pub async fn start(
        &self,
        id: &ComponentId,
        consumers: Consumers,
        cancel: CancellationToken,
    ) -> Result<Vec<JoinHandle<()>>, StartError> {
        match self {
            ReceiverConfig::Otlp(c) => otlp::start(c, id, consumers, cancel).await,
            ReceiverConfig::Bedrock(c) => bedrock::start(c, id, consumers.traces, cancel).await,
            ReceiverConfig::AwsKinesis(c) => awskinesis::start(c, id, consumers, cancel).await,
        }
    }
}
