//! Processor `memory_limiter`: refuses data while the process's resident
//! memory is above the soft limit (`limit - spike_limit`), so receivers answer
//! UNAVAILABLE/503 and senders retry, instead of the daemon growing until it
//! is killed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::Deserialize;

use crate::component::{Admit, Factory, ProcessorContext, ProcessorFactory, Stage, SyncProcessor};
use crate::consumer::{ConsumeError, StartError};
use crate::settings::de::DeError;
use crate::settings::types::duration;
use crate::signal::{EncodedBatch, Metadata, Telemetry};

const MIB: u64 = 1024 * 1024;

/// `processors.memory_limiter`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryLimiterConfig {
    /// How often memory is measured.
    #[serde(with = "duration")]
    pub check_interval: Duration,
    /// Hard limit in MiB.
    pub limit_mib: Option<u64>,
    /// Headroom below the hard limit in MiB (default 20% of it); data is refused above `limit - spike`.
    pub spike_limit_mib: Option<u64>,
    /// Hard limit as a percentage of total (or cgroup) memory, instead of `limit_mib`.
    pub limit_percentage: Option<u64>,
    /// Headroom as a percentage of total memory.
    pub spike_limit_percentage: Option<u64>,
}

impl Default for MemoryLimiterConfig {
    fn default() -> Self {
        MemoryLimiterConfig {
            check_interval: Duration::from_secs(1),
            limit_mib: None,
            spike_limit_mib: None,
            limit_percentage: None,
            spike_limit_percentage: None,
        }
    }
}

impl MemoryLimiterConfig {
    /// Checks that exactly one way of setting the limit is used, and sane values.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        match (self.limit_mib, self.limit_percentage) {
            (None, None) => return Err(DeError::custom("set limit_mib or limit_percentage")),
            (Some(_), Some(_)) => {
                return Err(DeError::custom(
                    "set only one of limit_mib and limit_percentage",
                ))
            }
            (Some(0), _) => return Err(DeError::custom("limit_mib must be above 0")),
            (_, Some(p)) if p == 0 || p > 100 => {
                return Err(DeError::custom("limit_percentage must be 1..=100"))
            }
            _ => {}
        }
        if let (Some(l), Some(s)) = (self.limit_mib, self.spike_limit_mib) {
            if s >= l {
                return Err(DeError::custom("spike_limit_mib must be below limit_mib"));
            }
        }
        if let (Some(l), Some(s)) = (self.limit_percentage, self.spike_limit_percentage) {
            if s >= l {
                return Err(DeError::custom(
                    "spike_limit_percentage must be below limit_percentage",
                ));
            }
        }
        if self.check_interval.is_zero() {
            return Err(DeError::custom("check_interval must be above 0"));
        }
        Ok(())
    }

    /// `(hard, soft)` limits in bytes.
    pub fn limits(&self) -> (u64, u64) {
        let (hard, spike) = match self.limit_mib {
            Some(l) => (
                l * MIB,
                self.spike_limit_mib.map(|s| s * MIB).unwrap_or(l * MIB / 5),
            ),
            None => {
                let total = total_memory();
                let p = self.limit_percentage.unwrap_or(80);
                let hard = total / 100 * p;
                (
                    hard,
                    self.spike_limit_percentage
                        .map(|s| total / 100 * s)
                        .unwrap_or(hard / 5),
                )
            }
        };
        (hard, hard.saturating_sub(spike))
    }
}

/// Total memory available to the process: the cgroup limit if set, else MemTotal.
pub fn total_memory() -> u64 {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    match (cgroup, meminfo) {
        (Some(c), Some(m)) => c.min(m),
        (Some(c), None) => c,
        (None, Some(m)) => m,
        (None, None) => 1024 * MIB,
    }
}

struct State {
    over: AtomicBool,
    last_rss: AtomicU64,
    soft: u64,
}

/// The `memory_limiter` processor's factory.
pub struct MemoryLimiterFactory;

impl Factory for MemoryLimiterFactory {
    type Config = MemoryLimiterConfig;
    fn type_name(&self) -> &'static str {
        "memory_limiter"
    }
    fn validate(&self, config: &MemoryLimiterConfig) -> Result<(), DeError> {
        config.validate()
    }
}

impl ProcessorFactory for MemoryLimiterFactory {
    fn build(
        &self,
        config: &MemoryLimiterConfig,
        ctx: ProcessorContext<'_>,
    ) -> Result<Stage, StartError> {
        let limiter = MemoryLimiter::start(config, ctx.name.clone());
        Ok(ctx.inline(limiter))
    }
}

/// The running limiter.
pub struct MemoryLimiter {
    state: Arc<State>,
    name: String,
}

impl MemoryLimiter {
    /// Starts measuring every `check_interval` (the task ends when the limiter is dropped).
    pub fn start(cfg: &MemoryLimiterConfig, name: String) -> MemoryLimiter {
        let (hard, soft) = cfg.limits();
        let state = Arc::new(State {
            over: AtomicBool::new(false),
            last_rss: AtomicU64::new(0),
            soft,
        });
        check(&state, &name);
        tracing::info!(processor = %name, hard_limit_mib = hard / MIB, soft_limit_mib = soft / MIB, "memory limiter started");
        let weak: Weak<State> = Arc::downgrade(&state);
        let interval = cfg.check_interval;
        let task_name = name.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(state) = weak.upgrade() else { break };
                check(&state, &task_name);
            }
        });
        MemoryLimiter { state, name }
    }
}

fn check(state: &State, name: &str) {
    let Some(rss) = crate::telemetry::current_rss() else {
        return;
    };
    state.last_rss.store(rss, Ordering::Relaxed);
    let over = rss > state.soft;
    let was = state.over.swap(over, Ordering::Relaxed);
    if over && !was {
        tracing::warn!(processor = %name, rss_mib = rss / MIB, soft_limit_mib = state.soft / MIB,
            "memory above the soft limit; refusing data until it drops");
    } else if !over && was {
        tracing::info!(processor = %name, rss_mib = rss / MIB, "memory back below the soft limit; accepting data");
    }
}

impl SyncProcessor for MemoryLimiter {
    fn process(&self, data: Telemetry, _: &Metadata) -> Result<Telemetry, ConsumeError> {
        match self.check() {
            Ok(()) => Ok(data),
            Err((reason, retry)) => Err(ConsumeError::refused_without_acks(reason, retry, data)),
        }
    }

    fn passes_encoded(&self) -> bool {
        true
    }

    fn admit(&self, _data: &EncodedBatch) -> Admit {
        match self.check() {
            Ok(()) => Admit::Pass,
            Err((reason, retry)) => Admit::Refuse(reason, retry),
        }
    }
}

impl MemoryLimiter {
    /// Whether to take data now, else why not and when to retry.
    fn check(&self) -> Result<(), (String, Duration)> {
        if self.state.over.load(Ordering::Relaxed) {
            let rss = self.state.last_rss.load(Ordering::Relaxed);
            return Err((
                format!(
                    "{}: memory {} MiB is above the soft limit {} MiB",
                    self.name,
                    rss / MIB,
                    self.state.soft / MIB
                ),
                Duration::from_secs(1),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_from_mib_and_default_spike() {
        let c = MemoryLimiterConfig {
            limit_mib: Some(100),
            ..Default::default()
        };
        assert_eq!(c.limits(), (100 * MIB, 80 * MIB));
        assert!(c.validate().is_ok());
        assert!(MemoryLimiterConfig::default().validate().is_err());
    }

    #[tokio::test]
    async fn refuses_when_over_the_soft_limit() {
        // A 1 MiB limit is always exceeded by a running test process.
        let c = MemoryLimiterConfig {
            limit_mib: Some(1),
            ..Default::default()
        };
        let l = MemoryLimiter::start(&c, "memory_limiter".into());
        let r = l.process(Telemetry::Traces(vec![]), &Metadata::default());
        assert!(matches!(r, Err(ConsumeError::Refused(_))));
        let c = MemoryLimiterConfig {
            limit_mib: Some(1 << 20),
            ..Default::default()
        };
        let l = MemoryLimiter::start(&c, "memory_limiter".into());
        assert!(l
            .process(Telemetry::Traces(vec![]), &Metadata::default())
            .is_ok());
    }
}
