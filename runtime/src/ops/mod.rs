//! Tensor ops, one family per module. Every op validates shapes (panicking with the op's name and the
//! shapes at the caller's line), calls a kernel, and records its backward when an input needs a gradient.

mod attention;
mod binary;
mod cast;
mod conv;
mod dropout;
mod index;
mod loss;
mod matmul;
mod norm;
mod reduce;
mod shape;
mod softmax;
mod unary;

pub use binary::Scalar;
pub use conv::Pair;

use crate::element::Element;

/// A buffer of `n` default elements for a kernel to write into (a reused one when possible).
pub(crate) fn buffer<E: Element>(n: usize) -> Vec<E> {
    crate::pool::take(n)
}
