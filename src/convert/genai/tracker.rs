//! Traces as their spans arrive, in any order and across batches, settled
//! once idle: bounded in traces, spans and bytes. Pure: time is passed in.
//!
//! - A trace settles `idle` after its last span (or `max_age` after its
//!   first, for a trace that never ends); its numbers ([`evaluate`]) are
//!   handed out once, in a [`Settled`].
//! - Past `max_traces` or `max_bytes`, the oldest traces settle early
//!   (counted). A trace past `max_spans_per_trace` settles at once and
//!   later spans start a new segment of it (counted).
//! - A span arriving after its trace settled reopens it when its facts are
//!   still remembered (the last `remember` settled traces within the
//!   byte bound): the trace settles again and the [`Settled`] carries the
//!   numbers handed out before, so a consumer applies the difference (a
//!   late botocore span under a counted Strands `chat` swaps one usage
//!   record for another with the same tokens: a net change of zero).
//!   A span of a trace forgotten since starts a new segment.

use std::collections::VecDeque;

use super::pricing::Pricing;
use super::span::{FastMap, SpanFacts};
use super::trace::{evaluate, TraceNumbers};

/// A trace id (zero-padded or cut to 16 bytes).
pub type TraceId = [u8; 16];

/// A trace id from bytes.
pub fn trace_id(bytes: &[u8]) -> TraceId {
    let mut t = [0u8; 16];
    let n = bytes.len().min(16);
    t[..n].copy_from_slice(&bytes[..n]);
    t
}

/// The bounds of a [`Tracker`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrackerLimits {
    /// A trace settles this long after its last span (ms).
    pub idle_ms: u64,
    /// And at the latest this long after its first (ms).
    pub max_age_ms: u64,
    /// Traces held unsettled at most.
    pub max_traces: usize,
    /// Spans of one trace held at most.
    pub max_spans_per_trace: usize,
    /// Bytes of span facts held at most (unsettled and remembered).
    pub max_bytes: usize,
    /// Settled traces whose facts are remembered for late spans.
    pub remember: usize,
}

impl Default for TrackerLimits {
    fn default() -> TrackerLimits {
        TrackerLimits {
            idle_ms: 5_000,
            max_age_ms: 300_000,
            max_traces: 100_000,
            max_spans_per_trace: 10_000,
            max_bytes: 64 << 20,
            remember: 10_000,
        }
    }
}

/// A trace's numbers, handed out when it settles.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    /// The trace.
    pub trace_id: TraceId,
    /// Its numbers now.
    pub numbers: TraceNumbers,
    /// What was handed out for it before (a trace reopened by a late span).
    pub previous: Option<TraceNumbers>,
}

/// What a tracker counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Spans taken.
    pub spans: u64,
    /// Traces settled (reopened ones again).
    pub settled: u64,
    /// Settled before their time to stay within a bound.
    pub early: u64,
    /// Spans that arrived after their trace settled.
    pub late_spans: u64,
    /// Traces reopened by a late span.
    pub reopened: u64,
    /// Traces cut into segments (too many spans, or forgotten before a
    /// late span).
    pub segments: u64,
    /// Parent links that formed cycles.
    pub cycles: u64,
    /// Usage attributes refused as invalid.
    pub invalid_usage: u64,
}

#[derive(Debug)]
struct Pending {
    spans: Vec<SpanFacts>,
    first_ms: u64,
    last_ms: u64,
    seq: u64,
    bytes: usize,
    previous: Option<TraceNumbers>,
}

#[derive(Debug)]
struct Remembered {
    spans: Vec<SpanFacts>,
    numbers: TraceNumbers,
    bytes: usize,
}

/// Traces being assembled, and the last settled ones.
#[derive(Debug)]
pub struct Tracker {
    limits: TrackerLimits,
    pricing: Pricing,
    pending: FastMap<TraceId, Pending>,
    /// (deadline, seq, trace): an entry whose seq is not its trace's is stale.
    queue: VecDeque<(u64, u64, TraceId)>,
    remembered: FastMap<TraceId, Remembered>,
    remembered_order: VecDeque<TraceId>,
    seq: u64,
    bytes: usize,
    stats: TrackerStats,
}

/// Bytes a trace costs beyond its spans.
const TRACE_BYTES: usize = 160;

impl Tracker {
    /// An empty tracker.
    pub fn new(limits: TrackerLimits, pricing: Pricing) -> Tracker {
        Tracker {
            limits,
            pricing,
            pending: FastMap::default(),
            queue: VecDeque::new(),
            remembered: FastMap::default(),
            remembered_order: VecDeque::new(),
            seq: 0,
            bytes: 0,
            stats: TrackerStats::default(),
        }
    }

    /// What it counted.
    pub fn stats(&self) -> &TrackerStats {
        &self.stats
    }

    /// Its pricing.
    pub fn pricing(&self) -> &Pricing {
        &self.pricing
    }

    /// Traces unsettled.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Bytes held (unsettled and remembered span facts).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes one span of `trace` at `now_ms`; traces that must settle to
    /// stay within the bounds go to `out`.
    pub fn offer(&mut self, trace: TraceId, facts: SpanFacts, now_ms: u64, out: &mut Vec<Settled>) {
        self.stats.spans += 1;
        let size = facts.bytes();
        if let Some(p) = self.pending.get(&trace) {
            if p.spans.len() >= self.limits.max_spans_per_trace {
                // A segment ends; the next one starts with this span.
                self.stats.segments += 1;
                self.stats.early += 1;
                self.settle(trace, out, false);
            }
        }
        if !self.pending.contains_key(&trace) {
            let (spans, previous, bytes) = match self.remembered.remove(&trace) {
                Some(r) => {
                    self.stats.late_spans += 1;
                    self.stats.reopened += 1;
                    (r.spans, Some(r.numbers), r.bytes)
                }
                None => (Vec::new(), None, TRACE_BYTES),
            };
            if previous.is_none() {
                self.bytes += TRACE_BYTES;
            }
            self.seq += 1;
            self.queue
                .push_back((now_ms.saturating_add(self.limits.idle_ms), self.seq, trace));
            self.pending.insert(
                trace,
                Pending {
                    spans,
                    first_ms: now_ms,
                    last_ms: now_ms,
                    seq: self.seq,
                    bytes,
                    previous,
                },
            );
        } else if self
            .pending
            .get(&trace)
            .is_some_and(|p| p.previous.is_some())
        {
            self.stats.late_spans += 1;
        }
        if let Some(p) = self.pending.get_mut(&trace) {
            p.spans.push(facts);
            p.last_ms = now_ms;
            p.bytes += size;
        }
        self.bytes += size;
        self.enforce(out);
    }

    /// Settles the oldest traces while a bound is exceeded, forgetting
    /// remembered ones first.
    fn enforce(&mut self, out: &mut Vec<Settled>) {
        while self.bytes > self.limits.max_bytes && !self.remembered_order.is_empty() {
            self.forget_oldest();
        }
        while self.pending.len() > self.limits.max_traces || self.bytes > self.limits.max_bytes {
            let Some((_, seq, trace)) = self.queue.pop_front() else {
                break;
            };
            if self.pending.get(&trace).is_some_and(|p| p.seq == seq) {
                self.stats.early += 1;
                self.settle(trace, out, false);
                while self.bytes > self.limits.max_bytes && !self.remembered_order.is_empty() {
                    self.forget_oldest();
                }
            }
        }
    }

    fn forget_oldest(&mut self) {
        if let Some(t) = self.remembered_order.pop_front() {
            if let Some(r) = self.remembered.remove(&t) {
                self.bytes -= r.bytes;
            }
        }
    }

    /// Settles every trace whose time has come at `now_ms` into `out`.
    pub fn settle_due(&mut self, now_ms: u64, out: &mut Vec<Settled>) {
        while let Some(&(deadline, seq, trace)) = self.queue.front() {
            if deadline > now_ms {
                break;
            }
            self.queue.pop_front();
            let Some(p) = self.pending.get(&trace) else {
                continue;
            };
            if p.seq != seq {
                continue;
            }
            let due = p
                .last_ms
                .saturating_add(self.limits.idle_ms)
                .min(p.first_ms.saturating_add(self.limits.max_age_ms));
            if due <= now_ms {
                self.settle(trace, out, true);
            } else {
                self.queue.push_back((due, seq, trace));
            }
        }
    }

    /// Settles every trace now (at shutdown).
    pub fn drain(&mut self, out: &mut Vec<Settled>) {
        let traces: Vec<TraceId> = self.pending.keys().copied().collect();
        for t in traces {
            self.settle(t, out, false);
        }
        self.queue.clear();
    }

    /// Whether it holds the trace (unsettled, or remembered).
    pub fn knows(&self, trace: &TraceId) -> bool {
        self.pending.contains_key(trace) || self.remembered.contains_key(trace)
    }

    /// The numbers of a trace as they stand (unsettled, or remembered).
    pub fn peek(&self, trace: &TraceId) -> Option<TraceNumbers> {
        if let Some(p) = self.pending.get(trace) {
            return Some(evaluate(&p.spans, &self.pricing));
        }
        self.remembered.get(trace).map(|r| r.numbers.clone())
    }

    fn settle(&mut self, trace: TraceId, out: &mut Vec<Settled>, remember: bool) {
        let Some(p) = self.pending.remove(&trace) else {
            return;
        };
        let numbers = evaluate(&p.spans, &self.pricing);
        self.stats.settled += 1;
        self.stats.cycles += numbers.cycles;
        // Invalid usage is counted once per span, when first settled.
        let before = p.previous.as_ref().map_or(0, |n| n.invalid_usage);
        self.stats.invalid_usage += numbers.invalid_usage.saturating_sub(before);
        let keep =
            remember && self.limits.remember > 0 && p.spans.len() < self.limits.max_spans_per_trace;
        if keep {
            self.remembered.insert(
                trace,
                Remembered {
                    spans: p.spans,
                    numbers: numbers.clone(),
                    bytes: p.bytes,
                },
            );
            self.remembered_order.push_back(trace);
            while self.remembered_order.len() > self.limits.remember {
                self.forget_oldest();
            }
            // An entry for a trace reopened and settled again is stale:
            // the order may name it twice; forgetting the older entry
            // removes the newer facts, which only makes a later span start
            // a segment.
        } else {
            self.bytes -= p.bytes;
        }
        out.push(Settled {
            trace_id: trace,
            numbers,
            previous: p.previous,
        });
    }
}
