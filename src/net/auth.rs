//! Bearer-token authentication for receivers.

use super::http::Body;

/// Checks `Authorization: Bearer <token>` headers against one token, in time
/// that does not depend on where a wrong token differs.
#[derive(Clone)]
pub struct BearerAuth {
    expected: std::sync::Arc<[u8]>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerAuth(<redacted>)")
    }
}

impl BearerAuth {
    /// Accepts `token`.
    pub fn new(token: &crate::settings::types::Secret) -> BearerAuth {
        BearerAuth {
            expected: token.0.as_bytes().into(),
        }
    }

    /// True when `header` (the `Authorization` value) carries the token.
    pub fn check(&self, header: Option<&[u8]>) -> bool {
        let Some(h) = header else { return false };
        let Some(given) = h
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case(b"bearer "))
            .map(|_| &h[7..])
        else {
            return false;
        };
        let given = given.trim_ascii();
        let mut diff = (given.len() ^ self.expected.len()) as u8;
        for (i, b) in self.expected.iter().enumerate() {
            diff |= b ^ given.get(i).copied().unwrap_or(0);
        }
        diff == 0 && given.len() == self.expected.len()
    }
}

/// The checker for a receiver's `auth:` section, if it has one (the token
/// file is read here, at start).
pub fn bearer_auth(
    cfg: Option<&crate::settings::types::AuthConfig>,
    component: &str,
) -> Result<Option<BearerAuth>, crate::consumer::StartError> {
    match cfg {
        None => Ok(None),
        Some(a) => a
            .token()
            .map(|t| Some(BearerAuth::new(&t)))
            .map_err(|e| crate::consumer::StartError::component(component, e)),
    }
}

/// 401 with `WWW-Authenticate: Bearer`, for HTTP receivers.
pub fn unauthorized() -> http::Response<Body> {
    let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
        b"missing or wrong bearer token\n",
    )));
    *r.status_mut() = http::StatusCode::UNAUTHORIZED;
    r.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod bearer_tests {
    use super::*;
    use crate::settings::types::Secret;

    #[test]
    fn bearer_tokens() {
        let a = BearerAuth::new(&Secret("s3cret-token".into()));
        assert!(a.check(Some(b"Bearer s3cret-token")));
        assert!(a.check(Some(b"bearer s3cret-token")));
        assert!(!a.check(Some(b"Bearer s3cret-toke")));
        assert!(!a.check(Some(b"Bearer s3cret-token2")));
        assert!(!a.check(Some(b"Basic s3cret-token")));
        assert!(!a.check(Some(b"s3cret-token")));
        assert!(!a.check(Some(b"Bearer ")));
        assert!(!a.check(None));
        assert_eq!(format!("{a:?}"), "BearerAuth(<redacted>)");
    }
}
