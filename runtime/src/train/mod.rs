//! Everything between a model and a finished training run: the loss scaler, optimizers, learning-rate
//! schedules, gradient clipping, precision modes and a small trainer.

mod adam;
mod adam8bit;
mod checkpoint;
mod clip;
mod memory;
mod optimizer;
mod precision;
pub(crate) mod rounding;
mod scaler;
mod schedule;
mod sgd;
mod sgd8bit;
mod state8;
mod state_buffer;
mod trainer;

pub use adam::{Adam, AdamConfig};
pub use adam8bit::{Adam8bit, AdamW8bit};
pub use checkpoint::{Checkpoint, CheckpointError, LoadedCheckpoint};
pub use clip::{clip_grad_norm, clip_grad_value, grad_norm};
pub use memory::MemoryReport;
pub use optimizer::{ByteTensor, Optimizer, OptimizerState, OptimizerStateError};
pub use precision::{ALLOWED_PRECISIONS, PolicyFn, PolicyKind, Precision, PrecisionError};
pub use rounding::UpdateRounding;
pub use scaler::{
    GradScaler, ScaledGrads, ScaledLoss, ScalerConfig, ScalerError, ScalerState, StepResult,
    Unscaled,
};
pub use schedule::Schedule;
pub use sgd::{Sgd, SgdConfig};
pub use sgd8bit::Sgd8bit;
pub use state8::{MIN_8BIT_SIZE, StatePolicy};
pub use trainer::{Clip, StepReport, Trainer};

/// `value >= bound`, false for NaN (settings checks read better without negated comparisons).
fn at_least<T: PartialOrd>(value: T, bound: T) -> bool {
    value >= bound
}

/// `value > bound`, false for NaN.
fn above<T: PartialOrd>(value: T, bound: T) -> bool {
    value > bound
}
