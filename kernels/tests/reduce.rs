//! `cpu::reduce`, `cpu::arg_reduce`, `cpu::cumsum` and `cpu::logsumexp` along one dimension, against f64
//! loops over the `Dim3 { outer, size, inner }` layout, plus the accumulation-type guarantees (bf16/f16
//! sums accumulate in f32).

mod common;

use amp_kernels::cpu::{self, Dim3, Reduce};
use amp_kernels::{bf16, f16};
use common::{
    Rng, TestFloat, assert_close, assert_exact, random_elems, to_elems, to_f64s, tol_for,
};

/// Layouts with odd sizes, `inner = 1` (the contiguous unrolled sum) and `inner > 1`, and two large enough
/// for the parallel path.
const LAYOUTS: [Dim3; 11] = [
    Dim3 {
        outer: 1,
        size: 1,
        inner: 1,
    },
    Dim3 {
        outer: 1,
        size: 17,
        inner: 1,
    },
    Dim3 {
        outer: 3,
        size: 7,
        inner: 1,
    },
    Dim3 {
        outer: 1,
        size: 65,
        inner: 1,
    },
    Dim3 {
        outer: 3,
        size: 17,
        inner: 5,
    },
    Dim3 {
        outer: 7,
        size: 33,
        inner: 3,
    },
    Dim3 {
        outer: 2,
        size: 1,
        inner: 17,
    },
    Dim3 {
        outer: 1,
        size: 3,
        inner: 65,
    },
    Dim3 {
        outer: 5,
        size: 65,
        inner: 7,
    },
    Dim3 {
        outer: 3,
        size: 129,
        inner: 129,
    },
    Dim3 {
        outer: 2,
        size: 20001,
        inner: 1,
    },
];

/// The values of column `(o, i)` of `x` laid out as `d`.
fn column(x: &[f64], d: Dim3, o: usize, i: usize) -> Vec<f64> {
    (0..d.size)
        .map(|s| x[(o * d.size + s) * d.inner + i])
        .collect()
}

/// For every column of `x` (in output order `o * inner + i`), `f(column)`.
fn per_column<T>(x: &[f64], d: Dim3, f: impl Fn(&[f64]) -> T) -> Vec<T> {
    (0..d.outer)
        .flat_map(|o| (0..d.inner).map(move |i| (o, i)))
        .map(|(o, i)| f(&column(x, d, o, i)))
        .collect()
}

/// The f64 reduction of one column; Max/Min are NaN if any element is NaN.
fn reduce_reference(op: Reduce, col: &[f64]) -> f64 {
    let nan = col.iter().any(|v| v.is_nan());
    match op {
        Reduce::Sum => col.iter().sum(),
        Reduce::Mean => col.iter().sum::<f64>() / col.len() as f64,
        Reduce::Max if nan => f64::NAN,
        Reduce::Min if nan => f64::NAN,
        Reduce::Max => col.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Reduce::Min => col.iter().copied().fold(f64::INFINITY, f64::min),
    }
}

/// Each reduction of random `I` data written as `O`, on every layout. Sum and Mean are allowed the
/// accumulation-type error on `Σ|x|`; Max and Min pick an element, so they must be exact.
fn check_reduce<I: TestFloat, O: TestFloat>(seed: u64) {
    let mut rng = Rng::new(seed);
    for d in LAYOUTS {
        let (x, xf) = random_elems::<I>(&mut rng, d.numel(), 3.0);
        for op in [Reduce::Sum, Reduce::Mean, Reduce::Max, Reduce::Min] {
            let mut out = vec![O::from_f64(f64::NAN); d.outer * d.inner];
            cpu::reduce(op, &x, &mut out, d);
            let want: Vec<f64> =
                per_column(&xf, d, |c| O::from_f64(reduce_reference(op, c)).to_f64());
            let what = format!("reduce {op:?} {}->{} {d:?}", I::NAME, O::NAME);
            match op {
                Reduce::Max | Reduce::Min => assert_exact(&what, &to_f64s(&out), &want),
                _ => {
                    let scale = per_column(&xf, d, |c| {
                        c.iter().map(|v| v.abs()).sum::<f64>()
                            / if op == Reduce::Mean {
                                c.len() as f64
                            } else {
                                1.0
                            }
                    });
                    let exact = per_column(&xf, d, |c| reduce_reference(op, c));
                    assert_close(&what, &to_f64s(&out), &exact, |i| {
                        tol_for::<I, O>(exact[i], scale[i])
                    });
                }
            }
        }
    }
}

/// Sum, Mean, Max and Min on every layout, for each float type.
#[test]
fn reductions_match_f64() {
    fn run<E: TestFloat>() {
        check_reduce::<E, E>(1);
    }
    for_each_float!(run);
}

/// Reductions writing another type: bf16/f16 -> f32, f32 -> f64, f64 -> f32 and f32 -> bf16.
#[test]
fn reductions_with_output_cast() {
    check_reduce::<bf16, f32>(2);
    check_reduce::<f16, f32>(3);
    check_reduce::<f32, f64>(4);
    check_reduce::<f64, f32>(5);
    check_reduce::<f32, bf16>(6);
}

/// A NaN anywhere in a column (first, middle or last position) makes that column's Max and Min NaN;
/// columns without NaN are unaffected. Checked with `inner = 1` and `inner > 1`.
#[test]
fn max_min_propagate_nan() {
    fn run<E: TestFloat>() {
        let mut rng = Rng::new(7);
        for d in [
            Dim3 {
                outer: 4,
                size: 17,
                inner: 1,
            },
            Dim3 {
                outer: 3,
                size: 7,
                inner: 5,
            },
        ] {
            let (mut x, _) = random_elems::<E>(&mut rng, d.numel(), 1.0);
            // Every column but those with (o + i) % 4 == 1 gets one NaN, at its first, middle or last position.
            for o in 0..d.outer {
                for i in 0..d.inner {
                    if (o + i) % 4 != 1 {
                        let s = [0, d.size / 2, d.size - 1][(o + i) % 3];
                        x[(o * d.size + s) * d.inner + i] = E::from_f64(f64::NAN);
                    }
                }
            }
            for op in [Reduce::Max, Reduce::Min] {
                let mut out = vec![E::default(); d.outer * d.inner];
                cpu::reduce(op, &x, &mut out, d);
                let want: Vec<f64> = per_column(&to_f64s(&x), d, |c| reduce_reference(op, c));
                assert!(want.iter().any(|v| v.is_nan()) && want.iter().any(|v| !v.is_nan()));
                assert_exact(
                    &format!("{op:?} with NaN {} {d:?}", E::NAME),
                    &to_f64s(&out),
                    &want,
                );
            }
        }
    }
    for_each_float!(run);
}

/// Summing 10,000 bf16 ones gives exactly 10000 in f32 (bf16 accumulation would stop at 256), on both
/// the contiguous (`inner = 1`) and the strided (`inner = 3`) path.
#[test]
fn bf16_sum_accumulates_in_f32() {
    for inner in [1, 3] {
        let d = Dim3 {
            outer: 2,
            size: 10_000,
            inner,
        };
        let x = vec![bf16::ONE; d.numel()];
        let mut out = vec![0.0f32; d.outer * inner];
        cpu::reduce(Reduce::Sum, &x, &mut out, d);
        assert!(out.iter().all(|&v| v == 10_000.0), "inner {inner}: {out:?}");
    }
}

/// The mean of 70,000 bf16 ones written as bf16 is exactly 1 (the sum 70000 is exact in f32).
#[test]
fn bf16_mean_of_ones_is_one() {
    for inner in [1, 2] {
        let d = Dim3 {
            outer: 1,
            size: 70_000,
            inner,
        };
        let mut out = vec![bf16::ZERO; inner];
        cpu::reduce(Reduce::Mean, &vec![bf16::ONE; d.numel()], &mut out, d);
        assert!(
            out.iter().all(|&v| v == bf16::ONE),
            "inner {inner}: {out:?}"
        );
    }
}

/// An f16 sum of 10,000 ones written as f16 is exactly 10000 (f16 accumulation would stall at 2048).
#[test]
fn f16_sum_accumulates_in_f32() {
    for inner in [1, 5] {
        let d = Dim3 {
            outer: 1,
            size: 10_000,
            inner,
        };
        let mut out = vec![f16::ZERO; inner];
        cpu::reduce(Reduce::Sum, &vec![f16::ONE; d.numel()], &mut out, d);
        assert!(
            out.iter().all(|&v| v == f16::from_f32(10_000.0)),
            "inner {inner}: {out:?}"
        );
    }
}

/// An empty dimension: Sum is 0, Mean is NaN, Max is -inf and Min is +inf (the identities).
#[test]
fn empty_dimension() {
    let d = Dim3 {
        outer: 2,
        size: 0,
        inner: 3,
    };
    for (op, want) in [
        (Reduce::Sum, 0.0),
        (Reduce::Mean, f32::NAN),
        (Reduce::Max, f32::NEG_INFINITY),
        (Reduce::Min, f32::INFINITY),
    ] {
        let mut out = vec![7.0f32; 6];
        cpu::reduce::<f32, f32>(op, &[], &mut out, d);
        assert!(
            out.iter()
                .all(|&v| v == want || (v.is_nan() && want.is_nan())),
            "{op:?}: {out:?}"
        );
    }
}

/// The index of the first maximum (or minimum) of a column, or of the first NaN if there is one.
fn arg_reference(max: bool, col: &[f64]) -> i64 {
    if let Some(first_nan) = col.iter().position(|v| v.is_nan()) {
        return first_nan as i64;
    }
    let mut best = 0;
    for (s, &v) in col.iter().enumerate() {
        if (max && v > col[best]) || (!max && v < col[best]) {
            best = s;
        }
    }
    best as i64
}

/// argmax/argmin on data drawn from five values (so most columns have ties) return the first extreme
/// index; a NaN wins at its first position.
#[test]
fn arg_reduce_first_index_and_nan() {
    fn run<E: TestFloat>() {
        let mut rng = Rng::new(8);
        for d in LAYOUTS {
            let mut xf: Vec<f64> = (0..d.numel()).map(|_| rng.below(5) as f64 - 2.0).collect();
            // A few NaNs in the larger layouts, so some columns have one (or two) and most have none.
            if d.numel() > 100 {
                for _ in 0..3 {
                    let at = rng.below(xf.len());
                    xf[at] = f64::NAN;
                }
            }
            let x: Vec<E> = to_elems(&xf);
            for max in [true, false] {
                let mut out = vec![-1i64; d.outer * d.inner];
                cpu::arg_reduce(max, &x, &mut out, d);
                let want = per_column(&xf, d, |c| arg_reference(max, c));
                assert_eq!(out, want, "arg_reduce max={max} {} {d:?}", E::NAME);
            }
        }
    }
    for_each_float!(run);
}

/// Inclusive prefix sums on every layout and type (and bf16 -> f32), each element within the
/// accumulation error of its own prefix.
#[test]
fn cumsum_matches_f64() {
    fn check<I: TestFloat, O: TestFloat>(seed: u64) {
        let mut rng = Rng::new(seed);
        for d in LAYOUTS {
            let (x, xf) = random_elems::<I>(&mut rng, d.numel(), 1.0);
            let mut out = vec![O::from_f64(f64::NAN); d.numel()];
            cpu::cumsum(&x, &mut out, d, false);
            let (mut want, mut scale) = (vec![0.0; d.numel()], vec![0.0; d.numel()]);
            for o in 0..d.outer {
                for i in 0..d.inner {
                    let (mut sum, mut mag) = (0.0, 0.0);
                    for s in 0..d.size {
                        let k = (o * d.size + s) * d.inner + i;
                        sum += xf[k];
                        mag += xf[k].abs();
                        (want[k], scale[k]) = (sum, mag);
                    }
                }
            }
            let what = format!("cumsum {}->{} {d:?}", I::NAME, O::NAME);
            assert_close(&what, &to_f64s(&out), &want, |k| {
                tol_for::<I, O>(want[k], scale[k])
            });
        }
    }
    fn run<E: TestFloat>() {
        check::<E, E>(9);
    }
    for_each_float!(run);
    check::<bf16, f32>(10);
    check::<f16, f64>(11);
}

/// A cumsum of 10,000 bf16 ones accumulates in f32: exactly 1, 2, ..., 10000 in f32, and each prefix
/// rounded once in bf16 output.
#[test]
fn cumsum_bf16_accumulates_in_f32() {
    let d = Dim3 {
        outer: 1,
        size: 10_000,
        inner: 1,
    };
    let x = vec![bf16::ONE; d.size];
    let mut out32 = vec![0.0f32; d.size];
    cpu::cumsum(&x, &mut out32, d, false);
    assert!(
        out32.iter().enumerate().all(|(i, &v)| v == (i + 1) as f32),
        "f32 prefix sums are not exact"
    );
    let mut out16 = vec![bf16::ZERO; d.size];
    cpu::cumsum(&x, &mut out16, d, false);
    for (i, v) in out16.iter().enumerate() {
        assert_eq!(*v, bf16::from_f32((i + 1) as f32), "bf16 prefix {i}");
    }
}

/// `ln Σ exp` of one column in f64 (max-shifted; all -inf gives -inf, +inf gives +inf, NaN gives NaN).
fn logsumexp_reference(col: &[f64]) -> f64 {
    if col.iter().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    let m = col.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m.is_infinite() {
        return m;
    }
    m + col.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

/// logsumexp on every layout and type, including inputs around 500 (exp would overflow f32 without the
/// max shift), against f64.
#[test]
fn logsumexp_matches_f64() {
    fn check<I: TestFloat, O: TestFloat>(seed: u64) {
        let mut rng = Rng::new(seed);
        for d in LAYOUTS {
            for offset in [0.0, 500.0] {
                let xf: Vec<f64> = rng
                    .normals(d.numel(), 3.0)
                    .iter()
                    .map(|v| v + offset)
                    .collect();
                let x: Vec<I> = to_elems(&xf);
                let xf = to_f64s(&x);
                let mut out = vec![O::from_f64(f64::NAN); d.outer * d.inner];
                cpu::logsumexp(&x, &mut out, d);
                let want = per_column(&xf, d, logsumexp_reference);
                let scale = per_column(&xf, d, |c| {
                    c.iter().fold(0.0f64, |m, v| m.max(v.abs())) + (c.len() as f64).ln() + 1.0
                });
                let what = format!("logsumexp {}->{} {d:?} offset {offset}", I::NAME, O::NAME);
                assert!(want.iter().all(|v| v.is_finite()));
                assert_close(&what, &to_f64s(&out), &want, |k| {
                    tol_for::<I, O>(want[k], scale[k])
                });
            }
        }
    }
    fn run<E: TestFloat>() {
        check::<E, E>(12);
    }
    for_each_float!(run);
    check::<bf16, f32>(13);
}

/// Columns of all -inf give -inf, a +inf gives +inf, a NaN gives NaN, and -inf entries next to finite
/// ones contribute nothing; checked with `inner = 3` so each column is a separate case.
#[test]
fn logsumexp_infinities() {
    fn run<E: TestFloat>() {
        let (inf, nan) = (f64::INFINITY, f64::NAN);
        // Rows s = 0..4, columns i = 0..3: column 0 all -inf, column 1 has +inf, column 2 has -inf and
        // finite values.
        let rows = [
            [-inf, 1.0, -inf],
            [-inf, inf, 0.5],
            [-inf, -2.0, -inf],
            [-inf, 3.0, 1.5],
        ];
        let xf: Vec<f64> = rows.iter().flatten().copied().collect();
        let d = Dim3 {
            outer: 1,
            size: 4,
            inner: 3,
        };
        let mut out = vec![E::default(); 3];
        cpu::logsumexp(&to_elems::<E>(&xf), &mut out, d);
        let got = to_f64s(&out);
        let want2 = E::from_f64((0.5f64.exp() + 1.5f64.exp()).ln()).to_f64();
        assert_eq!(got[0], -inf, "{}: all -inf", E::NAME);
        assert_eq!(got[1], inf, "{}: with +inf", E::NAME);
        assert!(
            (got[2] - want2).abs() <= E::TOL * want2,
            "{}: {} vs {want2}",
            E::NAME,
            got[2]
        );
        let mut out = vec![E::default(); 1];
        cpu::logsumexp(
            &to_elems::<E>(&[1.0, nan, inf]),
            &mut out,
            Dim3 {
                outer: 1,
                size: 3,
                inner: 1,
            },
        );
        assert!(
            out[0].to_f64().is_nan(),
            "{}: NaN column gives {:?}",
            E::NAME,
            out[0]
        );
    }
    for_each_float!(run);
}

/// The reverse scan gives suffix sums: against f64 on a middle-dimension layout with inner > 1.
#[test]
fn cumsum_reverse_is_suffix_sums() {
    let d = Dim3 {
        outer: 3,
        size: 17,
        inner: 5,
    };
    let mut rng = Rng::new(41);
    let (x, xf) = random_elems::<f32>(&mut rng, d.numel(), 1.0);
    let mut out = vec![0.0f32; d.numel()];
    cpu::cumsum(&x, &mut out, d, true);
    let mut want = vec![0.0; d.numel()];
    for o in 0..d.outer {
        for i in 0..d.inner {
            let mut acc = 0.0;
            for s in (0..d.size).rev() {
                let k = (o * d.size + s) * d.inner + i;
                acc += xf[k];
                want[k] = acc;
            }
        }
    }
    assert_close("reverse cumsum f32", &to_f64s(&out), &want, |_| 1e-5);
}
