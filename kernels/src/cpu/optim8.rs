//! The fused updates of the 8-bit optimizers: for each block of [`QUANT_BLOCK`] elements, dequantize the
//! states, update them and the weights in f32, find the new block absmax, requantize. The states never
//! exist in f32 outside one block.
//!
//! The arithmetic is bitsandbytes' (`kOptimizerStatic8bit2StateBlockwise` and `…1StateBlockwise` in
//! `csrc/kernels.cu`), in f32 with the operations in the order given on each function; the per-step
//! constants are computed in f64 and rounded to f32 once. A gradient element that is NaN or infinite
//! zeroes that element's states and leaves its weight unchanged, as bitsandbytes does.

use super::optim::{AdamStep, SgdStep};
use super::quant8::{Codebook, QUANT_BLOCK, Quantized, check_lengths, quantize_block};
use rayon::prelude::*;

/// Whether full blocks take the AVX-512 path (bit-identical to the scalar one below).
fn vector_kernels() -> bool {
    #[cfg(target_arch = "x86_64")]
    return super::simd::optim8::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Blocks per parallel task (16384 elements, the f32 optimizers' chunk).
const TASK_BLOCKS: usize = 64;

/// Adam's constants for one step, as bitsandbytes derives them (shared by the scalar, AVX-512 and
/// device kernels).
#[derive(Clone, Copy)]
pub(crate) struct Adam8Consts {
    pub(crate) beta1: f32,
    pub(crate) beta2: f32,
    /// `-lr·√(1-β2^t) / (1-β1^t)`.
    pub(crate) step_size: f32,
    /// `√(1-β2^t)·eps`.
    pub(crate) eps_hat: f32,
    /// Adam's L2 term added to the gradient (0 for AdamW).
    pub(crate) l2: f32,
    /// AdamW's factor `1 - lr·wd` applied after the update (1 for Adam or without decay).
    pub(crate) decay: f32,
}

impl Adam8Consts {
    pub(crate) fn new(hp: &AdamStep) -> Self {
        let t = hp.step.max(1) as i32;
        let correction1 = 1.0 - hp.beta1.powi(t);
        let correction2 = (1.0 - hp.beta2.powi(t)).sqrt();
        let (l2, decay) = if hp.decoupled {
            (0.0, 1.0 - hp.lr * hp.weight_decay)
        } else {
            (hp.weight_decay, 1.0)
        };
        Adam8Consts {
            beta1: hp.beta1 as f32,
            beta2: hp.beta2 as f32,
            step_size: (-hp.lr * correction2 / correction1) as f32,
            eps_hat: (correction2 * hp.eps) as f32,
            l2: l2 as f32,
            decay: decay as f32,
        }
    }
}

/// One Adam/AdamW step with block-quantized moments: `m` in the [signed](Codebook::signed) codebook
/// (with the sign fix), `v` in the [unsigned](Codebook::unsigned) one. Per element, in f32:
///
/// ```text
/// if g is NaN or ±inf: m = v = 0, w unchanged
/// g += l2·w                         (Adam with weight decay; l2 = 0 for AdamW)
/// m = m·β1 + (1-β1)·g;   v = v·β2 + (1-β2)·g·g
/// w = w + step_size·(m / (√v + eps_hat))
/// w = w·(1 - lr·wd)                 (AdamW with weight decay)
/// ```
///
/// with `step_size = -lr·√(1-β2^t)/(1-β1^t)` and `eps_hat = √(1-β2^t)·eps` (f64, then f32). The new
/// absmax of each block is taken over the updated m (and v) before they are requantized.
///
/// ```
/// use amp_kernels::cpu::{AdamStep, Quantized, adam8bit_step};
/// let (mut w, g) = (vec![1.0f32; 300], vec![0.5f32; 300]);
/// let (mut m, mut v) = (vec![127u8; 300], vec![0u8; 300]); // zero states
/// let (mut am, mut av) = (vec![0.0f32; 2], vec![0.0f32; 2]);
/// let hp = AdamStep { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: true, step: 1 };
/// adam8bit_step(&mut w, &g, Quantized { codes: &mut m, absmax: &mut am }, Quantized { codes: &mut v, absmax: &mut av }, &hp);
/// assert!((w[0] - 0.9).abs() < 1e-5); // Adam's first step moves by lr
/// ```
#[track_caller]
pub fn adam8bit_step(
    param: &mut [f32],
    grad: &[f32],
    m: Quantized<'_>,
    v: Quantized<'_>,
    hp: &AdamStep,
) {
    let n = param.len();
    if grad.len() != n {
        panic!(
            "adam8bit_step: gradient of {} elements for a parameter of {n}",
            grad.len()
        );
    }
    check_lengths("adam8bit_step (first moment)", n, m.codes, m.absmax);
    check_lengths("adam8bit_step (second moment)", n, v.codes, v.absmax);
    let k = Adam8Consts::new(hp);
    let vector = vector_kernels();
    let task = TASK_BLOCKS * QUANT_BLOCK;
    param
        .par_chunks_mut(task)
        .zip(grad.par_chunks(task))
        .zip(m.codes.par_chunks_mut(task))
        .zip(m.absmax.par_chunks_mut(TASK_BLOCKS))
        .zip(v.codes.par_chunks_mut(task))
        .zip(v.absmax.par_chunks_mut(TASK_BLOCKS))
        .with_min_len(4)
        .for_each(|(((((w, g), mc), ma), vc), va)| {
            let blocks = w
                .chunks_mut(QUANT_BLOCK)
                .zip(g.chunks(QUANT_BLOCK))
                .zip(mc.chunks_mut(QUANT_BLOCK).zip(ma))
                .zip(vc.chunks_mut(QUANT_BLOCK).zip(va));
            for (((w, g), (mc, ma)), (vc, va)) in blocks {
                #[cfg(target_arch = "x86_64")]
                if vector && w.len() == QUANT_BLOCK {
                    // SAFETY: `vector` is true only when the CPU has AVX-512F, BW and VBMI.
                    unsafe { super::simd::optim8::adam_block(w, g, (mc, ma), (vc, va), &k) };
                    continue;
                }
                adam_block(w, g, (mc, ma), (vc, va), &k);
            }
        });
}

/// [`adam8bit_step`] on one block.
#[inline]
fn adam_block(
    w: &mut [f32],
    g: &[f32],
    (mc, ma): (&mut [u8], &mut f32),
    (vc, va): (&mut [u8], &mut f32),
    k: &Adam8Consts,
) {
    let (q1, q2) = (Codebook::signed(), Codebook::unsigned());
    let mut m = [0.0f32; QUANT_BLOCK];
    let mut v = [0.0f32; QUANT_BLOCK];
    let len = w.len();
    let (m, v) = (&mut m[..len], &mut v[..len]);
    for i in 0..len {
        let gi = g[i];
        if !gi.is_finite() {
            continue; // m[i] = v[i] = 0, w[i] untouched
        }
        let gi = gi + k.l2 * w[i];
        let mi = q1.value(mc[i]) * *ma * k.beta1 + (1.0 - k.beta1) * gi;
        let vi = q2.value(vc[i]) * *va * k.beta2 + (1.0 - k.beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] = (w[i] + k.step_size * (mi / (vi.sqrt() + k.eps_hat))) * k.decay;
    }
    *ma = quantize_block(m, q1, true, mc);
    *va = quantize_block(v, q2, false, vc);
}

/// One SGD-with-momentum step with a block-quantized momentum buffer in the [signed](Codebook::signed)
/// codebook (with the sign fix). Per element, in f32 (bitsandbytes' `SGD8bit` when dampening is 0 and
/// Nesterov is off; `first_step` makes the buffer the gradient, as PyTorch and bitsandbytes do):
///
/// ```text
/// if g is NaN or ±inf: b = 0, w unchanged
/// g += wd·w
/// b = first ? g : μ·b + (1-dampening)·g
/// w = w - lr·(nesterov ? g + μ·b : b)
/// ```
///
/// ```
/// use amp_kernels::cpu::{Quantized, SgdStep, momentum8bit_step};
/// let (mut w, g) = (vec![1.0f32; 10], vec![2.0f32; 10]);
/// let (mut b, mut a) = (vec![127u8; 10], vec![0.0f32; 1]);
/// let hp = SgdStep { lr: 0.1, momentum: 0.9, dampening: 0.0, weight_decay: 0.0, nesterov: false };
/// momentum8bit_step(&mut w, &g, Quantized { codes: &mut b, absmax: &mut a }, true, &hp);
/// assert!((w[0] - 0.8).abs() < 1e-6);
/// assert_eq!(a[0], 2.0);
/// ```
#[track_caller]
pub fn momentum8bit_step(
    param: &mut [f32],
    grad: &[f32],
    buffer: Quantized<'_>,
    first_step: bool,
    hp: &SgdStep,
) {
    let n = param.len();
    if grad.len() != n {
        panic!(
            "momentum8bit_step: gradient of {} elements for a parameter of {n}",
            grad.len()
        );
    }
    check_lengths("momentum8bit_step", n, buffer.codes, buffer.absmax);
    let (lr, wd, mu, damp) = (
        hp.lr as f32,
        hp.weight_decay as f32,
        hp.momentum as f32,
        (1.0 - hp.dampening) as f32,
    );
    let nesterov = hp.nesterov;
    let vector = vector_kernels();
    let task = TASK_BLOCKS * QUANT_BLOCK;
    param
        .par_chunks_mut(task)
        .zip(grad.par_chunks(task))
        .zip(buffer.codes.par_chunks_mut(task))
        .zip(buffer.absmax.par_chunks_mut(TASK_BLOCKS))
        .with_min_len(4)
        .for_each(|(((w, g), bc), ba)| {
            let q = Codebook::signed();
            let blocks = w
                .chunks_mut(QUANT_BLOCK)
                .zip(g.chunks(QUANT_BLOCK))
                .zip(bc.chunks_mut(QUANT_BLOCK).zip(ba));
            for ((w, g), (bc, ba)) in blocks {
                #[cfg(target_arch = "x86_64")]
                if vector && w.len() == QUANT_BLOCK {
                    let consts = (lr, wd, mu, damp);
                    // SAFETY: `vector` is true only when the CPU has AVX-512F, BW and VBMI.
                    unsafe {
                        super::simd::optim8::momentum_block(
                            w,
                            g,
                            (bc, ba),
                            consts,
                            first_step,
                            nesterov,
                        )
                    };
                    continue;
                }
                let mut b = [0.0f32; QUANT_BLOCK];
                let b = &mut b[..w.len()];
                for i in 0..w.len() {
                    if !g[i].is_finite() {
                        continue;
                    }
                    let gi = g[i] + wd * w[i];
                    let bi = if first_step {
                        gi
                    } else {
                        mu * (q.value(bc[i]) * *ba) + damp * gi
                    };
                    b[i] = bi;
                    let d = if nesterov { gi + mu * bi } else { bi };
                    w[i] -= lr * d;
                }
                *ba = quantize_block(b, q, true, bc);
            }
        });
}
