//! Configuration of `diptych serve`: defaults, then a TOML file, then `DIPTYCH_*` environment
//! variables, then command-line flags — each later source overriding the earlier ones.
//!
//! ```toml
//! data_dir = "data"
//! model = "models/synth-v9"
//! viewer_url_template = "https://viewer.example/viewer?StudyInstanceUIDs={study_instance_uid}"
//! shutdown_deadline_s = 25.0       # SIGTERM: drain, checkpoint and exit within this
//!
//! [grpc]
//! addr = "0.0.0.0:50051"
//! max_message_bytes = 67108864
//! # tls_cert = "grpc.pem"; tls_key = "grpc.key"; tls_client_ca = "clients-ca.pem"
//! web_allowed_origins = ["https://ohif.hospital.example"]  # browser pages calling gRPC-Web
//!
//! [auth]                           # who may call the gRPC API (see crate::auth)
//! tokens_file = "tokens.toml"      # callers, roles, tokens; none: open on loopback only
//! allow_unauthenticated = false    # true: no tokens needed on any address (a proxy authenticates)
//!
//! [http]
//! addr = "0.0.0.0:8080"            # the page at /, /metrics, /healthz, /readyz
//! page = true                      # serve the page at /
//!
//! [log]
//! format = "text"                  # text | json (one object per line)
//!
//! [encoder]
//! execution_provider = "auto"      # auto | cuda | cpu
//! ort_library = "/opt/onnxruntime/libonnxruntime.so.1.31.0"
//! sessions = 1                     # ONNX Runtime sessions per graph
//! intra_threads = 0                # threads per session; 0 = cores / sessions
//! intra_op_spinning = false        # idle ONNX Runtime threads spin instead of sleeping
//! precision = "float"              # float | int8 (the bundle's `diptych quantize` graph)
//! nice = 10                        # the encoder's threads yield the cores to acknowledgements
//! max_batch = 32
//! max_queue_delay_ms = 2
//! queue_capacity = 1024
//!
//! [index]
//! max_backlog_frames = 4096        # acknowledged, not yet indexed; beyond it acks wait
//! min_free_bytes = 1073741824      # below this much free disk, new instances are refused
//!
//! [dicom]
//! enabled = true
//! addr = "0.0.0.0:11112"
//! ae_title = "DIPTYCH"
//! max_associations = 32
//! allowed_callers = ["MODALITY1", "PACS@10.0.0.5"]   # empty: any caller; first start only
//! study_quiet_period_s = 10
//! # tls_cert = "server.pem"; tls_key = "server.key"; tls_client_ca = "ca.pem"
//! # tls_addr = "0.0.0.0:2762"          # DICOM-TLS, beside addr; plain = false for TLS only
//! # [dicom.kos]
//! # destination = "WEASIS@10.0.0.9:11113"   # first start only, then `diptych admin kos`
//! # archive = "teaching"                  # or "de-identified"; KOS reference other patients
//!
//! [audit]                        # who saw which patient's data (see crate::audit)
//! enabled = true
//! path = "data/audit/audit.jsonl"  # default: <data_dir>/audit/audit.jsonl; JSON lines
//! max_bytes = 67108864             # rotate past this size
//! keep = 10                        # rotated files kept (audit.jsonl.1 … .10)
//! queue_capacity = 4096            # events waiting for the writer; beyond it dropped and logged
//! # syslog_addr = "audit.example:6514"   # RFC 5424 over TCP, octet-counted (RFC 6587)
//! # syslog_tls_ca = "audit-ca.pem"       # with it, over TLS, the receiver verified
//!
//! # [archive]                    # where a re-index fetches instances without a kept frame
//! # dicom = "PACS@10.0.0.7:104"   # C-GET at IMAGE level, calling as dicom.ae_title
//! # method = "c-get"              # or "wado-rs", with url = "http://pacs:8042/dicom-web"
//! # timeout_s = 120
//!
//! [images]
//! max_pixels = 134217728           # rows × columns × frames per DICOM instance
//! max_inflated_bytes = 536870912   # a deflated data set, once inflated
//! ```
//!
//! Environment variables: `DIPTYCH_CONFIG`, `DIPTYCH_DATA_DIR`, `DIPTYCH_MODEL`,
//! `DIPTYCH_GRPC_ADDR`, `DIPTYCH_HTTP_ADDR`, `DIPTYCH_LOG_FORMAT`, `DIPTYCH_EXECUTION_PROVIDER`,
//! `DIPTYCH_ORT_LIBRARY`, `DIPTYCH_MAX_BATCH`, `DIPTYCH_SESSIONS`, `DIPTYCH_DICOM_ADDR`,
//! `DIPTYCH_AE_TITLE`, `DIPTYCH_TOKENS_FILE`, `DIPTYCH_GRPC_TLS_CERT`, `DIPTYCH_GRPC_TLS_KEY`,
//! `DIPTYCH_GRPC_TLS_CLIENT_CA`, `DIPTYCH_AUDIT_ENABLED`, `DIPTYCH_AUDIT_PATH`,
//! `DIPTYCH_AUDIT_SYSLOG_ADDR`, `DIPTYCH_AUDIT_SYSLOG_TLS_CA`, `DIPTYCH_CLUSTER_SHARD`,
//! `DIPTYCH_CLUSTER_REPLICA`.
//!
//! Every key, with its default, variable and flag, is in [`reference::KEYS`], from which
//! `diptych config reference` prints docs/CONFIGURATION.md.

pub mod reference;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use diptych_dicom_adapter::Limits;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Everything `diptych serve` can be configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Folder for the service's data (store and catalog, from #3 on); created if missing.
    pub data_dir: PathBuf,
    /// The model bundle folder.
    pub model: PathBuf,
    /// The gRPC server.
    pub grpc: GrpcConfig,
    /// The HTTP port: metrics, liveness and readiness.
    pub http: HttpConfig,
    /// How the server logs.
    pub log: LogConfig,
    /// ONNX Runtime and dynamic batching.
    pub encoder: EncoderConfig,
    /// Bounds on the DICOM instances and raw images accepted.
    pub images: Limits,
    /// The DICOM listener and the answers sent to viewers.
    pub dicom: DicomConfig,
    /// The index's ingest backlog.
    pub index: IndexConfig,
    /// Who may call the gRPC API.
    pub auth: AuthConfig,
    /// The audit trail: file and syslog.
    pub audit: crate::audit::AuditConfig,
    /// Past one machine: this process's role and the JetStream ingest log (docs/CLUSTER.md).
    pub cluster: ClusterConfig,
    /// The archive a re-index fetches instances from again when they have no usable kept frame;
    /// `None`: such a re-index is refused.
    pub archive: Option<crate::archive::ArchiveConfig>,
    /// A viewer deep link for search hits, e.g. an OHIF URL:
    /// `https://viewer.example/viewer?StudyInstanceUIDs={study_instance_uid}`
    /// (placeholders `{study_instance_uid}`, `{series_instance_uid}`, `{sop_instance_uid}`).
    pub viewer_url_template: Option<String>,
    /// On SIGTERM or Ctrl-C, the seconds allowed for answering what is in flight, applying
    /// every acknowledged instance and taking the final checkpoint; past it the process exits
    /// with status 1 and the next start replays the log. Keep it below Kubernetes'
    /// `terminationGracePeriodSeconds` (30 by default).
    pub shutdown_deadline_s: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            model: PathBuf::from("models/synth-v9"),
            grpc: GrpcConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            encoder: EncoderConfig::default(),
            images: Limits::default(),
            dicom: DicomConfig::default(),
            index: IndexConfig::default(),
            auth: AuthConfig::default(),
            audit: crate::audit::AuditConfig::default(),
            cluster: ClusterConfig::default(),
            archive: None,
            viewer_url_template: None,
            shutdown_deadline_s: 25.0,
        }
    }
}

/// The index's ingest backlog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexConfig {
    /// Frames acknowledged but not yet indexed that may wait in memory (64 KiB each at 128×128);
    /// once reached, further instances wait for room before they are acknowledged, so senders
    /// slow to the indexing rate instead of memory growing.
    pub max_backlog_frames: usize,
    /// Free bytes kept on the data folder's file system: below it, C-STORE answers 0xA700 and
    /// Ingest RESOURCE_EXHAUSTED before anything is written, so the log, the store and the
    /// catalog never meet a full disk in normal operation. 0 turns the floor off.
    pub min_free_bytes: u64,
    /// Keep every record's pre-processed frame in `<data_dir>/frames/` (input_size² × 4 bytes:
    /// 64 KiB per slice at 128×128), so that `diptych admin reindex` can re-encode the index
    /// with a new bundle without the archive.
    pub keep_frames: bool,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            max_backlog_frames: 4096,
            min_free_bytes: 1 << 30,
            keep_frames: false,
        }
    }
}

/// What a `diptych serve` process is in a deployment (docs/CLUSTER.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// One node: DICOM listener, local write-ahead log, index and API in one process.
    #[default]
    Single,
    /// Stateless: takes C-STOREs and publishes them to JetStream; answers searches by
    /// scatter-gather over the shards.
    Router,
    /// One replica of one index shard: consumes its subject of the ingest stream.
    Shard,
    /// Stateless: runs the encoder graph for routers and shards (`[encoder] remote_url`).
    Encoder,
}

/// Past one machine: the role of this process, the JetStream ingest log and the shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `single` (the default), `router` or `shard`.
    pub role: Role,
    /// The NATS servers, comma-separated `nats://HOST:PORT` URLs.
    pub nats_url: String,
    /// Shards of the cluster, fixed at install; the same on every router and shard.
    pub shards: u32,
    /// The shard this process serves (role `shard`), from 0.
    pub shard: u32,
    /// The name of this replica of its shard (role `shard`); it names its durable consumer,
    /// so two replicas of a shard need two names.
    pub replica: String,
    /// Copies JetStream keeps of the ingest stream when a router creates it (3 in production;
    /// at most the number of NATS servers).
    pub stream_replicas: usize,
    /// Role `router`: the internal gRPC address of each shard, `http://HOST:PORT`, in shard
    /// order; several replicas of one shard separated by `|`.
    pub shard_addrs: Vec<String>,
    /// Longest wait for JetStream's acknowledgement of a publish, in seconds; past it the
    /// C-STORE is answered 0xA700 (retry later).
    pub publish_timeout_s: f64,
    /// Longest wait for a shard's search answer, in seconds; past it the shard counts as
    /// missing.
    pub shard_timeout_s: f64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            role: Role::Single,
            nats_url: "nats://127.0.0.1:4222".to_string(),
            shards: 1,
            shard: 0,
            replica: "0".to_string(),
            stream_replicas: 3,
            shard_addrs: Vec::new(),
            publish_timeout_s: 10.0,
            shard_timeout_s: 10.0,
        }
    }
}

/// The DICOM listener (C-ECHO, C-STORE) and the DICOM answers sent to viewers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DicomConfig {
    /// Whether `diptych serve` listens for DICOM at all.
    pub enabled: bool,
    /// Address of the plain DICOM listener, HOST:PORT.
    pub addr: SocketAddr,
    /// Whether the plain listener runs; false for a TLS-only node (needs `tls_cert`).
    pub plain: bool,
    /// This node's AE title; associations calling another title are rejected.
    pub ae_title: String,
    /// Associations served at once; more get a transient reject.
    pub max_associations: usize,
    /// Largest PDU accepted, in bytes.
    pub max_pdu_length: u32,
    /// Longest wait for the rest of a PDU, in seconds.
    pub read_timeout_s: u64,
    /// Longest wait for the next message of an association, in seconds.
    pub idle_timeout_s: u64,
    /// Calling AE titles allowed, each `AE` or `AE@ip`; empty allows any caller. Only the seed
    /// of `<data_dir>/admin/dicom-peers.json` on the first start; after that the file wins.
    pub allowed_callers: Vec<String>,
    /// Address of the DICOM-TLS listener, HOST:PORT, which runs when `tls_cert` is set.
    pub tls_addr: SocketAddr,
    /// DICOM over TLS: PEM files of the certificate chain and key (both, or neither).
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert` (PEM).
    pub tls_key: Option<PathBuf>,
    /// When set, callers must present a certificate signed by one of these CAs (PEM).
    pub tls_client_ca: Option<PathBuf>,
    /// A study is "received" once no instance of it arrived for this many seconds; then its
    /// similar studies go out on the Watch stream (and as a KOS, when configured).
    pub study_quiet_period_s: f64,
    /// Send a Key Object Selection document per received study to a viewer.
    pub kos: Option<KosConfig>,
}

impl Default for DicomConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            addr: SocketAddr::from(([0, 0, 0, 0], 11112)),
            plain: true,
            ae_title: "DIPTYCH".to_string(),
            max_associations: 32,
            max_pdu_length: 64 * 1024,
            read_timeout_s: 30,
            idle_timeout_s: 120,
            allowed_callers: Vec::new(),
            tls_addr: SocketAddr::from(([0, 0, 0, 0], 2762)),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            study_quiet_period_s: 10.0,
            kos: None,
        }
    }
}

/// Where Key Object Selection documents of received studies go. They reference other patients'
/// images, so they are only sent when the archive is de-identified or a teaching collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KosConfig {
    /// The viewer or archive to C-STORE to, `AE@HOST:PORT`. Only the seed of the KOS
    /// destinations in `<data_dir>/admin/dicom-peers.json` on the first start; after that the
    /// file wins.
    pub destination: String,
    /// What the archive holds: `de-identified` or `teaching`; anything else refuses to start.
    pub archive: String,
    /// Similar instances referenced per mode.
    #[serde(default = "default_kos_top_k")]
    pub top_k: u32,
}

fn default_kos_top_k() -> u32 {
    5
}

/// The gRPC server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Address to listen on, HOST:PORT.
    pub addr: SocketAddr,
    /// Largest request or response message, in bytes.
    pub max_message_bytes: usize,
    /// TLS on the gRPC port: PEM file of the certificate chain (with `tls_key`, or neither).
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert` (PEM).
    pub tls_key: Option<PathBuf>,
    /// When set, clients must present a certificate signed by one of these CAs (PEM).
    pub tls_client_ca: Option<PathBuf>,
    /// Origins (`scheme://host[:port]`) whose pages may call the API from a browser with
    /// gRPC-Web (CORS); empty: none but diptych's own page on a loopback address.
    pub web_allowed_origins: Vec<String>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 50051)),
            max_message_bytes: 64 * 1024 * 1024,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            web_allowed_origins: Vec::new(),
        }
    }
}

/// Who may call the gRPC API (the policy is described in [`crate::auth`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The tokens file: callers with a name, a role and a bearer token (or a client-certificate
    /// common name). Without one, the API is open on a loopback address only.
    pub tokens_file: Option<PathBuf>,
    /// Serve without credentials on a non-loopback address (a trusted network, or a proxy in
    /// front that authenticates); start-up warns. Excludes `tokens_file`.
    pub allow_unauthenticated: bool,
}

/// The HTTP port, for what is not gRPC: `/metrics` (Prometheus), `/healthz` (liveness) and
/// `/readyz` (readiness, mirroring gRPC health).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on, HOST:PORT.
    pub addr: SocketAddr,
    /// Serve the page at `/`: search, side by side, composite and overview, a client of the
    /// gRPC API over gRPC-Web.
    pub page: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            page: true,
        }
    }
}

/// How the server logs (to stderr; the level comes from `RUST_LOG`, default `info`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (for people) or `json` (one object per line, for log collectors).
    pub format: LogFormat,
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, span fields (request id, step) included.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("{other:?} is not a log format; use text or json")),
        }
    }
}

/// Which ONNX Runtime execution provider runs the graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    /// CUDA when it registers, otherwise CPU.
    Auto,
    /// CUDA, or fail at start-up.
    Cuda,
    /// CPU only.
    Cpu,
}

impl FromStr for ExecutionProvider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cuda" => Ok(Self::Cuda),
            "cpu" => Ok(Self::Cpu),
            other => Err(format!(
                "{other:?} is not an execution provider; use auto, cuda or cpu"
            )),
        }
    }
}

/// Which of the bundle's encoder graphs runs: the float one, or the int8 copy that
/// `diptych quantize` made (docs/QUANTIZATION.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// `encoder.onnx`, as trained.
    #[default]
    Float,
    /// The manifest's `encoder_int8` graph.
    Int8,
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "float" => Ok(Self::Float),
            "int8" => Ok(Self::Int8),
            other => Err(format!("{other:?} is not a precision; use float or int8")),
        }
    }
}

/// ONNX Runtime sessions and the dynamic batcher in front of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncoderConfig {
    /// auto, cuda or cpu.
    pub execution_provider: ExecutionProvider,
    /// Path of libonnxruntime; when absent, `ORT_DYLIB_PATH`, then the project cache.
    pub ort_library: Option<PathBuf>,
    /// ONNX Runtime sessions per graph (each runs one batch at a time).
    pub sessions: usize,
    /// Threads per session; 0 shares the machine's cores among the sessions.
    pub intra_threads: usize,
    /// Whether ONNX Runtime's idle intra-op threads spin waiting for work. Off by default: the
    /// listener, decoding and the catalog share the cores, and spinning threads take CPU from
    /// them; on a machine that only encodes, spinning can shave latency.
    pub intra_op_spinning: bool,
    /// Which encoder graph of the bundle runs: float, or the int8 copy of `diptych quantize`.
    pub precision: Precision,
    /// Nice value (0..=19) of the encoder's threads: above 0 they yield the cores to the DICOM
    /// listener's acknowledgements and to searches when both want them (see
    /// `encoder/priority.rs`); 0 runs them at the process's own priority.
    pub nice: i32,
    /// Largest batch handed to a session.
    pub max_batch: usize,
    /// Longest a request waits for others to join its batch, in milliseconds.
    pub max_queue_delay_ms: u64,
    /// Requests that may wait in the queue before new ones are refused.
    pub queue_capacity: usize,
    /// `http://host:port` of a cluster's encoder role that runs the encoder graph for this
    /// process (docs/CLUSTER.md); empty runs it here with ONNX Runtime.
    pub remote_url: String,
    /// The longest one batch may take at the remote encoder, in seconds.
    pub remote_timeout_s: f64,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            execution_provider: ExecutionProvider::Auto,
            ort_library: None,
            sessions: 1,
            intra_threads: 0,
            intra_op_spinning: false,
            precision: Precision::Float,
            nice: 10,
            max_batch: 32,
            max_queue_delay_ms: 2,
            queue_capacity: 1024,
            remote_url: String::new(),
            remote_timeout_s: 30.0,
        }
    }
}

impl EncoderConfig {
    /// The longest a request waits for its batch to fill.
    pub fn max_queue_delay(&self) -> Duration {
        Duration::from_millis(self.max_queue_delay_ms)
    }
}

/// Values given on the command line; `None` leaves the earlier sources' value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--data-dir DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--model DIR`.
    pub model: Option<PathBuf>,
    /// `--grpc-addr HOST:PORT`.
    pub grpc_addr: Option<SocketAddr>,
    /// `--http-addr HOST:PORT`.
    pub http_addr: Option<SocketAddr>,
    /// `--log-format text|json`.
    pub log_format: Option<LogFormat>,
    /// `--execution-provider auto|cuda|cpu`.
    pub execution_provider: Option<ExecutionProvider>,
    /// `--ort-library PATH`.
    pub ort_library: Option<PathBuf>,
    /// `--dicom-addr HOST:PORT`.
    pub dicom_addr: Option<SocketAddr>,
    /// `--ae-title TITLE`.
    pub ae_title: Option<String>,
    /// `--no-dicom`: do not listen for DICOM.
    pub no_dicom: bool,
    /// `--tokens-file FILE`.
    pub tokens_file: Option<PathBuf>,
}

/// Why the configuration could not be assembled.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML of the expected shape.
    #[error("configuration file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message (it names the key and line).
        message: String,
    },
    /// An environment variable holds an unusable value.
    #[error("environment variable {name}={value:?} is invalid: {problem}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        problem: String,
    },
    /// A value is out of its range.
    #[error("configuration `{key}` = {value} is invalid: {problem}")]
    Invalid {
        /// The key, e.g. `encoder.max_batch`.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is allowed.
        problem: &'static str,
    },
    /// The `[archive]` section is unusable.
    #[error("configuration [archive] is invalid: {0}")]
    Archive(String),
}

impl Config {
    /// Assembles the configuration from defaults, the file (`--config`, else
    /// `DIPTYCH_CONFIG`), the environment (read through `env`) and the flags.
    pub fn load(
        overrides: &Overrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file = overrides
            .config
            .clone()
            .or_else(|| env("DIPTYCH_CONFIG").map(PathBuf::from));
        let mut config = match &file {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        config.apply_env(&env)?;
        config.apply_overrides(overrides);
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML configuration file; keys it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: match reference::unknown_key_hint(&text) {
                Some(hint) => format!("{}\n{hint}", e.to_string().trim_end()),
                None => e.to_string(),
            },
        })
    }

    /// One line naming what this configuration serves where, for `diptych config check`.
    pub fn summary(&self) -> String {
        let dicom = if self.dicom.enabled {
            let d = &self.dicom;
            let ports = match (d.plain, d.tls_cert.is_some()) {
                (true, true) => format!("DICOM {} and DICOM-TLS {}", d.addr, d.tls_addr),
                (false, true) => format!("DICOM-TLS {} only", d.tls_addr),
                _ => format!("DICOM {}", d.addr),
            };
            format!("{ports} as {}", d.ae_title.trim())
        } else {
            "no DICOM".to_string()
        };
        let provider = format!("{:?}", self.encoder.execution_provider).to_lowercase();
        let log = format!("{:?}", self.log.format).to_lowercase();
        format!(
            "model {}, data {}, gRPC {}, HTTP {}, {dicom}, encoder {provider} ×{} batch {}, {log} logs",
            self.model.display(),
            self.data_dir.display(),
            self.grpc.addr,
            self.http.addr,
            self.encoder.sessions,
            self.encoder.max_batch,
        )
    }

    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parsed<T: FromStr>(
            name: &'static str,
            value: String,
            what: &str,
        ) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value.parse::<T>().map_err(|e| ConfigError::Env {
                name,
                problem: format!("{e}; expected {what}"),
                value,
            })
        }
        if let Some(v) = env("DIPTYCH_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("DIPTYCH_MODEL") {
            self.model = PathBuf::from(v);
        }
        if let Some(v) = env("DIPTYCH_GRPC_ADDR") {
            self.grpc.addr = parsed("DIPTYCH_GRPC_ADDR", v, "HOST:PORT, e.g. 0.0.0.0:50051")?;
        }
        if let Some(v) = env("DIPTYCH_HTTP_ADDR") {
            self.http.addr = parsed("DIPTYCH_HTTP_ADDR", v, "HOST:PORT, e.g. 0.0.0.0:8080")?;
        }
        if let Some(v) = env("DIPTYCH_LOG_FORMAT") {
            self.log.format = parsed("DIPTYCH_LOG_FORMAT", v, "text or json")?;
        }
        if let Some(v) = env("DIPTYCH_ENCODER_PRECISION") {
            self.encoder.precision = parsed("DIPTYCH_ENCODER_PRECISION", v, "float or int8")?;
        }
        if let Some(v) = env("DIPTYCH_EXECUTION_PROVIDER") {
            self.encoder.execution_provider =
                parsed("DIPTYCH_EXECUTION_PROVIDER", v, "auto, cuda or cpu")?;
        }
        if let Some(v) = env("DIPTYCH_ORT_LIBRARY") {
            self.encoder.ort_library = Some(PathBuf::from(v));
        }
        if let Some(v) = env("DIPTYCH_MAX_BATCH") {
            self.encoder.max_batch = parsed("DIPTYCH_MAX_BATCH", v, "a whole number ≥ 1")?;
        }
        if let Some(v) = env("DIPTYCH_DICOM_ADDR") {
            self.dicom.addr = parsed("DIPTYCH_DICOM_ADDR", v, "HOST:PORT, e.g. 0.0.0.0:11112")?;
        }
        if let Some(v) = env("DIPTYCH_AE_TITLE") {
            self.dicom.ae_title = v;
        }
        if let Some(v) = env("DIPTYCH_SESSIONS") {
            self.encoder.sessions = parsed("DIPTYCH_SESSIONS", v, "a whole number ≥ 1")?;
        }
        if let Some(v) = env("DIPTYCH_TOKENS_FILE") {
            self.auth.tokens_file = Some(PathBuf::from(v));
        }
        if let Some(v) = env("DIPTYCH_GRPC_TLS_CERT") {
            self.grpc.tls_cert = Some(PathBuf::from(v));
        }
        if let Some(v) = env("DIPTYCH_GRPC_TLS_KEY") {
            self.grpc.tls_key = Some(PathBuf::from(v));
        }
        if let Some(v) = env("DIPTYCH_GRPC_TLS_CLIENT_CA") {
            self.grpc.tls_client_ca = Some(PathBuf::from(v));
        }
        if let Some(v) = env("DIPTYCH_AUDIT_ENABLED") {
            self.audit.enabled = parsed("DIPTYCH_AUDIT_ENABLED", v, "true or false")?;
        }
        if let Some(v) = env("DIPTYCH_AUDIT_PATH") {
            self.audit.path = Some(PathBuf::from(v));
        }
        if let Some(v) = env("DIPTYCH_AUDIT_SYSLOG_ADDR") {
            self.audit.syslog_addr = Some(v);
        }
        if let Some(v) = env("DIPTYCH_AUDIT_SYSLOG_TLS_CA") {
            self.audit.syslog_tls_ca = Some(PathBuf::from(v));
        }
        // A shard pod of a Kubernetes StatefulSet learns its shard and replica name from its
        // environment: the chart sets the shard, and the replica from the pod's stable name.
        if let Some(v) = env("DIPTYCH_CLUSTER_SHARD") {
            self.cluster.shard = parsed("DIPTYCH_CLUSTER_SHARD", v, "a shard number from 0")?;
        }
        if let Some(v) = env("DIPTYCH_CLUSTER_REPLICA") {
            self.cluster.replica = v;
        }
        Ok(())
    }

    fn apply_overrides(&mut self, o: &Overrides) {
        if let Some(v) = &o.data_dir {
            self.data_dir = v.clone();
        }
        if let Some(v) = &o.model {
            self.model = v.clone();
        }
        if let Some(v) = o.grpc_addr {
            self.grpc.addr = v;
        }
        if let Some(v) = o.http_addr {
            self.http.addr = v;
        }
        if let Some(v) = o.log_format {
            self.log.format = v;
        }
        if let Some(v) = o.execution_provider {
            self.encoder.execution_provider = v;
        }
        if let Some(v) = &o.ort_library {
            self.encoder.ort_library = Some(v.clone());
        }
        if let Some(v) = o.dicom_addr {
            self.dicom.addr = v;
        }
        if let Some(v) = &o.ae_title {
            self.dicom.ae_title = v.clone();
        }
        if o.no_dicom {
            self.dicom.enabled = false;
        }
        if let Some(v) = &o.tokens_file {
            self.auth.tokens_file = Some(v.clone());
        }
    }

    /// Checks the ranges of numeric settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, value: usize, problem| {
            Err(ConfigError::Invalid {
                key,
                value: value.to_string(),
                problem,
            })
        };
        if !(self.shutdown_deadline_s.is_finite() && self.shutdown_deadline_s > 0.0) {
            return Err(ConfigError::Invalid {
                key: "shutdown_deadline_s",
                value: self.shutdown_deadline_s.to_string(),
                problem: "must be a positive number of seconds",
            });
        }
        let c = &self.cluster;
        if c.shards == 0 || c.shards > crate::cluster::shard_map::MAX_SHARDS {
            return invalid(
                "cluster.shards",
                c.shards as usize,
                "must be 1..=1024, the same on every router and shard",
            );
        }
        if c.role == Role::Shard && c.shard >= c.shards {
            return invalid(
                "cluster.shard",
                c.shard as usize,
                "must be below cluster.shards (shards are numbered from 0)",
            );
        }
        let remote = &self.encoder.remote_url;
        if !(remote.is_empty() || remote.starts_with("http://") || remote.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                key: "encoder.remote_url",
                value: remote.clone(),
                problem: "must be http://host:port or https://host:port of a cluster encoder \
                          role, or empty to encode here",
            });
        }
        if c.role == Role::Encoder && !remote.is_empty() {
            return Err(ConfigError::Invalid {
                key: "encoder.remote_url",
                value: remote.clone(),
                problem: "an encoder role runs the model itself; leave it empty there",
            });
        }
        let name_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if c.role == Role::Shard && (c.replica.is_empty() || !c.replica.chars().all(name_ok)) {
            return Err(ConfigError::Invalid {
                key: "cluster.replica",
                value: c.replica.clone(),
                problem: "must be a non-empty name of letters, digits, - and _ (it names the \
                          replica's JetStream consumer)",
            });
        }
        for (key, value) in [
            ("cluster.publish_timeout_s", c.publish_timeout_s),
            ("cluster.shard_timeout_s", c.shard_timeout_s),
            ("encoder.remote_timeout_s", self.encoder.remote_timeout_s),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(ConfigError::Invalid {
                    key,
                    value: value.to_string(),
                    problem: "must be a positive number of seconds",
                });
            }
        }
        let backlog = self.index.max_backlog_frames;
        if backlog == 0 || backlog > u32::MAX as usize {
            return invalid(
                "index.max_backlog_frames",
                backlog,
                "must be 1..=4294967295",
            );
        }
        for origin in &self.grpc.web_allowed_origins {
            if crate::grpc::web::check_origin(origin.trim_end_matches('/')).is_err() {
                return Err(ConfigError::Invalid {
                    key: "grpc.web_allowed_origins",
                    value: origin.clone(),
                    problem: "each entry must be an origin, scheme://host[:port] with no path, \
                              e.g. \"https://viewer.hospital.example\" or \"http://localhost:3000\"",
                });
            }
        }
        let e = &self.encoder;
        if e.sessions == 0 || e.sessions > 64 {
            return invalid("encoder.sessions", e.sessions, "must be 1..=64");
        }
        if !(0..=19).contains(&e.nice) {
            return Err(ConfigError::Invalid {
                key: "encoder.nice",
                value: e.nice.to_string(),
                problem: "must be 0..=19 (it only ever lowers the encoder's priority)",
            });
        }
        if e.max_batch == 0 || e.max_batch > 4096 {
            return invalid("encoder.max_batch", e.max_batch, "must be 1..=4096");
        }
        if e.queue_capacity < e.max_batch {
            return invalid(
                "encoder.queue_capacity",
                e.queue_capacity,
                "must be at least encoder.max_batch",
            );
        }
        if e.intra_threads > 1024 {
            return invalid("encoder.intra_threads", e.intra_threads, "must be 0..=1024");
        }
        let d = &self.dicom;
        if diptych_dicom_adapter::AeTitle::parse(&d.ae_title).is_err() {
            return Err(ConfigError::Invalid {
                key: "dicom.ae_title",
                value: d.ae_title.clone(),
                problem: "must be 1 to 16 printable ASCII characters without backslash",
            });
        }
        if d.max_associations == 0 {
            return invalid("dicom.max_associations", 0, "must be at least 1");
        }
        if d.tls_cert.is_some() != d.tls_key.is_some() {
            return Err(ConfigError::Invalid {
                key: "dicom.tls_cert",
                value: String::new(),
                problem: "tls_cert and tls_key go together: set both or neither",
            });
        }
        if d.enabled && !d.plain && d.tls_cert.is_none() {
            return Err(ConfigError::Invalid {
                key: "dicom.plain",
                value: "false".to_string(),
                problem: "a TLS-only node needs dicom.tls_cert and dicom.tls_key (the DICOM-TLS listener on dicom.tls_addr); set them, or leave plain = true",
            });
        }
        if d.plain && d.tls_cert.is_some() && d.addr == d.tls_addr && d.addr.port() != 0 {
            return Err(ConfigError::Invalid {
                key: "dicom.tls_addr",
                value: d.tls_addr.to_string(),
                problem: "the DICOM-TLS listener needs its own port, beside dicom.addr (the IANA dicom-tls port is 2762)",
            });
        }
        if !(d.study_quiet_period_s.is_finite() && d.study_quiet_period_s >= 0.0) {
            return Err(ConfigError::Invalid {
                key: "dicom.study_quiet_period_s",
                value: d.study_quiet_period_s.to_string(),
                problem: "must be a number of seconds ≥ 0",
            });
        }
        if let Some(kos) = &d.kos
            && kos.archive != "de-identified"
            && kos.archive != "teaching"
        {
            return Err(ConfigError::Invalid {
                key: "dicom.kos.archive",
                value: kos.archive.clone(),
                problem: "KOS documents reference other patients' images: set \"de-identified\" or \"teaching\" only when the archive is one, or remove [dicom.kos]",
            });
        }
        let g = &self.grpc;
        if g.tls_cert.is_some() != g.tls_key.is_some() {
            return Err(ConfigError::Invalid {
                key: "grpc.tls_cert",
                value: String::new(),
                problem: "tls_cert and tls_key go together: set both or neither",
            });
        }
        if g.tls_client_ca.is_some() && g.tls_cert.is_none() {
            return Err(ConfigError::Invalid {
                key: "grpc.tls_client_ca",
                value: String::new(),
                problem: "client certificates need TLS: set grpc.tls_cert and grpc.tls_key too",
            });
        }
        if self.auth.allow_unauthenticated && self.auth.tokens_file.is_some() {
            return Err(ConfigError::Invalid {
                key: "auth.allow_unauthenticated",
                value: "true".to_string(),
                problem: "a tokens file and unauthenticated access exclude each other: remove one",
            });
        }
        if self.grpc.max_message_bytes < 1024 {
            return invalid(
                "grpc.max_message_bytes",
                self.grpc.max_message_bytes,
                "must be at least 1024",
            );
        }
        if let Some(archive) = &self.archive
            && let Err(error) = archive.check()
        {
            return Err(ConfigError::Archive(error.to_string()));
        }
        if self.images.max_pixels == 0 {
            return invalid("images.max_pixels", 0, "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn write_file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = Config::load(&Overrides::default(), env_of(&[])).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("data"));
        assert_eq!(config.model, PathBuf::from("models/synth-v9"));
        assert_eq!(config.grpc.addr.to_string(), "0.0.0.0:50051");
        assert_eq!(config.encoder.execution_provider, ExecutionProvider::Auto);
        assert_eq!(config.encoder.ort_library, None);
    }

    #[test]
    fn file_then_environment_then_flags() {
        let file = write_file(
            r#"
            data_dir = "/from/file"
            model = "/model/file"
            [grpc]
            addr = "127.0.0.1:6000"
            [encoder]
            execution_provider = "cpu"
            max_batch = 8
            intra_op_spinning = true
            "#,
        );
        let flags = Overrides {
            config: Some(file.path().to_path_buf()),
            ..Overrides::default()
        };
        // File over defaults; untouched keys keep their defaults.
        let config = Config::load(&flags, env_of(&[])).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/from/file"));
        assert_eq!(config.grpc.addr.to_string(), "127.0.0.1:6000");
        assert_eq!(config.encoder.execution_provider, ExecutionProvider::Cpu);
        assert_eq!(config.encoder.max_batch, 8);
        assert!(config.encoder.intra_op_spinning);
        assert_eq!(config.encoder.max_queue_delay_ms, 2);
        assert!(!EncoderConfig::default().intra_op_spinning);

        // Environment over file.
        let env = env_of(&[
            ("DIPTYCH_DATA_DIR", "/from/env"),
            ("DIPTYCH_GRPC_ADDR", "127.0.0.1:7000"),
            ("DIPTYCH_EXECUTION_PROVIDER", "CUDA"),
        ]);
        let config = Config::load(&flags, &env).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/from/env"));
        assert_eq!(config.model, PathBuf::from("/model/file"));
        assert_eq!(config.grpc.addr.to_string(), "127.0.0.1:7000");
        assert_eq!(config.encoder.execution_provider, ExecutionProvider::Cuda);

        // Flags over environment.
        let flags = Overrides {
            data_dir: Some(PathBuf::from("/from/flag")),
            grpc_addr: Some("127.0.0.1:8000".parse().unwrap()),
            execution_provider: Some(ExecutionProvider::Cpu),
            ..flags
        };
        let config = Config::load(&flags, &env).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(config.grpc.addr.to_string(), "127.0.0.1:8000");
        assert_eq!(config.encoder.execution_provider, ExecutionProvider::Cpu);
        assert_eq!(
            config.model,
            PathBuf::from("/model/file"),
            "no flag: file value"
        );
    }

    #[test]
    fn http_address_and_log_format_come_from_file_env_and_flags() {
        assert_eq!(Config::default().http.addr.to_string(), "0.0.0.0:8080");
        assert_eq!(Config::default().log.format, LogFormat::Text);
        let file = write_file("[http]\naddr = \"127.0.0.1:9000\"\n[log]\nformat = \"json\"\n");
        let flags = Overrides {
            config: Some(file.path().to_path_buf()),
            ..Overrides::default()
        };
        let config = Config::load(&flags, env_of(&[])).unwrap();
        assert_eq!(config.http.addr.to_string(), "127.0.0.1:9000");
        assert_eq!(config.log.format, LogFormat::Json);
        let env = env_of(&[
            ("DIPTYCH_HTTP_ADDR", "127.0.0.1:9001"),
            ("DIPTYCH_LOG_FORMAT", "TEXT"),
        ]);
        let config = Config::load(&flags, &env).unwrap();
        assert_eq!(config.http.addr.to_string(), "127.0.0.1:9001");
        assert_eq!(config.log.format, LogFormat::Text);
        let flags = Overrides {
            http_addr: Some("127.0.0.1:9002".parse().unwrap()),
            log_format: Some(LogFormat::Json),
            ..flags
        };
        let config = Config::load(&flags, &env).unwrap();
        assert_eq!(config.http.addr.to_string(), "127.0.0.1:9002");
        assert_eq!(config.log.format, LogFormat::Json);
        let err = Config::load(
            &Overrides::default(),
            env_of(&[("DIPTYCH_LOG_FORMAT", "xml")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("DIPTYCH_LOG_FORMAT") && err.contains("text or json"),
            "{err}"
        );
        let err = Config::load(
            &Overrides::default(),
            env_of(&[("DIPTYCH_HTTP_ADDR", "8080")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("DIPTYCH_HTTP_ADDR") && err.contains("HOST:PORT"),
            "{err}"
        );
    }

    #[test]
    fn the_summary_names_what_is_served_where() {
        let summary = Config::default().summary();
        assert!(
            summary.contains("gRPC 0.0.0.0:50051")
                && summary.contains("HTTP 0.0.0.0:8080")
                && summary.contains("DICOM 0.0.0.0:11112 as DIPTYCH")
                && !summary.contains('\n'),
            "{summary}"
        );
    }

    #[test]
    fn an_empty_backlog_is_refused_with_its_key() {
        let file = write_file("[index]\nmax_backlog_frames = 0\n");
        let flags = Overrides {
            config: Some(file.path().to_path_buf()),
            ..Overrides::default()
        };
        let err = Config::load(&flags, env_of(&[])).unwrap_err().to_string();
        assert!(err.contains("index.max_backlog_frames"), "{err}");
    }

    #[test]
    fn a_remote_encoder_needs_a_url_and_an_encoder_role_none() {
        let load = |text: &str| {
            let file = write_file(text);
            let flags = Overrides {
                config: Some(file.path().to_path_buf()),
                ..Overrides::default()
            };
            Config::load(&flags, env_of(&[])).map_err(|e| e.to_string())
        };
        let config = load("[encoder]\nremote_url = \"http://encoder:50051\"\n").unwrap();
        assert_eq!(config.encoder.remote_url, "http://encoder:50051");
        let err = load("[encoder]\nremote_url = \"encoder:50051\"\n").unwrap_err();
        assert!(
            err.contains("encoder.remote_url") && err.contains("http://"),
            "{err}"
        );
        let err =
            load("[cluster]\nrole = \"encoder\"\n[encoder]\nremote_url = \"http://other:50051\"\n")
                .unwrap_err();
        assert!(err.contains("leave it empty"), "{err}");
        let err = load("[encoder]\nremote_timeout_s = -1.0\n").unwrap_err();
        assert!(err.contains("encoder.remote_timeout_s"), "{err}");
    }

    #[test]
    fn the_config_file_can_come_from_the_environment() {
        let file = write_file("model = \"/env/config/model\"\n");
        let env = env_of(&[("DIPTYCH_CONFIG", file.path().to_str().unwrap())]);
        let config = Config::load(&Overrides::default(), env).unwrap();
        assert_eq!(config.model, PathBuf::from("/env/config/model"));
    }

    #[test]
    fn a_shard_pod_takes_its_shard_and_replica_from_the_environment() {
        let file = write_file("[cluster]\nrole = \"shard\"\nshards = 4\n");
        let flags = Overrides {
            config: Some(file.path().to_path_buf()),
            ..Overrides::default()
        };
        let env = env_of(&[
            ("DIPTYCH_CLUSTER_SHARD", "3"),
            ("DIPTYCH_CLUSTER_REPLICA", "diptych-shard-3-1"),
        ]);
        let config = Config::load(&flags, env).unwrap();
        assert_eq!(config.cluster.shard, 3);
        assert_eq!(config.cluster.replica, "diptych-shard-3-1");

        let err = Config::load(&flags, env_of(&[("DIPTYCH_CLUSTER_SHARD", "4")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cluster.shard"), "{err}");
        let err = Config::load(&flags, env_of(&[("DIPTYCH_CLUSTER_SHARD", "one")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("DIPTYCH_CLUSTER_SHARD"), "{err}");
        let err = Config::load(&flags, env_of(&[("DIPTYCH_CLUSTER_REPLICA", "a.b")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cluster.replica"), "{err}");
    }

    #[test]
    fn mistakes_are_named() {
        let file = write_file("[encoder]\nmax_bach = 4\n");
        let flags = Overrides {
            config: Some(file.path().to_path_buf()),
            ..Overrides::default()
        };
        let err = Config::load(&flags, env_of(&[])).unwrap_err().to_string();
        assert!(err.contains("max_bach"), "unknown key named: {err}");

        let err = Config::load(
            &Overrides::default(),
            env_of(&[("DIPTYCH_GRPC_ADDR", "50051")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("DIPTYCH_GRPC_ADDR") && err.contains("HOST:PORT"),
            "{err}"
        );

        let err = Config::load(
            &Overrides::default(),
            env_of(&[("DIPTYCH_EXECUTION_PROVIDER", "tpu")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("auto, cuda or cpu"), "{err}");

        let err = Config::load(&Overrides::default(), env_of(&[("DIPTYCH_MAX_BATCH", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("encoder.max_batch"), "{err}");

        let missing = Overrides {
            config: Some(PathBuf::from("/nonexistent/diptych.toml")),
            ..Overrides::default()
        };
        let err = Config::load(&missing, env_of(&[])).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/diptych.toml"), "{err}");
    }

    #[test]
    fn dicom_settings_come_from_file_env_and_flags() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(
            &mut file,
            b"[dicom]\nae_title = \"ARCHIVE\"\nallowed_callers = [\"CT1\", \"PACS@10.0.0.5\"]\nstudy_quiet_period_s = 2.5\n",
        )
        .unwrap();
        let flags = Overrides {
            config: Some(file.path().to_path_buf()),
            ..Overrides::default()
        };
        let config =
            Config::load(&flags, env_of(&[("DIPTYCH_DICOM_ADDR", "127.0.0.1:104")])).unwrap();
        assert_eq!(config.dicom.ae_title, "ARCHIVE");
        assert_eq!(config.dicom.allowed_callers, ["CT1", "PACS@10.0.0.5"]);
        assert_eq!(config.dicom.addr.to_string(), "127.0.0.1:104");
        assert_eq!(config.dicom.study_quiet_period_s, 2.5);
        let flags = Overrides {
            ae_title: Some("FLAGGED".into()),
            no_dicom: true,
            ..flags
        };
        let config = Config::load(&flags, env_of(&[])).unwrap();
        assert_eq!(config.dicom.ae_title, "FLAGGED");
        assert!(!config.dicom.enabled);
        assert_eq!(Config::default().dicom.addr.port(), 11112);
        assert_eq!(Config::default().dicom.ae_title, "DIPTYCH");

        let too_long = Overrides {
            ae_title: Some("A-TITLE-LONGER-THAN-16".into()),
            ..Overrides::default()
        };
        let err = Config::load(&too_long, env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("dicom.ae_title"), "{err}");
    }

    #[test]
    fn grpc_tls_and_auth_come_from_file_env_and_flags() {
        let file = write_file(
            "[grpc]\ntls_cert = \"g.pem\"\ntls_key = \"g.key\"\n[auth]\ntokens_file = \"file.toml\"\n",
        );
        let flags = Overrides {
            config: Some(file.path().to_path_buf()),
            ..Overrides::default()
        };
        let config = Config::load(&flags, env_of(&[])).unwrap();
        assert_eq!(config.grpc.tls_cert, Some(PathBuf::from("g.pem")));
        assert_eq!(config.grpc.tls_key, Some(PathBuf::from("g.key")));
        assert_eq!(config.grpc.tls_client_ca, None);
        assert_eq!(config.auth.tokens_file, Some(PathBuf::from("file.toml")));
        assert!(!config.auth.allow_unauthenticated);
        let env = env_of(&[
            ("DIPTYCH_TOKENS_FILE", "env.toml"),
            ("DIPTYCH_GRPC_TLS_CLIENT_CA", "ca.pem"),
        ]);
        let config = Config::load(&flags, &env).unwrap();
        assert_eq!(config.auth.tokens_file, Some(PathBuf::from("env.toml")));
        assert_eq!(config.grpc.tls_client_ca, Some(PathBuf::from("ca.pem")));
        let flagged = Overrides {
            tokens_file: Some(PathBuf::from("flag.toml")),
            ..flags
        };
        let config = Config::load(&flagged, &env).unwrap();
        assert_eq!(config.auth.tokens_file, Some(PathBuf::from("flag.toml")));
        assert_eq!(Config::default().auth, AuthConfig::default());
    }

    #[test]
    fn grpc_tls_and_auth_mistakes_are_named() {
        let load = |text: &str| {
            let file = write_file(text);
            let flags = Overrides {
                config: Some(file.path().to_path_buf()),
                ..Overrides::default()
            };
            Config::load(&flags, env_of(&[])).unwrap_err().to_string()
        };
        let err = load("[grpc]\ntls_cert = \"g.pem\"\n");
        assert!(err.contains("grpc.tls_cert"), "{err}");
        let err = load("[grpc]\ntls_client_ca = \"ca.pem\"\n");
        assert!(err.contains("grpc.tls_client_ca"), "{err}");
        let err = load("[auth]\ntokens_file = \"t.toml\"\nallow_unauthenticated = true\n");
        assert!(err.contains("auth.allow_unauthenticated"), "{err}");
        let err = load("[auth]\ntoken_file = \"t.toml\"\n");
        assert!(err.contains("token_file"), "{err}");
    }

    #[test]
    fn kos_needs_a_de_identified_or_teaching_archive() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(
            &mut file,
            b"[dicom.kos]\ndestination = \"WEASIS@127.0.0.1:11113\"\narchive = \"clinical\"\n",
        )
        .unwrap();
        let flags = Overrides {
            config: Some(file.path().to_path_buf()),
            ..Overrides::default()
        };
        let err = Config::load(&flags, env_of(&[])).unwrap_err().to_string();
        assert!(
            err.contains("dicom.kos.archive") && err.contains("other patients"),
            "{err}"
        );
    }
}
