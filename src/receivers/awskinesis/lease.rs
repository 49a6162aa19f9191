//! `checkpoint.store: dynamodb`: leases and checkpoints in a DynamoDB table
//! in the Kinesis Client Library's shape, so several spanwire instances share
//! a stream's shards and take over a dead instance's shards.
//!
//! One item per shard: `leaseKey` (the shard id, hash key), `leaseOwner`,
//! `leaseCounter`, `checkpoint` (a sequence number, `TRIM_HORIZON` /
//! `LATEST` / `AT_TIMESTAMP` before the first record, `SHARD_END` after the
//! last), `checkpointSubSequenceNumber`, `ownerSwitchesSinceCheckpoint`,
//! `parentShardId`. Every write that depends on holding a lease is
//! conditional on `leaseCounter` (and the owner), so a stale instance can
//! neither renew nor checkpoint a shard another has taken.
//!
//! Every `renew_interval` an instance bumps the counters of the leases it
//! holds, scans the table, and balances: a lease whose counter has not moved
//! for `failover_time` (as this instance observed it) or that has no owner is
//! expired; an instance below its fair share (shards not ended ÷ live
//! instances, rounded up) takes expired leases, or else asks the instance
//! holding the most to hand one over (`pendingOwner`) if that one is above
//! its share, or at it while the asker is two or more below; that
//! instance stops reading the shard, checkpoints, and passes the lease on.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::checkpoint::{Checkpoints, StoreError, SHARD_END};
use crate::aws::error_text;

/// Checkpoint values KCL writes before the first record is read.
const SENTINELS: [&str; 3] = ["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"];

/// One lease as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// The shard id.
    pub key: String,
    /// The instance holding it.
    pub owner: Option<String>,
    /// Bumped by every renewal, take and checkpoint.
    pub counter: u64,
    /// The checkpoint (see the module docs).
    pub checkpoint: Option<String>,
    /// Parent shards.
    pub parents: Vec<String>,
    /// An instance that asked for this lease.
    pub pending_owner: Option<String>,
}

/// What one lease cycle decided.
#[derive(Debug, Default)]
pub struct Cycle {
    /// Shards held and to be read.
    pub ready: HashSet<String>,
    /// Shards held that another instance asked for: stop reading, then
    /// [`LeaseStore::hand_off`].
    pub hand_off: HashSet<String>,
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}
fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn lease_from(item: &HashMap<String, AttributeValue>) -> Option<Lease> {
    let key = item.get("leaseKey")?.as_s().ok()?.clone();
    Some(Lease {
        key,
        owner: item
            .get("leaseOwner")
            .and_then(|v| v.as_s().ok())
            .filter(|s| !s.is_empty())
            .cloned(),
        counter: item
            .get("leaseCounter")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        checkpoint: item.get("checkpoint").and_then(|v| v.as_s().ok()).cloned(),
        parents: item
            .get("parentShardId")
            .and_then(|v| v.as_ss().ok())
            .cloned()
            .unwrap_or_default(),
        pending_owner: item
            .get("pendingOwner")
            .and_then(|v| v.as_s().ok())
            .filter(|s| !s.is_empty())
            .cloned(),
    })
}

/// Whether a conditional write failed its condition (someone else moved the lease).
fn condition_failed<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(
    e: &aws_sdk_dynamodb::error::SdkError<E, R>,
) -> bool {
    e.as_service_error()
        .is_some_and(|s| s.code() == Some("ConditionalCheckFailedException"))
}

impl LeaseStore {
    /// An update of a lease this instance holds at `counter`: conditional on
    /// that counter and this owner, with `:next` (the counter's next value),
    /// `:c` and `:me` bound; `expression` must set `leaseCounter = :next`.
    fn held_update(
        &self,
        shard: &str,
        counter: u64,
        expression: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("leaseKey", s(shard))
            .update_expression(expression)
            .condition_expression("leaseCounter = :c AND leaseOwner = :me")
            .expression_attribute_values(":next", n(counter + 1))
            .expression_attribute_values(":c", n(counter))
            .expression_attribute_values(":me", s(&self.owner))
    }
}

/// What this instance knows about the leases.
#[derive(Default)]
struct State {
    /// Leases held, with the counter value we last wrote.
    held: HashMap<String, u64>,
    /// Per lease: the counter last seen and when it last changed.
    seen: HashMap<String, (u64, Instant)>,
    /// The table as last scanned.
    leases: HashMap<String, Lease>,
    /// Leases this instance asked another for, and when.
    asked: HashMap<String, Instant>,
}

/// One cycle's plan: leases to take, and a lease to ask its busy owner for.
struct Plan<'l> {
    takes: Vec<&'l Lease>,
    ask: Option<(&'l Lease, String)>,
}

/// The DynamoDB lease table of one stream.
pub struct LeaseStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    owner: String,
    failover: Duration,
    initial: &'static str,
    state: Mutex<State>,
}

impl LeaseStore {
    /// A store on `table`, as instance `owner`.
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: String,
        owner: String,
        failover: Duration,
        initial: &'static str,
    ) -> LeaseStore {
        LeaseStore {
            client,
            table,
            owner,
            failover,
            initial,
            state: Mutex::new(State::default()),
        }
    }

    /// This instance's owner id.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Creates the table (on-demand billing) unless it exists, and waits for it.
    pub async fn ensure_table(&self) -> Result<(), StoreError> {
        let exists = match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => true,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                false
            }
            Err(e) => return Err(StoreError::Service(error_text(&e))),
        };
        if !exists {
            let created = self
                .client
                .create_table()
                .table_name(&self.table)
                .billing_mode(BillingMode::PayPerRequest)
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name("leaseKey")
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .map_err(|e| StoreError::Service(e.to_string()))?,
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name("leaseKey")
                        .key_type(KeyType::Hash)
                        .build()
                        .map_err(|e| StoreError::Service(e.to_string()))?,
                )
                .send()
                .await;
            if let Err(e) = created {
                // Another instance may have created it at the same moment.
                if !e
                    .as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception())
                {
                    return Err(StoreError::Service(error_text(&e)));
                }
            }
            tracing::info!(table = %self.table, "created the lease table");
        }
        for _ in 0..120 {
            let d = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| StoreError::Service(error_text(&e)))?;
            let active = d
                .table()
                .and_then(|t| t.table_status())
                .is_some_and(|s| s.as_str() == "ACTIVE");
            if active {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(StoreError::Service(format!(
            "table {} did not become ACTIVE",
            self.table
        )))
    }

    /// Adds a lease for every listed shard that has none.
    pub async fn add_shards(&self, shards: &[(String, Vec<String>)]) -> Result<(), StoreError> {
        let known: HashSet<String> = self.state.lock().await.leases.keys().cloned().collect();
        for (id, parents) in shards {
            if known.contains(id) {
                continue;
            }
            let mut req = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("leaseKey", s(id))
                .item("leaseCounter", n(0))
                .item("checkpoint", s(self.initial))
                .item("checkpointSubSequenceNumber", n(0))
                .item("ownerSwitchesSinceCheckpoint", n(0))
                .condition_expression("attribute_not_exists(leaseKey)");
            if !parents.is_empty() {
                req = req.item("parentShardId", AttributeValue::Ss(parents.clone()));
            }
            match req.send().await {
                Ok(_) => {}
                Err(e) if condition_failed(&e) => {}
                Err(e) => return Err(StoreError::Service(error_text(&e))),
            }
        }
        Ok(())
    }

    /// Reads the whole table.
    pub async fn scan(&self) -> Result<Vec<Lease>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let resp = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreError::Service(error_text(&e)))?;
            out.extend(resp.items().iter().filter_map(lease_from));
            match resp.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Renews held leases, rescans, and balances. Returns the shards held and
    /// ready to read, and the held shards another instance asked for.
    ///
    /// Rebalancing hands a lease over instead of grabbing it: the instance
    /// below its share writes its id as `pendingOwner` on a lease of the
    /// busiest instance; that instance stops its reader, checkpoints what it
    /// delivered, and passes the lease on ([`LeaseStore::hand_off`]). Nothing
    /// is read twice. If the owner does not hand over within the failover
    /// time, the lease is taken.
    pub async fn cycle(&self) -> Result<Cycle, StoreError> {
        self.renew().await?;
        let leases = self.scan().await?;
        let mut st = self.state.lock().await;
        let now = Instant::now();
        self.observe(&mut st, &leases, now);
        let open: Vec<&Lease> = leases
            .iter()
            .filter(|l| l.checkpoint.as_deref() != Some(SHARD_END))
            .collect();
        let plan = self.plan(&st, &open, now);
        if let Some((lease, busiest)) = plan.ask {
            self.ask_for(&mut st, lease, busiest, now).await?;
        }
        for l in plan.takes {
            self.take(&mut st, l, now).await?;
        }
        let held: HashSet<String> = st.held.keys().cloned().collect();
        let wanted: HashSet<String> = leases
            .iter()
            .filter(|l| {
                held.contains(&l.key)
                    && l.pending_owner
                        .as_deref()
                        .is_some_and(|p| p != self.owner.as_str())
            })
            .map(|l| l.key.clone())
            .collect();
        Ok(Cycle {
            ready: held.difference(&wanted).cloned().collect(),
            hand_off: wanted,
        })
    }

    /// Renews every lease held; one another instance took is let go.
    async fn renew(&self) -> Result<(), StoreError> {
        let mut st = self.state.lock().await;
        let held: Vec<(String, u64)> = st.held.iter().map(|(k, c)| (k.clone(), *c)).collect();
        for (shard, counter) in held {
            let r = self
                .held_update(&shard, counter, "SET leaseCounter = :next")
                .send()
                .await;
            match r {
                Ok(_) => {
                    st.held.insert(shard, counter + 1);
                }
                Err(e) if condition_failed(&e) => {
                    tracing::info!(%shard, "lease taken by another instance");
                    st.held.remove(&shard);
                }
                Err(e) => return Err(StoreError::Service(error_text(&e))),
            }
        }
        Ok(())
    }

    /// Takes in a scan: which counters moved (and when), and which leases
    /// are ours now.
    fn observe(&self, st: &mut State, leases: &[Lease], now: Instant) {
        for l in leases {
            let moved = st.seen.get(&l.key).is_none_or(|(c, _)| *c != l.counter);
            if moved {
                st.seen.insert(l.key.clone(), (l.counter, now));
            }
            if l.owner.as_deref() == Some(self.owner.as_str()) {
                // Handed over to us (or ours already).
                st.held.entry(l.key.clone()).or_insert(l.counter);
                st.asked.remove(&l.key);
            } else {
                st.held.remove(&l.key);
            }
        }
        st.leases = leases.iter().map(|l| (l.key.clone(), l.clone())).collect();
    }

    /// Whether another instance's lease has not moved for the failover time
    /// (or has no owner).
    fn expired(&self, l: &Lease, st: &State, now: Instant) -> bool {
        match &l.owner {
            None => true,
            Some(o) if *o == self.owner => false,
            Some(_) => st
                .seen
                .get(&l.key)
                .is_some_and(|(_, since)| now.duration_since(*since) >= self.failover),
        }
    }

    /// What to take and whom to ask, to reach this instance's share of the
    /// open leases.
    fn plan<'l>(&'l self, st: &State, open: &[&'l Lease], now: Instant) -> Plan<'l> {
        let mut owners: HashMap<&str, usize> = HashMap::new();
        owners.insert(&self.owner, 0);
        for l in open {
            if let Some(o) = &l.owner {
                if !self.expired(l, st, now) {
                    *owners.entry(o.as_str()).or_default() += 1;
                }
            }
        }
        let target = open.len().div_ceil(owners.len().max(1));
        let mine = open
            .iter()
            .filter(|l| l.owner.as_deref() == Some(self.owner.as_str()))
            .count();
        let mut want = target.saturating_sub(mine);
        // Expired leases are taken outright.
        let mut takes: Vec<&Lease> = open
            .iter()
            .copied()
            .filter(|l| self.expired(l, st, now))
            .take(want)
            .collect();
        // A hand-over we asked for that did not happen in time is taken too.
        for l in open {
            if takes.len() >= want {
                break;
            }
            let overdue = st
                .asked
                .get(&l.key)
                .is_some_and(|since| now.duration_since(*since) >= self.failover);
            if overdue
                && l.owner.as_deref() != Some(self.owner.as_str())
                && !takes.iter().any(|t| t.key == l.key)
            {
                takes.push(l);
            }
        }
        want -= takes.len().min(want);
        // Still short: ask the busiest instance for one lease, if it is
        // above its share, or at it while this one is two or more below (as
        // the KCL does: 4 shards on 3 instances settle at 2 + 1 + 1, not
        // 2 + 2 + 0; one below the share is balanced enough).
        let short = mine + takes.len();
        let ask = (want > 0 && st.asked.is_empty())
            .then(|| {
                owners
                    .iter()
                    .filter(|(o, _)| **o != self.owner.as_str())
                    .max_by_key(|(_, c)| **c)
                    .filter(|(_, count)| {
                        **count > target || (**count == target && short + 1 < target)
                    })
                    .and_then(|(busiest, _)| {
                        open.iter()
                            .find(|l| l.owner.as_deref() == Some(*busiest))
                            .map(|l| (*l, busiest.to_string()))
                    })
            })
            .flatten();
        Plan { takes, ask }
    }

    /// Writes this instance as `pendingOwner` of `l`, held by `busiest`.
    async fn ask_for(
        &self,
        st: &mut State,
        l: &Lease,
        busiest: String,
        now: Instant,
    ) -> Result<(), StoreError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("leaseKey", s(&l.key))
            .update_expression("SET pendingOwner = :me")
            .condition_expression("leaseOwner = :them AND attribute_not_exists(pendingOwner)")
            .expression_attribute_values(":me", s(&self.owner))
            .expression_attribute_values(":them", s(&busiest))
            .send()
            .await;
        match r {
            Ok(_) => {
                tracing::info!(shard = %l.key, from = %busiest, "asked for a lease");
                st.asked.insert(l.key.clone(), now);
                Ok(())
            }
            Err(e) if condition_failed(&e) => Ok(()),
            Err(e) => Err(StoreError::Service(error_text(&e))),
        }
    }

    /// Takes `l` if its counter has not moved since the scan.
    async fn take(&self, st: &mut State, l: &Lease, now: Instant) -> Result<(), StoreError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("leaseKey", s(&l.key))
            .update_expression(
                "SET leaseOwner = :me, leaseCounter = :next ADD ownerSwitchesSinceCheckpoint :one REMOVE pendingOwner",
            )
            .condition_expression("leaseCounter = :c")
            .expression_attribute_values(":me", s(&self.owner))
            .expression_attribute_values(":next", n(l.counter + 1))
            .expression_attribute_values(":c", n(l.counter))
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        match r {
            Ok(_) => {
                tracing::info!(shard = %l.key, from = ?l.owner, "took lease");
                st.held.insert(l.key.clone(), l.counter + 1);
                st.seen.insert(l.key.clone(), (l.counter + 1, now));
                st.asked.remove(&l.key);
                Ok(())
            }
            Err(e) if condition_failed(&e) => Ok(()),
            Err(e) => Err(StoreError::Service(error_text(&e))),
        }
    }

    /// Passes a lease this instance holds to the instance that asked for it
    /// (call after its reader stopped and checkpointed).
    pub async fn hand_off(&self, shard: &str) -> Result<(), StoreError> {
        let mut st = self.state.lock().await;
        let Some(counter) = st.held.get(shard).copied() else {
            return Ok(());
        };
        let Some(to) = st.leases.get(shard).and_then(|l| l.pending_owner.clone()) else {
            return Ok(());
        };
        let r = self
            .held_update(
                shard,
                counter,
                "SET leaseOwner = :to, leaseCounter = :next ADD ownerSwitchesSinceCheckpoint :one REMOVE pendingOwner",
            )
            .expression_attribute_values(":to", s(&to))
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        st.held.remove(shard);
        match r {
            Ok(_) => {
                tracing::info!(%shard, %to, "handed the lease over");
                Ok(())
            }
            Err(e) if condition_failed(&e) => Ok(()),
            Err(e) => Err(StoreError::Service(error_text(&e))),
        }
    }

    /// Gives up the leases held (at shutdown), so others take them at once.
    pub async fn release_all(&self) {
        let mut st = self.state.lock().await;
        let held: Vec<(String, u64)> = st.held.drain().collect();
        for (shard, counter) in held {
            let r = self
                .held_update(
                    &shard,
                    counter,
                    "REMOVE leaseOwner SET leaseCounter = :next",
                )
                .send()
                .await;
            if let Err(e) = r {
                tracing::warn!(%shard, error = %error_text(&e), "could not release the lease");
            }
        }
    }
}

#[async_trait]
impl Checkpoints for LeaseStore {
    async fn get(&self, shard: &str) -> Result<Option<String>, StoreError> {
        let resp = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("leaseKey", s(shard))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::Service(error_text(&e)))?;
        Ok(resp
            .item()
            .and_then(lease_from)
            .and_then(|l| l.checkpoint)
            .filter(|c| !SENTINELS.contains(&c.as_str())))
    }

    async fn set(&self, shard: &str, sequence: &str) -> Result<(), StoreError> {
        let mut st = self.state.lock().await;
        let Some(counter) = st.held.get(shard).copied() else {
            return Err(StoreError::LeaseLost(shard.to_string()));
        };
        let r = self
            .held_update(
                shard,
                counter,
                "SET checkpoint = :seq, checkpointSubSequenceNumber = :zero, ownerSwitchesSinceCheckpoint = :zero, leaseCounter = :next",
            )
            .expression_attribute_values(":seq", s(sequence))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        match r {
            Ok(_) => {
                st.held.insert(shard.to_string(), counter + 1);
                Ok(())
            }
            Err(e) if condition_failed(&e) => {
                st.held.remove(shard);
                Err(StoreError::LeaseLost(shard.to_string()))
            }
            Err(e) => Err(StoreError::Service(error_text(&e))),
        }
    }
}
