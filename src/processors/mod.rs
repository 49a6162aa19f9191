//! Processors: stages between receivers and exporters in one pipeline. Each
//! processor is one file here with its config and its
//! [`ProcessorFactory`](crate::component::ProcessorFactory); most are
//! synchronous transformations run inline in the sender's call, `batch` is
//! an asynchronous stage with its own bounded input and timer.
//! [`FACTORIES`] lists them.

pub mod attributes;
pub mod batch;
pub mod filter;
pub mod limits;
pub mod memory_limiter;
pub mod metricstransform;
pub mod resourcedetection;
pub mod tail_sampling;

use crate::component::{Factories, ProcessorDef};

/// The processor registry: every type a config may name under `processors:`.
pub static FACTORIES: Factories<dyn ProcessorDef> = &[
    &batch::BatchFactory,
    &memory_limiter::MemoryLimiterFactory,
    &attributes::ResourceFactory,
    &attributes::AttributesFactory,
    &limits::LimitsFactory,
    &resourcedetection::ResourceDetectionFactory,
    &filter::FilterFactory,
    &metricstransform::MetricsTransformFactory,
    &tail_sampling::TailSamplingFactory,
];
