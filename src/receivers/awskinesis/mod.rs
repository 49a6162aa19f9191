//! Receiver `awskinesis`: CloudWatch Logs subscription records from a Kinesis
//! Data Stream — `aws/spans` as OTLP spans, any other log group as OTLP log
//! records — read at least once across restarts.
//!
//! - Shards are listed (paginated) at start and every
//!   `shard_discovery_interval`, and at once when a shard ends; a child shard
//!   is read only after its parents are read to their end.
//! - One task per shard: GetRecords at most 5 times a second and 2 MiB a
//!   second, backing off with jitter on ProvisionedThroughputExceeded, and
//!   replacing expired iterators after the last record read.
//! - **At least once.** Each batch goes to the pipelines with an
//!   acknowledgement ([`crate::consumer::Ack`]); the shard's checkpoint moves
//!   past a batch only when every exporter has settled its copy, in order.
//!   After a crash, reading resumes after the checkpoint: only the
//!   unacknowledged tail is read again.

pub mod checkpoint;
pub mod decode;
pub mod lease;
mod shard;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::aws::AwsSettings;
use crate::component::{ComponentId, Factory, ReceiverContext, ReceiverFactory};
use crate::config::de::DeError;
use crate::config::types::duration;
use crate::consumer::{Consumers, StartError};
use crate::convert::aws_spans::{SpanStream, StreamOptions};
use crate::signal::Signal;

pub use decode::Format;

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
    /// `auto` (default), `aws_spans` or `cloudwatch_logs`.
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
        match self.format {
            Format::AwsSpans => &[Signal::Traces],
            Format::CloudwatchLogs => &[Signal::Logs],
            Format::Auto => &[Signal::Traces, Signal::Logs],
        }
    }

    fn stream_label(&self) -> String {
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
    fn new(receiver: &str) -> Metrics {
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

/// The `awskinesis` receiver's factory.
pub struct AwsKinesisReceiverFactory;

impl Factory for AwsKinesisReceiverFactory {
    type Config = AwsKinesisReceiverConfig;
    fn type_name(&self) -> &'static str {
        "awskinesis"
    }
    fn validate(&self, config: &AwsKinesisReceiverConfig) -> Result<(), DeError> {
        config.validate()
    }
}

#[async_trait::async_trait]
impl ReceiverFactory for AwsKinesisReceiverFactory {
    fn signals(&self, config: &AwsKinesisReceiverConfig) -> &'static [Signal] {
        config.signals()
    }
    async fn start(
        &self,
        config: &AwsKinesisReceiverConfig,
        ctx: ReceiverContext<'_>,
    ) -> Result<Vec<JoinHandle<()>>, StartError> {
        start(config, ctx.id, ctx.consumers, ctx.cancel).await
    }
}

/// Starts the receiver: one supervisor task that lists shards and runs one
/// task per shard.
async fn start(
    cfg: &AwsKinesisReceiverConfig,
    id: &ComponentId,
    consumers: Consumers,
    cancel: CancellationToken,
) -> Result<Vec<JoinHandle<()>>, StartError> {
    let name = id.to_string();
    if consumers.traces.is_none() && consumers.logs.is_none() {
        return Err(StartError::component(&name, "no pipeline uses it"));
    }
    let stream = match (&cfg.stream_name, &cfg.stream_arn) {
        (Some(n), _) => StreamRef::Name(n.clone()),
        (None, Some(a)) => StreamRef::Arn(a.clone()),
        (None, None) => return Err(StartError::component(&name, "no stream_name or stream_arn")),
    };
    let sdk = crate::aws::sdk_config(&AwsSettings {
        region: cfg.region.clone(),
        role_arn: cfg.role_arn.clone(),
        timeout: cfg.request_timeout,
    })
    .await
    .map_err(|e| StartError::component(&name, e.to_string()))?;
    let (store, leases): (Arc<dyn checkpoint::Checkpoints>, _) = match cfg.checkpoint.store {
        StoreKind::File => (
            Arc::new(
                checkpoint::FileStore::open(&cfg.checkpoint.directory, &cfg.stream_label())
                    .await
                    .map_err(|e| StartError::component(&name, e.to_string()))?,
            ),
            None,
        ),
        StoreKind::Dynamodb => {
            let mut b = aws_sdk_dynamodb::config::Builder::from(&sdk);
            if let Some(e) = cfg.checkpoint.endpoint.as_ref().or(cfg.endpoint.as_ref()) {
                b = b.endpoint_url(e.clone());
            }
            let table = cfg
                .checkpoint
                .table
                .clone()
                .unwrap_or_else(|| format!("spanwire-{}", cfg.stream_label()));
            let initial = match cfg.start_position {
                StartPosition::TrimHorizon => "TRIM_HORIZON",
                StartPosition::Latest => "LATEST",
                StartPosition::AtTimestamp => "AT_TIMESTAMP",
            };
            let store = Arc::new(lease::LeaseStore::new(
                aws_sdk_dynamodb::Client::from_conf(b.build()),
                table,
                owner_id(),
                cfg.lease.failover_time,
                initial,
            ));
            if cfg.checkpoint.create_table {
                store
                    .ensure_table()
                    .await
                    .map_err(|e| StartError::component(&name, e.to_string()))?;
            }
            (
                store.clone() as Arc<dyn checkpoint::Checkpoints>,
                Some(store),
            )
        }
    };
    let mut b = aws_sdk_kinesis::config::Builder::from(&sdk);
    if let Some(e) = &cfg.endpoint {
        b = b.endpoint_url(e.clone());
    }
    let client = aws_sdk_kinesis::Client::from_conf(b.build());
    let shared = Arc::new(Shared {
        spans: Mutex::new(SpanStream::new(StreamOptions {
            in_progress_timeout_ms: cfg.in_progress_timeout.as_millis() as u64,
            drop_loop_marked: cfg.drop_spanwire_exported,
            ..StreamOptions::default()
        })),
        cfg: cfg.clone(),
        metrics: Metrics::new(&name),
        name,
        stream,
        client,
        store,
        leases,
        consumers,
        epoch: Instant::now(),
        relist: tokio::sync::Notify::new(),
    });
    tracing::info!(receiver = %shared.name, stream = %cfg.stream_label(), "kinesis receiver starting");
    let mut tasks = vec![tokio::spawn(supervise(shared.clone(), cancel.clone()))];
    tasks.push(tokio::spawn(shard::expire_in_progress(shared, cancel)));
    Ok(tasks)
}

/// This instance's lease owner id: host, process and a random part.
fn owner_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "spanwire".to_string());
    let r: u32 = rand::random();
    format!("{host}-{}-{r:08x}", std::process::id())
}

/// A running shard reader.
struct Running {
    handle: JoinHandle<shard::Exit>,
    cancel: CancellationToken,
}

/// Lists shards and keeps one reader per shard that is readable (and, with
/// leases, held by this instance).
async fn supervise(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut running: std::collections::HashMap<String, Running> = std::collections::HashMap::new();
    let mut backoff = Duration::from_millis(500);
    let mut shards: Vec<shard::ShardInfo> = Vec::new();
    let mut listed_at: Option<Instant> = None;
    let cycle = match &shared.leases {
        Some(_) => shared.cfg.lease.renew_interval,
        None => shared.cfg.shard_discovery_interval,
    };
    loop {
        running.retain(|_, r| !r.handle.is_finished());
        let due = listed_at.is_none_or(|t| t.elapsed() >= shared.cfg.shard_discovery_interval);
        let step: Result<(), String> = async {
            if due || shards.is_empty() {
                shards = shard::list_shards(&shared).await?;
                listed_at = Some(Instant::now());
            }
            let held = match &shared.leases {
                Some(l) => {
                    let with_parents: Vec<(String, Vec<String>)> =
                        shards.iter().map(|s| (s.id.clone(), s.parents.clone())).collect();
                    l.add_shards(&with_parents).await.map_err(|e| e.to_string())?;
                    let c = l.cycle().await.map_err(|e| e.to_string())?;
                    shared.metrics.leases_held.set((c.ready.len() + c.hand_off.len()) as f64);
                    // Hand over what another instance asked for: stop the
                    // reader (it checkpoints what it delivered), then pass on.
                    for id in &c.hand_off {
                        match running.get(id) {
                            Some(r) if !r.handle.is_finished() => r.cancel.cancel(),
                            _ => {
                                running.remove(id);
                                l.hand_off(id).await.map_err(|e| e.to_string())?;
                            }
                        }
                    }
                    Some(c.ready)
                }
                None => None,
            };
            let ready = shard::readable(&shared, &shards).await.map_err(|e| e.to_string())?;
            // Stop readers of shards this instance no longer holds.
            if let Some(held) = &held {
                for (id, r) in &running {
                    if !held.contains(id) {
                        tracing::info!(receiver = %shared.name, shard = %id, "lease lost; stopping the reader");
                        r.cancel.cancel();
                    }
                }
            }
            for id in ready {
                if running.contains_key(&id) || held.as_ref().is_some_and(|h| !h.contains(&id)) {
                    continue;
                }
                tracing::info!(receiver = %shared.name, shard = %id, "reading shard");
                let token = cancel.child_token();
                let h = tokio::spawn(shard::run(shared.clone(), id.clone(), token.clone()));
                running.insert(id, Running { handle: h, cancel: token });
            }
            Ok(())
        }
        .await;
        let wait = match step {
            Ok(()) => {
                backoff = Duration::from_millis(500);
                cycle
            }
            Err(e) => {
                tracing::error!(receiver = %shared.name, error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "cannot list shards or update leases");
                backoff = (backoff * 2).min(Duration::from_secs(30));
                backoff.min(cycle)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.relist.notified() => { listed_at = None; }
            _ = cancel.cancelled() => break,
        }
    }
    for (_, r) in running {
        let _ = r.handle.await;
    }
    if let Some(l) = &shared.leases {
        l.release_all().await;
    }
}
