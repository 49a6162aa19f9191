//! Joining and splitting batches by item count (spans, data points, log
//! records): the batcher's `send_batch_max_size` cuts and an exporter's
//! per-request limits. Resources and scopes are copied to both halves of a
//! split as needed.

use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, Metric, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

use crate::signal::{metric_points, Telemetry};

/// Appends `from` to `into` (same signal; a mismatch is ignored).
pub fn append(into: &mut Telemetry, from: Telemetry) {
    match (into, from) {
        (Telemetry::Traces(a), Telemetry::Traces(b)) => a.extend(b),
        (Telemetry::Metrics(a), Telemetry::Metrics(b)) => a.extend(b),
        (Telemetry::Logs(a), Telemetry::Logs(b)) => a.extend(b),
        _ => {}
    }
}

/// Removes the first `n` items from `data` and returns them as a batch of
/// their own; resources and scopes are copied to both halves as needed.
pub fn split_front(data: &mut Telemetry, n: usize) -> Telemetry {
    match data {
        Telemetry::Traces(rs) => Telemetry::Traces(split_traces(rs, n)),
        Telemetry::Logs(rl) => Telemetry::Logs(split_logs(rl, n)),
        Telemetry::Metrics(rm) => Telemetry::Metrics(split_metrics(rm, n)),
    }
}

/// Moves the longest prefix of `v` whose sizes fit in `budget` out of `v` (one
/// shift of the rest, not one per element) and charges it to the budget.
fn take_whole<T>(v: &mut Vec<T>, budget: &mut usize, size: impl Fn(&T) -> usize) -> Vec<T> {
    let mut used = 0;
    let mut k = 0;
    for item in v.iter() {
        let s = size(item);
        if used + s > *budget {
            break;
        }
        used += s;
        k += 1;
    }
    *budget -= used;
    v.drain(..k).collect()
}

fn split_traces(rs: &mut Vec<ResourceSpans>, mut n: usize) -> Vec<ResourceSpans> {
    let mut out = take_whole(rs, &mut n, |r| {
        r.scope_spans.iter().map(|s| s.spans.len()).sum()
    });
    // What is left of the budget is smaller than the next resource: split it.
    if let Some(first) = rs.first_mut().filter(|_| n > 0) {
        let mut scopes = take_whole(&mut first.scope_spans, &mut n, |s| s.spans.len());
        if let Some(s) = first.scope_spans.first_mut().filter(|_| n > 0) {
            scopes.push(ScopeSpans {
                scope: s.scope.clone(),
                spans: s.spans.drain(..n).collect(),
                schema_url: s.schema_url.clone(),
            });
        }
        out.push(ResourceSpans {
            resource: first.resource.clone(),
            scope_spans: scopes,
            schema_url: first.schema_url.clone(),
        });
    }
    out
}

fn split_logs(rl: &mut Vec<ResourceLogs>, mut n: usize) -> Vec<ResourceLogs> {
    let mut out = take_whole(rl, &mut n, |r| {
        r.scope_logs.iter().map(|s| s.log_records.len()).sum()
    });
    if let Some(first) = rl.first_mut().filter(|_| n > 0) {
        let mut scopes = take_whole(&mut first.scope_logs, &mut n, |s| s.log_records.len());
        if let Some(s) = first.scope_logs.first_mut().filter(|_| n > 0) {
            scopes.push(ScopeLogs {
                scope: s.scope.clone(),
                log_records: s.log_records.drain(..n).collect(),
                schema_url: s.schema_url.clone(),
            });
        }
        out.push(ResourceLogs {
            resource: first.resource.clone(),
            scope_logs: scopes,
            schema_url: first.schema_url.clone(),
        });
    }
    out
}

fn split_metric(m: &mut Metric, n: usize) -> Metric {
    let data = match &mut m.data {
        Some(Data::Gauge(g)) => Some(Data::Gauge(
            opentelemetry_proto::tonic::metrics::v1::Gauge {
                data_points: g.data_points.drain(..n).collect(),
            },
        )),
        Some(Data::Sum(s)) => Some(Data::Sum(opentelemetry_proto::tonic::metrics::v1::Sum {
            data_points: s.data_points.drain(..n).collect(),
            aggregation_temporality: s.aggregation_temporality,
            is_monotonic: s.is_monotonic,
        })),
        Some(Data::Histogram(h)) => Some(Data::Histogram(
            opentelemetry_proto::tonic::metrics::v1::Histogram {
                data_points: h.data_points.drain(..n).collect(),
                aggregation_temporality: h.aggregation_temporality,
            },
        )),
        Some(Data::ExponentialHistogram(h)) => Some(Data::ExponentialHistogram(
            opentelemetry_proto::tonic::metrics::v1::ExponentialHistogram {
                data_points: h.data_points.drain(..n).collect(),
                aggregation_temporality: h.aggregation_temporality,
            },
        )),
        Some(Data::Summary(s)) => Some(Data::Summary(
            opentelemetry_proto::tonic::metrics::v1::Summary {
                data_points: s.data_points.drain(..n).collect(),
            },
        )),
        None => None,
    };
    Metric {
        name: m.name.clone(),
        description: m.description.clone(),
        unit: m.unit.clone(),
        metadata: m.metadata.clone(),
        data,
    }
}

fn split_metrics(rm: &mut Vec<ResourceMetrics>, mut n: usize) -> Vec<ResourceMetrics> {
    let scope_points = |s: &ScopeMetrics| s.metrics.iter().map(metric_points).sum::<usize>();
    let mut out = take_whole(rm, &mut n, |r| {
        r.scope_metrics.iter().map(scope_points).sum()
    });
    if let Some(first) = rm.first_mut().filter(|_| n > 0) {
        let mut scopes = take_whole(&mut first.scope_metrics, &mut n, scope_points);
        if let Some(s) = first.scope_metrics.first_mut().filter(|_| n > 0) {
            let mut metrics = take_whole(&mut s.metrics, &mut n, metric_points);
            if let Some(m) = s.metrics.first_mut().filter(|_| n > 0) {
                metrics.push(split_metric(m, n));
            }
            scopes.push(ScopeMetrics {
                scope: s.scope.clone(),
                metrics,
                schema_url: s.schema_url.clone(),
            });
        }
        out.push(ResourceMetrics {
            resource: first.resource.clone(),
            scope_metrics: scopes,
            schema_url: first.schema_url.clone(),
        });
    }
    out
}
