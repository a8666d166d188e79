//! Reductions along one dimension, accumulating in the element's `Acc` type (f32 for bf16/f16).

use super::Dim3;
use crate::{Accum, Elem, Float};
use rayon::prelude::*;

/// A reduction along one dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    /// Sum (0 for an empty dimension).
    Sum,
    /// Arithmetic mean (NaN for an empty dimension).
    Mean,
    /// Maximum; NaN if any element is NaN.
    Max,
    /// Minimum; NaN if any element is NaN.
    Min,
}

/// Runs `body(outer_block, out_block)` for each outer block, in parallel when there is enough work.
fn per_outer<O: Send>(d: Dim3, out: &mut [O], body: impl Fn(usize, &mut [O]) + Sync) {
    assert_eq!(
        out.len(),
        d.outer * d.inner,
        "reduction output length does not match the layout"
    );
    if d.inner == 0 || d.outer == 0 {
        return;
    }
    if d.numel() < super::PARALLEL_MIN {
        out.chunks_mut(d.inner)
            .enumerate()
            .for_each(|(o, c)| body(o, c));
    } else {
        out.par_chunks_mut(d.inner)
            .enumerate()
            .for_each(|(o, c)| body(o, c));
    }
}

/// Sums a contiguous run with eight partial sums (faster and more accurate than one running sum).
#[inline]
fn sum_run<E: Float>(x: &[E]) -> E::Acc {
    let mut partial = [E::Acc::ZERO; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (p, &v) in partial.iter_mut().zip(c) {
            *p += v.to_acc();
        }
    }
    let mut total = E::Acc::ZERO;
    for v in chunks.remainder() {
        total += v.to_acc();
    }
    let [a, b, c, d, e, f, g, h] = partial;
    total + (((a + b) + (c + d)) + ((e + f) + (g + h)))
}

/// Reduces `x` (laid out as `d`) along `d.size` into `out` (`d.outer × d.inner` elements).
pub fn reduce<I: Float, O: Elem>(op: Reduce, x: &[I], out: &mut [O], d: Dim3) {
    assert_eq!(
        x.len(),
        d.numel(),
        "reduce {op:?}: input length does not match the layout"
    );
    assert_eq!(
        out.len(),
        d.outer * d.inner,
        "reduction output length does not match the layout"
    );
    if super::simd::reduce(op, x, out, d) {
        return;
    }
    per_outer(d, out, |o, out| {
        let block = &x[o * d.size * d.inner..(o + 1) * d.size * d.inner];
        let mut acc = vec![
            match op {
                Reduce::Sum | Reduce::Mean => I::Acc::ZERO,
                Reduce::Max => I::Acc::NEG_INFINITY,
                Reduce::Min => I::Acc::INFINITY,
            };
            d.inner
        ];
        if d.inner == 1 && matches!(op, Reduce::Sum | Reduce::Mean) {
            acc[0] = sum_run(block);
        } else {
            for row in block.chunks_exact(d.inner) {
                for (a, &v) in acc.iter_mut().zip(row) {
                    let v = v.to_acc();
                    *a = match op {
                        Reduce::Sum | Reduce::Mean => *a + v,
                        Reduce::Max => a.max_nan(v),
                        Reduce::Min => a.min_nan(v),
                    };
                }
            }
        }
        let scale = I::Acc::c(1.0 / d.size as f64);
        for (o, a) in out.iter_mut().zip(acc) {
            let a = if op == Reduce::Mean { a * scale } else { a };
            *o = a.cast::<O>();
        }
    });
}

/// Index of the first maximum (`max = true`) or minimum along the dimension; a NaN wins (as in PyTorch).
pub fn arg_reduce<E: Float>(max: bool, x: &[E], out: &mut [i64], d: Dim3) {
    assert_eq!(
        x.len(),
        d.numel(),
        "arg_reduce: input length does not match the layout"
    );
    per_outer(d, out, |o, out| {
        for (i, slot) in out.iter_mut().enumerate() {
            let at = |s: usize| x[(o * d.size + s) * d.inner + i].to_acc();
            let mut best = 0;
            let mut best_v = at(0);
            for s in 1..d.size {
                let v = at(s);
                if best_v.is_nan() {
                    break;
                }
                let better = if max { v > best_v } else { v < best_v };
                if better || v.is_nan() {
                    best = s;
                    best_v = v;
                }
            }
            *slot = best as i64;
        }
    });
}

/// Inclusive prefix sums along the dimension: `out[s] = Σ_{t ≤ s} x[t]`, or with `reverse` the suffix
/// sums `out[s] = Σ_{t ≥ s} x[t]` (the backward of a prefix sum). Accumulates in `I::Acc`.
pub fn cumsum<I: Float, O: Elem>(x: &[I], out: &mut [O], d: Dim3, reverse: bool) {
    assert!(
        x.len() == d.numel() && out.len() == d.numel(),
        "cumsum: lengths do not match the layout"
    );
    let block = d.size * d.inner;
    if block == 0 {
        return;
    }
    let scan = |out: &mut [O], x: &[I], s: usize, acc: &mut [I::Acc]| {
        let (orow, xrow) = (
            &mut out[s * d.inner..][..d.inner],
            &x[s * d.inner..][..d.inner],
        );
        for ((o, a), &v) in orow.iter_mut().zip(acc.iter_mut()).zip(xrow) {
            *a += v.to_acc();
            *o = a.cast::<O>();
        }
    };
    out.par_chunks_mut(block)
        .zip(x.par_chunks(block))
        .for_each(|(out, x)| {
            let mut acc = vec![I::Acc::ZERO; d.inner];
            if reverse {
                (0..d.size).rev().for_each(|s| scan(out, x, s, &mut acc));
            } else {
                (0..d.size).for_each(|s| scan(out, x, s, &mut acc));
            }
        });
}

/// `ln Σ exp(x)` along the dimension, stable for large inputs (shifted by the maximum).
pub fn logsumexp<I: Float, O: Elem>(x: &[I], out: &mut [O], d: Dim3) {
    assert_eq!(
        x.len(),
        d.numel(),
        "logsumexp: input length does not match the layout"
    );
    assert_eq!(
        out.len(),
        d.outer * d.inner,
        "reduction output length does not match the layout"
    );
    if super::simd::logsumexp(x, out, d) {
        return;
    }
    per_outer(d, out, |o, out| {
        for (i, slot) in out.iter_mut().enumerate() {
            let at = |s: usize| x[(o * d.size + s) * d.inner + i].to_acc();
            let mut m = I::Acc::NEG_INFINITY;
            for s in 0..d.size {
                m = m.max_nan(at(s));
            }
            let value = if m.is_nan() || m == I::Acc::NEG_INFINITY || m == I::Acc::INFINITY {
                m
            } else {
                let mut sum = I::Acc::ZERO;
                for s in 0..d.size {
                    sum += (at(s) - m).exp();
                }
                m + sum.ln()
            };
            *slot = value.cast::<O>();
        }
    });
}
