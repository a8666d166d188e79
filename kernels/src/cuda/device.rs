//! One handle per CUDA device: its context, the stream every op runs on, cuBLAS, and amp's kernels
//! (compiled once per process by NVRTC, loaded once per device).

use super::compile::{self, Compiled};
use super::{CudaError, signature};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, LaunchConfig};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Threads per block of every kernel (the row kernels' shared arrays are this long).
pub(crate) const BLOCK: u32 = 256;

/// A CUDA device ready for ops: every op is queued on its one stream, so ops on one device run in the
/// order they were issued and no op needs to synchronize with another.
pub struct Gpu {
    ordinal: usize,
    stream: Arc<CudaStream>,
    pub(crate) blas: CudaBlas,
    module: Arc<CudaModule>,
    functions: Mutex<HashMap<String, CudaFunction>>,
    kernels: Arc<Compiled>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu(cuda:{})", self.ordinal)
    }
}

/// Whether the CUDA driver library can be loaded. cudarc panics on the first call into a library it cannot
/// load, so every entry point checks this (and the NVRTC and cuBLAS libraries) first.
pub(super) fn library_present(library: &'static str) -> Result<(), CudaError> {
    // SAFETY: these only try to load the library (cudarc's documented probe).
    let present = unsafe {
        match library {
            "cuda" => cudarc::driver::sys::is_culib_present(),
            "nvrtc" => cudarc::nvrtc::sys::is_culib_present(),
            _ => cudarc::cublas::sys::is_culib_present(),
        }
    };
    if present {
        Ok(())
    } else {
        Err(CudaError::LibraryMissing { library })
    }
}

/// How many CUDA devices the driver sees, or why none can be used.
///
/// ```
/// // On a machine without an NVIDIA driver this is an error, never a panic.
/// match amp_kernels::cuda::device_count() {
///     Ok(n) => println!("{n} CUDA devices"),
///     Err(e) => println!("no CUDA: {e}"),
/// }
/// ```
pub fn device_count() -> Result<usize, CudaError> {
    library_present("cuda")?;
    let count = CudaContext::device_count()?;
    Ok(usize::try_from(count).unwrap_or(0))
}

/// amp's kernels compiled to PTX for [`compile::PORTABLE_ARCH`], once per process (NVRTC needs no
/// device, only its library). A device loads machine code compiled for its own architecture instead.
pub fn compiled_kernels() -> Result<Ptx, CudaError> {
    Ok(Ptx::from_src(portable_kernels()?.ptx.clone()))
}

/// The kernels compiled for [`compile::PORTABLE_ARCH`].
pub(crate) fn portable_kernels() -> Result<Arc<Compiled>, CudaError> {
    library_present("nvrtc")?;
    compile::for_arch(compile::PORTABLE_ARCH)
}

/// The kernels as a module on `context`: machine code for its device's architecture, or, where NVRTC
/// does not know that architecture or the driver does not take the machine code (one from a newer CUDA
/// major version), the portable PTX for the driver to compile.
fn load_kernels(context: &Arc<CudaContext>) -> Result<(Arc<CudaModule>, Arc<Compiled>), CudaError> {
    library_present("nvrtc")?;
    let (major, minor) = context.compute_capability()?;
    let native = format!("sm_{major}{minor}");
    let native_error = match compile::for_arch(&native) {
        Ok(kernels) => {
            let cubin = kernels.cubin.clone().unwrap_or_default();
            match context.load_module(Ptx::from_binary(cubin)) {
                Ok(module) => return Ok((module, kernels)),
                Err(e) => format!(
                    "the driver did not load the machine code NVRTC compiled for {native}: {e:?}"
                ),
            }
        }
        Err(e) => format!("NVRTC could not compile them for this device's {native}: {e}"),
    };
    let kernels = portable_kernels()?;
    let module = context
        .load_module(Ptx::from_src(kernels.ptx.clone()))
        .map_err(|e| {
            CudaError::Driver(format!(
                "{e:?}: the driver could not load the kernels' PTX either (a driver older than NVRTC \
                 rejects its PTX); {native_error}"
            ))
        })?;
    Ok((module, kernels))
}

/// The handle of device `ordinal`, created on first use and shared afterwards, or why it cannot be had
/// (no driver, no such device, no NVRTC or cuBLAS library, kernels that do not compile).
pub fn gpu(ordinal: usize) -> Result<Arc<Gpu>, CudaError> {
    static GPUS: Mutex<Vec<Option<Arc<Gpu>>>> = Mutex::new(Vec::new());
    let mut gpus = GPUS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(Some(gpu)) = gpus.get(ordinal) {
        return Ok(gpu.clone());
    }
    let count = device_count()?;
    if ordinal >= count {
        return Err(CudaError::NoDevice { ordinal, count });
    }
    library_present("cublas")?;
    let context = CudaContext::new(ordinal)?;
    // One stream per device: cudarc's cross-stream event tracking would only add work.
    // SAFETY: no buffer of this context exists yet, and all later work is queued on one stream.
    unsafe { context.disable_event_tracking() };
    let stream = context.default_stream();
    let blas = CudaBlas::new(stream.clone())?;
    // Sums of a bf16/f16 product are kept in f32 until the one final rounding, as on the CPU (by default
    // cuBLAS may reduce split-K partial sums in the output type).
    // SAFETY: the handle was just created and is used on this thread only.
    let status = unsafe {
        cudarc::cublas::sys::cublasSetMathMode(
            *blas.handle(),
            cudarc::cublas::sys::cublasMath_t::CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION,
        )
    };
    status.result()?;
    let (module, kernels) = load_kernels(&context)?;
    let gpu = Arc::new(Gpu {
        ordinal,
        stream,
        blas,
        module,
        functions: Mutex::new(HashMap::new()),
        kernels,
    });
    if gpus.len() <= ordinal {
        gpus.resize(ordinal + 1, None);
    }
    gpus[ordinal] = Some(gpu.clone());
    Ok(gpu)
}

impl Gpu {
    /// The device's ordinal (`n` in `cuda:n`).
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The stream every op on this device is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits until every queued op has finished (for timing, and before reading results on the host).
    pub fn synchronize(&self) -> Result<(), CudaError> {
        Ok(self.stream.synchronize()?)
    }

    /// Errors unless arguments of `sizes` bytes are exactly what kernel `name` takes.
    pub(crate) fn check_arguments(&self, name: &str, sizes: &[usize]) -> Result<(), CudaError> {
        signature::check_launch(&self.kernels.parameters, name, sizes).map_err(CudaError::Launch)
    }

    /// The kernel `name` of `kernels.cu`.
    pub(crate) fn function(&self, name: &str) -> Result<CudaFunction, CudaError> {
        let mut functions = self
            .functions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(f) = functions.get(name) {
            return Ok(f.clone());
        }
        let f = self.module.load_function(name).map_err(|e| {
            CudaError::Driver(format!(
                "kernel {name} is not in the compiled module: {e:?}"
            ))
        })?;
        functions.insert(name.to_string(), f.clone());
        Ok(f)
    }
}

/// A grid-stride launch over `n` elements.
pub(crate) fn elementwise_config(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, 8192) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block per row (`rows` rows, grid-strided beyond 65,535).
pub(crate) fn rows_config(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.clamp(1, 65_535) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Launches kernel `$name` on `$gpu` with `$config` and the arguments (local variables: the launch
/// borrows them), mapping a driver error to [`CudaError`]. The arguments' sizes are checked against the
/// kernel's parameters first ([`CudaError::Launch`] if they differ).
macro_rules! launch {
    ($gpu:expr, $name:expr, $config:expr; $($arg:ident),* $(,)?) => {{
        use cudarc::driver::PushKernelArg as _;
        let function = $gpu.function(&$name)?;
        $gpu.check_arguments(&$name, &[$(std::mem::size_of_val(&$arg)),*])?;
        let mut builder = $gpu.stream().launch_builder(&function);
        $( builder.arg(&$arg); )*
        // SAFETY: the arguments match the kernel's parameters in `kernels.cu` (device pointers as u64,
        // counts as u64, scalars and layouts by value), and every pointer is into a live buffer of the
        // length the kernel indexes.
        unsafe { builder.launch($config) }
            .map(|_| ())
            .map_err(crate::cuda::CudaError::from)
    }};
}
pub(crate) use launch;
