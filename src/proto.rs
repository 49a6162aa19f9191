//! Messages and services compiled at build time from the `.proto` files in
//! `proto/` (see `build.rs`).

/// `google.rpc`: `Status` (OTLP error bodies, gRPC status details) and
/// `RetryInfo` (how long a sender should wait).
pub mod google_rpc {
    include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
}

/// The Kinesis Producer Library's aggregated record.
pub mod kpl {
    include!(concat!(env!("OUT_DIR"), "/kpl.rs"));
}

/// `spanwire.live.v1`: the live-session tap API.
pub mod live {
    include!(concat!(env!("OUT_DIR"), "/spanwire.live.v1.rs"));
}

/// Prometheus remote write 1.0 (`WriteRequest`), as Prometheus's prompb.
pub mod prometheus {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}
