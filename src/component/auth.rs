//! Client authenticators: what an extension such as `sigv4auth` or
//! `bearertokenauth` gives the exporters that name it under
//! `auth: {authenticator: <extension id>}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::id::ComponentId;
use crate::signal::Metadata;

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

    /// Whether it must run last in an exporter's chain of authenticators:
    /// true for one that signs the request (its headers included), so that
    /// nothing changes the request after it. Defaults to [`ClientAuth::signs_body`].
    fn signs_request(&self) -> bool {
        self.signs_body()
    }

    /// The headers it may set, in lower case (so an exporter can tell that a
    /// header it needs will be there).
    fn sets_headers(&self) -> Vec<String> {
        Vec::new()
    }

    /// Adds credentials (headers) to a request whose `body` is final (after
    /// compression). `metadata` is the client metadata of the batch being
    /// sent. Called for every attempt, so a retry is signed anew.
    async fn authorize(
        &self,
        parts: &mut http::request::Parts,
        body: &[u8],
        metadata: &Metadata,
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

impl Authenticators {
    /// The authenticators `ids` name, applied in that order, as one; `None`
    /// for an empty list. A signing authenticator must come last (it signs
    /// the headers the others set), and there can be only one.
    pub fn chain(&self, ids: &[String]) -> Result<Option<Arc<dyn ClientAuth>>, String> {
        let mut links = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let a = self.get(id).ok_or_else(|| {
                format!("authenticator `{id}` is not a started authenticator extension")
            })?;
            if a.signs_request() && i + 1 != ids.len() {
                return Err(format!(
                    "authenticator `{id}` signs the request, so it must come last in `auth.authenticator` (it signs the headers the others set)"
                ));
            }
            links.push(a);
        }
        Ok(match links.len() {
            0 => None,
            1 => links.pop(),
            _ => Some(Arc::new(Chain(links))),
        })
    }
}

/// Several authenticators applied in turn.
struct Chain(Vec<Arc<dyn ClientAuth>>);

#[async_trait]
impl ClientAuth for Chain {
    fn signs_body(&self) -> bool {
        self.0.iter().any(|a| a.signs_body())
    }

    fn signs_request(&self) -> bool {
        self.0.iter().any(|a| a.signs_request())
    }

    fn sets_headers(&self) -> Vec<String> {
        self.0.iter().flat_map(|a| a.sets_headers()).collect()
    }

    async fn authorize(
        &self,
        parts: &mut http::request::Parts,
        body: &[u8],
        metadata: &Metadata,
    ) -> Result<(), AuthError> {
        for a in &self.0 {
            a.authorize(parts, body, metadata).await?;
        }
        Ok(())
    }
}
