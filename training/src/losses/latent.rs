//! Latent loss: codebook term plus β times the commitment term.

use tch::Tensor;

/// `‖sg[z] − e‖² + β ‖z − sg[e]‖²` (means), for z and its codebook rows e (pass the rows,
/// not the straight-through tensor). With EMA codebooks e has no gradient, so only the
/// commitment term trains the encoder.
pub fn latent(z: &Tensor, e: &Tensor, beta: f64) -> Tensor {
    let codebook = (z.detach() - e).square().mean(tch::Kind::Float);
    let commitment = (z - e.detach()).square().mean(tch::Kind::Float);
    codebook + commitment * beta
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn value_and_gradient_by_hand() {
        // z = 1, e = 0 everywhere: 1 + 0.25·1 = 1.25; d/dz = β·2(z−e)/n = 0.5/n.
        let z = Tensor::ones([2, 3, 2, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let e = Tensor::zeros([2, 3, 2, 2], (Kind::Float, Device::Cpu));
        let loss = latent(&z, &e, 0.25);
        assert!((loss.double_value(&[]) - 1.25).abs() < 1e-6);
        loss.backward();
        let expected = 0.5 / 24.0;
        assert!((z.grad().double_value(&[0, 0, 0, 0]) - expected).abs() < 1e-7);
    }

    #[test]
    fn zero_when_z_sits_on_its_code() {
        let z = Tensor::randn([1, 4, 3, 3], (Kind::Float, Device::Cpu));
        assert!(latent(&z, &z.copy(), 0.25).double_value(&[]).abs() < 1e-9);
    }
}
