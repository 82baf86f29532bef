//! `diptych serve`: start-up in the order that fails fastest, then serving until a shutdown
//! signal.
//!
//! 1. the data folder exists (created if missing);
//! 2. ONNX Runtime is found and loaded (a missing library says to run `make deps-ort`);
//! 3. the model bundle loads and its graphs agree with its manifest;
//! 4. the gRPC and HTTP ports are bound (TLS and the tokens file were read before 2); health and
//!    `/readyz` answer NOT_SERVING, `/healthz` and `/metrics` answer;
//! 5. the sessions open on the chosen execution provider, the model warms up;
//! 6. the index opens: store records past the last checkpoint are dropped and the write-ahead
//!    log is replayed after it;
//! 7. the DICOM listener binds (unless `--no-dicom`), received studies are watched;
//! 8. health switches to SERVING.
//!
//! A failure in 1–5 ends the process with the reason; 5 and 6 happen while the ports already
//! answer, so orchestrators see the process as alive but not ready.
//!
//! On SIGTERM: NOT_SERVING ("stopping"), no new calls or associations, those in flight answered,
//! everything acknowledged applied and checkpointed, the audit trail's queue written and synced;
//! the HTTP port stops last.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::state_file::StateFileError;
use crate::admin::{AuditFiles, DicomNetwork, Origin, Peer};
use crate::audit::{Audit, AuditError};
use crate::bundle::{Bundle, BundleError};
use crate::config::Config;
use crate::dicom::{DicomSettings, IndexSink};
use crate::encoder::runtime::{self, RuntimeError, default_intra_threads};
use crate::encoder::{BatcherConfig, BundleLoader, Engine, EngineError, EngineOptions};
use crate::grpc::security::{Security, SecurityError};
use crate::grpc::{self, ServiceState};
use crate::http::{self, HttpError, Metrics, Readiness, Ready};
use crate::index::{Index, IndexError, IndexOptions};
use diptych_dicom_adapter::scp;

/// The longest shutdown waits for the audit writer to write what is queued.
const AUDIT_DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Why the server stopped with an error.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The data folder could not be created.
    #[error("cannot create the data folder {path}: {source}; pick a writable --data-dir")]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// ONNX Runtime could not be found or loaded.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The model bundle was refused.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The sessions could not start or the warm-up failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The index (log, store, catalog) could not open.
    #[error("cannot open the index in the data folder: {0}")]
    Index(#[from] IndexError),
    /// The DICOM settings are wrong or the listener could not start.
    #[error(
        "the DICOM listener cannot start: {0}; fix [dicom] in the configuration, choose another --dicom-addr, or pass --no-dicom"
    )]
    Dicom(String),
    /// The administration state file (allowed peers, KOS destinations) is unusable.
    #[error("the list of DICOM peers and KOS destinations cannot be used: {0}")]
    Admin(#[from] StateFileError),
    /// The audit trail cannot start.
    #[error("the audit trail cannot start: {0}")]
    Audit(#[from] AuditError),
    /// The gRPC port's TLS files or tokens file are unusable.
    #[error("the gRPC port cannot be secured: {0}")]
    Security(#[from] SecurityError),
    /// The gRPC address could not be bound.
    #[error("cannot listen on {addr}: {source}; choose another --grpc-addr")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("the gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The HTTP port could not be bound or failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// A start-up task stopped unexpectedly.
    #[error("start-up was interrupted: {0}")]
    Interrupted(String),
    /// The cluster state of a shard (docs/CLUSTER.md).
    #[error(transparent)]
    Shard(#[from] crate::cluster::shard::ShardError),
}

/// Runs the server until `shutdown` completes (or start-up fails).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let mut dicom = DicomSettings::from_config(&config.dicom, &config.images)
        .map_err(|e| ServeError::Dicom(e.to_string()))?;
    let security =
        Security::from_config(&config.grpc, &config.auth, |name| std::env::var(name).ok())?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let audit = Audit::start(&config.audit, &config.data_dir)?;
    // A cluster shard: fed from its JetStream subject, not by DICOM (docs/CLUSTER.md).
    let is_shard = config.cluster.role == crate::config::Role::Shard;
    let shard_state = crate::cluster::shard::state_dir(&config.data_dir);
    let sequences = match is_shard {
        true => Some(Arc::new(crate::cluster::shard::Sequences::open(
            &shard_state,
        )?)),
        false => None,
    };
    let network = Arc::new(open_network(&config, &dicom)?);
    // The listener checks each association against the live list the admin API changes.
    dicom.scp.allowed_callers = network.allow_list();
    let library = runtime::locate_library(config.encoder.ort_library.as_deref(), |name| {
        std::env::var(name).ok()
    })?;
    let env = runtime::environment(&library.path)?;
    tracing::info!(path = %library.path.display(), from = library.source, "ONNX Runtime loaded");

    let model_dir = config.model.clone();
    let bundle = tokio::task::spawn_blocking(move || Bundle::load(model_dir))
        .await
        .map_err(|e| ServeError::Interrupted(e.to_string()))??;
    let m = &bundle.manifest;
    tracing::info!(
        model_id = %m.model_id,
        dir = %bundle.dir.display(),
        input_size = m.input_size(),
        grid = %format!("{}x{}", m.grid.rows, m.grid.cols),
        codebook_size = m.codebook_size,
        code_dim = m.code_dim,
        "model bundle checked"
    );

    let addr = config.grpc.addr;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let http_listener = http::bind(config.http.addr).await?;
    let http_bound = http_listener.local_addr().unwrap_or(config.http.addr);
    let state = Arc::new(ServiceState::new(
        config.images,
        config.grpc.max_message_bytes,
        config.viewer_url_template.clone(),
    ));
    state.set_audit(audit.clone());
    // One shutdown signal for the server, whether it comes from outside or from a failed start.
    let (stop_tx, mut stop_rx) = watch::channel(false);
    state.set_admin(grpc::admin::AdminSettings {
        backfill: Arc::new(crate::backfill::Backfills::new(stop_rx.clone())),
        data_dir: config.data_dir.clone(),
        archive: config.archive.clone(),
        network: network.clone(),
        audit_files: config.audit.enabled.then(|| AuditFiles {
            path: config.audit.file_path(&config.data_dir),
            keep: config.audit.keep,
        }),
        ae_title: dicom.scp.ae_title.clone(),
        kos_enabled: config.dicom.enabled && dicom.kos.is_some(),
    });
    let (readiness, health) = Readiness::start().await;
    let metrics = Arc::new(Metrics::new(
        state.clone(),
        readiness.clone(),
        config.data_dir.clone(),
        config.index.min_free_bytes,
    ));
    // The HTTP port stops last, once everything acknowledged is checkpointed.
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let stow = http::stow::Stow {
        state: state.clone(),
        access: Arc::new(http::stow::StowAccess::decide(
            security.policy.clone(),
            http_bound,
            config.auth.allow_unauthenticated,
        )),
    };
    let page = match config.http.page {
        true => crate::web::router(crate::web::PageConfig {
            grpc_port: bound.port(),
            grpc_tls: security.tls.is_some(),
        }),
        false => axum::Router::new(),
    };
    let http_task = tokio::spawn(http::serve(
        http_listener,
        metrics.clone(),
        readiness.clone(),
        Some(stow),
        page,
        async move {
            let _ = http_stopped.await;
        },
    ));
    tracing::info!(addr = %http_bound, page = config.http.page, "HTTP listening: the page at /, /metrics, /healthz, /readyz, STOW-RS at /dicomweb/studies");

    let stop_rx_dicom = stop_rx.clone();
    let stop_on_signal = stop_tx.clone();
    let deadline = Duration::from_secs_f64(config.shutdown_deadline_s);
    let stopping_state = state.clone();
    let stopping_readiness = readiness.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!(
            deadline_s = deadline.as_secs_f64(),
            "stopping: no new associations or calls; answering those in flight, applying what was acknowledged"
        );
        stopping_readiness.stopping().await;
        stopping_state.begin_shutdown();
        let _ = stop_on_signal.send(true);
        tokio::time::sleep(deadline).await;
        tracing::error!(
            "the shutdown deadline passed; exiting with work left in the write-ahead log (the next start replays it)"
        );
        std::process::exit(1);
    });
    security.log();
    let origins = grpc::web::WebOrigins::new(
        &config.grpc.web_allowed_origins,
        config.http.page.then_some(http_bound.port()),
    )
    .map_err(|e| ServeError::Interrupted(e.to_string()))?;
    tracing::info!(origins = ?origins.origins(), "gRPC-Web: pages of these origins may call");
    let stop_rx_shard = stop_rx.clone();
    let progress = Arc::new(crate::cluster::deletes::Progress::default());
    if let Some(sequences) = &sequences {
        state.set_shard(sequences.clone(), progress.clone(), config.cluster.shard);
    }
    let server = tokio::spawn(grpc::serve(
        listener,
        state.clone(),
        health,
        security,
        metrics.rpc(),
        origins,
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        },
    ));
    tracing::info!(addr = %bound, "gRPC listening; NOT_SERVING until the model is warm");

    let options = engine_options(&config);
    let mut dicom_task: Option<tokio::task::JoinHandle<()>> = None;
    let start = async {
        let engine_options = options.clone();
        let engine =
            tokio::task::spawn_blocking(move || Engine::start(bundle, env, engine_options))
                .await
                .map_err(|e| ServeError::Interrupted(e.to_string()))??;
        let took = engine.warm_up().await?;
        let engine = Arc::new(engine);
        let (data_dir, for_index) = (config.data_dir.clone(), engine.clone());
        let fetcher = match &config.archive {
            Some(archive) => Some(
                archive
                    .fetcher(&config.dicom.ae_title, config.images)
                    .map_err(|e| ServeError::Interrupted(e.to_string()))?,
            ),
            None => None,
        };
        let index_options = IndexOptions {
            limits: config.images,
            quiet_period: Duration::from_secs_f64(config.dicom.study_quiet_period_s),
            max_backlog_frames: config.index.max_backlog_frames,
            min_free_bytes: config.index.min_free_bytes,
            faults: Default::default(),
            keep_frames: config.index.keep_frames,
            engines: Some(Arc::new(BundleLoader::new(env, options.clone()))),
            fetcher,
        };
        let opened = Instant::now();
        let index =
            tokio::task::spawn_blocking(move || Index::open(&data_dir, for_index, index_options))
                .await
                .map_err(|e| ServeError::Interrupted(e.to_string()))??;
        let (records, live) = index.record_counts();
        tracing::info!(
            records,
            live,
            open_ms = opened.elapsed().as_secs_f64() * 1e3,
            "index open"
        );
        tokio::spawn(crate::watch::tracker::run(index.tracker().clone(), {
            let index = index.clone();
            move |study: &diptych_dicom_adapter::Uid| index.study_indexed(study)
        }));
        if is_shard {
            tracing::info!(
                shard = config.cluster.shard,
                replica = %config.cluster.replica,
                "cluster shard: no DICOM listener; instances come from the ingest stream"
            );
        }
        if config.dicom.enabled && !is_shard {
            let scp = scp::bind(dicom.scp.clone())
                .await
                .map_err(|e| ServeError::Dicom(e.to_string()))?;
            let (plain_addr, tls_addr) = (scp.plain_addr(), scp.tls_addr());
            state.set_dicom(crate::grpc::DicomListening {
                ae_title: dicom.scp.ae_title.clone(),
                plain_port: plain_addr.map(|a| a.port()),
                tls_port: tls_addr.map(|a| a.port()),
            });
            metrics.set_dicom(scp.stats());
            let mut stop = stop_rx_dicom.clone();
            let sink = Arc::new(IndexSink::new(index.clone()).with_audit(audit.clone()));
            dicom_task = Some(tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                };
                if let Err(error) = scp.serve(sink, stopped).await {
                    tracing::error!(%error, "the DICOM listener stopped");
                }
            }));
            if let Some(addr) = plain_addr {
                tracing::info!(listener = "plain", %addr, ae_title = %dicom.scp.ae_title, "DICOM listening (plain) on {addr}");
            }
            if let Some(addr) = tls_addr {
                tracing::info!(listener = "tls", %addr, ae_title = %dicom.scp.ae_title, "DICOM-TLS listening on {addr}");
            }
            if let Some(kos) = &dicom.kos {
                tokio::spawn(crate::dicom::kos::run(
                    index.clone(),
                    network.kos_destinations(),
                    kos.top_k,
                    dicom.scp.ae_title.clone(),
                    audit.clone(),
                ));
            }
        }
        Ok::<_, ServeError>((engine, index, took))
    };
    let started = start.await;
    let index = match started {
        Ok((engine, index, took)) => {
            tracing::info!(
                execution_provider = engine.provider().name(),
                sessions = options.sessions,
                intra_threads = options.intra_threads,
                max_batch = options.batcher.max_batch,
                warm_up_ms = took.as_secs_f64() * 1e3,
                "model warm; SERVING"
            );
            state.set_engine(engine);
            let mut faults = index.health().subscribe();
            state.set_index(index.clone());
            if let Some(sequences) = &sequences {
                tokio::spawn(crate::cluster::shard::run(
                    index.clone(),
                    sequences.clone(),
                    progress.clone(),
                    shard_state.clone(),
                    config.cluster.clone(),
                    stop_rx_shard.clone(),
                ));
            }
            readiness.set(Ready::Serving).await;
            // Readiness follows the index: NOT_SERVING while indexing keeps failing.
            let readiness = readiness.clone();
            tokio::spawn(async move {
                while faults.changed().await.is_ok() {
                    let ready = match faults.borrow_and_update().as_deref() {
                        Some(reason) => {
                            tracing::warn!(%reason, "gRPC health: NOT_SERVING while indexing fails");
                            Ready::NotServing(format!("indexing keeps failing: {reason}"))
                        }
                        None => Ready::Serving,
                    };
                    readiness.set(ready).await;
                }
            });
            index
        }
        Err(error) => {
            let _ = stop_tx.send(true);
            let _ = server.await;
            let _ = http_stop.send(());
            let _ = http_task.await;
            return Err(error);
        }
    };
    let outcome = server
        .await
        .map_err(|e| ServeError::Interrupted(e.to_string()))?;
    tracing::info!("gRPC server stopped");
    // Associations in flight are answered (the listener took no new ones since the signal).
    if let Some(task) = dicom_task {
        match task.await {
            Ok(()) => tracing::info!("DICOM listener stopped; associations in flight answered"),
            Err(error) => tracing::error!(%error, "the DICOM listener failed while stopping"),
        }
    }
    tracing::info!("applying what was acknowledged and taking the final checkpoint");
    // Everything acknowledged is applied and checkpointed: the next start replays nothing.
    index.close().await;
    // Every audit event queued is written and synced before the process ends.
    if !audit.drain(AUDIT_DRAIN_LIMIT).await {
        tracing::error!(
            "the audit trail could not be drained; events queued at shutdown may be lost"
        );
    }
    let _ = http_stop.send(());
    match http_task.await {
        Ok(Ok(())) => tracing::info!("HTTP server stopped"),
        Ok(Err(error)) => tracing::error!(%error, "the HTTP server failed"),
        Err(error) => tracing::error!(%error, "the HTTP server failed while stopping"),
    }
    tracing::info!("stopped: every acknowledged instance is indexed and checkpointed");
    Ok(outcome?)
}

/// The allowed peers and KOS destinations from the data folder, or seeded there from `[dicom]`
/// on the first start; says in the log which, and when the configuration's lists are ignored.
fn open_network(config: &Config, dicom: &DicomSettings) -> Result<DicomNetwork, StateFileError> {
    let seed_peers: Vec<Peer> = dicom
        .scp
        .allowed_callers
        .snapshot()
        .into_iter()
        .map(Peer::from)
        .collect();
    let seed_kos: Vec<_> = dicom.kos.iter().map(|k| k.destination.clone()).collect();
    let (network, origin) =
        DicomNetwork::open(&config.data_dir, seed_peers.clone(), seed_kos.clone())?;
    let path = network.path().display().to_string();
    let (peers, kos) = (network.peers(), network.kos_destinations().snapshot());
    match origin {
        Origin::Seeded => tracing::info!(
            %path,
            peers = peers.len(),
            kos_destinations = kos.len(),
            "allowed DICOM peers and KOS destinations seeded from the configuration; from now on this file holds them (change them with `diptych admin`)"
        ),
        Origin::StateFile if peers != seed_peers || kos != seed_kos => tracing::warn!(
            %path,
            peers = peers.len(),
            kos_destinations = kos.len(),
            "dicom.allowed_callers / dicom.kos.destination differ from the lists in the data folder, which win; change them with `diptych admin`, or remove the file to seed again"
        ),
        Origin::StateFile => tracing::info!(
            %path,
            peers = peers.len(),
            kos_destinations = kos.len(),
            "allowed DICOM peers and KOS destinations read from the data folder"
        ),
    }
    Ok(network)
}

/// How `config` asks the model to run (also the cluster encoder role's engine).
pub fn engine_options(config: &Config) -> EngineOptions {
    let e = &config.encoder;
    EngineOptions {
        execution_provider: e.execution_provider,
        sessions: e.sessions,
        intra_threads: if e.intra_threads == 0 {
            default_intra_threads(e.sessions)
        } else {
            e.intra_threads
        },
        intra_op_spinning: e.intra_op_spinning,
        precision: e.precision,
        nice: e.nice,
        batcher: BatcherConfig {
            max_batch: e.max_batch,
            max_delay: e.max_queue_delay(),
            queue_capacity: e.queue_capacity,
        },
        remote: (!e.remote_url.is_empty()).then(|| crate::encoder::RemoteOptions {
            url: e.remote_url.clone(),
            timeout: std::time::Duration::from_secs_f64(e.remote_timeout_s.max(0.001)),
            max_message_bytes: config.grpc.max_message_bytes,
        }),
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}
