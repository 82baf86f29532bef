//! Adam written on tensors, so that its moments can be saved and restored with a checkpoint
//! (tch's own optimiser keeps them inside libtorch, out of reach).

use std::path::Path;

use tch::{Tensor, nn::VarStore};

/// Adam (Kingma & Ba 2015) over the trainable variables of a VarStore, without weight decay.
#[derive(Debug)]
pub struct Adam {
    params: Vec<(String, Tensor)>,
    first: Vec<Tensor>,
    second: Vec<Tensor>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    steps: i64,
}

impl Adam {
    /// An optimiser for every variable of `vs` that requires a gradient (β = 0.9, 0.999).
    pub fn new(vs: &VarStore) -> Self {
        let mut params: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let first = params.iter().map(|(_, t)| t.zeros_like()).collect();
        let second = params.iter().map(|(_, t)| t.zeros_like()).collect();
        Self {
            params,
            first,
            second,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            steps: 0,
        }
    }

    /// Number of updates applied so far.
    pub fn steps(&self) -> i64 {
        self.steps
    }

    /// Clears the gradients of all parameters.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// One update with learning rate `lr` from the current gradients.
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        let t = self.steps as i32;
        let correction1 = 1.0 - self.beta1.powi(t);
        let correction2 = 1.0 - self.beta2.powi(t);
        tch::no_grad(|| {
            for (((_, p), m), v) in self
                .params
                .iter_mut()
                .zip(&mut self.first)
                .zip(&mut self.second)
            {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let _ = m
                    .g_mul_scalar_(self.beta1)
                    .g_add_(&(&g * (1.0 - self.beta1)));
                let _ = v
                    .g_mul_scalar_(self.beta2)
                    .g_add_(&(g.square() * (1.0 - self.beta2)));
                let denominator = (&*v / correction2).sqrt() + self.eps;
                let update = &*m / denominator * (lr / correction1);
                let _ = p.g_sub_(&update);
            }
        });
    }

    /// Saves the moments and the step count (a tch `.ot` file).
    pub fn save(&self, path: &Path) -> Result<(), tch::TchError> {
        let steps = Tensor::from_slice(&[self.steps]);
        let mut named: Vec<(String, &Tensor)> = vec![("steps".to_string(), &steps)];
        for (((name, _), m), v) in self.params.iter().zip(&self.first).zip(&self.second) {
            named.push((format!("first.{name}"), m));
            named.push((format!("second.{name}"), v));
        }
        Tensor::save_multi(&named, path)
    }

    /// Restores moments and step count saved by [`Adam::save`] for the same network.
    pub fn load(&mut self, path: &Path) -> Result<(), tch::TchError> {
        let device = self
            .params
            .first()
            .map_or(tch::Device::Cpu, |p| p.1.device());
        let saved: std::collections::HashMap<String, Tensor> =
            Tensor::load_multi_with_device(path, device)?
                .into_iter()
                .collect();
        let missing =
            |name: &str| tch::TchError::FileFormat(format!("optimizer state lacks {name}"));
        self.steps = saved
            .get("steps")
            .ok_or_else(|| missing("steps"))?
            .int64_value(&[0]);
        tch::no_grad(|| -> Result<(), tch::TchError> {
            for (((name, _), m), v) in self
                .params
                .iter()
                .zip(&mut self.first)
                .zip(&mut self.second)
            {
                m.copy_(
                    saved
                        .get(&format!("first.{name}"))
                        .ok_or_else(|| missing(name))?,
                );
                v.copy_(
                    saved
                        .get(&format!("second.{name}"))
                        .ok_or_else(|| missing(name))?,
                );
            }
            Ok(())
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, nn};

    #[test]
    fn minimises_a_quadratic_and_restores_its_state() {
        let vs = VarStore::new(Device::Cpu);
        let x = vs.root().var("x", &[3], nn::Init::Const(5.0));
        let mut adam = Adam::new(&vs);
        for _ in 0..300 {
            adam.zero_grad();
            x.square().sum(Kind::Float).backward();
            adam.step(0.1);
        }
        assert!(x.abs().max().double_value(&[]) < 0.05, "{x}");
        let path = std::env::temp_dir().join(format!("diptych-adam-{}.ot", std::process::id()));
        adam.save(&path).unwrap();
        let mut fresh = Adam::new(&vs);
        fresh.load(&path).unwrap();
        assert_eq!(fresh.steps(), 300);
        assert!(fresh.second[0].equal(&adam.second[0]));
        std::fs::remove_file(&path).unwrap();
    }
}
