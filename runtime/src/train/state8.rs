//! What the 8-bit optimizers share: which parameters get 8-bit states ([`StatePolicy`]), and a
//! block-quantized state buffer with its checkpoint form.

use super::optimizer::{ByteTensor, OptimizerState, OptimizerStateError, find_buffer, find_bytes};
use crate::autograd::GradId;
use crate::param::Param;
use crate::tensor::Tensor;
use amp_kernels::cpu::{Codebook, Quantized, quant_blocks};

/// bitsandbytes' `min_8bit_size`: parameters with fewer elements keep f32 states.
pub const MIN_8BIT_SIZE: usize = 4096;

/// Which parameters of an 8-bit optimizer keep their states in 8 bits, and which in f32.
///
/// A parameter gets 8-bit states when it has at least [`min_8bit_size`](Self::min_8bit_size) elements
/// (bitsandbytes' default, 4096: biases and norm weights are small, vary a lot and save little) and has
/// not been asked to keep 32-bit states, by name or by [`Param`] (bitsandbytes'
/// `GlobalOptimManager.override_config(p, "optim_bits", 32)`, which its `StableEmbedding` uses for
/// embeddings).
///
/// ```
/// use amp_runtime::train::StatePolicy;
/// use amp_runtime::{Param, Tensor};
/// let big = Param::named("emb.weight", Tensor::<f32>::zeros([64, 64]));
/// let policy = StatePolicy::default().keep_32bit_named("emb.weight");
/// assert!(!policy.is_8bit(&big));
/// assert!(StatePolicy::default().is_8bit(&big));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatePolicy {
    min_8bit_size: usize,
    names: Vec<String>,
    params: Vec<GradId>,
}

impl Default for StatePolicy {
    /// 8-bit states from [`MIN_8BIT_SIZE`] elements on, no exceptions.
    fn default() -> Self {
        StatePolicy {
            min_8bit_size: MIN_8BIT_SIZE,
            names: Vec::new(),
            params: Vec::new(),
        }
    }
}

impl StatePolicy {
    /// With another size threshold (0 or 1: every parameter gets 8-bit states).
    pub fn min_8bit_size(mut self, elements: usize) -> Self {
        self.min_8bit_size = elements;
        self
    }

    /// Keeps f32 states for the parameter named `name` (its name when the optimizer first steps it).
    pub fn keep_32bit_named(mut self, name: impl Into<String>) -> Self {
        self.names.push(name.into());
        self
    }

    /// Keeps f32 states for `param`.
    pub fn keep_32bit(mut self, param: &Param) -> Self {
        self.params.push(param.grad_id());
        self
    }

    /// Panics (naming `optimizer`) unless this policy can be set on an optimizer of `params` that has
    /// taken `steps` steps: before the first step (the states already have their width after it), and
    /// with every name kept at 32 bits matching a parameter (a typo would otherwise silently leave that
    /// parameter with 8-bit states).
    #[track_caller]
    pub(crate) fn check_settable(&self, optimizer: &str, steps: u64, params: &[Param]) {
        if steps > 0 {
            panic!("{optimizer}::policy: set the state policy before the first step");
        }
        let unmatched = self
            .names
            .iter()
            .find(|name| !params.iter().any(|p| p.name() == **name));
        if let Some(name) = unmatched {
            panic!(
                "{optimizer}::policy: keep_32bit_named({name:?}) matches no parameter (parameters are \
                 named by Param::named or the model's name_params)"
            );
        }
    }

    /// Whether `param` gets 8-bit states.
    pub fn is_8bit(&self, param: &Param) -> bool {
        param.numel() >= self.min_8bit_size
            && !self.params.contains(&param.grad_id())
            && !self.names.contains(&param.name())
    }
}

/// One state of one parameter, block-quantized: a code per element, an f32 absmax per 256 elements, in
/// host memory or on the device of a weight updated there.
#[derive(Debug)]
pub(crate) enum Block8 {
    Host {
        codes: Vec<u8>,
        absmax: Vec<f32>,
    },
    #[cfg(feature = "cuda")]
    Device {
        codes: amp_kernels::cuda::DeviceBuffer,
        absmax: amp_kernels::cuda::DeviceBuffer,
    },
}

impl Block8 {
    /// A state of zeros for `n` elements in `book`.
    pub(crate) fn zeros(n: usize, book: &Codebook) -> Self {
        Block8::Host {
            codes: vec![book.zero_code(); n],
            absmax: vec![0.0; quant_blocks(n)],
        }
    }

    /// The codes and scales copied to the host.
    ///
    /// Panics, naming the device, if it fails.
    fn to_host(&self) -> (Vec<u8>, Vec<f32>) {
        match self {
            Block8::Host { codes, absmax } => (codes.clone(), absmax.clone()),
            #[cfg(feature = "cuda")]
            Block8::Device { codes, absmax } => codes
                .download_bytes()
                .and_then(|c| Ok((c, absmax.download::<f32>()?)))
                .unwrap_or_else(|e| panic!("8-bit state on cuda:{}: {e}", codes.gpu().ordinal())),
        }
    }

    /// The kernels' view, in host memory (moved there first if it is on a device).
    pub(crate) fn view(&mut self) -> Quantized<'_> {
        #[cfg(feature = "cuda")]
        if matches!(self, Block8::Device { .. }) {
            let (codes, absmax) = self.to_host();
            *self = Block8::Host { codes, absmax };
        }
        match self {
            Block8::Host { codes, absmax } => Quantized { codes, absmax },
            #[cfg(feature = "cuda")]
            Block8::Device { .. } => unreachable!("moved to the host above"),
        }
    }

    /// The device kernels' view on `gpu` (moved there first if it is elsewhere).
    ///
    /// Panics, naming the device, if it fails.
    #[cfg(feature = "cuda")]
    pub(crate) fn device_view(
        &mut self,
        gpu: &std::sync::Arc<amp_kernels::cuda::Gpu>,
    ) -> amp_kernels::cuda::DeviceQuantized<'_> {
        use amp_kernels::cuda::DeviceBuffer;
        let here =
            matches!(self, Block8::Device { codes, .. } if codes.gpu().ordinal() == gpu.ordinal());
        if !here {
            let (codes, absmax) = self.to_host();
            let moved = DeviceBuffer::upload_bytes(gpu, &codes)
                .and_then(|c| Ok((c, DeviceBuffer::upload(gpu, &absmax)?)))
                .unwrap_or_else(|e| panic!("8-bit state on cuda:{}: {e}", gpu.ordinal()));
            *self = Block8::Device {
                codes: moved.0,
                absmax: moved.1,
            };
        }
        match self {
            Block8::Device { codes, absmax } => {
                amp_kernels::cuda::DeviceQuantized { codes, absmax }
            }
            Block8::Host { .. } => unreachable!("moved to the device above"),
        }
    }

    /// Bytes held: one per code, four per scale.
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Block8::Host { codes, absmax } => codes.len() + 4 * absmax.len(),
            #[cfg(feature = "cuda")]
            Block8::Device { codes, absmax } => codes.len() + 4 * absmax.len(),
        }
    }

    /// Adds this state to a saved state as `<key>.state<i>` (bytes, the parameter's shape) and
    /// `<key>.absmax<i>` (f32, one per block), bitsandbytes' names.
    pub(crate) fn save(&self, key: &str, i: usize, shape: &[usize], into: &mut OptimizerState) {
        let (codes, absmax) = self.to_host();
        into.bytes.push((
            format!("{key}.state{i}"),
            ByteTensor::new(codes, shape.to_vec()),
        ));
        let blocks = absmax.len();
        into.tensors.push((
            format!("{key}.absmax{i}"),
            Tensor::from_vec(absmax, [blocks]),
        ));
    }

    /// Reads `<key>.state<i>` and `<key>.absmax<i>` back, checking shapes and that every scale is finite
    /// and not negative.
    pub(crate) fn load(
        state: &OptimizerState,
        key: &str,
        i: usize,
        shape: &[usize],
    ) -> Result<Block8, OptimizerStateError> {
        let codes = find_bytes(state, &format!("{key}.state{i}"), shape)?;
        let name = format!("{key}.absmax{i}");
        let n: usize = shape.iter().product();
        let absmax = find_buffer(state, &name, &[quant_blocks(n)])?.to_vec();
        if let Some(bad) = absmax.iter().find(|a| !(a.is_finite() && **a >= 0.0)) {
            return Err(OptimizerStateError::Invalid {
                name,
                reason: format!("a block scale is {bad}; scales are finite and >= 0"),
            });
        }
        Ok(Block8::Host {
            codes: codes.data.clone(),
            absmax,
        })
    }

    /// The names [`save`](Self::save) writes.
    pub(crate) fn names(key: &str, i: usize) -> [String; 2] {
        [format!("{key}.state{i}"), format!("{key}.absmax{i}")]
    }
}

/// Reads a per-parameter step count saved as a one-element f32 tensor; it must be a positive whole
/// number.
pub(crate) fn load_step(state: &OptimizerState, name: &str) -> Result<u64, OptimizerStateError> {
    let step = find_buffer(state, name, &[1])?.to_vec()[0];
    if !(step >= 1.0 && step.fract() == 0.0 && step < 16_777_216.0) {
        return Err(OptimizerStateError::Invalid {
            name: name.to_string(),
            reason: format!("the step count is {step}, not a whole number from 1 to 2^24"),
        });
    }
    Ok(step as u64)
}

/// The error for a parameter saved with the other state width than this optimizer gives it.
pub(crate) fn width_mismatch(name: String, saved_8bit: bool) -> OptimizerStateError {
    let (saved, now) = if saved_8bit {
        ("8-bit", "f32")
    } else {
        ("f32", "8-bit")
    };
    OptimizerStateError::Invalid {
        name,
        reason: format!(
            "the state was saved {saved}, but this optimizer keeps {now} state for the parameter \
             (its min_8bit_size or keep_32bit settings differ)"
        ),
    }
}
