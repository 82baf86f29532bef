//! The replicated ingest log: one JetStream stream whose subjects are the shards, written by
//! routers (publish, then wait for JetStream's acknowledgement) and read by shards.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;

use super::shard_map::{ShardMap, subject};
use crate::config::ClusterConfig;

/// The name of the ingest stream.
pub const STREAM: &str = "DIPTYCH_INGEST";
/// How long JetStream remembers a message id to drop a second publish of the same instance.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Why the ingest log cannot be reached or written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// No NATS server of `[cluster] nats_url` answered.
    #[error(
        "cannot connect to NATS at {url} ({source}); check [cluster] nats_url and that the \
         NATS servers run with JetStream enabled"
    )]
    Connect {
        /// The configured URLs.
        url: String,
        /// What the client said.
        source: async_nats::ConnectError,
    },
    /// The stream could not be created or read.
    #[error(
        "the JetStream stream {STREAM} cannot be created or read ({0}); check that JetStream \
         is enabled and [cluster] stream_replicas is at most the number of NATS servers"
    )]
    Stream(String),
    /// A publish was refused or not acknowledged.
    #[error("JetStream did not store the instance ({0}); retry later")]
    Publish(String),
    /// No acknowledgement within `[cluster] publish_timeout_s`.
    #[error(
        "JetStream did not acknowledge the instance within {0:?} ([cluster] publish_timeout_s); \
         retry later"
    )]
    Timeout(Duration),
}

/// Connects to the NATS servers of `config` (comma-separated URLs) and opens JetStream.
pub async fn connect(config: &ClusterConfig) -> Result<jetstream::Context, LogError> {
    let urls: Vec<&str> = config
        .nats_url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    let client = async_nats::ConnectOptions::new()
        .name("diptych")
        .retry_on_initial_connect()
        .connect(urls.as_slice())
        .await
        .map_err(|source| LogError::Connect {
            url: config.nats_url.clone(),
            source,
        })?;
    Ok(jetstream::new(client))
}

/// The ingest stream, created with `replicas` copies if it does not exist yet (an existing
/// stream is used as it is).
pub async fn ensure_stream(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<stream::Stream, LogError> {
    js.get_or_create_stream(stream::Config {
        name: STREAM.to_string(),
        subjects: vec![format!("{}.*", super::SUBJECT_PREFIX)],
        storage: stream::StorageType::File,
        num_replicas: replicas.max(1),
        duplicate_window: DUPLICATE_WINDOW,
        description: Some("diptych: instances accepted by the routers, by shard".to_string()),
        ..Default::default()
    })
    .await
    .map_err(|e| LogError::Stream(e.to_string()))
}

/// Where a published instance went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Its shard.
    pub shard: u32,
    /// Its stream sequence (of the first copy, for a duplicate).
    pub sequence: u64,
    /// Whether JetStream already had it (same SOP Instance UID within the duplicate window).
    pub duplicate: bool,
}

/// A router's writer of the ingest log.
#[derive(Clone)]
pub struct IngestLog {
    js: jetstream::Context,
    map: ShardMap,
    timeout: Duration,
}

impl IngestLog {
    /// A writer over `js`, placing studies with `map`, waiting at most `timeout` for each ack.
    pub fn new(js: jetstream::Context, map: ShardMap, timeout: Duration) -> Self {
        IngestLog { js, map, timeout }
    }

    /// The placement of studies on shards.
    pub fn map(&self) -> &ShardMap {
        &self.map
    }

    /// Publishes one instance's bytes on its study's shard subject and waits until JetStream
    /// has stored it (on a quorum of the stream's replicas). A refused or lost publish (no
    /// stream leader during an election, a NATS node restarting) is tried again until the
    /// timeout: the message id (the SOP Instance UID) keeps a retried publish from adding a copy.
    pub async fn publish(
        &self,
        study_instance_uid: &str,
        sop_instance_uid: &str,
        bytes: Vec<u8>,
    ) -> Result<Published, LogError> {
        let shard = self.map.shard_of(study_instance_uid);
        self.send(shard, sop_instance_uid, None, Bytes::from(bytes))
            .await
    }

    /// Publishes a deletion on `shard`'s subject (docs/CLUSTER.md, "Deletes"): every replica of
    /// the shard applies it in stream order, and a shard rebuilt from the stream replays it.
    /// The message id is drawn once, so a retried publish does not add a second deletion.
    pub async fn publish_delete(
        &self,
        shard: u32,
        target: &crate::record::DeleteTarget,
    ) -> Result<Published, LogError> {
        let id = format!("delete-{}", uuid::Uuid::new_v4());
        let (header, payload) = super::deletes::message_of(target);
        self.send(shard, &id, Some(header), payload).await
    }

    /// Publishes `payload` on `shard`'s subject with the message id `id` (and one more header),
    /// retrying until JetStream acknowledges it or the timeout passes.
    async fn send(
        &self,
        shard: u32,
        id: &str,
        extra: Option<(&'static str, &'static str)>,
        payload: Bytes,
    ) -> Result<Published, LogError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(50);
        let ack = loop {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
            if let Some((name, value)) = extra {
                headers.insert(name, value);
            }
            let attempt = async {
                let ack = self
                    .js
                    .publish_with_headers(subject(shard), headers, payload.clone())
                    .await
                    .map_err(|e| LogError::Publish(e.to_string()))?;
                ack.await.map_err(|e| LogError::Publish(e.to_string()))
            };
            let error = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(ack)) => break ack,
                Ok(Err(error)) => error,
                Err(_) => return Err(LogError::Timeout(self.timeout)),
            };
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(error);
            }
            tracing::debug!(%error, "publish to the ingest log failed; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        };
        Ok(Published {
            shard,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}
