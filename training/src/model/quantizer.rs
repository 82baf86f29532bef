//! Vector quantisation with an EMA-updated codebook and dead-code re-initialisation.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor, nn};

use crate::config::ModelConfig;

/// Smoothing of the EMA cluster sizes (Laplace), as in VQ-VAE-2.
const CLUSTER_EPS: f64 = 1e-5;

/// One codebook C ∈ R^{K×D} (`<path>.codebook`) with its EMA buffers
/// (`<path>.cluster_size` [K], `<path>.embed_sum` [K,D]); none is trained by the optimiser.
#[derive(Debug)]
pub struct VectorQuantizer {
    codebook: Tensor,
    cluster_size: Tensor,
    embed_sum: Tensor,
    decay: f64,
    dead_threshold: f64,
    null_code: bool,
}

/// The result of quantising z [N,D,h,w].
#[derive(Debug)]
pub struct Quantized {
    /// Straight-through code vectors: value of the codebook rows, gradient to z. [N,D,h,w]
    pub e: Tensor,
    /// The codebook rows themselves, without gradient. [N,D,h,w]
    pub codes: Tensor,
    /// Index of the nearest codebook row per position. [N,h,w] i64
    pub indices: Tensor,
    /// Per position mean over D of (z − sg[e])²; differentiable in z. [N,h,w]
    pub distance: Tensor,
}

impl VectorQuantizer {
    /// Creates a codebook under `path` whose every row is learned.
    pub fn new(path: &nn::Path, config: &ModelConfig) -> Self {
        Self::with_null_code(path, config, false)
    }

    /// Creates the codebook under `path` (`quantizer_normal` or `quantizer_abnormal`). With
    /// `null_code`, row 0 is pinned to the zero vector: the abnormal path's "no lesion" code.
    pub fn with_null_code(path: &nn::Path, config: &ModelConfig, null_code: bool) -> Self {
        let (k, d) = (config.codebook_size as i64, config.code_dim as i64);
        let opts = (Kind::Float, path.device());
        let initial = Tensor::randn([k, d], opts);
        if null_code {
            let _ = initial.get(0).zero_();
        }
        let codebook = path.add("codebook", initial, false);
        let cluster_size = path.add("cluster_size", Tensor::zeros([k], opts), false);
        let embed_sum = path.add("embed_sum", Tensor::zeros([k, d], opts), false);
        Self {
            codebook,
            cluster_size,
            embed_sum,
            decay: config.ema_decay,
            dead_threshold: config.dead_code_threshold,
            null_code,
        }
    }

    /// The codebook [K,D] (shares storage with the VarStore variable).
    pub fn codebook(&self) -> &Tensor {
        &self.codebook
    }

    /// Nearest codebook row per position of z [N,D,h,w]: squared distances
    /// ‖z‖² − 2 z·Cᵀ + ‖C‖², argmin over K (ties → lowest index). Returns [N,h,w] i64.
    pub fn nearest(&self, z: &Tensor) -> Tensor {
        let (n, d, h, w) = z.size4().expect("quantiser input is [N,D,h,w]");
        let flat = z.detach().permute([0, 2, 3, 1]).reshape([-1, d]);
        let distances = flat.square().sum_dim_intlist(1, true, Kind::Float)
            - flat.matmul(&self.codebook.tr()) * 2.0
            + self
                .codebook
                .square()
                .sum_dim_intlist(1, false, Kind::Float)
                .unsqueeze(0);
        distances.argmin(1, false).reshape([n, h, w])
    }

    /// The codebook rows for indices [N,h,w] as [N,D,h,w].
    pub fn lookup(&self, indices: &Tensor) -> Tensor {
        let (n, h, w) = indices.size3().expect("indices are [N,h,w]");
        self.codebook
            .index_select(0, &indices.reshape([-1]))
            .reshape([n, h, w, -1])
            .permute([0, 3, 1, 2])
            .contiguous()
    }

    /// Quantises z [N,D,h,w] (the codebook is updated separately, by [`Self::update`]).
    pub fn forward(&self, z: &Tensor) -> Quantized {
        let indices = self.nearest(z);
        let codes = self.lookup(&indices).detach();
        let distance = (z - &codes).square().mean_dim(1, false, Kind::Float);
        let e = z + (&codes - z).detach();
        Quantized {
            e,
            codes,
            indices,
            distance,
        }
    }

    /// One EMA step of the codebook from vectors z [N,D,h,w] and their assigned indices
    /// [N,h,w]; `weights` [N,h,w] (1 = learn from this position, 0 = ignore it) restricts which
    /// vectors the codes follow. Codes whose usage fell below the threshold are then
    /// re-initialised to (weighted) vectors of this batch drawn with `seed` (a function of the
    /// step, so training is reproducible and resumable without torch's global RNG); a pinned
    /// null code stays zero.
    pub fn update(&self, z: &Tensor, indices: &Tensor, weights: Option<&Tensor>, seed: u64) {
        tch::no_grad(|| self.update_inner(z, indices, weights, seed));
    }

    fn update_inner(&self, z: &Tensor, indices: &Tensor, weights: Option<&Tensor>, seed: u64) {
        let d = z.size()[1];
        let k = self.codebook.size()[0];
        let flat = z.detach().permute([0, 2, 3, 1]).reshape([-1, d]);
        let mut one_hot = indices.reshape([-1]).one_hot(k).to_kind(Kind::Float);
        let weight = weights.map(|w| w.reshape([-1]).to_kind(Kind::Float));
        if let Some(w) = &weight {
            one_hot *= w.unsqueeze(1);
        }
        let counts = one_hot.sum_dim_intlist(0, false, Kind::Float);
        let sums = one_hot.tr().matmul(&flat);
        let mut cluster_size = self.cluster_size.shallow_clone();
        let mut embed_sum = self.embed_sum.shallow_clone();
        let _ = cluster_size
            .g_mul_scalar_(self.decay)
            .g_add_(&(counts * (1.0 - self.decay)));
        let _ = embed_sum
            .g_mul_scalar_(self.decay)
            .g_add_(&(sums * (1.0 - self.decay)));
        let total = cluster_size.sum(Kind::Float);
        let smoothed = (&cluster_size + CLUSTER_EPS) / (&total + CLUSTER_EPS * k as f64) * &total;
        let mut codebook = self.codebook.shallow_clone();
        codebook.copy_(&(&embed_sum / smoothed.unsqueeze(1)));

        // candidates for re-initialisation: the vectors the codes may learn from
        let candidates = match &weight {
            Some(w) => w.gt(0.0).nonzero().squeeze_dim(1),
            None => Tensor::arange(flat.size()[0], (Kind::Int64, flat.device())),
        };
        let dead = cluster_size.lt(self.dead_threshold);
        if self.null_code {
            let _ = dead.get(0).fill_(0);
        }
        let n_dead = dead.sum(Kind::Int64).int64_value(&[]);
        let n_candidates = candidates.size()[0];
        if n_dead > 0 && n_candidates > 0 {
            let dead_rows = dead.nonzero().squeeze_dim(1);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let picks: Vec<i64> = (0..n_dead)
                .map(|_| rng.random_range(0..n_candidates))
                .collect();
            let picks = Tensor::from_slice(&picks).to_device(flat.device());
            let fresh = flat.index_select(0, &candidates.index_select(0, &picks));
            let _ = codebook.index_copy_(0, &dead_rows, &fresh);
            let _ = embed_sum.index_copy_(0, &dead_rows, &fresh);
            let _ = cluster_size.index_fill_(0, &dead_rows, 1.0);
        }
        if self.null_code {
            let _ = codebook.get(0).zero_();
            let _ = embed_sum.get(0).zero_();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn quantizer(k: usize, d: usize) -> (nn::VarStore, VectorQuantizer) {
        let vs = nn::VarStore::new(Device::Cpu);
        let config = ModelConfig {
            codebook_size: k,
            code_dim: d,
            ..Default::default()
        };
        let q = VectorQuantizer::new(&(vs.root() / "q"), &config);
        (vs, q)
    }

    #[test]
    fn picks_the_nearest_row_and_lowest_index_on_ties() {
        let (_vs, q) = quantizer(3, 2);
        tch::no_grad(|| {
            let mut c = q.codebook.shallow_clone();
            c.copy_(&Tensor::from_slice(&[0.0f32, 0.0, 1.0, 1.0, 1.0, 1.0]).reshape([3, 2]));
        });
        // Three positions (h=1, w=3): near row 0, exactly rows 1 and 2 (tie → 1), near row 0.
        let z = Tensor::from_slice(&[0.1f32, 0.9, -0.2, 0.0, 1.0, 0.1]).reshape([1, 2, 1, 3]);
        let out = q.forward(&z);
        assert_eq!(
            Vec::<i64>::try_from(out.indices.reshape([-1])).unwrap(),
            vec![0, 1, 0]
        );
        // distance at position 0: mean((0.1-0)², (0-0)²) = 0.005
        let d0 = out.distance.double_value(&[0, 0, 0]);
        assert!((d0 - 0.005).abs() < 1e-6, "{d0}");
        // the straight-through value is the codebook row
        assert!((out.e.double_value(&[0, 0, 0, 1]) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn weights_choose_what_codes_follow_and_the_null_code_stays_zero() {
        let vs = nn::VarStore::new(Device::Cpu);
        let config = ModelConfig {
            codebook_size: 3,
            code_dim: 2,
            ..Default::default()
        };
        let q = VectorQuantizer::with_null_code(&(vs.root() / "q"), &config, true);
        // 8 positions at (4,4) with weight 1 and 8 at (-4,-4) with weight 0
        let a = Tensor::from_slice(&[4.0f32, 4.0])
            .reshape([1, 2, 1, 1])
            .repeat([1, 1, 2, 4]);
        let b = Tensor::from_slice(&[-4.0f32, -4.0])
            .reshape([1, 2, 1, 1])
            .repeat([1, 1, 2, 4]);
        let z = Tensor::cat(&[a, b], 0);
        let w = Tensor::cat(
            &[
                Tensor::ones([1, 2, 4], (Kind::Float, Device::Cpu)),
                Tensor::zeros([1, 2, 4], (Kind::Float, Device::Cpu)),
            ],
            0,
        );
        for _ in 0..300 {
            let out = q.forward(&z);
            q.update(&z, &out.indices, Some(&w), 7);
        }
        let rows: Vec<f32> = Vec::try_from(q.codebook.reshape([-1])).unwrap();
        assert_eq!(&rows[..2], &[0.0, 0.0], "row 0 is the pinned null code");
        for r in 1..3 {
            let (x, y) = (rows[2 * r], rows[2 * r + 1]);
            assert!(
                x > 0.0 && y > 0.0,
                "no code follows the ignored cluster: {rows:?}"
            );
        }
        let near =
            (0..3).any(|r| (rows[2 * r] - 4.0).abs() < 0.1 && (rows[2 * r + 1] - 4.0).abs() < 0.1);
        assert!(near, "a code sits on the weighted cluster: {rows:?}");
    }

    #[test]
    fn straight_through_passes_gradient_to_z() {
        let (_vs, q) = quantizer(4, 3);
        let z = Tensor::randn([2, 3, 2, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let out = q.forward(&z);
        out.e.sum(Kind::Float).backward();
        let g = z.grad();
        assert!((g - 1.0).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn ema_moves_codes_onto_the_data() {
        let (_vs, q) = quantizer(2, 2);
        // Two tight clusters at (5,5) and (-5,-5); after many EMA steps the codes sit on them.
        let a = Tensor::from_slice(&[5.0f32, 5.0]).reshape([1, 2, 1, 1]);
        let b = Tensor::from_slice(&[-5.0f32, -5.0]).reshape([1, 2, 1, 1]);
        let z = Tensor::cat(&[a.repeat([1, 1, 4, 4]), b.repeat([1, 1, 4, 4])], 0);
        for _ in 0..600 {
            let out = q.forward(&z);
            q.update(&z, &out.indices, None, 7);
        }
        let mut rows: Vec<f64> = (0..2).map(|i| q.codebook.double_value(&[i, 0])).collect();
        rows.sort_by(f64::total_cmp);
        assert!(
            (rows[0] + 5.0).abs() < 0.05 && (rows[1] - 5.0).abs() < 0.05,
            "{rows:?}"
        );
    }
}
