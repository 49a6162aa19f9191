//! What the gRPC and HTTP sides of the OTLP receiver share: handing
//! decoded data to the pipelines, counting it, and (with
//! `wait_for_delivery`) answering once it is delivered.

use std::time::Duration;

use crate::component::ComponentId;
use crate::consumer::{Ack, AckOutcome, AckWaiter, Acks, BoxConsumer, ConsumeError, Consumers};
use crate::signal::{EncodedBatch, Metadata, Signal, Telemetry};

/// Client metadata from request headers (names lower-cased; values that are
/// not text are left out).
pub(super) fn metadata_of(headers: &http::HeaderMap) -> Metadata {
    Metadata::new(headers.iter().filter_map(|(k, v)| {
        v.to_str()
            .ok()
            .map(|v| (k.as_str().to_string(), v.to_string()))
    }))
}
use crate::telemetry::SignalCounters;

/// Why data was not taken, as a receiver reports it to the sender.
pub(crate) enum Rejection {
    /// Retry later (UNAVAILABLE / 503).
    Unavailable {
        reason: String,
        retry_after: Duration,
    },
    /// Failed for good (INTERNAL / 500).
    Failed(String),
}

/// Hands decoded data to the pipelines and counts it.
#[derive(Clone)]
pub(crate) struct Intake {
    consumers: Consumers,
    /// `wait_for_delivery`: answer after delivery, waiting at most this long.
    wait: Option<Duration>,
    accepted: SignalCounters,
    refused: SignalCounters,
    unauthenticated: metrics::Counter,
    /// Requests passed on as their bytes, never decoded.
    bytes_first: metrics::Counter,
}

impl Intake {
    pub(super) fn new(
        id: &ComponentId,
        transport: &str,
        consumers: Consumers,
        wait: Option<Duration>,
    ) -> Intake {
        let labels = [
            ("receiver", id.to_string()),
            ("transport", transport.to_string()),
        ];
        Intake {
            consumers,
            wait,
            accepted: SignalCounters::new("spanwire_receiver_accepted", &labels),
            refused: SignalCounters::new("spanwire_receiver_refused", &labels),
            unauthenticated: crate::telemetry::unauthenticated_counter(&labels),
            bytes_first: metrics::counter!(
                "spanwire_receiver_bytes_first_requests_total",
                "receiver" => id.to_string(),
                "transport" => transport.to_string()
            ),
        }
    }

    /// Counts a request refused for a missing or wrong token.
    pub(super) fn unauthenticated(&self) {
        self.unauthenticated.increment(1);
    }

    pub(super) fn consumer(&self, signal: Signal) -> Option<&BoxConsumer> {
        self.consumers.get(signal)
    }

    /// Hands `data` on, with the client `metadata` kept from its request
    /// (empty without `include_metadata`).
    pub(super) async fn deliver(
        &self,
        consumer: &BoxConsumer,
        data: Telemetry,
        metadata: Metadata,
    ) -> Result<(), Rejection> {
        let (signal, n) = (data.signal(), data.item_count());
        self.hand_on(signal, n, metadata, |acks| consumer.consume(data, acks))
            .await
    }

    /// Hands a checked request's bytes on as they are (the consumer takes
    /// encoded batches), as [`Intake::deliver`] does structs.
    pub(super) async fn deliver_encoded(
        &self,
        consumer: &BoxConsumer,
        data: EncodedBatch,
        metadata: Metadata,
    ) -> Result<(), Rejection> {
        let (signal, n) = (data.signal, data.items);
        let done = self
            .hand_on(signal, n, metadata, |acks| {
                consumer.consume_encoded(data, acks)
            })
            .await;
        if done.is_ok() {
            self.bytes_first.increment(1);
        }
        done
    }

    /// Hands `n` items of `signal` on by `consume`, counts them, and waits
    /// for their delivery if `wait_for_delivery` asks.
    async fn hand_on<T: std::fmt::Debug, F>(
        &self,
        signal: Signal,
        n: usize,
        metadata: Metadata,
        consume: impl FnOnce(Acks) -> F,
    ) -> Result<(), Rejection>
    where
        F: std::future::Future<Output = Result<(), ConsumeError<T>>>,
    {
        if n == 0 {
            return Ok(());
        }
        let (acks, waiter) = match self.wait {
            Some(_) => {
                let (ack, waiter) = Ack::new();
                (Acks::one(ack), Some(waiter))
            }
            None => (Acks::none(), None),
        };
        match consume(acks.with_metadata(metadata)).await {
            Ok(()) => {
                self.accepted.add(signal, n);
                match (waiter, self.wait) {
                    (Some(w), Some(timeout)) => delivery_result(w, timeout).await,
                    _ => Ok(()),
                }
            }
            Err(ConsumeError::Refused(r)) => {
                self.refused.add(signal, n);
                Err(Rejection::Unavailable {
                    reason: r.reason,
                    retry_after: r.retry_after,
                })
            }
            Err(ConsumeError::Failed(reason)) => {
                self.refused.add(signal, n);
                Err(Rejection::Failed(reason))
            }
        }
    }
}

/// A protobuf request to pass on as its bytes, never decoded: when
/// `consumer` takes encoded batches (every stage after the receiver sends
/// OTLP as is) and the one-pass check ([`crate::convert::otlp_index`])
/// accepts it. None: decode it instead (a request the check refuses then
/// gets the decoder's own error). Traces only, so far.
pub(super) fn bytes_first(
    consumer: &BoxConsumer,
    signal: Signal,
    body: &bytes::Bytes,
) -> Option<EncodedBatch> {
    if signal != Signal::Traces || !consumer.takes_encoded() {
        return None;
    }
    let ix = crate::convert::otlp_index::index_traces(body).ok()?;
    Some(EncodedBatch {
        signal,
        items: ix.spans.len(),
        bytes: body.clone(),
    })
}

/// Waits for the data's acknowledgement and says how to answer.
async fn delivery_result(waiter: AckWaiter, timeout: Duration) -> Result<(), Rejection> {
    match tokio::time::timeout(timeout, waiter.wait()).await {
        Ok(AckOutcome::Delivered) => Ok(()),
        Ok(AckOutcome::Dropped) => Err(Rejection::Failed(
            "accepted, but an exporter dropped the data for good (see its log)".into(),
        )),
        Ok(AckOutcome::Abandoned) => Err(Rejection::Unavailable {
            reason: "spanwire shut down before the data was delivered".into(),
            retry_after: Duration::from_secs(1),
        }),
        Err(_) => Err(Rejection::Unavailable {
            reason: format!(
                "not delivered within delivery_timeout ({}s); it may still be",
                timeout.as_secs_f64()
            ),
            retry_after: Duration::from_secs(1),
        }),
    }
}
