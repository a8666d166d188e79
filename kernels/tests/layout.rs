//! Data movement: `cpu::permute` against a naive index computation, `cpu::copy_rows` for cat/narrow
//! shapes, and `cpu::im2col` / `cpu::col2im` against naive loops with stride 2 and padding 1, including
//! the adjoint property `<im2col(x), c> = <x, col2im(c)>`.

mod common;

use amp_kernels::bf16;
use amp_kernels::cpu::{self, Conv2dGeometry};
use common::{
    Rng, assert_close, assert_exact, random_elems, strides_of, to_elems, to_f64s, unravel,
};

/// All permutations of `0..n`.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut all = vec![];
    for p in permutations(n - 1) {
        for at in 0..=p.len() {
            let mut q = p.clone();
            q.insert(at, n - 1);
            all.push(q);
        }
    }
    all
}

/// Every one of the 24 permutations of a rank-4 tensor (odd sizes, one of them 1), checked element by
/// element: `out[i0, i1, i2, i3] = x[j]` where `j` has `j[perm[d]] = i[d]`.
#[test]
fn permute_rank4_all_permutations() {
    let mut rng = Rng::new(1);
    let shape = [3, 1, 5, 7];
    let n: usize = shape.iter().product();
    let (x, xf) = random_elems::<f32>(&mut rng, n, 1.0);
    let in_strides = strides_of(&shape);
    let perms = permutations(4);
    assert_eq!(perms.len(), 24);
    for perm in perms {
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let mut out = vec![f32::NAN; n];
        cpu::permute(&x, &shape, &perm, &mut out);
        let want: Vec<f64> = (0..n)
            .map(|flat| {
                let index = unravel(flat, &out_shape);
                let source: usize = (0..4).map(|d| index[d] * in_strides[perm[d]]).sum();
                xf[source]
            })
            .collect();
        assert_exact(
            &format!("permute {shape:?} by {perm:?}"),
            &to_f64s(&out),
            &want,
        );
    }
}

/// Permutations of other ranks and types: a 2-D transpose of i64, a rank-3 bf16 rotation, a rank-5
/// reversal, and rank 0 / rank 1 identities.
#[test]
fn permute_other_ranks() {
    let x: Vec<i64> = (0..15).collect();
    let mut out = vec![0i64; 15];
    cpu::permute(&x, &[3, 5], &[1, 0], &mut out);
    let want: Vec<i64> = (0..15).map(|k| x[(k % 3) * 5 + k / 3]).collect();
    assert_eq!(out, want);

    let mut rng = Rng::new(2);
    for (shape, perm) in [
        (&[2, 3, 5, 1, 3][..], &[4, 3, 2, 1, 0][..]),
        (&[7, 3, 2], &[2, 0, 1]),
        (&[17], &[0]),
        (&[], &[]),
    ] {
        let n: usize = shape.iter().product();
        let (x, xf) = random_elems::<bf16>(&mut rng, n, 1.0);
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let in_strides = strides_of(shape);
        let mut out = vec![bf16::NAN; n];
        cpu::permute(&x, shape, perm, &mut out);
        let want: Vec<f64> = (0..n)
            .map(|flat| {
                let index = unravel(flat, &out_shape);
                xf[(0..shape.len())
                    .map(|d| index[d] * in_strides[perm[d]])
                    .sum::<usize>()]
            })
            .collect();
        assert_exact(
            &format!("permute {shape:?} by {perm:?}"),
            &to_f64s(&out),
            &want,
        );
    }
}

/// copy_rows places a block into wider rows (cat) and cuts one out (narrow), touching nothing else.
#[test]
fn copy_rows_cat_and_narrow() {
    let (rows, src_w, dst_w, off) = (5, 3, 7, 2);
    let src: Vec<f32> = (0..rows * src_w).map(|v| v as f32 + 0.25).collect();
    let mut dst = vec![-1.0f32; rows * dst_w];
    cpu::copy_rows(&src, src_w, 0, &mut dst, dst_w, off, src_w, rows);
    for r in 0..rows {
        for c in 0..dst_w {
            let want = if (off..off + src_w).contains(&c) {
                src[r * src_w + c - off]
            } else {
                -1.0
            };
            assert_eq!(dst[r * dst_w + c], want, "cat: row {r} column {c}");
        }
    }
    // Narrow columns 1..5 of the 7-wide rows back out.
    let mut cut = vec![f32::NAN; rows * 4];
    cpu::copy_rows(&dst, dst_w, 1, &mut cut, 4, 0, 4, rows);
    for r in 0..rows {
        assert_eq!(
            &cut[r * 4..(r + 1) * 4],
            &dst[r * dst_w + 1..r * dst_w + 5],
            "narrow: row {r}"
        );
    }
    // Both offsets non-zero, one row, a zero-length copy writes nothing.
    let mut dst = [0i64; 6];
    cpu::copy_rows(&[1i64, 2, 3, 4], 4, 1, &mut dst, 6, 3, 2, 1);
    assert_eq!(dst, [0, 0, 0, 2, 3, 0]);
    cpu::copy_rows(&[9i64], 1, 0, &mut dst, 6, 0, 0, 1);
    assert_eq!(dst, [0, 0, 0, 2, 3, 0]);
}

/// Geometries with odd sizes, stride 2 and padding 1 (and mixed strides/pads/kernels per axis).
fn geometries() -> Vec<Conv2dGeometry> {
    let g = |channels, height, width, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w| {
        Conv2dGeometry {
            channels,
            height,
            width,
            kernel_h,
            kernel_w,
            stride_h,
            stride_w,
            pad_h,
            pad_w,
        }
    };
    vec![
        g(3, 7, 5, 3, 3, 2, 2, 1, 1),
        g(2, 9, 9, 3, 3, 2, 2, 1, 1),
        g(1, 5, 7, 2, 3, 1, 2, 0, 1),
        g(5, 17, 3, 3, 1, 2, 1, 1, 0),
        g(1, 1, 1, 1, 1, 1, 1, 0, 0),
        g(2, 4, 6, 5, 5, 3, 2, 2, 2),
    ]
}

/// The input position output `(oy, ox)` reads for kernel tap `(ky, kx)`, or `None` in the padding,
/// computed with signed arithmetic.
fn tap(g: &Conv2dGeometry, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
    let y = (oy * g.stride_h + ky) as i64 - g.pad_h as i64;
    let x = (ox * g.stride_w + kx) as i64 - g.pad_w as i64;
    (y >= 0 && x >= 0 && (y as usize) < g.height && (x as usize) < g.width)
        .then_some((y as usize, x as usize))
}

/// The output size along one axis, from the convolution formula.
fn out_size(input: usize, kernel: usize, stride: usize, pad: usize) -> usize {
    (input + 2 * pad - kernel) / stride + 1
}

/// im2col and col2im against naive loops; col2im adds onto the existing contents of its output.
#[test]
fn im2col_and_col2im_match_naive() {
    let mut rng = Rng::new(3);
    for g in geometries() {
        let (oh, ow) = (
            out_size(g.height, g.kernel_h, g.stride_h, g.pad_h),
            out_size(g.width, g.kernel_w, g.stride_w, g.pad_w),
        );
        assert_eq!(
            (g.out_h(), g.out_w(), g.col_rows(), g.col_cols()),
            (oh, ow, g.channels * g.kernel_h * g.kernel_w, oh * ow)
        );
        let (x, xf) = random_elems::<f64>(&mut rng, g.channels * g.height * g.width, 1.0);
        let mut cols = vec![f64::NAN; g.col_rows() * g.col_cols()];
        cpu::im2col(&x, &g, &mut cols);
        let (c_in, c_inf) = random_elems::<f64>(&mut rng, cols.len(), 1.0);
        let (start, startf) = random_elems::<f64>(&mut rng, x.len(), 1.0);
        let mut dx = start;
        cpu::col2im(&c_in, &g, &mut dx);
        let mut want_cols = vec![0.0; cols.len()];
        let mut want_dx = startf.clone();
        for c in 0..g.channels {
            for ky in 0..g.kernel_h {
                for kx in 0..g.kernel_w {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let k = (((c * g.kernel_h + ky) * g.kernel_w + kx) * oh + oy) * ow + ox;
                            if let Some((y, xx)) = tap(&g, oy, ox, ky, kx) {
                                let i = (c * g.height + y) * g.width + xx;
                                want_cols[k] = xf[i];
                                want_dx[i] += c_inf[k];
                            }
                        }
                    }
                }
            }
        }
        assert_exact(&format!("im2col {g:?}"), &cols, &want_cols);
        assert_close(&format!("col2im {g:?}"), &dx, &want_dx, |i| {
            1e-14 * (1.0 + want_dx[i].abs())
        });
    }
}

/// The adjoint property `<im2col(x), c> = <x, col2im(c)>` in f64, and im2col of bf16 copying exactly.
#[test]
fn col2im_is_adjoint_of_im2col() {
    let mut rng = Rng::new(4);
    for g in geometries() {
        let (x, _) = random_elems::<f64>(&mut rng, g.channels * g.height * g.width, 1.0);
        let (c, _) = random_elems::<f64>(&mut rng, g.col_rows() * g.col_cols(), 1.0);
        let mut cols = vec![0.0; c.len()];
        cpu::im2col(&x, &g, &mut cols);
        let mut back = vec![0.0; x.len()];
        cpu::col2im(&c, &g, &mut back);
        let lhs: f64 = cols.iter().zip(&c).map(|(a, b)| a * b).sum();
        let rhs: f64 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
        let mag: f64 = cols.iter().zip(&c).map(|(a, b)| (a * b).abs()).sum();
        assert!(
            mag > 0.0 && (lhs - rhs).abs() <= 1e-12 * mag,
            "{g:?}: <im2col x, c> = {lhs}, <x, col2im c> = {rhs}"
        );

        let xb: Vec<bf16> = to_elems(&x);
        let mut cols_b = vec![bf16::NAN; c.len()];
        cpu::im2col(&xb, &g, &mut cols_b);
        let widened = to_f64s(&xb);
        let mut want = vec![0.0; c.len()];
        cpu::im2col(&widened, &g, &mut want);
        assert_exact(&format!("im2col bf16 {g:?}"), &to_f64s(&cols_b), &want);
    }
}
