//! Reading a request body, the one way every HTTP receiver does it: a size
//! limit (declared and read), a deadline for the whole body, and bounded
//! decompression per `Content-Encoding`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Request;

use super::compress::{decompress, DecompressError};

/// How long a client may take to send a whole body.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// Why a request body was not taken.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Larger than the limit as sent (declared or read), or the whole body
    /// did not arrive within the deadline.
    #[error("body exceeds max_request_body_size ({0} bytes)")]
    TooLarge(usize),
    /// Its `Content-Encoding` was refused (too large inflated, unsupported,
    /// corrupt).
    #[error(transparent)]
    Decompress(#[from] DecompressError),
    /// The connection failed while reading.
    #[error("cannot read body: {0}")]
    Read(String),
}

impl BodyError {
    /// The HTTP status to answer with: 413 for a body too large (as sent or
    /// inflated), 415 for an unsupported encoding, 400 otherwise.
    pub fn status(&self) -> http::StatusCode {
        match self {
            BodyError::TooLarge(_) | BodyError::Decompress(DecompressError::TooLarge(_)) => {
                http::StatusCode::PAYLOAD_TOO_LARGE
            }
            BodyError::Decompress(DecompressError::Unsupported(_)) => {
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            BodyError::Decompress(_) | BodyError::Read(_) => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// Reads and decompresses the body of `req`, at most `limit` bytes both as
/// sent and decompressed. An oversize body is read and discarded up to four
/// times the limit (at least 8 MiB), so the client is still listening when
/// the refusal arrives; past that the connection closes.
pub async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, BodyError> {
    let drain_cap = limit.saturating_mul(4).max(8 << 20);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > drain_cap as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let encoding = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = read_bounded(req.into_body(), limit, drain_cap)
        .await
        .map_err(|e| BodyError::Read(e.to_string()))?
        .ok_or(BodyError::TooLarge(limit))?;
    Ok(decompress(encoding.as_deref(), body, limit)?)
}

/// Reads at most `limit` bytes; `Ok(None)` if the body is larger (drained up
/// to `drain_cap` bytes first) or not all there within [`BODY_DEADLINE`].
async fn read_bounded(
    mut body: Incoming,
    limit: usize,
    drain_cap: usize,
) -> Result<Option<Bytes>, hyper::Error> {
    let mut buf = BytesMut::new();
    let mut total = 0usize;
    let deadline = tokio::time::Instant::now() + BODY_DEADLINE;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(f)) => f?,
            Ok(None) => break,
            Err(_) => return Ok(None),
        };
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total > limit {
                if total > drain_cap {
                    return Ok(None);
                }
                continue;
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok((total <= limit).then(|| buf.freeze()))
}
