//! `cpu::layer_norm`, `cpu::rms_norm` and their backward passes against f64: the forward and the stored
//! statistics against the textbook formulas, the backward against five-point finite differences (f64)
//! and against the explicit f64 Jacobian (every type).

mod common;

use amp_kernels::cpu;
use amp_kernels::{Elem, Float, bf16};
use common::{Rng, TestFloat, assert_close, random_elems, to_elems, to_f64s, tol_for};

const EPS: f64 = 1e-5;

/// `(rows, cols)` shapes: odd row lengths, a single column, and one large enough for the parallel path.
const SHAPES: [(usize, usize); 7] = [(1, 1), (5, 3), (3, 7), (4, 17), (2, 33), (7, 65), (600, 65)];

/// Per row: the mean and `1/√(biased variance + eps)`, in f64.
fn layer_stats(row: &[f64]) -> (f64, f64) {
    let n = row.len() as f64;
    let mean = row.iter().sum::<f64>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, 1.0 / (var + EPS).sqrt())
}

/// Per row: `1/√(mean(x²) + eps)`, in f64.
fn rms_stat(row: &[f64]) -> f64 {
    1.0 / (row.iter().map(|v| v * v).sum::<f64>() / row.len() as f64 + EPS).sqrt()
}

fn layer_norm_ref(row: &[f64]) -> Vec<f64> {
    let (mean, rstd) = layer_stats(row);
    row.iter().map(|v| (v - mean) * rstd).collect()
}

fn rms_norm_ref(row: &[f64]) -> Vec<f64> {
    let rstd = rms_stat(row);
    row.iter().map(|v| v * rstd).collect()
}

/// Widens an accumulation-type slice to f64.
fn acc_f64<E: Float>(v: &[E::Acc]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

/// Rounds f64 statistics to an accumulation type.
fn acc_from<E: Float>(v: &[f64]) -> Vec<E::Acc> {
    v.iter().map(|&x| <E::Acc as Elem>::from_f64(x)).collect()
}

/// Layer norm forward of `I` data (normal around `offset`) written as `O`: outputs, means and rstds.
/// The output may lose `|x| + |mean|` times rstd in the accumulation type (the cancellation in
/// `x - mean`); a one-pass variance would lose far more at large offsets.
fn check_layer_norm<I: TestFloat, O: TestFloat>(seed: u64, offset: f64) {
    let mut rng = Rng::new(seed);
    for (rows, cols) in SHAPES {
        let xf: Vec<f64> = rng
            .normals(rows * cols, 1.0)
            .iter()
            .map(|v| v + offset)
            .collect();
        let x: Vec<I> = to_elems(&xf);
        let xf = to_f64s(&x);
        let mut out = vec![O::from_f64(f64::NAN); rows * cols];
        let (mut mean, mut rstd) = (
            acc_from::<I>(&vec![f64::NAN; rows]),
            acc_from::<I>(&vec![f64::NAN; rows]),
        );
        cpu::layer_norm(&x, &mut out, &mut mean, &mut rstd, cols, EPS);
        let what = format!(
            "layer_norm {}->{} {rows}x{cols} offset {offset}",
            I::NAME,
            O::NAME
        );
        let (mut want, mut scale) = (vec![], vec![]);
        let (mut want_mean, mut want_rstd) = (vec![], vec![]);
        for row in xf.chunks(cols) {
            let (mu, rs) = layer_stats(row);
            want.extend(layer_norm_ref(row));
            scale.extend(row.iter().map(|v| (v.abs() + mu.abs()) * rs));
            want_mean.push(mu);
            want_rstd.push(rs);
        }
        assert_close(&what, &to_f64s(&out), &want, |k| {
            tol_for::<I, O>(want[k], scale[k])
        });
        let mean_scale: Vec<f64> = xf
            .chunks(cols)
            .map(|r| r.iter().map(|v| v.abs()).sum::<f64>() / cols as f64)
            .collect();
        assert_close(
            &format!("{what} mean"),
            &acc_f64::<I>(&mean),
            &want_mean,
            |r| I::ACC_TOL * mean_scale[r],
        );
        assert_close(
            &format!("{what} rstd"),
            &acc_f64::<I>(&rstd),
            &want_rstd,
            |r| 4.0 * I::ACC_TOL * want_rstd[r],
        );
    }
}

/// Layer norm forward for every type, around 0 and (f32/f64) around 1000, where a one-pass variance in
/// f32 would be off by percent; plus bf16 -> f32 and f32 -> bf16.
#[test]
fn layer_norm_matches_f64() {
    fn run<E: TestFloat>() {
        check_layer_norm::<E, E>(1, 0.5);
    }
    for_each_float!(run);
    check_layer_norm::<f32, f32>(2, 1000.0);
    check_layer_norm::<f64, f64>(3, 1000.0);
    check_layer_norm::<bf16, f32>(4, 3.0);
    check_layer_norm::<f32, bf16>(5, -2.0);
}

/// RMS norm forward (outputs and rstds) for every type, plus bf16 -> f32 and f32 -> bf16.
#[test]
fn rms_norm_matches_f64() {
    fn check<I: TestFloat, O: TestFloat>(seed: u64) {
        let mut rng = Rng::new(seed);
        for (rows, cols) in SHAPES {
            let (x, xf) = random_elems::<I>(&mut rng, rows * cols, 2.0);
            let mut out = vec![O::from_f64(f64::NAN); rows * cols];
            let mut rstd = acc_from::<I>(&vec![f64::NAN; rows]);
            cpu::rms_norm(&x, &mut out, &mut rstd, cols, EPS);
            let what = format!("rms_norm {}->{} {rows}x{cols}", I::NAME, O::NAME);
            let want: Vec<f64> = xf.chunks(cols).flat_map(rms_norm_ref).collect();
            assert_close(&what, &to_f64s(&out), &want, |k| {
                tol_for::<I, O>(want[k], want[k].abs())
            });
            let want_rstd: Vec<f64> = xf.chunks(cols).map(rms_stat).collect();
            assert_close(
                &format!("{what} rstd"),
                &acc_f64::<I>(&rstd),
                &want_rstd,
                |r| 4.0 * I::ACC_TOL * want_rstd[r],
            );
        }
    }
    fn run<E: TestFloat>() {
        check::<E, E>(6);
    }
    for_each_float!(run);
    check::<bf16, f32>(7);
    check::<f32, bf16>(8);
}

/// The gradient of `Σ dy · norm(row)` by five-point central differences, row by row.
fn finite_difference_grad(
    norm: fn(&[f64]) -> Vec<f64>,
    x: &[f64],
    dy: &[f64],
    cols: usize,
) -> Vec<f64> {
    let h = 1e-4;
    let mut grad = vec![0.0; x.len()];
    for (r, (row, g)) in x.chunks(cols).zip(dy.chunks(cols)).enumerate() {
        for j in 0..cols {
            let at = |t: f64| {
                let mut shifted = row.to_vec();
                shifted[j] += t;
                norm(&shifted)
                    .iter()
                    .zip(g)
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
            };
            grad[r * cols + j] =
                (at(-2.0 * h) - 8.0 * at(-h) + 8.0 * at(h) - at(2.0 * h)) / (12.0 * h);
        }
    }
    grad
}

/// f64 backward of both norms against finite differences of the f64 forward (statistics passed in as
/// the f64 reference computed them).
#[test]
fn backward_matches_finite_differences_f64() {
    let mut rng = Rng::new(9);
    for (rows, cols) in SHAPES.iter().take(6).copied() {
        let x: Vec<f64> = rng
            .normals(rows * cols, 1.5)
            .iter()
            .map(|v| v + 0.7)
            .collect();
        let dy = rng.normals(rows * cols, 1.0);
        let stats: Vec<(f64, f64)> = x.chunks(cols).map(layer_stats).collect();
        let (mean, rstd): (Vec<f64>, Vec<f64>) = stats.into_iter().unzip();
        let mut dx = vec![f64::NAN; rows * cols];
        cpu::layer_norm_backward(&x, &mean, &rstd, &dy, &mut dx, cols);
        let want = finite_difference_grad(layer_norm_ref, &x, &dy, cols);
        assert_close(
            &format!("layer_norm_backward f64 {rows}x{cols}"),
            &dx,
            &want,
            |k| 1e-8 * (1.0 + want[k].abs()),
        );
        let rstd: Vec<f64> = x.chunks(cols).map(rms_stat).collect();
        cpu::rms_norm_backward(&x, &rstd, &dy, &mut dx, cols);
        let want = finite_difference_grad(rms_norm_ref, &x, &dy, cols);
        assert_close(
            &format!("rms_norm_backward f64 {rows}x{cols}"),
            &dx,
            &want,
            |k| 1e-8 * (1.0 + want[k].abs()),
        );
    }
}

/// Backward of both norms in every type against the explicit Jacobian in f64:
/// layer norm `J_ij = rstd (δ_ij - 1/n - x̂_i x̂_j / n)`, RMS norm `J_ij = rstd (δ_ij - x̂_i x̂_j / n)`,
/// `dx_j = Σ_i dy_i J_ij`, on the same rounded inputs and statistics the kernel sees.
#[test]
fn backward_matches_jacobian() {
    fn run<E: TestFloat>() {
        let mut rng = Rng::new(10);
        for (rows, cols) in SHAPES {
            let (x, xf) = random_elems::<E>(&mut rng, rows * cols, 1.5);
            let (dy, dyf) = random_elems::<E>(&mut rng, rows * cols, 1.0);
            for rms in [false, true] {
                let stats: Vec<(f64, f64)> = xf
                    .chunks(cols)
                    .map(|r| {
                        if rms {
                            (0.0, rms_stat(r))
                        } else {
                            layer_stats(r)
                        }
                    })
                    .collect();
                let mean = acc_from::<E>(&stats.iter().map(|s| s.0).collect::<Vec<_>>());
                let rstd = acc_from::<E>(&stats.iter().map(|s| s.1).collect::<Vec<_>>());
                let mut dx = vec![E::from_f64(f64::NAN); rows * cols];
                if rms {
                    cpu::rms_norm_backward(&x, &rstd, &dy, &mut dx, cols);
                } else {
                    cpu::layer_norm_backward(&x, &mean, &rstd, &dy, &mut dx, cols);
                }
                let (mut want, mut scale) = (vec![0.0; rows * cols], vec![0.0; rows * cols]);
                for r in 0..rows {
                    // The statistics as the kernel receives them (rounded to the accumulation type).
                    let (mu, rs) = (mean[r].to_f64(), rstd[r].to_f64());
                    let row = &xf[r * cols..(r + 1) * cols];
                    let g = &dyf[r * cols..(r + 1) * cols];
                    let xh: Vec<f64> = row.iter().map(|v| (v - mu) * rs).collect();
                    let n = cols as f64;
                    let centre = if rms { 0.0 } else { 1.0 / n };
                    // Error scale of a correct kernel: the terms it sums, and x̂'s own cancellation.
                    let m1 = g.iter().map(|v| v.abs()).sum::<f64>() / n;
                    let m2 = g
                        .iter()
                        .zip(row)
                        .map(|(a, v)| a.abs() * (v.abs() + mu.abs()) * rs)
                        .sum::<f64>()
                        / n;
                    for j in 0..cols {
                        let mut sum = 0.0;
                        for i in 0..cols {
                            let delta = if i == j { 1.0 } else { 0.0 };
                            sum += g[i] * rs * (delta - centre - xh[i] * xh[j] / n);
                        }
                        let k = r * cols + j;
                        want[k] = sum;
                        scale[k] = rs
                            * (g[j].abs()
                                + m1
                                + (xh[j].abs() + (row[j].abs() + mu.abs()) * rs) * m2);
                    }
                }
                let what = format!(
                    "{}_backward {} {rows}x{cols}",
                    if rms { "rms_norm" } else { "layer_norm" },
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
