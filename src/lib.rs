//! # amp: automatic mixed precision for Rust model code, decided at compile time
//!
//! Write model code against `f32` tensors; amp runs each op at the precision a mixed-precision policy
//! gives it (matmuls in bf16/f16 with f32 accumulation; softmax, norms, reductions and losses in f32),
//! with the element type of every tensor known to the compiler. The `#[autocast]` and `#[keep_fp32]`
//! attributes that rewrite model code arrive with the macro crate; this crate already provides the typed
//! tensor runtime they target:
//!
//! - [`Tensor<E>`](Tensor) over `f32`, [`bf16`], [`f16`](struct@f16) and `f64` (plus `i64` labels and `bool` masks):
//!   contiguous, row-major, cheap to clone, with a static element type. Mixing `bf16` and `f16` does not
//!   compile; `bf16` with `f32` promotes to `f32`.
//! - Reverse-mode autograd: [`Tensor::backward`] returns [`Grads`] keyed by parameter; [`no_grad`] turns
//!   recording off for evaluation.
//! - [`Param`]: an f32 master weight whose low-precision copy is cast once per optimizer step.
//!
//! ```
//! use amp::prelude::*;
//!
//! let mut rng = Rng::new(0);
//! let w = Param::named("w", Tensor::<f32>::randn([3, 2], &mut rng));
//! let x = Tensor::<f32>::randn([4, 3], &mut rng);
//! let labels = Tensor::<i64>::from_vec(vec![0, 1, 1, 0], [4]);
//! // The matmul runs in bf16 with f32 accumulation; the loss in f32.
//! let logits = x.to_bf16().matmul(&w.get::<bf16>());
//! let loss = logits.to_f32().cross_entropy(&labels);
//! let grads = loss.backward();
//! assert_eq!(grads.get(&w).unwrap().dtype(), DType::F32);
//! ```

#![warn(missing_docs)]

// The macros emit `::amp::...` paths; this lets them resolve inside this crate's own tests and examples.
extern crate self as amp;

pub use amp_macros::{autocast, keep_fp32};
pub use amp_runtime::*;

/// `#[derive(Module)]`: implements [`nn::Module`] for a struct from its fields (see [`nn::Module`]). The
/// derive and the trait share a name, in different namespaces, so `use amp::prelude::*;` brings both.
pub use amp_macros::Module;

pub use amp_runtime::autocast::{Report, report, set_tracing};
pub use amp_runtime::policy::Policy;

pub mod attributes;
mod dispatch;

/// The CPU kernels behind the runtime (for benchmarks and custom ops).
pub use amp_kernels as kernels;

/// The names most model code needs: `use amp::prelude::*;`.
pub mod prelude {
    pub use amp_macros::{Module, autocast, keep_fp32};
    pub use amp_runtime::nn::{Conv2d, Embedding, LayerNorm, Linear, Module, RmsNorm};
    pub use amp_runtime::policy::{Bf16, F16, F32, Policy};
    pub use amp_runtime::{DType, Device, Float, Grads, Param, Rng, Tensor, bf16, f16, no_grad};
}

/// Paths used by generated code. Not a public API: it may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use amp_kernels;
    pub use amp_runtime;
    pub use amp_runtime::autocast;
}

/// The README's Rust examples, compiled and run as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
