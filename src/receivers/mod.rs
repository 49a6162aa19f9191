//! Receivers: where data enters spanwire. Each receiver is one file (or
//! folder) here with its config, its
//! [`ReceiverFactory`](crate::component::ReceiverFactory) and its `start`,
//! which binds its listeners and feeds the consumers of the pipelines that
//! list it; [`FACTORIES`] lists them.

pub mod awsecscontainermetrics;
pub mod awskinesis;
pub mod awsxray;
pub mod bedrock;
pub mod otlp;

use crate::component::{Factories, ReceiverDef};

/// The receiver registry: every type a config may name under `receivers:`.
pub static FACTORIES: Factories<dyn ReceiverDef> = &[
    &otlp::OtlpReceiverFactory,
    &bedrock::BedrockReceiverFactory,
    &awskinesis::AwsKinesisReceiverFactory,
    &awsxray::AwsXrayReceiverFactory,
    &awsecscontainermetrics::AwsEcsContainerMetricsFactory,
];
