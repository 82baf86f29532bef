//! One association, from A-ASSOCIATE-RQ to release or abort: negotiation, reassembly of
//! messages from P-DATA fragments, and the C-ECHO and C-STORE services.
//!
//! Messages are reassembled from any number of PDVs in any number of PDUs. A command set may
//! not exceed [`MAX_COMMAND_BYTES`]; a data set is bounded per instance and by the budget shared
//! by all associations: beyond either, the rest of it is drained unbuffered and answered 0xA700,
//! and the association goes on. Only protocol violations (fragments of another context in the
//! middle of a message, a data set before its command, an unreadable command) end it, with an
//! A-ABORT.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dicom_dictionary_std::uids;
use dicom_ul::Pdu;
use dicom_ul::pdu::{AbortRQServiceProviderReason, PDataValue, PDataValueType};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::budget::{Budget, Reserved};
use super::dimse::{Command, Response, command_field, status};
use super::negotiation::{Negotiated, Policy, Rejection};
use super::sink::{AssociationEnd, AssociationReport, StoreOutcome, StoreSink};
use super::stats::{DimseService, ScpStats};
use super::store::{self, Refusal, StoreRequest};
use super::wire::{Wire, WireError};
use crate::limits::Limits;

/// Largest command set accepted (real ones are a few hundred bytes).
pub(crate) const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// What every association of a listener shares.
pub(crate) struct Shared {
    /// Negotiation policy.
    pub policy: Policy,
    /// Wait for the rest of a PDU or message.
    pub read_timeout: Duration,
    /// Wait for a new message.
    pub idle_timeout: Duration,
    /// Parse limits.
    pub limits: Limits,
    /// Largest data set per C-STORE.
    pub max_data_set_bytes: u64,
    /// Buffered bytes across associations.
    pub budget: Arc<Budget>,
    /// Where instances go.
    pub sink: Arc<dyn StoreSink>,
    /// The listener's counters.
    pub stats: Arc<ScpStats>,
}

/// Serves one connection: negotiates, then answers messages until release, abort, timeout or
/// shutdown. `busy` rejects it transiently instead. The sink hears how it went when it ends.
pub(crate) async fn run<S>(
    stream: S,
    peer: SocketAddr,
    shared: Arc<Shared>,
    busy: bool,
    shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let started = Instant::now();
    let mut report = AssociationReport {
        peer,
        calling_ae: String::new(),
        called_ae: String::new(),
        instances_received: 0,
        statuses: BTreeMap::new(),
        duration: Duration::ZERO,
        end: AssociationEnd::Closed,
    };
    report.end = associate(stream, peer, &shared, busy, shutdown, &mut report).await;
    report.duration = started.elapsed();
    shared.sink.association_ended(report);
}

/// [`run`] up to the end of the association: fills `report`'s titles and counts, returns how
/// it ended.
async fn associate<S>(
    stream: S,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    busy: bool,
    mut shutdown: watch::Receiver<bool>,
    report: &mut AssociationReport,
) -> AssociationEnd
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut wire = Wire::new(stream, shared.policy.max_pdu_length, shared.read_timeout);
    let request = match wire.receive(shared.read_timeout).await {
        Ok(Pdu::AssociationRQ(request)) => request,
        Ok(other) => {
            warn!(%peer, pdu = %other.short_description(), "expected an A-ASSOCIATE-RQ; aborting");
            wire.abort(AbortRQServiceProviderReason::UnexpectedPdu)
                .await;
            return AssociationEnd::Aborted("expected an A-ASSOCIATE-RQ".to_string());
        }
        Err(e) => {
            warn!(%peer, error = %e, "no association request");
            if matches!(e, WireError::TooLarge { .. } | WireError::Malformed(_)) {
                wire.abort(AbortRQServiceProviderReason::InvalidPduParameter)
                    .await;
            }
            return AssociationEnd::Aborted(format!("no association request: {e}"));
        }
    };
    report.calling_ae = request.calling_ae_title.trim().to_string();
    report.called_ae = request.called_ae_title.trim().to_string();
    let negotiated = if busy {
        Err(Rejection::Busy)
    } else {
        shared.policy.negotiate(&request, peer.ip())
    };
    let negotiated = match negotiated {
        Ok((accept, negotiated)) => {
            if let Err(e) = wire.send(&Pdu::AssociationAC(accept)).await {
                warn!(%peer, error = %e, "cannot send A-ASSOCIATE-AC");
                return AssociationEnd::Aborted(format!("cannot send A-ASSOCIATE-AC: {e}"));
            }
            negotiated
        }
        Err(rejection) => {
            warn!(
                %peer,
                calling_ae = %request.calling_ae_title.trim(),
                called_ae = %request.called_ae_title.trim(),
                reason = %rejection,
                "association rejected"
            );
            shared.stats.rejected();
            let _ = wire.send(&Pdu::AssociationRJ(rejection.pdu())).await;
            wire.close().await;
            return AssociationEnd::Rejected(rejection.to_string());
        }
    };
    wire.peer_max_pdu = negotiated.peer_max_pdu;
    info!(
        %peer,
        calling_ae = %negotiated.calling_ae,
        contexts = negotiated.contexts.len(),
        "association accepted"
    );
    let _open = shared.stats.opened();
    let mut association = Association {
        wire,
        peer,
        negotiated,
        shared: Arc::clone(shared),
        message: None,
        instances: 0,
        statuses: BTreeMap::new(),
    };
    let end = association.serve(&mut shutdown).await;
    report.instances_received = association.instances;
    report.statuses = association.statuses;
    end
}

/// An established association.
struct Association<S> {
    wire: Wire<S>,
    peer: SocketAddr,
    negotiated: Negotiated,
    shared: Arc<Shared>,
    /// The message being reassembled.
    message: Option<Message>,
    /// C-STORE requests answered.
    instances: u32,
    /// Statuses sent for C-STORE requests, with their counts.
    statuses: BTreeMap<u16, u32>,
}

/// A message under reassembly.
struct Message {
    context_id: u8,
    command: Vec<u8>,
    /// Set once the last command fragment arrived.
    parsed: Option<Command>,
    /// The Part-10 file being built: prefix (preamble, meta group), then data set fragments.
    part10: Vec<u8>,
    /// Length of the prefix in `part10`.
    prefix: usize,
    /// Memory reserved for `part10`.
    reserved: Reserved,
    /// Set when the data set is being drained instead of kept.
    refusal: Option<Refusal>,
    /// Transfer syntax of the context.
    transfer_syntax: String,
    /// Abstract syntax of the context.
    abstract_syntax: String,
}

/// A protocol violation: ends the association.
struct Violation(String);

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Association<S> {
    async fn serve(&mut self, shutdown: &mut watch::Receiver<bool>) -> AssociationEnd {
        loop {
            let under_way = self.message.is_some();
            let wait = if under_way {
                self.shared.read_timeout
            } else {
                self.shared.idle_timeout
            };
            let pdu = if under_way {
                self.wire.receive(wait).await
            } else {
                tokio::select! {
                    pdu = self.wire.receive(wait) => pdu,
                    () = stop_requested(shutdown) => {
                        info!(peer = %self.peer, "listener shutting down; aborting idle association");
                        self.wire.abort(AbortRQServiceProviderReason::ReasonNotSpecified).await;
                        return AssociationEnd::Aborted("the listener is shutting down".to_string());
                    }
                }
            };
            match pdu {
                Ok(Pdu::PData { data }) => {
                    for pdv in data {
                        if let Err(Violation(why)) = self.receive_pdv(pdv).await {
                            warn!(peer = %self.peer, reason = %why, "protocol violation; aborting");
                            self.wire
                                .abort(AbortRQServiceProviderReason::UnexpectedPduParameter)
                                .await;
                            return AssociationEnd::Aborted(format!("protocol violation: {why}"));
                        }
                    }
                }
                Ok(Pdu::ReleaseRQ) => {
                    let _ = self.wire.send(&Pdu::ReleaseRP).await;
                    self.wire.close().await;
                    debug!(peer = %self.peer, "association released");
                    return AssociationEnd::Released;
                }
                Ok(Pdu::AbortRQ { source }) => {
                    info!(peer = %self.peer, ?source, "association aborted by the peer");
                    return AssociationEnd::AbortedByPeer;
                }
                Ok(other) => {
                    warn!(peer = %self.peer, pdu = %other.short_description(), "unexpected PDU; aborting");
                    self.wire
                        .abort(AbortRQServiceProviderReason::UnexpectedPdu)
                        .await;
                    return AssociationEnd::Aborted(format!(
                        "unexpected PDU {}",
                        other.short_description()
                    ));
                }
                Err(WireError::Closed) => {
                    debug!(peer = %self.peer, "connection closed");
                    return AssociationEnd::Closed;
                }
                Err(e) => {
                    warn!(peer = %self.peer, error = %e, "aborting association");
                    let why = e.to_string();
                    let reason = match e {
                        WireError::TooLarge { .. } | WireError::Malformed(_) => {
                            AbortRQServiceProviderReason::InvalidPduParameter
                        }
                        _ => AbortRQServiceProviderReason::ReasonNotSpecified,
                    };
                    self.wire.abort(reason).await;
                    return AssociationEnd::Aborted(why);
                }
            }
        }
    }

    /// Adds one fragment to the message under way; answers the message when it is complete.
    async fn receive_pdv(&mut self, pdv: PDataValue) -> Result<(), Violation> {
        let id = pdv.presentation_context_id;
        let Some(context) = self.negotiated.contexts.get(&id) else {
            return Err(Violation(format!(
                "fragment on presentation context {id}, which was not accepted"
            )));
        };
        let message = self.message.get_or_insert_with(|| Message {
            context_id: id,
            command: Vec::new(),
            parsed: None,
            part10: Vec::new(),
            prefix: 0,
            reserved: Reserved::new(&self.shared.budget),
            refusal: None,
            transfer_syntax: context.transfer_syntax.clone(),
            abstract_syntax: context.abstract_syntax.clone(),
        });
        if message.context_id != id {
            return Err(Violation(format!(
                "fragment on presentation context {id} in the middle of a message on context {}",
                message.context_id
            )));
        }
        match pdv.value_type {
            PDataValueType::Command => {
                if message.parsed.is_some() {
                    return Err(Violation(
                        "command fragment after the command set ended".to_string(),
                    ));
                }
                if message.command.len() + pdv.data.len() > MAX_COMMAND_BYTES {
                    return Err(Violation(format!(
                        "command set exceeds {MAX_COMMAND_BYTES} bytes"
                    )));
                }
                message.command.extend_from_slice(&pdv.data);
                if !pdv.is_last {
                    return Ok(());
                }
                let command =
                    Command::parse(&message.command).map_err(|e| Violation(e.to_string()))?;
                let has_data_set = command.has_data_set;
                if command.field == command_field::C_STORE_RQ && has_data_set {
                    let request = store_request(&self.negotiated.calling_ae, &command, message);
                    match store::part10_prefix(&request) {
                        Ok(prefix) => {
                            message.prefix = prefix.len();
                            if message.reserved.grow(prefix.len() as u64) {
                                message.part10 = prefix;
                            } else {
                                message.refusal = Some(out_of_memory());
                            }
                        }
                        Err(refusal) => message.refusal = Some(refusal),
                    }
                }
                message.parsed = Some(command);
                if !has_data_set {
                    let message = self.message.take().expect("message under way");
                    self.answer(message).await;
                }
                Ok(())
            }
            PDataValueType::Data => {
                let Some(command) = &message.parsed else {
                    return Err(Violation(
                        "data set fragment before the command set ended".to_string(),
                    ));
                };
                if !command.has_data_set {
                    return Err(Violation(
                        "data set fragment for a command that has none".to_string(),
                    ));
                }
                if message.refusal.is_none() {
                    let data_bytes = (message.part10.len().saturating_sub(message.prefix)
                        + pdv.data.len()) as u64;
                    if data_bytes > self.shared.max_data_set_bytes {
                        message.refusal = Some(Refusal {
                            status: status::OUT_OF_RESOURCES,
                            comment: format!(
                                "data set exceeds {} bytes; raise max_data_set_bytes",
                                self.shared.max_data_set_bytes
                            ),
                        });
                    } else if !message.reserved.grow(pdv.data.len() as u64) {
                        message.refusal = Some(out_of_memory());
                    }
                    if message.refusal.is_some() {
                        message.part10 = Vec::new();
                    } else {
                        message.part10.extend_from_slice(&pdv.data);
                    }
                }
                if pdv.is_last {
                    let message = self.message.take().expect("message under way");
                    self.answer(message).await;
                }
                Ok(())
            }
        }
    }

    /// Answers a complete message.
    async fn answer(&mut self, message: Message) {
        let command = message
            .parsed
            .clone()
            .expect("answered messages are parsed");
        let context_id = message.context_id;
        let response = match command.field {
            command_field::C_ECHO_RQ => Reply::new(status::SUCCESS, None),
            command_field::C_STORE_RQ => self.store(&command, message).await,
            command_field::C_CANCEL_RQ => return,
            field if field & command_field::RESPONSE != 0 => {
                debug!(peer = %self.peer, field, "ignoring a response sent by the peer");
                return;
            }
            _ => Reply::new(
                status::UNRECOGNIZED_OPERATION,
                Some("operation not supported by diptych".to_string()),
            ),
        };
        if command.field == command_field::C_STORE_RQ {
            self.instances += 1;
            *self.statuses.entry(response.status).or_default() += 1;
        }
        let class =
            if command.field == command_field::C_ECHO_RQ && command.affected_class.is_empty() {
                uids::VERIFICATION
            } else {
                command.affected_class.as_str()
            };
        let bytes = Response {
            field: command.field | command_field::RESPONSE,
            message_id: command.message_id,
            status: response.status,
            affected_class: class,
            affected_instance: &command.affected_instance,
            error_comment: response.comment.as_deref(),
        }
        .encode();
        match self.wire.send_command(context_id, bytes).await {
            Ok(()) => {
                self.shared
                    .stats
                    .responded(DimseService::of_request(command.field), response.status);
                debug!(
                    peer = %self.peer,
                    message_id = command.message_id,
                    status = response.status,
                    "answered"
                )
            }
            Err(e) => warn!(peer = %self.peer, error = %e, "cannot send the response"),
        }
    }

    /// Hands an instance to the sink on a task of its own: a panic there (a bug) answers this
    /// instance 0xC000 and the association goes on; and once handed over, the sink's work
    /// completes even if the association ends meanwhile.
    async fn sink_store(&self, instance: super::sink::ReceivedInstance) -> StoreOutcome {
        let sink = Arc::clone(&self.shared.sink);
        match tokio::spawn(async move { sink.store(instance).await }).await {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::error!(peer = %self.peer, %error, "storing an instance failed unexpectedly (a bug)");
                StoreOutcome::CannotUnderstand(
                    "an unexpected error (a bug) while storing it".to_string(),
                )
            }
        }
    }

    /// Checks a complete C-STORE and hands it to the sink.
    async fn store(&self, command: &Command, message: Message) -> Reply {
        let request = store_request(&self.negotiated.calling_ae, command, &message);
        let Message {
            part10,
            reserved,
            refusal,
            ..
        } = message;
        let outcome = match refusal {
            Some(refusal) => Err(refusal),
            None => {
                let limits = self.shared.limits;
                let checked =
                    tokio::task::spawn_blocking(move || store::check(request, part10, &limits))
                        .await
                        .unwrap_or_else(|_| {
                            Err(Refusal {
                                status: status::CANNOT_UNDERSTAND,
                                comment: "the instance could not be checked".to_string(),
                            })
                        });
                match checked {
                    Ok(instance) => match self.sink_store(instance).await {
                        StoreOutcome::Stored | StoreOutcome::NonImage => Ok(()),
                        StoreOutcome::OutOfResources(comment) => Err(Refusal {
                            status: status::OUT_OF_RESOURCES,
                            comment,
                        }),
                        StoreOutcome::CannotUnderstand(comment) => Err(Refusal {
                            status: status::CANNOT_UNDERSTAND,
                            comment,
                        }),
                    },
                    Err(refusal) => Err(refusal),
                }
            }
        };
        drop(reserved);
        match outcome {
            Ok(()) => {
                debug!(peer = %self.peer, sop_class = %command.affected_class, "stored");
                Reply::new(status::SUCCESS, None)
            }
            Err(refusal) => {
                warn!(
                    peer = %self.peer,
                    calling_ae = %self.negotiated.calling_ae,
                    sop_class = loggable_uid(&command.affected_class),
                    status = format_args!("{:#06X}", refusal.status),
                    reason = %refusal.comment,
                    "C-STORE refused"
                );
                Reply::new(refusal.status, Some(refusal.comment))
            }
        }
    }
}

/// Completes when the listener asks associations to stop.
async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

/// Status and comment of a response.
struct Reply {
    status: u16,
    comment: Option<String>,
}

impl Reply {
    fn new(status: u16, comment: Option<String>) -> Self {
        Self { status, comment }
    }
}

/// The store request of a C-STORE command on the message's presentation context.
fn store_request(calling_ae: &str, command: &Command, message: &Message) -> StoreRequest {
    StoreRequest {
        calling_ae: calling_ae.to_string(),
        sop_class_uid: command.affected_class.clone(),
        sop_instance_uid: command.affected_instance.clone(),
        context_class: message.abstract_syntax.clone(),
        transfer_syntax: message.transfer_syntax.clone(),
    }
}

/// A UID from the peer as a log field: itself when it is a valid UID, otherwise a placeholder, so
/// that a hostile value (newlines, 10 000 characters) never reaches a log line.
fn loggable_uid(text: &str) -> &str {
    if crate::uid::Uid::parse(text).is_ok() {
        text
    } else {
        "(not a valid UID)"
    }
}

fn out_of_memory() -> Refusal {
    Refusal {
        status: status::OUT_OF_RESOURCES,
        comment: "too many bytes buffered across associations; retry later".to_string(),
    }
}
