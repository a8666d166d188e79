//! `cpu::unary` and `cpu::unary_backward` for every `Unary` variant against f64 references: the forward
//! against f64 `std` functions (GELU through an erf written here), the backward against five-point
//! central finite differences of that reference.

mod common;

use amp_kernels::cpu::{self, Unary};
use amp_kernels::{bf16, f16};
use common::{Rng, TestFloat, assert_close, to_elems, to_f64s};

/// One instance of every variant (scalar parameters chosen so the function is not trivial), plus a few
/// extra parameterisations of `PowScalar` and `Clamp`.
const OPS: [Unary; 27] = [
    Unary::Neg,
    Unary::Abs,
    Unary::Square,
    Unary::Sqrt,
    Unary::Rsqrt,
    Unary::Reciprocal,
    Unary::Exp,
    Unary::Log,
    Unary::Log1p,
    Unary::Expm1,
    Unary::Softplus,
    Unary::Relu,
    Unary::Gelu,
    Unary::Silu,
    Unary::Sigmoid,
    Unary::Tanh,
    Unary::AddScalar(0.37),
    Unary::MulScalar(-1.7),
    Unary::DivScalar(-0.3),
    Unary::ScalarSub(2.5),
    Unary::ScalarDiv(1.3),
    Unary::PowScalar(3.0),
    Unary::Clamp(-0.5, 0.8),
    Unary::PowScalar(0.5),
    Unary::PowScalar(-1.5),
    Unary::PowScalar(2.5),
    Unary::Clamp(0.25, 3.0),
];

/// erf in f64: `2/√π · e^{-x²} · Σ_{n≥0} 2ⁿ x^{2n+1} / (1·3·…·(2n+1))`, a series of positive terms (no
/// cancellation) accurate to about 1e-15 for every x; |x| ≥ 6 gives ±1 (erfc(6) < 2.2e-17).
fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x.abs() >= 6.0 {
        return x.signum();
    }
    let x2 = x * x;
    let (mut term, mut sum) = (x, x);
    let mut n = 0.0;
    loop {
        n += 1.0;
        term *= 2.0 * x2 / (2.0 * n + 1.0);
        sum += term;
        if term.abs() <= 1e-17 * sum.abs() {
            break;
        }
    }
    2.0 / std::f64::consts::PI.sqrt() * (-x2).exp() * sum
}

/// The f64 value of `op` at `x`. Exhaustive on purpose: a new variant fails to compile until it has a
/// reference here.
fn reference(op: Unary, x: f64) -> f64 {
    match op {
        Unary::Neg => -x,
        Unary::Abs => x.abs(),
        Unary::Square => x * x,
        Unary::Sqrt => x.sqrt(),
        Unary::Rsqrt => 1.0 / x.sqrt(),
        Unary::Reciprocal => 1.0 / x,
        Unary::Exp => x.exp(),
        Unary::Log => x.ln(),
        Unary::Log1p => x.ln_1p(),
        Unary::Expm1 => x.exp_m1(),
        // PyTorch returns x above the threshold 20; below it, the stable form max(x, 0) + ln(1 + e^-|x|).
        Unary::Softplus => {
            if x > 20.0 {
                x
            } else {
                x.max(0.0) + (-x.abs()).exp().ln_1p()
            }
        }
        Unary::Relu => {
            if x.is_nan() {
                x
            } else {
                x.max(0.0)
            }
        }
        Unary::Gelu => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
        Unary::Silu => x / (1.0 + (-x).exp()),
        Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Unary::Tanh => x.tanh(),
        Unary::AddScalar(c) => x + c,
        Unary::MulScalar(c) => x * c,
        Unary::DivScalar(c) => x / c,
        Unary::ScalarSub(c) => c - x,
        Unary::ScalarDiv(c) => c / x,
        Unary::PowScalar(p) => x.powf(p),
        Unary::Clamp(lo, hi) => {
            if x.is_nan() {
                x
            } else {
                x.max(lo).min(hi)
            }
        }
    }
}

/// A random input inside the op's smooth domain, at least 0.01 away from any kink.
fn sample(op: Unary, rng: &mut Rng) -> f64 {
    let kinks: Vec<f64> = match op {
        Unary::Abs | Unary::Relu => vec![0.0],
        Unary::Clamp(lo, hi) => vec![lo, hi],
        Unary::Softplus => vec![20.0],
        _ => vec![],
    };
    loop {
        let x = match op {
            Unary::Sqrt | Unary::Rsqrt | Unary::Log => rng.range(0.2, 5.0),
            Unary::PowScalar(p) if p.fract() != 0.0 => rng.range(0.2, 5.0),
            Unary::Reciprocal | Unary::ScalarDiv(_) => {
                rng.range(0.2, 5.0) * if rng.below(2) == 0 { -1.0 } else { 1.0 }
            }
            Unary::Log1p => rng.range(-0.8, 4.0),
            Unary::Exp | Unary::Expm1 => rng.range(-5.0, 5.0),
            Unary::Softplus => rng.range(-25.0, 25.0),
            _ => 2.0 * rng.normal(),
        };
        if kinks.iter().all(|k| (x - k).abs() > 0.01) {
            return x;
        }
    }
}

/// The derivative of the f64 reference at `x` by a five-point central difference (error O(h⁴)).
fn finite_difference(op: Unary, x: f64) -> f64 {
    let h = 1e-4 * x.abs().max(1.0);
    let f = |t: f64| reference(op, t);
    (f(x - 2.0 * h) - 8.0 * f(x - h) + 8.0 * f(x + h) - f(x + 2.0 * h)) / (12.0 * h)
}

/// The magnitude of the terms a correct kernel combines, for the accumulation-type part of the tolerance.
fn input_scale(op: Unary, x: f64) -> f64 {
    match op {
        Unary::AddScalar(c) | Unary::ScalarSub(c) => x.abs().max(c.abs()).max(1.0),
        _ => x.abs().max(1.0),
    }
}

/// Forward of every op on 65 inputs read as `I`, written as `O`, against the f64 reference.
fn check_forward<I: TestFloat, O: TestFloat>(seed: u64) {
    let mut rng = Rng::new(seed);
    for op in OPS {
        let xf: Vec<f64> = (0..65).map(|_| sample(op, &mut rng)).collect();
        let x: Vec<I> = to_elems(&xf);
        let xf = to_f64s(&x);
        let mut out = vec![O::default(); x.len()];
        cpu::unary(op, &x, &mut out);
        let want: Vec<f64> = xf.iter().map(|&v| reference(op, v)).collect();
        assert_close(
            &format!("unary {op:?} {}->{}", I::NAME, O::NAME),
            &to_f64s(&out),
            &want,
            |i| common::tol_for::<I, O>(want[i], input_scale(op, xf[i])),
        );
    }
}

/// Every variant's forward against f64, for each float type (same input and output type).
#[test]
fn forward_matches_f64_reference() {
    fn run<E: TestFloat>() {
        check_forward::<E, E>(1);
    }
    for_each_float!(run);
}

/// Forward with a fused cast: bf16/f16 -> f32 keeps f32 accuracy, f32/f64 -> bf16/f16 rounds once.
#[test]
fn forward_with_output_cast() {
    check_forward::<bf16, f32>(2);
    check_forward::<f16, f32>(3);
    check_forward::<f32, bf16>(4);
    check_forward::<f64, f16>(5);
    check_forward::<f64, bf16>(6);
    check_forward::<f16, f64>(7);
}

/// Large inputs (33 × 1025 elements) take the parallel path and must give the same values.
#[test]
fn forward_parallel_path() {
    let mut rng = Rng::new(8);
    let xf = rng.normals(33 * 1025, 2.0);
    let x: Vec<f32> = to_elems(&xf);
    let mut out = vec![0.0f32; x.len()];
    cpu::unary(Unary::Silu, &x, &mut out);
    let want: Vec<f64> = to_f64s(&x)
        .iter()
        .map(|&v| reference(Unary::Silu, v))
        .collect();
    assert_close("parallel silu", &to_f64s(&out), &want, |i| {
        1e-5 * want[i].abs().max(1.0)
    });
}

/// Backward of every op: `dx = dy · f'(x)` against five-point finite differences of the f64
/// reference. `y` is the f64 forward rounded to `E`, as the runtime would pass it; lower-precision types
/// are allowed a few roundings relative to `|dx| + |dy|` because derivatives written in terms of a
/// rounded `y` (`1 - y²`, `y(1 - y)`) lose precision absolutely, not relatively.
#[test]
fn backward_matches_finite_differences() {
    fn run<E: TestFloat>() {
        let mut rng = Rng::new(10);
        for op in OPS {
            let xf: Vec<f64> = (0..65).map(|_| sample(op, &mut rng)).collect();
            let x: Vec<E> = to_elems(&xf);
            let xf = to_f64s(&x);
            let y: Vec<E> = xf.iter().map(|&v| E::from_f64(reference(op, v))).collect();
            let (dy, dyf) = common::random_elems::<E>(&mut rng, x.len(), 1.0);
            let mut dx = vec![E::default(); x.len()];
            cpu::unary_backward(op, &x, &y, &dy, &mut dx);
            let want: Vec<f64> = xf
                .iter()
                .zip(&dyf)
                .map(|(&v, &g)| g * finite_difference(op, v))
                .collect();
            let rel = if E::DTYPE == amp_kernels::DType::F64 {
                1e-9
            } else {
                4.0 * E::TOL
            };
            assert_close(
                &format!("unary_backward {op:?} {}", E::NAME),
                &to_f64s(&dx),
                &want,
                |i| rel * (want[i].abs() + dyf[i].abs()),
            );
        }
    }
    for_each_float!(run);
}

/// The f64 erf used by the GELU reference matches correctly rounded values to 2e-15.
#[test]
fn reference_erf_is_accurate() {
    let table = [
        (0.1, 0.112_462_916_018_284_9),
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (2.0, 0.995_322_265_018_952_7),
        (3.5, 0.999_999_256_901_627_6),
    ];
    for (x, want) in table {
        assert!(
            (erf(x) - want).abs() <= 2e-15,
            "erf({x}) = {}, expected {want}",
            erf(x)
        );
        assert!(
            (erf(-x) + want).abs() <= 2e-15,
            "erf(-{x}) = {}, expected -{want}",
            erf(-x)
        );
    }
}

/// IEEE special values: NaN propagates through Relu and Clamp, domain edges give ±inf or NaN,
/// saturating functions reach their limits, and Softplus switches to `x` above 20.
#[test]
fn special_values() {
    let inf = f32::INFINITY;
    let cases: [(Unary, f32, f32); 22] = [
        (Unary::Relu, f32::NAN, f32::NAN),
        (Unary::Relu, -3.0, 0.0),
        (Unary::Clamp(-1.0, 1.0), f32::NAN, f32::NAN),
        (Unary::Clamp(-1.0, 1.0), inf, 1.0),
        (Unary::Clamp(-1.0, 1.0), -inf, -1.0),
        (Unary::Log, 0.0, -inf),
        (Unary::Log, -1.0, f32::NAN),
        (Unary::Sqrt, -1.0, f32::NAN),
        (Unary::Rsqrt, 0.0, inf),
        (Unary::Reciprocal, 0.0, inf),
        (Unary::Reciprocal, -0.0, -inf),
        (Unary::Exp, -inf, 0.0),
        (Unary::Exp, 100.0, inf),
        (Unary::Expm1, -inf, -1.0),
        (Unary::Log1p, -1.0, -inf),
        (Unary::Softplus, 100.0, 100.0),
        (Unary::Softplus, -200.0, 0.0),
        (Unary::Sigmoid, inf, 1.0),
        (Unary::Sigmoid, -inf, 0.0),
        (Unary::Tanh, -inf, -1.0),
        (Unary::Gelu, inf, inf),
        (Unary::Abs, -inf, inf),
    ];
    for (op, x, want) in cases {
        let mut out = [0.0f32];
        cpu::unary(op, &[x], &mut out);
        let ok = out[0] == want || (out[0].is_nan() && want.is_nan());
        assert!(ok, "{op:?}({x}) = {}, expected {want}", out[0]);
        let mut out16 = [bf16::ZERO];
        cpu::unary(op, &[bf16::from_f32(x)], &mut out16);
        let want16 = bf16::from_f32(want);
        assert!(
            out16[0] == want16 || (out16[0].is_nan() && want16.is_nan()),
            "bf16 {op:?}({x}) = {}",
            out16[0]
        );
    }
    // Just above the threshold Softplus is exactly x; just below, ln(1 + e^x) differs from x in f64.
    let mut out = [0.0f64; 2];
    cpu::unary(Unary::Softplus, &[20.5f64, 19.5], &mut out);
    assert_eq!(out[0], 20.5);
    assert!(
        (out[1] - (19.5 + (-19.5f64).exp().ln_1p())).abs() <= 1e-14 && out[1] != 19.5,
        "{}",
        out[1]
    );
}
