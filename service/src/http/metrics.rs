//! `/metrics`: the Prometheus exposition. The gRPC layer's families ([`RpcMetrics`]) are
//! registered; everything else is read at scrape time from the counters its owner already
//! keeps — the batchers' [`crate::encoder::BatchStats`], the index's
//! [`crate::index::Counters`] and record counts, the DICOM listener's [`ScpStats`], the data
//! folder's file system — so nothing is counted twice and nothing can drift.
//!
//! Names follow the Prometheus conventions (base units, `_total` counters, `_seconds`,
//! `_bytes`) and the model servers' split of request success and failure, queue and compute
//! time, and batch sizes. Labels never carry patient data or caller-chosen text.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use diptych_dicom_adapter::scp::ScpStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::readiness::{Readiness, Ready};
use crate::grpc::ServiceState;
use crate::grpc::observe::RpcMetrics;

/// Which text format a scrape asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4, the default.
    Prometheus,
    /// OpenMetrics 1.0 text, for scrapers whose `Accept` asks for it.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// The `Content-Type` of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Every metric of the server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    rpc: Arc<RpcMetrics>,
    live: Arc<Live>,
}

/// What the scrape-time collector reads.
struct Live {
    state: Arc<ServiceState>,
    readiness: Readiness,
    dicom: OnceLock<Arc<ScpStats>>,
    /// The data folder whose file system is reported, with its free-space floor; none for a
    /// process without one (the cluster's encoder role).
    data_dir: Option<(PathBuf, u64)>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// The metrics of a server whose engine and index arrive in `state` once they are ready,
    /// with its data folder and that folder's free-space floor.
    pub fn new(
        state: Arc<ServiceState>,
        readiness: Readiness,
        data_dir: PathBuf,
        min_free_bytes: u64,
    ) -> Metrics {
        Self::build(state, readiness, Some((data_dir, min_free_bytes)))
    }

    /// The metrics of a process without a data folder or an index, the cluster's encoder role:
    /// readiness, the gRPC layer's families, and the engine's once `state` holds it.
    pub fn for_engine(state: Arc<ServiceState>, readiness: Readiness) -> Metrics {
        Self::build(state, readiness, None)
    }

    fn build(
        state: Arc<ServiceState>,
        readiness: Readiness,
        data_dir: Option<(PathBuf, u64)>,
    ) -> Metrics {
        let rpc = Arc::new(RpcMetrics::default());
        let live = Arc::new(Live {
            state,
            readiness,
            dicom: OnceLock::new(),
            data_dir,
        });
        let mut registry = Registry::default();
        rpc.register(&mut registry);
        registry.register_collector(Box::new(live.clone()));
        Metrics {
            registry,
            rpc,
            live,
        }
    }

    /// The gRPC layer's families, to record into.
    pub fn rpc(&self) -> Arc<RpcMetrics> {
        self.rpc.clone()
    }

    /// Reports the DICOM listener's counters from now on.
    pub fn set_dicom(&self, stats: Arc<ScpStats>) {
        let _ = self.live.dicom.set(stats);
    }

    /// The exposition in `format`.
    pub fn encode(&self, format: Format) -> String {
        let mut text = String::new();
        let encoded = match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.registry)
            }
        };
        encoded.expect("writing to a String does not fail");
        text
    }
}

/// A value with labels, for the helpers below.
type Labelled<V> = (Vec<(&'static str, String)>, V);

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> std::fmt::Result {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    ConstCounter::new(value).encode(encoder.encode_descriptor(
        name,
        help,
        None,
        MetricType::Counter,
    )?)
}

fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[Labelled<i64>],
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in values {
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[Labelled<u64>],
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in values {
        ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut encoder;
        Info::new(vec![("version", env!("CARGO_PKG_VERSION").to_string())]).encode(
            e.encode_descriptor(
                "diptych_build",
                "The diptych version serving",
                None,
                MetricType::Info,
            )?,
        )?;
        let serving = matches!(self.readiness.get(), Ready::Serving);
        gauge(
            e,
            "diptych_serving",
            "1 while gRPC health says SERVING (and /readyz answers 200), else 0",
            None,
            i64::from(serving),
        )?;
        if let Ok(engine) = self.state.engine() {
            self.encode_engine(e, &engine)?;
        }
        if let Ok(index) = self.state.index() {
            self.encode_index(e, &index)?;
        }
        if let Some(stats) = self.dicom.get() {
            encode_dicom(e, stats)?;
        }
        if let Some((data_dir, min_free_bytes)) = &self.data_dir
            && let Ok(stats) = fs4::statvfs(data_dir)
        {
            gauge(
                e,
                "diptych_data_disk_free",
                "Bytes available to the server on the data folder's file system",
                Some(&Unit::Bytes),
                stats.available_space() as i64,
            )?;
            gauge(
                e,
                "diptych_data_disk_size",
                "Size of the data folder's file system",
                Some(&Unit::Bytes),
                stats.total_space() as i64,
            )?;
            gauge(
                e,
                "diptych_data_disk_floor",
                "Free bytes kept on the data folder's file system ([index] min_free_bytes): below \
                 it new instances are refused",
                Some(&Unit::Bytes),
                *min_free_bytes as i64,
            )?;
        }
        Ok(())
    }
}

impl Live {
    fn encode_engine(
        &self,
        e: &mut DescriptorEncoder,
        engine: &crate::encoder::Engine,
    ) -> std::fmt::Result {
        Info::new(vec![
            ("execution_provider", engine.provider().name().to_string()),
            ("model_id", engine.manifest().model_id.clone()),
            ("sessions", engine.sessions().to_string()),
            ("max_batch", engine.max_batch().to_string()),
        ])
        .encode(e.encode_descriptor(
            "diptych_encoder",
            "The model served and how: execution provider (cuda or cpu), model id, sessions per \
             graph, largest batch",
            None,
            MetricType::Info,
        )?)?;
        let graphs = engine.graph_stats();
        let by_graph = |graph: &'static str| vec![("graph", graph.to_string())];
        gauges(
            e,
            "diptych_encoder_queue_depth",
            "Requests waiting in the graph's batching queue",
            &graphs
                .iter()
                .map(|g| (by_graph(g.graph), g.queue_depth as i64))
                .collect::<Vec<_>>(),
        )?;
        for (name, help, unit, pick) in [
            (
                "diptych_encoder_queue_duration",
                "Seconds a request waited in the graph's queue before its batch ran (warm-up \
                 included)",
                Some(&Unit::Seconds),
                (|s| &s.queue_wait) as fn(&crate::encoder::BatchStats) -> &_,
            ),
            (
                "diptych_encoder_compute_duration",
                "Seconds an ONNX Runtime session took per batch (warm-up included)",
                Some(&Unit::Seconds),
                |s| &s.compute,
            ),
            (
                "diptych_encoder_batch_size",
                "Requests per batch run (warm-up included)",
                None,
                |s| &s.batch_size,
            ),
        ] {
            let mut metric = e.encode_descriptor(name, help, unit, MetricType::Histogram)?;
            for g in &graphs {
                let labels = by_graph(g.graph);
                pick(g.stats).encode(metric.encode_family(&labels)?)?;
            }
        }
        counters(
            e,
            "diptych_encoder_failed_batches",
            "Batches whose run failed (each of their requests failed)",
            &graphs
                .iter()
                .map(|g| (by_graph(g.graph), g.stats.failed_batches()))
                .collect::<Vec<_>>(),
        )?;
        counters(
            e,
            "diptych_encoder_queue_full",
            "Requests refused because the graph's queue was full",
            &graphs
                .iter()
                .map(|g| (by_graph(g.graph), g.stats.queue_full()))
                .collect::<Vec<_>>(),
        )
    }

    fn encode_index(
        &self,
        e: &mut DescriptorEncoder,
        index: &crate::index::Index,
    ) -> std::fmt::Result {
        let c = &index.counters;
        let load = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
        let mut metric = e.encode_descriptor(
            "diptych_accept_stage_duration",
            "Seconds each stage of accepting an image instance took, from its arrival at the \
             index to its acknowledgement: examine (parse, UID rule, header), backlog (room \
             for its frames), claim (duplicate check), durable (write-ahead log append and \
             fsync, with the pixels decoded and pre-processed meanwhile), total",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (stage, histogram) in index.stages.each() {
            histogram.encode(metric.encode_family(&vec![("stage", stage.to_string())])?)?;
        }
        counter(
            e,
            "diptych_index_instances_acknowledged",
            "Image instances acknowledged (durable in the write-ahead log, answered success over \
             DICOM or Ingest) by this process",
            load(&c.acknowledged),
        )?;
        counter(
            e,
            "diptych_index_instances_indexed",
            "Image instances whose records were committed (searchable) by this process, replayed \
             ones included",
            load(&c.indexed),
        )?;
        counter(
            e,
            "diptych_index_instances_duplicate",
            "Instances answered as duplicates of one indexed or in flight",
            load(&c.duplicates),
        )?;
        counter(
            e,
            "diptych_index_non_image_objects",
            "Non-image objects (SR, KOS, presentation states, ...) acknowledged and not indexed",
            load(&c.non_image),
        )?;
        counter(
            e,
            "diptych_index_late_copies",
            "Log entries handed to the index's worker after it had read them back from the \
             write-ahead log and applied them (a slow acceptor): dropped, not applied twice",
            load(&c.late_copies),
        )?;
        counter(
            e,
            "diptych_index_similar_studies_searches",
            "Similar-studies searches run for received studies (Watch, KOS)",
            load(&c.similar_studies),
        )?;
        gauge(
            e,
            "diptych_index_pending",
            "Log entries (instances, deletes) acknowledged and not yet applied",
            None,
            load(&c.pending) as i64,
        )?;
        let (records, live) = index.record_counts();
        gauges(
            e,
            "diptych_index_records",
            "Records (one per indexed frame) in the code store, live or deleted",
            &[
                (vec![("state", "live".to_string())], live as i64),
                (
                    vec![("state", "deleted".to_string())],
                    records.saturating_sub(live) as i64,
                ),
            ],
        )
    }
}

fn encode_dicom(e: &mut DescriptorEncoder, stats: &ScpStats) -> std::fmt::Result {
    gauge(
        e,
        "diptych_dicom_associations_open",
        "DICOM associations established and not yet ended",
        None,
        stats.associations_open() as i64,
    )?;
    counters(
        e,
        "diptych_dicom_associations",
        "DICOM association requests, accepted or rejected",
        &[
            (
                vec![("outcome", "accepted".to_string())],
                stats.associations_accepted(),
            ),
            (
                vec![("outcome", "rejected".to_string())],
                stats.associations_rejected(),
            ),
        ],
    )?;
    counters(
        e,
        "diptych_dicom_tls_handshake_failures",
        "Connections to the DICOM-TLS port dropped in a failed or timed-out TLS handshake (a \
         client certificate not signed by the client CA, plain DICOM sent to the TLS port)",
        &[(Vec::new(), stats.tls_handshake_failures())],
    )?;
    counters(
        e,
        "diptych_dicom_responses",
        "DIMSE responses sent, by service (C-STORE, C-ECHO) and status (0x0000 success, 0xA700 \
         out of resources, 0xA900 data set does not match, 0xC000 cannot understand)",
        &stats
            .responses()
            .into_iter()
            .map(|r| {
                (
                    vec![
                        ("service", r.service.name().to_string()),
                        ("status", format!("{:#06X}", r.status)),
                    ],
                    r.count,
                )
            })
            .collect::<Vec<_>>(),
    )
}
