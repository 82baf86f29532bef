//! The gRPC edge: thin adapters from the generated `diptych.v1` types to the domain, plus gRPC
//! health checking and server reflection. Nothing below this module sees a protobuf message.
//!
//! | module | what it is for |
//! |---|---|
//! | [`admin`] | AdminService: allowed DICOM peers, KOS destinations, C-ECHO, recent associations |
//! | [`backfill`] | AdminService.Backfill: the request checked, the job started or followed, its progress streamed |
//! | [`image`] | ImageService: Encode, Decompose |
//! | [`info`] | InfoService: model card, index statistics, capabilities |
//! | [`ingest`] | IngestService: Ingest (acknowledged once durable), Delete |
//! | [`search`] | SearchService: Search, and Watch (similar studies of every received study, shared with the KOS sender) |
//! | [`input`], [`output`], [`status`] | protobuf ↔ domain conversions and error mapping |
//! | [`security`] | TLS on the port and the authentication policy, from `[grpc]` and `[auth]` |
//! | [`observe`] | the tower layer: a request id and span per call, per-RPC metrics |
//! | [`audited`] | who made a call, from where, for its audit event |
//! | [`web`] | gRPC-Web for browsers, and the CORS allow-list of origins whose pages may call |
//!
//! Every service sits behind the gate of [`crate::auth`]: bearer tokens or client certificates,
//! each caller with a role.
//!
//! Health: the overall status ("") and each implemented service report NOT_SERVING from the
//! moment the port is bound until the model has warmed up, then SERVING.

pub mod admin;
pub mod audited;
pub mod backfill;
pub mod image;
pub mod info;
pub mod ingest;
pub mod input;
pub mod observe;
pub mod output;
pub mod search;
pub mod security;
pub mod status;
pub mod web;

use std::future::Future;
use std::sync::{Arc, OnceLock};

use diptych::api::v1::admin_service_server::AdminServiceServer;
use diptych::api::v1::image_service_server::ImageServiceServer;
use diptych::api::v1::info_service_server::InfoServiceServer;
use diptych::api::v1::ingest_service_server::IngestServiceServer;
use diptych::api::v1::search_service_server::SearchServiceServer;
use diptych_dicom_adapter::Limits;
use tokio::net::TcpListener;
use tonic::Status;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;

use crate::encoder::Engine;
use crate::index::Index;

/// Where the DICOM listener answers, for the capabilities call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DicomListening {
    /// The listener's AE title.
    pub ae_title: String,
    /// The plain DICOM port, unless the node is TLS-only.
    pub plain_port: Option<u16>,
    /// The DICOM-TLS port, when TLS is configured.
    pub tls_port: Option<u16>,
}

/// What a cluster shard's internal service reads: its stream sequences, its consumer's
/// progress, and its shard number.
type ShardParts = (
    Arc<crate::cluster::shard::Sequences>,
    Arc<crate::cluster::deletes::Progress>,
    u32,
);

/// What every handler shares: the engine and the index once they are ready, and the limits.
pub struct ServiceState {
    engine: OnceLock<Arc<Engine>>,
    index: OnceLock<Arc<Index>>,
    dicom: OnceLock<DicomListening>,
    audit: OnceLock<crate::audit::Audit>,
    admin: OnceLock<admin::AdminSettings>,
    shard: OnceLock<ShardParts>,
    /// A viewer deep-link template for search hits, with `{study_instance_uid}`,
    /// `{series_instance_uid}` and `{sop_instance_uid}` placeholders.
    pub viewer_url_template: Option<String>,
    /// Bounds on DICOM instances and raw images.
    pub limits: Limits,
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
    /// Set when the server begins to stop: open streams end with UNAVAILABLE.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl ServiceState {
    /// State with no engine yet.
    pub fn new(
        limits: Limits,
        max_message_bytes: usize,
        viewer_url_template: Option<String>,
    ) -> Self {
        Self {
            engine: OnceLock::new(),
            index: OnceLock::new(),
            dicom: OnceLock::new(),
            audit: OnceLock::new(),
            admin: OnceLock::new(),
            shard: OnceLock::new(),
            viewer_url_template,
            limits,
            max_message_bytes,
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }

    /// The server begins to stop: streams that would stay open (Watch) end with UNAVAILABLE so
    /// their clients reconnect, to another replica if there is one.
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    /// Completes once the server begins to stop.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopping = self.stopping.subscribe();
        async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        }
    }

    /// The engine of the model serving now (the index's, which a re-index may switch), or
    /// UNAVAILABLE while it warms up.
    pub fn engine(&self) -> Result<Arc<Engine>, Status> {
        if let Some(index) = self.index.get() {
            return Ok(index.engine());
        }
        self.engine.get().cloned().ok_or_else(status::warming_up)
    }

    /// The index, or UNAVAILABLE while the model warms up and the index recovers.
    pub fn index(&self) -> Result<Arc<Index>, Status> {
        self.index.get().cloned().ok_or_else(status::warming_up)
    }

    /// Records the DICOM listener's AE title and ports, for the capabilities call.
    pub fn set_dicom(&self, listening: DicomListening) {
        let _ = self.dicom.set(listening);
    }

    /// The DICOM listener's AE title and ports, once it listens.
    pub fn dicom(&self) -> Option<&DicomListening> {
        self.dicom.get()
    }

    /// Installs the audit trail; returns false if one was already installed.
    pub fn set_audit(&self, audit: crate::audit::Audit) -> bool {
        self.audit.set(audit).is_ok()
    }

    /// The audit trail (one that records nothing until [`ServiceState::set_audit`]).
    pub fn audit(&self) -> crate::audit::Audit {
        self.audit.get().cloned().unwrap_or_default()
    }

    /// Installs what the admin API works on; returns false if it was already installed.
    pub fn set_admin(&self, settings: admin::AdminSettings) -> bool {
        self.admin.set(settings).is_ok()
    }

    /// Makes this server a cluster shard (docs/CLUSTER.md): [`serve`] then also serves the
    /// internal `ShardService` over `sequences` and the consumer's `progress`; returns false if
    /// already set.
    pub fn set_shard(
        &self,
        sequences: Arc<crate::cluster::shard::Sequences>,
        progress: Arc<crate::cluster::deletes::Progress>,
        shard: u32,
    ) -> bool {
        self.shard.set((sequences, progress, shard)).is_ok()
    }

    /// Whether this server is a cluster shard, whose records come only from the ingest stream.
    pub fn is_shard(&self) -> bool {
        self.shard.get().is_some()
    }

    /// What the admin API works on, once installed.
    pub fn admin(&self) -> Option<&admin::AdminSettings> {
        self.admin.get()
    }

    /// Installs the opened index; returns false if one was already installed.
    pub fn set_index(&self, index: Arc<Index>) -> bool {
        self.index.set(index).is_ok()
    }

    /// Installs the warm engine; returns false if one was already installed.
    pub fn set_engine(&self, engine: Arc<Engine>) -> bool {
        self.engine.set(engine).is_ok()
    }
}

/// The names health checking reports on: the whole server ("") and each serving service.
pub const HEALTH_NAMES: [&str; 6] = [
    "",
    "diptych.v1.AdminService",
    "diptych.v1.ImageService",
    "diptych.v1.InfoService",
    "diptych.v1.IngestService",
    "diptych.v1.SearchService",
];

/// Sets every health name to `status`.
pub async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    set_health_of(reporter, &HEALTH_NAMES, status).await;
}

/// Sets each of `names` to `status`: the health names of a process that serves other services
/// (the cluster's encoder role).
pub async fn set_health_of(reporter: &HealthReporter, names: &[&str], status: ServingStatus) {
    for name in names {
        reporter.set_service_status(name, status).await;
    }
}

/// The health service and its reporter, every name NOT_SERVING.
pub async fn health() -> (HealthReporter, HealthServer<impl Health>) {
    health_of(&HEALTH_NAMES).await
}

/// The health service and its reporter for `names`, every one NOT_SERVING.
pub async fn health_of(
    names: &'static [&'static str],
) -> (HealthReporter, HealthServer<impl Health>) {
    let (reporter, server) = tonic_health::server::health_reporter();
    set_health_of(&reporter, names, ServingStatus::NotServing).await;
    (reporter, server)
}

/// Serves the API and `health` on `listener` until `shutdown` completes, with TLS when
/// configured; gRPC-Web calls from the admitted `origins` are translated first ([`web`]); every
/// call is observed ([`observe`]: request id, span, `rpc` metrics), then goes through the
/// authentication gate (so refused calls are counted too). A cluster shard
/// ([`ServiceState::set_shard`]) also serves its internal `ShardService`.
pub async fn serve<H: Health>(
    listener: TcpListener,
    state: Arc<ServiceState>,
    health: HealthServer<H>,
    security: security::Security,
    rpc: Arc<observe::RpcMetrics>,
    origins: web::WebOrigins,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(diptych::api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(diptych::api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the embedded descriptor sets are valid");

    let max = state.max_message_bytes;
    let shard = state.shard.get().map(|(sequences, progress, shard)| {
        crate::cluster::shard::ShardApi::new(
            state.clone(),
            sequences.clone(),
            progress.clone(),
            *shard,
        )
    });
    // HTTP/1.1 too: browsers may send gRPC-Web over either version.
    let mut server = tonic::transport::Server::builder().accept_http1(true);
    if let Some(tls) = security.tls {
        server = server.tls_config(tls)?;
    }
    server
        .layer(origins.layer())
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(observe::ObserveLayer::new(rpc))
        .layer(crate::auth::AuthLayer::new(security.policy).with_audit(state.audit()))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            AdminServiceServer::new(admin::AdminApi::new(state.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            ImageServiceServer::new(image::ImageApi::new(state.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            InfoServiceServer::new(info::InfoApi::new(state.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            IngestServiceServer::new(ingest::IngestApi::new(state.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            SearchServiceServer::new(search::SearchApi::new(state.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        // A cluster shard's internal service (docs/CLUSTER.md); admin-only behind the gate.
        .add_optional_service(shard.map(|api| {
            diptych::api::internal::v1::shard_service_server::ShardServiceServer::new(api)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max)
        }))
        // Nagle off on every accepted connection, as `Server::serve` would set it: with the
        // listener handed over, tonic leaves the socket as accepted, and a response's headers,
        // data and trailers then wait on the peer's delayed ACK (about 40 ms per call).
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}
