//! AVX-512 bodies of the 8-bit optimizer steps, one full block of 256 elements at a time (16 vectors):
//! dequantize, update in f32, block absmax, requantize with an exact nearest-code search equal to
//! bitsandbytes' binary search, and the sign fix. Gathers are slow on CPUs with the gather-data-sampling
//! mitigation, so lookups are permutes over tables in registers or L1:
//! - dequantizing looks up 64 codes at once in byte planes of the entries (`vpermi2b`, VBMI), a quarter
//!   of the instructions of f32 permutes over 16 lanes;
//! - the search (`nearest_fast`) places `|x|` in its decade by its exponent and inside the decade by
//!   an affine position whose distance to every midpoint is checked; only lanes within a margin of a
//!   midpoint (and NaN) run the slower `nearest` with its midpoint lookup.
//!
//! The search was the cost: on the development machine (Zen 5, one thread, in cache, whole Adam step)
//! the binary search in registers ran at 3.8 GB/s, the bracket table of [`Codebook::nearest_fast`]
//! gathered at 5.8, `nearest` with f32-permute dequantization at 6.6, and these at 16.
//!
//! Every operation is the scalar kernel's, in the same order, with IEEE division and square root and no
//! fused multiply-adds, so the codes, scales and weights are bit-identical to the scalar path (which
//! handles partial blocks and CPUs without AVX-512, and which the tests compare against).

use super::super::optim8::Adam8Consts;
use super::super::quant8::{Codebook, QUANT_BLOCK};
use std::arch::x86_64::*;

/// Lanes per vector.
const LANES: usize = 16;

/// Whether this CPU (under the [`isa`](super::super::isa::isa) limit) runs the AVX-512 bodies.
pub(crate) fn available() -> bool {
    // VBMI for the byte permutes of `dequantize64` (every AVX-512 CPU since Ice Lake and Zen 4).
    super::super::isa::isa() >= super::super::isa::Isa::Avx512
        && std::is_x86_feature_detected!("avx512vbmi")
}

/// A codebook's entries, midpoints and decade layout, for in-register lookups.
#[repr(C, align(64))]
pub(crate) struct Tables {
    /// The 256 entries.
    values: [f32; 256],
    /// The 255 midpoints between neighbouring entries, padded with +inf.
    mids: [f32; 256],
    /// The first positive entry of each decade `10^-6 … 10^0`: `|x|` at or above the `d`-th is in
    /// decade `d` or above.
    decade_start: [f32; 8],
    /// By decade number `j` (0: below the first decade, `d + 1` for decade `d`): `1/10^(d-6)`, the
    /// entries per unit of `|x|/10^(d-6)` (`n/0.9`), the code of the decade's first positive entry, and
    /// the decade's last offset (`n - 1`).
    inv_scale: [f32; 16],
    per_unit: [f32; 16],
    base: [i32; 16],
    last: [i32; 16],
    /// Byte `k` of entry `i`'s bits at `planes[k][i]`: [`dequantize64`] looks up 64 codes at once with
    /// byte permutes, four times fewer instructions than f32 permutes over 16 lanes.
    planes: [[u8; 256]; 4],
    /// By octave (`max(exponent, 96) mod 32` of `|x|`, so octave 31 is [1, 2) and octave 0 everything
    /// below 2^-30), for [`fast_codes`]: the number of its ranges that start below the octave, and the
    /// start of the one that begins inside it (+inf if none; at most one does). Range `j` starts just
    /// above the (tie-adjusted) midpoint between the zero code or the last entry of decade `j - 2`
    /// and the next entry, so the range number says which decade's line places `|x|` (`j - 1`, or
    /// number 8 for 1.0), and the midpoints between decades need no comparison of their own.
    octave_decade: [i32; 32],
    octave_start: [f32; 32],
    /// By decade number, `FIXED` times: `|x|·slope - offset` is the position of `|x|` in the
    /// decade's entries (entry `k` at `k + 1/2`, the midpoint between `k - 1` and `k` near `k`), for
    /// [`fast_codes`]; `offset` itself is only kept inside `start_offset`.
    slope: [f32; 16],
    /// By decade number, `FIXED` times `offset - base` for the `offset` above, so that
    /// `|x|·slope - start_offset` is the position among all codes (`base + p`, entry `c` at
    /// `c + 1/2`) in fixed point, and the decade's last code `base + last`: [`fast_codes`] shifts to
    /// the code itself. Number 0 (below every decade) and 8 (1.0), of slope 0, sit at their code
    /// plus 1/2.
    start_offset: [f32; 16],
    last_code: [i32; 16],
    /// By decade number: the midpoint above the decade's last entry (to the next decade's first),
    /// lowered by one ulp where a tie rounds up (odd lower code), so that `|x| > top` is the rounding;
    /// the f32 above it starts the next range of `octave_start`.
    top: [f32; 16],
    signed: bool,
}

/// The f32 `m` with `x > m` exactly when [`Codebook::nearest`] rounds `x` (non-negative) up from
/// `code` past the midpoint `mid`: ties go to the even code, so an odd `code` rounds a tie up.
fn tie_adjusted(mid: f32, code: i32) -> f32 {
    if code % 2 == 1 {
        f32::from_bits(mid.to_bits() - 1)
    } else {
        mid
    }
}

/// Fraction bits of [`fast_codes`]' fixed-point position. A lane whose position is within 2 units
/// (`NEAR` = 1/2048 entries) of an integer takes the exact search: the position's error is far below
/// that (`fast_search_margin_holds` checks every midpoint), and few inputs fall this close (about 1
/// in 2000 per midpoint crossing).
const FIXED_BITS: u32 = 12;
/// `2^FIXED_BITS`.
const FIXED: f32 = (1 << FIXED_BITS) as f32;

/// The order [`dequantize64`] permutes 64 codes into, so that interleaving the four byte planes (which
/// works inside 128-bit lanes) leaves the f32 entries in element order: position `16·lane + 4·q + s`
/// holds code `16·q + 4·lane + s`.
const INTERLEAVE: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut pos = 0;
    while pos < 64 {
        let (lane, q, s) = (pos / 16, (pos % 16) / 4, pos % 4);
        t[pos] = (16 * q + 4 * lane + s) as u8;
        pos += 1;
    }
    t
};

impl Tables {
    fn of(book: &Codebook) -> Box<Tables> {
        let m = book.midpoints();
        let signed = book.is_signed();
        let zero = i32::from(book.zero_code());
        // Decade d holds 2^d positive entries (signed) or 2^(d+1) (unsigned), after those below it.
        let count = |d: i32| if signed { 1 << d } else { 1 << (d + 1) };
        let first = |d: i32| zero + 1 + (0..d).map(count).sum::<i32>();
        let mut t = Tables {
            values: *book.values(),
            mids: std::array::from_fn(|i| if i < 255 { m[i] } else { f32::INFINITY }),
            decade_start: [f32::INFINITY; 8],
            inv_scale: [0.0; 16],
            per_unit: [0.0; 16],
            base: [zero; 16],
            last: [0; 16],
            planes: std::array::from_fn(|k| {
                std::array::from_fn(|i| (book.values()[i].to_bits() >> (8 * k)) as u8)
            }),
            octave_decade: [0; 32],
            octave_start: [f32::INFINITY; 32],
            slope: [0.0; 16],
            start_offset: [-(zero as f32 + 0.5) * FIXED; 16],
            last_code: [zero; 16],
            top: [0.0; 16],
            signed,
        };
        t.top[0] = tie_adjusted(m[zero as usize], zero);
        for d in 0..7 {
            let j = d as usize + 1;
            t.decade_start[d as usize] = book.values()[first(d) as usize];
            t.inv_scale[j] = 10f64.powi(6 - d) as f32;
            t.per_unit[j] = (f64::from(count(d)) / 0.9) as f32;
            t.base[j] = first(d);
            t.last[j] = count(d) - 1;
            let per_unit = f64::from(count(d)) / 0.9;
            t.slope[j] = (per_unit * 10f64.powi(6 - d)) as f32;
            // Times a power of two: the same roundings as without it.
            t.slope[j] *= FIXED;
            t.start_offset[j] = (0.1 * per_unit - f64::from(first(d))) as f32 * FIXED;
            t.last_code[j] = first(d) + count(d) - 1;
            let last = first(d) + count(d) - 1;
            t.top[j] = tie_adjusted(m[last as usize], last);
        }
        // Number 8: 1.0 alone.
        t.start_offset[8] = -255.5 * FIXED;
        t.last_code[8] = 255;
        let starts: [f32; 8] = std::array::from_fn(|j| f32::from_bits(t.top[j].to_bits() + 1));
        for k in 0..32 {
            let low = if k == 0 { 0.0 } else { 2f32.powi(k - 31) };
            let high = 2f32.powi(k - 30);
            t.octave_decade[k as usize] = starts.iter().filter(|&&s| s < low).count() as i32;
            let mut inside = starts.iter().filter(|&&s| (low..high).contains(&s));
            if let Some(&s) = inside.next() {
                t.octave_start[k as usize] = s;
            }
            assert!(inside.next().is_none(), "two decades start in octave {k}");
        }
        Box::new(t)
    }

    /// The tables of the signed and unsigned codebooks, built once.
    fn signed() -> &'static Tables {
        static T: std::sync::OnceLock<Box<Tables>> = std::sync::OnceLock::new();
        T.get_or_init(|| Tables::of(Codebook::signed()))
    }

    fn unsigned() -> &'static Tables {
        static T: std::sync::OnceLock<Box<Tables>> = std::sync::OnceLock::new();
        T.get_or_init(|| Tables::of(Codebook::unsigned()))
    }
}

/// `table[idx]` for a table of `16·N` entries (N a power of two from 2), idx in range: two-table
/// permutes over each 32 entries, then blends on the higher index bits.
#[inline]
#[target_feature(enable = "avx512f")]
fn lookup<const N: usize>(table: &[f32], idx: __m512i) -> __m512 {
    debug_assert_eq!(table.len(), 16 * N);
    let mut parts = [_mm512_setzero_ps(); 8];
    for (k, part) in parts.iter_mut().enumerate().take(N / 2) {
        // SAFETY: the table holds 16·N entries (unaligned loads).
        let (a, b) = unsafe {
            (
                _mm512_loadu_ps(table.as_ptr().add(32 * k)),
                _mm512_loadu_ps(table.as_ptr().add(32 * k + 16)),
            )
        };
        *part = _mm512_permutex2var_ps(a, idx, b);
    }
    let mut width = N / 2;
    let mut bit = 32;
    while width > 1 {
        let high = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(bit));
        for k in 0..width / 2 {
            parts[k] = _mm512_mask_blend_ps(high, parts[2 * k], parts[2 * k + 1]);
        }
        width /= 2;
        bit *= 2;
    }
    parts[0]
}

/// Codes (as i32 lanes) of the entries nearest to `x`, equal to [`Codebook::nearest`] (bitsandbytes'
/// binary search) for every f32, without a table too large for registers:
///
/// 1. on `a = |x|`: the decade, by comparison with each decade's first entry; inside it the entries
///    are evenly spaced (`10^(d-6)·linspace(0.1, 1)` midpoints), so the entry at or below `a` is
///    `base + ⌊(a/10^(d-6) - 0.1)·n/0.9 - 1/64⌋`, clamped to the decade. The 1/64 margin covers the f32
///    rounding of that estimate, so it is the nearest code or the one below it;
/// 2. one exact comparison with the midpoint above the estimate decides (ties to the even code, where the
///    binary search ends);
/// 3. negative `x`: the signed codebook's negative half mirrors the positive one (`q[254 - i] = -q[i]`,
///    the same midpoints negated, and 254 - i has the parity of i), so the code is `254 - code(|x|)`
///    (capped at 254: +1.0 has no mirror); the unsigned codebook gives 0. NaN gives 0.
#[inline]
#[target_feature(enable = "avx512f")]
fn nearest(t: &Tables, x: __m512) -> __m512i {
    let a = abs(x);
    let one = _mm512_set1_epi32(1);
    let mut j = _mm512_setzero_si512();
    for &start in &t.decade_start[..7] {
        let inside = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(a, _mm512_set1_ps(start));
        j = _mm512_mask_add_epi32(j, inside, j, one);
    }
    // SAFETY: the tables are 16 values each (unaligned loads).
    let (inv_scale, per_unit, base, last) = unsafe {
        (
            _mm512_loadu_ps(t.inv_scale.as_ptr()),
            _mm512_loadu_ps(t.per_unit.as_ptr()),
            _mm512_loadu_si512(t.base.as_ptr().cast()),
            _mm512_loadu_si512(t.last.as_ptr().cast()),
        )
    };
    let position = _mm512_mul_ps(
        _mm512_sub_ps(
            _mm512_mul_ps(a, _mm512_permutexvar_ps(j, inv_scale)),
            _mm512_set1_ps(0.1),
        ),
        _mm512_permutexvar_ps(j, per_unit),
    );
    // Capped so that huge values and infinity convert to a large offset, not to i32::MIN.
    let position = _mm512_min_ps(
        _mm512_sub_ps(position, _mm512_set1_ps(1.0 / 64.0)),
        _mm512_set1_ps(1024.0),
    );
    // Truncation is the floor for positions >= 0, and negative ones are clamped to 0 anyway.
    let offset = _mm512_max_epi32(_mm512_cvttps_epi32(position), _mm512_setzero_si512());
    let offset = _mm512_min_epi32(offset, _mm512_permutexvar_epi32(j, last));
    let estimate = _mm512_add_epi32(_mm512_permutexvar_epi32(j, base), offset);
    let mid = lookup::<16>(&t.mids, estimate);
    let above = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, mid);
    let tie = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a, mid);
    let odd = _mm512_test_epi32_mask(estimate, one);
    let code = _mm512_mask_add_epi32(estimate, above | (tie & odd), estimate, one);
    let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_setzero_ps());
    let code = if t.signed {
        let capped = _mm512_min_epi32(code, _mm512_set1_epi32(254));
        _mm512_mask_sub_epi32(code, negative, _mm512_set1_epi32(254), capped)
    } else {
        _mm512_mask_blend_epi32(negative, code, _mm512_setzero_si512())
    };
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    _mm512_mask_blend_epi32(nan, code, _mm512_setzero_si512())
}

/// [`nearest`] in about half the instructions, for the common case, which is exact by construction:
///
/// 1. the decade from `|x|`'s octave (the exponent bits index two 32-entry tables: the ranges below
///    the octave, and one comparison with the start of a range inside it), not seven comparisons.
///    Ranges switch at the midpoints between decades (tie rule folded in), so those midpoints need
///    no comparison of their own;
/// 2. the position `p = |x|·slope - offset` in the decade's entries, in fixed point with the
///    decade's first code added: midpoint `r` (between offsets `r - 1` and `r`) sits within
///    `NEAR = 1/2048` of `p = r` (checked for every midpoint by `fast_search_margin_holds`), and `p`
///    is monotonic in `|x|`, so where `p` is farther than `NEAR` from every integer, its integer part
///    is the code of the nearest entry (clamped to the decade's last): no midpoint lookup;
/// 3. lanes near a midpoint, NaN, or above 1 (not produced by the kernels: they divide by the
///    block's absmax) take [`nearest`], rarely: one in about 2000 per midpoint crossed.
///
/// `SIGNED` says which codebook `t` is (a constant, so the mirroring has no branch). With `KEEP_SIGN`
/// the result is the code after `quantize_block`'s sign fix for the value `v` that `x` was divided
/// from (by a positive absmax, so they have the same sign bit): for every lane but NaN that fix only
/// moves a negative value that rounds to zero from 127 to 126, which the mirroring does with one
/// clamp, instead of the seven instructions of [`sign_fix`]; the rare lanes take `sign_fix` itself.
///
/// The kernels call its two halves ([`fast_codes`], then [`exact`] once per block); the tests call it.
#[cfg_attr(not(test), allow(dead_code))]
#[inline]
#[target_feature(enable = "avx512f")]
fn nearest_fast<const SIGNED: bool, const KEEP_SIGN: bool>(
    t: &Tables,
    x: __m512,
    v: __m512,
) -> __m512i {
    let (fast, slow) = fast_codes::<SIGNED, KEEP_SIGN>(t, x);
    if slow == 0 {
        return fast;
    }
    _mm512_mask_blend_epi32(slow, fast, exact::<KEEP_SIGN>(t, x, v))
}

/// The branch-free part of [`nearest_fast`]: its codes, right except in the lanes of the returned mask
/// (near a midpoint, NaN or above 1), which [`exact`] must decide. [`requantize`] collects the masks
/// of a whole block and branches once: a branch per vector on the mask cost a fifth of the Adam step.
#[inline]
#[target_feature(enable = "avx512f")]
fn fast_codes<const SIGNED: bool, const KEEP_SIGN: bool>(
    t: &Tables,
    x: __m512,
) -> (__m512i, __mmask16) {
    debug_assert!(t.signed == SIGNED && (SIGNED || !KEEP_SIGN));
    let a = abs(x);
    let one = _mm512_set1_epi32(1);
    // SAFETY: the tables are 32 or 16 entries each (unaligned loads).
    let (octave_decade, octave_start, slope, start_offset, last_code) = unsafe {
        (
            (
                _mm512_loadu_si512(t.octave_decade.as_ptr().cast()),
                _mm512_loadu_si512(t.octave_decade[16..].as_ptr().cast()),
            ),
            (
                _mm512_loadu_ps(t.octave_start.as_ptr()),
                _mm512_loadu_ps(t.octave_start[16..].as_ptr()),
            ),
            _mm512_loadu_ps(t.slope.as_ptr()),
            _mm512_loadu_ps(t.start_offset.as_ptr()),
            _mm512_loadu_si512(t.last_code.as_ptr().cast()),
        )
    };
    // The permutes read the low 5 bits: exponents 96..=127 are octaves 0..=31.
    let octave = _mm512_max_epi32(
        _mm512_srli_epi32::<23>(_mm512_castps_si512(a)),
        _mm512_set1_epi32(96),
    );
    let j = _mm512_permutex2var_epi32(octave_decade.0, octave, octave_decade.1);
    let start = _mm512_permutex2var_ps(octave_start.0, octave, octave_start.1);
    let j = _mm512_mask_add_epi32(j, _mm512_cmp_ps_mask::<_CMP_GE_OQ>(a, start), j, one);
    // The position among all codes in fixed point (positive, so truncation floors): the code in the
    // high bits, and `p ± NEAR` straddle an integer (a midpoint) where the fraction is within 2/FIXED
    // of it. Midpoints just above a decade's last entry are flagged too (not needed, and as rare).
    let fixed = _mm512_cvttps_epi32(_mm512_fmsub_ps(
        a,
        _mm512_permutexvar_ps(j, slope),
        _mm512_permutexvar_ps(j, start_offset),
    ));
    let code = _mm512_min_epi32(
        _mm512_srai_epi32::<FIXED_BITS>(fixed),
        _mm512_permutexvar_epi32(j, last_code),
    );
    let near = _mm512_testn_epi32_mask(
        _mm512_add_epi32(fixed, _mm512_set1_epi32(2)),
        _mm512_set1_epi32((1 << FIXED_BITS) - 4),
    );
    // By the sign bit, so -0.0 too (it is mirrored onto itself, and gets the sign fix).
    let negative = _mm512_cmplt_epi32_mask(_mm512_castps_si512(x), _mm512_setzero_si512());
    let fast = if SIGNED {
        // With the sign fix, a negative value whose magnitude rounds to 0 (code 127) gets 126, the
        // code that mirrors 128: this clamp is the whole fix for lanes that are not NaN.
        let low = if KEEP_SIGN { 128 } else { 0 };
        let mirrored = _mm512_max_epi32(
            _mm512_min_epi32(code, _mm512_set1_epi32(254)),
            _mm512_set1_epi32(low),
        );
        _mm512_mask_sub_epi32(code, negative, _mm512_set1_epi32(254), mirrored)
    } else {
        _mm512_mask_blend_epi32(negative, code, _mm512_setzero_si512())
    };
    // Above 1 or NaN (unordered): also the lanes the fast path cannot place.
    let slow = near | _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(a, _mm512_set1_ps(1.0));
    (fast, slow)
}

/// [`nearest`], then with `KEEP_SIGN` the full [`sign_fix`]: the rare lanes of [`nearest_fast`], out of
/// line so that the block loops do not keep (or reload) the midpoint table for them.
#[cold]
#[inline(never)]
#[target_feature(enable = "avx512f")]
fn exact<const KEEP_SIGN: bool>(t: &Tables, x: __m512, v: __m512) -> __m512i {
    let code = nearest(t, x);
    if KEEP_SIGN { sign_fix(code, v) } else { code }
}

/// The signed codebook's sign fix of `quantize_block` on `code`s of the values `v`: a code whose
/// entry has the other sign than its value moves one step towards the value's side.
#[inline]
#[target_feature(enable = "avx512f")]
fn sign_fix(code: __m512i, v: __m512) -> __m512i {
    // The signed codebook's entries below index 127 are negative, the others not.
    let negative_code = _mm512_cmplt_epi32_mask(code, _mm512_set1_epi32(127));
    let negative_value = _mm512_cmplt_epi32_mask(_mm512_castps_si512(v), _mm512_setzero_si512());
    let flip = negative_code ^ negative_value;
    let positive = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, _mm512_setzero_ps());
    let one = _mm512_set1_epi32(1);
    let code = _mm512_mask_add_epi32(code, flip & positive, code, one);
    _mm512_mask_sub_epi32(code, flip & !positive, code, one)
}

/// The entries of 64 codes scaled by `absmax`, as four vectors of 16 in element order: each of the
/// entries' four bytes comes from two 128-entry byte permutes (`vpermi2b`) and a blend on the code's
/// top bit, then the byte planes are interleaved into f32 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn dequantize64(t: &Tables, codes: &[u8], absmax: __m512) -> [__m512; 4] {
    assert!(codes.len() >= 64);
    // SAFETY: `codes` has 64 bytes, each plane 256, INTERLEAVE 64 (unaligned loads).
    let (c, order) = unsafe {
        (
            _mm512_loadu_si512(codes.as_ptr().cast()),
            _mm512_loadu_si512(INTERLEAVE.as_ptr().cast()),
        )
    };
    let c = _mm512_permutexvar_epi8(order, c);
    let high = _mm512_movepi8_mask(c);
    let plane = |k: usize| {
        let p = t.planes[k].as_ptr();
        // SAFETY: four 64-byte loads inside the 256-byte plane.
        let (l0, l1, h0, h1) = unsafe {
            (
                _mm512_loadu_si512(p.cast()),
                _mm512_loadu_si512(p.add(64).cast()),
                _mm512_loadu_si512(p.add(128).cast()),
                _mm512_loadu_si512(p.add(192).cast()),
            )
        };
        _mm512_mask_blend_epi8(
            high,
            _mm512_permutex2var_epi8(l0, c, l1),
            _mm512_permutex2var_epi8(h0, c, h1),
        )
    };
    let (b0, b1, b2, b3) = (plane(0), plane(1), plane(2), plane(3));
    let (lo01, hi01) = (_mm512_unpacklo_epi8(b0, b1), _mm512_unpackhi_epi8(b0, b1));
    let (lo23, hi23) = (_mm512_unpacklo_epi8(b2, b3), _mm512_unpackhi_epi8(b2, b3));
    [
        _mm512_unpacklo_epi16(lo01, lo23),
        _mm512_unpackhi_epi16(lo01, lo23),
        _mm512_unpacklo_epi16(hi01, hi23),
        _mm512_unpackhi_epi16(hi01, hi23),
    ]
    .map(|v| _mm512_mul_ps(_mm512_castsi512_ps(v), absmax))
}

/// `|x|` (clears the sign bit).
#[inline]
#[target_feature(enable = "avx512f")]
fn abs(x: __m512) -> __m512 {
    _mm512_castsi512_ps(_mm512_and_si512(
        _mm512_castps_si512(x),
        _mm512_set1_epi32(0x7FFF_FFFF),
    ))
}

/// Requantizes one block of `values` into `codes` with the block's `absmax`: the signed codebook with
/// the sign fix (`SIGNED`) or the unsigned one.
#[inline]
#[target_feature(enable = "avx512f")]
fn requantize<const SIGNED: bool>(
    values: &[f32; QUANT_BLOCK],
    absmax: f32,
    (book, t): (&Codebook, &Tables),
    codes: &mut [u8],
) {
    if absmax == 0.0 {
        codes.fill(book.zero_code());
        return;
    }
    let scale = _mm512_set1_ps(absmax);
    let mut slow = [0 as __mmask16; QUANT_BLOCK / LANES];
    for ((v, out), slow) in values
        .chunks_exact(LANES)
        .zip(codes.chunks_exact_mut(LANES))
        .zip(&mut slow)
    {
        // SAFETY: both chunks have 16 elements.
        let v = unsafe { _mm512_loadu_ps(v.as_ptr()) };
        let (code, lanes) = fast_codes::<SIGNED, SIGNED>(t, _mm512_div_ps(v, scale));
        *slow = lanes;
        // SAFETY: `out` has 16 bytes; the truncation to bytes wraps as the scalar path's u8 does.
        unsafe { _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().cast(), 0xFFFF, code) };
    }
    // Rare: about one vector in 60 on random data, none in most blocks of a smooth one.
    if slow.iter().all(|&m| m == 0) {
        return;
    }
    for ((v, out), &lanes) in values
        .chunks_exact(LANES)
        .zip(codes.chunks_exact_mut(LANES))
        .zip(&slow)
    {
        if lanes != 0 {
            // SAFETY: as above.
            let v = unsafe { _mm512_loadu_ps(v.as_ptr()) };
            let code = exact::<SIGNED>(t, _mm512_div_ps(v, scale), v);
            // SAFETY: as above; only the lanes that the fast search left are written.
            unsafe { _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().cast(), lanes, code) };
        }
    }
}

/// One full block of the 8-bit Adam step (see `cpu::adam8bit_step`).
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
pub(crate) fn adam_block(
    w: &mut [f32],
    g: &[f32],
    (mc, ma): (&mut [u8], &mut f32),
    (vc, va): (&mut [u8], &mut f32),
    k: &Adam8Consts,
) {
    assert!(
        w.len() == QUANT_BLOCK
            && g.len() == QUANT_BLOCK
            && mc.len() == QUANT_BLOCK
            && vc.len() == QUANT_BLOCK,
        "adam_block: a full block"
    );
    let (q1, q2) = (Codebook::signed(), Codebook::unsigned());
    let (t1, t2) = (Tables::signed(), Tables::unsigned());
    let mut m = [0.0f32; QUANT_BLOCK];
    let mut v = [0.0f32; QUANT_BLOCK];
    let (a1, a2) = (_mm512_set1_ps(*ma), _mm512_set1_ps(*va));
    let (b1, b2) = (_mm512_set1_ps(k.beta1), _mm512_set1_ps(k.beta2));
    let (c1, c2) = (_mm512_set1_ps(1.0 - k.beta1), _mm512_set1_ps(1.0 - k.beta2));
    let (step, eps) = (_mm512_set1_ps(k.step_size), _mm512_set1_ps(k.eps_hat));
    let (l2, decay) = (_mm512_set1_ps(k.l2), _mm512_set1_ps(k.decay));
    let (mut max1, mut max2) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let zero = _mm512_setzero_ps();
    for c in (0..QUANT_BLOCK).step_by(64) {
        let (dm, dv) = (
            dequantize64(t1, &mc[c..c + 64], a1),
            dequantize64(t2, &vc[c..c + 64], a2),
        );
        for q in 0..4 {
            let r = c + LANES * q..c + LANES * (q + 1);
            // SAFETY: every slice is a full block; `r` is inside it.
            let (wi, gi) = unsafe {
                (
                    _mm512_loadu_ps(w[r.clone()].as_ptr()),
                    _mm512_loadu_ps(g[r.clone()].as_ptr()),
                )
            };
            // `g - g` is 0 for finite g, NaN otherwise.
            let finite = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_sub_ps(gi, gi), zero);
            let gi = _mm512_add_ps(gi, _mm512_mul_ps(l2, wi));
            let mi = _mm512_add_ps(_mm512_mul_ps(dm[q], b1), _mm512_mul_ps(c1, gi));
            let vi = _mm512_add_ps(
                _mm512_mul_ps(dv[q], b2),
                _mm512_mul_ps(_mm512_mul_ps(c2, gi), gi),
            );
            let (mi, vi) = (
                _mm512_maskz_mov_ps(finite, mi),
                _mm512_maskz_mov_ps(finite, vi),
            );
            let d = _mm512_add_ps(_mm512_sqrt_ps(vi), eps);
            let nw = _mm512_mul_ps(
                _mm512_add_ps(wi, _mm512_mul_ps(step, _mm512_div_ps(mi, d))),
                decay,
            );
            let nw = _mm512_mask_mov_ps(wi, finite, nw);
            // max(x, acc): a NaN x keeps acc, as f32::max does.
            max1 = _mm512_max_ps(abs(mi), max1);
            max2 = _mm512_max_ps(abs(vi), max2);
            // SAFETY: as above; `m` and `v` are full blocks.
            unsafe {
                _mm512_storeu_ps(w[r.clone()].as_mut_ptr(), nw);
                _mm512_storeu_ps(m[r.clone()].as_mut_ptr(), mi);
                _mm512_storeu_ps(v[r].as_mut_ptr(), vi);
            }
        }
    }
    *ma = _mm512_reduce_max_ps(max1);
    *va = _mm512_reduce_max_ps(max2);
    requantize::<true>(&m, *ma, (q1, t1), mc);
    requantize::<false>(&v, *va, (q2, t2), vc);
}

/// One full block of the 8-bit momentum step (see `cpu::momentum8bit_step`): `(lr, wd, μ, 1-dampening)`.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
pub(crate) fn momentum_block(
    w: &mut [f32],
    g: &[f32],
    (bc, ba): (&mut [u8], &mut f32),
    (lr, wd, mu, damp): (f32, f32, f32, f32),
    first_step: bool,
    nesterov: bool,
) {
    assert!(
        w.len() == QUANT_BLOCK && g.len() == QUANT_BLOCK && bc.len() == QUANT_BLOCK,
        "momentum_block: a full block"
    );
    let (q, t) = (Codebook::signed(), Tables::signed());
    let mut b = [0.0f32; QUANT_BLOCK];
    let a = _mm512_set1_ps(*ba);
    let (lr, wd, mu, damp) = (
        _mm512_set1_ps(lr),
        _mm512_set1_ps(wd),
        _mm512_set1_ps(mu),
        _mm512_set1_ps(damp),
    );
    let zero = _mm512_setzero_ps();
    let mut max = zero;
    for c in (0..QUANT_BLOCK).step_by(64) {
        // The first step does not read the buffer.
        let db = if first_step {
            [zero; 4]
        } else {
            dequantize64(t, &bc[c..c + 64], a)
        };
        for (q, &db) in db.iter().enumerate() {
            let r = c + LANES * q..c + LANES * (q + 1);
            // SAFETY: full blocks.
            let (wi, gi) = unsafe {
                (
                    _mm512_loadu_ps(w[r.clone()].as_ptr()),
                    _mm512_loadu_ps(g[r.clone()].as_ptr()),
                )
            };
            let finite = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_sub_ps(gi, gi), zero);
            let gi = _mm512_add_ps(gi, _mm512_mul_ps(wd, wi));
            let bi = if first_step {
                gi
            } else {
                _mm512_add_ps(_mm512_mul_ps(mu, db), _mm512_mul_ps(damp, gi))
            };
            let bi = _mm512_maskz_mov_ps(finite, bi);
            let d = if nesterov {
                _mm512_add_ps(gi, _mm512_mul_ps(mu, bi))
            } else {
                bi
            };
            let nw = _mm512_mask_mov_ps(wi, finite, _mm512_sub_ps(wi, _mm512_mul_ps(lr, d)));
            max = _mm512_max_ps(abs(bi), max);
            // SAFETY: full blocks.
            unsafe {
                _mm512_storeu_ps(w[r.clone()].as_mut_ptr(), nw);
                _mm512_storeu_ps(b[r].as_mut_ptr(), bi);
            }
        }
    }
    *ba = _mm512_reduce_max_ps(max);
    requantize::<true>(&b, *ba, (q, t), bc);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What makes `fast_codes` exact without a midpoint lookup: the fixed-point position
    /// `P = trunc(|x|·slope - start_offset)` is monotonic in `|x|`, and lanes with `P` in
    /// `c·FIXED - 2 ..= c·FIXED + 1` are left to the exact search, so it suffices that at every inner
    /// midpoint of every decade, between codes `c - 1` and `c`, the last f32 that rounds down has
    /// `P <= c·FIXED + 1` and the first that rounds up `P >= c·FIXED - 2` (in the kernel's f32
    /// arithmetic: a fused multiply-subtract, then truncation); and that each range starts at or above
    /// its decade's first code and ends at or above its last.
    #[test]
    fn fast_search_margin_holds() {
        for (book, t) in [
            (Codebook::signed(), Tables::signed()),
            (Codebook::unsigned(), Tables::unsigned()),
        ] {
            let mut inner = 0;
            for j in 1..8 {
                let position = |a: f32| a.mul_add(t.slope[j], -t.start_offset[j]);
                let fixed = |a: f32| position(a) as i32;
                let unit = 1 << FIXED_BITS;
                assert_eq!(t.last_code[j], t.base[j] + t.last[j]);
                let start = f32::from_bits(t.top[j - 1].to_bits() + 1);
                assert!(
                    fixed(start) >= unit * t.base[j],
                    "range {j} starts below its decade"
                );
                assert!(
                    fixed(t.top[j]) >= unit * t.last_code[j],
                    "range {j} ends too low"
                );
                for r in 1..=t.last[j] {
                    let code = t.base[j] + r - 1;
                    let c = code + 1;
                    let down = tie_adjusted(book.midpoints()[code as usize], code);
                    let up = f32::from_bits(down.to_bits() + 1);
                    assert_eq!(i32::from(book.nearest(down)), code);
                    assert_eq!(i32::from(book.nearest(up)), c);
                    let (pd, pu) = (fixed(down), fixed(up));
                    assert!(
                        pd <= unit * c + 1 && pu >= unit * c - 2,
                        "decade {j}, midpoint {c}: positions {pd}, {pu}"
                    );
                    // Far inside the margin, so the rare path stays rare.
                    let error = (position(down) / FIXED - c as f32).abs();
                    assert!(error < 1.0 / 2048.0 / 8.0, "{error} at {c}");
                    inner += 1;
                }
            }
            // Every midpoint of the positive entries but the 7 below a decade's first entry and the
            // one below 1.0.
            let positive = if book.is_signed() { 128 } else { 255 };
            assert_eq!(inner, positive - 8);
        }
    }

    /// The byte-plane lookup gives every entry times the scale, in element order.
    #[test]
    fn byte_plane_dequantization() {
        if !available() {
            return;
        }
        for (book, t) in [
            (Codebook::signed(), Tables::signed()),
            (Codebook::unsigned(), Tables::unsigned()),
        ] {
            let codes: Vec<u8> = (0..256u32).map(|i| (i * 167 + 13) as u8).collect();
            for chunk in codes.chunks_exact(64) {
                let mut got = [0.0f32; 64];
                // SAFETY: `available()` checked the features; 64 codes in, 64 values out.
                unsafe {
                    let out = dequantize64(t, chunk, _mm512_set1_ps(0.375));
                    for (q, v) in out.iter().enumerate() {
                        _mm512_storeu_ps(got[16 * q..].as_mut_ptr(), *v);
                    }
                }
                for (&c, &g) in chunk.iter().zip(&got) {
                    assert_eq!(g.to_bits(), (book.value(c) * 0.375).to_bits(), "code {c}");
                }
            }
        }
    }

    /// The vector search equals the binary search on a sweep of the f32 line from -2 to 2 (every 97th
    /// bit pattern), every entry and midpoint with neighbours, zeros, infinities and NaN; with the sign
    /// fix folded in, it equals the binary search followed by `quantize_block`'s fix.
    #[test]
    fn vector_search_equals_the_binary_search() {
        if !available() {
            return; // nothing to compare on this CPU
        }
        for (book, t) in [
            (Codebook::signed(), Tables::signed()),
            (Codebook::unsigned(), Tables::unsigned()),
        ] {
            let mut xs: Vec<f32> = Vec::new();
            for sign in [0u32, 1 << 31] {
                xs.extend(
                    (0..0x4000_0000u32)
                        .step_by(97)
                        .map(|b| f32::from_bits(sign | b)),
                );
            }
            for (i, &v) in book.values().iter().enumerate() {
                let mut probes = vec![v, -v];
                if i < 255 {
                    let mid = (v + book.values()[i + 1]) * 0.5;
                    probes.extend([mid, -mid]);
                }
                for p in probes {
                    xs.extend(
                        (-3i32..=3).map(|d| f32::from_bits(p.to_bits().wrapping_add_signed(d))),
                    );
                }
            }
            xs.extend([
                0.0,
                -0.0,
                1.0,
                -1.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                5.0,
            ]);
            xs.resize(xs.len().div_ceil(16) * 16, 0.5);
            for chunk in xs.chunks_exact(16) {
                let (mut got, mut fast, mut fixed) = ([0i32; 16], [0i32; 16], [0i32; 16]);
                // SAFETY: `available()` checked AVX-512F; 16 lanes in and out.
                unsafe {
                    let x = _mm512_loadu_ps(chunk.as_ptr());
                    let (f, s) = if book.is_signed() {
                        (
                            nearest_fast::<true, false>(t, x, x),
                            nearest_fast::<true, true>(t, x, x),
                        )
                    } else {
                        let f = nearest_fast::<false, false>(t, x, x);
                        (f, f)
                    };
                    _mm512_storeu_si512(got.as_mut_ptr().cast(), nearest(t, x));
                    _mm512_storeu_si512(fast.as_mut_ptr().cast(), f);
                    _mm512_storeu_si512(fixed.as_mut_ptr().cast(), s);
                }
                for (((&x, &g), &f), &s) in chunk.iter().zip(&got).zip(&fast).zip(&fixed) {
                    let want = book.nearest(x);
                    assert_eq!(g, i32::from(want), "x = {x:e} ({:#x})", x.to_bits());
                    assert_eq!(f, i32::from(want), "fast, x = {x:e} ({:#x})", x.to_bits());
                    // `quantize_block`'s sign fix, on the value itself (an absmax of 1).
                    let want = if book.is_signed()
                        && book.value(want).is_sign_negative() != x.is_sign_negative()
                    {
                        if x > 0.0 {
                            want.wrapping_add(1)
                        } else {
                            want.wrapping_sub(1)
                        }
                    } else {
                        want
                    };
                    assert_eq!(s as u8, want, "sign fix, x = {x:e} ({:#x})", x.to_bits());
                }
            }
        }
    }
}
