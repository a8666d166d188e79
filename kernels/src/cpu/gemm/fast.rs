//! The SIMD GEMM: a blocked driver over register-tile microkernels (AVX-512 and AVX2 FMA on f32, AVX512-BF16
//! `vdpbf16ps` on bf16 pairs, AMX-BF16 tiles in `amx`).
//!
//! A product is a grid of row blocks (at most `MC` rows) × `NR`-column B panels, cut into one equal chunk
//! per thread, and enters the rayon pool once. A thread covers the contraction in slices of
//! `Kernel::slice_steps` packed depth steps; for each slice and row block of its chunk, it packs the
//! block's rows of A into a per-thread buffer, then for each of its B panels (packed on first use by
//! whichever thread needs it, into a buffer all threads share) runs the microkernel over every tile of
//! `MR × NR` (an edge tile of the f32 kernel: its live rows only), storing (first slice) or adding (later
//! slices) straight into an f32 accumulator: C itself when C is f32, else a buffer rounded to C's type at
//! the end. B is packed once per product and A once per block and slice (by each chunk covering part of
//! the block), unless the f32 kernel reads them in place (`read_b_in_place`, `read_a_in_place`); no
//! thread waits at a barrier. Buffers of 4 MiB and more (packed B, the accumulator) ask for 2 MiB pages.
//! Packing rounds or converts the source to the compute type on the way, so a mixed product never makes
//! a converted copy. A batch of products runs one product per thread instead.

use super::GemmSpec;
use super::amx;
use crate::cpu::isa::{AmxMode, Isa, amx_mode, amx_permitted, isa};
use crate::{DType, Elem, Float};
use half::{bf16, f16};
use rayon::prelude::*;
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread::LocalKey;

/// Rows per block (a multiple of every microkernel's MR): its packed A slice (`MC × KC_WORDS` words,
/// 96 KiB; `MC × KC_WORDS_F32` for the AVX-512 f32 kernel, 384 KiB) stays in L2 while the microkernels
/// sweep it once per B panel.
const MC: usize = 96;
/// Packed depth steps per slice: one B panel (`NR × KC_WORDS` words, 32 KiB for NR = 32) stays in L1
/// while it meets every A panel of a block.
const KC_WORDS: usize = 256;
/// Packed depth steps per slice for the AVX-512 f32 kernel. Each slice reads and writes all of C once,
/// and at 256 steps that traffic (C out of cache for n = 2048) cost more than the B panel's stay in L1
/// saves: with 1024 steps both panels (128 KiB of B, 48 KiB of A) stream from L2, which keeps up, and
/// n = 1024 and 2048 products ran 5-10% faster.
const KC_WORDS_F32: usize = 1024;
/// Products with at most this many row tiles read an f32 B in place instead of packing it.
const READ_B_IN_PLACE_TILES: usize = 16;
/// ... unless they have more than one row block and B is larger than this (see `read_b_in_place`).
const READ_B_IN_PLACE_SHARED_BYTES: usize = 4 << 20;
/// An f32 B of at most this size, with rows at most `READ_B_IN_PLACE_ROW_BYTES` apart, is read in place.
const READ_B_IN_PLACE_BYTES: usize = 1 << 20;
/// See `READ_B_IN_PLACE_BYTES`.
const READ_B_IN_PLACE_ROW_BYTES: usize = 2048;
/// Below this many flops a product runs on the calling thread (a parallel region costs microseconds).
const PARALLEL_FLOPS: f64 = 4.0e6;

thread_local! {
    /// Packed A rows of the piece running on this thread.
    static PACK_A: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// Packed B of the product this thread drives (written and read by every thread while it runs).
    static PACK_B: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// Which panels of that packed B are ready (see `PackedB`).
    static PANEL_STATE: RefCell<Vec<AtomicU8>> = const { RefCell::new(Vec::new()) };
    /// f32 accumulator for products whose C is not f32.
    static ACCUMULATOR: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's buffer `key`, grown to at least `len` elements (large ones on huge pages;
/// never shrunk, so warm calls do not allocate). If the buffer is already in use further up this thread's
/// stack (a rayon worker that picked up a second product while waiting inside the first), a temporary
/// buffer is used instead.
fn with_buffer<T: Default + 'static, R>(
    key: &'static LocalKey<RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            crate::cpu::huge_pages::grow_scratch(&mut v, len, T::default);
            f(&mut v[..len])
        }
        Err(_) => f(&mut (0..len).map(|_| T::default()).collect::<Vec<T>>()),
    })
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
    /// AMX-BF16 tiles, 32 × 32 block (`emulated`: tile instructions carried out in software).
    Amx { emulated: bool },
}

impl Kernel {
    /// Rows (MR) and columns (NR) of the register tile.
    fn tile(self) -> (usize, usize) {
        match self {
            Kernel::Avx512F32 | Kernel::Avx512Bf16 => (12, 32),
            Kernel::Avx2F32 => (6, 16),
            Kernel::Amx { .. } => (32, 32),
        }
    }

    /// k values per packed 32-bit word.
    fn k_per_word(self) -> usize {
        match self {
            Kernel::Avx512Bf16 | Kernel::Amx { .. } => 2,
            _ => 1,
        }
    }

    /// Rows per packed A panel: AMX loads A tiles row by row, so its A is packed one row after another.
    fn a_panel_rows(self) -> usize {
        match self {
            Kernel::Amx { .. } => 1,
            _ => self.tile().0,
        }
    }

    /// Most packed depth steps per slice of the contraction.
    fn slice_steps(self) -> usize {
        match self {
            Kernel::Avx512F32 => KC_WORDS_F32,
            _ => KC_WORDS,
        }
    }

    /// Whether a chunk of a product walks the contraction slice by slice, each slice over all its row
    /// blocks, rather than block by block, each block over all slices. Slices first makes the threads
    /// pack each slice's B panels together (walking blocks first, the thread with the first block packs
    /// all of the later slices' panels alone while the other is still in the first slice): the f32
    /// kernel's 1024-step slices ran 2-5% faster (2048³, 1024 × 1024 × 2048, 512 × 512 × 4096). Blocks
    /// first keeps a block's rows of C in cache from one slice to the next, which the bf16 kernels' more
    /// and shallower slices (256 words) need: slices first lost 3-5% there at n = 1024 and 2048.
    fn slices_outermost(self) -> bool {
        matches!(self, Kernel::Avx512F32)
    }

    /// Whether the microkernel can compute only the first rows of a tile, straight into C, from an A
    /// with any row and step strides (a packed panel, or an f32 A read in place, which has no padding
    /// rows). The f32 kernel can: a product of 64 rows is five whole 12-row tiles and one of 4 rows,
    /// which costs a third of a whole one instead of all of it (the other kernels compute an edge tile
    /// whole, aside, from packed panels).
    fn computes_partial_rows(self) -> bool {
        matches!(self, Kernel::Avx512F32)
    }

    /// The work of a tile with `rows` live rows, in rows of a whole tile: an edge tile costs a whole
    /// one unless `computes_partial_rows`; then its rows, but at least 4, below which the latency of the
    /// accumulators' FMA chains (4 cycles, 2 units, 2 accumulators per row) bounds the kernel.
    fn tile_work(self, rows: usize) -> usize {
        let mr = self.tile().0;
        if self.computes_partial_rows() {
            rows.clamp(4, mr)
        } else {
            mr
        }
    }

    /// Packed depth steps come in multiples of this (a whole tile row for AMX).
    fn step_multiple(self) -> usize {
        match self {
            Kernel::Amx { .. } => amx::TILE_STEPS,
            _ => 1,
        }
    }
}

/// Picks the microkernel for a compute type and ISA level.
fn kernel_for(compute: DType, level: Isa) -> Kernel {
    match (compute, level, amx_mode()) {
        (DType::BF16, _, AmxMode::Emulated) => return Kernel::Amx { emulated: true },
        (DType::BF16, Isa::Amx, AmxMode::Hardware) if amx_permitted() => {
            return Kernel::Amx { emulated: false };
        }
        _ => {}
    }
    match (compute, level) {
        (DType::BF16, l) if l >= Isa::Avx512Bf16 => Kernel::Avx512Bf16,
        (_, l) if l >= Isa::Avx512 => Kernel::Avx512F32,
        _ => Kernel::Avx2F32,
    }
}

/// Converts a run of source elements to the f32 values the kernel multiplies, rounded first to
/// `round_to` when the product runs in a narrower type than the element (an f32 activation meeting an
/// f16 weight), exactly as a separate cast would round them.
#[inline]
fn to_compute_f32<T: Elem>(src: &[T], round_to: DType, dst: &mut [f32]) {
    let dst = &mut dst[..src.len()];
    match (T::DTYPE, round_to) {
        (DType::F32, DType::F16) => {
            let src = crate::cpu::same_type_slice::<T, f32>(src);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the fast GEMM runs only at the AVX2 level or above, which includes F16C.
            unsafe {
                x86::round_through_f16(src, dst)
            };
            #[cfg(not(target_arch = "x86_64"))]
            for (d, s) in dst.iter_mut().zip(src) {
                *d = f16::from_f32(*s).to_f32();
            }
        }
        (DType::F16, _) => {
            let src = crate::cpu::same_type_slice::<T, f16>(src);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            unsafe {
                x86::widen_f16(src, dst)
            };
            #[cfg(not(target_arch = "x86_64"))]
            for (d, s) in dst.iter_mut().zip(src) {
                *d = s.to_f32();
            }
        }
        (DType::F32, DType::BF16) => {
            let mut bits = [0u16; CHUNK];
            for (dst, src) in dst.chunks_mut(CHUNK).zip(src.chunks(CHUNK)) {
                let bits = &mut bits[..src.len()];
                bf16_bits(src, bits);
                for (d, &b) in dst.iter_mut().zip(bits.iter()) {
                    *d = f32::from_bits(u32::from(b) << 16);
                }
            }
        }
        _ => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = s.to_f32();
            }
        }
    }
}

/// Elements converted per chunk on the stack before they are scattered into a panel.
const CHUNK: usize = 64;

/// Calls `put(i, word)` with the f32 bits of the compute value of each `src[i]` (see [`to_compute_f32`]);
/// f32 sources of an f32 product are read directly.
#[inline(always)]
fn for_each_f32_word<T: Elem>(src: &[T], round_to: DType, mut put: impl FnMut(usize, u32)) {
    if T::DTYPE == DType::F32 && round_to == DType::F32 {
        for (i, v) in crate::cpu::same_type_slice::<T, f32>(src)
            .iter()
            .enumerate()
        {
            put(i, v.to_bits());
        }
        return;
    }
    let mut buf = [0f32; CHUNK];
    for (c, chunk) in src.chunks(CHUNK).enumerate() {
        let buf = &mut buf[..chunk.len()];
        to_compute_f32(chunk, round_to, buf);
        for (i, v) in buf.iter().enumerate() {
            put(c * CHUNK + i, v.to_bits());
        }
    }
}

/// The bf16 bits of `src`: the source itself when it is bf16 (no copy: runs are short, and a copy
/// becomes a `memcpy` call per run), else its values rounded into `scratch`.
#[inline(always)]
fn bf16_run<'a, T: Elem>(src: &'a [T], scratch: &'a mut [u16]) -> &'a [u16] {
    if T::DTYPE == DType::BF16 {
        let src = crate::cpu::same_type_slice::<T, bf16>(src);
        // SAFETY: bf16 is a transparent wrapper of u16.
        unsafe { std::slice::from_raw_parts(src.as_ptr().cast::<u16>(), src.len()) }
    } else {
        let scratch = &mut scratch[..src.len()];
        bf16_bits(src, scratch);
        scratch
    }
}

/// Writes the bf16 bits of each `src[i]` to `dst[i]` (rounded to nearest even from f32, as a cast would).
/// bf16 sources do not come here: [`bf16_run`] reads them in place.
#[inline(always)]
fn bf16_bits<T: Elem>(src: &[T], dst: &mut [u16]) {
    let dst = &mut dst[..src.len()];
    match T::DTYPE {
        #[cfg(target_arch = "x86_64")]
        DType::F32 => {
            let src = crate::cpu::same_type_slice::<T, f32>(src);
            // SAFETY: the fast GEMM runs only at the AVX2 level or above.
            unsafe { x86::round_to_bf16_bits(src, dst) }
        }
        _ => {
            for (d, v) in dst.iter_mut().zip(src) {
                *d = bf16::from_f32(v.to_f32()).to_bits();
            }
        }
    }
}

/// A logical matrix `M(row, depth) = data[row·row_stride + depth·depth_stride]` to pack from: A as
/// (m rows, k depth), B as (n rows, k depth). One of the strides is 1 for every operand layout.
#[derive(Clone, Copy)]
struct Source<'a, T> {
    data: &'a [T],
    row_stride: usize,
    depth_stride: usize,
}

impl<'a, T: Elem> Source<'a, T> {
    /// Operand `index` of a batch, stored `rows × depth` (or `depth × rows` when `trans`).
    fn new(data: &'a [T], batch_offset: usize, rows: usize, depth: usize, trans: bool) -> Self {
        let data = &data[batch_offset..];
        if trans {
            Source {
                data,
                row_stride: 1,
                depth_stride: rows,
            }
        } else {
            Source {
                data,
                row_stride: depth,
                depth_stride: 1,
            }
        }
    }
}

/// Packs rows `r0..r0+rows` × depth `d0..d0+depth` into panels of `pr` rows, `panel_steps` depth steps
/// each: panel `q`, step `s` holds the `pr` words of rows `q·pr..` at depth step `s` (one f32, or a pair
/// of bf16 for `per` 2). Rows, depth and steps past the matrix are zero, so a kernel that computes whole
/// tiles sees zeros in an edge tile's padding rows.
#[allow(clippy::too_many_arguments)]
fn pack<T: Elem>(
    dst: &mut [u32],
    pr: usize,
    per: usize,
    compute: DType,
    src: Source<T>,
    r0: usize,
    rows: usize,
    d0: usize,
    depth: usize,
    panel_steps: usize,
) {
    let steps = depth.div_ceil(per);
    if !rows.is_multiple_of(pr) {
        dst.fill(0);
    }
    for (q, panel) in dst.chunks_exact_mut(pr * panel_steps).enumerate() {
        if q * pr >= rows {
            panel.fill(0);
            continue;
        }
        let (panel, padding) = panel.split_at_mut(pr * steps);
        padding.fill(0);
        let first = r0 + q * pr;
        let live = pr.min(rows - q * pr);
        match (per, src.depth_stride == 1) {
            (1, true) => {
                // Rows run along depth: convert a chunk of every row, then interleave the chunks so
                // the panel is written sequentially (scattered stores would stall on the store buffer).
                let mut rows_buf = [[MaybeUninit::<u32>::uninit(); CHUNK]; MAX_PANEL_ROWS];
                for c0 in (0..depth).step_by(CHUNK) {
                    let len = CHUNK.min(depth - c0);
                    for (r, buf) in rows_buf.iter_mut().enumerate().take(live) {
                        let start = (first + r) * src.row_stride + d0 + c0;
                        for_each_f32_word(&src.data[start..start + len], compute, |i, w| {
                            buf[i].write(w);
                        });
                    }
                    interleave(
                        &rows_buf,
                        live,
                        len,
                        &mut panel[c0 * pr..(c0 + len) * pr],
                        pr,
                    );
                }
            }
            (1, false) => {
                // Depth steps run along rows: each step is one contiguous run of `live` words, a row
                // of the source apart (kilobytes: every step starts in a new cache line, often a new
                // page, too far apart for the hardware prefetcher), so the runs some steps ahead are
                // prefetched.
                let direct = f32_words(src.data).filter(|_| compute == DType::F32);
                for s in 0..depth {
                    let start = (d0 + s) * src.depth_stride + first;
                    if let Some(ahead) = src
                        .data
                        .get((d0 + s + PACK_PREFETCH_STEPS) * src.depth_stride + first..)
                    {
                        prefetch_run(ahead, live);
                    }
                    let step = &mut panel[s * pr..s * pr + live];
                    match direct {
                        Some(words) => copy_words(&words[start..start + live], step),
                        None => {
                            for_each_f32_word(&src.data[start..start + live], compute, |j, w| {
                                step[j] = w
                            })
                        }
                    }
                }
            }
            (_, true) => {
                // bf16 pairs along a row are the two halves of one little-endian word; chunks of
                // every row are interleaved as above.
                let mut rows_buf = [[MaybeUninit::<u32>::uninit(); CHUNK]; MAX_PANEL_ROWS];
                let mut halves = [0u16; 2 * CHUNK];
                for c0 in (0..steps).step_by(CHUNK) {
                    let len = CHUNK.min(steps - c0);
                    let elements = (2 * len).min(depth - 2 * c0);
                    for (r, buf) in rows_buf.iter_mut().enumerate().take(live) {
                        let start = (first + r) * src.row_stride + d0 + 2 * c0;
                        let run = bf16_run(&src.data[start..start + elements], &mut halves);
                        let (pairs, odd) = run.as_chunks::<2>();
                        for (word, pair) in buf.iter_mut().zip(pairs) {
                            word.write(u32::from(pair[0]) | u32::from(pair[1]) << 16);
                        }
                        if let [last] = odd {
                            buf[pairs.len()].write(u32::from(*last));
                        }
                    }
                    interleave(
                        &rows_buf,
                        live,
                        len,
                        &mut panel[c0 * pr..(c0 + len) * pr],
                        pr,
                    );
                }
            }
            (_, false) => {
                // Depth 2s and 2s+1 each run along the rows: the first fills the low halves, the second
                // the high ones. Runs ahead are prefetched, as above.
                let mut scratch = [0u16; MAX_PANEL_ROWS];
                for s in 0..steps {
                    let start = (d0 + 2 * s) * src.depth_stride + first;
                    let ahead = (d0 + 2 * (s + PACK_PREFETCH_STEPS)) * src.depth_stride + first;
                    for run in [ahead, ahead + src.depth_stride] {
                        if let Some(run) = src.data.get(run..) {
                            prefetch_run(run, live);
                        }
                    }
                    let step = &mut panel[s * pr..s * pr + live];
                    let low = bf16_run(&src.data[start..start + live], &mut scratch);
                    for (word, &h) in step.iter_mut().zip(low) {
                        *word = u32::from(h);
                    }
                    if 2 * s + 1 < depth {
                        let start = start + src.depth_stride;
                        let high = bf16_run(&src.data[start..start + live], &mut scratch);
                        for (word, &h) in step.iter_mut().zip(high) {
                            *word |= u32::from(h) << 16;
                        }
                    }
                }
            }
        }
    }
}

/// Depth steps ahead at which packing a strided source prefetches its run.
const PACK_PREFETCH_STEPS: usize = 32;

/// Asks for the cache lines of the first `len` elements of `run` (a hint; no effect on results).
#[inline(always)]
fn prefetch_run<T>(run: &[T], len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let bytes = len.min(run.len()) * std::mem::size_of::<T>();
        let start = run.as_ptr().cast::<i8>();
        // From the start of the first cache line: a run that starts inside a line ends in one more.
        let lead = start as usize % 64;
        let start = start.wrapping_sub(lead);
        for offset in (0..bytes + lead).step_by(64) {
            // SAFETY: prefetching is a hint that never faults, and the address is only prefetched (it lies
            // in a line `run` touches, so `wrapping_add` keeps it meaningful).
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    start.wrapping_add(offset),
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (run, len);
}

/// Copies a short run of words: whole panel widths as fixed-size copies the compiler turns into a few
/// vector moves (`copy_from_slice` calls `memmove`, which costs more than the copy at this size).
#[inline(always)]
fn copy_words(src: &[u32], dst: &mut [u32]) {
    match (
        <&[u32; 32]>::try_from(src),
        <&mut [u32; 32]>::try_from(&mut *dst),
    ) {
        (Ok(src), Ok(dst)) => *dst = *src,
        _ => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = *s;
            }
        }
    }
}

/// The most rows a packed panel has (the widest microkernel's NR).
const MAX_PANEL_ROWS: usize = 32;

/// Writes `len` depth steps of a panel: step `s` holds `rows[r][s]` for the `live` rows, then zeros.
#[inline(always)]
fn interleave(
    rows: &[[MaybeUninit<u32>; CHUNK]; MAX_PANEL_ROWS],
    live: usize,
    len: usize,
    dst: &mut [u32],
    pr: usize,
) {
    // Whole panels of the microkernels' heights get a loop the compiler unrolls.
    match (live == pr, pr) {
        (true, 12) => return interleave_whole::<12>(rows, len, dst),
        (true, 32) => return interleave_whole::<32>(rows, len, dst),
        (true, 6) => return interleave_whole::<6>(rows, len, dst),
        (true, 16) => return interleave_whole::<16>(rows, len, dst),
        _ => {}
    }
    for (s, step) in dst.chunks_exact_mut(pr).enumerate().take(len) {
        for (r, word) in step.iter_mut().enumerate() {
            // SAFETY: the caller wrote steps 0..len of rows 0..live.
            *word = if r < live {
                unsafe { rows[r][s].assume_init() }
            } else {
                0
            };
        }
    }
}

/// [`interleave`] of a panel whose `PR` rows are all live.
#[inline(always)]
fn interleave_whole<const PR: usize>(
    rows: &[[MaybeUninit<u32>; CHUNK]; MAX_PANEL_ROWS],
    len: usize,
    dst: &mut [u32],
) {
    #[cfg(target_arch = "x86_64")]
    let done = if isa() >= Isa::Avx512 {
        // SAFETY: AVX-512F is available at this level, and the caller wrote steps 0..len of every row.
        unsafe { x86::interleave_avx512::<PR>(rows, len, dst) }
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for (s, step) in dst.chunks_exact_mut(PR).enumerate().take(len).skip(done) {
        let step: &mut [u32; PR] = step.try_into().expect("chunks of PR");
        for (r, word) in step.iter_mut().enumerate() {
            // SAFETY: the caller wrote steps 0..len of every row.
            *word = unsafe { rows[r][s].assume_init() };
        }
    }
}

/// Depth (in k values) of each slice of the contraction: as equal as possible, at most
/// `Kernel::slice_steps` packed steps, a whole number of steps (k = 784 runs as 4 slices of 196 at 256
/// steps, not 3 of 256 and one of 16, whose microkernel calls would be mostly C traffic).
fn slice_depth(kernel: Kernel, k: usize) -> usize {
    let per = kernel.k_per_word();
    let slices = k.div_ceil(kernel.slice_steps() * per);
    k.div_ceil(slices).next_multiple_of(per)
}

/// The bits of an f32 slice as words (`None` for other element types).
fn f32_words<T: Elem>(data: &[T]) -> Option<&[u32]> {
    (T::DTYPE == DType::F32).then(|| {
        let values = crate::cpu::same_type_slice::<T, f32>(data);
        // SAFETY: f32 and u32 have the same size and alignment, and every bit pattern is a valid u32.
        unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u32>(), values.len()) }
    })
}

/// A raw pointer to the f32 accumulator that threads write through: each tile (`MR` rows × one panel's
/// columns) belongs to one chunk, and only that chunk's thread writes it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: chunks write disjoint tiles (see `run_chunks`), and the pointer outlives the parallel region.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

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
    let one = |bi: usize, c: &mut [O], parallel: bool| {
        let av = Source::new(a, bi * spec.a_batch_stride, m, k, spec.a_trans);
        let bv = Source::new(b, bi * spec.b_batch_stride, n, k, !spec.b_trans);
        product(
            kernel,
            compute,
            av,
            bv,
            (m, n, k),
            spec.accumulate,
            c,
            parallel,
        );
    };
    let per_product = 2.0 * (m * n) as f64 * k as f64;
    let threads = rayon::current_num_threads();
    if spec.flops() < PARALLEL_FLOPS || threads == 1 {
        for (bi, c) in c.chunks_mut(m * n).enumerate() {
            one(bi, c, false);
        }
        return;
    }
    if spec.batch > 1 && spec.batch >= threads {
        // Enough products to give every thread whole ones: no synchronisation inside a product.
        c.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(bi, c)| one(bi, c, false));
    } else {
        for (bi, c) in c.chunks_mut(m * n).enumerate() {
            one(bi, c, per_product >= PARALLEL_FLOPS);
        }
    }
}

/// One product `C (m × n) = A · B` (or `+=`), in parallel across threads when `parallel`.
///
/// The packed-B, panel-state and accumulator buffers belong to the calling thread and are taken before
/// the work enters the thread pool, so the same buffers serve every call from this thread.
#[allow(clippy::too_many_arguments)]
fn product<TA: Float, TB: Float, O: Float>(
    kernel: Kernel,
    compute: DType,
    a: Source<TA>,
    b: Source<TB>,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    c: &mut [O],
    parallel: bool,
) {
    let layout = PackedB::layout(kernel, n, k);
    let dims = (m, n, k);
    with_buffer(&PACK_B, layout.words(), |bp| {
        with_buffer(&PANEL_STATE, layout.panels(), |state| {
            for panel in state.iter_mut() {
                *panel.get_mut() = UNPACKED;
            }
            let packed_b = PackedB {
                words: SharedWords(bp.as_mut_ptr()),
                state,
                layout,
            };
            if O::DTYPE == DType::F32 {
                let c = crate::cpu::same_type_slice_mut::<O, f32>(c);
                return in_pool(parallel, || {
                    run_chunks(
                        kernel, compute, a, b, &packed_b, dims, accumulate, c, parallel,
                    )
                });
            }
            with_buffer(&ACCUMULATOR, m * n, |acc| {
                in_pool(parallel, || {
                    run_chunks(kernel, compute, a, b, &packed_b, dims, false, acc, parallel);
                    // Rounded to C's type by the vectorized casts, a chunk at a time.
                    let finish = |(out, v): (&mut [O], &[f32])| {
                        if accumulate {
                            let mut sum = [0f32; FINISH_CHUNK];
                            let sum = &mut sum[..out.len()];
                            crate::cpu::cast(out, sum);
                            for (s, v) in sum.iter_mut().zip(v) {
                                *s += v;
                            }
                            crate::cpu::cast(sum, out);
                        } else {
                            crate::cpu::cast(v, out);
                        }
                    };
                    if parallel {
                        c.par_chunks_mut(FINISH_CHUNK)
                            .zip(acc.par_chunks(FINISH_CHUNK))
                            .for_each(finish);
                    } else {
                        c.chunks_mut(FINISH_CHUNK)
                            .zip(acc.chunks(FINISH_CHUNK))
                            .for_each(finish);
                    }
                })
            })
        })
    });
}

/// Elements of C rounded from the f32 accumulator per cast call.
const FINISH_CHUNK: usize = 1024;

/// Runs `f`, inside the thread pool when `parallel` (entering it once per product: jobs handed in from
/// outside go through rayon's global queue, which allocates a block every 63 jobs, while jobs a worker
/// spawns stay in its own deque).
fn in_pool<R: Send>(parallel: bool, f: impl FnOnce() -> R + Send) -> R {
    if parallel && rayon::current_thread_index().is_none() {
        rayon::scope(|_| f())
    } else {
        f()
    }
}

/// Where each packed B panel of each depth slice lives: slice `p`, panel `j` at word
/// `(p · panels + j) · NR · panel_steps`.
#[derive(Clone, Copy)]
struct BLayout {
    nr: usize,
    panel_steps: usize,
    n_panels: usize,
    n_slices: usize,
}

/// A panel no thread has started packing.
const UNPACKED: u8 = 0;
/// A panel some thread is packing now.
const PACKING: u8 = 1;
/// A panel ready to read.
const PACKED: u8 = 2;
/// A panel whose packer panicked.
const POISONED: u8 = 3;

/// The packed form of all of B, filled panel by panel by whichever thread needs a panel first: every
/// panel is packed once per product, and no thread waits for a whole slice to be packed (no barrier).
struct PackedB<'a> {
    words: SharedWords,
    state: &'a [AtomicU8],
    layout: BLayout,
}

/// A raw pointer to the packed-B words: each panel is written by the one thread that won its `PACKING`
/// state, and read only after its `PACKED` state is seen.
#[derive(Clone, Copy)]
struct SharedWords(*mut u32);
// SAFETY: access is coordinated by the panel states (see `PackedB::panel`).
unsafe impl Send for SharedWords {}
// SAFETY: as above.
unsafe impl Sync for SharedWords {}

impl PackedB<'_> {
    fn layout(kernel: Kernel, n: usize, k: usize) -> BLayout {
        let (_, nr) = kernel.tile();
        let per = kernel.k_per_word();
        BLayout {
            nr,
            n_panels: n.div_ceil(nr),
            n_slices: k.div_ceil(slice_depth(kernel, k)),
            // As deep as a slice, so a shallow product (attention's k = 64) packs small.
            panel_steps: slice_depth(kernel, k)
                .div_ceil(per)
                .next_multiple_of(kernel.step_multiple()),
        }
    }

    /// Panel `jr` of slice `slice` (depth `pc..pc+kc`, `steps` words deep), packed now if no thread
    /// has packed it yet, or once the thread packing it finishes.
    #[allow(clippy::too_many_arguments)]
    fn panel<TB: Float>(
        &self,
        b: Source<TB>,
        (kernel, compute): (Kernel, DType),
        n: usize,
        slice: usize,
        jr: usize,
        (pc, kc, steps): (usize, usize, usize),
    ) -> &[u32] {
        let BLayout {
            nr,
            n_panels,
            panel_steps,
            ..
        } = self.layout;
        debug_assert!(steps <= panel_steps);
        let index = slice * n_panels + jr;
        let state = &self.state[index];
        let (ptr, len) = (
            self.words.0.wrapping_add(index * nr * panel_steps),
            nr * steps,
        );
        match state.compare_exchange(UNPACKED, PACKING, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => {
                // If packing panics, waiting threads must not spin forever: they see POISONED and panic.
                let poison = PoisonOnUnwind(state);
                // SAFETY: the range lies inside the buffer (`BLayout::words`), and this thread is the only
                // one that touches it until it stores PACKED (every other thread waits for that state).
                let words = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
                let first = jr * nr;
                let per = kernel.k_per_word();
                pack(
                    words,
                    nr,
                    per,
                    compute,
                    b,
                    first,
                    nr.min(n - first),
                    pc,
                    kc,
                    steps,
                );
                std::mem::forget(poison);
                state.store(PACKED, Ordering::Release);
            }
            Err(_) => wait_until_packed(state),
        }
        // SAFETY: the panel is packed (this thread stored PACKED, or saw it with Acquire ordering after the
        // packer's Release store), and nothing writes it again during this product.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// Marks a panel poisoned if its packer unwinds.
struct PoisonOnUnwind<'a>(&'a AtomicU8);

impl Drop for PoisonOnUnwind<'_> {
    fn drop(&mut self) {
        self.0.store(POISONED, Ordering::Release);
    }
}

/// Waits for another thread to finish packing a panel (microseconds: packing calls nothing that could
/// wait on this thread), yielding the core after a while in case the packer has been descheduled.
fn wait_until_packed(state: &AtomicU8) {
    let mut spins = 0u32;
    loop {
        match state.load(Ordering::Acquire) {
            PACKED => return,
            POISONED => panic!("gemm: packing a panel of B panicked on another thread"),
            _ => {}
        }
        spins += 1;
        if spins < 4096 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

impl BLayout {
    fn panels(&self) -> usize {
        self.n_slices * self.n_panels
    }

    fn words(&self) -> usize {
        self.panels() * self.nr * self.panel_steps
    }
}

/// Splits the product into one chunk of work per thread and runs them. The work is the grid of row
/// blocks (at most `MC` rows, equal tile counts ±1) × B panels, weighed by rows (`Kernel::tile_work`);
/// each chunk is an equal share of it, cut between two panels of a block, whose rows of A every chunk
/// covering part of it packs (unless `read_a_in_place`). A chunk covers the contraction slice by slice
/// (in the order `Kernel::slices_outermost` picks) into the f32 accumulator `out` (`m × n`, row-major;
/// the first slice stores unless `accumulate`, later slices add).
///
/// Equal shares keep every thread busy to the end: with whole row blocks as the units of work, a 512³
/// product left one thread idle for a tenth of its time.
#[allow(clippy::too_many_arguments)]
fn run_chunks<TA: Float, TB: Float>(
    kernel: Kernel,
    compute: DType,
    a: Source<TA>,
    b: Source<TB>,
    packed_b: &PackedB,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    out: &mut [f32],
    parallel: bool,
) {
    let (mr, _) = kernel.tile();
    let n_panels = packed_b.layout.n_panels;
    let chunks = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let tiles = m.div_ceil(mr);
    let blocks = tiles.div_ceil(MC / mr);
    let first_tile = |block: usize| block * tiles / blocks;
    // The work of the blocks before `block`, per panel (in rows of whole tiles; only the last tile can
    // be an edge tile).
    let all_work = (tiles - 1) * mr + kernel.tile_work(m - (tiles - 1) * mr);
    let work_before = |block: usize| {
        if block == blocks {
            all_work
        } else {
            first_tile(block) * mr
        }
    };
    // Chunk `c` starts at the (block, panel) where c/chunks of the grid's work lies before it
    // (`start(chunks)` is `(blocks, 0)`, the end of the grid).
    let start = |c: usize| -> (usize, usize) {
        let before = c * all_work * n_panels / chunks;
        let block = (0..blocks)
            .rfind(|&block| work_before(block) * n_panels <= before)
            .unwrap_or(0);
        let block_work = work_before(block + 1) - work_before(block);
        let panel = (before - work_before(block) * n_panels + block_work / 2) / block_work;
        if panel < n_panels {
            (block, panel)
        } else {
            (block + 1, 0)
        }
    };
    let b_in_place = read_b_in_place(tiles, blocks, n, k);
    let out = SharedOut(out.as_mut_ptr());
    // The (rows, panels) pieces of chunk `c`, block by block.
    let pieces = |c: usize| {
        let (begin, end) = (start(c), start(c + 1));
        (begin.0..=end.0).filter_map(move |block| {
            let first = if block == begin.0 { begin.1 } else { 0 };
            let last = if block == end.0 { end.1 } else { n_panels };
            (first < last).then(|| {
                let rows = first_tile(block) * mr..m.min(first_tile(block + 1) * mr);
                (rows, first..last)
            })
        })
    };
    let run = |(rows, panels): (Range<usize>, Range<usize>), slice: usize| {
        run_piece(
            kernel,
            compute,
            a,
            b,
            packed_b,
            rows,
            panels,
            slice,
            (m, n, k),
            accumulate,
            b_in_place,
            out,
        )
    };
    let slices = packed_b.layout.n_slices;
    let hardware_tiles = matches!(kernel, Kernel::Amx { emulated: false });
    let chunk = |c: usize| {
        // The tile configuration lives in the registers of the thread running the chunk: loaded once
        // for all its pieces (nothing in a chunk lets the thread pick up other work meanwhile).
        #[cfg(target_arch = "x86_64")]
        if hardware_tiles {
            // SAFETY: the AMX kernel is chosen only where `isa` detected the tiles and the OS granted
            // them.
            unsafe { amx::Hardware::configure() };
        }
        if kernel.slices_outermost() {
            for slice in 0..slices {
                pieces(c).for_each(|piece| run(piece, slice));
            }
        } else {
            for piece in pieces(c) {
                (0..slices).for_each(|slice| run(piece.clone(), slice));
            }
        }
        #[cfg(target_arch = "x86_64")]
        if hardware_tiles {
            // SAFETY: configured above on this thread.
            unsafe { amx::Hardware::release() };
        }
    };
    if parallel {
        (0..chunks).into_par_iter().for_each(chunk);
    } else {
        chunk(0);
    }
}

/// Whether an f32 B stored `k × n` is read in place rather than packed: with few row tiles (each B panel
/// meets few A panels, so packing it would cost about as much as the products), or when all of B is at
/// most [`READ_B_IN_PLACE_BYTES`] with rows at most [`READ_B_IN_PLACE_ROW_BYTES`] apart (it stays in L2,
/// and each step of a panel is a short hop away). Measured side by side with packing (2 threads, against
/// the `gemm` crate): 256³ 0.69× → 0.92×, 512³ 0.83× → 1.00×, 2048 × 512 × 512 0.93× → 0.96×; with rows
/// 4 KiB apart (n = 1024) reading in place lost 5-10%.
///
/// With few row tiles in more than one row block, every thread streams all of B (one block each), so a B
/// larger than [`READ_B_IN_PLACE_SHARED_BYTES`] is packed once for all of them instead: against `gemm`,
/// 160 × 2048 × 2048 0.60× → 0.94×, 150 × 1024 × 4096 0.81× → 0.98×, 128 × 4096 × 1024 0.68× → 0.84×.
fn read_b_in_place(tiles: usize, blocks: usize, n: usize, k: usize) -> bool {
    let row_bytes = n * size_of::<f32>();
    let b_bytes = k * row_bytes;
    let few_tiles =
        tiles <= READ_B_IN_PLACE_TILES && (blocks == 1 || b_bytes <= READ_B_IN_PLACE_SHARED_BYTES);
    few_tiles || (row_bytes <= READ_B_IN_PLACE_ROW_BYTES && b_bytes <= READ_B_IN_PLACE_BYTES)
}

/// Whether the f32 kernel reads A in place, broadcasting from 12 rows `a.row_stride` apart at once,
/// instead of packing it: A stored `m × k` (or any A whose depth steps are adjacent, such as a
/// transposed A of one row). It saves the packing, which each thread does for all the rows of its blocks
/// (against the `gemm` crate, in one process: 64 × 512 × 512 0.90× → 1.00×,
/// 2048 × 128 × 128 0.85× → 0.97×, 512³ 0.94× → 0.96×), but not where rows lie a multiple of 4 KiB
/// apart: then all 12 fall in one L1 set and evict each other (2048³ 1.01× → 0.95×,
/// 64 × 1024 × 1024 1.01× → 0.98×). It needs a kernel that computes the live rows of an edge tile alone:
/// an A read in place has no padding rows.
fn read_a_in_place<T>(kernel: Kernel, a: Source<T>) -> bool {
    let row_bytes = a.row_stride * size_of::<f32>();
    kernel.computes_partial_rows() && a.depth_stride == 1 && !row_bytes.is_multiple_of(4096)
}

/// Computes `rows` × the B `panels` of the product over depth slice `slice`: packs those rows of A
/// (unless `read_a_in_place`), then for each panel (packed on first use) runs the microkernel over every
/// tile, storing into (first slice, unless `accumulate`) or adding to the f32 accumulator `out`
/// (`m × n`). The hardware AMX kernel needs this thread's tiles configured (`run_chunks` does it).
#[allow(clippy::too_many_arguments)]
fn run_piece<TA: Float, TB: Float>(
    kernel: Kernel,
    compute: DType,
    a: Source<TA>,
    b: Source<TB>,
    packed_b: &PackedB,
    rows: Range<usize>,
    panels: Range<usize>,
    slice: usize,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    b_in_place: bool,
    out: SharedOut,
) {
    let (mr, nr) = kernel.tile();
    let per = kernel.k_per_word();
    let mc = rows.len();
    let mc_pad = mc.div_ceil(mr) * mr;
    // An f32 B stored k × n is read in place where `read_b_in_place` says so (whole panels; the last,
    // partial one is packed).
    let direct_b = (b_in_place && b.row_stride == 1 && compute == DType::F32)
        .then(|| f32_words(b.data))
        .flatten();
    // An f32 A stored m × k is read in place where `read_a_in_place` says so.
    let direct_a = (compute == DType::F32 && read_a_in_place(kernel, a))
        .then(|| f32_words(a.data))
        .flatten();
    // Always the largest size a piece can need: which worker runs which block varies from call to call,
    // so growing on demand could allocate long after warm-up.
    with_buffer(&PACK_A, MC * KC_WORDS.max(KC_WORDS_F32), |ap| {
        let depth = slice_depth(kernel, k);
        let pc = slice * depth;
        let kc = depth.min(k - pc);
        let steps = kc.div_ceil(per).next_multiple_of(kernel.step_multiple());
        let add = accumulate || pc > 0;
        let ap = &mut ap[..mc_pad * steps];
        if direct_a.is_some() {
            assert_eq!(steps, kc, "an A read in place has no padding steps");
        } else {
            pack(
                ap,
                kernel.a_panel_rows(),
                per,
                compute,
                a,
                rows.start,
                mc,
                pc,
                kc,
                steps,
            );
        }
        // Pieces start at different panels (by where their rows lie), so threads running at the same
        // time pack different panels instead of queueing for the same one.
        let shift = (rows.start / mr) * panels.len() / m.div_ceil(mr);
        for i in 0..panels.len() {
            let jr = panels.start + (i + shift) % panels.len();
            let col = jr * nr;
            let live_cols = nr.min(n - col);
            let bpanel = match direct_b {
                Some(words) if live_cols == nr => BPanel {
                    words: &words[pc * n + col..],
                    ld: n,
                },
                _ => BPanel {
                    words: packed_b.panel(b, (kernel, compute), n, slice, jr, (pc, kc, steps)),
                    ld: nr,
                },
            };
            for (ir, packed) in ap.chunks_exact(mr * steps).enumerate() {
                let row = rows.start + ir * mr;
                let live_rows = mr.min(m - row);
                let apanel = match direct_a {
                    Some(words) => APanel {
                        words: &words[row * a.row_stride + pc..],
                        row: a.row_stride,
                        step: 1,
                    },
                    None => APanel {
                        words: packed,
                        row: 1,
                        step: mr,
                    },
                };
                // The rows the kernel computes: only the live ones where it can (an A read in place
                // has no padding rows), else the whole tile.
                let kernel_rows = if kernel.computes_partial_rows() {
                    live_rows
                } else {
                    mr
                };
                // A tile that does not fit C (a partial panel, or padding rows) is computed aside, and
                // its live part kept.
                let aside = live_cols < nr || kernel_rows > live_rows;
                let mut tile = MaybeUninit::<[f32; MAX_TILE]>::uninit();
                let (c, ldc, add_in_kernel) = if aside {
                    (tile.as_mut_ptr().cast::<f32>(), nr, false)
                } else {
                    // SAFETY: (row, col) lies inside the m × n accumulator.
                    (unsafe { out.0.add(row * n + col) }, n, add)
                };
                // SAFETY: `c` holds `kernel_rows` rows of nr values `ldc` apart: the tile aside
                // (mr × nr), or the tile in the accumulator, which only this chunk's thread writes.
                unsafe {
                    microkernel(
                        kernel,
                        kernel_rows,
                        steps,
                        apanel,
                        bpanel,
                        c,
                        ldc,
                        add_in_kernel,
                    )
                };
                if aside {
                    for r in 0..live_rows {
                        for j in 0..live_cols {
                            // SAFETY: the kernel wrote rows 0..kernel_rows (at least the live ones) of
                            // the tile aside; (row + r, col + j) is inside the accumulator, in this
                            // chunk's tile.
                            unsafe {
                                let v = tile.as_ptr().cast::<f32>().add(r * nr + j).read();
                                let dst = out.0.add((row + r) * n + col + j);
                                *dst = if add { *dst + v } else { v };
                            }
                        }
                    }
                }
            }
        }
    });
}

/// The largest register (or tile) block of any microkernel, in f32 values.
const MAX_TILE: usize = 32 * 32;

/// B operand of one microkernel call: step `s`'s `NR` words start at `words[s·ld]`. A packed panel has
/// `ld = NR`; an f32 B read in place (row-major, `k × n`) has `ld = n`.
#[derive(Clone, Copy)]
struct BPanel<'a> {
    words: &'a [u32],
    ld: usize,
}

/// A operand of one microkernel call: row `r`'s value at step `s` is `words[r·row + s·step]`.
#[derive(Clone, Copy)]
struct APanel<'a> {
    words: &'a [u32],
    row: usize,
    step: usize,
}

/// Runs the microkernel: `c[r·ldc + j] (+)= Σ_s A(r, s) · b.words[s·b.ld + j]` for the tile's first
/// `rows` rows (all `MR` of them unless `kernel.computes_partial_rows()`) and all `NR` columns. A is
/// `a.words[r·a.row + s·a.step]` for a kernel that `computes_partial_rows`; every other kernel reads a
/// packed panel of `MR · steps` words in its own layout (`a.row` 1, `a.step` MR).
///
/// # Safety
/// `c` must be valid for reads and writes of `rows` rows of `NR` values with row stride `ldc`, and the
/// kernel must suit the detected CPU (`kernel_for` with the detected level).
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn microkernel(
    kernel: Kernel,
    rows: usize,
    steps: usize,
    a: APanel,
    b: BPanel,
    c: *mut f32,
    ldc: usize,
    add: bool,
) {
    let (mr, nr) = kernel.tile();
    assert!(
        rows == mr || (kernel.computes_partial_rows() && (1..mr).contains(&rows)),
        "{kernel:?} computes whole tiles of {mr} rows, not {rows}"
    );
    assert!(steps > 0, "a microkernel call runs at least one step");
    assert!(
        a.words.len() > (rows - 1) * a.row + (steps - 1) * a.step
            && b.words.len() >= (steps - 1) * b.ld + nr
    );
    assert!(
        (a.row, a.step) == (1, mr) || kernel.computes_partial_rows(),
        "{kernel:?} reads packed A panels"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller guarantees `c` and the ISA; the assertion above bounds the panels.
    unsafe {
        let (a, lda_row, lda_step, ldb, b) =
            (a.words.as_ptr(), a.row, a.step, b.ld, b.words.as_ptr());
        match kernel {
            Kernel::Avx512F32 => x86::f32_x32(
                rows,
                steps,
                a.cast(),
                (lda_row, lda_step),
                b.cast(),
                ldb,
                c,
                ldc,
                add,
            ),
            Kernel::Avx2F32 => x86::f32_6x16(steps, a.cast(), b.cast(), ldb, c, ldc, add),
            Kernel::Avx512Bf16 => {
                assert_eq!(ldb, nr, "pair kernels read packed panels");
                x86::bf16_12x32(steps, a, b, c, ldc, add)
            }
            Kernel::Amx { emulated } => {
                assert_eq!(ldb, nr, "pair kernels read packed panels");
                if emulated {
                    amx::kernel_32x32(&mut amx::Emulated::new(), steps, a, b, c, ldc, add)
                } else {
                    amx::kernel_32x32(&mut amx::Hardware, steps, a, b, c, ldc, add)
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("the fast GEMM runs only on x86_64");
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{CHUNK, MAX_PANEL_ROWS};
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// Stores (or adds) the rows × 32 accumulators at `c` with row stride `ldc`. A macro, not a function,
    /// so the accumulators stay in registers (a `#[target_feature]` function cannot be forced inline).
    macro_rules! store_rows_x32 {
        ($acc:expr, $c:expr, $ldc:expr, $add:expr) => {
            for (r, acc) in $acc.iter().enumerate() {
                unsafe {
                    let row = $c.add(r * $ldc);
                    let (mut v0, mut v1) = (acc[0], acc[1]);
                    if $add {
                        v0 = _mm512_add_ps(_mm512_loadu_ps(row), v0);
                        v1 = _mm512_add_ps(_mm512_loadu_ps(row.add(16)), v1);
                    }
                    _mm512_storeu_ps(row, v0);
                    _mm512_storeu_ps(row.add(16), v1);
                }
            }
        };
    }

    /// The first `rows` (1 to 12) rows of a 12 × 32 f32 tile with AVX-512 FMA (`f32_rows_x32`).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn f32_x32(
        rows: usize,
        steps: usize,
        a: *const f32,
        lda: (usize, usize),
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        add: bool,
    ) {
        macro_rules! by_rows {
            ($($r:literal)*) => {
                match rows {
                    $($r => unsafe { f32_rows_x32::<$r>(steps, a, lda, b, ldb, c, ldc, add) },)*
                    _ => unreachable!("an f32 tile has 1 to 12 rows, not {rows}"),
                }
            };
        }
        by_rows!(12 1 2 3 4 5 6 7 8 9 10 11)
    }

    /// `R` rows of a 12 × 32 f32 tile with AVX-512 FMA: 2·R accumulators, two B vectors per step
    /// (`ldb` apart), A broadcast per row: row `r`'s step `s` at `a[r·lda.0 + s·lda.1]` (a packed panel
    /// of 12 rows is `(1, 12)`; an A read in place, `(row stride, 1)`).
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn f32_rows_x32<const R: usize>(
        steps: usize,
        a: *const f32,
        (lda_row, lda_step): (usize, usize),
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        add: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let step = |acc: &mut [[__m512; 2]; R], s: usize| {
            let (b0, b1) = unsafe {
                (
                    _mm512_loadu_ps(b.add(s * ldb)),
                    _mm512_loadu_ps(b.add(s * ldb + 16)),
                )
            };
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(unsafe { *a.add(s * lda_step + r * lda_row) });
                acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
            }
        };
        let tail = steps.saturating_sub(PREFETCH_STEPS);
        for s in 0..tail {
            step(&mut acc, s);
        }
        unsafe { prefetch_tile(c, ldc, R) };
        for s in tail..steps {
            step(&mut acc, s);
        }
        store_rows_x32!(acc, c, ldc, add);
    }

    /// f16 values widened to f32 with F16C, 8 at a time (exact). Short runs are the common case here
    /// (a panel's step), so this is called directly rather than through the dispatching cast kernel.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn widen_f16(src: &[half::f16], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let mut i = 0;
        while i + 8 <= n {
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(i).cast());
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
            i += 8;
        }
        for j in i..n {
            dst[j] = src[j].to_f32();
        }
    }

    /// Writes whole blocks of 16 depth steps of a panel (step `s` of row `r` to `dst[s·PR + r]`), each
    /// group of 16 rows transposed in registers instead of moved one word at a time; returns the steps
    /// written (the rest, under 16, are left to the caller).
    ///
    /// # Safety
    /// AVX-512F must be available; steps `0..len` of rows `0..PR` must be written; `dst` must hold
    /// `len · PR` words.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn interleave_avx512<const PR: usize>(
        rows: &[[MaybeUninit<u32>; CHUNK]; MAX_PANEL_ROWS],
        len: usize,
        dst: &mut [u32],
    ) -> usize {
        assert!(PR <= MAX_PANEL_ROWS && dst.len() >= len * PR);
        let mut s0 = 0;
        while s0 + 16 <= len {
            for g in 0..PR.div_ceil(16) {
                let live = (PR - 16 * g).min(16);
                let mut v = [_mm512_setzero_si512(); 16];
                for (i, v) in v.iter_mut().enumerate().take(live) {
                    // SAFETY: steps s0..s0 + 16 of this row are written (s0 + 16 <= len <= CHUNK).
                    *v = unsafe { _mm512_loadu_si512(rows[16 * g + i][s0..].as_ptr().cast()) };
                }
                let t = transpose_16x16(v);
                let mask: __mmask16 = if live == 16 { !0 } else { (1 << live) - 1 };
                for (j, t) in t.iter().enumerate() {
                    // SAFETY: lanes 16g..16g + live of step s0 + j lie inside `dst` (checked above).
                    unsafe {
                        let at = dst.as_mut_ptr().add((s0 + j) * PR + 16 * g);
                        _mm512_mask_storeu_epi32(at.cast(), mask, *t);
                    }
                }
            }
            s0 += 16;
        }
        s0
    }

    /// Transposes 16 vectors of 16 words: result `j` holds word `j` of every input, in input order.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn transpose_16x16(r: [__m512i; 16]) -> [__m512i; 16] {
        // Within each 128-bit lane: pairs of rows interleaved by words, then by double words, so that
        // u[4q + c] holds rows 4q..4q+4 of column 4L + c in lane L.
        let mut u = [_mm512_setzero_si512(); 16];
        for q in 0..4 {
            let (a, b, c, d) = (r[4 * q], r[4 * q + 1], r[4 * q + 2], r[4 * q + 3]);
            let (ab_lo, ab_hi) = (_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
            let (cd_lo, cd_hi) = (_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
            u[4 * q] = _mm512_unpacklo_epi64(ab_lo, cd_lo);
            u[4 * q + 1] = _mm512_unpackhi_epi64(ab_lo, cd_lo);
            u[4 * q + 2] = _mm512_unpacklo_epi64(ab_hi, cd_hi);
            u[4 * q + 3] = _mm512_unpackhi_epi64(ab_hi, cd_hi);
        }
        // Then whole lanes: [a.L0, a.L2, b.L0, b.L2] (0x88) and [a.L1, a.L3, b.L1, b.L3] (0xDD), twice.
        let mut v = [_mm512_setzero_si512(); 16];
        for c in 0..4 {
            v[c] = _mm512_shuffle_i32x4::<0x88>(u[c], u[4 + c]);
            v[4 + c] = _mm512_shuffle_i32x4::<0xDD>(u[c], u[4 + c]);
            v[8 + c] = _mm512_shuffle_i32x4::<0x88>(u[8 + c], u[12 + c]);
            v[12 + c] = _mm512_shuffle_i32x4::<0xDD>(u[8 + c], u[12 + c]);
        }
        let mut out = [_mm512_setzero_si512(); 16];
        for c in 0..4 {
            out[c] = _mm512_shuffle_i32x4::<0x88>(v[c], v[8 + c]);
            out[8 + c] = _mm512_shuffle_i32x4::<0xDD>(v[c], v[8 + c]);
            out[4 + c] = _mm512_shuffle_i32x4::<0x88>(v[4 + c], v[12 + c]);
            out[12 + c] = _mm512_shuffle_i32x4::<0xDD>(v[4 + c], v[12 + c]);
        }
        out
    }

    /// The bf16 bits of f32 values, rounded to nearest even with integer ops, 8 at a time: bit for bit
    /// what `half::bf16::from_f32` gives (subnormals kept, NaN quieted), without a call per value.
    #[target_feature(enable = "avx2")]
    pub unsafe fn round_to_bf16_bits(src: &[f32], dst: &mut [u16]) {
        let n = src.len().min(dst.len());
        let mut i = 0;
        unsafe {
            let magnitude = _mm256_set1_epi32(0x7FFF_FFFF);
            let infinity = _mm256_set1_epi32(0x7F80_0000);
            let half_ulp = _mm256_set1_epi32(0x7FFF);
            let one = _mm256_set1_epi32(1);
            let quiet = _mm256_set1_epi32(0x0040_0000);
            while i + 16 <= n {
                let round = |x: __m256i| {
                    // x + 0x7FFF + (bit 16 of x) carries into the upper half exactly when RNE rounds up.
                    let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(x), one);
                    let rounded = _mm256_add_epi32(_mm256_add_epi32(x, half_ulp), lsb);
                    let nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, magnitude), infinity);
                    let value = _mm256_blendv_epi8(rounded, _mm256_or_si256(x, quiet), nan);
                    _mm256_srli_epi32::<16>(value)
                };
                let lo = round(_mm256_loadu_si256(src.as_ptr().add(i).cast()));
                let hi = round(_mm256_loadu_si256(src.as_ptr().add(i + 8).cast()));
                // Packing works within 128-bit lanes: reorder the 64-bit quarters to restore order.
                let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(lo, hi));
                _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast(), packed);
                i += 16;
            }
        }
        for j in i..n {
            dst[j] = half::bf16::from_f32(src[j]).to_bits();
        }
    }

    /// f32 values rounded to f16 (to nearest even, as a cast does) and widened back, with F16C.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn round_through_f16(src: &[f32], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let mut i = 0;
        while i + 8 <= n {
            unsafe {
                let x = _mm256_loadu_ps(src.as_ptr().add(i));
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
            i += 8;
        }
        for j in i..n {
            dst[j] = half::f16::from_f32(src[j]).to_f32();
        }
    }

    /// Depth steps before its end at which a microkernel prefetches its C tile: late enough that the
    /// streaming A and B panels do not evict the lines again, early enough to hide a miss to memory.
    const PREFETCH_STEPS: usize = 24;

    /// Asks for the `rows` rows of a 32-column f32 tile of C to be in L1 by the time the microkernel stores
    /// it: C is touched once per depth slice, so its lines are usually cold, and a tile's rows are too
    /// far apart for the hardware prefetcher.
    #[inline(always)]
    unsafe fn prefetch_tile(c: *const f32, ldc: usize, rows: usize) {
        for r in 0..rows {
            unsafe {
                let row = c.add(r * ldc).cast::<i8>();
                _mm_prefetch::<_MM_HINT_T0>(row);
                _mm_prefetch::<_MM_HINT_T0>(row.add(64));
            }
        }
    }

    /// 6 × 16 f32 tile with AVX2 FMA: 12 accumulators.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn f32_6x16(
        steps: usize,
        a: *const f32,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        add: bool,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; 6];
        for s in 0..steps {
            let (b0, b1) = unsafe {
                (
                    _mm256_loadu_ps(b.add(s * ldb)),
                    _mm256_loadu_ps(b.add(s * ldb + 8)),
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
                let (mut v0, mut v1) = (acc[0], acc[1]);
                if add {
                    v0 = _mm256_add_ps(_mm256_loadu_ps(row), v0);
                    v1 = _mm256_add_ps(_mm256_loadu_ps(row.add(8)), v1);
                }
                _mm256_storeu_ps(row, v0);
                _mm256_storeu_ps(row.add(8), v1);
            }
        }
    }

    /// 12 × 32 tile from bf16 pairs with AVX512-BF16: each `vdpbf16ps` adds two products per lane into
    /// f32. A words hold (a[r, 2s], a[r, 2s+1]); B words hold (b[2s, j], b[2s+1, j]).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn bf16_12x32(
        steps: usize,
        a: *const u32,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        add: bool,
    ) {
        unsafe { prefetch_tile(c, ldc, 12) };
        let mut acc = [[_mm512_setzero_ps(); 2]; 12];
        for s in 0..steps {
            let (b0, b1): (__m512bh, __m512bh) = unsafe {
                (
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        b.add(s * 32).cast(),
                    )),
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        b.add(s * 32 + 16).cast(),
                    )),
                )
            };
            for (r, acc) in acc.iter_mut().enumerate() {
                let av: __m512bh =
                    unsafe { std::mem::transmute(_mm512_set1_epi32(*a.add(s * 12 + r) as i32)) };
                acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
            }
        }
        store_rows_x32!(acc, c, ldc, add);
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::x86::round_to_bf16_bits;
    use super::{CHUNK, MAX_PANEL_ROWS, interleave, read_b_in_place};
    use std::mem::MaybeUninit;

    /// Where the benchmarks put the line between reading an f32 B in place and packing it (arguments:
    /// row tiles, row blocks, n, k).
    #[test]
    fn b_is_read_in_place_where_packing_would_not_pay() {
        // 96 × 768 × 3072: one block of 8 tiles, B read in place whatever its size.
        assert!(read_b_in_place(8, 1, 768, 3072));
        // 128 × 768 × 3072: two blocks would each stream all 9 MiB of B, so it is packed once.
        assert!(!read_b_in_place(11, 2, 768, 3072));
        // 128 × 1024 × 1024: two blocks, but B is only 4 MiB.
        assert!(read_b_in_place(11, 2, 1024, 1024));
        // 2048 × 512 × 512: many tiles, B of 1 MiB with rows 2 KiB apart; at n = 1024 (4 KiB) packed.
        assert!(read_b_in_place(171, 22, 512, 512));
        assert!(!read_b_in_place(86, 11, 1024, 1024));
    }

    /// Interleaving puts step `s` of row `r` at `s·PR + r` and zeros after the live rows, for every
    /// panel height, whole and partial panels, and lengths around the 16-step blocks of the vector path.
    #[test]
    fn interleave_moves_every_word_to_its_step() {
        let mut rows = [[MaybeUninit::<u32>::uninit(); CHUNK]; MAX_PANEL_ROWS];
        for (r, row) in rows.iter_mut().enumerate() {
            for (s, word) in row.iter_mut().enumerate() {
                word.write((r * 1000 + s) as u32 + 1);
            }
        }
        for pr in [6, 12, 16, 32] {
            for live in [pr, pr - 1, 1] {
                for len in [1, 15, 16, 17, 33, CHUNK] {
                    let mut dst = vec![u32::MAX; len * pr];
                    interleave(&rows, live, len, &mut dst, pr);
                    for s in 0..len {
                        for r in 0..pr {
                            let expected = if r < live {
                                (r * 1000 + s) as u32 + 1
                            } else {
                                0
                            };
                            assert_eq!(dst[s * pr + r], expected, "pr {pr} live {live} len {len}");
                        }
                    }
                }
            }
        }
    }

    /// The vectorized rounding used while packing gives `half`'s bits for every upper half combined with
    /// the lower halves where rounding decides (ties, either side of them, zero, all ones): ties to
    /// even, carries into the exponent and to infinity, subnormals, infinities and every NaN class;
    /// and for a spread of other patterns, at every offset of the 16-wide loop and its scalar tail.
    #[test]
    fn packing_rounds_f32_to_bf16_as_half_does() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let lows = [0u32, 1, 0x7FFF, 0x8000, 0x8001, 0xC000, 0xFFFF];
        let mut patterns: Vec<u32> = (0..=0xFFFFu32)
            .flat_map(|high| lows.iter().map(move |&low| high << 16 | low))
            .collect();
        patterns.extend((0..1_000_003u32).map(|i| i.wrapping_mul(0x9E37_79B1)));
        let values: Vec<f32> = patterns.iter().map(|&b| f32::from_bits(b)).collect();
        for offset in [0, 3] {
            let src = &values[offset..];
            let mut bits = vec![0u16; src.len()];
            // SAFETY: AVX2 was detected above.
            unsafe { round_to_bf16_bits(src, &mut bits) };
            for (v, b) in src.iter().zip(&bits) {
                let expected = half::bf16::from_f32(*v).to_bits();
                assert_eq!(*b, expected, "{:#010x}", v.to_bits());
            }
        }
    }
}
