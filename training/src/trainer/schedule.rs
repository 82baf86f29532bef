//! The learning-rate schedule: linear warm-up, then cosine decay to a floor.

use crate::config::ScheduleConfig;

/// Learning rate at `step` (0-based).
pub fn learning_rate(config: &ScheduleConfig, step: usize) -> f64 {
    let peak = config.learning_rate;
    if step < config.warmup_steps {
        return peak * (step + 1) as f64 / config.warmup_steps as f64;
    }
    let span = config.steps.saturating_sub(config.warmup_steps).max(1) as f64;
    let progress = ((step - config.warmup_steps) as f64 / span).min(1.0);
    let floor = peak * config.final_lr_fraction;
    floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays_to_the_floor() {
        let c = ScheduleConfig {
            steps: 1100,
            warmup_steps: 100,
            learning_rate: 1.0,
            final_lr_fraction: 0.1,
            ..Default::default()
        };
        assert!((learning_rate(&c, 0) - 0.01).abs() < 1e-12);
        assert!((learning_rate(&c, 99) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&c, 600) - 0.55).abs() < 1e-9);
        assert!((learning_rate(&c, 1100) - 0.1).abs() < 1e-9);
    }
}
