//! Learning-rate schedules exactly as transformers' `get_*_schedule_with_warmup` compute them.
//!
//! Optimizer step `k` (0-based) uses `learning_rate · λ(k)`, where λ rises linearly from 0 over
//! `warmup` steps, then follows the chosen shape down to 0 at `total`. As in transformers, the
//! first step of a warmed-up run therefore uses a learning rate of 0.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrScheduler {
    /// Half a cosine wave from the peak to 0 (`get_cosine_schedule_with_warmup`).
    Cosine,
    /// A straight line from the peak to 0 (`get_linear_schedule_with_warmup`).
    Linear,
    /// The peak, held after warmup (`get_constant_schedule_with_warmup`).
    Constant,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub kind: LrScheduler,
    pub peak: f64,
    pub warmup: usize,
    pub total: usize,
}

impl Schedule {
    /// The learning rate of optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        self.peak * self.factor(step)
    }

    fn factor(&self, step: usize) -> f64 {
        let (step, warmup, total) = (step as f64, self.warmup as f64, self.total as f64);
        if step < warmup {
            return step / warmup.max(1.0);
        }
        match self.kind {
            LrScheduler::Constant => 1.0,
            LrScheduler::Linear => (0.0f64).max((total - step) / (total - warmup).max(1.0)),
            LrScheduler::Cosine => {
                let progress = (step - warmup) / (total - warmup).max(1.0);
                (0.0f64).max(0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(kind: LrScheduler) -> Schedule {
        Schedule {
            kind,
            peak: 2e-4,
            warmup: 10,
            total: 100,
        }
    }

    #[test]
    fn warmup_starts_at_zero_and_reaches_the_peak() {
        let s = schedule(LrScheduler::Cosine);
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(5) - 1e-4).abs() < 1e-15);
        assert!((s.lr(10) - 2e-4).abs() < 1e-15);
    }

    #[test]
    fn shapes_match_transformers() {
        // Values from transformers 4.x/5.x `get_*_schedule_with_warmup(opt, 10, 100)` at step 55.
        let cosine = schedule(LrScheduler::Cosine).lr(55);
        assert!((cosine - 2e-4 * 0.5 * (1.0 + (std::f64::consts::PI * 0.5).cos())).abs() < 1e-15);
        assert!((schedule(LrScheduler::Linear).lr(55) - 1e-4).abs() < 1e-15);
        assert_eq!(schedule(LrScheduler::Constant).lr(55), 2e-4);
        assert_eq!(schedule(LrScheduler::Cosine).lr(100), 0.0);
        assert_eq!(schedule(LrScheduler::Linear).lr(100), 0.0);
    }
}
