//! `scripts/demo`, the first run that needs no AWS account, end to end: moto
//! server as AWS, the fixtures and an OpenTelemetry Python SDK agent
//! replayed; it must find X-Ray segments, aws/spans spans read from Kinesis,
//! EMF events, Prometheus agent metrics and the sessions on the live page
//! (whose URL it prints), or exit non-zero.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

#[test]
fn the_demo_shows_every_part_of_the_path() {
    let python = common::python();
    let moto = python.parent().unwrap().join("moto_server");
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo"))
        .env("SPANWIRE_BIN", env!("CARGO_BIN_EXE_spanwire"))
        .env("SPANWIRE_PYTHON", &python)
        .env("SPANWIRE_MOTO_SERVER", &moto)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for line in [
        "ok    X-Ray:",
        "ok    Kinesis:",
        "ok    Prometheus:",
        "ok    CloudWatch:",
        "live sessions: open http://127.0.0.1:",
        "ok    Live:",
        "demo passed",
    ] {
        assert!(stdout.contains(line), "{line} missing:\n{stdout}");
    }
    assert!(!stdout.contains("MISSING"), "{stdout}");
}
