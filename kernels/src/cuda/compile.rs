//! amp's kernels compiled by NVRTC, once per process and target.
//!
//! A device gets machine code (CUBIN) for its own architecture (`sm_90` for compute capability 9.0),
//! which the driver loads as it is. PTX alone would have to be compiled by the driver, and a driver
//! older than the NVRTC that wrote the PTX rejects it (`CUDA_ERROR_UNSUPPORTED_PTX_VERSION`); machine
//! code has no such check. Without a device the kernels compile to PTX for [`PORTABLE_ARCH`].

use super::CudaError;
use super::signature;
use cudarc::nvrtc::{result, sys};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::sync::{Arc, Mutex};

/// The kernels' source (see the file for its conventions).
pub const KERNEL_SOURCE: &str = include_str!("kernels.cu");

/// The virtual architecture of the PTX compiled without a device: the oldest that both NVRTC 12 and 13
/// accept and that has every atomic the kernels use (f64 `atomicAdd` needs 6.0; NVRTC 12 defaults to 5.2).
pub const PORTABLE_ARCH: &str = "compute_75";

/// The kernels compiled for one architecture.
#[derive(Debug)]
pub(crate) struct Compiled {
    /// The PTX (NVRTC writes it for real architectures too).
    pub(crate) ptx: String,
    /// Machine code, for a real architecture (`sm_XY`).
    pub(crate) cubin: Option<Vec<u8>>,
    /// The byte size of every parameter of every kernel, by kernel name.
    pub(crate) parameters: HashMap<String, Vec<usize>>,
}

/// A compile's result, kept per architecture.
type Outcome = Result<Arc<Compiled>, CudaError>;

/// The kernels compiled for `arch` (`sm_XY` or `compute_XY`), compiled on the first call for that
/// architecture and shared afterwards (an error is remembered too: the source does not change).
pub(crate) fn for_arch(arch: &str) -> Result<Arc<Compiled>, CudaError> {
    static COMPILED: Mutex<Vec<(String, Outcome)>> = Mutex::new(Vec::new());
    let mut compiled = COMPILED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, result)) = compiled.iter().find(|(a, _)| a == arch) {
        return result.clone();
    }
    let result = compile(arch).map(Arc::new);
    compiled.push((arch.to_string(), result.clone()));
    result
}

/// Options for every compile: IEEE division and square roots, no flush to zero and no contraction of
/// a·b + c into one rounding (the CPU kernels' arithmetic, operation for operation).
fn options(arch: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "--ftz=false".into(),
        "--prec-div=true".into(),
        "--prec-sqrt=true".into(),
        "--fmad=false".into(),
    ]
}

fn nvrtc_error(what: &str, e: result::NvrtcError) -> CudaError {
    CudaError::Compile(format!("{what}: {e:?}"))
}

fn compile(arch: &str) -> Result<Compiled, CudaError> {
    let source = CString::new(KERNEL_SOURCE).expect("the kernel source has no NUL byte");
    let program = result::create_program(&source, Some(c"kernels.cu"))
        .map_err(|e| nvrtc_error("creating the NVRTC program", e))?;
    // SAFETY: `program` was just created from `source`, which outlives it, and is destroyed below only.
    let compiled = unsafe { compile_program(program, arch) };
    // SAFETY: created above and not destroyed before.
    let _ = unsafe { result::destroy_program(program) };
    compiled
}

/// # Safety
/// `program` must be a live NVRTC program.
unsafe fn compile_program(program: sys::nvrtcProgram, arch: &str) -> Result<Compiled, CudaError> {
    // SAFETY: the caller guarantees the program; every pointer below is into a buffer of the size NVRTC
    // reported.
    unsafe {
        if let Err(e) = result::compile_program(program, &options(arch)) {
            let log = result::get_program_log(program)
                .map(|log| CStr::from_ptr(log.as_ptr()).to_string_lossy().into_owned())
                .unwrap_or_default();
            return Err(CudaError::Compile(format!("{e:?} for {arch}\n{log}")));
        }
        let ptx = result::get_ptx(program).map_err(|e| nvrtc_error("reading the PTX", e))?;
        let ptx = CStr::from_ptr(ptx.as_ptr()).to_string_lossy().into_owned();
        let cubin = if arch.starts_with("sm_") {
            let mut size = 0usize;
            sys::nvrtcGetCUBINSize(program, &mut size)
                .result()
                .map_err(|e| nvrtc_error("reading the machine code's size", e))?;
            let mut cubin = vec![0u8; size];
            sys::nvrtcGetCUBIN(program, cubin.as_mut_ptr().cast())
                .result()
                .map_err(|e| nvrtc_error("reading the machine code", e))?;
            Some(cubin)
        } else {
            None
        };
        let parameters = signature::entry_parameters(&ptx);
        Ok(Compiled {
            ptx,
            cubin,
            parameters,
        })
    }
}
