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
/// `handler` until `cancel` fires, then lets open requests finish (at most `grace`).
pub fn serve_http<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: H,
    cancel: CancellationToken,
    grace: Duration,
) -> JoinHandle<()>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
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
                            let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
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
                                let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
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
