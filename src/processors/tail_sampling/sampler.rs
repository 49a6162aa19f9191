//! The buffer of `tail_sampling`: spans held per trace (or per session)
//! as their OTLP bytes until the trace is decided, then written out as one
//! request or forgotten. Pure: time is passed in, nothing is read or
//! written but memory.
//!
//! - Intake reads each request once ([`crate::convert::otlp_index`] and
//!   [`crate::convert::otlp_view`]): per span its trace id, times, status
//!   and attributes, which update its group's [`Summary`]; the span's bytes
//!   are copied into the group. A resource and scope pair is kept once
//!   (interned) and shared by the spans that came with it.
//! - A trace is decided `wait` after its first span; a session `wait`
//!   after its last (it is idle). Groups over `max_groups`, or bytes over
//!   `max_bytes`, decide the oldest early (counted). Spans of a decided
//!   group that come later follow the cached decision.
//! - Sessions: a span's session is the first of `session_keys` on the
//!   span, then on its resource; a span naming none joins the session its
//!   trace named (the last `4 × max_groups` traces are remembered), else
//!   is held under its trace id, and that trace's spans join the session
//!   when a later span of the trace names one, as long as neither was
//!   decided.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use super::policy::{combine, Policies, Summary};
use crate::consumer::Acks;
use crate::convert::genai::{self, FailureKind, Keys, Pricing, Role, SpanFacts, TraceId};
use crate::convert::otlp_index::{self, Invalid};
use crate::convert::otlp_view::{self, put_varint, SpanView, Value};
use crate::signal::Signal;

/// What a group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// One trace (the Collector's behaviour).
    Trace,
    /// One agent session.
    Session,
}

/// The buffer's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Traces or sessions.
    pub group_by: GroupBy,
    /// Attributes that name a session, in order.
    pub session_keys: Vec<String>,
    /// `decision_wait` (traces) or `session_idle` (sessions), in ms.
    pub wait_ms: u64,
    /// `num_traces` or `max_sessions`.
    pub max_groups: usize,
    /// Bytes of buffered spans at most.
    pub max_bytes: usize,
    /// Decisions to keep sampling later spans by.
    pub sampled_cache: usize,
    /// Decisions to keep dropping later spans by.
    pub non_sampled_cache: usize,
    /// Add `tailsampling.policy` (the first policy that kept it) to kept spans.
    pub record_policy: bool,
}

/// Counts of what the buffer did (monotonic; the task publishes them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Per top-level policy: groups it sampled, groups it did not.
    pub per_policy: Vec<(u64, u64)>,
    /// Groups kept and dropped.
    pub kept: u64,
    /// Groups dropped.
    pub dropped: u64,
    /// Spans sent on, of decided groups.
    pub spans_kept: u64,
    /// Spans dropped with their groups.
    pub spans_dropped: u64,
    /// Groups decided before their time because a bound was reached.
    pub early: u64,
    /// Spans of kept groups that came after the decision (sent on).
    pub late_kept: u64,
    /// Spans of dropped groups that came after the decision.
    pub late_dropped: u64,
    /// Traces that joined a session named after their first spans.
    pub merged: u64,
    /// Groups given up at shutdown, to be delivered again.
    pub abandoned: u64,
}

/// Spans to send on: OTLP `ExportTraceServiceRequest` bytes, their count,
/// and the acknowledgements of the requests they came in.
#[derive(Debug, Default)]
pub struct Output {
    /// Request bytes (a sequence of `resource_spans` fields).
    pub bytes: Vec<u8>,
    /// Spans in it.
    pub spans: usize,
    /// Acknowledgements to settle once they are delivered.
    pub acks: Acks,
}

/// A resource and scope pair, with what is known of the resource.
#[derive(Debug)]
struct Header {
    /// The `ResourceSpans` body without its `scope_spans`.
    resource: Vec<u8>,
    /// The `ScopeSpans` body without its `spans`.
    scope: Vec<u8>,
    /// Attribute tests its resource's attributes pass.
    matched: u64,
    /// The session its resource names.
    session: Option<Box<[u8]>>,
    /// What the agent-trace model reads of the resource.
    origin: genai::Origin,
}

#[derive(Debug)]
struct Group {
    summary: Summary,
    /// The GenAI spans' facts, by trace, for the agent-trace model (its
    /// numbers decide the agent policies).
    facts: Vec<(TraceId, SpanFacts)>,
    facts_bytes: usize,
    /// Span fields (key, length, body), back to back.
    spans: Vec<u8>,
    /// Per span: its header and the end of its bytes in `spans`.
    entries: Vec<(Arc<Header>, u32)>,
    acks: Acks,
    /// Which intake last added acks.
    intake: u64,
    /// Its live deadline entry in the queue.
    seq: u64,
    bytes: usize,
}

/// The agent-trace model's fast map (FNV-1a for bytes): keys are trace ids
/// or short names, and the maps are bounded.
type FastMap<K, V> = crate::convert::genai::span::FastMap<K, V>;
type Key = Box<[u8]>;

/// Bytes a group costs beyond its spans: its map entry, summary and
/// deadline entry, and its key (a trace id, or a session name cut to
/// [`MAX_SESSION_KEY`] bytes).
pub const GROUP_OVERHEAD: usize = 256 + MAX_SESSION_KEY;

/// Trace-to-session links remembered per group (`max_sessions` of them);
/// each costs at most [`TRACE_LINK_BYTES`].
pub const TRACE_LINKS_PER_GROUP: usize = 4;

/// The bound of one trace-to-session link: two keys and map overhead.
pub const TRACE_LINK_BYTES: usize = 96 + MAX_SESSION_KEY;

/// The longest session name kept in a key, in bytes.
pub const MAX_SESSION_KEY: usize = 256;

/// Remembered decisions, oldest forgotten first.
#[derive(Debug, Default)]
struct Decided {
    map: FastMap<Key, bool>,
    sampled: VecDeque<Key>,
    dropped: VecDeque<Key>,
}

/// The tail sampler's buffer.
pub struct Sampler {
    cfg: Settings,
    policies: Policies,
    /// The policies' prices over the built-in table.
    pricing: Pricing,
    keys: Keys,
    groups: FastMap<Key, Group>,
    /// (deadline ms, seq, key), deadlines in order.
    queue: VecDeque<(u64, u64, Key)>,
    traces: FastMap<Key, Key>,
    trace_order: VecDeque<Key>,
    decided: Decided,
    headers: FastMap<Key, Arc<Header>>,
    bytes: usize,
    /// Spans held.
    held_spans: u64,
    seq: u64,
    intake: u64,
    stats: Stats,
}

impl Sampler {
    /// An empty buffer.
    pub fn new(cfg: Settings, policies: Policies) -> Sampler {
        let stats = Stats {
            per_policy: vec![(0, 0); policies.names().count()],
            ..Stats::default()
        };
        Sampler {
            pricing: Pricing::new(policies.pricing.clone()),
            keys: Keys::sessions(cfg.session_keys.clone()),
            cfg,
            policies,
            groups: FastMap::default(),
            queue: VecDeque::new(),
            traces: FastMap::default(),
            trace_order: VecDeque::new(),
            decided: Decided::default(),
            headers: FastMap::default(),
            bytes: 0,
            held_spans: 0,
            seq: 0,
            intake: 0,
            stats,
        }
    }

    /// What it did so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The policies' names, in order (for self-metrics).
    pub fn policy_names(&self) -> Vec<String> {
        self.policies.names().map(String::from).collect()
    }

    /// Groups held.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    /// Bytes held (spans and per-group bookkeeping).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Spans held.
    pub fn spans(&self) -> u64 {
        self.held_spans
    }

    /// Takes one trace export request (bytes an OTLP decoder or
    /// [`otlp_index`] accepted: the receiver checked them, or they were
    /// encoded from structs). Spans of groups decided earlier follow their
    /// decision: kept ones are written to `late` (with `acks`). Bytes that
    /// are not a request of spans (or use the deprecated group wire type)
    /// are refused whole.
    pub fn intake(
        &mut self,
        request: &[u8],
        acks: &Acks,
        now_ms: u64,
        late: &mut Output,
    ) -> Result<(), Invalid> {
        // A cheap shape check: the request's fields must read to the end.
        let read: usize = otlp_view::raw_fields(request)
            .map(|(_, w, _)| w.len())
            .sum();
        if read != request.len() {
            return Err(otlp_index::index_request(Signal::Traces, request)
                .err()
                .unwrap_or(Invalid::Truncated));
        }
        self.intake += 1;
        let mut late_added = false;
        let mut touched: Vec<(Key, bool)> = Vec::new();
        otlp_view::for_each_scope(request, |scope| {
            let header = self.header(
                scope.resource_body,
                scope.resource_fields,
                scope.scope_fields,
            );
            for (field, body) in scope.items {
                let view = SpanView::of_body(body);
                let (summary, named) = self.read_span(&view, &header);
                let facts = genai::span::read_view(&view, &header.origin, &self.keys);
                let named = named.map(str::as_bytes).or(header.session.as_deref());
                let key = self.key_of(&view, named);
                match self.decided.map.get(&key[..]) {
                    Some(true) => {
                        self.stats.late_kept += 1;
                        write_block(&mut late.bytes, &header, &[field], None);
                        late.spans += 1;
                        late_added = true;
                        continue;
                    }
                    Some(false) => {
                        self.stats.late_dropped += 1;
                        continue;
                    }
                    None => {}
                }
                let facts =
                    (facts.role != Role::Other).then(|| (genai::trace_id(view.trace_id), facts));
                self.add(key, summary, facts, field, &header, acks, &mut touched);
            }
        });
        if late_added {
            late.acks.extend(acks.clone());
        }
        // A trace is decided `wait` after its first span, a session `wait`
        // after its last: a new deadline per group made (traces) or
        // touched (sessions) by this request; older entries go stale.
        let deadline = now_ms + self.cfg.wait_ms;
        for (key, created) in touched {
            if !created && self.cfg.group_by == GroupBy::Trace {
                continue;
            }
            self.seq += 1;
            if let Some(g) = self.groups.get_mut(&key) {
                g.seq = self.seq;
                self.queue.push_back((deadline, self.seq, key));
            }
        }
        if self.headers.len() > 4096 {
            self.headers.retain(|_, h| Arc::strong_count(h) > 1);
        }
        Ok(())
    }

    /// The interned header of one resource (`rs`: its `ResourceSpans` body,
    /// `resource`: that body without its scopes) and scope (`scope`: its
    /// `ScopeSpans` body without its spans).
    fn header(&mut self, rs: &[u8], resource: &[u8], scope: &[u8]) -> Arc<Header> {
        let mut key = Vec::with_capacity(4 + resource.len() + scope.len());
        key.extend_from_slice(&(resource.len() as u32).to_le_bytes());
        key.extend_from_slice(resource);
        key.extend_from_slice(scope);
        if let Some(h) = self.headers.get(key.as_slice()) {
            return h.clone();
        }
        let mut matched = 0u64;
        let mut session: Option<(usize, &str)> = None;
        let attrs = otlp_view::message_in(rs, 1).unwrap_or_default();
        for (k, v) in otlp_view::attributes_in(attrs, 1) {
            for (i, t) in self.policies.tests.iter().enumerate() {
                if t.key == k && t.matches(&v) {
                    matched |= 1 << i;
                }
            }
            if let Value::Str(s) = v {
                note_session(&self.cfg.session_keys, k, s, &mut session);
            }
        }
        let origin =
            genai::Origin::read(otlp_view::attributes_in(attrs, 1), &self.cfg.session_keys);
        let h = Arc::new(Header {
            resource: resource.to_vec(),
            scope: scope.to_vec(),
            matched,
            session: session.map(|(_, s)| s.as_bytes().into()),
            origin,
        });
        self.headers.insert(key.into(), h.clone());
        h
    }

    /// One span's contribution to its group, and the session it names.
    fn read_span<'a>(&self, view: &SpanView<'a>, header: &Header) -> (Summary, Option<&'a str>) {
        let mut s = Summary {
            spans: 1,
            start_ns: view.start_time_unix_nano,
            end_ns: view.end_time_unix_nano,
            status_bits: match view.status_code {
                1 => 2,
                2 => 4,
                _ => 1,
            },
            matched: header.matched,
            ..Summary::default()
        };
        let mut session: Option<(usize, &'a str)> = None;
        for (k, v) in view.attributes() {
            for (i, t) in self.policies.tests.iter().enumerate() {
                if t.key == k && t.matches(&v) {
                    s.matched |= 1 << i;
                }
            }
            if self.cfg.group_by == GroupBy::Session {
                if let Value::Str(text) = v {
                    note_session(&self.cfg.session_keys, k, text, &mut session);
                }
            }
        }
        (s, session.map(|(_, s)| s))
    }

    /// The group of a span (see the module doc); links its trace to the
    /// session it names, and moves the trace's spans held so far.
    fn key_of<'v>(&mut self, view: &SpanView<'v>, named: Option<&[u8]>) -> Cow<'v, [u8]> {
        if self.cfg.group_by == GroupBy::Trace {
            return Cow::Borrowed(view.trace_id);
        }
        let trace_key = || -> Key {
            let mut k = Vec::with_capacity(1 + view.trace_id.len());
            k.push(b't');
            k.extend_from_slice(view.trace_id);
            k.into()
        };
        match named {
            Some(s) => {
                let name = &s[..s.len().min(MAX_SESSION_KEY)];
                let mut k = Vec::with_capacity(1 + name.len());
                k.push(b's');
                k.extend_from_slice(name);
                let session: Key = k.into();
                if !self.traces.contains_key(view.trace_id) {
                    self.link(view.trace_id, session.clone());
                    // The trace's earlier spans join the session.
                    let tk = trace_key();
                    if self.groups.contains_key(&tk) && !self.decided.map.contains_key(&session) {
                        self.merge(&tk, &session);
                    }
                }
                Cow::Owned(session.into_vec())
            }
            None => Cow::Owned(
                match self.traces.get(view.trace_id) {
                    Some(s) => s.clone(),
                    None => trace_key(),
                }
                .into_vec(),
            ),
        }
    }

    fn link(&mut self, trace: &[u8], session: Key) {
        let t: Key = trace.into();
        self.traces.insert(t.clone(), session);
        self.trace_order.push_back(t);
        let cap = self
            .cfg
            .max_groups
            .saturating_mul(TRACE_LINKS_PER_GROUP)
            .max(16);
        while self.trace_order.len() > cap {
            if let Some(old) = self.trace_order.pop_front() {
                self.traces.remove(&old);
            }
        }
    }

    /// Moves group `from` into group `to` (made if need be).
    fn merge(&mut self, from: &Key, to: &Key) {
        let Some(g) = self.groups.remove(from) else {
            return;
        };
        self.stats.merged += 1;
        match self.groups.get_mut(to) {
            Some(t) => {
                t.summary.merge(&g.summary);
                t.facts.extend(g.facts);
                t.facts_bytes += g.facts_bytes;
                let base = t.spans.len() as u32;
                t.spans.extend_from_slice(&g.spans);
                t.entries
                    .extend(g.entries.into_iter().map(|(h, end)| (h, end + base)));
                t.acks.extend(g.acks);
                self.bytes -= t.bytes + g.bytes;
                t.bytes = cost(t);
                self.bytes += t.bytes;
            }
            None => {
                let mut g = g;
                // Not yet touched by this request: it gets a deadline of its own.
                g.intake = 0;
                self.groups.insert(to.clone(), g);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        key: Cow<'_, [u8]>,
        summary: Summary,
        facts: Option<(TraceId, SpanFacts)>,
        field: &[u8],
        header: &Arc<Header>,
        acks: &Acks,
        touched: &mut Vec<(Key, bool)>,
    ) {
        let intake = self.intake;
        let created = !self.groups.contains_key(&key[..]);
        let g = match self.groups.get_mut(&key[..]) {
            Some(g) => g,
            None => {
                self.bytes += GROUP_OVERHEAD;
                let owned: Key = key.to_vec().into_boxed_slice();
                self.groups.entry(owned).or_insert(Group {
                    summary: Summary::default(),
                    facts: Vec::new(),
                    facts_bytes: 0,
                    spans: Vec::new(),
                    entries: Vec::new(),
                    acks: Acks::none(),
                    intake: 0,
                    seq: 0,
                    bytes: GROUP_OVERHEAD,
                })
            }
        };
        g.summary.merge(&summary);
        if let Some(f) = facts {
            g.facts_bytes += f.1.bytes();
            g.facts.push(f);
        }
        g.spans.extend_from_slice(field);
        g.entries.push((header.clone(), g.spans.len() as u32));
        // What the group has allocated, not what it holds: growth slack counts.
        let old = g.bytes;
        g.bytes = cost(g);
        self.bytes = self.bytes + g.bytes - old;
        self.held_spans += 1;
        if g.intake != intake {
            g.intake = intake;
            g.acks.extend(acks.clone());
            touched.push((key.to_vec().into_boxed_slice(), created));
        }
    }

    /// Decides every group whose time has come at `now_ms` (`now_s`: the
    /// wall-clock second, for rate limits), then the oldest ones while a
    /// bound is exceeded; kept spans go to `out`.
    pub fn expire(&mut self, now_ms: u64, now_s: u64, out: &mut Output) {
        // Deadlines are in order; an entry whose group was touched again,
        // merged or decided since is stale and skipped.
        while let Some((deadline, seq, key)) = self.queue.front() {
            let live = self.groups.get(key).is_some_and(|g| g.seq == *seq);
            if live && *deadline > now_ms {
                break;
            }
            if let Some((_, _, key)) = self.queue.pop_front() {
                if live {
                    self.decide(&key, now_s, out);
                }
            }
        }
        while self.groups.len() > self.cfg.max_groups || self.bytes > self.cfg.max_bytes {
            let Some((_, seq, key)) = self.queue.pop_front() else {
                break;
            };
            if self.groups.get(&key).is_some_and(|g| g.seq == seq) {
                self.stats.early += 1;
                self.decide(&key, now_s, out);
            }
        }
    }

    /// Empties the buffer at shutdown. A group that someone can deliver
    /// again (it holds acknowledgements: a Kinesis record not yet
    /// checkpointed, a request whose sender waits) is given up, its
    /// acknowledgements marked abandoned so it is read again whole (by
    /// another replica, after a restart); any other group is decided now.
    pub fn drain(&mut self, now_s: u64, out: &mut Output) {
        self.queue.clear();
        let keys: Vec<Key> = self.groups.keys().cloned().collect();
        for key in keys {
            let redeliverable = self.groups.get(&key).is_some_and(|g| !g.acks.is_empty());
            if redeliverable {
                if let Some(g) = self.groups.remove(&key) {
                    self.bytes -= g.bytes;
                    self.held_spans -= g.entries.len() as u64;
                    self.stats.abandoned += 1;
                    g.acks.mark(crate::consumer::AckOutcome::Abandoned);
                }
            } else {
                self.decide(&key, now_s, out);
            }
        }
    }

    fn decide(&mut self, key: &Key, now_s: u64, out: &mut Output) {
        let Some(g) = self.groups.remove(key) else {
            return;
        };
        self.bytes -= g.bytes;
        self.held_spans -= g.entries.len() as u64;
        let hash_key = match self.cfg.group_by {
            GroupBy::Trace => &key[..],
            GroupBy::Session => &key[1..],
        };
        let mut summary = g.summary.clone();
        model_numbers(&mut summary, g.facts, &self.pricing);
        let decisions = self.policies.evaluate(&summary, hash_key, now_s);
        for (i, d) in decisions.iter().enumerate() {
            if let Some(c) = self.stats.per_policy.get_mut(i) {
                if d.keeps() {
                    c.0 += 1;
                } else {
                    c.1 += 1;
                }
            }
        }
        let (keep, first) = combine(&decisions);
        let spans = g.entries.len() as u64;
        if keep {
            self.stats.kept += 1;
            self.stats.spans_kept += spans;
            let policy_kv = match (self.cfg.record_policy, first) {
                (true, Some(i)) => self.policies.names().nth(i).map(policy_attribute),
                _ => None,
            };
            let mut start = 0usize;
            let mut run: Vec<&[u8]> = Vec::new();
            let mut current: Option<&Arc<Header>> = None;
            for (h, end) in &g.entries {
                let field = &g.spans[start..*end as usize];
                start = *end as usize;
                if let Some(c) = current {
                    if !Arc::ptr_eq(c, h) {
                        write_block(&mut out.bytes, c, &run, policy_kv.as_deref());
                        run.clear();
                    }
                }
                current = Some(h);
                run.push(field);
            }
            if let Some(c) = current {
                write_block(&mut out.bytes, c, &run, policy_kv.as_deref());
            }
            out.spans += g.entries.len();
            out.acks.extend(g.acks);
        } else {
            self.stats.dropped += 1;
            self.stats.spans_dropped += spans;
            // The acknowledgements go with the group: dropped by policy is done.
        }
        remember(&mut self.decided, key.clone(), keep, &self.cfg);
    }
}

/// The agent policies' inputs from the agent-trace model: each trace of
/// the group evaluated whole (tokens once per model call, failures as a
/// person means them: a retried throttle is none).
fn model_numbers(s: &mut Summary, mut facts: Vec<(TraceId, SpanFacts)>, pricing: &Pricing) {
    facts.sort_by_key(|(t, _)| *t);
    let mut spans: Vec<SpanFacts> = Vec::new();
    let mut i = 0;
    while i < facts.len() {
        let trace = facts[i].0;
        spans.clear();
        while i < facts.len() && facts[i].0 == trace {
            spans.push(facts[i].1.clone());
            i += 1;
        }
        let n = genai::evaluate(&spans, pricing);
        s.tokens = s.tokens.saturating_add(n.tokens().total());
        s.cost += n.cost();
        s.agent_error |= !n.failures.is_empty();
        s.tool_failed |= n.failed(FailureKind::Tool) > 0;
        s.guardrail |= n.failed(FailureKind::Guardrail) > 0;
    }
}

/// The bytes a group has allocated: its bookkeeping, and its buffers'
/// capacities.
fn cost(g: &Group) -> usize {
    GROUP_OVERHEAD
        + g.facts_bytes
        + g.facts.capacity() * std::mem::size_of::<(TraceId, SpanFacts)>()
        + g.spans.capacity()
        + g.entries.capacity() * std::mem::size_of::<(Arc<Header>, u32)>()
}

fn remember(d: &mut Decided, key: Key, keep: bool, cfg: &Settings) {
    let (fifo, cap) = if keep {
        (&mut d.sampled, cfg.sampled_cache)
    } else {
        (&mut d.dropped, cfg.non_sampled_cache)
    };
    if cap == 0 {
        return;
    }
    if d.map.insert(key.clone(), keep).is_none() {
        fifo.push_back(key);
    }
    while fifo.len() > cap {
        if let Some(old) = fifo.pop_front() {
            if d.map.get(&old) == Some(&keep) {
                d.map.remove(&old);
            }
        }
    }
}

/// Keeps the better-ranked session key.
fn note_session<'a>(keys: &[String], k: &str, v: &'a str, best: &mut Option<(usize, &'a str)>) {
    if v.is_empty() {
        return;
    }
    if let Some(rank) = keys.iter().position(|s| s == k) {
        if best.is_none_or(|(r, _)| rank < r) {
            *best = Some((rank, v));
        }
    }
}

/// A `KeyValue` field (tag 9 of a span) `tailsampling.policy` = `name`.
fn policy_attribute(name: &str) -> Vec<u8> {
    let key = b"tailsampling.policy";
    let mut any = vec![0x0a];
    put_varint(&mut any, name.len() as u64);
    any.extend_from_slice(name.as_bytes());
    let mut kv = vec![0x0a];
    put_varint(&mut kv, key.len() as u64);
    kv.extend_from_slice(key);
    kv.push(0x12);
    put_varint(&mut kv, any.len() as u64);
    kv.extend_from_slice(&any);
    let mut field = vec![0x4a];
    put_varint(&mut field, kv.len() as u64);
    field.extend_from_slice(&kv);
    field
}

/// Writes one `resource_spans` field: `header`'s resource with one scope
/// holding `spans` (whole span fields), each with `extra` appended.
fn write_block(out: &mut Vec<u8>, header: &Header, spans: &[&[u8]], extra: Option<&[u8]>) {
    otlp_view::write_block(out, &header.resource, &header.scope, spans, extra);
}

#[cfg(test)]
mod tests;
