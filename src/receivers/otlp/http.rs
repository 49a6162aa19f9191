//! OTLP/HTTP: POST protobuf or JSON bodies, gzip/zstd, bounded sizes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::HttpConfig;
use super::intake::{Intake, Rejection};
use crate::consumer::StartError;
use crate::net::{self, Body};
use crate::rpc::RpcStatus;
use crate::signal::{Signal, Telemetry};

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Proto,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Proto => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

struct State {
    cfg: HttpConfig,
    intake: Intake,
    auth: Option<net::BearerAuth>,
}

/// Binds and serves until `cancel`.
pub(super) async fn start(
    cfg: &HttpConfig,
    intake: Intake,
    cancel: CancellationToken,
) -> Result<JoinHandle<()>, StartError> {
    let auth = net::bearer_auth(cfg.auth.as_ref(), "otlp http")?;
    let tls = net::TlsAcceptor::optional(cfg.tls.as_ref(), &[b"h2", b"http/1.1"], "otlp http")?;
    let listener = net::bind(&cfg.endpoint).await?;
    tracing::info!(endpoint = %cfg.endpoint, auth = auth.is_some(), tls = tls.is_some(), "OTLP/HTTP receiver listening");
    let state = Arc::new(State {
        cfg: cfg.clone(),
        intake,
        auth,
    });
    Ok(net::serve_http(
        listener,
        tls,
        move |req| {
            let state = state.clone();
            async move { handle(&state, req).await }
        },
        cancel,
        Duration::from_secs(10),
    ))
}

fn status_body(enc: Option<Encoding>, status: StatusCode, message: &str) -> Response<Body> {
    // gRPC code matching the HTTP status, as OTLP/HTTP error bodies carry a google.rpc.Status.
    let code = match status {
        StatusCode::BAD_REQUEST => 3,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => 14,
        StatusCode::PAYLOAD_TOO_LARGE => 8,
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => 12,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => 3,
        _ => 13,
    };
    let (ctype, body) = match enc {
        Some(Encoding::Proto) => (
            Encoding::Proto.content_type(),
            RpcStatus {
                code,
                message: message.to_string(),
                details: vec![],
            }
            .encode_to_vec(),
        ),
        Some(Encoding::Json) => (
            Encoding::Json.content_type(),
            serde_json::to_vec(&serde_json::json!({"code": code, "message": message}))
                .unwrap_or_default(),
        ),
        None => (
            "text/plain; charset=utf-8",
            format!("{message}\n").into_bytes(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    if let Some(auth) = &state.auth {
        if !auth.check(
            req.headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        ) {
            state.intake.unauthenticated();
            return net::unauthorized();
        }
    }
    let path = req.uri().path();
    let signal = if path == state.cfg.traces_url_path {
        Signal::Traces
    } else if path == state.cfg.metrics_url_path {
        Signal::Metrics
    } else if path == state.cfg.logs_url_path {
        Signal::Logs
    } else {
        return status_body(
            None,
            StatusCode::NOT_FOUND,
            &format!("no OTLP endpoint at `{path}`"),
        );
    };
    if req.method() != Method::POST {
        let mut r = status_body(
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("method {} not allowed; OTLP/HTTP uses POST", req.method()),
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return r;
    }
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let enc = match ctype.as_str() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Proto,
        "application/json" => Encoding::Json,
        other => {
            return status_body(
                None,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("unsupported Content-Type `{other}`; use application/x-protobuf or application/json"),
            )
        }
    };
    let Some(consumer) = state.intake.consumer(signal) else {
        return status_body(
            Some(enc),
            StatusCode::NOT_FOUND,
            &format!("this receiver feeds no {signal} pipeline"),
        );
    };
    let metadata = if state.cfg.include_metadata {
        super::intake::metadata_of(req.headers())
    } else {
        crate::signal::Metadata::default()
    };
    let body = match net::read_body(req, state.cfg.max_request_body_size).await {
        Ok(b) => b,
        Err(e) => return status_body(Some(enc), e.status(), &e.to_string()),
    };
    let bytes_first = (enc == Encoding::Proto)
        .then(|| super::intake::bytes_first(consumer, signal, &body))
        .flatten();
    let delivered = match bytes_first {
        Some(data) => state.intake.deliver_encoded(consumer, data, metadata).await,
        None => {
            let data = match decode(signal, enc, &body) {
                Ok(d) => d,
                Err(message) => return status_body(Some(enc), StatusCode::BAD_REQUEST, &message),
            };
            let proto = (enc == Encoding::Proto).then_some(body);
            state.intake.deliver(consumer, data, proto, metadata).await
        }
    };
    match delivered {
        Ok(()) => {
            let body = match enc {
                Encoding::Proto => Bytes::new(),
                Encoding::Json => Bytes::from_static(b"{}"),
            };
            let mut r = Response::new(Full::new(body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(enc.content_type()),
            );
            r
        }
        Err(Rejection::Unavailable {
            reason,
            retry_after,
        }) => {
            let mut r = status_body(Some(enc), StatusCode::SERVICE_UNAVAILABLE, &reason);
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
            r
        }
        Err(Rejection::Failed(reason)) => {
            status_body(Some(enc), StatusCode::INTERNAL_SERVER_ERROR, &reason)
        }
    }
}

fn decode(signal: Signal, enc: Encoding, body: &[u8]) -> Result<Telemetry, String> {
    match enc {
        Encoding::Json => {
            crate::convert::otlp_json::decode(signal, body).map_err(|e| e.to_string())
        }
        Encoding::Proto => crate::convert::otlp_proto::decode_request(signal, body)
            .map_err(|e| format!("invalid OTLP protobuf: {e}")),
    }
}
