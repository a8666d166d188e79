//! Kernels that reduce along rows or columns: `reduce`, `logsumexp`, softmax and the norms.
//!
//! All accumulate in f32 (the `Acc` type of f32, bf16 and f16). Sums along a contiguous row use four
//! vector accumulators and a final tree, so they differ from the scalar kernels' eight partial sums in
//! rounding only; reductions across columns (`inner > 1`) add the rows in the scalar order and are
//! bit-identical. The per-row scalars (`mean`, `rstd`, `ln Σ`) are computed with the scalar formulas from
//! those sums.

use super::super::{Dim3, PARALLEL_MIN, Reduce};
use super::math::exp;
use super::simd_kernel;
use super::{
    Lane, MAX_LANES, Simd, View, ViewMut, as_f32, as_f32_mut, level, load_part, run, store_part,
    view, view_mut,
};
use crate::Elem;
use rayon::prelude::*;

/// Splits `out` into tasks of about `PARALLEL_MIN / 4` units of work (`unit` per element of `out`) and
/// runs `f(start, chunk)` on each, in parallel when the whole job is at least `PARALLEL_MIN` units.
fn split<O: Send>(out: &mut [O], unit: usize, f: impl Fn(usize, &mut [O]) + Sync) {
    split_at_least(out, unit, 1, f)
}

/// [`split`] with at least `min_per_task` elements of `out` per task.
fn split_at_least<O: Send>(
    out: &mut [O],
    unit: usize,
    min_per_task: usize,
    f: impl Fn(usize, &mut [O]) + Sync,
) {
    let unit = unit.max(1);
    let per_task = (PARALLEL_MIN / 4).div_ceil(unit).max(min_per_task).max(1);
    if out.len().saturating_mul(unit) < PARALLEL_MIN {
        out.chunks_mut(per_task)
            .enumerate()
            .for_each(|(i, c)| f(i * per_task, c));
    } else {
        out.par_chunks_mut(per_task)
            .enumerate()
            .for_each(|(i, c)| f(i * per_task, c));
    }
}

/// Splits `out` (rows of `row` elements) into tasks of whole rows, about `PARALLEL_MIN / 4` elements
/// each, and runs `f(start, chunk)` on each (`start` counts elements), in parallel for large outputs.
fn split_rows<O: Send>(out: &mut [O], row: usize, f: impl Fn(usize, &mut [O]) + Sync) {
    let per_task = (PARALLEL_MIN / 4).div_ceil(row).max(1) * row;
    if out.len() < PARALLEL_MIN {
        out.chunks_mut(per_task)
            .enumerate()
            .for_each(|(i, c)| f(i * per_task, c));
    } else {
        out.par_chunks_mut(per_task)
            .enumerate()
            .for_each(|(i, c)| f(i * per_task, c));
    }
}

/// Lane indices as f32, for masks of the first `k` lanes.
const IOTA: [f32; MAX_LANES] = [
    0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
];

/// A predicate true in the first `k` lanes.
#[inline(always)]
fn first_lanes<S: Simd>(s: S, k: usize) -> <S as Simd>::M {
    s.lt(s.load(&IOTA), s.splat(k as f32))
}

/// `Σ f(a[i], b[i])` over a row (`b` may be `a`), in f32 with four vector accumulators.
#[inline(always)]
fn row_sum2<S: Simd, A: Lane, B: Lane>(
    s: S,
    a: &[A],
    b: &[B],
    f: impl Fn(<S as Simd>::V, <S as Simd>::V) -> <S as Simd>::V,
) -> f32 {
    let (w, n) = (S::LANES, a.len());
    let b = &b[..n];
    let zero = s.splat(0.0);
    let mut acc = [zero; 4];
    let body = n / (4 * w) * (4 * w);
    for (ca, cb) in a[..body]
        .chunks_exact(4 * w)
        .zip(b[..body].chunks_exact(4 * w))
    {
        for (k, acc) in acc.iter_mut().enumerate() {
            let r = k * w..(k + 1) * w;
            *acc = s.add(*acc, f(A::load(s, &ca[r.clone()]), B::load(s, &cb[r])));
        }
    }
    let mut i = body;
    while i + w <= n {
        acc[0] = s.add(acc[0], f(A::load(s, &a[i..]), B::load(s, &b[i..])));
        i += w;
    }
    if i < n {
        // The padding lanes may give anything (exp of a shifted 0, ...): they are masked out.
        let v = f(load_part(s, &a[i..], 0.0), load_part(s, &b[i..], 0.0));
        acc[1] = s.add(acc[1], s.select(first_lanes(s, n - i), v, zero));
    }
    s.reduce_add(s.add(s.add(acc[0], acc[1]), s.add(acc[2], acc[3])))
}

/// x86 `max` or `min` of two vectors. (A function, not a closure: closures in these helpers would not
/// get the target features, see `simd_kernel!`.)
#[inline(always)]
fn pick<S: Simd>(s: S, max: bool, a: <S as Simd>::V, b: <S as Simd>::V) -> <S as Simd>::V {
    if max { s.max(a, b) } else { s.min(a, b) }
}

/// The maximum (`max = true`) or minimum of a row, NaN if any element is NaN (`max_nan`/`min_nan`);
/// -inf / +inf for an empty row, the identities the scalar kernels start from.
#[inline(always)]
fn row_extreme<S: Simd, T: Lane>(s: S, x: &[T], max: bool) -> f32 {
    let w = S::LANES;
    let id = if max {
        f32::NEG_INFINITY
    } else {
        f32::INFINITY
    };
    let mut acc = [s.splat(id); 2];
    let mut nan = s.is_nan(acc[0]);
    let mut chunks = x.chunks_exact(2 * w);
    for c in &mut chunks {
        let (v0, v1) = (T::load(s, &c[..w]), T::load(s, &c[w..]));
        nan = s.mask_or(nan, s.mask_or(s.is_nan(v0), s.is_nan(v1)));
        acc[0] = pick(s, max, acc[0], v0);
        acc[1] = pick(s, max, acc[1], v1);
    }
    let rest = chunks.remainder();
    let mut rc = rest.chunks_exact(w);
    for c in &mut rc {
        let v = T::load(s, c);
        nan = s.mask_or(nan, s.is_nan(v));
        acc[0] = pick(s, max, acc[0], v);
    }
    let tail = rc.remainder();
    if !tail.is_empty() {
        let v = load_part(s, tail, id);
        nan = s.mask_or(nan, s.is_nan(v));
        acc[1] = pick(s, max, acc[1], v);
    }
    if s.any(nan) {
        return f32::NAN;
    }
    let v = pick(s, max, acc[0], acc[1]);
    if max {
        s.reduce_max(v)
    } else {
        s.reduce_min(v)
    }
}

/// Calls `$body` with `$x`, `$o` bound to the concrete slices (same type, or f32 on one side);
/// evaluates to `false` for other pairs.
macro_rules! with_pair {
    ($xv:expr, $ov:expr, |$x:ident, $o:ident| $body:expr) => {
        match ($xv, $ov) {
            (View::F32($x), ViewMut::F32($o)) => $body,
            (View::Bf16($x), ViewMut::Bf16($o)) => $body,
            (View::F16($x), ViewMut::F16($o)) => $body,
            (View::Bf16($x), ViewMut::F32($o)) => $body,
            (View::F16($x), ViewMut::F32($o)) => $body,
            (View::F32($x), ViewMut::Bf16($o)) => $body,
            (View::F32($x), ViewMut::F16($o)) => $body,
            _ => return false,
        }
    };
}

/// Calls `$body` with the three same-typed slices bound, or evaluates to `false`.
macro_rules! with_same3 {
    ($av:expr, $bv:expr, $ov:expr, |$a:ident, $b:ident, $o:ident| $body:expr) => {
        match ($av, $bv, $ov) {
            (View::F32($a), View::F32($b), ViewMut::F32($o)) => $body,
            (View::Bf16($a), View::Bf16($b), ViewMut::Bf16($o)) => $body,
            (View::F16($a), View::F16($b), ViewMut::F16($o)) => $body,
            _ => return false,
        }
    };
}

// ---------------------------------------------------------------------------------------------------
// reduce

/// Rows `row0..row0 + out.len()` of an `inner == 1` reduction.
struct ReduceRows<'a, I, O> {
    op: Reduce,
    x: &'a [I],
    size: usize,
    out: &'a mut [O],
}

simd_kernel! {
    impl[I: Lane, O: Lane] ReduceRows<'_, I, O> => ();
    fn exec(this, s: S) {
        let scale = (1.0 / this.size as f64) as f32;
        for (o, row) in this.out.iter_mut().zip(this.x.chunks_exact(this.size)) {
            let v = match this.op {
                Reduce::Sum => row_sum2(s, row, row, |v, _| v),
                Reduce::Mean => row_sum2(s, row, row, |v, _| v) * scale,
                Reduce::Max => row_extreme(s, row, true),
                Reduce::Min => row_extreme(s, row, false),
            };
            *o = O::from_f32(v);
        }
    }
}

/// Output elements `start..start + out.len()` of a reduction with `inner > 1`: each output element is
/// one column of its outer block, reduced down the `size` rows in order (as the scalar kernel does).
struct ReduceCols<'a, I, O> {
    op: Reduce,
    x: &'a [I],
    d: Dim3,
    start: usize,
    out: &'a mut [O],
}

simd_kernel! {
    impl[I: Lane, O: Lane] ReduceCols<'_, I, O> => ();
    fn exec(this, s: S) {
        let (d, w) = (this.d, S::LANES);
        let scale = s.splat((1.0 / d.size as f64) as f32);
        let id = s.splat(match this.op {
            Reduce::Sum | Reduce::Mean => 0.0,
            Reduce::Max => f32::NEG_INFINITY,
            Reduce::Min => f32::INFINITY,
        });
        // A NaN element makes the column NaN for good: `max(v, acc)` keeps a NaN `acc`, and a NaN `v`
        // is selected explicitly.
        let step = |acc: <S as Simd>::V, v: <S as Simd>::V| match this.op {
            Reduce::Sum | Reduce::Mean => s.add(acc, v),
            Reduce::Max => s.select(s.is_nan(v), v, s.max(v, acc)),
            Reduce::Min => s.select(s.is_nan(v), v, s.min(v, acc)),
        };
        let finish = |acc: <S as Simd>::V| match this.op {
            Reduce::Mean => s.mul(acc, scale),
            _ => acc,
        };
        // Walk the output range block by block (a range may start or end inside an outer block).
        let (mut pos, end) = (this.start, this.start + this.out.len());
        let mut out = this.out;
        while pos < end {
            let (o, i0) = (pos / d.inner, pos % d.inner);
            let i1 = d.inner.min(i0 + (end - pos));
            let (cur, rest) = out.split_at_mut(i1 - i0);
            let block = &this.x[o * d.size * d.inner..(o + 1) * d.size * d.inner];
            let mut i = i0;
            // Four vectors of columns at a time: four independent chains, one cache line per row each.
            while i + 4 * w <= i1 {
                let mut acc = [id; 4];
                for row in block.chunks_exact(d.inner) {
                    for (k, a) in acc.iter_mut().enumerate() {
                        *a = step(*a, I::load(s, &row[i + k * w..]));
                    }
                }
                for (k, a) in acc.into_iter().enumerate() {
                    let at = i - i0 + k * w;
                    O::store(s, finish(a), &mut cur[at..at + w]);
                }
                i += 4 * w;
            }
            while i < i1 {
                let m = w.min(i1 - i);
                let mut acc = id;
                for row in block.chunks_exact(d.inner) {
                    let v = if m == w {
                        I::load(s, &row[i..])
                    } else {
                        load_part(s, &row[i..i + m], 0.0)
                    };
                    acc = step(acc, v);
                }
                let at = i - i0;
                if m == w {
                    O::store(s, finish(acc), &mut cur[at..at + w]);
                } else {
                    store_part(s, finish(acc), &mut cur[at..at + m]);
                }
                i += m;
            }
            pos += i1 - i0;
            out = rest;
        }
    }
}

/// `cpu::reduce` for f32/bf16/f16 (same type, or f32 on one side), any layout with `size > 0`.
pub(crate) fn reduce<I: Elem, O: Elem>(op: Reduce, x: &[I], out: &mut [O], d: Dim3) -> bool {
    let Some(level) = level() else {
        return false;
    };
    if d.size == 0 || d.inner == 0 || d.outer == 0 {
        return false; // the scalar kernel's identities and NaN means
    }
    let (Some(xv), Some(ov)) = (view(x), view_mut(out)) else {
        return false;
    };
    with_pair!(xv, ov, |x, out| {
        if d.inner == 1 {
            split(out, d.size, |start, out| {
                let x = &x[start * d.size..(start + out.len()) * d.size];
                let size = d.size;
                run(level, ReduceRows { op, x, size, out })
            })
        } else {
            // Each task walks all `size` rows of its columns, so a task takes whole strips of four
            // vectors of columns (one cache line of each row per vector): a strip of two columns
            // would fetch the same lines as one of 64 and use 2 of their 16 values.
            let strip = d.inner.min(4 * MAX_LANES);
            split_at_least(out, d.size, strip, |start, out| {
                run(
                    level,
                    ReduceCols {
                        op,
                        x,
                        d,
                        start,
                        out,
                    },
                )
            })
        }
    });
    true
}

// ---------------------------------------------------------------------------------------------------
// logsumexp and softmax along rows

/// The shift softmax uses: the row maximum, 0 when it is -inf (so all -inf rows give NaN, as PyTorch).
#[inline(always)]
fn softmax_shift(m: f32) -> f32 {
    if m == f32::NEG_INFINITY { 0.0 } else { m }
}

struct LogSumExpRows<'a, I, O> {
    x: &'a [I],
    size: usize,
    out: &'a mut [O],
}

simd_kernel! {
    impl[I: Lane, O: Lane] LogSumExpRows<'_, I, O> => ();
    fn exec(this, s: S) {
        for (o, row) in this.out.iter_mut().zip(this.x.chunks_exact(this.size)) {
            let m = row_extreme(s, row, true);
            let value = if m.is_nan() || m.is_infinite() {
                m
            } else {
                let mv = s.splat(m);
                m + row_sum2(s, row, row, |v, _| exp(s, s.sub(v, mv))).ln()
            };
            *o = O::from_f32(value);
        }
    }
}

/// `cpu::logsumexp` with `inner == 1`.
pub(crate) fn logsumexp<I: Elem, O: Elem>(x: &[I], out: &mut [O], d: Dim3) -> bool {
    let Some(level) = level() else {
        return false;
    };
    if d.inner != 1 || d.size == 0 {
        return false;
    }
    let (Some(xv), Some(ov)) = (view(x), view_mut(out)) else {
        return false;
    };
    with_pair!(xv, ov, |x, out| {
        split(out, d.size, |start, out| {
            let x = &x[start * d.size..(start + out.len()) * d.size];
            let size = d.size;
            run(level, LogSumExpRows { x, size, out })
        })
    });
    true
}

struct SoftmaxRows<'a, I, O> {
    x: &'a [I],
    out: &'a mut [O],
    size: usize,
    log: bool,
}

simd_kernel! {
    impl[I: Lane, O: Lane] SoftmaxRows<'_, I, O> => ();
    fn exec(this, s: S) {
        let size = this.size;
        let rows = this
            .x
            .chunks_exact(size)
            .zip(this.out.chunks_exact_mut(size));
        for (x, out) in rows {
            let m = s.splat(softmax_shift(row_extreme(s, x, true)));
            if this.log {
                let sum = row_sum2(s, x, x, |v, _| exp(s, s.sub(v, m)));
                let ln = s.splat(sum.ln());
                super::elementwise::map1(s, x, out, |v| s.sub(s.sub(v, m), ln));
            } else if let Some(out) = as_f32_mut(out) {
                // f32 output: keep e^(x - m) in `out` and divide in place (one exp per element).
                super::elementwise::map1(s, x, out, |v| exp(s, s.sub(v, m)));
                let sum = s.splat(row_sum2(s, out, out, |v, _| v));
                divide_in_place(s, out, sum);
            } else {
                let sum = s.splat(row_sum2(s, x, x, |v, _| exp(s, s.sub(v, m))));
                super::elementwise::map1(s, x, out, |v| s.div(exp(s, s.sub(v, m)), sum));
            }
        }
    }
}

/// `out[i] /= d`.
#[inline(always)]
fn divide_in_place<S: Simd>(s: S, out: &mut [f32], d: <S as Simd>::V) {
    let w = S::LANES;
    let mut chunks = out.chunks_exact_mut(w);
    for c in &mut chunks {
        let v = s.div(s.load(c), d);
        s.store(v, c);
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let v = s.div(load_part(s, tail, 0.0), d);
        store_part(s, v, tail);
    }
}

/// `cpu::softmax` / `cpu::log_softmax` with `inner == 1`.
pub(crate) fn softmax<I: Elem, O: Elem>(x: &[I], out: &mut [O], d: Dim3, log: bool) -> bool {
    let Some(level) = level() else {
        return false;
    };
    if d.inner != 1 || d.size == 0 {
        return false;
    }
    let (Some(xv), Some(ov)) = (view(x), view_mut(out)) else {
        return false;
    };
    let size = d.size;
    with_pair!(xv, ov, |x, out| {
        split_rows(out, size, |start, out| {
            let x = &x[start..start + out.len()];
            run(level, SoftmaxRows { x, out, size, log })
        })
    });
    true
}

struct SoftmaxBackwardRows<'a, T> {
    y: &'a [T],
    dy: &'a [T],
    dx: &'a mut [T],
    size: usize,
    log: bool,
}

simd_kernel! {
    impl[T: Lane] SoftmaxBackwardRows<'_, T> => ();
    fn exec(this, s: S) {
        let size = this.size;
        let rows = this
            .y
            .chunks_exact(size)
            .zip(this.dy.chunks_exact(size))
            .zip(this.dx.chunks_exact_mut(size));
        for ((y, dy), dx) in rows {
            if this.log {
                // dx = dy - e^y · Σ dy
                let total = s.splat(row_sum2(s, dy, dy, |g, _| g));
                super::elementwise::map2(s, y, dy, dx, |y, g| s.sub(g, s.mul(exp(s, y), total)));
            } else {
                // dx = y · (dy - Σ y·dy)
                let total = s.splat(row_sum2(s, y, dy, |y, g| s.mul(y, g)));
                super::elementwise::map2(s, y, dy, dx, |y, g| s.mul(y, s.sub(g, total)));
            }
        }
    }
}

/// `cpu::softmax_backward` / `cpu::log_softmax_backward` with `inner == 1`.
pub(crate) fn softmax_backward<E: Elem>(
    y: &[E],
    dy: &[E],
    dx: &mut [E],
    d: Dim3,
    log: bool,
) -> bool {
    let Some(level) = level() else {
        return false;
    };
    if d.inner != 1 || d.size == 0 {
        return false;
    }
    let (Some(yv), Some(gv), Some(dv)) = (view(y), view(dy), view_mut(dx)) else {
        return false;
    };
    let size = d.size;
    with_same3!(yv, gv, dv, |y, dy, dx| {
        split_rows(dx, size, |start, dx| {
            let r = start..start + dx.len();
            let (y, dy) = (&y[r.clone()], &dy[r]);
            run(
                level,
                SoftmaxBackwardRows {
                    y,
                    dy,
                    dx,
                    size,
                    log,
                },
            )
        })
    });
    true
}

// ---------------------------------------------------------------------------------------------------
// Layer norm and RMS norm

/// Runs `f(first_row, out_rows, a_rows, b_rows)` over tasks of whole rows, `out` holding `cols` elements
/// per row and `a`, `b` one each, in parallel for large outputs.
fn split_rows_with<O: Send, A: Send, B: Send>(
    out: &mut [O],
    a: &mut [A],
    b: &mut [B],
    cols: usize,
    f: impl Fn(usize, &mut [O], &mut [A], &mut [B]) + Sync,
) {
    let rows = (PARALLEL_MIN / 4).div_ceil(cols).max(1);
    if out.len() < PARALLEL_MIN {
        out.chunks_mut(rows * cols)
            .zip(a.chunks_mut(rows))
            .zip(b.chunks_mut(rows))
            .enumerate()
            .for_each(|(i, ((o, a), b))| f(i * rows, o, a, b));
    } else {
        out.par_chunks_mut(rows * cols)
            .zip(a.par_chunks_mut(rows))
            .zip(b.par_chunks_mut(rows))
            .enumerate()
            .for_each(|(i, ((o, a), b))| f(i * rows, o, a, b));
    }
}

struct LayerNormRows<'a, I, O> {
    x: &'a [I],
    out: &'a mut [O],
    mean: &'a mut [f32],
    rstd: &'a mut [f32],
    cols: usize,
    eps: f32,
}

simd_kernel! {
    impl[I: Lane, O: Lane] LayerNormRows<'_, I, O> => ();
    fn exec(this, s: S) {
        let (cols, n) = (this.cols, this.cols as f32);
        let rows = this
            .x
            .chunks_exact(cols)
            .zip(this.out.chunks_exact_mut(cols))
            .zip(this.mean.iter_mut().zip(this.rstd.iter_mut()));
        for ((x, out), (mean, rstd)) in rows {
            let mu = row_sum2(s, x, x, |v, _| v) / n;
            let muv = s.splat(mu);
            let sq = row_sum2(s, x, x, |v, _| {
                let c = s.sub(v, muv);
                s.mul(c, c)
            });
            let r = 1.0 / (sq / n + this.eps).sqrt();
            let rv = s.splat(r);
            super::elementwise::map1(s, x, out, |v| s.mul(s.sub(v, muv), rv));
            (*mean, *rstd) = (mu, r);
        }
    }
}

/// `cpu::layer_norm` for f32/bf16/f16 (same type, or f32 on one side); `A` is the input's `Acc` (f32).
pub(crate) fn layer_norm<I: Elem, O: Elem, A: Elem>(
    x: &[I],
    out: &mut [O],
    mean: &mut [A],
    rstd: &mut [A],
    cols: usize,
    eps: f64,
) -> bool {
    let Some(level) = level() else {
        return false;
    };
    let (Some(xv), Some(ov), Some(mean), Some(rstd)) =
        (view(x), view_mut(out), as_f32_mut(mean), as_f32_mut(rstd))
    else {
        return false;
    };
    if cols == 0 {
        return false;
    }
    let eps = eps as f32;
    with_pair!(xv, ov, |x, out| {
        split_rows_with(out, mean, rstd, cols, |row, out, mean, rstd| {
            let x = &x[row * cols..row * cols + out.len()];
            run(
                level,
                LayerNormRows {
                    x,
                    out,
                    mean,
                    rstd,
                    cols,
                    eps,
                },
            )
        })
    });
    true
}

struct LayerNormBackwardRows<'a, T> {
    x: &'a [T],
    dy: &'a [T],
    dx: &'a mut [T],
    mean: &'a [f32],
    rstd: &'a [f32],
    cols: usize,
}

simd_kernel! {
    impl[T: Lane] LayerNormBackwardRows<'_, T> => ();
    fn exec(this, s: S) {
        let (cols, n) = (this.cols, this.cols as f32);
        let rows = this
            .x
            .chunks_exact(cols)
            .zip(this.dy.chunks_exact(cols))
            .zip(this.dx.chunks_exact_mut(cols))
            .zip(this.mean.iter().zip(this.rstd));
        for (((x, dy), dx), (&mu, &rs)) in rows {
            let (muv, rsv) = (s.splat(mu), s.splat(rs));
            let xhat = |v| s.mul(s.sub(v, muv), rsv);
            let mean_g = s.splat(row_sum2(s, dy, dy, |g, _| g) / n);
            let mean_gx = s.splat(row_sum2(s, x, dy, |v, g| s.mul(g, xhat(v))) / n);
            // rs · (g - mean(g) - x̂ · mean(g·x̂))
            super::elementwise::map2(s, x, dy, dx, |v, g| {
                s.mul(rsv, s.sub(s.sub(g, mean_g), s.mul(xhat(v), mean_gx)))
            });
        }
    }
}

/// `cpu::layer_norm_backward` for f32/bf16/f16 (`A` is f32).
pub(crate) fn layer_norm_backward<E: Elem, A: Elem>(
    x: &[E],
    mean: &[A],
    rstd: &[A],
    dy: &[E],
    dx: &mut [E],
    cols: usize,
) -> bool {
    let Some(level) = level() else {
        return false;
    };
    let (Some(xv), Some(gv), Some(dv), Some(mean), Some(rstd)) =
        (view(x), view(dy), view_mut(dx), as_f32(mean), as_f32(rstd))
    else {
        return false;
    };
    if cols == 0 {
        return false;
    }
    with_same3!(xv, gv, dv, |x, dy, dx| {
        split_rows(dx, cols, |start, dx| {
            let r = start..start + dx.len();
            let (x, dy) = (&x[r.clone()], &dy[r]);
            let rows = start / cols..(start + dx.len()) / cols;
            let (mean, rstd) = (&mean[rows.clone()], &rstd[rows]);
            run(
                level,
                LayerNormBackwardRows {
                    x,
                    dy,
                    dx,
                    mean,
                    rstd,
                    cols,
                },
            )
        })
    });
    true
}

struct RmsNormRows<'a, I, O> {
    x: &'a [I],
    out: &'a mut [O],
    rstd: &'a mut [f32],
    cols: usize,
    eps: f32,
}

simd_kernel! {
    impl[I: Lane, O: Lane] RmsNormRows<'_, I, O> => ();
    fn exec(this, s: S) {
        let (cols, n) = (this.cols, this.cols as f32);
        let rows = this
            .x
            .chunks_exact(cols)
            .zip(this.out.chunks_exact_mut(cols))
            .zip(this.rstd.iter_mut());
        for ((x, out), rstd) in rows {
            let sq = row_sum2(s, x, x, |v, _| s.mul(v, v));
            let r = 1.0 / (sq / n + this.eps).sqrt();
            let rv = s.splat(r);
            super::elementwise::map1(s, x, out, |v| s.mul(v, rv));
            *rstd = r;
        }
    }
}

/// `cpu::rms_norm` for f32/bf16/f16 (same type, or f32 on one side); `A` is f32.
pub(crate) fn rms_norm<I: Elem, O: Elem, A: Elem>(
    x: &[I],
    out: &mut [O],
    rstd: &mut [A],
    cols: usize,
    eps: f64,
) -> bool {
    let Some(level) = level() else {
        return false;
    };
    let (Some(xv), Some(ov), Some(rstd)) = (view(x), view_mut(out), as_f32_mut(rstd)) else {
        return false;
    };
    if cols == 0 {
        return false;
    }
    let eps = eps as f32;
    let mut unused = vec![(); rstd.len()];
    with_pair!(xv, ov, |x, out| {
        split_rows_with(out, rstd, &mut unused, cols, |row, out, rstd, _| {
            let x = &x[row * cols..row * cols + out.len()];
            run(
                level,
                RmsNormRows {
                    x,
                    out,
                    rstd,
                    cols,
                    eps,
                },
            )
        })
    });
    true
}

struct RmsNormBackwardRows<'a, T> {
    x: &'a [T],
    dy: &'a [T],
    dx: &'a mut [T],
    rstd: &'a [f32],
    cols: usize,
}

simd_kernel! {
    impl[T: Lane] RmsNormBackwardRows<'_, T> => ();
    fn exec(this, s: S) {
        let (cols, n) = (this.cols, this.cols as f32);
        let rows = this
            .x
            .chunks_exact(cols)
            .zip(this.dy.chunks_exact(cols))
            .zip(this.dx.chunks_exact_mut(cols))
            .zip(this.rstd);
        for (((x, dy), dx), &rs) in rows {
            let rsv = s.splat(rs);
            let mean_gx = s.splat(row_sum2(s, x, dy, |v, g| s.mul(s.mul(g, v), rsv)) / n);
            // rs · (g - x·rs · mean(g·x·rs))
            super::elementwise::map2(s, x, dy, dx, |v, g| {
                s.mul(rsv, s.sub(g, s.mul(s.mul(v, rsv), mean_gx)))
            });
        }
    }
}

/// `cpu::rms_norm_backward` for f32/bf16/f16 (`A` is f32).
pub(crate) fn rms_norm_backward<E: Elem, A: Elem>(
    x: &[E],
    rstd: &[A],
    dy: &[E],
    dx: &mut [E],
    cols: usize,
) -> bool {
    let Some(level) = level() else {
        return false;
    };
    let (Some(xv), Some(gv), Some(dv), Some(rstd)) =
        (view(x), view(dy), view_mut(dx), as_f32(rstd))
    else {
        return false;
    };
    if cols == 0 {
        return false;
    }
    with_same3!(xv, gv, dv, |x, dy, dx| {
        split_rows(dx, cols, |start, dx| {
            let r = start..start + dx.len();
            let (x, dy) = (&x[r.clone()], &dy[r]);
            let rstd = &rstd[start / cols..(start + dx.len()) / cols];
            run(
                level,
                RmsNormBackwardRows {
                    x,
                    dy,
                    dx,
                    rstd,
                    cols,
                },
            )
        })
    });
    true
}
