//! AVX-512 bodies of the 8-bit optimizer steps, one full block of 256 elements at a time (16 vectors):
//! dequantize, update in f32, block absmax, requantize with an exact nearest-code search equal to
//! bitsandbytes' binary search (a decade-wise estimate and one midpoint comparison, see `nearest`), and
//! the sign fix. Entries and midpoints are looked up with vector permutes over tables held in registers:
//! gathers are slow on CPUs with the gather-data-sampling mitigation. (Measured on the development
//! machine, one thread, whole step: the binary search in registers ran at 3.8 GB/s, the bracket table of
//! [`Codebook::nearest_fast`] gathered at 5.8, this at 6.0.)
//!
//! Every operation is the scalar kernel's, in the same order, with IEEE division and square root and no
//! fused multiply-adds, so the codes, scales and weights are bit-identical to the scalar path (which
//! handles partial blocks and CPUs without AVX-512, and which the tests compare against).

use super::super::quant8::{Codebook, QUANT_BLOCK};
use std::arch::x86_64::*;

/// Lanes per vector.
const LANES: usize = 16;

/// Adam's per-step constants, as the scalar kernel derives them.
#[derive(Clone, Copy)]
pub(crate) struct Adam8Consts {
    pub(crate) beta1: f32,
    pub(crate) beta2: f32,
    pub(crate) step_size: f32,
    pub(crate) eps_hat: f32,
    pub(crate) l2: f32,
    pub(crate) decay: f32,
}

/// Whether this CPU (under the [`isa`](super::super::isa::isa) limit) runs the AVX-512 bodies.
pub(crate) fn available() -> bool {
    super::super::isa::isa() >= super::super::isa::Isa::Avx512
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
    signed: bool,
}

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
            signed,
        };
        for d in 0..7 {
            let j = d as usize + 1;
            t.decade_start[d as usize] = book.values()[first(d) as usize];
            t.inv_scale[j] = 10f64.powi(6 - d) as f32;
            t.per_unit[j] = (f64::from(count(d)) / 0.9) as f32;
            t.base[j] = first(d);
            t.last[j] = count(d) - 1;
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

/// `|x|` (clears the sign bit).
#[inline]
#[target_feature(enable = "avx512f")]
fn abs(x: __m512) -> __m512 {
    _mm512_castsi512_ps(_mm512_and_si512(
        _mm512_castps_si512(x),
        _mm512_set1_epi32(0x7FFF_FFFF),
    ))
}

/// Requantizes one block of `values` into `codes` with the block's `absmax`. With `keep_sign`, the
/// signed codebook's sign fix.
#[inline]
#[target_feature(enable = "avx512f")]
fn requantize(
    values: &[f32; QUANT_BLOCK],
    absmax: f32,
    (book, t): (&Codebook, &Tables),
    keep_sign: bool,
    codes: &mut [u8],
) {
    if absmax == 0.0 {
        codes.fill(book.zero_code());
        return;
    }
    let scale = _mm512_set1_ps(absmax);
    for (v, out) in values
        .chunks_exact(LANES)
        .zip(codes.chunks_exact_mut(LANES))
    {
        // SAFETY: both chunks have 16 elements.
        let v = unsafe { _mm512_loadu_ps(v.as_ptr()) };
        let x = _mm512_div_ps(v, scale);
        let mut code = nearest(t, x);
        if keep_sign {
            // The signed codebook's entries below index 127 are negative, the others not.
            let negative_code = _mm512_cmplt_epi32_mask(code, _mm512_set1_epi32(127));
            let negative_value =
                _mm512_cmplt_epi32_mask(_mm512_castps_si512(v), _mm512_setzero_si512());
            let flip = negative_code ^ negative_value;
            let positive = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, _mm512_setzero_ps());
            let one = _mm512_set1_epi32(1);
            code = _mm512_mask_add_epi32(code, flip & positive, code, one);
            code = _mm512_mask_sub_epi32(code, flip & !positive, code, one);
        }
        // SAFETY: `out` has 16 bytes; the truncation to bytes wraps as the scalar path's u8 does.
        unsafe { _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().cast(), 0xFFFF, code) };
    }
}

/// The entries of 16 codes scaled by `absmax`.
#[inline]
#[target_feature(enable = "avx512f")]
fn dequantize(t: &Tables, codes: &[u8], absmax: __m512) -> __m512 {
    // SAFETY: `codes` has 16 bytes.
    let c = unsafe { _mm512_cvtepu8_epi32(_mm_loadu_si128(codes.as_ptr().cast())) };
    _mm512_mul_ps(lookup::<16>(&t.values, c), absmax)
}

/// One full block of the 8-bit Adam step (see `cpu::adam8bit_step`).
#[target_feature(enable = "avx512f")]
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
    for i in (0..QUANT_BLOCK).step_by(LANES) {
        let r = i..i + LANES;
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
        let mi = _mm512_add_ps(
            _mm512_mul_ps(dequantize(t1, &mc[r.clone()], a1), b1),
            _mm512_mul_ps(c1, gi),
        );
        let vi = _mm512_add_ps(
            _mm512_mul_ps(dequantize(t2, &vc[r.clone()], a2), b2),
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
    *ma = _mm512_reduce_max_ps(max1);
    *va = _mm512_reduce_max_ps(max2);
    requantize(&m, *ma, (q1, t1), true, mc);
    requantize(&v, *va, (q2, t2), false, vc);
}

/// One full block of the 8-bit momentum step (see `cpu::momentum8bit_step`): `(lr, wd, μ, 1-dampening)`.
#[target_feature(enable = "avx512f")]
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
    for i in (0..QUANT_BLOCK).step_by(LANES) {
        let r = i..i + LANES;
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
            _mm512_add_ps(
                _mm512_mul_ps(mu, dequantize(t, &bc[r.clone()], a)),
                _mm512_mul_ps(damp, gi),
            )
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
    *ba = _mm512_reduce_max_ps(max);
    requantize(&b, *ba, (q, t), true, bc);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector search equals the binary search on a sweep of the f32 line from -2 to 2 (every 97th
    /// bit pattern), every entry and midpoint with neighbours, zeros, infinities and NaN.
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
                let mut got = [0i32; 16];
                // SAFETY: `available()` checked AVX-512F; 16 lanes in and out.
                unsafe {
                    let code = nearest(t, _mm512_loadu_ps(chunk.as_ptr()));
                    _mm512_storeu_si512(got.as_mut_ptr().cast(), code);
                }
                for (&x, &g) in chunk.iter().zip(&got) {
                    assert_eq!(
                        g,
                        i32::from(book.nearest(x)),
                        "x = {x:e} ({:#x})",
                        x.to_bits()
                    );
                }
            }
        }
    }
}
