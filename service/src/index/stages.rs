//! [`AcceptStages`]: where the time of one accepted instance goes between its arrival at the
//! index and its acknowledgement — examining it (parse, UID rule, header), waiting for room
//! in the backlog, the duplicate check against the catalog, and the write-ahead log's append and
//! fsync with the decoding and pre-processing of its pixels alongside — as histograms that `/metrics` exports. A DIMSE sender waits for each answer before
//! the next instance, so these stages are what one modality's C-STORE rate is made of.

use std::time::Instant;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// One histogram per stage of [`super::Index::accept`], in seconds.
#[derive(Debug)]
pub struct AcceptStages {
    /// Parsing, the UID rule and the header (and the duplicate check against the known set).
    pub examine: Histogram,
    /// Waiting for room in the backlog of acknowledged frames (non-zero when indexing lags).
    pub backlog: Histogram,
    /// The catalog look-up that claims the instance against copies in flight or indexed.
    pub claim: Histogram,
    /// The write-ahead log's append (writing, the group commit's fsync, waiting for it) and,
    /// at the same time on another thread, decoding and pre-processing the pixels: the longer
    /// of the two.
    pub durable: Histogram,
    /// The whole accept, from arrival to the answer.
    pub total: Histogram,
}

impl Default for AcceptStages {
    fn default() -> Self {
        // 50 µs to about 3.3 s.
        let buckets = || Histogram::new(exponential_buckets(0.00005, 2.0, 17));
        AcceptStages {
            examine: buckets(),
            backlog: buckets(),
            claim: buckets(),
            durable: buckets(),
            total: buckets(),
        }
    }
}

impl AcceptStages {
    /// Every stage with its label, for `/metrics`.
    pub fn each(&self) -> [(&'static str, &Histogram); 5] {
        [
            ("examine", &self.examine),
            ("backlog", &self.backlog),
            ("claim", &self.claim),
            ("durable", &self.durable),
            ("total", &self.total),
        ]
    }
}

/// Times consecutive stages: each [`Stopwatch::lap`] observes the time since the last one.
pub(crate) struct Stopwatch {
    last: Instant,
}

impl Stopwatch {
    /// Starts timing now.
    pub(crate) fn start() -> Stopwatch {
        Stopwatch {
            last: Instant::now(),
        }
    }

    /// Records the time since the previous lap (or the start) in `stage`.
    pub(crate) fn lap(&mut self, stage: &Histogram) {
        let now = Instant::now();
        stage.observe((now - self.last).as_secs_f64());
        self.last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_land_in_their_own_stage() {
        let stages = AcceptStages::default();
        let mut watch = Stopwatch::start();
        std::thread::sleep(std::time::Duration::from_millis(5));
        watch.lap(&stages.examine);
        watch.lap(&stages.durable);
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("examine", "", stages.examine.clone());
        registry.register("durable", "", stages.durable.clone());
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let sum = |name: &str| -> f64 {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{name}_sum")))
                .unwrap();
            line.split_whitespace().last().unwrap().parse().unwrap()
        };
        assert!(sum("examine") >= 0.005, "{text}");
        assert!(sum("durable") < 0.005, "{text}");
        assert!(text.contains("examine_count 1"), "{text}");
    }
}
