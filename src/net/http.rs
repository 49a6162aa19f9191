//! A small HTTP server (HTTP/1.1 and h2c, or HTTPS) with graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::listen::accept;
use super::tls::TlsAcceptor;

/// A response body.
pub type Body = Full<Bytes>;

/// Serves HTTP/1.1 and h2c on `listener` (or HTTPS with `tls`) with
/// `handler` until `cancel` fires, then lets open requests finish (at most
/// `grace`). Responses may stream (any body), and connections may be
/// upgraded (WebSocket) with `hyper::upgrade::on`.
pub fn serve_http<H, F, B>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: H,
    cancel: CancellationToken,
    grace: Duration,
) -> JoinHandle<()>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        loop {
            tokio::select! {
                (stream, peer) = accept(&listener) => {
                    let h = handler.clone();
                    let svc = hyper::service::service_fn(move |req| {
                        let fut = h(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let watcher = graceful.watcher();
                    match &tls {
                        None => {
                            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
                            tokio::spawn(async move {
                                let _ = watcher.watch(conn).await;
                            });
                        }
                        Some(tls) => {
                            let (tls, builder) = (tls.clone(), builder.clone());
                            tokio::spawn(async move {
                                let Some(stream) = tls.handshake(stream, peer).await else {
                                    return;
                                };
                                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
                                let _ = watcher.watch(conn).await;
                            });
                        }
                    }
                }
                _ = cancel.cancelled() => break,
            }
        }
        drop(listener);
        let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
    })
}

/// `%XX` escapes decoded (malformed ones kept as they are; invalid UTF-8
/// replaced): query strings, `OTEL_RESOURCE_ATTRIBUTES` values.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
