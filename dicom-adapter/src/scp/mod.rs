//! The DICOM listener (SCP): C-ECHO and C-STORE over TCP and, when configured, TLS on a second
//! port (both, or TLS only), one tokio task per association, each received instance checked and
//! handed to a [`StoreSink`]. The two ports share one association bound, one memory budget, one
//! allow-list and one sink.
//!
//! | module | what it is for |
//! |---|---|
//! | [`config`] | [`ScpConfig`]: address, AE title, bounds, timeouts, allow-list, TLS |
//! | `allow_list` | [`AllowList`]: the calling AE titles allowed, changeable while the listener runs |
//! | [`sink`] | [`StoreSink`], [`ReceivedInstance`], [`StoreOutcome`], [`AssociationReport`]: the interface to the service |
//! | `negotiation` | which callers, SOP classes and transfer syntaxes are accepted, and the preference among syntaxes |
//! | `wire` | PDUs read with their length checked before buffering, and written with timeouts |
//! | `association` | one association: reassembly of fragmented messages, C-ECHO, C-STORE |
//! | `store` | a C-STORE's data set checked (parse, UIDs, lengths) and wrapped as Part-10 |
//! | `dimse` | command sets read and written |
//! | `budget` | the bound on data-set bytes buffered across associations |
//! | `tls` | the rustls server configuration |
//! | [`stats`] | [`ScpStats`]: associations open, accepted, rejected; responses sent by status |
//!
//! Built on dicom-ul 0.10's PDU codec and types; the association state machine is diptych's,
//! because dicom-ul's acceptor follows the peer's transfer syntax order, rejects only
//! permanently and does not see the peer's address.
//!
//! ```no_run
//! use std::sync::Arc;
//! use diptych_dicom_adapter::scp::{self, ReceivedInstance, ScpConfig, StoreOutcome, StoreSink};
//!
//! struct Discard;
//! impl StoreSink for Discard {
//!     fn store(&self, _: ReceivedInstance)
//!         -> std::pin::Pin<Box<dyn std::future::Future<Output = StoreOutcome> + Send + '_>> {
//!         Box::pin(async { StoreOutcome::Stored })
//!     }
//! }
//!
//! # async fn run() -> Result<(), scp::ScpError> {
//! let scp = scp::bind(ScpConfig::default()).await?;
//! println!("listening on {}", scp.local_addr());
//! scp.serve(Arc::new(Discard), async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

mod allow_list;
mod association;
mod budget;
pub mod config;
pub(crate) mod dimse;
mod error;
mod negotiation;
pub mod sink;
pub mod stats;
pub(crate) mod store;
mod tls;
mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

pub use allow_list::AllowList;
pub use config::{AllowedCaller, ScpConfig, TlsConfig};
pub use error::ScpError;
pub use negotiation::{decodable_transfer_syntaxes, is_storage_sop_class};
pub use sink::{
    AssociationEnd, AssociationReport, ReceivedInstance, RefusedConnection, StoreOutcome, StoreSink,
};
pub use stats::{DimseService, ResponseCount, ScpStats};
pub use store::{Refusal, check_part10};

use association::Shared;
use budget::Budget;
use negotiation::Policy;

/// Smallest maximum PDU length DICOM allows a node to announce.
const MIN_PDU_LENGTH: u32 = dicom_ul::pdu::MINIMUM_PDU_SIZE;

/// A bound DICOM listener (a plain port, a TLS port, or both), ready to [`serve`](Scp::serve).
pub struct Scp {
    plain: Option<Port>,
    tls: Option<Port>,
    config: ScpConfig,
    stats: Arc<ScpStats>,
}

/// One listening socket, and its TLS acceptor on the TLS port.
struct Port {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<TlsAcceptor>,
}

impl Port {
    async fn bind(addr: SocketAddr, tls: Option<TlsAcceptor>) -> Result<Port, ScpError> {
        let bind_error = |source| ScpError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(Port {
            listener,
            local_addr,
            tls,
        })
    }

    /// `plain` or `TLS`, for the log.
    fn kind(&self) -> &'static str {
        if self.tls.is_some() { "TLS" } else { "plain" }
    }
}

/// The next connection of `port`, or never when there is no such port.
async fn accept(port: Option<&Port>) -> (std::io::Result<(TcpStream, SocketAddr)>, &Port) {
    match port {
        Some(port) => (port.listener.accept().await, port),
        None => std::future::pending().await,
    }
}

/// Checks `config`, builds its TLS acceptor if any, and binds the listening sockets: the plain
/// port unless `plain` is false, the TLS port when `tls` is set.
pub async fn bind(config: ScpConfig) -> Result<Scp, ScpError> {
    if let Err(error) = crate::AeTitle::parse(&config.ae_title) {
        return Err(ScpError::Config(format!(
            "the listener's AE title {:?}: {error}",
            config.ae_title
        )));
    }
    if config.max_associations == 0 {
        return Err(ScpError::Config(
            "max_associations must be at least 1".to_string(),
        ));
    }
    if config.max_pdu_length < MIN_PDU_LENGTH {
        return Err(ScpError::Config(format!(
            "max_pdu_length {} is below the DICOM minimum of {MIN_PDU_LENGTH}",
            config.max_pdu_length
        )));
    }
    if !config.plain && config.tls.is_none() {
        return Err(ScpError::Config(
            "the plain listener is off and TLS is not configured, so nothing would listen; give TLS certificates or turn the plain listener on".to_string(),
        ));
    }
    let acceptor = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let plain = match config.plain {
        true => Some(Port::bind(config.addr, None).await?),
        false => None,
    };
    let tls = match acceptor {
        Some(acceptor) => Some(Port::bind(config.tls_addr, Some(acceptor)).await?),
        None => None,
    };
    Ok(Scp {
        plain,
        tls,
        config,
        stats: Arc::default(),
    })
}

impl Scp {
    /// The address of the plain port, else of the TLS port (the chosen port when the
    /// configuration said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.plain
            .as_ref()
            .or(self.tls.as_ref())
            .map(|port| port.local_addr)
            .expect("bind refuses a listener without a port")
    }

    /// The address of the plain port, if it listens.
    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.plain.as_ref().map(|port| port.local_addr)
    }

    /// The address of the TLS port, if TLS is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|port| port.local_addr)
    }

    /// The listener's counters, updated while it serves.
    pub fn stats(&self) -> Arc<ScpStats> {
        Arc::clone(&self.stats)
    }

    /// Accepts associations until `shutdown` completes, each in its own task, handing every
    /// received instance to `sink`. On shutdown it stops accepting, aborts idle associations,
    /// lets messages under way be answered, and returns when every association has ended.
    pub async fn serve(
        self,
        sink: Arc<dyn StoreSink>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ScpError> {
        let Scp {
            plain,
            tls,
            config,
            stats,
        } = self;
        let shared = Arc::new(Shared {
            policy: Policy {
                ae_title: config.ae_title.trim().to_string(),
                allowed_callers: config.allowed_callers.clone(),
                max_pdu_length: config.max_pdu_length,
                transfer_syntaxes: decodable_transfer_syntaxes(),
            },
            read_timeout: config.read_timeout,
            idle_timeout: config.idle_timeout,
            limits: config.limits,
            max_data_set_bytes: config.max_data_set_bytes,
            budget: Budget::new(config.max_buffered_bytes),
            sink,
            stats,
        });
        // Associations served, and (as many again) connections being told "busy".
        let served = Arc::new(Semaphore::new(config.max_associations));
        let rejecting = Arc::new(Semaphore::new(config.max_associations));
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for port in plain.iter().chain(tls.iter()) {
            info!(
                listener = port.kind(),
                addr = %port.local_addr,
                ae_title = %shared.policy.ae_title,
                "DICOM {} listener started",
                port.kind()
            );
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                (accepted, port) = accept(plain.as_ref()) => {
                    spawn(accepted, port, &served, &rejecting, &shared, &stopped, &mut tasks).await;
                }
                (accepted, port) = accept(tls.as_ref()) => {
                    spawn(accepted, port, &served, &rejecting, &shared, &stopped, &mut tasks).await;
                }
            }
        }
        for port in plain.iter().chain(tls.iter()) {
            info!(listener = port.kind(), addr = %port.local_addr, "DICOM {} listener stopping", port.kind());
        }
        drop((plain, tls));
        let _ = stop.send(true);
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// Starts the task of one accepted connection on `port`, under the shared association bound.
async fn spawn(
    accepted: std::io::Result<(TcpStream, SocketAddr)>,
    port: &Port,
    served: &Arc<Semaphore>,
    rejecting: &Arc<Semaphore>,
    shared: &Arc<Shared>,
    stopped: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) {
    let (tcp, peer) = match accepted {
        Ok(accepted) => accepted,
        Err(e) => {
            warn!(listener = port.kind(), error = %e, "cannot accept a connection");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            return;
        }
    };
    let (permit, busy) = match Arc::clone(served).try_acquire_owned() {
        Ok(permit) => (permit, false),
        Err(_) => match Arc::clone(rejecting).try_acquire_owned() {
            Ok(permit) => (permit, true),
            Err(_) => {
                warn!(%peer, listener = port.kind(), "too many connections; closing without an answer");
                return;
            }
        },
    };
    let _ = tcp.set_nodelay(true);
    let shared = Arc::clone(shared);
    let tls = port.tls.clone();
    let listener = port.local_addr;
    let stopped = stopped.clone();
    tasks.spawn(async move {
        connection(tcp, peer, listener, tls, shared, busy, stopped).await;
        drop(permit);
    });
}

/// One connection: the TLS handshake on the TLS port, then the association. A failed handshake
/// is counted and reported to the sink; it touches nothing but its own connection.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    listener: SocketAddr,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    busy: bool,
    stopped: watch::Receiver<bool>,
) {
    let Some(acceptor) = tls else {
        return association::run(tcp, peer, shared, busy, stopped).await;
    };
    let reason = match tokio::time::timeout(shared.read_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => return association::run(stream, peer, shared, busy, stopped).await,
        Ok(Err(e)) => format!("TLS handshake failed: {e}"),
        Err(_) => format!(
            "TLS handshake timed out after {} s",
            shared.read_timeout.as_secs()
        ),
    };
    warn!(%peer, %listener, %reason, "DICOM TLS connection refused");
    shared.stats.handshake_failed();
    shared.sink.connection_refused(RefusedConnection {
        peer,
        listener,
        reason,
    });
}
