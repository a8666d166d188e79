//! Trainable parameters: an f32 master weight with identity, name, version and a versioned cast cache.

use crate::autograd::{GradId, GradKey, Node, is_grad_enabled};
use crate::element::{AnyTensor, DType, Element, Float};
use crate::tensor::Tensor;
use crate::train::UpdateRounding;
use crate::train::rounding::RoundingState;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

/// A trainable weight: an f32 master copy that the optimizer updates, a stable identity that
/// [`Grads`](crate::Grads) are keyed by, a name (`"blocks.0.attn.qkv.weight"`), and a version the
/// optimizer bumps on every update.
///
/// [`get::<bf16>()`](Param::get) returns the low-precision copy, cast once per version and then reused.
/// The cached cast is an autograd node, so its gradient lands on the f32 master. A cast made while
/// gradients are off ([`no_grad`](crate::no_grad)) carries no history and is never handed out where a
/// gradient is needed: a later grad-mode `get` makes a fresh, recorded cast (PyTorch's cast cache gets this
/// wrong, pytorch/pytorch#112583).
///
/// Clones share the same parameter.
///
/// ```
/// use amp_runtime::{Param, Tensor, bf16};
/// let w = Param::named("w", Tensor::<f32>::from_vec(vec![1.5, -2.0], [2]));
/// let low = w.get::<bf16>();
/// let grads = low.sum(..).backward();
/// assert_eq!(grads.get(&w).unwrap().to_vec(), vec![1.0, 1.0]); // an f32 gradient for the master
/// ```
#[derive(Clone)]
pub struct Param {
    inner: Arc<ParamInner>,
}

struct ParamInner {
    leaf: Arc<Node>,
    name: Mutex<String>,
    state: Mutex<ParamState>,
}

struct ParamState {
    value: Tensor<f32>,
    version: u64,
    casts: Vec<CachedCast>,
    /// The type the weight is stored in: f32, or bf16/f16 for the `-true` precision modes (the values
    /// are kept exactly representable in that type; the container stays f32).
    storage: DType,
    /// How updates are rounded to `storage`, and what that carries between updates.
    rounding: RoundingState,
}

struct CachedCast {
    version: u64,
    recorded: bool,
    tensor: AnyTensor,
}

impl Param {
    /// A parameter holding `value` (its gradient history, if any, is dropped).
    pub fn new(value: Tensor<f32>) -> Self {
        Self::named("", value)
    }

    /// A parameter with a name.
    pub fn named(name: impl Into<String>, value: Tensor<f32>) -> Self {
        let leaf = Node::leaf(DType::F32, value.shape());
        let value = value.with_shape(value.shape().to_vec(), Some(leaf.clone()));
        Param {
            inner: Arc::new(ParamInner {
                leaf,
                name: Mutex::new(name.into()),
                state: Mutex::new(ParamState {
                    value,
                    version: 0,
                    casts: Vec::new(),
                    storage: DType::F32,
                    rounding: RoundingState::default(),
                }),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, ParamState> {
        // Every update leaves a consistent state even when it panics (see `update`), so a poisoned lock
        // is still usable.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The name (empty until set).
    pub fn name(&self) -> String {
        self.inner
            .name
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets the name.
    pub fn set_name(&self, name: impl Into<String>) {
        *self.inner.name.lock().unwrap_or_else(|e| e.into_inner()) = name.into();
    }

    /// The identity [`Grads`](crate::Grads) are keyed by.
    pub fn grad_id(&self) -> GradId {
        self.inner.leaf.grad_id()
    }

    /// How many times the value has been replaced or updated.
    pub fn version(&self) -> u64 {
        self.state().version
    }

    /// The shape of the weight.
    pub fn shape(&self) -> Vec<usize> {
        self.state().value.shape().to_vec()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.state().value.numel()
    }

    /// The f32 master weight as a tensor whose ops are recorded for backward.
    pub fn value(&self) -> Tensor<f32> {
        self.state().value.clone()
    }

    /// The weight in element type `E`: the master itself for f32, otherwise a cast cached per
    /// (type, version). Inside a region where gradients are recorded, the cast is a recorded op whose
    /// gradient flows to the master.
    pub fn get<E: Float>(&self) -> Tensor<E> {
        if E::DTYPE == DType::F32 {
            return E::from_any(self.value().into()).unwrap_or_else(|_| unreachable!("E is f32"));
        }
        let recording = is_grad_enabled();
        let mut state = self.state();
        let version = state.version;
        let usable = |c: &CachedCast| {
            c.version == version && c.tensor.dtype() == E::DTYPE && (c.recorded || !recording)
        };
        if let Some(hit) = state.casts.iter().find(|c| usable(c)) {
            return E::from_any(hit.tensor.clone())
                .unwrap_or_else(|_| unreachable!("dtype checked"));
        }
        let cast = state.value.cast::<E>();
        // Keep one entry per type: a recorded cast replaces an unrecorded one (it serves both modes).
        state
            .casts
            .retain(|c| c.version == version && c.tensor.dtype() != E::DTYPE);
        state.casts.push(CachedCast {
            version,
            recorded: recording,
            tensor: cast.clone().into(),
        });
        cast
    }

    /// Replaces the master weight (same shape) and bumps the version, invalidating cached casts.
    #[track_caller]
    pub fn set(&self, value: Tensor<f32>) {
        let mut state = self.state();
        if value.shape() != state.value.shape() {
            panic!(
                "Param::set: new value of shape {:?} for parameter '{}' of shape {:?}",
                value.shape(),
                self.name(),
                state.value.shape()
            );
        }
        state.value = value.with_shape(value.shape().to_vec(), Some(self.inner.leaf.clone()));
        state.version += 1;
        state.casts.clear();
    }

    /// The update rounding's carried state (see [`RoundingState::snapshot`]), for checkpoints.
    pub(crate) fn rounding_snapshot(&self) -> Option<(u64, Option<Vec<f32>>)> {
        self.state().rounding.snapshot()
    }

    /// Restores the update rounding's carried state saved by a checkpoint.
    pub(crate) fn restore_rounding(&self, updates: u64, compensation: Option<&[f32]>) {
        let mut state = self.state();
        let storage = state.storage;
        state.rounding.restore(updates, compensation, storage);
    }

    /// Moves the master weight to `device` (a new version, so cached casts are made again there), or
    /// says why it cannot be moved; the parameter is unchanged then.
    ///
    /// ```
    /// use amp_runtime::{Device, Param, Tensor};
    /// let w = Param::new(Tensor::<f32>::ones([2]));
    /// w.to_device(Device::Cpu).unwrap();
    /// if Device::cuda_count() == 0 {
    ///     assert!(w.to_device(Device::Cuda(0)).is_err());
    /// }
    /// ```
    pub fn to_device(&self, device: crate::Device) -> Result<(), crate::DeviceError> {
        let mut state = self.state();
        if state.value.device() == device {
            return Ok(());
        }
        let moved = state.value.detach().to_device(device)?;
        let shape = moved.shape().to_vec();
        state.value = moved.with_shape(shape, Some(self.inner.leaf.clone()));
        state.version += 1;
        state.casts.clear();
        Ok(())
    }

    /// Updates a master weight that lives on a device with `f` on its buffer (in place when nothing
    /// else holds it, else on a copy), then rounds it to the storage type for the `-true` modes, by the
    /// parameter's update rounding (to nearest, stochastic or Kahan-compensated, all on the device).
    /// Returns `false`, doing nothing, for a weight on the CPU: callers then use [`update`](Self::update).
    ///
    /// Panics if the device fails (naming it): the weight keeps its old value then, but a failure after
    /// `f` ran (rounding the update, which allocates) leaves the optimizer's state advanced.
    #[cfg(feature = "cuda")]
    pub(crate) fn update_on_device(
        &self,
        f: impl FnOnce(&mut amp_kernels::cuda::DeviceBuffer) -> Result<(), amp_kernels::cuda::CudaError>,
    ) -> bool {
        let mut state = self.state();
        if state.value.storage().buffer().is_none() {
            return false;
        }
        let storage = state.storage;
        let device = state.value.device();
        if storage == DType::F32
            && let Some(w) = state.value.unique_device_buffer()
        {
            // Nothing else holds the weight (no graph saved it): update it where it is.
            f(w).unwrap_or_else(|e| panic!("optimizer step of a weight on {device}: {e}"));
            state.version += 1;
            state.casts.clear();
            return true;
        }
        let state = &mut *state;
        let buffer = state.value.storage().buffer().expect("checked above");
        let rounding = &mut state.rounding;
        // What the rounding needs is made before `f` advances the optimizer's state.
        if let Err(e) = rounding.prepare_on_device(buffer.gpu(), buffer.len(), storage) {
            panic!("optimizer step of a weight on {device}: {e}");
        }
        let updated = buffer.try_clone().and_then(|mut w| {
            f(&mut w)?;
            if storage != DType::F32 {
                rounding.round_on_device(buffer, &mut w, storage)?;
            }
            Ok(w)
        });
        let updated =
            updated.unwrap_or_else(|e| panic!("optimizer step of a weight on {device}: {e}"));
        let shape = state.value.shape().to_vec();
        state.value = Tensor::from_storage(
            Arc::new(crate::device::Storage::cuda(updated)),
            shape,
            Some(self.inner.leaf.clone()),
        );
        state.version += 1;
        state.casts.clear();
        true
    }

    /// Updates the master weight in place (copying first if anything else still holds the old value,
    /// such as a graph saved for backward) and bumps the version.
    ///
    /// If `f` panics, the parameter keeps whatever `f` wrote so far, as a new version (so no stale cast is
    /// handed out), and the panic continues.
    pub fn update(&self, f: impl FnOnce(&mut [f32])) {
        let mut state = self.state();
        let shape = state.value.shape().to_vec();
        // A weight on a device is updated on the host (one copy each way), then put back: optimizers
        // update device weights through `update_on_device` instead; this serves any other caller.
        let device = state.value.device();
        // The placeholder is never observed: the value is put back below, also when `f` panics.
        let value = std::mem::replace(&mut state.value, Tensor::scalar(0.0));
        let mut data = value.into_vec();
        let storage = state.storage;
        let rounding = &mut state.rounding;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let old = rounding.needs_old(storage).then(|| data.clone());
            f(&mut data);
            rounding.round(old.as_deref(), &mut data, storage);
        }));
        let value = Tensor::from_data(data, shape.clone());
        let value = value
            .to_device(device)
            .unwrap_or_else(|e| panic!("Param::update: {e}"));
        state.value = value.with_shape(shape, Some(self.inner.leaf.clone()));
        state.version += 1;
        state.casts.clear();
        drop(state);
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// The type the weight is stored in (f32 unless set otherwise).
    pub fn storage(&self) -> DType {
        self.state().storage
    }

    /// Stores the weight in `dtype` (f32, bf16 or f16): the value is rounded to it now and after every
    /// update, as a model converted to half precision would be (`"bf16-true"`). The container stays f32.
    #[track_caller]
    pub fn set_storage(&self, dtype: DType) {
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            panic!("Param::set_storage: parameters are stored in f32, bf16 or f16, not {dtype}");
        }
        self.state().storage = dtype;
        self.update(|_| {});
    }

    /// Sets how updates are rounded to the storage type (see [`UpdateRounding`]; no effect while the
    /// weight is stored in f32). Drops any Kahan compensation carried so far. Panics on stochastic
    /// rounding with f16 storage.
    #[track_caller]
    pub fn set_update_rounding(&self, mode: UpdateRounding) {
        let mut state = self.state();
        let storage = state.storage;
        state.rounding.set(mode, storage);
    }

    /// How updates are rounded to the storage type.
    pub fn update_rounding(&self) -> UpdateRounding {
        self.state().rounding.mode()
    }

    /// Bytes of the Kahan compensation buffer (0 unless [`UpdateRounding::Kahan`] has rounded an update).
    pub fn compensation_bytes(&self) -> usize {
        self.state().rounding.bytes()
    }

    /// Whether a cast of type `E` for the current version is cached (for tests and diagnostics).
    pub fn is_cast_cached<E: Element>(&self) -> bool {
        let state = self.state();
        state
            .casts
            .iter()
            .any(|c| c.version == state.version && c.tensor.dtype() == E::DTYPE)
    }
}

impl GradKey for Param {
    type Grad = Tensor<f32>;
    fn grad_id(&self) -> Option<GradId> {
        Some(Param::grad_id(self))
    }
    fn typed_grad(grad: &AnyTensor) -> Option<Tensor<f32>> {
        f32::any_ref(grad).cloned()
    }
}

impl fmt::Debug for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("Param")
            .field("name", &self.name())
            .field("shape", &state.value.shape())
            .field("version", &state.version)
            .finish()
    }
}
