//! # diptych-service — the server
//!
//! Turns images into codes with ONNX Runtime and answers viewers over gRPC; the `diptych`
//! binary. How a received instance becomes a searchable record: [`dicom`] (C-STORE) or
//! [`grpc::ingest`] → [`index::accept`] (examine, log durably, acknowledge) → [`index::apply`]
//! (encode, [`store`] the codes, [`catalog`] the metadata, checkpoint) → [`search`] over the
//! stored codes ([`index::query`]) → [`watch`] (received studies and their similar studies).
//!
//! | module | what it is for |
//! |---|---|
//! | [`config`] | the configuration: defaults, TOML file, `DIPTYCH_*` environment, flags |
//! | [`bundle`] | the model bundle loaded and checked against its manifest; codebooks read from the graphs |
//! | [`encoder`] | ONNX Runtime sessions behind dynamic batching; warm-up |
//! | [`slice`] | a DICOM frame or raw pixels turned into model input by the shared image contract |
//! | [`record`] | record ids, keys and sets: the vocabulary store, catalog and search share |
//! | [`store`] | the write-ahead log and the memory-mapped compact codes |
//! | [`catalog`] | DICOM metadata in tantivy: filters and display |
//! | [`search`] | exact search over the compact codes: distance tables, a two-core scan, pruning |
//! | [`index`] | accept → log → encode → store + catalog, recovery, searches and deletes |
//! | [`watch`] | studies judged received after a quiet period, and their most similar studies |
//! | [`dicom`] | the DICOM listener wired to the index, and the KOS answers to viewers |
//! | [`render`] | model images and label maps as PNG or float32 |
//! | [`grpc`] | the gRPC edge: thin adapters, health, reflection, limits, TLS |
//! | [`auth`] | who may call the gRPC API: tokens file, roles, the gate in front of every service |
//! | [`audit`] | the audit trail: who saw which patient's data, to a rotated JSON-lines file and syslog |
//! | [`admin`] | run-time administration: allowed DICOM peers, KOS destinations (persisted), recent associations |
//! | [`backfill`] | index what an archive already holds: C-FIND then C-GET or C-MOVE, or QIDO-RS then WADO-RS; a resumable job |
//! | [`server`] | `diptych serve`: start-up order, serving, shutdown |
//! | [`http`] | the HTTP port: `/metrics`, `/healthz`, `/readyz` |
//! | [`web`] | the page at `/` of the HTTP port: a gRPC-Web client of the public API, embedded |
//! | [`logging`] | text or JSON logs, with request-id and step spans |
//! | [`cluster`] | past one machine: shard placement, the JetStream ingest log, exact scatter-gather |
//!
//! Logs go through `tracing` (filter with `RUST_LOG`); they never carry patient data. The audit
//! trail ([`audit`]) is where patient IDs and study UIDs are recorded, with who saw them.

pub mod admin;
pub mod archive;
pub mod audit;
pub mod auth;
pub mod backfill;
pub mod bundle;
pub mod catalog;
pub mod cluster;
pub mod config;
pub mod dicom;
pub mod encoder;
pub mod grpc;
pub mod http;
pub mod index;
pub mod logging;
pub mod record;
pub mod render;
pub mod search;
pub mod server;
pub mod slice;
pub mod store;
pub mod watch;
pub mod web;
