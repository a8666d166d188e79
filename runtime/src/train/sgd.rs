//! Stochastic gradient descent with momentum, Nesterov momentum and weight decay (PyTorch's `SGD`).

use super::optimizer::{
    Optimizer, OptimizerState, OptimizerStateError, find_buffer, param_key, reject_unknown,
};
use super::schedule::Schedule;
use super::state_buffer::StateBuffer;
use crate::autograd::Grads;
use crate::param::Param;
use crate::tensor::Tensor;
use amp_kernels::cpu::{self, SgdStep};

/// Settings of [`Sgd`]; build with [`SgdConfig::new`] and the methods that set one option each.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Base learning rate.
    pub lr: f64,
    /// Momentum factor (0: plain SGD).
    pub momentum: f64,
    /// Dampening of the momentum.
    pub dampening: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Learning-rate schedule.
    pub schedule: Schedule,
}

impl SgdConfig {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        SgdConfig {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            schedule: Schedule::Constant,
        }
    }

    /// With momentum.
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// With Nesterov momentum.
    pub fn nesterov(mut self) -> Self {
        self.nesterov = true;
        self
    }

    /// With weight decay.
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// With a learning-rate schedule.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }
}

/// SGD over f32 master weights with f32 momentum buffers.
#[derive(Debug)]
pub struct Sgd {
    params: Vec<Param>,
    config: SgdConfig,
    /// Momentum buffers (empty until a parameter's first step with momentum).
    buffers: Vec<StateBuffer>,
    steps: u64,
}

impl Sgd {
    /// An optimizer for `params` (panics on invalid settings, naming them).
    #[track_caller]
    pub fn new(params: Vec<Param>, config: SgdConfig) -> Self {
        let c = &config;
        if !super::at_least(c.lr, 0.0)
            || !super::at_least(c.momentum, 0.0)
            || !super::at_least(c.weight_decay, 0.0)
        {
            panic!(
                "Sgd: lr {}, momentum {} and weight_decay {} must be >= 0",
                c.lr, c.momentum, c.weight_decay
            );
        }
        if c.nesterov && (c.momentum <= 0.0 || c.dampening != 0.0) {
            panic!("Sgd: Nesterov momentum requires a momentum and zero dampening");
        }
        Sgd {
            buffers: params.iter().map(|_| StateBuffer::Empty).collect(),
            params,
            config,
            steps: 0,
        }
    }

    /// The settings.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }
}

impl Optimizer for Sgd {
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
            let first = buffer.is_empty();
            let n = param.numel();
            // A weight and gradient on a device: one fused step there, the buffer kept there.
            #[cfg(feature = "cuda")]
            if let Some(g) = grad.storage().buffer() {
                let buf = (hp.momentum != 0.0).then(|| buffer.device_mut(g.gpu(), n, "SGD"));
                if param.update_on_device(|w| amp_kernels::cuda::sgd_step(w, g, buf, first, &hp)) {
                    continue;
                }
            }
            let buf = (hp.momentum != 0.0).then(|| buffer.host_mut(n, "SGD").as_mut_slice());
            param.update(|w| cpu::sgd_step(w, &grad.host_data(), buf, first, &hp));
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
        let tensors = self
            .params
            .iter()
            .zip(&self.buffers)
            .enumerate()
            .filter(|(_, (_, b))| !b.is_empty())
            .map(|(i, (p, b))| {
                (
                    format!("{}.momentum_buffer", param_key(i, p)),
                    Tensor::from_vec(b.to_host("SGD"), p.shape()),
                )
            })
            .collect();
        OptimizerState {
            kind: "sgd".into(),
            steps: self.steps,
            tensors,
            bytes: Vec::new(),
        }
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<(), OptimizerStateError> {
        if state.kind != "sgd" {
            return Err(OptimizerStateError::Kind {
                saved: state.kind.clone(),
                this: "sgd",
            });
        }
        let mut buffers = Vec::with_capacity(self.params.len());
        let mut known = Vec::new();
        for (i, p) in self.params.iter().enumerate() {
            let name = format!("{}.momentum_buffer", param_key(i, p));
            // A parameter that never had a gradient has no buffer yet.
            let present = state.tensors.iter().any(|(n, _)| *n == name);
            buffers.push(if present {
                StateBuffer::Host(find_buffer(state, &name, &p.shape())?.to_vec())
            } else {
                StateBuffer::Empty
            });
            known.push(name);
        }
        reject_unknown(state, &known)?;
        self.buffers = buffers;
        self.steps = state.steps;
        Ok(())
    }
}
