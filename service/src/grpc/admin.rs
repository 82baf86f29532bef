//! AdminService: the allowed DICOM peers and KOS destinations changed at run time, a C-ECHO to
//! a destination, the recent associations from the audit trail, and re-indexing with a new
//! model bundle. Role `admin` only (see
//! [`crate::auth::access_of`]); every change, refused or made (a re-index started or cancelled
//! included), is a `config_change` event.

use std::sync::Arc;
use std::time::Duration;

use diptych::api::v1 as pb;
use diptych::api::v1::admin_service_server::AdminService;
use diptych_dicom_adapter::output::{Destination, echo};
use tonic::{Request, Response, Status};

use super::ServiceState;
use crate::admin::{AuditFiles, ChangeError, DicomNetwork, KosDestination, PageError, Peer};
use crate::audit::{AuditEvent, Outcome, What, Who};
use crate::auth::Caller;
use crate::index::{Index, ReindexError, ReindexPhase, ReindexStatus};

/// How long a C-ECHO may take, connection included.
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin API works on, set once at start.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// The allowed peers and KOS destinations.
    pub network: Arc<DicomNetwork>,
    /// The audit trail's files, when it is on.
    pub audit_files: Option<AuditFiles>,
    /// This server's AE title: the calling AE title of a C-ECHO.
    pub ae_title: String,
    /// Whether KOS documents are sent at all (`[dicom.kos]` configured, DICOM on).
    pub kos_enabled: bool,
    /// The backfill job (one at a time).
    pub backfill: Arc<crate::backfill::Backfills>,
    /// The data folder (the backfill job's position lives there).
    pub data_dir: std::path::PathBuf,
    /// The `[archive]` section: the archive a backfill request that names none pulls from.
    pub archive: Option<crate::archive::ArchiveConfig>,
}

/// The AdminService handler.
pub struct AdminApi {
    state: Arc<ServiceState>,
}

impl AdminApi {
    /// A handler over `state`.
    pub fn new(state: Arc<ServiceState>) -> Self {
        Self { state }
    }

    fn settings(&self) -> Result<&AdminSettings, Status> {
        self.state.admin().ok_or_else(|| {
            Status::unavailable("the administration API is starting; retry in a moment")
        })
    }

    /// Applies `change` and records it: who, which list, add or remove, the entry, the outcome.
    fn audited<T>(
        &self,
        request: &Request<T>,
        setting: &str,
        action: &str,
        entry: String,
        change: impl FnOnce() -> Result<(), ChangeError>,
    ) -> Result<(), Status> {
        let result = change();
        self.record(
            request,
            setting,
            action,
            entry,
            result.as_ref().map_err(ToString::to_string).copied(),
        );
        result.map_err(|error| change_status(&error))
    }

    /// Records a change made or refused as a `config_change` event of the audit trail.
    fn record<T>(
        &self,
        request: &Request<T>,
        setting: &str,
        action: &str,
        entry: String,
        outcome: Result<(), String>,
    ) {
        let who = Who::caller(request.extensions().get::<Caller>());
        let peer = request.remote_addr().map(|a| a.to_string());
        let call = super::observe::request_id_of(request);
        let what = What::ConfigChange {
            setting: setting.to_string(),
            action: action.to_string(),
            entry,
        };
        let event = match outcome {
            Ok(()) => AuditEvent::now(Outcome::Success, who, peer, what),
            Err(reason) => AuditEvent::now(Outcome::Failure, who, peer, what).with_reason(reason),
        };
        self.state.audit().record(event.with_request_id(call));
    }
}

fn change_status(error: &ChangeError) -> Status {
    match error {
        ChangeError::AlreadyExists(_) => Status::already_exists(error.to_string()),
        ChangeError::NotFound(_) => Status::not_found(error.to_string()),
        ChangeError::LastPeer(_) => Status::failed_precondition(error.to_string()),
        ChangeError::Save(_) => Status::internal(error.to_string()),
    }
}

fn invalid(field: &str, error: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {error}"))
}

fn peer_in(peer: Option<pb::Peer>) -> Result<Peer, Status> {
    let peer = peer.ok_or_else(|| invalid("peer", "missing; give ae_title (and host)"))?;
    Peer::new(&peer.ae_title, &peer.host).map_err(|e| invalid("peer", e))
}

fn peer_out(peer: &Peer) -> pb::Peer {
    pb::Peer {
        ae_title: peer.ae_title.clone(),
        host: peer.host.map(|h| h.to_string()).unwrap_or_default(),
    }
}

fn destination_in(destination: Option<pb::KosDestination>) -> Result<KosDestination, Status> {
    let d = destination
        .ok_or_else(|| invalid("destination", "missing; give ae_title, host and port"))?;
    KosDestination::new(&d.ae_title, &d.host, d.port).map_err(|e| invalid("destination", e))
}

fn destination_out(destination: &KosDestination) -> pb::KosDestination {
    pb::KosDestination {
        ae_title: destination.ae_title.clone(),
        host: destination.host.clone(),
        port: u32::from(destination.port),
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    type BackfillStream = super::backfill::ProgressStream;

    async fn backfill(
        &self,
        request: Request<pb::BackfillRequest>,
    ) -> Result<Response<Self::BackfillStream>, Status> {
        let settings = self.settings()?;
        let index = self.state.index()?;
        let sink =
            Arc::new(crate::dicom::IndexSink::new(index.clone()).with_audit(self.state.audit()));
        let context = crate::backfill::JobContext {
            data_dir: settings.data_dir.clone(),
            ae_title: settings.ae_title.clone(),
            index,
            sink,
            limits: self.state.limits,
            audit: self.state.audit(),
            who: Who::caller(request.extensions().get::<Caller>()),
        };
        super::backfill::start(
            &settings.backfill,
            context,
            request.into_inner(),
            settings.archive.as_ref(),
        )
        .map(Response::new)
    }

    async fn list_peers(
        &self,
        _request: Request<pb::ListPeersRequest>,
    ) -> Result<Response<pb::ListPeersResponse>, Status> {
        let peers = self.settings()?.network.peers();
        Ok(Response::new(pb::ListPeersResponse {
            peers: peers.iter().map(peer_out).collect(),
        }))
    }

    async fn add_peer(
        &self,
        request: Request<pb::AddPeerRequest>,
    ) -> Result<Response<pb::Peer>, Status> {
        let network = self.settings()?.network.clone();
        let peer = peer_in(request.get_ref().peer.clone())?;
        let added = peer.clone();
        self.audited(&request, "dicom_peers", "add", peer.to_string(), || {
            network.add_peer(added)
        })?;
        Ok(Response::new(peer_out(&peer)))
    }

    async fn remove_peer(
        &self,
        request: Request<pb::RemovePeerRequest>,
    ) -> Result<Response<pb::RemovePeerResponse>, Status> {
        let network = self.settings()?.network.clone();
        let peer = peer_in(request.get_ref().peer.clone())?;
        self.audited(&request, "dicom_peers", "remove", peer.to_string(), || {
            network.remove_peer(&peer)
        })?;
        Ok(Response::new(pb::RemovePeerResponse {}))
    }

    async fn list_kos_destinations(
        &self,
        _request: Request<pb::ListKosDestinationsRequest>,
    ) -> Result<Response<pb::ListKosDestinationsResponse>, Status> {
        let settings = self.settings()?;
        let destinations = settings.network.kos_destinations().snapshot();
        Ok(Response::new(pb::ListKosDestinationsResponse {
            destinations: destinations.iter().map(destination_out).collect(),
            kos_enabled: settings.kos_enabled,
        }))
    }

    async fn add_kos_destination(
        &self,
        request: Request<pb::AddKosDestinationRequest>,
    ) -> Result<Response<pb::KosDestination>, Status> {
        let settings = self.settings()?;
        let destination = destination_in(request.get_ref().destination.clone())?;
        if !settings.kos_enabled {
            return Err(Status::failed_precondition(
                "this server sends no KOS documents: add a [dicom.kos] section (with archive = \"de-identified\" or \"teaching\") and run with DICOM on, then add destinations",
            ));
        }
        let network = settings.network.clone();
        let added = destination.clone();
        self.audited(
            &request,
            "kos_destinations",
            "add",
            destination.to_string(),
            || network.add_kos(added),
        )?;
        Ok(Response::new(destination_out(&destination)))
    }

    async fn remove_kos_destination(
        &self,
        request: Request<pb::RemoveKosDestinationRequest>,
    ) -> Result<Response<pb::RemoveKosDestinationResponse>, Status> {
        let network = self.settings()?.network.clone();
        let destination = destination_in(request.get_ref().destination.clone())?;
        self.audited(
            &request,
            "kos_destinations",
            "remove",
            destination.to_string(),
            || network.remove_kos(&destination),
        )?;
        Ok(Response::new(pb::RemoveKosDestinationResponse {}))
    }

    async fn echo_destination(
        &self,
        request: Request<pb::EchoDestinationRequest>,
    ) -> Result<Response<pb::EchoDestinationResponse>, Status> {
        let settings = self.settings()?;
        let given = request.into_inner().destination.ok_or_else(|| {
            invalid(
                "destination",
                "missing; give a configured AE title, or ae_title, host and port",
            )
        })?;
        let target = if given.host.is_empty() && given.port == 0 {
            let configured = settings.network.kos_destinations().snapshot();
            configured
                .into_iter()
                .find(|d| d.ae_title == given.ae_title.trim())
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "no KOS destination has the AE title {:?}; list them, or give host and port",
                        given.ae_title
                    ))
                })?
        } else {
            destination_in(Some(given))?
        };
        let answer = |success, status, round_trip_ms, error: String| {
            Response::new(pb::EchoDestinationResponse {
                success,
                status,
                round_trip_ms,
                error,
                destination: target.to_string(),
            })
        };
        let addr = match target.resolve().await {
            Ok(addr) => addr,
            Err(e) => {
                return Ok(answer(
                    false,
                    0,
                    0.0,
                    format!("cannot resolve {}: {e}; check the host name", target.host),
                ));
            }
        };
        let destination = Destination {
            addr,
            called_ae: target.ae_title.clone(),
            calling_ae: settings.ae_title.clone(),
        };
        Ok(match echo(&destination, ECHO_TIMEOUT).await {
            Ok(echoed) => {
                let ms = echoed.round_trip.as_secs_f64() * 1e3;
                let error = if echoed.status == 0 {
                    String::new()
                } else {
                    format!("the destination answered status {:#06X}", echoed.status)
                };
                answer(echoed.status == 0, u32::from(echoed.status), ms, error)
            }
            Err(error) => answer(false, 0, 0.0, error.to_string()),
        })
    }

    async fn list_associations(
        &self,
        request: Request<pb::ListAssociationsRequest>,
    ) -> Result<Response<pb::ListAssociationsResponse>, Status> {
        let files = self.settings()?.audit_files.clone().ok_or_else(|| {
            Status::failed_precondition(
                "the audit trail is off ([audit] enabled = false), so associations are not recorded",
            )
        })?;
        let request = request.into_inner();
        let page = tokio::task::spawn_blocking(move || {
            files.page(i64::from(request.page_size), &request.page_token)
        })
        .await
        .map_err(|e| Status::internal(format!("reading the audit files stopped: {e}")))?
        .map_err(|error| match error {
            PageError::PageSize(_) => invalid("page_size", &error),
            PageError::Token(_) => invalid("page_token", &error),
            PageError::Read { .. } => Status::internal(error.to_string()),
        })?;
        Ok(Response::new(pb::ListAssociationsResponse {
            associations: page
                .entries
                .into_iter()
                .map(|e| pb::Association {
                    time: e.time,
                    outcome: e.outcome,
                    calling_ae: e.calling_ae,
                    called_ae: e.called_ae,
                    peer: e.peer,
                    end: e.end,
                    reason: e.reason,
                    instances_received: e.instances_received,
                    duration_ms: e.duration_ms,
                })
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn start_reindex(
        &self,
        request: Request<pb::StartReindexRequest>,
    ) -> Result<Response<pb::ReindexStatus>, Status> {
        let index = self.state.index()?;
        let dir = request.get_ref().model_dir.clone();
        if dir.trim().is_empty() {
            return Err(invalid(
                "model_dir",
                "is empty; name the new bundle's folder on the server's disk",
            ));
        }
        let started = index.start_reindex(std::path::Path::new(&dir)).await;
        let outcome = started.as_ref().map(|_| ()).map_err(ToString::to_string);
        self.record(&request, "model", "reindex", dir, outcome);
        match started {
            Ok(status) => Ok(Response::new(reindex_status(&index, status))),
            Err(ReindexError::Bundle(message)) => Err(invalid("model_dir", message)),
            Err(error) => Err(Status::failed_precondition(error.to_string())),
        }
    }

    async fn cancel_reindex(
        &self,
        request: Request<pb::CancelReindexRequest>,
    ) -> Result<Response<pb::ReindexStatus>, Status> {
        let index = self.state.index()?;
        let cancelled = index.cancel_reindex().await;
        let (entry, outcome) = match &cancelled {
            Ok(status) => (status.bundle.display().to_string(), Ok(())),
            Err(error) => (String::new(), Err(error.to_string())),
        };
        self.record(&request, "model", "cancel_reindex", entry, outcome);
        match cancelled {
            Ok(status) => Ok(Response::new(reindex_status(&index, status))),
            Err(error) => Err(Status::failed_precondition(error.to_string())),
        }
    }

    async fn get_reindex_status(
        &self,
        _request: Request<pb::GetReindexStatusRequest>,
    ) -> Result<Response<pb::ReindexStatus>, Status> {
        let index = self.state.index()?;
        let status = index.reindex_status();
        Ok(Response::new(reindex_status(&index, status)))
    }
}

/// A re-index's progress as the API shows it.
fn reindex_status(index: &Index, status: ReindexStatus) -> pb::ReindexStatus {
    let phase = match status.phase {
        ReindexPhase::Idle => pb::ReindexPhase::Unspecified,
        ReindexPhase::Loading => pb::ReindexPhase::Loading,
        ReindexPhase::Encoding => pb::ReindexPhase::Encoding,
        ReindexPhase::Switching => pb::ReindexPhase::Switching,
        ReindexPhase::Done => pb::ReindexPhase::Done,
        ReindexPhase::Failed => pb::ReindexPhase::Failed,
        ReindexPhase::Cancelled => pb::ReindexPhase::Cancelled,
    };
    pb::ReindexStatus {
        phase: phase as i32,
        records_per_second: status.rate(),
        from_model_id: status.from_model_id,
        to_model_id: status.to_model_id,
        model_dir: status.bundle.display().to_string(),
        records_done: status.records_done,
        records_total: status.records_total,
        resumed_at: status.resumed_at,
        from_kept_frames: status.from_kept_frames,
        from_archive: status.from_archive,
        elapsed_s: status.elapsed_s,
        error: status.error.unwrap_or_default(),
        serving_model_id: index.serving().model_id().to_string(),
    }
}
