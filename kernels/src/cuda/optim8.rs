//! The fused 8-bit optimizer updates of [`crate::cpu`] on device buffers: the same arithmetic and the same
//! codes (one CUDA block of 256 threads per quantization block).

use super::device::{BLOCK, launch};
use super::ops::same_device;
use super::{CudaError, DeviceBuffer, Gpu};
use crate::DType;
use crate::cpu::optim8::Adam8Consts;
use crate::cpu::{AdamStep, Codebook, QUANT_BLOCK, SgdStep, quant_blocks};
use cudarc::driver::LaunchConfig;
use std::sync::{Arc, Mutex};

/// A block-quantized state on a device: one [`DType::U8`] code per element and one f32 absmax per
/// [`QUANT_BLOCK`] elements (as [`Quantized`](crate::cpu::Quantized) on the host).
#[derive(Debug)]
pub struct DeviceQuantized<'a> {
    /// One code per element.
    pub codes: &'a mut DeviceBuffer,
    /// One scale per block of 256 elements.
    pub absmax: &'a mut DeviceBuffer,
}

/// The signed and unsigned codebooks' entries and midpoints on one device.
struct Books {
    signed: (DeviceBuffer, DeviceBuffer),
    unsigned: (DeviceBuffer, DeviceBuffer),
}

/// The codebooks on `gpu`, uploaded on first use.
fn books(gpu: &Arc<Gpu>) -> Result<Arc<Books>, CudaError> {
    static BOOKS: Mutex<Vec<(usize, Arc<Books>)>> = Mutex::new(Vec::new());
    let mut all = BOOKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, books)) = all.iter().find(|(o, _)| *o == gpu.ordinal()) {
        return Ok(books.clone());
    }
    let upload = |book: &Codebook| -> Result<(DeviceBuffer, DeviceBuffer), CudaError> {
        Ok((
            DeviceBuffer::upload(gpu, book.values())?,
            DeviceBuffer::upload(gpu, book.midpoints())?,
        ))
    };
    let books = Arc::new(Books {
        signed: upload(Codebook::signed())?,
        unsigned: upload(Codebook::unsigned())?,
    });
    all.push((gpu.ordinal(), books.clone()));
    Ok(books)
}

/// One block of threads per quantization block (grid-strided beyond 65,535).
fn blocks_config(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (quant_blocks(n).clamp(1, 65_535) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The parameter's length; panics unless parameter and gradient are f32 buffers of one length (a bug in
/// the caller).
fn check_weights(op: &str, param: &DeviceBuffer, grad: &DeviceBuffer) -> usize {
    let n = param.len();
    assert!(
        grad.len() == n && param.dtype() == DType::F32 && grad.dtype() == DType::F32,
        "{op}: a {} gradient of {} elements for a {} parameter of {n}",
        grad.dtype(),
        grad.len(),
        param.dtype()
    );
    n
}

/// Panics unless `state` fits a parameter of `n` elements (a bug in the caller).
fn check_state(op: &str, n: usize, state: &DeviceQuantized) {
    assert!(
        state.codes.len() == n
            && state.codes.dtype() == DType::U8
            && state.absmax.len() == quant_blocks(n)
            && state.absmax.dtype() == DType::F32,
        "{op}: a state of {} {} codes and {} {} scales for {n} elements",
        state.codes.len(),
        state.codes.dtype(),
        state.absmax.len(),
        state.absmax.dtype()
    );
}

/// One Adam/AdamW step with block-quantized moments on a device, as
/// [`cpu::adam8bit_step`](crate::cpu::adam8bit_step): the same weights, codes and scales.
pub fn adam8bit_step(
    param: &mut DeviceBuffer,
    grad: &DeviceBuffer,
    m: DeviceQuantized<'_>,
    v: DeviceQuantized<'_>,
    hp: &AdamStep,
) -> Result<(), CudaError> {
    const _: () = assert!(QUANT_BLOCK == BLOCK as usize);
    same_device(
        "adam8bit_step",
        &[param, grad, m.codes, m.absmax, v.codes, v.absmax],
    )?;
    let n = check_weights("adam8bit_step", param, grad);
    check_state("adam8bit_step (first moment)", n, &m);
    check_state("adam8bit_step (second moment)", n, &v);
    let gpu = param.gpu().clone();
    let books = books(&gpu)?;
    let Adam8Consts {
        beta1,
        beta2,
        step_size,
        eps_hat,
        l2,
        decay,
    } = Adam8Consts::new(hp);
    let (wp, gp, mc, ma, vc, va) = (
        param.ptr(),
        grad.ptr(),
        m.codes.ptr(),
        m.absmax.ptr(),
        v.codes.ptr(),
        v.absmax.ptr(),
    );
    let (b1, m1, b2, m2) = (
        books.signed.0.ptr(),
        books.signed.1.ptr(),
        books.unsigned.0.ptr(),
        books.unsigned.1.ptr(),
    );
    let count = n as u64;
    launch!(gpu, "adam8bit_step", blocks_config(n);
        wp, gp, mc, ma, vc, va, b1, m1, b2, m2, count, beta1, beta2, step_size, eps_hat, l2, decay)
}

/// One SGD-with-momentum step with a block-quantized momentum buffer on a device, as
/// [`cpu::momentum8bit_step`](crate::cpu::momentum8bit_step).
pub fn momentum8bit_step(
    param: &mut DeviceBuffer,
    grad: &DeviceBuffer,
    buffer: DeviceQuantized<'_>,
    first_step: bool,
    hp: &SgdStep,
) -> Result<(), CudaError> {
    same_device(
        "momentum8bit_step",
        &[param, grad, buffer.codes, buffer.absmax],
    )?;
    let n = check_weights("momentum8bit_step", param, grad);
    check_state("momentum8bit_step", n, &buffer);
    let gpu = param.gpu().clone();
    let books = books(&gpu)?;
    let (lr, wd, mu, damp) = (
        hp.lr as f32,
        hp.weight_decay as f32,
        hp.momentum as f32,
        (1.0 - hp.dampening) as f32,
    );
    let (first, nesterov) = (i32::from(first_step), i32::from(hp.nesterov));
    let (wp, gp, bc, ba) = (
        param.ptr(),
        grad.ptr(),
        buffer.codes.ptr(),
        buffer.absmax.ptr(),
    );
    let (book, mid, count) = (books.signed.0.ptr(), books.signed.1.ptr(), n as u64);
    launch!(gpu, "momentum8bit_step", blocks_config(n);
        wp, gp, bc, ba, book, mid, count, lr, wd, mu, damp, first, nesterov)
}
