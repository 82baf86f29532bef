//! The lesion-size bins that both evaluations (`diptych-train eval`'s whole-tumour Dice and
//! `diptych eval`'s abnormal-mode retrieval) break their figures down by, so that their tables
//! can be read side by side.

/// Lesions smaller than this share of the frame are "small" (0.5 %: about 9 × 9 pixels at 128²,
/// near one grid cell).
pub const SMALL: f64 = 0.005;

/// Lesions from this share of the frame on are "large" (2 %: about 18 × 18 pixels at 128²).
pub const LARGE: f64 = 0.02;

/// The bins' names, in the order of [`bin`].
pub const NAMES: [&str; 3] = ["< 0.5 %", "0.5–2 %", "≥ 2 %"];

/// The bin of a lesion covering `share` of the frame: 0 below [`SMALL`], 1 below [`LARGE`], 2
/// from there on.
pub fn bin(share: f64) -> usize {
    usize::from(share >= SMALL) + usize::from(share >= LARGE)
}

/// The share of a label map's pixels that carry an abnormal label (any value but 0).
pub fn share(abnormal_labels: &[u8]) -> f64 {
    if abnormal_labels.is_empty() {
        return 0.0;
    }
    abnormal_labels.iter().filter(|&&l| l != 0).count() as f64 / abnormal_labels.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_split_at_half_a_percent_and_two_percent() {
        assert_eq!(bin(0.0), 0);
        assert_eq!(bin(0.004_99), 0);
        assert_eq!(bin(SMALL), 1);
        assert_eq!(bin(0.019_9), 1);
        assert_eq!(bin(LARGE), 2);
        assert_eq!(bin(1.0), 2);
        let mut labels = vec![0u8; 1000];
        labels[..5].copy_from_slice(&[1, 2, 3, 2, 1]);
        assert_eq!(share(&labels), 0.005);
        assert_eq!(bin(share(&labels)), 1);
        assert_eq!(share(&[]), 0.0);
    }
}
