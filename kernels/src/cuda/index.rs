//! Device ops that index: gather, index_select and their adjoints, arg reductions, scans, convolution
//! and convolution columns. Indices must be in range (the runtime checks them on the host).

use super::device::{elementwise_config, launch};
use super::ops::{DeviceDim3, acc_type, bits_name, same_device, same_type, type_name};
use super::{CudaError, DeviceBuffer, cast};
use crate::DType;
use crate::cpu::{Conv2dGeometry, Dim3};
use cudarc::driver::DeviceRepr;

fn expect_index(op: &str, idx: &DeviceBuffer) -> Result<(), CudaError> {
    if idx.dtype() == DType::I64 {
        Ok(())
    } else {
        Err(CudaError::Unsupported(format!(
            "{op}: indices must be i64, got {}",
            idx.dtype()
        )))
    }
}

/// `out[(o, t, i)] = x[(o, idx[(o, t, i)], i)]` over the middle dimension of `d` (`idx_size` indices per
/// line), as [`cpu::gather`](crate::cpu::gather).
pub fn gather(
    x: &DeviceBuffer,
    d: Dim3,
    idx: &DeviceBuffer,
    idx_size: usize,
) -> Result<DeviceBuffer, CudaError> {
    same_device("gather", &[x, idx])?;
    expect_index("gather", idx)?;
    let gpu = x.gpu();
    let n = d.outer * idx_size * d.inner;
    let out = DeviceBuffer::uninit(gpu, x.dtype(), n)?;
    let (dd, xp, ip, t, op) = (
        DeviceDim3::from(d),
        x.ptr(),
        idx.ptr(),
        idx_size as u64,
        out.ptr(),
    );
    let name = format!("gather_{}", bits_name(x.dtype()));
    launch!(gpu, name, elementwise_config(n); dd, xp, ip, t, op)?;
    Ok(out)
}

/// The slices of `x` at `idx` along the middle dimension of `d`, as
/// [`cpu::index_select`](crate::cpu::index_select).
pub fn index_select(
    x: &DeviceBuffer,
    d: Dim3,
    idx: &DeviceBuffer,
) -> Result<DeviceBuffer, CudaError> {
    same_device("index_select", &[x, idx])?;
    expect_index("index_select", idx)?;
    let gpu = x.gpu();
    let n = d.outer * idx.len() * d.inner;
    let out = DeviceBuffer::uninit(gpu, x.dtype(), n)?;
    let (dd, xp, ip, count, op) = (
        DeviceDim3::from(d),
        x.ptr(),
        idx.ptr(),
        idx.len() as u64,
        out.ptr(),
    );
    let name = format!("index_select_{}", bits_name(x.dtype()));
    launch!(gpu, name, elementwise_config(n); dd, xp, ip, count, op)?;
    Ok(out)
}

/// `base` plus `src` added at the positions of `kernel` (`scatter_add` or `index_add`), accumulated in
/// f32 (f64 for f64) and rounded once. Atomic additions: the last bits may vary between runs.
fn add_at(
    kernel: &str,
    base: &DeviceBuffer,
    d: Dim3,
    idx: &DeviceBuffer,
    count: usize,
    src: &DeviceBuffer,
) -> Result<DeviceBuffer, CudaError> {
    same_device(kernel, &[base, idx, src])?;
    same_type(kernel, &[base, src])?;
    expect_index(kernel, idx)?;
    let gpu = base.gpu();
    let acc = cast(base, acc_type(base.dtype()))?;
    let (dd, ap, ip, c, sp) = (
        DeviceDim3::from(d),
        acc.ptr(),
        idx.ptr(),
        count as u64,
        src.ptr(),
    );
    let name = format!("{kernel}_{}", type_name(src.dtype()));
    launch!(gpu, name, elementwise_config(src.len()); dd, ap, ip, c, sp)?;
    cast(&acc, base.dtype())
}

/// `base` with `src` added at `idx` along the middle dimension of `d`, as
/// [`cpu::scatter_add`](crate::cpu::scatter_add).
pub fn scatter_add(
    base: &DeviceBuffer,
    d: Dim3,
    idx: &DeviceBuffer,
    src: &DeviceBuffer,
    idx_size: usize,
) -> Result<DeviceBuffer, CudaError> {
    add_at("scatter_add", base, d, idx, idx_size, src)
}

/// `base` with the slices of `src` added at `idx` along the middle dimension of `d`, as
/// [`cpu::index_add`](crate::cpu::index_add).
pub fn index_add(
    base: &DeviceBuffer,
    d: Dim3,
    idx: &DeviceBuffer,
    src: &DeviceBuffer,
) -> Result<DeviceBuffer, CudaError> {
    add_at("index_add", base, d, idx, idx.len(), src)
}

/// Index of the first maximum (`max`) or minimum over the middle dimension of `d` (NaN wins).
pub fn arg_reduce(max: bool, x: &DeviceBuffer, d: Dim3) -> Result<DeviceBuffer, CudaError> {
    let gpu = x.gpu();
    let out = DeviceBuffer::uninit(gpu, DType::I64, d.outer * d.inner)?;
    let (m, dd, xp, op) = (max as i32, DeviceDim3::from(d), x.ptr(), out.ptr());
    let name = format!("arg_reduce_{}", type_name(x.dtype()));
    launch!(gpu, name, elementwise_config(d.outer * d.inner); m, dd, xp, op)?;
    Ok(out)
}

/// Running sums over the middle dimension of `d` (from the end with `reverse`), accumulated in f32.
pub fn cumsum(x: &DeviceBuffer, d: Dim3, reverse: bool) -> Result<DeviceBuffer, CudaError> {
    let gpu = x.gpu();
    let out = DeviceBuffer::uninit(gpu, x.dtype(), x.len())?;
    let (r, dd, xp, op) = (reverse as i32, DeviceDim3::from(d), x.ptr(), out.ptr());
    let name = format!("cumsum_{}", type_name(x.dtype()));
    launch!(gpu, name, elementwise_config(d.outer * d.inner); r, dd, xp, op)?;
    Ok(out)
}

/// `ln Σ exp` over the middle dimension of `d`, in f32 (f64 for f64), into `out_type`.
pub fn logsumexp(x: &DeviceBuffer, d: Dim3, out_type: DType) -> Result<DeviceBuffer, CudaError> {
    let gpu = x.gpu();
    let out = DeviceBuffer::uninit(gpu, acc_type(x.dtype()), d.outer * d.inner)?;
    let (dd, xp, op) = (DeviceDim3::from(d), x.ptr(), out.ptr());
    let name = format!("logsumexp_{}", type_name(x.dtype()));
    launch!(gpu, name, elementwise_config(d.outer * d.inner); dd, xp, op)?;
    cast(&out, out_type)
}

/// `ConvGeometry` of `kernels.cu`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct DeviceConv([u64; 11]);

// SAFETY: `#[repr(C)]` plain data matching the kernel-side struct of eleven u64 fields.
unsafe impl DeviceRepr for DeviceConv {}

impl From<&Conv2dGeometry> for DeviceConv {
    fn from(g: &Conv2dGeometry) -> Self {
        let fields = [
            g.channels,
            g.height,
            g.width,
            g.kernel_h,
            g.kernel_w,
            g.stride_h,
            g.stride_w,
            g.pad_h,
            g.pad_w,
            g.out_h(),
            g.out_w(),
        ];
        DeviceConv(fields.map(|v| v as u64))
    }
}

/// The column matrices of `n` images (`[n, c, h, w]`), as [`cpu::im2col`](crate::cpu::im2col) per image.
pub fn im2col(x: &DeviceBuffer, g: &Conv2dGeometry, n: usize) -> Result<DeviceBuffer, CudaError> {
    let gpu = x.gpu();
    let len = n * g.col_rows() * g.col_cols();
    let cols = DeviceBuffer::uninit(gpu, x.dtype(), len)?;
    let (geom, count, xp, cp) = (DeviceConv::from(g), n as u64, x.ptr(), cols.ptr());
    let name = format!("im2col_{}", bits_name(x.dtype()));
    launch!(gpu, name, elementwise_config(len); geom, count, xp, cp)?;
    Ok(cols)
}

/// The adjoint of [`im2col`]: each input element's sum of the column entries that read it.
pub fn col2im(
    cols: &DeviceBuffer,
    g: &Conv2dGeometry,
    n: usize,
) -> Result<DeviceBuffer, CudaError> {
    let gpu = cols.gpu();
    let len = n * g.channels * g.height * g.width;
    let dx = DeviceBuffer::uninit(gpu, cols.dtype(), len)?;
    let (geom, count, cp, dp) = (DeviceConv::from(g), n as u64, cols.ptr(), dx.ptr());
    let name = format!("col2im_{}", type_name(cols.dtype()));
    launch!(gpu, name, elementwise_config(len); geom, count, cp, dp)?;
    Ok(dx)
}
