//! Matrix multiplication with accumulation in the `Acc` type: cache-blocked, packed, parallel over output
//! tiles. Transposed operands are read through flags, never copied first.

use crate::{Accum, Elem, Float};
use rayon::prelude::*;

/// Shape and layout of a (batched) product `C[b] = A[b] · B[b]` (or `C[b] += ...` with `accumulate`).
///
/// `A` is logically `m × k`, stored `m × k` row-major, or `k × m` when `a_trans` (so `A` is the stored
/// matrix transposed). `B` is logically `k × n`, stored `k × n`, or `n × k` when `b_trans`. `C` is `m × n`
/// per batch, batches consecutive. A batch stride of 0 broadcasts that operand over the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmSpec {
    /// Number of independent products.
    pub batch: usize,
    /// Rows of `A` and `C`.
    pub m: usize,
    /// Columns of `B` and `C`.
    pub n: usize,
    /// The contracted dimension.
    pub k: usize,
    /// `A` is stored transposed (`k × m`).
    pub a_trans: bool,
    /// `B` is stored transposed (`n × k`).
    pub b_trans: bool,
    /// Elements between consecutive `A` matrices (0: the same `A` for every batch).
    pub a_batch_stride: usize,
    /// Elements between consecutive `B` matrices (0: the same `B` for every batch).
    pub b_batch_stride: usize,
    /// Add the product to `C` instead of overwriting it.
    pub accumulate: bool,
}

impl GemmSpec {
    /// A single, untransposed `m × k · k × n` product.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        GemmSpec {
            batch: 1,
            m,
            n,
            k,
            a_trans: false,
            b_trans: false,
            a_batch_stride: m * k,
            b_batch_stride: k * n,
            accumulate: false,
        }
    }

    /// Floating-point operations the product performs (`2·batch·m·n·k`).
    pub fn flops(&self) -> f64 {
        2.0 * self.batch as f64 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

/// Rows of the register tile.
const MR: usize = 4;
/// Columns of the register tile.
const NR: usize = 16;
/// Rows of an output tile (one parallel task).
const MC: usize = 64;
/// Columns of an output tile.
const NC: usize = 256;
/// Depth of one packed block.
const KC: usize = 256;

/// Computes the product described by `spec`, reading `T`, accumulating in `T::Acc`, writing `O`.
pub fn gemm<T: Float, O: Float>(spec: &GemmSpec, a: &[T], b: &[T], c: &mut [O]) {
    let GemmSpec { batch, m, n, k, .. } = *spec;
    assert_eq!(
        c.len(),
        batch * m * n,
        "gemm: C has {} elements, expected {batch}×{m}×{n}",
        c.len()
    );
    if batch > 0 {
        let (a_need, b_need) = (
            (batch - 1) * spec.a_batch_stride + m * k,
            (batch - 1) * spec.b_batch_stride + k * n,
        );
        assert!(
            a.len() >= a_need && b.len() >= b_need,
            "gemm: operands shorter than the spec requires"
        );
    }
    if c.is_empty() {
        return;
    }
    let (row_tiles, col_tiles) = (m.div_ceil(MC), n.div_ceil(NC));
    // Each task owns one MC×NC tile of C. Tiles of C are disjoint, so hand each task its rows of C through
    // a raw pointer wrapper; the index arithmetic below never lets two tasks touch the same element.
    let c_ptr = SendPtr(c.as_mut_ptr());
    let tasks = batch * row_tiles * col_tiles;
    let run = |task: usize| {
        let bi = task / (row_tiles * col_tiles);
        let ic = (task / col_tiles) % row_tiles * MC;
        let jc = task % col_tiles * NC;
        let a = &a[bi * spec.a_batch_stride..];
        let b = &b[bi * spec.b_batch_stride..];
        let (mc, nc) = (MC.min(m - ic), NC.min(n - jc));
        let tile = compute_tile::<T>(spec, a, b, ic, jc, mc, nc);
        let nc_pad = nc.div_ceil(NR) * NR;
        for i in 0..mc {
            // SAFETY: row `ic + i`, columns `jc..jc + nc` of batch `bi` belong to this task alone.
            let row = unsafe {
                std::slice::from_raw_parts_mut(c_ptr.get().add(bi * m * n + (ic + i) * n + jc), nc)
            };
            for (j, out) in row.iter_mut().enumerate() {
                let v = tile[i * nc_pad + j];
                let v = if spec.accumulate {
                    out.to_acc().cast::<T::Acc>() + v
                } else {
                    v
                };
                *out = v.cast::<O>();
            }
        }
    };
    if spec.flops() < 2.0 * 64.0 * 64.0 * 64.0 || tasks == 1 {
        (0..tasks).for_each(run);
    } else {
        (0..tasks).into_par_iter().for_each(run);
    }
}

#[derive(Clone, Copy)]
struct SendPtr<O>(*mut O);
// SAFETY: tasks write disjoint regions (see `gemm`).
unsafe impl<O> Send for SendPtr<O> {}
unsafe impl<O> Sync for SendPtr<O> {}
impl<O> SendPtr<O> {
    fn get(self) -> *mut O {
        self.0
    }
}

/// One output tile `C[ic..ic+mc, jc..jc+nc]` in the accumulation type, padded to `MR`/`NR` multiples.
fn compute_tile<T: Float>(
    spec: &GemmSpec,
    a: &[T],
    b: &[T],
    ic: usize,
    jc: usize,
    mc: usize,
    nc: usize,
) -> Vec<T::Acc> {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let (mc_pad, nc_pad) = (mc.div_ceil(MR) * MR, nc.div_ceil(NR) * NR);
    let mut tile = vec![T::Acc::ZERO; mc_pad * nc_pad];
    let mut apack = vec![T::Acc::ZERO; mc_pad * KC];
    let mut bpack = vec![T::Acc::ZERO; KC * nc_pad];
    let a_at = |i: usize, p: usize| {
        if spec.a_trans {
            a[p * m + i]
        } else {
            a[i * k + p]
        }
    };
    let b_at = |p: usize, j: usize| {
        if spec.b_trans {
            b[j * k + p]
        } else {
            b[p * n + j]
        }
    };
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        // A panels: MR rows interleaved per k step; rows past `mc` stay zero.
        for (panel, chunk) in apack.chunks_exact_mut(MR * KC).enumerate() {
            for p in 0..kc {
                for r in 0..MR {
                    let i = panel * MR + r;
                    chunk[p * MR + r] = if i < mc {
                        a_at(ic + i, pc + p).to_acc()
                    } else {
                        T::Acc::ZERO
                    };
                }
            }
        }
        // B panels: NR columns per k step; columns past `nc` stay zero.
        for (panel, chunk) in bpack.chunks_exact_mut(NR * KC).enumerate() {
            for p in 0..kc {
                for cix in 0..NR {
                    let j = panel * NR + cix;
                    chunk[p * NR + cix] = if j < nc {
                        b_at(pc + p, jc + j).to_acc()
                    } else {
                        T::Acc::ZERO
                    };
                }
            }
        }
        for jr in 0..nc_pad / NR {
            let bp = &bpack[jr * NR * KC..][..kc * NR];
            for ir in 0..mc_pad / MR {
                let ap = &apack[ir * MR * KC..][..kc * MR];
                microkernel(ap, bp, &mut tile[ir * MR * nc_pad + jr * NR..], nc_pad);
            }
        }
    }
    tile
}

/// `tile[r][c] += Σ_p a[p][r] · b[p][c]` for an `MR × NR` register block.
#[inline(always)]
fn microkernel<A: Accum>(a: &[A], b: &[A], tile: &mut [A], ld: usize) {
    let mut acc = [[A::ZERO; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for r in 0..MR {
            let av = ap[r];
            for cix in 0..NR {
                acc[r][cix] += av * bp[cix];
            }
        }
    }
    for r in 0..MR {
        for cix in 0..NR {
            tile[r * ld + cix] += acc[r][cix];
        }
    }
}
