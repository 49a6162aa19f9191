//! Processor `batch`: groups items into batches of `send_batch_size`, sends
//! what it has after `timeout`, and splits anything larger than
//! `send_batch_max_size`.
//!
//! Its input is a bounded channel. When the next stage refuses a batch (its
//! queues are full), the batcher holds the batch and retries with backoff;
//! meanwhile its own input fills and receivers refuse new data, so pressure
//! reaches the sender instead of memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::component::{Factory, ProcessorContext, ProcessorFactory, Stage, StageTask};
use crate::consumer::{
    offer_until_taken, AckOutcome, Acks, Backoff, BoxConsumer, ConsumeError, Consumer, Offered,
    StartError,
};
use crate::convert::split::{append, split_front};
use crate::settings::de::DeError;
use crate::settings::types::duration;
use crate::signal::{EncodedBatch, Metadata, Signal, Telemetry};
use crate::telemetry::SignalCounters;

/// Requests the batcher's input holds before it refuses.
pub const INPUT_CAPACITY: usize = 64;

/// `processors.batch`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Send as soon as this many items are pending.
    pub send_batch_size: usize,
    /// Largest batch sent; larger ones are split (0 = no limit).
    pub send_batch_max_size: usize,
    /// Send whatever is pending after this long.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Client metadata keys to batch by: data whose values of these keys
    /// differ is never put in one batch, and the batches keep these keys
    /// (and only these) as their metadata, for `headers_setter` and awsemf.
    /// Empty (default): one batch, and no metadata passed on.
    pub metadata_keys: Vec<String>,
    /// Most distinct `metadata_keys` values batched at once; a new one
    /// beyond it sends the oldest pending batch early.
    pub metadata_cardinality_limit: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            send_batch_size: 8192,
            send_batch_max_size: 0,
            timeout: Duration::from_millis(200),
            metadata_keys: Vec::new(),
            metadata_cardinality_limit: 1000,
        }
    }
}

impl BatchConfig {
    /// Checks the values make sense together.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        if self.send_batch_max_size > 0 && self.send_batch_max_size < self.send_batch_size {
            return Err(DeError::custom(format!(
                "send_batch_max_size ({}) must be 0 or at least send_batch_size ({})",
                self.send_batch_max_size, self.send_batch_size
            )));
        }
        if self.metadata_cardinality_limit == 0 {
            return Err(DeError::custom(
                "metadata_cardinality_limit must be at least 1",
            ));
        }
        if self.send_batch_size == 0 && self.timeout.is_zero() {
            return Err(DeError::custom(
                "send_batch_size 0 needs a non-zero timeout",
            ));
        }
        Ok(())
    }
}

/// A request as the batcher receives it: structs, or (when everything after
/// it sends OTLP as is) a request's bytes as they came.
#[derive(Debug)]
enum Input {
    Structs(Telemetry),
    Encoded(EncodedBatch),
}

/// The consumer side of a running batcher.
pub struct BatchInput {
    tx: mpsc::Sender<(Input, Acks)>,
    pending: Arc<AtomicU64>,
    name: String,
    /// Everything after it sends OTLP protobuf as is.
    encoded: bool,
}

impl BatchInput {
    /// Hands `data` (made an [`Input`] by `wrap`) to the batcher, or gives
    /// it back with the reason. A place in the queue is taken first, so a
    /// refusal hands back exactly what was offered.
    fn offer<T: std::fmt::Debug>(
        &self,
        data: T,
        items: usize,
        acks: Acks,
        wrap: impl FnOnce(T) -> Input,
    ) -> Result<(), ConsumeError<T>> {
        let (why, retry) = match self.tx.try_reserve() {
            Ok(permit) => {
                // Counted before the hand-off, so the batcher never subtracts first.
                self.pending.fetch_add(items as u64, Ordering::Relaxed);
                permit.send((wrap(data), acks));
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Full(())) => ("pipeline is full", 1),
            Err(mpsc::error::TrySendError::Closed(())) => ("shutting down", 5),
        };
        Err(ConsumeError::refused(
            format!("{}: {why}", self.name),
            Duration::from_secs(retry),
            data,
            acks,
        ))
    }
}

#[async_trait]
impl Consumer for BatchInput {
    async fn consume(&self, data: Telemetry, acks: Acks) -> Result<(), ConsumeError> {
        let n = data.item_count();
        self.offer(data, n, acks, Input::Structs)
    }

    fn takes_encoded(&self) -> bool {
        self.encoded
    }

    async fn consume_encoded(
        &self,
        data: EncodedBatch,
        acks: Acks,
    ) -> Result<(), ConsumeError<EncodedBatch>> {
        let n = data.items;
        self.offer(data, n, acks, Input::Encoded)
    }
}

/// The `batch` processor's factory.
pub struct BatchFactory;

impl Factory for BatchFactory {
    type Config = BatchConfig;
    fn type_name(&self) -> &'static str {
        "batch"
    }
    fn validate(&self, config: &BatchConfig) -> Result<(), DeError> {
        config.validate()
    }
}

impl ProcessorFactory for BatchFactory {
    fn build(&self, config: &BatchConfig, ctx: ProcessorContext<'_>) -> Result<Stage, StartError> {
        let RunningBatch {
            input,
            task,
            pending,
        } = spawn(config.clone(), ctx.next, ctx.name, &ctx.labels, ctx.stop);
        Ok(Stage {
            input,
            task: Some(StageTask { task, pending }),
        })
    }
}

/// A running batcher: its input, its task, and a count of items it holds.
pub struct RunningBatch {
    /// Feed data here.
    pub input: BoxConsumer,
    /// Ends after the input closes and everything was passed on (or `stop` fired).
    pub task: JoinHandle<()>,
    /// Items received but not yet passed on.
    pub pending: Arc<AtomicU64>,
}

/// Starts a batcher in front of `next`. `stop` makes it give up retrying a
/// refused batch (at the shutdown deadline); what it held is counted as dropped.
pub fn spawn(
    cfg: BatchConfig,
    next: BoxConsumer,
    name: String,
    labels: &[(&'static str, String)],
    stop: CancellationToken,
) -> RunningBatch {
    let (tx, rx) = mpsc::channel(INPUT_CAPACITY);
    let encoded = next.takes_encoded();
    let pending = Arc::new(AtomicU64::new(0));
    let dropped = SignalCounters::new("spanwire_processor_dropped", labels);
    let label_list: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect();
    // Batches sent before their time because metadata_cardinality_limit was reached.
    let early = metrics::counter!(
        "spanwire_processor_batch_metadata_cardinality_flushes_total",
        label_list
    );
    let task = tokio::spawn(run(
        cfg,
        rx,
        next,
        Counters {
            pending: pending.clone(),
            dropped,
            early,
        },
        name.clone(),
        stop,
    ));
    RunningBatch {
        input: Arc::new(BatchInput {
            tx,
            pending: pending.clone(),
            name,
            encoded,
        }),
        task,
        pending,
    }
}

async fn run(
    cfg: BatchConfig,
    mut rx: mpsc::Receiver<(Input, Acks)>,
    next: BoxConsumer,
    counters: Counters,
    name: String,
    stop: CancellationToken,
) {
    let Counters {
        pending,
        dropped,
        early,
    } = counters;
    // When every exporter after this batcher sends OTLP protobuf as is, each
    // request is encoded as it arrives (while its memory is in cache) and its
    // structs are dropped at once; the batch is the concatenated bytes.
    let encoded = next.takes_encoded();
    let limits = Limits {
        target: cfg.send_batch_size.max(1),
        max: cfg.send_batch_max_size,
    };
    let keys = &cfg.metadata_keys;
    // One batch being built per distinct value of `metadata_keys` (just one
    // without them). Only shards holding data are kept.
    let mut shards: HashMap<Metadata, Shard> = HashMap::new();
    let sender = Sender {
        next,
        pending,
        dropped,
        name,
        stop,
    };
    loop {
        let earliest = shards.values().filter_map(|s| s.deadline).min();
        let timer = async {
            match earliest {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = rx.recv() => {
                let Some((data, acks)) = msg else { break };
                // The batch keeps only the values of `metadata_keys`.
                let key = acks.metadata().select(keys);
                let acks = acks.with_metadata(key.clone());
                if !shards.contains_key(&key) && shards.len() >= cfg.metadata_cardinality_limit {
                    // Full: the oldest pending batch goes now, so memory
                    // stays bounded and nothing is refused or dropped.
                    let oldest = shards
                        .iter()
                        .min_by_key(|(_, s)| s.deadline)
                        .map(|(k, _)| k.clone());
                    if let Some(mut s) = oldest.and_then(|k| shards.remove(&k)) {
                        early.increment(1);
                        s.flush(&sender, limits).await;
                    }
                }
                let shard = shards
                    .entry(key.clone())
                    .or_insert_with(|| Shard::new(encoded, &key));
                shard.add(data, acks, &sender, limits).await;
                shard.deadline = match (shard.count, shard.deadline) {
                    (0, _) => None,
                    (_, None) => Some(Instant::now() + cfg.timeout),
                    (_, d) => d,
                };
                if shard.count == 0 {
                    shards.remove(&key);
                }
            }
            _ = timer => {
                let now = Instant::now();
                let due: Vec<Metadata> = shards
                    .iter()
                    .filter(|(_, s)| s.deadline.is_some_and(|d| d <= now))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in due {
                    if let Some(mut s) = shards.remove(&k) {
                        s.flush(&sender, limits).await;
                    }
                }
            }
        }
    }
    for (_, mut s) in shards.drain() {
        s.flush(&sender, limits).await;
    }
}

/// What a running batcher counts.
struct Counters {
    /// Items received but not yet passed on.
    pending: Arc<AtomicU64>,
    /// Items dropped at the shutdown deadline.
    dropped: SignalCounters,
    /// Batches sent early for `metadata_cardinality_limit`.
    early: metrics::Counter,
}

/// `send_batch_size` (at least 1) and `send_batch_max_size` (0: none).
#[derive(Clone, Copy)]
struct Limits {
    target: usize,
    max: usize,
}

/// The batch being built for one value of `metadata_keys`.
struct Shard {
    /// In encoded mode, the bytes so far.
    encoded: Option<EncodedBuf>,
    /// Otherwise the structs so far.
    buf: Option<Telemetry>,
    /// Acknowledgements of everything in the shard: every batch cut from it
    /// carries them all, so each resolves only when all of its data is
    /// settled. Their metadata is the shard's key.
    acks: Acks,
    /// Items held.
    count: usize,
    /// When what is held must go.
    deadline: Option<Instant>,
}

impl Shard {
    fn new(encoded: bool, key: &Metadata) -> Shard {
        Shard {
            encoded: encoded.then(EncodedBuf::new),
            buf: None,
            acks: Acks::none().with_metadata(key.clone()),
            count: 0,
            deadline: None,
        }
    }

    /// Adds a request, passing on every full batch.
    async fn add(&mut self, input: Input, acks: Acks, sender: &Sender, l: Limits) {
        let data = match input {
            Input::Structs(t) => t,
            Input::Encoded(e) => {
                let whole = l.max == 0 || self.count + e.items <= l.max;
                match self.encoded.as_mut() {
                    // Bytes in, bytes out: requests concatenate.
                    Some(enc) if whole => {
                        self.acks.extend(acks);
                        self.count += e.items;
                        enc.push_bytes(e.signal, &e.bytes);
                        drop(e);
                        if self.count >= l.target {
                            let batch = enc.take(self.count);
                            self.count = 0;
                            sender.send(batch, self.acks.take()).await;
                        }
                        return;
                    }
                    // To be cut at `send_batch_max_size`: traces and logs
                    // are cut as bytes, at span and record boundaries.
                    Some(enc) => {
                        match cut_bytes(enc, &mut self.count, &mut self.acks, e, acks, sender, l)
                            .await
                        {
                            Ok(()) => return,
                            Err((e, acks)) => {
                                match crate::convert::otlp_proto::decode_request(e.signal, &e.bytes)
                                {
                                    Ok(t) => {
                                        self.acks.extend(acks);
                                        return self.add_structs(t, sender, l).await;
                                    }
                                    Err(err) => {
                                        tracing::error!(error = %err, "batch: an encoded request does not decode; dropped");
                                        acks.mark(crate::consumer::AckOutcome::Dropped);
                                        return;
                                    }
                                }
                            }
                        }
                    }
                    // A batcher sending structs (never, with bytes coming in):
                    // decoded once, here. The receiver checked it, so it decodes.
                    None => match crate::convert::otlp_proto::decode_request(e.signal, &e.bytes) {
                        Ok(t) => t,
                        Err(err) => {
                            tracing::error!(error = %err, "batch: an encoded request does not decode; dropped");
                            acks.mark(crate::consumer::AckOutcome::Dropped);
                            return;
                        }
                    },
                }
            }
        };
        self.acks.extend(acks);
        self.add_structs(data, sender, l).await
    }

    /// Adds decoded data (its acks already held), passing on every full batch.
    async fn add_structs(&mut self, mut data: Telemetry, sender: &Sender, l: Limits) {
        match self.encoded.as_mut() {
            Some(enc) => {
                // Cut at `send_batch_max_size` before encoding.
                let mut n = data.item_count();
                while l.max > 0 && self.count + n > l.max {
                    let take = l.max - self.count;
                    let head = split_front(&mut data, take);
                    enc.push(&head);
                    drop(head);
                    n -= take;
                    self.count = 0;
                    sender.send(enc.take(l.max), self.acks.clone()).await;
                }
                self.count += n;
                enc.push(&data);
                drop(data);
                if self.count >= l.target {
                    let batch = enc.take(self.count);
                    self.count = 0;
                    sender.send(batch, self.acks.take()).await;
                }
            }
            None => {
                self.count += data.item_count();
                match &mut self.buf {
                    Some(b) => append(b, data),
                    None => self.buf = Some(data),
                }
                while self.count >= l.target {
                    let take = if l.max > 0 {
                        self.count.min(l.max)
                    } else {
                        self.count
                    };
                    let (batch, acks) = if take == self.count {
                        (self.buf.take(), self.acks.take())
                    } else {
                        (
                            self.buf.as_mut().map(|b| split_front(b, take)),
                            self.acks.clone(),
                        )
                    };
                    self.count -= take;
                    if let Some(batch) = batch {
                        sender.send(batch, acks).await;
                    }
                }
            }
        }
    }

    /// Passes on everything held (at the timeout, or at the end).
    async fn flush(&mut self, sender: &Sender, l: Limits) {
        self.deadline = None;
        if let Some(enc) = self.encoded.as_mut().filter(|e| !e.is_empty()) {
            let batch = enc.take(self.count);
            self.count = 0;
            sender.send(batch, self.acks.take()).await;
        }
        if let Some(b) = self.buf.take() {
            self.count = 0;
            sender.send_split(b, l.max, self.acks.take()).await;
        }
    }
}

/// Cuts a request that arrived as bytes (traces or logs) at
/// `send_batch_max_size` without decoding it: the pieces go into `enc`
/// (holding `count` items, with the shard's `held` acks) as bytes, and full
/// batches go on. Gives the request back if it cannot be cut so (metrics,
/// whose points a cut may split inside a metric).
async fn cut_bytes(
    enc: &mut EncodedBuf,
    count: &mut usize,
    held: &mut Acks,
    e: EncodedBatch,
    acks: Acks,
    sender: &Sender,
    l: Limits,
) -> Result<(), (EncodedBatch, Acks)> {
    use crate::convert::otlp_index::{index_request, split_request};
    let signal = e.signal;
    let Ok(mut ix) = index_request(signal, &e.bytes) else {
        return Err((e, acks));
    };
    let mut rest = e.bytes.to_vec();
    let (mut now, mut n) = (*count, e.items);
    let mut full = Vec::new();
    while now + n > l.max {
        let take = l.max - now;
        let Some((head, tail)) = split_request(&rest, &ix, take) else {
            return Err((e, acks));
        };
        let Ok(tail_ix) = index_request(signal, &tail) else {
            return Err((e, acks));
        };
        full.push(head);
        (rest, ix) = (tail, tail_ix);
        now = 0;
        n -= take;
    }
    held.extend(acks);
    for head in full {
        enc.push_bytes(signal, &head);
        sender.send(enc.take(l.max), held.clone()).await;
    }
    *count = now + n;
    enc.push_bytes(signal, &rest);
    if *count >= l.target {
        let batch = enc.take(*count);
        *count = 0;
        sender.send(batch, held.take()).await;
    }
    Ok(())
}

/// The batch being built in encoded mode: OTLP request bytes.
struct EncodedBuf {
    signal: Signal,
    bytes: Vec<u8>,
    /// Capacity for the next batch: the last one's size and an eighth, so
    /// the buffer rarely grows (untouched capacity is never paged in).
    next_capacity: usize,
}

impl EncodedBuf {
    fn new() -> EncodedBuf {
        EncodedBuf {
            signal: Signal::Traces,
            bytes: Vec::new(),
            next_capacity: 64 * 1024,
        }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn push(&mut self, data: &Telemetry) {
        self.start(data.signal());
        crate::convert::otlp_proto::encode_request(data, &mut self.bytes);
    }

    /// Appends a request's bytes as they are.
    fn push_bytes(&mut self, signal: Signal, bytes: &[u8]) {
        self.start(signal);
        self.bytes.extend_from_slice(bytes);
    }

    fn start(&mut self, signal: Signal) {
        if self.bytes.is_empty() {
            self.signal = signal;
            self.bytes.reserve(self.next_capacity);
        }
    }

    /// Hands out what was pushed (`items` of them) and starts over.
    fn take(&mut self, items: usize) -> EncodedBatch {
        let bytes = std::mem::take(&mut self.bytes);
        self.next_capacity = (bytes.len() + bytes.len() / 8).clamp(64 * 1024, 64 << 20);
        EncodedBatch {
            signal: self.signal,
            items,
            bytes: bytes.into(),
            shape: None,
        }
    }
}

struct Sender {
    next: BoxConsumer,
    pending: Arc<AtomicU64>,
    dropped: SignalCounters,
    name: String,
    stop: CancellationToken,
}

impl Sender {
    async fn send_split(&self, mut data: Telemetry, max: usize, acks: Acks) {
        if max > 0 {
            while data.item_count() > max {
                let head = split_front(&mut data, max);
                self.send(head, acks.clone()).await;
            }
        }
        self.send(data, acks).await;
    }

    /// Passes a batch on (structs or encoded), retrying while the next stage refuses it.
    async fn send<B: Outgoing>(&self, data: B, acks: Acks) {
        let n = data.items();
        if n == 0 {
            return;
        }
        let signal = data.signal();
        let backoff = Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(500),
            retry_after_cap: Duration::ZERO,
        };
        let next = self.next.as_ref();
        match offer_until_taken(
            data,
            acks,
            backoff,
            &self.stop,
            |d, a| d.offer(next, a),
            |_| {},
        )
        .await
        {
            Offered::Taken => {}
            Offered::Stopped(r) => {
                tracing::error!(processor = %self.name, items = n, %signal, reason = %r.reason,
                    "shutdown deadline reached; dropping a batch the next stage refused");
                self.dropped.add(signal, n);
                r.acks.mark(AckOutcome::Abandoned);
            }
            Offered::Failed(reason) => {
                tracing::error!(processor = %self.name, items = n, %signal, %reason, "next stage failed a batch");
            }
        }
        self.pending.fetch_sub(n as u64, Ordering::Relaxed);
    }
}

/// A batch the batcher passes on: structs, or an encoded batch.
trait Outgoing: std::fmt::Debug + Send + Sized + 'static {
    fn items(&self) -> usize;
    fn signal(&self) -> Signal;
    /// Hands the batch to `next` (which gives it back on refusal).
    fn offer(
        self,
        next: &dyn Consumer,
        acks: Acks,
    ) -> impl std::future::Future<Output = Result<(), ConsumeError<Self>>> + Send;
}

impl Outgoing for Telemetry {
    fn items(&self) -> usize {
        self.item_count()
    }
    fn signal(&self) -> Signal {
        Telemetry::signal(self)
    }
    fn offer(
        self,
        next: &dyn Consumer,
        acks: Acks,
    ) -> impl std::future::Future<Output = Result<(), ConsumeError>> + Send {
        next.consume(self, acks)
    }
}

impl Outgoing for EncodedBatch {
    fn items(&self) -> usize {
        self.items
    }
    fn signal(&self) -> Signal {
        self.signal
    }
    fn offer(
        self,
        next: &dyn Consumer,
        acks: Acks,
    ) -> impl std::future::Future<Output = Result<(), ConsumeError<EncodedBatch>>> + Send {
        next.consume_encoded(self, acks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::metrics::v1::{
        metric::Data, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    };
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn spans(groups: &[&[usize]]) -> Telemetry {
        Telemetry::Traces(
            groups
                .iter()
                .map(|scopes| ResourceSpans {
                    resource: None,
                    scope_spans: scopes
                        .iter()
                        .map(|&k| ScopeSpans {
                            scope: None,
                            spans: (0..k)
                                .map(|i| Span {
                                    name: format!("s{i}"),
                                    ..Default::default()
                                })
                                .collect(),
                            schema_url: String::new(),
                        })
                        .collect(),
                    schema_url: String::new(),
                })
                .collect(),
        )
    }

    #[test]
    fn split_keeps_every_span_once_in_order() {
        let mut t = spans(&[&[3, 4], &[5]]);
        let a = split_front(&mut t, 5);
        assert_eq!(a.item_count(), 5);
        assert_eq!(t.item_count(), 7);
        let b = split_front(&mut t, 5);
        assert_eq!(b.item_count(), 5);
        assert_eq!(t.item_count(), 2);
        let Telemetry::Traces(ra) = &a else { panic!() };
        let names: Vec<_> = ra
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["s0", "s1", "s2", "s0", "s1"]);
    }

    #[test]
    fn many_one_span_requests_split_into_full_batches() {
        let ones: Vec<&[usize]> = vec![&[1]; 5000];
        let mut t = spans(&ones);
        let mut sizes = Vec::new();
        while t.item_count() > 0 {
            sizes.push(split_front(&mut t, 1024).item_count());
        }
        assert_eq!(sizes, vec![1024, 1024, 1024, 1024, 904]);
    }

    #[test]
    fn split_inside_a_metric() {
        let mut t = Telemetry::Metrics(vec![ResourceMetrics {
            resource: None,
            scope_metrics: vec![ScopeMetrics {
                scope: None,
                metrics: vec![Metric {
                    name: "g".into(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint::default(); 10],
                    })),
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }]);
        let head = split_front(&mut t, 4);
        assert_eq!(head.item_count(), 4);
        assert_eq!(t.item_count(), 6);
    }

    /// Records batch sizes and keeps each batch's acknowledgements.
    struct Collect(tokio::sync::Mutex<Vec<usize>>, std::sync::Mutex<Vec<Acks>>);

    #[async_trait]
    impl Consumer for Collect {
        async fn consume(&self, data: Telemetry, acks: Acks) -> Result<(), ConsumeError> {
            self.0.lock().await.push(data.item_count());
            self.1.lock().unwrap().push(acks);
            Ok(())
        }
    }

    #[tokio::test]
    async fn batches_by_size_then_by_timeout_and_caps_the_size() {
        let sink = Arc::new(Collect(
            tokio::sync::Mutex::new(Vec::new()),
            std::sync::Mutex::new(Vec::new()),
        ));
        let cfg = BatchConfig {
            send_batch_size: 10,
            send_batch_max_size: 12,
            timeout: Duration::from_millis(50),
            ..Default::default()
        };
        let running = start(cfg, sink.clone());
        let (a, mut a_done) = crate::consumer::Ack::new();
        let (b, mut b_done) = crate::consumer::Ack::new();
        running
            .input
            .consume(spans(&[&[25]]), Acks::one(a))
            .await
            .unwrap();
        running
            .input
            .consume(spans(&[&[3]]), Acks::one(b))
            .await
            .unwrap();
        drop(running.input);
        running.task.await.unwrap();
        let sizes = sink.0.lock().await.clone();
        assert_eq!(sizes.iter().sum::<usize>(), 28);
        assert!(sizes.iter().all(|&s| s <= 12), "{sizes:?}");
        assert_eq!(running.pending.load(Ordering::Relaxed), 0);
        // The acknowledgements travel with the batches holding their data and
        // resolve only when the last such batch is settled downstream.
        let mut held = std::mem::take(&mut *sink.1.lock().unwrap());
        assert_eq!(held.len(), sizes.len());
        let last = held.pop().unwrap();
        drop(held);
        assert_eq!(b_done.try_outcome(), None, "b's data is in the last batch");
        last.mark(crate::consumer::AckOutcome::Delivered);
        drop(last);
        assert_eq!(
            a_done.try_outcome(),
            Some(crate::consumer::AckOutcome::Delivered)
        );
        assert_eq!(
            b_done.try_outcome(),
            Some(crate::consumer::AckOutcome::Delivered)
        );
    }

    /// Takes encoded batches, refusing the first `refuse` offers; keeps what it took.
    struct CollectEncoded {
        refuse: AtomicU64,
        got: std::sync::Mutex<Vec<EncodedBatch>>,
    }

    impl CollectEncoded {
        fn refusing(n: u64) -> Arc<CollectEncoded> {
            Arc::new(CollectEncoded {
                refuse: AtomicU64::new(n),
                got: std::sync::Mutex::new(Vec::new()),
            })
        }
    }

    #[async_trait]
    impl Consumer for CollectEncoded {
        async fn consume(&self, _data: Telemetry, _acks: Acks) -> Result<(), ConsumeError> {
            Err(ConsumeError::Failed(
                "structs offered to an encoded-only stage".into(),
            ))
        }

        fn takes_encoded(&self) -> bool {
            true
        }

        async fn consume_encoded(
            &self,
            data: EncodedBatch,
            acks: Acks,
        ) -> Result<(), ConsumeError<EncodedBatch>> {
            if self.refuse.load(Ordering::SeqCst) > 0 {
                self.refuse.fetch_sub(1, Ordering::SeqCst);
                return Err(ConsumeError::refused("full", Duration::ZERO, data, acks));
            }
            self.got.lock().unwrap().push(data);
            Ok(())
        }
    }

    /// A batcher in front of `next`, as a pipeline would start it.
    fn start(cfg: BatchConfig, next: BoxConsumer) -> RunningBatch {
        spawn(cfg, next, "batch".into(), &[], CancellationToken::new())
    }

    fn names(t: &Telemetry) -> Vec<String> {
        let Telemetry::Traces(rs) = t else {
            panic!("traces expected")
        };
        rs.iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.name.clone())
            .collect()
    }

    /// Requests of varied shapes, each span named after its request.
    fn requests() -> Vec<Telemetry> {
        let shapes: [&[&[usize]]; 6] = [
            &[&[25]],
            &[&[3]],
            &[&[4, 4], &[2]],
            &[&[1]],
            &[&[13]],
            &[&[0]],
        ];
        shapes
            .iter()
            .enumerate()
            .map(|(i, shape)| {
                let mut t = spans(shape);
                if let Telemetry::Traces(rs) = &mut t {
                    for s in rs
                        .iter_mut()
                        .flat_map(|r| &mut r.scope_spans)
                        .flat_map(|s| &mut s.spans)
                    {
                        s.name = format!("r{i}-{}", s.name);
                    }
                }
                t
            })
            .collect()
    }

    #[tokio::test]
    async fn encoded_mode_sends_the_bytes_struct_mode_would_encode() {
        let cfg = BatchConfig {
            send_batch_size: 10,
            send_batch_max_size: 12,
            timeout: Duration::from_secs(30),
            ..Default::default()
        };
        // Struct mode, for reference.
        struct Keep(std::sync::Mutex<Vec<Telemetry>>);
        #[async_trait]
        impl Consumer for Keep {
            async fn consume(&self, data: Telemetry, _acks: Acks) -> Result<(), ConsumeError> {
                self.0.lock().unwrap().push(data);
                Ok(())
            }
        }
        let keep = Arc::new(Keep(std::sync::Mutex::new(Vec::new())));
        let running = start(cfg.clone(), keep.clone());
        for r in requests() {
            running.input.consume(r, Acks::none()).await.unwrap();
        }
        drop(running.input);
        running.task.await.unwrap();
        let expected: Vec<Vec<u8>> = keep
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|t| {
                let mut b = Vec::new();
                crate::convert::otlp_proto::encode_request(t, &mut b);
                b
            })
            .collect();

        // Encoded mode, refusing the first two offers (the batcher retries).
        let sink = CollectEncoded::refusing(2);
        let running = start(cfg, sink.clone());
        let (a, mut a_done) = crate::consumer::Ack::new();
        for (i, r) in requests().into_iter().enumerate() {
            let acks = if i == 0 {
                Acks::one(a.clone())
            } else {
                Acks::none()
            };
            running.input.consume(r, acks).await.unwrap();
        }
        drop(a);
        drop(running.input);
        running.task.await.unwrap();
        assert_eq!(running.pending.load(Ordering::Relaxed), 0);
        let got = std::mem::take(&mut *sink.got.lock().unwrap());
        let sizes: Vec<usize> = got.iter().map(|b| b.items).collect();
        assert_eq!(
            sizes,
            [12, 12, 12, 12, 4],
            "full batches of at most 12, then the rest"
        );
        let bytes: Vec<Vec<u8>> = got.iter().map(|b| b.bytes.to_vec()).collect();
        assert_eq!(bytes, expected, "same batches, same bytes as struct mode");
        let mut all = Vec::new();
        for b in &got {
            assert_eq!(b.signal, Signal::Traces);
            let t = crate::convert::otlp_proto::decode_batch(b).unwrap();
            assert_eq!(t.item_count(), b.items);
            all.extend(names(&t));
        }
        let sent: Vec<String> = requests().iter().flat_map(names).collect();
        assert_eq!(all, sent, "every span once, in order");
        // The first request's ack rides on the batches holding its spans;
        // nothing downstream marked them, so once dropped they count as delivered.
        drop(got);
        assert_eq!(
            a_done.try_outcome(),
            Some(crate::consumer::AckOutcome::Delivered)
        );

        // Requests that arrive as bytes (a receiver's bytes-first path):
        // joined as they are, and cut (decoded first) only where
        // send_batch_max_size falls inside one. The same batches again.
        let sink = CollectEncoded::refusing(1);
        let running = start(cfg_bytes(), sink.clone());
        assert!(running.input.takes_encoded());
        for r in requests() {
            let mut b = Vec::new();
            crate::convert::otlp_proto::encode_request(&r, &mut b);
            let e = EncodedBatch {
                signal: Signal::Traces,
                items: r.item_count(),
                bytes: b.into(),
                shape: None,
            };
            running
                .input
                .consume_encoded(e, Acks::none())
                .await
                .unwrap();
        }
        drop(running.input);
        running.task.await.unwrap();
        assert_eq!(running.pending.load(Ordering::Relaxed), 0);
        let got = std::mem::take(&mut *sink.got.lock().unwrap());
        let sizes: Vec<usize> = got.iter().map(|b| b.items).collect();
        assert_eq!(sizes, [12, 12, 12, 12, 4]);
        let bytes: Vec<Vec<u8>> = got.iter().map(|b| b.bytes.to_vec()).collect();
        assert_eq!(bytes, expected, "bytes in, the same bytes out");
    }

    /// For random valid requests of traces and logs, the bytes-first path
    /// (requests in as bytes, joined and cut as bytes) and the decode path
    /// (requests in as structs) deliver the same batches: decoded, the same
    /// data; as bytes, the same bytes.
    #[tokio::test]
    async fn random_requests_as_bytes_and_as_structs_give_the_same_batches() {
        use crate::convert::otlp_proto::tests::Gen;
        use rand::{Rng, SeedableRng};
        let mut g = Gen(rand::rngs::StdRng::seed_from_u64(4));
        let mut sizes = rand::rngs::StdRng::seed_from_u64(5);
        let mut batches = 0;
        for round in 0..40 {
            let target = sizes.random_range(1..20);
            let cfg = BatchConfig {
                send_batch_size: target,
                send_batch_max_size: target + sizes.random_range(0..8),
                timeout: Duration::from_secs(30),
                ..Default::default()
            };
            let reqs: Vec<Telemetry> = (0..8)
                .map(|_| match round % 2 {
                    0 => Telemetry::Traces(g.traces()),
                    _ => Telemetry::Logs(g.logs()),
                })
                .collect();
            let mut out = Vec::new();
            for as_bytes in [true, false] {
                let sink = CollectEncoded::refusing(0);
                let running = start(cfg.clone(), sink.clone());
                for r in &reqs {
                    if as_bytes {
                        let e = crate::convert::otlp_proto::encode_batch(r);
                        running
                            .input
                            .consume_encoded(e, Acks::none())
                            .await
                            .unwrap();
                    } else {
                        running
                            .input
                            .consume(r.clone(), Acks::none())
                            .await
                            .unwrap();
                    }
                }
                drop(running.input);
                running.task.await.unwrap();
                let got = std::mem::take(&mut *sink.got.lock().unwrap());
                out.push(got);
            }
            let (bytes_path, struct_path) = (&out[0], &out[1]);
            assert_eq!(bytes_path.len(), struct_path.len(), "round {round}");
            for (a, b) in bytes_path.iter().zip(struct_path) {
                assert_eq!(a.items, b.items);
                assert!(a.items <= cfg.send_batch_max_size);
                let (da, db) = (
                    crate::convert::otlp_proto::decode_batch(a).unwrap(),
                    crate::convert::otlp_proto::decode_batch(b).unwrap(),
                );
                assert_eq!(da, db, "round {round}: the same data");
                assert_eq!(a.bytes, b.bytes, "round {round}: the same bytes");
            }
            let sent: usize = reqs.iter().map(|r| r.item_count()).sum();
            assert_eq!(bytes_path.iter().map(|b| b.items).sum::<usize>(), sent);
            batches += bytes_path.len();
        }
        assert!(batches > 100, "{batches} batches");
    }

    fn cfg_bytes() -> BatchConfig {
        BatchConfig {
            send_batch_size: 10,
            send_batch_max_size: 12,
            timeout: Duration::from_secs(30),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn encoded_mode_sends_a_partial_batch_at_the_timeout() {
        let sink = CollectEncoded::refusing(0);
        let cfg = BatchConfig {
            send_batch_size: 100,
            send_batch_max_size: 0,
            timeout: Duration::from_millis(20),
            ..Default::default()
        };
        let running = start(cfg, sink.clone());
        running
            .input
            .consume(spans(&[&[3]]), Acks::none())
            .await
            .unwrap();
        running
            .input
            .consume(spans(&[&[4]]), Acks::none())
            .await
            .unwrap();
        // The input stays open: only the timer can send these 7 spans.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.got.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "no batch after the timeout"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let got = sink.got.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].items, 7);
        assert_eq!(
            crate::convert::otlp_proto::decode_batch(&got[0])
                .unwrap()
                .item_count(),
            7
        );
        assert_eq!(running.pending.load(Ordering::Relaxed), 0);
    }
}

#[cfg(test)]
mod metadata_tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    /// A request of `n` spans named after `group`.
    fn request(group: &str, n: usize) -> Telemetry {
        Telemetry::Traces(vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        name: format!("{group}-{i}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }])
    }

    fn client(group: &str) -> Metadata {
        Metadata::new([
            ("x-aws-log-group".to_string(), group.to_string()),
            ("user-agent".to_string(), format!("agent {group}")),
        ])
    }

    /// Keeps every batch with its metadata.
    #[derive(Default)]
    struct Keep(std::sync::Mutex<Vec<(Telemetry, Metadata)>>);

    #[async_trait]
    impl Consumer for Keep {
        async fn consume(&self, data: Telemetry, acks: Acks) -> Result<(), ConsumeError> {
            self.0.lock().unwrap().push((data, acks.metadata().clone()));
            Ok(())
        }
    }

    fn names(t: &Telemetry) -> Vec<String> {
        let Telemetry::Traces(rs) = t else {
            panic!("traces")
        };
        rs.iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.name.clone())
            .collect()
    }

    async fn run_with(cfg: BatchConfig, groups: &[&str]) -> Vec<(Telemetry, Metadata)> {
        let sink = Arc::new(Keep::default());
        let running = spawn(
            cfg,
            sink.clone(),
            "batch".into(),
            &[],
            CancellationToken::new(),
        );
        for (i, g) in groups.iter().enumerate() {
            let acks = Acks::none().with_metadata(client(g));
            running
                .input
                .consume(request(&format!("{g}{i}"), 3), acks)
                .await
                .unwrap();
        }
        drop(running.input);
        running.task.await.unwrap();
        let got = std::mem::take(&mut *sink.0.lock().unwrap());
        got
    }

    #[tokio::test]
    async fn metadata_keys_keep_batches_of_different_values_apart() {
        let cfg = BatchConfig {
            send_batch_size: 6,
            timeout: Duration::from_secs(60),
            metadata_keys: vec!["X-AWS-Log-Group".into()],
            ..Default::default()
        };
        let got = run_with(cfg, &["a", "b", "a", "b", "a"]).await;
        let mut spans = 0;
        for (batch, md) in &got {
            let group = md.first("x-aws-log-group").expect("the key is kept");
            assert!(
                md.first("user-agent").is_none(),
                "only metadata_keys are kept"
            );
            for n in names(batch) {
                assert!(n.starts_with(group), "{n} is in the batch of group {group}");
                spans += 1;
            }
        }
        assert_eq!(spans, 15, "every span once");
        // a: 3 requests of 3 = one batch of 6 (full) and 3 at the end; b: one of 6.
        let sizes: Vec<(String, usize)> = got
            .iter()
            .map(|(b, m)| {
                (
                    m.first("x-aws-log-group").unwrap().to_string(),
                    b.item_count(),
                )
            })
            .collect();
        assert!(
            sizes.contains(&("a".into(), 6)) && sizes.contains(&("b".into(), 6)),
            "{sizes:?}"
        );
    }

    #[tokio::test]
    async fn without_metadata_keys_batches_mix_and_carry_no_metadata() {
        let cfg = BatchConfig {
            send_batch_size: 6,
            timeout: Duration::from_secs(60),
            ..Default::default()
        };
        let got = run_with(cfg, &["a", "b"]).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.item_count(), 6);
        assert!(got[0].1.is_empty());
    }

    #[tokio::test]
    async fn over_the_cardinality_limit_the_oldest_batch_goes_early() {
        let cfg = BatchConfig {
            send_batch_size: 100,
            timeout: Duration::from_secs(60),
            metadata_keys: vec!["x-aws-log-group".into()],
            metadata_cardinality_limit: 2,
            ..Default::default()
        };
        let got = run_with(cfg, &["a", "b", "c"]).await;
        // `c` pushed `a` out before the end; nothing lost, nothing mixed.
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].1.first("x-aws-log-group"), Some("a"));
        assert_eq!(got.iter().map(|(b, _)| b.item_count()).sum::<usize>(), 9);
    }
}
