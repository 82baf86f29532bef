//! [`BatchStats`]: what a batcher measures as it runs — how long requests wait in its queue,
//! how long each batch computes, how large batches are, and what fails — read by `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Measurements of one batcher (one graph), shared by its handle and its worker threads.
#[derive(Debug)]
pub struct BatchStats {
    /// Seconds each request waited between its submission and the start of its batch's run.
    pub queue_wait: Histogram,
    /// Seconds each batch spent in the runner (the ONNX Runtime session).
    pub compute: Histogram,
    /// Requests per batch run.
    pub batch_size: Histogram,
    failed_batches: AtomicU64,
    queue_full: AtomicU64,
}

impl BatchStats {
    /// Empty measurements for a batcher whose batches hold at most `max_batch` requests.
    pub fn new(max_batch: usize) -> Self {
        // Powers of two up to max_batch: 1, 2, 4, … (the last bucket holds max_batch itself).
        let doublings = usize::BITS - max_batch.max(1).saturating_sub(1).leading_zeros();
        Self {
            // 0.25 ms to about 8 s.
            queue_wait: Histogram::new(exponential_buckets(0.00025, 2.0, 16)),
            compute: Histogram::new(exponential_buckets(0.00025, 2.0, 16)),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, doublings as u16 + 1)),
            failed_batches: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
        }
    }

    /// Batches whose run failed (every request of such a batch fails).
    pub fn failed_batches(&self) -> u64 {
        self.failed_batches.load(Ordering::Relaxed)
    }

    /// Requests refused because the queue was full.
    pub fn queue_full(&self) -> u64 {
        self.queue_full.load(Ordering::Relaxed)
    }

    pub(super) fn batch_failed(&self) {
        self.failed_batches.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn refused_full(&self) {
        self.queue_full.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_size_buckets_end_at_max_batch() {
        for (max_batch, top) in [(1, 1.0), (2, 2.0), (32, 32.0), (33, 64.0)] {
            let stats = BatchStats::new(max_batch);
            stats.batch_size.observe(max_batch as f64);
            let mut text = String::new();
            let mut registry = prometheus_client::registry::Registry::default();
            registry.register("b", "b", stats.batch_size.clone());
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            let last = format!("b_bucket{{le=\"{top:.1}\"}} 1");
            assert!(text.contains(&last), "{max_batch}: {text}");
        }
    }
}
