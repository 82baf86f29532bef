//! The configuration reference: every key of the TOML file with its environment variable, flag
//! and meaning ([`KEYS`]); defaults come from [`Config::default`], so they cannot drift.
//! `diptych config reference` prints [`markdown`], committed as docs/CONFIGURATION.md; tests
//! fail when a key, variable or flag is missing here or the committed page is stale.

use std::collections::BTreeSet;

use super::Config;

/// One configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Dotted path in the TOML file, e.g. `encoder.max_batch`.
    pub key: &'static str,
    /// The environment variable that sets it, if any.
    pub env: Option<&'static str>,
    /// The `diptych serve` flag that sets it, if any.
    pub flag: Option<&'static str>,
    /// What it does, in one or two sentences (markdown).
    pub doc: &'static str,
    /// A value for keys that are unset by default (TOML syntax), shown as an example.
    pub example: Option<&'static str>,
    /// The default of a key in an optional section (TOML syntax), which
    /// [`Config::default`] cannot show because it leaves the section out; a test checks it.
    pub section_default: Option<&'static str>,
}

const fn key(key: &'static str, doc: &'static str) -> Key {
    Key {
        key,
        env: None,
        flag: None,
        doc,
        example: None,
        section_default: None,
    }
}

impl Key {
    const fn env(mut self, name: &'static str) -> Key {
        self.env = Some(name);
        self
    }

    const fn flag(mut self, flag: &'static str) -> Key {
        self.flag = Some(flag);
        self
    }

    const fn example(mut self, value: &'static str) -> Key {
        self.example = Some(value);
        self
    }

    const fn section_default(mut self, value: &'static str) -> Key {
        self.section_default = Some(value);
        self
    }

    /// The section it belongs to (`""` for the top level, `dicom.kos` for `dicom.kos.top_k`).
    pub fn section(&self) -> &'static str {
        self.key.rsplit_once('.').map_or("", |(section, _)| section)
    }
}

/// Every key of the configuration, in the order of the reference page.
pub const KEYS: &[Key] = &[
    key(
        "data_dir",
        "Folder for the service's data (write-ahead log, codes, catalog); created if missing.",
    )
    .env("DIPTYCH_DATA_DIR")
    .flag("--data-dir"),
    key("model", "The model bundle folder (manifest.json, encoder.onnx, decoder.onnx).")
        .env("DIPTYCH_MODEL")
        .flag("--model"),
    key(
        "viewer_url_template",
        "A viewer deep link added to every search hit; placeholders `{study_instance_uid}`, \
         `{series_instance_uid}`, `{sop_instance_uid}`.",
    )
    .example("\"https://viewer.example/viewer?StudyInstanceUIDs={study_instance_uid}\""),
    key(
        "shutdown_deadline_s",
        "On SIGTERM or Ctrl-C, seconds allowed for answering what is in flight, applying every \
         acknowledged instance and the final checkpoint; past it the process exits with status 1 \
         and the next start replays the log. Keep it below Kubernetes' \
         `terminationGracePeriodSeconds`.",
    ),
    key("grpc.addr", "gRPC (and gRPC health, reflection) listen address, HOST:PORT.")
        .env("DIPTYCH_GRPC_ADDR")
        .flag("--grpc-addr"),
    key(
        "grpc.max_message_bytes",
        "Largest gRPC request or response message, in bytes (at least 1024).",
    ),
    key(
        "grpc.tls_cert",
        "gRPC over TLS: PEM certificate chain (set with `grpc.tls_key`, or neither).",
    )
    .env("DIPTYCH_GRPC_TLS_CERT")
    .example("\"grpc.pem\""),
    key("grpc.tls_key", "The private key of `grpc.tls_cert` (PEM).")
        .env("DIPTYCH_GRPC_TLS_KEY")
        .example("\"grpc.key\""),
    key(
        "grpc.tls_client_ca",
        "When set, gRPC clients must present a certificate signed by one of these CAs (PEM); \
         without a tokens file, any such certificate may call everything.",
    )
    .env("DIPTYCH_GRPC_TLS_CLIENT_CA")
    .example("\"clients-ca.pem\""),
    key(
        "grpc.web_allowed_origins",
        "Origins (`scheme://host[:port]`, no path) whose pages may call the API from a browser \
         with gRPC-Web, e.g. `[\"https://ohif.hospital.example\"]` for a viewer extension (CORS). \
         Empty: no other site's page may; diptych's own page (`http.page`) is admitted on its \
         loopback origins. Callers still need a token and role like native gRPC clients.",
    ),
    key(
        "auth.tokens_file",
        "Who may call the gRPC API: a TOML file of `[[caller]]` entries (name, role `ingest`, \
         `search` or `admin`, and one of `token`, `token_file`, `token_env`, `client_cert_cn`). \
         Without one, the API is open on a loopback address only.",
    )
    .env("DIPTYCH_TOKENS_FILE")
    .flag("--tokens-file")
    .example("\"tokens.toml\""),
    key(
        "auth.allow_unauthenticated",
        "Serve the API without credentials on a non-loopback address (a trusted network, or an \
         authenticating proxy in front); start-up warns. Excludes `auth.tokens_file`.",
    ),
    key(
        "audit.enabled",
        "Record the audit trail: who saw which patient's data (searches, Watch answers, KOS \
         documents sent, Encode/Decompose and Info calls, DICOM associations, ingests, deletes, \
         refused credentials), apart from the logs.",
    )
    .env("DIPTYCH_AUDIT_ENABLED"),
    key(
        "audit.path",
        "The audit trail's JSON-lines file; unset: `<data_dir>/audit/audit.jsonl`.",
    )
    .env("DIPTYCH_AUDIT_PATH")
    .example("\"/var/log/diptych/audit.jsonl\""),
    key("audit.max_bytes", "Size at which the audit file is rotated, in bytes."),
    key(
        "audit.keep",
        "Rotated audit files kept (`audit.jsonl.1` … `.N`); older ones are removed.",
    ),
    key(
        "audit.queue_capacity",
        "Audit events waiting for the writer; beyond it, events nobody waits for are dropped, \
         counted and reported in the log.",
    ),
    key(
        "audit.sync_before_answer",
        "Calls that answer with patient data (Search, Watch, Encode, Decompose, the KOS) wait \
         until their audit event is fsynced, not only written to the operating system (which \
         survives a killed process but not a power cut).",
    ),
    key(
        "audit.answer_wait_s",
        "The longest such a call waits for its audit event to be written; past it the answer \
         goes out and the lapse is logged as an error.",
    ),
    key(
        "audit.syslog_addr",
        "`host:port` of the hospital's audit repository: RFC 5424 syslog over TCP, \
         octet-counted (RFC 6587).",
    )
    .env("DIPTYCH_AUDIT_SYSLOG_ADDR")
    .example("\"audit.hospital.example:6514\""),
    key(
        "audit.syslog_tls_ca",
        "PEM file of CA certificates: syslog goes over TLS, the receiver verified against it.",
    )
    .env("DIPTYCH_AUDIT_SYSLOG_TLS_CA")
    .example("\"audit-ca.pem\""),
    key(
        "http.addr",
        "HTTP listen address, HOST:PORT: the page at `/` (`http.page`), `/metrics` \
         (Prometheus), `/healthz` (liveness), `/readyz` (readiness, mirroring gRPC health), and \
         STOW-RS `POST /dicomweb/studies` (a bearer token of role ingest with a tokens file; \
         without one, only on a loopback address or with `auth.allow_unauthenticated`). A \
         cluster encoder role serves `/metrics`, `/healthz` and `/readyz` only (its queue time \
         is what its autoscaler reads); a router binds none yet.",
    )
    .env("DIPTYCH_HTTP_ADDR")
    .flag("--http-addr"),
    key(
        "http.page",
        "Serve the page at `/`: search by a dropped DICOM file or an indexed slice, the three \
         modes side by side, composites, index statistics and the Watch stream. It calls the \
         gRPC port over gRPC-Web from the browser, so it sees what the caller's token allows.",
    ),
    key(
        "log.format",
        "`text` for people or `json` (one object per line, with the request id and step spans) \
         for log collectors. The level comes from `RUST_LOG` (default `info`).",
    )
    .env("DIPTYCH_LOG_FORMAT")
    .flag("--log-format"),
    key(
        "encoder.execution_provider",
        "`auto` (CUDA when it registers, else CPU), `cuda` (or fail at start-up) or `cpu`.",
    )
    .env("DIPTYCH_EXECUTION_PROVIDER")
    .flag("--execution-provider"),
    key(
        "encoder.ort_library",
        "Path of libonnxruntime 1.31; when unset, `ORT_DYLIB_PATH`, then the `make deps-ort` cache.",
    )
    .env("DIPTYCH_ORT_LIBRARY")
    .flag("--ort-library")
    .example("\"/opt/onnxruntime/libonnxruntime.so.1.31.0\""),
    key(
        "encoder.sessions",
        "ONNX Runtime sessions per graph, each running one batch at a time (1..=64).",
    )
    .env("DIPTYCH_SESSIONS"),
    key(
        "encoder.intra_threads",
        "Threads per session; 0 shares the machine's cores among the sessions.",
    ),
    key(
        "encoder.intra_op_spinning",
        "Whether idle ONNX Runtime threads spin waiting for work (lower latency on a machine that \
         only encodes; takes CPU from the listener and the catalog otherwise).",
    ),
    key(
        "encoder.precision",
        "`float` runs the bundle's `encoder.onnx`; `int8` its int8 copy made by `diptych \
         quantize` (faster on CPUs with int8 dot products; the manifest records how often its \
         codes equal the float graph's, at least 99.5 %). A bundle without one refuses to start.",
    )
    .env("DIPTYCH_ENCODER_PRECISION"),
    key(
        "encoder.nice",
        "Nice value (0..=19) of the encoder's threads: above 0 they yield the cores to the DICOM \
         listener's acknowledgements and to searches when both want them; 0 runs them at the \
         process's priority.",
    ),
    key("encoder.max_batch", "Largest batch handed to a session (1..=4096).")
        .env("DIPTYCH_MAX_BATCH"),
    key(
        "encoder.max_queue_delay_ms",
        "Longest a request waits for others to join its batch, in milliseconds.",
    ),
    key(
        "encoder.queue_capacity",
        "Requests that may wait in the encoder queue before new ones are refused (at least \
         `encoder.max_batch`).",
    ),
    key(
        "encoder.remote_url",
        "`http://HOST:PORT` of a cluster encoder role that runs the encoder graph for this process \
         (batches of pre-processed slices over gRPC; the model ids must match); empty encodes \
         here with ONNX Runtime. The decoder graph always runs here. See docs/CLUSTER.md.",
    ),
    key(
        "encoder.remote_timeout_s",
        "The longest one batch may take at the remote encoder, in seconds; a slower or failed \
         batch is retried by the index like any encoder failure.",
    ),
    key(
        "index.max_backlog_frames",
        "Frames acknowledged but not yet indexed that may wait in memory; beyond it, senders wait \
         before their acknowledgement.",
    ),
    key(
        "index.min_free_bytes",
        "Free bytes kept on the data folder's file system: below it C-STORE answers 0xA700 and \
         Ingest RESOURCE_EXHAUSTED before anything is written. 0 turns the floor off.",
    ),
    key(
        "index.keep_frames",
        "Keep every record's pre-processed frame in <data_dir>/frames/ (input_size² × 4 bytes: \
         64 KiB per slice at 128×128) so that `diptych admin reindex` re-encodes the index with \
         a new bundle without the archive. Turning it off removes the kept frames.",
    ),
    key("dicom.enabled", "Whether `diptych serve` listens for DICOM at all.").flag("--no-dicom"),
    key("dicom.addr", "Plain DICOM listen address, HOST:PORT.")
        .env("DIPTYCH_DICOM_ADDR")
        .flag("--dicom-addr"),
    key(
        "dicom.plain",
        "Whether the plain DICOM listener on `dicom.addr` runs; `false` for a TLS-only node \
         (refused at start unless `dicom.tls_cert` and `dicom.tls_key` are set).",
    ),
    key(
        "dicom.ae_title",
        "This node's AE title (1 to 16 printable ASCII characters, no backslash); associations \
         calling another title are rejected.",
    )
    .env("DIPTYCH_AE_TITLE")
    .flag("--ae-title"),
    key(
        "dicom.max_associations",
        "Associations served at once; more get a transient reject.",
    ),
    key("dicom.max_pdu_length", "Largest PDU accepted, in bytes."),
    key(
        "dicom.read_timeout_s",
        "Longest wait for the rest of a PDU, in seconds.",
    ),
    key(
        "dicom.idle_timeout_s",
        "Longest wait for the next message of an association, in seconds.",
    ),
    key(
        "dicom.allowed_callers",
        "Calling AE titles allowed, each `AE` or `AE@ip`; empty allows any caller. Seeds \
         `<data_dir>/admin/dicom-peers.json` on the first start only; after that the file wins \
         (change it with `diptych admin peers`).",
    ),
    key(
        "dicom.tls_addr",
        "DICOM-TLS listen address, HOST:PORT (the IANA dicom-tls port 2762); it listens, beside \
         the plain `dicom.addr`, when `dicom.tls_cert` and `dicom.tls_key` are set. Both \
         listeners share `max_associations`, the allow-list and the memory budget.",
    ),
    key(
        "dicom.tls_cert",
        "DICOM over TLS: PEM certificate chain (set with `dicom.tls_key`, or neither).",
    )
    .example("\"server.pem\""),
    key("dicom.tls_key", "The private key of `dicom.tls_cert` (PEM).").example("\"server.key\""),
    key(
        "dicom.tls_client_ca",
        "When set, DICOM callers must present a certificate signed by one of these CAs (PEM).",
    )
    .example("\"ca.pem\""),
    key(
        "dicom.study_quiet_period_s",
        "A study counts as received once no instance of it arrived for this many seconds; then \
         its similar studies go out on Watch (and as a KOS).",
    ),
    key(
        "dicom.kos.destination",
        "Send a Key Object Selection document per received study to this viewer, `AE@HOST:PORT` \
         (the `[dicom.kos]` section is optional; when present, this key is required). Seeds the \
         KOS destinations of `<data_dir>/admin/dicom-peers.json` on the first start only; after \
         that the file wins (change it with `diptych admin kos`).",
    )
    .example("\"WEASIS@10.0.0.9:11113\""),
    key(
        "dicom.kos.archive",
        "What the archive holds: `de-identified` or `teaching` (KOS documents reference other \
         patients' images; anything else refuses to start). Required in `[dicom.kos]`.",
    )
    .example("\"teaching\""),
    key("dicom.kos.top_k", "Similar instances referenced per mode in each KOS.").section_default("5"),
    key(
        "cluster.role",
        "`single` (one node, the default), `router` (DICOM listener and public API; publishes \
         instances to JetStream, searches by scatter-gather) `shard` (one replica of one \
         index shard, fed from JetStream) or `encoder` (runs the encoder graph for the others' \
         `encoder.remote_url`). See docs/CLUSTER.md.",
    ),
    key(
        "cluster.nats_url",
        "Roles `router` and `shard`: the NATS servers, comma-separated `nats://HOST:PORT`.",
    ),
    key(
        "cluster.shards",
        "Shards of the cluster (1..=1024), fixed at install and the same on every router and \
         shard; studies are placed by rendezvous hashing of their Study Instance UID.",
    ),
    key("cluster.shard", "Role `shard`: which shard this process serves, from 0.")
        .env("DIPTYCH_CLUSTER_SHARD"),
    key(
        "cluster.replica",
        "Role `shard`: this replica's name, unique within its shard and stable across restarts \
         (the Helm chart gives the pod's name); it names the durable JetStream consumer, so \
         letters, digits, `-` and `_` only.",
    )
    .env("DIPTYCH_CLUSTER_REPLICA"),
    key(
        "cluster.stream_replicas",
        "Copies JetStream keeps of the ingest stream when it is created (3 in production, at \
         most the number of NATS servers).",
    ),
    key(
        "cluster.shard_addrs",
        "Role `router`: each shard's gRPC address, `http://HOST:PORT`, in shard order; replicas \
         of one shard separated by `|`.",
    ),
    key(
        "cluster.publish_timeout_s",
        "Role `router`: longest wait for JetStream's acknowledgement of a publish; past it the \
         C-STORE is answered 0xA700 (retry later).",
    ),
    key(
        "cluster.shard_timeout_s",
        "Role `router`: longest wait for a shard's answer; past it the shard is missing (a \
         search fails UNAVAILABLE unless partial answers were allowed; a deletion stays in the \
         stream and is answered UNAVAILABLE).",
    ),
    key(
        "archive.dicom",
        "The archive a re-index fetches instances from again (method `c-get`), `AE@HOST:PORT`, \
         when records have no usable kept frame (`index.keep_frames` was off, or the new bundle \
         pre-processes differently); diptych calls it as `dicom.ae_title` and must be allowed to \
         C-GET there. The `[archive]` section is optional: without it such a re-index is refused. \
         A C-GET or C-MOVE `diptych backfill` that names no archive pulls from it too.",
    )
    .example("\"PACS@10.0.0.7:104\""),
    key(
        "archive.url",
        "The archive's DICOMweb base URL for method `wado-rs` (plain `http://`); instances are \
         fetched with `GET {url}/studies/{study}/series/{series}/instances/{instance}`. A \
         `diptych backfill --method wado-rs` without `--archive-url` pulls from it too (QIDO-RS, \
         then WADO-RS by study).",
    )
    .example("\"http://pacs:8042/dicom-web\""),
    key(
        "archive.method",
        "How instances are fetched: `c-get` (C-GET at IMAGE level, by Study, Series and SOP \
         Instance UID, from `archive.dicom`) or `wado-rs` (from `archive.url`). `c-move` is \
         refused: the archive would send to the listener, not to the re-index.",
    )
    .section_default("\"c-get\""),
    key(
        "archive.timeout_s",
        "Longest wait for the archive's next message (C-GET) or for its whole answer (WADO-RS) \
         while one instance is fetched, in seconds.",
    )
    .section_default("120"),
    key(
        "images.max_pixels",
        "Largest rows × columns × frames accepted per DICOM instance or raw image.",
    ),
    key(
        "images.max_inflated_bytes",
        "Largest size of a deflated data set once inflated, in bytes.",
    ),
];

/// The section titles of the page, in order.
const SECTIONS: &[(&str, &str)] = &[
    ("", "Top level"),
    ("grpc", "[grpc]"),
    ("auth", "[auth]"),
    ("audit", "[audit]"),
    ("http", "[http]"),
    ("log", "[log]"),
    ("encoder", "[encoder]"),
    ("index", "[index]"),
    ("dicom", "[dicom]"),
    ("dicom.kos", "[dicom.kos]"),
    ("archive", "[archive]"),
    ("images", "[images]"),
    ("cluster", "[cluster]"),
];

/// The value of a dotted `path` in `table`.
fn lookup<'a>(table: &'a toml::Table, path: &str) -> Option<&'a toml::Value> {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let value = table.get(head)?;
    match rest {
        None => Some(value),
        Some(rest) => lookup(value.as_table()?, rest),
    }
}

/// The defaults as TOML.
fn defaults() -> toml::Table {
    toml::Table::try_from(Config::default()).expect("the default configuration serializes")
}

/// A key's default as TOML, or `None` when it is unset by default.
pub fn default_of(key: &Key) -> Option<String> {
    default_in(&defaults(), key)
}

fn default_in(defaults: &toml::Table, key: &Key) -> Option<String> {
    lookup(defaults, key.key)
        .map(toml::Value::to_string)
        .or(key.section_default.map(String::from))
}

/// A TOML document that sets every key of [`KEYS`]: its default, or its example when unset.
pub fn complete_document() -> toml::Table {
    let defaults = defaults();
    let mut document = toml::Table::new();
    for key in KEYS {
        let value = match lookup(&defaults, key.key) {
            Some(value) => value.clone(),
            None => {
                let example = key
                    .example
                    .or(key.section_default)
                    .unwrap_or_else(|| panic!("{} has no default: give it an example", key.key));
                toml::from_str::<toml::Table>(&format!("v = {example}"))
                    .unwrap_or_else(|e| panic!("the example of {}: {e}", key.key))
                    .remove("v")
                    .expect("parsed")
            }
        };
        let mut table = &mut document;
        let mut parts: Vec<&str> = key.key.split('.').collect();
        let leaf = parts.pop().expect("a key has a name");
        for part in parts {
            table = table
                .entry(part)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .expect("sections are tables");
        }
        table.insert(leaf.to_string(), value);
    }
    document
}

/// Dotted paths of every value (not table) in `table`.
pub fn leaves(table: &toml::Table) -> BTreeSet<String> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut BTreeSet<String>) {
        for (name, value) in table {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            match value {
                toml::Value::Table(inner) => walk(&path, inner, out),
                _ => {
                    out.insert(path);
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk("", table, &mut out);
    out
}

/// For a file the parser refused: the first key in `text` that is not a configuration key,
/// with the nearest real key, as a sentence; `None` when every key is known.
pub fn unknown_key_hint(text: &str) -> Option<String> {
    let table: toml::Table = toml::from_str(text).ok()?;
    let known = |path: &str| KEYS.iter().any(|k| k.key == path);
    let section = |path: &str| SECTIONS.iter().any(|(s, _)| !s.is_empty() && *s == path);
    fn first_unknown(
        prefix: &str,
        table: &toml::Table,
        known: &dyn Fn(&str) -> bool,
        section: &dyn Fn(&str) -> bool,
    ) -> Option<String> {
        for (name, value) in table {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            if known(&path) {
                continue;
            }
            match value {
                toml::Value::Table(inner) if section(&path) => {
                    if let Some(found) = first_unknown(&path, inner, known, section) {
                        return Some(found);
                    }
                }
                _ => return Some(path),
            }
        }
        None
    }
    let unknown = first_unknown("", &table, &known, &section)?;
    let nearest = KEYS
        .iter()
        .map(|k| (edit_distance(&unknown, k.key), k.key))
        .min()
        .filter(|(distance, key)| *distance <= 2.max(key.len() / 4));
    let (section, _) = unknown.rsplit_once('.').unwrap_or(("", &unknown));
    let siblings: Vec<String> = KEYS
        .iter()
        .filter(|k| !section.is_empty() && k.section() == section)
        .map(|k| format!("`{}`", k.key))
        .collect();
    Some(match nearest {
        Some((_, key)) => {
            format!("`{unknown}` is not a configuration key; did you mean `{key}`?")
        }
        None if !siblings.is_empty() => format!(
            "`{unknown}` is not a configuration key; [{section}] takes {}",
            siblings.join(", ")
        ),
        None => format!(
            "`{unknown}` is not a configuration key; every key is listed in docs/CONFIGURATION.md \
             (`diptych config reference`)"
        ),
    })
}

/// Levenshtein distance, for suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The reference page, docs/CONFIGURATION.md.
pub fn markdown() -> String {
    let defaults = defaults();
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated by `diptych config reference` from service/src/config/reference.rs; do \
         not edit by hand: a test fails when this page and the code disagree. -->\n\n\
         `diptych serve` takes its settings from, each overriding the one before: the defaults \
         below, a TOML file (`--config FILE`, or `DIPTYCH_CONFIG`), `DIPTYCH_*` environment \
         variables, then command-line flags. A key the file does not know is an error, as is a \
         value out of its range. `diptych config check FILE` checks a file without starting \
         anything; `diptych config reference` prints this page.\n",
    );
    for (section, title) in SECTIONS {
        out.push_str(&format!(
            "\n## {title}\n\n| key | default | environment | flag | meaning |\n|---|---|---|---|---|\n"
        ));
        for key in KEYS.iter().filter(|k| k.section() == *section) {
            let default = match default_in(&defaults, key) {
                Some(value) => format!("`{value}`"),
                None => match key.example {
                    Some(example) => format!("unset (e.g. `{example}`)"),
                    None => "unset".to_string(),
                },
            };
            let code = |v: Option<&str>| v.map_or("—".to_string(), |v| format!("`{v}`"));
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} |\n",
                key.key,
                default.replace('|', "\\|"),
                code(key.env),
                code(key.flag),
                key.doc.replace('|', "\\|"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, Overrides};
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    #[test]
    fn every_key_is_known_to_the_parser_and_every_parsed_key_is_listed() {
        let document = complete_document();
        let text = toml::to_string(&document).unwrap();
        let parsed: Config = toml::from_str(&text)
            .unwrap_or_else(|e| panic!("a key in KEYS is not a configuration key: {e}\n{text}"));
        parsed
            .validate()
            .expect("the defaults and examples are valid");
        let serialized = leaves(&toml::Table::try_from(&parsed).unwrap());
        let listed: BTreeSet<String> = KEYS.iter().map(|k| k.key.to_string()).collect();
        assert_eq!(
            serialized, listed,
            "the configuration's keys and reference::KEYS differ: add the missing rows"
        );
        assert!(
            KEYS.iter()
                .all(|k| SECTIONS.iter().any(|(s, _)| *s == k.section())),
            "every key's section has a title"
        );
        // Defaults of keys in optional sections are the ones serde applies.
        let minimal: Config = toml::from_str(
            "[dicom.kos]\ndestination = \"A@127.0.0.1:1\"\narchive = \"teaching\"\n\n\
             [archive]\ndicom = \"PACS@127.0.0.1:104\"\n",
        )
        .unwrap();
        let minimal = toml::Table::try_from(&minimal).unwrap();
        for key in KEYS.iter().filter(|k| k.section_default.is_some()) {
            assert_eq!(
                lookup(&minimal, key.key)
                    .map(toml::Value::to_string)
                    .as_deref(),
                key.section_default,
                "{}",
                key.key
            );
        }
    }

    #[test]
    fn every_environment_variable_read_is_listed_and_every_listed_one_is_read() {
        let asked = Mutex::new(BTreeSet::new());
        let recording = |name: &str| {
            asked.lock().unwrap().insert(name.to_string());
            None
        };
        Config::load(&Overrides::default(), recording).unwrap();
        let mut listed: BTreeSet<String> = KEYS
            .iter()
            .filter_map(|k| k.env)
            .map(String::from)
            .collect();
        listed.insert("DIPTYCH_CONFIG".to_string());
        assert_eq!(
            asked.into_inner().unwrap(),
            listed,
            "Config::load reads other DIPTYCH_* variables than reference::KEYS lists"
        );
    }

    #[test]
    fn unknown_keys_are_named_with_the_nearest_real_one() {
        let hint = unknown_key_hint("[encoder]\nmax_bach = 4\n").unwrap();
        assert!(hint.contains("`encoder.max_bach`"), "{hint}");
        assert!(hint.contains("did you mean `encoder.max_batch`"), "{hint}");
        let hint = unknown_key_hint("colour = \"blue\"\n").unwrap();
        assert!(
            hint.contains("`colour`") && hint.contains("CONFIGURATION.md"),
            "{hint}"
        );
        let hint = unknown_key_hint("[htp]\naddr = \"0.0.0.0:1\"\n").unwrap();
        assert!(hint.contains("`htp`"), "{hint}");
        assert_eq!(unknown_key_hint("[dicom.kos]\ntop_k = 3\n"), None);
        assert_eq!(unknown_key_hint("not toml ["), None);
    }

    #[test]
    fn a_file_with_an_unknown_key_is_refused_with_the_hint() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "[http]\nadress = \"0.0.0.0:8080\"\n").unwrap();
        let err = Config::from_file(file.path()).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }));
        let message = err.to_string();
        assert!(message.contains("[http] takes `http.addr`"), "{message}");
    }

    #[test]
    fn the_committed_reference_page_is_current() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/CONFIGURATION.md");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == markdown(),
            "{} is stale: regenerate it with `cargo run --release -p diptych-service -- config \
             reference > docs/CONFIGURATION.md`",
            path.display()
        );
    }
}
