//! The policies of `tail_sampling`: their config (the Collector's keys,
//! plus spanwire's agent policies) and their evaluation on a trace's or a
//! session's [`Summary`], which is built span by span as they arrive, so a
//! decision never reads the spans again.

use std::collections::{BTreeMap, HashSet};

use regex::Regex;
use serde::Deserialize;

use crate::exporters::live::store::Price;
use crate::settings::de::DeError;

/// One policy, as the Collector writes it: `name`, `type`, and the block
/// named after the type.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Its name, in self-metrics and `tailsampling.policy`.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: PolicyType,
    /// `latency:` block.
    #[serde(default)]
    pub latency: Option<LatencyConfig>,
    /// `status_code:` block.
    #[serde(default)]
    pub status_code: Option<StatusCodeConfig>,
    /// `string_attribute:` block.
    #[serde(default)]
    pub string_attribute: Option<StringAttributeConfig>,
    /// `numeric_attribute:` block.
    #[serde(default)]
    pub numeric_attribute: Option<NumericAttributeConfig>,
    /// `boolean_attribute:` block.
    #[serde(default)]
    pub boolean_attribute: Option<BooleanAttributeConfig>,
    /// `probabilistic:` block.
    #[serde(default)]
    pub probabilistic: Option<ProbabilisticConfig>,
    /// `rate_limiting:` block.
    #[serde(default)]
    pub rate_limiting: Option<RateLimitingConfig>,
    /// `span_count:` block.
    #[serde(default)]
    pub span_count: Option<SpanCountConfig>,
    /// `and:` block.
    #[serde(default)]
    pub and: Option<AndConfig>,
    /// `composite:` block.
    #[serde(default)]
    pub composite: Option<CompositeConfig>,
    /// `tokens_over:` block.
    #[serde(default)]
    pub tokens_over: Option<TokensOverConfig>,
    /// `cost_over:` block.
    #[serde(default)]
    pub cost_over: Option<CostOverConfig>,
}

/// The policy types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyType {
    /// Every trace.
    AlwaysSample,
    /// Traces (sessions) lasting at least `threshold_ms`.
    Latency,
    /// A span with one of `status_codes`.
    StatusCode,
    /// A span (or its resource) whose string attribute is one of `values`.
    StringAttribute,
    /// A span (or its resource) whose numeric attribute is in range.
    NumericAttribute,
    /// A span (or its resource) whose boolean attribute is `value`.
    BooleanAttribute,
    /// A share of traces, by a hash of the trace id (the session key).
    Probabilistic,
    /// Up to `spans_per_second`.
    RateLimiting,
    /// Traces with between `min_spans` and `max_spans` spans.
    SpanCount,
    /// All of `and_sub_policy`.
    And,
    /// Sub-policies in order, each within its share of a span rate.
    Composite,
    /// spanwire: a failure as the agent-trace model counts it (a failed
    /// invocation, a failed tool call, an unrecovered model call, a
    /// guardrail intervention); a throttle a retry recovered is none.
    AgentError,
    /// spanwire: a guardrail intervened (`aws.bedrock.guardrail.action`
    /// other than `NONE`).
    GuardrailIntervened,
    /// spanwire: input + output tokens, each model call counted once (the
    /// agent-trace model), at least `tokens`.
    TokensOver,
    /// spanwire: the cost of those tokens (the processor's `pricing` over
    /// the built-in Bedrock table) at least `usd`.
    CostOver,
    /// spanwire: a tool call failed.
    ToolFailed,
}

/// `latency:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    /// Sampled when the trace lasts at least this long (first start to last end).
    pub threshold_ms: u64,
    /// And less than this (0: no upper bound).
    #[serde(default)]
    pub upper_threshold_ms: u64,
}

/// `status_code:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCodeConfig {
    /// `OK`, `ERROR`, `UNSET`.
    pub status_codes: Vec<String>,
}

/// `string_attribute:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringAttributeConfig {
    /// The attribute.
    pub key: String,
    /// Values that match (regular expressions with `enabled_regex_matching`).
    pub values: Vec<String>,
    /// Treat `values` as regular expressions (whole-value matches).
    #[serde(default)]
    pub enabled_regex_matching: bool,
    /// Accepted for the Collector's configs; matches are not cached here.
    #[serde(default)]
    pub cache_max_size: Option<usize>,
    /// Sample what does not match; a match is a veto on sampling.
    #[serde(default)]
    pub invert_match: bool,
}

/// `numeric_attribute:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericAttributeConfig {
    /// The attribute.
    pub key: String,
    /// Lowest matching value (inclusive).
    #[serde(default)]
    pub min_value: Option<i64>,
    /// Highest matching value (inclusive).
    #[serde(default)]
    pub max_value: Option<i64>,
    /// Sample what does not match; a match is a veto on sampling.
    #[serde(default)]
    pub invert_match: bool,
}

/// `boolean_attribute:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BooleanAttributeConfig {
    /// The attribute.
    pub key: String,
    /// The value that matches.
    pub value: bool,
    /// Sample what does not match; a match is a veto on sampling.
    #[serde(default)]
    pub invert_match: bool,
}

/// `probabilistic:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticConfig {
    /// Salt of the hash (so that two samplers pick different traces).
    #[serde(default)]
    pub hash_salt: String,
    /// Percent sampled, 0–100.
    pub sampling_percentage: f64,
}

/// `rate_limiting:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitingConfig {
    /// Spans sampled per second at most.
    pub spans_per_second: u64,
}

/// `span_count:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanCountConfig {
    /// At least this many spans.
    pub min_spans: u64,
    /// At most this many (0: no upper bound).
    #[serde(default)]
    pub max_spans: u64,
}

/// `and:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AndConfig {
    /// Every one must sample.
    pub and_sub_policy: Vec<PolicyConfig>,
}

/// `composite:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompositeConfig {
    /// Spans per second sampled by all sub-policies together.
    pub max_total_spans_per_second: u64,
    /// Sub-policy names, in the order they are tried.
    pub policy_order: Vec<String>,
    /// The sub-policies.
    pub composite_sub_policy: Vec<PolicyConfig>,
    /// Each sub-policy's share of the rate, in percent (a policy left out
    /// may use what the others leave).
    #[serde(default)]
    pub rate_allocation: Vec<RateAllocation>,
}

/// One `rate_allocation` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateAllocation {
    /// The sub-policy.
    pub policy: String,
    /// Its share, in percent.
    pub percent: f64,
}

/// `tokens_over:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensOverConfig {
    /// Input plus output tokens, at least.
    pub tokens: u64,
}

/// `cost_over:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostOverConfig {
    /// Cost in USD (from the processor's `pricing`), at least.
    pub usd: f64,
}

/// What a policy says of one trace or session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Keep it.
    Sampled,
    /// This policy does not keep it.
    NotSampled,
    /// An `invert_match` policy found no match: keep it.
    InvertSampled,
    /// An `invert_match` policy found a match: drop it, whatever the others say.
    InvertNotSampled,
}

impl Decision {
    /// Whether it keeps the trace.
    pub fn keeps(self) -> bool {
        matches!(self, Decision::Sampled | Decision::InvertSampled)
    }
}

/// What is known of one trace or session, from its spans as they arrived.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Spans seen.
    pub spans: u64,
    /// Earliest start (0: none yet).
    pub start_ns: u64,
    /// Latest end.
    pub end_ns: u64,
    /// Bit per status code seen (1 unset, 2 ok, 4 error).
    pub status_bits: u8,
    /// A failure as the agent-trace model counts it (set at decision).
    pub agent_error: bool,
    /// A guardrail intervened.
    pub guardrail: bool,
    /// A tool call failed.
    pub tool_failed: bool,
    /// Input plus output tokens, once per model call (set at decision).
    pub tokens: u64,
    /// Cost of those tokens (set at decision).
    pub cost: f64,
    /// Bit per attribute matcher that some span (or its resource) matched.
    pub matched: u64,
}

impl Summary {
    /// Adds `other` (a trace joining its session).
    pub fn merge(&mut self, other: &Summary) {
        self.spans += other.spans;
        if other.start_ns > 0 && (self.start_ns == 0 || other.start_ns < self.start_ns) {
            self.start_ns = other.start_ns;
        }
        self.end_ns = self.end_ns.max(other.end_ns);
        self.status_bits |= other.status_bits;
        self.agent_error |= other.agent_error;
        self.guardrail |= other.guardrail;
        self.tool_failed |= other.tool_failed;
        self.tokens += other.tokens;
        self.cost += other.cost;
        self.matched |= other.matched;
    }
}

/// A test of one attribute, evaluated on every span and resource as it
/// arrives; its result is a bit of [`Summary::matched`].
#[derive(Debug, Clone)]
pub enum Matcher {
    /// One of these strings.
    Strings(HashSet<String>),
    /// One of these patterns (anchored).
    Patterns(Vec<Regex>),
    /// An integer (or a double) in `[min, max]`.
    Range(i64, i64),
    /// This boolean.
    Bool(bool),
}

/// One matcher with the attribute it reads.
#[derive(Debug, Clone)]
pub struct AttributeTest {
    /// The attribute.
    pub key: String,
    /// What matches.
    pub matcher: Matcher,
}

impl AttributeTest {
    /// Whether `value` matches.
    pub fn matches(&self, value: &crate::convert::otlp_view::Value<'_>) -> bool {
        use crate::convert::otlp_view::Value as V;
        match (&self.matcher, value) {
            (Matcher::Strings(set), V::Str(s)) => set.contains(*s),
            (Matcher::Patterns(res), V::Str(s)) => res.iter().any(|r| r.is_match(s)),
            (Matcher::Range(lo, hi), V::Int(i)) => (*lo..=*hi).contains(i),
            (Matcher::Range(lo, hi), V::Double(d)) => *d >= *lo as f64 && *d <= *hi as f64,
            (Matcher::Bool(b), V::Bool(v)) => b == v,
            _ => false,
        }
    }
}

/// A compiled policy.
#[derive(Debug)]
enum Rule {
    Always,
    Latency { min_ns: u64, max_ns: u64 },
    Status(u8),
    Attribute { bit: u64, invert: bool },
    Probabilistic { salt: Vec<u8>, threshold: u64 },
    Rate(Bucket),
    SpanCount { min: u64, max: u64 },
    And(Vec<Rule>),
    Composite(Composite),
    AgentError,
    Guardrail,
    TokensOver(u64),
    CostOver(f64),
    ToolFailed,
}

/// Spans allowed in the current second.
#[derive(Debug, Default)]
struct Bucket {
    per_second: u64,
    second: u64,
    used: u64,
}

impl Bucket {
    /// Takes `spans` from this second's allowance, if they fit.
    fn take(&mut self, spans: u64, now_s: u64) -> bool {
        if self.second != now_s {
            self.second = now_s;
            self.used = 0;
        }
        if self.used + spans <= self.per_second {
            self.used += spans;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Composite {
    total: Bucket,
    /// In `policy_order`: the sub-policy and its own share.
    subs: Vec<(Rule, Bucket)>,
}

/// The compiled policies of one processor.
#[derive(Debug)]
pub struct Policies {
    rules: Vec<(String, Rule)>,
    /// The attribute tests, one per bit of [`Summary::matched`].
    pub tests: Vec<AttributeTest>,
    /// The price table of `cost_over`.
    pub pricing: BTreeMap<String, Price>,
}

fn err(m: impl Into<String>) -> DeError {
    use serde::de::Error;
    DeError::custom(m.into())
}

/// The block a type needs, or an error naming it.
fn block<'a, T>(b: &'a Option<T>, p: &PolicyConfig, key: &str) -> Result<&'a T, DeError> {
    b.as_ref().ok_or_else(|| {
        err(format!(
            "policy `{}` of type {key} needs a `{key}:` block",
            p.name
        ))
    })
}

impl Policies {
    /// Compiles and checks `configs` (errors name the policy).
    pub fn compile(
        configs: &[PolicyConfig],
        pricing: &BTreeMap<String, Price>,
    ) -> Result<Policies, DeError> {
        let mut tests = Vec::new();
        let mut names = HashSet::new();
        let mut rules = Vec::new();
        for p in configs {
            if !names.insert(p.name.as_str()) {
                return Err(err(format!("two policies are named `{}`", p.name)));
            }
            rules.push((p.name.clone(), compile(p, &mut tests, 0)?));
        }
        if tests.len() > 64 {
            return Err(err("at most 64 attribute policies"));
        }
        Ok(Policies {
            rules,
            tests,
            pricing: pricing.clone(),
        })
    }

    /// The top-level policy names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|(n, _)| n.as_str())
    }

    /// Evaluates every top-level policy on one trace or session (`key`: the
    /// bytes the probabilistic hash reads; `now_s`: the second rate limits
    /// count in). Returns each policy's decision, in order.
    pub fn evaluate(&mut self, s: &Summary, key: &[u8], now_s: u64) -> Vec<Decision> {
        self.rules
            .iter_mut()
            .map(|(_, r)| eval(r, s, key, now_s))
            .collect()
    }
}

/// The final decision from each policy's: an `InvertNotSampled` vetoes,
/// otherwise any keeping decision keeps. Also the first policy that kept it.
pub fn combine(decisions: &[Decision]) -> (bool, Option<usize>) {
    if decisions.contains(&Decision::InvertNotSampled) {
        return (false, None);
    }
    match decisions.iter().position(|d| d.keeps()) {
        Some(i) => (true, Some(i)),
        None => (false, None),
    }
}

fn compile(
    p: &PolicyConfig,
    tests: &mut Vec<AttributeTest>,
    depth: usize,
) -> Result<Rule, DeError> {
    let mut bit = |key: &str, matcher: Matcher| -> Result<u64, DeError> {
        if key.is_empty() {
            return Err(err(format!("policy `{}`: `key` is empty", p.name)));
        }
        tests.push(AttributeTest {
            key: key.to_string(),
            matcher,
        });
        Ok(1u64 << ((tests.len() - 1) % 64))
    };
    Ok(match p.kind {
        PolicyType::AlwaysSample => Rule::Always,
        PolicyType::Latency => {
            let c = block(&p.latency, p, "latency")?;
            if c.upper_threshold_ms != 0 && c.upper_threshold_ms <= c.threshold_ms {
                return Err(err(format!(
                    "policy `{}`: upper_threshold_ms must be above threshold_ms",
                    p.name
                )));
            }
            Rule::Latency {
                min_ns: c.threshold_ms.saturating_mul(1_000_000),
                max_ns: match c.upper_threshold_ms {
                    0 => u64::MAX,
                    u => u.saturating_mul(1_000_000),
                },
            }
        }
        PolicyType::StatusCode => {
            let c = block(&p.status_code, p, "status_code")?;
            let mut bits = 0u8;
            for code in &c.status_codes {
                bits |= match code.as_str() {
                    "UNSET" => 1,
                    "OK" => 2,
                    "ERROR" => 4,
                    other => {
                        return Err(err(format!(
                            "policy `{}`: unknown status code `{other}` (OK, ERROR or UNSET)",
                            p.name
                        )))
                    }
                };
            }
            if bits == 0 {
                return Err(err(format!("policy `{}`: status_codes is empty", p.name)));
            }
            Rule::Status(bits)
        }
        PolicyType::StringAttribute => {
            let c = block(&p.string_attribute, p, "string_attribute")?;
            let matcher = if c.enabled_regex_matching {
                let mut res = Vec::new();
                for v in &c.values {
                    res.push(Regex::new(&format!("^(?:{v})$")).map_err(|e| {
                        err(format!(
                            "policy `{}`: bad regular expression `{v}`: {e}",
                            p.name
                        ))
                    })?);
                }
                Matcher::Patterns(res)
            } else {
                Matcher::Strings(c.values.iter().cloned().collect())
            };
            Rule::Attribute {
                bit: bit(&c.key, matcher)?,
                invert: c.invert_match,
            }
        }
        PolicyType::NumericAttribute => {
            let c = block(&p.numeric_attribute, p, "numeric_attribute")?;
            let (lo, hi) = (
                c.min_value.unwrap_or(i64::MIN),
                c.max_value.unwrap_or(i64::MAX),
            );
            if c.min_value.is_none() && c.max_value.is_none() || lo > hi {
                return Err(err(format!(
                    "policy `{}`: set min_value and/or max_value, min not above max",
                    p.name
                )));
            }
            Rule::Attribute {
                bit: bit(&c.key, Matcher::Range(lo, hi))?,
                invert: c.invert_match,
            }
        }
        PolicyType::BooleanAttribute => {
            let c = block(&p.boolean_attribute, p, "boolean_attribute")?;
            Rule::Attribute {
                bit: bit(&c.key, Matcher::Bool(c.value))?,
                invert: c.invert_match,
            }
        }
        PolicyType::Probabilistic => {
            let c = block(&p.probabilistic, p, "probabilistic")?;
            if !(0.0..=100.0).contains(&c.sampling_percentage) {
                return Err(err(format!(
                    "policy `{}`: sampling_percentage must be 0–100",
                    p.name
                )));
            }
            Rule::Probabilistic {
                salt: c.hash_salt.as_bytes().to_vec(),
                threshold: sampling_threshold(c.sampling_percentage),
            }
        }
        PolicyType::RateLimiting => {
            let c = block(&p.rate_limiting, p, "rate_limiting")?;
            Rule::Rate(Bucket {
                per_second: c.spans_per_second,
                ..Bucket::default()
            })
        }
        PolicyType::SpanCount => {
            let c = block(&p.span_count, p, "span_count")?;
            if c.max_spans != 0 && c.max_spans < c.min_spans {
                return Err(err(format!(
                    "policy `{}`: max_spans is below min_spans",
                    p.name
                )));
            }
            Rule::SpanCount {
                min: c.min_spans,
                max: if c.max_spans == 0 {
                    u64::MAX
                } else {
                    c.max_spans
                },
            }
        }
        PolicyType::And => {
            let c = block(&p.and, p, "and")?;
            if depth > 0 || c.and_sub_policy.is_empty() {
                return Err(err(format!(
                    "policy `{}`: `and` needs sub-policies and cannot be nested",
                    p.name
                )));
            }
            let mut subs = Vec::new();
            for s in &c.and_sub_policy {
                subs.push(compile(s, tests, depth + 1)?);
            }
            Rule::And(subs)
        }
        PolicyType::Composite => {
            let c = block(&p.composite, p, "composite")?;
            if depth > 0 {
                return Err(err(format!(
                    "policy `{}`: `composite` cannot be nested",
                    p.name
                )));
            }
            let mut by_name = BTreeMap::new();
            for s in &c.composite_sub_policy {
                if by_name.insert(s.name.as_str(), s).is_some() {
                    return Err(err(format!(
                        "policy `{}`: two sub-policies are named `{}`",
                        p.name, s.name
                    )));
                }
            }
            let total: f64 = c.rate_allocation.iter().map(|a| a.percent).sum();
            if total > 100.0 + 1e-9 {
                return Err(err(format!(
                    "policy `{}`: rate_allocation adds up to more than 100%",
                    p.name
                )));
            }
            let mut subs = Vec::new();
            for name in &c.policy_order {
                let s = by_name.get(name.as_str()).ok_or_else(|| {
                    err(format!(
                        "policy `{}`: policy_order names `{name}`, which is not a sub-policy",
                        p.name
                    ))
                })?;
                let share = c
                    .rate_allocation
                    .iter()
                    .find(|a| &a.policy == name)
                    .map_or(c.max_total_spans_per_second, |a| {
                        (a.percent / 100.0 * c.max_total_spans_per_second as f64) as u64
                    });
                subs.push((
                    compile(s, tests, depth + 1)?,
                    Bucket {
                        per_second: share,
                        ..Bucket::default()
                    },
                ));
            }
            for a in &c.rate_allocation {
                if !c.policy_order.contains(&a.policy) {
                    return Err(err(format!(
                        "policy `{}`: rate_allocation names `{}`, which is not in policy_order",
                        p.name, a.policy
                    )));
                }
            }
            Rule::Composite(Composite {
                total: Bucket {
                    per_second: c.max_total_spans_per_second,
                    ..Bucket::default()
                },
                subs,
            })
        }
        PolicyType::AgentError => Rule::AgentError,
        PolicyType::GuardrailIntervened => Rule::Guardrail,
        PolicyType::TokensOver => Rule::TokensOver(block(&p.tokens_over, p, "tokens_over")?.tokens),
        PolicyType::CostOver => {
            // Priced by `pricing` over the built-in Bedrock table.
            let c = block(&p.cost_over, p, "cost_over")?;
            Rule::CostOver(c.usd)
        }
        PolicyType::ToolFailed => Rule::ToolFailed,
    })
}

/// The `probabilistic` policy keeps a trace (session) when
/// `sampling_hash(hash_salt, key) <= sampling_threshold(sampling_percentage)`,
/// `key` being the trace id's bytes (the session name).
pub fn sampling_threshold(percentage: f64) -> u64 {
    (percentage / 100.0 * u64::MAX as f64) as u64
}

/// FNV-1a over the salt and the key, then a 64-bit finaliser: the same
/// everywhere and in every version, so replicas (and a replay) decide alike.
pub fn sampling_hash(salt: &[u8], key: &[u8]) -> u64 {
    hash(salt, key)
}

fn hash(salt: &[u8], key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.iter().chain(key) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short keys: finish with a 64-bit mixer.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn yes(b: bool) -> Decision {
    if b {
        Decision::Sampled
    } else {
        Decision::NotSampled
    }
}

fn eval(r: &mut Rule, s: &Summary, key: &[u8], now_s: u64) -> Decision {
    match r {
        Rule::Always => Decision::Sampled,
        Rule::Latency { min_ns, max_ns } => {
            let d = s.end_ns.saturating_sub(s.start_ns);
            yes(s.start_ns > 0 && d >= *min_ns && d < *max_ns)
        }
        Rule::Status(bits) => yes(s.status_bits & *bits != 0),
        Rule::Attribute { bit, invert } => match (s.matched & *bit != 0, *invert) {
            (m, false) => yes(m),
            (true, true) => Decision::InvertNotSampled,
            (false, true) => Decision::InvertSampled,
        },
        Rule::Probabilistic { salt, threshold } => yes(hash(salt, key) <= *threshold),
        Rule::Rate(b) => yes(b.take(s.spans, now_s)),
        Rule::SpanCount { min, max } => yes(s.spans >= *min && s.spans <= *max),
        Rule::And(subs) => {
            let mut out = Decision::Sampled;
            for sub in subs.iter_mut() {
                let d = eval(sub, s, key, now_s);
                if !d.keeps() {
                    return d;
                }
                out = d;
            }
            out
        }
        Rule::Composite(c) => {
            for (sub, share) in c.subs.iter_mut() {
                if eval(sub, s, key, now_s).keeps() {
                    // Within its share and the total, or not sampled here.
                    if share.take(s.spans, now_s) && c.total.take(s.spans, now_s) {
                        return Decision::Sampled;
                    }
                    return Decision::NotSampled;
                }
            }
            Decision::NotSampled
        }
        Rule::AgentError => yes(s.agent_error),
        Rule::Guardrail => yes(s.guardrail),
        Rule::TokensOver(t) => yes(s.tokens >= *t),
        Rule::CostOver(usd) => yes(s.cost >= *usd),
        Rule::ToolFailed => yes(s.tool_failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(yaml: &str) -> Result<Policies, DeError> {
        let (node, _) = crate::settings::yaml::parse("test.yaml", yaml, &|_| None).unwrap();
        let cfgs: Vec<PolicyConfig> = crate::settings::de::from_node(&node).unwrap();
        let mut pricing = BTreeMap::new();
        pricing.insert(
            "m".to_string(),
            Price {
                input: 1.0,
                output: 2.0,
                ..Price::default()
            },
        );
        Policies::compile(&cfgs, &pricing)
    }

    #[test]
    fn each_policy_decides_on_the_summary() {
        let mut p = policies(
            r#"
- {name: all, type: always_sample}
- {name: slow, type: latency, latency: {threshold_ms: 100, upper_threshold_ms: 1000}}
- {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
- {name: env, type: string_attribute, string_attribute: {key: env, values: ["pro.*"], enabled_regex_matching: true}}
- {name: big, type: numeric_attribute, numeric_attribute: {key: n, min_value: 10}}
- {name: flag, type: boolean_attribute, boolean_attribute: {key: f, value: true}}
- {name: none, type: probabilistic, probabilistic: {sampling_percentage: 0}}
- {name: every, type: probabilistic, probabilistic: {sampling_percentage: 100}}
- {name: rate, type: rate_limiting, rate_limiting: {spans_per_second: 5}}
- {name: count, type: span_count, span_count: {min_spans: 2, max_spans: 3}}
- {name: both, type: and, and: {and_sub_policy: [{name: a, type: agent_error}, {name: b, type: tool_failed}]}}
- {name: guard, type: guardrail_intervened}
- {name: tokens, type: tokens_over, tokens_over: {tokens: 1000}}
- {name: cost, type: cost_over, cost_over: {usd: 0.5}}
"#,
        )
        .unwrap();
        assert_eq!(p.tests.len(), 3);
        let s = Summary {
            spans: 3,
            start_ns: 1_000_000,
            end_ns: 201_000_000,
            status_bits: 4,
            agent_error: true,
            tool_failed: true,
            tokens: 999,
            cost: 0.5,
            matched: 0b101,
            ..Summary::default()
        };
        use Decision::*;
        let d = p.evaluate(&s, b"k", 1);
        assert_eq!(
            d,
            vec![
                Sampled, Sampled, Sampled, Sampled, NotSampled, Sampled, NotSampled, Sampled,
                Sampled, Sampled, Sampled, NotSampled, NotSampled, Sampled
            ]
        );
        // The rate limit's second is used up: 3 + 3 > 5.
        assert_eq!(p.evaluate(&s, b"k", 1)[8], NotSampled);
        assert_eq!(p.evaluate(&s, b"k", 2)[8], Sampled);
        let quiet = Summary {
            spans: 1,
            start_ns: 5,
            end_ns: 6,
            ..Summary::default()
        };
        let d = p.evaluate(&quiet, b"k", 3);
        assert_eq!(combine(&d), (true, Some(0)));
        assert_eq!(&d[1..6], &[NotSampled; 5]);
    }

    #[test]
    fn an_inverted_match_vetoes() {
        let mut p = policies(
            r#"
- {name: all, type: always_sample}
- {name: not-health, type: string_attribute, string_attribute: {key: http.route, values: [/health], invert_match: true}}
"#,
        )
        .unwrap();
        let hit = Summary {
            spans: 1,
            matched: 1,
            ..Summary::default()
        };
        let d = p.evaluate(&hit, b"k", 0);
        assert_eq!(d[1], Decision::InvertNotSampled);
        assert_eq!(combine(&d), (false, None));
        let miss = Summary {
            spans: 1,
            ..Summary::default()
        };
        assert_eq!(combine(&p.evaluate(&miss, b"k", 0)), (true, Some(0)));
    }

    #[test]
    fn composite_shares_its_rate_in_order() {
        let mut p = policies(
            r#"
- name: comp
  type: composite
  composite:
    max_total_spans_per_second: 10
    policy_order: [errs, rest]
    composite_sub_policy:
      - {name: errs, type: agent_error}
      - {name: rest, type: always_sample}
    rate_allocation:
      - {policy: errs, percent: 60}
      - {policy: rest, percent: 40}
"#,
        )
        .unwrap();
        let err = Summary {
            spans: 3,
            agent_error: true,
            ..Summary::default()
        };
        let ok = Summary {
            spans: 3,
            ..Summary::default()
        };
        let kept = |p: &mut Policies, s: &Summary| p.evaluate(s, b"k", 7)[0].keeps();
        assert!(kept(&mut p, &err)); // errs: 3 of 6
        assert!(kept(&mut p, &err)); // errs: 6 of 6
        assert!(!kept(&mut p, &err)); // errs is full; an error never falls to `rest`
        assert!(kept(&mut p, &ok)); // rest: 3 of 4
        assert!(!kept(&mut p, &ok)); // rest is full
    }

    #[test]
    fn bad_policies_are_refused_with_their_name() {
        for (yaml, want) in [
            ("- {name: a, type: latency}", "needs a `latency:` block"),
            ("- {name: a, type: always_sample}\n- {name: a, type: always_sample}", "two policies are named `a`"),
            ("- {name: s, type: status_code, status_code: {status_codes: [BAD]}}", "unknown status code `BAD`"),
            ("- {name: r, type: string_attribute, string_attribute: {key: k, values: ['('], enabled_regex_matching: true}}", "bad regular expression"),
            ("- {name: p, type: probabilistic, probabilistic: {sampling_percentage: 150}}", "0–100"),
            ("- name: c\n  type: composite\n  composite: {max_total_spans_per_second: 1, policy_order: [x], composite_sub_policy: []}", "not a sub-policy"),
            ("- name: n\n  type: and\n  and: {and_sub_policy: [{name: i, type: and, and: {and_sub_policy: [{name: j, type: always_sample}]}}]}", "cannot be nested"),
        ] {
            let e = policies(yaml).err().unwrap_or_else(|| panic!("{yaml} was accepted"));
            assert!(e.to_string().contains(want), "{yaml}: {e}");
        }
        let (node, _) = crate::settings::yaml::parse(
            "t",
            "- {name: c, type: cost_over, cost_over: {usd: 1}}",
            &|_| None,
        )
        .unwrap();
        // With no `pricing`, cost_over prices with the built-in table.
        let no_pricing: Vec<PolicyConfig> = crate::settings::de::from_node(&node).unwrap();
        assert!(Policies::compile(&no_pricing, &BTreeMap::new()).is_ok());
    }

    #[test]
    fn the_hash_is_fixed_and_spreads() {
        assert_eq!(hash(b"", b"session-1"), hash(b"", b"session-1"));
        assert_ne!(hash(b"a", b"session-1"), hash(b"b", b"session-1"));
        let kept = (0..10_000)
            .filter(|i| hash(b"", format!("s{i}").as_bytes()) <= u64::MAX / 4)
            .count();
        assert!((2300..2700).contains(&kept), "{kept} of 10000 at 25%");
    }
}
