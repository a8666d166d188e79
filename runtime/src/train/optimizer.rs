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

    /// Bytes the optimizer's state takes: every buffer of its [`state`](Self::state) (f32 tensors at 4
    /// bytes per element, byte tensors at 1). The default builds the state to count it; optimizers
    /// override it with a cheaper count.
    fn state_bytes(&self) -> usize {
        self.state().total_bytes()
    }
}

/// A boxed optimizer is one, so the optimizer can be chosen at run time
/// (`Trainer<Box<dyn Optimizer>>`).
impl<O: Optimizer + ?Sized> Optimizer for Box<O> {
    fn params(&self) -> &[Param] {
        (**self).params()
    }
    fn step(&mut self, grads: &Grads) {
        (**self).step(grads)
    }
    fn steps(&self) -> u64 {
        (**self).steps()
    }
    fn lr(&self) -> f64 {
        (**self).lr()
    }
    fn state(&self) -> OptimizerState {
        (**self).state()
    }
    fn load_state(&mut self, state: &OptimizerState) -> Result<(), OptimizerStateError> {
        (**self).load_state(state)
    }
    fn state_bytes(&self) -> usize {
        (**self).state_bytes()
    }
}

/// An optimizer's saved state: its kind, step count, and named f32 buffers (`"<param>.exp_avg"`, ...)
/// and byte buffers (the codes of the 8-bit optimizers, `"<param>.state1"`).
#[derive(Clone, Debug, Default)]
pub struct OptimizerState {
    /// `"sgd"`, `"adam"`, `"adamw"`, `"sgd8bit"`, `"adam8bit"` or `"adamw8bit"`.
    pub kind: String,
    /// Updates applied.
    pub steps: u64,
    /// Per-parameter f32 buffers, named `<parameter name>.<buffer>`.
    pub tensors: Vec<(String, Tensor<f32>)>,
    /// Per-parameter byte buffers, named like [`tensors`](Self::tensors) (empty for the f32 optimizers).
    pub bytes: Vec<(String, ByteTensor)>,
}

impl OptimizerState {
    /// Bytes of all buffers: 4 per f32 element, 1 per byte.
    pub fn total_bytes(&self) -> usize {
        let floats: usize = self.tensors.iter().map(|(_, t)| 4 * t.numel()).sum();
        floats + self.bytes.iter().map(|(_, b)| b.data.len()).sum::<usize>()
    }
}

/// A buffer of bytes with a shape: the 8-bit codes of a quantized optimizer state (saved in checkpoints
/// as a safetensors `U8` tensor).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ByteTensor {
    /// The shape (its product is `data.len()`).
    pub shape: Vec<usize>,
    /// The bytes, row-major.
    pub data: Vec<u8>,
}

impl ByteTensor {
    /// A byte tensor (panics if the shape does not hold `data.len()` elements).
    #[track_caller]
    pub fn new(data: Vec<u8>, shape: Vec<usize>) -> Self {
        let n: usize = shape.iter().product();
        if n != data.len() {
            panic!(
                "ByteTensor::new: shape {shape:?} holds {n} elements, given {}",
                data.len()
            );
        }
        ByteTensor { shape, data }
    }
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
    /// A buffer holds a value no optimizer could have saved (a negative or non-finite block scale,
    /// a step count that is not a whole number).
    #[error("optimizer tensor `{name}` is invalid: {reason}")]
    Invalid {
        /// The buffer.
        name: String,
        /// What is wrong.
        reason: String,
    },
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

/// Looks up and checks the shape of the byte buffer `<key>.<buffer>` in `state`.
pub(crate) fn find_bytes<'a>(
    state: &'a OptimizerState,
    name: &str,
    expected: &[usize],
) -> Result<&'a ByteTensor, OptimizerStateError> {
    let (_, t) = state
        .bytes
        .iter()
        .find(|(n, _)| n == name)
        .ok_or_else(|| OptimizerStateError::Missing(name.to_string()))?;
    if t.shape != expected {
        return Err(OptimizerStateError::Shape {
            name: name.to_string(),
            found: t.shape.clone(),
            expected: expected.to_vec(),
        });
    }
    Ok(t)
}

/// Checks that `state` holds no buffer (f32 or bytes) outside `known`.
pub(crate) fn reject_unknown(
    state: &OptimizerState,
    known: &[String],
) -> Result<(), OptimizerStateError> {
    let names = state.tensors.iter().map(|(n, _)| n);
    match names
        .chain(state.bytes.iter().map(|(n, _)| n))
        .find(|n| !known.contains(n))
    {
        Some(n) => Err(OptimizerStateError::Unexpected(n.clone())),
        None => Ok(()),
    }
}
