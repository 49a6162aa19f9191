//! Receiver `otlp`: OTLP/gRPC (default `localhost:4317`) and OTLP/HTTP
//! (default `localhost:4318`, protobuf and JSON) for traces, metrics and logs.

mod config;
mod grpc;
mod http;
mod intake;

pub use config::{
    GrpcConfig, HttpConfig, OtlpReceiverConfig, Protocols, WaitFor, DEFAULT_DELIVERY_TIMEOUT,
};
use intake::{Answer, Intake};

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::component::{ComponentId, Factory, ReceiverContext, ReceiverFactory};
use crate::consumer::{AckOutcome, Acks, ConsumeError, Consumers, StartError};
use crate::queue::wal::{Replay, Wal};
use crate::settings::de::DeError;
use crate::signal::Signal;

/// The `otlp` receiver's factory.
pub struct OtlpReceiverFactory;

impl Factory for OtlpReceiverFactory {
    type Config = OtlpReceiverConfig;
    fn type_name(&self) -> &'static str {
        "otlp"
    }
    fn validate(&self, config: &OtlpReceiverConfig) -> Result<(), DeError> {
        config.validate()
    }
}

#[async_trait::async_trait]
impl ReceiverFactory for OtlpReceiverFactory {
    fn signals(&self, _config: &OtlpReceiverConfig) -> &'static [Signal] {
        &Signal::ALL
    }
    fn endpoints(&self, config: &OtlpReceiverConfig) -> Vec<String> {
        config.endpoints()
    }
    async fn start(
        &self,
        config: &OtlpReceiverConfig,
        ctx: ReceiverContext<'_>,
    ) -> Result<Vec<JoinHandle<()>>, StartError> {
        start(config, ctx.id, ctx.consumers, ctx.cancel).await
    }
}

/// Starts the enabled protocols (and, with `durable`, the write-ahead log
/// and the replay of what a previous run left in it).
async fn start(
    cfg: &OtlpReceiverConfig,
    id: &ComponentId,
    consumers: Consumers,
    cancel: CancellationToken,
) -> Result<Vec<JoinHandle<()>>, StartError> {
    let mut tasks = Vec::new();
    let wal = match (cfg.durable(), &cfg.wal.directory) {
        (true, Some(root)) => {
            let (wal, recovered) = Wal::open(&cfg.wal, root, &id.to_string())
                .map_err(|e| StartError::component(&id.to_string(), e.to_string()))?;
            if recovered.batches > 0 {
                // Not a serving task: it ends when the replay is handed on.
                drop(tokio::spawn(replay(
                    wal.clone(),
                    recovered.end_seq,
                    consumers.clone(),
                    cancel.clone(),
                )));
            }
            Some(wal)
        }
        _ => None,
    };
    let answer = |wait: WaitFor, timeout: Duration| match (wait, &wal) {
        (WaitFor::Delivered, _) => Answer::Delivered(timeout),
        (WaitFor::Durable, Some(wal)) => Answer::Durable(wal.clone()),
        _ => Answer::Accepted,
    };
    if let Some(g) = &cfg.protocols.grpc {
        let intake = Intake::new(
            id,
            "grpc",
            consumers.clone(),
            answer(g.wait_for_delivery, g.delivery_timeout),
        );
        tasks.push(grpc::start(g, intake, cancel.clone()).await?);
    }
    if let Some(h) = &cfg.protocols.http {
        let intake = Intake::new(
            id,
            "http",
            consumers.clone(),
            answer(h.wait_for_delivery, h.delivery_timeout),
        );
        tasks.push(http::start(h, intake, cancel).await?);
    }
    Ok(tasks)
}

/// Hands what a previous run left in the write-ahead log to the pipelines,
/// oldest first, waiting while they push back. Each record leaves the log
/// once delivered, as a new request's does.
async fn replay(wal: Arc<Wal>, end: u64, consumers: Consumers, cancel: CancellationToken) {
    let mut requests = 0u64;
    loop {
        let reading = wal.clone();
        let next = match tokio::task::spawn_blocking(move || reading.take_recovered(end)).await {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => break,
        };
        let Replay {
            batch,
            metadata,
            ack,
        } = next;
        let (signal, items) = (batch.signal, batch.items);
        let Some(consumer) = consumers.get(signal) else {
            wal.unreplayable(
                items,
                &format!("no {signal} pipeline takes this receiver's data now"),
            );
            continue;
        };
        let acks = Acks::one(ack).with_metadata(metadata);
        let offered = if consumer.takes_encoded() {
            offer(batch, acks, &cancel, |d, a| consumer.consume_encoded(d, a)).await
        } else {
            match crate::convert::otlp_proto::decode_request(signal, &batch.bytes) {
                Ok(data) => offer(data, acks, &cancel, |d, a| consumer.consume(d, a)).await,
                Err(e) => Err(format!("it does not decode: {e}")),
            }
        };
        match offered {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => wal.unreplayable(items, &e),
        }
        requests += 1;
    }
    tracing::info!(
        requests,
        pending_items = wal.pending_items(),
        "write-ahead log: replay handed on"
    );
}

/// Offers replayed `data` to `consume` until it is taken (true), waiting
/// as the pipeline asks between refusals (at least 10 ms, at most 1 s).
/// False: spanwire is stopping, and the record stays for the next run.
/// Err: the pipeline failed it for good.
async fn offer<T: std::fmt::Debug, F, Fut>(
    mut data: T,
    mut acks: Acks,
    cancel: &CancellationToken,
    consume: F,
) -> Result<bool, String>
where
    F: Fn(T, Acks) -> Fut,
    Fut: std::future::Future<Output = Result<(), ConsumeError<T>>>,
{
    loop {
        match consume(data, acks).await {
            Ok(()) => return Ok(true),
            Err(ConsumeError::Failed(e)) => return Err(e),
            Err(ConsumeError::Refused(r)) => {
                (data, acks) = (r.data, r.acks);
                let wait = r
                    .retry_after
                    .clamp(Duration::from_millis(10), Duration::from_secs(1));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => {
                        acks.mark(AckOutcome::Abandoned);
                        return Ok(false);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{de::from_node, yaml::parse};

    fn cfg(text: &str) -> Result<OtlpReceiverConfig, DeError> {
        let (n, _) = parse("t", text, &|_| None).unwrap();
        from_node::<OtlpReceiverConfig>(&n).and_then(|c| c.validate().map(|_| c))
    }

    #[test]
    fn empty_protocol_key_enables_defaults() {
        let c = cfg("protocols:\n  grpc:\n").unwrap();
        assert_eq!(c.protocols.grpc, Some(GrpcConfig::default()));
        assert_eq!(c.protocols.http, None);
        assert!(cfg("protocols: {}\n").is_err());
        assert!(cfg("protocols:\n  http:\n    endpoint: nohost\n").is_err());
    }

    #[test]
    fn wait_for_delivery_takes_a_bool_or_a_mode_and_durable_needs_a_directory() {
        let wait = |v: &str| {
            cfg(&format!(
                "protocols:\n  grpc:\n    wait_for_delivery: {v}\nwal: {{directory: /tmp/w}}\n"
            ))
            .map(|c| c.protocols.grpc.map(|g| g.wait_for_delivery))
        };
        assert_eq!(wait("false").unwrap(), Some(WaitFor::Accepted));
        assert_eq!(wait("true").unwrap(), Some(WaitFor::Delivered));
        assert_eq!(wait("delivered").unwrap(), Some(WaitFor::Delivered));
        assert_eq!(wait("durable").unwrap(), Some(WaitFor::Durable));
        let e = wait("maybe").unwrap_err().to_string();
        assert!(e.contains("`maybe` is not one of"), "{e}");
        let e = cfg("protocols:\n  http:\n    wait_for_delivery: durable\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs `wal.directory`"), "{e}");
        assert!(cfg("protocols:\n  http:\nwal: {max_size_mib: 0}\n").is_err());
    }
}
