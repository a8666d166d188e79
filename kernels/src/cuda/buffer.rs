//! Device memory holding elements of one type.

use super::{CudaError, Gpu};
use crate::{DType, Elem};
use cudarc::driver::{CudaSlice, DevicePtr};
use std::sync::Arc;

/// Elements of one type on one device. The element type is a run-time tag here; the runtime's typed
/// tensors keep it static.
pub struct DeviceBuffer {
    gpu: Arc<Gpu>,
    bytes: CudaSlice<u8>,
    dtype: DType,
    len: usize,
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceBuffer(cuda:{}, {} × {})",
            self.gpu.ordinal(),
            self.len,
            self.dtype
        )
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // cudarc frees the memory (right after this) in whatever context is current on the dropping
        // thread; make it this buffer's. A failure here leaves nothing better to do than the free.
        let _ = self.gpu.stream().context().bind_to_thread();
    }
}

/// The bytes of a slice of elements (every element type is plain data without padding).
fn as_bytes<E: Elem>(data: &[E]) -> &[u8] {
    // SAFETY: the element types are f32, f64, bf16, f16, i64 and bool: no padding, any byte readable.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) }
}

impl DeviceBuffer {
    /// `len` elements of `dtype` with unspecified values, for a kernel that writes every one.
    pub fn uninit(gpu: &Arc<Gpu>, dtype: DType, len: usize) -> Result<Self, CudaError> {
        // At least one byte: a zero-length allocation has no address to pass to a kernel.
        let bytes = (len * dtype.size_in_bytes()).max(1);
        // SAFETY: the bytes are only read after a kernel or copy has written them.
        let bytes = unsafe { gpu.stream().alloc::<u8>(bytes) }?;
        Ok(DeviceBuffer {
            gpu: gpu.clone(),
            bytes,
            dtype,
            len,
        })
    }

    /// `len` zeros (`false`) of `dtype`.
    pub fn zeros(gpu: &Arc<Gpu>, dtype: DType, len: usize) -> Result<Self, CudaError> {
        let mut buffer = Self::uninit(gpu, dtype, len)?;
        gpu.stream().memset_zeros(&mut buffer.bytes)?;
        Ok(buffer)
    }

    /// A copy of `data` on the device.
    pub fn upload<E: Elem>(gpu: &Arc<Gpu>, data: &[E]) -> Result<Self, CudaError> {
        Self::upload_raw(gpu, E::DTYPE, as_bytes(data), data.len())
    }

    /// A copy of `bytes` on the device, as a [`DType::U8`] buffer (the codes of 8-bit states).
    pub fn upload_bytes(gpu: &Arc<Gpu>, bytes: &[u8]) -> Result<Self, CudaError> {
        Self::upload_raw(gpu, DType::U8, bytes, bytes.len())
    }

    fn upload_raw(
        gpu: &Arc<Gpu>,
        dtype: DType,
        bytes: &[u8],
        len: usize,
    ) -> Result<Self, CudaError> {
        let mut buffer = Self::uninit(gpu, dtype, len)?;
        if !bytes.is_empty() {
            gpu.stream()
                .memcpy_htod(bytes, &mut buffer.bytes.slice_mut(..bytes.len()))?;
        }
        Ok(buffer)
    }

    /// The bytes of a [`DType::U8`] buffer copied to the host (waits for the ops that write them).
    ///
    /// Panics if the buffer holds another type (a bug in the caller).
    pub fn download_bytes(&self) -> Result<Vec<u8>, CudaError> {
        assert_eq!(
            self.dtype,
            DType::U8,
            "download_bytes: a {} buffer",
            self.dtype
        );
        let mut out = vec![0u8; self.len];
        if self.len > 0 {
            self.gpu
                .stream()
                .memcpy_dtoh(&self.bytes.slice(..self.len), &mut out)?;
            self.gpu.synchronize()?;
        }
        Ok(out)
    }

    /// The elements copied to the host (waits for the ops that write them).
    ///
    /// Panics if `E` is not the buffer's element type (a bug in the caller).
    pub fn download<E: Elem>(&self) -> Result<Vec<E>, CudaError> {
        assert_eq!(E::DTYPE, self.dtype, "download: element type mismatch");
        let mut out = vec![E::default(); self.len];
        if self.len > 0 {
            let len = self.len * self.dtype.size_in_bytes();
            // SAFETY: as in `as_bytes`; every byte pattern the device wrote is a valid element (bool
            // buffers only ever hold 0 or 1, written by the kernels or uploaded from Rust bools).
            let host =
                unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), len) };
            self.gpu
                .stream()
                .memcpy_dtoh(&self.bytes.slice(..len), host)?;
            self.gpu.synchronize()?;
        }
        Ok(out)
    }

    /// A copy on the same device.
    pub fn try_clone(&self) -> Result<Self, CudaError> {
        let mut copy = Self::uninit(&self.gpu, self.dtype, self.len)?;
        self.gpu
            .stream()
            .memcpy_dtod(&self.bytes, &mut copy.bytes)?;
        Ok(copy)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device the buffer is on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The device address, for a kernel argument. Ops are ordered by the device's one stream, so the
    /// address needs no guard beyond the buffer being alive while the op is queued (cudarc frees device
    /// memory in stream order).
    pub(crate) fn ptr(&self) -> u64 {
        let (ptr, _record) = self.bytes.device_ptr(self.gpu.stream());
        ptr
    }
}
