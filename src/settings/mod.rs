//! What every component's settings are read with, below both the components
//! and `config` (which assembles them): the YAML tree that keeps every
//! node's file:line:col ([`yaml`]), a serde deserializer over it whose
//! errors keep the position and key path ([`de`]), and the setting types
//! several components share: durations, TLS, retry, sending queue,
//! compression, auth ([`types`]).

pub mod de;
pub mod types;
pub mod yaml;
