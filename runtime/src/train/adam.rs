//! Adam and AdamW (PyTorch's `Adam`/`AdamW`): f32 moments over f32 master weights, one fused pass per
//! parameter.

use super::optimizer::{
    Optimizer, OptimizerState, OptimizerStateError, find_buffer, param_key, reject_unknown,
};
use super::schedule::Schedule;
use super::state_buffer::StateBuffer;
use crate::autograd::Grads;
use crate::param::Param;
use crate::tensor::Tensor;
use amp_kernels::cpu::{self, AdamStep};

/// Settings of [`Adam`]: [`AdamConfig::adam`] or [`AdamConfig::adamw`], then the methods that set one
/// option each.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Base learning rate.
    pub lr: f64,
    /// Decay rates of the first and second moments.
    pub betas: (f64, f64),
    /// Added to the denominator.
    pub eps: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// AdamW: decay the weights directly (decoupled) instead of adding `wd·w` to the gradient.
    pub decoupled: bool,
    /// Learning-rate schedule.
    pub schedule: Schedule,
}

impl AdamConfig {
    /// Adam with PyTorch's defaults (betas 0.9, 0.999; eps 1e-8; no weight decay).
    pub fn adam(lr: f64) -> Self {
        AdamConfig {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            schedule: Schedule::Constant,
        }
    }

    /// AdamW with decoupled weight decay `weight_decay` (PyTorch's default is 0.01).
    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        AdamConfig {
            weight_decay,
            decoupled: true,
            ..Self::adam(lr)
        }
    }

    /// With other moment decay rates.
    pub fn betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.betas = (beta1, beta2);
        self
    }

    /// With another epsilon.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// With a learning-rate schedule.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }
}

/// Adam or AdamW (see [`AdamConfig`]).
#[derive(Debug)]
pub struct Adam {
    params: Vec<Param>,
    config: AdamConfig,
    moments: Vec<Moments>,
    steps: u64,
}

#[derive(Debug, Default)]
struct Moments {
    /// Updates of this parameter so far (a parameter without a gradient does not advance).
    step: u64,
    exp_avg: StateBuffer,
    exp_avg_sq: StateBuffer,
}

impl Adam {
    /// An optimizer for `params` (panics on invalid settings, naming them).
    #[track_caller]
    pub fn new(params: Vec<Param>, config: AdamConfig) -> Self {
        let c = &config;
        let (b1, b2) = c.betas;
        if !super::at_least(c.lr, 0.0)
            || !super::at_least(c.eps, 0.0)
            || !super::at_least(c.weight_decay, 0.0)
        {
            panic!(
                "Adam: lr {}, eps {} and weight_decay {} must be >= 0",
                c.lr, c.eps, c.weight_decay
            );
        }
        if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
            panic!("Adam: betas ({b1}, {b2}) must be in [0, 1)");
        }
        Adam {
            moments: params.iter().map(|_| Moments::default()).collect(),
            params,
            config,
            steps: 0,
        }
    }

    /// The settings.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    fn kind(&self) -> &'static str {
        if self.config.decoupled {
            "adamw"
        } else {
            "adam"
        }
    }
}

const BUFFERS: [&str; 3] = ["step", "exp_avg", "exp_avg_sq"];

impl Optimizer for Adam {
    fn params(&self) -> &[Param] {
        &self.params
    }

    fn step(&mut self, grads: &Grads) {
        let lr = self.lr();
        for (param, moments) in self.params.iter().zip(&mut self.moments) {
            let Some(grad) = grads.get(param) else {
                continue;
            };
            moments.step += 1;
            let hp = AdamStep {
                lr,
                beta1: self.config.betas.0,
                beta2: self.config.betas.1,
                eps: self.config.eps,
                weight_decay: self.config.weight_decay,
                decoupled: self.config.decoupled,
                step: moments.step,
            };
            let n = param.numel();
            // A weight and gradient on a device: one fused step there, the moments kept there.
            #[cfg(feature = "cuda")]
            if let Some(g) = grad.storage().buffer() {
                let gpu = g.gpu();
                let m = moments.exp_avg.device_mut(gpu, n, "Adam");
                let v = moments.exp_avg_sq.device_mut(gpu, n, "Adam");
                if param.update_on_device(|w| amp_kernels::cuda::adam_step(w, g, m, v, &hp)) {
                    continue;
                }
            }
            let m = moments.exp_avg.host_mut(n, "Adam");
            let v = moments.exp_avg_sq.host_mut(n, "Adam");
            param.update(|w| cpu::adam_step(w, &grad.host_data(), m, v, &hp));
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
        let mut tensors = Vec::new();
        for (i, (p, m)) in self.params.iter().zip(&self.moments).enumerate() {
            if m.step == 0 {
                continue;
            }
            let key = param_key(i, p);
            // The step count is stored as a one-element f32 tensor, as PyTorch stores Adam's `step`.
            tensors.push((
                format!("{key}.step"),
                Tensor::from_vec(vec![m.step as f32], [1]),
            ));
            let (exp_avg, exp_avg_sq) = (m.exp_avg.to_host("Adam"), m.exp_avg_sq.to_host("Adam"));
            tensors.push((
                format!("{key}.exp_avg"),
                Tensor::from_vec(exp_avg, p.shape()),
            ));
            tensors.push((
                format!("{key}.exp_avg_sq"),
                Tensor::from_vec(exp_avg_sq, p.shape()),
            ));
        }
        OptimizerState {
            kind: self.kind().into(),
            steps: self.steps,
            tensors,
            bytes: Vec::new(),
        }
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<(), OptimizerStateError> {
        if state.kind != self.kind() {
            return Err(OptimizerStateError::Kind {
                saved: state.kind.clone(),
                this: self.kind(),
            });
        }
        let mut moments = Vec::with_capacity(self.params.len());
        let mut known = Vec::new();
        for (i, p) in self.params.iter().enumerate() {
            let key = param_key(i, p);
            let names = BUFFERS.map(|b| format!("{key}.{b}"));
            if !state.tensors.iter().any(|(n, _)| *n == names[0]) {
                moments.push(Moments::default());
            } else {
                let step = find_buffer(state, &names[0], &[1])?.to_vec()[0] as u64;
                let exp_avg = find_buffer(state, &names[1], &p.shape())?.to_vec();
                let exp_avg_sq = find_buffer(state, &names[2], &p.shape())?.to_vec();
                moments.push(Moments {
                    step,
                    exp_avg: StateBuffer::Host(exp_avg),
                    exp_avg_sq: StateBuffer::Host(exp_avg_sq),
                });
            }
            known.extend(names);
        }
        reject_unknown(state, &known)?;
        self.moments = moments;
        self.steps = state.steps;
        Ok(())
    }
}
