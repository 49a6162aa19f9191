//! The `spanwire` command: `run`, `validate`, `--version`.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "spanwire",
    version,
    about = "Telemetry pipeline daemon for AI agents on AWS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the pipelines and run until SIGTERM or SIGINT.
    Run {
        /// Config file; repeat to merge several (later files override earlier keys).
        #[arg(long = "config", short = 'c', required = true)]
        config: Vec<String>,
    },
    /// Check config files and print every problem with its file, line and column.
    Validate {
        /// Config file; repeat to merge several.
        #[arg(long = "config", short = 'c', required = true)]
        config: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => match spanwire::config::load_files(&config) {
            Ok(cfg) => {
                for w in &cfg.warnings {
                    eprintln!("warning: {w}");
                }
                println!("{}: valid", config.join(", "));
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for e in &errors.0 {
                    eprintln!("error: {e}");
                }
                eprintln!("{} error(s) found", errors.0.len());
                ExitCode::from(1)
            }
        },
        Command::Run { config } => match run(&config) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

fn run(paths: &[String]) -> anyhow::Result<ExitCode> {
    let cfg = match spanwire::config::load_files(paths) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    spanwire::telemetry::init_logging(&cfg.service.telemetry.logs)?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("spanwire")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let service = spanwire::pipeline::Service::start(&cfg).await?;
        wait_for_signal().await?;
        let report = service.shutdown(cfg.service.shutdown_timeout).await;
        if !report.lost.is_empty() {
            let total: u64 = report.lost.iter().map(|(_, _, n)| n).sum();
            tracing::error!(
                items = total,
                "shutdown dropped data still queued at the deadline"
            );
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}
