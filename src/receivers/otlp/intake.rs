//! What the gRPC and HTTP sides of the OTLP receiver share: handing
//! data to the pipelines, counting it, and answering when
//! `wait_for_delivery` says: once it is delivered, or once it is in the
//! write-ahead log.

use std::sync::Arc;
use std::time::Duration;

use crate::component::ComponentId;
use crate::consumer::{Ack, AckOutcome, AckWaiter, Acks, BoxConsumer, ConsumeError, Consumers};
use crate::queue::wal::Wal;
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

/// When a request is answered (`wait_for_delivery`).
#[derive(Clone)]
pub(crate) enum Answer {
    /// Once the pipeline takes it.
    Accepted,
    /// Once it is delivered, waiting at most this long.
    Delivered(Duration),
    /// Once it is in this write-ahead log.
    Durable(Arc<Wal>),
}

/// Hands data to the pipelines and counts it.
#[derive(Clone)]
pub(crate) struct Intake {
    consumers: Consumers,
    answer: Answer,
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
        answer: Answer,
    ) -> Intake {
        let labels = [
            ("receiver", id.to_string()),
            ("transport", transport.to_string()),
        ];
        Intake {
            consumers,
            answer,
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

    /// Hands decoded `data` on, with the client `metadata` kept from its
    /// request (empty without `include_metadata`). `proto`: the request's
    /// protobuf bytes, if it came as protobuf (the write-ahead log keeps
    /// them; otherwise it encodes `data` once).
    pub(super) async fn deliver(
        &self,
        consumer: &BoxConsumer,
        data: Telemetry,
        proto: Option<bytes::Bytes>,
        metadata: Metadata,
    ) -> Result<(), Rejection> {
        let (signal, n) = (data.signal(), data.item_count());
        let log = self.is_durable().then(|| match proto {
            Some(bytes) => EncodedBatch {
                signal,
                items: n,
                bytes,
                shape: None,
            },
            None => crate::convert::otlp_proto::encode_batch(&data),
        });
        self.hand_on(signal, n, metadata, log, |acks| {
            consumer.consume(data, acks)
        })
        .await
    }

    fn is_durable(&self) -> bool {
        matches!(self.answer, Answer::Durable(_))
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
        let log = self.is_durable().then(|| data.clone());
        let done = self
            .hand_on(signal, n, metadata, log, |acks| {
                consumer.consume_encoded(data, acks)
            })
            .await;
        if done.is_ok() {
            self.bytes_first.increment(1);
        }
        done
    }

    /// Hands `n` items of `signal` on by `consume`, counts them, and
    /// answers as `wait_for_delivery` asks: `log` is the request to append
    /// to the write-ahead log first (with `durable`).
    async fn hand_on<T: std::fmt::Debug, F>(
        &self,
        signal: Signal,
        n: usize,
        metadata: Metadata,
        log: Option<EncodedBatch>,
        consume: impl FnOnce(Acks) -> F,
    ) -> Result<(), Rejection>
    where
        F: std::future::Future<Output = Result<(), ConsumeError<T>>>,
    {
        if n == 0 {
            return Ok(());
        }
        let (acks, waiter) = match (&self.answer, log) {
            (Answer::Delivered(timeout), _) => {
                let (ack, waiter) = Ack::new();
                (Acks::one(ack), Some((waiter, *timeout)))
            }
            (Answer::Durable(wal), Some(log)) => match wal.append(&log, &metadata).await {
                // The record leaves the log once the ack is settled; if the
                // pipeline refuses the data, at once (the sender retries).
                Ok(ack) => (Acks::one(ack), None),
                Err(e) => {
                    self.refused.add(signal, n);
                    return Err(Rejection::Unavailable {
                        reason: e.to_string(),
                        retry_after: Duration::from_secs(1),
                    });
                }
            },
            _ => (Acks::none(), None),
        };
        match consume(acks.with_metadata(metadata)).await {
            Ok(()) => {
                self.accepted.add(signal, n);
                match waiter {
                    Some((w, timeout)) => delivery_result(w, timeout).await,
                    None => Ok(()),
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
/// gets the decoder's own error).
pub(super) fn bytes_first(
    consumer: &BoxConsumer,
    signal: Signal,
    body: &bytes::Bytes,
) -> Option<EncodedBatch> {
    if !consumer.takes_encoded() {
        return None;
    }
    let ix = crate::convert::otlp_index::index_request(signal, body).ok()?;
    Some(EncodedBatch {
        signal,
        items: ix.item_count(),
        bytes: body.clone(),
        shape: Some(ix.shape),
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
