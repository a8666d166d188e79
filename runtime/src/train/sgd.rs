//! Stochastic gradient descent with momentum, Nesterov momentum and weight decay (PyTorch's `SGD`).

use super::optimizer::{
    Optimizer, OptimizerState, OptimizerStateError, find_buffer, param_key, reject_unknown,
};
use super::schedule::Schedule;
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
    buffers: Vec<Option<Momentum>>,
    steps: u64,
}

/// A momentum buffer, kept where its weight is.
#[derive(Debug)]
enum Momentum {
    Host(Vec<f32>),
    #[cfg(feature = "cuda")]
    Device(amp_kernels::cuda::DeviceBuffer),
}

impl Momentum {
    /// The buffer as a host vector (copied from the device where it lives there).
    fn host(&self) -> Vec<f32> {
        match self {
            Momentum::Host(v) => v.clone(),
            #[cfg(feature = "cuda")]
            Momentum::Device(b) => b
                .download::<f32>()
                .unwrap_or_else(|e| panic!("SGD state on cuda:{}: {e}", b.gpu().ordinal())),
        }
    }
}

impl Momentum {
    /// The buffer on the host, moved there if it was on a device (its weight moved back to the CPU, or
    /// its rounding runs on the host).
    fn host_mut(&mut self) -> &mut Vec<f32> {
        #[cfg(feature = "cuda")]
        if let Momentum::Device(_) = self {
            *self = Momentum::Host(self.host());
        }
        match self {
            Momentum::Host(v) => v,
            #[cfg(feature = "cuda")]
            Momentum::Device(_) => unreachable!("moved to the host above"),
        }
    }
}

/// One fused SGD step of a weight on a device with its momentum buffer kept there (moved there from the
/// host on the first step). Gives the buffer back, and whether the step was taken: it is not when the
/// gradient is on the CPU or the weight's rounding runs on the host.
#[cfg(feature = "cuda")]
fn step_on_device(
    param: &Param,
    grad: &Tensor<f32>,
    buffer: Option<Momentum>,
    hp: &SgdStep,
) -> (Option<Momentum>, bool) {
    use amp_kernels::DType;
    use amp_kernels::cuda::{self, DeviceBuffer};
    let Some(g) = grad.storage().buffer() else {
        return (buffer, false);
    };
    let gpu = g.gpu().clone();
    let first = buffer.is_none();
    let device_buffer = match buffer {
        Some(Momentum::Device(b)) => Some(Ok(b)),
        Some(Momentum::Host(v)) => Some(DeviceBuffer::upload(&gpu, &v)),
        None if hp.momentum != 0.0 => Some(DeviceBuffer::zeros(&gpu, DType::F32, g.len())),
        None => None,
    };
    let mut device_buffer = device_buffer
        .transpose()
        .unwrap_or_else(|e| panic!("SGD state on cuda:{}: {e}", gpu.ordinal()));
    // Without momentum the buffer is not used (a loaded one is kept, as on the host).
    let used = if hp.momentum != 0.0 {
        device_buffer.as_mut()
    } else {
        None
    };
    let done = param.update_on_device(|w| cuda::sgd_step(w, g, used, first, hp));
    (device_buffer.map(Momentum::Device), done)
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
            buffers: params.iter().map(|_| None).collect(),
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
            let first = buffer.is_none();
            #[cfg(feature = "cuda")]
            {
                let (kept, done) = step_on_device(param, &grad, buffer.take(), &hp);
                *buffer = kept;
                if done {
                    continue;
                }
            }
            let buf = match buffer {
                _ if hp.momentum == 0.0 => None,
                None => Some(buffer.insert(Momentum::Host(vec![0.0; param.numel()]))),
                Some(b) => Some(b),
            };
            let buf = buf.map(|b| b.host_mut().as_mut_slice());
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
            .filter_map(|(i, (p, b))| {
                b.as_ref().map(|b| {
                    (
                        format!("{}.momentum_buffer", param_key(i, p)),
                        Tensor::from_vec(b.host(), p.shape()),
                    )
                })
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
                Some(Momentum::Host(
                    find_buffer(state, &name, &p.shape())?.to_vec(),
                ))
            } else {
                None
            });
            known.push(name);
        }
        reject_unknown(state, &known)?;
        self.buffers = buffers;
        self.steps = state.steps;
        Ok(())
    }
}
