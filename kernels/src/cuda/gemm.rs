//! Matrix products on the device through cuBLAS `GemmEx`: f32 accumulation for f32, bf16 and f16 operands
//! (f64 for f64), transposed operands as flags, batches as strides.

use super::{CudaError, DeviceBuffer, cast};
use crate::DType;
use crate::cpu::GemmSpec;
use cudarc::cublas::result::gemm_strided_batched_ex;
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use std::ffi::c_void;

fn data_type(dtype: DType) -> Result<cudaDataType, CudaError> {
    Ok(match dtype {
        DType::F32 => cudaDataType::CUDA_R_32F,
        DType::F64 => cudaDataType::CUDA_R_64F,
        DType::BF16 => cudaDataType::CUDA_R_16BF,
        DType::F16 => cudaDataType::CUDA_R_16F,
        other => {
            return Err(CudaError::Unsupported(format!(
                "matmul of {other} tensors on a CUDA device"
            )));
        }
    })
}

fn dim(value: usize, what: &str) -> Result<i32, CudaError> {
    i32::try_from(value).map_err(|_| {
        CudaError::Unsupported(format!(
            "matmul: {what} = {value} exceeds cuBLAS's 32-bit sizes"
        ))
    })
}

/// `c = a · b` (`c += a · b` with `spec.accumulate`) per batch, row-major, into a buffer of `out_type`.
/// `a` and `b` may have different float types: the wider one is rounded to the narrower one first (the
/// CPU rounds it while packing; the result is the same). Products of bf16 or f16 operands accumulate in
/// f32 and are written as f32 or as their own type; f32 products are true f32 (no TF32).
pub fn gemm(
    spec: &GemmSpec,
    a: &DeviceBuffer,
    b: &DeviceBuffer,
    out_type: DType,
    accumulate_into: Option<DeviceBuffer>,
) -> Result<DeviceBuffer, CudaError> {
    super::ops::same_device("matmul", &[a, b])?;
    let operand_type = narrower(a.dtype(), b.dtype());
    let (a_cast, b_cast);
    let a = if a.dtype() == operand_type {
        a
    } else {
        a_cast = cast(a, operand_type)?;
        &a_cast
    };
    let b = if b.dtype() == operand_type {
        b
    } else {
        b_cast = cast(b, operand_type)?;
        &b_cast
    };
    // cuBLAS writes f32 or the operands' own type; anything else goes through an f32 (f64) result.
    let native_out = match operand_type {
        DType::F64 => DType::F64,
        DType::F32 => DType::F32,
        low if out_type == low => low,
        _ => DType::F32,
    };
    let gpu = a.gpu().clone();
    let c = match accumulate_into {
        Some(c) if c.dtype() == native_out => c,
        Some(c) => cast(&c, native_out)?,
        None => DeviceBuffer::uninit(&gpu, native_out, spec.batch * spec.m * spec.n)?,
    };
    if spec.k == 0 {
        // An empty sum: zeros, or C unchanged when accumulating (cuBLAS rejects the zero leading
        // dimensions this would need).
        if !spec.accumulate {
            return DeviceBuffer::zeros(&gpu, out_type, spec.batch * spec.m * spec.n);
        }
    } else if spec.batch * spec.m * spec.n > 0 {
        run(spec, a, b, &c, operand_type)?;
    }
    if native_out == out_type {
        Ok(c)
    } else {
        cast(&c, out_type)
    }
}

/// The narrower of two float types (bf16 and f16 meeting: f16, as the CPU GEMM).
fn narrower(a: DType, b: DType) -> DType {
    let rank = |d: DType| match d {
        DType::F64 => 3,
        DType::F32 => 2,
        DType::BF16 => 1,
        _ => 0,
    };
    if rank(a) <= rank(b) { a } else { b }
}

/// The cuBLAS call. cuBLAS is column-major, so the row-major `C = A·B` is computed as `Cᵀ = Bᵀ·Aᵀ`: the
/// row-major buffers read as column-major are already the transposes.
fn run(
    spec: &GemmSpec,
    a: &DeviceBuffer,
    b: &DeviceBuffer,
    c: &DeviceBuffer,
    operand_type: DType,
) -> Result<(), CudaError> {
    let (m, n, k) = (dim(spec.m, "m")?, dim(spec.n, "n")?, dim(spec.k, "k")?);
    let op = |t: bool| {
        if t {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    // Leading dimensions of the stored (row-major) operands.
    let lda = if spec.a_trans { m } else { k };
    let ldb = if spec.b_trans { k } else { n };
    let (in_type, out_type) = (data_type(operand_type)?, data_type(c.dtype())?);
    let compute = if operand_type == DType::F64 {
        cublasComputeType_t::CUBLAS_COMPUTE_64F
    } else {
        cublasComputeType_t::CUBLAS_COMPUTE_32F
    };
    let beta_value = if spec.accumulate { 1.0 } else { 0.0 };
    let (alpha64, beta64, alpha32, beta32) = (1.0f64, beta_value, 1.0f32, beta_value as f32);
    let (alpha, beta): (*const c_void, *const c_void) = if operand_type == DType::F64 {
        (
            (&alpha64 as *const f64).cast(),
            (&beta64 as *const f64).cast(),
        )
    } else {
        (
            (&alpha32 as *const f32).cast(),
            (&beta32 as *const f32).cast(),
        )
    };
    let (ap, bp, cp) = (
        a.ptr() as *const c_void,
        b.ptr() as *const c_void,
        c.ptr() as *mut c_void,
    );
    let handle = *a.gpu().blas.handle();
    // cuBLAS runs in the thread's current context; the buffer operations above may not have made it
    // this device's (a product that needs no cast or allocation reaches here first).
    a.gpu().stream().context().bind_to_thread()?;
    let algo = cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT;
    // One strided-batched call for every product (a single one is a batch of one).
    // SAFETY: the pointers are into live device buffers of at least batch·m·k, batch·k·n and batch·m·n
    // elements of the declared types (the runtime checks the shapes), and alpha/beta outlive the call.
    unsafe {
        gemm_strided_batched_ex(
            handle,
            op(spec.b_trans),
            op(spec.a_trans),
            n,
            m,
            k,
            alpha,
            bp,
            in_type,
            ldb,
            spec.b_batch_stride as i64,
            ap,
            in_type,
            lda,
            spec.a_batch_stride as i64,
            beta,
            cp,
            out_type,
            n,
            (spec.m * spec.n) as i64,
            dim(spec.batch, "batch")?,
            compute,
            algo,
        )?;
    }
    Ok(())
}
