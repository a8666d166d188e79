//! The training-step kernels: fused unscale + non-finite check, and the Adam and SGD updates.
//!
//! Each is one pass over its buffers and does the scalar kernel's f32 operations in the same order
//! (no fused multiply-adds), so the results are bit-identical to the scalar path.

use super::super::PARALLEL_MIN;
use super::simd_kernel;
use super::{
    AdamConsts, Lane, SgdConsts, Simd, level, load_part, run, store_part, view_mut, with_view_mut,
};
use crate::Elem;
use rayon::prelude::*;

/// Elements per parallel task (the scalar kernels' chunk).
const CHUNK: usize = 1 << 14;

struct Unscale<'a, T> {
    grad: &'a mut [T],
    inv: f32,
}

simd_kernel! {
    impl[T: Lane] Unscale<'_, T> => bool;
    fn exec(this, s: S) {
        let w = S::LANES;
        let inv = s.splat(this.inv);
        // `v - v` is 0 for finite `v` and NaN for ±inf and NaN; NaN lanes accumulate in a mask.
        let zero = s.splat(0.0);
        let mut bad = s.is_nan(zero);
        let mut chunks = this.grad.chunks_exact_mut(w);
        for c in &mut chunks {
            let v = T::load(s, c);
            bad = s.mask_or(bad, s.is_nan(s.sub(v, v)));
            T::store(s, s.mul(v, inv), c);
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let v = load_part(s, tail, 0.0);
            bad = s.mask_or(bad, s.is_nan(s.sub(v, v)));
            store_part(s, s.mul(v, inv), tail);
        }
        s.any(bad)
    }
}

/// `cpu::unscale_and_check` for f32/bf16/f16: `Some(any non-finite)`, or `None` for the scalar path.
pub(crate) fn unscale_and_check<E: Elem>(grad: &mut [E], inv_scale: f64) -> Option<bool> {
    let level = level()?;
    let inv = inv_scale as f32;
    Some(with_view_mut!(view_mut(grad)?, |grad| {
        if grad.len() < PARALLEL_MIN {
            run(level, Unscale { grad, inv })
        } else {
            grad.par_chunks_mut(CHUNK)
                .map(|grad| run(level, Unscale { grad, inv }))
                .reduce(|| false, |a, b| a | b)
        }
    }))
}

struct Adam<'a> {
    w: &'a mut [f32],
    g: &'a [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
    k: AdamConsts,
}

simd_kernel! {
    impl[] Adam<'_> => ();
    fn exec(this, s: S) {
        let k = this.k;
        let (b1, b2) = (s.splat(k.beta1), s.splat(k.beta2));
        let (c1, c2) = (s.splat(1.0 - k.beta1), s.splat(1.0 - k.beta2));
        let (eps, step, ib2) = (
            s.splat(k.eps),
            s.splat(k.step_size),
            s.splat(k.inv_bias2_sqrt),
        );
        let (l2, decay) = (s.splat(k.l2), s.splat(k.decay));
        // The scalar update, operation for operation:
        //   g += l2·w;  w *= decay;  m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g·g;
        //   w -= step·m / (√v·ib2 + eps)
        let update = |w: <S as Simd>::V, g: <S as Simd>::V, m: <S as Simd>::V, v: <S as Simd>::V| {
            let g = s.add(g, s.mul(l2, w));
            let w = s.mul(w, decay);
            let m = s.add(s.mul(b1, m), s.mul(c1, g));
            let v = s.add(s.mul(b2, v), s.mul(s.mul(c2, g), g));
            let d = s.add(s.mul(s.sqrt(v), ib2), eps);
            (s.sub(w, s.div(s.mul(step, m), d)), m, v)
        };
        let w = S::LANES;
        let n = this.w.len();
        let body = n / w * w;
        let mut i = 0;
        while i < body {
            let r = i..i + w;
            let (nw, nm, nv) = update(
                s.load(&this.w[r.clone()]),
                s.load(&this.g[r.clone()]),
                s.load(&this.m[r.clone()]),
                s.load(&this.v[r.clone()]),
            );
            s.store(nw, &mut this.w[r.clone()]);
            s.store(nm, &mut this.m[r.clone()]);
            s.store(nv, &mut this.v[r]);
            i += w;
        }
        if body < n {
            let (nw, nm, nv) = update(
                load_part(s, &this.w[body..], 0.0),
                load_part(s, &this.g[body..n], 0.0),
                load_part(s, &this.m[body..], 0.0),
                load_part(s, &this.v[body..], 0.0),
            );
            store_part(s, nw, &mut this.w[body..]);
            store_part(s, nm, &mut this.m[body..]);
            store_part(s, nv, &mut this.v[body..]);
        }
    }
}

/// `cpu::adam_step` with its constants already derived; `false` for the scalar path.
pub(crate) fn adam_step(
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    k: AdamConsts,
) -> bool {
    let Some(level) = level() else {
        return false;
    };
    if param.len() < PARALLEL_MIN {
        run(
            level,
            Adam {
                w: param,
                g: grad,
                m,
                v,
                k,
            },
        );
    } else {
        param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((w, g), m), v)| run(level, Adam { w, g, m, v, k }));
    }
    true
}

struct Sgd<'a> {
    w: &'a mut [f32],
    g: &'a [f32],
    /// The momentum buffer (empty without momentum).
    b: &'a mut [f32],
    k: SgdConsts,
}

simd_kernel! {
    impl[] Sgd<'_> => ();
    fn exec(this, s: S) {
        let k = this.k;
        let (lr, wd, mu) = (s.splat(k.lr), s.splat(k.weight_decay), s.splat(k.momentum));
        let damp = s.splat(1.0 - k.dampening);
        let momentum = !this.b.is_empty();
        // w -= lr·(g + wd·w), with the momentum buffer in between when there is one.
        let update = |w: <S as Simd>::V, g: <S as Simd>::V, b: <S as Simd>::V| {
            let g = s.add(g, s.mul(wd, w));
            if !momentum {
                return (s.sub(w, s.mul(lr, g)), b);
            }
            let b = if k.first_step {
                g
            } else {
                s.add(s.mul(mu, b), s.mul(damp, g))
            };
            let d = if k.nesterov {
                s.add(g, s.mul(mu, b))
            } else {
                b
            };
            (s.sub(w, s.mul(lr, d)), b)
        };
        let w = S::LANES;
        let n = this.w.len();
        let body = n / w * w;
        let zero = s.splat(0.0);
        let mut i = 0;
        while i < body {
            let r = i..i + w;
            let b = if momentum {
                s.load(&this.b[r.clone()])
            } else {
                zero
            };
            let (nw, nb) = update(s.load(&this.w[r.clone()]), s.load(&this.g[r.clone()]), b);
            s.store(nw, &mut this.w[r.clone()]);
            if momentum {
                s.store(nb, &mut this.b[r]);
            }
            i += w;
        }
        if body < n {
            let b = if momentum {
                load_part(s, &this.b[body..], 0.0)
            } else {
                zero
            };
            let (nw, nb) = update(
                load_part(s, &this.w[body..], 0.0),
                load_part(s, &this.g[body..n], 0.0),
                b,
            );
            store_part(s, nw, &mut this.w[body..]);
            if momentum {
                store_part(s, nb, &mut this.b[body..]);
            }
        }
    }
}

/// `cpu::sgd_step` with its constants derived; `buffer` is `None` without momentum. Declining (for the
/// scalar path) hands the buffer back. Parallel for large parameters, unlike the scalar loop: each
/// element is independent, so the result is the same.
pub(crate) fn sgd_step<'b>(
    param: &mut [f32],
    grad: &[f32],
    buffer: Option<&'b mut [f32]>,
    k: SgdConsts,
) -> Result<(), Option<&'b mut [f32]>> {
    let Some(level) = level() else {
        return Err(buffer);
    };
    let mut none: [f32; 0] = [];
    let buffer = buffer.unwrap_or(&mut none);
    let with_momentum = !buffer.is_empty() || param.is_empty();
    if param.len() < PARALLEL_MIN {
        run(
            level,
            Sgd {
                w: param,
                g: grad,
                b: buffer,
                k,
            },
        );
    } else if with_momentum {
        param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(buffer.par_chunks_mut(CHUNK))
            .for_each(|((w, g), b)| run(level, Sgd { w, g, b, k }));
    } else {
        param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .for_each(|(w, g)| {
                run(
                    level,
                    Sgd {
                        w,
                        g,
                        b: &mut [],
                        k,
                    },
                )
            });
    }
    Ok(())
}
