//! Assembling streamed trace events into whole invocations, so events can be
//! posted while the agent still streams. Pure: the caller supplies the clock.
//!
//! A top-level invocation is complete when its final response or failure
//! arrives; it is released together with every collaborator invocation it
//! called (joined by the call's `clientRequestId`, or by `callerChain`).
//! Anything that saw no event for `idle` is released as it is. The number of
//! buffered events is bounded: past the bound the oldest invocations are
//! released early rather than dropped.

use std::collections::HashMap;

use serde_json::Value;

use super::{invocation_key, read_event, Stage};

/// Facts about one event that assembly needs.
struct Facts {
    key: String,
    caller_chain: Vec<String>,
    ends: bool,
    client_request_id: Option<String>,
}

fn facts(v: &Value) -> Result<Facts, String> {
    let e = read_event(v)?;
    let body = e.body;
    let ends = e.stage == Stage::Failure
        || (e.member == "observation" && body.contains_key("finalResponse"));
    let client_request_id = body
        .get("agentCollaboratorInvocationOutput")
        .and_then(|o| o.get("metadata"))
        .and_then(|m| m.get("clientRequestId"))
        .and_then(Value::as_str)
        .map(String::from);
    Ok(Facts {
        key: invocation_key(e.trace_id).to_string(),
        caller_chain: e.caller_chain().into_iter().map(String::from).collect(),
        ends,
        client_request_id,
    })
}

struct Pending<C> {
    events: Vec<Value>,
    caller_chain: Vec<String>,
    calls: Vec<String>,
    ended: bool,
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
}

impl<C: Clone> Assembler<C> {
    /// An assembler holding at most `max_events` events.
    pub fn new(max_events: usize) -> Self {
        Assembler {
            pending: HashMap::new(),
            buffered: 0,
            max_events: max_events.max(1),
        }
    }

    /// Events buffered now.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Adds one event seen at `now_ms` with the context of its request; returns
    /// invocation trees that are now complete. `Err` says why the event was not used.
    pub fn push(&mut self, event: Value, now_ms: u64, ctx: &C) -> Result<Vec<Released<C>>, String> {
        let f = facts(&event)?;
        let p = self
            .pending
            .entry(f.key.clone())
            .or_insert_with(|| Pending {
                events: Vec::new(),
                caller_chain: f.caller_chain.clone(),
                calls: Vec::new(),
                ended: false,
                last_ms: now_ms,
                first_ms: now_ms,
                ctx: ctx.clone(),
            });
        if p.caller_chain.is_empty() && !f.caller_chain.is_empty() {
            p.caller_chain = f.caller_chain.clone();
        }
        p.events.push(event);
        p.last_ms = now_ms;
        if let Some(id) = f.client_request_id {
            p.calls.push(id);
        }
        p.ended |= f.ends;
        let top_level = p.caller_chain.len() <= 1;
        self.buffered += 1;
        let mut out = Vec::new();
        if f.ends && top_level {
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
    /// (everything when `idle_ms` is 0).
    pub fn expire(&mut self, now_ms: u64, idle_ms: u64) -> Vec<Released<C>> {
        let mut out = Vec::new();
        loop {
            let roots: Vec<String> = self.roots();
            let ready = roots.into_iter().find(|k| {
                let tree = self.tree(k);
                tree.iter()
                    .filter_map(|m| self.pending.get(m))
                    .all(|p| now_ms.saturating_sub(p.last_ms) >= idle_ms)
            });
            match ready.and_then(|k| self.release(&k)) {
                Some(r) => out.push(r),
                None => break,
            }
        }
        out
    }

    /// Invocations no buffered invocation called: top-level ones and orphans.
    fn roots(&self) -> Vec<String> {
        let mut keys: Vec<&String> = self.pending.keys().collect();
        keys.sort_by_key(|k| self.pending[*k].first_ms);
        keys.into_iter()
            .filter(|k| {
                !self
                    .pending
                    .keys()
                    .any(|other| other != *k && self.tree(other).contains(*k))
            })
            .cloned()
            .collect()
    }

    /// `key` and every buffered invocation it called, transitively.
    fn tree(&self, key: &str) -> Vec<String> {
        let mut out = vec![key.to_string()];
        let mut i = 0;
        while i < out.len() {
            let Some(p) = self.pending.get(&out[i]) else {
                i += 1;
                continue;
            };
            let chain = p.caller_chain.clone();
            for id in &p.calls {
                if self.pending.contains_key(id) && !out.contains(id) {
                    out.push(id.clone());
                }
            }
            // Collaborators whose chain extends this invocation's chain by one.
            if !chain.is_empty() {
                for (k, q) in &self.pending {
                    if q.caller_chain.len() == chain.len() + 1
                        && q.caller_chain.starts_with(&chain)
                        && !out.contains(k)
                    {
                        out.push(k.clone());
                    }
                }
            }
            i += 1;
        }
        out
    }

    fn release(&mut self, key: &str) -> Option<Released<C>> {
        let members = self.tree(key);
        let mut events = Vec::new();
        let mut ctx = None;
        for m in members {
            if let Some(p) = self.pending.remove(&m) {
                self.buffered -= p.events.len();
                if ctx.is_none() {
                    ctx = Some(p.ctx);
                }
                events.extend(p.events);
            }
        }
        ctx.map(|ctx| Released { events, ctx })
    }
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
    fn a_three_level_tree_is_released_once_at_its_final_response() {
        let events = fixture("oi-py_multi-agent-3-level-supervisor.json");
        let n = events.len();
        let mut a: Assembler<u32> = Assembler::new(10_000);
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
    fn idle_invocations_expire_and_the_buffer_is_bounded() {
        let mut events = fixture("oi-py_action-group-function-lambda.json");
        events.pop(); // no final response
        let mut a: Assembler<()> = Assembler::new(10_000);
        for e in events.clone() {
            assert!(a.push(e, 0, &()).unwrap().is_empty());
        }
        assert!(a.expire(1_000, 5_000).is_empty());
        let r = a.expire(6_000, 5_000);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].events.len(), events.len());

        let mut small: Assembler<()> = Assembler::new(3);
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
