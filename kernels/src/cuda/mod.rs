//! The CUDA backend (feature `cuda`): device handles, device buffers, and the ops of [`crate::cpu`] on the
//! device, as NVRTC kernels (`kernels.cu`, compiled once per process) and cuBLAS matrix products.
//!
//! The CUDA libraries are loaded at run time, so this builds and runs on machines without CUDA: every
//! entry point first checks that the library it needs can be loaded and returns
//! [`CudaError::LibraryMissing`] if not (cudarc itself would panic).

mod buffer;
mod device;
mod error;
mod gemm;
mod index;
mod ops;

pub use buffer::DeviceBuffer;
pub use device::{Gpu, KERNEL_SOURCE, compiled_kernels, device_count, gpu};
pub use error::CudaError;
pub use gemm::gemm;
pub use index::{
    arg_reduce, col2im, cumsum, gather, im2col, index_add, index_select, logsumexp, scatter_add,
};
pub use ops::{
    MAX_RANK, adam_step, binary, broadcast_copy, cast, compare, copy_rows, layer_norm,
    norm_backward, permute, reduce, rms_norm, select, sgd_step, softmax, softmax_backward, unary,
    unary_backward, unscale_and_check,
};
