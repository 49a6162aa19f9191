//! Compression: bounded decompression of request bodies (a gzip bomb is
//! refused, not inflated) and the compressors exporters use.

use std::io::Read;

use bytes::Bytes;

/// Why a compressed body was not accepted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecompressError {
    /// The encoding is not one we read.
    #[error("unsupported Content-Encoding `{0}`; use gzip, zstd or none")]
    Unsupported(String),
    /// The body is not valid for its encoding.
    #[error("cannot decompress {encoding} body: {message}")]
    Corrupt {
        /// The encoding.
        encoding: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// The decompressed body would exceed the limit.
    #[error("decompressed body exceeds the limit of {0} bytes")]
    TooLarge(usize),
}

/// Decompresses `body` per `Content-Encoding`, refusing to inflate past `limit` bytes.
pub fn decompress(
    encoding: Option<&str>,
    body: Bytes,
    limit: usize,
) -> Result<Bytes, DecompressError> {
    let enc = encoding
        .map(|e| e.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match enc.as_str() {
        "" | "identity" | "none" => Ok(body),
        "gzip" | "x-gzip" => {
            read_bounded(flate2::read::MultiGzDecoder::new(&body[..]), "gzip", limit)
        }
        "zstd" => {
            let dec = zstd::stream::read::Decoder::new(&body[..]).map_err(|e| {
                DecompressError::Corrupt {
                    encoding: "zstd",
                    message: e.to_string(),
                }
            })?;
            read_bounded(dec, "zstd", limit)
        }
        other => Err(DecompressError::Unsupported(other.to_string())),
    }
}

fn read_bounded(
    r: impl Read,
    encoding: &'static str,
    limit: usize,
) -> Result<Bytes, DecompressError> {
    let mut out = Vec::new();
    let mut taken = r.take(limit as u64 + 1);
    taken
        .read_to_end(&mut out)
        .map_err(|e| DecompressError::Corrupt {
            encoding,
            message: e.to_string(),
        })?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge(limit));
    }
    Ok(Bytes::from(out))
}

/// gzip-compresses `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// zstd-compresses `data`.
pub fn zstd_compress(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, 1).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn gzip_bomb_is_refused_not_inflated() {
        let zeros = vec![0u8; 50 * 1024 * 1024];
        let bomb = gzip(&zeros);
        assert!(bomb.len() < 1024 * 1024);
        let err = decompress(Some("gzip"), Bytes::from(bomb), 1024 * 1024).unwrap_err();
        assert_eq!(err, DecompressError::TooLarge(1024 * 1024));
    }

    #[test]
    fn round_trips_and_rejects_garbage() {
        let data = b"hello hello hello".to_vec();
        assert_eq!(
            decompress(Some("gzip"), Bytes::from(gzip(&data)), 100).unwrap(),
            &data[..]
        );
        assert_eq!(
            decompress(Some("zstd"), Bytes::from(zstd_compress(&data)), 100).unwrap(),
            &data[..]
        );
        assert!(matches!(
            decompress(Some("gzip"), Bytes::from_static(b"not gzip"), 100),
            Err(DecompressError::Corrupt { .. })
        ));
        assert!(matches!(
            decompress(Some("br"), Bytes::from_static(b"x"), 100),
            Err(DecompressError::Unsupported(_))
        ));
    }
}
