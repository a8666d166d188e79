//! Adam and AdamW with 8-bit states (bitsandbytes' `Adam8bit`/`AdamW8bit`): 2.03 bytes of state per
//! parameter instead of 8.

use super::adam::AdamConfig;
use super::optimizer::{
    Optimizer, OptimizerState, OptimizerStateError, find_buffer, param_key, reject_unknown,
};
use super::state_buffer::StateBuffer;
use super::state8::{Block8, StatePolicy, load_step, width_mismatch};
use crate::autograd::Grads;
use crate::param::Param;
use crate::tensor::Tensor;
use amp_kernels::cpu::{self, AdamStep, Codebook};

/// Adam or AdamW whose moments are stored block-wise in 8 bits, as bitsandbytes' `Adam8bit` and
/// `AdamW8bit` store them: blocks of 256 elements, an f32 absmax per block, the first moment in the
/// signed dynamic codebook and the second in the unsigned one ([`Codebook`]), requantized by exact
/// nearest-entry search with the first moment's sign kept. Each step makes one fused pass per block:
/// dequantize, update in f32, new absmax, requantize ([`cpu::adam8bit_step`], which gives the formula).
///
/// Parameters smaller than [`StatePolicy`]'s threshold (4096 elements by default), and those it
/// names, keep f32 moments and are updated exactly as [`Adam`](super::Adam) updates them. That
/// includes Adam's handling of a NaN/inf gradient element (it reaches the moments) and of coupled
/// weight decay, which differ from the 8-bit blocks below; a [`Trainer`](super::Trainer) never
/// steps on non-finite gradients in any mode, so in training only the decay order can differ.
///
/// Compared with bitsandbytes:
/// - the update, the codebooks, the block size, the sign fix, `min_8bit_size` and the handling of a
///   NaN/inf gradient element (its moments become 0 and its weight is not changed) are the same;
/// - weight decay follows [`AdamConfig::decoupled`]: decoupled for `AdamConfig::adamw`, added to the
///   gradient for `AdamConfig::adam` (bitsandbytes decouples it even in `Adam8bit`), so this is a
///   drop-in replacement for [`Adam`](super::Adam) with the same settings;
/// - the per-step constants are computed in f64 and rounded once (bitsandbytes: f32 `powf`), and a block
///   of zero moments gets the code of 0.0 (bitsandbytes divides by its zero absmax).
///
/// Checkpoints hold the 8-bit form: `<param>.state1`/`.state2` (bytes, the parameter's shape),
/// `<param>.absmax1`/`.absmax2` (f32, one per block) and `<param>.step`; f32 moments are saved as
/// [`Adam`](super::Adam) saves them. A run resumed from one continues bit for bit.
///
/// ```
/// use amp_runtime::train::{AdamConfig, AdamW8bit, Optimizer, StatePolicy};
/// use amp_runtime::{Param, Rng, Tensor};
///
/// let mut rng = Rng::new(0);
/// let w = Param::named("w", Tensor::<f32>::randn([64, 128], &mut rng));
/// let b = Param::named("b", Tensor::<f32>::zeros([128]));
/// let mut opt = AdamW8bit::new(vec![w.clone(), b.clone()], AdamConfig::adamw(1e-3, 0.01));
/// let grads = (&w.value().sum(1) + &b.value().sum(..)).square().sum(..).backward();
/// opt.step(&grads);
/// // w: 8192 codes per moment + 32 scales each; b (128 < 4096 elements): f32 moments.
/// assert_eq!(opt.state_bytes(), 2 * (8192 + 4 * 32) + 2 * 4 * 128 + 2 * 4);
/// ```
#[derive(Debug)]
pub struct Adam8bit {
    params: Vec<Param>,
    config: AdamConfig,
    policy: StatePolicy,
    states: Vec<ParamState>,
    steps: u64,
}

/// AdamW with 8-bit states: [`Adam8bit`] given [`AdamConfig::adamw`]. (An alias: the decay is
/// decoupled because of the config, not because of the name; `AdamW8bit::new(ps, AdamConfig::adam(..))`
/// is an `Adam8bit` with L2 decay.)
pub type AdamW8bit = Adam8bit;

#[derive(Debug, Default)]
struct ParamState {
    /// Updates of this parameter so far.
    step: u64,
    moments: Moments,
}

#[derive(Debug, Default)]
enum Moments {
    /// Not stepped yet.
    #[default]
    None,
    Quantized {
        m: Block8,
        v: Block8,
    },
    /// f32 moments (parameters the policy keeps at 32 bits), where the weight is updated.
    Full {
        m: StateBuffer,
        v: StateBuffer,
    },
}

impl Moments {
    fn bytes(&self) -> usize {
        match self {
            Moments::None => 0,
            Moments::Quantized { m, v } => m.bytes() + v.bytes(),
            Moments::Full { m, v } => 4 * (m.len() + v.len()),
        }
    }
}

impl Adam8bit {
    /// An optimizer for `params` with the default [`StatePolicy`] (panics on invalid settings, naming
    /// them).
    #[track_caller]
    pub fn new(params: Vec<Param>, config: AdamConfig) -> Self {
        // Validates the settings with Adam's messages.
        drop(super::Adam::new(Vec::new(), config));
        Adam8bit {
            states: params.iter().map(|_| ParamState::default()).collect(),
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
        policy.check_settable("Adam8bit", self.steps, &self.params);
        self.policy = policy;
        self
    }

    /// The settings.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// Which parameters get 8-bit states.
    pub fn state_policy(&self) -> &StatePolicy {
        &self.policy
    }

    fn kind(&self) -> &'static str {
        if self.config.decoupled {
            "adamw8bit"
        } else {
            "adam8bit"
        }
    }
}

impl Optimizer for Adam8bit {
    fn params(&self) -> &[Param] {
        &self.params
    }

    fn step(&mut self, grads: &Grads) {
        let lr = self.lr();
        for (param, state) in self.params.iter().zip(&mut self.states) {
            let Some(grad) = grads.get(param) else {
                continue;
            };
            if let Moments::None = state.moments {
                let n = param.numel();
                state.moments = if self.policy.is_8bit(param) {
                    Moments::Quantized {
                        m: Block8::zeros(n, Codebook::signed()),
                        v: Block8::zeros(n, Codebook::unsigned()),
                    }
                } else {
                    Moments::Full {
                        m: StateBuffer::Host(vec![0.0; n]),
                        v: StateBuffer::Host(vec![0.0; n]),
                    }
                };
            }
            state.step += 1;
            let hp = AdamStep {
                lr,
                beta1: self.config.betas.0,
                beta2: self.config.betas.1,
                eps: self.config.eps,
                weight_decay: self.config.weight_decay,
                decoupled: self.config.decoupled,
                step: state.step,
            };
            let n = param.numel();
            // A weight and gradient on a device: one fused step there, the states kept there.
            #[cfg(feature = "cuda")]
            if let Some(g) = grad.storage().buffer() {
                let gpu = g.gpu();
                let done = match &mut state.moments {
                    Moments::Quantized { m, v } => {
                        let (m, v) = (m.device_view(gpu), v.device_view(gpu));
                        param
                            .update_on_device(|w| amp_kernels::cuda::adam8bit_step(w, g, m, v, &hp))
                    }
                    Moments::Full { m, v } => {
                        let (m, v) = (
                            m.device_mut(gpu, n, "Adam8bit"),
                            v.device_mut(gpu, n, "Adam8bit"),
                        );
                        param.update_on_device(|w| amp_kernels::cuda::adam_step(w, g, m, v, &hp))
                    }
                    Moments::None => unreachable!("initialized above"),
                };
                if done {
                    continue;
                }
            }
            match &mut state.moments {
                Moments::Quantized { m, v } => param
                    .update(|w| cpu::adam8bit_step(w, &grad.host_data(), m.view(), v.view(), &hp)),
                Moments::Full { m, v } => {
                    let (m, v) = (m.host_mut(n, "Adam8bit"), v.host_mut(n, "Adam8bit"));
                    param.update(|w| cpu::adam_step(w, &grad.host_data(), m, v, &hp))
                }
                Moments::None => unreachable!("initialized above"),
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
            kind: self.kind().into(),
            steps: self.steps,
            ..OptimizerState::default()
        };
        for (i, (p, s)) in self.params.iter().zip(&self.states).enumerate() {
            let key = param_key(i, p);
            let shape = p.shape();
            match &s.moments {
                Moments::None => continue,
                Moments::Quantized { m, v } => {
                    m.save(&key, 1, &shape, &mut out);
                    v.save(&key, 2, &shape, &mut out);
                }
                Moments::Full { m, v } => {
                    let full = |b: &str, x: &StateBuffer| {
                        (
                            format!("{key}.{b}"),
                            Tensor::from_vec(x.to_host("Adam8bit"), shape.clone()),
                        )
                    };
                    out.tensors.push(full("exp_avg", m));
                    out.tensors.push(full("exp_avg_sq", v));
                }
            }
            out.tensors.push((
                format!("{key}.step"),
                Tensor::from_vec(vec![s.step as f32], [1]),
            ));
        }
        out
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<(), OptimizerStateError> {
        if state.kind != self.kind() {
            return Err(OptimizerStateError::Kind {
                saved: state.kind.clone(),
                this: self.kind(),
            });
        }
        let mut states = Vec::with_capacity(self.params.len());
        let mut known = Vec::new();
        let has = |name: &str| {
            state.tensors.iter().any(|(n, _)| n == name)
                || state.bytes.iter().any(|(n, _)| n == name)
        };
        for (i, p) in self.params.iter().enumerate() {
            let key = param_key(i, p);
            let shape = p.shape();
            let step_name = format!("{key}.step");
            known.push(step_name.clone());
            let eight = self.policy.is_8bit(p);
            let [state1, _] = Block8::names(&key, 1);
            let exp_avg = format!("{key}.exp_avg");
            if eight && has(&exp_avg) {
                return Err(width_mismatch(exp_avg, false));
            }
            if !eight && has(&state1) {
                return Err(width_mismatch(state1, true));
            }
            let moments = if !has(&step_name) {
                Moments::None
            } else if eight {
                known.extend(Block8::names(&key, 1));
                known.extend(Block8::names(&key, 2));
                Moments::Quantized {
                    m: Block8::load(state, &key, 1, &shape)?,
                    v: Block8::load(state, &key, 2, &shape)?,
                }
            } else {
                let sq = format!("{key}.exp_avg_sq");
                let m = StateBuffer::Host(find_buffer(state, &exp_avg, &shape)?.to_vec());
                let v = StateBuffer::Host(find_buffer(state, &sq, &shape)?.to_vec());
                known.extend([exp_avg, sq]);
                Moments::Full { m, v }
            };
            let step = match moments {
                Moments::None => 0,
                _ => load_step(state, &step_name)?,
            };
            states.push(ParamState { step, moments });
        }
        reject_unknown(state, &known)?;
        self.states = states;
        self.steps = state.steps;
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        // The step counts are one f32 each, as saved.
        let counts = self.states.iter().filter(|s| s.step > 0).count();
        self.states.iter().map(|s| s.moments.bytes()).sum::<usize>() + 4 * counts
    }
}
