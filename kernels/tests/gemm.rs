//! `cpu::gemm` against a plain f64 triple loop: every transpose combination, odd sizes around the tile
//! sizes (MR=4, NR=16, MC=64, NC=256, KC=256), batches with broadcast operands, accumulation into C, and
//! output types different from the input type.

mod common;

use amp_kernels::cpu::{self, GemmSpec};
use amp_kernels::{bf16, f16};
use common::{Rng, TestFloat, assert_close, assert_exact, random_elems, to_elems, to_f64s};

/// The four `(a_trans, b_trans)` combinations.
const TRANSPOSES: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

/// A spec with densely packed batches.
fn spec(batch: usize, m: usize, n: usize, k: usize, a_trans: bool, b_trans: bool) -> GemmSpec {
    GemmSpec {
        batch,
        m,
        n,
        k,
        a_trans,
        b_trans,
        a_batch_stride: m * k,
        b_batch_stride: k * n,
        accumulate: false,
    }
}

/// Elements an operand needs: `batch - 1` strides plus one matrix.
fn operand_len(batch: usize, stride: usize, matrix: usize) -> usize {
    (batch - 1) * stride + matrix
}

/// The f64 product described by `spec` (plus `c0` when accumulating) and, per element, the sum of the
/// magnitudes of its terms (the scale of the rounding error a correct kernel may make).
fn reference(spec: &GemmSpec, a: &[f64], b: &[f64], c0: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let GemmSpec { batch, m, n, k, .. } = *spec;
    let mut want = vec![0.0; batch * m * n];
    let mut scale = vec![0.0; batch * m * n];
    for bi in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let (mut sum, mut mag) = (0.0, 0.0);
                for p in 0..k {
                    let av = if spec.a_trans {
                        a[bi * spec.a_batch_stride + p * m + i]
                    } else {
                        a[bi * spec.a_batch_stride + i * k + p]
                    };
                    let bv = if spec.b_trans {
                        b[bi * spec.b_batch_stride + j * k + p]
                    } else {
                        b[bi * spec.b_batch_stride + p * n + j]
                    };
                    sum += av * bv;
                    mag += (av * bv).abs();
                }
                let o = (bi * m + i) * n + j;
                if spec.accumulate {
                    sum += c0[o];
                    mag += c0[o].abs();
                }
                want[o] = sum;
                scale[o] = mag;
            }
        }
    }
    (want, scale)
}

/// Runs `spec` on random `T` inputs writing `O`, and compares with the f64 reference. Without
/// `accumulate`, C starts as NaN so any read of the old C shows up.
fn check<T: TestFloat, O: TestFloat>(spec: GemmSpec, seed: u64) {
    let mut rng = Rng::new(seed);
    let (a, af) = random_elems::<T>(
        &mut rng,
        operand_len(spec.batch, spec.a_batch_stride, spec.m * spec.k),
        1.0,
    );
    let (b, bf) = random_elems::<T>(
        &mut rng,
        operand_len(spec.batch, spec.b_batch_stride, spec.k * spec.n),
        1.0,
    );
    let c_len = spec.batch * spec.m * spec.n;
    let (mut c, c0) = if spec.accumulate {
        random_elems::<O>(&mut rng, c_len, 2.0)
    } else {
        (vec![O::from_f64(f64::NAN); c_len], vec![f64::NAN; c_len])
    };
    cpu::gemm(&spec, &a, &b, &mut c);
    let (want, scale) = reference(&spec, &af, &bf, &c0);
    let what = format!("gemm {}->{} {spec:?}", T::NAME, O::NAME);
    assert_close(&what, &to_f64s(&c), &want, |i| {
        common::tol_for::<T, O>(want[i], scale[i])
    });
}

/// Small odd shapes, including m, n or k equal to 1, for every transpose combination.
const SMALL_SHAPES: [(usize, usize, usize); 8] = [
    (1, 1, 1),
    (1, 17, 33),
    (7, 1, 5),
    (3, 5, 1),
    (17, 33, 65),
    (65, 7, 3),
    (5, 16, 4),
    (4, 3, 17),
];

/// Shapes past the tile sizes: m > MC, n > NC, k > KC, and all three at once (the parallel path).
const LARGE_SHAPES: [(usize, usize, usize); 4] =
    [(67, 33, 7), (5, 259, 9), (7, 9, 300), (70, 270, 260)];

fn small_shapes_all_transposes<E: TestFloat>() {
    for (s, &(m, n, k)) in SMALL_SHAPES.iter().enumerate() {
        for (t, &(at, bt)) in TRANSPOSES.iter().enumerate() {
            check::<E, E>(spec(1, m, n, k, at, bt), (s * 4 + t) as u64);
        }
    }
}

/// Every transpose combination on small odd shapes (m, n, k = 1 included), for every float type.
#[test]
fn small_shapes_all_transposes_all_types() {
    for_each_float!(small_shapes_all_transposes);
}

/// Shapes that cross MC, NC and KC, with every transpose combination, in f32, f64 and bf16 -> f32.
#[test]
fn large_shapes_cross_tile_boundaries() {
    for (s, &(m, n, k)) in LARGE_SHAPES.iter().enumerate() {
        for (t, &(at, bt)) in TRANSPOSES.iter().enumerate() {
            let seed = 100 + (s * 4 + t) as u64;
            check::<f32, f32>(spec(1, m, n, k, at, bt), seed);
            check::<f64, f64>(spec(1, m, n, k, at, bt), seed);
            check::<bf16, f32>(spec(1, m, n, k, at, bt), seed);
        }
    }
}

/// Batched products (batch 3), each transpose combination, with dense and with broadcast (stride 0)
/// operands, in every float type.
#[test]
fn batched_and_broadcast_operands() {
    fn run<E: TestFloat>() {
        for (t, &(at, bt)) in TRANSPOSES.iter().enumerate() {
            let (m, n, k) = (5, 17, 7);
            let dense = spec(3, m, n, k, at, bt);
            let a_shared = GemmSpec {
                a_batch_stride: 0,
                ..dense
            };
            let b_shared = GemmSpec {
                b_batch_stride: 0,
                ..dense
            };
            let both_shared = GemmSpec {
                a_batch_stride: 0,
                b_batch_stride: 0,
                ..dense
            };
            // A stride larger than one matrix: batches start at spaced offsets.
            let spaced = GemmSpec {
                a_batch_stride: m * k + 3,
                b_batch_stride: k * n + 5,
                ..dense
            };
            for (v, s) in [dense, a_shared, b_shared, both_shared, spaced]
                .into_iter()
                .enumerate()
            {
                check::<E, E>(s, 200 + (t * 5 + v) as u64);
            }
        }
    }
    for_each_float!(run);
}

/// A batch stride of 0 really reuses the operand: every batch of `C` equals the unbatched product.
#[test]
fn broadcast_batches_equal_single_product() {
    let mut rng = Rng::new(7);
    let (m, n, k, batch) = (3, 17, 33, 4);
    let (a, _) = random_elems::<f32>(&mut rng, m * k, 1.0);
    let (b, _) = random_elems::<f32>(&mut rng, batch * k * n, 1.0);
    let mut c = vec![0.0f32; batch * m * n];
    cpu::gemm(
        &GemmSpec {
            a_batch_stride: 0,
            ..spec(batch, m, n, k, false, false)
        },
        &a,
        &b,
        &mut c,
    );
    for bi in 0..batch {
        let mut single = vec![0.0f32; m * n];
        cpu::gemm(
            &spec(1, m, n, k, false, false),
            &a,
            &b[bi * k * n..(bi + 1) * k * n],
            &mut single,
        );
        assert_eq!(
            &c[bi * m * n..(bi + 1) * m * n],
            &single[..],
            "batch {bi} differs from its own product"
        );
    }
}

/// `accumulate = true` adds the product to the existing C, for every transpose combination, batched,
/// small and large, in every float type.
#[test]
fn accumulate_adds_to_existing_output() {
    fn run<E: TestFloat>() {
        for (t, &(at, bt)) in TRANSPOSES.iter().enumerate() {
            for (s, &(m, n, k)) in [(1, 1, 1), (7, 17, 33), (65, 3, 5)].iter().enumerate() {
                let acc = GemmSpec {
                    accumulate: true,
                    ..spec(2, m, n, k, at, bt)
                };
                check::<E, E>(acc, 300 + (t * 3 + s) as u64);
            }
        }
    }
    for_each_float!(run);
    let big = GemmSpec {
        accumulate: true,
        ..spec(1, 70, 270, 260, true, false)
    };
    check::<bf16, f32>(big, 399);
}

/// Output types different from the input type: bf16/f16 -> f32, f32 -> bf16/f16/f64, f64 -> bf16/f32.
#[test]
fn output_type_differs_from_input() {
    for (t, &(at, bt)) in TRANSPOSES.iter().enumerate() {
        let s = spec(2, 17, 33, 65, at, bt);
        let seed = 400 + t as u64;
        check::<bf16, f32>(s, seed);
        check::<f16, f32>(s, seed);
        check::<f32, bf16>(s, seed);
        check::<f32, f16>(s, seed);
        check::<f32, f64>(s, seed);
        check::<f64, bf16>(s, seed);
        check::<f64, f32>(s, seed);
        check::<bf16, f64>(
            GemmSpec {
                accumulate: true,
                ..s
            },
            seed,
        );
    }
}

/// bf16 inputs accumulate in f32: a row of k = 4096 (and 4099) ones times ones is exactly k in f32
/// (bf16 accumulation would stall at 256), and 4096 survives a bf16 output exactly.
#[test]
fn bf16_products_accumulate_in_f32() {
    for k in [4096, 4099] {
        let (m, n) = (3, 17);
        let a = vec![bf16::ONE; m * k];
        let b = vec![bf16::ONE; k * n];
        for (at, bt) in TRANSPOSES {
            let mut c = vec![0.0f32; m * n];
            cpu::gemm(&spec(1, m, n, k, at, bt), &a, &b, &mut c);
            assert!(
                c.iter().all(|&v| v == k as f32),
                "k = {k}: expected every entry {k}, got {:?}",
                &c[..4]
            );
        }
    }
    let (m, n, k) = (2, 3, 4096);
    let mut c = vec![bf16::ZERO; m * n];
    cpu::gemm(
        &spec(1, m, n, k, false, false),
        &vec![bf16::ONE; m * k],
        &vec![bf16::ONE; k * n],
        &mut c,
    );
    assert!(
        c.iter().all(|&v| v == bf16::from_f32(4096.0)),
        "bf16 output: {c:?}"
    );
}

/// f16 inputs accumulate in f32: 3000 ones times ones is exactly 3000 in f16 output (f16 accumulation
/// would stall at 2048).
#[test]
fn f16_products_accumulate_in_f32() {
    let (m, n, k) = (3, 5, 3000);
    let mut c = vec![f16::ZERO; m * n];
    cpu::gemm(
        &spec(1, m, n, k, false, true),
        &vec![f16::ONE; m * k],
        &vec![f16::ONE; k * n],
        &mut c,
    );
    assert!(
        c.iter().all(|&v| v == f16::from_f32(3000.0)),
        "f16 output: {c:?}"
    );
}

/// Integer-valued inputs give exact products in f32, so every element must match to the bit; this
/// catches an index mix-up that a tolerance might hide on small values.
#[test]
fn small_integers_are_exact() {
    let mut rng = Rng::new(11);
    for &(at, bt) in &TRANSPOSES {
        let (m, n, k, batch) = (9, 300, 270, 2);
        let s = spec(batch, m, n, k, at, bt);
        let af: Vec<f64> = (0..batch * m * k)
            .map(|_| rng.below(9) as f64 - 4.0)
            .collect();
        let bf: Vec<f64> = (0..batch * k * n)
            .map(|_| rng.below(9) as f64 - 4.0)
            .collect();
        let mut c = vec![0.0f32; batch * m * n];
        cpu::gemm(&s, &to_elems::<f32>(&af), &to_elems::<f32>(&bf), &mut c);
        let (want, _) = reference(&s, &af, &bf, &[]);
        assert_exact(&format!("integer gemm {s:?}"), &to_f64s(&c), &want);
    }
}

/// k = 0 gives zeros (an empty sum) without accumulate and leaves C untouched with it; m = 0 or n = 0
/// writes nothing.
#[test]
fn empty_dimensions() {
    let mut c = vec![5.0f32; 6];
    cpu::gemm::<f32, f32>(&spec(1, 2, 3, 0, false, false), &[], &[], &mut c);
    assert_eq!(c, vec![0.0; 6]);
    let mut c = vec![5.0f32; 6];
    cpu::gemm::<bf16, f32>(
        &GemmSpec {
            accumulate: true,
            ..spec(1, 2, 3, 0, true, true)
        },
        &[],
        &[],
        &mut c,
    );
    assert_eq!(c, vec![5.0; 6]);
    let mut c: Vec<f32> = vec![];
    cpu::gemm(&spec(1, 0, 3, 4, false, false), &[], &[1.0f32; 12], &mut c);
    cpu::gemm(&spec(2, 3, 0, 4, false, false), &[1.0f32; 24], &[], &mut c);
}

/// A spec whose C size overflows usize is rejected with a panic, never turned into out-of-bounds writes.
#[test]
#[should_panic(expected = "gemm: C size")]
fn overflowing_sizes_panic() {
    let n = 6_148_914_691_236_517_206; // 3·n wraps to 2 in release builds
    let spec = GemmSpec {
        batch: 1,
        m: 3,
        n,
        k: 0,
        a_trans: false,
        b_trans: false,
        a_batch_stride: 0,
        b_batch_stride: 0,
        accumulate: false,
    };
    cpu::gemm::<f32, f32>(&spec, &[], &[], &mut [7.0; 2]);
}
