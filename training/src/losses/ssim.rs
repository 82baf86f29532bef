//! Structural similarity (Wang 2004) with an 11×11 Gaussian window (σ = 1.5), data range 1.
//!
//! The window is separable, so each local mean is two 1-D passes rather than one 11×11
//! convolution, each pass a product with a banded matrix, and the five means SSIM needs (x, y,
//! x², y², xy) go through them as one batch. The result is the same up to float rounding; the
//! gradient is far cheaper on CPU, where a single-channel 11×11 convolution's backward pass falls
//! back to a slow path (it was a third of a training step on a 2-core AVX2 machine).

use tch::{Kind, Tensor};

/// Side of the Gaussian SSIM window; the map is computed on the valid region (no padding), so
/// it is `SSIM_WINDOW − 1` pixels smaller than the image on each axis.
pub const SSIM_WINDOW: i64 = 11;
const SIGMA: f64 = 1.5;
const C1: f64 = 0.01 * 0.01;
const C2: f64 = 0.03 * 0.03;

/// The normalised 1-D Gaussian of the window, SSIM_WINDOW taps.
fn gaussian() -> Vec<f32> {
    let half = (SSIM_WINDOW / 2) as f64;
    let g: Vec<f64> = (0..SSIM_WINDOW)
        .map(|i| (-((i as f64 - half).powi(2)) / (2.0 * SIGMA * SIGMA)).exp())
        .collect();
    let sum: f64 = g.iter().sum();
    g.iter().map(|v| (v / sum) as f32).collect()
}

/// The valid-region 1-D Gaussian filter along an axis of length n as a banded matrix
/// [n, n − SSIM_WINDOW + 1]: column j holds the window at rows j..j + SSIM_WINDOW.
fn band(g: &[f32], n: i64, device: tch::Device) -> Tensor {
    let out = n - SSIM_WINDOW + 1;
    let mut m = vec![0f32; (n * out) as usize];
    for j in 0..out {
        for (k, w) in g.iter().enumerate() {
            m[((j + k as i64) * out + j) as usize] = *w;
        }
    }
    Tensor::from_slice(&m).reshape([n, out]).to_device(device)
}

/// Valid-region Gaussian mean of each image of t [M,1,H,W]: a column pass and a row pass, each
/// a matrix product with a banded matrix (a GEMM, cheap forwards and backwards).
fn blur(t: &Tensor) -> Tensor {
    let g = gaussian();
    let (h, w) = (t.size()[2], t.size()[3]);
    let rows = band(&g, w, t.device());
    let cols = band(&g, h, t.device()).transpose(0, 1);
    cols.matmul(&t.matmul(&rows))
}

/// SSIM map [N,1,H−10,W−10] of images x, y [N,1,H,W] with values in [0,1].
pub fn ssim_map(x: &Tensor, y: &Tensor) -> Tensor {
    let stacked = Tensor::cat(&[x, y, &x.square(), &y.square(), &(x * y)], 0);
    let means = blur(&stacked).chunk(5, 0);
    let [mu_x, mu_y, m_xx, m_yy, m_xy] = &means[..] else {
        unreachable!("chunk(5) of a batch of 5·N gives five parts")
    };
    let (mu_xx, mu_yy, mu_xy) = (mu_x.square(), mu_y.square(), mu_x * mu_y);
    let var_x = m_xx - &mu_xx;
    let var_y = m_yy - &mu_yy;
    let cov = m_xy - &mu_xy;
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
    fn the_separable_window_equals_the_full_11_by_11_one() {
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::rand([3, 1, 40, 36], opts);
        let g = Tensor::from_slice(&gaussian());
        let full = g.outer(&g).reshape([1, 1, SSIM_WINDOW, SSIM_WINDOW]);
        let dense = x.conv2d(&full, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1);
        let separable = blur(&x);
        assert_eq!(separable.size(), [3, 1, 30, 26]);
        let worst = (separable - dense).abs().max().double_value(&[]);
        assert!(worst < 1e-6, "largest difference {worst}");
    }

    #[test]
    fn noise_lowers_it() {
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::rand([1, 1, 32, 32], opts);
        let noisy = (&x + Tensor::randn([1, 1, 32, 32], opts) * 0.2).clamp(0.0, 1.0);
        assert!(ssim(&x, &noisy).double_value(&[0]) < 0.9);
    }
}
