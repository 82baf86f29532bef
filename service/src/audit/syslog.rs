//! Audit events to the hospital's audit repository: RFC 5424 syslog messages over TCP, framed
//! by octet counting (RFC 6587 §3.4.1), optionally inside TLS (RFC 5425) verified against a CA
//! file. One task writes; it reconnects with back-off when the connection fails, retrying the
//! message it was sending, while later events wait in its bounded queue.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use super::AuditError;
use super::event::{AuditEvent, Outcome};

/// Facility 10, security/authorization messages (RFC 5424 §6.2.1).
const FACILITY_AUTHPRIV: u8 = 10;
/// Severity of a successful action: notice.
const SEVERITY_NOTICE: u8 = 5;
/// Severity of a refused or failed action: warning.
const SEVERITY_WARNING: u8 = 4;
/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Wait for a TCP connection and TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where syslog messages go.
#[derive(Clone)]
pub struct SyslogTarget {
    /// `host:port` of the receiver.
    pub addr: String,
    /// TLS: the connector and the name the receiver's certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for SyslogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogTarget")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl SyslogTarget {
    /// Plain TCP to `addr` (`host:port`), or TLS verified against the CA certificates in
    /// `tls_ca` (PEM) when given; the certificate must name `addr`'s host.
    pub fn new(addr: &str, tls_ca: Option<&Path>) -> Result<Self, AuditError> {
        let host = host_of(addr).ok_or_else(|| {
            AuditError::Config(format!(
                "audit.syslog_addr {addr:?} is not HOST:PORT, e.g. audit.example:6514"
            ))
        })?;
        let tls = match tls_ca {
            None => None,
            Some(ca) => {
                let unreadable = |e: &dyn std::fmt::Display| {
                    AuditError::Config(format!(
                        "audit.syslog_tls_ca {}: {e}; give a PEM file of CA certificates",
                        ca.display()
                    ))
                };
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca).map_err(|e| unreadable(&e))? {
                    roots
                        .add(cert.map_err(|e| unreadable(&e))?)
                        .map_err(|e| unreadable(&e))?;
                }
                if roots.is_empty() {
                    return Err(unreadable(&"no certificate in it"));
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| AuditError::Config(format!("TLS for the audit syslog: {e}")))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                let name = ServerName::try_from(host.to_string()).map_err(|e| {
                    AuditError::Config(format!("audit.syslog_addr host {host:?}: {e}"))
                })?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
        };
        Ok(Self {
            addr: addr.to_string(),
            tls,
        })
    }

    /// Whether messages go inside TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    async fn connect(&self) -> std::io::Result<Box<dyn AsyncWrite + Unpin + Send>> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some((connector, name)) => {
                let tls =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                        .await
                        .map_err(|_| {
                            std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "TLS handshake timed out",
                            )
                        })??;
                Ok(Box::new(tls))
            }
        }
    }
}

/// The host of `host:port` (brackets of an IPv6 literal removed), or None.
fn host_of(addr: &str) -> Option<&str> {
    let (host, port) = addr.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

/// The RFC 5424 message of `event`, whose JSON is `json`: PRI (authpriv, notice or warning),
/// version 1, the event's time, `hostname`, app `diptych`, `pid`, the event type as MSGID, no
/// structured data, and the JSON as a UTF-8 message (with its BOM).
pub fn message(event: &AuditEvent, json: &str, hostname: &str, pid: u32) -> String {
    let severity = match event.outcome {
        Outcome::Success => SEVERITY_NOTICE,
        Outcome::Failure => SEVERITY_WARNING,
    };
    let pri = FACILITY_AUTHPRIV * 8 + severity;
    format!(
        "<{pri}>1 {} {} diptych {pid} {} - \u{feff}{json}",
        event.time,
        header_field(hostname, 255),
        event.kind()
    )
}

/// A header field as RFC 5424 allows it: printable ASCII without spaces, at most `max`
/// characters, `-` when empty.
fn header_field(text: &str, max: usize) -> String {
    let field: String = text
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if field.is_empty() {
        "-".to_string()
    } else {
        field
    }
}

/// `message` framed by octet counting: its length in bytes, a space, the message.
pub fn frame(message: &str) -> Vec<u8> {
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(message.as_bytes());
    out
}

/// This machine's name for the HOSTNAME field.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "-".to_string())
}

/// Sends every message from `messages` to `target` until the channel closes, reconnecting
/// (1 s, doubling up to 30 s) whenever connecting or writing fails.
pub async fn run(target: SyslogTarget, mut messages: mpsc::Receiver<String>) {
    let mut connection: Option<Box<dyn AsyncWrite + Unpin + Send>> = None;
    let mut backoff = Duration::from_secs(1);
    while let Some(message) = messages.recv().await {
        let bytes = frame(&message);
        loop {
            if connection.is_none() {
                match target.connect().await {
                    Ok(c) => {
                        tracing::info!(addr = %target.addr, tls = target.is_tls(), "audit syslog connected");
                        connection = Some(c);
                        backoff = Duration::from_secs(1);
                    }
                    Err(error) => {
                        tracing::error!(
                            addr = %target.addr,
                            %error,
                            retry_s = backoff.as_secs(),
                            "cannot reach the audit syslog receiver; audit events wait in its queue"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            let stream = connection.as_mut().expect("connected above");
            let sent = async {
                stream.write_all(&bytes).await?;
                stream.flush().await
            };
            match sent.await {
                Ok(()) => break,
                Err(error) => {
                    tracing::error!(addr = %target.addr, %error, "the audit syslog connection failed; reconnecting");
                    connection = None;
                }
            }
        }
    }
    if let Some(mut stream) = connection {
        let _ = stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::super::event::{What, Who};
    use super::*;

    #[test]
    fn messages_are_rfc5424_and_frames_count_octets() {
        let mut event = AuditEvent::now(
            Outcome::Failure,
            Who::default(),
            None,
            What::AuthRefused {
                method: "/diptych.v1.SearchService/Search".to_string(),
                code: "UNAUTHENTICATED".to_string(),
            },
        );
        event.time = "2025-01-31T12:00:00.000Z".to_string();
        let text = message(&event, "{\"é\":1}", "host name", 42);
        assert_eq!(
            text,
            "<84>1 2025-01-31T12:00:00.000Z hostname diptych 42 auth_refused - \u{feff}{\"é\":1}"
        );
        let framed = frame(&text);
        let (len, rest) = std::str::from_utf8(&framed)
            .unwrap()
            .split_once(' ')
            .unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), rest.len());
        assert_eq!(rest.len(), text.len(), "bytes, not characters");
    }

    #[test]
    fn addresses_are_host_and_port() {
        assert_eq!(host_of("audit.example:6514"), Some("audit.example"));
        assert_eq!(host_of("[::1]:514"), Some("::1"));
        assert_eq!(host_of("audit.example"), None);
        assert_eq!(host_of(":514"), None);
        assert!(SyslogTarget::new("nohost", None).is_err());
    }
}
