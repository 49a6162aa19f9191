//! What the supervisor and the shard readers of one Kinesis receiver share.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::config::AwsKinesisReceiverConfig;
use super::{checkpoint, lease};
use crate::consumer::Consumers;
use crate::convert::aws_spans::SpanStream;

/// The stream as the API wants it named.
#[derive(Debug, Clone)]
pub(crate) enum StreamRef {
    Name(String),
    Arn(String),
}

/// Self-metrics of one receiver.
pub(crate) struct Metrics {
    pub bad_records: metrics::Counter,
    pub bad_spans: metrics::Counter,
    pub control: metrics::Counter,
    pub loop_dropped: metrics::Counter,
    pub duplicates: metrics::Counter,
    pub throttled: metrics::Counter,
    pub leases_held: metrics::Gauge,
    pub accepted: crate::telemetry::SignalCounters,
    pub refused: crate::telemetry::SignalCounters,
}

impl Metrics {
    pub(super) fn new(receiver: &str) -> Metrics {
        let l = || vec![("receiver", receiver.to_string())];
        let c = |name: &'static str| metrics::counter!(name, &l());
        let labels = vec![
            ("receiver", receiver.to_string()),
            ("transport", "kinesis".to_string()),
        ];
        Metrics {
            bad_records: c("spanwire_kinesis_bad_records_total"),
            bad_spans: c("spanwire_kinesis_bad_spans_total"),
            control: c("spanwire_kinesis_control_messages_total"),
            loop_dropped: c("spanwire_kinesis_loop_guard_dropped_spans_total"),
            duplicates: c("spanwire_kinesis_duplicate_spans_total"),
            throttled: c("spanwire_kinesis_throttled_total"),
            leases_held: metrics::gauge!("spanwire_kinesis_leases_held", &l()),
            accepted: crate::telemetry::SignalCounters::new("spanwire_receiver_accepted", &labels),
            refused: crate::telemetry::SignalCounters::new("spanwire_receiver_refused", &labels),
        }
    }
}

/// Everything the shard tasks share.
pub(crate) struct Shared {
    pub cfg: AwsKinesisReceiverConfig,
    pub name: String,
    pub stream: StreamRef,
    pub client: aws_sdk_kinesis::Client,
    pub store: Arc<dyn checkpoint::Checkpoints>,
    /// The lease table, with `store: dynamodb`.
    pub leases: Option<Arc<lease::LeaseStore>>,
    pub consumers: Consumers,
    pub spans: Mutex<SpanStream>,
    pub metrics: Metrics,
    pub epoch: Instant,
    /// Set when a shard ends, to list shards again at once.
    pub relist: tokio::sync::Notify,
}

impl Shared {
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}
