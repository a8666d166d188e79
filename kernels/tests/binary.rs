//! `cpu::binary`, `cpu::compare`, `cpu::select` and `cpu::broadcast_copy` with numpy broadcasting,
//! against a naive per-element index computation in f64.
//!
//! The four arithmetic ops on two values of one float type are exact in f64 and round correctly through
//! f32 for bf16/f16 (f32 has at least 2p+2 bits), so results are compared bit for bit with the f64 value
//! rounded once to the element type.

mod common;

use amp_kernels::Elem;
use amp_kernels::cpu::{self, Binary, Broadcast, Compare};
use common::{Rng, TestFloat, assert_exact, random_elems, to_elems, to_f64s, unravel};

/// The numpy broadcast of several shapes (aligned at the right; each dimension equal or 1).
fn broadcast_shape(shapes: &[&[usize]]) -> Vec<usize> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    (0..rank)
        .map(|d| {
            let sizes = shapes
                .iter()
                .filter_map(|s| (d + s.len()).checked_sub(rank).map(|i| s[i]));
            sizes.fold(1, |acc, size| if size == 1 { acc } else { size })
        })
        .collect()
}

/// The flat offset in an input of shape `shape` that output multi-index `out_index` reads.
fn source_offset(out_index: &[usize], shape: &[usize]) -> usize {
    let skip = out_index.len() - shape.len();
    shape
        .iter()
        .zip(&out_index[skip..])
        .fold(0, |off, (&size, &i)| {
            off * size + if size == 1 { 0 } else { i }
        })
}

/// Shape pairs covering rank mismatch, size-1 broadcasting on both sides, scalars and the contiguous
/// (and parallel, 33·1025 elements) fast path.
const SHAPE_PAIRS: [(&[usize], &[usize]); 9] = [
    (&[2, 1, 3], &[4, 1]),
    (&[], &[3, 5]),
    (&[3, 5], &[]),
    (&[1], &[7]),
    (&[5, 1, 7], &[5, 3, 1]),
    (&[17, 33], &[17, 33]),
    (&[3, 1, 65, 1], &[1, 7, 1, 17]),
    (&[33, 1025], &[33, 1025]),
    (&[65, 600], &[600]),
];

const OPS: [Binary; 6] = [
    Binary::Add,
    Binary::Sub,
    Binary::Mul,
    Binary::Div,
    Binary::Maximum,
    Binary::Minimum,
];

/// The f64 value of `op`; Maximum and Minimum are NaN when either side is NaN.
fn reference(op: Binary, a: f64, b: f64) -> f64 {
    match op {
        Binary::Add => a + b,
        Binary::Sub => a - b,
        Binary::Mul => a * b,
        Binary::Div => a / b,
        Binary::Maximum | Binary::Minimum if a.is_nan() || b.is_nan() => f64::NAN,
        Binary::Maximum => a.max(b),
        Binary::Minimum => a.min(b),
    }
}

/// Runs `op` on `a` and `b` broadcast from their shapes and checks every element exactly.
fn check_op<E: TestFloat>(op: Binary, a: &[E], a_shape: &[usize], b: &[E], b_shape: &[usize]) {
    let out_shape = broadcast_shape(&[a_shape, b_shape]);
    let layout = Broadcast::new(&out_shape, &[a_shape, b_shape]);
    let numel: usize = out_shape.iter().product();
    assert_eq!(layout.numel(), numel);
    let mut out = vec![E::from_f64(f64::NAN); numel];
    cpu::binary(op, a, b, &mut out, &layout);
    let (af, bf) = (to_f64s(a), to_f64s(b));
    let want: Vec<f64> = (0..numel)
        .map(|i| {
            let index = unravel(i, &out_shape);
            let v = reference(
                op,
                af[source_offset(&index, a_shape)],
                bf[source_offset(&index, b_shape)],
            );
            E::from_f64(v).to_f64()
        })
        .collect();
    assert_exact(
        &format!("{op:?} {} {a_shape:?} with {b_shape:?}", E::NAME),
        &to_f64s(&out),
        &want,
    );
}

/// Every op, every broadcast pattern, every float type: bit-exact against f64 rounded once.
#[test]
fn arithmetic_with_broadcasting() {
    fn run<E: TestFloat>() {
        let mut rng = Rng::new(1);
        for (a_shape, b_shape) in SHAPE_PAIRS {
            let (a, _) = random_elems::<E>(&mut rng, a_shape.iter().product(), 2.0);
            let (b, _) = random_elems::<E>(&mut rng, b_shape.iter().product(), 2.0);
            for op in OPS {
                check_op(op, &a, a_shape, &b, b_shape);
            }
        }
    }
    for_each_float!(run);
}

/// NaN on either side makes Maximum and Minimum NaN (not the other operand, as `f32::max` would), and
/// infinities order as usual.
#[test]
fn maximum_minimum_nan_semantics() {
    fn run<E: TestFloat>() {
        let nan = f64::NAN;
        let inf = f64::INFINITY;
        let a = to_elems::<E>(&[nan, 1.0, nan, -inf, 2.0, -3.0, inf]);
        let b = to_elems::<E>(&[1.0, nan, nan, 5.0, -inf, -3.0, 0.5]);
        for op in [Binary::Maximum, Binary::Minimum] {
            check_op(op, &a, &[7], &b, &[7]);
            // And through the broadcasting path: a NaN scalar against a row.
            check_op(op, &to_elems::<E>(&[nan]), &[], &b, &[7]);
        }
        let mut out = vec![E::default(); 3];
        let layout = Broadcast::new(&[3], &[&[3], &[3]]);
        cpu::binary(
            Binary::Maximum,
            &to_elems::<E>(&[nan, 1.0, 4.0]),
            &to_elems::<E>(&[1.0, nan, 2.0]),
            &mut out,
            &layout,
        );
        assert!(
            out[0].to_f64().is_nan() && out[1].to_f64().is_nan(),
            "{} maximum with NaN: {out:?}",
            E::NAME
        );
        assert_eq!(out[2].to_f64(), 4.0);
    }
    for_each_float!(run);
}

/// Values drawn from a small set with repeats, NaN, ±0 and ±inf, so every comparison sees ties.
fn tricky_values(rng: &mut Rng, n: usize) -> Vec<f64> {
    let pool = [
        -1.0,
        0.0,
        -0.0,
        0.5,
        2.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    (0..n).map(|_| pool[rng.below(pool.len())]).collect()
}

fn compare_reference(op: Compare, a: f64, b: f64) -> bool {
    match op {
        Compare::Eq => a == b,
        Compare::Ne => a != b,
        Compare::Lt => a < b,
        Compare::Le => a <= b,
        Compare::Gt => a > b,
        Compare::Ge => a >= b,
        Compare::Same => a == b || (a.is_nan() && b.is_nan()),
    }
}

fn check_compare<E: Elem>(
    what: &str,
    af: &[f64],
    a_shape: &[usize],
    bf: &[f64],
    b_shape: &[usize],
) {
    let (a, b): (Vec<E>, Vec<E>) = (to_elems(af), to_elems(bf));
    let (af, bf) = (to_f64s(&a), to_f64s(&b));
    let out_shape = broadcast_shape(&[a_shape, b_shape]);
    let layout = Broadcast::new(&out_shape, &[a_shape, b_shape]);
    let numel = layout.numel();
    for op in [
        Compare::Eq,
        Compare::Ne,
        Compare::Lt,
        Compare::Le,
        Compare::Gt,
        Compare::Ge,
        Compare::Same,
    ] {
        let mut out = vec![false; numel];
        cpu::compare(op, &a, &b, &mut out, &layout);
        for (i, &got) in out.iter().enumerate() {
            let index = unravel(i, &out_shape);
            let (x, y) = (
                af[source_offset(&index, a_shape)],
                bf[source_offset(&index, b_shape)],
            );
            assert_eq!(
                got,
                compare_reference(op, x, y),
                "{what} {op:?}: element {i} compares {x} with {y}"
            );
        }
    }
}

/// All six comparisons with broadcasting, ties, NaN (false except Ne) and -0 == +0, for every float type,
/// plus integers.
#[test]
fn compare_with_broadcasting() {
    let mut rng = Rng::new(2);
    for (a_shape, b_shape) in SHAPE_PAIRS.iter().take(7) {
        let af = tricky_values(&mut rng, a_shape.iter().product());
        let bf = tricky_values(&mut rng, b_shape.iter().product());
        check_compare::<f32>("f32", &af, a_shape, &bf, b_shape);
        check_compare::<f64>("f64", &af, a_shape, &bf, b_shape);
        check_compare::<amp_kernels::bf16>("bf16", &af, a_shape, &bf, b_shape);
        check_compare::<amp_kernels::f16>("f16", &af, a_shape, &bf, b_shape);
        let ai: Vec<f64> = (0..af.len()).map(|_| rng.below(5) as f64 - 2.0).collect();
        let bi: Vec<f64> = (0..bf.len()).map(|_| rng.below(5) as f64 - 2.0).collect();
        check_compare::<i64>("i64", &ai, a_shape, &bi, b_shape);
    }
}

/// `select` picks from `a` where the (broadcast) condition holds and from `b` elsewhere, with three
/// different input shapes, including a scalar.
#[test]
fn select_with_broadcasting() {
    let mut rng = Rng::new(3);
    let cases: [[&[usize]; 3]; 4] = [
        [&[2, 1, 3], &[4, 1], &[]],
        [&[7], &[3, 7], &[3, 1]],
        [&[], &[5, 3], &[3]],
        [&[17, 33], &[17, 33], &[17, 33]],
    ];
    for [c_shape, a_shape, b_shape] in cases {
        let cond: Vec<bool> = (0..c_shape.iter().product())
            .map(|_| rng.below(2) == 1)
            .collect();
        let (a, af) = random_elems::<amp_kernels::bf16>(&mut rng, a_shape.iter().product(), 1.0);
        let (b, bf) = random_elems::<amp_kernels::bf16>(&mut rng, b_shape.iter().product(), 1.0);
        let out_shape = broadcast_shape(&[c_shape, a_shape, b_shape]);
        let layout = Broadcast::new(&out_shape, &[c_shape, a_shape, b_shape]);
        let mut out = vec![amp_kernels::bf16::NAN; layout.numel()];
        cpu::select(&cond, &a, &b, &mut out, &layout);
        let want: Vec<f64> = (0..layout.numel())
            .map(|i| {
                let index = unravel(i, &out_shape);
                let c = cond[source_offset(&index, c_shape)];
                if c {
                    af[source_offset(&index, a_shape)]
                } else {
                    bf[source_offset(&index, b_shape)]
                }
            })
            .collect();
        assert_exact(
            &format!("select {c_shape:?} {a_shape:?} {b_shape:?}"),
            &to_f64s(&out),
            &want,
        );
    }
    // Integer payloads are copied, not converted.
    let layout = Broadcast::new(&[2, 2], &[&[2, 1], &[2], &[]]);
    let mut out = [0i64; 4];
    cpu::select(
        &[true, false],
        &[i64::MAX, -5],
        &[i64::MIN + 1],
        &mut out,
        &layout,
    );
    assert_eq!(out, [i64::MAX, -5, i64::MIN + 1, i64::MIN + 1]);
}

/// `broadcast_copy` expands size-1 and missing leading dimensions.
#[test]
fn broadcast_copy_expands() {
    let mut rng = Rng::new(4);
    for (x_shape, out_shape) in [
        (&[3, 1, 5][..], &[2, 3, 4, 5][..]),
        (&[], &[7]),
        (&[1], &[3, 1]),
        (&[4, 7], &[4, 7]),
    ] {
        let (x, xf) = random_elems::<f32>(&mut rng, x_shape.iter().product(), 1.0);
        let layout = Broadcast::new(out_shape, &[x_shape]);
        let mut out = vec![f32::NAN; layout.numel()];
        cpu::broadcast_copy(&x, &mut out, &layout);
        let want: Vec<f64> = (0..layout.numel())
            .map(|i| xf[source_offset(&unravel(i, out_shape), x_shape)])
            .collect();
        assert_exact(
            &format!("broadcast_copy {x_shape:?} -> {out_shape:?}"),
            &to_f64s(&out),
            &want,
        );
    }
}
