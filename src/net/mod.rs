//! Networking shared by components, one file per job: binding listeners
//! ([`listen`]), a small HTTP server ([`http`]), TLS for receivers ([`tls`])
//! and clients ([`client`]), bearer-token auth ([`auth`]), compression
//! ([`compress`]) and reading request bodies ([`body`]).

pub mod auth;
pub mod body;
pub mod client;
pub mod compress;
pub mod http;
pub mod listen;
pub mod metadata;
pub mod tls;

pub use auth::{bearer_auth, unauthorized, BearerAuth};
pub use body::{read_body, BodyError};
pub use client::{endpoint_uri, https_connector, HttpsConnector};
pub use compress::{decompress, gzip, zstd_compress, DecompressError};
pub use http::{percent_decode, serve_http, Body};
pub use listen::{bind, bind_udp, NetError};
pub use tls::{TlsAcceptor, TlsConn};
