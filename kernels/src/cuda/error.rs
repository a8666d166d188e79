//! Why a CUDA request failed.

use std::fmt;

/// A failure of the CUDA backend: a missing library or device, or an error the driver, NVRTC or cuBLAS
/// reported. Getting a device and copying to or from it return this; an op on device tensors that fails
/// (out of memory, a driver error) panics with it, naming the op.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CudaError {
    /// A CUDA library could not be loaded (`libcuda` is the driver; `libnvrtc` and `libcublas` come with
    /// the toolkit or the `nvidia-*` Python wheels).
    LibraryMissing {
        /// The library's short name: `cuda`, `nvrtc` or `cublas`.
        library: &'static str,
    },
    /// The driver is there but has no device with this ordinal.
    NoDevice {
        /// The ordinal asked for.
        ordinal: usize,
        /// How many devices the driver sees.
        count: usize,
    },
    /// The driver reported an error.
    Driver(String),
    /// NVRTC could not compile the kernels (the log says why).
    Compile(String),
    /// cuBLAS reported an error.
    Blas(String),
    /// A request the backend cannot serve (the message says what).
    Unsupported(String),
    /// A kernel launch whose arguments do not match the kernel's parameters: a defect of the backend
    /// itself, caught before the kernel could read wrong values.
    Launch(String),
}

impl fmt::Display for CudaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CudaError::LibraryMissing { library: "cuda" } => f.write_str(
                "no CUDA driver: libcuda.so could not be loaded (is an NVIDIA driver installed?)",
            ),
            CudaError::LibraryMissing { library } => write!(
                f,
                "CUDA library lib{library}.so could not be loaded (install the CUDA toolkit or the \
                 nvidia-cuda-{library} wheel and put its lib directory on LD_LIBRARY_PATH)"
            ),
            CudaError::NoDevice { ordinal, count: 0 } => {
                write!(
                    f,
                    "no CUDA device: asked for cuda:{ordinal}, but the driver sees none"
                )
            }
            CudaError::NoDevice { ordinal, count } => write!(
                f,
                "no CUDA device cuda:{ordinal}: the driver sees {count} (cuda:0 to cuda:{})",
                count - 1
            ),
            CudaError::Driver(message) => write!(f, "CUDA driver error: {message}"),
            CudaError::Compile(log) => write!(f, "NVRTC could not compile amp's kernels:\n{log}"),
            CudaError::Blas(message) => write!(f, "cuBLAS error: {message}"),
            CudaError::Unsupported(message) => f.write_str(message),
            CudaError::Launch(message) => write!(f, "CUDA kernel launch does not match: {message}"),
        }
    }
}

impl std::error::Error for CudaError {}

impl From<cudarc::driver::DriverError> for CudaError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        CudaError::Driver(format!("{e:?}"))
    }
}

impl From<cudarc::cublas::result::CublasError> for CudaError {
    fn from(e: cudarc::cublas::result::CublasError) -> Self {
        CudaError::Blas(format!("{e:?}"))
    }
}
