//! What autocast accepts where an op wants a tensor: a tensor of any float type, a reference to one, or
//! a [`Param`] (whose low-precision copy comes from its versioned cast cache).

use crate::element::Float;
use crate::param::Param;
use crate::tensor::Tensor;

/// A tensor, a reference to one, or a [`Param`]: anything an op inside an autocast region can take.
pub trait TensorLike {
    /// The element type the value holds (f32 for a `Param`).
    type Elem: Float;
    /// The value as a tensor of its own type (a `Param` gives its f32 master).
    fn tensor(&self) -> Tensor<Self::Elem>;
    /// The value in type `T` (a `Param` uses its cast cache; casting to the same type copies nothing).
    fn cast_to<T: Float>(&self) -> Tensor<T>;
    /// The value, if it is an f32 tensor whose cast an op may fuse into its own work (a `Param` is not:
    /// its casts come from its cache).
    fn deferrable_f32(&self) -> Option<Tensor<f32>> {
        None
    }
}

impl<E: Float> TensorLike for Tensor<E> {
    type Elem = E;
    fn tensor(&self) -> Tensor<E> {
        self.clone()
    }
    fn cast_to<T: Float>(&self) -> Tensor<T> {
        self.cast::<T>()
    }
    fn deferrable_f32(&self) -> Option<Tensor<f32>> {
        crate::element::AnyTensor::from(self.clone()).downcast::<f32>()
    }
}

impl TensorLike for Param {
    type Elem = f32;
    fn tensor(&self) -> Tensor<f32> {
        self.value()
    }
    fn cast_to<T: Float>(&self) -> Tensor<T> {
        self.get::<T>()
    }
}

/// Smart pointers and references to tensor-like values are tensor-like too, so a receiver reached through
/// `&mut`, `Box`, `Rc` or `Arc` still runs at the region's precision.
macro_rules! tensor_like_through {
    ($($(#[$doc:meta])* [$($generics:tt)*] $ty:ty;)*) => {$(
        $(#[$doc])*
        impl<$($generics)*> TensorLike for $ty {
            type Elem = X::Elem;
            fn tensor(&self) -> Tensor<X::Elem> {
                (**self).tensor()
            }
            fn cast_to<T: Float>(&self) -> Tensor<T> {
                (**self).cast_to::<T>()
            }
            fn deferrable_f32(&self) -> Option<Tensor<f32>> {
                (**self).deferrable_f32()
            }
        }
    )*};
}

tensor_like_through! {
    [X: TensorLike + ?Sized] &X;
    [X: TensorLike + ?Sized] &mut X;
    [X: TensorLike + ?Sized] Box<X>;
    [X: TensorLike + ?Sized] std::rc::Rc<X>;
    [X: TensorLike + ?Sized] std::sync::Arc<X>;
}

/// The type of a `None` written where an op takes an optional tensor inside an autocast region (so that
/// `x.linear(&w, None)` needs no type annotation). It has no values.
#[derive(Clone, Copy, Debug)]
pub enum NoTensor {}

impl TensorLike for NoTensor {
    type Elem = f32;
    fn tensor(&self) -> Tensor<f32> {
        match *self {}
    }
    fn cast_to<T: Float>(&self) -> Tensor<T> {
        match *self {}
    }
}

/// Casts an optional tensor argument to `T`.
pub(crate) fn cast_opt<T: Float, X: TensorLike + ?Sized>(x: Option<&X>) -> Option<Tensor<T>> {
    x.map(|x| x.cast_to::<T>())
}
