//! Kernels for amp: the numeric work behind every tensor op.
//!
//! The runtime (`amp-runtime`) calls kernels through one narrow interface: the functions of [`cpu`], each
//! taking plain slices plus a small descriptor (an op code such as [`cpu::Unary`], a [`cpu::Dim3`]
//! layout, a [`cpu::GemmSpec`]). Faster paths (SIMD, matrix units) and other devices plug in behind the same
//! functions and descriptors; the runtime does not change.
//!
//! Every kernel here is a scalar reference: clear loops computing in the element's [`Float::Acc`] type
//! (f32 for f32/bf16/f16, f64 for f64) and rounding once on output. Inputs and outputs may have different
//! element types where a fused cast is useful (`unary::<bf16, f32>` reads bf16 and writes f32).
//!
//! ```
//! use amp_kernels::cpu::{self, Unary};
//! use half::bf16;
//!
//! let x = [bf16::from_f32(1.0), bf16::from_f32(-2.0)];
//! let mut y = [0.0f32; 2];
//! cpu::unary(Unary::Relu, &x, &mut y);
//! assert_eq!(y, [1.0, 0.0]);
//! ```

#![warn(missing_docs)]

pub mod cpu;
mod element;

pub use element::{Accum, DType, Elem, Float};
pub use half::{bf16, f16};
