//! One receiver feeding several pipelines.

use async_trait::async_trait;

use crate::consumer::{Acks, BoxConsumer, ConsumeError, Consumer};
use crate::convert::otlp_proto::decode_batch;
use crate::signal::{EncodedBatch, Telemetry};

/// Feeds several pipelines from one receiver: every pipeline gets a copy.
///
/// If one pipeline refuses, the refusal is returned after the others have
/// been offered their copy, so a retrying sender may duplicate data in the
/// pipelines that accepted; this is the OTel Collector's behaviour too.
pub struct PipelineFanout {
    targets: Vec<BoxConsumer>,
}

impl PipelineFanout {
    /// A fan-out over `targets`; with one target, use it directly instead.
    pub fn new(targets: Vec<BoxConsumer>) -> PipelineFanout {
        PipelineFanout { targets }
    }
}

#[async_trait]
impl Consumer for PipelineFanout {
    async fn consume(&self, data: Telemetry, acks: Acks) -> Result<(), ConsumeError> {
        let mut first_error = None;
        let n = self.targets.len();
        let mut data = Some(data);
        for (i, t) in self.targets.iter().enumerate() {
            let copy = if i + 1 == n {
                data.take()
            } else {
                data.as_ref().cloned()
            };
            let Some(copy) = copy else { break };
            if let Err(e) = t.consume(copy, acks.clone()).await {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// True when some pipeline takes bytes: the others then share one
    /// decode (see [`Consumer::consume_encoded`]).
    fn takes_encoded(&self) -> bool {
        self.targets.iter().any(|t| t.takes_encoded())
    }

    /// Pipelines that take bytes get the same bytes (shared, not copied);
    /// the batch is decoded once, only if some pipeline needs structs, and
    /// each of those gets a copy of it, as [`Consumer::consume`] gives them.
    async fn consume_encoded(
        &self,
        data: EncodedBatch,
        acks: Acks,
    ) -> Result<(), ConsumeError<EncodedBatch>> {
        let mut first_error = None;
        let mut structs = Vec::new();
        for t in &self.targets {
            if !t.takes_encoded() {
                structs.push(t);
            } else if let Err(e) = t.consume_encoded(data.clone(), acks.clone()).await {
                first_error.get_or_insert(e);
            }
        }
        if let Some((last, rest)) = structs.split_last() {
            let decoded = decode_batch(&data).map_err(ConsumeError::undecodable)?;
            for t in rest {
                if let Err(e) = t.consume(decoded.clone(), acks.clone()).await {
                    first_error.get_or_insert(e.for_bytes(data.clone()));
                }
            }
            if let Err(e) = last.consume(decoded, acks.clone()).await {
                first_error.get_or_insert(e.for_bytes(data.clone()));
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}
