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
    fn the_lesion_of_samples_with_a_twin_is_what_counts() {
        let opts = (Kind::Float, Device::Cpu);
        let t = Tensor::rand([2, 1, 32, 32], opts);
        let lesion = lesion();
        let with = Tensor::ones([2, 1, 1, 1], opts);
        // x̃ differs from the twin only outside the lesion: no squared error, and only the SSIM
        // windows that straddle the lesion's edge see the difference.
        let outside = &t + (-&lesion + 1.0) * 0.5;
        let inside = &t + &lesion * 0.5;
        let outside_loss = twin(&t, &outside, &lesion, &with).double_value(&[]);
        let inside_loss = twin(&t, &inside, &lesion, &with).double_value(&[]);
        assert!(
            inside_loss > 0.25 && outside_loss < 0.5 * inside_loss,
            "inside {inside_loss}, outside {outside_loss}"
        );
        // Without a known twin the loss is 0, whatever x̃ shows.
        let without = Tensor::zeros([2, 1, 1, 1], opts);
        assert_eq!(twin(&t, &inside, &lesion, &without).double_value(&[]), 0.0);
    }

    #[test]
    fn a_uniform_offset_costs_its_square_and_its_luminance_term() {
        let opts = (Kind::Float, Device::Cpu);
        // Flat images (no edges): SSIM is its luminance term alone,
        // (2·0.5·0.7 + C1) / (0.5² + 0.7² + C1) ≈ 0.946.
        let t = Tensor::zeros([2, 1, 32, 32], opts) + 0.5;
        let x = Tensor::zeros([2, 1, 32, 32], opts) + 0.7;
        let with = Tensor::ones([2, 1, 1, 1], opts);
        let value = twin(&t, &x, &lesion(), &with).double_value(&[]);
        let c1 = 0.01f64 * 0.01;
        let expected = 0.04 + 1.0 - (0.7 + c1) / (0.74 + c1);
        // f32 rounding in the windowed variances moves the structure term by ~1e-3 around 1.
        assert!((value - expected).abs() < 2e-3, "{value} vs {expected}");
    }
}
