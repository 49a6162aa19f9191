//! The component model from outside the crate: an exporter written here (a
//! config, a factory, an `Export`) joins the registries with one line, is
//! parsed and validated by `config` with positions, and runs in a pipeline
//! that `Service` builds, without either of them naming it.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use spanwire::component::{
    BuiltExporter, Export, ExportError, ExportOk, ExporterContext, ExporterDef, ExporterFactory,
    Factories, Factory,
};
use spanwire::consumer::StartError;
use spanwire::settings::de::DeError;
use spanwire::settings::types::{QueueConfig, RetryConfig};
use spanwire::signal::Telemetry;

/// Spans this test's exporter was given.
static COUNTED: AtomicUsize = AtomicUsize::new(0);

/// `exporters.count`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CountConfig {
    /// Must be at least 1.
    #[serde(default = "one")]
    every: usize,
}

fn one() -> usize {
    1
}

struct CountFactory;

impl Factory for CountFactory {
    type Config = CountConfig;
    fn type_name(&self) -> &'static str {
        "count"
    }
    fn validate(&self, c: &CountConfig) -> Result<(), DeError> {
        use serde::de::Error;
        if c.every == 0 {
            return Err(DeError::custom("every must be at least 1"));
        }
        Ok(())
    }
}

impl ExporterFactory for CountFactory {
    fn build(
        &self,
        _c: &CountConfig,
        _ctx: ExporterContext<'_>,
    ) -> Result<BuiltExporter, StartError> {
        Ok(BuiltExporter::new(
            Count,
            QueueConfig::local(10),
            RetryConfig::off(),
        ))
    }
}

struct Count;

#[async_trait]
impl Export for Count {
    type Progress = ();
    async fn export(
        &self,
        d: &Arc<Telemetry>,
        _: &spanwire::signal::Metadata,
        _: &mut (),
    ) -> Result<ExportOk, ExportError> {
        COUNTED.fetch_add(d.item_count(), Ordering::SeqCst);
        Ok(ExportOk::default())
    }
}

/// The built-in registries with `count` as one more exporter.
static EXPORTERS: Factories<dyn ExporterDef> = &[&CountFactory];

fn registry() -> spanwire::component::Registry {
    spanwire::component::Registry {
        exporters: EXPORTERS,
        ..spanwire::components()
    }
}

fn config(port: u16, every: usize) -> String {
    format!(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{port}\n\
         exporters:\n  count:\n    every: {every}\n\
         service:\n  telemetry:\n    metrics:\n      address: \"\"\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [count]\n"
    )
}

#[tokio::test]
async fn an_exporter_from_outside_plugs_in_with_one_registry_line() {
    let port = common::free_port();
    let sources = [("t.yaml".to_string(), config(port, 2))];

    // The built-in registry does not know it, and says which types it knows.
    let err = spanwire::config::load_sources(&sources, &|_| None, &spanwire::components())
        .unwrap_err()
        .to_string();
    assert!(err.contains("t.yaml:7:3"), "{err}");
    assert!(err.contains("unknown exporter type `count`"), "{err}");
    assert!(err.contains("otlphttp"), "{err}");

    // Its own validation runs, with the position of its section.
    let bad = [("t.yaml".to_string(), config(port, 0))];
    let err = spanwire::config::load_sources(&bad, &|_| None, &registry())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t.yaml:8:10: exporters::count: every must be at least 1"),
        "{err}"
    );

    // Parsed, built and wired by the graph like any exporter.
    let cfg = spanwire::config::load_sources(&sources, &|_| None, &registry()).unwrap();
    let service = spanwire::pipeline::Service::start(&cfg).await.unwrap();
    let reply = common::post_spans(port, 25, "plug-in").await;
    assert_eq!(
        reply.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(
        common::wait_until(Duration::from_secs(10), || COUNTED.load(Ordering::SeqCst)
            == 25)
        .await,
        "counted {}",
        COUNTED.load(Ordering::SeqCst)
    );
    let report = service.shutdown(Duration::from_secs(5)).await;
    assert!(report.drained && report.lost.is_empty(), "{report:?}");
}
