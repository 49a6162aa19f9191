//! Exporter `awsxray`: spans → X-Ray segment documents ([`crate::convert::xray`])
//! → PutTraceSegments, losing nothing that X-Ray could accept.
//!
//! - Documents go in requests of at most 50, `max_concurrent_requests` in flight.
//! - Throttling (ThrottledException, 429), 5xx, timeouts and connection
//!   errors are retried with the queue's backoff; the documents X-Ray lists in
//!   `UnprocessedTraceSegments` are re-sent, and only those.
//! - A request rejected as invalid is split in halves until the one bad
//!   document is found; only that one is dropped (logged, counted). The same
//!   goes for an unprocessed document whose error code says it is invalid.
//! - `transport: udp` sends each document to a local X-Ray daemon instead.
//!
//! Retries keep per-batch [`Export::Progress`]: a retry sends only what is still
//! pending, so a document is never sent again once X-Ray has taken it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{self, StreamExt};
use metrics::Counter;
use serde::Deserialize;
use tokio::net::UdpSocket;
use tokio::sync::OnceCell;

use crate::aws::{error_text, AwsSettings};
use crate::component::{
    BuiltExporter, Export, ExportError, ExportOk, ExporterContext, ExporterFactory, Factory,
};
use crate::consumer::StartError;
use crate::convert::xray::{self, Document};
use crate::settings::de::DeError;
use crate::settings::types::{duration, QueueConfig, RetryConfig};
use crate::signal::{Signal, Telemetry};

/// Most documents in one PutTraceSegments call.
pub const MAX_DOCUMENTS_PER_REQUEST: usize = 50;

/// How documents leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// PutTraceSegments over HTTPS (default).
    #[default]
    Api,
    /// UDP datagrams to an X-Ray daemon.
    Udp,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_udp_endpoint() -> String {
    "127.0.0.1:2000".to_string()
}
fn default_concurrency() -> usize {
    4
}
fn yes() -> bool {
    true
}

/// `exporters.awsxray`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AwsXrayExporterConfig {
    /// AWS region; default from AWS_REGION, the profile or IMDS.
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint URL override (VPC endpoint, or a local test server).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Role to assume for the calls.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// Deadline of one PutTraceSegments call.
    #[serde(default = "default_timeout", with = "duration")]
    pub request_timeout: Duration,
    /// Attribute keys to index as annotations.
    #[serde(default)]
    pub indexed_attributes: Vec<String>,
    /// Index every attribute that can be an annotation (up to X-Ray's 50).
    #[serde(default)]
    pub index_all_attributes: bool,
    /// Log groups named in each document's `aws.cloudwatch_logs` when the
    /// resource names none.
    #[serde(default)]
    pub aws_log_groups: Vec<String>,
    /// Annotate GenAI agent attributes (agent, model, session, tokens).
    #[serde(default = "yes")]
    pub agent_annotations: bool,
    /// Add the `spanwire_exported` annotation (the loop guard's mark).
    #[serde(default = "yes")]
    pub mark_exported: bool,
    /// `api` (default) or `udp`.
    #[serde(default)]
    pub transport: Transport,
    /// The X-Ray daemon's address for `transport: udp`.
    #[serde(default = "default_udp_endpoint")]
    pub udp_endpoint: String,
    /// PutTraceSegments calls in flight per batch.
    #[serde(default = "default_concurrency")]
    pub max_concurrent_requests: usize,
    /// Retry settings.
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    /// Queue settings.
    #[serde(default)]
    pub sending_queue: QueueConfig,
}

impl AwsXrayExporterConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        crate::aws::check_settings(
            self.endpoint.as_deref(),
            self.role_arn.as_deref(),
            self.request_timeout,
            self.max_concurrent_requests,
        )
        .map_err(DeError::custom)?;
        if self.transport == Transport::Udp {
            self.udp_endpoint.parse::<SocketAddr>().map_err(|_| {
                DeError::custom(format!(
                    "udp_endpoint `{}` must be an IP address and port, e.g. 127.0.0.1:2000",
                    self.udp_endpoint
                ))
            })?;
        }
        self.sending_queue.validate().map_err(DeError::custom)?;
        Ok(())
    }
}

/// Documents of one batch not yet accepted.
#[derive(Default)]
pub struct Pending {
    /// Groups to send, each ≤ 50 documents.
    chunks: Vec<Vec<Document>>,
    /// Documents (spans) dropped for good so far.
    dropped: usize,
}

impl Pending {
    fn len(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }
}

/// What happened to one request.
enum ChunkResult {
    /// Accepted except these (retry) and those (dropped for good).
    Done {
        retry: Vec<Document>,
        rejected: Vec<(Document, String)>,
    },
    /// Nothing accepted; worth retrying.
    Retry {
        docs: Vec<Document>,
        reason: String,
        why: &'static str,
    },
    /// Rejected as invalid.
    Invalid { docs: Vec<Document>, reason: String },
}

struct Counters {
    sent: Counter,
    truncated: Counter,
    retried_throttled: Counter,
    retried_unprocessed: Counter,
    retried_server: Counter,
    retried_other: Counter,
    dropped_unconvertible: Counter,
    dropped_rejected: Counter,
}

impl Counters {
    fn new(name: &str) -> Counters {
        let c = |metric, reason| crate::telemetry::exporter_counter(metric, name, reason);
        Counters {
            sent: c("spanwire_xray_documents_sent_total", ""),
            truncated: c("spanwire_xray_documents_truncated_total", ""),
            retried_throttled: c("spanwire_xray_documents_retried_total", "throttled"),
            retried_unprocessed: c("spanwire_xray_documents_retried_total", "unprocessed"),
            retried_server: c("spanwire_xray_documents_retried_total", "server_error"),
            retried_other: c("spanwire_xray_documents_retried_total", "transport"),
            dropped_unconvertible: c(
                "spanwire_xray_documents_dropped_total",
                "unconvertible_span",
            ),
            dropped_rejected: c("spanwire_xray_documents_dropped_total", "rejected"),
        }
    }
}

enum Sender {
    Api {
        settings: AwsSettings,
        endpoint: Option<String>,
        client: OnceCell<aws_sdk_xray::Client>,
    },
    Udp {
        target: SocketAddr,
        socket: OnceCell<UdpSocket>,
    },
}

/// The running exporter.
pub struct AwsXrayExporter {
    name: String,
    opts: xray::Options,
    sender: Sender,
    concurrency: usize,
    counters: Counters,
}

impl AwsXrayExporter {
    /// Builds the exporter; the AWS client is created on first use.
    pub fn new(cfg: &AwsXrayExporterConfig, name: String) -> Result<Self, StartError> {
        let sender = match cfg.transport {
            Transport::Api => Sender::Api {
                settings: AwsSettings {
                    region: cfg.region.clone(),
                    role_arn: cfg.role_arn.clone(),
                    timeout: cfg.request_timeout,
                },
                endpoint: cfg.endpoint.clone(),
                client: OnceCell::new(),
            },
            Transport::Udp => Sender::Udp {
                target: cfg.udp_endpoint.parse().map_err(|_| {
                    StartError::component(&name, format!("bad udp_endpoint `{}`", cfg.udp_endpoint))
                })?,
                socket: OnceCell::new(),
            },
        };
        Ok(AwsXrayExporter {
            counters: Counters::new(&name),
            name,
            opts: xray::Options {
                indexed_attributes: cfg.indexed_attributes.clone(),
                index_all_attributes: cfg.index_all_attributes,
                log_groups: cfg.aws_log_groups.clone(),
                agent_annotations: cfg.agent_annotations,
                mark_exported: cfg.mark_exported,
                max_document_bytes: xray::MAX_DOCUMENT_BYTES,
            },
            sender,
            concurrency: cfg.max_concurrent_requests,
        })
    }

    /// Converts a batch into its first `Pending`.
    fn start(&self, data: &Telemetry) -> Pending {
        let Telemetry::Traces(rs) = data else {
            return Pending::default();
        };
        let converted = xray::convert(rs, &self.opts);
        for e in &converted.errors {
            tracing::error!(exporter = %self.name, error = %e, "span cannot become an X-Ray document; dropping it");
        }
        self.counters
            .dropped_unconvertible
            .increment(converted.errors.len() as u64);
        let truncated = converted.documents.iter().filter(|d| d.truncated).count();
        if truncated > 0 {
            self.counters.truncated.increment(truncated as u64);
            tracing::debug!(exporter = %self.name, truncated, "documents trimmed to X-Ray's 64 kB limit");
        }
        Pending {
            chunks: chunk(converted.documents),
            dropped: converted.errors.len(),
        }
    }

    async fn client(
        &self,
        settings: &AwsSettings,
        endpoint: &Option<String>,
        cell: &OnceCell<aws_sdk_xray::Client>,
    ) -> Result<aws_sdk_xray::Client, ExportError> {
        cell.get_or_try_init(|| async {
            let sdk =
                crate::aws::sdk_config(settings)
                    .await
                    .map_err(|e| ExportError::Retryable {
                        reason: e.to_string(),
                        retry_after: None,
                    })?;
            let mut b = aws_sdk_xray::config::Builder::from(&sdk);
            if let Some(e) = endpoint {
                b = b.endpoint_url(e.clone());
            }
            Ok(aws_sdk_xray::Client::from_conf(b.build()))
        })
        .await
        .cloned()
    }

    async fn put(client: &aws_sdk_xray::Client, docs: Vec<Document>) -> ChunkResult {
        let bodies: Vec<String> = docs.iter().map(|d| d.json.clone()).collect();
        let result = client
            .put_trace_segments()
            .set_trace_segment_documents(Some(bodies))
            .send()
            .await;
        match result {
            Ok(out) => {
                let unprocessed = out.unprocessed_trace_segments();
                if unprocessed.is_empty() {
                    return ChunkResult::Done {
                        retry: Vec::new(),
                        rejected: Vec::new(),
                    };
                }
                let mut retry = Vec::new();
                let mut rejected = Vec::new();
                let mut docs: Vec<Option<Document>> = docs.into_iter().map(Some).collect();
                for u in unprocessed {
                    let Some(id) = u.id() else { continue };
                    // The first still-unclaimed document with this id.
                    let Some(slot) = docs
                        .iter_mut()
                        .find(|d| d.as_ref().is_some_and(|d| d.id == id))
                    else {
                        continue;
                    };
                    let Some(doc) = slot.take() else { continue };
                    let code = u.error_code().unwrap_or("");
                    if unprocessed_is_permanent(code) {
                        rejected.push((doc, format!("{code}: {}", u.message().unwrap_or(""))));
                    } else {
                        retry.push(doc);
                    }
                }
                ChunkResult::Done { retry, rejected }
            }
            Err(e) => classify(e, docs),
        }
    }

    async fn send_api(&self, client: aws_sdk_xray::Client, pending: &mut Pending) -> Summary {
        let chunks = std::mem::take(&mut pending.chunks);
        let results: Vec<ChunkResult> = stream::iter(chunks)
            .map(|docs| {
                let client = client.clone();
                async move { Self::put(&client, docs).await }
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut summary = Summary::default();
        let mut retry_docs = Vec::new();
        for r in results {
            match r {
                ChunkResult::Done { retry, rejected } => {
                    if !retry.is_empty() {
                        self.counters
                            .retried_unprocessed
                            .increment(retry.len() as u64);
                        summary.note(format!("{} unprocessed", retry.len()));
                        summary.backoff = true;
                        retry_docs.extend(retry);
                    }
                    for (doc, reason) in rejected {
                        self.reject(&doc, &reason);
                        pending.dropped += 1;
                    }
                }
                ChunkResult::Retry { docs, reason, why } => {
                    let n = docs.len() as u64;
                    match why {
                        "throttled" => self.counters.retried_throttled.increment(n),
                        "server_error" => self.counters.retried_server.increment(n),
                        _ => self.counters.retried_other.increment(n),
                    }
                    summary.note(format!("{n} {why}: {reason}"));
                    summary.backoff = true;
                    retry_docs.extend(docs);
                }
                ChunkResult::Invalid { mut docs, reason } => {
                    if docs.len() == 1 {
                        if let Some(doc) = docs.pop() {
                            self.reject(&doc, &reason);
                            pending.dropped += 1;
                        }
                    } else {
                        // Split to find the bad document; retry at once.
                        let tail = docs.split_off(docs.len() / 2);
                        summary.note(format!(
                            "a request of {} was rejected ({reason}); splitting it",
                            docs.len() + tail.len()
                        ));
                        pending.chunks.push(docs);
                        pending.chunks.push(tail);
                    }
                }
            }
        }
        pending.chunks.extend(chunk(retry_docs));
        summary
    }

    async fn send_udp(&self, socket: &UdpSocket, pending: &mut Pending) -> Summary {
        const HEADER: &[u8] = b"{\"format\":\"json\",\"version\":1}\n";
        let mut summary = Summary::default();
        let mut packet = Vec::with_capacity(xray::MAX_DOCUMENT_BYTES + HEADER.len());
        let chunks = std::mem::take(&mut pending.chunks);
        let mut rest = chunks.into_iter().flatten();
        while let Some(doc) = rest.next() {
            packet.clear();
            packet.extend_from_slice(HEADER);
            packet.extend_from_slice(doc.json.as_bytes());
            if let Err(e) = socket.send(&packet).await {
                self.counters.retried_other.increment(1);
                summary.note(format!("UDP send failed: {e}"));
                summary.backoff = true;
                let mut left = vec![doc];
                left.extend(rest);
                pending.chunks.extend(chunk(left));
                break;
            }
        }
        summary
    }

    fn reject(&self, doc: &Document, reason: &str) {
        self.counters.dropped_rejected.increment(1);
        tracing::error!(exporter = %self.name, trace_id = %doc.trace_id, id = %doc.id, %reason,
            "X-Ray rejected a document as invalid; dropping it");
    }
}

/// Groups documents into requests of at most 50 in which no two share a
/// segment id: X-Ray names unprocessed documents by id alone, so an id must
/// say which document it means.
fn chunk(docs: Vec<Document>) -> Vec<Vec<Document>> {
    let mut chunks: Vec<(Vec<Document>, HashSet<String>)> = Vec::new();
    // Chunks with room; ids repeat rarely, so this is usually the last one.
    for doc in docs {
        let slot = chunks
            .iter()
            .position(|(c, ids)| c.len() < MAX_DOCUMENTS_PER_REQUEST && !ids.contains(&doc.id));
        let i = match slot {
            Some(i) => i,
            None => {
                chunks.push((
                    Vec::with_capacity(MAX_DOCUMENTS_PER_REQUEST),
                    HashSet::new(),
                ));
                chunks.len() - 1
            }
        };
        chunks[i].1.insert(doc.id.clone());
        chunks[i].0.push(doc);
    }
    chunks.into_iter().map(|(c, _)| c).collect()
}

/// What one attempt ran into.
#[derive(Default)]
struct Summary {
    notes: Vec<String>,
    /// Something was throttled or failed (wait before retrying), as opposed to
    /// only requests split in halves (retry at once).
    backoff: bool,
}

impl Summary {
    fn note(&mut self, n: String) {
        if self.notes.len() < 4 {
            self.notes.push(n);
        }
    }
}

/// True for unprocessed-segment error codes that say the document itself is
/// bad, so sending it again cannot help.
fn unprocessed_is_permanent(code: &str) -> bool {
    let c = code.to_ascii_lowercase();
    [
        "invalid",
        "malformed",
        "validation",
        "toolarge",
        "too_large",
        "too large",
        "format",
        "missing",
        "parse",
    ]
    .iter()
    .any(|p| c.contains(p))
}

fn classify(
    e: aws_sdk_xray::error::SdkError<
        aws_sdk_xray::operation::put_trace_segments::PutTraceSegmentsError,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
    docs: Vec<Document>,
) -> ChunkResult {
    use aws_sdk_xray::error::{ProvideErrorMetadata, SdkError};
    let reason = error_text(&e);
    match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let err = se.err();
            let code = err.code().unwrap_or("");
            if err.is_throttled_exception() || status == 429 || code.contains("Throttl") {
                ChunkResult::Retry {
                    docs,
                    reason,
                    why: "throttled",
                }
            } else if status >= 500 {
                ChunkResult::Retry {
                    docs,
                    reason,
                    why: "server_error",
                }
            } else if err.is_invalid_request_exception()
                || status == 413
                || code.contains("Validation")
                || code.contains("SerializationException")
            {
                ChunkResult::Invalid { docs, reason }
            } else {
                // Credentials, permissions, 408, unknown: the documents are
                // fine, the call is not; retry within retry_on_failure.
                ChunkResult::Retry {
                    docs,
                    reason,
                    why: "transport",
                }
            }
        }
        _ => ChunkResult::Retry {
            docs,
            reason,
            why: "transport",
        },
    }
}

/// The `awsxray` exporter's factory.
pub struct AwsXrayFactory;

impl Factory for AwsXrayFactory {
    type Config = AwsXrayExporterConfig;
    fn type_name(&self) -> &'static str {
        "awsxray"
    }
    fn validate(&self, config: &AwsXrayExporterConfig) -> Result<(), DeError> {
        config.validate()
    }
}

impl ExporterFactory for AwsXrayFactory {
    fn signals(&self, _config: &AwsXrayExporterConfig) -> &'static [Signal] {
        &[Signal::Traces]
    }
    fn build(
        &self,
        config: &AwsXrayExporterConfig,
        ctx: ExporterContext<'_>,
    ) -> Result<BuiltExporter, StartError> {
        Ok(BuiltExporter::new(
            AwsXrayExporter::new(config, ctx.name())?,
            config.sending_queue.clone(),
            config.retry_on_failure.clone(),
        ))
    }
}

#[async_trait]
impl Export for AwsXrayExporter {
    type Progress = Option<Pending>;

    async fn export(
        &self,
        data: &Arc<Telemetry>,
        _metadata: &crate::signal::Metadata,
        progress: &mut Option<Pending>,
    ) -> Result<ExportOk, ExportError> {
        let pending = progress.get_or_insert_with(|| self.start(data));
        let before = pending.len();
        let dropped_before = pending.dropped;
        let summary = match &self.sender {
            Sender::Api {
                settings,
                endpoint,
                client,
            } => {
                if pending.chunks.is_empty() {
                    Summary::default()
                } else {
                    let client = self.client(settings, endpoint, client).await?;
                    self.send_api(client, pending).await
                }
            }
            Sender::Udp { target, socket } => {
                let socket = socket
                    .get_or_try_init(|| async {
                        let s = UdpSocket::bind(if target.is_ipv4() {
                            "0.0.0.0:0"
                        } else {
                            "[::]:0"
                        })
                        .await?;
                        s.connect(target).await?;
                        Ok::<_, std::io::Error>(s)
                    })
                    .await
                    .map_err(|e| ExportError::Retryable {
                        reason: format!("cannot open a UDP socket to {target}: {e}"),
                        retry_after: None,
                    })?;
                self.send_udp(socket, pending).await
            }
        };
        let left = pending.len();
        // Documents rejected in this attempt left `pending` without being accepted.
        let accepted = before.saturating_sub(left + (pending.dropped - dropped_before));
        self.counters.sent.increment(accepted as u64);
        if left == 0 {
            return Ok(ExportOk {
                rejected: pending.dropped as u64,
                message: if pending.dropped > 0 {
                    format!(
                        "{} span(s) could not be sent to X-Ray (see errors above)",
                        pending.dropped
                    )
                } else {
                    String::new()
                },
            });
        }
        Err(ExportError::Retryable {
            reason: format!(
                "{left} X-Ray document(s) pending: {}",
                summary.notes.join("; ")
            ),
            retry_after: (!summary.backoff).then_some(Duration::ZERO),
        })
    }

    fn pending(&self, _data: &Telemetry, progress: &Option<Pending>) -> Option<usize> {
        let p = progress.as_ref()?;
        Some(p.len() + p.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str) -> Document {
        Document {
            id: id.into(),
            trace_id: "1-00000000-000000000000000000000001".into(),
            json: String::new(),
            truncated: false,
        }
    }

    #[test]
    fn chunks_hold_at_most_50_and_never_repeat_an_id() {
        // 120 documents, ids repeating every 30 (several traces, same span ids).
        let docs: Vec<Document> = (0..120).map(|i| doc(&format!("{:016x}", i % 30))).collect();
        let chunks = chunk(docs);
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 120);
        for c in &chunks {
            assert!(c.len() <= MAX_DOCUMENTS_PER_REQUEST);
            let ids: HashSet<&str> = c.iter().map(|d| d.id.as_str()).collect();
            assert_eq!(ids.len(), c.len(), "an id twice in one request");
        }
        // Distinct ids pack densely.
        let docs: Vec<Document> = (0..120).map(|i| doc(&format!("{i:016x}"))).collect();
        assert_eq!(
            chunk(docs).iter().map(Vec::len).collect::<Vec<_>>(),
            vec![50, 50, 20]
        );
    }

    #[test]
    fn unprocessed_codes_that_mean_a_bad_document() {
        for code in [
            "InvalidSegmentDocument",
            "JSONFormatError",
            "MissingParam",
            "SegmentTooLarge",
        ] {
            assert!(unprocessed_is_permanent(code), "{code}");
        }
        for code in [
            "ThrottledException",
            "InternalFailure",
            "ServiceUnavailable",
            "",
        ] {
            assert!(!unprocessed_is_permanent(code), "{code}");
        }
    }
}
