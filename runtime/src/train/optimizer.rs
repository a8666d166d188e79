//! The optimizer interface and the state it saves in checkpoints.

use crate::autograd::Grads;
use crate::param::Param;
use crate::tensor::Tensor;

/// Updates f32 master weights from their (unscaled) gradients.
pub trait Optimizer {
    /// The parameters, in the order given at construction.
    fn params(&self) -> &[Param];

    /// Applies one update from `grads`; parameters without a gradient are left alone. Advances the step
    /// count and the learning-rate schedule.
    fn step(&mut self, grads: &Grads);

    /// Updates applied so far (skipped steps do not count).
    fn steps(&self) -> u64;

    /// The learning rate the next step will use (after the schedule).
    fn lr(&self) -> f64;

    /// Everything needed to continue exactly where this optimizer is.
    fn state(&self) -> OptimizerState;

    /// Restores a [`state`](Self::state): validated completely before anything changes.
    fn load_state(&mut self, state: &OptimizerState) -> Result<(), OptimizerStateError>;
}

/// An optimizer's saved state: its kind, step count, and named f32 buffers (`"<param>.exp_avg"`, ...).
#[derive(Clone, Debug)]
pub struct OptimizerState {
    /// `"sgd"` or `"adam"`.
    pub kind: String,
    /// Updates applied.
    pub steps: u64,
    /// Per-parameter buffers, named `<parameter name>.<buffer>`.
    pub tensors: Vec<(String, Tensor<f32>)>,
}

/// Why an [`OptimizerState`] does not fit an optimizer.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum OptimizerStateError {
    /// Saved by another kind of optimizer.
    #[error("the state was saved by a `{saved}` optimizer, this one is `{this}`")]
    Kind {
        /// The saved kind.
        saved: String,
        /// This optimizer's kind.
        this: &'static str,
    },
    /// A buffer this optimizer needs is not in the state.
    #[error("the optimizer state has no tensor `{0}`")]
    Missing(String),
    /// A buffer has the wrong shape.
    #[error("optimizer tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The buffer.
        name: String,
        /// Its shape in the state.
        found: Vec<usize>,
        /// The shape this optimizer needs.
        expected: Vec<usize>,
    },
    /// The state holds a buffer this optimizer does not know (a different model).
    #[error("the optimizer state has a tensor `{0}` that matches no parameter")]
    Unexpected(String),
}

/// The key of a parameter's buffers: its name, or its position when it has none.
pub(crate) fn param_key(index: usize, param: &Param) -> String {
    let name = param.name();
    if name.is_empty() {
        format!("param{index}")
    } else {
        name
    }
}

/// Looks up and checks the shape of `<key>.<buffer>` in `state`.
pub(crate) fn find_buffer<'a>(
    state: &'a OptimizerState,
    name: &str,
    expected: &[usize],
) -> Result<&'a Tensor<f32>, OptimizerStateError> {
    let (_, t) = state
        .tensors
        .iter()
        .find(|(n, _)| n == name)
        .ok_or_else(|| OptimizerStateError::Missing(name.to_string()))?;
    if t.shape() != expected {
        return Err(OptimizerStateError::Shape {
            name: name.to_string(),
            found: t.shape().to_vec(),
            expected: expected.to_vec(),
        });
    }
    Ok(t)
}

/// Checks that `state` holds no buffer outside `known`.
pub(crate) fn reject_unknown(
    state: &OptimizerState,
    known: &[String],
) -> Result<(), OptimizerStateError> {
    match state.tensors.iter().find(|(n, _)| !known.contains(n)) {
        Some((n, _)) => Err(OptimizerStateError::Unexpected(n.clone())),
        None => Ok(()),
    }
}
