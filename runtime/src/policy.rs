//! Mixed-precision policies: which type the low-precision ops (matmul, linear, conv, attention) run in.
//! `#[autocast(bf16)]` uses [`Bf16`], `#[autocast(f16)]` [`F16`], `#[autocast(f32)]` [`F32`], and
//! `#[autocast(P)]` whatever policy the caller picks for the type parameter `P`.

use crate::element::{Float, LowFloat};
use half::{bf16, f16};
use std::fmt::Debug;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Bf16 {}
    impl Sealed for super::F16 {}
    impl Sealed for super::F32 {}
}

/// A mixed-precision policy. Sealed: the three policies are [`Bf16`], [`F16`] and [`F32`].
///
/// A model generic over `P: Policy` is written once and run at every precision:
///
/// ```
/// use amp_runtime::policy::{Bf16, F32, Policy};
/// use amp_runtime::{DType, Tensor};
///
/// fn low<P: Policy>(x: &Tensor<f32>) -> Tensor<P::Low> {
///     x.cast::<P::Low>()
/// }
/// assert_eq!(low::<Bf16>(&Tensor::ones([2])).dtype(), DType::BF16);
/// assert_eq!(low::<F32>(&Tensor::ones([2])).dtype(), DType::F32);
/// ```
pub trait Policy: Copy + Default + Debug + Send + Sync + 'static + sealed::Sealed {
    /// The element type of low-precision ops.
    type Low: LowFloat + Float<Low<Self> = Self::Low>;
    /// The name used in attributes and reports: `"bf16"`, `"f16"` or `"f32"`.
    const NAME: &'static str;
    /// A dense index (0 = f32, 1 = bf16, 2 = f16), for per-policy bookkeeping.
    const INDEX: usize;
    /// The largest finite value of [`Policy::Low`].
    const LOW_MAX: f64;
}

/// bf16 matmuls with f32 accumulation; f32 softmax, norms, reductions and losses. No loss scaling needed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Bf16;

/// f16 matmuls with f32 accumulation; f32 softmax, norms, reductions and losses. Needs a loss scaler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct F16;

/// Everything in f32: autocast disabled (PyTorch's `"32-true"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct F32;

impl Policy for Bf16 {
    type Low = bf16;
    const NAME: &'static str = "bf16";
    const INDEX: usize = 1;
    const LOW_MAX: f64 = 3.389_531_389_251_535_5e38;
}

impl Policy for F16 {
    type Low = f16;
    const NAME: &'static str = "f16";
    const INDEX: usize = 2;
    const LOW_MAX: f64 = 65504.0;
}

impl Policy for F32 {
    type Low = f32;
    const NAME: &'static str = "f32";
    const INDEX: usize = 0;
    const LOW_MAX: f64 = f32::MAX as f64;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_max_is_the_largest_finite_value() {
        assert_eq!(Bf16::LOW_MAX, bf16::MAX.to_f64());
        assert_eq!(F16::LOW_MAX, f16::MAX.to_f64());
        assert_eq!(F32::LOW_MAX, f32::MAX as f64);
    }
}
