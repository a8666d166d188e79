//! The portable reference GEMM: generic over the element type (f64 included), accumulating in its `Acc`
//! type, cache-blocked and parallel over row blocks. The SIMD paths are checked against it.

use super::GemmSpec;
use crate::{Accum, Elem, Float};
use rayon::prelude::*;

/// Rows of the register tile.
const MR: usize = 4;
/// Columns of the register tile.
const NR: usize = 16;
/// Most rows of an output tile.
const MC: usize = 64;
/// Columns of an output tile.
const NC: usize = 256;
/// Depth of one packed block.
const KC: usize = 256;

/// Computes the product described by `spec` (already validated), reading `T`, accumulating in `T::Acc`,
/// writing `O`.
pub(super) fn gemm<T: Float, O: Float>(spec: &GemmSpec, a: &[T], b: &[T], c: &mut [O]) {
    let GemmSpec { m, n, .. } = *spec;
    // Each task owns a block of whole rows of C (so tasks borrow disjoint slices) and walks every column
    // tile. Blocks are small enough to give both cores work even when m is modest.
    let rows = MC.min((m.div_ceil(4)).div_ceil(MR) * MR).max(MR);
    let blocks_per_batch = m.div_ceil(rows);
    let run = |(task, block): (usize, &mut [O])| {
        let (bi, ic) = (task / blocks_per_batch, task % blocks_per_batch * rows);
        let a = &a[bi * spec.a_batch_stride..];
        let b = &b[bi * spec.b_batch_stride..];
        let mc = block.len() / n;
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            let tile = compute_tile::<T>(spec, a, b, ic, jc, mc, nc);
            let nc_pad = nc.div_ceil(NR) * NR;
            for i in 0..mc {
                for (j, out) in block[i * n + jc..][..nc].iter_mut().enumerate() {
                    let v = tile[i * nc_pad + j];
                    let v = if spec.accumulate {
                        out.to_acc().cast::<T::Acc>() + v
                    } else {
                        v
                    };
                    *out = v.cast::<O>();
                }
            }
        }
    };
    // Row blocks never straddle two batches: each batch's m rows split into `blocks_per_batch` blocks.
    let blocks = c
        .chunks_mut(m * n)
        .flat_map(|batch_c| batch_c.chunks_mut(rows * n));
    if spec.flops() < 2.0 * 64.0 * 64.0 * 64.0 {
        blocks.enumerate().for_each(run);
    } else {
        let blocks: Vec<&mut [O]> = blocks.collect();
        blocks.into_par_iter().enumerate().for_each(run);
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
