//! PutLogEvents for the `awsemf` and `awscloudwatchlogs` exporters: events
//! already cut into calls by [`crate::convert::log_events::plan`] go out
//! `max_concurrent_requests` at a time; a missing log group or stream is
//! created and the call repeated; throttling, 5xx and connection errors are
//! retried by the sending queue, re-sending only the calls not yet accepted;
//! a call refused as invalid is split in halves until the bad event is found
//! and dropped; events CloudWatch reports in `rejectedLogEventsInfo` are
//! counted and logged.

use std::time::Duration;

use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use aws_sdk_cloudwatchlogs::Client;
use futures_util::stream::{self, StreamExt};
use metrics::Counter;
use tokio::sync::OnceCell;

use crate::aws::{error_text, AwsSettings};
use crate::component::{ExportError, ExportOk};
use crate::convert::log_events::{check_template, plan, LogEvent, Plan};

/// Checks a log group and stream template pair and a retention setting.
pub fn check_destination(group: &str, stream: &str, retention: i32) -> Result<(), String> {
    if group.is_empty() || stream.is_empty() {
        return Err("log_group_name and log_stream_name must not be empty".into());
    }
    check_template(group).map_err(|e| format!("log_group_name {e}"))?;
    check_template(stream).map_err(|e| format!("log_stream_name {e}"))?;
    if retention != 0 && !RETENTION_DAYS.contains(&retention) {
        return Err(format!(
            "log_retention {retention} is not a retention CloudWatch Logs offers ({RETENTION_DAYS:?}, or 0 for never)"
        ));
    }
    Ok(())
}

/// Data items of a batch not yet delivered (or dropped), per its `progress`.
pub fn pending_items(progress: &Option<Pending>) -> Option<usize> {
    let p = progress.as_ref()?;
    Some(p.len() + p.dropped)
}

/// Retention periods CloudWatch Logs accepts, in days.
pub const RETENTION_DAYS: &[i32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// Events for one log stream, already following the PutLogEvents rules.
#[derive(Debug)]
pub struct Call {
    /// Log group.
    pub group: String,
    /// Log stream.
    pub stream: String,
    /// Sorted events.
    pub events: Vec<LogEvent>,
}

/// Calls of one batch not yet accepted, kept between retries.
#[derive(Debug, Default)]
pub struct Pending {
    /// Calls to make.
    pub calls: Vec<Call>,
    /// Data items dropped for good so far (refused, invalid).
    pub dropped: usize,
}

fn items(events: &[LogEvent]) -> usize {
    events.iter().map(|e| e.items as usize).sum()
}

impl Pending {
    /// Data items still to send.
    pub fn len(&self) -> usize {
        self.calls.iter().map(|c| items(&c.events)).sum()
    }

    /// True when nothing is left to send.
    pub fn is_empty(&self) -> bool {
        self.calls.iter().all(|c| c.events.is_empty())
    }
}

/// Where events go and how they are sent.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Region, role, timeout.
    pub aws: AwsSettings,
    /// Endpoint URL override.
    pub endpoint: Option<String>,
    /// Retention set on log groups spanwire creates (days; `None` = never expire).
    pub log_retention: Option<i32>,
    /// Calls in flight.
    pub concurrency: usize,
}

struct Counters {
    sent: Counter,
    calls: Counter,
    retried_throttled: Counter,
    retried_server: Counter,
    retried_other: Counter,
    dropped_too_old: Counter,
    dropped_too_new: Counter,
    dropped_too_large: Counter,
    dropped_expired: Counter,
    dropped_invalid: Counter,
    created: Counter,
}

impl Counters {
    fn new(name: &str) -> Counters {
        let c = |metric, reason| crate::telemetry::exporter_counter(metric, name, reason);
        Counters {
            sent: c("spanwire_cwlogs_events_sent_total", ""),
            calls: c("spanwire_cwlogs_put_calls_total", ""),
            retried_throttled: c("spanwire_cwlogs_events_retried_total", "throttled"),
            retried_server: c("spanwire_cwlogs_events_retried_total", "server_error"),
            retried_other: c("spanwire_cwlogs_events_retried_total", "transport"),
            dropped_too_old: c("spanwire_cwlogs_events_dropped_total", "too_old"),
            dropped_too_new: c("spanwire_cwlogs_events_dropped_total", "too_new"),
            dropped_too_large: c("spanwire_cwlogs_events_dropped_total", "too_large"),
            dropped_expired: c("spanwire_cwlogs_events_dropped_total", "expired"),
            dropped_invalid: c("spanwire_cwlogs_events_dropped_total", "invalid"),
            created: c("spanwire_cwlogs_streams_created_total", ""),
        }
    }
}

/// What one call came to.
enum CallResult {
    /// Accepted, but for events CloudWatch refused for their time (counted).
    Done { refused_items: usize },
    /// Worth retrying.
    Retry {
        call: Call,
        reason: String,
        why: &'static str,
    },
    /// Refused as invalid.
    Invalid { call: Call, reason: String },
}

/// Sends log events to CloudWatch Logs for one exporter.
pub struct Sender {
    name: String,
    settings: Settings,
    client: OnceCell<Client>,
    counters: Counters,
}

impl Sender {
    /// A sender; the AWS client is made on first use.
    pub fn new(name: &str, settings: Settings) -> Sender {
        Sender {
            name: name.to_string(),
            settings,
            client: OnceCell::new(),
            counters: Counters::new(name),
        }
    }

    /// Cuts the events of each stream into calls, counting (and logging)
    /// what CloudWatch would refuse.
    pub fn pending(&self, streams: Vec<((String, String), Vec<LogEvent>)>, now_ms: i64) -> Pending {
        let mut p = Pending::default();
        for ((group, stream), events) in streams {
            let Plan {
                calls,
                too_old,
                too_new,
                too_large,
                refused_items,
            } = plan(events, now_ms);
            if too_old + too_new + too_large > 0 {
                tracing::error!(exporter = %self.name, log_group = %group, log_stream = %stream,
                    too_old, too_new, too_large,
                    "events CloudWatch Logs would refuse (older than 14 days, more than 2 hours ahead, or over 256 KiB); dropping them");
                self.counters.dropped_too_old.increment(too_old as u64);
                self.counters.dropped_too_new.increment(too_new as u64);
                self.counters.dropped_too_large.increment(too_large as u64);
                p.dropped += refused_items;
            }
            p.calls.extend(calls.into_iter().map(|events| Call {
                group: group.clone(),
                stream: stream.clone(),
                events,
            }));
        }
        p
    }

    async fn client(&self) -> Result<Client, ExportError> {
        self.client
            .get_or_try_init(|| async {
                let sdk = crate::aws::sdk_config(&self.settings.aws)
                    .await
                    .map_err(|e| ExportError::Retryable {
                        reason: e.to_string(),
                        retry_after: None,
                    })?;
                let mut b = aws_sdk_cloudwatchlogs::config::Builder::from(&sdk);
                if let Some(e) = &self.settings.endpoint {
                    b = b.endpoint_url(e.clone());
                }
                Ok(Client::from_conf(b.build()))
            })
            .await
            .cloned()
    }

    /// One attempt at a batch: `start` converts it on the first attempt; the
    /// calls still pending are kept in `progress` between attempts.
    pub async fn export(
        &self,
        progress: &mut Option<Pending>,
        start: impl FnOnce() -> Pending,
    ) -> Result<ExportOk, ExportError> {
        let pending = progress.get_or_insert_with(start);
        self.send(pending).await
    }

    /// Makes every pending call; what fails retryably stays in `pending`.
    pub async fn send(&self, pending: &mut Pending) -> Result<ExportOk, ExportError> {
        let mut notes: Vec<String> = Vec::new();
        let mut backoff = false;
        if !pending.is_empty() {
            let client = self.client().await?;
            let calls = std::mem::take(&mut pending.calls);
            let results: Vec<CallResult> = stream::iter(calls)
                .map(|call| {
                    let client = client.clone();
                    async move { self.put(&client, call).await }
                })
                .buffer_unordered(self.settings.concurrency.max(1))
                .collect()
                .await;
            for r in results {
                match r {
                    CallResult::Done { refused_items } => pending.dropped += refused_items,
                    CallResult::Retry { call, reason, why } => {
                        let n = call.events.len() as u64;
                        match why {
                            "throttled" => self.counters.retried_throttled.increment(n),
                            "server_error" => self.counters.retried_server.increment(n),
                            _ => self.counters.retried_other.increment(n),
                        }
                        if notes.len() < 4 {
                            notes.push(format!("{n} {why}: {reason}"));
                        }
                        backoff = true;
                        pending.calls.push(call);
                    }
                    CallResult::Invalid { mut call, reason } => {
                        if call.events.len() <= 1 {
                            self.counters
                                .dropped_invalid
                                .increment(call.events.len() as u64);
                            pending.dropped += items(&call.events);
                            tracing::error!(exporter = %self.name, log_group = %call.group,
                                log_stream = %call.stream, %reason,
                                "CloudWatch Logs refused an event as invalid; dropping it");
                        } else {
                            let tail = call.events.split_off(call.events.len() / 2);
                            if notes.len() < 4 {
                                notes.push(format!(
                                    "a call of {} events was refused ({reason}); splitting it",
                                    call.events.len() + tail.len()
                                ));
                            }
                            pending.calls.push(Call {
                                group: call.group.clone(),
                                stream: call.stream.clone(),
                                events: tail,
                            });
                            pending.calls.push(call);
                        }
                    }
                }
            }
        }
        if pending.is_empty() {
            pending.calls.clear();
            return Ok(ExportOk {
                rejected: pending.dropped as u64,
                message: if pending.dropped > 0 {
                    format!(
                        "{} event(s) could not be written to CloudWatch Logs (see errors above)",
                        pending.dropped
                    )
                } else {
                    String::new()
                },
            });
        }
        Err(ExportError::Retryable {
            reason: format!(
                "{} CloudWatch Logs event(s) pending: {}",
                pending.len(),
                notes.join("; ")
            ),
            retry_after: (!backoff).then_some(Duration::ZERO),
        })
    }

    async fn put(&self, client: &Client, call: Call) -> CallResult {
        let events: Vec<InputLogEvent> = call
            .events
            .iter()
            .filter_map(|e| {
                InputLogEvent::builder()
                    .timestamp(e.timestamp_ms)
                    .message(e.message.clone())
                    .build()
                    .ok()
            })
            .collect();
        let mut created = false;
        loop {
            self.counters.calls.increment(1);
            let result = client
                .put_log_events()
                .log_group_name(&call.group)
                .log_stream_name(&call.stream)
                .set_log_events(Some(events.clone()))
                .send()
                .await;
            match result {
                Ok(out) => {
                    let (refused, refused_items) = out
                        .rejected_log_events_info()
                        .map(|r| self.count_rejected(&call, r))
                        .unwrap_or((0, 0));
                    self.counters
                        .sent
                        .increment((call.events.len() - refused) as u64);
                    return CallResult::Done { refused_items };
                }
                Err(e) => {
                    let code = e.code().unwrap_or("").to_string();
                    if code == "ResourceNotFoundException" && !created {
                        if let Err(r) = self.create(client, &call.group, &call.stream).await {
                            return r.into_result(call);
                        }
                        created = true;
                        continue;
                    }
                    if code == "DataAlreadyAcceptedException" {
                        self.counters.sent.increment(call.events.len() as u64);
                        return CallResult::Done { refused_items: 0 };
                    }
                    return classify(&e, call);
                }
            }
        }
    }

    /// Counts the events CloudWatch reports as refused; returns how many,
    /// and how many data items they held.
    fn count_rejected(
        &self,
        call: &Call,
        r: &aws_sdk_cloudwatchlogs::types::RejectedLogEventsInfo,
    ) -> (usize, usize) {
        let n = call.events.len();
        let too_new = r
            .too_new_log_event_start_index()
            .map_or(0, |i| n.saturating_sub(i.max(0) as usize));
        let too_old = r
            .too_old_log_event_end_index()
            .map_or(0, |i| (i.max(-1) + 1) as usize)
            .min(n);
        let expired = r
            .expired_log_event_end_index()
            .map_or(0, |i| (i.max(-1) + 1) as usize)
            .min(n)
            .saturating_sub(too_old);
        let total = (too_new + too_old + expired).min(n);
        // Refused events are a prefix (old, expired) and a suffix (new).
        let head = (too_old + expired).min(n);
        let tail = too_new.min(n - head);
        let refused_items = items(&call.events[..head]) + items(&call.events[n - tail..]);
        if total > 0 {
            self.counters.dropped_too_new.increment(too_new as u64);
            self.counters.dropped_too_old.increment(too_old as u64);
            self.counters.dropped_expired.increment(expired as u64);
            tracing::error!(exporter = %self.name, log_group = %call.group, log_stream = %call.stream,
                too_new, too_old, expired, "CloudWatch Logs refused events for their time");
        }
        (total, refused_items)
    }

    async fn create(&self, client: &Client, group: &str, stream: &str) -> Result<(), CreateError> {
        match client.create_log_group().log_group_name(group).send().await {
            Ok(_) => {
                tracing::info!(exporter = %self.name, log_group = %group, "created log group");
                if let Some(days) = self.settings.log_retention {
                    if let Err(e) = client
                        .put_retention_policy()
                        .log_group_name(group)
                        .retention_in_days(days)
                        .send()
                        .await
                    {
                        tracing::warn!(exporter = %self.name, log_group = %group, error = %error_text(&e),
                            "could not set the log group's retention");
                    }
                }
            }
            Err(e) if e.code() == Some("ResourceAlreadyExistsException") => {}
            Err(e) => return Err(CreateError(error_text(&e), status_of(&e))),
        }
        match client
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(stream)
            .send()
            .await
        {
            Ok(_) => {
                self.counters.created.increment(1);
                tracing::info!(exporter = %self.name, log_group = %group, log_stream = %stream, "created log stream");
            }
            Err(e) if e.code() == Some("ResourceAlreadyExistsException") => {}
            Err(e) => return Err(CreateError(error_text(&e), status_of(&e))),
        }
        Ok(())
    }
}

struct CreateError(String, u16);

impl CreateError {
    fn into_result(self, call: Call) -> CallResult {
        CallResult::Retry {
            call,
            reason: format!("cannot create the log group or stream: {}", self.0),
            why: if self.1 == 429 {
                "throttled"
            } else if self.1 >= 500 {
                "server_error"
            } else {
                "transport"
            },
        }
    }
}

fn status_of<E>(
    e: &aws_sdk_cloudwatchlogs::error::SdkError<
        E,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
) -> u16 {
    match e {
        aws_sdk_cloudwatchlogs::error::SdkError::ServiceError(se) => se.raw().status().as_u16(),
        _ => 0,
    }
}

fn classify(
    e: &aws_sdk_cloudwatchlogs::error::SdkError<
        aws_sdk_cloudwatchlogs::operation::put_log_events::PutLogEventsError,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
    call: Call,
) -> CallResult {
    use aws_sdk_cloudwatchlogs::error::SdkError;
    let reason = error_text(e);
    match e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("");
            if code.contains("Throttl") || status == 429 {
                CallResult::Retry {
                    call,
                    reason,
                    why: "throttled",
                }
            } else if status >= 500 || code == "ServiceUnavailableException" {
                CallResult::Retry {
                    call,
                    reason,
                    why: "server_error",
                }
            } else if code == "InvalidParameterException"
                || code == "SerializationException"
                || status == 413
            {
                CallResult::Invalid { call, reason }
            } else {
                // Permissions, a log group being deleted, unknown errors: the
                // events are fine, the call is not; retry within retry_on_failure.
                CallResult::Retry {
                    call,
                    reason,
                    why: "transport",
                }
            }
        }
        _ => CallResult::Retry {
            call,
            reason,
            why: "transport",
        },
    }
}
