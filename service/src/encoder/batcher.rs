//! Dynamic batching: requests queue on a bounded channel; a collector task forms batches of up to
//! `max_batch` requests, waiting at most `max_delay` after the first one; each batch goes to an
//! idle worker of a small pool, each worker a thread that owns one [`BatchRunner`] (an ONNX
//! Runtime session, whose `run` takes `&mut self`).
//!
//! The collector only forms a batch once a worker is idle, so while every worker is busy the
//! queue fills and the next batch is larger: under load, concurrent requests share batches
//! without any request waiting longer than one batch's run plus `max_delay`. A request whose
//! caller has gone away (cancelled RPC) is dropped before its batch runs.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::thread;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

use super::stats::BatchStats;

/// Something that processes a batch of items at once (a model session).
pub trait BatchRunner: Send + 'static {
    /// One request's input.
    type Item: Send + 'static;
    /// One request's result.
    type Output: Send + 'static;
    /// Why a whole batch failed.
    type Error: std::error::Error + Send + 'static;
    /// Processes `items` together; returns one output per item, in order, or why the whole
    /// batch failed.
    fn run(&mut self, items: &[Self::Item]) -> Result<Vec<Self::Output>, Self::Error>;

    /// Whether `error` says that something the runner depends on is unavailable for now (the
    /// same batch may succeed later), rather than that the batch itself failed.
    fn unavailable(_error: &Self::Error) -> bool {
        false
    }
}

/// Limits of the batcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatcherConfig {
    /// Largest batch handed to a runner.
    pub max_batch: usize,
    /// Longest a request waits for others to join its batch.
    pub max_delay: Duration,
    /// Requests that may wait in the queue before new ones are refused.
    pub queue_capacity: usize,
}

/// Why a request was not processed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    /// The queue is full: the service is overloaded.
    #[error("the encoder queue is full ({capacity} requests waiting); retry later")]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The batcher has shut down.
    #[error("the encoder is shutting down")]
    Stopped,
    /// Something the runner depends on (a remote encoder) is unavailable for now.
    #[error("the encoder is unavailable: {message}; retry later")]
    Unavailable {
        /// The runner's message.
        message: String,
    },
    /// The runner failed on the batch holding this request.
    #[error("the model failed on a batch of {batch}: {message}")]
    Failed {
        /// Size of the failed batch.
        batch: usize,
        /// The runner's message.
        message: String,
    },
}

struct Job<I, O> {
    item: I,
    reply: oneshot::Sender<Result<O, BatchError>>,
    queued: std::time::Instant,
}

/// A handle to submit requests to a pool of runners through the dynamic batcher.
pub struct Batcher<I, O> {
    queue: mpsc::Sender<Job<I, O>>,
    capacity: usize,
    stats: Arc<BatchStats>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            capacity: self.capacity,
            stats: self.stats.clone(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts one worker thread per runner and the collector task (on the current tokio
    /// runtime). Everything stops when the last handle is dropped.
    ///
    /// # Panics
    /// If `runners` is empty, `max_batch` or `queue_capacity` is 0, or there is no tokio runtime.
    pub fn start<R>(runners: Vec<R>, config: BatcherConfig) -> Self
    where
        R: BatchRunner<Item = I, Output = O>,
    {
        assert!(!runners.is_empty(), "the batcher needs at least one runner");
        assert!(config.max_batch > 0 && config.queue_capacity > 0);
        let (queue, jobs) = mpsc::channel(config.queue_capacity);
        let (idle_tx, idle_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(BatchStats::new(config.max_batch));
        let mut workers = Vec::with_capacity(runners.len());
        for (id, runner) in runners.into_iter().enumerate() {
            let (batch_tx, batch_rx) = std_mpsc::channel::<Vec<Job<I, O>>>();
            let idle = idle_tx.clone();
            let stats = stats.clone();
            thread::Builder::new()
                .name(format!("diptych-model-{id}"))
                .spawn(move || work(id, runner, batch_rx, idle, &stats))
                .expect("spawning a worker thread");
            idle_tx.send(id).expect("the collector is not started yet");
            workers.push(batch_tx);
        }
        drop(idle_tx);
        tokio::spawn(collect(jobs, idle_rx, workers, config));
        Self {
            queue,
            capacity: config.queue_capacity,
            stats,
        }
    }

    /// Queues `item` and waits for its result.
    pub async fn submit(&self, item: I) -> Result<O, BatchError> {
        let (reply, result) = oneshot::channel();
        let job = Job {
            item,
            reply,
            queued: std::time::Instant::now(),
        };
        self.queue.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.stats.refused_full();
                BatchError::QueueFull {
                    capacity: self.capacity,
                }
            }
            mpsc::error::TrySendError::Closed(_) => BatchError::Stopped,
        })?;
        result.await.unwrap_or(Err(BatchError::Stopped))
    }

    /// Requests waiting in the queue now (not yet taken into a batch).
    pub fn queue_depth(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// What the batcher has measured: queue waits, compute times, batch sizes, failures.
    pub fn stats(&self) -> &Arc<BatchStats> {
        &self.stats
    }
}

/// The collector: waits for an idle worker, forms a batch, hands it over.
async fn collect<I, O>(
    mut jobs: mpsc::Receiver<Job<I, O>>,
    mut idle: mpsc::UnboundedReceiver<usize>,
    workers: Vec<std_mpsc::Sender<Vec<Job<I, O>>>>,
    config: BatcherConfig,
) {
    while let Some(worker) = idle.recv().await {
        let Some(first) = jobs.recv().await else {
            return;
        };
        let mut batch = vec![first];
        let deadline = Instant::now() + config.max_delay;
        while batch.len() < config.max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match timeout_at(deadline, jobs.recv()).await {
                        Ok(Some(job)) => batch.push(job),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        batch.retain(|job| !job.reply.is_closed());
        // An empty batch (every caller went away) just returns the worker to the idle list.
        if workers[worker].send(batch).is_err() {
            return;
        }
    }
}

/// A worker thread: runs each batch it receives and answers every request of it.
fn work<R: BatchRunner>(
    id: usize,
    mut runner: R,
    batches: std_mpsc::Receiver<Vec<Job<R::Item, R::Output>>>,
    idle: mpsc::UnboundedSender<usize>,
    stats: &BatchStats,
) {
    for batch in batches {
        if !batch.is_empty() {
            let size = batch.len();
            let started = std::time::Instant::now();
            for job in &batch {
                stats
                    .queue_wait
                    .observe(started.duration_since(job.queued).as_secs_f64());
            }
            stats.batch_size.observe(size as f64);
            let (items, replies): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|j| (j.item, j.reply)).unzip();
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                runner.run(&items).map_err(|e| Failure {
                    unavailable: R::unavailable(&e),
                    message: e.to_string(),
                })
            }))
            .unwrap_or_else(|_| Err(Failure::from("the model runner panicked".to_string())));
            stats.compute.observe(started.elapsed().as_secs_f64());
            if !matches!(&outcome, Ok(outputs) if outputs.len() == size) {
                stats.batch_failed();
            }
            match outcome {
                Ok(outputs) if outputs.len() == size => {
                    for (reply, output) in replies.into_iter().zip(outputs) {
                        let _ = reply.send(Ok(output));
                    }
                }
                Ok(outputs) => fail_all(
                    replies,
                    size,
                    Failure::from(format!(
                        "the runner returned {} results for {size} items",
                        outputs.len()
                    )),
                ),
                Err(failure) => fail_all(replies, size, failure),
            }
        }
        if idle.send(id).is_err() {
            return;
        }
    }
}

/// Why a batch failed, as the batcher passes it on to every request of the batch.
struct Failure {
    unavailable: bool,
    message: String,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            unavailable: false,
            message,
        }
    }
}

fn fail_all<O>(
    replies: Vec<oneshot::Sender<Result<O, BatchError>>>,
    batch: usize,
    failure: Failure,
) {
    let Failure {
        unavailable,
        message,
    } = failure;
    tracing::warn!(batch, unavailable, %message, "model batch failed");
    for reply in replies {
        let message = message.clone();
        let _ = reply.send(Err(if unavailable {
            BatchError::Unavailable { message }
        } else {
            BatchError::Failed { batch, message }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Doubles numbers; records batch sizes; optionally sleeps, fails on 13, panics on 666, and
    /// finds what it depends on unavailable on 7.
    struct Doubler {
        sizes: Arc<Mutex<Vec<usize>>>,
        delay: Duration,
    }

    impl BatchRunner for Doubler {
        type Item = i64;
        type Output = i64;
        type Error = std::io::Error;
        fn run(&mut self, items: &[i64]) -> Result<Vec<i64>, std::io::Error> {
            self.sizes.lock().unwrap().push(items.len());
            thread::sleep(self.delay);
            if items.contains(&666) {
                panic!("a runner bug");
            }
            if items.contains(&13) {
                return Err(std::io::Error::other("unlucky batch"));
            }
            if items.contains(&7) {
                return Err(std::io::ErrorKind::ConnectionRefused.into());
            }
            Ok(items.iter().map(|v| v * 2).collect())
        }

        fn unavailable(error: &std::io::Error) -> bool {
            error.kind() == std::io::ErrorKind::ConnectionRefused
        }
    }

    fn doublers(n: usize, delay: Duration) -> (Vec<Doubler>, Arc<Mutex<Vec<usize>>>) {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let runners = (0..n)
            .map(|_| Doubler {
                sizes: sizes.clone(),
                delay,
            })
            .collect();
        (runners, sizes)
    }

    fn config(max_batch: usize, delay_ms: u64, capacity: usize) -> BatcherConfig {
        BatcherConfig {
            max_batch,
            max_delay: Duration::from_millis(delay_ms),
            queue_capacity: capacity,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_batches_and_get_their_own_results() {
        let (runners, sizes) = doublers(1, Duration::from_millis(30));
        let batcher = Batcher::start(runners, config(8, 5, 256));
        // 100.. avoids the values the runner treats specially (13, 666).
        let tasks: Vec<_> = (100..140i64)
            .map(|v| {
                let b = batcher.clone();
                tokio::spawn(async move { (v, b.submit(v).await) })
            })
            .collect();
        for task in tasks {
            let (v, result) = task.await.unwrap();
            assert_eq!(result, Ok(v * 2));
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 40);
        let stats = batcher.stats();
        assert_eq!(stats.batch_size.count(), sizes.len() as u64);
        assert_eq!(stats.batch_size.sum(), 40.0);
        assert_eq!(stats.queue_wait.count(), 40, "one wait per request");
        assert_eq!(
            stats.compute.count(),
            sizes.len() as u64,
            "one run per batch"
        );
        assert!(stats.compute.sum() >= 0.03 * sizes.len() as f64 * 0.9);
        assert_eq!(batcher.queue_depth(), 0);
        assert!(
            sizes.iter().all(|&s| s <= 8),
            "max_batch respected: {sizes:?}"
        );
        assert!(
            sizes.len() <= 10,
            "40 requests while busy must batch: {sizes:?}"
        );
    }

    #[tokio::test]
    async fn a_lone_request_is_not_held_beyond_the_queue_delay() {
        let (runners, sizes) = doublers(1, Duration::ZERO);
        let batcher = Batcher::start(runners, config(32, 20, 64));
        let started = std::time::Instant::now();
        assert_eq!(batcher.submit(21).await, Ok(42));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(*sizes.lock().unwrap(), vec![1]);
    }

    #[tokio::test]
    async fn a_failed_batch_fails_its_requests_and_the_worker_goes_on() {
        let (runners, _) = doublers(1, Duration::ZERO);
        let batcher = Batcher::start(runners, config(1, 0, 8));
        let err = batcher.submit(13).await.unwrap_err();
        assert!(
            matches!(&err, BatchError::Failed { batch: 1, message } if message == "unlucky batch"),
            "{err}"
        );
        let err = batcher.submit(666).await.unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
        let err = batcher.submit(7).await.unwrap_err();
        assert!(
            matches!(&err, BatchError::Unavailable { .. }),
            "a runner's unavailable dependency is not the batch's failure: {err}"
        );
        assert_eq!(batcher.submit(4).await, Ok(8), "the worker survives");
        assert_eq!(batcher.stats().failed_batches(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_instead_of_growing() {
        let (runners, _) = doublers(1, Duration::from_millis(300));
        let batcher = Batcher::start(runners, config(1, 0, 2));
        // One request runs (300 ms), then the queue of 2 fills.
        let mut waiting = Vec::new();
        for v in 0..3 {
            let b = batcher.clone();
            waiting.push(tokio::spawn(async move { b.submit(v).await }));
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        assert_eq!(batcher.queue_depth(), 2, "the queue is full");
        let err = batcher.submit(99).await.unwrap_err();
        assert_eq!(err, BatchError::QueueFull { capacity: 2 });
        assert_eq!(batcher.stats().queue_full(), 1);
        for task in waiting {
            assert!(task.await.unwrap().is_ok());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_worker_of_the_pool_takes_batches() {
        // Two runners that each wait for the other to be running at the same time: with one
        // worker at a time this would time out.
        struct Rendezvous {
            arrive: std_mpsc::SyncSender<()>,
            meet: Arc<Mutex<std_mpsc::Receiver<()>>>,
        }
        impl BatchRunner for Rendezvous {
            type Item = u8;
            type Output = bool;
            type Error = std::io::Error;
            fn run(&mut self, items: &[u8]) -> Result<Vec<bool>, std::io::Error> {
                self.arrive.send(()).unwrap();
                let met = self
                    .meet
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(5))
                    .is_ok();
                Ok(vec![met; items.len()])
            }
        }
        // Each runner signals the other's channel.
        let (a_tx, a_rx) = std_mpsc::sync_channel(4);
        let (b_tx, b_rx) = std_mpsc::sync_channel(4);
        let runners = vec![
            Rendezvous {
                arrive: b_tx,
                meet: Arc::new(Mutex::new(a_rx)),
            },
            Rendezvous {
                arrive: a_tx,
                meet: Arc::new(Mutex::new(b_rx)),
            },
        ];
        let batcher = Batcher::start(runners, config(1, 0, 8));
        let (b1, b2) = (batcher.clone(), batcher.clone());
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { b1.submit(1).await }),
            tokio::spawn(async move { b2.submit(2).await })
        );
        assert_eq!(r1.unwrap(), Ok(true), "both batches ran at the same time");
        assert_eq!(r2.unwrap(), Ok(true));
    }
}
