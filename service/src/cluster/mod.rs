//! Past one machine: routers, shards and NATS JetStream as the replicated ingest log
//! (docs/CLUSTER.md).
//!
//! | module | what it is for |
//! |---|---|
//! | [`shard_map`] | which shard holds a study: rendezvous hashing of its Study Instance UID |
//! | [`merge`] | the exact merge of per-shard top-k lists into the global top-k |
//! | [`ingest_log`] | the JetStream stream: connect, create, publish with acknowledgement |
//! | [`router`] | the router role: DICOM to the ingest log, search by scatter-gather |
//! | [`encoder`] | the encoder role: the model's encoder graph served to routers and shards |
//! | [`shard`] | the shard role: the durable consumer feeding the index, its checkpoint, `ShardService` |

pub mod encoder;
pub mod ingest_log;
pub mod merge;
pub mod router;
pub mod shard;
pub mod shard_map;

/// The subjects of the ingest stream: `diptych.ingest.<shard>`.
pub const SUBJECT_PREFIX: &str = "diptych.ingest";
