//! Extensions: components outside the data path (health checks, ...). Each
//! extension is one file here with its config and its
//! [`ExtensionFactory`](crate::component::ExtensionFactory); [`FACTORIES`]
//! lists them.

pub mod bearertokenauth;
pub mod headers_setter;
pub mod health_check;
pub mod sigv4auth;

use crate::component::{ExtensionDef, Factories};

/// The extension registry: every type a config may name under `extensions:`.
pub static FACTORIES: Factories<dyn ExtensionDef> = &[
    &health_check::HealthCheckFactory,
    &sigv4auth::SigV4AuthFactory,
    &bearertokenauth::BearerTokenAuthFactory,
    &headers_setter::HeadersSetterFactory,
];
