//! Where tensors live: [`Device`], the storage behind a tensor on each kind of device, and moving
//! tensors between devices.
//!
//! Ops run where their inputs are. An op whose inputs are on different devices panics naming the op and
//! the devices (as PyTorch raises), except that a one-element CPU tensor (a scalar) is copied to the other
//! operand's device, as PyTorch allows for 0-dimensional CPU tensors.

use crate::autograd::grad_if;
use crate::element::Element;
use crate::tensor::Tensor;
use std::fmt;
use std::sync::Arc;

#[cfg(feature = "cuda")]
use amp_kernels::cuda::{self, DeviceBuffer};

/// Where a tensor's data lives.
///
/// `Device::Cuda(n)` is the n-th NVIDIA GPU; it needs the `cuda` feature, and
/// [`Tensor::to_device`] returns an error without it or without a driver or device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Device {
    /// Host memory, computed by the CPU kernels.
    Cpu,
    /// The NVIDIA GPU with this ordinal, computed by CUDA kernels and cuBLAS (feature `cuda`).
    Cuda(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Why a device could not be used or reached.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// amp was built without its `cuda` feature.
    #[error("{0} needs amp's `cuda` feature (build with `--features cuda`)")]
    NotCompiled(Device),
    /// A device name that is not `cpu`, `cuda` or `cuda:N`.
    #[error("unknown device {0:?}: expected cpu, cuda or cuda:N")]
    Unknown(String),
    /// The CUDA backend could not serve the request: no driver, no such device, a missing library, or an
    /// error the driver reported.
    #[error("{device}: {message}")]
    Cuda {
        /// The device asked for.
        device: Device,
        /// What went wrong, from the backend.
        message: String,
    },
}

impl Device {
    /// `Device::Cuda(ordinal)` once the device is known to work (driver, device, NVRTC and cuBLAS found,
    /// kernels compiled), or why it does not.
    ///
    /// ```
    /// use amp_runtime::Device;
    /// match Device::cuda(0) {
    ///     Ok(gpu) => println!("training on {gpu}"),
    ///     Err(e) => println!("staying on the CPU: {e}"),
    /// }
    /// ```
    pub fn cuda(ordinal: usize) -> Result<Device, DeviceError> {
        let device = Device::Cuda(ordinal);
        #[cfg(feature = "cuda")]
        {
            cuda::gpu(ordinal).map_err(|e| cuda_error(device, e))?;
            Ok(device)
        }
        #[cfg(not(feature = "cuda"))]
        Err(DeviceError::NotCompiled(device))
    }

    /// The number of CUDA devices that can be used (0 without the feature, a driver or a device).
    pub fn cuda_count() -> usize {
        #[cfg(feature = "cuda")]
        return cuda::device_count().unwrap_or(0);
        #[cfg(not(feature = "cuda"))]
        0
    }
}

impl std::str::FromStr for Device {
    type Err = DeviceError;

    /// Parses `cpu`, `cuda` (device 0) or `cuda:N`, as PyTorch names devices. Parsing does not check
    /// that the device exists: [`Device::cuda`] does.
    ///
    /// ```
    /// use amp_runtime::Device;
    /// assert_eq!("cuda:1".parse::<Device>().unwrap(), Device::Cuda(1));
    /// assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
    /// assert!("gpu".parse::<Device>().is_err());
    /// ```
    fn from_str(name: &str) -> Result<Device, DeviceError> {
        let unknown = || DeviceError::Unknown(name.to_string());
        match name.trim() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            other => {
                let ordinal = other.strip_prefix("cuda:").ok_or_else(unknown)?;
                ordinal.parse().map(Device::Cuda).map_err(|_| unknown())
            }
        }
    }
}

#[cfg(feature = "cuda")]
pub(crate) fn cuda_error(device: Device, e: cuda::CudaError) -> DeviceError {
    DeviceError::Cuda {
        device,
        message: e.to_string(),
    }
}

/// The buffer behind one or more tensors (reshapes share it). When the last tensor using a host buffer is
/// dropped, the buffer goes back to the thread's pool for the next op ([`crate::pool`]).
#[derive(Debug)]
pub(crate) enum Storage<E: Element> {
    Cpu(Vec<E>),
    #[cfg(feature = "cuda")]
    Cuda(DeviceBuffer, std::marker::PhantomData<E>),
}

impl<E: Element> Drop for Storage<E> {
    fn drop(&mut self) {
        #[allow(irrefutable_let_patterns)] // the only variant without the `cuda` feature
        if let Storage::Cpu(v) = self {
            crate::pool::give(std::mem::take(v));
        }
    }
}

impl<E: Element> Storage<E> {
    /// Storage on a device, from a buffer of `E`.
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda(buffer: DeviceBuffer) -> Self {
        debug_assert_eq!(buffer.dtype(), E::DTYPE);
        Storage::Cuda(buffer, std::marker::PhantomData)
    }

    pub(crate) fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            Storage::Cuda(b, _) => Device::Cuda(b.gpu().ordinal()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Storage::Cpu(v) => v.len(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(b, _) => b.len(),
        }
    }

    /// Moves a host buffer out, leaving an empty one (a device buffer is copied to the host).
    pub(crate) fn take_vec(&mut self) -> Vec<E> {
        match self {
            Storage::Cpu(v) => std::mem::take(v),
            #[cfg(feature = "cuda")]
            Storage::Cuda(..) => self.to_host_vec().unwrap_or_else(|e| panic!("{e}")),
        }
    }

    /// The elements of host storage; see [`Tensor::data`] for device storage.
    #[track_caller]
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub(crate) fn host_slice(&self, shape: &[usize]) -> &[E] {
        match self {
            Storage::Cpu(v) => v,
            #[cfg(feature = "cuda")]
            Storage::Cuda(b, _) => panic!(
                "this op has no CUDA kernel yet: its input of shape {shape:?} is on cuda:{}; move it \
                 to the CPU first with `.to_device(Device::Cpu)`",
                b.gpu().ordinal()
            ),
        }
    }

    /// The elements copied to a host vector.
    pub(crate) fn to_host_vec(&self) -> Result<Vec<E>, DeviceError> {
        match self {
            Storage::Cpu(v) => Ok(v.clone()),
            #[cfg(feature = "cuda")]
            Storage::Cuda(b, _) => b
                .download::<E>()
                .map_err(|e| cuda_error(Device::Cuda(b.gpu().ordinal()), e)),
        }
    }

    /// The device buffer of device storage.
    #[cfg(feature = "cuda")]
    pub(crate) fn buffer(&self) -> Option<&DeviceBuffer> {
        match self {
            Storage::Cuda(b, _) => Some(b),
            Storage::Cpu(_) => None,
        }
    }
}

/// Copies of `data` on `device`.
fn store_on<E: Element>(data: &Storage<E>, device: Device) -> Result<Storage<E>, DeviceError> {
    match device {
        Device::Cpu => Ok(Storage::Cpu(data.to_host_vec()?)),
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => {
            let gpu = cuda::gpu(n).map_err(|e| cuda_error(device, e))?;
            let upload = |host: &[E]| DeviceBuffer::upload(&gpu, host);
            let buffer = match data {
                Storage::Cpu(v) => upload(v),
                Storage::Cuda(b, _) if b.gpu().ordinal() == n => b.try_clone(),
                Storage::Cuda(..) => upload(&data.to_host_vec()?),
            };
            Ok(Storage::cuda(buffer.map_err(|e| cuda_error(device, e))?))
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(DeviceError::NotCompiled(device)),
    }
}

impl<E: Element> Tensor<E> {
    /// A copy of this tensor on `device` (the tensor itself if it is already there), or why it could not
    /// be made: no `cuda` feature, driver or device, or a failed copy. The copy is recorded for
    /// [`backward`](Tensor::backward): the gradient flows back to this tensor's device.
    ///
    /// ```
    /// use amp_runtime::{Device, Tensor};
    /// let x = Tensor::<f32>::from_vec(vec![1.0, 2.0], [2]);
    /// assert_eq!(x.to_device(Device::Cpu).unwrap().to_vec(), vec![1.0, 2.0]);
    /// // Without a GPU (or the `cuda` feature) asking for one is an error, not a panic.
    /// if Device::cuda_count() == 0 {
    ///     assert!(x.to_device(Device::Cuda(0)).is_err());
    /// }
    /// ```
    pub fn to_device(&self, device: Device) -> Result<Tensor<E>, DeviceError> {
        let from = self.device();
        if from == device {
            return Ok(self.clone());
        }
        let data = Arc::new(store_on(self.storage(), device)?);
        Ok(Tensor::record(
            "to_device",
            data,
            self.shape().to_vec(),
            &[self.node()],
            move |g: &Tensor<E>, needs| {
                vec![grad_if(needs[0], || {
                    g.to_device(from)
                        .unwrap_or_else(|e| panic!("to_device backward: {e}"))
                })]
            },
        ))
    }
}

/// The device an op on these inputs runs on, or a panic naming the op and the devices. One-element CPU
/// inputs go with any device (see the module docs); each input is given as its device and element count.
#[track_caller]
pub(crate) fn common_device(op: &str, inputs: impl IntoIterator<Item = (Device, usize)>) -> Device {
    let mut on_device = None;
    let mut on_host = false;
    for (device, n) in inputs {
        match (device, on_device) {
            (Device::Cpu, _) => on_host |= n != 1,
            (_, None) => on_device = Some(device),
            (_, Some(first)) if first != device => panic!(
                "{op}: operands are on different devices ({first} and {device}); move them to one \
                 device with `.to_device(...)`"
            ),
            _ => {}
        }
    }
    match on_device {
        None => Device::Cpu,
        Some(device) if on_host => panic!(
            "{op}: operands are on different devices (cpu and {device}); move them to one device \
             with `.to_device(...)`"
        ),
        Some(device) => device,
    }
}

#[cfg(test)]
mod tests {
    use super::{Device, common_device};

    fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let err = std::panic::catch_unwind(f).expect_err("should panic");
        err.downcast_ref::<String>().cloned().unwrap_or_default()
    }

    /// An op runs where its inputs are; a one-element CPU input goes along with any device; anything
    /// else on two devices is a panic naming the op and both devices.
    #[test]
    fn ops_run_on_their_inputs_device_and_mixed_devices_panic() {
        let (cpu, gpu0, gpu1) = (Device::Cpu, Device::Cuda(0), Device::Cuda(1));
        assert_eq!(common_device("add", [(cpu, 6), (cpu, 1)]), cpu);
        assert_eq!(common_device("add", [(gpu0, 6), (gpu0, 6)]), gpu0);
        assert_eq!(common_device("add", [(cpu, 1), (gpu1, 6)]), gpu1);
        assert_eq!(
            common_device("where_", [(gpu0, 6), (cpu, 1), (cpu, 1)]),
            gpu0
        );
        let message = panic_message(|| {
            common_device("add", [(cpu, 6), (gpu0, 6)]);
        });
        assert!(
            message.starts_with("add: operands are on different devices (cpu and cuda:0)"),
            "{message}"
        );
        let message = panic_message(|| {
            common_device("matmul", [(gpu0, 6), (gpu1, 6)]);
        });
        assert!(
            message.starts_with("matmul: operands are on different devices (cuda:0 and cuda:1)"),
            "{message}"
        );
    }

    #[test]
    fn device_names_parse_and_print_as_pytorch_writes_them() {
        for (name, device) in [
            ("cpu", Device::Cpu),
            ("cuda:0", Device::Cuda(0)),
            ("cuda:3", Device::Cuda(3)),
        ] {
            assert_eq!(name.parse::<Device>().unwrap(), device);
            assert_eq!(device.to_string(), name);
        }
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CPU"] {
            let err = bad.parse::<Device>().unwrap_err();
            assert!(
                err.to_string().contains("expected cpu, cuda or cuda:N"),
                "{bad}: {err}"
            );
        }
    }
}
