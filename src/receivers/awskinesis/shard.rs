//! Reading one shard: iterators, GetRecords pacing and backoff, sending each
//! batch with an acknowledgement, and moving the checkpoint in order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::checkpoint::{StoreError, SHARD_END};
use super::config::StartPosition;
use super::decode::{self, Decoded};
use super::shared::{Shared, StreamRef};
use crate::aws::error_text;
use crate::consumer::{
    offer_until_taken, Ack, AckOutcome, AckWaiter, Acks, Backoff, BoxConsumer, Offered, Refused,
};
use crate::convert::aws_spans;
use crate::signal::{Signal, Telemetry};

/// A shard as listed.
#[derive(Debug, Clone)]
pub(crate) struct ShardInfo {
    pub id: String,
    pub parents: Vec<String>,
}

/// How a shard task ended.
#[derive(Debug)]
pub(crate) enum Exit {
    /// Read to its end and checkpointed as such.
    Ended,
    /// Stopped at shutdown.
    Stopped,
}

/// Every shard of the stream (ListShards, all pages).
pub(crate) async fn list_shards(shared: &Shared) -> Result<Vec<ShardInfo>, String> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = shared.client.list_shards();
        req = match &token {
            // With a NextToken the stream must not be named again.
            Some(t) => req.next_token(t),
            None => match &shared.stream {
                StreamRef::Name(n) => req.stream_name(n),
                StreamRef::Arn(a) => req.stream_arn(a),
            },
        };
        let resp = req.send().await.map_err(|e| error_text(&e))?;
        for s in resp.shards() {
            let mut parents = Vec::new();
            if let Some(p) = s.parent_shard_id() {
                parents.push(p.to_string());
            }
            if let Some(p) = s.adjacent_parent_shard_id() {
                parents.push(p.to_string());
            }
            out.push(ShardInfo {
                id: s.shard_id().to_string(),
                parents,
            });
        }
        match resp.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(out)
}

/// Shards to read now: not finished, and whose listed parents are finished
/// (a parent no longer listed has aged out of the stream).
pub(crate) async fn readable(
    shared: &Shared,
    shards: &[ShardInfo],
) -> Result<Vec<String>, StoreError> {
    let listed: std::collections::HashSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    let mut out = Vec::new();
    for s in shards {
        if shared.store.get(&s.id).await?.as_deref() == Some(SHARD_END) {
            continue;
        }
        let mut parents_done = true;
        for p in &s.parents {
            if listed.contains(p.as_str())
                && shared.store.get(p).await?.as_deref() != Some(SHARD_END)
            {
                parents_done = false;
            }
        }
        if parents_done {
            out.push(s.id.clone());
        }
    }
    Ok(out)
}

fn jitter(d: Duration) -> Duration {
    let f: f64 = rand::rng().random_range(0.5..1.5);
    Duration::from_secs_f64(d.as_secs_f64() * f)
}

/// Gets an iterator after `after` (a sequence number), or at the configured
/// start position when there is none.
async fn iterator(
    shared: &Shared,
    shard: &str,
    after: Option<&str>,
) -> Result<Option<String>, String> {
    let mut req = shared.client.get_shard_iterator().shard_id(shard);
    req = match &shared.stream {
        StreamRef::Name(n) => req.stream_name(n),
        StreamRef::Arn(a) => req.stream_arn(a),
    };
    req = match after {
        Some(seq) => req
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .starting_sequence_number(seq),
        None => match shared.cfg.start_position {
            StartPosition::TrimHorizon => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
            StartPosition::Latest => req.shard_iterator_type(ShardIteratorType::Latest),
            StartPosition::AtTimestamp => {
                let t = shared
                    .cfg
                    .start_timestamp
                    .as_deref()
                    .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                    .unwrap_or(UNIX_EPOCH);
                req.shard_iterator_type(ShardIteratorType::AtTimestamp)
                    .timestamp(DateTime::from(t))
            }
        },
    };
    let resp = req.send().await.map_err(|e| error_text(&e))?;
    Ok(resp.shard_iterator().map(String::from))
}

/// Self-metrics of one shard.
struct ShardMetrics {
    records: metrics::Counter,
    bytes: metrics::Counter,
    spans: metrics::Counter,
    checkpoints: metrics::Counter,
    lag: metrics::Gauge,
}

impl ShardMetrics {
    fn new(receiver: &str, shard: &str) -> ShardMetrics {
        let l = [
            ("receiver", receiver.to_string()),
            ("shard", shard.to_string()),
        ];
        ShardMetrics {
            records: metrics::counter!("spanwire_kinesis_records_total", &l),
            bytes: metrics::counter!("spanwire_kinesis_bytes_total", &l),
            spans: metrics::counter!("spanwire_kinesis_spans_total", &l),
            checkpoints: metrics::counter!("spanwire_kinesis_checkpoints_total", &l),
            lag: metrics::gauge!("spanwire_kinesis_millis_behind_latest", &l),
        }
    }
}

/// A batch sent and not yet checkpointed.
struct InFlight {
    /// Last sequence number of the batch.
    sequence: String,
    state: Settle,
}

enum Settle {
    /// Nothing was sent (control messages, bad records, held spans).
    Nothing,
    Waiting(AckWaiter),
    Done(AckOutcome),
}

impl Settle {
    fn poll(&mut self) -> Option<AckOutcome> {
        match self {
            Settle::Nothing => Some(AckOutcome::Delivered),
            Settle::Done(o) => Some(*o),
            Settle::Waiting(w) => {
                let o = w.try_outcome()?;
                *self = Settle::Done(o);
                Some(o)
            }
        }
    }

    async fn wait(&mut self) -> AckOutcome {
        match std::mem::replace(self, Settle::Nothing) {
            Settle::Waiting(w) => {
                let o = w.wait().await;
                *self = Settle::Done(o);
                o
            }
            Settle::Done(o) => {
                *self = Settle::Done(o);
                o
            }
            Settle::Nothing => AckOutcome::Delivered,
        }
    }
}

struct Reader {
    shared: Arc<Shared>,
    shard: String,
    cancel: CancellationToken,
    in_flight: VecDeque<InFlight>,
    /// The checkpoint as stored.
    checkpointed: Option<String>,
    metrics: ShardMetrics,
}

impl Reader {
    /// Moves the checkpoint past every leading batch that is settled;
    /// with `wait`, waits for the first one.
    async fn settle(&mut self, wait: bool) -> Result<(), StoreError> {
        let mut newest: Option<String> = None;
        let mut first = wait;
        while let Some(front) = self.in_flight.front_mut() {
            let outcome = match front.state.poll() {
                Some(o) => o,
                None if first => front.state.wait().await,
                None => break,
            };
            first = false;
            if outcome == AckOutcome::Abandoned {
                // Not delivered: never checkpoint past it; it is read again after restart.
                break;
            }
            if let Some(f) = self.in_flight.pop_front() {
                newest = Some(f.sequence);
            }
        }
        if let Some(seq) = newest {
            self.shared.store.set(&self.shard, &seq).await?;
            self.metrics.checkpoints.increment(1);
            self.checkpointed = Some(seq);
        }
        Ok(())
    }

    /// Hands data to a pipeline, retrying refusals until shutdown.
    async fn send(&self, consumer: &BoxConsumer, data: Telemetry, acks: Acks) {
        let signal = data.signal();
        let n = data.item_count();
        let backoff = Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_secs(2),
            retry_after_cap: Duration::from_secs(1),
        };
        let refused = |_: &Refused| self.shared.metrics.refused.add(signal, n);
        let offer = |d, a| consumer.consume(d, a);
        match offer_until_taken(data, acks, backoff, &self.cancel, offer, refused).await {
            Offered::Taken => self.shared.metrics.accepted.add(signal, n),
            Offered::Stopped(r) => {
                tracing::warn!(receiver = %self.shared.name, shard = %self.shard, items = n,
                    "pipeline refused data at shutdown; it will be read again after restart");
                r.acks.mark(AckOutcome::Abandoned);
            }
            Offered::Failed(reason) => {
                tracing::error!(receiver = %self.shared.name, shard = %self.shard, items = n, %reason,
                    "pipeline failed data from the stream");
            }
        }
    }

    /// Sends what a batch gave; returns its waiter (`None` if nothing was sent).
    async fn dispatch(&self, decoded: Decoded) -> Option<AckWaiter> {
        let mut spans = decoded.spans;
        let logs = decoded.logs;
        let otlp = decoded.otlp.filter(|t| t.item_count() > 0);
        if spans.is_empty() && logs.is_empty() && otlp.is_none() {
            return None;
        }
        let (ack, waiter) = Ack::new();
        let acks = Acks::one(ack);
        if let Some(data) = otlp {
            let signal = data.signal();
            match self.shared.consumers.get(signal) {
                Some(c) => self.send(c, data, acks.clone()).await,
                None => tracing::warn!(receiver = %self.shared.name, %signal,
                    "data read but no pipeline of its signal uses this receiver; dropped"),
            }
        }
        if !spans.is_empty() {
            match &self.shared.consumers.traces {
                Some(c) => {
                    let data = Telemetry::Traces(aws_spans::group(std::mem::take(&mut spans)));
                    self.send(c, data, acks.clone()).await;
                }
                None => tracing::warn!(receiver = %self.shared.name, spans = spans.len(),
                    "spans read but no traces pipeline uses this receiver; dropped"),
            }
        }
        if !logs.is_empty() {
            match &self.shared.consumers.logs {
                Some(c) => self.send(c, Telemetry::Logs(logs), acks.clone()).await,
                None => tracing::warn!(receiver = %self.shared.name,
                    "log records read but no logs pipeline uses this receiver; dropped"),
            }
        }
        drop(acks);
        Some(waiter)
    }

    /// Sleeps `d` (false if cancelled), checkpointing batches as they settle
    /// meanwhile, so the checkpoint follows delivery within ~50 ms.
    async fn sleep(&mut self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            let now = Instant::now();
            if now >= until {
                return true;
            }
            let slice = (until - now).min(Duration::from_millis(50));
            tokio::select! {
                _ = tokio::time::sleep(slice) => {}
                _ = self.cancel.cancelled() => return false,
            }
            if !self.in_flight.is_empty() {
                if let Err(e) = self.settle(false).await {
                    tracing::warn!(receiver = %self.shared.name, shard = %self.shard, error = %e,
                        "cannot write the checkpoint");
                }
            }
        }
    }
}

/// Reads one shard until it ends or `cancel` fires.
pub(crate) async fn run(shared: Arc<Shared>, shard: String, cancel: CancellationToken) -> Exit {
    let Some(checkpointed) = read_checkpoint(&shared, &shard, &cancel).await else {
        return Exit::Stopped;
    };
    let mut r = Reader {
        shared: shared.clone(),
        shard: shard.clone(),
        cancel: cancel.clone(),
        in_flight: VecDeque::new(),
        checkpointed,
        metrics: ShardMetrics::new(&shared.name, &shard),
    };
    // The last record read (ahead of the checkpoint while batches are in flight).
    let mut last_read: Option<String> = r.checkpointed.clone();
    let mut it: Option<String> = None;
    let mut backoff = Duration::from_millis(500);
    let mut next_call = Instant::now();
    let exit = loop {
        if cancel.is_cancelled() {
            break Exit::Stopped;
        }
        if let Err(e) = r
            .settle(r.in_flight.len() >= shared.cfg.max_in_flight_batches)
            .await
        {
            tracing::error!(receiver = %shared.name, %shard, error = %e, "cannot write the checkpoint");
        }
        if it.is_none() {
            match iterator(&shared, &shard, last_read.as_deref()).await {
                Ok(Some(i)) => it = Some(i),
                Ok(None) => {
                    tracing::warn!(receiver = %shared.name, %shard, "no iterator for the shard");
                    if !r.sleep(shared.cfg.poll_interval).await {
                        break Exit::Stopped;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(receiver = %shared.name, %shard, error = %e, "GetShardIterator failed");
                    if !r.sleep(jitter(backoff)).await {
                        break Exit::Stopped;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            }
        }
        // At most five calls a second per shard (and 2 MiB/s, see below).
        let now = Instant::now();
        if next_call > now && !r.sleep(next_call - now).await {
            break Exit::Stopped;
        }
        let Some(cur) = it.clone() else { continue };
        let resp = shared
            .client
            .get_records()
            .shard_iterator(cur)
            .limit(shared.cfg.max_records)
            .send()
            .await;
        next_call = Instant::now() + Duration::from_millis(200);
        let resp = match resp {
            Ok(resp) => {
                backoff = Duration::from_millis(500);
                resp
            }
            Err(e) => {
                let throttled = e
                    .as_service_error()
                    .is_some_and(|s| s.is_provisioned_throughput_exceeded_exception());
                let expired = e
                    .as_service_error()
                    .is_some_and(|s| s.is_expired_iterator_exception());
                if expired {
                    tracing::info!(receiver = %shared.name, %shard, "shard iterator expired; getting a new one");
                    it = None;
                    continue;
                }
                if throttled {
                    shared.metrics.throttled.increment(1);
                    tracing::warn!(receiver = %shared.name, %shard, wait_ms = backoff.as_millis() as u64,
                        "read throughput exceeded; backing off");
                } else {
                    tracing::error!(receiver = %shared.name, %shard, error = %error_text(&e), "GetRecords failed");
                }
                if !r.sleep(jitter(backoff)).await {
                    break Exit::Stopped;
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        if let Some(ms) = resp.millis_behind_latest() {
            r.metrics.lag.set(ms as f64);
        }
        let records = resp.records();
        if !records.is_empty() {
            let (last, bytes) = r.take(records).await;
            last_read = Some(last);
            // 2 MiB per second per shard.
            let pace = Duration::from_secs_f64(bytes as f64 / (2.0 * 1024.0 * 1024.0));
            next_call = next_call.max(Instant::now() + pace);
        }
        match resp.next_shard_iterator() {
            Some(n) => it = Some(n.to_string()),
            // The shard is closed and read to its end.
            None => break r.finish().await,
        }
        if records.is_empty() && !r.sleep(shared.cfg.poll_interval).await {
            break Exit::Stopped;
        }
    };
    r.drain().await;
    exit
}

/// The shard's checkpoint, retried until read (`None`: stopped first).
async fn read_checkpoint(
    shared: &Shared,
    shard: &str,
    cancel: &CancellationToken,
) -> Option<Option<String>> {
    loop {
        match shared.store.get(shard).await {
            Ok(c) => return Some(c),
            Err(e) => {
                tracing::error!(receiver = %shared.name, %shard, error = %e, "cannot read the checkpoint");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = cancel.cancelled() => return None,
                }
            }
        }
    }
}

impl Reader {
    /// Decodes a GetRecords answer and sends what it holds; returns the last
    /// sequence number and the bytes read.
    async fn take(&mut self, records: &[aws_sdk_kinesis::types::Record]) -> (String, usize) {
        let shared = self.shared.clone();
        let mut decoded = Decoded::default();
        let mut bytes = 0usize;
        let now_ms = shared.now_ms();
        let now_ns = crate::telemetry::unix_nanos_now();
        for rec in records {
            let data = rec.data().as_ref();
            bytes += data.len();
            match shared.cfg.encoding {
                decode::RecordEncoding::Cloudwatch => decode::record(
                    data,
                    &self.shard,
                    rec.sequence_number(),
                    shared.cfg.format,
                    shared.cfg.max_record_bytes,
                    now_ns,
                    &mut decoded,
                ),
                encoding => decode::otlp_record(
                    data,
                    &self.shard,
                    rec.sequence_number(),
                    encoding,
                    shared.cfg.otlp_signal(),
                    shared.cfg.max_record_bytes,
                    &mut decoded,
                ),
            }
        }
        match shared.spans.lock() {
            Ok(mut g) => decoded.settle(&mut g, now_ms),
            Err(p) => decoded.settle(&mut p.into_inner(), now_ms),
        }
        self.metrics.records.increment(records.len() as u64);
        self.metrics.bytes.increment(bytes as u64);
        self.metrics.spans.increment(decoded.spans.len() as u64);
        let m = &shared.metrics;
        m.bad_records.increment(decoded.bad_records);
        m.bad_spans.increment(decoded.bad_spans);
        m.control.increment(decoded.control);
        m.loop_dropped.increment(decoded.stream.loop_marked as u64);
        m.duplicates.increment(decoded.stream.duplicates as u64);
        let last = records
            .last()
            .map(|r| r.sequence_number().to_string())
            .unwrap_or_default();
        let waiter = self.dispatch(decoded).await;
        self.in_flight.push_back(InFlight {
            sequence: last.clone(),
            state: waiter.map_or(Settle::Nothing, Settle::Waiting),
        });
        (last, bytes)
    }

    /// A closed shard read to its end: once everything in flight is
    /// delivered, checkpoints `SHARD_END` so its children start.
    async fn finish(&mut self) -> Exit {
        let (shared, shard) = (self.shared.clone(), self.shard.clone());
        while !self.in_flight.is_empty() {
            if let Err(e) = self.settle(true).await {
                tracing::error!(receiver = %shared.name, %shard, error = %e, "cannot write the checkpoint");
                if !self.sleep(Duration::from_secs(1)).await {
                    break;
                }
            }
            let abandoned = self
                .in_flight
                .front_mut()
                .is_some_and(|f| f.state.poll() == Some(AckOutcome::Abandoned));
            if abandoned || self.cancel.is_cancelled() {
                break;
            }
        }
        if self.in_flight.is_empty() {
            match shared.store.set(&shard, SHARD_END).await {
                Ok(()) => {
                    tracing::info!(receiver = %shared.name, %shard, "shard read to its end");
                    shared.relist.notify_one();
                    return Exit::Ended;
                }
                Err(e) => {
                    tracing::error!(receiver = %shared.name, %shard, error = %e, "cannot write the checkpoint")
                }
            }
        }
        Exit::Stopped
    }

    /// Shutdown: gives batches in flight a moment to settle, and checkpoints
    /// what did.
    async fn drain(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.in_flight.is_empty() && Instant::now() < deadline {
            if self.settle(false).await.is_err() {
                break;
            }
            if self.in_flight.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !self.in_flight.is_empty() {
            tracing::info!(receiver = %self.shared.name, shard = %self.shard, batches = self.in_flight.len(),
                "stopping with batches not yet delivered; they will be read again");
        }
    }
}

/// Emits in-progress spans whose completed record never came.
pub(crate) async fn expire_in_progress(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = cancel.cancelled() => true,
        };
        let mut out = Vec::new();
        {
            let mut spans = match shared.spans.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            spans.expire(shared.now_ms(), stopping, &mut out);
        }
        if !out.is_empty() {
            if let Some(c) = &shared.consumers.traces {
                let data = Telemetry::Traces(aws_spans::group(out));
                let n = data.item_count();
                match c.consume(data, Acks::none()).await {
                    Ok(()) => shared.metrics.accepted.add(Signal::Traces, n),
                    Err(e) => {
                        shared.metrics.refused.add(Signal::Traces, n);
                        tracing::warn!(receiver = %shared.name, spans = n, error = %e,
                            "in-progress spans never completed could not be sent");
                    }
                }
            }
        }
        if stopping {
            return;
        }
    }
}
