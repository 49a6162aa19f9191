//! The few `google.rpc` messages OTLP uses, compiled from `proto/google/rpc/`:
//! `Status` (HTTP error bodies and gRPC status details) and `RetryInfo` (how
//! long a sender should wait), and the helpers that build and read them.

use std::time::Duration;

pub use crate::proto::google_rpc::{RetryInfo, Status as RpcStatus};
use prost_types::{Any, Duration as ProtoDuration};

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
