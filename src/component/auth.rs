//! Client authenticators: what an extension such as `sigv4auth` or
//! `bearertokenauth` gives the exporters that name it under
//! `auth: {authenticator: <extension id>}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::id::ComponentId;

/// Why a request could not be given its credentials.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// Worth retrying (credentials could not be fetched right now).
    #[error("{0}")]
    Retryable(String),
    /// Not worth retrying (the request cannot be signed as it is).
    #[error("{0}")]
    Permanent(String),
}

/// Adds credentials to outgoing HTTP requests.
#[async_trait]
pub trait ClientAuth: Send + Sync + 'static {
    /// Whether the credentials cover the body (SigV4 does): such an
    /// authenticator cannot serve gRPC, which frames the body itself.
    fn signs_body(&self) -> bool {
        false
    }

    /// Adds credentials (headers) to a request whose `body` is final (after
    /// compression). Called for every attempt, so a retry is signed anew.
    async fn authorize(
        &self,
        parts: &mut http::request::Parts,
        body: &[u8],
    ) -> Result<(), AuthError>;
}

/// The authenticators that started extensions provide, by extension id.
#[derive(Clone, Default)]
pub struct Authenticators(BTreeMap<ComponentId, Arc<dyn ClientAuth>>);

impl Authenticators {
    /// Adds the authenticator of extension `id`.
    pub fn insert(&mut self, id: ComponentId, auth: Arc<dyn ClientAuth>) {
        self.0.insert(id, auth);
    }

    /// The authenticator of extension `id` (written `type[/name]`).
    pub fn get(&self, id: &str) -> Option<Arc<dyn ClientAuth>> {
        let id = ComponentId::parse(id).ok()?;
        self.0.get(&id).cloned()
    }
}
