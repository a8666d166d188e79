//! Everything between a model and a finished training run: the loss scaler, optimizers, learning-rate
//! schedules, gradient clipping, precision modes and a small trainer.

mod adam;
mod checkpoint;
mod clip;
mod optimizer;
mod precision;
mod scaler;
mod schedule;
mod sgd;
mod trainer;

pub use adam::{Adam, AdamConfig};
pub use checkpoint::{Checkpoint, CheckpointError, LoadedCheckpoint};
pub use clip::{clip_grad_norm, clip_grad_value, grad_norm};
pub use optimizer::{Optimizer, OptimizerState, OptimizerStateError};
pub use precision::{ALLOWED_PRECISIONS, PolicyFn, PolicyKind, Precision, PrecisionError};
pub use scaler::{
    GradScaler, ScaledGrads, ScaledLoss, ScalerConfig, ScalerError, ScalerState, StepResult,
    Unscaled,
};
pub use schedule::Schedule;
pub use sgd::{Sgd, SgdConfig};
pub use trainer::{Clip, StepReport, Trainer};

/// `value >= bound`, false for NaN (settings checks read better without negated comparisons).
fn at_least<T: PartialOrd>(value: T, bound: T) -> bool {
    value >= bound
}

/// `value > bound`, false for NaN.
fn above<T: PartialOrd>(value: T, bound: T) -> bool {
    value > bound
}
