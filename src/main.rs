//! The `spanwire` command: `run`, `validate`, `convert`, `healthcheck`, `tap`, `--version`.

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
    /// Print live spans from a running spanwire's `live` exporter (gRPC),
    /// until Ctrl-C; a lost connection is retried with backoff.
    Tap {
        /// The live exporter's endpoint.
        #[arg(long, default_value = "http://127.0.0.1:4321")]
        endpoint: String,
        /// Only this session.
        #[arg(long)]
        session: Option<String>,
        /// Only sessions of this agent.
        #[arg(long)]
        agent: Option<String>,
        /// Only error spans (and summaries of sessions with errors).
        #[arg(long)]
        errors: bool,
        /// One line per span, a growing tree per session, or JSON lines.
        #[arg(long, value_enum, default_value = "line")]
        format: TapFormat,
        /// The bearer token, if the exporter requires one.
        #[arg(long, env = "SPANWIRE_TOKEN", hide_env_values = true)]
        token: Option<String>,
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
        /// Exit 3 also when a Bedrock event holds a trace member this version
        /// does not know (by default it becomes a span of its own, with a warning).
        #[arg(long)]
        strict: bool,
        /// Files: Bedrock trace events (a JSON array, one event, or NDJSON), or
        /// OTLP/JSON trace export requests (one per file or one per line).
        #[arg(required = true)]
        files: Vec<String>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TapFormat {
    /// `session  name  duration  status`, one line per span.
    Line,
    /// Spans indented under their parents, per session.
    Tree,
    /// One JSON object per span or summary.
    Json,
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
            strict,
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
            strict,
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
        Command::Tap {
            endpoint,
            session,
            agent,
            errors,
            format,
            token,
        } => {
            let req = spanwire::proto::live::SubscribeRequest {
                session_id: session.unwrap_or_default(),
                agent: agent.unwrap_or_default(),
                errors_only: errors,
            };
            match tap(&endpoint, req, format, token.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
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

/// `spanwire tap`: subscribes and prints until Ctrl-C, reconnecting with
/// backoff when the connection is lost.
fn tap(
    endpoint: &str,
    req: spanwire::proto::live::SubscribeRequest,
    format: TapFormat,
    token: Option<&str>,
) -> anyhow::Result<()> {
    use spanwire::proto::live::live_client::LiveClient;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let endpoint = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .with_context(|| format!("`{endpoint}` is not a URL"))?;
    let auth: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> = token
        .map(|t| format!("Bearer {t}").parse())
        .transpose()
        .context("the token is not a valid header value")?;
    runtime.block_on(async {
        let mut printer = TapPrinter::new(format);
        let mut backoff = std::time::Duration::from_millis(250);
        loop {
            let attempt = async {
                let channel = endpoint.connect().await?;
                let mut client = LiveClient::new(channel);
                let mut request = tonic::Request::new(req.clone());
                if let Some(a) = &auth {
                    request.metadata_mut().insert("authorization", a.clone());
                }
                let mut stream = client.subscribe(request).await?.into_inner();
                eprintln!("tap: connected to {}", endpoint.uri());
                while let Some(ev) = stream.message().await? {
                    printer.print(ev);
                }
                Ok::<(), anyhow::Error>(())
            };
            tokio::select! {
                r = attempt => {
                    match r {
                        Ok(()) => eprintln!("tap: the stream ended; reconnecting in {backoff:?}"),
                        Err(e) => eprintln!("tap: connection lost ({e:#}); reconnecting in {backoff:?}"),
                    }
                }
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
            backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
        }
    })
}

/// Prints tap events in the chosen format; remembers span depths for `tree`.
struct TapPrinter {
    format: TapFormat,
    depth: std::collections::HashMap<Vec<u8>, usize>,
}

impl TapPrinter {
    fn new(format: TapFormat) -> Self {
        TapPrinter {
            format,
            depth: Default::default(),
        }
    }

    fn print(&mut self, ev: spanwire::proto::live::LiveEvent) {
        use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
        use prost::Message;
        use spanwire::proto::live::live_event::Event;
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        match ev.event {
            Some(Event::Spans(s)) => {
                for raw in &s.resource_spans {
                    let Ok(rs) = ResourceSpans::decode(raw.as_slice()) else {
                        eprintln!("tap: a span batch that is not OTLP; skipped");
                        continue;
                    };
                    for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                        let ms = span
                            .end_time_unix_nano
                            .saturating_sub(span.start_time_unix_nano)
                            as f64
                            / 1e6;
                        let error = span.status.as_ref().is_some_and(|st| st.code == 2);
                        let status = if error { "ERROR" } else { "ok" };
                        let line = match self.format {
                            TapFormat::Line => {
                                format!("{}  {}  {ms:.1}ms  {status}", s.session_id, span.name)
                            }
                            TapFormat::Tree => {
                                let d = self.depth.get(&span.parent_span_id).map_or(0, |d| d + 1);
                                self.depth.insert(span.span_id.clone(), d);
                                format!(
                                    "{}{}{}  {ms:.1}ms  {status}",
                                    if d == 0 {
                                        format!("[{}] ", s.session_id)
                                    } else {
                                        String::new()
                                    },
                                    "  ".repeat(d),
                                    span.name
                                )
                            }
                            TapFormat::Json => serde_json::json!({
                                "session_id": s.session_id,
                                "trace_id": hex::encode(&span.trace_id),
                                "span_id": hex::encode(&span.span_id),
                                "parent_span_id": hex::encode(&span.parent_span_id),
                                "name": span.name,
                                "start_time_unix_nano": span.start_time_unix_nano,
                                "end_time_unix_nano": span.end_time_unix_nano,
                                "error": error,
                            })
                            .to_string(),
                        };
                        let _ = writeln!(out, "{line}");
                    }
                }
            }
            Some(Event::Summary(s)) => {
                let line = match self.format {
                    TapFormat::Json => serde_json::json!({
                        "summary": {
                            "session_id": s.session_id, "span_count": s.span_count,
                            "errors": s.errors, "input_tokens": s.input_tokens,
                            "output_tokens": s.output_tokens, "cost_usd": s.cost_usd,
                        }
                    })
                    .to_string(),
                    _ => format!(
                        "# {}: {} spans, {} errors, tokens {} in / {} out",
                        s.session_id, s.span_count, s.errors, s.input_tokens, s.output_tokens
                    ),
                };
                let _ = writeln!(out, "{line}");
            }
            Some(Event::Events(e)) => {
                use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
                for raw in &e.resource_logs {
                    let Ok(rl) = ResourceLogs::decode(raw.as_slice()) else {
                        eprintln!("tap: an event batch that is not OTLP; skipped");
                        continue;
                    };
                    for lr in rl.scope_logs.iter().flat_map(|sl| &sl.log_records) {
                        let body = spanwire::signal::value_text(
                            lr.body.as_ref().and_then(|b| b.value.as_ref()),
                        );
                        let line = match self.format {
                            TapFormat::Json => serde_json::json!({
                                "session_id": e.session_id,
                                "event": lr.event_name,
                                "trace_id": hex::encode(&lr.trace_id),
                                "span_id": hex::encode(&lr.span_id),
                                "time_unix_nano": lr.time_unix_nano,
                                "body": body,
                            })
                            .to_string(),
                            _ => {
                                let short: String = body.chars().take(100).collect();
                                let indent = match self.format {
                                    TapFormat::Tree => self
                                        .depth
                                        .get(&lr.span_id)
                                        .map_or(String::new(), |d| "  ".repeat(d + 1)),
                                    _ => format!("{}  ", e.session_id),
                                };
                                format!("{indent}· {}  {short}", lr.event_name)
                            }
                        };
                        let _ = writeln!(out, "{line}");
                    }
                }
            }
            Some(Event::Lagged(l)) => {
                eprintln!("tap: too slow; {} events dropped", l.dropped);
            }
            None => {}
        }
        let _ = out.flush();
    }
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
    strict: bool,
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
                for m in &c.unknown_members {
                    eprintln!("{file}: warning: the trace member `{m}` is unknown to this version; it became a span of its own (bedrock.trace.type = {m})");
                }
                if args.strict {
                    skipped += c.unknown_members.len();
                }
                if c.duplicates > 0 {
                    eprintln!("{file}: {} exact duplicate event(s) left out", c.duplicates);
                }
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
