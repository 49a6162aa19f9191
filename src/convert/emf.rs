//! OTLP metrics → CloudWatch Embedded Metric Format (EMF) log events.
//!
//! Each event is one JSON object: the `_aws` metadata (timestamp and
//! `CloudWatchMetrics` directives, version 1 of the format), every label as a
//! string member and every metric as a number (or a histogram object) member.
//! Points of one resource with the same timestamp and labels share an event.
//!
//! What this module guarantees that CloudWatch requires:
//! - at most [`MAX_METRICS_PER_DIRECTIVE`] metrics per directive (and per
//!   event), at most [`MAX_DIMENSIONS_PER_SET`] keys per dimension set (a set
//!   over more labels is left out and counted), dimension values cut to 1024
//!   characters, at most [`MAX_VALUES_PER_METRIC`] histogram values;
//! - no NaN or infinity (such points are dropped and counted);
//! - no event over [`crate::convert::log_events::MAX_EVENT_BYTES`] (its
//!   metrics are split over several events).
//!
//! Cumulative data becomes deltas ([`Deltas`]), which is what CloudWatch
//! sums: monotonic sums, histograms and summaries. A series' first point is
//! sent whole when the series started after `since` (so nothing it counted
//! was sent before); otherwise it only sets the baseline. A reset (the value
//! or count goes down, or the start time moves) sends the new value whole:
//! everything it holds happened after the reset.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, ResourceMetrics,
    SummaryDataPoint,
};
use regex::Regex;
use serde::Deserialize;

use crate::convert::json::{escape, Writer};
use crate::convert::log_events::{LogEvent, MAX_EVENT_BYTES};
use crate::convert::prometheus::label_value;

/// Most metric definitions in one directive (the EMF specification's limit).
pub const MAX_METRICS_PER_DIRECTIVE: usize = 100;
/// Most keys in one dimension set (CloudWatch's limit).
pub const MAX_DIMENSIONS_PER_SET: usize = 30;
/// Most values in one metric's value array.
pub const MAX_VALUES_PER_METRIC: usize = 100;
/// Longest dimension value CloudWatch takes, in characters.
pub const MAX_DIMENSION_VALUE_CHARS: usize = 1024;
/// Longest namespace, in characters.
pub const MAX_NAMESPACE_CHARS: usize = 255;

/// Which extra, smaller dimension sets each metric also gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum DimensionRollup {
    /// Also the set with no dimensions and one set per single label (default).
    #[default]
    ZeroAndSingleDimensionRollup,
    /// Also one set per single label.
    SingleDimensionRollupOnly,
    /// Only the full label set (and declared sets).
    NoDimensionRollup,
}

/// One `label_matchers` entry of a metric declaration: the values of
/// `label_names`, joined by `separator`, must match `regex` (whole string).
#[derive(Debug, Clone)]
pub struct LabelMatcher {
    /// Labels whose values are joined.
    pub label_names: Vec<String>,
    /// Joiner of the values.
    pub separator: String,
    /// Anchored pattern.
    pub regex: Regex,
}

impl LabelMatcher {
    fn matches(&self, labels: &[(String, String)]) -> bool {
        let mut joined = String::new();
        for (i, name) in self.label_names.iter().enumerate() {
            if i > 0 {
                joined.push_str(&self.separator);
            }
            match labels.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
                Ok(j) => joined.push_str(&labels[j].1),
                Err(_) => return false,
            }
        }
        self.regex.is_match(&joined)
    }
}

/// A `metric_declarations` entry: which metrics it selects and the dimension
/// sets they get. When any declaration is configured, metrics no declaration
/// selects are not sent.
#[derive(Debug, Clone)]
pub struct MetricDeclaration {
    /// Dimension sets, each sorted; a set is used when the point has all its labels.
    pub dimensions: Vec<Vec<String>>,
    /// Anchored patterns on the metric name; one must match.
    pub metric_name_selectors: Vec<Regex>,
    /// Label conditions; with any, one must match.
    pub label_matchers: Vec<LabelMatcher>,
}

impl MetricDeclaration {
    fn selects(&self, name: &str, labels: &[(String, String)]) -> bool {
        self.metric_name_selectors.iter().any(|r| r.is_match(name))
            && (self.label_matchers.is_empty()
                || self.label_matchers.iter().any(|m| m.matches(labels)))
    }
}

/// Conversion settings.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The CloudWatch namespace; `None` takes `service.namespace/service.name`
    /// from the resource, or `default`.
    pub namespace: Option<String>,
    /// Extra dimension sets.
    pub rollup: DimensionRollup,
    /// Filters and dimension sets; empty: every metric, all labels as one set.
    pub declarations: Vec<MetricDeclaration>,
    /// Resource attributes become labels too.
    pub resource_to_telemetry: bool,
    /// 1 for high-resolution metrics, 60 (default) otherwise.
    pub storage_resolution: u32,
}

/// The events made from one `ResourceMetrics`.
#[derive(Debug)]
pub struct ResourceEvents<'a> {
    /// Its resource attributes (for log group and stream placeholders).
    pub resource: &'a [KeyValue],
    /// The EMF events.
    pub events: Vec<LogEvent>,
}

/// What a conversion counted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Data points read.
    pub points: usize,
    /// Metric values written into events.
    pub values: usize,
    /// Cumulative points that only set a baseline (their series started
    /// before `since`, or was new with unknown start).
    pub baselines: usize,
    /// Cumulative series found reset (their new value sent whole).
    pub resets: usize,
    /// Cumulative points older than one already converted (batches exported
    /// out of order); the later delta already holds what they counted.
    pub out_of_order: usize,
    /// Points no metric declaration selects.
    pub filtered: usize,
    /// Points with NaN or infinite values (dropped).
    pub non_finite: usize,
    /// Histogram/summary deltas with nothing in them (not sent).
    pub empty: usize,
    /// Points whose metric name equals a label key (dropped).
    pub name_collisions: usize,
    /// Points too large for one log event even alone (dropped).
    pub too_large: usize,
    /// Dimension sets left out for having more than 30 keys.
    pub dimension_sets_dropped: usize,
}

impl Stats {
    /// The delta of a cumulative step, counting resets, baselines and late points.
    fn take<T>(&mut self, step: Step<T>) -> Option<T> {
        match step {
            Step::Delta(d, reset) => {
                self.resets += reset as usize;
                Some(d)
            }
            Step::Baseline => {
                self.baselines += 1;
                None
            }
            Step::Stale => {
                self.out_of_order += 1;
                None
            }
        }
    }

    /// Points dropped for a reason worth an error log.
    pub fn dropped(&self) -> usize {
        self.non_finite + self.name_collisions + self.too_large
    }
}

/// All events of a batch.
#[derive(Debug)]
pub struct Converted<'a> {
    /// Per resource.
    pub groups: Vec<ResourceEvents<'a>>,
    /// Counts.
    pub stats: Stats,
}

// ---------------------------------------------------------------------------
// Cumulative → delta.

#[derive(Debug, Clone)]
enum Prev {
    Number {
        start: u64,
        value: f64,
    },
    Hist {
        start: u64,
        count: u64,
        sum: f64,
        bounds: Vec<f64>,
        buckets: Vec<u64>,
    },
    Exp {
        start: u64,
        count: u64,
        sum: f64,
        scale: i32,
        zero: u64,
        positive: BTreeMap<i32, u64>,
        negative: BTreeMap<i32, u64>,
    },
    Summary {
        start: u64,
        count: u64,
        sum: f64,
    },
}

struct Entry {
    prev: Prev,
    /// When the entry was last updated (for the TTL).
    seen_ns: u64,
    /// The point time of `prev`.
    time: u64,
}

/// The last cumulative value of every series, to turn cumulative data into
/// deltas. Bounded: series unseen for `ttl_ns` are forgotten, and past
/// `max_series` the oldest half is.
pub struct Deltas {
    series: HashMap<String, Entry>,
    since_ns: u64,
    ttl_ns: u64,
    max_series: usize,
    last_sweep_ns: u64,
}

/// What a cumulative point yields.
enum Step<T> {
    /// Send this delta; `reset` when the series restarted.
    Delta(T, bool),
    /// Baseline only.
    Baseline,
    /// Older than the point already seen (batches exported out of order):
    /// what it counted is already in a delta sent, so it is skipped.
    Stale,
}

impl Deltas {
    /// `since_ns`: series that started at or after this time (Unix ns) are
    /// new to the world, so their first value is sent whole.
    pub fn new(since_ns: u64, ttl_ns: u64, max_series: usize) -> Deltas {
        Deltas {
            series: HashMap::new(),
            since_ns,
            ttl_ns,
            max_series: max_series.max(1),
            last_sweep_ns: since_ns,
        }
    }

    /// Series tracked.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// True when no series is tracked.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    fn sweep(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.last_sweep_ns) >= self.ttl_ns / 4
            || self.series.len() > self.max_series
        {
            let ttl = self.ttl_ns;
            self.series
                .retain(|_, e| now_ns.saturating_sub(e.seen_ns) < ttl);
            if self.series.len() > self.max_series {
                let mut seen: Vec<u64> = self.series.values().map(|e| e.seen_ns).collect();
                seen.sort_unstable();
                let cut = seen[seen.len() / 2];
                self.series.retain(|_, e| e.seen_ns > cut);
            }
            self.last_sweep_ns = now_ns;
        }
    }

    fn stale(&self, key: &str, t: u64) -> bool {
        t != 0 && self.series.get(key).is_some_and(|e| t < e.time)
    }

    /// `first_whole`: a new series' first value may be sent whole.
    fn first_whole(&self, start: u64) -> bool {
        start != 0 && start >= self.since_ns
    }

    fn number(&mut self, key: String, start: u64, t: u64, value: f64, now: u64) -> Step<f64> {
        if self.stale(&key, t) {
            return Step::Stale;
        }
        let first_whole = self.first_whole(start);
        let new = Prev::Number { start, value };
        match self.series.insert(
            key,
            Entry {
                prev: new,
                seen_ns: now,
                time: t,
            },
        ) {
            Some(Entry {
                prev:
                    Prev::Number {
                        start: ps,
                        value: pv,
                    },
                ..
            }) => {
                if value < pv || (start != 0 && ps != 0 && start != ps) {
                    Step::Delta(value, true)
                } else {
                    Step::Delta(value - pv, false)
                }
            }
            _ if first_whole => Step::Delta(value, false),
            _ => Step::Baseline,
        }
    }

    fn histogram(&mut self, key: String, p: &HistogramDataPoint, now: u64) -> Step<HistDelta> {
        if self.stale(&key, p.time_unix_nano) {
            return Step::Stale;
        }
        let first_whole = self.first_whole(p.start_time_unix_nano);
        let whole = HistDelta::whole(p);
        let (buckets, sum) = (&whole.buckets, whole.sum);
        let old = self.series.insert(
            key,
            Entry {
                prev: Prev::Hist {
                    start: p.start_time_unix_nano,
                    count: p.count,
                    sum,
                    bounds: p.explicit_bounds.clone(),
                    buckets: buckets.clone(),
                },
                seen_ns: now,
                time: p.time_unix_nano,
            },
        );
        match old {
            Some(Entry {
                prev:
                    Prev::Hist {
                        start: ps,
                        count: pc,
                        sum: psum,
                        bounds: pb,
                        buckets: pbk,
                    },
                ..
            }) => {
                let restarted =
                    p.start_time_unix_nano != 0 && ps != 0 && p.start_time_unix_nano != ps;
                if pb != p.explicit_bounds {
                    // New bucket layout: nothing to subtract from.
                    return Step::Baseline;
                }
                let went_down = p.count < pc || buckets.iter().zip(&pbk).any(|(n, o)| n < o);
                if restarted || went_down {
                    return Step::Delta(whole, true);
                }
                let d: Vec<u64> = buckets.iter().zip(&pbk).map(|(n, o)| n - o).collect();
                let (min, max) = bucket_range(&p.explicit_bounds, &d, p.min, p.max);
                Step::Delta(
                    HistDelta {
                        count: p.count - pc,
                        sum: sum - psum,
                        buckets: d,
                        min,
                        max,
                    },
                    false,
                )
            }
            _ if first_whole => Step::Delta(whole, false),
            _ => Step::Baseline,
        }
    }

    fn exponential(
        &mut self,
        key: String,
        p: &ExponentialHistogramDataPoint,
        now: u64,
    ) -> Step<ExpDelta> {
        if self.stale(&key, p.time_unix_nano) {
            return Step::Stale;
        }
        let first_whole = self.first_whole(p.start_time_unix_nano);
        let whole = ExpDelta::whole(p);
        let (positive, negative, sum) = (&whole.positive, &whole.negative, whole.sum);
        let old = self.series.insert(
            key,
            Entry {
                prev: Prev::Exp {
                    start: p.start_time_unix_nano,
                    count: p.count,
                    sum,
                    scale: p.scale,
                    zero: p.zero_count,
                    positive: positive.clone(),
                    negative: negative.clone(),
                },
                seen_ns: now,
                time: p.time_unix_nano,
            },
        );
        match old {
            Some(Entry {
                prev:
                    Prev::Exp {
                        start: ps,
                        count: pc,
                        sum: psum,
                        scale: pscale,
                        zero: pzero,
                        positive: ppos,
                        negative: pneg,
                    },
                ..
            }) => {
                let restarted =
                    p.start_time_unix_nano != 0 && ps != 0 && p.start_time_unix_nano != ps;
                if restarted || p.count < pc || p.zero_count < pzero {
                    return Step::Delta(whole, true);
                }
                // Compare at the coarser of the two scales.
                let scale = p.scale.min(pscale);
                let newp = rescale(positive, p.scale - scale);
                let newn = rescale(negative, p.scale - scale);
                let oldp = rescale(&ppos, pscale - scale);
                let oldn = rescale(&pneg, pscale - scale);
                let (Some(dp), Some(dn)) = (subtract(&newp, &oldp), subtract(&newn, &oldn)) else {
                    return Step::Delta(whole, true);
                };
                Step::Delta(
                    ExpDelta {
                        count: p.count - pc,
                        sum: sum - psum,
                        scale,
                        zero: p.zero_count - pzero,
                        positive: dp,
                        negative: dn,
                        min: None,
                        max: None,
                    },
                    false,
                )
            }
            _ if first_whole => Step::Delta(whole, false),
            _ => Step::Baseline,
        }
    }

    fn summary(&mut self, key: String, p: &SummaryDataPoint, now: u64) -> Step<(u64, f64)> {
        if self.stale(&key, p.time_unix_nano) {
            return Step::Stale;
        }
        let first_whole = self.first_whole(p.start_time_unix_nano);
        let old = self.series.insert(
            key,
            Entry {
                prev: Prev::Summary {
                    start: p.start_time_unix_nano,
                    count: p.count,
                    sum: p.sum,
                },
                seen_ns: now,
                time: p.time_unix_nano,
            },
        );
        match old {
            Some(Entry {
                prev:
                    Prev::Summary {
                        start: ps,
                        count: pc,
                        sum: psum,
                    },
                ..
            }) => {
                let restarted =
                    p.start_time_unix_nano != 0 && ps != 0 && p.start_time_unix_nano != ps;
                if restarted || p.count < pc {
                    Step::Delta((p.count, p.sum), true)
                } else {
                    Step::Delta((p.count - pc, p.sum - psum), false)
                }
            }
            _ if first_whole => Step::Delta((p.count, p.sum), false),
            _ => Step::Baseline,
        }
    }
}

/// A histogram's delta.
#[derive(Debug, Clone, PartialEq)]
struct HistDelta {
    count: u64,
    sum: f64,
    buckets: Vec<u64>,
    min: Option<f64>,
    max: Option<f64>,
}

impl HistDelta {
    /// The point's own counts (a delta point, or a cumulative one sent whole).
    fn whole(p: &HistogramDataPoint) -> HistDelta {
        let mut buckets = p.bucket_counts.clone();
        buckets.resize(p.explicit_bounds.len() + 1, 0);
        HistDelta {
            count: p.count,
            sum: p.sum.unwrap_or(0.0),
            buckets,
            min: p.min,
            max: p.max,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct ExpDelta {
    count: u64,
    sum: f64,
    scale: i32,
    zero: u64,
    positive: BTreeMap<i32, u64>,
    negative: BTreeMap<i32, u64>,
    min: Option<f64>,
    max: Option<f64>,
}

impl ExpDelta {
    /// The point's own counts (a delta point, or a cumulative one sent whole).
    fn whole(p: &ExponentialHistogramDataPoint) -> ExpDelta {
        ExpDelta {
            count: p.count,
            sum: p.sum.unwrap_or(0.0),
            scale: p.scale,
            zero: p.zero_count,
            positive: exp_map(p.positive.as_ref(), 0),
            negative: exp_map(p.negative.as_ref(), 0),
            min: p.min,
            max: p.max,
        }
    }
}

/// The smallest and largest value a delta's buckets allow: the bounds of its
/// first and last non-empty buckets, tightened by the cumulative min/max.
fn bucket_range(
    bounds: &[f64],
    counts: &[u64],
    min: Option<f64>,
    max: Option<f64>,
) -> (Option<f64>, Option<f64>) {
    let first = counts.iter().position(|&c| c > 0);
    let last = counts.iter().rposition(|&c| c > 0);
    let lo = first.and_then(|i| {
        if i == 0 {
            min
        } else {
            let b = bounds[i - 1];
            Some(min.map_or(b, |m| m.max(b)))
        }
    });
    let hi = last.and_then(|i| {
        if i >= bounds.len() {
            max
        } else {
            let b = bounds[i];
            Some(max.map_or(b, |m| m.min(b)))
        }
    });
    (lo, hi)
}

fn exp_map(b: Option<&Buckets>, shift: i32) -> BTreeMap<i32, u64> {
    let mut m = BTreeMap::new();
    if let Some(b) = b {
        for (i, &c) in b.bucket_counts.iter().enumerate() {
            if c > 0 {
                let idx = (b.offset as i64 + i as i64) >> shift;
                *m.entry(idx as i32).or_insert(0) += c;
            }
        }
    }
    m
}

fn rescale(m: &BTreeMap<i32, u64>, shift: i32) -> BTreeMap<i32, u64> {
    if shift <= 0 {
        return m.clone();
    }
    let mut out = BTreeMap::new();
    for (&i, &c) in m {
        *out.entry(i >> shift).or_insert(0) += c;
    }
    out
}

/// `new - old` bucket by bucket; `None` when a bucket went down.
fn subtract(new: &BTreeMap<i32, u64>, old: &BTreeMap<i32, u64>) -> Option<BTreeMap<i32, u64>> {
    let mut out = BTreeMap::new();
    for (i, &o) in old {
        if new.get(i).copied().unwrap_or(0) < o {
            return None;
        }
    }
    for (&i, &n) in new {
        let d = n - old.get(&i).copied().unwrap_or(0);
        if d > 0 {
            out.insert(i, d);
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// Values.

/// A metric's value in an event.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(i64),
    Float(f64),
    /// Values/Counts with the statistic set.
    Dist {
        values: Vec<(f64, f64)>,
        min: f64,
        max: f64,
        count: u64,
        sum: f64,
    },
}

impl Value {
    fn finite(&self) -> bool {
        match self {
            Value::Int(_) => true,
            Value::Float(f) => f.is_finite(),
            Value::Dist {
                values,
                min,
                max,
                sum,
                ..
            } => {
                min.is_finite()
                    && max.is_finite()
                    && sum.is_finite()
                    && values.iter().all(|(v, c)| v.is_finite() && c.is_finite())
            }
        }
    }

    fn write(&self, out: &mut String) {
        match self {
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => push_f64(out, *f),
            Value::Dist {
                values,
                min,
                max,
                count,
                sum,
            } => {
                out.push_str("{\"Values\":[");
                for (i, (v, _)) in values.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_f64(out, *v);
                }
                out.push_str("],\"Counts\":[");
                for (i, (_, c)) in values.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_f64(out, *c);
                }
                out.push_str("],\"Max\":");
                push_f64(out, *max);
                out.push_str(",\"Min\":");
                push_f64(out, *min);
                let _ = write!(out, ",\"Count\":{count},\"Sum\":");
                push_f64(out, *sum);
                out.push('}');
            }
        }
    }
}

/// Writes a finite double in the shortest form that reads back the same.
fn push_f64(out: &mut String, f: f64) {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        let _ = write!(out, "{}", f as i64);
    } else {
        let mut b = ryu::Buffer::new();
        out.push_str(b.format_finite(f));
    }
}

/// (value, count) pairs, at most [`MAX_VALUES_PER_METRIC`]: neighbours are
/// merged (count-weighted mean) when there are more.
fn cap_values(mut v: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    v.retain(|(_, c)| *c > 0.0);
    if v.len() <= MAX_VALUES_PER_METRIC {
        return v;
    }
    let per = v.len().div_ceil(MAX_VALUES_PER_METRIC);
    v.chunks(per)
        .map(|g| {
            let n: f64 = g.iter().map(|(_, c)| c).sum();
            let mean = g.iter().map(|(x, c)| x * c).sum::<f64>() / n;
            (mean, n)
        })
        .collect()
}

/// Explicit buckets → a distribution: each bucket's count at its midpoint,
/// the open-ended ones at their finite bound, all within [min, max].
fn explicit_dist(bounds: &[f64], d: &HistDelta) -> Option<Value> {
    if d.count == 0 {
        return None;
    }
    let (bmin, bmax) = bucket_range(bounds, &d.buckets, d.min, d.max);
    let mut values = Vec::new();
    for (i, &c) in d.buckets.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let v = if bounds.is_empty() {
            d.sum / d.count as f64
        } else if i == 0 {
            bounds[0]
        } else if i >= bounds.len() {
            bounds[bounds.len() - 1]
        } else {
            (bounds[i - 1] + bounds[i]) / 2.0
        };
        values.push((v, c as f64));
    }
    let lo_default = values.first().map_or(0.0, |v| v.0);
    let hi_default = values.last().map_or(0.0, |v| v.0);
    let min = bmin.unwrap_or(lo_default).min(hi_default);
    let max = bmax.unwrap_or(hi_default).max(min);
    for v in &mut values {
        v.0 = v.0.clamp(min, max);
    }
    Some(Value::Dist {
        values: cap_values(values),
        min,
        max,
        count: d.count,
        sum: d.sum,
    })
}

fn exp_dist(d: &ExpDelta) -> Option<Value> {
    if d.count == 0 {
        return None;
    }
    let base = 2f64.powf(2f64.powi(-d.scale));
    let mid = |i: i32| {
        let lo = base.powi(i);
        (lo + lo * base) / 2.0
    };
    let mut values: Vec<(f64, f64)> = Vec::new();
    for (&i, &c) in d.negative.iter().rev() {
        values.push((-mid(i), c as f64));
    }
    if d.zero > 0 {
        values.push((0.0, d.zero as f64));
    }
    for (&i, &c) in &d.positive {
        values.push((mid(i), c as f64));
    }
    let lo_default = values.first().map_or(0.0, |v| v.0);
    let hi_default = values.last().map_or(0.0, |v| v.0);
    let min = d.min.unwrap_or(lo_default).min(hi_default);
    let max = d.max.unwrap_or(hi_default).max(min);
    for v in &mut values {
        v.0 = v.0.clamp(min, max);
    }
    Some(Value::Dist {
        values: cap_values(values),
        min,
        max,
        count: d.count,
        sum: d.sum,
    })
}

fn summary_dist(count: u64, sum: f64, p: &SummaryDataPoint) -> Option<Value> {
    if count == 0 {
        return None;
    }
    let mean = sum / count as f64;
    let q = |want: f64| {
        p.quantile_values
            .iter()
            .find(|q| q.quantile == want)
            .map(|q| q.value)
    };
    let min = q(0.0).unwrap_or(mean).min(mean);
    let max = q(1.0).unwrap_or(mean).max(mean);
    Some(Value::Dist {
        values: vec![(mean, count as f64)],
        min,
        max,
        count,
        sum,
    })
}

// ---------------------------------------------------------------------------
// Units, names.

/// The CloudWatch unit of an OTLP (UCUM) unit, if it has one.
pub fn cloudwatch_unit(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "s" => "Seconds",
        "ms" => "Milliseconds",
        "us" => "Microseconds",
        "By" => "Bytes",
        "kBy" | "KBy" | "KiBy" => "Kilobytes",
        "MBy" | "MiBy" => "Megabytes",
        "GBy" | "GiBy" => "Gigabytes",
        "TBy" | "TiBy" => "Terabytes",
        "bit" => "Bits",
        "kbit" | "Kibit" => "Kilobits",
        "Mbit" | "Mibit" => "Megabits",
        "Gbit" | "Gibit" => "Gigabits",
        "Tbit" | "Tibit" => "Terabits",
        "%" => "Percent",
        "By/s" => "Bytes/Second",
        "kBy/s" | "KiBy/s" => "Kilobytes/Second",
        "MBy/s" | "MiBy/s" => "Megabytes/Second",
        "GBy/s" | "GiBy/s" => "Gigabytes/Second",
        "bit/s" => "Bits/Second",
        "kbit/s" => "Kilobits/Second",
        "Mbit/s" => "Megabits/Second",
        "Gbit/s" => "Gigabits/Second",
        "1/s" | "{count}/s" => "Count/Second",
        u if u.starts_with('{') && u.ends_with('}') => "Count",
        u if u.starts_with('{') && u.ends_with("}/s") => "Count/Second",
        _ => return None,
    })
}

/// A namespace CloudWatch accepts: allowed characters only (others become
/// `_`), at most 255 characters, never empty or under `AWS/`.
pub fn sanitize_namespace(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_/#: ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAMESPACE_CHARS)
        .collect();
    if s.trim().is_empty() {
        s = "default".into();
    }
    if s.starts_with("AWS/") {
        s.replace_range(0..0, "_");
        s.truncate(MAX_NAMESPACE_CHARS);
    }
    s
}

fn resource_str<'a>(res: &'a [KeyValue], key: &str) -> Option<&'a str> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    res.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(V::StringValue(s)) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        })
}

/// The namespace for a resource when none is configured:
/// `service.namespace/service.name`, either alone, or `default`.
pub fn resource_namespace(res: &[KeyValue]) -> String {
    let ns = resource_str(res, "service.namespace");
    let name = resource_str(res, "service.name");
    let raw = match (ns, name) {
        (Some(a), Some(b)) => format!("{a}/{b}"),
        (Some(a), None) => a.to_string(),
        (None, Some(b)) => b.to_string(),
        (None, None) => "default".to_string(),
    };
    sanitize_namespace(&raw)
}

fn usable_dimension_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 255 && k.is_ascii() && !k.starts_with(':')
}

// ---------------------------------------------------------------------------
// Events.

/// One metric of an event.
struct Item {
    name: String,
    unit: Option<&'static str>,
    value: Value,
    dims: Vec<Vec<String>>,
}

/// A point's labels, sorted by key.
type Labels = Vec<(String, String)>;

/// Metrics sharing a timestamp and labels.
struct Group {
    ts_ms: i64,
    labels: Vec<(String, String)>,
    items: Vec<Item>,
}

impl Group {
    fn has(&self, name: &str) -> bool {
        self.items.iter().any(|i| i.name == name)
    }
}

fn render(ns: &str, storage_resolution: u32, g: &Group, items: &[Item], out: &mut String) {
    out.clear();
    let mut w = Writer::new(out, usize::MAX);
    w.begin_object();
    w.key("_aws");
    w.begin_object();
    w.int_field("Timestamp", g.ts_ms);
    w.key("CloudWatchMetrics");
    w.begin_array();
    // One directive per distinct list of dimension sets, in first-seen order.
    let mut order: Vec<&Vec<Vec<String>>> = Vec::new();
    for it in items {
        if !order.contains(&&it.dims) {
            order.push(&it.dims);
        }
    }
    for dims in order {
        w.elem();
        w.begin_object();
        w.str_field("Namespace", ns);
        w.key("Dimensions");
        w.begin_array();
        for set in dims {
            w.elem();
            w.begin_array();
            for k in set {
                w.elem();
                escape(w.out, k);
            }
            w.end_array();
        }
        w.end_array();
        w.key("Metrics");
        w.begin_array();
        for it in items.iter().filter(|i| &i.dims == dims) {
            w.elem();
            w.begin_object();
            w.str_field("Name", &it.name);
            if let Some(u) = it.unit {
                w.str_field("Unit", u);
            }
            if storage_resolution == 1 {
                w.int_field("StorageResolution", 1);
            }
            w.end_object();
        }
        w.end_array();
        w.end_object();
    }
    w.end_array();
    w.end_object();
    for (k, v) in &g.labels {
        w.str_field(k, v);
    }
    for it in items {
        w.key(&it.name);
        it.value.write(w.out);
    }
    w.end_object();
}

/// The dimension sets of one point.
fn dimension_sets(
    opts: &Options,
    name: &str,
    labels: &[(String, String)],
    stats: &mut Stats,
) -> Option<Vec<Vec<String>>> {
    let keys: Vec<&str> = labels
        .iter()
        .filter(|(k, v)| usable_dimension_key(k) && !v.is_empty())
        .map(|(k, _)| k.as_str())
        .collect();
    let mut sets: Vec<Vec<String>> = Vec::new();
    let mut push = |set: Vec<String>, stats: &mut Stats| {
        if set.len() > MAX_DIMENSIONS_PER_SET {
            stats.dimension_sets_dropped += 1;
        } else if !sets.contains(&set) {
            sets.push(set);
        }
    };
    if opts.declarations.is_empty() {
        push(keys.iter().map(|k| k.to_string()).collect(), stats);
    } else {
        let mut selected = false;
        for d in &opts.declarations {
            if !d.selects(name, labels) {
                continue;
            }
            selected = true;
            for set in &d.dimensions {
                if set.iter().all(|k| keys.contains(&k.as_str())) {
                    push(set.clone(), stats);
                }
            }
        }
        if !selected {
            stats.filtered += 1;
            return None;
        }
    }
    if opts.rollup == DimensionRollup::ZeroAndSingleDimensionRollup {
        push(Vec::new(), stats);
    }
    if opts.rollup != DimensionRollup::NoDimensionRollup {
        for k in &keys {
            push(vec![k.to_string()], stats);
        }
    }
    Some(sets)
}

fn series_key(name: &str, res: &[KeyValue], attrs: &[KeyValue]) -> String {
    let mut k = String::with_capacity(64);
    k.push_str(name);
    for kv in res
        .iter()
        .chain(std::iter::once(&KeyValue::default()))
        .chain(attrs)
    {
        k.push('\u{0}');
        k.push_str(&kv.key);
        k.push('=');
        k.push_str(&label_value(
            kv.value.as_ref().and_then(|v| v.value.as_ref()),
        ));
    }
    k
}

/// Converts a batch of metrics into EMF events. `now_ns` stands in for
/// missing point times and ages the delta state.
pub fn convert<'a>(
    rms: &'a [ResourceMetrics],
    opts: &Options,
    deltas: &mut Deltas,
    now_ns: u64,
) -> Converted<'a> {
    deltas.sweep(now_ns);
    let mut stats = Stats::default();
    let mut out = Vec::with_capacity(rms.len());
    for rm in rms {
        let res: &[KeyValue] = rm
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let ns = match opts.namespace.as_deref() {
            Some(t) if t.contains('{') => sanitize_namespace(&crate::convert::log_events::expand(
                t,
                res,
                crate::convert::log_events::NameKind::Namespace,
            )),
            Some(t) => t.to_string(),
            None => resource_namespace(res),
        };
        let mut groups = Groups::default();
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let Some(data) = &m.data else { continue };
                let scope = sm.scope.as_ref().map_or("", |s| s.name.as_str());
                let key_name = format!("{scope}\u{1}{}", m.name);
                let points = Points {
                    res,
                    key_name: &key_name,
                    deltas: &mut *deltas,
                    stats: &mut stats,
                    now_ns,
                    out: Vec::new(),
                }
                .take(data);
                let unit = cloudwatch_unit(&m.unit);
                let at = Placing { opts, res, now_ns };
                for point in points {
                    groups.place(&at, m, unit, point, &mut stats);
                }
            }
        }
        let mut events = Vec::with_capacity(groups.groups.len());
        for g in &groups.groups {
            emit(
                &ns,
                opts.storage_resolution,
                g,
                &g.items,
                &mut events,
                &mut stats,
            );
        }
        out.push(ResourceEvents {
            resource: res,
            events,
        });
    }
    Converted { groups: out, stats }
}

/// One metric's points as EMF takes them: `(attributes, time, value)`, the
/// value `None` where there is nothing to send yet (a first cumulative
/// point, a reset, an empty distribution).
struct Points<'a, 'd> {
    res: &'a [KeyValue],
    key_name: &'d str,
    deltas: &'d mut Deltas,
    stats: &'d mut Stats,
    now_ns: u64,
    out: Vec<(&'a [KeyValue], u64, Option<Value>)>,
}

impl<'a> Points<'a, '_> {
    /// The metric's points.
    fn take(mut self, data: &'a Data) -> Vec<(&'a [KeyValue], u64, Option<Value>)> {
        let cumulative = AggregationTemporality::Cumulative as i32;
        match data {
            Data::Gauge(g) => {
                for p in &g.data_points {
                    self.out
                        .push((&p.attributes, p.time_unix_nano, Some(number(&p.value))));
                }
            }
            Data::Sum(s) => {
                let to_delta = s.is_monotonic && s.aggregation_temporality == cumulative;
                for p in &s.data_points {
                    let v = number(&p.value);
                    let v = if to_delta {
                        self.sum_delta(p, v)
                    } else {
                        Some(v)
                    };
                    self.out.push((&p.attributes, p.time_unix_nano, v));
                }
            }
            Data::Histogram(h) => {
                for p in &h.data_points {
                    let d = if h.aggregation_temporality == cumulative {
                        let key = series_key(self.key_name, self.res, &p.attributes);
                        self.stats.take(self.deltas.histogram(key, p, self.now_ns))
                    } else {
                        Some(HistDelta::whole(p))
                    };
                    let v = d.and_then(|d| {
                        let v = explicit_dist(&p.explicit_bounds, &d);
                        if v.is_none() {
                            self.stats.empty += 1;
                        }
                        v
                    });
                    self.out.push((&p.attributes, p.time_unix_nano, v));
                }
            }
            Data::ExponentialHistogram(h) => {
                for p in &h.data_points {
                    let d = if h.aggregation_temporality == cumulative {
                        let key = series_key(self.key_name, self.res, &p.attributes);
                        self.stats
                            .take(self.deltas.exponential(key, p, self.now_ns))
                    } else {
                        Some(ExpDelta::whole(p))
                    };
                    let v = d.as_ref().and_then(exp_dist);
                    if d.is_some() && v.is_none() {
                        self.stats.empty += 1;
                    }
                    self.out.push((&p.attributes, p.time_unix_nano, v));
                }
            }
            Data::Summary(s) => {
                for p in &s.data_points {
                    let key = series_key(self.key_name, self.res, &p.attributes);
                    let step = self.deltas.summary(key, p, self.now_ns);
                    let v = self.stats.take(step).and_then(|(c, sum)| {
                        let v = summary_dist(c, sum, p);
                        if v.is_none() {
                            self.stats.empty += 1;
                        }
                        v
                    });
                    self.out.push((&p.attributes, p.time_unix_nano, v));
                }
            }
        }
        self.out
    }

    /// A cumulative monotonic sum point as the delta since the last one.
    fn sum_delta(
        &mut self,
        p: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint,
        v: Value,
    ) -> Option<Value> {
        let f = match v {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
            Value::Dist { .. } => 0.0,
        };
        if !f.is_finite() {
            return Some(Value::Float(f));
        }
        let key = series_key(self.key_name, self.res, &p.attributes);
        let step = self.deltas.number(
            key,
            p.start_time_unix_nano,
            p.time_unix_nano,
            f,
            self.now_ns,
        );
        self.stats.take(step).map(|d| match v {
            Value::Int(_) => Value::Int(d as i64),
            _ => Value::Float(d),
        })
    }
}

/// Points grouped into events: one group per timestamp and label set, at
/// most [`MAX_METRICS_PER_DIRECTIVE`] metrics each, a metric at most once.
#[derive(Default)]
struct Groups {
    groups: Vec<Group>,
    index: HashMap<(i64, Labels), Vec<usize>>,
}

/// What placing a resource's points needs.
struct Placing<'x> {
    opts: &'x Options,
    res: &'x [KeyValue],
    now_ns: u64,
}

impl Groups {
    /// Puts one point of metric `m` in its group, or counts why not.
    fn place(
        &mut self,
        at: &Placing<'_>,
        m: &opentelemetry_proto::tonic::metrics::v1::Metric,
        unit: Option<&'static str>,
        (attrs, t, value): (&[KeyValue], u64, Option<Value>),
        stats: &mut Stats,
    ) {
        let (opts, res, now_ns) = (at.opts, at.res, at.now_ns);
        stats.points += 1;
        let Some(value) = value else { return };
        if !value.finite() {
            stats.non_finite += 1;
            return;
        }
        let labels = point_labels(opts, res, attrs);
        if labels.iter().any(|(k, _)| *k == m.name) {
            stats.name_collisions += 1;
            return;
        }
        let Some(dims) = dimension_sets(opts, &m.name, &labels, stats) else {
            return;
        };
        let ts_ms = (if t == 0 { now_ns } else { t } / 1_000_000) as i64;
        // Labels are cloned once per event, not per point.
        let key = (ts_ms, labels);
        let groups = &self.groups;
        let slot = self.index.get(&key).and_then(|slots| {
            slots.iter().copied().find(|&i| {
                groups[i].items.len() < MAX_METRICS_PER_DIRECTIVE && !groups[i].has(&m.name)
            })
        });
        let gi = match slot {
            Some(i) => i,
            None => {
                self.groups.push(Group {
                    ts_ms,
                    labels: key.1.clone(),
                    items: Vec::new(),
                });
                self.index
                    .entry(key)
                    .or_default()
                    .push(self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        self.groups[gi].items.push(Item {
            name: m.name.clone(),
            unit,
            value,
            dims,
        });
    }
}

/// Renders a group's items as one event, or as several when one would be
/// too large for CloudWatch Logs.
fn emit(
    ns: &str,
    storage_resolution: u32,
    g: &Group,
    items: &[Item],
    events: &mut Vec<LogEvent>,
    stats: &mut Stats,
) {
    if items.is_empty() {
        return;
    }
    let mut message = String::with_capacity(256 + items.len() * 64);
    render(ns, storage_resolution, g, items, &mut message);
    if message.len() <= MAX_EVENT_BYTES {
        stats.values += items.len();
        events.push(LogEvent {
            timestamp_ms: g.ts_ms,
            message,
            items: items.len() as u32,
        });
    } else if items.len() == 1 {
        stats.too_large += 1;
    } else {
        let (a, b) = items.split_at(items.len() / 2);
        emit(ns, storage_resolution, g, a, events, stats);
        emit(ns, storage_resolution, g, b, events, stats);
    }
}

fn number(v: &Option<number_data_point::Value>) -> Value {
    match v {
        Some(number_data_point::Value::AsInt(i)) => Value::Int(*i),
        Some(number_data_point::Value::AsDouble(d)) => Value::Float(*d),
        None => Value::Int(0),
    }
}

/// A point's labels, sorted by key: resource attributes (when converted)
/// then point attributes, which win on a shared key. Values are strings cut
/// to [`MAX_DIMENSION_VALUE_CHARS`].
fn point_labels(opts: &Options, res: &[KeyValue], attrs: &[KeyValue]) -> Vec<(String, String)> {
    let mut m: BTreeMap<&str, String> = BTreeMap::new();
    let value = |kv: &KeyValue| {
        let mut s = label_value(kv.value.as_ref().and_then(|v| v.value.as_ref()));
        if s.len() > MAX_DIMENSION_VALUE_CHARS {
            if let Some((i, _)) = s.char_indices().nth(MAX_DIMENSION_VALUE_CHARS) {
                s.truncate(i);
            }
        }
        s
    };
    if opts.resource_to_telemetry {
        for kv in res {
            m.insert(&kv.key, value(kv));
        }
    }
    for kv in attrs {
        m.insert(&kv.key, value(kv));
    }
    m.into_iter()
        .filter(|(k, _)| !k.is_empty() && *k != "_aws")
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

#[cfg(test)]
mod tests;
