//! `cpu::gather`, `cpu::scatter_add`, `cpu::index_select` and `cpu::index_add` against naive loops, and
//! their error path: an out-of-range or negative index returns `IndexError { index, bound }` for the
//! first bad index and writes nothing.

mod common;

use amp_kernels::cpu::{self, Dim3, IndexError};
use amp_kernels::{bf16, f16};
use common::{Rng, TestFloat, assert_close, assert_exact, random_elems, to_f64s, tol_for};

/// Layouts with odd sizes, inner = 1 and inner > 1.
const LAYOUTS: [Dim3; 5] = [
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
        inner: 5,
    },
    Dim3 {
        outer: 2,
        size: 33,
        inner: 3,
    },
    Dim3 {
        outer: 5,
        size: 3,
        inner: 17,
    },
];

/// `n` random indices in `0..bound`.
fn indices(rng: &mut Rng, n: usize, bound: usize) -> Vec<i64> {
    (0..n).map(|_| rng.below(bound) as i64).collect()
}

/// gather and index_select pick exactly the indexed elements, every type, every layout, index
/// dimensions shorter and longer than the source (so indices repeat).
#[test]
fn gather_and_index_select() {
    fn run<E: TestFloat>() {
        let mut rng = Rng::new(1);
        for d in LAYOUTS {
            let (x, xf) = random_elems::<E>(&mut rng, d.numel(), 1.0);
            for idx_size in [1, 7, 2 * d.size + 1] {
                let n = d.outer * idx_size * d.inner;
                let idx = indices(&mut rng, n, d.size);
                let mut out = vec![E::from_f64(f64::NAN); n];
                cpu::gather(&x, d, &idx, idx_size, &mut out).unwrap();
                let want: Vec<f64> = (0..n)
                    .map(|k| {
                        let (o, i) = (k / (idx_size * d.inner), k % d.inner);
                        xf[(o * d.size + idx[k] as usize) * d.inner + i]
                    })
                    .collect();
                assert_exact(
                    &format!("gather {} {d:?} idx_size {idx_size}", E::NAME),
                    &to_f64s(&out),
                    &want,
                );

                let idx = indices(&mut rng, idx_size, d.size);
                let mut out = vec![E::from_f64(f64::NAN); n];
                cpu::index_select(&x, d, &idx, &mut out).unwrap();
                let want: Vec<f64> = (0..n)
                    .map(|k| {
                        let (o, t, i) = (
                            k / (idx_size * d.inner),
                            (k / d.inner) % idx_size,
                            k % d.inner,
                        );
                        xf[(o * d.size + idx[t] as usize) * d.inner + i]
                    })
                    .collect();
                assert_exact(
                    &format!("index_select {} {d:?} idx_size {idx_size}", E::NAME),
                    &to_f64s(&out),
                    &want,
                );
            }
        }
    }
    for_each_float!(run);
}

/// scatter_add and index_add add every source element onto its indexed slot, with repeated indices,
/// accumulating in the element's accumulation type and rounding once (checked against f64 sums).
#[test]
fn scatter_add_and_index_add() {
    fn run<E: TestFloat>() {
        let mut rng = Rng::new(2);
        for d in LAYOUTS {
            for idx_size in [1, 7, 2 * d.size + 1] {
                let n = d.outer * idx_size * d.inner;
                let (src, srcf) = random_elems::<E>(&mut rng, n, 1.0);
                let (start, startf) = random_elems::<E>(&mut rng, d.numel(), 1.0);

                let idx = indices(&mut rng, n, d.size);
                let mut out = start.clone();
                cpu::scatter_add(&mut out, d, &idx, &src, idx_size).unwrap();
                let mut want = startf.clone();
                let mut magnitude: Vec<f64> = startf.iter().map(|v| v.abs()).collect();
                for (k, &v) in srcf.iter().enumerate() {
                    let (o, i) = (k / (idx_size * d.inner), k % d.inner);
                    let slot = (o * d.size + idx[k] as usize) * d.inner + i;
                    want[slot] += v;
                    magnitude[slot] += v.abs();
                }
                assert_close(
                    &format!("scatter_add {} {d:?} idx_size {idx_size}", E::NAME),
                    &to_f64s(&out),
                    &want,
                    |i| tol_for::<E, E>(want[i], magnitude[i]),
                );

                let idx = indices(&mut rng, idx_size, d.size);
                let mut out = start.clone();
                cpu::index_add(&mut out, d, &idx, &src).unwrap();
                let mut want = startf.clone();
                let mut magnitude: Vec<f64> = startf.iter().map(|v| v.abs()).collect();
                for (k, &v) in srcf.iter().enumerate() {
                    let (o, t, i) = (
                        k / (idx_size * d.inner),
                        (k / d.inner) % idx_size,
                        k % d.inner,
                    );
                    let slot = (o * d.size + idx[t] as usize) * d.inner + i;
                    want[slot] += v;
                    magnitude[slot] += v.abs();
                }
                assert_close(
                    &format!("index_add {} {d:?} idx_size {idx_size}", E::NAME),
                    &to_f64s(&out),
                    &want,
                    |i| tol_for::<E, E>(want[i], magnitude[i]),
                );
            }
        }
    }
    for_each_float!(run);
}

/// Index lists with a bad index after good ones: `bad` first, then another bad index, so the error
/// must name the first one.
fn with_bad(good: usize, bad: i64, other_bad: i64) -> Vec<i64> {
    let mut idx: Vec<i64> = (0..good as i64).map(|i| i % 3).collect();
    idx.push(bad);
    idx.push(other_bad);
    idx.push(0);
    idx
}

/// Out-of-range (== bound, far above) and negative indices: every kernel returns the first bad index
/// and the bound, and leaves its output bit-for-bit untouched even though good indices come first.
#[test]
fn bad_indices_report_and_write_nothing() {
    let d = Dim3 {
        outer: 2,
        size: 3,
        inner: 2,
    };
    let x: Vec<f32> = (0..d.numel()).map(|v| v as f32 + 0.5).collect();
    for (bad, other) in [
        (3, -1),
        (-1, 3),
        (i64::MAX, 0),
        (i64::MIN, 5),
        (1 << 40, -7),
    ] {
        let want = IndexError {
            index: bad,
            bound: 3,
        };
        let idx = with_bad(4, bad, other);
        let t = idx.len();

        let sentinel = vec![-9.25f32; d.outer * t * d.inner];
        let gather_idx: Vec<i64> = (0..d.outer)
            .flat_map(|_| idx.iter().flat_map(|&i| [i; 2]))
            .collect();
        let mut out = sentinel.clone();
        assert_eq!(cpu::gather(&x, d, &gather_idx, t, &mut out), Err(want));
        assert_eq!(out, sentinel, "gather wrote despite the bad index {bad}");

        let mut out = sentinel.clone();
        assert_eq!(cpu::index_select(&x, d, &idx, &mut out), Err(want));
        assert_eq!(
            out, sentinel,
            "index_select wrote despite the bad index {bad}"
        );

        let src = vec![1.0f32; d.outer * t * d.inner];
        let mut out = x.clone();
        assert_eq!(
            cpu::scatter_add(&mut out, d, &gather_idx, &src, t),
            Err(want)
        );
        assert_eq!(out, x, "scatter_add wrote despite the bad index {bad}");

        let mut out = x.clone();
        assert_eq!(cpu::index_add(&mut out, d, &idx, &src), Err(want));
        assert_eq!(out, x, "index_add wrote despite the bad index {bad}");
    }
    let err = IndexError {
        index: -1,
        bound: 3,
    };
    assert_eq!(
        err.to_string(),
        "index -1 is out of bounds for a dimension of size 3"
    );
}

/// The last valid index (bound - 1) is accepted and index 0 of a size-1 dimension works, for the
/// half types too; an empty dimension rejects every index.
#[test]
fn boundary_indices() {
    let d = Dim3 {
        outer: 1,
        size: 4,
        inner: 1,
    };
    let x: Vec<bf16> = [1.0, 2.0, 3.0, 4.0]
        .iter()
        .map(|&v| bf16::from_f32(v))
        .collect();
    let mut out = vec![bf16::ZERO; 2];
    cpu::index_select(&x, d, &[3, 0], &mut out).unwrap();
    assert_eq!(out, [x[3], x[0]]);
    let mut acc = vec![f16::ONE; 1];
    cpu::index_add(
        &mut acc,
        Dim3 {
            outer: 1,
            size: 1,
            inner: 1,
        },
        &[0, 0],
        &[f16::ONE, f16::ONE],
    )
    .unwrap();
    assert_eq!(acc, [f16::from_f32(3.0)]);
    let empty = Dim3 {
        outer: 1,
        size: 0,
        inner: 1,
    };
    assert_eq!(
        cpu::index_select::<f32>(&[], empty, &[0], &mut [0.0]),
        Err(IndexError { index: 0, bound: 0 })
    );
}

/// scatter_add and index_add into bf16 accumulate in f32 and round once: 256 + 1 + 1 gives 258, where
/// rounding after every addition would stall at 256.
#[test]
fn scatter_add_accumulates_in_f32() {
    let d = Dim3 {
        outer: 1,
        size: 1,
        inner: 1,
    };
    let mut out = vec![bf16::from_f32(256.0)];
    cpu::scatter_add(&mut out, d, &[0, 0], &[bf16::ONE, bf16::ONE], 2).unwrap();
    assert_eq!(out[0], bf16::from_f32(258.0));
    let mut out = vec![bf16::from_f32(256.0)];
    cpu::index_add(&mut out, d, &[0, 0], &[bf16::ONE, bf16::ONE]).unwrap();
    assert_eq!(out[0], bf16::from_f32(258.0));
}
