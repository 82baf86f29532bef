//! One preprocessed training slice with its labels.

/// A slice after the shared pre-processing: an S×S image in [0,1] and its label maps.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Side S.
    pub size: usize,
    /// Preprocessed image, row-major, S·S values in [0,1].
    pub image: Vec<f32>,
    /// Abnormal labels (0 background, 1 NCR/NET, 2 edema, 3 enhancing), S·S.
    pub abnormal: Vec<u8>,
    /// Normal labels (0..6) where the source has them, else all 0.
    pub normal: Vec<u8>,
    /// The healthy twin, preprocessed, where the source has one (the phantom).
    pub twin: Option<Vec<f32>>,
}

impl Sample {
    /// Whether any pixel carries an abnormal label.
    pub fn has_lesion(&self) -> bool {
        self.abnormal.iter().any(|&l| l != 0)
    }
}
