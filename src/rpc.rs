//! The few `google.rpc` messages OTLP uses: `Status` (HTTP error bodies and
//! gRPC status details) and `RetryInfo` (how long a sender should wait).

use std::time::Duration;

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// gRPC code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Human-readable message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Typed details.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    /// Type URL.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// Encoded message.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    /// How long to wait.
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoDuration {
    /// Seconds.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

const RETRY_INFO_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// A gRPC `UNAVAILABLE` status carrying a `RetryInfo` detail.
pub fn unavailable(message: &str, retry_after: Duration) -> tonic::Status {
    use prost::Message;
    let info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: retry_after.as_secs() as i64,
            nanos: retry_after.subsec_nanos() as i32,
        }),
    };
    let status = RpcStatus {
        code: tonic::Code::Unavailable as i32,
        message: message.to_string(),
        details: vec![Any {
            type_url: RETRY_INFO_URL.into(),
            value: info.encode_to_vec(),
        }],
    };
    tonic::Status::with_details(
        tonic::Code::Unavailable,
        message.to_string(),
        status.encode_to_vec().into(),
    )
}

/// The `RetryInfo` delay in a gRPC status, if any.
pub fn retry_delay(status: &tonic::Status) -> Option<Duration> {
    use prost::Message;
    let details = status.details();
    if details.is_empty() {
        return None;
    }
    let st = RpcStatus::decode(details).ok()?;
    st.details
        .iter()
        .filter(|a| a.type_url == RETRY_INFO_URL)
        .find_map(|a| RetryInfo::decode(&a.value[..]).ok()?.retry_delay)
        .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_info_round_trips() {
        let s = unavailable("full", Duration::from_millis(1500));
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(retry_delay(&s), Some(Duration::from_millis(1500)));
        assert_eq!(retry_delay(&tonic::Status::unavailable("x")), None);
    }
}
