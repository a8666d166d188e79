//! Learning-rate schedules. They advance with applied steps only: a step the loss scaler skips does not
//! move the schedule.

/// A multiplier of the base learning rate as a function of the number of applied steps.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Schedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Linear warmup from `1/warmup_steps` of the base rate to the base rate, then constant.
    LinearWarmup {
        /// Steps to reach the base rate.
        warmup_steps: u64,
    },
    /// Linear warmup, then cosine decay to `min_factor` of the base rate at `total_steps`.
    WarmupCosine {
        /// Steps to reach the base rate.
        warmup_steps: u64,
        /// The step at which the decay reaches `min_factor` (it stays there after).
        total_steps: u64,
        /// The final fraction of the base rate.
        min_factor: f64,
    },
}

impl Schedule {
    /// The multiplier for the step after `applied` applied steps.
    ///
    /// ```
    /// use amp_runtime::train::Schedule;
    /// let s = Schedule::WarmupCosine { warmup_steps: 10, total_steps: 110, min_factor: 0.1 };
    /// assert_eq!(s.factor(0), 0.1);
    /// assert_eq!(s.factor(9), 1.0);
    /// assert!((s.factor(60) - 0.55).abs() < 1e-12);
    /// assert_eq!(s.factor(500), 0.1);
    /// ```
    pub fn factor(&self, applied: u64) -> f64 {
        match *self {
            Schedule::Constant => 1.0,
            Schedule::LinearWarmup { warmup_steps } => warmup(applied, warmup_steps),
            Schedule::WarmupCosine {
                warmup_steps,
                total_steps,
                min_factor,
            } => {
                if applied < warmup_steps {
                    return warmup(applied, warmup_steps);
                }
                let span = total_steps.saturating_sub(warmup_steps).max(1) as f64;
                let progress = ((applied - warmup_steps) as f64 / span).min(1.0);
                min_factor
                    + (1.0 - min_factor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

fn warmup(applied: u64, warmup_steps: u64) -> f64 {
    if applied >= warmup_steps {
        1.0
    } else {
        (applied + 1) as f64 / warmup_steps as f64
    }
}
