//! Discrimination loss on the abnormal path: pull abnormal codes onto the codebook, push normal
//! ones at least the margin m away.

use tch::{Kind, Tensor};

/// Per position `a·c + (1 − a)·max(0, m − c)`, where c [N,h,w] is the commitment distance
/// (mean over D of (z_a − sg[e_a])²) and a [N,h,w] is 1 where the grid cell holds a lesion pixel,
/// 0 elsewhere; each class is averaged over its own positions and the two means are added, so
/// the few lesion positions (a few percent of a batch) pull as hard as the many normal ones push.
pub fn discrimination_position(distance: &Tensor, abnormal: &Tensor, margin: f64) -> Tensor {
    let normal = -abnormal + 1.0;
    let hinge = (-distance + margin).relu();
    let class_mean = |weights: &Tensor, values: &Tensor| {
        (weights * values).sum(Kind::Float) / weights.sum(Kind::Float).clamp_min(1.0)
    };
    class_mean(abnormal, distance) + class_mean(&normal, &hinge)
}

/// Onto the null code: per position, a normal one (a = 0) costs `n` = mean over D of z_a² (its
/// distance to the zero code, which it should quantise to); a lesion one costs its commitment
/// distance c plus `max(0, m − n)`, so it sits on a code of its own, at least m away from zero.
/// Each class is averaged over its own positions, as in [`discrimination_position`].
pub fn discrimination_null(
    distance: &Tensor,
    null_distance: &Tensor,
    abnormal: &Tensor,
    margin: f64,
) -> Tensor {
    let normal = -abnormal + 1.0;
    let away = (-null_distance + margin).relu();
    let class_mean = |weights: &Tensor, values: &Tensor| {
        (weights * values).sum(Kind::Float) / weights.sum(Kind::Float).clamp_min(1.0)
    };
    class_mean(abnormal, &(distance + away)) + class_mean(&normal, null_distance)
}

/// docs/METHOD.md literally: c is the mean distance of each image, a [N] is 1 for an image with a
/// lesion; `a·c + (1 − a)·max(0, m − c)` averaged over the batch.
pub fn discrimination_image(distance: &Tensor, has_lesion: &Tensor, margin: f64) -> Tensor {
    let c = distance.mean_dim(&[1i64, 2][..], false, Kind::Float);
    let hinge = (-&c + margin).relu();
    (has_lesion * &c + (-has_lesion + 1.0) * hinge).mean(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(values: &[f32], shape: [i64; 3]) -> Tensor {
        Tensor::from_slice(values).reshape(shape)
    }

    #[test]
    fn hinge_on_both_sides_of_the_margin() {
        let m = 1.0;
        // normal positions: c = 0.4 < m costs 0.6; c = 1.5 > m costs 0
        let c = t(&[0.4, 1.5], [1, 1, 2]);
        let normal = t(&[0.0, 0.0], [1, 1, 2]);
        assert!((discrimination_position(&c, &normal, m).double_value(&[]) - 0.3).abs() < 1e-6);
        // abnormal positions cost c itself, whatever the margin
        let abnormal = t(&[1.0, 1.0], [1, 1, 2]);
        assert!((discrimination_position(&c, &abnormal, m).double_value(&[]) - 0.95).abs() < 1e-6);
    }

    #[test]
    fn each_class_is_averaged_over_its_own_positions() {
        // lesion positions c = 0.2, 3.0 → mean 1.6; normal c = 0.4, 1.5 → hinge mean 0.3
        let c = t(&[0.2, 0.4, 1.5, 3.0], [1, 2, 2]);
        let a = t(&[1.0, 0.0, 0.0, 1.0], [1, 2, 2]);
        let loss = discrimination_position(&c, &a, 1.0).double_value(&[]);
        assert!((loss - 1.9).abs() < 1e-6, "{loss}");
    }

    #[test]
    fn null_level_pulls_normal_positions_to_zero_and_lesions_away_from_it() {
        // lesion positions: c = 0.1, n = 0.4 → 0.1 + 0.6; c = 0.3, n = 2.0 → 0.3 → mean 0.5;
        // normal positions: n = 0.2, 0.6 → mean 0.4
        let c = t(&[0.1, 0.5, 0.7, 0.3], [1, 2, 2]);
        let n = t(&[0.4, 0.2, 0.6, 2.0], [1, 2, 2]).set_requires_grad(true);
        let a = t(&[1.0, 0.0, 0.0, 1.0], [1, 2, 2]);
        let loss = discrimination_null(&c, &n, &a, 1.0);
        assert!((loss.double_value(&[]) - 0.9).abs() < 1e-6);
        loss.backward();
        let g: Vec<f32> = Vec::try_from(n.grad().reshape([-1])).unwrap();
        // a lesion near zero is pushed away (n grows), one beyond the margin is left alone;
        // normal positions are pulled towards zero (n shrinks)
        assert!(g[0] < 0.0 && g[3] == 0.0, "{g:?}");
        assert!(g[1] > 0.0 && g[2] > 0.0, "{g:?}");
    }

    #[test]
    fn image_level_uses_the_mean_distance() {
        // image 0 (normal): c = mean(0.2, 0.6) = 0.4 → 0.6; image 1 (lesion): c = 2 → 2
        let c = t(&[0.2, 0.6, 1.0, 3.0], [2, 1, 2]);
        let has_lesion = Tensor::from_slice(&[0.0f32, 1.0]);
        let loss = discrimination_image(&c, &has_lesion, 1.0).double_value(&[]);
        assert!((loss - 1.3).abs() < 1e-6, "{loss}");
    }

    #[test]
    fn gradient_pushes_normal_codes_away_below_the_margin_only() {
        let c = t(&[0.4, 1.5], [1, 1, 2]).set_requires_grad(true);
        let normal = t(&[0.0, 0.0], [1, 1, 2]);
        discrimination_position(&c, &normal, 1.0).backward();
        let g: Vec<f32> = Vec::try_from(c.grad().reshape([-1])).unwrap();
        assert!(g[0] < 0.0 && g[1] == 0.0, "{g:?}");
    }
}
