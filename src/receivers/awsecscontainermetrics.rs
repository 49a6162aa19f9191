//! Receiver `awsecscontainermetrics`: task and container CPU, memory,
//! network and storage metrics of the ECS task spanwire runs in, read from
//! the task metadata endpoint v4 (`${ECS_CONTAINER_METADATA_URI_V4}/task`
//! and `/task/stats`) every `collection_interval`, converted by
//! [`crate::convert::ecs_stats`] with the Collector receiver's names.

use std::time::Duration;

use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::component::{Factory, ReceiverContext, ReceiverFactory};
use crate::consumer::{offer_until_taken, Acks, Backoff, Offered, StartError};
use crate::settings::de::DeError;
use crate::settings::types::duration;
use crate::signal::{Signal, Telemetry};

/// `receivers.awsecscontainermetrics`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AwsEcsContainerMetricsConfig {
    /// How often the endpoint is read.
    #[serde(default = "default_interval", with = "duration")]
    pub collection_interval: Duration,
}

fn default_interval() -> Duration {
    Duration::from_secs(20)
}

impl AwsEcsContainerMetricsConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        if self.collection_interval < Duration::from_millis(100) {
            return Err(DeError::custom(
                "collection_interval must be at least 100ms",
            ));
        }
        Ok(())
    }
}

/// The `awsecscontainermetrics` receiver's factory.
pub struct AwsEcsContainerMetricsFactory;

impl Factory for AwsEcsContainerMetricsFactory {
    type Config = AwsEcsContainerMetricsConfig;
    fn type_name(&self) -> &'static str {
        "awsecscontainermetrics"
    }
    fn validate(&self, config: &AwsEcsContainerMetricsConfig) -> Result<(), DeError> {
        config.validate()
    }
}

/// The environment variable the ECS agent sets in every container.
const ENDPOINT_VAR: &str = "ECS_CONTAINER_METADATA_URI_V4";

#[async_trait::async_trait]
impl ReceiverFactory for AwsEcsContainerMetricsFactory {
    fn signals(&self, _config: &AwsEcsContainerMetricsConfig) -> &'static [Signal] {
        &[Signal::Metrics]
    }
    async fn start(
        &self,
        config: &AwsEcsContainerMetricsConfig,
        ctx: ReceiverContext<'_>,
    ) -> Result<Vec<JoinHandle<()>>, StartError> {
        let id = ctx.id.to_string();
        let consumer = ctx
            .consumers
            .metrics
            .ok_or_else(|| StartError::component(&id, "no metrics pipeline uses it"))?;
        let base = std::env::var(ENDPOINT_VAR).map_err(|_| {
            StartError::component(
                &id,
                format!("{ENDPOINT_VAR} is not set: this receiver runs inside an ECS task"),
            )
        })?;
        let interval = config.collection_interval;
        let cancel = ctx.cancel.clone();
        let stop = ctx.stop.clone();
        tracing::info!(receiver = %id, endpoint = %base, ?interval, "awsecscontainermetrics reading the task metadata endpoint");
        let points = metrics::counter!("spanwire_receiver_accepted_metric_points_total", "receiver" => id.clone(), "transport" => "http");
        let failures = metrics::counter!("spanwire_receiver_ecs_metadata_failures_total", "receiver" => id.clone());
        Ok(vec![tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let read = async {
                    let task = crate::net::metadata::get_json(&format!("{base}/task"), &[]).await?;
                    let stats =
                        crate::net::metadata::get_json(&format!("{base}/task/stats"), &[]).await?;
                    Ok::<_, String>((task, stats))
                };
                let (task, stats) = match read.await {
                    Ok(r) => r,
                    Err(e) => {
                        failures.increment(1);
                        tracing::warn!(receiver = %id, error = %e, "awsecscontainermetrics: cannot read the task metadata endpoint");
                        continue;
                    }
                };
                let now = crate::telemetry::unix_nanos_now();
                let data =
                    Telemetry::Metrics(crate::convert::ecs_stats::convert(&task, &stats, now));
                let n = data.item_count() as u64;
                if n == 0 {
                    continue;
                }
                let backoff = Backoff {
                    initial: Duration::from_millis(50),
                    max: Duration::from_secs(2),
                    retry_after_cap: Duration::ZERO,
                };
                let offer = |d, a| consumer.consume(d, a);
                match offer_until_taken(data, Acks::none(), backoff, &stop, offer, |_| {}).await {
                    Offered::Taken => points.increment(n),
                    Offered::Stopped(_) => return,
                    Offered::Failed(reason) => {
                        tracing::error!(receiver = %id, %reason, "awsecscontainermetrics: pipeline failed metrics");
                    }
                }
            }
        })])
    }
}
