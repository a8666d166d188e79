//! Every GEMM path this CPU offers (AVX-512 and AVX2 FMA, AVX512-BF16, the portable reference) against
//! an f64 product of the same rounded inputs: odd, tall, wide, tiny and deep shapes, both transposition
//! flags, batches with a broadcast operand, accumulation, and mixed operand types (an f32 activation with a
//! bf16 or f16 weight, rounded while packed). Levels are switched in-process with `set_isa_limit`.

mod common;

use amp_kernels::cpu::isa::{self, AmxMode, Isa};
use amp_kernels::cpu::{GemmSpec, gemm_mixed};
use amp_kernels::{Elem, Float, bf16, f16};
use common::{Rng, assert_close, random_elems, to_f64s};
use std::sync::Mutex;

/// The ISA cap is process-wide: tests that change it take turns.
static ISA_LOCK: Mutex<()> = Mutex::new(());

/// Shapes (m, n, k) around every tile size: MR 6/12, NR 16/32, MC 96, NC 256, KC 256 (512 for pairs,
/// 1024 for the AVX-512 f32 kernel); k = 1024 also packs an f32 A that other depths read in place.
const SHAPES: [(usize, usize, usize); 14] = [
    (1, 1, 1),
    (2, 7, 15),
    (16, 17, 31),
    (33, 16, 2),
    (7, 1000, 17),
    (1000, 7, 33),
    (17, 33, 1000),
    (100, 257, 31),
    (15, 31, 513),
    (97, 300, 7),
    (12, 32, 64),
    (31, 33, 100),
    (1, 257, 100),
    (13, 40, 1024),
];

/// Restores the ISA cap and the AMX mode when a test ends, even by a panic.
struct Restore {
    isa: Isa,
    amx: AmxMode,
}

impl Drop for Restore {
    fn drop(&mut self) {
        isa::set_isa_limit(self.isa);
        isa::set_amx_mode(self.amx);
    }
}

/// Takes the lock on the process-wide ISA cap and AMX mode; both are restored when the guard drops.
fn pin_isa() -> (std::sync::MutexGuard<'static, ()>, Restore) {
    let lock = ISA_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let restore = Restore {
        isa: isa::set_isa_limit(Isa::Amx),
        amx: isa::amx_mode(),
    };
    (lock, restore)
}

/// Runs `f` once per available ISA level, with the cap set. The AMX tile kernel is opt-in like in normal
/// use: with `AMP_AMX=1` on a CPU with AMX the AMX level runs the real tiles; otherwise bf16 products run
/// on `vdpbf16ps` (`amx_kernel_with_emulated_tiles` tests the tile kernel on any machine).
fn for_each_level(mut f: impl FnMut(Isa)) {
    let (_lock, restore) = pin_isa();
    let amx = if restore.amx == AmxMode::Hardware {
        AmxMode::Hardware
    } else {
        AmxMode::Off
    };
    isa::set_amx_mode(amx);
    for level in Isa::ALL.into_iter().filter(|&l| l <= isa::detected()) {
        isa::set_isa_limit(level);
        f(level);
    }
}

/// The value an operand of type `T` contributes when the product runs in `compute` (an f32 activation
/// meeting a bf16 weight is rounded to bf16 first).
fn as_computed<T: Elem>(v: f64, compute: &str) -> f64 {
    match (T::DTYPE.name(), compute) {
        // The crate's own single-rounding conversion (`half`'s `from_f64` rounds twice).
        ("f32", "bf16") => <bf16 as Elem>::from_f64(v).to_f64(),
        ("f32", "f16") => <f16 as Elem>::from_f64(v).to_f64(),
        _ => v,
    }
}

/// Checks `gemm_mixed::<TA, TB, O>` on every shape and flag combination at the current level.
fn check<TA: Float, TB: Float, O: Float>(level: Isa, compute: &str, out_tol: f64) {
    check_on::<TA, TB, O>(
        &SHAPES,
        &[(1, false, false), (3, true, true)],
        level,
        compute,
        out_tol,
    );
}

/// Checks `gemm_mixed::<TA, TB, O>` on `shapes`, both transposition flags, and each (batch, B shared
/// by the batch, accumulate) variant.
fn check_on<TA: Float, TB: Float, O: Float>(
    shapes: &[(usize, usize, usize)],
    variants: &[(usize, bool, bool)],
    level: Isa,
    compute: &str,
    out_tol: f64,
) {
    let mut rng = Rng::new(17);
    for &(m, n, k) in shapes {
        for (a_trans, b_trans) in [(false, false), (false, true), (true, false), (true, true)] {
            for &(batch, broadcast_b, accumulate) in variants {
                let spec = GemmSpec {
                    batch,
                    m,
                    n,
                    k,
                    a_trans,
                    b_trans,
                    a_batch_stride: m * k,
                    b_batch_stride: if broadcast_b { 0 } else { k * n },
                    accumulate,
                };
                let (a, af) = random_elems::<TA>(&mut rng, batch * m * k, 1.0);
                let b_len = if broadcast_b { k * n } else { batch * k * n };
                let (b, bf) = random_elems::<TB>(&mut rng, b_len, 1.0);
                let (c0, c0f) = random_elems::<O>(&mut rng, batch * m * n, 1.0);
                let mut c = if accumulate {
                    c0.clone()
                } else {
                    vec![O::default(); batch * m * n]
                };
                gemm_mixed(&spec, &a, &b, &mut c);
                let (mut want, mut scale) = (vec![0.0; c.len()], vec![0.0; c.len()]);
                for bi in 0..batch {
                    for i in 0..m {
                        for j in 0..n {
                            let mut sum = if accumulate {
                                c0f[(bi * m + i) * n + j]
                            } else {
                                0.0
                            };
                            let mut mag = sum.abs();
                            for p in 0..k {
                                let av =
                                    af[bi * m * k + if a_trans { p * m + i } else { i * k + p }];
                                let bo = if broadcast_b { 0 } else { bi * k * n };
                                let bv = bf[bo + if b_trans { j * k + p } else { p * n + j }];
                                let t =
                                    as_computed::<TA>(av, compute) * as_computed::<TB>(bv, compute);
                                sum += t;
                                mag += t.abs();
                            }
                            want[(bi * m + i) * n + j] = sum;
                            scale[(bi * m + i) * n + j] = mag;
                        }
                    }
                }
                let what = format!(
                    "{:?} {}×{} -> {} {m}×{n}×{k} trans ({a_trans},{b_trans}) batch {batch} acc {accumulate}",
                    level,
                    TA::DTYPE,
                    TB::DTYPE,
                    O::DTYPE
                );
                // f32 accumulation over k terms, then one rounding to the output type.
                let got = to_f64s(&c);
                assert_close(&what, &got, &want, |i| {
                    2e-6 * scale[i] + out_tol * want[i].abs()
                });
            }
        }
    }
}

/// f32, f16 and bf16 operands with f32 output, on every level.
#[test]
fn same_type_products_on_every_path() {
    for_each_level(|level| {
        check::<f32, f32, f32>(level, "f32", 0.0);
        check::<f16, f16, f32>(level, "f16", 0.0);
        check::<bf16, bf16, f32>(level, "bf16", 0.0);
    });
}

/// Every row count from 1 to 25: whole tiles, and each number of rows an edge tile can have (1 to 11
/// of the AVX-512 kernel's 12, 1 to 5 of the AVX2 kernel's 6), under whole and partial column panels,
/// with B packed and read in place.
#[test]
fn every_edge_tile_height_on_every_path() {
    let shapes: Vec<_> = (1..=25).map(|m| (m, 69, 37)).collect();
    for_each_level(|level| {
        check_on::<f32, f32, f32>(
            &shapes,
            &[(1, false, false), (2, false, true)],
            level,
            "f32",
            0.0,
        );
        check_on::<f16, f16, f32>(&shapes, &[(1, false, true)], level, "f16", 0.0);
    });
}

/// Shapes big enough to run in parallel (see `parallel_products_on_every_path`).
const PARALLEL_SHAPES: [(usize, usize, usize); 7] = [
    (130, 150, 300),
    (300, 64, 260),
    (8, 20, 16000),
    (24, 400, 600),
    (40, 70, 2100),
    (200, 600, 40),
    (97, 64, 2048),
];

/// Products big enough to run in parallel: many row blocks sharing one packed B (300 rows), few rows
/// whose panels are split between threads (24 and 130 rows), a row block whose panels two threads share
/// (200 rows, 600 columns, B packed because its rows are more than 2 KiB apart), a grid of one tile ×
/// one partial panel (8 × 20) shared by all threads over 16 depth slices, several depth slices (k = 600
/// in bf16 pairs and in f32 at 256 steps, k = 2100 in f32 at 1024 steps), an edge tile of one row in the
/// second of two row blocks with an f32 A packed over two slices (97 × 64 × 2048: rows 8 KiB apart are
/// not read in place), and batches spread over threads.
#[test]
fn parallel_products_on_every_path() {
    for_each_level(|level| {
        let variants = [(1, false, false), (2, false, true)];
        check_on::<f32, f32, f32>(&PARALLEL_SHAPES, &variants, level, "f32", 0.0);
        let single = [(1, false, false)];
        check_on::<f32, bf16, bf16>(&PARALLEL_SHAPES, &single, level, "bf16", 2f64.powi(-8));
    });
}

/// The AMX tile kernel with its five tile instructions carried out in software: the packing (A row by
/// row, steps padded to whole tile rows), tile addressing and blocking around the instructions, on every
/// shape, on any machine.
#[test]
fn amx_kernel_with_emulated_tiles() {
    let (_lock, _restore) = pin_isa();
    isa::set_amx_mode(AmxMode::Emulated);
    let level = isa::isa();
    let variants = [(1, false, false), (3, true, true)];
    check_on::<bf16, bf16, f32>(&SHAPES, &variants, level, "bf16", 0.0);
    check_on::<f32, bf16, bf16>(&SHAPES, &variants, level, "bf16", 2f64.powi(-8));
    check_on::<bf16, f32, f32>(&PARALLEL_SHAPES, &[(1, false, false)], level, "bf16", 0.0);
}

/// Products run from inside a parallel loop of a pool with more threads than cores (nested parallelism,
/// work-stealing between products, threads waiting on panels another thread is packing, more chunks
/// than tiles), at every level.
#[test]
fn products_inside_an_oversubscribed_pool() {
    use rayon::prelude::*;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(12)
        .build()
        .expect("a thread pool");
    for_each_level(|level| {
        pool.install(|| {
            (0..8).into_par_iter().for_each(|i| {
                let shape = [PARALLEL_SHAPES[i % 4]];
                if i % 2 == 0 {
                    check_on::<f32, f32, f32>(&shape, &[(1, false, false)], level, "f32", 0.0);
                } else {
                    let variants = [(2, false, true)];
                    check_on::<f32, bf16, f32>(&shape, &variants, level, "bf16", 0.0);
                }
            })
        });
    });
}

/// Low-precision outputs are the f32 result rounded once.
#[test]
fn low_precision_outputs_on_every_path() {
    for_each_level(|level| {
        check::<bf16, bf16, bf16>(level, "bf16", 2f64.powi(-8));
        check::<f16, f16, f16>(level, "f16", 2f64.powi(-11));
    });
}

/// An f32 activation times a bf16 or f16 weight equals casting the activation first (the cast is fused
/// into packing), on every level.
#[test]
fn mixed_operands_round_while_packing() {
    for_each_level(|level| {
        check::<f32, bf16, f32>(level, "bf16", 0.0);
        check::<bf16, f32, f32>(level, "bf16", 0.0);
        check::<f32, f16, f32>(level, "f16", 0.0);
    });
}

/// The fused rounding is the cast's rounding: bit-identical to casting first, then multiplying.
#[test]
fn fused_cast_matches_an_explicit_cast_bit_for_bit() {
    for_each_level(|_| {
        let mut rng = Rng::new(5);
        let (m, n, k) = (37, 45, 300);
        let (a, _) = random_elems::<f32>(&mut rng, m * k, 1.0);
        let (w, _) = random_elems::<bf16>(&mut rng, n * k, 1.0);
        let spec = GemmSpec {
            b_trans: true,
            b_batch_stride: n * k,
            ..GemmSpec::new(m, n, k)
        };
        let mut fused = vec![0.0f32; m * n];
        gemm_mixed(&spec, &a, &w, &mut fused);
        let a_low: Vec<bf16> = a.iter().map(|&v| bf16::from_f32(v)).collect();
        let mut explicit = vec![0.0f32; m * n];
        gemm_mixed(&spec, &a_low, &w, &mut explicit);
        assert_eq!(fused, explicit);
    });
}

/// k = 4096 ones in bf16: exact 4096 on every path (f32 accumulation).
#[test]
fn long_bf16_sums_stay_exact() {
    for_each_level(|level| {
        let k = 4096;
        let ones = vec![bf16::ONE; 2 * k];
        let mut c = vec![0.0f32; 4];
        gemm_mixed(&GemmSpec::new(2, 2, k), &ones, &ones, &mut c);
        assert_eq!(c, vec![4096.0; 4], "{level:?}");
    });
}
