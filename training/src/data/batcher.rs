//! Batches assembled on background threads, so data generation overlaps the training step.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};

use super::{Augmenter, Sample, SliceSource};
use crate::losses::Targets;

/// Phantom indices are drawn from [0, this): about 6·10^10 subjects, never exhausted.
const ENDLESS_INDEX_RANGE: u64 = 1 << 40;

/// N samples stacked.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The samples, in order.
    pub samples: Vec<Sample>,
}

impl Batch {
    /// Images [N,1,S,S] on `device`.
    pub fn images(&self, device: Device) -> Tensor {
        let (n, s) = (self.samples.len() as i64, self.samples[0].size as i64);
        let flat: Vec<f32> = self
            .samples
            .iter()
            .flat_map(|x| x.image.iter().copied())
            .collect();
        Tensor::from_slice(&flat)
            .reshape([n, 1, s, s])
            .to_device(device)
    }

    /// Healthy twins [N,1,S,S] (the image itself where a sample has none).
    pub fn twins(&self, device: Device) -> Tensor {
        let (n, s) = (self.samples.len() as i64, self.samples[0].size as i64);
        let flat: Vec<f32> = self
            .samples
            .iter()
            .flat_map(|x| x.twin.as_ref().unwrap_or(&x.image).iter().copied())
            .collect();
        Tensor::from_slice(&flat)
            .reshape([n, 1, s, s])
            .to_device(device)
    }

    /// Abnormal label maps [N,S,S] i64 on `device`.
    pub fn abnormal(&self, device: Device) -> Tensor {
        let (n, s) = (self.samples.len() as i64, self.samples[0].size as i64);
        let flat: Vec<i64> = self
            .samples
            .iter()
            .flat_map(|x| x.abnormal.iter().map(|&l| l as i64))
            .collect();
        Tensor::from_slice(&flat)
            .reshape([n, s, s])
            .to_device(device)
    }

    /// 1 for each sample whose twin is known, [N,1,1,1] f32 on `device`.
    pub fn has_twin(&self, device: Device) -> Tensor {
        let flags: Vec<f32> = self
            .samples
            .iter()
            .map(|s| if s.twin.is_some() { 1.0 } else { 0.0 })
            .collect();
        Tensor::from_slice(&flags)
            .reshape([-1, 1, 1, 1])
            .to_device(device)
    }

    /// The loss targets of this batch, with the twins the sources know.
    pub fn targets(&self, device: Device) -> Targets {
        Targets::with_twins(
            self.images(device),
            self.abnormal(device),
            self.twins(device),
            self.has_twin(device),
        )
    }
}

/// The sample indices of one step: a pure function of (seed, step), so a resumed run sees the
/// same data as an uninterrupted one.
pub fn step_indices(seed: u64, step: usize, batch_size: usize, len: Option<usize>) -> Vec<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step as u64);
    let range = len.map_or(ENDLESS_INDEX_RANGE, |l| l.max(1) as u64);
    (0..batch_size)
        .map(|_| rng.random_range(0..range))
        .collect()
}

fn assemble(
    source: &dyn SliceSource,
    augmenter: Option<&Augmenter>,
    seed: u64,
    step: usize,
    batch_size: usize,
) -> Batch {
    let indices = step_indices(seed, step, batch_size, source.len());
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xA5A5_5A5A ^ (step as u64).rotate_left(17));
    let samples = indices
        .into_iter()
        .map(|i| {
            let sample = source.sample(i);
            match augmenter {
                Some(a) => a.draw(&mut rng).apply(&sample),
                None => sample,
            }
        })
        .collect();
    Batch { samples }
}

/// An iterator of batches for steps `start, start+1, ..`, filled by `workers` threads.
pub struct Batcher {
    receiver: Receiver<(usize, Batch)>,
    pending: BTreeMap<usize, Batch>,
    next: usize,
    _workers: Vec<JoinHandle<()>>,
}

impl Batcher {
    /// Starts the worker threads; each keeps at most two batches ready ahead of the trainer.
    pub fn spawn(
        source: Arc<dyn SliceSource>,
        augmenter: Option<Augmenter>,
        batch_size: usize,
        seed: u64,
        start: usize,
        workers: usize,
    ) -> Self {
        let workers = workers.max(1);
        let (sender, receiver) = sync_channel(2 * workers);
        let handles = (0..workers)
            .map(|w| {
                let (source, augmenter, sender): (_, _, SyncSender<_>) =
                    (source.clone(), augmenter.clone(), sender.clone());
                std::thread::Builder::new()
                    .name(format!("batcher-{w}"))
                    .spawn(move || {
                        let mut step = start + w;
                        loop {
                            let batch = assemble(
                                source.as_ref(),
                                augmenter.as_ref(),
                                seed,
                                step,
                                batch_size,
                            );
                            if sender.send((step, batch)).is_err() {
                                return;
                            }
                            step += workers;
                        }
                    })
                    .expect("spawning a batcher thread")
            })
            .collect();
        Self {
            receiver,
            pending: BTreeMap::new(),
            next: start,
            _workers: handles,
        }
    }
}

impl Iterator for Batcher {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        while !self.pending.contains_key(&self.next) {
            let (step, batch) = self.receiver.recv().ok()?;
            self.pending.insert(step, batch);
        }
        let batch = self.pending.remove(&self.next);
        self.next += 1;
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    /// A source whose every pixel holds its index, to trace ordering.
    struct Numbered;

    impl SliceSource for Numbered {
        fn len(&self) -> Option<usize> {
            Some(1000)
        }
        fn sample(&self, index: u64) -> Sample {
            Sample {
                size: 2,
                image: vec![index as f32; 4],
                abnormal: vec![0; 4],
                normal: vec![0; 4],
                twin: None,
            }
        }
    }

    #[test]
    fn batches_arrive_in_step_order_and_are_reproducible() {
        let source: Arc<dyn SliceSource> = Arc::new(Numbered);
        let a: Vec<Batch> = Batcher::spawn(source.clone(), None, 3, 7, 0, 2)
            .take(6)
            .collect();
        let b: Vec<Batch> = Batcher::spawn(source, None, 3, 7, 4, 1).take(2).collect();
        for (step, batch) in a.iter().enumerate() {
            let got: Vec<u64> = batch.samples.iter().map(|s| s.image[0] as u64).collect();
            assert_eq!(got, step_indices(7, step, 3, Some(1000)));
        }
        // resuming at step 4 yields the same batches as steps 4 and 5 of the full run
        assert_eq!(b[0].samples, a[4].samples);
        assert_eq!(b[1].samples, a[5].samples);
        assert_eq!(a[0].images(Device::Cpu).size(), [3, 1, 2, 2]);
        assert_eq!(a[0].abnormal(Device::Cpu).kind(), Kind::Int64);
    }
}
