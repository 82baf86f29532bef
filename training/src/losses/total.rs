//! The weighted sum `L = λ_lat L_lat + λ_dis L_dis + λ_seg L_seg + λ_rec L_rec + λ_res L_res`.

use tch::{Kind, Tensor};

use super::{
    discrimination_image, discrimination_position, latent, reconstruction, residual, segmentation,
};
use crate::config::{DiscriminationLevel, LossConfig};
use crate::model::Outputs;

/// The ground truth of a batch, on the model's device.
#[derive(Debug)]
pub struct Targets {
    /// Preprocessed images x. [N,1,S,S] f32 in [0,1]
    pub image: Tensor,
    /// Abnormal label map (0 background, 1 NCR/NET, 2 edema, 3 enhancing). [N,S,S] i64
    pub abnormal: Tensor,
    /// M_a: 1 where any abnormal label is present. [N,1,S,S] f32
    pub lesion: Tensor,
    /// 1 for images with a lesion. [N] f32
    pub has_lesion: Tensor,
}

impl Targets {
    /// Builds the targets from images [N,1,S,S] and abnormal label maps [N,S,S] (i64).
    pub fn new(image: Tensor, abnormal: Tensor) -> Self {
        let lesion = abnormal.gt(0).to_kind(Kind::Float).unsqueeze(1);
        let has_lesion = lesion.amax([1, 2, 3], false);
        Self {
            image,
            abnormal,
            lesion,
            has_lesion,
        }
    }

    /// 1 for each grid position [N,h,w] whose cell holds a lesion pixel.
    pub fn lesion_positions(&self, grid: i64) -> Tensor {
        let k = self.lesion.size()[2] / grid;
        self.lesion
            .max_pool2d([k, k], [k, k], [0, 0], [1, 1], false)
            .squeeze_dim(1)
    }
}

/// Each loss of one step (unweighted) and the weighted total that is back-propagated.
#[derive(Debug)]
pub struct LossTerms {
    /// L_lat summed over both paths.
    pub latent: Tensor,
    /// L_dis.
    pub discrimination: Tensor,
    /// L_seg.
    pub segmentation: Tensor,
    /// L_rec.
    pub reconstruction: Tensor,
    /// L_res.
    pub residual: Tensor,
    /// The weighted sum.
    pub total: Tensor,
}

impl LossTerms {
    /// The named scalar values, in a fixed order, for logs and curves.
    pub fn values(&self) -> [(&'static str, f64); 6] {
        let v = |t: &Tensor| t.double_value(&[]);
        [
            ("total", v(&self.total)),
            ("lat", v(&self.latent)),
            ("dis", v(&self.discrimination)),
            ("seg", v(&self.segmentation)),
            ("rec", v(&self.reconstruction)),
            ("res", v(&self.residual)),
        ]
    }
}

/// All five losses of a forward pass against its targets.
pub fn total_loss(out: &Outputs, targets: &Targets, config: &LossConfig) -> LossTerms {
    let margin = config.margin;
    let latent_loss =
        latent(&out.z_n, &out.codes_n, config.beta) + latent(&out.z_a, &out.codes_a, config.beta);
    let discrimination = match config.discrimination {
        DiscriminationLevel::Position => {
            let grid = out.abnormal_distance.size()[1];
            discrimination_position(
                &out.abnormal_distance,
                &targets.lesion_positions(grid),
                margin,
            )
        }
        DiscriminationLevel::Image => {
            discrimination_image(&out.abnormal_distance, &targets.has_lesion, margin)
        }
    };
    let seg = segmentation(&out.seg_logits, &targets.abnormal);
    let rec = reconstruction(
        &targets.image,
        &out.recon,
        &out.normal_appearing,
        &targets.lesion,
        config.lambda_ssim,
    );
    let res = residual(&out.recon, &out.normal_appearing, &targets.lesion);
    let total = &latent_loss * config.lambda_lat
        + &discrimination * config.lambda_dis
        + &seg * config.lambda_seg
        + &rec * config.lambda_rec
        + &res * config.lambda_res;
    LossTerms {
        latent: latent_loss,
        discrimination,
        segmentation: seg,
        reconstruction: rec,
        residual: res,
        total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn lesion_positions_mark_cells_with_any_lesion_pixel() {
        let mut labels = vec![0i64; 64];
        labels[9] = 2; // row 1, col 1 → cell (0,0) of a 2×2 grid of 4×4 cells
        let t = Targets::new(
            Tensor::zeros([1, 1, 8, 8], (Kind::Float, Device::Cpu)),
            Tensor::from_slice(&labels).reshape([1, 8, 8]),
        );
        let cells: Vec<f32> = Vec::try_from(t.lesion_positions(2).reshape([-1])).unwrap();
        assert_eq!(cells, vec![1.0, 0.0, 0.0, 0.0]);
        assert_eq!(t.has_lesion.double_value(&[0]), 1.0);
    }
}
