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
    /// Convert recorded data offline and write the result to stdout.
    Convert {
        /// Input format.
        #[arg(long, value_enum)]
        from: ConvertFrom,
        /// Output: OTLP/JSON (one export request per input file) or an indented span tree.
        #[arg(long, value_enum, default_value = "otlp-json")]
        to: ConvertTo,
        /// Prompt and response text: none, truncated (4 KiB) or full.
        #[arg(long, default_value = "truncated")]
        capture_content: String,
        /// A W3C traceparent the converted spans join.
        #[arg(long)]
        traceparent: Option<String>,
        /// `service.name` of the produced spans.
        #[arg(long, default_value = "bedrock-agent")]
        service_name: String,
        /// Files of Bedrock trace events: a JSON array, one event, or NDJSON.
        #[arg(required = true)]
        files: Vec<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ConvertFrom {
    /// Bedrock agent trace events (InvokeAgent / InvokeInlineAgent `trace` parts).
    Bedrock,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ConvertTo {
    /// OTLP/JSON export requests, one line per input file.
    OtlpJson,
    /// A readable span tree with times and key attributes.
    Tree,
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
        Command::Convert {
            from: ConvertFrom::Bedrock,
            to,
            capture_content,
            traceparent,
            service_name,
            files,
        } => match convert(
            to,
            &capture_content,
            traceparent.as_deref(),
            &service_name,
            &files,
        ) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
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

fn convert(
    to: ConvertTo,
    capture: &str,
    traceparent: Option<&str>,
    service_name: &str,
    files: &[String],
) -> anyhow::Result<ExitCode> {
    use spanwire::convert::bedrock;
    use std::io::Write;
    let capture_content = match capture {
        "none" => bedrock::CaptureContent::None,
        "truncated" => bedrock::CaptureContent::default(),
        "full" => bedrock::CaptureContent::Full,
        other => anyhow::bail!("--capture-content must be none, truncated or full, not `{other}`"),
    };
    let traceparent = match traceparent {
        Some(t) => Some(
            bedrock::TraceParent::parse(t).with_context(|| format!("invalid traceparent `{t}`"))?,
        ),
        None => None,
    };
    let opts = bedrock::Options {
        capture_content,
        traceparent,
        resource_attributes: vec![spanwire::signal::string_attribute(
            "service.name",
            service_name,
        )],
    };
    let mut out = std::io::stdout().lock();
    let mut skipped = 0;
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("cannot read `{file}`"))?;
        let events = bedrock::parse_events(&text).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        let c = bedrock::convert(&events, &opts);
        for e in &c.errors {
            eprintln!("{file}: event {}: skipped: {}", e.index, e.message);
        }
        skipped += c.errors.len();
        let data = spanwire::signal::Telemetry::Traces(c.resource_spans);
        match to {
            ConvertTo::OtlpJson => {
                out.write_all(&spanwire::convert::otlp_json::encode_to_vec(&data))?;
                out.write_all(b"\n")?;
            }
            ConvertTo::Tree => {
                writeln!(
                    out,
                    "# {file}: {} events, {} invocation(s)",
                    c.events, c.invocations
                )?;
                out.write_all(spanwire::exporters::debug::tree(&data).as_bytes())?;
            }
        }
    }
    Ok(if skipped > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
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
