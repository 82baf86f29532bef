//! Twin loss: where a source knows the healthy twin (the synthetic sources do), x̃ must show it
//! inside the lesion too — the supervision the method lacks on real data, where the anatomy
//! under a lesion is never seen.

use tch::{Kind, Tensor};

use super::ssim::ssim_map;

/// `Σ M ⊙ (t − x̃)² / Σ M + Σ M' ⊙ (1 − SSIM(t, x̃)) / Σ M'`, with `M` the lesion of the samples
/// that have a twin and `M'` the same mask cropped to SSIM's valid window. All tensors
/// [N,1,S,S] except `has_twin` [N,1,1,1]; 0 when no sample has a twin with a lesion.
pub fn twin(
    twin: &Tensor,
    normal_appearing: &Tensor,
    lesion: &Tensor,
    has_twin: &Tensor,
) -> Tensor {
    let mask = lesion * has_twin;
    let count = mask.sum(Kind::Float).clamp_min(1.0);
    let squared = (&mask * (twin - normal_appearing).square()).sum(Kind::Float) / count;
    let map = ssim_map(twin, normal_appearing);
    let (size, inner) = (mask.size()[2], map.size()[2]);
    let pad = (size - inner) / 2;
    let cropped = mask.narrow(2, pad, inner).narrow(3, pad, inner);
    let structure =
        (&cropped * (-map + 1.0)).sum(Kind::Float) / cropped.sum(Kind::Float).clamp_min(1.0);
    squared + structure
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn lesion() -> Tensor {
        let lesion = Tensor::zeros([2, 1, 32, 32], (Kind::Float, Device::Cpu));
        let _ = lesion.narrow(2, 8, 12).narrow(3, 8, 12).fill_(1.0);
        lesion
    }

    #[test]
    fn only_the_lesion_of_samples_with_a_twin_counts() {
        let opts = (Kind::Float, Device::Cpu);
        let t = Tensor::rand([2, 1, 32, 32], opts);
        let lesion = lesion();
        let with = Tensor::ones([2, 1, 1, 1], opts);
        // x̃ equals the twin inside the lesion and differs outside: no loss.
        let outside_only = &t + (-&lesion + 1.0) * 0.5;
        let zero = twin(&t, &outside_only, &lesion, &with).double_value(&[]);
        assert!(zero.abs() < 1e-6, "{zero}");
        // x̃ differs inside the lesion: loss > 0, unless no sample has a twin.
        let inside = &t + &lesion * 0.5;
        assert!(twin(&t, &inside, &lesion, &with).double_value(&[]) > 0.2);
        let without = Tensor::zeros([2, 1, 1, 1], opts);
        assert_eq!(twin(&t, &inside, &lesion, &without).double_value(&[]), 0.0);
    }

    #[test]
    fn a_constant_offset_inside_costs_its_square() {
        let opts = (Kind::Float, Device::Cpu);
        let t = Tensor::zeros([2, 1, 32, 32], opts) + 0.5;
        let lesion = lesion();
        let x = &t + &lesion * 0.2;
        let with = Tensor::ones([2, 1, 1, 1], opts);
        let value = twin(&t, &x, &lesion, &with).double_value(&[]);
        // 0.04 from the squared error, plus a small structural term (the means differ).
        assert!((0.04..0.3).contains(&value), "{value}");
    }
}
