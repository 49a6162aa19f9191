//! Exporter `awskinesis`: traces, logs and metrics to a Kinesis Data
//! Stream as OTLP, with the Collector's keys (`aws.stream_name`,
//! `aws.region`, `aws.kinesis_endpoint`, `aws.role`, `encoding.name`,
//! `encoding.compression`), partitioned by agent session, trace id or an
//! attribute, and KPL-aggregated per shard ([`crate::convert::kinesis`]).
//!
//! Each batch becomes records once; its `progress` keeps the records not
//! yet accepted, so a `PutRecords` partial failure re-sends only the
//! records that failed, and the loss count at give-up is exact. Calls are
//! held to each shard's write limits (1 MiB/s and 1,000 records/s) by a
//! per-shard budget; shards come from `ListShards` (refreshed every
//! `shard_refresh_interval` and after a failed call), so the budget and
//! the aggregation know which shard each partition key hashes to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::stream::{self, StreamExt};
use metrics::Counter;
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::aws::AwsSettings;
use crate::component::{
    BuiltExporter, Export, ExportError, ExportOk, ExporterContext, ExporterFactory, Factory,
};
use crate::consumer::StartError;
use crate::convert::kinesis::{self, Encoding, PartitionKey, Record, SessionLinks, ShardMap};
use crate::convert::otlp_proto;
use crate::settings::de::DeError;
use crate::settings::types::{duration, QueueConfig, RetryConfig};
use crate::signal::{EncodedBatch, Metadata, Payload, Signal, Telemetry};

/// `aws:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// The stream.
    pub stream_name: String,
    /// Endpoint URL override (VPC endpoint, local test server).
    #[serde(default)]
    pub kinesis_endpoint: Option<String>,
    /// AWS region; default from AWS_REGION, the profile or IMDS.
    #[serde(default)]
    pub region: Option<String>,
    /// A role to assume.
    #[serde(default)]
    pub role: Option<String>,
}

/// `encoding.name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EncodingName {
    /// OTLP protobuf export requests.
    #[default]
    OtlpProto,
    /// OTLP/JSON export requests.
    OtlpJson,
}

/// `encoding.compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RecordCompression {
    /// As encoded.
    #[default]
    None,
    /// Each user record gzipped.
    Gzip,
}

/// `encoding:`.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EncodingConfig {
    /// `otlp_proto` (default) or `otlp_json`.
    #[serde(default)]
    pub name: EncodingName,
    /// `none` (default) or `gzip`.
    #[serde(default)]
    pub compression: RecordCompression,
}

fn d_partition() -> String {
    "session".into()
}
fn d_session_keys() -> Vec<String> {
    vec!["session.id".into(), "gen_ai.conversation.id".into()]
}
fn d_timeout() -> Duration {
    Duration::from_secs(20)
}
fn d_refresh() -> Duration {
    Duration::from_secs(60)
}
fn d_record() -> usize {
    kinesis::MAX_RECORD_BYTES
}
fn d_per_call() -> usize {
    kinesis::MAX_RECORDS_PER_CALL
}
fn d_concurrency() -> usize {
    4
}
fn d_shard_bytes() -> usize {
    1024 * 1024
}
fn d_shard_records() -> usize {
    1000
}
fn yes() -> bool {
    true
}

/// `exporters.awskinesis`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsKinesisExporterConfig {
    /// Stream, region, endpoint, role.
    pub aws: AwsConfig,
    /// Record encoding.
    #[serde(default)]
    pub encoding: EncodingConfig,
    /// `session` (default), `trace_id` or `attribute:<key>`.
    #[serde(default = "d_partition")]
    pub partition_key: String,
    /// Attributes naming a session (span first, then resource), in order.
    #[serde(default = "d_session_keys")]
    pub session_keys: Vec<String>,
    /// Pack user records of one shard into KPL aggregated records.
    #[serde(default = "yes")]
    pub aggregation: bool,
    /// Largest record, data and partition key, in bytes (at most 1 MiB).
    #[serde(default = "d_record")]
    pub max_record_size: usize,
    /// Records per `PutRecords` call (at most 500).
    #[serde(default = "d_per_call")]
    pub max_records_per_batch: usize,
    /// `PutRecords` calls in flight for one batch.
    #[serde(default = "d_concurrency")]
    pub max_concurrent_requests: usize,
    /// A shard's write budget, bytes per second.
    #[serde(default = "d_shard_bytes")]
    pub shard_bytes_per_second: usize,
    /// A shard's write budget, records per second.
    #[serde(default = "d_shard_records")]
    pub shard_records_per_second: usize,
    /// How often the shard map is listed again.
    #[serde(default = "d_refresh", with = "duration")]
    pub shard_refresh_interval: Duration,
    /// Deadline of one API call.
    #[serde(default = "d_timeout", with = "duration")]
    pub timeout: Duration,
    /// Retries.
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    /// The sending queue.
    #[serde(default)]
    pub sending_queue: QueueConfig,
}

impl AwsKinesisExporterConfig {
    /// The partition key setting, parsed.
    pub fn partition(&self) -> Result<PartitionKey, String> {
        match self.partition_key.as_str() {
            "session" => Ok(PartitionKey::Session(self.session_keys.clone())),
            "trace_id" => Ok(PartitionKey::TraceId),
            other => match other.strip_prefix("attribute:") {
                Some(k) if !k.is_empty() => Ok(PartitionKey::Attribute(k.to_string())),
                _ => Err(format!(
                    "partition_key `{other}`: use session, trace_id or attribute:<key>"
                )),
            },
        }
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        if self.aws.stream_name.is_empty() {
            return Err(DeError::custom("aws.stream_name is empty"));
        }
        crate::aws::check_settings(
            self.aws.kinesis_endpoint.as_deref(),
            self.aws.role.as_deref(),
            self.timeout,
            self.max_concurrent_requests,
        )
        .map_err(|e| {
            DeError::custom(
                e.replace("role_arn", "aws.role")
                    .replace("endpoint `", "aws.kinesis_endpoint `"),
            )
        })?;
        self.partition().map_err(DeError::custom)?;
        if !(1024..=kinesis::MAX_RECORD_BYTES).contains(&self.max_record_size) {
            return Err(DeError::custom(
                "max_record_size must be between 1024 and 1048576",
            ));
        }
        if !(1..=kinesis::MAX_RECORDS_PER_CALL).contains(&self.max_records_per_batch) {
            return Err(DeError::custom(
                "max_records_per_batch must be between 1 and 500",
            ));
        }
        if self.shard_bytes_per_second == 0 || self.shard_records_per_second == 0 {
            return Err(DeError::custom(
                "shard_bytes_per_second and shard_records_per_second must be more than 0",
            ));
        }
        self.sending_queue.validate().map_err(DeError::custom)?;
        Ok(())
    }
}

/// The `awskinesis` exporter's factory.
pub struct AwsKinesisExporterFactory;

impl Factory for AwsKinesisExporterFactory {
    type Config = AwsKinesisExporterConfig;
    fn type_name(&self) -> &'static str {
        "awskinesis"
    }
    fn validate(&self, config: &AwsKinesisExporterConfig) -> Result<(), DeError> {
        config.validate()
    }
}

impl ExporterFactory for AwsKinesisExporterFactory {
    fn signals(&self, _config: &AwsKinesisExporterConfig) -> &'static [Signal] {
        &Signal::ALL
    }
    fn build(
        &self,
        config: &AwsKinesisExporterConfig,
        ctx: ExporterContext<'_>,
    ) -> Result<BuiltExporter, StartError> {
        let name = ctx.name();
        let partition = config
            .partition()
            .map_err(|e| StartError::component(&name, e))?;
        Ok(BuiltExporter::new(
            AwsKinesisExporter {
                settings: AwsSettings {
                    region: config.aws.region.clone(),
                    role_arn: config.aws.role.clone(),
                    timeout: config.timeout,
                },
                endpoint: config.aws.kinesis_endpoint.clone(),
                stream: config.aws.stream_name.clone(),
                client: OnceCell::new(),
                partition,
                encoding: match config.encoding.name {
                    EncodingName::OtlpProto => Encoding::OtlpProto,
                    EncodingName::OtlpJson => Encoding::OtlpJson,
                },
                gzip: config.encoding.compression == RecordCompression::Gzip,
                aggregation: config.aggregation,
                max_record: config.max_record_size,
                per_call: config.max_records_per_batch,
                concurrency: config.max_concurrent_requests,
                refresh: config.shard_refresh_interval,
                links: Mutex::new(SessionLinks::new(100_000)),
                shards: Mutex::new(Shards::default()),
                budget: Mutex::new(HashMap::new()),
                rates: (
                    config.shard_bytes_per_second as f64,
                    config.shard_records_per_second as f64,
                ),
                counters: Counters::new(&name),
                name,
            },
            config.sending_queue.clone(),
            config.retry_on_failure.clone(),
        ))
    }
}

struct Counters {
    records: Counter,
    user_records: Counter,
    bytes: Counter,
    retried_throttled: Counter,
    retried_internal: Counter,
    retried_call: Counter,
    dropped_too_large: Counter,
    dropped_rejected: Counter,
    budget_waits: Counter,
}

impl Counters {
    fn new(name: &str) -> Counters {
        let c = |metric, reason| crate::telemetry::exporter_counter(metric, name, reason);
        Counters {
            records: c("spanwire_kinesis_records_put_total", ""),
            user_records: c("spanwire_kinesis_user_records_put_total", ""),
            bytes: c("spanwire_kinesis_bytes_put_total", ""),
            retried_throttled: c("spanwire_kinesis_records_retried_total", "throttled"),
            retried_internal: c("spanwire_kinesis_records_retried_total", "internal_failure"),
            retried_call: c("spanwire_kinesis_records_retried_total", "call_failed"),
            dropped_too_large: c("spanwire_kinesis_items_dropped_total", "too_large"),
            dropped_rejected: c("spanwire_kinesis_items_dropped_total", "rejected"),
            budget_waits: c("spanwire_kinesis_shard_budget_waits_total", ""),
        }
    }
}

/// The shard map and when it was listed.
#[derive(Default)]
struct Shards {
    map: Option<Arc<ShardMap>>,
    listed: Option<Instant>,
    /// Set after a failed call: list again before the next attempt.
    stale: bool,
}

/// A shard's write allowance: bytes and records, refilled at the shard's
/// rates, at most one second's worth banked.
struct Allowance {
    bytes: f64,
    records: f64,
    at: Instant,
}

/// The running exporter.
pub struct AwsKinesisExporter {
    name: String,
    settings: AwsSettings,
    endpoint: Option<String>,
    stream: String,
    client: OnceCell<aws_sdk_kinesis::Client>,
    partition: PartitionKey,
    encoding: Encoding,
    gzip: bool,
    aggregation: bool,
    max_record: usize,
    per_call: usize,
    concurrency: usize,
    refresh: Duration,
    links: Mutex<SessionLinks>,
    shards: Mutex<Shards>,
    budget: Mutex<HashMap<String, Allowance>>,
    /// (bytes, records) per second per shard.
    rates: (f64, f64),
    counters: Counters,
}

/// Records of one batch not yet accepted.
#[derive(Default)]
pub struct Pending {
    records: Option<Vec<Record>>,
    /// Items dropped for good so far.
    dropped: usize,
}

/// What one `PutRecords` call came to.
enum CallResult {
    /// Accepted but these (throttled, internal failure).
    Done {
        throttled: Vec<Record>,
        failed: Vec<Record>,
        message: Option<String>,
    },
    /// Nothing accepted; worth retrying.
    Retry {
        records: Vec<Record>,
        reason: String,
        throttled: bool,
    },
    /// Refused as invalid: dropped.
    Invalid {
        records: Vec<Record>,
        reason: String,
    },
}

impl AwsKinesisExporter {
    async fn client(&self) -> Result<aws_sdk_kinesis::Client, ExportError> {
        self.client
            .get_or_try_init(|| async {
                let sdk = crate::aws::sdk_config(&self.settings).await.map_err(|e| {
                    ExportError::Retryable {
                        reason: e.to_string(),
                        retry_after: None,
                    }
                })?;
                let mut b = aws_sdk_kinesis::config::Builder::from(&sdk);
                if let Some(e) = &self.endpoint {
                    b = b.endpoint_url(e.clone());
                }
                Ok(aws_sdk_kinesis::Client::from_conf(b.build()))
            })
            .await
            .cloned()
    }

    /// The shard map, listed again when old or after a failure. A stream
    /// that cannot be listed (no `kinesis:ListShards`) is written without
    /// one: aggregation by key, no per-shard budget.
    async fn shard_map(&self, client: &aws_sdk_kinesis::Client) -> Option<Arc<ShardMap>> {
        let (current, due) = match self.shards.lock() {
            Ok(s) => (
                s.map.clone(),
                s.stale || s.listed.is_none_or(|t| t.elapsed() >= self.refresh),
            ),
            Err(_) => (None, true),
        };
        if !due {
            return current;
        }
        let listed = list_shards(client, &self.stream).await;
        let map = match listed {
            Ok(m) => Some(Arc::new(m)),
            Err(e) => {
                tracing::warn!(exporter = %self.name, stream = %self.stream, error = %e,
                    "cannot list the stream's shards; records are aggregated by partition key and not held to shard limits");
                current
            }
        };
        if let Ok(mut s) = self.shards.lock() {
            s.map = map.clone();
            s.listed = Some(Instant::now());
            s.stale = false;
        }
        map
    }

    /// Builds a batch's records. An encoded traces batch is split as it
    /// is (OTLP protobuf out); other encoded batches are decoded first.
    fn records(
        &self,
        data: &Payload,
        map: Option<&ShardMap>,
        pending: &mut Pending,
    ) -> Result<Vec<Record>, ExportError> {
        let fallback = format!("{:032x}", rand::random::<u128>());
        let mut links = match self.links.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        let (users, too_large) = match data {
            Payload::Encoded(e)
                if e.signal == Signal::Traces && self.encoding == Encoding::OtlpProto =>
            {
                let parts =
                    kinesis::partition_encoded(&e.bytes, &self.partition, &mut links, &fallback);
                drop(links);
                kinesis::user_records_encoded(parts, self.gzip, self.max_record)
            }
            _ => {
                let decoded;
                let structs = match data {
                    Payload::Structs(d) => &**d,
                    Payload::Encoded(e) => {
                        decoded =
                            otlp_proto::decode_request(e.signal, &e.bytes).map_err(|err| {
                                ExportError::Permanent(format!(
                                    "an encoded batch does not decode: {err}"
                                ))
                            })?;
                        &decoded
                    }
                };
                let parts = kinesis::partition(structs, &self.partition, &mut links, &fallback);
                drop(links);
                kinesis::user_records(parts, self.encoding, self.gzip, self.max_record)
            }
        };
        if too_large > 0 {
            self.counters.dropped_too_large.increment(too_large as u64);
            pending.dropped += too_large;
            tracing::error!(exporter = %self.name, items = too_large, max = self.max_record,
                "an item alone is larger than a Kinesis record; dropped");
        }
        Ok(kinesis::aggregate(
            users,
            map,
            self.aggregation,
            self.max_record,
        ))
    }

    /// Waits until the shards of `call` have the budget for it, then takes it.
    async fn take_budget(&self, map: Option<&ShardMap>, call: &[Record]) {
        let Some(map) = map else { return };
        let mut need: HashMap<&str, (f64, f64)> = HashMap::new();
        for r in call {
            if let Some(s) = r.shard.and_then(|i| map.shards.get(i)) {
                let e = need.entry(s.2.as_str()).or_default();
                e.0 += r.size() as f64;
                e.1 += 1.0;
            }
        }
        let (byte_rate, record_rate) = self.rates;
        loop {
            let wait = {
                let Ok(mut b) = self.budget.lock() else {
                    return;
                };
                let now = Instant::now();
                let mut wait = 0f64;
                for (shard, (bytes, records)) in &need {
                    let a = b.entry((*shard).to_string()).or_insert(Allowance {
                        bytes: byte_rate,
                        records: record_rate,
                        at: now,
                    });
                    let dt = now.duration_since(a.at).as_secs_f64();
                    a.bytes = (a.bytes + dt * byte_rate).min(byte_rate);
                    a.records = (a.records + dt * record_rate).min(record_rate);
                    a.at = now;
                    // A call larger than a second's budget waits for a full bucket.
                    let want_b = bytes.min(byte_rate);
                    let want_r = records.min(record_rate);
                    wait = wait
                        .max((want_b - a.bytes) / byte_rate)
                        .max((want_r - a.records) / record_rate);
                }
                if wait <= 0.0 {
                    for (shard, (bytes, records)) in &need {
                        if let Some(a) = b.get_mut(*shard) {
                            a.bytes -= bytes;
                            a.records -= records;
                        }
                    }
                    return;
                }
                wait
            };
            self.counters.budget_waits.increment(1);
            tokio::time::sleep(Duration::from_secs_f64(wait.min(2.0))).await;
        }
    }

    async fn put(
        &self,
        client: &aws_sdk_kinesis::Client,
        map: Option<&ShardMap>,
        records: Vec<Record>,
    ) -> CallResult {
        use aws_sdk_kinesis::primitives::Blob;
        use aws_sdk_kinesis::types::PutRecordsRequestEntry;
        self.take_budget(map, &records).await;
        let mut entries = Vec::with_capacity(records.len());
        for r in &records {
            match PutRecordsRequestEntry::builder()
                .data(Blob::new(r.data.clone()))
                .partition_key(r.partition_key.clone())
                .build()
            {
                Ok(e) => entries.push(e),
                Err(e) => {
                    return CallResult::Invalid {
                        records,
                        reason: e.to_string(),
                    }
                }
            }
        }
        let result = client
            .put_records()
            .stream_name(&self.stream)
            .set_records(Some(entries))
            .send()
            .await;
        match result {
            Ok(out) => {
                let mut throttled = Vec::new();
                let mut failed = Vec::new();
                let mut message = None;
                let results = out.records();
                for (i, r) in records.into_iter().enumerate() {
                    let Some(res) = results.get(i) else {
                        // An answer shorter than the call: not known to be accepted.
                        failed.push(r);
                        continue;
                    };
                    let Some(code) = res.error_code() else {
                        self.counters.records.increment(1);
                        self.counters.user_records.increment(r.user_records as u64);
                        self.counters.bytes.increment(r.data.len() as u64);
                        continue;
                    };
                    if message.is_none() {
                        message = Some(format!("{code}: {}", res.error_message().unwrap_or("")));
                    }
                    if code.contains("ProvisionedThroughputExceeded") {
                        throttled.push(r);
                    } else {
                        failed.push(r);
                    }
                }
                CallResult::Done {
                    throttled,
                    failed,
                    message,
                }
            }
            Err(e) => classify(e, records),
        }
    }
}

async fn list_shards(client: &aws_sdk_kinesis::Client, stream: &str) -> Result<ShardMap, String> {
    let mut ranges = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = client.list_shards();
        req = match &token {
            Some(t) => req.next_token(t),
            None => req.stream_name(stream),
        };
        let out = req.send().await.map_err(|e| error_text(&e))?;
        for s in out.shards() {
            let open = s
                .sequence_number_range()
                .is_none_or(|r| r.ending_sequence_number().is_none());
            if let (true, Some(h)) = (open, s.hash_key_range()) {
                ranges.push((
                    h.starting_hash_key().to_string(),
                    h.ending_hash_key().to_string(),
                    s.shard_id().to_string(),
                ));
            }
        }
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    ShardMap::new(ranges)
}

fn error_text<E: std::error::Error + 'static>(e: &E) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn classify(
    e: aws_sdk_kinesis::error::SdkError<
        aws_sdk_kinesis::operation::put_records::PutRecordsError,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
    records: Vec<Record>,
) -> CallResult {
    use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
    let reason = error_text(&e);
    if let SdkError::ServiceError(se) = &e {
        let err = se.err();
        let code = err.code().unwrap_or("");
        let status = se.raw().status().as_u16();
        if err.is_provisioned_throughput_exceeded_exception()
            || err.is_kms_throttling_exception()
            || code.contains("Throttl")
            || code.contains("LimitExceeded")
            || status == 429
        {
            return CallResult::Retry {
                records,
                reason,
                throttled: true,
            };
        }
        if err.is_invalid_argument_exception() || code.contains("Validation") || status == 413 {
            return CallResult::Invalid { records, reason };
        }
    }
    // Credentials, a missing stream, 5xx, transport: the records are fine;
    // retried within retry_on_failure.
    CallResult::Retry {
        records,
        reason,
        throttled: false,
    }
}

#[async_trait]
impl Export for AwsKinesisExporter {
    type Progress = Pending;

    async fn export(
        &self,
        data: &Arc<Telemetry>,
        _metadata: &Metadata,
        progress: &mut Pending,
    ) -> Result<ExportOk, ExportError> {
        self.deliver(&Payload::Structs(data.clone()), progress)
            .await
    }

    fn takes_encoded(&self) -> bool {
        true
    }

    async fn export_encoded(
        &self,
        data: &EncodedBatch,
        _metadata: &Metadata,
        progress: &mut Pending,
    ) -> Result<ExportOk, ExportError> {
        self.deliver(&Payload::Encoded(data.clone()), progress)
            .await
    }

    fn pending(&self, _data: &Telemetry, progress: &Pending) -> Option<usize> {
        progress.pending()
    }

    fn pending_encoded(&self, _data: &EncodedBatch, progress: &Pending) -> Option<usize> {
        progress.pending()
    }
}

impl Pending {
    fn pending(&self) -> Option<usize> {
        self.records
            .as_ref()
            .map(|r| r.iter().map(|r| r.items).sum())
    }
}

impl AwsKinesisExporter {
    /// Sends what of `data` `progress` has not seen accepted.
    async fn deliver(
        &self,
        data: &Payload,
        progress: &mut Pending,
    ) -> Result<ExportOk, ExportError> {
        let client = self.client().await?;
        let map = self.shard_map(&client).await;
        let records = match progress.records.take() {
            Some(r) => r,
            None => self.records(data, map.as_deref(), progress)?,
        };
        // Shards may have changed since the records were made (a reshard):
        // place them on the current map for the budget.
        let records: Vec<Record> = records
            .into_iter()
            .map(|mut r| {
                r.shard = map.as_deref().and_then(|m| m.shard_of(&r.partition_key));
                r
            })
            .collect();
        let total = records.len();
        let calls = kinesis::calls(records, self.per_call);
        let results: Vec<CallResult> = stream::iter(calls)
            .map(|call| {
                let (client, map) = (&client, map.as_deref());
                async move { self.put(client, map, call).await }
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut again = Vec::new();
        let mut notes = Vec::new();
        let mut any_throttled = false;
        let mut rejected_items = 0u64;
        for r in results {
            match r {
                CallResult::Done {
                    throttled,
                    failed,
                    message,
                } => {
                    if !throttled.is_empty() || !failed.is_empty() {
                        self.counters
                            .retried_throttled
                            .increment(throttled.len() as u64);
                        self.counters
                            .retried_internal
                            .increment(failed.len() as u64);
                        any_throttled |= !throttled.is_empty();
                        notes.push(format!(
                            "{} throttled, {} failed ({})",
                            throttled.len(),
                            failed.len(),
                            message.unwrap_or_default()
                        ));
                        again.extend(throttled);
                        again.extend(failed);
                    }
                }
                CallResult::Retry {
                    records,
                    reason,
                    throttled,
                } => {
                    if throttled {
                        any_throttled = true;
                        self.counters
                            .retried_throttled
                            .increment(records.len() as u64);
                    } else {
                        self.counters.retried_call.increment(records.len() as u64);
                    }
                    notes.push(format!(
                        "a call of {} records failed: {reason}",
                        records.len()
                    ));
                    again.extend(records);
                }
                CallResult::Invalid { records, reason } => {
                    let items: usize = records.iter().map(|r| r.items).sum();
                    rejected_items += items as u64;
                    progress.dropped += items;
                    self.counters.dropped_rejected.increment(items as u64);
                    tracing::error!(exporter = %self.name, records = records.len(), items, %reason,
                        "Kinesis refused records as invalid; dropped");
                }
            }
        }
        if again.is_empty() {
            return Ok(ExportOk {
                rejected: rejected_items,
                message: String::new(),
            });
        }
        if let Ok(mut s) = self.shards.lock() {
            s.stale = !any_throttled;
        }
        let n = again.len();
        progress.records = Some(again);
        Err(ExportError::Retryable {
            reason: format!("{n} of {total} records not accepted: {}", notes.join("; ")),
            retry_after: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{de::from_node, yaml::parse};

    fn cfg(text: &str) -> Result<AwsKinesisExporterConfig, DeError> {
        let (n, _) = parse("t", text, &|_| None).unwrap();
        from_node::<AwsKinesisExporterConfig>(&n).and_then(|c| c.validate().map(|_| c))
    }

    #[test]
    fn the_collectors_keys_read_and_bad_values_are_named() {
        let c = cfg(
            "aws: {stream_name: s, region: eu-west-1, role: 'arn:aws:iam::1:role/r'}\n\
             encoding: {name: otlp_json, compression: gzip}\npartition_key: 'attribute:tenant'",
        )
        .unwrap();
        assert_eq!(
            c.partition().unwrap(),
            PartitionKey::Attribute("tenant".into())
        );
        assert_eq!(c.encoding.compression, RecordCompression::Gzip);
        assert_eq!(
            cfg("aws: {stream_name: s}").unwrap().partition().unwrap(),
            PartitionKey::Session(vec!["session.id".into(), "gen_ai.conversation.id".into()])
        );
        for (text, want) in [
            (
                "aws: {stream_name: s}\npartition_key: span",
                "partition_key `span`",
            ),
            (
                "aws: {stream_name: s}\nmax_record_size: 2000000",
                "max_record_size",
            ),
            (
                "aws: {stream_name: s}\nmax_records_per_batch: 501",
                "max_records_per_batch",
            ),
            ("aws: {stream_name: s, role: r}", "aws.role `r`"),
            (
                "aws: {stream_name: s, kinesis_endpoint: localhost}",
                "aws.kinesis_endpoint",
            ),
            ("aws: {stream_name: s}\nencoding: {name: avro}", "avro"),
            ("aws: {}", "stream_name"),
        ] {
            let e = cfg(text)
                .err()
                .unwrap_or_else(|| panic!("{text} was accepted"));
            assert!(e.to_string().contains(want), "{text}: {e}");
        }
    }
}
