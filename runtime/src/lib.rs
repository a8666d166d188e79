//! The runtime of amp: statically typed tensors over `f32`, `bf16`, `f16` and `f64`, reverse-mode
//! autograd, and trainable parameters with a versioned low-precision cast cache.
//!
//! Users depend on the facade crate `amp`, which re-exports everything here.
//!
//! ```
//! use amp_runtime::{Param, Rng, Tensor, bf16};
//!
//! let mut rng = Rng::new(0);
//! let w = Param::named("w", Tensor::<f32>::randn([4, 3], &mut rng));
//! let x = Tensor::<bf16>::randn([2, 4], &mut rng);
//! // A bf16 product with the cached bf16 copy of the f32 master weight, accumulated in f32.
//! let y = x.matmul(&w.get::<bf16>());
//! let loss = y.to_f32().square().mean(..);
//! let grads = loss.backward();
//! assert_eq!(grads.get(&w).unwrap().shape(), &[4, 3]); // f32 gradient for the f32 master
//! ```

#![warn(missing_docs)]

pub mod autocast;
mod autograd;
mod device;
mod element;
pub mod nn;
mod ops;
mod param;
pub mod policy;
mod pool;
mod rng;
mod shape;
mod tensor;
pub mod train;

pub use amp_kernels::{bf16, f16};
pub use autograd::{GradId, GradKey, Grads, NoGradGuard, is_grad_enabled, no_grad};
pub use device::DeviceError;
pub use element::{AnyTensor, DType, Element, Float, LowFloat, Promote};
pub use ops::{Pair, Scalar};
pub use param::Param;
pub use pool::empty_cache;
pub use rng::Rng;
pub use shape::{Dims, IntoShape};
pub use tensor::{Device, Tensor};
