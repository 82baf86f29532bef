//! Security of the gRPC port, assembled once at start from `[grpc]` and `[auth]`: TLS (rustls,
//! optionally requiring client certificates) and the [`Policy`] the gate applies to every call.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::auth::{Callers, Notice, Policy, TokensError};
use crate::config::{AuthConfig, GrpcConfig};
use crate::logging::error_chain;

/// The longest a client may take for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the gRPC port's security cannot be set up.
#[derive(Debug, Error)]
pub enum SecurityError {
    /// A TLS file cannot be read.
    #[error("grpc.{key}: cannot read {path}: {source}")]
    Read {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS files do not make a usable server configuration.
    #[error(
        "grpc.tls_cert / tls_key / tls_client_ca: {0}; give PEM files: the certificate chain, its private key (PKCS#8, PKCS#1 or SEC1), the client CA certificates"
    )]
    Tls(String),
    /// The tokens file is unusable.
    #[error(transparent)]
    Tokens(#[from] TokensError),
}

/// What the gRPC server needs to serve securely.
#[derive(Debug, Clone)]
pub struct Security {
    /// TLS, when `grpc.tls_cert` is set.
    pub tls: Option<ServerTlsConfig>,
    /// Who may call what.
    pub policy: Arc<Policy>,
    /// Why this policy, for the start-up log.
    pub notice: Notice,
}

impl Security {
    /// Reads the TLS files and the tokens file (`env` resolves `token_env`) and decides the policy.
    pub fn from_config(
        grpc: &GrpcConfig,
        auth: &AuthConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Security, SecurityError> {
        let tls = server_tls(grpc)?;
        let callers = auth
            .tokens_file
            .as_deref()
            .map(|path| Callers::load(path, env))
            .transpose()?;
        let (policy, notice) = Policy::decide(
            callers,
            grpc.tls_client_ca.is_some(),
            grpc.addr,
            auth.allow_unauthenticated,
        );
        Ok(Security {
            tls,
            policy: Arc::new(policy),
            notice,
        })
    }

    /// Logs the policy: a warning when the port is open to the network or refuses every call.
    pub fn log(&self) {
        let tls = match &self.tls {
            None => "off",
            Some(_) => "on",
        };
        match &self.notice {
            Notice::Info(text) => tracing::info!(tls, "{text}"),
            Notice::Warn(text) => tracing::warn!(tls, "{text}"),
        }
    }
}

fn server_tls(grpc: &GrpcConfig) -> Result<Option<ServerTlsConfig>, SecurityError> {
    let (Some(cert), Some(key)) = (&grpc.tls_cert, &grpc.tls_key) else {
        return Ok(None);
    };
    let read = |key: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| SecurityError::Read {
            key,
            path: path.to_path_buf(),
            source,
        })
    };
    let cert = read("tls_cert", cert)?;
    let key = read("tls_key", key)?;
    if !contains(&cert, b"-----BEGIN CERTIFICATE-----") {
        return Err(SecurityError::Tls(
            "the certificate file holds no PEM CERTIFICATE block".to_string(),
        ));
    }
    let mut tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some(ca) = &grpc.tls_client_ca {
        let ca = read("tls_client_ca", ca)?;
        if !contains(&ca, b"-----BEGIN CERTIFICATE-----") {
            return Err(SecurityError::Tls(
                "the client CA file holds no PEM CERTIFICATE block".to_string(),
            ));
        }
        tls = tls.client_ca_root(Certificate::from_pem(ca));
    }
    // Build the rustls configuration now, so a bad key fails start-up before the model loads.
    tonic::transport::Server::builder()
        .tls_config(tls.clone())
        .map_err(|e| SecurityError::Tls(error_chain(&e)))?;
    Ok(Some(tls))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_tls_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("g.pem");
        let key = dir.path().join("g.key");
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        let grpc = GrpcConfig {
            tls_cert: Some(cert.clone()),
            tls_key: Some(key.clone()),
            ..GrpcConfig::default()
        };
        let err = Security::from_config(&grpc, &AuthConfig::default(), |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no PEM CERTIFICATE"), "{err}");
        let missing = GrpcConfig {
            tls_key: Some(dir.path().join("missing.key")),
            ..grpc
        };
        let err = Security::from_config(&missing, &AuthConfig::default(), |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("grpc.tls_key") && err.contains("missing.key"),
            "{err}"
        );
    }

    #[test]
    fn without_tokens_only_loopback_is_open() {
        let policy = |addr: &str, allow: bool| {
            let grpc = GrpcConfig {
                addr: addr.parse().unwrap(),
                ..GrpcConfig::default()
            };
            let auth = AuthConfig {
                allow_unauthenticated: allow,
                ..AuthConfig::default()
            };
            let security = Security::from_config(&grpc, &auth, |_| None).unwrap();
            (security.policy, security.notice)
        };
        let (open, notice) = policy("127.0.0.1:50051", false);
        assert!(matches!(*open, Policy::Open));
        assert!(matches!(notice, Notice::Info(_)));
        let (open, _) = policy("[::1]:50051", false);
        assert!(matches!(*open, Policy::Open));
        let (closed, notice) = policy("0.0.0.0:50051", false);
        assert!(matches!(*closed, Policy::Closed { .. }));
        assert!(matches!(notice, Notice::Warn(ref text) if text.contains("tokens_file")));
        let (opened, notice) = policy("0.0.0.0:50051", true);
        assert!(matches!(*opened, Policy::Open));
        assert!(matches!(notice, Notice::Warn(ref text) if text.contains("OFF")));
    }
}
