//! One trace's numbers: which spans' usage counts, which spans are model
//! calls, which failures a person would call failures. Pure and whole:
//! [`evaluate`] reads every span of the trace it is given, in any order.

use std::sync::Arc;

use super::pricing::Pricing;
pub use super::span::Tokens;
use super::span::{FastMap, Role, SpanFacts};

/// Where a usage record's numbers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageSource {
    /// An inference span with no usage-reporting span beneath it.
    Inference,
    /// An agent or rollup span with no usage-reporting span beneath it
    /// (a fallback: its numbers may be running totals).
    Rollup,
}

/// What a trace's span, its agent, session and model are attributed to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attribution {
    /// The agent: the span's own, else its nearest ancestor's, else the
    /// trace's first.
    pub agent: Option<Arc<str>>,
    /// The session: the span's own, else the nearest ancestor's, else the
    /// trace's.
    pub session: Option<Arc<str>>,
    /// The model: the span's own, else its nearest inference ancestor's.
    pub model: Option<Arc<str>>,
    /// The service of its resource.
    pub service: Option<Arc<str>>,
    /// The attributes carried with the span ([`super::span::Keys::carry`]).
    pub carried: Vec<(u8, Arc<str>)>,
}

/// One usage record: the tokens of one model call, counted once.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    /// The span counted.
    pub span_id: u64,
    /// Where from.
    pub source: UsageSource,
    /// Tokens.
    pub tokens: Tokens,
    /// Its cost in USD from the pricing table, if the model has a price.
    pub cost: Option<f64>,
    /// Agent, session, model, service.
    pub at: Attribution,
}

/// How a model call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It answered.
    Ok,
    /// It failed and a later attempt under the same parent answered: a
    /// retry (a throttle when `throttled`), not a failure.
    Retried {
        /// It was throttled.
        throttled: bool,
    },
    /// It failed and nothing recovered it.
    Failed,
}

/// One model call attempt (the innermost inference span of a call: a
/// framework's span and its SDK client span beneath it are one call).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCall {
    /// The span.
    pub span_id: u64,
    /// The operation (`chat`, `embeddings`, …).
    pub operation: Arc<str>,
    /// Requests it made: 1 plus the retries inside it (botocore's).
    pub requests: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// Seconds.
    pub seconds: f64,
    /// Its error type, if it failed.
    pub error_type: Option<Arc<str>>,
    /// It (or a span of the same call above it) was throttled.
    pub throttled: bool,
    /// Agent, session, model, service.
    pub at: Attribution,
}

/// One agent invocation (an agent span; a workflow or chain root when a
/// trace has none).
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// The span.
    pub span_id: u64,
    /// Its status was ERROR.
    pub failed: bool,
    /// Seconds.
    pub seconds: f64,
    /// Nested in another invocation of the trace.
    pub nested: bool,
    /// Agent, session, model, service.
    pub at: Attribution,
}

/// One tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The span.
    pub span_id: u64,
    /// The tool.
    pub tool: Option<Arc<str>>,
    /// It failed.
    pub failed: bool,
    /// Seconds.
    pub seconds: f64,
    /// Agent, session, model, service.
    pub at: Attribution,
}

/// What kind of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// An agent invocation failed.
    Invocation,
    /// A tool call failed.
    Tool,
    /// A model call failed, unrecovered, outside a failed invocation.
    Model,
    /// A guardrail intervened.
    Guardrail,
}

impl FailureKind {
    /// Its name in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Invocation => "invocation",
            FailureKind::Tool => "tool",
            FailureKind::Model => "model",
            FailureKind::Guardrail => "guardrail",
        }
    }
}

/// One failure as a person means it: one per failed invocation, tool call,
/// unrecovered model call outside a failed invocation, or guardrail
/// intervention; never one per span reporting it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// What failed.
    pub kind: FailureKind,
    /// The span that failed (the invocation, the tool call, …).
    pub span_id: u64,
    /// Where it started: the innermost failing span beneath it that no
    /// retry recovered (itself when there is none).
    pub cause_span_id: u64,
    /// The cause's name.
    pub cause_name: Option<Arc<str>>,
    /// The cause's error type or message.
    pub error: Option<Arc<str>>,
    /// The cause's status message.
    pub message: Option<Arc<str>>,
    /// Start of the failed span, Unix ns.
    pub start_ns: u64,
    /// Agent, session, model, service.
    pub at: Attribution,
}

/// A trace's numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceNumbers {
    /// Usage, once per model call.
    pub usage: Vec<UsageRecord>,
    /// Model call attempts.
    pub calls: Vec<ModelCall>,
    /// Agent invocations.
    pub invocations: Vec<Invocation>,
    /// Tool calls.
    pub tools: Vec<ToolCall>,
    /// Retrievals (as tool calls with no tool name).
    pub retrievals: Vec<ToolCall>,
    /// Failures.
    pub failures: Vec<Failure>,
    /// The trace's session (its root's, else the first named).
    pub session: Option<Arc<str>>,
    /// Agents of the trace.
    pub agents: Vec<Arc<str>>,
    /// Models of the trace.
    pub models: Vec<Arc<str>>,
    /// Parent links that formed a cycle (each span's walk stopped there).
    pub cycles: u64,
    /// Usage attributes refused as invalid.
    pub invalid_usage: u64,
    /// First start and last end, Unix ns.
    pub start_ns: u64,
    /// Last end.
    pub end_ns: u64,
}

impl TraceNumbers {
    /// Tokens of all usage records.
    pub fn tokens(&self) -> Tokens {
        let mut t = Tokens::default();
        for u in &self.usage {
            t.add(&u.tokens);
        }
        t
    }

    /// Cost of all usage records that have a price.
    pub fn cost(&self) -> f64 {
        self.usage.iter().filter_map(|u| u.cost).sum()
    }

    /// Model requests (attempts and the retries inside them).
    pub fn requests(&self) -> u64 {
        self.calls.iter().map(|c| u64::from(c.requests)).sum()
    }

    /// Failed attempts a retry recovered, and those that were throttles,
    /// plus retries made inside one span.
    pub fn retries(&self) -> (u64, u64) {
        let mut retries = 0;
        let mut throttles = 0;
        for c in &self.calls {
            retries += u64::from(c.requests - 1);
            if let Outcome::Retried { throttled } = c.outcome {
                retries += 1;
                throttles += u64::from(throttled);
            }
        }
        (retries, throttles)
    }

    /// Failures of a kind.
    pub fn failed(&self, kind: FailureKind) -> usize {
        self.failures.iter().filter(|f| f.kind == kind).count()
    }
}

/// Inference spans that wrap a sibling inference span of the same call
/// (see [`evaluate`]): leaves only, grouped by parent.
fn wrappers(kept: &[&SpanFacts], parent: &[Option<usize>], has_below: &[bool]) -> Vec<usize> {
    // Candidates share a parent, a usage and an outcome: buckets of those.
    type Bucket = (Option<usize>, Option<u64>, Option<u64>, bool);
    let mut buckets: FastMap<Bucket, Vec<usize>> = FastMap::default();
    for i in 0..kept.len() {
        if kept[i].role == Role::Inference && !has_below[i] {
            let u = kept[i].usage;
            buckets
                .entry((parent[i], u.input, u.output, kept[i].error))
                .or_default()
                .push(i);
        }
    }
    let mut out = Vec::new();
    for (_, mut group) in buckets {
        if group.len() < 2 {
            continue;
        }
        // By start, widest first: a span wraps those starting within it.
        group.sort_by_key(|&i| (kept[i].start_ns, std::cmp::Reverse(kept[i].end_ns)));
        for (k, &a) in group.iter().enumerate() {
            let (sa, ea) = (kept[a].start_ns, kept[a].end_ns);
            let wraps = group[k + 1..]
                .iter()
                .take_while(|&&b| kept[b].start_ns <= ea)
                .take(MAX_SAME_CALL_CANDIDATES)
                .any(|&b| {
                    let (sb, eb) = (kept[b].start_ns, kept[b].end_ns);
                    sa <= sb && eb <= ea && (sa, ea) != (sb, eb) && evident(kept[a], kept[b])
                });
            if wraps {
                out.push(a);
            }
        }
    }
    out
}

/// Whether two reports carry enough to be told for one call apart from
/// two concurrent ones: usage, or the same named model (parallel calls
/// with neither are never merged).
fn evident(a: &SpanFacts, b: &SpanFacts) -> bool {
    let usage = |f: &SpanFacts| f.usage.input.is_some() || f.usage.output.is_some();
    (usage(a) && usage(b)) || (a.model.is_some() && b.model.is_some())
}

/// How many preferred reports a leaf is compared with to find its call.
const MAX_SAME_CALL_CANDIDATES: usize = 64;

/// Whether two model ids name the same model (as instrumentations write
/// them: with or without a region profile and vendor), or either is none.
fn same_model(a: &Option<Arc<str>>, b: &Option<Arc<str>>) -> bool {
    let bare = |m: &str| {
        let m = super::pricing::base_model(m);
        m.split_once('.').map_or(m, |(_, rest)| rest).to_string()
    };
    match (a, b) {
        (Some(a), Some(b)) => bare(a) == bare(b),
        _ => true,
    }
}

/// How far up a failing span is looked for as the cause of a failure.
const MAX_CAUSE_DEPTH: usize = 256;

fn seconds(s: &SpanFacts) -> f64 {
    s.end_ns.saturating_sub(s.start_ns) as f64 / 1e9
}

/// For each span, the nearest span at or above it (following parents)
/// that `has` picks, or none; a walk that meets a cycle stops there and
/// counts it.
fn nearest(
    parent: &[Option<usize>],
    has: impl Fn(usize) -> bool,
    cycles: &mut u64,
) -> Vec<Option<usize>> {
    const TODO: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;
    let n = parent.len();
    let mut out: Vec<Option<usize>> = vec![None; n];
    let mut state = vec![TODO; n];
    let mut path: Vec<usize> = Vec::new();
    for start in 0..n {
        if state[start] == DONE {
            continue;
        }
        path.clear();
        let mut at = Some(start);
        let mut found: Option<usize> = None;
        while let Some(i) = at {
            match state[i] {
                DONE => {
                    found = out[i];
                    break;
                }
                ON_PATH => {
                    *cycles += 1;
                    break;
                }
                _ => {}
            }
            if has(i) {
                found = Some(i);
                state[i] = DONE;
                out[i] = Some(i);
                break;
            }
            state[i] = ON_PATH;
            path.push(i);
            at = parent[i];
        }
        for &i in &path {
            state[i] = DONE;
            out[i] = found;
        }
    }
    out
}

/// Marks every strict ancestor of each span `from` picks (walks stop at a
/// span already marked, and at a cycle).
fn mark_ancestors(parent: &[Option<usize>], from: impl Fn(usize) -> bool) -> Vec<bool> {
    let n = parent.len();
    let mut marked = vec![false; n];
    for i in 0..n {
        if !from(i) {
            continue;
        }
        let mut at = parent[i];
        let mut steps = 0;
        while let Some(p) = at {
            // A cycle leads back to where the walk began: no span is its own
            // ancestor.
            if marked[p] || p == i || steps > n {
                break;
            }
            marked[p] = true;
            steps += 1;
            at = parent[p];
        }
    }
    marked
}

/// The numbers of one trace's spans (any order; a span id seen twice
/// counts once, the ended copy preferred).
///
/// The rules (ARCHITECTURE.md, "Agent traces"):
/// - a span's usage counts only if no span beneath it reports usage: the
///   innermost report of a model call wins (Strands `chat` ⊃ botocore
///   `chat <model>`: the botocore span; `invoke_agent` with running totals
///   counts only when nothing beneath it does);
/// - a model call is an inference span with no inference span beneath it,
///   attributed to the agent, session and model of its nearest ancestors;
/// - a failed attempt followed by a successful sibling attempt (same
///   parent of the outermost inference span) is a retry, not a failure;
/// - failures: failed invocations (outermost), failed tools, unrecovered
///   model calls outside a failed invocation, guardrail interventions.
pub fn evaluate(spans: &[SpanFacts], pricing: &Pricing) -> TraceNumbers {
    let mut out = TraceNumbers::default();
    // One copy per span id: the ended one, else the first.
    let mut index: FastMap<u64, usize> =
        FastMap::with_capacity_and_hasher(spans.len(), Default::default());
    let mut kept: Vec<&SpanFacts> = Vec::with_capacity(spans.len());
    for s in spans {
        match index.get(&s.span_id) {
            Some(&i) => {
                if kept[i].end_ns == 0 && s.end_ns != 0 {
                    kept[i] = s;
                }
            }
            None => {
                index.insert(s.span_id, kept.len());
                kept.push(s);
            }
        }
    }
    let n = kept.len();
    let parent: Vec<Option<usize>> = kept
        .iter()
        .map(|s| {
            (s.parent != 0)
                .then(|| index.get(&s.parent).copied())
                .flatten()
                .filter(|p| kept[*p].span_id != s.span_id)
        })
        .collect();
    let mut cycles = 0u64;
    let role = |i: usize| kept[i].role;
    let reports = |i: usize| {
        matches!(role(i), Role::Inference | Role::Agent | Role::Rollup) && kept[i].usage.any()
    };
    let mut covered = mark_ancestors(&parent, reports);
    let mut has_inference_below = mark_ancestors(&parent, |i| role(i) == Role::Inference);
    // Siblings that are one call: a framework's span beside (not above)
    // the client span it wraps, as LangChain's and the Bedrock client's
    // under OpenInference. The wrapper starts no later, ends no earlier and
    // reports the same usage; it counts as if the client span were beneath it.
    for w in wrappers(&kept, &parent, &has_inference_below) {
        covered[w] = true;
        has_inference_below[w] = true;
    }
    // Every cycle of parent links, once.
    let _ = nearest(&parent, |_| false, &mut cycles);
    let mut again = 0u64;
    let agent_at = nearest(&parent, |i| kept[i].agent.is_some(), &mut again);
    let session_at = nearest(&parent, |i| kept[i].session.is_some(), &mut again);
    let model_at = nearest(
        &parent,
        |i| role(i) == Role::Inference && kept[i].model.is_some(),
        &mut again,
    );
    // The nearest invocation at or above each span; and strictly above.
    let agent_span = nearest(&parent, |i| role(i) == Role::Agent, &mut again);
    out.cycles = cycles;
    let trace_agent = kept.iter().find_map(|s| s.agent.clone());
    // The root's session wins, else the first named.
    let trace_session = kept
        .iter()
        .enumerate()
        .filter(|(i, s)| parent[*i].is_none() && s.session.is_some())
        .min_by_key(|(_, s)| s.start_ns)
        .and_then(|(_, s)| s.session.clone())
        .or_else(|| kept.iter().find_map(|s| s.session.clone()));
    out.session = trace_session.clone();
    let attribution = |i: usize| Attribution {
        agent: agent_at[i]
            .and_then(|a| kept[a].agent.clone())
            .or_else(|| trace_agent.clone()),
        session: session_at[i]
            .and_then(|a| kept[a].session.clone())
            .or_else(|| trace_session.clone()),
        model: model_at[i]
            .and_then(|a| kept[a].model.clone())
            .or_else(|| kept[i].model.clone()),
        service: kept[i].service.clone(),
        carried: kept[i].carried.clone(),
    };
    // The outermost inference span of each inference chain, and the group
    // its attempts are retried in (that span's parent).
    let outer_inference: Vec<usize> = (0..n)
        .map(|i| {
            let mut at = i;
            let mut steps = 0;
            while let Some(p) = parent[at] {
                if role(p) != Role::Inference || steps > n {
                    break;
                }
                at = p;
                steps += 1;
            }
            at
        })
        .collect();
    // Several instrumentations of one client call (Strands `chat` over
    // Traceloop's and OpenInference's Bedrock spans and botocore's): leaves
    // with the same usage, outcome and model whose times overlap, under the
    // same outermost inference span, named differently (another
    // instrumentation), or under a parent that never arrived, are one
    // call. The deepest report stays (then a CLIENT span, the lowest id).
    let depth: Vec<usize> = (0..n)
        .map(|i| {
            let mut d = 0;
            let mut at = i;
            while let (Some(p), true) = (parent[at], d <= n) {
                if role(p) != Role::Inference {
                    break;
                }
                at = p;
                d += 1;
            }
            d
        })
        .collect();
    // A span whose parent never arrived (it may belong to any call).
    let orphan = |i: usize| parent[i].is_none() && kept[i].parent != 0;
    let mut duplicate = vec![false; n];
    {
        // Candidates by usage and outcome; within each, the preferred first.
        let mut groups: FastMap<(Option<u64>, Option<u64>, bool), Vec<usize>> = FastMap::default();
        for i in 0..n {
            if role(i) == Role::Inference && !has_inference_below[i] {
                let u = kept[i].usage;
                groups
                    .entry((u.input, u.output, kept[i].error))
                    .or_default()
                    .push(i);
            }
        }
        for (_, mut group) in groups {
            if group.len() < 2 {
                continue;
            }
            let rank = |i: usize| {
                (
                    std::cmp::Reverse(depth[i]),
                    kept[i].kind != 3,
                    kept[i].span_id,
                )
            };
            group.sort_by_key(|i| rank(*i));
            for k in 1..group.len() {
                let i = group[k];
                let from = k.saturating_sub(MAX_SAME_CALL_CANDIDATES);
                duplicate[i] = group[from..k].iter().any(|&j| {
                    !duplicate[j]
                        && kept[i].start_ns <= kept[j].end_ns
                        && kept[j].start_ns <= kept[i].end_ns
                        && same_model(&kept[i].model, &kept[j].model)
                        && (outer_inference[i] == outer_inference[j]
                            || (kept[i].name != kept[j].name && evident(kept[i], kept[j]))
                            || orphan(outer_inference[i])
                            || orphan(outer_inference[j]))
                });
            }
        }
    }
    // Per retry group (parent of an outermost inference span): the starts
    // of the attempts that answered.
    let mut answered: FastMap<Option<usize>, Vec<u64>> = FastMap::default();
    for i in 0..n {
        if role(i) == Role::Inference && outer_inference[i] == i && !kept[i].error {
            answered
                .entry(parent[i])
                .or_default()
                .push(kept[i].start_ns);
        }
    }
    let recovered = |i: usize| -> bool {
        let o = outer_inference[i];
        let start = kept[o].start_ns;
        answered
            .get(&parent[o])
            .is_some_and(|starts| starts.iter().any(|s| *s >= start))
    };
    let mut retried = vec![false; n];
    let mut prices: Vec<(Arc<str>, Option<super::pricing::Price>)> = Vec::new();
    let mut start_ns = u64::MAX;
    let mut end_ns = 0u64;
    for i in 0..n {
        let s = kept[i];
        start_ns = start_ns.min(s.start_ns);
        end_ns = end_ns.max(s.end_ns);
        out.invalid_usage += u64::from(s.invalid_usage);
        if let Some(a) = &s.agent {
            if !out.agents.contains(a) {
                out.agents.push(a.clone());
            }
        }
        if let (Role::Inference, Some(m)) = (s.role, &s.model) {
            if !out.models.contains(m) {
                out.models.push(m.clone());
            }
        }
        if reports(i) && !covered[i] && !duplicate[i] {
            let mut usage = s.usage;
            // A counted inference span lacking cache counts takes them
            // from the nearest inference span above it that has them.
            if s.role == Role::Inference {
                let mut at = parent[i];
                let mut steps = 0;
                while let (Some(p), true) = (at, steps <= n) {
                    if role(p) != Role::Inference {
                        break;
                    }
                    let u = kept[p].usage;
                    usage.cache_read = usage.cache_read.or(u.cache_read);
                    usage.cache_write = usage.cache_write.or(u.cache_write);
                    at = parent[p];
                    steps += 1;
                }
            }
            let tokens = Tokens {
                input: usage.input.unwrap_or(0),
                output: usage.output.unwrap_or(0),
                cache_read: usage.cache_read.unwrap_or(0),
                cache_write: usage.cache_write.unwrap_or(0),
            };
            let at = attribution(i);
            // Prices looked up once per model of the trace.
            let cost = at.model.as_ref().and_then(|m| {
                let price = match prices.iter().find(|(k, _)| Arc::ptr_eq(k, m) || k == m) {
                    Some((_, p)) => *p,
                    None => {
                        let p = pricing.price(m);
                        prices.push((m.clone(), p));
                        p
                    }
                };
                price.map(|p| p.cost(&tokens))
            });
            out.usage.push(UsageRecord {
                span_id: s.span_id,
                source: if s.role == Role::Inference {
                    UsageSource::Inference
                } else {
                    UsageSource::Rollup
                },
                tokens,
                cost,
                at,
            });
        }
        match s.role {
            Role::Inference if !has_inference_below[i] && !duplicate[i] => {
                // Throttled here or in a span of the same call above.
                let mut throttled = s.throttled;
                let mut at = parent[i];
                let mut steps = 0;
                while let (Some(p), true) = (at, steps <= n) {
                    if role(p) != Role::Inference {
                        break;
                    }
                    throttled |= kept[p].throttled;
                    at = parent[p];
                    steps += 1;
                }
                let outcome = if !s.error {
                    Outcome::Ok
                } else if recovered(i) {
                    retried[i] = true;
                    Outcome::Retried { throttled }
                } else {
                    Outcome::Failed
                };
                out.calls.push(ModelCall {
                    span_id: s.span_id,
                    operation: s.operation.clone().unwrap_or_else(|| Arc::from("chat")),
                    requests: 1 + s.retries,
                    outcome,
                    seconds: seconds(s),
                    error_type: s.error.then(|| s.error_type.clone()).flatten(),
                    throttled: s.error && throttled,
                    at: attribution(i),
                });
            }
            // An outer span of a call: retried with it.
            Role::Inference if s.error && recovered(i) => retried[i] = true,
            Role::Agent => {}
            Role::Tool => out.tools.push(ToolCall {
                span_id: s.span_id,
                tool: s.tool.clone(),
                failed: s.error,
                seconds: seconds(s),
                at: attribution(i),
            }),
            Role::Retrieval => out.retrievals.push(ToolCall {
                span_id: s.span_id,
                tool: None,
                failed: s.error,
                seconds: seconds(s),
                at: attribution(i),
            }),
            _ => {}
        }
    }
    out.start_ns = if start_ns == u64::MAX { 0 } else { start_ns };
    out.end_ns = end_ns;
    // Invocations: agent spans; a trace with none has its workflow or
    // chain roots as its invocations.
    let mut invocation_spans: Vec<usize> = (0..n).filter(|i| role(*i) == Role::Agent).collect();
    if invocation_spans.is_empty() {
        invocation_spans = (0..n)
            .filter(|i| parent[*i].is_none() && role(*i) == Role::Rollup)
            .collect();
    }
    let above = |i: usize| parent[i].and_then(|p| agent_span[p]);
    // The innermost failing span beneath each span that no retry
    // recovered: each such span walks up (at most MAX_CAUSE_DEPTH levels)
    // and is the cause of every ancestor it is deeper than the last one.
    let mut cause: Vec<(usize, usize)> = (0..n).map(|i| (i, 0)).collect();
    for j in 0..n {
        if !kept[j].error || retried[j] {
            continue;
        }
        let mut at = parent[j];
        let mut depth = 1usize;
        while let (Some(a), true) = (at, depth <= MAX_CAUSE_DEPTH) {
            if depth > cause[a].1 {
                cause[a] = (j, depth);
            }
            at = parent[a];
            depth += 1;
        }
    }
    let cause_of = |i: usize| cause[i].0;
    let failure = |kind: FailureKind, i: usize| {
        let c = cause_of(i);
        Failure {
            kind,
            span_id: kept[i].span_id,
            cause_span_id: kept[c].span_id,
            cause_name: kept[c].name.clone(),
            error: kept[c].error_type.clone(),
            message: kept[c].message.clone(),
            start_ns: kept[i].start_ns,
            at: attribution(i),
        }
    };
    let mut failed_invocation = vec![false; n];
    for &i in &invocation_spans {
        let s = kept[i];
        let nested = above(i).is_some();
        out.invocations.push(Invocation {
            span_id: s.span_id,
            failed: s.error,
            seconds: seconds(s),
            nested,
            at: attribution(i),
        });
        failed_invocation[i] = s.error;
    }
    // A failed invocation inside a failed one is the same failure.
    for &i in &invocation_spans {
        if !failed_invocation[i] {
            continue;
        }
        let mut outer_failed = false;
        let mut at = above(i);
        let mut steps = 0;
        while let (Some(a), true) = (at, steps <= n) {
            outer_failed |= failed_invocation[a];
            at = above(a);
            steps += 1;
        }
        if !outer_failed {
            out.failures.push(failure(FailureKind::Invocation, i));
        }
    }
    // Is a span inside a failed invocation?
    let failed_at = nearest(&parent, |i| failed_invocation[i], &mut again);
    let in_failed = |i: usize| failed_at[i].is_some();
    for i in 0..n {
        let s = kept[i];
        match s.role {
            Role::Tool if s.error => out.failures.push(failure(FailureKind::Tool, i)),
            Role::Inference
                if !has_inference_below[i]
                    && !duplicate[i]
                    && s.error
                    && !retried[i]
                    && !in_failed(i) =>
            {
                out.failures.push(failure(FailureKind::Model, i))
            }
            _ => {}
        }
        if s.guardrail_intervened {
            out.failures.push(failure(FailureKind::Guardrail, i));
        }
    }
    out.failures.sort_by_key(|f| f.start_ns);
    out
}
