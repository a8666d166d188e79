//! The CPU implementation of the kernel interface: scalar reference kernels, parallel where it pays.
//!
//! Layout conventions shared by every kernel:
//! - buffers are contiguous and row-major;
//! - an op "along one dimension" sees its input as [`Dim3`] `{ outer, size, inner }`: `outer` independent
//!   blocks, each `size` steps along the dimension with stride `inner`;
//! - shapes are validated by the caller (the runtime); kernels only `debug_assert!` lengths, except for
//!   index values, which come from data and are checked here, returning [`IndexError`].

mod binary;
mod cast;
mod conv;
mod gemm;
mod huge_pages;
mod index;
pub mod isa;
mod layout;
mod linux;
mod norm;
mod optim;
pub(crate) mod optim8;
mod quant8;
mod reduce;
mod rounding;
mod simd;
mod softmax;
mod unary;

pub use binary::{Binary, Broadcast, Compare, binary, broadcast_copy, compare, select};
pub use cast::{cast, round_through};
pub use conv::{Conv2dGeometry, col2im, im2col};
pub use gemm::{GemmSpec, gemm, gemm_mixed};
pub use index::{IndexError, gather, index_add, index_select, scatter_add};
pub use layout::{copy_rows, permute};
pub use norm::{layer_norm, layer_norm_backward, rms_norm, rms_norm_backward};
pub use optim::{AdamStep, SgdStep, adam_step, sgd_step, unscale_and_check};
pub use optim8::{adam8bit_step, momentum8bit_step};
pub use quant8::{
    Codebook, QUANT_BLOCK, Quantized, dequantize_blockwise, quant_blocks, quantize_blockwise,
};
pub use reduce::{Reduce, arg_reduce, cumsum, logsumexp, reduce};
pub use rounding::{kahan_round_through, rounding_bits, stochastic_round_bf16};
pub(crate) use simd::AdamConsts;
pub use softmax::{log_softmax, log_softmax_backward, softmax, softmax_backward};
pub use unary::{Unary, unary, unary_backward};

/// A tensor seen along one dimension: `outer` blocks × `size` positions × `inner` contiguous elements.
///
/// For shape `[2, 3, 4]` and dimension 1: `Dim3 { outer: 2, size: 3, inner: 4 }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dim3 {
    /// Product of the sizes before the dimension.
    pub outer: usize,
    /// Size of the dimension.
    pub size: usize,
    /// Product of the sizes after the dimension.
    pub inner: usize,
}

impl Dim3 {
    /// Splits `shape` around dimension `dim` (which must be `< shape.len()`).
    pub fn of(shape: &[usize], dim: usize) -> Self {
        Dim3 {
            outer: shape[..dim].iter().product(),
            size: shape[dim],
            inner: shape[dim + 1..].iter().product(),
        }
    }

    /// Total number of elements.
    pub fn numel(&self) -> usize {
        self.outer * self.size * self.inner
    }
}

/// `s` viewed as a slice of `B`, which must be the same type as `A` (checked): lets generic code hand a
/// `&[T]` it knows to be `&[f32]` to a kernel that takes `&[f32]`, without copying.
pub(crate) fn same_type_slice<A: 'static, B: 'static>(s: &[A]) -> &[B] {
    assert_eq!(
        std::any::TypeId::of::<A>(),
        std::any::TypeId::of::<B>(),
        "same_type_slice: different types"
    );
    // SAFETY: A and B are the same type, so the pointer, length and alignment are valid for B.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<B>(), s.len()) }
}

/// Views `&mut [A]` as `&mut [B]` when `A` and `B` are the same type (checked), without copying.
pub(crate) fn same_type_slice_mut<A: 'static, B: 'static>(s: &mut [A]) -> &mut [B] {
    assert_eq!(
        std::any::TypeId::of::<A>(),
        std::any::TypeId::of::<B>(),
        "same_type_slice_mut: different types"
    );
    // SAFETY: A and B are the same type, so the pointer, length and alignment are valid for B.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<B>(), s.len()) }
}

/// Below this many elements, elementwise work stays on the calling thread.
const PARALLEL_MIN: usize = 1 << 15;

/// Runs `f(start, chunk)` over disjoint chunks of `out`, in parallel when `out` is large.
fn par_chunks_mut<O: Send>(out: &mut [O], f: impl Fn(usize, &mut [O]) + Sync) {
    use rayon::prelude::*;
    if out.len() < PARALLEL_MIN {
        f(0, out);
        return;
    }
    let chunk = PARALLEL_MIN / 4;
    out.par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(i, c)| f(i * chunk, c));
}
