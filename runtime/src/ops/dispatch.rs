//! Running an op where its inputs are: the CPU kernels on host slices, or the CUDA kernels on device
//! buffers (feature `cuda`). [`on_device!`] is the one place ops choose; see
//! [`common_device`](crate::device::common_device) for the rule on mixed devices.

use crate::device::Device;
use crate::element::Element;
use crate::tensor::Tensor;

/// An op's input as far as choosing a device goes: any tensor, whatever its element type.
pub(crate) trait Operand {
    fn device(&self) -> Device;
    fn numel(&self) -> usize;
    /// The input on `device` (a one-element CPU input is copied there).
    #[cfg(feature = "cuda")]
    fn buffer_on(&self, op: &str, device: Device) -> Held<'_>;
}

impl<E: Element> Operand for Tensor<E> {
    fn device(&self) -> Device {
        Tensor::device(self)
    }

    fn numel(&self) -> usize {
        Tensor::numel(self)
    }

    #[cfg(feature = "cuda")]
    fn buffer_on(&self, op: &str, device: Device) -> Held<'_> {
        match self.storage().buffer() {
            Some(buffer) => Held::Borrowed(buffer),
            None => {
                let Device::Cuda(n) = device else {
                    unreachable!("only device inputs are asked for")
                };
                let gpu = expect_cuda(op, device, amp_kernels::cuda::gpu(n));
                Held::Owned(expect_cuda(
                    op,
                    device,
                    amp_kernels::cuda::DeviceBuffer::upload(&gpu, self.data()),
                ))
            }
        }
    }
}

impl<T: Operand> Operand for &T {
    fn device(&self) -> Device {
        (**self).device()
    }

    fn numel(&self) -> usize {
        (**self).numel()
    }

    #[cfg(feature = "cuda")]
    fn buffer_on(&self, op: &str, device: Device) -> Held<'_> {
        (**self).buffer_on(op, device)
    }
}

/// A device buffer borrowed from a tensor or copied there for one op.
#[cfg(feature = "cuda")]
pub(crate) enum Held<'a> {
    Borrowed(&'a amp_kernels::cuda::DeviceBuffer),
    Owned(amp_kernels::cuda::DeviceBuffer),
}

#[cfg(feature = "cuda")]
impl std::ops::Deref for Held<'_> {
    type Target = amp_kernels::cuda::DeviceBuffer;
    fn deref(&self) -> &Self::Target {
        match self {
            Held::Borrowed(b) => b,
            Held::Owned(b) => b,
        }
    }
}

/// The device the inputs share (or a panic naming the op and the devices).
#[track_caller]
pub(crate) fn device_of(op: &str, inputs: &[&dyn Operand]) -> Device {
    // No allocation: this runs for every op.
    crate::device::common_device(op, inputs.iter().map(|t| (t.device(), t.numel())))
}

/// The value of a device op, or a panic naming the op, the device and the backend's error (a device that
/// fails mid-op, such as running out of memory, is not recoverable by the op's caller).
#[cfg(feature = "cuda")]
#[track_caller]
pub(crate) fn expect_cuda<T>(
    op: &str,
    device: Device,
    result: Result<T, amp_kernels::cuda::CudaError>,
) -> T {
    result.unwrap_or_else(|e| panic!("{op} on {device}: {e}"))
}

/// Runs an op on the device of its inputs and returns the output [`Storage`](crate::device::Storage):
///
/// ```text
/// on_device!("add", [a, b],
///     cpu => { let mut out = output_buffer(n); cpu::binary(op, a.data(), b.data(), &mut out, &l); out },
///     cuda [a, b] => cuda::binary(op, a, b, &l))
/// ```
///
/// `cpu` is an expression giving the host output `Vec`; `cuda` binds the inputs' device buffers (in the
/// order given) and gives a `Result<DeviceBuffer, CudaError>`. Without the `cuda` feature only the CPU
/// branch exists.
macro_rules! on_device {
    ($op:expr, [$($input:expr),+ $(,)?], cpu => $cpu:expr, cuda [$($buf:ident),+] => $gpu:expr $(,)?) => {{
        let operands: &[&dyn $crate::ops::dispatch::Operand] = &[$(&$input),+];
        match $crate::ops::dispatch::device_of($op, operands) {
            $crate::device::Device::Cpu => $crate::device::Storage::Cpu($cpu),
            #[cfg(feature = "cuda")]
            device => {
                let held: Vec<_> = operands.iter().map(|t| t.buffer_on($op, device)).collect();
                let [$($buf),+] = &held[..] else {
                    unreachable!("one buffer per operand")
                };
                $crate::device::Storage::cuda($crate::ops::dispatch::expect_cuda($op, device, $gpu))
            }
            #[cfg(not(feature = "cuda"))]
            device => unreachable!("{device} tensors cannot exist without the `cuda` feature"),
        }
    }};
}
pub(crate) use on_device;
