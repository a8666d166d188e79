//! Runtime support for the `#[autocast]` and `#[keep_fp32]` attributes, and the precision report.
//!
//! The attributes rewrite calls of the ops in the policy table into calls that go through this module:
//! [`probe`] decides at compile time whether a receiver is a tensor, the wrappers [`Low`], [`Full`] and
//! [`Keep`] run the op at its class's precision, [`ret`] casts return values to the declared type, and
//! [`enter`] registers each rewritten function for [`report`]. Users need only [`report`], [`set_tracing`]
//! and the [`TensorLike`] trait (what an op inside a region accepts: a tensor of any float type, a
//! reference, or a `Param`).

mod list;
mod operand;
mod probe;
mod report;
mod wrappers;

pub use list::{Cons, Nil, TensorList, cat, stack};
pub use operand::{NoTensor, TensorLike};
pub use probe::{
    Bound, FullTensor, KeepTensor, LayerReceiver, LowTensor, OperandF32Tensor, Passthrough, Probe,
    SumIterator, SumPassthrough, SumTensor, probe,
};
pub(crate) use report::trace_low_op;
pub use report::{
    OpClass, OpSite, RegionGuard, RegionReport, RegionSite, Report, TracedOp, enter, register,
    report, set_tracing, tracing_enabled,
};
pub use wrappers::{Full, Keep, Low};

use crate::element::Float;
use crate::policy::Policy;
use crate::tensor::Tensor;

/// The dispatch traits, imported (anonymously) at the top of every rewritten function.
pub mod prelude {
    pub use super::probe::{
        FullTensor as _, KeepTensor as _, LayerReceiver as _, LowTensor as _,
        OperandF32Tensor as _, Passthrough as _, SumIterator as _, SumPassthrough as _,
        SumTensor as _,
    };
}

/// Casts a returned tensor to the element type the function declares.
#[inline(always)]
pub fn ret<T: Float, X: TensorLike>(x: X) -> Tensor<T> {
    x.cast_to::<T>()
}

/// Compile-time check for a float literal in a region whose policy is a type parameter: evaluated when
/// the function is instantiated, it fails the build if the literal does not fit the policy's low type.
pub const fn assert_literal_fits<P: Policy>(magnitude: f64) {
    if magnitude > P::LOW_MAX {
        panic!(
            "a float literal in this #[autocast] region is larger than the largest finite value of the policy's \
             low-precision type (f16: 65504); move the computation into #[keep_fp32] or use a smaller value"
        );
    }
}

/// Compile-time check for `binary_cross_entropy` in a region whose policy is a type parameter.
pub const fn assert_bce_allowed<P: Policy>() {
    if P::INDEX == 2 {
        panic!(
            "binary_cross_entropy is unsafe to autocast under f16: its backward can produce gradients f16 cannot \
             represent; use bce_with_logits on the logits instead"
        );
    }
}
