//! Past one machine: routers, shards and NATS JetStream as the replicated ingest log
//! (docs/CLUSTER.md).
//!
//! | module | what it is for |
//! |---|---|
//! | [`shard_map`] | which shard holds a study: rendezvous hashing of its Study Instance UID |
//! | [`merge`] | the exact merge of per-shard top-k lists into the global top-k |
//! | [`deletes`] | deletions through the ingest stream, and a replica's progress through it |
//! | [`ingest_log`] | the JetStream stream: connect, create, publish with acknowledgement |
//! | [`router`] | the router role: DICOM to the ingest log, search by scatter-gather |
//! | [`router_ingest`] | a router's IngestService: Ingest through the ingest log, deletes fanned out through it |
//! | [`router_watch`] | a router's Watch: the shards' received studies, their similar studies gathered from every shard |
//! | [`similar`] | a shard's received studies and its share of a study's similar studies, for the routers |
//! | [`router_info`] | a router's InfoService (summed over the shards) and ImageService (on a shard) |
//! | [`encoder`] | the encoder role: the model's encoder graph served to routers and shards |
//! | [`shard`] | the shard role: the durable consumer feeding the index, its checkpoint, `ShardService` |

pub mod deletes;
pub mod encoder;
pub mod ingest_log;
pub mod merge;
pub mod router;
pub mod router_info;
pub mod router_ingest;
pub mod router_watch;
pub mod shard;
pub mod shard_map;
pub mod similar;

/// The subjects of the ingest stream: `diptych.ingest.<shard>`.
pub const SUBJECT_PREFIX: &str = "diptych.ingest";

/// Why a role without an index of its own (a router, an encoder) cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// The configuration, or a start-up step.
    #[error("{0}")]
    Config(String),
    /// The model bundle.
    #[error(transparent)]
    Bundle(#[from] crate::bundle::BundleError),
    /// The ingest log.
    #[error(transparent)]
    Log(#[from] ingest_log::LogError),
    /// ONNX Runtime's sessions or the warm-up.
    #[error(transparent)]
    Engine(#[from] crate::encoder::EngineError),
    /// ONNX Runtime's library.
    #[error(transparent)]
    Runtime(#[from] crate::encoder::RuntimeError),
    /// A port.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC server.
    #[error("the gRPC server stopped: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The HTTP port (metrics and probes).
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
}
