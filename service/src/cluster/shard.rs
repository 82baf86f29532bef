//! A shard replica: the durable JetStream consumer of its subject that feeds the single node's
//! [`Index`], the checkpoint of the stream sequence it has made durable, and the internal
//! `ShardService` the routers call.
//!
//! Each message goes through [`Index::accept`] (examine, duplicate check, local write-ahead log
//! with fsync) before it is acknowledged to JetStream; a crash anywhere redelivers from the
//! checkpoint, and what the local log already holds comes back as a duplicate and is dropped,
//! so every message is applied exactly once. A missing data folder replays the whole stream.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer};
use diptych::api::internal::v1::shard_service_server::ShardService;
use diptych::api::internal::v1::{
    DeletedRequest, DeletedResponse, ShardSearchResponse, ShardSimilarStudies, ShardSliceCodes,
    SimilarStudiesRequest, StudiesReceivedRequest, StudyReceived,
};
use diptych::api::v1::search_service_server::SearchService;
use diptych::api::v1::{self as pb, SearchRequest, SliceRef};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use super::deletes::{self, DeletedState, Progress};
use super::ingest_log::{self, LogError};
use super::shard_map::subject;
use crate::config::ClusterConfig;
use crate::grpc::ServiceState;
use crate::grpc::search::{SearchApi, query_error};
use crate::index::{AcceptOutcome, Index, QuerySource, Refusal};

/// The folder of a shard's cluster state inside its data folder.
pub fn state_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster")
}

/// Why a shard's cluster state cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// A file of the shard's state.
    #[error("{path}: {source}; check the data folder's permissions and free space")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The ingest log.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The consumer could not be created or read.
    #[error(
        "the JetStream consumer {name} cannot be created or read ({message}); check that the \
         stream exists (a router creates it) and [cluster] shard and replica"
    )]
    Consumer {
        /// The durable name.
        name: String,
        /// What JetStream said.
        message: String,
    },
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> ShardError + '_ {
    move |source| ShardError::File {
        path: path.to_path_buf(),
        source,
    }
}

/// The stream sequence of every instance this shard holds (SOP Instance UID → sequence of its
/// first copy): the cluster-wide ingest order that breaks ties between equal distances.
///
/// An append-only text file, one `sequence uid` line per instance, read back on start; a torn
/// last line (a crash mid-write) is cut off and comes back with the redelivered message.
pub struct Sequences {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    map: RwLock<HashMap<String, u64>>,
}

impl Sequences {
    /// Opens (or creates) the file in `dir`.
    pub fn open(dir: &Path) -> Result<Sequences, ShardError> {
        std::fs::create_dir_all(dir).map_err(file_error(dir))?;
        let path = dir.join("sequences");
        let mut map = HashMap::new();
        let mut good = 0u64;
        if let Ok(file) = std::fs::File::open(&path) {
            let mut reader = std::io::BufReader::new(file);
            let mut line = String::new();
            loop {
                line.clear();
                let n = reader.read_line(&mut line).map_err(file_error(&path))?;
                if n == 0 || !line.ends_with('\n') {
                    break;
                }
                let parsed = line
                    .trim_end()
                    .split_once(' ')
                    .and_then(|(seq, uid)| Some((seq.parse::<u64>().ok()?, uid.to_string())));
                let Some((seq, uid)) = parsed else { break };
                map.entry(uid).or_insert(seq);
                good += n as u64;
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(file_error(&path))?;
        file.set_len(good).map_err(file_error(&path))?;
        Ok(Sequences {
            path,
            file: Mutex::new(file),
            map: RwLock::new(map),
        })
    }

    /// The stream sequence of an instance, if this shard holds it.
    pub fn get(&self, sop_instance_uid: &str) -> Option<u64> {
        self.map
            .read()
            .expect("sequence map poisoned")
            .get(sop_instance_uid)
            .copied()
    }

    /// How many instances it knows.
    pub fn len(&self) -> usize {
        self.map.read().expect("sequence map poisoned").len()
    }

    /// Whether it knows none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records `sequence` for an instance unless it already has one (the first copy wins, as
    /// the index keeps the first copy).
    pub fn record(&self, sop_instance_uid: &str, sequence: u64) -> Result<(), ShardError> {
        if self.get(sop_instance_uid).is_some() {
            return Ok(());
        }
        let mut file = self.file.lock().expect("sequence file poisoned");
        writeln!(file, "{sequence} {sop_instance_uid}").map_err(file_error(&self.path))?;
        self.map
            .write()
            .expect("sequence map poisoned")
            .insert(sop_instance_uid.to_string(), sequence);
        Ok(())
    }

    /// Makes everything recorded durable.
    pub fn sync(&self) -> Result<(), ShardError> {
        let file = self.file.lock().expect("sequence file poisoned");
        file.sync_data().map_err(file_error(&self.path))
    }
}

/// The highest stream sequence this shard has made durable (0: none, replay from the start).
pub fn read_checkpoint(dir: &Path) -> Result<u64, ShardError> {
    let path = dir.join("checkpoint");
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|e| ShardError::File {
            path: path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a stream sequence ({e}); delete it to replay the whole stream"),
            ),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(ShardError::File { path, source }),
    }
}

/// Writes the checkpoint atomically (temporary file, fsync, rename).
pub fn write_checkpoint(dir: &Path, sequence: u64) -> Result<(), ShardError> {
    let path = dir.join("checkpoint");
    let tmp = dir.join("checkpoint.tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        writeln!(file, "{sequence}")?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(file_error(&path))
}

/// The durable name of a replica's consumer.
pub fn consumer_name(shard: u32, replica: &str) -> String {
    let replica: String = replica
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("shard-{shard}-{replica}")
}

/// Consumes this shard's subject into `index` until `stop` turns true; reconnects and resumes
/// from the checkpoint after an error. `progress` follows what is applied.
pub async fn run(
    index: Arc<Index>,
    sequences: Arc<Sequences>,
    progress: Arc<Progress>,
    dir: PathBuf,
    config: ClusterConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let consumed = tokio::select! {
            r = consume(&index, &sequences, &progress, &dir, &config) => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        if let Err(error) = consumed {
            tracing::error!(%error, shard = config.shard, "the shard's consumer stopped; resuming from the checkpoint");
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One life of the consumer: (re)created from the checkpoint, then every message in order.
async fn consume(
    index: &Index,
    sequences: &Sequences,
    progress: &Progress,
    dir: &Path,
    config: &ClusterConfig,
) -> Result<(), ShardError> {
    let js = ingest_log::connect(config).await?;
    let stream = ingest_log::ensure_stream(&js, config.stream_replicas).await?;
    let checkpoint = read_checkpoint(dir)?;
    let name = consumer_name(config.shard, &config.replica);
    let consumer_error = |e: &dyn std::fmt::Display| ShardError::Consumer {
        name: name.clone(),
        message: e.to_string(),
    };
    // Created afresh from this replica's own checkpoint: the server's ack floor may be ahead
    // of a volume that was lost or restored.
    let _ = stream.delete_consumer(&name).await;
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: subject(config.shard),
            deliver_policy: if checkpoint == 0 {
                consumer::DeliverPolicy::All
            } else {
                consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: checkpoint + 1,
                }
            },
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(300),
            ..Default::default()
        })
        .await
        .map_err(|e| consumer_error(&e))?;
    tracing::info!(shard = config.shard, consumer = %name, from = checkpoint + 1, "consuming the ingest stream");
    let mut messages = consumer.messages().await.map_err(|e| consumer_error(&e))?;
    let mut applied = checkpoint;
    progress.advance(checkpoint);
    let mut saved = (checkpoint, Instant::now());
    loop {
        let next = tokio::time::timeout(Duration::from_millis(500), messages.next()).await;
        let message = match next {
            Ok(Some(message)) => message.map_err(|e| consumer_error(&e))?,
            Ok(None) => return Err(consumer_error(&"the message stream ended")),
            Err(_) => {
                // Idle: checkpoint what is durable.
                if applied > saved.0 {
                    sequences.sync()?;
                    write_checkpoint(dir, applied)?;
                    saved = (applied, Instant::now());
                }
                continue;
            }
        };
        let sequence = message
            .info()
            .map_err(|e| consumer_error(&e))?
            .stream_sequence;
        if sequence <= applied {
            // A redelivery of something already durable here.
            let _ = message.ack().await;
            continue;
        }
        match deletes::target_of(message.headers.as_ref(), &message.payload) {
            None => apply_one(index, sequences, &message, sequence).await?,
            Some(target) => apply_delete(index, progress, &message, sequence, target).await?,
        }
        message.ack().await.map_err(|e| consumer_error(&e))?;
        applied = sequence;
        progress.advance(sequence);
        if applied - saved.0 >= 256 || saved.1.elapsed() > Duration::from_secs(1) {
            sequences.sync()?;
            write_checkpoint(dir, applied)?;
            saved = (applied, Instant::now());
        }
    }
}

/// Makes one message durable in the local index, retrying what may pass (a full disk, a
/// failing indexer) until it does.
async fn apply_one(
    index: &Index,
    sequences: &Sequences,
    message: &jetstream::Message,
    sequence: u64,
) -> Result<(), ShardError> {
    let mut backoff = Duration::from_millis(50);
    loop {
        let outcome = index.accept(message.payload.to_vec()).await;
        let retry = match outcome {
            Ok(AcceptOutcome::Accepted {
                sop_instance_uid, ..
            })
            | Ok(AcceptOutcome::Duplicate { sop_instance_uid }) => {
                return sequences.record(&sop_instance_uid, sequence);
            }
            Ok(AcceptOutcome::NonImage) => return Ok(()),
            Ok(AcceptOutcome::Refused {
                refusal: Refusal::CannotUnderstand(reason),
                ..
            }) => {
                // The router examined it with the same code; only a release mismatch gets
                // here. Nothing can make it pass: take it off the stream for this consumer.
                tracing::error!(sequence, %reason, "an acknowledged instance cannot be indexed here; check that routers and shards run the same release and model");
                let _ = message.ack_with(AckKind::Term).await;
                return Ok(());
            }
            Ok(AcceptOutcome::Refused { refusal, .. }) => refusal.to_string(),
            Err(error) => error.to_string(),
        };
        if index.is_closing() {
            return Err(ShardError::Consumer {
                name: "shard".into(),
                message: "the index is stopping".into(),
            });
        }
        tracing::warn!(sequence, reason = %retry, "retrying an instance of the ingest stream");
        let _ = message.ack_with(AckKind::Progress).await;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Applies a deletion of the stream durably (the single node's delete), retrying what may pass
/// until it does; records what it removed for the router waiting on it.
async fn apply_delete(
    index: &Index,
    progress: &Progress,
    message: &jetstream::Message,
    sequence: u64,
    target: Result<crate::record::DeleteTarget, deletes::DeleteMessageError>,
) -> Result<(), ShardError> {
    let target = match target {
        Ok(target) => target,
        Err(error) => {
            tracing::error!(sequence, %error, "a deletion of the ingest stream cannot be read");
            let _ = message.ack_with(AckKind::Term).await;
            return Ok(());
        }
    };
    let mut backoff = Duration::from_millis(50);
    loop {
        match index.delete(target.clone()).await {
            Ok(counts) => {
                tracing::info!(
                    sequence,
                    level = target.level(),
                    records = counts.records,
                    "deletion of the ingest stream applied"
                );
                progress.record_delete(sequence, counts);
                return Ok(());
            }
            Err(error) => {
                if index.is_closing() {
                    return Err(ShardError::Consumer {
                        name: "shard".into(),
                        message: "the index is stopping".into(),
                    });
                }
                tracing::warn!(sequence, %error, "retrying a deletion of the ingest stream");
                let _ = message.ack_with(AckKind::Progress).await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The internal `ShardService` of a shard: its own exact search with each hit's stream
/// sequence, and the codes of the slices it holds.
pub struct ShardApi {
    state: Arc<ServiceState>,
    search: SearchApi,
    sequences: Arc<Sequences>,
    progress: Arc<Progress>,
    shard: u32,
}

impl ShardApi {
    /// The service over the shard's state, sequences and consumer's progress.
    pub fn new(
        state: Arc<ServiceState>,
        sequences: Arc<Sequences>,
        progress: Arc<Progress>,
        shard: u32,
    ) -> Self {
        ShardApi {
            search: SearchApi::new(state.clone()),
            state,
            sequences,
            progress,
            shard,
        }
    }
}

#[tonic::async_trait]
impl ShardService for ShardApi {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<ShardSearchResponse>, Status> {
        let response = self.search.search(request).await?.into_inner();
        let stream_sequences = response
            .hits
            .iter()
            .map(|hit| {
                let uid = hit
                    .slice
                    .as_ref()
                    .map_or("", |s| s.sop_instance_uid.as_str());
                self.sequences.get(uid).ok_or_else(|| {
                    Status::failed_precondition(format!(
                        "shard {}: a hit has no stream sequence (it did not come from the \
                         ingest stream); a shard takes instances only from JetStream",
                        self.shard
                    ))
                })
            })
            .collect::<Result<Vec<u64>, Status>>()?;
        Ok(Response::new(ShardSearchResponse {
            response: Some(response),
            stream_sequences,
            shard: self.shard,
        }))
    }

    async fn slice_codes(
        &self,
        request: Request<SliceRef>,
    ) -> Result<Response<ShardSliceCodes>, Status> {
        let index = self.state.index()?;
        let slice = request.into_inner();
        let Ok(uid) = diptych_dicom_adapter::Uid::parse(&slice.sop_instance_uid) else {
            return Err(Status::invalid_argument(
                "sop_instance_uid is not a UID (digits and dots, at most 64 characters)",
            ));
        };
        let source = QuerySource::Indexed {
            sop_instance_uid: uid,
            frame: slice.frame,
        };
        match index.resolve(&source, "query").await {
            Ok(codes) => {
                let grid = index.engine().manifest().grid;
                let code = |indices: &[u8]| pb::Code {
                    grid_rows: grid.rows as u32,
                    grid_columns: grid.cols as u32,
                    indices: indices.iter().map(|&i| u32::from(i)).collect(),
                };
                Ok(Response::new(ShardSliceCodes {
                    found: true,
                    codes: Some(pb::SliceCodes {
                        normal: Some(code(&codes.normal)),
                        abnormal: Some(code(&codes.abnormal)),
                        model_id: index.engine().manifest().model_id.clone(),
                    }),
                }))
            }
            Err(crate::index::QueryError::NotFound { .. }) => Ok(Response::new(ShardSliceCodes {
                found: false,
                codes: None,
            })),
            Err(error) => Err(query_error(&error)),
        }
    }

    async fn deleted(
        &self,
        request: Request<DeletedRequest>,
    ) -> Result<Response<DeletedResponse>, Status> {
        let request = request.into_inner();
        let wait = Duration::from_millis(u64::from(request.wait_ms.min(60_000)));
        let answer = match self.progress.deleted(request.sequence, wait).await {
            DeletedState::Pending => DeletedResponse::default(),
            DeletedState::AppliedUncounted => DeletedResponse {
                applied: true,
                ..DeletedResponse::default()
            },
            DeletedState::Applied(counts) => DeletedResponse {
                applied: true,
                known: true,
                records_deleted: counts.records,
                instances_deleted: counts.instances,
            },
        };
        Ok(Response::new(answer))
    }

    type StudiesReceivedStream =
        tokio_stream::wrappers::ReceiverStream<Result<StudyReceived, Status>>;

    async fn studies_received(
        &self,
        _request: Request<StudiesReceivedRequest>,
    ) -> Result<Response<Self::StudiesReceivedStream>, Status> {
        super::similar::studies_received(&self.state).map(Response::new)
    }

    async fn similar_studies(
        &self,
        request: Request<SimilarStudiesRequest>,
    ) -> Result<Response<ShardSimilarStudies>, Status> {
        super::similar::similar_studies(&self.state, &self.sequences, request.into_inner())
            .await
            .map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_survive_a_restart_and_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Sequences::open(dir.path()).unwrap();
            s.record("1.2.3", 7).unwrap();
            s.record("1.2.4", 9).unwrap();
            s.record("1.2.3", 11).unwrap(); // a later copy: the first wins
            s.sync().unwrap();
        }
        let path = dir.path().join("sequences");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"12 1.2.").unwrap(); // torn by a crash
        drop(file);
        let s = Sequences::open(dir.path()).unwrap();
        assert_eq!(
            (s.get("1.2.3"), s.get("1.2.4"), s.len()),
            (Some(7), Some(9), 2)
        );
        s.record("1.2.5", 13).unwrap();
        drop(s);
        let s = Sequences::open(dir.path()).unwrap();
        assert_eq!(s.get("1.2.5"), Some(13));
    }

    #[test]
    fn checkpoint_round_trips_and_starts_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_checkpoint(dir.path()).unwrap(), 0);
        write_checkpoint(dir.path(), 42).unwrap();
        assert_eq!(read_checkpoint(dir.path()).unwrap(), 42);
        assert_eq!(consumer_name(3, "pod-1.a"), "shard-3-pod_1_a");
    }
}
