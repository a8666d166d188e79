//! How many bytes a training run's weights and optimizer state take.

use super::optimizer::Optimizer;
use super::precision::{PolicyKind, Precision};
use crate::element::DType;
use std::fmt;

/// Bytes of a run's parameters and optimizer state, by part (activations and gradients not counted).
///
/// Parameters are counted in the type they are stored in ([`Precision::param_storage`]: 4 bytes in the
/// f32-master modes, 2 in `"bf16-true"`/`"16-true"`), plus, in the `-mixed` modes, the low-precision
/// copies the forward pass casts and caches (2 bytes). The optimizer state is
/// [`Optimizer::state_bytes`]; Kahan compensation buffers are counted apart. The report counts what
/// each part needs in its type: amp currently keeps bf16/f16-stored weights in f32 containers (and
/// caches a cast for the forward pass), so a `-true` run holds more than its `parameter_bytes` today.
///
/// ```
/// use amp_runtime::train::{AdamConfig, AdamW8bit, MemoryReport, Precision};
/// use amp_runtime::{Param, Tensor};
/// let w = Param::new(Tensor::<f32>::zeros([256, 256]));
/// let opt = AdamW8bit::new(vec![w], AdamConfig::adamw(1e-3, 0.0));
/// let report = MemoryReport::of(Precision::Bf16Mixed, &opt);
/// assert_eq!(report.parameter_bytes, 4 * 65536);
/// assert_eq!(report.cast_bytes, 2 * 65536);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemoryReport {
    /// The precision mode.
    pub precision: Precision,
    /// Trainable elements.
    pub parameters: usize,
    /// The weights in their storage type.
    pub parameter_bytes: usize,
    /// The cached low-precision copies of f32 master weights (`-mixed` modes).
    pub cast_bytes: usize,
    /// The optimizer's state ([`Optimizer::state_bytes`]; 0 until the first step creates it).
    pub optimizer_state_bytes: usize,
    /// Kahan compensation buffers ([`UpdateRounding::Kahan`](super::UpdateRounding::Kahan)).
    pub compensation_bytes: usize,
}

impl MemoryReport {
    /// The report for `optimizer`'s parameters trained in `precision`.
    pub fn of(precision: Precision, optimizer: &dyn Optimizer) -> Self {
        let params = optimizer.params();
        let parameters: usize = params.iter().map(|p| p.numel()).sum();
        let storage = precision.param_storage();
        let low = match precision.policy() {
            Ok(PolicyKind::Bf16 | PolicyKind::F16) => 2,
            _ => 0,
        };
        let cast = if storage == DType::F32 { low } else { 0 };
        MemoryReport {
            precision,
            parameters,
            parameter_bytes: parameters * storage.size_in_bytes(),
            cast_bytes: parameters * cast,
            optimizer_state_bytes: optimizer.state_bytes(),
            compensation_bytes: params.iter().map(|p| p.compensation_bytes()).sum(),
        }
    }

    /// Optimizer state bytes per parameter (8 for Adam, 2.03 for 8-bit Adam on large tensors).
    pub fn state_bytes_per_param(&self) -> f64 {
        self.optimizer_state_bytes as f64 / self.parameters.max(1) as f64
    }

    /// Everything counted, per parameter.
    pub fn bytes_per_param(&self) -> f64 {
        self.total_bytes() as f64 / self.parameters.max(1) as f64
    }

    /// Everything counted.
    pub fn total_bytes(&self) -> usize {
        self.parameter_bytes
            + self.cast_bytes
            + self.optimizer_state_bytes
            + self.compensation_bytes
    }
}

impl fmt::Display for MemoryReport {
    /// `bf16-mixed: 1000 params, weights 4000 B + casts 2000 B, optimizer state 8008 B (8.01 B/param), ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} params, weights {} B + casts {} B, optimizer state {} B ({:.2} B/param), \
             compensation {} B, total {:.2} B/param",
            self.precision,
            self.parameters,
            self.parameter_bytes,
            self.cast_bytes,
            self.optimizer_state_bytes,
            self.state_bytes_per_param(),
            self.compensation_bytes,
            self.bytes_per_param()
        )
    }
}
