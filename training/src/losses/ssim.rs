//! Structural similarity (Wang 2004) with an 11×11 Gaussian window (σ = 1.5), data range 1.

use tch::{Kind, Tensor};

/// Side of the Gaussian SSIM window; the map is computed on the valid region (no padding), so
/// it is `SSIM_WINDOW − 1` pixels smaller than the image on each axis.
pub const SSIM_WINDOW: i64 = 11;
const SIGMA: f64 = 1.5;
const C1: f64 = 0.01 * 0.01;
const C2: f64 = 0.03 * 0.03;

fn window(device: tch::Device) -> Tensor {
    let half = (SSIM_WINDOW / 2) as f64;
    let g: Vec<f32> = (0..SSIM_WINDOW)
        .map(|i| (-((i as f64 - half).powi(2)) / (2.0 * SIGMA * SIGMA)).exp() as f32)
        .collect();
    let g = Tensor::from_slice(&g).to_device(device);
    let g = &g / g.sum(Kind::Float);
    g.outer(&g).reshape([1, 1, SSIM_WINDOW, SSIM_WINDOW])
}

/// SSIM map [N,1,H−10,W−10] of images x, y [N,1,H,W] with values in [0,1].
pub fn ssim_map(x: &Tensor, y: &Tensor) -> Tensor {
    let w = window(x.device());
    let blur = |t: &Tensor| t.conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1);
    let (mu_x, mu_y) = (blur(x), blur(y));
    let (mu_xx, mu_yy, mu_xy) = (mu_x.square(), mu_y.square(), &mu_x * &mu_y);
    let var_x = blur(&x.square()) - &mu_xx;
    let var_y = blur(&y.square()) - &mu_yy;
    let cov = blur(&(x * y)) - &mu_xy;
    ((mu_xy * 2.0 + C1) * (cov * 2.0 + C2)) / ((mu_xx + mu_yy + C1) * (var_x + var_y + C2))
}

/// Mean SSIM of each image pair: [N].
pub fn ssim(x: &Tensor, y: &Tensor) -> Tensor {
    ssim_map(x, y).mean_dim(&[1i64, 2, 3][..], false, Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn an_image_with_itself_scores_one() {
        let x = Tensor::rand([2, 1, 24, 24], (Kind::Float, Device::Cpu));
        let s: Vec<f32> = Vec::try_from(ssim(&x, &x)).unwrap();
        assert!(s.iter().all(|v| (v - 1.0).abs() < 1e-5), "{s:?}");
        assert_eq!(ssim_map(&x, &x).size(), [2, 1, 14, 14]);
    }

    #[test]
    fn constant_images_score_their_luminance_term() {
        // σ = 0: SSIM = (2·0.5·0.25 + C1)/(0.25 + 0.0625 + C1) = 0.2501/0.3126
        let opts = (Kind::Float, Device::Cpu);
        let a = Tensor::full([1, 1, 16, 16], 0.5, opts);
        let b = Tensor::full([1, 1, 16, 16], 0.25, opts);
        let s = ssim(&a, &b).double_value(&[0]);
        assert!((s - 0.2501 / 0.3126).abs() < 1e-4, "{s}");
    }

    #[test]
    fn noise_lowers_it() {
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::rand([1, 1, 32, 32], opts);
        let noisy = (&x + Tensor::randn([1, 1, 32, 32], opts) * 0.2).clamp(0.0, 1.0);
        assert!(ssim(&x, &noisy).double_value(&[0]) < 0.9);
    }
}
