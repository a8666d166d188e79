//! CUDA benchmark (feature `cuda`): GEMM TFLOP/s in bf16, f16 and f32 at n = 4096 and 8192 against
//! cuBLAS called directly through cudarc's own `Gemm`, and the fused unscale + check and Adam update in
//! GB/s on 1 GiB of f32 gradients against a device-to-device copy. Medians of 5 timed runs after a
//! warm-up. Run by `scripts/gpu-check.sh`; without a device it says why and exits with status 1.
//! `--small` runs every step at small sizes (a check of the program, run in CI on the emulated GPU).
//!
//! ```text
//! cargo run --release -p amp-kernels --features cuda --example cuda_bench
//! ```

use amp_kernels::cpu::{AdamStep, GemmSpec};
use amp_kernels::cuda::{self, CudaError, DeviceBuffer, Gpu};
use amp_kernels::{DType, bf16, f16};
use cudarc::cublas::{Gemm, GemmConfig, sys::cublasOperation_t};
use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};
use std::sync::Arc;
use std::time::Instant;

/// Median seconds of `f` over 5 runs after one warm-up, synchronizing around each.
fn time(gpu: &Gpu, mut f: impl FnMut() -> Result<(), CudaError>) -> Result<f64, CudaError> {
    f()?;
    gpu.synchronize()?;
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        f()?;
        gpu.synchronize()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[2])
}

fn random<E: amp_kernels::Elem>(n: usize, seed: u64) -> Vec<E> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            E::from_f32(((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5)
        })
        .collect()
}

/// cuBLAS's own rate for an n×n product of `T`, through cudarc's safe `Gemm` (C in `T`).
fn cublas_rate<T>(gpu: &Arc<Gpu>, n: usize) -> Result<f64, CudaError>
where
    T: amp_kernels::Elem + DeviceRepr + ValidAsZeroBits,
    cudarc::cublas::CudaBlas: Gemm<T>,
{
    let stream = gpu.stream();
    let a: CudaSlice<T> = stream.clone_htod(&random::<T>(n * n, 1))?;
    let b: CudaSlice<T> = stream.clone_htod(&random::<T>(n * n, 2))?;
    let mut c: CudaSlice<T> = stream.alloc_zeros(n * n)?;
    let blas = cudarc::cublas::CudaBlas::new(stream.clone())?;
    let config = GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_N,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: n as i32,
        n: n as i32,
        k: n as i32,
        alpha: T::from_f32(1.0),
        lda: n as i32,
        ldb: n as i32,
        beta: T::from_f32(0.0),
        ldc: n as i32,
    };
    let seconds = time(gpu, || {
        // SAFETY: the slices hold n·n elements each, as the configuration says.
        unsafe { blas.gemm(config, &a, &b, &mut c) }.map_err(CudaError::from)
    })?;
    Ok(2.0 * (n as f64).powi(3) / seconds / 1e12)
}

/// Our rate for an n×n product of `dtype` operands written as `dtype`.
fn our_rate(gpu: &Arc<Gpu>, dtype: DType, n: usize) -> Result<f64, CudaError> {
    let upload = |seed| match dtype {
        DType::BF16 => DeviceBuffer::upload(gpu, &random::<bf16>(n * n, seed)),
        DType::F16 => DeviceBuffer::upload(gpu, &random::<f16>(n * n, seed)),
        _ => DeviceBuffer::upload(gpu, &random::<f32>(n * n, seed)),
    };
    let (a, b) = (upload(1)?, upload(2)?);
    let spec = GemmSpec {
        batch: 1,
        m: n,
        n,
        k: n,
        a_trans: false,
        b_trans: false,
        a_batch_stride: 0,
        b_batch_stride: 0,
        accumulate: false,
    };
    let seconds = time(gpu, || cuda::gemm(&spec, &a, &b, dtype, None).map(drop))?;
    Ok(2.0 * (n as f64).powi(3) / seconds / 1e12)
}

/// Sizes of one run: GEMM orders, and elements of the bandwidth buffers.
struct Sizes {
    gemm: &'static [usize],
    stream: usize,
}

/// The benchmark's sizes, or (`--small`) a quick run of every step at small sizes, which checks the
/// program itself (on the emulated GPU, for one).
const FULL: Sizes = Sizes {
    gemm: &[4096, 8192],
    stream: (1 << 30) / 4, // 1 GiB of f32 gradients
};
const SMALL: Sizes = Sizes {
    gemm: &[96],
    stream: 1 << 16,
};

fn run(sizes: &Sizes) -> Result<(), CudaError> {
    let gpu = cuda::gpu(0)?;
    println!("| kernel | ours | reference | ratio |");
    println!("|---|---|---|---|");
    for &n in sizes.gemm {
        let rows: [(DType, f64); 3] = [
            (DType::BF16, cublas_rate::<bf16>(&gpu, n)?),
            (DType::F16, cublas_rate::<f16>(&gpu, n)?),
            (DType::F32, cublas_rate::<f32>(&gpu, n)?),
        ];
        for (dtype, reference) in rows {
            let ours = our_rate(&gpu, dtype, n)?;
            println!(
                "| {dtype} GEMM n={n} | {ours:.1} TFLOP/s | cuBLAS {reference:.1} TFLOP/s | {:.2} |",
                ours / reference
            );
        }
    }
    let n = sizes.stream;
    let mib = (n * 4) as f64 / f64::from(1 << 20);
    let grad = DeviceBuffer::upload(&gpu, &random::<f32>(n, 3))?;
    let copy_seconds = time(&gpu, || grad.try_clone().map(drop))?;
    let copy = 2.0 * (n * 4) as f64 / copy_seconds / 1e9;
    let mut g = grad.try_clone()?;
    let unscale_seconds = time(&gpu, || cuda::unscale_and_check(&mut g, 0.5).map(drop))?;
    let unscale = 2.0 * (n * 4) as f64 / unscale_seconds / 1e9;
    let (mut w, mut m, mut v) = (
        grad.try_clone()?,
        DeviceBuffer::zeros(&gpu, DType::F32, n)?,
        DeviceBuffer::zeros(&gpu, DType::F32, n)?,
    );
    let hp = AdamStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
        decoupled: true,
        step: 3,
    };
    let adam_seconds = time(&gpu, || cuda::adam_step(&mut w, &grad, &mut m, &mut v, &hp))?;
    let adam = 7.0 * (n * 4) as f64 / adam_seconds / 1e9; // reads w g m v, writes w m v
    for (name, value) in [("unscale + check", unscale), ("Adam update", adam)] {
        println!(
            "| {name}, {mib:.2} MiB f32 | {value:.0} GB/s | device copy {copy:.0} GB/s | {:.2} |",
            value / copy
        );
    }
    Ok(())
}

fn main() {
    let sizes = match std::env::args().nth(1).as_deref() {
        None => &FULL,
        Some("--small") => &SMALL,
        Some(other) => {
            eprintln!("cuda_bench: unknown argument {other} (the only one is --small)");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(sizes) {
        eprintln!("cuda_bench: {e}");
        std::process::exit(1);
    }
}
