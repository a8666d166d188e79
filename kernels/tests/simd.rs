//! The vector kernels against the scalar path, at every instruction-set level this CPU has.
//!
//! Each test computes its results once with the level capped at `Isa::Scalar` (the reference) and again
//! under every vector level (`Isa::ALL` up to `detected()`), then compares: bit for bit where the vector
//! kernel does the same IEEE operations (casts, arithmetic, ReLU, reductions across columns, optimizer
//! steps), within a few f32 ulps for the transcendental functions, and within the accumulation-order
//! bound for sums along rows. The cap is process-global, so every test holds one lock while it moves it.

mod common;

use amp_kernels::cpu::isa::{Isa, detected, set_isa_limit};
use amp_kernels::cpu::{self, AdamStep, Binary, Broadcast, Dim3, Reduce, SgdStep, Unary};
use amp_kernels::{DType, Elem, Float, bf16, f16};
use common::Rng;
use rayon::prelude::*;
use std::sync::{Mutex, MutexGuard};

/// Lengths around every vector width and unroll factor, plus one large enough for the parallel path.
const LENGTHS: [usize; 12] = [1, 2, 7, 15, 16, 17, 31, 33, 100, 257, 1000, 100_003];

/// Serializes the tests of this file: they all move the process-wide ISA cap.
static CAP: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    CAP.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The vector levels this CPU supports.
fn vector_levels() -> Vec<Isa> {
    Isa::ALL
        .into_iter()
        .filter(|&l| l > Isa::Scalar && l <= detected())
        .collect()
}

/// Computes `f()` under the scalar cap, then under each vector level, and hands each vector result with
/// the scalar one to `check`. Restores the cap found on entry.
fn versus_scalar<R>(f: impl Fn() -> R, check: impl Fn(Isa, &R, &R)) {
    let _guard = lock();
    let previous = set_isa_limit(Isa::Scalar);
    let want = f();
    for level in vector_levels() {
        set_isa_limit(level);
        let got = f();
        check(level, &got, &want);
    }
    set_isa_limit(previous);
}

/// Widens to f32 (exact for f32, bf16 and f16).
fn f32s<E: Elem>(v: &[E]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

/// The spacing of type `E`'s values at `v` (its ulp), with the subnormal spacing as the floor.
fn ulp_of<E: Elem>(v: f32) -> f32 {
    let (mantissa_bits, min_exp) = match E::DTYPE {
        DType::BF16 => (7, -126),
        DType::F16 => (10, -14),
        _ => (23, -126),
    };
    let a = v.abs();
    let exp = if a.is_finite() && a > 0.0 {
        (a.to_bits() >> 23) as i32 - 127
    } else {
        min_exp
    };
    // In f64: 2f32.powi(-149) underflows through its reciprocal.
    2f64.powi(exp.max(min_exp) - mantissa_bits) as f32
}

/// `got` is within `tol` of `want`: both NaN, equal (infinities included), or closer than `tol`.
fn close(got: f32, want: f32, tol: f32) -> bool {
    (got.is_nan() && want.is_nan())
        || got == want
        || (got.is_finite() && want.is_finite() && (got - want).abs() <= tol)
}

/// Asserts `got[i]` is within `tol(i, want[i])` of `want[i]`, naming the first element that is not.
#[track_caller]
fn assert_near(what: &str, got: &[f32], want: &[f32], tol: impl Fn(usize, f32) -> f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let t = tol(i, w);
        assert!(
            close(g, w, t),
            "{what}: element {i} is {g:e} ({:#010x}), scalar path gives {w:e} ({:#010x}), tol {t:e}",
            g.to_bits(),
            w.to_bits()
        );
    }
}

/// Asserts bit equality (any two NaNs count as equal), naming the first difference.
#[track_caller]
fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{what}: element {i} is {g:e} ({:#010x}), scalar path gives {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

/// Special values every elementwise test mixes in: signed zeros, subnormals, infinities, NaNs, huge and
/// tiny values, and the thresholds where the vector functions switch formulas.
const SPECIALS: [f32; 28] = [
    0.0,
    -0.0,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    -f32::NAN,
    f32::MAX,
    f32::MIN,
    f32::MIN_POSITIVE,
    -f32::MIN_POSITIVE,
    1.0e-45,
    -3.0e-42,
    1.0e-30,
    1.0,
    -1.0,
    20.0,
    20.000002,
    88.72283,
    88.72284,
    -87.5,
    -103.9,
    -104.5,
    0.625,
    -0.624_999_94,
    0.9,
    3.9375,
    -3.93,
    65504.0,
];

/// `n` values: mostly normal with standard deviation `scale`, every seventh a special value.
fn inputs(rng: &mut Rng, n: usize, scale: f64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            if i % 7 == 3 {
                SPECIALS[rng.below(SPECIALS.len())]
            } else {
                (rng.normal() * scale) as f32
            }
        })
        .collect()
}

/// `v` rounded to `E`.
fn elems<E: Elem>(v: &[f32]) -> Vec<E> {
    v.iter().map(|&x| E::from_f32(x)).collect()
}

// ---------------------------------------------------------------------------------------------------
// Casts

/// Every f32 bit pattern cast to bf16 and to f16 at every vector level is bit-identical to `half`.
#[test]
fn casts_match_half_on_every_f32_pattern() {
    const CHUNK: u64 = 1 << 20;
    fn sweep<H: Elem>(
        level: Isa,
        bits: impl Fn(H) -> u16 + Sync,
        reference: impl Fn(f32) -> u16 + Sync,
    ) {
        let bad: Vec<String> = (0..(1u64 << 32) / CHUNK)
            .into_par_iter()
            .filter_map(|chunk| {
                let x: Vec<f32> = (chunk * CHUNK..(chunk + 1) * CHUNK)
                    .map(|b| f32::from_bits(b as u32))
                    .collect();
                let mut out = vec![H::default(); x.len()];
                cpu::cast(&x, &mut out);
                x.iter().zip(&out).find_map(|(&x, &h)| {
                    let (got, want) = (bits(h), reference(x));
                    (got != want)
                        .then(|| format!("{:#010x} -> {got:#06x}, half {want:#06x}", x.to_bits()))
                })
            })
            .collect();
        assert!(
            bad.is_empty(),
            "{level:?} {:?}: {:?}",
            H::DTYPE,
            &bad[..bad.len().min(5)]
        );
    }
    let _guard = lock();
    let previous = set_isa_limit(Isa::Scalar);
    for level in vector_levels() {
        set_isa_limit(level);
        sweep::<bf16>(
            level,
            |h| h.to_bits(),
            |x| half::bf16::from_f32(x).to_bits(),
        );
        sweep::<f16>(level, |h| h.to_bits(), |x| half::f16::from_f32(x).to_bits());
    }
    set_isa_limit(previous);
}

/// Widening (all 2^16 bf16 and f16 patterns to f32), bf16 ↔ f16, same-type copies, `round_through`,
/// and every pair at odd lengths, all bit-identical to the scalar path.
#[test]
fn every_cast_pair_matches_scalar() {
    let all_bf16: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
    let all_f16: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    fn cast_to<I: Elem, O: Elem>(x: &[I]) -> Vec<f32> {
        let mut out = vec![O::default(); x.len()];
        cpu::cast(x, &mut out);
        f32s(&out)
    }
    fn all_pairs<I: Elem>(x: &[I]) -> Vec<Vec<f32>> {
        vec![
            cast_to::<I, f32>(x),
            cast_to::<I, bf16>(x),
            cast_to::<I, f16>(x),
        ]
    }
    let mut rng = Rng::new(1);
    let mixed: Vec<Vec<f32>> = LENGTHS.iter().map(|&n| inputs(&mut rng, n, 1e3)).collect();
    versus_scalar(
        || {
            let mut r = all_pairs(&all_bf16);
            r.extend(all_pairs(&all_f16));
            for x in &mixed {
                r.extend(all_pairs(x));
                r.extend(all_pairs(&elems::<bf16>(x)));
                r.extend(all_pairs(&elems::<f16>(x)));
                let (mut b, mut h) = (x.clone(), x.clone());
                cpu::round_through::<bf16>(&mut b);
                cpu::round_through::<f16>(&mut h);
                r.push(b);
                r.push(h);
            }
            r
        },
        |level, got, want| {
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert_bits(&format!("{level:?} cast case {i}"), g, w);
            }
        },
    );
}

// ---------------------------------------------------------------------------------------------------
// Unary functions

/// The unary ops with a vector form.
const UNARY_OPS: [Unary; 20] = [
    Unary::Neg,
    Unary::Abs,
    Unary::Square,
    Unary::Sqrt,
    Unary::Rsqrt,
    Unary::Reciprocal,
    Unary::Exp,
    Unary::Log,
    Unary::Log1p,
    Unary::Softplus,
    Unary::Relu,
    Unary::Gelu,
    Unary::Silu,
    Unary::Sigmoid,
    Unary::Tanh,
    Unary::AddScalar(0.3),
    Unary::MulScalar(-1.7),
    Unary::DivScalar(3.0),
    Unary::ScalarSub(2.5),
    Unary::ScalarDiv(-0.7),
];

/// Tolerance of `op(x)` in f32 ulps of the result, or `None` where the vector kernel is bit-exact.
/// The vector functions are within 2.4 ulp (see `simd::math`), the libm ones within 2.2.
fn unary_ulps(op: Unary) -> Option<f32> {
    match op {
        Unary::Exp | Unary::Log | Unary::Log1p | Unary::Tanh => Some(3.0),
        Unary::Sigmoid | Unary::Silu | Unary::Softplus | Unary::Gelu => Some(4.0),
        _ => None,
    }
}

/// Unary results for input type `I` and output type `O`, as f32.
fn unary_out<I: Float, O: Elem>(op: Unary, x: &[f32]) -> Vec<f32> {
    let x: Vec<I> = elems(x);
    let mut out = vec![O::default(); x.len()];
    cpu::unary(op, &x, &mut out);
    f32s(&out)
}

/// Checks one (input type, output type) pair of every vectorized unary op.
fn check_unary<I: Float, O: Elem>(xs: &[Vec<f32>]) {
    for op in UNARY_OPS {
        versus_scalar(
            || {
                xs.iter()
                    .map(|x| unary_out::<I, O>(op, x))
                    .collect::<Vec<_>>()
            },
            |level, got, want| {
                for ((g, w), x) in got.iter().zip(want).zip(xs) {
                    let what = format!(
                        "{level:?} {op:?} {:?}->{:?} n={}",
                        I::DTYPE,
                        O::DTYPE,
                        x.len()
                    );
                    match unary_ulps(op) {
                        None => assert_bits(&what, g, w),
                        Some(k) => assert_near(&what, g, w, |i, w| {
                            // GELU's 1 + erf(x/√2) cancels for negative x: its error is absolute, in
                            // ulps of |x| (the same holds for the scalar path).
                            let xi = I::from_f32(x[i]).to_f32();
                            let gelu = if op == Unary::Gelu {
                                4.0 * ulp_of::<f32>(xi)
                            } else {
                                0.0
                            };
                            // A result rounded to bf16/f16 may land on either side of a rounding edge.
                            let out = if O::DTYPE == DType::F32 {
                                0.0
                            } else {
                                ulp_of::<O>(w)
                            };
                            k * ulp_of::<f32>(w) + gelu + out
                        }),
                    }
                }
            },
        );
    }
}

/// Every vectorized unary op, for f32/bf16/f16 and the fused bf16/f16 ↔ f32 pairs, at odd lengths with
/// special values mixed in, matches the scalar path (bit for bit for the arithmetic ops).
#[test]
fn unary_matches_scalar() {
    let mut rng = Rng::new(2);
    let xs: Vec<Vec<f32>> = LENGTHS.iter().map(|&n| inputs(&mut rng, n, 3.0)).collect();
    check_unary::<f32, f32>(&xs);
    check_unary::<bf16, bf16>(&xs);
    check_unary::<f16, f16>(&xs);
    check_unary::<bf16, f32>(&xs);
    check_unary::<f32, bf16>(&xs[..8]);
    check_unary::<f16, f32>(&xs[..8]);
    check_unary::<f32, f16>(&xs[..8]);
}

/// Transcendental ops over a wide range (|x| up to 1e4 and a sweep of every exponent) and every special
/// value stay within their ulp bounds of the scalar path, with the same NaNs, infinities and zeros.
#[test]
fn unary_transcendentals_over_the_whole_range() {
    let mut x: Vec<f32> = SPECIALS.to_vec();
    // Every power of two with a few mantissas, both signs: subnormals through f32::MAX.
    for e in -149..128 {
        for m in [1.0f32, 1.1, 1.5, 1.999] {
            let v = m * 2f32.powi(e);
            x.extend([v, -v]);
        }
    }
    let mut rng = Rng::new(3);
    x.extend((0..5000).map(|_| rng.range(-120.0, 120.0) as f32));
    let xs = [x];
    for op in [
        Unary::Exp,
        Unary::Log,
        Unary::Log1p,
        Unary::Tanh,
        Unary::Sigmoid,
        Unary::Silu,
        Unary::Softplus,
        Unary::Gelu,
    ] {
        versus_scalar(
            || unary_out::<f32, f32>(op, &xs[0]),
            |level, got, want| {
                let k = unary_ulps(op).unwrap();
                assert_near(&format!("{level:?} {op:?}"), got, want, |i, w| {
                    let x = xs[0][i].abs();
                    let gelu = if op == Unary::Gelu {
                        4.0 * ulp_of::<f32>(x)
                    } else {
                        0.0
                    };
                    // x·σ(x) for x < -87: σ(x) is subnormal, its absolute error scaled by |x|.
                    let silu = if op == Unary::Silu {
                        2.0 * x * f32::from_bits(1)
                    } else {
                        0.0
                    };
                    k * ulp_of::<f32>(w) + gelu + silu
                });
            },
        );
    }
}

/// The derivatives of the vectorized activations (and the linear ops) match the scalar
/// `unary_backward`: bit for bit where the derivative is arithmetic on `y`, within a few ulps where it
/// calls exp or erf.
#[test]
fn unary_backward_matches_scalar() {
    fn check<E: Float>(xs: &[Vec<f32>], gs: &[Vec<f32>]) {
        for op in UNARY_OPS {
            let run = || {
                xs.iter()
                    .zip(gs)
                    .map(|(x, g)| {
                        let x: Vec<E> = elems(x);
                        let dy: Vec<E> = elems(g);
                        // y from the scalar-rounded forward, the same for both paths.
                        let y: Vec<E> = x
                            .iter()
                            .map(|v| E::from_f32(op.apply(v.to_f32())))
                            .collect();
                        let mut dx = vec![E::default(); x.len()];
                        cpu::unary_backward(op, &x, &y, &dy, &mut dx);
                        f32s(&dx)
                    })
                    .collect::<Vec<_>>()
            };
            versus_scalar(run, |level, got, want| {
                for (((g, w), x), dy) in got.iter().zip(want).zip(xs).zip(gs) {
                    let what = format!("{level:?} {op:?}' {:?} n={}", E::DTYPE, x.len());
                    let transcendental = matches!(op, Unary::Gelu | Unary::Silu | Unary::Softplus);
                    if !transcendental {
                        assert_bits(&what, g, w);
                        continue;
                    }
                    assert_near(&what, g, w, |i, w| {
                        let (xi, gi) = (E::from_f32(x[i]).to_f32(), E::from_f32(dy[i]).to_f32());
                        // cdf + x·pdf and s·(1 + x(1 - s)) cancel near their zeros: absolute error
                        // in ulps of (1 + |x|), scaled by |dy|.
                        let terms = 6.0 * f32::EPSILON * (1.0 + xi.abs()) * gi.abs();
                        let out = if E::DTYPE == DType::F32 {
                            0.0
                        } else {
                            ulp_of::<E>(w)
                        };
                        4.0 * ulp_of::<f32>(w) + terms + out
                    });
                }
            });
        }
    }
    let mut rng = Rng::new(4);
    let xs: Vec<Vec<f32>> = LENGTHS.iter().map(|&n| inputs(&mut rng, n, 3.0)).collect();
    let gs: Vec<Vec<f32>> = LENGTHS.iter().map(|&n| inputs(&mut rng, n, 1.0)).collect();
    check::<f32>(&xs, &gs);
    check::<bf16>(&xs, &gs);
    check::<f16>(&xs, &gs);
}

/// The vector path really runs at every level: the polynomial `exp` differs from libm's in the last bit
/// for some inputs (while staying within 3 ulps), and a row sum is added in another order.
#[test]
fn vector_paths_are_taken_at_every_level() {
    let mut rng = Rng::new(5);
    let x: Vec<f32> = (0..10_000).map(|_| rng.range(-80.0, 80.0) as f32).collect();
    versus_scalar(
        || unary_out::<f32, f32>(Unary::Exp, &x),
        |level, got, want| {
            let differ = got.iter().zip(want).filter(|(g, w)| g != w).count();
            assert!(
                differ > 0,
                "{level:?}: exp is bit-identical to libm on 10000 inputs: scalar path?"
            );
            assert_near(&format!("{level:?} exp"), got, want, |_, w| {
                3.0 * ulp_of::<f32>(w)
            });
        },
    );
}

// ---------------------------------------------------------------------------------------------------
// Binary

/// Contiguous binary ops, a bias row broadcast along rows (either operand), a single value, and a
/// column broadcast (the scalar fallback) are bit-identical to the scalar path for f32, bf16 and f16.
#[test]
fn binary_matches_scalar() {
    fn check<E: Float>(rng: &mut Rng) {
        // (a shape, b shape, out shape)
        let shapes: Vec<(Vec<usize>, Vec<usize>, Vec<usize>)> = {
            let mut v = vec![];
            for n in LENGTHS {
                v.push((vec![n], vec![n], vec![n]));
                v.push((vec![n], vec![], vec![n]));
                v.push((vec![], vec![n], vec![n]));
            }
            for (r, c) in [
                (3, 17),
                (5, 33),
                (2, 16),
                (7, 100),
                (40, 1000),
                (1000, 101),
                (9, 7),
            ] {
                v.push((vec![r, c], vec![c], vec![r, c]));
                v.push((vec![c], vec![r, c], vec![r, c]));
                v.push((vec![r, c], vec![1, c], vec![r, c]));
                v.push((vec![r, c], vec![r, 1], vec![r, c]));
                v.push((vec![2, r, c], vec![r, c], vec![2, r, c]));
            }
            v
        };
        let data: Vec<(Vec<f32>, Vec<f32>)> = shapes
            .iter()
            .map(|(sa, sb, _)| {
                (
                    inputs(rng, sa.iter().product(), 10.0),
                    inputs(rng, sb.iter().product(), 10.0),
                )
            })
            .collect();
        for op in [
            Binary::Add,
            Binary::Sub,
            Binary::Mul,
            Binary::Div,
            Binary::Maximum,
            Binary::Minimum,
        ] {
            versus_scalar(
                || {
                    shapes
                        .iter()
                        .zip(&data)
                        .map(|((sa, sb, so), (a, b))| {
                            let (a, b): (Vec<E>, Vec<E>) = (elems(a), elems(b));
                            let layout = Broadcast::new(so, &[sa, sb]);
                            let mut out = vec![E::default(); layout.numel()];
                            cpu::binary(op, &a, &b, &mut out, &layout);
                            f32s(&out)
                        })
                        .collect::<Vec<_>>()
                },
                |level, got, want| {
                    for ((g, w), (sa, sb, _)) in got.iter().zip(want).zip(&shapes) {
                        let what = format!("{level:?} {op:?} {:?} {sa:?} {sb:?}", E::DTYPE);
                        if matches!(op, Binary::Maximum | Binary::Minimum) {
                            // max(+0, -0) may pick either zero on either path.
                            assert_near(&what, g, w, |_, _| 0.0);
                        } else {
                            assert_bits(&what, g, w);
                        }
                    }
                },
            );
        }
    }
    let mut rng = Rng::new(6);
    check::<f32>(&mut rng);
    check::<bf16>(&mut rng);
    check::<f16>(&mut rng);
}

// ---------------------------------------------------------------------------------------------------
// Reductions, softmax, norms

/// Layouts for reductions: rows (`inner == 1`) of every test length, and column reductions.
fn reduce_layouts() -> Vec<Dim3> {
    let mut v: Vec<Dim3> = LENGTHS
        .iter()
        .map(|&size| Dim3 {
            outer: if size > 1000 { 2 } else { 5 },
            size,
            inner: 1,
        })
        .collect();
    for (outer, size, inner) in [
        (1, 7, 17),
        (3, 5, 16),
        (2, 33, 65),
        (1, 100, 257),
        (4, 3, 1000),
        (2, 1000, 33),
        (1, 2, 100_003),
        (700, 1, 3),
        // Parallel strips of 64 columns: whole rows of a norm's weight gradient, and strips that
        // cross from one outer block into the next.
        (1, 4096, 128),
        (3, 700, 100),
    ] {
        v.push(Dim3 { outer, size, inner });
    }
    v
}

/// `reduce` (every op; rows and columns) matches the scalar path: maxima, minima and column sums bit
/// for bit, row sums within the accumulation-order bound `4ε·√n·Σ|x|`, for f32/bf16/f16 inputs and
/// outputs. NaNs anywhere in a row or column give NaN on both paths.
#[test]
fn reduce_matches_scalar() {
    fn check<I: Float, O: Elem>(rng: &mut Rng) {
        let layouts = reduce_layouts();
        let data: Vec<Vec<f32>> = layouts
            .iter()
            .map(|d| {
                let mut x: Vec<f32> = (0..d.numel())
                    .map(|_| (rng.normal() * 5.0) as f32)
                    .collect();
                // A NaN and infinities in some layouts, a subnormal everywhere.
                if d.numel() > 40 {
                    x[rng.below(d.numel())] = f32::NAN;
                    x[rng.below(d.numel())] = f32::INFINITY;
                }
                x[0] = 1.0e-40;
                x
            })
            .collect();
        for op in [Reduce::Sum, Reduce::Mean, Reduce::Max, Reduce::Min] {
            versus_scalar(
                || {
                    layouts
                        .iter()
                        .zip(&data)
                        .map(|(&d, x)| {
                            let x: Vec<I> = elems(x);
                            let mut out = vec![O::default(); d.outer * d.inner];
                            cpu::reduce(op, &x, &mut out, d);
                            f32s(&out)
                        })
                        .collect::<Vec<_>>()
                },
                |level, got, want| {
                    for ((g, w), (d, x)) in got.iter().zip(want).zip(layouts.iter().zip(&data)) {
                        let what = format!("{level:?} {op:?} {:?}->{:?} {d:?}", I::DTYPE, O::DTYPE);
                        let rows = d.inner == 1 && matches!(op, Reduce::Sum | Reduce::Mean);
                        if !rows {
                            assert_near(&what, g, w, |_, _| 0.0);
                            continue;
                        }
                        let n = d.size as f32;
                        assert_near(&what, g, w, |o, w| {
                            let row = &x[o * d.size..(o + 1) * d.size];
                            let abs: f32 = row.iter().map(|&v| I::from_f32(v).to_f32().abs()).sum();
                            let scale = if op == Reduce::Mean { 1.0 / n } else { 1.0 };
                            let out = if O::DTYPE == DType::F32 {
                                0.0
                            } else {
                                ulp_of::<O>(w)
                            };
                            4.0 * f32::EPSILON * n.sqrt() * abs * scale + out
                        });
                    }
                },
            );
        }
    }
    let mut rng = Rng::new(7);
    check::<f32, f32>(&mut rng);
    check::<bf16, bf16>(&mut rng);
    check::<f16, f16>(&mut rng);
    check::<bf16, f32>(&mut rng);
    check::<f32, bf16>(&mut rng);
}

/// Rows of every test length with extreme values: normal data, a -inf entry, all -inf, a +inf, a NaN.
fn softmax_rows(rng: &mut Rng) -> Vec<(Dim3, Vec<f32>)> {
    let mut cases = vec![];
    for size in LENGTHS {
        let outer = if size > 1000 { 2 } else { 6 };
        let d = Dim3 {
            outer,
            size,
            inner: 1,
        };
        let mut x: Vec<f32> = (0..d.numel())
            .map(|_| (rng.normal() * 4.0) as f32)
            .collect();
        x[0] = f32::NEG_INFINITY;
        if outer == 6 {
            // Row 1 all -inf, row 2 holds +inf, row 3 a NaN, row 4 huge values.
            x[size..2 * size].fill(f32::NEG_INFINITY);
            x[2 * size + size / 2] = f32::INFINITY;
            x[3 * size + size / 3] = f32::NAN;
            for v in &mut x[4 * size..5 * size] {
                *v *= 1e6;
            }
        }
        cases.push((d, x));
    }
    cases
}

/// `logsumexp`, `softmax` and `log_softmax` along rows match the scalar path within a few ulps plus the
/// order of the row sum, with the same NaN rows (all -inf, +inf, NaN inputs).
#[test]
fn softmax_and_logsumexp_match_scalar() {
    fn check<I: Float, O: Elem>(cases: &[(Dim3, Vec<f32>)]) {
        for kind in ["softmax", "log_softmax", "logsumexp"] {
            versus_scalar(
                || {
                    cases
                        .iter()
                        .map(|(d, x)| {
                            let x: Vec<I> = elems(x);
                            let mut out = vec![
                                O::default();
                                if kind == "logsumexp" {
                                    d.outer
                                } else {
                                    d.numel()
                                }
                            ];
                            match kind {
                                "softmax" => cpu::softmax(&x, &mut out, *d),
                                "log_softmax" => cpu::log_softmax(&x, &mut out, *d),
                                _ => cpu::logsumexp(&x, &mut out, *d),
                            }
                            f32s(&out)
                        })
                        .collect::<Vec<_>>()
                },
                |level, got, want| {
                    for ((g, w), (d, _)) in got.iter().zip(want).zip(cases) {
                        let what = format!("{level:?} {kind} {:?}->{:?} {d:?}", I::DTYPE, O::DTYPE);
                        assert_near(&what, g, w, |_, w| {
                            // exp within 2 ulps on each path; the row sum in another order: the scalar
                            // kernel adds sequentially (relative error up to nε/2, and at n = 10^5 it
                            // does reach 5e-5; `softmax_rows_are_accurate` holds the vector path to
                            // 4ε√n). Log-softmax and logsumexp carry ln Σ, whose absolute error is
                            // that relative error.
                            let out = if O::DTYPE == DType::F32 {
                                0.0
                            } else {
                                ulp_of::<O>(w)
                            };
                            let order =
                                f32::EPSILON * (d.size as f32 / 2.0 + 4.0 * (d.size as f32).sqrt());
                            let sum = if kind == "softmax" {
                                order * w.abs()
                            } else {
                                order
                            };
                            4.0 * ulp_of::<f32>(w) + sum + out
                        });
                    }
                },
            );
        }
    }
    let mut rng = Rng::new(8);
    let cases = softmax_rows(&mut rng);
    check::<f32, f32>(&cases);
    check::<bf16, bf16>(&cases);
    check::<f16, f16>(&cases[..9]);
    check::<bf16, f32>(&cases);
    check::<f32, bf16>(&cases[..9]);
}

/// The vector softmax and log-softmax are within 4 ulps plus `4ε√n` (relative, from the blocked row
/// sum) of an f64 reference on rows of every test length, at every level.
#[test]
fn softmax_rows_are_accurate() {
    let mut rng = Rng::new(13);
    let cases: Vec<(Dim3, Vec<f32>)> = softmax_rows(&mut rng)
        .into_iter()
        .map(|(d, x)| {
            (
                d,
                x.into_iter()
                    .map(|v| if v.is_finite() { v } else { -30.0 })
                    .collect(),
            )
        })
        .collect();
    let _guard = lock();
    let previous = set_isa_limit(Isa::Scalar);
    for level in vector_levels() {
        set_isa_limit(level);
        for (d, x) in &cases {
            let (mut y, mut ly) = (vec![0.0f32; x.len()], vec![0.0f32; x.len()]);
            cpu::softmax(x, &mut y, *d);
            cpu::log_softmax(x, &mut ly, *d);
            let order = 4.0 * f64::from(f32::EPSILON) * (d.size as f64).sqrt();
            for (r, row) in x.chunks(d.size).enumerate() {
                let m = row
                    .iter()
                    .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
                let sum: f64 = row.iter().map(|&v| (f64::from(v) - m).exp()).sum();
                for (i, &v) in row.iter().enumerate() {
                    let k = r * d.size + i;
                    let want = (f64::from(v) - m).exp() / sum;
                    // x - m is rounded to f32 first (on the scalar path too): relative |x - m|·ε/2.
                    let shift = (f64::from(v) - m).abs() * f64::from(f32::EPSILON) / 2.0;
                    let tol = (order + shift) * want + 4.0 * f64::from(ulp_of::<f32>(want as f32));
                    assert!(
                        (f64::from(y[k]) - want).abs() <= tol,
                        "{level:?} softmax {d:?} [{k}]: {} vs {want:e}",
                        y[k]
                    );
                    let lwant = f64::from(v) - m - sum.ln();
                    let ltol = order + 4.0 * f64::from(ulp_of::<f32>(lwant as f32));
                    assert!(
                        (f64::from(ly[k]) - lwant).abs() <= ltol,
                        "{level:?} log_softmax {d:?} [{k}]: {} vs {lwant:e}",
                        ly[k]
                    );
                }
            }
        }
    }
    set_isa_limit(previous);
}

/// `softmax_backward` and `log_softmax_backward` along rows match the scalar path within the row-sum
/// order bound.
#[test]
fn softmax_backward_matches_scalar() {
    fn check<E: Float>(rng: &mut Rng) {
        let cases: Vec<(Dim3, Vec<f32>, Vec<f32>)> = LENGTHS
            .iter()
            .map(|&size| {
                let d = Dim3 {
                    outer: if size > 1000 { 2 } else { 4 },
                    size,
                    inner: 1,
                };
                let x: Vec<f32> = (0..d.numel()).map(|_| rng.normal() as f32).collect();
                let mut y = vec![0.0f32; d.numel()];
                cpu::softmax(&x, &mut y, d);
                let g: Vec<f32> = (0..d.numel()).map(|_| rng.normal() as f32).collect();
                (d, y, g)
            })
            .collect();
        for log in [false, true] {
            versus_scalar(
                || {
                    cases
                        .iter()
                        .map(|(d, y, g)| {
                            let y: Vec<E> = if log {
                                elems(&y.iter().map(|v| v.ln()).collect::<Vec<_>>())
                            } else {
                                elems(y)
                            };
                            let g: Vec<E> = elems(g);
                            let mut dx = vec![E::default(); d.numel()];
                            if log {
                                cpu::log_softmax_backward(&y, &g, &mut dx, *d);
                            } else {
                                cpu::softmax_backward(&y, &g, &mut dx, *d);
                            }
                            f32s(&dx)
                        })
                        .collect::<Vec<_>>()
                },
                |level, got, want| {
                    for ((gv, w), (d, y, g)) in got.iter().zip(want).zip(&cases) {
                        let what = format!("{level:?} log={log} {:?} n={}", E::DTYPE, d.size);
                        let gmax: Vec<f32> = g
                            .chunks(d.size)
                            .map(|row| row.iter().fold(0.0f32, |m, v| m.max(v.abs())))
                            .collect();
                        assert_near(&what, gv, w, |i, w| {
                            // Σ over the row in another order: relative 4ε√n of Σ|terms| (≤ max|dy|·n
                            // for log-softmax, ≤ max|dy| for softmax), times y or e^y (y ≤ 1 either way).
                            let n = d.size as f32;
                            let gmax = gmax[i / d.size];
                            let yi = y[i];
                            let terms = if log { gmax * n } else { gmax };
                            let out = if E::DTYPE == DType::F32 {
                                0.0
                            } else {
                                ulp_of::<E>(w)
                            };
                            4.0 * f32::EPSILON * n.sqrt() * terms * yi.abs()
                                + 4.0 * ulp_of::<f32>(w)
                                + out
                        });
                    }
                },
            );
        }
    }
    let mut rng = Rng::new(9);
    check::<f32>(&mut rng);
    check::<bf16>(&mut rng);
    check::<f16>(&mut rng);
}

/// Layer norm and RMS norm, forward (outputs and the saved statistics) and backward, match the scalar
/// path within the accumulation-order bound of their row sums.
#[test]
fn norms_match_scalar() {
    fn check<I: Float<Acc = f32>>(rng: &mut Rng) {
        let cases: Vec<(usize, usize, Vec<f32>, Vec<f32>)> = LENGTHS
            .iter()
            .map(|&cols| {
                let rows = if cols > 1000 { 2 } else { 5 };
                let x = (0..rows * cols)
                    .map(|_| (rng.normal() * 3.0 + 1.0) as f32)
                    .collect();
                let g = (0..rows * cols).map(|_| rng.normal() as f32).collect();
                (rows, cols, x, g)
            })
            .collect();
        versus_scalar(
            || {
                cases
                    .iter()
                    .map(|(rows, cols, x, g)| {
                        let (x, g): (Vec<I>, Vec<I>) = (elems(x), elems(g));
                        let n = rows * cols;
                        let (mut out, mut mean, mut rstd) =
                            (vec![I::default(); n], vec![0.0; *rows], vec![0.0; *rows]);
                        cpu::layer_norm(&x, &mut out, &mut mean, &mut rstd, *cols, 1e-5);
                        let mut dx = vec![I::default(); n];
                        cpu::layer_norm_backward(&x, &mean, &rstd, &g, &mut dx, *cols);
                        let (mut rout, mut rrstd) = (vec![I::default(); n], vec![0.0; *rows]);
                        cpu::rms_norm(&x, &mut rout, &mut rrstd, *cols, 1e-5);
                        let mut rdx = vec![I::default(); n];
                        cpu::rms_norm_backward(&x, &rrstd, &g, &mut rdx, *cols);
                        [
                            f32s(&out),
                            mean,
                            rstd,
                            f32s(&dx),
                            f32s(&rout),
                            rrstd,
                            f32s(&rdx),
                        ]
                    })
                    .collect::<Vec<_>>()
            },
            |level, got, want| {
                for (g, w) in got.iter().zip(want) {
                    let n = g[0].len() / g[1].len();
                    let names = [
                        "layer_norm",
                        "mean",
                        "rstd",
                        "layer_norm'",
                        "rms_norm",
                        "rms rstd",
                        "rms_norm'",
                    ];
                    for ((g, w), name) in g.iter().zip(w).zip(names) {
                        let what = format!("{level:?} {name} {:?} cols={n}", I::DTYPE);
                        let stat = matches!(name, "mean" | "rstd" | "rms rstd");
                        assert_near(&what, g, w, |_, w| {
                            // Normalized values are O(1) (inputs have mean 1, deviation 3): the
                            // statistics' relative error 4ε√n becomes an absolute one on them.
                            let order = 4.0 * f32::EPSILON * (n as f32).sqrt();
                            let out = if stat || I::DTYPE == DType::F32 {
                                0.0
                            } else {
                                ulp_of::<I>(w)
                            };
                            if stat {
                                order * w.abs() + 2.0 * ulp_of::<f32>(w)
                            } else {
                                order * 8.0 * (1.0 + w.abs()) + out
                            }
                        });
                    }
                }
            },
        );
    }
    let mut rng = Rng::new(10);
    check::<f32>(&mut rng);
    check::<bf16>(&mut rng);
    check::<f16>(&mut rng);
}

// ---------------------------------------------------------------------------------------------------
// Training steps

/// `unscale_and_check` unscales bit-identically to the scalar path and reports non-finite values
/// (inf or NaN at the start, in the middle, in the tail) for f32, bf16 and f16.
#[test]
fn unscale_and_check_matches_scalar() {
    fn check<E: Float>(rng: &mut Rng) {
        let mut cases: Vec<Vec<f32>> = vec![];
        for n in LENGTHS {
            let x: Vec<f32> = (0..n).map(|_| (rng.normal() * 1e3) as f32).collect();
            cases.push(x.clone());
            for (pos, bad) in [
                (0, f32::INFINITY),
                (n / 2, f32::NAN),
                (n - 1, f32::NEG_INFINITY),
            ] {
                let mut y = x.clone();
                y[pos] = bad;
                cases.push(y);
            }
        }
        // Large and subnormal results once scaled.
        cases.push(vec![6.0e4, 1.0e-40, -3.0e38, 1.0e-7, 65504.0]);
        versus_scalar(
            || {
                cases
                    .iter()
                    .map(|x| {
                        let mut g: Vec<E> = elems(x);
                        let flag = cpu::unscale_and_check(&mut g, 1.0 / 1024.0 / 3.0);
                        (flag, f32s(&g))
                    })
                    .collect::<Vec<_>>()
            },
            |level, got, want| {
                for ((gf, g), (wf, w)) in got.iter().zip(want) {
                    let what = format!("{level:?} {:?} n={}", E::DTYPE, g.len());
                    assert_eq!(gf, wf, "{what}: non-finite flag");
                    assert_bits(&what, g, w);
                }
            },
        );
    }
    let mut rng = Rng::new(11);
    check::<f32>(&mut rng);
    check::<bf16>(&mut rng);
    check::<f16>(&mut rng);
}

/// `adam_step` (Adam and AdamW) and `sgd_step` (plain, momentum first and later steps, dampening,
/// Nesterov) are bit-identical to the scalar path, over several steps.
#[test]
fn optimizer_steps_match_scalar() {
    let mut rng = Rng::new(12);
    let sizes = LENGTHS;
    let start: Vec<[Vec<f32>; 3]> = sizes
        .iter()
        .map(|&n| {
            let mut v = || (0..n).map(|_| rng.normal() as f32).collect::<Vec<_>>();
            [v(), v(), v()]
        })
        .collect();
    let adams = [
        AdamStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            step: 1,
        },
        AdamStep {
            lr: 3e-4,
            beta1: 0.8,
            beta2: 0.99,
            eps: 1e-6,
            weight_decay: 0.1,
            decoupled: false,
            step: 7,
        },
        AdamStep {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.05,
            decoupled: true,
            step: 1000,
        },
    ];
    let sgds = [
        (
            SgdStep {
                lr: 0.1,
                momentum: 0.0,
                dampening: 0.0,
                weight_decay: 0.0,
                nesterov: false,
            },
            false,
        ),
        (
            SgdStep {
                lr: 0.05,
                momentum: 0.0,
                dampening: 0.0,
                weight_decay: 1e-3,
                nesterov: false,
            },
            false,
        ),
        (
            SgdStep {
                lr: 0.1,
                momentum: 0.9,
                dampening: 0.0,
                weight_decay: 1e-4,
                nesterov: false,
            },
            true,
        ),
        (
            SgdStep {
                lr: 0.1,
                momentum: 0.9,
                dampening: 0.1,
                weight_decay: 0.0,
                nesterov: true,
            },
            true,
        ),
    ];
    versus_scalar(
        || {
            let mut results = vec![];
            for [w0, g, s0] in &start {
                for hp in &adams {
                    let (mut w, mut m, mut v) = (
                        w0.clone(),
                        vec![0.0; w0.len()],
                        s0.iter().map(|x| x * x).collect::<Vec<_>>(),
                    );
                    for step in 0..3 {
                        cpu::adam_step(
                            &mut w,
                            g,
                            &mut m,
                            &mut v,
                            &AdamStep {
                                step: hp.step + step,
                                ..*hp
                            },
                        );
                    }
                    results.extend([w, m, v]);
                }
                for (hp, momentum) in &sgds {
                    let mut w = w0.clone();
                    let mut b = vec![0.0; w0.len()];
                    for step in 0..3 {
                        let buffer = momentum.then_some(&mut b[..]);
                        cpu::sgd_step(&mut w, g, buffer, step == 0, hp);
                    }
                    results.extend([w, b]);
                }
            }
            results
        },
        |level, got, want| {
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert_bits(
                    &format!("{level:?} optimizer buffer {i} (n={})", g.len()),
                    g,
                    w,
                );
            }
        },
    );
}
