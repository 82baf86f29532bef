//! Quick held-out scores during training (phantom seed 2), in tch: the same quantities as
//! `diptych-train eval` measures on the exported bundle, for watching a run.

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::data::{Batch, Sample, SliceSource};
use crate::figures::GridRow;
use crate::losses::{SSIM_WINDOW, ssim, ssim_map};
use crate::model::Diptych;

/// Scores of one validation pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Validation {
    /// Slices scored.
    pub slices: usize,
    /// Mean whole-tumour Dice over the slices that have a lesion.
    pub whole_tumor_dice: f64,
    /// ROC AUC of the abnormality score, diseased vs healthy slices.
    pub abnormality_auc: f64,
    /// ROC AUC of the unclamped mean abnormal distance (lower = abnormal).
    pub distance_auc: f64,
    /// Mean SSIM of x̂ against x.
    pub recon_ssim: f64,
    /// SSIM of x̃ against the healthy twin, averaged over lesion pixels.
    pub twin_ssim_in_lesion: f64,
    /// SSIM of x̃ against the healthy twin, averaged over non-lesion pixels.
    pub twin_ssim_outside: f64,
    /// Mean abnormal distance of healthy slices.
    pub healthy_distance: f64,
    /// Mean abnormal distance of diseased slices.
    pub diseased_distance: f64,
}

/// Mann–Whitney AUC: the probability that a random positive scores above a random negative
/// (ties count one half). NaN when a class is empty.
pub fn auc(scores: &[f64], positive: &[bool]) -> f64 {
    let pos: Vec<f64> = scores
        .iter()
        .zip(positive)
        .filter(|p| *p.1)
        .map(|p| *p.0)
        .collect();
    let neg: Vec<f64> = scores
        .iter()
        .zip(positive)
        .filter(|p| !*p.1)
        .map(|p| *p.0)
        .collect();
    if pos.is_empty() || neg.is_empty() {
        return f64::NAN;
    }
    let mut wins = 0.0;
    for p in &pos {
        for n in &neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (pos.len() * neg.len()) as f64
}

/// A fixed held-out set, generated once.
pub struct ValidationSet {
    samples: Vec<Sample>,
}

impl ValidationSet {
    /// The first `n` slices of `source`.
    pub fn new(source: &dyn SliceSource, n: usize) -> Self {
        Self {
            samples: (0..n as u64).map(|i| source.sample(i)).collect(),
        }
    }

    /// Number of slices.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Scores the network (eval mode) on the whole set.
    pub fn score(&self, net: &Diptych, device: Device) -> Validation {
        let mut dice = Vec::new();
        let (mut scores, mut distances, mut positive) = (Vec::new(), Vec::new(), Vec::new());
        let (mut recon, mut in_lesion, mut outside) = (Vec::new(), (0.0, 0.0), (0.0, 0.0));
        let crop = SSIM_WINDOW / 2;
        for chunk in self.samples.chunks(16) {
            let batch = Batch {
                samples: chunk.to_vec(),
            };
            let x = batch.images(device);
            let truth = batch.abnormal(device);
            let twins = batch.twins(device);
            let (enc, dec) = tch::no_grad(|| {
                let enc = net.encode(&x);
                let dec = net.decode(&enc.idx_n, &enc.idx_a);
                (enc, dec)
            });
            let predicted = dec.seg_logits.argmax(1, false).gt(0);
            let actual = truth.gt(0);
            let inter = (&predicted * &actual).sum_dim_intlist(&[1i64, 2][..], false, Kind::Float);
            let sizes = predicted.sum_dim_intlist(&[1i64, 2][..], false, Kind::Float)
                + actual.sum_dim_intlist(&[1i64, 2][..], false, Kind::Float);
            let mean_distance = enc
                .abnormal_distance
                .mean_dim(&[1i64, 2][..], false, Kind::Float);
            let recon_ssim = ssim(&x, &dec.recon);
            let map = ssim_map(&dec.normal_appearing, &twins);
            let s = x.size()[2];
            let lesion = actual
                .unsqueeze(1)
                .to_kind(Kind::Float)
                .narrow(2, crop, s - 2 * crop)
                .narrow(3, crop, s - 2 * crop);
            for (i, sample) in chunk.iter().enumerate() {
                let i = i as i64;
                let diseased = sample.has_lesion();
                if diseased {
                    dice.push(2.0 * inter.double_value(&[i]) / sizes.double_value(&[i]).max(1.0));
                }
                scores.push(enc.abnormality.double_value(&[i]));
                distances.push(-mean_distance.double_value(&[i]));
                positive.push(diseased);
                recon.push(recon_ssim.double_value(&[i]));
                if sample.twin.is_some() {
                    let m = lesion.get(i);
                    let v = map.get(i);
                    in_lesion.0 += (&v * &m).sum(Kind::Float).double_value(&[]);
                    in_lesion.1 += m.sum(Kind::Float).double_value(&[]);
                    outside.0 += (&v * (-&m + 1.0)).sum(Kind::Float).double_value(&[]);
                    outside.1 += (-&m + 1.0).sum(Kind::Float).double_value(&[]);
                }
            }
        }
        let mean = |v: &[f64]| {
            if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let class_mean = |want: bool| {
            let v: Vec<f64> = distances
                .iter()
                .zip(&positive)
                .filter(|p| *p.1 == want)
                .map(|p| -*p.0)
                .collect();
            mean(&v)
        };
        Validation {
            slices: self.samples.len(),
            whole_tumor_dice: mean(&dice),
            abnormality_auc: auc(&scores, &positive),
            distance_auc: auc(&distances, &positive),
            recon_ssim: mean(&recon),
            twin_ssim_in_lesion: in_lesion.0 / in_lesion.1.max(1.0),
            twin_ssim_outside: outside.0 / outside.1.max(1.0),
            healthy_distance: class_mean(false),
            diseased_distance: class_mean(true),
        }
    }

    /// Sample-grid rows for the first `n` slices, diseased ones first.
    pub fn grid_rows(&self, net: &Diptych, device: Device, n: usize) -> Vec<GridRow> {
        let mut picked: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.has_lesion())
            .take(n - n / 3)
            .collect();
        picked.extend(
            self.samples
                .iter()
                .filter(|s| !s.has_lesion())
                .take(n - picked.len()),
        );
        if picked.is_empty() {
            return Vec::new();
        }
        let batch = Batch {
            samples: picked.iter().map(|s| (*s).clone()).collect(),
        };
        let x = batch.images(device);
        let dec = tch::no_grad(|| {
            let enc = net.encode(&x);
            net.decode(&enc.idx_n, &enc.idx_a)
        });
        let to_vec = |t: Tensor| -> Vec<f32> {
            Vec::try_from(t.to_device(Device::Cpu).reshape([-1])).unwrap_or_default()
        };
        let labels = dec.seg_logits.argmax(1, false);
        picked
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let i = i as i64;
                let predicted: Vec<i64> =
                    Vec::try_from(labels.get(i).to_device(Device::Cpu).reshape([-1]))
                        .unwrap_or_default();
                GridRow {
                    size: s.size,
                    input: s.image.clone(),
                    recon: to_vec(dec.recon.get(i)),
                    normal_appearing: to_vec(dec.normal_appearing.get(i)),
                    predicted: predicted.into_iter().map(|l| l as u8).collect(),
                    truth: s.abnormal.clone(),
                    twin: s.twin.clone(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ranks_and_ties() {
        assert_eq!(auc(&[0.9, 0.8, 0.1, 0.2], &[true, true, false, false]), 1.0);
        assert_eq!(auc(&[0.1, 0.2, 0.9, 0.8], &[true, true, false, false]), 0.0);
        assert_eq!(auc(&[0.5, 0.5], &[true, false]), 0.5);
        assert!(auc(&[0.5], &[true]).is_nan());
    }
}
