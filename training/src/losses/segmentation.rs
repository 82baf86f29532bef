//! Segmentation loss: generalised Dice (Sudre 2017) plus cross-entropy.

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

/// `L_seg = L_GD + L_CE`.
pub fn segmentation(logits: &Tensor, labels: &Tensor) -> Tensor {
    generalized_dice(logits, labels) + cross_entropy(logits, labels)
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
        let seg = segmentation(&logits, &y).double_value(&[]);
        assert!((seg - 0.625 - 2f64.ln()).abs() < 1e-6);
    }
}
