//! Transcendental functions on f32 lanes, generic over the instruction set.
//!
//! Each follows the scalar f32 function it replaces at the edges: NaN in gives NaN out, overflow gives
//! ±inf, underflow goes through the subnormals to ±0, and the limits at ±inf are exact. Errors are in
//! f32 ulps against f64 references (the f64 result's distance over the spacing of f32 there), measured
//! over all 2^32 f32 bit patterns; the scalar path's functions measured the same way for comparison:
//!
//! | function | max error | scalar path |
//! | --- | --- | --- |
//! | `exp` | 1.01 ulp | 0.50 (`expf`) |
//! | `log` | 0.83 ulp | 0.82 (`logf`) |
//! | `log1p` | 1.44 ulp | 1.29 (`log1pf`) |
//! | `tanh` | 1.33 ulp | 2.19 (`tanhf`) |
//! | `erf` | 1.16 ulp | not measured (`libm::erff`) |
//! | `sigmoid` | 2.40 ulp | 2.40 (the same formula) |
//!
//! Methods: `exp` reduces by ln 2 with Cody–Waite (exact with FMA), uses Cephes' degree-5 polynomial
//! and applies 2^n in two steps; `log` takes the mantissa in [√½, √2) with Cephes' degree-8 polynomial,
//! subnormals pre-scaled by 2^23; `log1p` is `log(u) - ((u - 1) - x)/u` with `u = 1 + x` (correcting the
//! rounding of `u`); `tanh` is Cephes' odd polynomial below 0.625 and `1 - 2/(e^2|x| + 1)` above; `erf`
//! is an odd polynomial below 0.9 and `1 - exp(Q(|x|))` up to 3.9375 (our own least-squares fits), then 1;
//! `sigmoid` is `1/(1 + e^-x)` or `e^x/(1 + e^x)` with one division.
//!
//! So the two paths differ by at most the sum of their errors; the unit test below holds each vector
//! function to its bound on a sample of every range at every level.

use super::{Simd, poly};

/// The f32 nearest ln 2 and the rest (ln 2 - `LN2_HI`), for an exact reduction `x - n·ln 2` with FMA.
const LN2_HI: f32 = std::f32::consts::LN_2;
const LN2_LO: f32 = -1.904_654_2e-9;
/// Cephes `expf`: `e^r ≈ 1 + r + r²·P(r)` on |r| ≤ ln2/2.
const EXP_P: [f32; 6] = [
    0.5,
    0.166_666_66,
    0.041_665_796,
    0.008_333_452,
    0.001_398_199_9,
    1.987_569_1e-4,
];

/// `y · 2^n` for integer-valued `n` in [-150, 128], rounded once: 2^n is applied as two normal powers
/// of two, so subnormal results and `n = 128` need no special case (the first product is exact).
#[inline(always)]
fn scale<S: Simd>(s: S, y: S::V, n: S::V) -> S::V {
    let ni = s.to_int(n);
    let n1 = s.sra::<1>(ni);
    let n2 = s.sub_u(ni, n1);
    let bias = s.splat_u(127);
    let p1 = s.as_float(s.shl::<23>(s.add_u(n1, bias)));
    let p2 = s.as_float(s.shl::<23>(s.add_u(n2, bias)));
    s.mul(s.mul(y, p1), p2)
}

/// `e^x`, within 1.01 ulp.
#[inline(always)]
pub(crate) fn exp<S: Simd>(s: S, x: S::V) -> S::V {
    // Outside [-104, 89] the result is 0 or inf, and the clamped input gives exactly that. (`max` and
    // `min` return their second operand for NaN, so NaN lanes are patched at the end.)
    let xc = s.min(s.max(x, s.splat(-104.0)), s.splat(89.0));
    let n = s.round(s.mul(xc, s.splat(std::f32::consts::LOG2_E)));
    let r = s.neg_mul_add(n, s.splat(LN2_HI), xc);
    let r = s.neg_mul_add(n, s.splat(LN2_LO), r);
    let p = poly(s, r, &EXP_P);
    // Adding the small terms first keeps the result within 1 ulp.
    let y = s.add(s.mul_add(p, s.mul(r, r), r), s.splat(1.0));
    let y = scale(s, y, n);
    s.select(s.is_nan(x), s.add(x, x), y)
}

/// Cephes `logf`: `ln(1 + f) ≈ f - f²/2 + f³·P(f)` for `1 + f` in [√½, √2).
const LOG_P: [f32; 9] = [
    0.333_333_3,
    -0.249_999_94,
    0.200_007_14,
    -0.166_680_57,
    0.142_493_23,
    -0.124_201_41,
    0.116_769_984,
    -0.115_146_1,
    0.070_376_836,
];
/// ln 2 split so that `e · LN2_A` is exact for every exponent `e`.
const LN2_A: f32 = 0.693_359_4;
const LN2_B: f32 = -2.121_944_4e-4;

/// `ln x`, within 0.83 ulp.
#[inline(always)]
pub(crate) fn log<S: Simd>(s: S, x: S::V) -> S::V {
    // Subnormals are scaled into the normal range first, so the exponent field is meaningful.
    let tiny = s.lt(x, s.splat(f32::MIN_POSITIVE));
    let xs = s.select(tiny, s.mul(x, s.splat(8_388_608.0)), x);
    let e_bias = s.select(tiny, s.splat(-23.0), s.splat(0.0));
    let b = s.as_int(xs);
    // Exponent with the mantissa taken in [0.5, 1).
    let e = s.to_float(s.sub_u(s.and_u(s.sra::<23>(b), s.splat_u(0xFF)), s.splat_u(126)));
    let m = s.as_float(s.or_u(s.and_u(b, s.splat_u(0x007F_FFFF)), s.splat_u(0x3F00_0000)));
    // Move m into [√½, √2) so f = m - 1 is small on both sides of 0.
    let low = s.lt(m, s.splat(std::f32::consts::FRAC_1_SQRT_2));
    let f = s.sub(s.select(low, s.add(m, m), m), s.splat(1.0));
    let e = s.add(s.sub(e, s.select(low, s.splat(1.0), s.splat(0.0))), e_bias);
    let z = s.mul(f, f);
    let mut y = s.mul(s.mul(poly(s, f, &LOG_P), f), z);
    y = s.mul_add(e, s.splat(LN2_B), y);
    y = s.mul_add(z, s.splat(-0.5), y);
    let r = s.mul_add(e, s.splat(LN2_A), s.add(f, y));
    // Edges: ln(+inf) = +inf, ln(±0) = -inf, ln(x < 0) and ln(NaN) = NaN.
    let r = s.select(s.eq(x, s.splat(f32::INFINITY)), x, r);
    let r = s.select(s.eq(x, s.splat(0.0)), s.splat(f32::NEG_INFINITY), r);
    let bad = s.mask_or(s.lt(x, s.splat(0.0)), s.is_nan(x));
    s.select(bad, s.splat(f32::NAN), r)
}

/// `ln(1 + x)`, within 1.44 ulp. With `u = 1 + x` rounded, `ln u` is off by about `(u - 1 - x)/u`, which
/// is computed exactly enough to subtract; where `u` rounds to 1 the answer is `x` itself.
#[inline(always)]
pub(crate) fn log1p<S: Simd>(s: S, x: S::V) -> S::V {
    let one = s.splat(1.0);
    let u = s.add(one, x);
    let l = log(s, u);
    let r = s.sub(l, s.div(s.sub(s.sub(u, one), x), u));
    let r = s.select(s.eq(u, one), x, r);
    // u = 0 (x = -1) and u = inf: the correction would be NaN; ln u is the answer.
    let edge = s.mask_or(s.eq(u, s.splat(0.0)), s.eq(u, s.splat(f32::INFINITY)));
    s.select(edge, l, r)
}

/// Cephes `tanhf` polynomial: `tanh x ≈ x + x·z·P(z)`, `z = x²`, for |x| < 0.625.
const TANH_P: [f32; 5] = [
    -0.333_332_8,
    0.133_314_42,
    -0.053_739_715,
    0.020_639_088,
    -0.005_704_988_7,
];

/// `tanh x`, within 1.33 ulp.
#[inline(always)]
pub(crate) fn tanh<S: Simd>(s: S, x: S::V) -> S::V {
    let a = s.abs(x);
    let z = s.mul(a, a);
    let small = s.mul_add(s.mul(poly(s, z, &TANH_P), z), a, a);
    // 1 - 2/(e^2a + 1): e^2a = inf gives exactly 1; NaN stays NaN.
    let e = exp(s, s.add(a, a));
    let large = s.sub(s.splat(1.0), s.div(s.splat(2.0), s.add(e, s.splat(1.0))));
    let y = s.select(s.lt(a, s.splat(0.625)), small, large);
    // Computed on |x|, so the sign (and tanh(-0) = -0) comes from x.
    s.or(y, s.sign(x))
}

/// 2/√π split in two f32 so `x·2/√π` keeps its last bit.
const ERF_C0_HI: f32 = std::f32::consts::FRAC_2_SQRT_PI;
const ERF_C0_LO: f32 = -5.863_538_3e-8;
/// `erf x ≈ x·(2/√π + t·P(t))`, `t = x²`, on |x| < 0.9 (least-squares fit on Chebyshev nodes, relative
/// error weighting).
const ERF_SMALL: [f32; 6] = [
    -0.376_126_38,
    0.112_837_31,
    -0.026_861_211,
    0.005_205_352,
    -8.190_705e-4,
    8.571_226_5e-5,
];
/// `ln erfc x ≈ Q(x)` on [0.9, 3.9375] (same kind of fit, weighted by erfc/erf so that the error of
/// `1 - e^Q` is uniform).
const ERF_LARGE: [f32; 11] = [
    3.801_19e-5,
    -1.128_658,
    -0.635_707_14,
    -0.104_523_66,
    0.021_299_38,
    -0.001_581_347_7,
    -7.489_345e-4,
    3.382_162e-4,
    -6.924_587e-5,
    7.632_996e-6,
    -3.646_119_6e-7,
];
/// erf x rounds to 1 in f32 from 3.9192 on.
const ERF_ONE: f32 = 3.9375;

/// `erf x`, within 1.16 ulp.
#[inline(always)]
pub(crate) fn erf<S: Simd>(s: S, x: S::V) -> S::V {
    let a = s.abs(x);
    let t = s.mul(a, a);
    let corr = s.mul_add(t, poly(s, t, &ERF_SMALL), s.splat(ERF_C0_LO));
    let small = s.mul_add(a, s.splat(ERF_C0_HI), s.mul(a, corr));
    let am = s.min(a, s.splat(ERF_ONE));
    let large = s.sub(s.splat(1.0), exp(s, poly(s, am, &ERF_LARGE)));
    let y = s.select(s.lt(a, s.splat(ERF_ONE)), large, s.splat(1.0));
    let y = s.select(s.lt(a, s.splat(0.9)), small, y);
    let y = s.or(y, s.sign(x));
    s.select(s.is_nan(x), s.add(x, x), y)
}

/// `σ(x) = 1/(1 + e^-x)` for x ≥ 0 and `e^x/(1 + e^x)` below, as the scalar kernel, within 2.40 ulp.
#[inline(always)]
pub(crate) fn sigmoid<S: Simd>(s: S, x: S::V) -> S::V {
    let e = exp(s, s.neg(s.abs(x)));
    let num = s.select(s.ge(x, s.splat(0.0)), s.splat(1.0), e);
    s.div(num, s.add(s.splat(1.0), e))
}

#[cfg(test)]
mod tests {
    //! The error bounds in the module table, checked on a sample of every f32 range.

    use super::super::super::isa::{Isa, detected};
    use super::super::elementwise::map1;
    use super::super::{run, simd_kernel};
    use super::*;
    use rayon::prelude::*;

    #[derive(Clone, Copy, Debug)]
    enum Func {
        Exp,
        Log,
        Log1p,
        Tanh,
        Erf,
        Sigmoid,
    }

    struct Eval<'a> {
        f: Func,
        x: &'a [f32],
        y: &'a mut [f32],
    }

    simd_kernel! {
        impl[] Eval<'_> => ();
        fn exec(this, s: S) {
            match this.f {
                Func::Exp => map1(s, this.x, this.y, |v| exp(s, v)),
                Func::Log => map1(s, this.x, this.y, |v| log(s, v)),
                Func::Log1p => map1(s, this.x, this.y, |v| log1p(s, v)),
                Func::Tanh => map1(s, this.x, this.y, |v| tanh(s, v)),
                Func::Erf => map1(s, this.x, this.y, |v| erf(s, v)),
                Func::Sigmoid => map1(s, this.x, this.y, |v| sigmoid(s, v)),
            }
        }
    }

    /// The error of `got` in ulps of the f32 nearest `exact` (ulps of the smallest subnormal below the
    /// normal range); 0 for matching NaNs and infinities, infinite for a NaN or infinity that should not be.
    fn ulps(got: f32, exact: f64) -> f64 {
        if exact.is_nan() || got.is_nan() {
            return if exact.is_nan() && got.is_nan() {
                0.0
            } else {
                f64::INFINITY
            };
        }
        let nearest = exact as f32;
        if got == nearest {
            return 0.0;
        }
        if got.is_infinite() || nearest.is_infinite() {
            // Within one ulp of the overflow threshold either rounding is fine.
            let max = f32::MAX as f64;
            return if (got.abs() as f64 - max).abs() <= max * f64::from(f32::EPSILON) {
                1.0
            } else {
                f64::INFINITY
            };
        }
        let a = nearest.abs().max(f32::MIN_POSITIVE);
        let ulp = f64::from(f32::from_bits(a.to_bits() + 1)) - f64::from(a);
        (f64::from(got) - exact).abs() / ulp
    }

    /// Every vector level the CPU has, each function checked on 2^32 / 251 inputs spread over all bit
    /// patterns (both signs, subnormals, NaN, ±inf) against f64 references.
    #[test]
    fn errors_are_within_the_documented_ulps() {
        // (function, f64 reference, bound in ulps)
        type Case = (Func, fn(f64) -> f64, f64);
        let cases: [Case; 6] = [
            (Func::Exp, f64::exp, 1.02),
            (Func::Log, f64::ln, 0.85),
            (Func::Log1p, f64::ln_1p, 1.45),
            (Func::Tanh, f64::tanh, 1.35),
            (Func::Erf, libm::erf, 1.2),
            (Func::Sigmoid, |x| 1.0 / (1.0 + (-x).exp()), 2.45),
        ];
        let levels = [Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&l| l <= detected());
        for level in levels {
            for (f, reference, bound) in cases {
                const STEP: u64 = 251;
                let (worst, at) = (0..(1u64 << 32) / STEP / 4096 + 1)
                    .into_par_iter()
                    .map(|chunk| {
                        let x: Vec<f32> = (chunk * 4096..(chunk + 1) * 4096)
                            .map(|k| f32::from_bits((k * STEP).min(u32::MAX as u64) as u32))
                            .collect();
                        let mut y = vec![0.0f32; x.len()];
                        run(
                            level,
                            Eval {
                                f,
                                x: &x,
                                y: &mut y,
                            },
                        );
                        x.iter()
                            .zip(&y)
                            .map(|(&x, &y)| (ulps(y, reference(f64::from(x))), x))
                            .fold((0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a })
                    })
                    .reduce(|| (0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a });
                eprintln!("{level:?} {f:?}: max {worst:.3} ulp at {at:e}");
                assert!(
                    worst <= bound,
                    "{level:?} {f:?}: {worst:.3} ulp at {at:e} ({:#010x}), bound {bound}",
                    at.to_bits()
                );
            }
        }
    }
}
