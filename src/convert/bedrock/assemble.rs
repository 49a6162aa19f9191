//! Assembling streamed trace events into whole invocations, so events can be
//! posted while the agent still streams. Pure: the caller supplies the clock.
//!
//! A top-level invocation is complete when a failure or the post-processing
//! model output arrives, or `final_grace` after its orchestration's final
//! response with nothing new (post-processing and output guardrails come
//! after the final response; releasing at once would emit the invocation's
//! root span twice). It is released together with every collaborator
//! invocation it called (joined by the call's `clientRequestId`, or by
//! `callerChain`).
//! Anything that saw no event for `idle` is released as it is. The number of
//! buffered events is bounded: past the bound the oldest invocations are
//! released early rather than dropped.
//!
//! Exact duplicates (the same event JSON) are left out and counted: of an
//! event still buffered, and of the most recently released events (as many
//! as the buffer holds), so a stream re-sent by an at-least-once sender
//! converts once.

use std::collections::{HashMap, HashSet, VecDeque};

use serde_json::Value;

use super::event::{invocation_key, read_event, Stage};
use super::event_digest;

/// Facts about one event that assembly needs.
struct Facts {
    key: String,
    caller_chain: Vec<String>,
    end: End,
    client_request_id: Option<String>,
}

/// What an event says about its invocation's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// More may follow.
    No,
    /// The orchestration's final response: post-processing may still follow.
    Final,
    /// Nothing follows: a failure, or the post-processing model output.
    Done,
}

fn facts(v: &Value) -> Result<Facts, String> {
    let e = read_event(v)?;
    let body = e.body;
    let end = if e.stage == Stage::Failure
        || (e.stage == Stage::PostProcessing && e.member == "modelInvocationOutput")
    {
        End::Done
    } else if e.member == "observation" && body.contains_key("finalResponse") {
        End::Final
    } else {
        End::No
    };
    let client_request_id = body
        .get("agentCollaboratorInvocationOutput")
        .and_then(|o| o.get("metadata"))
        .and_then(|m| m.get("clientRequestId"))
        .and_then(Value::as_str)
        .map(String::from);
    Ok(Facts {
        key: invocation_key(e.trace_id).to_string(),
        caller_chain: e.caller_chain().into_iter().map(String::from).collect(),
        end,
        client_request_id,
    })
}

struct Pending<C> {
    events: Vec<Value>,
    digests: Vec<[u8; 16]>,
    caller_chain: Vec<String>,
    calls: Vec<String>,
    /// When the final response arrived, if nothing came after it.
    final_ms: Option<u64>,
    last_ms: u64,
    first_ms: u64,
    ctx: C,
}

/// Released events of one invocation tree, with the context of its top-level invocation.
#[derive(Debug)]
pub struct Released<C> {
    /// The events, in arrival order per invocation.
    pub events: Vec<Value>,
    /// The context given with the top-level invocation's first event.
    pub ctx: C,
}

/// Buffers events per invocation until their tree is complete.
pub struct Assembler<C> {
    pending: HashMap<String, Pending<C>>,
    buffered: usize,
    max_events: usize,
    final_grace_ms: u64,
    /// Digests of the buffered events and of the last `max_events` released
    /// ones (oldest first in `released`).
    seen: HashSet<[u8; 16]>,
    released: VecDeque<[u8; 16]>,
    duplicates: u64,
}

impl<C: Clone> Assembler<C> {
    /// An assembler holding at most `max_events` events, releasing an
    /// invocation `final_grace_ms` after its final response (0: at once).
    pub fn new(max_events: usize, final_grace_ms: u64) -> Self {
        Assembler {
            pending: HashMap::new(),
            buffered: 0,
            max_events: max_events.max(1),
            final_grace_ms,
            seen: HashSet::new(),
            released: VecDeque::new(),
            duplicates: 0,
        }
    }

    /// Exact duplicate events left out so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Events buffered now.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Adds one event seen at `now_ms` with the context of its request; returns
    /// invocation trees that are now complete. `Err` says why the event was not used.
    pub fn push(&mut self, event: Value, now_ms: u64, ctx: &C) -> Result<Vec<Released<C>>, String> {
        let f = facts(&event)?;
        let digest = event_digest(&event);
        if !self.seen.insert(digest) {
            self.duplicates += 1;
            return Ok(Vec::new());
        }
        let p = self
            .pending
            .entry(f.key.clone())
            .or_insert_with(|| Pending {
                events: Vec::new(),
                digests: Vec::new(),
                caller_chain: f.caller_chain.clone(),
                calls: Vec::new(),
                final_ms: None,
                last_ms: now_ms,
                first_ms: now_ms,
                ctx: ctx.clone(),
            });
        if p.caller_chain.is_empty() && !f.caller_chain.is_empty() {
            p.caller_chain = f.caller_chain.clone();
        }
        p.events.push(event);
        p.digests.push(digest);
        p.last_ms = now_ms;
        if let Some(id) = f.client_request_id {
            p.calls.push(id);
        }
        // Anything after the final response re-opens the wait (post-processing).
        p.final_ms = (f.end == End::Final).then_some(now_ms);
        let top_level = p.caller_chain.len() <= 1;
        self.buffered += 1;
        let mut out = Vec::new();
        let release_now = match f.end {
            End::Done => true,
            End::Final => self.final_grace_ms == 0,
            End::No => false,
        };
        if release_now && top_level {
            out.extend(self.release(&f.key));
        }
        while self.buffered > self.max_events {
            let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.first_ms)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            match self.release(&oldest) {
                Some(r) => out.push(r),
                None => break,
            }
        }
        Ok(out)
    }

    /// Releases trees whose every invocation has been quiet for `idle_ms`
    /// (everything when `idle_ms` is 0), and trees whose top-level invocation
    /// gave its final response and has been quiet for the final grace since.
    pub fn expire(&mut self, now_ms: u64, idle_ms: u64) -> Vec<Released<C>> {
        let children = self.children();
        let called: HashSet<&String> = children.values().flatten().collect();
        // Roots: invocations no buffered invocation called (top-level ones and orphans).
        let mut roots: Vec<String> = self
            .pending
            .keys()
            .filter(|k| !called.contains(k))
            .cloned()
            .collect();
        roots.sort_by_key(|k| self.pending[k].first_ms);
        let ready: Vec<Vec<String>> = roots
            .iter()
            .map(|k| tree(k, &children))
            .filter(|members| {
                let quiet_for = |ms: u64| {
                    members
                        .iter()
                        .filter_map(|m| self.pending.get(m))
                        .all(|p| now_ms.saturating_sub(p.last_ms) >= ms)
                };
                let finished = members
                    .first()
                    .and_then(|m| self.pending.get(m))
                    .is_some_and(|p| p.final_ms.is_some() && p.caller_chain.len() <= 1);
                quiet_for(idle_ms) || (finished && quiet_for(self.final_grace_ms))
            })
            .collect();
        ready
            .into_iter()
            .filter_map(|members| self.take(members))
            .collect()
    }

    /// Who called whom among the buffered invocations: by a collaborator
    /// call's `clientRequestId`, or by a caller chain one longer than the caller's.
    fn children(&self) -> HashMap<String, Vec<String>> {
        let mut by_chain: HashMap<&[String], Vec<&String>> = HashMap::new();
        for (k, p) in &self.pending {
            if !p.caller_chain.is_empty() {
                by_chain
                    .entry(p.caller_chain.as_slice())
                    .or_default()
                    .push(k);
            }
        }
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for (k, p) in &self.pending {
            let mut kids: Vec<String> = p
                .calls
                .iter()
                .filter(|id| *id != k && self.pending.contains_key(*id))
                .cloned()
                .collect();
            for (chain, keys) in &by_chain {
                if chain.len() == p.caller_chain.len() + 1
                    && !p.caller_chain.is_empty()
                    && chain.starts_with(&p.caller_chain)
                {
                    kids.extend(keys.iter().filter(|c| **c != k).map(|c| (*c).clone()));
                }
            }
            if !kids.is_empty() {
                out.insert(k.clone(), kids);
            }
        }
        out
    }

    fn release(&mut self, key: &str) -> Option<Released<C>> {
        let members = tree(key, &self.children());
        self.take(members)
    }

    /// Removes `members` (the first is the tree's root) and returns their events.
    fn take(&mut self, members: Vec<String>) -> Option<Released<C>> {
        let mut events = Vec::new();
        let mut ctx = None;
        for m in members {
            if let Some(p) = self.pending.remove(&m) {
                self.buffered -= p.events.len();
                if ctx.is_none() {
                    ctx = Some(p.ctx);
                }
                events.extend(p.events);
                self.released.extend(p.digests);
            }
        }
        // Released digests are remembered as long as the buffer is large.
        while self.released.len() > self.max_events {
            if let Some(d) = self.released.pop_front() {
                self.seen.remove(&d);
            }
        }
        ctx.map(|ctx| Released { events, ctx })
    }
}

/// `key` and every invocation it called, transitively.
fn tree(key: &str, children: &HashMap<String, Vec<String>>) -> Vec<String> {
    let mut out = vec![key.to_string()];
    let mut seen: HashSet<String> = out.iter().cloned().collect();
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            for k in kids {
                if seen.insert(k.clone()) {
                    out.push(k.clone());
                }
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(format!(
            "{}/tests/fixtures/bedrock/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        super::super::parse_events(&text).unwrap()
    }

    #[test]
    fn exact_duplicates_are_left_out_while_buffered_and_after_release() {
        let events = fixture("oi-py_action-group-function-lambda.json");
        let n = events.len();
        let mut a: Assembler<u32> = Assembler::new(2 * n, 0);
        let mut released = Vec::new();
        for (i, e) in events.iter().enumerate() {
            released.extend(a.push(e.clone(), i as u64, &1).unwrap());
            // The same event again, at once.
            released.extend(a.push(e.clone(), i as u64, &1).unwrap());
        }
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].events, events);
        assert_eq!(a.duplicates(), n as u64);
        // Re-sent after its release: still known, nothing is buffered.
        for e in &events {
            assert!(a.push(e.clone(), 100, &1).unwrap().is_empty());
        }
        assert_eq!(a.buffered(), 0);
        assert_eq!(a.duplicates(), 2 * n as u64);
        // The memory of released events is bounded by the buffer's size: once
        // more than that was released since, the stream is new again.
        let mut other = fixture("oi-py_knowledge-base-lookup.json");
        other.extend(fixture("oi-py_inline-agent.json"));
        let later: Vec<Value> = (0..3)
            .flat_map(|k| {
                other.iter().map(move |e| {
                    let mut e = e.clone();
                    e["eventTime"] = Value::from(format!("2030-01-0{}T00:00:00Z", k + 1));
                    e
                })
            })
            .collect();
        assert!(later.len() > 2 * n);
        for e in later {
            let _ = a.push(e, 200, &1).unwrap();
        }
        let _ = a.expire(10_000, 0);
        assert!(a.released.len() <= 2 * n);
        let again: usize = events
            .iter()
            .map(|e| a.push(e.clone(), 20_000, &1).unwrap().len())
            .sum();
        assert_eq!(again, 1, "released once more");
    }

    #[test]
    fn a_three_level_tree_is_released_once_at_its_final_response() {
        let events = fixture("oi-py_multi-agent-3-level-supervisor.json");
        let n = events.len();
        let mut a: Assembler<u32> = Assembler::new(10_000, 0);
        let mut released = Vec::new();
        for (i, e) in events.into_iter().enumerate() {
            let r = a.push(e, i as u64, &7).unwrap();
            if i + 1 < n {
                assert!(r.is_empty(), "released early at event {i}");
            }
            released.extend(r);
        }
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].events.len(), n);
        assert_eq!(released[0].ctx, 7);
        assert_eq!(a.buffered(), 0);
    }

    #[test]
    fn post_processing_after_the_final_response_is_kept_with_its_invocation() {
        let events = fixture("oi-py_post-processing.json");
        let n = events.len();
        let final_at = events
            .iter()
            .position(|e| e.to_string().contains("finalResponse"))
            .unwrap();
        assert!(
            final_at + 1 < n,
            "the fixture has events after the final response"
        );
        let mut a: Assembler<()> = Assembler::new(10_000, 500);
        let mut released = Vec::new();
        for (i, e) in events.iter().enumerate() {
            released.extend(a.push(e.clone(), i as u64, &()).unwrap());
            if i == final_at {
                assert!(released.is_empty(), "not released at the final response");
                assert!(a.expire(i as u64 + 499, 30_000).is_empty());
            }
        }
        // The post-processing output ends it: one release with every event.
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].events.len(), n);

        // Without post-processing, the grace after the final response releases it.
        let mut a: Assembler<()> = Assembler::new(10_000, 500);
        for e in &events[..=final_at] {
            assert!(a.push(e.clone(), 1_000, &()).unwrap().is_empty());
        }
        assert!(a.expire(1_499, 30_000).is_empty());
        let r = a.expire(1_500, 30_000);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].events.len(), final_at + 1);
    }

    #[test]
    fn interleaved_trees_are_released_separately() {
        let a = fixture("oi-py_multi-agent-3-level-supervisor.json");
        let mut b = fixture("oi-py_routing-classifier-to-collaborator.json");
        let b_last = b.pop().unwrap();
        let mut asm: Assembler<&str> = Assembler::new(10_000, 0);
        let mut released = Vec::new();
        for i in 0..a.len().max(b.len()) {
            if let Some(e) = b.get(i) {
                released.extend(asm.push(e.clone(), 0, &"b").unwrap());
            }
            if let Some(e) = a.get(i) {
                released.extend(asm.push(e.clone(), 0, &"a").unwrap());
            }
        }
        // `a` completed with its two collaborators; `b` still waits for its final response.
        assert_eq!(released.len(), 1);
        assert_eq!((released[0].ctx, released[0].events.len()), ("a", a.len()));
        assert_eq!(asm.buffered(), b.len());
        assert!(asm.expire(1, 1_000).is_empty(), "b is not idle yet");
        let r = asm.push(b_last, 2, &"b").unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].ctx, r[0].events.len()), ("b", b.len() + 1));
        assert_eq!(asm.buffered(), 0);
    }

    #[test]
    fn idle_invocations_expire_and_the_buffer_is_bounded() {
        let mut events = fixture("oi-py_action-group-function-lambda.json");
        events.pop(); // no final response
        let mut a: Assembler<()> = Assembler::new(10_000, 0);
        for e in events.clone() {
            assert!(a.push(e, 0, &()).unwrap().is_empty());
        }
        assert!(a.expire(1_000, 5_000).is_empty());
        let r = a.expire(6_000, 5_000);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].events.len(), events.len());

        let mut small: Assembler<()> = Assembler::new(3, 0);
        let mut out = 0;
        for e in events.clone() {
            out += small
                .push(e, 0, &())
                .unwrap()
                .iter()
                .map(|r| r.events.len())
                .sum::<usize>();
        }
        assert!(small.buffered() <= 3);
        assert_eq!(out + small.buffered(), events.len(), "nothing dropped");
    }
}
