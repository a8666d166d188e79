//! How a rewritten call finds out, at compile time, whether its receiver is a tensor.
//!
//! `#[autocast]` sees only syntax. For `x.softmax(-1)` it emits `(&probe::<P, _>(&x)).__amp_full().softmax(-1)`.
//! Method resolution then picks, by autoref specialization, either the impl for tensor-like values (the
//! receiver is cast and wrapped so the op runs at the policy's precision) or the fallback for everything
//! else, which hands the receiver back untouched so the original method is called as written (`f32::exp`,
//! a user type's own `softmax`). Both are resolved by rustc; nothing is decided at run time, and the probe
//! compiles away.
//!
//! Priority comes from the number of references: with the call on `&Probe`, impls for `Probe` (the
//! tensor case) are found one autoref step before impls for `&Probe` (the fallback).

use super::operand::TensorLike;
use super::wrappers::{Full, Keep, Low};
use crate::element::Float;
use crate::nn::{IsLayer, Layer};
use crate::policy::Policy;
use crate::tensor::Tensor;
use std::cell::Cell;
use std::marker::PhantomData;

/// A receiver or operand on its way through a rewritten call (see the module docs).
pub struct Probe<P, X> {
    value: Cell<Option<X>>,
    policy: PhantomData<P>,
}

/// Wraps `x` for dispatch under policy `P`.
#[inline(always)]
pub fn probe<P, X>(x: X) -> Probe<P, X> {
    Probe {
        value: Cell::new(Some(x)),
        policy: PhantomData,
    }
}

impl<P, X> Probe<P, X> {
    #[inline(always)]
    fn take(&self) -> X {
        // Each probe is built for exactly one method call, which takes the value once.
        self.value
            .take()
            .unwrap_or_else(|| unreachable!("a probe is consumed once"))
    }
}

/// Low-precision class, tensor receivers: cast to `P::Low` (f64 stays f64).
pub trait LowTensor {
    /// The wrapped, cast receiver.
    type Out;
    /// Casts the receiver.
    fn __amp_low(&self) -> Self::Out;
}

impl<P: Policy, X: TensorLike> LowTensor for Probe<P, X> {
    type Out = Low<<X::Elem as Float>::Low<P>>;
    #[inline(always)]
    fn __amp_low(&self) -> Self::Out {
        Low::new(&self.take())
    }
}

/// f32 class, tensor receivers: cast to f32 (f64 stays f64).
pub trait FullTensor {
    /// The wrapped, cast receiver.
    type Out;
    /// Casts the receiver.
    fn __amp_full(&self) -> Self::Out;
}

impl<P, X: TensorLike> FullTensor for Probe<P, X> {
    type Out = Full<<X::Elem as Float>::Compute>;
    #[inline(always)]
    fn __amp_full(&self) -> Self::Out {
        Full(self.take().cast_to())
    }
}

/// Promote and same classes, tensor receivers: no cast; a `Param` becomes its f32 master.
pub trait KeepTensor {
    /// The wrapped receiver.
    type Out;
    /// Wraps the receiver.
    fn __amp_keep(&self) -> Self::Out;
}

impl<P, X: TensorLike> KeepTensor for Probe<P, X> {
    type Out = Keep<X::Elem>;
    #[inline(always)]
    fn __amp_keep(&self) -> Self::Out {
        Keep(self.take().tensor())
    }
}

/// Operands of `+ - * /` inside `#[keep_fp32]`: tensors become f32 tensors (f64 stays f64).
pub trait OperandF32Tensor {
    /// The cast operand.
    type Out;
    /// Casts the operand.
    fn __amp_operand(&self) -> Self::Out;
}

impl<P, X: TensorLike> OperandF32Tensor for Probe<P, X> {
    type Out = Tensor<<X::Elem as Float>::Compute>;
    #[inline(always)]
    fn __amp_operand(&self) -> Self::Out {
        self.take().cast_to()
    }
}

/// `forward` on an `amp::nn` layer: the layer's forward under the region's policy.
pub trait LayerReceiver {
    /// The layer bound to the policy.
    type Out;
    /// Binds the layer.
    fn __amp_layer(&self) -> Self::Out;
}

impl<'a, P, L: IsLayer + ?Sized> LayerReceiver for Probe<P, &'a L> {
    type Out = Bound<'a, P, L>;
    #[inline(always)]
    fn __amp_layer(&self) -> Self::Out {
        Bound {
            layer: self.take(),
            policy: PhantomData,
        }
    }
}

/// A layer whose `forward` runs under policy `P` (see [`Layer`]).
pub struct Bound<'a, P, L: ?Sized> {
    layer: &'a L,
    policy: PhantomData<P>,
}

impl<P: Policy, L: ?Sized> Bound<'_, P, L> {
    /// [`Layer::forward_under`] with the region's policy.
    #[track_caller]
    pub fn forward<In: ?Sized>(&self, input: &In) -> L::Out<P>
    where
        L: Layer<In>,
    {
        self.layer.forward_under::<P>(input)
    }
}

/// The fallback for every non-tensor receiver or operand: the value comes back unchanged.
pub trait Passthrough {
    /// The value's own type.
    type Out;
    /// Returns the value.
    fn __amp_low(&self) -> Self::Out;
    /// Returns the value.
    fn __amp_full(&self) -> Self::Out;
    /// Returns the value.
    fn __amp_keep(&self) -> Self::Out;
    /// Returns the value.
    fn __amp_operand(&self) -> Self::Out;
    /// Returns the value.
    fn __amp_layer(&self) -> Self::Out;
}

impl<P, X> Passthrough for &Probe<P, X> {
    type Out = X;
    #[inline(always)]
    fn __amp_low(&self) -> X {
        self.take()
    }
    #[inline(always)]
    fn __amp_full(&self) -> X {
        self.take()
    }
    #[inline(always)]
    fn __amp_keep(&self) -> X {
        self.take()
    }
    #[inline(always)]
    fn __amp_operand(&self) -> X {
        self.take()
    }
    #[inline(always)]
    fn __amp_layer(&self) -> X {
        self.take()
    }
}

/// `sum` has three cases, resolved on `&&Probe` (most references first): tensors (impl for `&Probe`),
/// borrowed iterators (impl for `&&Probe`), anything else (impl for `Probe`).
pub trait SumTensor {
    /// The wrapped, cast receiver.
    type Out;
    /// Casts the receiver to f32.
    fn __amp_sum(&self) -> Self::Out;
}

impl<P, X: TensorLike> SumTensor for &Probe<P, X> {
    type Out = Full<<X::Elem as Float>::Compute>;
    #[inline(always)]
    fn __amp_sum(&self) -> Self::Out {
        Full(self.take().cast_to())
    }
}

/// `sum` on a borrowed iterator: sums a clone, as `it.sum()` would have consumed `it` (the receiver is
/// borrowed so that a tensor receiver is not moved).
pub trait SumIterator {
    /// The cloned iterator.
    type Out;
    /// Clones the iterator.
    fn __amp_sum(&self) -> Self::Out;
}

impl<P, I: Iterator + Clone> SumIterator for &&Probe<P, &I> {
    type Out = I;
    #[inline(always)]
    fn __amp_sum(&self) -> I {
        self.take().clone()
    }
}

/// The last case of `sum`: the value comes back unchanged.
pub trait SumPassthrough {
    /// The value's own type.
    type Out;
    /// Returns the value.
    fn __amp_sum(&self) -> Self::Out;
}

impl<P, X> SumPassthrough for Probe<P, X> {
    type Out = X;
    #[inline(always)]
    fn __amp_sum(&self) -> X {
        self.take()
    }
}
