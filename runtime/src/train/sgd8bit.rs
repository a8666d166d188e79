//! SGD with an 8-bit momentum buffer (bitsandbytes' `SGD8bit`): 1.02 bytes of state per parameter
//! instead of 4.

use super::optimizer::{
    Optimizer, OptimizerState, OptimizerStateError, find_buffer, param_key, reject_unknown,
};
use super::sgd::SgdConfig;
use super::state_buffer::StateBuffer;
use super::state8::{Block8, StatePolicy, width_mismatch};
use crate::autograd::Grads;
use crate::param::Param;
use crate::tensor::Tensor;
use amp_kernels::cpu::{self, Codebook, SgdStep};

/// SGD with momentum whose buffer is stored block-wise in 8 bits (signed dynamic codebook, an f32
/// absmax per 256 elements, sign kept), updated in one fused pass per block
/// ([`cpu::momentum8bit_step`]). Settings are [`Sgd`](super::Sgd)'s; a momentum is required (without
/// one there is no state to quantize).
///
/// Parameters below [`StatePolicy`]'s threshold, and those it names, keep an f32 buffer and are updated
/// exactly as [`Sgd`](super::Sgd) updates them. Weight decay is added to the gradient, as in
/// bitsandbytes' and PyTorch's SGD. bitsandbytes supports neither dampening nor Nesterov momentum in
/// 8 bits; both work here as in [`Sgd`](super::Sgd).
///
/// Checkpoints hold `<param>.state1` (bytes) and `<param>.absmax1` (f32, one per block); f32 buffers
/// are saved as [`Sgd`](super::Sgd) saves them.
///
/// ```
/// use amp_runtime::train::{Optimizer, Sgd8bit, SgdConfig, StatePolicy};
/// use amp_runtime::{Param, Tensor};
/// let w = Param::new(Tensor::<f32>::ones([4096]));
/// let mut opt = Sgd8bit::new(vec![w.clone()], SgdConfig::new(0.1).momentum(0.9));
/// opt.step(&w.value().sum(..).backward());
/// assert_eq!(w.value().to_vec()[0], 0.9);
/// assert_eq!(opt.state_bytes(), 4096 + 4 * 16);
/// ```
#[derive(Debug)]
pub struct Sgd8bit {
    params: Vec<Param>,
    config: SgdConfig,
    policy: StatePolicy,
    buffers: Vec<Buffer>,
    steps: u64,
}

#[derive(Debug, Default)]
enum Buffer {
    /// Not stepped yet (the first step makes the gradient the buffer).
    #[default]
    None,
    Quantized(Block8),
    /// An f32 buffer (parameters the policy keeps at 32 bits), where the weight is updated.
    Full(StateBuffer),
}

impl Sgd8bit {
    /// An optimizer for `params` with the default [`StatePolicy`] (panics on invalid settings or a zero
    /// momentum, naming them).
    #[track_caller]
    pub fn new(params: Vec<Param>, config: SgdConfig) -> Self {
        drop(super::Sgd::new(Vec::new(), config));
        if !super::above(config.momentum, 0.0) {
            panic!(
                "Sgd8bit: momentum {} must be > 0 (the 8-bit state is the momentum buffer; use Sgd without one)",
                config.momentum
            );
        }
        Sgd8bit {
            buffers: params.iter().map(|_| Buffer::None).collect(),
            params,
            config,
            policy: StatePolicy::default(),
            steps: 0,
        }
    }

    /// With another policy for which parameters get 8-bit states. Panics once the optimizer has stepped
    /// (the states already have their width), and when a name kept at 32 bits matches no parameter.
    #[track_caller]
    pub fn policy(mut self, policy: StatePolicy) -> Self {
        policy.check_settable("Sgd8bit", self.steps, &self.params);
        self.policy = policy;
        self
    }

    /// The settings.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }
}

impl Optimizer for Sgd8bit {
    fn params(&self) -> &[Param] {
        &self.params
    }

    fn step(&mut self, grads: &Grads) {
        let hp = SgdStep {
            lr: self.lr(),
            momentum: self.config.momentum,
            dampening: self.config.dampening,
            weight_decay: self.config.weight_decay,
            nesterov: self.config.nesterov,
        };
        for (param, buffer) in self.params.iter().zip(&mut self.buffers) {
            let Some(grad) = grads.get(param) else {
                continue;
            };
            let first = matches!(buffer, Buffer::None);
            if first {
                let n = param.numel();
                *buffer = if self.policy.is_8bit(param) {
                    Buffer::Quantized(Block8::zeros(n, Codebook::signed()))
                } else {
                    Buffer::Full(StateBuffer::Host(vec![0.0; n]))
                };
            }
            let n = param.numel();
            // A weight and gradient on a device: one fused step there, the buffer kept there.
            #[cfg(feature = "cuda")]
            if let Some(g) = grad.storage().buffer() {
                use amp_kernels::cuda;
                let gpu = g.gpu();
                let done = match buffer {
                    Buffer::Quantized(b) => {
                        let b = b.device_view(gpu);
                        param.update_on_device(|w| cuda::momentum8bit_step(w, g, b, first, &hp))
                    }
                    Buffer::Full(b) => {
                        let b = b.device_mut(gpu, n, "Sgd8bit");
                        param.update_on_device(|w| cuda::sgd_step(w, g, Some(b), first, &hp))
                    }
                    Buffer::None => unreachable!("initialized above"),
                };
                if done {
                    continue;
                }
            }
            match buffer {
                Buffer::Quantized(b) => param
                    .update(|w| cpu::momentum8bit_step(w, &grad.host_data(), b.view(), first, &hp)),
                Buffer::Full(b) => {
                    let b = b.host_mut(n, "Sgd8bit");
                    param.update(|w| cpu::sgd_step(w, &grad.host_data(), Some(b), first, &hp))
                }
                Buffer::None => unreachable!("initialized above"),
            }
        }
        self.steps += 1;
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn lr(&self) -> f64 {
        self.config.lr * self.config.schedule.factor(self.steps)
    }

    fn state(&self) -> OptimizerState {
        let mut out = OptimizerState {
            kind: "sgd8bit".into(),
            steps: self.steps,
            ..OptimizerState::default()
        };
        for (i, (p, b)) in self.params.iter().zip(&self.buffers).enumerate() {
            let key = param_key(i, p);
            match b {
                Buffer::None => {}
                Buffer::Quantized(q) => q.save(&key, 1, &p.shape(), &mut out),
                Buffer::Full(f) => out.tensors.push((
                    format!("{key}.momentum_buffer"),
                    Tensor::from_vec(f.to_host("Sgd8bit"), p.shape()),
                )),
            }
        }
        out
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<(), OptimizerStateError> {
        if state.kind != "sgd8bit" {
            return Err(OptimizerStateError::Kind {
                saved: state.kind.clone(),
                this: "sgd8bit",
            });
        }
        let has = |name: &str| {
            state.tensors.iter().any(|(n, _)| n == name)
                || state.bytes.iter().any(|(n, _)| n == name)
        };
        let mut buffers = Vec::with_capacity(self.params.len());
        let mut known = Vec::new();
        for (i, p) in self.params.iter().enumerate() {
            let key = param_key(i, p);
            let full = format!("{key}.momentum_buffer");
            let names = Block8::names(&key, 1);
            let eight = self.policy.is_8bit(p);
            buffers.push(match (eight, has(&names[0]), has(&full)) {
                (true, _, true) => return Err(width_mismatch(full, false)),
                (false, true, _) => return Err(width_mismatch(names[0].clone(), true)),
                (true, true, _) => Buffer::Quantized(Block8::load(state, &key, 1, &p.shape())?),
                (false, _, true) => Buffer::Full(StateBuffer::Host(
                    find_buffer(state, &full, &p.shape())?.to_vec(),
                )),
                _ => Buffer::None,
            });
            known.push(full);
            known.extend(names);
        }
        reject_unknown(state, &known)?;
        self.buffers = buffers;
        self.steps = state.steps;
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.buffers
            .iter()
            .map(|b| match b {
                Buffer::None => 0,
                Buffer::Quantized(q) => q.bytes(),
                Buffer::Full(f) => 4 * f.len(),
            })
            .sum()
    }
}
