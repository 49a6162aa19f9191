//! Binding listeners and accepting connections.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

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
    bind_with(endpoint, |a| async move { TcpListener::bind(a).await }).await
}

/// Binds a TCP listener now, from synchronous code inside the runtime (a
/// component's `build`): resolves `host:port`, IPv4 first.
pub fn bind_now(endpoint: &str) -> Result<TcpListener, NetError> {
    use std::net::ToSocketAddrs;
    let fail = |source: io::Error| NetError::Bind {
        endpoint: endpoint.to_string(),
        source,
    };
    let mut addrs: Vec<SocketAddr> = endpoint.to_socket_addrs().map_err(fail)?.collect();
    addrs.sort_by_key(|a| !a.is_ipv4());
    let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address resolved");
    for addr in addrs {
        let bound = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(TcpListener::from_std);
        match bound {
            Ok(l) => return Ok(l),
            Err(e) => last = e,
        }
    }
    Err(fail(last))
}

/// Resolves `host:port` and binds a UDP socket on the first address that works.
pub async fn bind_udp(endpoint: &str) -> Result<tokio::net::UdpSocket, NetError> {
    bind_with(
        endpoint,
        |a| async move { tokio::net::UdpSocket::bind(a).await },
    )
    .await
}

async fn bind_with<T, F, Fut>(endpoint: &str, bind: F) -> Result<T, NetError>
where
    F: Fn(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = io::Result<T>>,
{
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
        match bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = e,
        }
    }
    Err(fail(last))
}

/// The next connection, with TCP_NODELAY set; accept errors (e.g. out of
/// file descriptors) are logged and retried after a pause.
pub(crate) async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
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
