//! The evaluation figures on plain arrays: Dice overlap, ROC AUC, PSNR and SSIM (whole image and
//! inside a mask).
//!
//! SSIM follows Wang et al. (2004): an 11×11 Gaussian window with σ = 1.5, K1 = 0.01, K2 = 0.03 and
//! a data range of 1 (model images lie in [0, 1]). The local SSIM map has one value per pixel; near
//! the border the window is truncated to the image and renormalised, so every pixel has a value.
//! **SSIM inside a mask is the mean of the local SSIM map over the mask's pixels** (each window
//! still sees the pixels around it, inside the mask or not); whole-image SSIM is the mean of the map
//! over all pixels.

/// Side of the SSIM Gaussian window.
pub const SSIM_WINDOW: usize = 11;
/// Standard deviation of the SSIM Gaussian window, in pixels.
pub const SSIM_SIGMA: f64 = 1.5;
/// PSNR reported for identical images (instead of +∞), in dB.
pub const PSNR_CAP_DB: f64 = 100.0;

/// Dice overlap 2|A∩B| / (|A|+|B|) of two masks; `None` when both are empty.
pub fn dice(prediction: &[bool], truth: &[bool]) -> Option<f64> {
    assert_eq!(prediction.len(), truth.len(), "dice: masks differ in size");
    let (mut both, mut total) = (0usize, 0usize);
    for (&p, &t) in prediction.iter().zip(truth) {
        both += usize::from(p && t);
        total += usize::from(p) + usize::from(t);
    }
    (total > 0).then(|| 2.0 * both as f64 / total as f64)
}

/// Area under the ROC curve of `scores` for telling `positive` cases from the others: the
/// probability that a random positive scores above a random negative, ties counting one half
/// (Mann–Whitney U / (n₊·n₋)). `None` when either class is empty.
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    assert_eq!(
        scores.len(),
        positive.len(),
        "roc_auc: scores and labels differ in length"
    );
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mean_rank * order[i..=j].iter().filter(|&&k| positive[k]).count() as f64;
        i = j + 1;
    }
    let u = rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

/// PSNR in dB of `a` against `b` (data range 1) over the pixels where `mask` is true (all pixels
/// when `mask` is `None`); capped at [`PSNR_CAP_DB`]; `None` for an empty mask.
pub fn psnr(a: &[f32], b: &[f32], mask: Option<&[bool]>) -> Option<f64> {
    assert_eq!(a.len(), b.len(), "psnr: images differ in size");
    let (mut sum, mut count) = (0.0f64, 0usize);
    for i in 0..a.len() {
        if mask.is_none_or(|m| m[i]) {
            let d = f64::from(a[i]) - f64::from(b[i]);
            sum += d * d;
            count += 1;
        }
    }
    if count == 0 {
        return None;
    }
    let mse = sum / count as f64;
    Some(if mse <= 0.0 {
        PSNR_CAP_DB
    } else {
        (-10.0 * mse.log10()).min(PSNR_CAP_DB)
    })
}

/// The local SSIM map of two `size`×`size` images (see the module documentation).
pub fn ssim_map(a: &[f32], b: &[f32], size: usize) -> Vec<f64> {
    assert_eq!(
        a.len(),
        size * size,
        "ssim: first image is not {size}×{size}"
    );
    assert_eq!(
        b.len(),
        size * size,
        "ssim: second image is not {size}×{size}"
    );
    let (c1, c2) = ((0.01f64).powi(2), (0.03f64).powi(2));
    let a: Vec<f64> = a.iter().map(|&v| f64::from(v)).collect();
    let b: Vec<f64> = b.iter().map(|&v| f64::from(v)).collect();
    let ab: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
    let aa: Vec<f64> = a.iter().map(|x| x * x).collect();
    let bb: Vec<f64> = b.iter().map(|x| x * x).collect();
    let [mu_a, mu_b, e_aa, e_bb, e_ab] = [&a, &b, &aa, &bb, &ab].map(|v| gaussian_blur(v, size));
    (0..size * size)
        .map(|i| {
            let (ma, mb) = (mu_a[i], mu_b[i]);
            let var_a = e_aa[i] - ma * ma;
            let var_b = e_bb[i] - mb * mb;
            let cov = e_ab[i] - ma * mb;
            ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                / ((ma * ma + mb * mb + c1) * (var_a + var_b + c2))
        })
        .collect()
}

/// Mean of a per-pixel map over the pixels where `mask` is true (all when `None`); `None` for an
/// empty mask.
pub fn masked_mean(map: &[f64], mask: Option<&[bool]>) -> Option<f64> {
    let (mut sum, mut count) = (0.0, 0usize);
    for (i, &v) in map.iter().enumerate() {
        if mask.is_none_or(|m| m[i]) {
            sum += v;
            count += 1;
        }
    }
    (count > 0).then(|| sum / count as f64)
}

/// Whole-image SSIM of two `size`×`size` images.
pub fn ssim(a: &[f32], b: &[f32], size: usize) -> f64 {
    masked_mean(&ssim_map(a, b, size), None).expect("an image has pixels")
}

/// Separable Gaussian blur with the SSIM window, truncated at the border and renormalised.
fn gaussian_blur(v: &[f64], size: usize) -> Vec<f64> {
    let half = (SSIM_WINDOW / 2) as isize;
    let kernel: Vec<f64> = (-half..=half)
        .map(|d| (-((d * d) as f64) / (2.0 * SSIM_SIGMA * SSIM_SIGMA)).exp())
        .collect();
    let pass = |src: &[f64], horizontal: bool| -> Vec<f64> {
        let mut out = vec![0.0; size * size];
        for r in 0..size {
            for c in 0..size {
                let (mut acc, mut norm) = (0.0, 0.0);
                for (k, w) in kernel.iter().enumerate() {
                    let off = k as isize - half;
                    let (rr, cc) = if horizontal {
                        (r as isize, c as isize + off)
                    } else {
                        (r as isize + off, c as isize)
                    };
                    if (0..size as isize).contains(&rr) && (0..size as isize).contains(&cc) {
                        acc += w * src[rr as usize * size + cc as usize];
                        norm += w;
                    }
                }
                out[r * size + c] = acc / norm;
            }
        }
        out
    };
    pass(&pass(v, true), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dice_of_known_masks() {
        let t = [true, true, false, false];
        assert_eq!(dice(&t, &t), Some(1.0));
        assert_eq!(dice(&[false, false, true, true], &t), Some(0.0));
        // |A∩B| = 1, |A| = 2, |B| = 1 → 2/3
        let d = dice(&[true, true, false, false], &[true, false, false, false]).unwrap();
        assert!((d - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(dice(&[false; 4], &[false; 4]), None);
    }

    #[test]
    fn auc_perfect_reversed_ties_and_undefined() {
        let labels = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &labels), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &labels), Some(0.0));
        // All scores equal: every pair is a tie → 0.5.
        assert_eq!(roc_auc(&[0.5; 4], &labels), Some(0.5));
        // One tie across classes among 4 pairs: pairs (pos>neg) = 3, tie = 1 → (3 + 0.5) / 4.
        let a = roc_auc(&[0.1, 0.5, 0.5, 0.9], &labels).unwrap();
        assert!((a - 3.5 / 4.0).abs() < 1e-12, "{a}");
        // Interleaved: positives at ranks 2 and 4 of 4 → U = (2+4) − 3 = 3 → 3/4.
        let a = roc_auc(&[0.1, 0.2, 0.3, 0.4], &[false, true, false, true]).unwrap();
        assert!((a - 0.75).abs() < 1e-12, "{a}");
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
    }

    #[test]
    fn psnr_known_values() {
        let a = [0.0f32; 4];
        let b = [0.1f32; 4];
        // MSE = 0.01 → 20 dB.
        assert!((psnr(&a, &b, None).unwrap() - 20.0).abs() < 1e-4);
        assert_eq!(psnr(&a, &a, None), Some(PSNR_CAP_DB));
        let mask = [true, false, false, false];
        let c = [0.0f32, 1.0, 1.0, 1.0];
        assert_eq!(psnr(&a, &c, Some(&mask)), Some(PSNR_CAP_DB));
        assert_eq!(psnr(&a, &c, Some(&[false; 4])), None);
    }

    fn ramp(size: usize) -> Vec<f32> {
        (0..size * size)
            .map(|i| ((i % size) as f32 + (i / size) as f32) / (2 * size) as f32)
            .collect()
    }

    #[test]
    fn ssim_of_identical_images_is_one_and_falls_with_noise() {
        let size = 24;
        let a = ramp(size);
        assert!((ssim(&a, &a, size) - 1.0).abs() < 1e-12);
        let noisy: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, v)| v + if i % 2 == 0 { 0.1 } else { -0.1 })
            .collect();
        let s = ssim(&a, &noisy, size);
        assert!(s < 0.9 && s > 0.0, "{s}");
        // Inverting the contrast of a textured image makes SSIM negative.
        let inverted: Vec<f32> = noisy.iter().map(|v| 1.0 - v).collect();
        assert!(ssim(&noisy, &inverted, size) < 0.0);
    }

    #[test]
    fn ssim_of_constant_shift_matches_the_luminance_term() {
        // Two constant images x = 0.2, y = 0.4: variances and covariance vanish, so SSIM is the
        // luminance term (2·0.2·0.4 + C1) / (0.2² + 0.4² + C1).
        let size = 16;
        let a = vec![0.2f32; size * size];
        let b = vec![0.4f32; size * size];
        let c1 = 0.0001;
        let expected = (2.0 * 0.2 * 0.4 + c1) / (0.04 + 0.16 + c1);
        assert!((ssim(&a, &b, size) - expected).abs() < 1e-6);
    }

    #[test]
    fn masked_ssim_only_counts_mask_pixels() {
        let size = 32;
        let a = ramp(size);
        // Damage only the left quarter of the image.
        let b: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, v)| if i % size < 8 { 1.0 - v } else { *v })
            .collect();
        let map = ssim_map(&a, &b, size);
        let right: Vec<bool> = (0..size * size).map(|i| i % size >= 20).collect();
        let left: Vec<bool> = (0..size * size).map(|i| i % size < 8).collect();
        // Far from the damage (beyond the window's reach), the map is exactly 1.
        assert!((masked_mean(&map, Some(&right)).unwrap() - 1.0).abs() < 1e-9);
        assert!(masked_mean(&map, Some(&left)).unwrap() < 0.5);
        assert_eq!(masked_mean(&map, Some(&[false; 32 * 32])), None);
    }
}
