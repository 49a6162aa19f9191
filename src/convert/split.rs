//! Joining and splitting batches by item count (spans, data points, log
//! records): the batcher's `send_batch_max_size` cuts and an exporter's
//! per-request limits (count, item size, time range). Resources and scopes are copied to both halves of a
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

/// Removes the spans or log records whose own encoded size is over
/// `max_bytes` (metrics are left alone) and returns how many it removed
/// and the size of the largest. Scopes and resources left empty go too.
pub fn remove_items_over(data: &mut Telemetry, max_bytes: usize) -> (usize, usize) {
    use prost::Message;
    let mut removed = 0;
    let mut largest = 0;
    let mut check = |len: usize| {
        if len > max_bytes {
            removed += 1;
            largest = largest.max(len);
            false
        } else {
            true
        }
    };
    match data {
        Telemetry::Traces(rs) => {
            for r in rs.iter_mut() {
                for s in &mut r.scope_spans {
                    s.spans.retain(|sp| check(sp.encoded_len()));
                }
                r.scope_spans.retain(|s| !s.spans.is_empty());
            }
            rs.retain(|r| !r.scope_spans.is_empty());
        }
        Telemetry::Logs(rl) => {
            for r in rl.iter_mut() {
                for s in &mut r.scope_logs {
                    s.log_records.retain(|l| check(l.encoded_len()));
                }
                r.scope_logs.retain(|s| !s.log_records.is_empty());
            }
            rl.retain(|r| !r.scope_logs.is_empty());
        }
        Telemetry::Metrics(_) => {}
    }
    (removed, largest)
}

/// Whether some span or log record of `data` encodes to more than `max_bytes`.
pub fn has_item_over(data: &Telemetry, max_bytes: usize) -> bool {
    use prost::Message;
    match data {
        Telemetry::Traces(rs) => rs
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .any(|sp| sp.encoded_len() > max_bytes),
        Telemetry::Logs(rl) => rl
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
            .any(|l| l.encoded_len() > max_bytes),
        Telemetry::Metrics(_) => false,
    }
}

/// Nanoseconds between the earliest and the latest item time of `data` (see
/// [`by_time_window`]); 0 for metrics.
pub fn time_extent(data: &Telemetry) -> u64 {
    let times = item_times(data);
    let known = times.iter().copied().filter(|t| *t != 0);
    match (known.clone().min(), known.max()) {
        (Some(min), Some(max)) => max - min,
        _ => 0,
    }
}

/// The time of each span (start) or log record (time, else observed time).
fn item_times(data: &Telemetry) -> Vec<u64> {
    match data {
        Telemetry::Traces(rs) => rs
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.start_time_unix_nano)
            .collect(),
        Telemetry::Logs(rl) => rl
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
            .map(log_time)
            .collect(),
        Telemetry::Metrics(_) => Vec::new(),
    }
}

fn log_time(l: &opentelemetry_proto::tonic::logs::v1::LogRecord) -> u64 {
    if l.time_unix_nano != 0 {
        l.time_unix_nano
    } else {
        l.observed_time_unix_nano
    }
}

/// Splits `data` so that in each part the items' times (span start, log
/// record time or else observed time) lie within `window_ns` of the part's
/// earliest: parts are consecutive windows from the batch's earliest time,
/// in time order, each keeping its items' resources and scopes. Items
/// without a time (0) go with the first part. Metrics are returned whole.
/// Most batches span far less than a window and come back as one part,
/// without a copy.
pub fn by_time_window(data: Telemetry, window_ns: u64) -> Vec<Telemetry> {
    if matches!(data, Telemetry::Metrics(_)) {
        return vec![data];
    }
    let times = item_times(&data);
    let known = times.iter().copied().filter(|t| *t != 0);
    let (Some(min), Some(max)) = (known.clone().min(), known.max()) else {
        return vec![data];
    };
    if window_ns == 0 || max - min <= window_ns {
        return vec![data];
    }
    let window = |t: u64| t.saturating_sub(min) / window_ns.max(1);
    let mut parts: std::collections::BTreeMap<u64, Telemetry> = std::collections::BTreeMap::new();
    match data {
        Telemetry::Traces(rs) => {
            for mut r in rs {
                let mut by: std::collections::BTreeMap<u64, Vec<ScopeSpans>> = Default::default();
                for mut s in std::mem::take(&mut r.scope_spans) {
                    let mut groups: std::collections::BTreeMap<u64, Vec<_>> = Default::default();
                    for sp in std::mem::take(&mut s.spans) {
                        groups
                            .entry(window(sp.start_time_unix_nano))
                            .or_default()
                            .push(sp);
                    }
                    for (w, spans) in groups {
                        by.entry(w)
                            .or_default()
                            .push(ScopeSpans { spans, ..s.clone() });
                    }
                }
                for (w, scope_spans) in by {
                    let part = parts
                        .entry(w)
                        .or_insert_with(|| Telemetry::Traces(Vec::new()));
                    if let Telemetry::Traces(v) = part {
                        v.push(ResourceSpans {
                            scope_spans,
                            ..r.clone()
                        });
                    }
                }
            }
        }
        Telemetry::Logs(rl) => {
            for mut r in rl {
                let mut by: std::collections::BTreeMap<u64, Vec<ScopeLogs>> = Default::default();
                for mut s in std::mem::take(&mut r.scope_logs) {
                    let mut groups: std::collections::BTreeMap<u64, Vec<_>> = Default::default();
                    for l in std::mem::take(&mut s.log_records) {
                        groups.entry(window(log_time(&l))).or_default().push(l);
                    }
                    for (w, log_records) in groups {
                        by.entry(w).or_default().push(ScopeLogs {
                            log_records,
                            ..s.clone()
                        });
                    }
                }
                for (w, scope_logs) in by {
                    let part = parts
                        .entry(w)
                        .or_insert_with(|| Telemetry::Logs(Vec::new()));
                    if let Telemetry::Logs(v) = part {
                        v.push(ResourceLogs {
                            scope_logs,
                            ..r.clone()
                        });
                    }
                }
            }
        }
        Telemetry::Metrics(_) => {}
    }
    parts.into_values().collect()
}

#[cfg(test)]
mod window_tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::Span;

    const HOUR: u64 = 3_600_000_000_000;

    fn spans(starts: &[u64]) -> Telemetry {
        Telemetry::Traces(vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: starts
                    .iter()
                    .enumerate()
                    .map(|(i, t)| Span {
                        name: format!("s{i}"),
                        start_time_unix_nano: *t,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }])
    }

    fn starts(t: &Telemetry) -> Vec<u64> {
        let Telemetry::Traces(rs) = t else { panic!() };
        rs.iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.start_time_unix_nano)
            .collect()
    }

    #[test]
    fn spans_further_apart_than_the_window_go_to_separate_parts() {
        let base = 1_700_000_000 * 1_000_000_000u64;
        let t = spans(&[
            base + 30 * HOUR,
            base,
            base + HOUR,
            base + 50 * HOUR,
            base + 2 * HOUR,
        ]);
        let parts = by_time_window(t, 24 * HOUR);
        let got: Vec<Vec<u64>> = parts.iter().map(starts).collect();
        assert_eq!(
            got,
            vec![
                vec![base, base + HOUR, base + 2 * HOUR],
                vec![base + 30 * HOUR],
                vec![base + 50 * HOUR],
            ]
        );
        for p in &parts {
            let s = starts(p);
            assert!(s.iter().max().unwrap() - s.iter().min().unwrap() <= 24 * HOUR);
        }
        // Within one window: one part, as it was.
        let t = spans(&[base, base + 23 * HOUR]);
        assert_eq!(by_time_window(t.clone(), 24 * HOUR), vec![t]);
    }

    #[test]
    fn items_over_the_size_limit_are_removed_and_counted() {
        let mut t = spans(&[1, 2, 3]);
        if let Telemetry::Traces(rs) = &mut t {
            rs[0].scope_spans[0].spans[1].name = "x".repeat(5000);
        }
        let (removed, largest) = remove_items_over(&mut t, 1000);
        assert_eq!(removed, 1);
        assert!(largest > 5000);
        assert_eq!(starts(&t), vec![1, 3]);
    }
}
