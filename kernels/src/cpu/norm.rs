//! Layer norm and RMS norm over the last `cols` elements of each row (no affine part: the runtime applies
//! weight and bias as ordinary broadcast ops), computed in the `Acc` type.

use crate::{Accum, Elem, Float};
use rayon::prelude::*;

fn rows_par<T: Send, S: Send>(
    out: &mut [T],
    stats: &mut [S],
    cols: usize,
    body: impl Fn(usize, &mut [T], &mut S) + Sync,
) {
    if cols == 0 {
        return;
    }
    if out.len() < super::PARALLEL_MIN {
        out.chunks_mut(cols)
            .zip(stats.iter_mut())
            .enumerate()
            .for_each(|(r, (o, s))| body(r, o, s));
    } else {
        out.par_chunks_mut(cols)
            .zip(stats.par_iter_mut())
            .enumerate()
            .for_each(|(r, (o, s))| body(r, o, s));
    }
}

/// `out = (x - mean) · rstd` per row, storing each row's `mean` and `rstd = 1/√(var + eps)` (biased
/// variance, as PyTorch's `layer_norm`).
pub fn layer_norm<I: Float, O: Elem>(
    x: &[I],
    out: &mut [O],
    mean: &mut [I::Acc],
    rstd: &mut [I::Acc],
    cols: usize,
    eps: f64,
) {
    let rows = mean.len();
    assert!(
        x.len() == rows * cols && out.len() == rows * cols && rstd.len() == rows,
        "layer_norm: lengths do not match {rows} rows × {cols} columns"
    );
    if super::simd::layer_norm(x, out, mean, rstd, cols, eps) {
        return;
    }
    let mut stats: Vec<(I::Acc, I::Acc)> = vec![(I::Acc::ZERO, I::Acc::ZERO); rows];
    rows_par(out, &mut stats, cols, |r, out, stat| {
        let row = &x[r * cols..(r + 1) * cols];
        let n = I::Acc::c(cols as f64);
        let mut sum = I::Acc::ZERO;
        for &v in row {
            sum += v.to_acc();
        }
        let mu = sum / n;
        let mut sq = I::Acc::ZERO;
        for &v in row {
            let c = v.to_acc() - mu;
            sq += c * c;
        }
        let r = I::Acc::ONE / (sq / n + I::Acc::c(eps)).sqrt();
        for (o, &v) in out.iter_mut().zip(row) {
            *o = ((v.to_acc() - mu) * r).cast::<O>();
        }
        *stat = (mu, r);
    });
    for ((m, r), (mu, rs)) in mean.iter_mut().zip(rstd.iter_mut()).zip(stats) {
        *m = mu;
        *r = rs;
    }
}

/// Gradient of [`layer_norm`]: with `x̂ = (x - mean)·rstd`,
/// `dx = rstd · (dy - mean(dy) - x̂ · mean(dy · x̂))`.
pub fn layer_norm_backward<E: Float>(
    x: &[E],
    mean: &[E::Acc],
    rstd: &[E::Acc],
    dy: &[E],
    dx: &mut [E],
    cols: usize,
) {
    let rows = mean.len();
    assert!(
        x.len() == rows * cols && dy.len() == rows * cols,
        "layer_norm_backward: lengths differ"
    );
    if rstd.len() == rows
        && dx.len() == rows * cols
        && super::simd::layer_norm_backward(x, mean, rstd, dy, dx, cols)
    {
        return;
    }
    let mut unused = vec![(); rows];
    rows_par(dx, &mut unused, cols, |r, dx, _| {
        let (x, dy) = (&x[r * cols..(r + 1) * cols], &dy[r * cols..(r + 1) * cols]);
        let (mu, rs) = (mean[r], rstd[r]);
        let n = E::Acc::c(cols as f64);
        let (mut sum_g, mut sum_gx) = (E::Acc::ZERO, E::Acc::ZERO);
        for (&v, &g) in x.iter().zip(dy) {
            let (xh, g) = ((v.to_acc() - mu) * rs, g.to_acc());
            sum_g += g;
            sum_gx += g * xh;
        }
        let (mean_g, mean_gx) = (sum_g / n, sum_gx / n);
        for ((d, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
            let xh = (v.to_acc() - mu) * rs;
            *d = E::from_acc(rs * (g.to_acc() - mean_g - xh * mean_gx));
        }
    });
}

/// `out = x · rstd` per row with `rstd = 1/√(mean(x²) + eps)`, storing `rstd`.
pub fn rms_norm<I: Float, O: Elem>(
    x: &[I],
    out: &mut [O],
    rstd: &mut [I::Acc],
    cols: usize,
    eps: f64,
) {
    let rows = rstd.len();
    assert!(
        x.len() == rows * cols && out.len() == rows * cols,
        "rms_norm: lengths do not match"
    );
    if super::simd::rms_norm(x, out, rstd, cols, eps) {
        return;
    }
    rows_par(out, rstd, cols, |r, out, rstd| {
        let row = &x[r * cols..(r + 1) * cols];
        let mut sq = I::Acc::ZERO;
        for &v in row {
            let v = v.to_acc();
            sq += v * v;
        }
        let rs = I::Acc::ONE / (sq / I::Acc::c(cols as f64) + I::Acc::c(eps)).sqrt();
        for (o, &v) in out.iter_mut().zip(row) {
            *o = (v.to_acc() * rs).cast::<O>();
        }
        *rstd = rs;
    });
}

/// Gradient of [`rms_norm`]: with `x̂ = x·rstd`, `dx = rstd · (dy - x̂ · mean(dy · x̂))`.
pub fn rms_norm_backward<E: Float>(x: &[E], rstd: &[E::Acc], dy: &[E], dx: &mut [E], cols: usize) {
    let rows = rstd.len();
    assert!(
        x.len() == rows * cols && dy.len() == rows * cols,
        "rms_norm_backward: lengths differ"
    );
    if dx.len() == rows * cols && super::simd::rms_norm_backward(x, rstd, dy, dx, cols) {
        return;
    }
    let mut unused = vec![(); rows];
    rows_par(dx, &mut unused, cols, |r, dx, _| {
        let (x, dy) = (&x[r * cols..(r + 1) * cols], &dy[r * cols..(r + 1) * cols]);
        let rs = rstd[r];
        let mut sum_gx = E::Acc::ZERO;
        for (&v, &g) in x.iter().zip(dy) {
            sum_gx += g.to_acc() * v.to_acc() * rs;
        }
        let mean_gx = sum_gx / E::Acc::c(cols as f64);
        for ((d, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
            *d = E::from_acc(rs * (g.to_acc() - v.to_acc() * rs * mean_gx));
        }
    });
}
