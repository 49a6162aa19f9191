//! `receivers.awskinesis`: the config of the Kinesis receiver.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::decode::{Format, RecordEncoding};
use crate::settings::de::DeError;
use crate::settings::types::duration;
use crate::signal::Signal;

/// Where reading starts on a shard without a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    /// The oldest record still in the stream.
    #[default]
    TrimHorizon,
    /// Only records written from now on.
    Latest,
    /// Records written at or after `start_timestamp`.
    AtTimestamp,
}

/// Which checkpoint store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// A JSON file per stream in `directory` (one instance).
    #[default]
    File,
    /// Leases and checkpoints in a DynamoDB table (several instances).
    Dynamodb,
}

fn default_checkpoint_dir() -> PathBuf {
    PathBuf::from("./spanwire-checkpoints")
}

/// `checkpoint:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// `file` (default).
    #[serde(default)]
    pub store: StoreKind,
    /// Directory of the checkpoint files (`store: file`).
    #[serde(default = "default_checkpoint_dir")]
    pub directory: PathBuf,
    /// The lease table (`store: dynamodb`); default `spanwire-<stream>`.
    #[serde(default)]
    pub table: Option<String>,
    /// Create the lease table (on-demand) when it does not exist.
    #[serde(default = "yes")]
    pub create_table: bool,
    /// DynamoDB endpoint URL override.
    #[serde(default)]
    pub endpoint: Option<String>,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            store: StoreKind::File,
            directory: default_checkpoint_dir(),
            table: None,
            create_table: true,
            endpoint: None,
        }
    }
}

fn default_failover() -> Duration {
    Duration::from_secs(10)
}
fn default_renew() -> Duration {
    Duration::from_secs(3)
}

/// `lease:` (with `checkpoint.store: dynamodb`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LeaseConfig {
    /// A lease whose counter has not moved for this long is taken over.
    #[serde(default = "default_failover", with = "duration")]
    pub failover_time: Duration,
    /// How often leases are renewed and rebalanced.
    #[serde(default = "default_renew", with = "duration")]
    pub renew_interval: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            failover_time: default_failover(),
            renew_interval: default_renew(),
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_discovery() -> Duration {
    Duration::from_secs(60)
}
fn default_max_records() -> i32 {
    10_000
}
fn default_in_flight() -> usize {
    4
}
fn default_in_progress_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_max_record_bytes() -> usize {
    16 * 1024 * 1024
}
fn yes() -> bool {
    true
}

/// The signal of a stream of OTLP records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamSignal {
    /// Trace export requests.
    Traces,
    /// Metrics export requests.
    Metrics,
    /// Logs export requests.
    Logs,
}

/// `receivers.awskinesis`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AwsKinesisReceiverConfig {
    /// The stream's name (or give `stream_arn`).
    #[serde(default)]
    pub stream_name: Option<String>,
    /// The stream's ARN.
    #[serde(default)]
    pub stream_arn: Option<String>,
    /// AWS region; default from AWS_REGION, the profile or IMDS.
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint URL override (VPC endpoint, local test server).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Role to assume.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// `cloudwatch` (default: subscription envelopes), `otlp_proto` or `otlp_json`.
    #[serde(default)]
    pub encoding: RecordEncoding,
    /// With an OTLP encoding: the signal the stream carries (default traces).
    #[serde(default)]
    pub signal: Option<StreamSignal>,
    /// `auto` (default), `aws_spans` or `cloudwatch_logs` (envelopes).
    #[serde(default)]
    pub format: Format,
    /// `trim_horizon` (default), `latest` or `at_timestamp`.
    #[serde(default)]
    pub start_position: StartPosition,
    /// For `at_timestamp`: RFC 3339, e.g. `2026-11-01T00:00:00Z`.
    #[serde(default)]
    pub start_timestamp: Option<String>,
    /// Wait between GetRecords calls when a shard has nothing new.
    #[serde(default = "default_poll", with = "duration")]
    pub poll_interval: Duration,
    /// Records per GetRecords call (1–10000).
    #[serde(default = "default_max_records")]
    pub max_records: i32,
    /// How often shards are listed again.
    #[serde(default = "default_discovery", with = "duration")]
    pub shard_discovery_interval: Duration,
    /// Batches per shard sent but not yet acknowledged.
    #[serde(default = "default_in_flight")]
    pub max_in_flight_batches: usize,
    /// Deadline of one API call.
    #[serde(default = "default_timeout", with = "duration")]
    pub request_timeout: Duration,
    /// Checkpoint store.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Lease timing (DynamoDB store).
    #[serde(default)]
    pub lease: LeaseConfig,
    /// Hold an in-progress X-Ray span this long for its completed record.
    #[serde(default = "default_in_progress_timeout", with = "duration")]
    pub in_progress_timeout: Duration,
    /// Drop spans spanwire's own `awsxray` exporter wrote (the loop guard).
    #[serde(default = "yes")]
    pub drop_spanwire_exported: bool,
    /// Largest decompressed record, in bytes.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
}

impl AwsKinesisReceiverConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        match (&self.stream_name, &self.stream_arn) {
            (None, None) => return Err(DeError::custom("set stream_name or stream_arn")),
            (Some(_), Some(_)) => {
                return Err(DeError::custom(
                    "set only one of stream_name and stream_arn",
                ))
            }
            (_, Some(arn)) if !arn.starts_with("arn:") => {
                return Err(DeError::custom(format!("stream_arn `{arn}` is not an ARN")))
            }
            _ => {}
        }
        if let Some(e) = &self.endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(DeError::custom(format!(
                    "endpoint `{e}` must start with http:// or https://"
                )));
            }
        }
        if self.lease.renew_interval.is_zero()
            || self.lease.failover_time <= self.lease.renew_interval
        {
            return Err(DeError::custom(
                "lease.failover_time must be longer than lease.renew_interval (which must be more than 0)",
            ));
        }
        if !(1..=10_000).contains(&self.max_records) {
            return Err(DeError::custom("max_records must be between 1 and 10000"));
        }
        if self.max_in_flight_batches == 0 {
            return Err(DeError::custom("max_in_flight_batches must be at least 1"));
        }
        if self.poll_interval.is_zero() || self.shard_discovery_interval.is_zero() {
            return Err(DeError::custom(
                "poll_interval and shard_discovery_interval must be more than 0",
            ));
        }
        match (self.encoding, self.signal, self.format) {
            (RecordEncoding::Cloudwatch, Some(_), _) => {
                return Err(DeError::custom(
                    "signal is for encoding otlp_proto or otlp_json; cloudwatch records say what they hold",
                ))
            }
            (RecordEncoding::OtlpProto | RecordEncoding::OtlpJson, _, f) if f != Format::Auto => {
                return Err(DeError::custom(
                    "format is for encoding cloudwatch (subscription envelopes)",
                ))
            }
            _ => {}
        }
        match (self.start_position, &self.start_timestamp) {
            (StartPosition::AtTimestamp, None) => {
                return Err(DeError::custom(
                    "start_position at_timestamp needs start_timestamp",
                ))
            }
            (_, Some(t)) => {
                humantime::parse_rfc3339_weak(t).map_err(|e| {
                    DeError::custom(format!("start_timestamp `{t}` is not RFC 3339: {e}"))
                })?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Signals the receiver produces.
    pub fn signals(&self) -> &'static [Signal] {
        if self.encoding != RecordEncoding::Cloudwatch {
            return match self.otlp_signal() {
                Signal::Traces => &[Signal::Traces],
                Signal::Metrics => &[Signal::Metrics],
                Signal::Logs => &[Signal::Logs],
            };
        }
        match self.format {
            Format::AwsSpans => &[Signal::Traces],
            Format::CloudwatchLogs => &[Signal::Logs],
            Format::Auto => &[Signal::Traces, Signal::Logs],
        }
    }

    /// The signal of OTLP records (`signal`, default traces).
    pub fn otlp_signal(&self) -> Signal {
        match self.signal {
            None | Some(StreamSignal::Traces) => Signal::Traces,
            Some(StreamSignal::Metrics) => Signal::Metrics,
            Some(StreamSignal::Logs) => Signal::Logs,
        }
    }

    pub(crate) fn stream_label(&self) -> String {
        self.stream_name
            .clone()
            .or_else(|| {
                self.stream_arn
                    .as_ref()
                    .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
            })
            .unwrap_or_default()
    }
}
