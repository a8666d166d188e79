//! The SIMD GEMM: a blocked driver over register-tile microkernels (AVX-512 and AVX2 FMA on f32, AVX512-BF16
//! `vdpbf16ps` on bf16 pairs).
//!
//! Blocking: each parallel task owns an `MC × NC` block of C (as row segments, so tasks borrow disjoint
//! slices), loops over `KC`-deep slices of the contraction, packs A and B into per-thread buffers (padded to
//! whole register tiles, converting or rounding the source elements to the compute type on the way),
//! runs the microkernel over every `MR × NR` tile of the block into an f32 accumulator tile, and finally
//! writes (or adds) the block to C in C's element type.

use super::GemmSpec;
use crate::cpu::isa::Isa;
use crate::{DType, Elem, Float};
use half::{bf16, f16};
use rayon::prelude::*;
use std::cell::RefCell;

/// Rows of an output block (a multiple of every microkernel's MR).
const MC: usize = 96;
/// Columns of an output block (a multiple of every microkernel's NR).
const NC: usize = 256;
/// Contraction depth per packed slice, in k values (a multiple of 2 for bf16 pairs).
const KC: usize = 256;

/// Per-thread packing and accumulation buffers, reused across calls.
#[derive(Default)]
struct Scratch {
    a: Vec<u32>,
    b: Vec<u32>,
    tile: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Grows `v` to at least `n` elements (never shrinks, so steady-state calls do not allocate).
fn reserve(v: &mut Vec<u32>, n: usize) -> &mut [u32] {
    if v.len() < n {
        v.resize(n, 0);
    }
    &mut v[..n]
}

/// A register-tile microkernel and how operands are packed for it.
#[derive(Clone, Copy, Debug)]
enum Kernel {
    /// f32 FMA, 12 × 32 tile.
    Avx512F32,
    /// f32 FMA, 6 × 16 tile.
    Avx2F32,
    /// bf16 pair dot products into f32, 12 × 32 tile.
    Avx512Bf16,
}

impl Kernel {
    fn tile(self) -> (usize, usize) {
        match self {
            Kernel::Avx512F32 | Kernel::Avx512Bf16 => (12, 32),
            Kernel::Avx2F32 => (6, 16),
        }
    }

    /// k values per packed 32-bit element.
    fn k_per_word(self) -> usize {
        match self {
            Kernel::Avx512Bf16 => 2,
            _ => 1,
        }
    }
}

/// Picks the microkernel for a compute type and ISA level.
fn kernel_for(compute: DType, level: Isa) -> Kernel {
    match (compute, level) {
        (DType::BF16, l) if l >= Isa::Avx512Bf16 => Kernel::Avx512Bf16,
        (_, l) if l >= Isa::Avx512 => Kernel::Avx512F32,
        _ => Kernel::Avx2F32,
    }
}

/// Converts a source element to what the kernel multiplies: its f32 value, rounded first to `round_to`
/// when the product runs in a narrower type than the element (an f32 activation meeting an f16 weight).
#[inline(always)]
fn to_compute_f32<T: Elem>(v: T, round_to: DType) -> f32 {
    let x = v.to_f32();
    match round_to {
        DType::F16 if T::DTYPE == DType::F32 => f16::from_f32(x).to_f32(),
        DType::BF16 if T::DTYPE == DType::F32 => bf16::from_f32(x).to_f32(),
        _ => x,
    }
}

/// The bf16 bits of a source element (rounded to nearest even from f32, as a cast would).
#[inline(always)]
fn to_bf16_bits<T: Elem>(v: T) -> u16 {
    bf16::from_f32(v.to_f32()).to_bits()
}

/// A logical matrix `M(row, depth) = data[row·row_stride + depth·depth_stride]` to pack from: A as
/// (m rows, k depth), B as (n rows, k depth). One of the strides is 1 for every operand layout.
#[derive(Clone, Copy)]
struct Source<'a, T> {
    data: &'a [T],
    row_stride: usize,
    depth_stride: usize,
}

impl<T: Elem> Source<'_, T> {
    #[inline(always)]
    fn at(&self, row: usize, depth: usize) -> T {
        self.data[row * self.row_stride + depth * self.depth_stride]
    }
}

/// Packs rows `r0..r0+rows` × depth `d0..d0+depth` into panels of `pr` rows: panel `q`, step `s` holds the
/// `pr` words of rows `q·pr..` at depth step `s` (one f32, or a pair of bf16 for `k_per_word` 2). Rows
/// and depth past the matrix are zero, so microkernels always see whole tiles.
#[allow(clippy::too_many_arguments)]
fn pack<T: Elem>(
    dst: &mut [u32],
    pr: usize,
    per: usize,
    round_to: DType,
    src: Source<T>,
    r0: usize,
    rows: usize,
    d0: usize,
    depth: usize,
) {
    let steps = depth.div_ceil(per);
    let panels = rows.div_ceil(pr);
    dst.fill(0);
    for q in 0..panels {
        let panel = &mut dst[q * pr * steps..][..pr * steps];
        let live = pr.min(rows - q * pr);
        if per == 1 {
            if src.depth_stride == 1 {
                // Rows are contiguous along depth: read each row's run, scatter with stride `pr`.
                for r in 0..live {
                    let start = (r0 + q * pr + r) * src.row_stride + d0;
                    for (s, v) in src.data[start..start + depth].iter().enumerate() {
                        panel[s * pr + r] = to_compute_f32(*v, round_to).to_bits();
                    }
                }
            } else {
                // Depth steps are contiguous along rows: copy runs of `live` words.
                for s in 0..depth {
                    let start = (d0 + s) * src.depth_stride + r0 + q * pr;
                    for (r, v) in src.data[start..start + live].iter().enumerate() {
                        panel[s * pr + r] = to_compute_f32(*v, round_to).to_bits();
                    }
                }
            }
        } else {
            for r in 0..live {
                let row = r0 + q * pr + r;
                for s in 0..steps {
                    let k0 = d0 + 2 * s;
                    let lo = to_bf16_bits(src.at(row, k0)) as u32;
                    let hi = if 2 * s + 1 < depth {
                        to_bf16_bits(src.at(row, k0 + 1)) as u32
                    } else {
                        0
                    };
                    panel[s * pr + r] = lo | hi << 16;
                }
            }
        }
    }
}

/// The fast GEMM (spec validated, k > 0, C non-empty). Allocates nothing once the per-thread buffers have
/// grown to the sizes a workload needs.
pub(super) fn gemm<TA: Float, TB: Float, O: Float>(
    spec: &GemmSpec,
    a: &[TA],
    b: &[TB],
    c: &mut [O],
    compute: DType,
    level: Isa,
) {
    let kernel = kernel_for(compute, level);
    let GemmSpec { m, n, k, .. } = *spec;
    // A task owns a block of whole rows of one batch's C: enough blocks to keep every thread busy, each a
    // multiple of the register tile's height.
    let (mr, _) = kernel.tile();
    let wanted = 2 * rayon::current_num_threads();
    let rows_per_task = m
        .div_ceil(wanted.div_ceil(spec.batch).max(1))
        .div_ceil(mr)
        .max(1)
        * mr;
    let run_block = |bi: usize, block_index: usize, block: &mut [O]| {
        let (ast, bst) = (spec.a_batch_stride, spec.b_batch_stride);
        let av = if spec.a_trans {
            Source {
                data: &a[bi * ast..],
                row_stride: 1,
                depth_stride: m,
            }
        } else {
            Source {
                data: &a[bi * ast..],
                row_stride: k,
                depth_stride: 1,
            }
        };
        let bv = if spec.b_trans {
            Source {
                data: &b[bi * bst..],
                row_stride: k,
                depth_stride: 1,
            }
        } else {
            Source {
                data: &b[bi * bst..],
                row_stride: 1,
                depth_stride: n,
            }
        };
        let ic = block_index * rows_per_task;
        SCRATCH.with(|s| {
            task(
                &mut s.borrow_mut(),
                kernel,
                compute,
                spec.accumulate,
                av,
                bv,
                (m, n, k),
                ic,
                block,
            )
        });
    };
    if spec.flops() < 2.0 * 48.0 * 48.0 * 48.0 {
        for (bi, batch_c) in c.chunks_mut(m * n).enumerate() {
            for (i, block) in batch_c.chunks_mut(rows_per_task * n).enumerate() {
                run_block(bi, i, block);
            }
        }
    } else {
        c.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(bi, batch_c)| {
                batch_c
                    .par_chunks_mut(rows_per_task * n)
                    .enumerate()
                    .for_each(|(i, block)| run_block(bi, i, block));
            });
    }
}

/// Computes rows `ic..` of C held in `block` (whole rows): for each `NC`-wide column block, packs that
/// block of B once for all of k, then walks the rows in `MC`-row blocks, packing each `MC × KC` slice of A
/// and accumulating in an f32 tile before writing it to C.
#[allow(clippy::too_many_arguments)]
fn task<TA: Float, TB: Float, O: Float>(
    s: &mut Scratch,
    kernel: Kernel,
    compute: DType,
    accumulate: bool,
    a: Source<TA>,
    b: Source<TB>,
    (_m, n, k): (usize, usize, usize),
    ic: usize,
    block: &mut [O],
) {
    let (mr, nr) = kernel.tile();
    let per = kernel.k_per_word();
    let rows = block.len() / n;
    let slice_words = |nc_pad: usize, kc: usize| nc_pad * kc.div_ceil(per);
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        let nc_pad = nc.div_ceil(nr) * nr;
        // B for every KC slice of k, slice after slice.
        let b_total: usize = (0..k)
            .step_by(KC)
            .map(|pc| slice_words(nc_pad, KC.min(k - pc)))
            .sum();
        let bp_all = reserve(&mut s.b, b_total);
        let mut offset = 0;
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            let len = slice_words(nc_pad, kc);
            pack(
                &mut bp_all[offset..offset + len],
                nr,
                per,
                compute,
                b,
                jc,
                nc,
                pc,
                kc,
            );
            offset += len;
        }
        for i0 in (0..rows).step_by(MC) {
            let mc = MC.min(rows - i0);
            let mc_pad = mc.div_ceil(mr) * mr;
            if s.tile.len() < mc_pad * nc_pad {
                s.tile.resize(mc_pad * nc_pad, 0.0);
            }
            s.tile[..mc_pad * nc_pad].fill(0.0);
            let mut offset = 0;
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                let steps = kc.div_ceil(per);
                let bp = &s.b[offset..offset + nc_pad * steps];
                offset += nc_pad * steps;
                let ap = reserve(&mut s.a, mc_pad * steps);
                pack(ap, mr, per, compute, a, ic + i0, mc, pc, kc);
                let tile = &mut s.tile[..mc_pad * nc_pad];
                for jr in 0..nc_pad / nr {
                    let bpanel = &bp[jr * nr * steps..][..nr * steps];
                    for ir in 0..mc_pad / mr {
                        let apanel = &ap[ir * mr * steps..][..mr * steps];
                        microkernel(
                            kernel,
                            steps,
                            apanel,
                            bpanel,
                            &mut tile[ir * mr * nc_pad + jr * nr..],
                            nc_pad,
                        );
                    }
                }
            }
            for i in 0..mc {
                let src = &s.tile[i * nc_pad..][..nc];
                let dst = &mut block[(i0 + i) * n + jc..][..nc];
                for (out, &v) in dst.iter_mut().zip(src) {
                    *out = if accumulate {
                        O::from_f32(out.to_f32() + v)
                    } else {
                        O::from_f32(v)
                    };
                }
            }
        }
    }
}

/// Runs the microkernel on full, padded panels: `c[r·ldc + j] += Σ_s a[s·MR + r] · b[s·NR + j]`.
#[inline]
fn microkernel(kernel: Kernel, steps: usize, a: &[u32], b: &[u32], c: &mut [f32], ldc: usize) {
    let (mr, nr) = kernel.tile();
    assert!(a.len() >= steps * mr && b.len() >= steps * nr && c.len() >= (mr - 1) * ldc + nr);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the kernel was chosen from the detected ISA level (`kernel_for` with `isa()`), and the
    // assertion above guarantees every pointer access stays inside the slices.
    unsafe {
        match kernel {
            Kernel::Avx512F32 => x86::f32_12x32(
                steps,
                a.as_ptr().cast(),
                b.as_ptr().cast(),
                c.as_mut_ptr(),
                ldc,
            ),
            Kernel::Avx2F32 => x86::f32_6x16(
                steps,
                a.as_ptr().cast(),
                b.as_ptr().cast(),
                c.as_mut_ptr(),
                ldc,
            ),
            Kernel::Avx512Bf16 => {
                x86::bf16_12x32(steps, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc)
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("the fast GEMM runs only on x86_64");
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 12 × 32 f32 tile with AVX-512 FMA: 24 accumulators, two B vectors per step, A broadcast per row.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn f32_12x32(steps: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
        let mut acc = [[_mm512_setzero_ps(); 2]; 12];
        for s in 0..steps {
            let (b0, b1) = unsafe {
                (
                    _mm512_loadu_ps(b.add(s * 32)),
                    _mm512_loadu_ps(b.add(s * 32 + 16)),
                )
            };
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(unsafe { *a.add(s * 12 + r) });
                acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            unsafe {
                let row = c.add(r * ldc);
                _mm512_storeu_ps(row, _mm512_add_ps(_mm512_loadu_ps(row), acc[0]));
                _mm512_storeu_ps(
                    row.add(16),
                    _mm512_add_ps(_mm512_loadu_ps(row.add(16)), acc[1]),
                );
            }
        }
    }

    /// 6 × 16 f32 tile with AVX2 FMA: 12 accumulators.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn f32_6x16(steps: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
        let mut acc = [[_mm256_setzero_ps(); 2]; 6];
        for s in 0..steps {
            let (b0, b1) = unsafe {
                (
                    _mm256_loadu_ps(b.add(s * 16)),
                    _mm256_loadu_ps(b.add(s * 16 + 8)),
                )
            };
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_ps(unsafe { *a.add(s * 6 + r) });
                acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            unsafe {
                let row = c.add(r * ldc);
                _mm256_storeu_ps(row, _mm256_add_ps(_mm256_loadu_ps(row), acc[0]));
                _mm256_storeu_ps(
                    row.add(8),
                    _mm256_add_ps(_mm256_loadu_ps(row.add(8)), acc[1]),
                );
            }
        }
    }

    /// 12 × 32 tile from bf16 pairs with AVX512-BF16: each `vdpbf16ps` adds two products per lane into
    /// f32. A words hold (a[r, 2s], a[r, 2s+1]); B words hold (b[2s, j], b[2s+1, j]).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn bf16_12x32(steps: usize, a: *const u32, b: *const u32, c: *mut f32, ldc: usize) {
        let mut acc = [[_mm512_setzero_ps(); 2]; 12];
        for s in 0..steps {
            let (b0, b1): (__m512bh, __m512bh) = unsafe {
                (
                    std::mem::transmute(_mm512_loadu_si512(b.add(s * 32).cast())),
                    std::mem::transmute(_mm512_loadu_si512(b.add(s * 32 + 16).cast())),
                )
            };
            for (r, acc) in acc.iter_mut().enumerate() {
                let av: __m512bh =
                    unsafe { std::mem::transmute(_mm512_set1_epi32(*a.add(s * 12 + r) as i32)) };
                acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            unsafe {
                let row = c.add(r * ldc);
                _mm512_storeu_ps(row, _mm512_add_ps(_mm512_loadu_ps(row), acc[0]));
                _mm512_storeu_ps(
                    row.add(16),
                    _mm512_add_ps(_mm512_loadu_ps(row.add(16)), acc[1]),
                );
            }
        }
    }
}
