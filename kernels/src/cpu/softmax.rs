//! Softmax and log-softmax along one dimension, computed in the `Acc` type, and their backward passes.

use super::Dim3;
use crate::{Accum, Elem, Float};
use rayon::prelude::*;

/// Runs `body(block_index, block)` over the `d.outer` blocks of `out` (each `d.size × d.inner`).
fn per_block<O: Send>(d: Dim3, out: &mut [O], body: impl Fn(usize, &mut [O]) + Sync) {
    assert_eq!(
        out.len(),
        d.numel(),
        "softmax: output length does not match the layout"
    );
    let block = d.size * d.inner;
    if block == 0 {
        return;
    }
    if d.numel() < super::PARALLEL_MIN {
        out.chunks_mut(block)
            .enumerate()
            .for_each(|(o, c)| body(o, c));
    } else {
        out.par_chunks_mut(block)
            .enumerate()
            .for_each(|(o, c)| body(o, c));
    }
}

/// Shared forward: per column `i` of each block, the max and `Σ exp(x - max)`, then `finish`.
fn forward<I: Float, O: Elem>(
    x: &[I],
    out: &mut [O],
    d: Dim3,
    finish: impl Fn(I::Acc, I::Acc, I::Acc) -> I::Acc + Sync,
) {
    assert_eq!(
        x.len(),
        d.numel(),
        "softmax: input length does not match the layout"
    );
    per_block(d, out, |o, out| {
        let x = &x[o * d.size * d.inner..(o + 1) * d.size * d.inner];
        for i in 0..d.inner {
            let at = |s: usize| x[s * d.inner + i].to_acc();
            let mut m = I::Acc::NEG_INFINITY;
            for s in 0..d.size {
                m = m.max_nan(at(s));
            }
            if m == I::Acc::NEG_INFINITY {
                // All -inf: PyTorch yields NaN; shifting by 0 reproduces that (0/0, -inf - ln 0).
                m = I::Acc::ZERO;
            }
            let mut sum = I::Acc::ZERO;
            for s in 0..d.size {
                sum += (at(s) - m).exp();
            }
            for s in 0..d.size {
                out[s * d.inner + i] = finish(at(s), m, sum).cast::<O>();
            }
        }
    });
}

/// Whether the lengths match the layout, so a vector kernel may take over (the scalar code's asserts
/// report a mismatch otherwise).
fn fast_path<I, O>(x: &[I], out: &[O], d: Dim3) -> bool {
    x.len() == d.numel() && out.len() == d.numel()
}

/// [`fast_path`] for the backward kernels.
fn backward_fast_path<E>(y: &[E], dy: &[E], dx: &[E], d: Dim3) -> bool {
    y.len() == d.numel() && dy.len() == d.numel() && dx.len() == d.numel()
}

/// `out = exp(x) / Σ exp(x)` along the dimension.
pub fn softmax<I: Float, O: Elem>(x: &[I], out: &mut [O], d: Dim3) {
    if fast_path(x, out, d) && super::simd::softmax(x, out, d, false) {
        return;
    }
    forward(x, out, d, |v, m, sum| (v - m).exp() / sum);
}

/// `out = x - ln Σ exp(x)` along the dimension.
pub fn log_softmax<I: Float, O: Elem>(x: &[I], out: &mut [O], d: Dim3) {
    if fast_path(x, out, d) && super::simd::softmax(x, out, d, true) {
        return;
    }
    forward(x, out, d, |v, m, sum| v - m - sum.ln());
}

/// Shared backward: `dx = combine(y, dy, Σ_s f(y, dy))` per column.
fn backward<E: Float>(
    y: &[E],
    dy: &[E],
    dx: &mut [E],
    d: Dim3,
    term: impl Fn(E::Acc, E::Acc) -> E::Acc + Sync,
    combine: impl Fn(E::Acc, E::Acc, E::Acc) -> E::Acc + Sync,
) {
    assert!(
        y.len() == d.numel() && dy.len() == d.numel(),
        "softmax backward: lengths do not match"
    );
    per_block(d, dx, |o, dx| {
        let range = o * d.size * d.inner..(o + 1) * d.size * d.inner;
        let (y, dy) = (&y[range.clone()], &dy[range]);
        for i in 0..d.inner {
            let mut total = E::Acc::ZERO;
            for s in 0..d.size {
                let k = s * d.inner + i;
                total += term(y[k].to_acc(), dy[k].to_acc());
            }
            for s in 0..d.size {
                let k = s * d.inner + i;
                dx[k] = E::from_acc(combine(y[k].to_acc(), dy[k].to_acc(), total));
            }
        }
    });
}

/// Gradient of softmax given its output `y`: `dx = y · (dy - Σ dy·y)`.
pub fn softmax_backward<E: Float>(y: &[E], dy: &[E], dx: &mut [E], d: Dim3) {
    if backward_fast_path(y, dy, dx, d) && super::simd::softmax_backward(y, dy, dx, d, false) {
        return;
    }
    backward(y, dy, dx, d, |y, g| y * g, |y, g, total| y * (g - total));
}

/// Gradient of log-softmax given its output `y`: `dx = dy - exp(y) · Σ dy`.
pub fn log_softmax_backward<E: Float>(y: &[E], dy: &[E], dx: &mut [E], d: Dim3) {
    if backward_fast_path(y, dy, dx, d) && super::simd::softmax_backward(y, dy, dx, d, true) {
        return;
    }
    backward(y, dy, dx, d, |_, g| g, |y, g, total| g - y.exp() * total);
}
