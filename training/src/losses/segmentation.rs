//! Segmentation loss: generalised Dice (Sudre 2017) plus cross-entropy, and optionally a soft
//! Dice of the whole tumour per image (docs/METHOD.md §2).

use tch::{Kind, Tensor};

/// Smallest denominator of the Dice ratio (avoids 0/0 on degenerate inputs).
const EPS: f64 = 1e-12;

/// Generalised Dice loss per image, averaged over the batch, on probabilities p [N,L,H,W] and
/// one-hot labels y [N,L,H,W]: `1 − 2 Σ_l w_l Σ_i y p / Σ_l w_l Σ_i (y + p)`, w_l = 1/(Σ_i y)².
/// A label absent from an image gets the largest weight of the labels present (as MONAI does),
/// so predicting it where it is not is still penalised.
pub fn generalized_dice_probabilities(p: &Tensor, y: &Tensor) -> Tensor {
    let volume = y.sum_dim_intlist(&[2i64, 3][..], false, Kind::Float);
    let present = volume.gt(0.0);
    let inverse_square = volume.clamp_min(1.0).square().reciprocal();
    let finite = inverse_square.where_self(&present, &volume.zeros_like());
    let largest = finite.amax([1], true).expand_as(&finite);
    let weights = finite.where_self(&present, &largest);
    let intersection = (p * y).sum_dim_intlist(&[2i64, 3][..], false, Kind::Float);
    let total = (p + y).sum_dim_intlist(&[2i64, 3][..], false, Kind::Float);
    let numerator = (&weights * intersection).sum_dim_intlist(&[1i64][..], false, Kind::Float);
    let denominator = (&weights * total)
        .sum_dim_intlist(&[1i64][..], false, Kind::Float)
        .clamp_min(EPS);
    (-(numerator * 2.0 / denominator) + 1.0).mean(Kind::Float)
}

/// One-hot [N,L,H,W] float of an i64 label map [N,H,W].
fn one_hot(labels: &Tensor, classes: i64) -> Tensor {
    labels
        .one_hot(classes)
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float)
}

/// Generalised Dice loss of logits [N,L,H,W] against an i64 label map [N,H,W].
pub fn generalized_dice(logits: &Tensor, labels: &Tensor) -> Tensor {
    let classes = logits.size()[1];
    generalized_dice_probabilities(&logits.softmax(1, Kind::Float), &one_hot(labels, classes))
}

/// Mean pixel-wise cross-entropy of logits [N,L,H,W] against an i64 label map [N,H,W].
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    let classes = logits.size()[1];
    let log_p = logits.log_softmax(1, Kind::Float);
    -(log_p * one_hot(labels, classes))
        .sum_dim_intlist(&[1i64][..], false, Kind::Float)
        .mean(Kind::Float)
}

/// Smoothing of the whole-tumour Dice, in pixels: an image with no lesion and no predicted lesion
/// costs nothing, one with no lesion and p pixels' worth of predicted lesion costs p / (p + 1).
const WHOLE_TUMOUR_SMOOTHING: f64 = 1.0;

/// Soft Dice loss of the whole tumour (every label but background, as one), per image and
/// averaged over the batch: `1 − (2 Σ p y + s) / (Σ p + Σ y + s)` with p = 1 − P(background),
/// y = 1 on lesion pixels, s = [`WHOLE_TUMOUR_SMOOTHING`].
///
/// Generalised Dice weighs each label by its volume, so on a healthy image a few stray lesion
/// pixels barely cost anything; the evaluation's whole-tumour Dice counts such an image as 0.
/// This term scores each image the way the evaluation does.
pub fn whole_tumour_dice(logits: &Tensor, labels: &Tensor) -> Tensor {
    let p = -logits.softmax(1, Kind::Float).select(1, 0) + 1.0;
    let y = labels.gt(0).to_kind(Kind::Float);
    let intersection = (&p * &y).sum_dim_intlist(&[1i64, 2][..], false, Kind::Float);
    let total = (p + y).sum_dim_intlist(&[1i64, 2][..], false, Kind::Float);
    let ratio = (intersection * 2.0 + WHOLE_TUMOUR_SMOOTHING) / (total + WHOLE_TUMOUR_SMOOTHING);
    (-ratio + 1.0).mean(Kind::Float)
}

/// `L_seg = L_GD + L_CE + w · L_WT`, w = `whole_tumour_weight` (0: the method as published).
pub fn segmentation(logits: &Tensor, labels: &Tensor, whole_tumour_weight: f64) -> Tensor {
    let published = generalized_dice(logits, labels) + cross_entropy(logits, labels);
    if whole_tumour_weight > 0.0 {
        published + whole_tumour_dice(logits, labels) * whole_tumour_weight
    } else {
        published
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn labels() -> Tensor {
        // 1 image 4×4: a 2×2 lesion of label 2 and one pixel of label 1
        let mut v = vec![0i64; 16];
        v[5] = 2;
        v[6] = 2;
        v[9] = 2;
        v[10] = 2;
        v[0] = 1;
        Tensor::from_slice(&v).reshape([1, 4, 4])
    }

    #[test]
    fn perfect_prediction_costs_nothing() {
        let y = labels();
        let logits = one_hot(&y, 4) * 50.0;
        assert!(generalized_dice(&logits, &y).double_value(&[]) < 1e-4);
        assert!(cross_entropy(&logits, &y).double_value(&[]) < 1e-4);
    }

    #[test]
    fn empty_or_wrong_prediction_costs_one() {
        let y = one_hot(&labels(), 4);
        let empty = y.zeros_like();
        let loss = generalized_dice_probabilities(&empty, &y).double_value(&[]);
        assert!((loss - 1.0).abs() < 1e-6, "{loss}");
        // all mass on label 3, which is absent: still 1
        let wrong = one_hot(&Tensor::full([1, 4, 4], 3, (Kind::Int64, Device::Cpu)), 4);
        let loss = generalized_dice_probabilities(&wrong, &y).double_value(&[]);
        assert!((loss - 1.0).abs() < 1e-6, "{loss}");
    }

    #[test]
    fn value_known_by_hand() {
        // 4 pixels, labels [0,0,0,1], p = 0.5 for both labels: w = (1/9, 1),
        // Σ w y p = 1.5/9 + 0.5 = 2/3, Σ w (y+p) = 5/9 + 3 = 32/9, GD = 1 − (4/3)/(32/9) = 0.625
        let y = Tensor::from_slice(&[0i64, 0, 0, 1]).reshape([1, 2, 2]);
        let logits = Tensor::zeros([1, 2, 2, 2], (Kind::Float, Device::Cpu));
        let gd = generalized_dice(&logits, &y).double_value(&[]);
        assert!((gd - 0.625).abs() < 1e-6, "{gd}");
        let ce = cross_entropy(&logits, &y).double_value(&[]);
        assert!((ce - 2f64.ln()).abs() < 1e-6, "{ce}");
        let seg = segmentation(&logits, &y, 0.0).double_value(&[]);
        assert!((seg - 0.625 - 2f64.ln()).abs() < 1e-6);
        // whole tumour: p = 0.5 everywhere, y = [0,0,0,1]: 1 − (2·0.5 + 1)/(2 + 1 + 1) = 0.5
        let wt = whole_tumour_dice(&logits, &y).double_value(&[]);
        assert!((wt - 0.5).abs() < 1e-6, "{wt}");
        let seg = segmentation(&logits, &y, 2.0).double_value(&[]);
        assert!((seg - 0.625 - 2f64.ln() - 1.0).abs() < 1e-6, "{seg}");
    }

    #[test]
    fn whole_tumour_dice_punishes_stray_pixels_on_a_healthy_image() {
        // a healthy 4×4 image: nothing predicted costs ~0, one confident stray pixel about half
        let healthy = Tensor::zeros([1, 4, 4], (Kind::Int64, Device::Cpu));
        let clean = one_hot(&healthy, 4) * 50.0;
        let clean_loss = whole_tumour_dice(&clean, &healthy).double_value(&[]);
        assert!(clean_loss < 1e-4, "{clean_loss}");
        let mut stray = vec![0i64; 16];
        stray[7] = 2;
        let stray = one_hot(&Tensor::from_slice(&stray).reshape([1, 4, 4]), 4) * 50.0;
        let stray_loss = whole_tumour_dice(&stray, &healthy).double_value(&[]);
        assert!((stray_loss - 0.5).abs() < 1e-4, "{stray_loss}");
        // the generalised Dice hardly sees that pixel
        let gd = generalized_dice(&stray, &healthy).double_value(&[]);
        assert!(gd < 0.1, "{gd}");
        // and a wrong lesion label inside the true lesion is still a whole-tumour hit
        let y = labels();
        let mut swapped = vec![0i64; 16];
        for i in [0usize, 5, 6, 9, 10] {
            swapped[i] = 3;
        }
        let swapped = one_hot(&Tensor::from_slice(&swapped).reshape([1, 4, 4]), 4) * 50.0;
        let hit = whole_tumour_dice(&swapped, &y).double_value(&[]);
        assert!(hit < 1e-4, "{hit}");
    }
}
