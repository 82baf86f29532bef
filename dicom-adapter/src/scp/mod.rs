//! The DICOM listener (SCP): C-ECHO and C-STORE over TCP or TLS, one tokio task per
//! association, each received instance checked and handed to a [`StoreSink`].
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
mod dimse;
mod error;
mod negotiation;
pub mod sink;
pub mod stats;
mod store;
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
pub use sink::{AssociationEnd, AssociationReport, ReceivedInstance, StoreOutcome, StoreSink};
pub use stats::{DimseService, ResponseCount, ScpStats};

use association::Shared;
use budget::Budget;
use negotiation::Policy;

/// Smallest maximum PDU length DICOM allows a node to announce.
const MIN_PDU_LENGTH: u32 = dicom_ul::pdu::MINIMUM_PDU_SIZE;

/// A bound DICOM listener, ready to [`serve`](Scp::serve).
pub struct Scp {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: ScpConfig,
    tls: Option<TlsAcceptor>,
    stats: Arc<ScpStats>,
}

/// Checks `config`, builds its TLS acceptor if any, and binds the listening socket.
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
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|source| ScpError::Bind {
            addr: config.addr,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ScpError::Bind {
        addr: config.addr,
        source,
    })?;
    Ok(Scp {
        listener,
        local_addr,
        config,
        tls,
        stats: Arc::default(),
    })
}

impl Scp {
    /// The address actually listened on (the chosen port when the configuration said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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
            listener,
            local_addr,
            config,
            tls,
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
        info!(
            addr = %local_addr,
            ae_title = %shared.policy.ae_title,
            tls = tls.is_some(),
            "DICOM listener started"
        );
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            warn!(error = %e, "cannot accept a connection");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let (permit, busy) = match Arc::clone(&served).try_acquire_owned() {
                        Ok(permit) => (permit, false),
                        Err(_) => match Arc::clone(&rejecting).try_acquire_owned() {
                            Ok(permit) => (permit, true),
                            Err(_) => {
                                warn!(%peer, "too many connections; closing without an answer");
                                continue;
                            }
                        },
                    };
                    let _ = tcp.set_nodelay(true);
                    let shared = Arc::clone(&shared);
                    let tls = tls.clone();
                    let stopped = stopped.clone();
                    tasks.spawn(async move {
                        connection(tcp, peer, tls, shared, busy, stopped).await;
                        drop(permit);
                    });
                }
            }
        }
        info!(addr = %local_addr, "DICOM listener stopping");
        drop(listener);
        let _ = stop.send(true);
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// One connection: the TLS handshake if configured, then the association.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    busy: bool,
    stopped: watch::Receiver<bool>,
) {
    match tls {
        None => association::run(tcp, peer, shared, busy, stopped).await,
        Some(acceptor) => {
            match tokio::time::timeout(shared.read_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => association::run(stream, peer, shared, busy, stopped).await,
                Ok(Err(e)) => warn!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => warn!(%peer, "TLS handshake timed out"),
            }
        }
    }
}
