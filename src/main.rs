//! The `spanwire` command: `run`, `validate`, `convert`, `healthcheck`, `--version`.

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
    /// Ask a running spanwire's health_check extension whether it is healthy:
    /// exit 0 on HTTP 200, 1 otherwise (for container HEALTHCHECKs in images
    /// without curl).
    Healthcheck {
        /// The health_check URL (plain HTTP).
        #[arg(long, default_value = "http://127.0.0.1:13133/")]
        url: String,
        /// How long to wait for the answer.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Convert recorded data offline and write the result to stdout.
    Convert {
        /// Input format.
        #[arg(long, value_enum)]
        from: ConvertFrom,
        /// Output: OTLP/JSON (one export request per input file), an indented
        /// span tree, or X-Ray segment documents (one JSON document per line).
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
        /// Index these attributes as X-Ray annotations (`--to xray`; repeatable).
        #[arg(long = "indexed-attribute")]
        indexed_attributes: Vec<String>,
        /// Index every attribute that can be an X-Ray annotation (`--to xray`).
        #[arg(long)]
        index_all_attributes: bool,
        /// Files: Bedrock trace events (a JSON array, one event, or NDJSON), or
        /// OTLP/JSON trace export requests (one per file or one per line).
        #[arg(required = true)]
        files: Vec<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ConvertFrom {
    /// Bedrock agent trace events (InvokeAgent / InvokeInlineAgent `trace` parts).
    Bedrock,
    /// OTLP/JSON trace export requests.
    OtlpJson,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ConvertTo {
    /// OTLP/JSON export requests, one line per input file.
    OtlpJson,
    /// A readable span tree with times and key attributes.
    Tree,
    /// AWS X-Ray segment documents, one per line, as the awsxray exporter sends them.
    Xray,
}

fn main() -> ExitCode {
    spanwire::telemetry::process_start_nanos();
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => {
            match spanwire::config::load_files(&config, &spanwire::components()) {
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
            }
        }
        Command::Convert {
            from,
            to,
            capture_content,
            traceparent,
            service_name,
            indexed_attributes,
            index_all_attributes,
            files,
        } => match convert(ConvertArgs {
            from,
            to,
            capture: &capture_content,
            traceparent: traceparent.as_deref(),
            service_name: &service_name,
            xray: spanwire::convert::xray::Options {
                indexed_attributes,
                index_all_attributes,
                ..Default::default()
            },
            files: &files,
        }) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Healthcheck { url, timeout } => match healthcheck(&url, timeout) {
            Ok(status) if status == 200 => {
                println!("healthy ({status})");
                ExitCode::SUCCESS
            }
            Ok(status) => {
                println!("unhealthy ({status})");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("unhealthy: {e:#}");
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
    let cfg = match spanwire::config::load_files(paths, &spanwire::components()) {
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

/// GETs `url` (plain HTTP/1.0) and returns the status code.
fn healthcheck(url: &str, timeout: std::time::Duration) -> anyhow::Result<u16> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("`{url}`: only http:// URLs can be checked"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve `{authority}`"))?
        .next()
        .with_context(|| format!("`{authority}` has no address"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n")?;
    let mut head = Vec::new();
    stream.take(4096).read_to_end(&mut head)?;
    let line = String::from_utf8_lossy(&head);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("not an HTTP answer from {addr}"))?;
    Ok(status)
}

struct ConvertArgs<'a> {
    from: ConvertFrom,
    to: ConvertTo,
    capture: &'a str,
    traceparent: Option<&'a str>,
    service_name: &'a str,
    xray: spanwire::convert::xray::Options,
    files: &'a [String],
}

fn convert(args: ConvertArgs<'_>) -> anyhow::Result<ExitCode> {
    use spanwire::convert::bedrock;
    use spanwire::signal::{Signal, Telemetry};
    use std::io::Write;
    let capture_content = match args.capture {
        "none" => bedrock::CaptureContent::None,
        "truncated" => bedrock::CaptureContent::default(),
        "full" => bedrock::CaptureContent::Full,
        other => anyhow::bail!("--capture-content must be none, truncated or full, not `{other}`"),
    };
    let traceparent = match args.traceparent {
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
            args.service_name,
        )],
    };
    let mut out = std::io::stdout().lock();
    let mut skipped = 0;
    for file in args.files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("cannot read `{file}`"))?;
        let (data, header) = match args.from {
            ConvertFrom::Bedrock => {
                let events =
                    bedrock::parse_events(&text).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
                let c = bedrock::convert(&events, &opts);
                for e in &c.errors {
                    eprintln!("{file}: event {}: skipped: {}", e.index, e.message);
                }
                skipped += c.errors.len();
                let header = format!(
                    "# {file}: {} events, {} invocation(s)",
                    c.events, c.invocations
                );
                (Telemetry::Traces(c.resource_spans), header)
            }
            ConvertFrom::OtlpJson => {
                // One request per file, or one per line.
                let mut spans = Vec::new();
                let whole = spanwire::convert::otlp_json::decode(Signal::Traces, text.as_bytes());
                let parts = match whole {
                    Ok(t) => vec![t],
                    Err(_) => text
                        .lines()
                        .filter(|l| !l.trim().is_empty())
                        .enumerate()
                        .map(|(i, l)| {
                            spanwire::convert::otlp_json::decode(Signal::Traces, l.as_bytes())
                                .map_err(|e| anyhow::anyhow!("{file}: line {}: {e}", i + 1))
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?,
                };
                for p in parts {
                    if let Telemetry::Traces(rs) = p {
                        spans.extend(rs);
                    }
                }
                let t = Telemetry::Traces(spans);
                let header = format!("# {file}: {} spans", t.item_count());
                (t, header)
            }
        };
        match args.to {
            ConvertTo::OtlpJson => {
                out.write_all(&spanwire::convert::otlp_json::encode_to_vec(&data))?;
                out.write_all(b"\n")?;
            }
            ConvertTo::Tree => {
                writeln!(out, "{header}")?;
                out.write_all(spanwire::exporters::debug::tree(&data).as_bytes())?;
            }
            ConvertTo::Xray => {
                let Telemetry::Traces(rs) = &data else {
                    continue;
                };
                let c = spanwire::convert::xray::convert(rs, &args.xray);
                for e in &c.errors {
                    eprintln!("{file}: skipped: {e}");
                }
                skipped += c.errors.len();
                for d in &c.documents {
                    out.write_all(d.json.as_bytes())?;
                    out.write_all(b"\n")?;
                }
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
