//! The ops of [`crate::cpu`] on device buffers, each one launch of a kernel from `kernels.cu` (the same
//! arithmetic in the same type, rounded once). Inputs must be on one device; the runtime checks this and
//! the element types before calling.

use super::device::{elementwise_config, launch, rows_config};
use super::{CudaError, DeviceBuffer};
use crate::DType;
use crate::cpu::{AdamConsts, AdamStep, Binary, Broadcast, Compare, Dim3, Reduce, SgdStep, Unary};
use cudarc::driver::DeviceRepr;

/// The largest rank a broadcast layout on the device supports (`MAX_RANK` in `kernels.cu`).
pub const MAX_RANK: usize = 8;

/// `Layout` of `kernels.cu`: an output shape and up to three inputs' strides over it.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Layout {
    rank: i32,
    pad: i32,
    shape: [u64; MAX_RANK],
    stride: [[u64; MAX_RANK]; 3],
}

// SAFETY: `#[repr(C)]` plain data matching the kernel-side struct field for field.
unsafe impl DeviceRepr for Layout {}

impl Layout {
    fn new(out_shape: &[usize], strides: &[Vec<usize>]) -> Result<Self, CudaError> {
        if out_shape.len() > MAX_RANK {
            return Err(CudaError::Unsupported(format!(
                "broadcasting over {} dimensions on a CUDA device (at most {MAX_RANK})",
                out_shape.len()
            )));
        }
        let mut layout = Layout {
            rank: out_shape.len() as i32,
            pad: 0,
            shape: [1; MAX_RANK],
            stride: [[0; MAX_RANK]; 3],
        };
        for (d, &size) in out_shape.iter().enumerate() {
            layout.shape[d] = size as u64;
        }
        for (k, s) in strides.iter().enumerate() {
            for (d, &stride) in s.iter().enumerate() {
                layout.stride[k][d] = stride as u64;
            }
        }
        Ok(layout)
    }

    fn of(broadcast: &Broadcast) -> Result<Self, CudaError> {
        Self::new(broadcast.out_shape(), broadcast.strides())
    }
}

/// `Dim3` of `kernels.cu`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct DeviceDim3 {
    outer: u64,
    size: u64,
    inner: u64,
}

// SAFETY: `#[repr(C)]` plain data matching the kernel-side struct.
unsafe impl DeviceRepr for DeviceDim3 {}

impl From<Dim3> for DeviceDim3 {
    fn from(d: Dim3) -> Self {
        DeviceDim3 {
            outer: d.outer as u64,
            size: d.size as u64,
            inner: d.inner as u64,
        }
    }
}

/// The kernel-name suffix of an element type.
pub(super) fn type_name(dtype: DType) -> &'static str {
    dtype.name()
}

/// The suffix of kernels that only move elements, by element size.
pub(super) fn bits_name(dtype: DType) -> &'static str {
    match dtype.size_in_bytes() {
        1 => "u8",
        2 => "u16",
        4 => "u32",
        _ => "u64",
    }
}

/// Errors unless every buffer is on the first one's device.
pub(super) fn same_device(op: &str, buffers: &[&DeviceBuffer]) -> Result<(), CudaError> {
    let first = buffers[0].gpu().ordinal();
    match buffers.iter().find(|b| b.gpu().ordinal() != first) {
        Some(other) => Err(CudaError::Unsupported(format!(
            "{op}: operands on cuda:{first} and cuda:{}",
            other.gpu().ordinal()
        ))),
        None => Ok(()),
    }
}

/// Errors unless every buffer has the first one's element type (kernels are named by one of them and read
/// all as that type).
pub(super) fn same_type(op: &str, buffers: &[&DeviceBuffer]) -> Result<(), CudaError> {
    let first = buffers[0].dtype();
    match buffers.iter().find(|b| b.dtype() != first) {
        Some(other) => Err(CudaError::Unsupported(format!(
            "{op}: operands of {first} and {}",
            other.dtype()
        ))),
        None => Ok(()),
    }
}

/// `x` converted to `to`, rounding once (to nearest even; i64 and bool as the CPU casts).
pub fn cast(x: &DeviceBuffer, to: DType) -> Result<DeviceBuffer, CudaError> {
    if x.dtype() == to {
        return x.try_clone();
    }
    let gpu = x.gpu();
    let out = DeviceBuffer::uninit(gpu, to, x.len())?;
    let (xp, op, n) = (x.ptr(), out.ptr(), x.len() as u64);
    let name = format!("cast_{}_{}", type_name(x.dtype()), type_name(to));
    launch!(gpu, name, elementwise_config(x.len()); xp, op, n)?;
    Ok(out)
}

/// The kernel code and scalar parameters of a unary op (the order of `unary_apply` in `kernels.cu`).
fn unary_code(op: Unary) -> (i32, f64, f64) {
    match op {
        Unary::Neg => (0, 0.0, 0.0),
        Unary::Abs => (1, 0.0, 0.0),
        Unary::Square => (2, 0.0, 0.0),
        Unary::Sqrt => (3, 0.0, 0.0),
        Unary::Rsqrt => (4, 0.0, 0.0),
        Unary::Reciprocal => (5, 0.0, 0.0),
        Unary::Exp => (6, 0.0, 0.0),
        Unary::Log => (7, 0.0, 0.0),
        Unary::Log1p => (8, 0.0, 0.0),
        Unary::Expm1 => (9, 0.0, 0.0),
        Unary::Softplus => (10, 0.0, 0.0),
        Unary::Relu => (11, 0.0, 0.0),
        Unary::Gelu => (12, 0.0, 0.0),
        Unary::Silu => (13, 0.0, 0.0),
        Unary::Sigmoid => (14, 0.0, 0.0),
        Unary::Tanh => (15, 0.0, 0.0),
        Unary::AddScalar(c) => (16, c, 0.0),
        Unary::MulScalar(c) => (17, c, 0.0),
        Unary::DivScalar(c) => (18, c, 0.0),
        Unary::ScalarSub(c) => (19, c, 0.0),
        Unary::ScalarDiv(c) => (20, c, 0.0),
        Unary::PowScalar(p) => (21, p, 0.0),
        Unary::Clamp(lo, hi) => (22, lo, hi),
    }
}

/// `op(x)` in x's arithmetic type, rounded to `out_type` (a float type).
pub fn unary(op: Unary, x: &DeviceBuffer, out_type: DType) -> Result<DeviceBuffer, CudaError> {
    let gpu = x.gpu();
    let out = DeviceBuffer::uninit(gpu, out_type, x.len())?;
    let (code, c0, c1) = unary_code(op);
    let (xp, op_, n) = (x.ptr(), out.ptr(), x.len() as u64);
    let name = format!("unary_{}_{}", type_name(x.dtype()), type_name(out_type));
    launch!(gpu, name, elementwise_config(x.len()); code, c0, c1, xp, op_, n)?;
    Ok(out)
}

/// `dy · op'(x)` given `y = op(x)`.
pub fn unary_backward(
    op: Unary,
    x: &DeviceBuffer,
    y: &DeviceBuffer,
    dy: &DeviceBuffer,
) -> Result<DeviceBuffer, CudaError> {
    same_device("unary_backward", &[x, y, dy])?;
    same_type("unary_backward", &[x, y, dy])?;
    let gpu = x.gpu();
    let dx = DeviceBuffer::uninit(gpu, x.dtype(), x.len())?;
    let (code, c0, c1) = unary_code(op);
    let (xp, yp, dyp, dxp, n) = (x.ptr(), y.ptr(), dy.ptr(), dx.ptr(), x.len() as u64);
    let name = format!("unary_backward_{}", type_name(x.dtype()));
    launch!(gpu, name, elementwise_config(x.len()); code, c0, c1, xp, yp, dyp, dxp, n)?;
    Ok(dx)
}

/// `op(a, b)` with broadcasting (`layout` built from `[a.shape, b.shape]`).
pub fn binary(
    op: Binary,
    a: &DeviceBuffer,
    b: &DeviceBuffer,
    layout: &Broadcast,
) -> Result<DeviceBuffer, CudaError> {
    let code = match op {
        Binary::Add => 0i32,
        Binary::Sub => 1,
        Binary::Mul => 2,
        Binary::Div => 3,
        Binary::Maximum => 4,
        Binary::Minimum => 5,
    };
    broadcast_pair("binary", code, a, b, a.dtype(), layout)
}

/// Kernel `<kernel>_<type of a>` (`binary`, `compare`) with op `code` over two operands of one type
/// broadcast by `layout`, into a new buffer of `out_type`.
fn broadcast_pair(
    kernel: &str,
    code: i32,
    a: &DeviceBuffer,
    b: &DeviceBuffer,
    out_type: DType,
    layout: &Broadcast,
) -> Result<DeviceBuffer, CudaError> {
    same_device(kernel, &[a, b])?;
    same_type(kernel, &[a, b])?;
    let gpu = a.gpu();
    let out = DeviceBuffer::uninit(gpu, out_type, layout.numel())?;
    let l = Layout::of(layout)?;
    let (ap, bp, outp, n) = (a.ptr(), b.ptr(), out.ptr(), layout.numel() as u64);
    let name = format!("{kernel}_{}", type_name(a.dtype()));
    launch!(gpu, name, elementwise_config(layout.numel()); code, l, ap, bp, outp, n)?;
    Ok(out)
}

/// `a <op> b` with broadcasting, as bools.
pub fn compare(
    op: Compare,
    a: &DeviceBuffer,
    b: &DeviceBuffer,
    layout: &Broadcast,
) -> Result<DeviceBuffer, CudaError> {
    let code = match op {
        Compare::Eq => 0i32,
        Compare::Ne => 1,
        Compare::Lt => 2,
        Compare::Le => 3,
        Compare::Gt => 4,
        Compare::Ge => 5,
        Compare::Same => 6,
    };
    broadcast_pair("compare", code, a, b, DType::Bool, layout)
}

/// `if cond { a } else { b }` with broadcasting (`layout` from `[cond, a, b]` shapes).
pub fn select(
    cond: &DeviceBuffer,
    a: &DeviceBuffer,
    b: &DeviceBuffer,
    layout: &Broadcast,
) -> Result<DeviceBuffer, CudaError> {
    same_device("select", &[cond, a, b])?;
    same_type("select", &[a, b])?;
    if cond.dtype() != DType::Bool {
        return Err(CudaError::Unsupported(format!(
            "select: the condition must be bool, got {}",
            cond.dtype()
        )));
    }
    let gpu = a.gpu();
    let out = DeviceBuffer::uninit(gpu, a.dtype(), layout.numel())?;
    let l = Layout::of(layout)?;
    let (cp, ap, bp, outp, n) = (
        cond.ptr(),
        a.ptr(),
        b.ptr(),
        out.ptr(),
        layout.numel() as u64,
    );
    let name = format!("select_{}", bits_name(a.dtype()));
    launch!(gpu, name, elementwise_config(layout.numel()); l, cp, ap, bp, outp, n)?;
    Ok(out)
}

/// `x` at the positions a layout gives for each output element: a broadcast (`layout` from `[x.shape]`).
pub fn broadcast_copy(x: &DeviceBuffer, layout: &Broadcast) -> Result<DeviceBuffer, CudaError> {
    gather_layout(x, &Layout::of(layout)?, layout.numel())
}

fn gather_layout(x: &DeviceBuffer, l: &Layout, n: usize) -> Result<DeviceBuffer, CudaError> {
    let gpu = x.gpu();
    let out = DeviceBuffer::uninit(gpu, x.dtype(), n)?;
    let (l, xp, outp, count) = (*l, x.ptr(), out.ptr(), n as u64);
    let name = format!("gather_layout_{}", bits_name(x.dtype()));
    launch!(gpu, name, elementwise_config(n); l, xp, outp, count)?;
    Ok(out)
}

/// `x` of shape `shape` with its dimensions reordered: output dimension `i` is input dimension `perm[i]`.
pub fn permute(
    x: &DeviceBuffer,
    shape: &[usize],
    perm: &[usize],
) -> Result<DeviceBuffer, CudaError> {
    let mut strides = vec![0; shape.len()];
    let mut stride = 1;
    for d in (0..shape.len()).rev() {
        strides[d] = stride;
        stride *= shape[d];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let out_strides: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
    gather_layout(x, &Layout::new(&out_shape, &[out_strides])?, x.len())
}

/// Copies `rows` runs of `len` elements from `src` (rows `src_row` apart, from `src_off`) into `dst`
/// (rows `dst_row` apart, from `dst_off`), as [`cpu::copy_rows`](crate::cpu::copy_rows).
#[allow(clippy::too_many_arguments)]
pub fn copy_rows(
    src: &DeviceBuffer,
    src_row: usize,
    src_off: usize,
    dst: &mut DeviceBuffer,
    dst_row: usize,
    dst_off: usize,
    len: usize,
    rows: usize,
) -> Result<(), CudaError> {
    same_device("copy_rows", &[src, dst])?;
    let gpu = src.gpu().clone();
    let (sp, dp) = (src.ptr(), dst.ptr());
    let (sr, so, dr, d_off, l, r) = (
        src_row as u64,
        src_off as u64,
        dst_row as u64,
        dst_off as u64,
        len as u64,
        rows as u64,
    );
    let name = format!("copy_rows_{}", bits_name(src.dtype()));
    launch!(gpu, name, elementwise_config(len * rows); sp, sr, so, dp, dr, d_off, l, r)
}

/// `op` over the middle dimension of `d`, into `out_type`.
pub fn reduce(
    op: Reduce,
    x: &DeviceBuffer,
    d: Dim3,
    out_type: DType,
) -> Result<DeviceBuffer, CudaError> {
    let gpu = x.gpu();
    let out = DeviceBuffer::uninit(gpu, out_type, d.outer * d.inner)?;
    let code = match op {
        Reduce::Sum => 0i32,
        Reduce::Mean => 1,
        Reduce::Max => 2,
        Reduce::Min => 3,
    };
    let (dd, xp, outp) = (DeviceDim3::from(d), x.ptr(), out.ptr());
    let name = format!("reduce_{}_{}", type_name(x.dtype()), type_name(out_type));
    launch!(gpu, name, rows_config(d.outer * d.inner); code, dd, xp, outp)?;
    Ok(out)
}

/// Softmax (or log-softmax with `log`) over the middle dimension of `d`, into `out_type`.
pub fn softmax(
    x: &DeviceBuffer,
    d: Dim3,
    out_type: DType,
    log: bool,
) -> Result<DeviceBuffer, CudaError> {
    let gpu = x.gpu();
    let out = DeviceBuffer::uninit(gpu, out_type, x.len())?;
    let (log_out, dd, xp, outp) = (log as i32, DeviceDim3::from(d), x.ptr(), out.ptr());
    let name = format!("softmax_{}_{}", type_name(x.dtype()), type_name(out_type));
    launch!(gpu, name, rows_config(d.outer * d.inner); log_out, dd, xp, outp)?;
    Ok(out)
}

/// The gradient of softmax (log-softmax with `log`) given its output `y` and the output's gradient.
pub fn softmax_backward(
    y: &DeviceBuffer,
    dy: &DeviceBuffer,
    d: Dim3,
    log: bool,
) -> Result<DeviceBuffer, CudaError> {
    same_device("softmax_backward", &[y, dy])?;
    let gpu = y.gpu();
    let dx = DeviceBuffer::uninit(gpu, y.dtype(), y.len())?;
    let (log_out, dd, yp, dyp, dxp) =
        (log as i32, DeviceDim3::from(d), y.ptr(), dy.ptr(), dx.ptr());
    let name = format!("softmax_backward_{}", type_name(y.dtype()));
    launch!(gpu, name, rows_config(d.outer * d.inner); log_out, dd, yp, dyp, dxp).map(|()| dx)
}

/// The arithmetic type of an element type (f64 for f64, else f32): the type of the norms' statistics.
pub(super) fn acc_type(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Layer norm (no affine) of rows of `cols` elements into `out_type`, with each row's mean and
/// 1/std (in the arithmetic type) for the backward pass: `(out, mean, rstd)`.
pub fn layer_norm(
    x: &DeviceBuffer,
    cols: usize,
    eps: f64,
    out_type: DType,
) -> Result<(DeviceBuffer, DeviceBuffer, DeviceBuffer), CudaError> {
    let gpu = x.gpu();
    let rows = x.len().checked_div(cols).unwrap_or(0);
    let out = DeviceBuffer::uninit(gpu, out_type, x.len())?;
    let mean = DeviceBuffer::uninit(gpu, acc_type(x.dtype()), rows)?;
    let rstd = DeviceBuffer::uninit(gpu, acc_type(x.dtype()), rows)?;
    let (xp, outp, mp, rp, r, c) = (
        x.ptr(),
        out.ptr(),
        mean.ptr(),
        rstd.ptr(),
        rows as u64,
        cols as u64,
    );
    let name = format!(
        "layer_norm_{}_{}",
        type_name(x.dtype()),
        type_name(out_type)
    );
    launch!(gpu, name, rows_config(rows); xp, outp, mp, rp, r, c, eps)?;
    Ok((out, mean, rstd))
}

/// RMS norm (no affine) of rows of `cols` elements into `out_type`, with each row's 1/rms: `(out, rstd)`.
pub fn rms_norm(
    x: &DeviceBuffer,
    cols: usize,
    eps: f64,
    out_type: DType,
) -> Result<(DeviceBuffer, DeviceBuffer), CudaError> {
    let gpu = x.gpu();
    let rows = x.len().checked_div(cols).unwrap_or(0);
    let out = DeviceBuffer::uninit(gpu, out_type, x.len())?;
    let rstd = DeviceBuffer::uninit(gpu, acc_type(x.dtype()), rows)?;
    let (xp, outp, rp, r, c) = (x.ptr(), out.ptr(), rstd.ptr(), rows as u64, cols as u64);
    let name = format!("rms_norm_{}_{}", type_name(x.dtype()), type_name(out_type));
    launch!(gpu, name, rows_config(rows); xp, outp, rp, r, c, eps)?;
    Ok((out, rstd))
}

/// The input gradient of [`layer_norm`] (with `mean`) or [`rms_norm`] (without).
pub fn norm_backward(
    x: &DeviceBuffer,
    mean: Option<&DeviceBuffer>,
    rstd: &DeviceBuffer,
    dy: &DeviceBuffer,
    cols: usize,
) -> Result<DeviceBuffer, CudaError> {
    same_device("norm_backward", &[x, rstd, dy])?;
    let gpu = x.gpu();
    let rows = rstd.len();
    let dx = DeviceBuffer::uninit(gpu, x.dtype(), x.len())?;
    let (xp, mp, rp, dyp, dxp, r, c) = (
        x.ptr(),
        mean.map_or(0u64, DeviceBuffer::ptr),
        rstd.ptr(),
        dy.ptr(),
        dx.ptr(),
        rows as u64,
        cols as u64,
    );
    let name = format!("norm_backward_{}", type_name(x.dtype()));
    launch!(gpu, name, rows_config(rows); xp, mp, rp, dyp, dxp, r, c).map(|()| dx)
}

/// Multiplies `grad` by `inv_scale` in place and returns whether any element was NaN or infinite
/// before (the loss scaler's unscale and check, one pass; waits for the flag).
pub fn unscale_and_check(grad: &mut DeviceBuffer, inv_scale: f64) -> Result<bool, CudaError> {
    let gpu = grad.gpu().clone();
    let found = DeviceBuffer::zeros(&gpu, DType::F32, 1)?; // an int flag (4 bytes)
    let (gp, n, fp) = (grad.ptr(), grad.len() as u64, found.ptr());
    let name = format!("unscale_and_check_{}", type_name(grad.dtype()));
    launch!(gpu, name, elementwise_config(grad.len()); gp, n, inv_scale, fp)?;
    Ok(found.download::<f32>()?[0].to_bits() != 0)
}

/// One Adam/AdamW step on f32 buffers, as [`cpu::adam_step`](crate::cpu::adam_step).
pub fn adam_step(
    param: &mut DeviceBuffer,
    grad: &DeviceBuffer,
    m: &mut DeviceBuffer,
    v: &mut DeviceBuffer,
    hp: &AdamStep,
) -> Result<(), CudaError> {
    same_device("adam_step", &[param, grad, m, v])?;
    let n = param.len();
    assert!(
        grad.len() == n && m.len() == n && v.len() == n,
        "adam_step: buffer lengths differ (param {n}, grad {}, m {}, v {})",
        grad.len(),
        m.len(),
        v.len()
    );
    let gpu = param.gpu().clone();
    let AdamConsts {
        beta1,
        beta2,
        eps,
        step_size,
        inv_bias2_sqrt,
        l2,
        decay,
    } = AdamConsts::of(hp);
    let (wp, gp, mp, vp, n) = (
        param.ptr(),
        grad.ptr(),
        m.ptr(),
        v.ptr(),
        param.len() as u64,
    );
    launch!(gpu, "adam_step", elementwise_config(param.len());
        wp, gp, mp, vp, n, beta1, beta2, eps, step_size, inv_bias2_sqrt, l2, decay)
}

/// One SGD step on f32 buffers, as [`cpu::sgd_step`](crate::cpu::sgd_step).
pub fn sgd_step(
    param: &mut DeviceBuffer,
    grad: &DeviceBuffer,
    buffer: Option<&mut DeviceBuffer>,
    first_step: bool,
    hp: &SgdStep,
) -> Result<(), CudaError> {
    same_device("sgd_step", &[param, grad])?;
    let n = param.len();
    let momentum = buffer.as_ref().map_or(n, |b| b.len());
    assert!(
        grad.len() == n && momentum == n,
        "sgd_step: buffer lengths differ (param {n}, grad {}, momentum {momentum})",
        grad.len()
    );
    let gpu = param.gpu().clone();
    let (lr, wd, mu, damp) = (
        hp.lr as f32,
        hp.weight_decay as f32,
        hp.momentum as f32,
        hp.dampening as f32,
    );
    let (nesterov, first) = (hp.nesterov as i32, first_step as i32);
    let (wp, gp, bp, n) = (
        param.ptr(),
        grad.ptr(),
        buffer.map_or(0u64, |b| b.ptr()),
        param.len() as u64,
    );
    launch!(gpu, "sgd_step", elementwise_config(param.len());
        wp, gp, bp, n, lr, wd, mu, damp, nesterov, first)
}

/// Stochastic rounding of f32 `values` to bf16 in place, as
/// [`cpu::stochastic_round_bf16`](crate::cpu::stochastic_round_bf16): the same random bits for the same
/// seed, counter and element.
pub fn stochastic_round_bf16(
    values: &mut DeviceBuffer,
    seed: u64,
    counter: u64,
) -> Result<(), CudaError> {
    assert_eq!(
        values.dtype(),
        DType::F32,
        "stochastic_round_bf16: the values are f32"
    );
    let gpu = values.gpu().clone();
    let (vp, n) = (values.ptr(), values.len() as u64);
    launch!(gpu, "stochastic_round_bf16", elementwise_config(values.len()); vp, n, seed, counter)
}

/// Kahan-compensated rounding of the updated f32 weights `new` (previously `old`) to the type of
/// `compensation` (bf16 or f16), which carries what each rounding dropped, as
/// [`cpu::kahan_round_through`](crate::cpu::kahan_round_through).
pub fn kahan_round_through(
    old: &DeviceBuffer,
    new: &mut DeviceBuffer,
    compensation: &mut DeviceBuffer,
) -> Result<(), CudaError> {
    same_device("kahan_round_through", &[old, new, compensation])?;
    let n = new.len();
    assert!(
        old.len() == n && compensation.len() == n,
        "kahan_round_through: {} old values, {n} new values and {} compensations differ",
        old.len(),
        compensation.len()
    );
    assert!(
        old.dtype() == DType::F32 && new.dtype() == DType::F32,
        "kahan_round_through: the weights are f32"
    );
    let name = match compensation.dtype() {
        DType::BF16 => "kahan_round_bf16",
        DType::F16 => "kahan_round_f16",
        other => {
            return Err(CudaError::Unsupported(format!(
                "kahan_round_through: compensation in {other} (bf16 or f16)"
            )));
        }
    };
    let gpu = new.gpu().clone();
    let (op, np, cp, count) = (old.ptr(), new.ptr(), compensation.ptr(), n as u64);
    launch!(gpu, name, elementwise_config(n); op, np, cp, count)
}
