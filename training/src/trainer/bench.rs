//! Timing of a config on this machine: data generation per sample and one training step.

use std::sync::Arc;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, nn::VarStore};

use super::{Adam, TrainError, learning_rate};
use crate::config::TrainConfig;
use crate::data::{Augmenter, Batch, SliceSource, open_source};
use crate::losses::total_loss;
use crate::model::Diptych;

/// Measured costs.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Seconds to generate (or read), preprocess and augment one sample on one thread.
    pub seconds_per_sample: f64,
    /// Wall-clock seconds of one forward + backward + Adam step on a ready batch.
    pub seconds_per_step: f64,
    /// Process CPU seconds per step (all threads; robust to other load on the machine).
    pub cpu_seconds_per_step: f64,
    /// Trainable parameters.
    pub parameters: i64,
}

/// Times one batch of data and `steps` training steps (after two warm-up steps).
pub fn bench(config: &TrainConfig, device: Device, steps: usize) -> Result<Timing, TrainError> {
    config.validate()?;
    let source: Arc<dyn SliceSource> = Arc::from(open_source(config)?);
    let augmenter = Augmenter::new(config.data.augment.clone());
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let n = config.schedule.batch_size;
    let t0 = Instant::now();
    let samples = (0..n as u64)
        .map(|i| augmenter.draw(&mut rng).apply(&source.sample(i * 7919)))
        .collect();
    let seconds_per_sample = t0.elapsed().as_secs_f64() / n as f64;
    let batch = Batch { samples };

    let vs = VarStore::new(device);
    let net = Diptych::new(&vs.root(), &config.model);
    let mut adam = Adam::new(&vs);
    let parameters = vs
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum();
    let targets = batch.targets(device);
    if std::env::var_os("DIPTYCH_BENCH_DETAIL").is_some() {
        for _ in 0..3 {
            let x = &targets.image;
            let t = Instant::now();
            let (zn, za) = net.encoder.forward_t(x, true);
            let _ = zn.double_value(&[0, 0, 0, 0]);
            let t1 = t.elapsed().as_secs_f64();
            let qn = net.quantizer_normal.forward(&zn);
            let qa = net.quantizer_abnormal.forward(&za);
            let _ = qa.e.double_value(&[0, 0, 0, 0]);
            let t2 = t.elapsed().as_secs_f64();
            let y = net.seg_decoder.forward_t(&qa.e, true);
            let _ = y.double_value(&[0, 0, 0, 0]);
            let t3 = t.elapsed().as_secs_f64();
            let c = y.softmax(1, tch::Kind::Float);
            let img = net.image_decoder.forward_t(&qn.e, &c, true);
            let _ = img.double_value(&[0, 0, 0, 0]);
            let t4 = t.elapsed().as_secs_f64();
            eprintln!(
                "encoder {t1:.3} quantizers {:.3} seg {:.3} image(N) {:.3}",
                t2 - t1,
                t3 - t2,
                t4 - t3
            );
            // x̂ and x̃ as the training step renders them (2N), forward and backward: with N zero
            // maps appended to the condition (the baseline) and with the zero condition's
            // modulation computed once.
            let (c, e) = (c.detach(), qn.e.detach());
            let codes = tch::Tensor::cat(&[&e, &e], 0);
            let n = e.size()[0];
            let t = Instant::now();
            let appended = tch::Tensor::cat(&[&c, &c.zeros_like()], 0);
            net.image_decoder
                .forward_t(&codes, &appended, true)
                .sum(tch::Kind::Float)
                .backward();
            let plain = t.elapsed().as_secs_f64();
            let t = Instant::now();
            net.image_decoder
                .forward_with_zero_tail(&codes, &c, n, true)
                .sum(tch::Kind::Float)
                .backward();
            let shared = t.elapsed().as_secs_f64();
            eprintln!(
                "image(2N) forward+backward: zero maps appended {plain:.3}, zero condition \
                 shared {shared:.3} ({:.2}x)",
                plain / shared
            );
        }
    }
    let mut elapsed = 0.0;
    let cpu_start = cpu_seconds();
    for step in 0..steps + 2 {
        let t = Instant::now();
        let out = net.forward_t(&targets.image, true);
        let _ = out.recon.double_value(&[0, 0, 0, 0]);
        let grid = config.model.grid_size() as i64;
        net.update_codebooks(&out, Some(&targets.lesion_positions(grid)), step as u64);
        let t1 = t.elapsed().as_secs_f64();
        let terms = total_loss(&out, &targets, &config.loss);
        let _ = terms.total.double_value(&[]);
        let t2 = t.elapsed().as_secs_f64();
        adam.zero_grad();
        terms.total.backward();
        let t3 = t.elapsed().as_secs_f64();
        adam.step(learning_rate(&config.schedule, step));
        let t4 = t.elapsed().as_secs_f64();
        if std::env::var_os("DIPTYCH_BENCH_DETAIL").is_some() {
            eprintln!(
                "forward {t1:.3} loss {:.3} backward {:.3} adam {:.3}",
                t2 - t1,
                t3 - t2,
                t4 - t3
            );
        }
        if step >= 2 {
            elapsed += t.elapsed().as_secs_f64();
        }
    }
    let cpu = cpu_seconds() - cpu_start;
    let per = |t: f64| t / steps.max(1) as f64;
    Ok(Timing {
        seconds_per_sample,
        seconds_per_step: per(elapsed),
        cpu_seconds_per_step: per(cpu * steps as f64 / (steps + 2) as f64),
        parameters,
    })
}

/// CPU time of this process (user + system) from /proc/self/stat; 0 where unavailable.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // fields after the command name (which may hold spaces) start after the last ')'
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |p| p.1)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the ')'
    (ticks(11) + ticks(12)) / 100.0
}
