//! An optimizer's per-parameter f32 buffer (Adam's moments, SGD's momentum), kept where its weight is
//! updated: in host memory, or on the weight's device so a device step never copies it.

/// One state buffer: not made yet, on the host, or on a device.
#[derive(Debug, Default)]
pub(crate) enum StateBuffer {
    /// Not made yet (a parameter that has had no step).
    #[default]
    Empty,
    Host(Vec<f32>),
    #[cfg(feature = "cuda")]
    Device(amp_kernels::cuda::DeviceBuffer),
}

impl StateBuffer {
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, StateBuffer::Empty)
    }

    /// Values held (0 when not made yet).
    pub(crate) fn len(&self) -> usize {
        match self {
            StateBuffer::Empty => 0,
            StateBuffer::Host(v) => v.len(),
            #[cfg(feature = "cuda")]
            StateBuffer::Device(b) => b.len(),
        }
    }

    /// The values copied to the host (for checkpoints); empty when not made yet.
    ///
    /// Panics, naming the optimizer (`what`), if the device is lost.
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub(crate) fn to_host(&self, what: &str) -> Vec<f32> {
        match self {
            StateBuffer::Empty => Vec::new(),
            StateBuffer::Host(v) => v.clone(),
            #[cfg(feature = "cuda")]
            StateBuffer::Device(b) => b
                .download::<f32>()
                .unwrap_or_else(|e| panic!("{what} state on cuda:{}: {e}", b.gpu().ordinal())),
        }
    }

    /// The buffer in host memory, made as `len` zeros or moved from the device first.
    pub(crate) fn host_mut(&mut self, len: usize, what: &str) -> &mut Vec<f32> {
        if !matches!(self, StateBuffer::Host(_)) {
            let values = if self.is_empty() {
                vec![0.0; len]
            } else {
                self.to_host(what)
            };
            *self = StateBuffer::Host(values);
        }
        match self {
            StateBuffer::Host(v) => v,
            _ => unreachable!("made a host buffer above"),
        }
    }

    /// The buffer on `gpu`, made as `len` zeros or moved from the host first.
    ///
    /// Panics, naming the optimizer (`what`), if the device fails.
    #[cfg(feature = "cuda")]
    pub(crate) fn device_mut(
        &mut self,
        gpu: &std::sync::Arc<amp_kernels::cuda::Gpu>,
        len: usize,
        what: &str,
    ) -> &mut amp_kernels::cuda::DeviceBuffer {
        use amp_kernels::cuda::DeviceBuffer;
        let moved = match &*self {
            StateBuffer::Device(b) if b.gpu().ordinal() == gpu.ordinal() => None,
            StateBuffer::Empty => Some(DeviceBuffer::zeros(gpu, amp_kernels::DType::F32, len)),
            other => Some(DeviceBuffer::upload(gpu, &other.to_host(what))),
        };
        if let Some(moved) = moved {
            let buffer =
                moved.unwrap_or_else(|e| panic!("{what} state on cuda:{}: {e}", gpu.ordinal()));
            *self = StateBuffer::Device(buffer);
        }
        match self {
            StateBuffer::Device(b) => b,
            _ => unreachable!("made a device buffer above"),
        }
    }
}
