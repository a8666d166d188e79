//! Kernels for amp: the numeric work behind every tensor op.
//!
//! The runtime (`amp-runtime`) calls kernels through one narrow interface: the functions of [`cpu`], each
//! taking plain slices plus a small descriptor (an op code such as [`cpu::Unary`], a [`cpu::Dim3`]
//! layout, a [`cpu::GemmSpec`]). Faster paths (SIMD, matrix units) and other devices plug in behind the same
//! functions and descriptors; the runtime does not change.
//!
//! Each kernel computes in the element's [`Float::Acc`] type (f32 for f32/bf16/f16, f64 for f64) and rounds
//! once on output. Inputs and outputs may have different element types where a fused cast is useful
//! (`unary::<bf16, f32>` reads bf16 and writes f32; [`cpu::gemm_mixed`] rounds an f32 activation to bf16
//! while packing it). Behind each function, the path is chosen at run time from the CPU ([`cpu::isa`]):
//! AVX-512 or AVX2 vector code for elementwise work, reductions, norms and the optimizer steps, and a
//! blocked GEMM with AVX-512/AVX2 FMA, AVX512-BF16 or (opt-in) AMX-BF16 microkernels. The scalar code is
//! the reference every faster path is tested against, and what runs on any other CPU.
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
#[cfg(feature = "cuda")]
pub mod cuda;
mod element;

pub use element::{Accum, DType, Elem, Float};
pub use half::{bf16, f16};
