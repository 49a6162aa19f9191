//! Networking shared by components: binding listeners, a small HTTP server
//! with graceful shutdown and TCP_NODELAY, bounded decompression, and TLS
//! client connectors.

use std::convert::Infallible;
use std::future::Future;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::types::{TlsClientConfig, TlsServerConfig};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The endpoint could not be resolved or bound.
    #[error("cannot listen on `{endpoint}`: {source}")]
    Bind {
        /// The configured endpoint.
        endpoint: String,
        /// Why.
        source: io::Error,
    },
    /// A TLS file could not be used.
    #[error("TLS: {0}")]
    Tls(String),
}

impl From<NetError> for crate::consumer::StartError {
    fn from(e: NetError) -> Self {
        match e {
            NetError::Bind { endpoint, source } => crate::consumer::StartError::Listen {
                address: endpoint,
                source,
            },
            NetError::Tls(m) => crate::consumer::StartError::Tls(m),
        }
    }
}

/// Resolves `host:port` and binds a TCP listener on the first address that works.
pub async fn bind(endpoint: &str) -> Result<TcpListener, NetError> {
    let fail = |source: io::Error| NetError::Bind {
        endpoint: endpoint.to_string(),
        source,
    };
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host(endpoint)
        .await
        .map_err(fail)?
        .collect();
    // Prefer IPv4 for `localhost`, as most senders resolve it that way.
    addrs.sort_by_key(|a| !a.is_ipv4());
    let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address resolved");
    for addr in addrs {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = e,
        }
    }
    Err(fail(last))
}

/// A response body.
pub type Body = Full<Bytes>;

/// The next connection, with TCP_NODELAY set; accept errors (e.g. out of
/// file descriptors) are logged and retried after a pause.
async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

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

/// Why a compressed body was not accepted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecompressError {
    /// The encoding is not one we read.
    #[error("unsupported Content-Encoding `{0}`; use gzip, zstd or none")]
    Unsupported(String),
    /// The body is not valid for its encoding.
    #[error("cannot decompress {encoding} body: {message}")]
    Corrupt {
        /// The encoding.
        encoding: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// The decompressed body would exceed the limit.
    #[error("decompressed body exceeds the limit of {0} bytes")]
    TooLarge(usize),
}

/// Decompresses `body` per `Content-Encoding`, refusing to inflate past `limit` bytes.
pub fn decompress(
    encoding: Option<&str>,
    body: Bytes,
    limit: usize,
) -> Result<Bytes, DecompressError> {
    let enc = encoding
        .map(|e| e.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match enc.as_str() {
        "" | "identity" | "none" => Ok(body),
        "gzip" | "x-gzip" => {
            read_bounded(flate2::read::MultiGzDecoder::new(&body[..]), "gzip", limit)
        }
        "zstd" => {
            let dec = zstd::stream::read::Decoder::new(&body[..]).map_err(|e| {
                DecompressError::Corrupt {
                    encoding: "zstd",
                    message: e.to_string(),
                }
            })?;
            read_bounded(dec, "zstd", limit)
        }
        other => Err(DecompressError::Unsupported(other.to_string())),
    }
}

fn read_bounded(
    r: impl Read,
    encoding: &'static str,
    limit: usize,
) -> Result<Bytes, DecompressError> {
    let mut out = Vec::new();
    let mut taken = r.take(limit as u64 + 1);
    taken
        .read_to_end(&mut out)
        .map_err(|e| DecompressError::Corrupt {
            encoding,
            message: e.to_string(),
        })?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge(limit));
    }
    Ok(Bytes::from(out))
}

/// gzip-compresses `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// zstd-compresses `data`.
pub fn zstd_compress(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, 1).unwrap_or_default()
}

/// An HTTP(S) connector with TCP_NODELAY for hyper and tonic clients.
pub type HttpsConnector =
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// Builds a connector that speaks plain HTTP for `http://` and TLS for `https://` URIs.
pub fn https_connector(
    tls: &TlsClientConfig,
    http2_only: bool,
) -> Result<HttpsConnector, NetError> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let config = rustls_client_config(tls)?;
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    let builder = match &tls.server_name_override {
        Some(name) => {
            let server_name = rustls_pki_types::ServerName::try_from(name.clone())
                .map_err(|e| NetError::Tls(format!("server_name_override `{name}`: {e}")))?;
            builder
                .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(server_name))
        }
        None => builder,
    };
    Ok(if http2_only {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().enable_http2().wrap_connector(http)
    })
}

fn rustls_client_config(tls: &TlsClientConfig) -> Result<rustls::ClientConfig, NetError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| NetError::Tls(e.to_string()))?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &tls.ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| NetError::Tls(format!("ca_file `{path}`: {e}")))?;
                for c in certs {
                    let c = c.map_err(|e| NetError::Tls(format!("ca_file `{path}`: {e}")))?;
                    roots
                        .add(c)
                        .map_err(|e| NetError::Tls(format!("ca_file `{path}`: {e}")))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots)
    };
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain: Result<Vec<_>, _> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| NetError::Tls(format!("cert_file `{cert}`: {e}")))?
                .collect();
            let chain = chain.map_err(|e| NetError::Tls(format!("cert_file `{cert}`: {e}")))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| NetError::Tls(format!("key_file `{key}`: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| NetError::Tls(e.to_string()))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(NetError::Tls(
            "cert_file and key_file must be given together".into(),
        )),
    }
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Normalises an exporter endpoint to a URI with a scheme: `host:port` becomes
/// `https://host:port`, or `http://host:port` when `insecure` is set.
pub fn endpoint_uri(endpoint: &str, insecure: bool) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.trim_end_matches('/').to_string()
    } else if insecure {
        format!("http://{}", endpoint.trim_end_matches('/'))
    } else {
        format!("https://{}", endpoint.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_bomb_is_refused_not_inflated() {
        let zeros = vec![0u8; 50 * 1024 * 1024];
        let bomb = gzip(&zeros);
        assert!(bomb.len() < 1024 * 1024);
        let err = decompress(Some("gzip"), Bytes::from(bomb), 1024 * 1024).unwrap_err();
        assert_eq!(err, DecompressError::TooLarge(1024 * 1024));
    }

    #[test]
    fn round_trips_and_rejects_garbage() {
        let data = b"hello hello hello".to_vec();
        assert_eq!(
            decompress(Some("gzip"), Bytes::from(gzip(&data)), 100).unwrap(),
            &data[..]
        );
        assert_eq!(
            decompress(Some("zstd"), Bytes::from(zstd_compress(&data)), 100).unwrap(),
            &data[..]
        );
        assert!(matches!(
            decompress(Some("gzip"), Bytes::from_static(b"not gzip"), 100),
            Err(DecompressError::Corrupt { .. })
        ));
        assert!(matches!(
            decompress(Some("br"), Bytes::from_static(b"x"), 100),
            Err(DecompressError::Unsupported(_))
        ));
    }

    #[test]
    fn endpoints_get_schemes() {
        assert_eq!(
            endpoint_uri("collector:4317", true),
            "http://collector:4317"
        );
        assert_eq!(
            endpoint_uri("collector:4317", false),
            "https://collector:4317"
        );
        assert_eq!(endpoint_uri("http://x:1/", false), "http://x:1");
    }
}

/// Checks `Authorization: Bearer <token>` headers against one token, in time
/// that does not depend on where a wrong token differs.
#[derive(Clone)]
pub struct BearerAuth {
    expected: std::sync::Arc<[u8]>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerAuth(<redacted>)")
    }
}

impl BearerAuth {
    /// Accepts `token`.
    pub fn new(token: &crate::config::types::Secret) -> BearerAuth {
        BearerAuth {
            expected: token.0.as_bytes().into(),
        }
    }

    /// True when `header` (the `Authorization` value) carries the token.
    pub fn check(&self, header: Option<&[u8]>) -> bool {
        let Some(h) = header else { return false };
        let Some(given) = h
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case(b"bearer "))
            .map(|_| &h[7..])
        else {
            return false;
        };
        let given = given.trim_ascii();
        let mut diff = (given.len() ^ self.expected.len()) as u8;
        for (i, b) in self.expected.iter().enumerate() {
            diff |= b ^ given.get(i).copied().unwrap_or(0);
        }
        diff == 0 && given.len() == self.expected.len()
    }
}

/// The checker for a receiver's `auth:` section, if it has one (the token
/// file is read here, at start).
pub fn bearer_auth(
    cfg: Option<&crate::config::types::AuthConfig>,
    component: &str,
) -> Result<Option<BearerAuth>, crate::consumer::StartError> {
    match cfg {
        None => Ok(None),
        Some(a) => a
            .token()
            .map(|t| Some(BearerAuth::new(&t)))
            .map_err(|e| crate::consumer::StartError::component(component, e)),
    }
}

/// 401 with `WWW-Authenticate: Bearer`, for HTTP receivers.
pub fn unauthorized() -> http::Response<Body> {
    let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
        b"missing or wrong bearer token\n",
    )));
    *r.status_mut() = http::StatusCode::UNAUTHORIZED;
    r.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod bearer_tests {
    use super::*;
    use crate::config::types::Secret;

    #[test]
    fn bearer_tokens() {
        let a = BearerAuth::new(&Secret("s3cret-token".into()));
        assert!(a.check(Some(b"Bearer s3cret-token")));
        assert!(a.check(Some(b"bearer s3cret-token")));
        assert!(!a.check(Some(b"Bearer s3cret-toke")));
        assert!(!a.check(Some(b"Bearer s3cret-token2")));
        assert!(!a.check(Some(b"Basic s3cret-token")));
        assert!(!a.check(Some(b"s3cret-token")));
        assert!(!a.check(Some(b"Bearer ")));
        assert!(!a.check(None));
        assert_eq!(format!("{a:?}"), "BearerAuth(<redacted>)");
    }
}
