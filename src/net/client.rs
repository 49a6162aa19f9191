//! TLS and plain HTTP connectors for clients (exporters), and endpoint URIs.

use std::sync::Arc;
use std::time::Duration;

use super::listen::NetError;
use crate::settings::types::TlsClientConfig;

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
