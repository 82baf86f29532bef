//! How the listener is set up: address, AE title, bounds, timeouts, who may call, TLS.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::allow_list::AllowList;
use crate::limits::Limits;

/// The configuration of the DICOM listener.
#[derive(Debug, Clone)]
pub struct ScpConfig {
    /// Address of the plain (TCP) listener; port 0 picks a free port (see
    /// [`super::Scp::plain_addr`]).
    pub addr: SocketAddr,
    /// Whether the plain listener runs; false for a TLS-only node (then `tls` must be set).
    pub plain: bool,
    /// Address of the TLS listener, used when `tls` is set (the IANA `dicom-tls` port 2762 by
    /// default); port 0 picks a free port (see [`super::Scp::tls_addr`]).
    pub tls_addr: SocketAddr,
    /// This node's AE title; an association calling another title is rejected.
    pub ae_title: String,
    /// Associations served at once; one more gets a transient A-ASSOCIATE-RJ (local limit exceeded).
    pub max_associations: usize,
    /// Largest P-DATA PDU accepted (the "maximum length receivable" announced to peers); a PDU
    /// claiming more is refused with an A-ABORT before any of it is buffered.
    pub max_pdu_length: u32,
    /// Longest wait for the rest of a PDU, or for the next fragment of a message under way.
    pub read_timeout: Duration,
    /// Longest wait for a new message (or the association request) before the association is
    /// aborted.
    pub idle_timeout: Duration,
    /// Calling AE titles allowed to associate, each optionally tied to a host; empty allows any.
    /// A shared handle: a change made through a clone applies to the next association.
    pub allowed_callers: AllowList,
    /// DICOM over TLS: when set, a second listener on `tls_addr` where every connection must
    /// start with a TLS handshake. Both listeners share the association bound, the memory budget,
    /// the allow-list and the sink.
    pub tls: Option<TlsConfig>,
    /// Bounds applied when each received instance is parsed (pixels, inflated size).
    pub limits: Limits,
    /// Largest data set accepted in one C-STORE; a larger one is drained and answered 0xA700.
    pub max_data_set_bytes: u64,
    /// Bytes of data sets buffered across all associations at once; beyond it, the instance
    /// being received is drained and answered 0xA700.
    pub max_buffered_bytes: u64,
}

impl Default for ScpConfig {
    /// Port 11112 on all interfaces (TLS, when configured, on 2762), AE title `DIPTYCH`, 32
    /// associations, 64 KiB PDUs, 30 s read and 120 s idle timeouts, any caller, no TLS, default
    /// limits, 1 GiB per data set and 2 GiB buffered in all.
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 11112)),
            plain: true,
            tls_addr: SocketAddr::from(([0, 0, 0, 0], 2762)),
            ae_title: "DIPTYCH".to_string(),
            max_associations: 32,
            max_pdu_length: 64 * 1024,
            read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            allowed_callers: AllowList::default(),
            tls: None,
            limits: Limits::default(),
            max_data_set_bytes: 1 << 30,
            max_buffered_bytes: 2 << 30,
        }
    }
}

/// One entry of the calling-AE allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedCaller {
    /// The calling AE title, compared after trimming spaces (case-sensitive, as DICOM says).
    pub ae_title: String,
    /// When set, the association must also come from this address.
    pub host: Option<IpAddr>,
}

/// Certificates for DICOM over TLS, in PEM.
#[derive(Clone)]
pub struct TlsConfig {
    /// The server certificate chain, leaf first (PEM).
    pub cert_pem: Vec<u8>,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_pem: Vec<u8>,
    /// When set, peers must present a certificate signed by one of these CAs (mutual TLS).
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsConfig {
    /// Leaves the key out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_pem_bytes", &self.cert_pem.len())
            .field("client_ca", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}
