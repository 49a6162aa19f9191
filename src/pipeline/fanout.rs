//! One receiver feeding several pipelines.

use async_trait::async_trait;

use crate::consumer::{Acks, BoxConsumer, ConsumeError, Consumer};
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

    fn takes_encoded(&self) -> bool {
        self.targets.iter().all(|t| t.takes_encoded())
    }

    async fn consume_encoded(
        &self,
        data: EncodedBatch,
        acks: Acks,
    ) -> Result<(), ConsumeError<EncodedBatch>> {
        // Each pipeline gets the same bytes (shared, not copied).
        let mut first_error = None;
        for t in &self.targets {
            if let Err(e) = t.consume_encoded(data.clone(), acks.clone()).await {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}
