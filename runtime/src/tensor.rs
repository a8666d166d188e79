//! The tensor type: contiguous, row-major, statically typed, cheap to clone.

use crate::autograd::Node;
use crate::element::{DType, Element, Float};
use crate::rng::Rng;
use crate::shape::{IntoShape, numel};
use std::fmt;
use std::sync::Arc;

pub use crate::device::Device;
pub(crate) use crate::device::Storage;

/// An n-dimensional array of `E` with a static element type, contiguous and row-major.
///
/// Cloning is cheap (the data is shared). Ops never modify a tensor; they return new ones. A tensor that
/// [requires a gradient](Tensor::requires_grad) remembers the op that made it, so
/// [`backward`](Tensor::backward) can run the chain rule back to the leaves.
///
/// ```
/// use amp_runtime::Tensor;
/// let x = Tensor::<f32>::from_vec(vec![1.0, 2.0, 3.0, 4.0], [2, 2]);
/// let y = &x * &x + 1.0;
/// assert_eq!(y.to_vec(), vec![2.0, 5.0, 10.0, 17.0]);
/// assert_eq!(y.sum(..).item(), 34.0);
/// ```
#[must_use = "tensor ops return a new tensor and leave their inputs unchanged"]
pub struct Tensor<E: Element> {
    inner: Arc<Inner<E>>,
}

struct Inner<E: Element> {
    data: Arc<Storage<E>>,
    shape: Vec<usize>,
    node: Option<Arc<Node>>,
}

impl<E: Element> Clone for Tensor<E> {
    fn clone(&self) -> Self {
        Tensor {
            inner: self.inner.clone(),
        }
    }
}

impl<E: Element> Tensor<E> {
    /// A tensor over existing storage (used by reshapes, which share data).
    pub(crate) fn from_storage(
        data: Arc<Storage<E>>,
        shape: Vec<usize>,
        node: Option<Arc<Node>>,
    ) -> Self {
        debug_assert_eq!(data.len(), numel(&shape));
        Tensor {
            inner: Arc::new(Inner { data, shape, node }),
        }
    }

    /// A tensor that owns `data`, with no gradient history.
    pub(crate) fn from_data(data: Vec<E>, shape: Vec<usize>) -> Self {
        Self::from_storage(Arc::new(Storage::Cpu(data)), shape, None)
    }

    pub(crate) fn storage(&self) -> &Arc<Storage<E>> {
        &self.inner.data
    }

    /// The elements, row-major, of a tensor in host memory.
    ///
    /// Panics for a tensor on a CUDA device: ops reach this only on their CPU path, so it means the op
    /// has no device kernel yet, and the message says to move the tensor to the CPU first.
    #[track_caller]
    pub(crate) fn data(&self) -> &[E] {
        self.inner.data.host_slice(self.shape())
    }

    /// The elements in host memory: borrowed from a CPU tensor, copied from a device (for the steps that
    /// run on the host for now, such as the optimizers' updates of a weight on a device).
    #[track_caller]
    pub(crate) fn host_data(&self) -> std::borrow::Cow<'_, [E]> {
        match self.device() {
            Device::Cpu => std::borrow::Cow::Borrowed(self.data()),
            _ => std::borrow::Cow::Owned(self.to_vec()),
        }
    }

    /// The device buffer, for writing in place, when this tensor is on a device and nothing else holds
    /// its tensor or its storage.
    #[cfg(feature = "cuda")]
    pub(crate) fn unique_device_buffer(&mut self) -> Option<&mut amp_kernels::cuda::DeviceBuffer> {
        let storage = Arc::get_mut(&mut Arc::get_mut(&mut self.inner)?.data)?;
        match storage {
            Storage::Cuda(buffer, _) => Some(buffer),
            Storage::Cpu(_) => None,
        }
    }

    pub(crate) fn node(&self) -> Option<&Arc<Node>> {
        self.inner.node.as_ref()
    }

    /// A tensor holding `data` with the given shape.
    ///
    /// Panics if `data.len()` is not the product of the shape.
    #[track_caller]
    pub fn from_vec(data: Vec<E>, shape: impl IntoShape) -> Self {
        let shape = shape.into_shape();
        if data.len() != numel(&shape) {
            panic!(
                "from_vec: {} elements cannot have shape {shape:?} ({} elements)",
                data.len(),
                numel(&shape)
            );
        }
        Self::from_data(data, shape)
    }

    /// A 0-dimensional tensor holding one value.
    pub fn scalar(value: E) -> Self {
        Self::from_data(vec![value], Vec::new())
    }

    /// A tensor of the given shape filled with `value` (converted to `E`).
    pub fn full(shape: impl IntoShape, value: f64) -> Self {
        let shape = shape.into_shape();
        Self::from_data(vec![E::from_f64(value); numel(&shape)], shape)
    }

    /// A tensor of zeros (`false` for bool).
    pub fn zeros(shape: impl IntoShape) -> Self {
        Self::full(shape, 0.0)
    }

    /// A tensor of ones (`true` for bool).
    pub fn ones(shape: impl IntoShape) -> Self {
        Self::full(shape, 1.0)
    }

    /// Zeros with this tensor's shape, on its device.
    ///
    /// Panics if the device fails (as an op on it would).
    #[track_caller]
    pub fn zeros_like(&self) -> Self {
        Self::zeros(self.shape())
            .to_device(self.device())
            .unwrap_or_else(|e| panic!("zeros_like: {e}"))
    }

    /// The values `0, 1, ..., n-1` as a 1-D tensor.
    pub fn arange(n: usize) -> Self {
        Self::from_data((0..n).map(|i| E::from_f64(i as f64)).collect(), vec![n])
    }

    /// The dimensions, outermost first (empty for a scalar).
    pub fn shape(&self) -> &[usize] {
        &self.inner.shape
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.inner.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.inner.shape)
    }

    /// The element type as a run-time value.
    pub fn dtype(&self) -> DType {
        E::DTYPE
    }

    /// Where the data lives.
    pub fn device(&self) -> Device {
        self.inner.data.device()
    }

    /// The elements, row-major, copied out (from the device for a tensor on one).
    ///
    /// Panics if copying from a device fails (the device is lost); [`try_to_vec`](Tensor::try_to_vec)
    /// returns that as an error.
    #[track_caller]
    pub fn to_vec(&self) -> Vec<E> {
        match self.try_to_vec() {
            Ok(v) => v,
            Err(e) => panic!("to_vec: {e}"),
        }
    }

    /// The elements, row-major, copied out, or why they could not be copied from the device.
    pub fn try_to_vec(&self) -> Result<Vec<E>, crate::DeviceError> {
        self.inner.data.to_host_vec()
    }

    /// The only element of a one-element tensor.
    ///
    /// Panics if the tensor has more or fewer than one element.
    #[track_caller]
    pub fn item(&self) -> E {
        if self.numel() != 1 {
            panic!(
                "item: tensor of shape {:?} has {} elements, not 1",
                self.shape(),
                self.numel()
            );
        }
        self.to_vec()[0]
    }

    /// Whether the two tensors share one buffer (as a reshape and its source do, or two handouts of one
    /// cached cast).
    pub fn same_storage(&self, other: &Tensor<E>) -> bool {
        Arc::ptr_eq(&self.inner.data, &other.inner.data)
    }

    /// Whether ops on this tensor are recorded for [`backward`](Tensor::backward).
    pub fn requires_grad(&self) -> bool {
        self.inner.node.is_some()
    }

    /// The same data without gradient history: ops on the result are not recorded.
    pub fn detach(&self) -> Self {
        Self::from_storage(self.inner.data.clone(), self.inner.shape.clone(), None)
    }

    /// The elements as an owned vector: the buffer itself when nothing else shares it, else a copy.
    ///
    /// Panics if copying from a device fails (the device is lost).
    pub(crate) fn into_vec(self) -> Vec<E> {
        let copied = |s: &Storage<E>| s.to_host_vec().unwrap_or_else(|e| panic!("{e}"));
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => match Arc::try_unwrap(inner.data) {
                // Taken out of the storage, so its drop has nothing to give back to the pool.
                Ok(mut storage) => storage.take_vec(),
                Err(shared) => copied(&shared),
            },
            Err(shared) => copied(&shared.data),
        }
    }

    /// The same data and history with another shape (no check: callers validate).
    pub(crate) fn with_shape(&self, shape: Vec<usize>, node: Option<Arc<Node>>) -> Self {
        Self::from_storage(self.inner.data.clone(), shape, node)
    }
}

impl<E: Float> Tensor<E> {
    /// The same data as a new leaf whose gradient [`backward`](Tensor::backward) reports in its
    /// [`Grads`](crate::Grads). Model weights are usually [`Param`](crate::Param)s instead.
    ///
    /// ```
    /// use amp_runtime::Tensor;
    /// let x = Tensor::<f64>::from_vec(vec![3.0], [1]).with_grad();
    /// let grads = (&x * &x).sum(..).backward();
    /// assert_eq!(grads.get(&x).unwrap().to_vec(), vec![6.0]);
    /// ```
    pub fn with_grad(&self) -> Self {
        Self::from_storage(
            self.inner.data.clone(),
            self.inner.shape.clone(),
            Some(Node::leaf(E::DTYPE, self.shape())),
        )
    }

    /// Samples from the standard normal distribution, reproducibly from `rng`.
    pub fn randn(shape: impl IntoShape, rng: &mut Rng) -> Self {
        let shape = shape.into_shape();
        let data = (0..numel(&shape))
            .map(|_| E::from_f64(rng.normal()))
            .collect();
        Self::from_data(data, shape)
    }

    /// Samples uniformly from `[0, 1)`, reproducibly from `rng`.
    pub fn rand(shape: impl IntoShape, rng: &mut Rng) -> Self {
        let shape = shape.into_shape();
        let data = (0..numel(&shape))
            .map(|_| E::from_f64(rng.uniform()))
            .collect();
        Self::from_data(data, shape)
    }
}

impl<E: Element> fmt::Debug for Tensor<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        // Borrowed on the CPU; a device tensor is copied (an unreachable device shows no elements).
        let data = match self.device() {
            Device::Cpu => std::borrow::Cow::Borrowed(self.data()),
            _ => std::borrow::Cow::Owned(self.try_to_vec().unwrap_or_default()),
        };
        write!(f, "Tensor<{}>{:?} [", E::DTYPE, self.shape())?;
        if self.device() != Device::Cpu {
            write!(f, "on {}: ", self.device())?;
        }
        for (i, v) in data.iter().take(SHOWN).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{v:?}")?;
        }
        if data.len() > SHOWN {
            write!(f, ", … ({} more)", data.len() - SHOWN)?;
        }
        f.write_str("]")?;
        if self.requires_grad() {
            f.write_str(" (requires grad)")?;
        }
        Ok(())
    }
}
