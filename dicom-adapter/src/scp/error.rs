//! Why the listener could not start.

use std::net::SocketAddr;

use thiserror::Error;

/// Everything that stops the listener from starting or serving.
#[derive(Debug, Error)]
pub enum ScpError {
    /// The listening socket could not be bound.
    #[error("cannot listen for DICOM on {addr}: {source}; choose a free port or another address")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The TLS certificates or key are unusable.
    #[error("DICOM TLS configuration: {0}")]
    Tls(String),
    /// A configuration value is out of range.
    #[error("DICOM listener configuration: {0}")]
    Config(String),
}
