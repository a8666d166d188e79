//! Training-step kernels: the fused unscale + non-finite check of the loss scaler, and the fused
//! parameter updates of SGD and Adam/AdamW. Each makes one pass over its buffers.

use super::AdamConsts;
use crate::{Accum, Float};
use rayon::prelude::*;

/// Chunk size for splitting optimizer work across threads.
const CHUNK: usize = 1 << 14;

/// Multiplies every element by `inv_scale` (in the accumulation type) and returns whether any element was
/// NaN or infinite before scaling: the loss scaler's unscale and overflow check in one pass. Elements are
/// unscaled even when some are non-finite (as PyTorch's kernel does); the caller then skips the step.
pub fn unscale_and_check<E: Float>(grad: &mut [E], inv_scale: f64) -> bool {
    if let Some(non_finite) = super::simd::unscale_and_check(grad, inv_scale) {
        return non_finite;
    }
    let inv = E::Acc::c(inv_scale);
    let scale_chunk = |chunk: &mut [E]| {
        let mut non_finite = false;
        for g in chunk.iter_mut() {
            let v = g.to_acc();
            non_finite |= !v.is_finite();
            *g = E::from_acc(v * inv);
        }
        non_finite
    };
    if grad.len() < super::PARALLEL_MIN {
        scale_chunk(grad)
    } else {
        grad.par_chunks_mut(CHUNK)
            .map(scale_chunk)
            .reduce(|| false, |a, b| a | b)
    }
}

/// Hyperparameters of one Adam/AdamW step (PyTorch's `torch.optim.Adam`/`AdamW`, non-fused algorithm).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// Learning rate for this step.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Weight decay: added to the gradient (Adam) or applied to the weight directly (AdamW).
    pub weight_decay: f64,
    /// AdamW's decoupled decay `w -= lr·wd·w` instead of Adam's `g += wd·w`.
    pub decoupled: bool,
    /// The 1-based number of this step (for bias correction).
    pub step: u64,
}

impl AdamConsts {
    /// The constants of one step (bias corrections in f64, then f32), shared by every Adam kernel
    /// (the CPU's and the CUDA one) so they all compute the same update.
    pub(crate) fn of(hp: &AdamStep) -> Self {
        let t = hp.step.max(1) as i32;
        let bias1 = 1.0 - hp.beta1.powi(t);
        let bias2_sqrt = (1.0 - hp.beta2.powi(t)).sqrt();
        let (l2, decay) = if hp.decoupled {
            (0.0f32, (1.0 - hp.lr * hp.weight_decay) as f32)
        } else {
            (hp.weight_decay as f32, 1.0f32)
        };
        AdamConsts {
            beta1: hp.beta1 as f32,
            beta2: hp.beta2 as f32,
            eps: hp.eps as f32,
            step_size: (hp.lr / bias1) as f32,
            inv_bias2_sqrt: (1.0 / bias2_sqrt) as f32,
            l2,
            decay,
        }
    }
}

/// One Adam/AdamW update of `param` in place, with first and second moments `m`, `v` (all f32):
///
/// ```text
/// g = grad (+ wd·w for Adam);  w *= 1 - lr·wd (AdamW)
/// m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²
/// w -= lr/(1-β1^t) · m / (√v/√(1-β2^t) + eps)
/// ```
pub fn adam_step(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], hp: &AdamStep) {
    let n = param.len();
    assert!(
        grad.len() == n && m.len() == n && v.len() == n,
        "adam_step: buffer lengths differ"
    );
    let consts = AdamConsts::of(hp);
    let AdamConsts {
        beta1,
        beta2,
        eps,
        step_size,
        inv_bias2_sqrt,
        l2,
        decay,
    } = consts;
    if super::simd::adam_step(param, grad, m, v, consts) {
        return;
    }
    let update = |(((w, &g), m), v): (((&mut f32, &f32), &mut f32), &mut f32)| {
        let g = g + l2 * *w;
        *w *= decay;
        *m = beta1 * *m + (1.0 - beta1) * g;
        *v = beta2 * *v + (1.0 - beta2) * g * g;
        *w -= step_size * *m / (v.sqrt() * inv_bias2_sqrt + eps);
    };
    if n < super::PARALLEL_MIN {
        param
            .iter_mut()
            .zip(grad)
            .zip(m.iter_mut())
            .zip(v.iter_mut())
            .for_each(update);
    } else {
        param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((w, g), m), v)| {
                w.iter_mut()
                    .zip(g)
                    .zip(m.iter_mut())
                    .zip(v.iter_mut())
                    .for_each(update)
            });
    }
}

/// Hyperparameters of one SGD step (PyTorch's `torch.optim.SGD`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep {
    /// Learning rate for this step.
    pub lr: f64,
    /// Momentum factor (0 for plain SGD).
    pub momentum: f64,
    /// Dampening of the momentum.
    pub dampening: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

/// One SGD update of `param` in place. With momentum, `buffer` holds the momentum buffer and
/// `first_step` says it is not yet initialized (PyTorch copies the first gradient into it):
///
/// ```text
/// g = grad + wd·w;  b = first ? g : μ·b + (1-dampening)·g;  g = nesterov ? g + μ·b : b;  w -= lr·g
/// ```
pub fn sgd_step(
    param: &mut [f32],
    grad: &[f32],
    buffer: Option<&mut [f32]>,
    first_step: bool,
    hp: &SgdStep,
) {
    let n = param.len();
    assert_eq!(
        grad.len(),
        n,
        "sgd_step: gradient length differs from the parameter's"
    );
    let (lr, wd, mu, damp) = (
        hp.lr as f32,
        hp.weight_decay as f32,
        hp.momentum as f32,
        hp.dampening as f32,
    );
    if let Some(b) = &buffer {
        assert_eq!(
            b.len(),
            n,
            "sgd_step: momentum buffer length differs from the parameter's"
        );
    }
    let consts = super::simd::SgdConsts {
        lr,
        weight_decay: wd,
        momentum: mu,
        dampening: damp,
        nesterov: hp.nesterov,
        first_step,
    };
    let buffer = match super::simd::sgd_step(param, grad, buffer, consts) {
        Ok(()) => return,
        Err(buffer) => buffer,
    };
    match buffer {
        None => param
            .iter_mut()
            .zip(grad)
            .for_each(|(w, &g)| *w -= lr * (g + wd * *w)),
        Some(buffer) => {
            assert_eq!(
                buffer.len(),
                n,
                "sgd_step: momentum buffer length differs from the parameter's"
            );
            for ((w, &g), b) in param.iter_mut().zip(grad).zip(buffer.iter_mut()) {
                let g = g + wd * *w;
                *b = if first_step {
                    g
                } else {
                    mu * *b + (1.0 - damp) * g
                };
                let d = if hp.nesterov { g + mu * *b } else { *b };
                *w -= lr * d;
            }
        }
    }
}
