//! DICOM over TLS (PS3.15 B.1): the rustls server configuration built from PEM.

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

use super::config::TlsConfig;
use super::error::ScpError;

/// Builds the TLS acceptor: the server certificate and key, and, when a client CA is given,
/// mandatory client certificates signed by it.
pub(crate) fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, ScpError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&config.cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| ScpError::Tls(format!("cannot read the server certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ScpError::Tls(
            "the server certificate PEM holds no CERTIFICATE block".to_string(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&config.key_pem).map_err(|e| {
        ScpError::Tls(format!(
            "cannot read the server private key PEM (PKCS#8, PKCS#1 or SEC1 expected): {e}"
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ScpError::Tls(format!("TLS protocol versions: {e}")))?;
    let builder = match &config.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca_pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca_pem) {
                let cert =
                    cert.map_err(|e| ScpError::Tls(format!("cannot read the client CA PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| ScpError::Tls(format!("unusable client CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ScpError::Tls(format!("client certificate verifier: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server = builder.with_single_cert(certs, key).map_err(|e| {
        ScpError::Tls(format!(
            "the certificate and key do not form a usable pair: {e}"
        ))
    })?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}
