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
mod config;
pub mod decode;
pub mod lease;
mod shard;
mod shared;

pub use config::{
    AwsKinesisReceiverConfig, CheckpointConfig, LeaseConfig, StartPosition, StoreKind,
};
use shared::{Metrics, Shared, StreamRef};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::aws::AwsSettings;
use crate::component::{ComponentId, Factory, ReceiverContext, ReceiverFactory};
use crate::consumer::{Consumers, StartError};
use crate::convert::aws_spans::{SpanStream, StreamOptions};
use crate::settings::de::DeError;
use crate::signal::Signal;

pub use decode::Format;

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
