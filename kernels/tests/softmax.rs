//! `cpu::softmax`, `cpu::log_softmax` and their backward passes along one dimension (inner = 1 and
//! inner > 1), against f64: the forward against the max-shifted f64 formula, the backward against five-point
//! finite differences in f64 and, for the lower-precision types, against the analytic Jacobian in f64.

mod common;

use amp_kernels::bf16;
use amp_kernels::cpu::{self, Dim3};
use common::{Rng, TestFloat, assert_close, random_elems, to_elems, to_f64s, tol_for};

/// Layouts with the softmax dimension of odd size, inner = 1 and inner > 1, and one large enough for
/// the parallel path.
const LAYOUTS: [Dim3; 8] = [
    Dim3 {
        outer: 1,
        size: 1,
        inner: 1,
    },
    Dim3 {
        outer: 3,
        size: 7,
        inner: 1,
    },
    Dim3 {
        outer: 2,
        size: 65,
        inner: 1,
    },
    Dim3 {
        outer: 3,
        size: 17,
        inner: 5,
    },
    Dim3 {
        outer: 1,
        size: 33,
        inner: 3,
    },
    Dim3 {
        outer: 5,
        size: 3,
        inner: 17,
    },
    Dim3 {
        outer: 2,
        size: 1,
        inner: 7,
    },
    Dim3 {
        outer: 9,
        size: 65,
        inner: 65,
    },
];

/// Applies `f` to each column of `x` (laid out as `d`) and writes the results back in place of it.
fn map_columns(x: &[f64], d: Dim3, f: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for o in 0..d.outer {
        for i in 0..d.inner {
            let at = |s: usize| (o * d.size + s) * d.inner + i;
            let col: Vec<f64> = (0..d.size).map(|s| x[at(s)]).collect();
            for (s, v) in f(&col).into_iter().enumerate() {
                out[at(s)] = v;
            }
        }
    }
    out
}

/// The maximum of a column and `ln Σ exp(x - max)`.
fn shift_and_log_sum(col: &[f64]) -> (f64, f64) {
    let m = col.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (m, col.iter().map(|v| (v - m).exp()).sum::<f64>().ln())
}

fn softmax_ref(col: &[f64]) -> Vec<f64> {
    let (m, ls) = shift_and_log_sum(col);
    col.iter().map(|v| (v - m - ls).exp()).collect()
}

fn log_softmax_ref(col: &[f64]) -> Vec<f64> {
    let (m, ls) = shift_and_log_sum(col);
    col.iter().map(|v| v - m - ls).collect()
}

/// Forward softmax and log-softmax of random `I` data written as `O`, on every layout.
fn check_forward<I: TestFloat, O: TestFloat>(seed: u64) {
    let mut rng = Rng::new(seed);
    for d in LAYOUTS {
        let (x, xf) = random_elems::<I>(&mut rng, d.numel(), 3.0);
        // Error of exp(x - max) in f32 grows with |x - max|; the log form loses |x| + |max| absolutely.
        let spread = map_columns(&xf, d, |c| {
            let m = c.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            c.iter()
                .map(|v| 1.0 + (v - m).abs() + v.abs() + m.abs())
                .collect()
        });
        let mut out = vec![O::from_f64(f64::NAN); d.numel()];
        cpu::softmax(&x, &mut out, d);
        let want = map_columns(&xf, d, softmax_ref);
        let what = format!("softmax {}->{} {d:?}", I::NAME, O::NAME);
        assert_close(&what, &to_f64s(&out), &want, |k| {
            tol_for::<I, O>(want[k], want[k] * spread[k])
        });
        cpu::log_softmax(&x, &mut out, d);
        let want = map_columns(&xf, d, log_softmax_ref);
        let what = format!("log_softmax {}->{} {d:?}", I::NAME, O::NAME);
        assert_close(&what, &to_f64s(&out), &want, |k| {
            tol_for::<I, O>(want[k], spread[k])
        });
    }
}

/// Softmax and log-softmax against f64 on every layout and type, plus bf16 -> f32 and f32 -> bf16.
#[test]
fn forward_matches_f64() {
    fn run<E: TestFloat>() {
        check_forward::<E, E>(1);
    }
    for_each_float!(run);
    check_forward::<bf16, f32>(2);
    check_forward::<f32, bf16>(3);
}

/// Inputs around ±1000 do not overflow (the max shift), a column of all -inf is NaN in both forms (as in
/// PyTorch), and -inf entries next to finite ones get probability 0 and log-probability -inf.
#[test]
fn forward_extremes() {
    fn run<E: TestFloat>() {
        let inf = f64::INFINITY;
        // Columns (inner = 3): 0 all -inf, 1 huge values, 2 mixed -inf and finite.
        let rows = [
            [-inf, 1000.0, -inf],
            [-inf, 1001.0, 0.5],
            [-inf, 999.0, -inf],
            [-inf, 1000.0, 1.5],
        ];
        let xf: Vec<f64> = rows.iter().flatten().copied().collect();
        let x: Vec<E> = to_elems(&xf);
        let xf = to_f64s(&x);
        let d = Dim3 {
            outer: 1,
            size: 4,
            inner: 3,
        };
        let (mut p, mut lp) = (vec![E::default(); 12], vec![E::default(); 12]);
        cpu::softmax(&x, &mut p, d);
        cpu::log_softmax(&x, &mut lp, d);
        let (p, lp) = (to_f64s(&p), to_f64s(&lp));
        for s in 0..4 {
            assert!(
                p[s * 3].is_nan() && lp[s * 3].is_nan(),
                "{}: all -inf column gives {} / {}",
                E::NAME,
                p[s * 3],
                lp[s * 3]
            );
        }
        let col = |c: usize| -> Vec<f64> { (0..4).map(|s| xf[s * 3 + c]).collect() };
        for c in [1, 2] {
            let (want_p, want_lp) = (softmax_ref(&col(c)), log_softmax_ref(&col(c)));
            for s in 0..4 {
                let (gp, glp) = (p[s * 3 + c], lp[s * 3 + c]);
                assert!(
                    (gp - want_p[s]).abs() <= E::TOL * want_p[s] + 1e-6,
                    "{} softmax col {c} row {s}: {gp} vs {}",
                    E::NAME,
                    want_p[s]
                );
                let ok = glp == want_lp[s]
                    || (glp - want_lp[s]).abs() <= E::TOL * want_lp[s].abs() + 1e-5;
                assert!(
                    ok,
                    "{} log_softmax col {c} row {s}: {glp} vs {}",
                    E::NAME,
                    want_lp[s]
                );
            }
        }
        assert_eq!((p[2], lp[2]), (0.0, -inf), "{}: -inf entry", E::NAME);
    }
    for_each_float!(run);
}

/// `Σ_s dy_s · f(x)_s` for one column, the scalar whose gradient the backward computes.
fn weighted(f: fn(&[f64]) -> Vec<f64>, col: &[f64], dy: &[f64]) -> f64 {
    f(col).iter().zip(dy).map(|(a, b)| a * b).sum()
}

/// The gradient of `Σ dy · f(x)` with respect to `x` by a five-point central difference per element.
fn finite_difference_grad(f: fn(&[f64]) -> Vec<f64>, x: &[f64], dy: &[f64], d: Dim3) -> Vec<f64> {
    let h = 1e-4;
    let mut grad = vec![0.0; x.len()];
    for o in 0..d.outer {
        for i in 0..d.inner {
            let at = |s: usize| (o * d.size + s) * d.inner + i;
            let col: Vec<f64> = (0..d.size).map(|s| x[at(s)]).collect();
            let g: Vec<f64> = (0..d.size).map(|s| dy[at(s)]).collect();
            for s in 0..d.size {
                let shifted = |t: f64| {
                    let mut c = col.clone();
                    c[s] += t;
                    weighted(f, &c, &g)
                };
                grad[at(s)] = (shifted(-2.0 * h) - 8.0 * shifted(-h) + 8.0 * shifted(h)
                    - shifted(2.0 * h))
                    / (12.0 * h);
            }
        }
    }
    grad
}

/// f64 backward of both forms against finite differences of the f64 forward.
#[test]
fn backward_matches_finite_differences_f64() {
    let mut rng = Rng::new(4);
    for d in LAYOUTS.iter().take(7) {
        let d = *d;
        let x = rng.normals(d.numel(), 2.0);
        let dy = rng.normals(d.numel(), 1.0);
        let mut dx = vec![f64::NAN; d.numel()];
        let y = map_columns(&x, d, softmax_ref);
        cpu::softmax_backward(&y, &dy, &mut dx, d);
        let want = finite_difference_grad(softmax_ref, &x, &dy, d);
        assert_close(&format!("softmax_backward f64 {d:?}"), &dx, &want, |k| {
            1e-9 * (1.0 + want[k].abs())
        });
        let y = map_columns(&x, d, log_softmax_ref);
        cpu::log_softmax_backward(&y, &dy, &mut dx, d);
        let want = finite_difference_grad(log_softmax_ref, &x, &dy, d);
        assert_close(
            &format!("log_softmax_backward f64 {d:?}"),
            &dx,
            &want,
            |k| 1e-9 * (1.0 + want[k].abs()),
        );
    }
}

/// Backward in every type against the analytic Jacobian in f64, evaluated on the same rounded `y` and
/// `dy` the kernel sees: softmax `dx_t = Σ_s dy_s y_s (δ_st - y_t)`, log-softmax
/// `dx_t = Σ_s dy_s (δ_st - e^{y_t})`.
#[test]
fn backward_matches_jacobian() {
    fn run<E: TestFloat>() {
        let mut rng = Rng::new(5);
        for d in LAYOUTS {
            let xf = rng.normals(d.numel(), 2.0);
            let (dy, dyf) = random_elems::<E>(&mut rng, d.numel(), 1.0);
            for log in [false, true] {
                let y: Vec<E> = to_elems(&map_columns(
                    &xf,
                    d,
                    if log { log_softmax_ref } else { softmax_ref },
                ));
                let yf = to_f64s(&y);
                let mut dx = vec![E::from_f64(f64::NAN); d.numel()];
                if log {
                    cpu::log_softmax_backward(&y, &dy, &mut dx, d);
                } else {
                    cpu::softmax_backward(&y, &dy, &mut dx, d);
                }
                let (mut want, mut scale) = (vec![0.0; d.numel()], vec![0.0; d.numel()]);
                for o in 0..d.outer {
                    for i in 0..d.inner {
                        let at = |s: usize| (o * d.size + s) * d.inner + i;
                        // Magnitudes a correct kernel cancels: Σ|dy·y| (softmax) or Σ|dy| (log-softmax).
                        let (sum_dy_y, sum_dy) = (0..d.size).fold((0.0, 0.0), |(a, b), s| {
                            (a + (dyf[at(s)] * yf[at(s)]).abs(), b + dyf[at(s)].abs())
                        });
                        for t in 0..d.size {
                            let mut sum = 0.0;
                            for s in 0..d.size {
                                let delta = if s == t { 1.0 } else { 0.0 };
                                sum += if log {
                                    dyf[at(s)] * (delta - yf[at(t)].exp())
                                } else {
                                    dyf[at(s)] * yf[at(s)] * (delta - yf[at(t)])
                                };
                            }
                            let (y, g) = (yf[at(t)], dyf[at(t)].abs());
                            let mag = if log {
                                g + y.exp() * sum_dy
                            } else {
                                y * (g + sum_dy_y)
                            };
                            (want[at(t)], scale[at(t)]) = (sum, mag);
                        }
                    }
                }
                let what = format!(
                    "{}softmax_backward {} {d:?}",
                    if log { "log_" } else { "" },
                    E::NAME
                );
                assert_close(&what, &to_f64s(&dx), &want, |k| {
                    tol_for::<E, E>(want[k], scale[k])
                });
            }
        }
    }
    for_each_float!(run);
}
