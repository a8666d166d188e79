//! Elementwise kernels: casts, unary functions and their derivatives, binary arithmetic.
//!
//! Each entry point returns `false` when it has no vector path (scalar level, f64 or integer elements,
//! an op without a vector form); the caller then runs its scalar loop. Work is split into the same
//! rayon chunks as the scalar kernels (`par_chunks_mut`), each chunk running one vector kernel.

use super::super::par_chunks_mut;
use super::super::{Binary, Unary};
use super::math::{erf, exp, log, log1p, sigmoid, tanh};
use super::simd_kernel;
use super::{
    Lane, Simd, View, ViewMut, level, load_part, run, store_part, view, view_mut, with_view,
    with_view_mut,
};
use crate::{DType, Elem};
use std::f32::consts::FRAC_1_SQRT_2;

/// `out[i] = f(x[i])`: whole vectors, then one partial vector for the tail.
#[inline(always)]
pub(crate) fn map1<S: Simd, I: Lane, O: Lane>(
    s: S,
    x: &[I],
    out: &mut [O],
    f: impl Fn(<S as Simd>::V) -> <S as Simd>::V,
) {
    let w = S::LANES;
    let body = out.len() / w * w;
    let (xb, xt) = x[..out.len()].split_at(body);
    let (ob, ot) = out.split_at_mut(body);
    for (x, o) in xb.chunks_exact(w).zip(ob.chunks_exact_mut(w)) {
        O::store(s, f(I::load(s, x)), o);
    }
    if !ot.is_empty() {
        store_part(s, f(load_part(s, xt, 0.0)), ot);
    }
}

/// `data[i] = f(data[i])` in place.
#[inline(always)]
fn map_in_place<S: Simd, T: Lane>(
    s: S,
    data: &mut [T],
    f: impl Fn(<S as Simd>::V) -> <S as Simd>::V,
) {
    let w = S::LANES;
    let mut chunks = data.chunks_exact_mut(w);
    for c in &mut chunks {
        let v = f(T::load(s, c));
        T::store(s, v, c);
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let v = f(load_part(s, tail, 0.0));
        store_part(s, v, tail);
    }
}

/// `out[i] = f(a[i], b[i])`.
#[inline(always)]
pub(crate) fn map2<S: Simd, A: Lane, B: Lane, O: Lane>(
    s: S,
    a: &[A],
    b: &[B],
    out: &mut [O],
    f: impl Fn(<S as Simd>::V, <S as Simd>::V) -> <S as Simd>::V,
) {
    let (w, n) = (S::LANES, out.len());
    let body = n / w * w;
    let (a, b) = (&a[..n], &b[..n]);
    let (ob, ot) = out.split_at_mut(body);
    for ((a, b), o) in a
        .chunks_exact(w)
        .zip(b.chunks_exact(w))
        .zip(ob.chunks_exact_mut(w))
    {
        O::store(s, f(A::load(s, a), B::load(s, b)), o);
    }
    if !ot.is_empty() {
        let (va, vb) = (load_part(s, &a[body..], 0.0), load_part(s, &b[body..], 0.0));
        store_part(s, f(va, vb), ot);
    }
}

/// `out[i] = f(a[i], b[i], c[i])`.
#[inline(always)]
fn map3<S: Simd, T: Lane>(
    s: S,
    a: &[T],
    b: &[T],
    c: &[T],
    out: &mut [T],
    f: impl Fn(<S as Simd>::V, <S as Simd>::V, <S as Simd>::V) -> <S as Simd>::V,
) {
    let (w, n) = (S::LANES, out.len());
    let body = n / w * w;
    let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
    let (ob, ot) = out.split_at_mut(body);
    for (((a, b), c), o) in a
        .chunks_exact(w)
        .zip(b.chunks_exact(w))
        .zip(c.chunks_exact(w))
        .zip(ob.chunks_exact_mut(w))
    {
        T::store(s, f(T::load(s, a), T::load(s, b), T::load(s, c)), o);
    }
    if !ot.is_empty() {
        let v = f(
            load_part(s, &a[body..], 0.0),
            load_part(s, &b[body..], 0.0),
            load_part(s, &c[body..], 0.0),
        );
        store_part(s, v, ot);
    }
}

/// Calls `$body` with `$x`, `$o` bound to the concrete slices when the pair of views is one the
/// arithmetic kernels instantiate (same type, or f32 on one side: the fused casts the runtime uses);
/// evaluates to `false` for bf16 ↔ f16.
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

// ---------------------------------------------------------------------------------------------------
// Casts

struct Cast<'a, I, O> {
    x: &'a [I],
    out: &'a mut [O],
}

simd_kernel! {
    impl[I: Lane, O: Lane] Cast<'_, I, O> => ();
    fn exec(this, s: S) {
        map1(s, this.x, this.out, |v| v);
    }
}

/// `cpu::cast` between f32, bf16 and f16 (every pair; bf16 ↔ f16 goes through f32 like the scalar
/// `Elem::cast`, which is exact on the way in).
pub(crate) fn cast<I: Elem, O: Elem>(x: &[I], out: &mut [O]) -> bool {
    let Some(level) = level() else {
        return false;
    };
    let (Some(xv), Some(ov)) = (view(x), view_mut(out)) else {
        return false;
    };
    with_view!(xv, |x| with_view_mut!(ov, |out| {
        par_chunks_mut(out, |start, out| {
            let x = &x[start..start + out.len()];
            run(level, Cast { x, out })
        })
    }));
    true
}

struct RoundThrough<'a> {
    data: &'a mut [f32],
    to: DType,
}

simd_kernel! {
    impl[] RoundThrough<'_> => ();
    fn exec(this, s: S) {
        match this.to {
            DType::BF16 => map_in_place(s, this.data, |v| s.round_bf16(v)),
            _ => map_in_place(s, this.data, |v| s.round_f16(v)),
        }
    }
}

/// `cpu::round_through` to bf16 or f16 (f32 is the identity, left to the scalar loop).
pub(crate) fn round_through<E: Elem>(data: &mut [f32]) -> bool {
    let Some(level) = level() else {
        return false;
    };
    if !matches!(E::DTYPE, DType::BF16 | DType::F16) {
        return false;
    }
    par_chunks_mut(data, |_, data| {
        run(level, RoundThrough { data, to: E::DTYPE })
    });
    true
}

// ---------------------------------------------------------------------------------------------------
// Unary functions

/// Whether `unary` has a vector form of `op`.
fn unary_supported(op: Unary) -> bool {
    !matches!(op, Unary::Expm1 | Unary::PowScalar(_) | Unary::Clamp(..))
}

struct UnaryK<'a, I, O> {
    op: Unary,
    x: &'a [I],
    out: &'a mut [O],
}

simd_kernel! {
    impl[I: Lane, O: Lane] UnaryK<'_, I, O> => ();
    fn exec(this, s: S) {
        let (x, out) = (this.x, this.out);
        let c = |v: f64| s.splat(v as f32);
        let (zero, one) = (s.splat(0.0), s.splat(1.0));
        // Each arm is a separate loop, so the op is decided once per chunk, not per vector. The
        // formulas are the scalar `Unary::apply` written with the same operations in the same order.
        match this.op {
            Unary::Neg => map1(s, x, out, |v| s.neg(v)),
            Unary::Abs => map1(s, x, out, |v| s.abs(v)),
            Unary::Square => map1(s, x, out, |v| s.mul(v, v)),
            Unary::Sqrt => map1(s, x, out, |v| s.sqrt(v)),
            Unary::Rsqrt => map1(s, x, out, |v| s.div(one, s.sqrt(v))),
            Unary::Reciprocal => map1(s, x, out, |v| s.div(one, v)),
            Unary::Exp => map1(s, x, out, |v| exp(s, v)),
            Unary::Log => map1(s, x, out, |v| log(s, v)),
            Unary::Log1p => map1(s, x, out, |v| log1p(s, v)),
            Unary::Softplus => map1(s, x, out, |v| {
                s.select(s.gt(v, c(20.0)), v, log1p(s, exp(s, v)))
            }),
            // NaN propagates and -0 becomes +0, as in the scalar kernel (so not `max(x, 0)`).
            Unary::Relu => map1(s, x, out, |v| {
                s.select(s.mask_or(s.gt(v, zero), s.is_nan(v)), v, zero)
            }),
            Unary::Gelu => map1(s, x, out, |v| {
                let cdf2 = s.add(one, erf(s, s.mul(v, s.splat(FRAC_1_SQRT_2))));
                s.mul(s.mul(c(0.5), v), cdf2)
            }),
            Unary::Silu => map1(s, x, out, |v| s.mul(v, sigmoid(s, v))),
            Unary::Sigmoid => map1(s, x, out, |v| sigmoid(s, v)),
            Unary::Tanh => map1(s, x, out, |v| tanh(s, v)),
            Unary::AddScalar(k) => map1(s, x, out, |v| s.add(v, c(k))),
            Unary::MulScalar(k) => map1(s, x, out, |v| s.mul(v, c(k))),
            // A division, not a multiplication by 1/k: the scalar kernel divides.
            Unary::DivScalar(k) => map1(s, x, out, |v| s.div(v, c(k))),
            Unary::ScalarSub(k) => map1(s, x, out, |v| s.sub(c(k), v)),
            Unary::ScalarDiv(k) => map1(s, x, out, |v| s.div(c(k), v)),
            Unary::Expm1 | Unary::PowScalar(_) | Unary::Clamp(..) => {
                unreachable!("filtered by unary_supported")
            }
        }
    }
}

/// `cpu::unary` for f32/bf16/f16 inputs and outputs (same type, or f32 on one side).
pub(crate) fn unary<I: Elem, O: Elem>(op: Unary, x: &[I], out: &mut [O]) -> bool {
    let Some(level) = level() else {
        return false;
    };
    if !unary_supported(op) {
        return false;
    }
    let (Some(xv), Some(ov)) = (view(x), view_mut(out)) else {
        return false;
    };
    with_pair!(xv, ov, |x, out| {
        par_chunks_mut(out, |start, out| {
            let x = &x[start..start + out.len()];
            run(level, UnaryK { op, x, out })
        })
    });
    true
}

/// Whether `unary_backward` has a vector form of `op`.
fn backward_supported(op: Unary) -> bool {
    matches!(
        op,
        Unary::Neg
            | Unary::Abs
            | Unary::Square
            | Unary::Sqrt
            | Unary::Rsqrt
            | Unary::Reciprocal
            | Unary::Exp
            | Unary::Log
            | Unary::Softplus
            | Unary::Relu
            | Unary::Gelu
            | Unary::Silu
            | Unary::Sigmoid
            | Unary::Tanh
            | Unary::AddScalar(_)
            | Unary::MulScalar(_)
            | Unary::DivScalar(_)
            | Unary::ScalarSub(_)
            | Unary::ScalarDiv(_)
    )
}

struct UnaryBackward<'a, T> {
    op: Unary,
    x: &'a [T],
    y: &'a [T],
    dy: &'a [T],
    dx: &'a mut [T],
}

simd_kernel! {
    impl[T: Lane] UnaryBackward<'_, T> => ();
    fn exec(this, s: S) {
        let (x, y, dy, dx) = (this.x, this.y, this.dy, this.dx);
        let c = |v: f64| s.splat(v as f32);
        let (zero, one) = (s.splat(0.0), s.splat(1.0));
        // `dx = dy · f'(x, y)` with `f'` as in `Unary::derivative` (same operations, same order).
        macro_rules! grad {
            (|$x:ident, $y:ident| $d:expr) => {
                map3(s, x, y, dy, dx, |$x, $y, g| s.mul(g, $d))
            };
        }
        match this.op {
            Unary::Neg => grad!(|_x, _y| c(-1.0)),
            Unary::Abs => {
                grad!(|x, _y| s.select(s.gt(x, zero), one, s.select(s.lt(x, zero), c(-1.0), zero)))
            }
            Unary::Square => grad!(|x, _y| s.mul(c(2.0), x)),
            Unary::Sqrt => grad!(|_x, y| s.div(c(0.5), y)),
            Unary::Rsqrt => grad!(|_x, y| s.mul(s.mul(s.mul(c(-0.5), y), y), y)),
            Unary::Reciprocal => grad!(|_x, y| s.neg(s.mul(y, y))),
            Unary::Exp => grad!(|_x, y| y),
            Unary::Log => grad!(|x, _y| s.div(one, x)),
            Unary::Softplus => grad!(|x, _y| s.select(s.gt(x, c(20.0)), one, sigmoid(s, x))),
            Unary::Relu => grad!(|x, _y| s.select(s.gt(x, zero), one, zero)),
            Unary::Gelu => grad!(|x, _y| {
                let cdf = s.mul(c(0.5), s.add(one, erf(s, s.mul(x, s.splat(FRAC_1_SQRT_2)))));
                let pdf = s.mul(
                    exp(s, s.mul(s.mul(c(-0.5), x), x)),
                    c(0.398_942_280_401_432_7),
                );
                s.add(cdf, s.mul(x, pdf))
            }),
            Unary::Silu => grad!(|x, _y| {
                let sg = sigmoid(s, x);
                s.mul(sg, s.add(one, s.mul(x, s.sub(one, sg))))
            }),
            Unary::Sigmoid => grad!(|_x, y| s.mul(y, s.sub(one, y))),
            Unary::Tanh => grad!(|_x, y| s.sub(one, s.mul(y, y))),
            Unary::AddScalar(_) => grad!(|_x, _y| one),
            Unary::MulScalar(k) => grad!(|_x, _y| c(k)),
            Unary::DivScalar(k) => grad!(|_x, _y| s.div(one, c(k))),
            Unary::ScalarSub(_) => grad!(|_x, _y| c(-1.0)),
            Unary::ScalarDiv(_) => grad!(|x, y| s.neg(s.div(y, x))),
            _ => unreachable!("filtered by backward_supported"),
        }
    }
}

/// `cpu::unary_backward` for f32/bf16/f16.
pub(crate) fn unary_backward<E: Elem>(op: Unary, x: &[E], y: &[E], dy: &[E], dx: &mut [E]) -> bool {
    let Some(level) = level() else {
        return false;
    };
    if !backward_supported(op) {
        return false;
    }
    let (Some(xv), Some(yv), Some(gv), Some(dv)) = (view(x), view(y), view(dy), view_mut(dx))
    else {
        return false;
    };
    macro_rules! go {
        ($x:expr, $y:expr, $g:expr, $d:expr) => {
            par_chunks_mut($d, |start, dx| {
                let r = start..start + dx.len();
                let (x, y, dy) = (&$x[r.clone()], &$y[r.clone()], &$g[r]);
                run(level, UnaryBackward { op, x, y, dy, dx })
            })
        };
    }
    match (xv, yv, gv, dv) {
        (View::F32(x), View::F32(y), View::F32(g), ViewMut::F32(d)) => go!(x, y, g, d),
        (View::Bf16(x), View::Bf16(y), View::Bf16(g), ViewMut::Bf16(d)) => go!(x, y, g, d),
        (View::F16(x), View::F16(y), View::F16(g), ViewMut::F16(d)) => go!(x, y, g, d),
        _ => return false,
    }
    true
}

// ---------------------------------------------------------------------------------------------------
// Binary arithmetic

/// `op(a, b)` on vectors, as `Binary::apply`: the four operations are single IEEE operations;
/// maximum and minimum give NaN when either operand is NaN.
#[inline(always)]
fn binary_op<S: Simd>(s: S, op: Binary, a: <S as Simd>::V, b: <S as Simd>::V) -> <S as Simd>::V {
    match op {
        Binary::Add => s.add(a, b),
        Binary::Sub => s.sub(a, b),
        Binary::Mul => s.mul(a, b),
        Binary::Div => s.div(a, b),
        Binary::Maximum => {
            let nan = s.mask_or(s.is_nan(a), s.is_nan(b));
            s.select(nan, s.splat(f32::NAN), s.max(a, b))
        }
        Binary::Minimum => {
            let nan = s.mask_or(s.is_nan(a), s.is_nan(b));
            s.select(nan, s.splat(f32::NAN), s.min(a, b))
        }
    }
}

/// Runs `$body` with `$op` bound to a `Binary` known at compile time, so every arm is its own loop.
macro_rules! each_binary {
    ($op:expr, |$k:ident| $body:expr) => {
        match $op {
            Binary::Add => {
                const $k: Binary = Binary::Add;
                $body
            }
            Binary::Sub => {
                const $k: Binary = Binary::Sub;
                $body
            }
            Binary::Mul => {
                const $k: Binary = Binary::Mul;
                $body
            }
            Binary::Div => {
                const $k: Binary = Binary::Div;
                $body
            }
            Binary::Maximum => {
                const $k: Binary = Binary::Maximum;
                $body
            }
            Binary::Minimum => {
                const $k: Binary = Binary::Minimum;
                $body
            }
        }
    };
}

/// How an operand of a broadcast binary op is read.
#[derive(Clone, Copy)]
enum Operand<'a, T> {
    /// One element per output element.
    Full(&'a [T]),
    /// A row repeated along the output (`period` elements, `period` ≥ 2).
    Row(&'a [T]),
    /// A single value for every output element.
    Splat(T),
}

struct BinaryK<'a, T> {
    op: Binary,
    a: Operand<'a, T>,
    b: Operand<'a, T>,
    out: &'a mut [T],
}

simd_kernel! {
    impl[T: Lane] BinaryK<'_, T> => ();
    fn exec(this, s: S) {
        let out = this.out;
        each_binary!(this.op, |OP| match (this.a, this.b) {
            (Operand::Full(a), Operand::Full(b)) => {
                map2(s, a, b, out, |a, b| binary_op(s, OP, a, b))
            }
            (Operand::Full(a), Operand::Splat(b)) => {
                let b = s.splat(b.to_f32());
                map1(s, a, out, |a| binary_op(s, OP, a, b))
            }
            (Operand::Splat(a), Operand::Full(b)) => {
                let a = s.splat(a.to_f32());
                map1(s, b, out, |b| binary_op(s, OP, a, b))
            }
            (Operand::Full(a), Operand::Row(b)) => {
                // `out` starts at a row boundary (the caller splits by whole rows).
                let p = b.len();
                for (a, o) in a.chunks(p).zip(out.chunks_mut(p)) {
                    map2(s, a, b, o, |a, b| binary_op(s, OP, a, b));
                }
            }
            (Operand::Row(a), Operand::Full(b)) => {
                let p = a.len();
                for (b, o) in b.chunks(p).zip(out.chunks_mut(p)) {
                    map2(s, a, b, o, |a, b| binary_op(s, OP, a, b));
                }
            }
            _ => unreachable!("one operand is always full"),
        })
    }
}

/// How to read an operand with `period` for output elements `start..start + len` of `n`.
fn operand<T: Copy>(x: &[T], period: usize, n: usize, start: usize, len: usize) -> Operand<'_, T> {
    match period {
        _ if period == n => Operand::Full(&x[start..start + len]),
        1 => Operand::Splat(x[0]),
        p => Operand::Row(&x[..p]),
    }
}

/// `cpu::binary` with both operands contiguous.
pub(crate) fn binary<E: Elem>(op: Binary, a: &[E], b: &[E], out: &mut [E]) -> bool {
    let n = out.len();
    binary_periodic(op, a, b, out, n, n)
}

/// `cpu::binary` where each operand is either contiguous (`period == out.len()`) or repeats with
/// `period` dividing `out.len()` (a trailing-dimension broadcast such as a bias row, or a single value
/// with period 1). At least one operand must be contiguous.
pub(crate) fn binary_periodic<E: Elem>(
    op: Binary,
    a: &[E],
    b: &[E],
    out: &mut [E],
    period_a: usize,
    period_b: usize,
) -> bool {
    let n = out.len();
    let Some(level) = level() else {
        return false;
    };
    if n == 0
        || (period_a != n && period_b != n)
        || !n.is_multiple_of(period_a)
        || !n.is_multiple_of(period_b)
    {
        return false;
    }
    let (Some(av), Some(bv), Some(ov)) = (view(a), view(b), view_mut(out)) else {
        return false;
    };
    macro_rules! go {
        ($a:expr, $b:expr, $o:expr) => {{
            let (a, b) = ($a, $b);
            let p = period_a.min(period_b);
            if p == n || p == 1 {
                par_chunks_mut($o, |start, out| {
                    let len = out.len();
                    let (a, b) = (
                        operand(a, period_a, n, start, len),
                        operand(b, period_b, n, start, len),
                    );
                    run(level, BinaryK { op, a, b, out })
                })
            } else {
                // Whole rows per task, so each task's output starts at a row boundary.
                let rows = (super::super::PARALLEL_MIN / 4).div_ceil(p);
                let task = |(i, out): (usize, &mut [_])| {
                    let (start, len) = (i * rows * p, out.len());
                    let (a, b) = (
                        operand(a, period_a, n, start, len),
                        operand(b, period_b, n, start, len),
                    );
                    run(level, BinaryK { op, a, b, out })
                };
                if n < super::super::PARALLEL_MIN {
                    $o.chunks_mut(rows * p).enumerate().for_each(task);
                } else {
                    use rayon::prelude::*;
                    $o.par_chunks_mut(rows * p).enumerate().for_each(task);
                }
            }
        }};
    }
    match (av, bv, ov) {
        (View::F32(a), View::F32(b), ViewMut::F32(o)) => go!(a, b, o),
        (View::Bf16(a), View::Bf16(b), ViewMut::Bf16(o)) => go!(a, b, o),
        (View::F16(a), View::F16(b), ViewMut::F16(o)) => go!(a, b, o),
        _ => return false,
    }
    true
}
