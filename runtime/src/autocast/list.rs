//! `cat` and `stack` of tensors of different float types inside a region: the list is promoted to the
//! widest type first (bf16 with f32 gives f32), as PyTorch's promote policy does. The macro turns
//! `Tensor::cat(&[a, b, c], dim)` into `cat(Cons(a, Cons(b, Cons(c, Nil))), dim)`.

use super::operand::TensorLike;
use crate::element::{Float, Promote};
use crate::tensor::Tensor;

/// One element of a type-level list of tensors.
pub struct Cons<X, Rest>(pub X, pub Rest);

/// The end of a type-level list of tensors.
pub struct Nil;

/// A non-empty list of tensors of possibly different float types, with their common (widest) type.
pub trait TensorList {
    /// The widest element type in the list.
    type Out: Float;
    /// Appends every tensor, cast to `Out`, to `into` (in list order).
    fn push_cast(&self, into: &mut Vec<Tensor<Self::Out>>);
    /// Appends every tensor cast to `T`.
    fn push_as<T: Float>(&self, into: &mut Vec<Tensor<T>>);
}

impl<X: TensorLike> TensorList for Cons<X, Nil> {
    type Out = X::Elem;
    fn push_cast(&self, into: &mut Vec<Tensor<X::Elem>>) {
        into.push(self.0.tensor());
    }
    fn push_as<T: Float>(&self, into: &mut Vec<Tensor<T>>) {
        into.push(self.0.cast_to::<T>());
    }
}

impl<X: TensorLike, A, R> TensorList for Cons<X, Cons<A, R>>
where
    Cons<A, R>: TensorList,
    X::Elem: Promote<<Cons<A, R> as TensorList>::Out>,
{
    type Out = <X::Elem as Promote<<Cons<A, R> as TensorList>::Out>>::Output;
    fn push_cast(&self, into: &mut Vec<Tensor<Self::Out>>) {
        self.push_as::<Self::Out>(into);
    }
    fn push_as<T: Float>(&self, into: &mut Vec<Tensor<T>>) {
        into.push(self.0.cast_to::<T>());
        self.1.push_as::<T>(into);
    }
}

/// [`Tensor::cat`] of a promoted list.
#[track_caller]
pub fn cat<L: TensorList>(list: L, dim: isize) -> Tensor<L::Out> {
    let mut tensors = Vec::new();
    list.push_cast(&mut tensors);
    Tensor::cat(&tensors, dim)
}

/// [`Tensor::stack`] of a promoted list.
#[track_caller]
pub fn stack<L: TensorList>(list: L, dim: isize) -> Tensor<L::Out> {
    let mut tensors = Vec::new();
    list.push_cast(&mut tensors);
    Tensor::stack(&tensors, dim)
}
