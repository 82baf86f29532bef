//! The weighted sum `L = λ_lat L_lat + λ_dis L_dis + λ_seg L_seg + λ_rec L_rec + λ_res L_res
//! + λ_twin L_twin` (λ_twin = 0, the method as published, unless a config sets it).

use tch::{Kind, Tensor};

use super::{
    discrimination_image, discrimination_null, discrimination_position, latent, reconstruction,
    residual, segmentation, twin,
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
    /// Healthy twins (the image itself where a sample has none). [N,1,S,S] f32
    pub twin: Tensor,
    /// 1 for samples whose twin is known. [N,1,1,1] f32
    pub has_twin: Tensor,
}

impl Targets {
    /// Builds the targets from images [N,1,S,S] and abnormal label maps [N,S,S] (i64), without
    /// twins.
    pub fn new(image: Tensor, abnormal: Tensor) -> Self {
        let has_twin = Tensor::zeros([image.size()[0], 1, 1, 1], (Kind::Float, image.device()));
        let twin = image.shallow_clone();
        Self::with_twins(image, abnormal, twin, has_twin)
    }

    /// Builds the targets with healthy twins [N,1,S,S] and a 0/1 flag per sample [N,1,1,1]
    /// saying which twins are known.
    pub fn with_twins(image: Tensor, abnormal: Tensor, twin: Tensor, has_twin: Tensor) -> Self {
        let lesion = abnormal.gt(0).to_kind(Kind::Float).unsqueeze(1);
        let has_lesion = lesion.amax([1, 2, 3], false);
        Self {
            image,
            abnormal,
            lesion,
            has_lesion,
            twin,
            has_twin,
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
    /// L_twin (x̃ against the healthy twin inside the lesion).
    pub twin: Tensor,
    /// The weighted sum.
    pub total: Tensor,
}

impl LossTerms {
    /// The named scalar values, in a fixed order, for logs and curves.
    pub fn values(&self) -> [(&'static str, f64); 7] {
        let v = |t: &Tensor| t.double_value(&[]);
        [
            ("total", v(&self.total)),
            ("lat", v(&self.latent)),
            ("dis", v(&self.discrimination)),
            ("seg", v(&self.segmentation)),
            ("rec", v(&self.reconstruction)),
            ("res", v(&self.residual)),
            ("twin", v(&self.twin)),
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
        DiscriminationLevel::Null => {
            let grid = out.abnormal_distance.size()[1];
            let null_distance = out.z_a.square().mean_dim(1, false, Kind::Float);
            discrimination_null(
                &out.abnormal_distance,
                &null_distance,
                &targets.lesion_positions(grid),
                margin,
            )
        }
    };
    let seg = segmentation(&out.seg_logits, &targets.abnormal, config.whole_tumour_dice);
    let rec = reconstruction(
        &targets.image,
        &out.recon,
        &out.normal_appearing,
        &targets.lesion,
        config.lambda_ssim,
    );
    let res = residual(&out.recon, &out.normal_appearing, &targets.lesion);
    let twin_loss = if config.lambda_twin > 0.0 {
        twin(
            &targets.twin,
            &out.normal_appearing,
            &targets.lesion,
            &targets.has_twin,
        )
    } else {
        Tensor::zeros([], (Kind::Float, targets.image.device()))
    };
    let total = &latent_loss * config.lambda_lat
        + &discrimination * config.lambda_dis
        + &seg * config.lambda_seg
        + &rec * config.lambda_rec
        + &res * config.lambda_res
        + &twin_loss * config.lambda_twin;
    LossTerms {
        latent: latent_loss,
        discrimination,
        segmentation: seg,
        reconstruction: rec,
        residual: res,
        twin: twin_loss,
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
