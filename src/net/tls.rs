//! TLS for receivers: the rustls acceptor, its handshake timeout and
//! failure counter, and the connection type tonic's server takes.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::listen::{accept, NetError};
use crate::settings::types::TlsServerConfig;

/// A receiver's TLS side: the rustls acceptor built from its `tls` settings,
/// with a handshake timeout and a failure counter.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
    failures: metrics::Counter,
    component: String,
}

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl TlsAcceptor {
    /// Loads the certificate, key and (optional) client CA of `cfg`;
    /// `alpn` lists the protocols offered (`h2`, `http/1.1`).
    pub fn new(
        cfg: &TlsServerConfig,
        alpn: &[&[u8]],
        component: &str,
    ) -> Result<TlsAcceptor, NetError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if cfg.min_version == "1.3" {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| NetError::Tls(e.to_string()))?;
        let builder = match &cfg.client_ca_file {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| NetError::Tls(format!("client_ca_file `{path}`: {e}")))?;
                for c in certs {
                    let c =
                        c.map_err(|e| NetError::Tls(format!("client_ca_file `{path}`: {e}")))?;
                    roots
                        .add(c)
                        .map_err(|e| NetError::Tls(format!("client_ca_file `{path}`: {e}")))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| NetError::Tls(format!("client_ca_file `{path}`: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let cert = &cfg.cert_file;
        let chain: Result<Vec<_>, _> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| NetError::Tls(format!("cert_file `{cert}`: {e}")))?
            .collect();
        let chain = chain.map_err(|e| NetError::Tls(format!("cert_file `{cert}`: {e}")))?;
        if chain.is_empty() {
            return Err(NetError::Tls(format!(
                "cert_file `{cert}` holds no certificate"
            )));
        }
        let key = &cfg.key_file;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| NetError::Tls(format!("key_file `{key}`: {e}")))?;
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| NetError::Tls(format!("cert_file and key_file: {e}")))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsAcceptor {
            inner: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            failures: metrics::counter!(
                "spanwire_receiver_tls_handshake_failures_total",
                "receiver" => component.to_string()
            ),
            component: component.to_string(),
        })
    }

    /// The acceptor for a receiver's optional `tls` settings.
    pub fn optional(
        cfg: Option<&TlsServerConfig>,
        alpn: &[&[u8]],
        component: &str,
    ) -> Result<Option<TlsAcceptor>, NetError> {
        cfg.map(|t| TlsAcceptor::new(t, alpn, component))
            .transpose()
    }

    /// Completes the handshake; `None` (logged and counted) if it fails or times out.
    pub async fn handshake(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
    ) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.inner.accept(stream)).await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                self.failures.increment(1);
                tracing::warn!(receiver = %self.component, %peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                self.failures.increment(1);
                tracing::warn!(receiver = %self.component, %peer, "TLS handshake timed out");
                None
            }
        }
    }

    /// Accepts on `listener` until `cancel`, handshaking concurrently, and
    /// yields the established connections (for tonic's `serve_with_incoming`).
    pub fn incoming(
        self,
        listener: TcpListener,
        cancel: CancellationToken,
    ) -> impl futures_util::Stream<Item = Result<TlsConn, io::Error>> + Send + 'static {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<TlsConn>(64);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    (stream, peer) = accept(&listener) => {
                        let (tls, tx) = (self.clone(), tx.clone());
                        tokio::spawn(async move {
                            if let Some(s) = tls.handshake(stream, peer).await {
                                let _ = tx.send(TlsConn(s)).await;
                            }
                        });
                    }
                    _ = cancel.cancelled() => break,
                }
            }
        });
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|c| c.map(Ok)))
    }
}

/// An accepted TLS connection, as tonic's server takes it.
pub struct TlsConn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = Option<SocketAddr>;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.peer_addr().ok()
    }
}

impl tokio::io::AsyncRead for TlsConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
