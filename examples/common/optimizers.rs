//! The optimizers the examples can train with, chosen on the command line (`--optimizer adamw8bit`).

use amp::Param;
use amp::train::{Adam, Adam8bit, AdamConfig, Optimizer, Schedule, UpdateRounding};
use std::fmt;
use std::str::FromStr;

/// Adam or AdamW, with f32 or 8-bit states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    /// Adam, f32 states.
    Adam,
    /// AdamW, f32 states.
    AdamW,
    /// Adam, 8-bit states.
    Adam8bit,
    /// AdamW, 8-bit states.
    AdamW8bit,
}

impl OptimizerKind {
    /// Builds the optimizer (`weight_decay` is L2 for the Adam kinds, decoupled for the AdamW kinds).
    pub fn build(
        self,
        params: Vec<Param>,
        lr: f64,
        weight_decay: f64,
        schedule: Schedule,
    ) -> Box<dyn Optimizer> {
        let config = match self {
            OptimizerKind::Adam | OptimizerKind::Adam8bit => AdamConfig {
                weight_decay,
                ..AdamConfig::adam(lr)
            },
            OptimizerKind::AdamW | OptimizerKind::AdamW8bit => AdamConfig::adamw(lr, weight_decay),
        }
        .schedule(schedule);
        match self {
            OptimizerKind::Adam | OptimizerKind::AdamW => Box::new(Adam::new(params, config)),
            OptimizerKind::Adam8bit | OptimizerKind::AdamW8bit => {
                Box::new(Adam8bit::new(params, config))
            }
        }
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Adam => "adam",
            OptimizerKind::AdamW => "adamw",
            OptimizerKind::Adam8bit => "adam8bit",
            OptimizerKind::AdamW8bit => "adamw8bit",
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OptimizerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            OptimizerKind::Adam,
            OptimizerKind::AdamW,
            OptimizerKind::Adam8bit,
            OptimizerKind::AdamW8bit,
        ]
        .into_iter()
        .find(|k| k.name() == s.trim().to_ascii_lowercase())
        .ok_or_else(|| format!("unknown optimizer {s:?}; use adam, adamw, adam8bit or adamw8bit"))
    }
}

/// How `"bf16-true"` rounds weight updates, by command-line name: `nearest`, `stochastic` (seeded with
/// `seed`) or `kahan`.
pub fn parse_rounding(name: &str, seed: u64) -> Result<UpdateRounding, String> {
    match name.trim() {
        "nearest" => Ok(UpdateRounding::Nearest),
        "stochastic" | "sr" => Ok(UpdateRounding::Stochastic { seed }),
        "kahan" => Ok(UpdateRounding::Kahan),
        other => Err(format!(
            "unknown update rounding {other:?}; use nearest, stochastic or kahan"
        )),
    }
}

/// The short name of a rounding mode, for tables.
pub fn rounding_name(rounding: UpdateRounding) -> &'static str {
    match rounding {
        UpdateRounding::Nearest => "nearest",
        UpdateRounding::Stochastic { .. } => "stochastic",
        UpdateRounding::Kahan => "kahan",
    }
}

/// Ok if every learning rate is a positive number and the weight decay is zero or positive; the error
/// names the option (`--lr must be a positive number, not NaN`).
pub fn check_hyperparameters(
    learning_rates: &[(&str, f64)],
    weight_decay: f64,
) -> Result<(), String> {
    for &(option, lr) in learning_rates {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(format!("{option} must be a positive number, not {lr}"));
        }
    }
    if !(weight_decay.is_finite() && weight_decay >= 0.0) {
        return Err(format!(
            "--weight-decay must be zero or positive, not {weight_decay}"
        ));
    }
    Ok(())
}
