//! Kinesis records → spans and log records, one GetRecords batch at a time.
//! A bad record or a bad span inside one is counted, logged with its shard
//! and sequence number, and skipped; it never stops the shard.

use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use serde::Deserialize;

use crate::convert::aws_spans::{self, PushStats, SpanRecord, SpanStream};
use crate::convert::cwl;
use crate::signal::{Signal, Telemetry};

/// How record contents are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `aws_spans` for the `aws/spans` log group, `cloudwatch_logs` for any other.
    #[default]
    Auto,
    /// Each log event is one span in Transaction Search's JSON.
    AwsSpans,
    /// Each log event becomes an OTLP log record.
    CloudwatchLogs,
}

/// What records hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RecordEncoding {
    /// CloudWatch Logs subscription envelopes (gzip JSON), read per `format`.
    #[default]
    Cloudwatch,
    /// OTLP protobuf export requests of `signal` (as the `awskinesis`
    /// exporter and the Collector's write them), optionally gzipped.
    OtlpProto,
    /// OTLP/JSON export requests of `signal`, optionally gzipped.
    OtlpJson,
}

/// What one batch of records gave.
#[derive(Default)]
pub struct Decoded {
    /// Spans read, not yet through the span stream ([`Decoded::settle`]).
    pub read: Vec<SpanRecord>,
    /// Spans ready to send.
    pub spans: Vec<SpanRecord>,
    /// Log records ready to send.
    pub logs: Vec<ResourceLogs>,
    /// OTLP data read from OTLP-encoded records.
    pub otlp: Option<Telemetry>,
    /// Kinesis records that could not be read at all.
    pub bad_records: u64,
    /// Log events that were not a convertible span.
    pub bad_spans: u64,
    /// CloudWatch Logs health-check records.
    pub control: u64,
    /// Log events read.
    pub events: u64,
    /// What the span stream did (held in progress, duplicates, loop guard).
    pub stream: PushStats,
}

impl Decoded {
    /// Passes the spans read through the receiver's shared span stream
    /// (in-progress de-duplication, loop guard): one lock per batch, taken
    /// after the records are decompressed and parsed.
    pub fn settle(&mut self, stream: &mut SpanStream, now_ms: u64) {
        for r in self.read.drain(..) {
            stream.push(r, now_ms, &mut self.spans, &mut self.stream);
        }
    }
}

/// Reads one Kinesis record into `out` (spans into `out.read`).
pub fn record(
    data: &[u8],
    shard: &str,
    sequence: &str,
    format: Format,
    max_bytes: usize,
    now_unix_nano: u64,
    out: &mut Decoded,
) {
    let Some(parts) = user_records(data, shard, sequence, out) else {
        return;
    };
    for part in parts {
        let env = match cwl::decode_envelope(&part, max_bytes) {
            Ok(env) => env,
            Err(e) => {
                out.bad_records += 1;
                tracing::warn!(shard, sequence, error = %e, "skipping a Kinesis record");
                continue;
            }
        };
        if env.is_control() {
            out.control += 1;
            continue;
        }
        out.events += env.log_events.len() as u64;
        let as_spans = match format {
            Format::AwsSpans => true,
            Format::CloudwatchLogs => false,
            Format::Auto => env.log_group == "aws/spans",
        };
        if !as_spans {
            out.logs.push(cwl::logs_from_envelope(&env, now_unix_nano));
            continue;
        }
        for (i, ev) in env.log_events.iter().enumerate() {
            match aws_spans::span_from_str(&ev.message) {
                Ok(r) => out.read.push(r),
                Err(e) => {
                    out.bad_spans += 1;
                    tracing::warn!(shard, sequence, event = i, event_id = %ev.id, log_group = %env.log_group,
                        error = %e, "skipping a log event that is not a span");
                }
            }
        }
    }
}

/// A record's user records (KPL-aggregated or not); a record that does
/// not unpack is counted and skipped.
fn user_records<'a>(
    data: &'a [u8],
    shard: &str,
    sequence: &str,
    out: &mut Decoded,
) -> Option<Vec<std::borrow::Cow<'a, [u8]>>> {
    match cwl::deaggregate(data) {
        Ok(p) => Some(p),
        Err(e) => {
            out.bad_records += 1;
            tracing::warn!(shard, sequence, error = %e, "skipping a Kinesis record");
            None
        }
    }
}

/// Reads one Kinesis record of OTLP export requests (KPL-aggregated or
/// not, each optionally gzipped) into `out.otlp`.
pub fn otlp_record(
    data: &[u8],
    shard: &str,
    sequence: &str,
    encoding: RecordEncoding,
    signal: Signal,
    max_bytes: usize,
    out: &mut Decoded,
) {
    let Some(parts) = user_records(data, shard, sequence, out) else {
        return;
    };
    for part in parts {
        let read = gunzip_if_gzip(&part, max_bytes).and_then(|bytes| {
            let decoded = match encoding {
                RecordEncoding::OtlpJson => {
                    crate::convert::otlp_json::decode(signal, &bytes).map_err(|e| e.to_string())
                }
                _ => crate::convert::otlp_proto::decode_request(signal, &bytes)
                    .map_err(|e| e.to_string()),
            };
            decoded.map_err(|e| format!("not an OTLP {} request: {e}", signal.item_name()))
        });
        match read {
            Ok(t) => {
                out.events += 1;
                match &mut out.otlp {
                    Some(acc) => crate::convert::split::append(acc, t),
                    None => out.otlp = Some(t),
                }
            }
            Err(e) => {
                out.bad_records += 1;
                tracing::warn!(shard, sequence, error = %e, "skipping a Kinesis user record");
            }
        }
    }
}

/// `data` gunzipped if it starts with the gzip magic, within `max_bytes`.
fn gunzip_if_gzip(data: &[u8], max_bytes: usize) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    use std::io::Read;
    if !data.starts_with(&[0x1f, 0x8b]) {
        return Ok(std::borrow::Cow::Borrowed(data));
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(max_bytes as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("bad gzip: {e}"))?;
    if out.len() > max_bytes {
        return Err(format!(
            "larger than max_record_bytes ({max_bytes}) once gunzipped"
        ));
    }
    Ok(std::borrow::Cow::Owned(out))
}
