//! Learning-rate schedule: linear warm-up, then half a cosine period down to a floor, as MONAI
//! 1.4's `WarmupCosineSchedule` (cycles 0.5, warmup_multiplier 0), which PRISM's pretraining uses
//! with 1000 warm-up steps and a floor of 0.
//!
//! The learning rate is a pure function of the step (the number of optimizer steps already
//! taken), so resuming needs only the step and this configuration.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Linear warm-up then cosine decay; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WarmupCosine {
    /// Learning rate at the end of the warm-up.
    pub base_lr: f64,
    pub warmup_steps: u64,
    /// Step at which the cosine reaches its minimum.
    pub total_steps: u64,
    /// Floor after the warm-up, as MONAI's `end_lr`: the cosine value is clamped from below.
    pub min_lr: f64,
}

impl WarmupCosine {
    /// Checks the configuration: warm-up no longer than the run, learning rates finite and
    /// not negative.
    pub fn new(base_lr: f64, warmup_steps: u64, total_steps: u64, min_lr: f64) -> Result<Self> {
        if warmup_steps > total_steps {
            return Err(Error::invalid(format!(
                "warm-up of {warmup_steps} steps is longer than the run of {total_steps} steps; shorten the warm-up"
            )));
        }
        for (name, value) in [
            ("base learning rate", base_lr),
            ("minimum learning rate", min_lr),
        ] {
            if !value.is_finite() || value < 0.0 {
                return Err(Error::invalid(format!(
                    "{name} {value} is invalid; expected a finite value >= 0"
                )));
            }
        }
        Ok(WarmupCosine {
            base_lr,
            warmup_steps,
            total_steps,
            min_lr,
        })
    }

    /// Returns the learning rate for the optimizer step that follows `step` completed steps.
    ///
    /// Warm-up: base_lr · step / warmup_steps for step < warmup_steps (so step 0 has lr 0).
    /// Then max(min_lr, base_lr · ½(1 + cos(π·p))) with p = (step − warmup) / (total − warmup).
    /// Past `total_steps`, p stays at 1 and the rate at its minimum; MONAI lets the cosine
    /// rise again there.
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * (step as f64 / self.warmup_steps as f64);
        }

        let decay_steps = (self.total_steps - self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let factor = (0.5 * (1.0 + (PI * progress).cos())).max(0.0);
        (self.base_lr * factor).max(self.min_lr)
    }
}
