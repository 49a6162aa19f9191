//! Compiles the .proto files in proto/ into Rust (prost messages, tonic
//! services) with protox, a protobuf compiler written in Rust, so a fresh
//! machine needs no `protoc`.

const PROTOS: &[&str] = &[
    "proto/google/rpc/status.proto",
    "proto/google/rpc/error_details.proto",
    "proto/kinesis/kpl.proto",
    "proto/prometheus/remote.proto",
    "proto/spanwire/live/v1/live.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
