//! Elementwise functions of one tensor, and their derivatives.

use super::par_chunks_mut;
use crate::{Accum, Elem, Float};

/// An elementwise function. Scalar parameters are carried as f64 and rounded to the compute type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    /// `-x`
    Neg,
    /// `|x|`
    Abs,
    /// `x²`
    Square,
    /// `√x`
    Sqrt,
    /// `1/√x`
    Rsqrt,
    /// `1/x`
    Reciprocal,
    /// `eˣ`
    Exp,
    /// `ln x`
    Log,
    /// `ln(1+x)`
    Log1p,
    /// `eˣ-1`
    Expm1,
    /// `ln(1+eˣ)`, returning `x` above 20 (PyTorch's threshold).
    Softplus,
    /// `max(x, 0)`
    Relu,
    /// `x·Φ(x)` with the exact normal CDF (PyTorch's default GELU).
    Gelu,
    /// `x·σ(x)`
    Silu,
    /// `σ(x) = 1/(1+e⁻ˣ)`
    Sigmoid,
    /// `tanh x`
    Tanh,
    /// `x + c`
    AddScalar(f64),
    /// `x · c`
    MulScalar(f64),
    /// `x / c`
    DivScalar(f64),
    /// `c - x`
    ScalarSub(f64),
    /// `c / x`
    ScalarDiv(f64),
    /// `xᶜ`
    PowScalar(f64),
    /// `min(max(x, lo), hi)`
    Clamp(f64, f64),
}

#[inline(always)]
fn sigmoid<A: Accum>(x: A) -> A {
    if x >= A::ZERO {
        A::ONE / (A::ONE + (-x).exp())
    } else {
        let e = x.exp();
        e / (A::ONE + e)
    }
}

impl Unary {
    /// The function's value at `x`.
    #[inline(always)]
    pub fn apply<A: Accum>(self, x: A) -> A {
        match self {
            Unary::Neg => -x,
            Unary::Abs => x.abs(),
            Unary::Square => x * x,
            Unary::Sqrt => x.sqrt(),
            Unary::Rsqrt => A::ONE / x.sqrt(),
            Unary::Reciprocal => A::ONE / x,
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Log1p => x.ln_1p(),
            Unary::Expm1 => x.exp_m1(),
            Unary::Softplus => {
                if x > A::c(20.0) {
                    x
                } else {
                    x.exp().ln_1p()
                }
            }
            Unary::Relu => {
                // NaN propagates, as in PyTorch.
                if x > A::ZERO || x.is_nan() {
                    x
                } else {
                    A::ZERO
                }
            }
            Unary::Gelu => {
                A::c(0.5) * x * (A::ONE + (x * A::c(std::f64::consts::FRAC_1_SQRT_2)).erf())
            }
            Unary::Silu => x * sigmoid(x),
            Unary::Sigmoid => sigmoid(x),
            Unary::Tanh => x.tanh(),
            Unary::AddScalar(c) => x + A::c(c),
            Unary::MulScalar(c) => x * A::c(c),
            Unary::DivScalar(c) => x / A::c(c),
            Unary::ScalarSub(c) => A::c(c) - x,
            Unary::ScalarDiv(c) => A::c(c) / x,
            Unary::PowScalar(p) => x.powf(A::c(p)),
            Unary::Clamp(lo, hi) => x.max_nan(A::c(lo)).min_nan(A::c(hi)),
        }
    }

    /// The derivative `f'(x)`, given `x` and `y = f(x)` (whichever is cheaper is used).
    #[inline(always)]
    pub fn derivative<A: Accum>(self, x: A, y: A) -> A {
        match self {
            Unary::Neg => -A::ONE,
            Unary::Abs => {
                if x > A::ZERO {
                    A::ONE
                } else if x < A::ZERO {
                    -A::ONE
                } else {
                    A::ZERO
                }
            }
            Unary::Square => A::c(2.0) * x,
            Unary::Sqrt => A::c(0.5) / y,
            Unary::Rsqrt => A::c(-0.5) * y * y * y,
            Unary::Reciprocal => -(y * y),
            Unary::Exp => y,
            Unary::Log => A::ONE / x,
            Unary::Log1p => A::ONE / (A::ONE + x),
            Unary::Expm1 => y + A::ONE,
            Unary::Softplus => {
                if x > A::c(20.0) {
                    A::ONE
                } else {
                    sigmoid(x)
                }
            }
            Unary::Relu => {
                if x > A::ZERO {
                    A::ONE
                } else {
                    A::ZERO
                }
            }
            Unary::Gelu => {
                let cdf = A::c(0.5) * (A::ONE + (x * A::c(std::f64::consts::FRAC_1_SQRT_2)).erf());
                let pdf = (A::c(-0.5) * x * x).exp() * A::c(0.398_942_280_401_432_7);
                cdf + x * pdf
            }
            Unary::Silu => {
                let s = sigmoid(x);
                s * (A::ONE + x * (A::ONE - s))
            }
            Unary::Sigmoid => y * (A::ONE - y),
            Unary::Tanh => A::ONE - y * y,
            Unary::AddScalar(_) => A::ONE,
            Unary::MulScalar(c) => A::c(c),
            Unary::DivScalar(c) => A::ONE / A::c(c),
            Unary::ScalarSub(_) => -A::ONE,
            Unary::ScalarDiv(_) => -(y / x),
            // d/dx x⁰ is 0 everywhere, also at 0 where the formula gives 0·0⁻¹ (as PyTorch).
            Unary::PowScalar(0.0) => A::ZERO,
            Unary::PowScalar(p) => A::c(p) * x.powf(A::c(p - 1.0)),
            Unary::Clamp(lo, hi) => {
                if x >= A::c(lo) && x <= A::c(hi) {
                    A::ONE
                } else {
                    A::ZERO
                }
            }
        }
    }
}

/// `out[i] = op(x[i])`, computed in `I::Acc` and rounded once to `O`.
pub fn unary<I: Float, O: Elem>(op: Unary, x: &[I], out: &mut [O]) {
    assert_eq!(
        x.len(),
        out.len(),
        "unary {op:?}: input and output lengths differ"
    );
    if super::simd::unary(op, x, out) {
        return;
    }
    par_chunks_mut(out, |start, out| {
        let x = &x[start..start + out.len()];
        for (o, &v) in out.iter_mut().zip(x) {
            *o = op.apply(v.to_acc()).cast::<O>();
        }
    });
}

/// `dx[i] = dy[i] · op'(x[i])`, where `y = op(x)` is the forward output.
pub fn unary_backward<E: Float>(op: Unary, x: &[E], y: &[E], dy: &[E], dx: &mut [E]) {
    let n = dx.len();
    assert!(
        x.len() == n && y.len() == n && dy.len() == n,
        "unary_backward {op:?}: lengths differ"
    );
    if super::simd::unary_backward(op, x, y, dy, dx) {
        return;
    }
    par_chunks_mut(dx, |start, dx| {
        let end = start + dx.len();
        let it = x[start..end]
            .iter()
            .zip(&y[start..end])
            .zip(&dy[start..end]);
        for (d, ((&x, &y), &g)) in dx.iter_mut().zip(it) {
            *d = E::from_acc(g.to_acc() * op.derivative(x.to_acc(), y.to_acc()));
        }
    });
}
