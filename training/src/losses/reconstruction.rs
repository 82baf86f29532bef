//! Reconstruction loss (x̂ everywhere, x̃ outside the lesion) and residual loss.

use tch::{Kind, Tensor};

use super::ssim::ssim;

/// `‖x − x̂‖² + λ_ssim (1 − SSIM(x, x̂)) + ‖M_n ⊙ (x − x̃)‖²` with M_n = 1 − lesion; all
/// [N,1,S,S], lesion ∈ {0,1}. Means over all pixels.
pub fn reconstruction(
    x: &Tensor,
    recon: &Tensor,
    normal_appearing: &Tensor,
    lesion: &Tensor,
    lambda_ssim: f64,
) -> Tensor {
    let mse = (x - recon).square().mean(Kind::Float);
    let structure = -ssim(x, recon).mean(Kind::Float) + 1.0;
    let outside = ((-lesion + 1.0) * (x - normal_appearing))
        .square()
        .mean(Kind::Float);
    mse + structure * lambda_ssim + outside
}

/// `‖M_n ⊙ (x̂ − x̃)‖²`: outside the lesion both renderings must agree.
pub fn residual(recon: &Tensor, normal_appearing: &Tensor, lesion: &Tensor) -> Tensor {
    ((-lesion + 1.0) * (recon - normal_appearing))
        .square()
        .mean(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn setup() -> (Tensor, Tensor) {
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::rand([2, 1, 16, 16], opts);
        // lesion: the top-left 8×8 quarter
        let lesion = Tensor::zeros([2, 1, 16, 16], opts);
        let _ = lesion.narrow(2, 0, 8).narrow(3, 0, 8).fill_(1.0);
        (x, lesion)
    }

    #[test]
    fn masked_terms_ignore_the_lesion() {
        let (x, lesion) = setup();
        // x̃ differs from x only inside the lesion, x̂ = x: the loss is 0
        let x_tilde = &x + &lesion * 0.7;
        let loss = reconstruction(&x, &x, &x_tilde, &lesion, 0.5).double_value(&[]);
        assert!(loss.abs() < 1e-5, "{loss}");
        assert!(residual(&x, &x_tilde, &lesion).double_value(&[]).abs() < 1e-9);
    }

    #[test]
    fn differences_outside_the_lesion_count() {
        let (x, lesion) = setup();
        // x̃ = x + 0.5 everywhere: outside term = 0.25 × 3/4 of the pixels = 0.1875
        let x_tilde = &x + 0.5;
        let loss = reconstruction(&x, &x, &x_tilde, &lesion, 0.5).double_value(&[]);
        assert!((loss - 0.1875).abs() < 1e-5, "{loss}");
        let res = residual(&x, &x_tilde, &lesion).double_value(&[]);
        assert!((res - 0.1875).abs() < 1e-5, "{res}");
        // x̂ off by 0.1 everywhere adds 0.01 of MSE plus λ·(1 − SSIM) > 0
        let recon = &x + 0.1;
        let worse = reconstruction(&x, &recon, &x, &lesion, 0.5).double_value(&[]);
        assert!(worse > 0.01, "{worse}");
    }
}
