//! CloudWatch Logs subscription records, as a subscription filter writes them
//! into a Kinesis stream: gzip-compressed JSON envelopes
//! `{messageType, owner, logGroup, logStream, subscriptionFilters,
//! logEvents: [{id, timestamp, message}]}`. Pure: no I/O.
//!
//! Also KPL de-aggregation (records starting with the magic bytes
//! `F3 89 9A C2`, a protobuf `AggregatedRecord` and its MD5), which
//! CloudWatch Logs does not produce but other writers to the stream may, and
//! the `cloudwatch_logs` format: log events as OTLP log records.

use std::borrow::Cow;
use std::io::Read;

use md5::{Digest, Md5};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde::Deserialize;

use crate::proto::kpl::{AggregatedRecord, Record as KplRecord};
use crate::signal::{attribute, string_attribute};

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    /// Not valid gzip.
    #[error("bad gzip: {0}")]
    Gzip(String),
    /// Larger than allowed once decompressed.
    #[error("decompresses to more than {0} bytes")]
    TooLarge(usize),
    /// Not a subscription envelope.
    #[error("not a CloudWatch Logs subscription envelope: {0}")]
    Envelope(String),
    /// A KPL aggregate that does not decode or whose checksum is wrong.
    #[error("bad KPL aggregated record: {0}")]
    Kpl(String),
}

/// One log event of an envelope.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LogEvent {
    /// Event id (a decimal string; some writers send a number).
    #[serde(default, deserialize_with = "string_or_number")]
    pub id: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
    /// The log line.
    #[serde(default)]
    pub message: String,
}

/// A decoded subscription envelope.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// `DATA_MESSAGE` or `CONTROL_MESSAGE`.
    pub message_type: String,
    /// Account id of the log group's owner.
    #[serde(default)]
    pub owner: String,
    /// Source log group.
    #[serde(default)]
    pub log_group: String,
    /// Source log stream.
    #[serde(default)]
    pub log_stream: String,
    /// Filters that matched.
    #[serde(default)]
    pub subscription_filters: Vec<String>,
    /// The events.
    #[serde(default)]
    pub log_events: Vec<LogEvent>,
}

impl Envelope {
    /// True for CloudWatch Logs' health checks, which carry no data.
    pub fn is_control(&self) -> bool {
        self.message_type == "CONTROL_MESSAGE"
    }
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// Decodes one record's data: gunzip (bounded by `max_bytes`), then JSON.
/// Uncompressed JSON is accepted too.
pub fn decode_envelope(data: &[u8], max_bytes: usize) -> Result<Envelope, RecordError> {
    let json: Vec<u8> = if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(data.len() * 4);
        let mut dec = flate2::read::MultiGzDecoder::new(data).take(max_bytes as u64 + 1);
        dec.read_to_end(&mut out)
            .map_err(|e| RecordError::Gzip(e.to_string()))?;
        if out.len() > max_bytes {
            return Err(RecordError::TooLarge(max_bytes));
        }
        out
    } else if data.first().is_some_and(|b| *b == b'{') {
        data.to_vec()
    } else {
        return Err(RecordError::Gzip("data is neither gzip nor JSON".into()));
    };
    serde_json::from_slice(&json).map_err(|e| RecordError::Envelope(e.to_string()))
}

/// The KPL aggregation magic.
pub const KPL_MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// The user records inside one Kinesis record: the record itself, or, for a
/// KPL aggregate, each aggregated record's data (checksum verified).
pub fn deaggregate(data: &[u8]) -> Result<Vec<Cow<'_, [u8]>>, RecordError> {
    if data.len() < KPL_MAGIC.len() + 16 || data[..4] != KPL_MAGIC {
        return Ok(vec![Cow::Borrowed(data)]);
    }
    let body = &data[4..data.len() - 16];
    let digest = &data[data.len() - 16..];
    if Md5::digest(body).as_slice() != digest {
        return Err(RecordError::Kpl("MD5 checksum does not match".into()));
    }
    let agg: AggregatedRecord =
        prost::Message::decode(body).map_err(|e| RecordError::Kpl(e.to_string()))?;
    Ok(agg
        .records
        .into_iter()
        .map(|r| Cow::Owned(r.data))
        .collect())
}

/// Builds a KPL aggregate of `records` (for tests and tools).
pub fn aggregate(partition_key: &str, records: &[&[u8]]) -> Vec<u8> {
    let agg = AggregatedRecord {
        partition_key_table: vec![partition_key.to_string()],
        explicit_hash_key_table: Vec::new(),
        records: records
            .iter()
            .map(|d| KplRecord {
                partition_key_index: 0,
                explicit_hash_key_index: None,
                data: d.to_vec(),
                tags: Vec::new(),
            })
            .collect(),
    };
    let body = prost::Message::encode_to_vec(&agg);
    let mut out = KPL_MAGIC.to_vec();
    out.extend_from_slice(&body);
    out.extend_from_slice(Md5::digest(&body).as_slice());
    out
}

/// The resource of an envelope's events: `cloud.provider`, `cloud.account.id`,
/// `aws.log.group.names`, `aws.log.stream.names`.
pub fn envelope_resource(env: &Envelope) -> Resource {
    let list = |v: &str| {
        any_value::Value::ArrayValue(ArrayValue {
            values: vec![AnyValue {
                value: Some(any_value::Value::StringValue(v.to_string())),
            }],
        })
    };
    Resource {
        attributes: vec![
            string_attribute("cloud.provider", "aws"),
            string_attribute("cloud.account.id", env.owner.clone()),
            attribute("aws.log.group.names", list(&env.log_group)),
            attribute("aws.log.stream.names", list(&env.log_stream)),
        ],
        ..Default::default()
    }
}

/// An envelope's events as OTLP log records (`format: cloudwatch_logs`).
pub fn logs_from_envelope(env: &Envelope, observed_unix_nano: u64) -> ResourceLogs {
    let records = env
        .log_events
        .iter()
        .map(|e| LogRecord {
            time_unix_nano: (e.timestamp.max(0) as u64).saturating_mul(1_000_000),
            observed_time_unix_nano: observed_unix_nano,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(e.message.clone())),
            }),
            attributes: if e.id.is_empty() {
                Vec::new()
            } else {
                vec![string_attribute("aws.log.event.id", e.id.clone())]
            },
            ..Default::default()
        })
        .collect();
    ResourceLogs {
        resource: Some(envelope_resource(env)),
        scope_logs: vec![ScopeLogs {
            scope: None,
            log_records: records,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/aws-spans/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn decodes_gzip_and_plain_envelopes() {
        let plain = fixture("envelope_data_message.awsdocs.json");
        let env = decode_envelope(&crate::net::gzip(&plain), 1 << 20).unwrap();
        assert_eq!(env.message_type, "DATA_MESSAGE");
        assert_eq!(env.owner, "111111111111");
        assert_eq!(env.log_events.len(), 3);
        assert_eq!(env.log_events[0].timestamp, 1_432_826_855_000);
        assert_eq!(decode_envelope(&plain, 1 << 20).unwrap(), env);
        // moto writes numeric event ids.
        let moto = decode_envelope(&fixture("moto_subscription_envelope.json"), 1 << 20).unwrap();
        assert_eq!(moto.log_events[0].id, "0");
        assert_eq!(moto.log_group, "aws/spans");
    }

    #[test]
    fn control_messages_from_a_real_kinesis_record() {
        use base64::Engine;
        let b64 = String::from_utf8(fixture("envelope_control_message_kinesis.clever.b64gz.txt"))
            .unwrap();
        let data = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .unwrap();
        let env = decode_envelope(&data, 1 << 20).unwrap();
        assert!(env.is_control());
    }

    #[test]
    fn bad_records_are_errors() {
        assert!(matches!(
            decode_envelope(b"\x1f\x8bnot gzip", 1 << 20),
            Err(RecordError::Gzip(_))
        ));
        assert!(matches!(
            decode_envelope(b"hello", 1 << 20),
            Err(RecordError::Gzip(_))
        ));
        assert!(matches!(
            decode_envelope(&crate::net::gzip(b"{\"x\": 1}"), 1 << 20),
            Err(RecordError::Envelope(_))
        ));
        let big = crate::net::gzip(&vec![b' '; 10_000]);
        assert_eq!(
            decode_envelope(&big, 1000),
            Err(RecordError::TooLarge(1000))
        );
    }

    #[test]
    fn kpl_aggregates_are_split_and_checked() {
        let a = crate::net::gzip(b"{\"messageType\":\"DATA_MESSAGE\"}");
        let b = b"second".to_vec();
        let agg = aggregate("pk", &[&a, &b]);
        assert_eq!(&agg[..4], &KPL_MAGIC);
        let parts = deaggregate(&agg).unwrap();
        assert_eq!(parts, vec![Cow::Borrowed(&a[..]), Cow::Borrowed(&b[..])]);
        let mut broken = agg.clone();
        let n = broken.len();
        broken[n - 1] ^= 0xff;
        assert!(matches!(deaggregate(&broken), Err(RecordError::Kpl(_))));
        assert_eq!(
            deaggregate(b"plain").unwrap(),
            vec![Cow::Borrowed(&b"plain"[..])]
        );
    }

    #[test]
    fn log_events_become_log_records() {
        let env = decode_envelope(&fixture("envelope_data_message.awsdocs.json"), 1 << 20).unwrap();
        let rl = logs_from_envelope(&env, 7);
        let recs = &rl.scope_logs[0].log_records;
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].time_unix_nano, 1_432_826_855_000_000_000);
        assert_eq!(recs[0].observed_time_unix_nano, 7);
        let res = rl.resource.unwrap();
        assert!(res
            .attributes
            .iter()
            .any(|kv| kv.key == "aws.log.group.names"));
        assert!(res.attributes.iter().any(|kv| kv.key == "cloud.account.id"));
    }
}
