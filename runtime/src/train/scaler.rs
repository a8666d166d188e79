//! The dynamic loss scaler, with PyTorch `GradScaler`'s algorithm and defaults, its misuse turned into type
//! errors, and the options users add by hand (floor, ceiling, hysteresis, a step result that says what
//! happened).

use super::optimizer::Optimizer;
use crate::autograd::{GradId, Grads};
use crate::element::{Float, FloatOp};
use crate::tensor::Tensor;
use amp_kernels::cpu;
use std::fmt;

/// Settings of a [`GradScaler`]. The defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScalerConfig {
    /// The first scale (PyTorch: 2^16).
    pub init_scale: f32,
    /// Factor applied after `growth_interval` clean steps in a row (> 1; PyTorch: 2).
    pub growth_factor: f32,
    /// Factor applied on a non-finite gradient (< 1; PyTorch: 0.5).
    pub backoff_factor: f32,
    /// Clean steps in a row before growing (PyTorch: 2000).
    pub growth_interval: u32,
    /// Lower bound of the scale (PyTorch: none; with none the scale can halve towards 0).
    pub min_scale: Option<f32>,
    /// Upper bound of the scale (PyTorch: none beyond staying finite).
    pub max_scale: Option<f32>,
    /// Back off only after this many non-finite steps in a row (DeepSpeed's hysteresis; PyTorch: 1). Every
    /// non-finite step is skipped regardless.
    pub hysteresis: u32,
}

impl Default for ScalerConfig {
    fn default() -> Self {
        ScalerConfig {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            min_scale: None,
            max_scale: None,
            hysteresis: 1,
        }
    }
}

/// An invalid [`ScalerConfig`] or scaler state.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ScalerError {
    /// The growth factor must be > 1.
    #[error("the growth factor must be > 1.0, got {0}")]
    GrowthFactor(f32),
    /// The backoff factor must be in (0, 1).
    #[error("the backoff factor must be < 1.0 and > 0, got {0}")]
    BackoffFactor(f32),
    /// The growth interval must be positive.
    #[error("the growth interval must be at least 1")]
    GrowthInterval,
    /// The initial scale must be finite and positive.
    #[error("the scale must be finite and > 0, got {0}")]
    Scale(f32),
    /// Hysteresis must be at least 1.
    #[error("hysteresis must be at least 1 (1 backs off on every non-finite step)")]
    Hysteresis,
    /// The floor is above the ceiling.
    #[error("min_scale {min} is above max_scale {max}")]
    Bounds {
        /// The floor.
        min: f32,
        /// The ceiling.
        max: f32,
    },
    /// A state dictionary for a dynamic scaler given to a disabled one, or the reverse.
    #[error("the state is for a {saved} scaler, but this scaler is {this}")]
    Mismatch {
        /// What the state was saved from.
        saved: &'static str,
        /// What this scaler is.
        this: &'static str,
    },
}

impl ScalerConfig {
    fn validate(&self) -> Result<(), ScalerError> {
        if !super::above(self.growth_factor, 1.0) {
            return Err(ScalerError::GrowthFactor(self.growth_factor));
        }
        if !(super::above(1.0, self.backoff_factor) && super::above(self.backoff_factor, 0.0)) {
            return Err(ScalerError::BackoffFactor(self.backoff_factor));
        }
        if self.growth_interval == 0 {
            return Err(ScalerError::GrowthInterval);
        }
        if !(self.init_scale.is_finite() && super::above(self.init_scale, 0.0)) {
            return Err(ScalerError::Scale(self.init_scale));
        }
        if self.hysteresis == 0 {
            return Err(ScalerError::Hysteresis);
        }
        if let (Some(min), Some(max)) = (self.min_scale, self.max_scale)
            && min > max
        {
            return Err(ScalerError::Bounds { min, max });
        }
        Ok(())
    }
}

/// Multiplies the loss before backward so small f16 gradients do not flush to zero, then divides the
/// gradients back, skipping the optimizer step when any gradient overflowed and adjusting the scale.
///
/// Misuse is a type error: the gradients of a scaled loss are [`ScaledGrads`], which no optimizer
/// accepts; [`unscale`](GradScaler::unscale) consumes them and gives an [`Unscaled`] set you can clip
/// and then [`step`](Unscaled::step) with, once (the step also updates the scale):
///
/// ```
/// use amp_runtime::train::{GradScaler, Sgd, SgdConfig, clip_grad_norm};
/// use amp_runtime::{Param, Tensor};
///
/// let w = Param::new(Tensor::<f32>::ones([3]));
/// let mut opt = Sgd::new(vec![w.clone()], SgdConfig::new(0.1));
/// let mut scaler = GradScaler::new();
/// let loss = w.value().square().sum(..);
/// let scaled = scaler.scale(&loss).backward();
/// let mut grads = scaler.unscale(scaled);
/// clip_grad_norm(grads.grads_mut(), 1.0);
/// let result = grads.step(&mut opt);
/// assert!(result.is_applied());
/// ```
///
/// A disabled scaler ([`GradScaler::disabled`], for bf16) has the same API and scale 1, and still
/// refuses to apply a step whose gradients are not finite (one NaN step destroys the weights); turn that
/// off with [`skip_non_finite(false)`](GradScaler::skip_non_finite).
#[derive(Clone, Debug, PartialEq)]
pub struct GradScaler {
    config: ScalerConfig,
    enabled: bool,
    skip_non_finite: bool,
    scale: f32,
    growth_tracker: u32,
    overflows_in_a_row: u32,
}

impl Default for GradScaler {
    fn default() -> Self {
        Self::new()
    }
}

impl GradScaler {
    /// A dynamic scaler with PyTorch's defaults (scale 2^16, ×2 every 2000 clean steps, ×0.5 on overflow).
    pub fn new() -> Self {
        Self::with_config(ScalerConfig::default())
            .unwrap_or_else(|_| unreachable!("the defaults are valid"))
    }

    /// A dynamic scaler with the given settings, validated.
    pub fn with_config(config: ScalerConfig) -> Result<Self, ScalerError> {
        config.validate()?;
        Ok(GradScaler {
            scale: config.init_scale,
            config,
            enabled: true,
            skip_non_finite: true,
            growth_tracker: 0,
            overflows_in_a_row: 0,
        })
    }

    /// A scaler that does not scale (scale 1, for bf16 and f32) but still skips non-finite steps.
    pub fn disabled() -> Self {
        GradScaler {
            scale: 1.0,
            enabled: false,
            ..Self::new()
        }
    }

    /// Whether steps with non-finite gradients are skipped (always true for an enabled scaler; for a
    /// disabled one it is the default and can be turned off).
    pub fn skip_non_finite(mut self, skip: bool) -> Self {
        self.skip_non_finite = skip || self.enabled;
        self
    }

    /// Whether the scaler scales (dynamic) or not (disabled).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The current scale.
    pub fn scale_factor(&self) -> f32 {
        self.scale
    }

    /// Clean steps in a row since the last growth or backoff.
    pub fn growth_tracker(&self) -> u32 {
        self.growth_tracker
    }

    /// The settings.
    pub fn config(&self) -> &ScalerConfig {
        &self.config
    }

    /// Marks `loss` for a scaled backward pass.
    pub fn scale<'a, E: Float>(&self, loss: &'a Tensor<E>) -> ScaledLoss<'a, E> {
        ScaledLoss {
            loss,
            scale: self.scale,
        }
    }

    /// Divides the gradients by the scale in one fused pass per gradient that also notes which ones hold
    /// an infinity or NaN. Consumes the scaled gradients: unscaling twice does not compile.
    pub fn unscale(&mut self, mut scaled: ScaledGrads) -> Unscaled<'_> {
        let inv_scale = 1.0 / scaled.scale as f64;
        let mut non_finite = Vec::new();
        for (id, grad) in scaled.grads.iter_mut() {
            if grad.with_float(&mut UnscaleInPlace(inv_scale)) {
                non_finite.push(id);
            }
        }
        Unscaled {
            scaler: self,
            grads: scaled.grads,
            non_finite,
        }
    }

    /// Updates the scale after a step (`found` non-finite gradients or not); the step was applied when
    /// this returns true.
    fn update(&mut self, found: bool) -> bool {
        if !self.enabled {
            return !(found && self.skip_non_finite);
        }
        let c = self.config;
        if found {
            self.growth_tracker = 0;
            self.overflows_in_a_row += 1;
            if self.overflows_in_a_row >= c.hysteresis {
                self.overflows_in_a_row = 0;
                let backed_off = self.scale * c.backoff_factor;
                self.scale = c.min_scale.map_or(backed_off, |min| backed_off.max(min));
            }
            return false;
        }
        self.overflows_in_a_row = 0;
        self.growth_tracker += 1;
        if self.growth_tracker == c.growth_interval {
            let grown = self.scale * c.growth_factor;
            let grown = c.max_scale.map_or(grown, |max| grown.min(max));
            if grown.is_finite() {
                self.scale = grown;
            }
            self.growth_tracker = 0;
        }
        true
    }

    /// The scaler's state with PyTorch's `state_dict` keys, plus this scaler's extras.
    pub fn state_dict(&self) -> ScalerState {
        ScalerState {
            enabled: self.enabled,
            scale: self.scale,
            growth_factor: self.config.growth_factor,
            backoff_factor: self.config.backoff_factor,
            growth_interval: self.config.growth_interval,
            growth_tracker: self.growth_tracker,
            min_scale: self.config.min_scale,
            max_scale: self.config.max_scale,
            hysteresis: self.config.hysteresis,
            overflows_in_a_row: self.overflows_in_a_row,
        }
    }

    /// Restores a state saved by [`state_dict`](Self::state_dict) (validated first; nothing changes on an
    /// error).
    pub fn load_state_dict(&mut self, state: &ScalerState) -> Result<(), ScalerError> {
        if state.enabled != self.enabled {
            let name = |e: bool| if e { "dynamic" } else { "disabled" };
            return Err(ScalerError::Mismatch {
                saved: name(state.enabled),
                this: name(self.enabled),
            });
        }
        let config = ScalerConfig {
            init_scale: state.scale,
            growth_factor: state.growth_factor,
            backoff_factor: state.backoff_factor,
            growth_interval: state.growth_interval,
            min_scale: state.min_scale,
            max_scale: state.max_scale,
            hysteresis: state.hysteresis,
        };
        if self.enabled {
            config.validate()?;
        }
        self.config = ScalerConfig {
            init_scale: self.config.init_scale,
            ..config
        };
        self.scale = state.scale;
        self.growth_tracker = state.growth_tracker;
        self.overflows_in_a_row = state.overflows_in_a_row;
        Ok(())
    }
}

struct UnscaleInPlace(f64);

impl FloatOp for UnscaleInPlace {
    type Out = bool;
    fn run<E: Float>(&mut self, t: &mut Tensor<E>) -> bool {
        let shape = t.shape().to_vec();
        #[cfg(feature = "cuda")]
        if let Some(buffer) = t.storage().buffer() {
            let device = t.device();
            let result = buffer.try_clone().and_then(|mut grad| {
                let found = amp_kernels::cuda::unscale_and_check(&mut grad, self.0)?;
                Ok((grad, found))
            });
            let (grad, found) = crate::ops::dispatch::expect_cuda("unscale", device, result);
            *t = Tensor::from_storage(
                std::sync::Arc::new(crate::device::Storage::cuda(grad)),
                shape,
                None,
            );
            return found;
        }
        let mut data = std::mem::replace(t, Tensor::scalar(E::default())).into_vec();
        let found = cpu::unscale_and_check(&mut data, self.0);
        *t = Tensor::from_data(data, shape);
        found
    }
}

/// A scaler's state. `scale`, `growth_factor`, `backoff_factor`, `growth_interval` and `growth_tracker`
/// are PyTorch's `GradScaler.state_dict()` (the last one under the key `_growth_tracker`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScalerState {
    /// Whether the scaler scales.
    pub enabled: bool,
    /// PyTorch's `scale`.
    pub scale: f32,
    /// PyTorch's `growth_factor`.
    pub growth_factor: f32,
    /// PyTorch's `backoff_factor`.
    pub backoff_factor: f32,
    /// PyTorch's `growth_interval`.
    pub growth_interval: u32,
    /// PyTorch's `_growth_tracker`.
    pub growth_tracker: u32,
    /// The floor, if any.
    pub min_scale: Option<f32>,
    /// The ceiling, if any.
    pub max_scale: Option<f32>,
    /// Non-finite steps in a row needed to back off.
    pub hysteresis: u32,
    /// Non-finite steps in a row so far.
    pub overflows_in_a_row: u32,
}

/// A loss marked for a scaled backward pass (see [`GradScaler::scale`]).
#[must_use = "call backward() on the scaled loss"]
pub struct ScaledLoss<'a, E: Float> {
    loss: &'a Tensor<E>,
    scale: f32,
}

impl<E: Float> ScaledLoss<'_, E> {
    /// Backward of `loss × scale`: the gradients are scaled by the same factor.
    #[track_caller]
    pub fn backward(self) -> ScaledGrads {
        let grads = if self.scale == 1.0 {
            self.loss.backward()
        } else {
            (self.loss * self.scale as f64).backward()
        };
        ScaledGrads {
            grads,
            scale: self.scale,
        }
    }
}

/// Gradients of a scaled loss: still multiplied by the scale, so no optimizer accepts them. Micro-batch
/// gradients add up with `+=` (or [`accumulate`](Self::accumulate)) before the single unscale.
#[must_use = "unscale the gradients with GradScaler::unscale before stepping"]
pub struct ScaledGrads {
    grads: Grads,
    scale: f32,
}

impl ScaledGrads {
    /// Adds another micro-batch's scaled gradients (made with the same scale).
    #[track_caller]
    pub fn accumulate(&mut self, other: ScaledGrads) {
        if other.scale != self.scale {
            panic!(
                "accumulate: gradients scaled by {} and {} cannot be added; the scale changes only at a step",
                self.scale, other.scale
            );
        }
        self.grads.accumulate(other.grads);
    }

    /// The factor these gradients are multiplied by.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Number of leaves with a gradient.
    pub fn len(&self) -> usize {
        self.grads.len()
    }

    /// Whether no leaf has a gradient.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }
}

impl std::ops::AddAssign for ScaledGrads {
    #[track_caller]
    fn add_assign(&mut self, other: ScaledGrads) {
        self.accumulate(other);
    }
}

/// Unscaled gradients, ready to clip and to step with once (see [`GradScaler`]).
#[must_use = "step with the unscaled gradients (this also updates the scale)"]
pub struct Unscaled<'s> {
    scaler: &'s mut GradScaler,
    grads: Grads,
    non_finite: Vec<GradId>,
}

impl Unscaled<'_> {
    /// The gradients.
    pub fn grads(&self) -> &Grads {
        &self.grads
    }

    /// The gradients, to clip them.
    pub fn grads_mut(&mut self) -> &mut Grads {
        &mut self.grads
    }

    /// Whether any gradient holds an infinity or NaN (the step will be skipped).
    pub fn found_non_finite(&self) -> bool {
        !self.non_finite.is_empty()
    }

    /// Applies `optimizer`'s step unless a gradient is non-finite, then updates the scale (PyTorch's
    /// `scaler.step(opt)` followed by `scaler.update()`).
    pub fn step<O: Optimizer>(self, optimizer: &mut O) -> StepResult {
        self.step_all(&mut [optimizer as &mut dyn Optimizer])
    }

    /// [`step`](Self::step) for several optimizers sharing the gradients and this scaler (one update).
    pub fn step_all(self, optimizers: &mut [&mut dyn Optimizer]) -> StepResult {
        let scale_before = self.scaler.scale;
        let found = !self.non_finite.is_empty();
        let first_non_finite = found.then(|| first_named(optimizers, &self.non_finite));
        let applied = self.scaler.update(found);
        if applied {
            for opt in optimizers.iter_mut() {
                opt.step(&self.grads);
            }
        }
        let scale_after = self.scaler.scale;
        if applied {
            StepResult::Applied {
                scale_before,
                scale_after,
            }
        } else {
            StepResult::Skipped {
                scale_before,
                scale_after,
                first_non_finite: first_non_finite.flatten(),
            }
        }
    }
}

/// The name of the first parameter (in the optimizers' order) whose gradient is non-finite.
fn first_named(optimizers: &[&mut dyn Optimizer], non_finite: &[GradId]) -> Option<String> {
    optimizers
        .iter()
        .flat_map(|o| o.params().iter())
        .find(|p| non_finite.contains(&p.grad_id()))
        .map(|p| {
            let name = p.name();
            if name.is_empty() {
                format!("{:?}", p.grad_id())
            } else {
                name
            }
        })
}

/// What a scaled step did.
#[derive(Clone, Debug, PartialEq)]
pub enum StepResult {
    /// The optimizer stepped.
    Applied {
        /// The scale the gradients were unscaled with.
        scale_before: f32,
        /// The scale for the next step.
        scale_after: f32,
    },
    /// A gradient was non-finite: the weights were left as they were.
    Skipped {
        /// The scale the gradients were unscaled with.
        scale_before: f32,
        /// The scale for the next step (backed off, unless hysteresis delayed it).
        scale_after: f32,
        /// The first parameter whose gradient held an infinity or NaN.
        first_non_finite: Option<String>,
    },
}

impl StepResult {
    /// Whether the optimizer stepped.
    pub fn is_applied(&self) -> bool {
        matches!(self, StepResult::Applied { .. })
    }

    /// The scale before the update.
    pub fn scale_before(&self) -> f32 {
        match self {
            StepResult::Applied { scale_before, .. } | StepResult::Skipped { scale_before, .. } => {
                *scale_before
            }
        }
    }

    /// The scale after the update.
    pub fn scale_after(&self) -> f32 {
        match self {
            StepResult::Applied { scale_after, .. } | StepResult::Skipped { scale_after, .. } => {
                *scale_after
            }
        }
    }
}

impl fmt::Display for StepResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepResult::Applied {
                scale_before,
                scale_after,
            } if scale_before == scale_after => {
                write!(f, "applied (scale {scale_before})")
            }
            StepResult::Applied {
                scale_before,
                scale_after,
            } => {
                write!(f, "applied (scale {scale_before} -> {scale_after})")
            }
            StepResult::Skipped {
                scale_before,
                scale_after,
                first_non_finite,
            } => {
                write!(f, "skipped: non-finite gradient")?;
                if let Some(name) = first_non_finite {
                    write!(f, " in {name}")?;
                }
                write!(f, " (scale {scale_before} -> {scale_after})")
            }
        }
    }
}
