//! The agent-trace model: the one place that decides what a model call, a
//! session, a failure and a token count are. `agentmetrics` (and so
//! Prometheus and EMF), `live` and `tail_sampling`'s agent policies read
//! their numbers from it; none of them sums span attributes on its own.
//! Pure: no I/O, time passed in.
//!
//! - [`span`] reads one span, in any dialect, into [`SpanFacts`].
//! - [`trace::evaluate`] turns one trace's facts into [`TraceNumbers`]:
//!   usage once per model call, calls, invocations, tools, failures.
//! - [`tracker::Tracker`] holds traces as their spans arrive, in any order
//!   and across batches, and settles each once idle, within bounds.
//! - [`pricing`] prices tokens: a built-in, dated Bedrock table that a
//!   component's `pricing` overrides.
//!
//! # The rules
//!
//! - **Usage counts once per model call**: a span's usage counts only if
//!   no span beneath it in its trace reports usage. Strands `chat`
//!   (INTERNAL) with botocore `chat <model>` (CLIENT) beneath it: the
//!   botocore span's; LangChain's span over botocore's: botocore's;
//!   `invoke_agent` or an event-loop cycle with running totals: only when
//!   nothing beneath it reports usage (a fallback, `UsageSource::Rollup`).
//!   A counted span lacking cache counts takes them from the inference
//!   span above it. A framework's inference span *beside* the client span
//!   it wraps (same parent, starting no later and ending no earlier, the
//!   same usage: LangChain's and the Bedrock client's under OpenInference)
//!   counts as if the client span were beneath it. Several instrumentations
//!   of one client call side by side (Traceloop's and OpenInference's
//!   Bedrock spans beside each other, botocore's under one of them, or
//!   under a parent that never arrived) are one call when their usage,
//!   outcome and model are the same, their times overlap, and they share
//!   their outermost inference span, are named differently (and both carry
//!   usage or a model: concurrent calls with neither stay apart), or one
//!   hangs under a parent that never arrived: the deepest report counts. Input tokens are taken as the span reports them
//!   (Bedrock's exclude cached tokens; nothing is subtracted).
//! - **A model call** is an inference span with no inference span beneath
//!   it, counted once in calls, durations and cost, with its requests
//!   (1 + botocore's `retry_attempts`), attributed to the agent, session
//!   and model of its nearest ancestors that name them (botocore spans name
//!   no agent; GenAI log events join by trace id).
//! - **Failures as a person means them**: a failed attempt followed by an
//!   answered attempt under the same parent is a retry (a throttle when
//!   the error says so), not a failure. Failures are: failed invocations
//!   (the outermost failed `invoke_agent`, else a failed workflow or chain root), failed
//!   tool calls, unrecovered model calls outside a failed invocation, and
//!   guardrail interventions; each names the innermost failing span
//!   beneath it as its cause.
//! - **Order**: spans of a trace may arrive in any order and across
//!   batches; a trace settles once idle. A span id seen twice counts once
//!   (the ended copy wins over an in-progress `aws/spans` copy). A late
//!   span reopens its trace if it is remembered, and the consumer applies
//!   the difference.
//! - **Hostile input**: usage that is a string, negative, fractional or
//!   over [`span::MAX_TOKENS`] is refused and counted; parent links that
//!   form a cycle are cut and counted; a trace that never ends settles at
//!   `max_age` and continues as a new segment; memory is bounded by the
//!   tracker's limits.
//!
//! # Dialects: which attribute is read from which
//!
//! | what | attributes, first present wins |
//! |---|---|
//! | role | `gen_ai.operation.name` (`chat`, `text_completion`, `generate_content`, `embeddings` → inference; `invoke_agent`, `create_agent` → agent; `execute_event_loop_cycle`, `agent_step`, `invoke_workflow` → rollup; `execute_tool` → tool); OpenInference `openinference.span.kind` (`LLM`, `EMBEDDING`, `AGENT`, `CHAIN`, `TOOL`, `RETRIEVER`, `GUARDRAIL`); OpenLLMetry `llm.request.type`, `traceloop.span.kind`; else `gen_ai.system`/`gen_ai.provider.name` with a model or usage (inference) or a tool name (tool) |
//! | input tokens | `gen_ai.usage.input_tokens`, `gen_ai.usage.prompt_tokens`, `llm.token_count.prompt` |
//! | output tokens | `gen_ai.usage.output_tokens`, `gen_ai.usage.completion_tokens`, `llm.token_count.completion` |
//! | cache read | `gen_ai.usage.cache_read.input_tokens`, `gen_ai.usage.cache_read_input_tokens` (Strands), `llm.token_count.prompt_details.cache_read` |
//! | cache write | `gen_ai.usage.cache_write.input_tokens`, `gen_ai.usage.cache_creation.input_tokens`, `gen_ai.usage.cache_creation_input_tokens`, `gen_ai.usage.cache_write_input_tokens` (Strands), `llm.token_count.prompt_details.cache_write` |
//! | model | `gen_ai.request.model`, `gen_ai.response.model`, `llm.model_name`, `llm.request.model` |
//! | agent | `gen_ai.agent.name`, `gen_ai.agent.id`, Traceloop `traceloop.entity.name` on an agent span |
//! | provider | `gen_ai.provider.name`, `gen_ai.system`, `llm.provider`, `llm.system` (`strands-agents` marks `invoke_agent` totals as lifetime totals) |
//! | tool | `gen_ai.tool.name`, `tool.name` |
//! | session | the component's `session_keys` on the span, else on its resource |
//! | failure | status ERROR, `error.type`; throttled: HTTP 429, or `error.type`/status message naming throttling |
//! | guardrail | `aws.bedrock.guardrail.action` other than `NONE` |
//! | retries inside a span | `retry_attempts` (botocore) |

pub mod pricing;
pub mod span;
pub mod trace;
pub mod tracker;

pub use pricing::{Price, Pricing};
pub use span::{Keys, Origin, Role, SpanFacts, Usage};
pub use trace::{
    evaluate, Attribution, Failure, FailureKind, Invocation, ModelCall, Outcome, Tokens, ToolCall,
    TraceNumbers, UsageRecord, UsageSource,
};
pub use tracker::{trace_id, Settled, TraceId, Tracker, TrackerLimits, TrackerStats};

/// The attribute keys that name a session by default, in order of
/// preference.
pub fn default_session_keys() -> Vec<String> {
    vec!["session.id".into(), "gen_ai.conversation.id".into()]
}

#[cfg(test)]
mod tests;
