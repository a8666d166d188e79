//! One training step in Lightning's order: forward under the policy, scale, backward (accumulated over
//! micro-batches), unscale, clip, step, update.

use super::clip::{clip_grad_norm, clip_grad_value};
use super::memory::MemoryReport;
use super::optimizer::Optimizer;
use super::precision::{Precision, PrecisionError};
use super::rounding::UpdateRounding;
use super::scaler::{GradScaler, ScaledGrads, StepResult};
use crate::element::Float;
use crate::tensor::Tensor;
use std::time::{Duration, Instant};

/// Gradient clipping applied to unscaled gradients before the step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Clip {
    /// No clipping.
    None,
    /// Scale all gradients so their joint norm is at most this.
    Norm(f64),
    /// Clamp every gradient element into `[-v, v]`.
    Value(f64),
}

/// What one [`Trainer::step`] did.
#[derive(Clone, Debug)]
pub struct StepReport {
    /// The loss averaged over the micro-batches (unscaled).
    pub loss: f32,
    /// Whether the optimizer stepped, and the scale before and after.
    pub result: StepResult,
    /// The joint gradient norm before clipping, when clipping by norm.
    pub grad_norm: Option<f64>,
    /// Time in the forward and backward passes.
    pub forward_backward: Duration,
    /// Time in unscaling, clipping and the optimizer step.
    pub optimizer: Duration,
}

/// An optimizer, a loss scaler and the step order of a precision mode.
///
/// ```
/// use amp_runtime::train::{Precision, Sgd, SgdConfig, Trainer};
/// use amp_runtime::{Param, Tensor};
///
/// let w = Param::new(Tensor::<f32>::from_vec(vec![2.0], [1]));
/// let mut trainer = Trainer::new(Precision::F16Mixed, Sgd::new(vec![w.clone()], SgdConfig::new(0.1))).unwrap();
/// let report = trainer.step(|_| w.value().square().sum(..));
/// assert!(report.result.is_applied());
/// assert_eq!(w.value().item(), 2.0 - 0.1 * 4.0);
/// ```
pub struct Trainer<O: Optimizer> {
    precision: Precision,
    /// The optimizer.
    pub optimizer: O,
    /// The loss scaler (dynamic for `"16-mixed"`, disabled otherwise).
    pub scaler: GradScaler,
    micro_batches: usize,
    clip: Clip,
    steps: u64,
    skipped: u64,
}

impl<O: Optimizer> Trainer<O> {
    /// A trainer for `precision`: sets the optimizer's parameters' storage type and picks the scaler.
    pub fn new(precision: Precision, optimizer: O) -> Result<Self, PrecisionError> {
        precision.prepare(optimizer.params())?;
        Ok(Trainer {
            precision,
            scaler: precision.scaler(),
            optimizer,
            micro_batches: 1,
            clip: Clip::None,
            steps: 0,
            skipped: 0,
        })
    }

    /// Accumulates gradients over `k` micro-batches per step (each micro-batch loss is divided by `k`).
    #[track_caller]
    pub fn accumulate(mut self, k: usize) -> Self {
        if k == 0 {
            panic!("Trainer::accumulate: the number of micro-batches must be at least 1");
        }
        self.micro_batches = k;
        self
    }

    /// Clips gradients before each step.
    pub fn clip(mut self, clip: Clip) -> Self {
        self.clip = clip;
        self
    }

    /// Replaces the loss scaler (for example one with a floor or hysteresis).
    pub fn with_scaler(mut self, scaler: GradScaler) -> Self {
        self.scaler = scaler;
        self
    }

    /// Rounds the weight updates of a `-true` mode (weights stored in bf16/f16) by `mode` instead of to
    /// nearest: see [`UpdateRounding`] for when to use which. A stochastic seed is combined with each
    /// parameter's position, so parameters draw different bits. Panics in the modes with f32 weights,
    /// which need neither, and on stochastic rounding in `"16-true"`.
    ///
    /// ```
    /// use amp_runtime::train::{Precision, Sgd, SgdConfig, Trainer, UpdateRounding};
    /// use amp_runtime::{Param, Tensor};
    /// // A bf16 weight of 1.0 and updates of 1e-4, far below bf16's step of 2^-8 there.
    /// let w = Param::new(Tensor::<f32>::from_vec(vec![1.0], [1]));
    /// let sgd = Sgd::new(vec![w.clone()], SgdConfig::new(1e-4));
    /// let mut trainer = Trainer::new(Precision::Bf16True, sgd).unwrap().update_rounding(UpdateRounding::Kahan);
    /// for _ in 0..1000 {
    ///     trainer.step(|_| w.value().sum(..)); // gradient 1
    /// }
    /// assert!((w.value().item() - 0.9).abs() < 0.004); // round-to-nearest would stay at 1.0
    /// ```
    #[track_caller]
    pub fn update_rounding(self, mode: UpdateRounding) -> Self {
        if self.precision.param_storage() == crate::element::DType::F32 {
            panic!(
                "Trainer::update_rounding: \"{}\" keeps f32 master weights, which take every update; \
                 rounding modes are for \"bf16-true\" and \"16-true\"",
                self.precision
            );
        }
        for (i, p) in self.optimizer.params().iter().enumerate() {
            let mode = match mode {
                UpdateRounding::Stochastic { seed } => UpdateRounding::Stochastic {
                    seed: seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                },
                other => other,
            };
            p.set_update_rounding(mode);
        }
        self
    }

    /// Bytes of the weights and the optimizer state (see [`MemoryReport`]).
    pub fn memory_report(&self) -> MemoryReport {
        MemoryReport::of(self.precision, &self.optimizer)
    }

    /// The precision mode.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Steps attempted so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Steps skipped because a gradient was not finite.
    pub fn skipped_steps(&self) -> u64 {
        self.skipped
    }

    /// One optimizer step. `loss_of(i)` runs the forward pass of micro-batch `i` (under the mode's
    /// policy: call your `#[autocast(P)]` model with the policy of [`Precision::dispatch`]) and returns
    /// its loss.
    pub fn step<E: Float>(&mut self, mut loss_of: impl FnMut(usize) -> Tensor<E>) -> StepReport {
        let start = Instant::now();
        let k = self.micro_batches;
        let mut total = 0.0f64;
        let mut accumulated: Option<ScaledGrads> = None;
        for i in 0..k {
            let loss = loss_of(i);
            total += loss.item().to_f64();
            let loss = if k == 1 { loss } else { &loss / k as f64 };
            let scaled = self.scaler.scale(&loss).backward();
            match &mut accumulated {
                Some(acc) => *acc += scaled,
                None => accumulated = Some(scaled),
            }
        }
        let forward_backward = start.elapsed();
        let start = Instant::now();
        let scaled = accumulated.unwrap_or_else(|| unreachable!("at least one micro-batch"));
        let mut grads = self.scaler.unscale(scaled);
        let grad_norm = match self.clip {
            Clip::None => None,
            Clip::Norm(max) => Some(clip_grad_norm(grads.grads_mut(), max)),
            Clip::Value(v) => {
                clip_grad_value(grads.grads_mut(), v);
                None
            }
        };
        let result = grads.step(&mut self.optimizer);
        self.steps += 1;
        if !result.is_applied() {
            self.skipped += 1;
        }
        StepReport {
            loss: (total / k as f64) as f32,
            result,
            grad_norm,
            forward_backward,
            optimizer: start.elapsed(),
        }
    }
}
