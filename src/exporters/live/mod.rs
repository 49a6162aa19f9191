//! The `live` exporter's parts. So far its session store ([`store`]): agent
//! sessions as their spans arrive, bounded, with the totals a live view
//! shows. The exporter that feeds it and serves it (HTTP, WebSocket, SSE,
//! gRPC, the page) is not registered yet.

pub mod store;
