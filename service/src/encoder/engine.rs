//! The engine: the serving model's sessions behind two dynamic batchers (encoder, decoder),
//! started from a checked bundle and warmed up before the service reports ready.

use std::time::{Duration, Instant};

use diptych::manifest::Manifest;
use diptych::phantom::{PhantomConfig, PhantomGenerator};
use diptych::preprocess::preprocess;
use ort::environment::Environment;
use thiserror::Error;

use super::batcher::{BatchError, BatchRunner, Batcher, BatcherConfig};
use super::model::{
    CodePair, Decoded, DecoderRunner, EncoderRunner, Geometry, RunError, SliceCode,
};
use super::priority;
use super::remote::{RemoteEncoder, RemoteOptions};
use super::runtime::{Provider, RuntimeError, open_session};
use crate::bundle::{Bundle, Codebooks};
use crate::config::{ExecutionProvider, Precision};

/// How to run the model.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOptions {
    /// auto, cuda or cpu.
    pub execution_provider: ExecutionProvider,
    /// Sessions per graph.
    pub sessions: usize,
    /// Threads per session.
    pub intra_threads: usize,
    /// Whether idle intra-op threads spin (see `EncoderConfig::intra_op_spinning`).
    pub intra_op_spinning: bool,
    /// Which encoder graph of the bundle runs (`[encoder] precision`).
    pub precision: Precision,
    /// Nice value of every thread the engine starts (0..=19; 0: the process's own priority),
    /// see [`super::priority`].
    pub nice: i32,
    /// The batchers' limits.
    pub batcher: BatcherConfig,
    /// A cluster's encoder role to run the encoder graph instead of local sessions
    /// (`[encoder] remote_url`); the decoder graph stays local.
    pub remote: Option<RemoteOptions>,
}

impl EngineOptions {
    /// Local CPU sessions (`sessions` × `intra_threads` threads) at the process's own priority,
    /// the float graph, idle threads not spinning, batches of up to `max_batch` gathered for at
    /// most `max_delay` with `queue_capacity` requests allowed to wait: how the command-line
    /// tools and the tests run the model (struct update syntax changes the rest).
    pub fn cpu(
        sessions: usize,
        intra_threads: usize,
        max_batch: usize,
        max_delay: Duration,
        queue_capacity: usize,
    ) -> Self {
        Self {
            execution_provider: ExecutionProvider::Cpu,
            sessions,
            intra_threads,
            intra_op_spinning: false,
            precision: Precision::default(),
            nice: 0,
            batcher: BatcherConfig {
                max_batch,
                max_delay,
                queue_capacity,
            },
            remote: None,
        }
    }
}

/// Where the encoder graph runs: a local session, or a cluster's encoder role.
enum EncoderBackend {
    Local(EncoderRunner),
    Remote(RemoteEncoder),
}

impl BatchRunner for EncoderBackend {
    type Item = Vec<f32>;
    type Output = SliceCode;
    type Error = RunError;

    fn run(&mut self, items: &[Vec<f32>]) -> Result<Vec<SliceCode>, RunError> {
        match self {
            EncoderBackend::Local(runner) => runner.run(items),
            EncoderBackend::Remote(runner) => runner.run(items),
        }
    }

    fn unavailable(error: &RunError) -> bool {
        RemoteEncoder::unavailable(error)
    }
}

/// Why the engine could not start or warm up.
#[derive(Debug, Error)]
pub enum EngineError {
    /// ONNX Runtime refused a session.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// `[encoder] precision = "int8"` but the bundle has no int8 encoder.
    #[error(
        "encoder.precision is int8 but model {model_id} ({}) has no int8 encoder; make one \
         with `diptych quantize --model {}`, or set precision = \"float\"",
        dir.display(),
        dir.display()
    )]
    NoInt8Encoder {
        /// The bundle's model id.
        model_id: String,
        /// The bundle folder.
        dir: std::path::PathBuf,
    },
    /// The threads' priority could not be set.
    #[error("{0}")]
    Priority(String),
    /// The warm-up run failed or produced values the contract forbids.
    #[error("warm-up of model {model_id} failed: {problem}")]
    WarmUp {
        /// The model id.
        model_id: String,
        /// What went wrong.
        problem: String,
    },
}

/// One graph's batcher as `/metrics` reads it.
#[derive(Debug, Clone, Copy)]
pub struct GraphStats<'a> {
    /// `encoder` or `decoder`.
    pub graph: &'static str,
    /// Requests waiting in its queue now.
    pub queue_depth: usize,
    /// What its batcher has measured.
    pub stats: &'a super::BatchStats,
}

/// The serving model: manifest, codebooks, and its sessions behind batchers.
pub struct Engine {
    manifest: Manifest,
    codebooks: Codebooks,
    provider: Provider,
    geometry: Geometry,
    max_batch: usize,
    sessions: usize,
    encoder: Batcher<Vec<f32>, SliceCode>,
    decoder: Batcher<CodePair, Decoded>,
    remote: Option<String>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model_id", &self.manifest.model_id)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens `options.sessions` sessions per graph and starts the batchers. Blocking (sessions
    /// compile the graphs); must run inside a tokio runtime.
    pub fn start(
        bundle: Bundle,
        env: &Environment,
        options: EngineOptions,
    ) -> Result<Engine, EngineError> {
        if options.nice == 0 {
            return Engine::start_here(bundle, env, options);
        }
        // Started from a thread of the given nice value, which every thread ONNX Runtime and
        // the batchers start inherits.
        let runtime = tokio::runtime::Handle::current();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _runtime = runtime.enter();
                priority::set_this_thread_nice(options.nice).map_err(|e| {
                    EngineError::Priority(format!(
                        "cannot set the encoder threads' nice value {}: {e}; use 0..=19 \
                         (encoder.nice)",
                        options.nice
                    ))
                })?;
                Engine::start_here(bundle, env, options)
            })
            .join()
            .expect("starting the engine")
        })
    }

    /// [`Engine::start`] from the calling thread.
    fn start_here(
        bundle: Bundle,
        env: &Environment,
        options: EngineOptions,
    ) -> Result<Engine, EngineError> {
        let geometry = Geometry::of(&bundle.manifest);
        let mut provider_request = options.execution_provider;
        let mut provider = None;
        let mut encoders = Vec::with_capacity(options.sessions);
        let mut decoders = Vec::with_capacity(options.sessions);
        let threads = options.intra_threads;
        let (enc_name, enc_bytes) = match (options.precision, &bundle.manifest.encoder_int8) {
            (Precision::Float, _) => (bundle.manifest.encoder.file.as_str(), &bundle.encoder),
            (Precision::Int8, Some(int8)) => (
                int8.graph.file.as_str(),
                bundle
                    .encoder_int8
                    .as_ref()
                    .expect("Bundle::load reads the manifest's int8 encoder"),
            ),
            (Precision::Int8, None) => {
                return Err(EngineError::NoInt8Encoder {
                    model_id: bundle.manifest.model_id.clone(),
                    dir: bundle.dir.clone(),
                });
            }
        };
        for _ in 0..options.sessions {
            if let Some(remote) = &options.remote {
                let runner =
                    RemoteEncoder::new(remote.clone(), &bundle.manifest.model_id, geometry)
                        .map_err(|e| RuntimeError::Session {
                            graph: enc_name.to_string(),
                            message: e.to_string(),
                        })?;
                encoders.push(EncoderBackend::Remote(runner));
            } else {
                let (session, got) = open_session(
                    env,
                    enc_name,
                    enc_bytes,
                    provider_request,
                    threads,
                    options.intra_op_spinning,
                )?;
                // Every later session runs on the provider the first one got.
                provider_request = match got {
                    Provider::Cuda => ExecutionProvider::Cuda,
                    Provider::Cpu => ExecutionProvider::Cpu,
                };
                provider.get_or_insert(got);
                encoders.push(EncoderBackend::Local(
                    EncoderRunner::new(session, geometry).map_err(|e| RuntimeError::Session {
                        graph: enc_name.to_string(),
                        message: format!("selecting the served outputs: {e}"),
                    })?,
                ));
            }
            let dec_name = bundle.manifest.decoder.file.as_str();
            let (session, got) = open_session(
                env,
                dec_name,
                &bundle.decoder,
                provider_request,
                threads,
                options.intra_op_spinning,
            )?;
            provider.get_or_insert(got);
            decoders.push(DecoderRunner::new(session, geometry));
        }
        Ok(Engine {
            manifest: bundle.manifest,
            codebooks: bundle.codebooks,
            provider: provider.unwrap_or(Provider::Cpu),
            geometry,
            max_batch: options.batcher.max_batch,
            sessions: options.sessions,
            encoder: Batcher::start(encoders, options.batcher),
            decoder: Batcher::start(decoders, options.batcher),
            remote: options.remote.map(|r| r.url),
        })
    }

    /// The URL of the cluster encoder role that runs the encoder graph, when not local.
    pub fn remote_encoder(&self) -> Option<&str> {
        self.remote.as_deref()
    }

    /// The serving model's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The serving model's codebooks.
    pub fn codebooks(&self) -> &Codebooks {
        &self.codebooks
    }

    /// The execution provider the sessions run on.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The shapes the model works with.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Sessions per graph.
    pub fn sessions(&self) -> usize {
        self.sessions
    }

    /// Largest batch handed to a session.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// The encoder's and the decoder's batcher measurements.
    pub fn graph_stats(&self) -> [GraphStats<'_>; 2] {
        [
            GraphStats {
                graph: "encoder",
                queue_depth: self.encoder.queue_depth(),
                stats: self.encoder.stats(),
            },
            GraphStats {
                graph: "decoder",
                queue_depth: self.decoder.queue_depth(),
                stats: self.decoder.stats(),
            },
        ]
    }

    /// Encodes one pre-processed slice (S·S values in [0, 1]): its wait in the batcher's queue
    /// and its batch's run.
    #[tracing::instrument(name = "encode", level = "info", skip_all)]
    pub async fn encode(&self, pixels: Vec<f32>) -> Result<SliceCode, BatchError> {
        self.encoder.submit(pixels).await
    }

    /// Decodes one pair of codes.
    pub async fn decode(&self, codes: CodePair) -> Result<Decoded, BatchError> {
        self.decoder.submit(codes).await
    }

    /// Runs held-out phantom slices through both graphs — one alone, then a full batch — and
    /// checks the outputs against the contract; returns how long it took.
    pub async fn warm_up(&self) -> Result<Duration, EngineError> {
        let started = Instant::now();
        let fail = |problem: String| EngineError::WarmUp {
            model_id: self.manifest.model_id.clone(),
            problem,
        };
        let generator = PhantomGenerator::new(2, PhantomConfig::default());
        let slices: Vec<Vec<f32>> = (0..self.max_batch as u64)
            .map(|i| {
                let slice = generator.slice(i);
                preprocess(&slice.raw_frame(), &self.manifest.preprocess)
                    .map(|p| p.pixels)
                    .map_err(|e| fail(format!("pre-processing a phantom slice: {e}")))
            })
            .collect::<Result<_, _>>()?;

        let single = self
            .encode(slices[0].clone())
            .await
            .map_err(|e| fail(e.to_string()))?;
        // Submitted together, so the batcher forms one full batch.
        let handles: Vec<_> = slices
            .into_iter()
            .map(|s| {
                let encoder = self.encoder.clone();
                tokio::spawn(async move { encoder.submit(s).await })
            })
            .collect();
        for (i, handle) in handles.into_iter().enumerate() {
            let code = handle
                .await
                .map_err(|e| fail(e.to_string()))?
                .map_err(|e| fail(e.to_string()))?;
            if !(0.0..=1.0).contains(&code.abnormality) {
                return Err(fail(format!(
                    "abnormality {} of slice {i} is outside [0, 1]; the encoder must clamp it",
                    code.abnormality
                )));
            }
            if i == 0 && (code.normal != single.normal || code.abnormal != single.abnormal) {
                return Err(fail(
                    "a slice encodes differently alone and in a batch; the graph mixes the \
                     slices of a batch"
                        .to_string(),
                ));
            }
        }
        self.decode(CodePair {
            normal: single.normal,
            abnormal: single.abnormal,
        })
        .await
        .map_err(|e| fail(e.to_string()))?;
        Ok(started.elapsed())
    }
}
