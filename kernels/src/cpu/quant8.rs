//! Block-wise 8-bit quantization with bitsandbytes' dynamic (tree) codebooks: the storage of the 8-bit
//! optimizers' states.
//!
//! A buffer is cut into blocks of [`QUANT_BLOCK`] = 256 elements (the last one may be shorter). Each block
//! keeps one f32 scale, its largest magnitude (`absmax`), and one byte per element: the index of the
//! codebook entry nearest to `value / absmax`. Dequantizing gives `codebook[code] · absmax`.
//!
//! What matches bitsandbytes (`create_dynamic_map`, `quantize_2D` of `csrc/kernels.cu`):
//! - the codebooks, built by the same loop ([`Codebook::dynamic`]);
//! - the search: a 7-step binary search from index 127 followed by a comparison with the midpoint to the
//!   neighbouring entry, which is an exact nearest-entry search (ties go to the entry the search ended
//!   on, always an even index): [`Codebook::nearest`]. bitsandbytes' CPU backend uses a 65536-bin
//!   lookup table instead, which cannot resolve the smallest entries; the CUDA kernel, and this code,
//!   can.
//! - the scalar kernels call [`Codebook::nearest_fast`], which skips the seven dependent (and mispredicted)
//!   steps: a table built *with the binary search* gives, for each of 2^8 bins per octave of the f32
//!   line, the one or two codes the bin's values round to, and one midpoint comparison picks between
//!   them. It returns the binary search's code for every f32 (the tests compare the two), so the
//!   result is still the exact nearest entry, not an approximation like a lookup table of values.
//!   The AVX-512 kernels compute the same code without that table (a decade-wise estimate and one
//!   midpoint comparison), also tested against the binary search on a sweep of the f32 line.
//!
//! What differs: a block whose values are all zero gets the code of 0.0 (bitsandbytes divides by the zero
//! absmax and stores whatever the NaN search returns; both dequantize to zero).

use std::sync::OnceLock;

/// Elements per quantization block (bitsandbytes' block size for optimizer states since 0.44).
pub const QUANT_BLOCK: usize = 256;

/// 256 sorted f32 values in [-1, 1] (signed) or [0, 1] (unsigned) that bytes index.
#[derive(Clone, PartialEq)]
pub struct Codebook {
    values: [f32; 256],
    signed: bool,
    /// `(values[i] + values[i + 1]) * 0.5` in f32: where rounding switches from entry `i` to `i + 1`.
    midpoints: [f32; 255],
    /// For each [`bracket_bin`] of the f32 line, the lower of the (at most two) codes its values
    /// round to: [`Codebook::nearest_fast`] then needs one midpoint comparison.
    brackets: Vec<u8>,
}

impl std::fmt::Debug for Codebook {
    /// The entries (the search tables are derived from them).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codebook")
            .field("signed", &self.signed)
            .field("values", &self.values)
            .finish_non_exhaustive()
    }
}

/// Bins per binary octave of |x| (the top 8 bits of the mantissa).
const BIN_BITS: u32 = 8;
/// The smallest biased exponent with bins of its own: 2^-25, below every midpoint of both codebooks.
/// Smaller magnitudes (and zero) share one bin per sign.
const MIN_EXPONENT: u32 = 127 - 25;
/// Bins per sign: one for the tiny values, then 2^BIN_BITS per octave up to [1, 2).
const BINS_PER_SIGN: usize = 1 + (((127 - MIN_EXPONENT + 1) as usize) << BIN_BITS);

/// The bracket bin of a non-NaN `x`: its sign, then its octave (magnitudes of 2 and more, infinity
/// included, share the last bin) and the top mantissa bits.
#[inline]
fn bracket_bin(x: f32) -> usize {
    let bits = x.to_bits();
    let sign = (bits >> 31) as usize;
    let exponent = (bits >> 23) & 0xFF;
    let within = if exponent < MIN_EXPONENT {
        0
    } else if exponent > 127 {
        BINS_PER_SIGN - 1
    } else {
        1 + (((exponent - MIN_EXPONENT) << BIN_BITS) | ((bits >> (23 - BIN_BITS)) & 0xFF)) as usize
    };
    sign * BINS_PER_SIGN + within
}

/// The smallest and largest f32 (by bits) in a bin: its two ends on the number line.
fn bin_ends(sign: u32, within: usize) -> (f32, f32) {
    let s = sign << 31;
    let (lo, hi) = if within == 0 {
        (0, (MIN_EXPONENT << 23) - 1)
    } else if within == BINS_PER_SIGN - 1 {
        (0x3F80_0000 | (0xFF << (23 - BIN_BITS)), 0x7F80_0000) // [1.99.., inf]
    } else {
        let k = (within - 1) as u32;
        let base = ((MIN_EXPONENT + (k >> BIN_BITS)) << 23) | ((k & 0xFF) << (23 - BIN_BITS));
        (base, base | ((1 << (23 - BIN_BITS)) - 1))
    };
    (f32::from_bits(s | lo), f32::from_bits(s | hi))
}

impl Codebook {
    /// bitsandbytes' `create_dynamic_map(signed, max_exponent_bits=7, total_bits=8)`: for each decade
    /// `10^-6 … 10^0`, the midpoints of an f32 `linspace(0.1, 1, k)` scaled by the decade (`k = 2^i + 1`
    /// for decade `i`, doubled when unsigned, where the sign bit becomes a fraction bit), their
    /// negatives when signed, then 0 and 1.0; sorted.
    ///
    /// Signed, the most negative entry is −0.99296875 while +1.0 is present: the map is asymmetric.
    ///
    /// ```
    /// use amp_kernels::cpu::Codebook;
    /// let m = Codebook::dynamic(true);
    /// assert_eq!(m.values()[127], 0.0);
    /// assert_eq!(m.values()[255], 1.0);
    /// ```
    pub fn dynamic(signed: bool) -> Codebook {
        let mut data: Vec<f32> = Vec::with_capacity(256);
        for i in 0..7u32 {
            let items = if signed {
                (1 << i) + 1
            } else {
                (1 << (i + 1)) + 1
            };
            let bounds = linspace_f32(0.1, 1.0, items);
            // PyTorch multiplies a float32 tensor by a Python scalar in float32.
            let decade = 10f64.powi(i as i32 - 6) as f32;
            for pair in bounds.windows(2) {
                let mean = (pair[0] + pair[1]) / 2.0;
                data.push(decade * mean);
                if signed {
                    data.push(-decade * mean);
                }
            }
        }
        data.push(0.0);
        data.push(1.0);
        assert_eq!(data.len(), 256, "the dynamic map has 256 entries");
        data.sort_by(f32::total_cmp);
        let mut values = [0.0; 256];
        values.copy_from_slice(&data);
        let midpoints = std::array::from_fn(|i| (values[i] + values[i + 1]) * 0.5);
        let mut book = Codebook {
            values,
            signed,
            midpoints,
            brackets: Vec::new(),
        };
        book.brackets = (0..2 * BINS_PER_SIGN)
            .map(|bin| {
                let (a, b) = bin_ends((bin / BINS_PER_SIGN) as u32, bin % BINS_PER_SIGN);
                // The search is monotonic, so every value of the bin rounds between the ends' codes.
                let (ca, cb) = (book.nearest(a), book.nearest(b));
                let (lo, hi) = (ca.min(cb), ca.max(cb));
                assert!(
                    hi - lo <= 1,
                    "bin {bin} ({a}..{b}) spans codes {lo}..{hi}: the bins are too coarse"
                );
                lo
            })
            .collect();
        book
    }

    /// The signed dynamic codebook (first moments, momentum), built once.
    pub fn signed() -> &'static Codebook {
        static BOOK: OnceLock<Codebook> = OnceLock::new();
        BOOK.get_or_init(|| Codebook::dynamic(true))
    }

    /// The unsigned dynamic codebook (second moments), built once.
    pub fn unsigned() -> &'static Codebook {
        static BOOK: OnceLock<Codebook> = OnceLock::new();
        BOOK.get_or_init(|| Codebook::dynamic(false))
    }

    /// The entries, ascending.
    pub fn values(&self) -> &[f32; 256] {
        &self.values
    }

    /// `(values[i] + values[i + 1]) * 0.5` in f32: a value above midpoint `i` rounds to entry `i + 1`
    /// or beyond, one equal to it to the even one of `i` and `i + 1` (what `nearest_fast` does; the
    /// vector and device kernels search these).
    pub fn midpoints(&self) -> &[f32; 255] {
        &self.midpoints
    }

    /// Whether the codebook holds negative values.
    pub fn is_signed(&self) -> bool {
        self.signed
    }

    /// The code of 0.0 (127 signed, 0 unsigned).
    pub fn zero_code(&self) -> u8 {
        if self.signed { 127 } else { 0 }
    }

    /// The entry a code stands for.
    #[inline]
    pub fn value(&self, code: u8) -> f32 {
        self.values[code as usize]
    }

    /// The code of the entry nearest to `x` (a value normalized into the codebook's range): bitsandbytes'
    /// binary search (7 halvings from index 127, so it ends on an even index), then a comparison with
    /// the midpoint to the neighbour on `x`'s side. Ties go to the index the search ended on. NaN gives 0.
    #[inline]
    pub fn nearest(&self, x: f32) -> u8 {
        let q = &self.values;
        let mut pivot = 127usize;
        for step in [64, 32, 16, 8, 4, 2, 1] {
            pivot = if x > q[pivot] {
                pivot + step
            } else {
                pivot - step
            };
        }
        let here = q[pivot];
        let code = if x > here {
            // pivot <= 254, and the entry above it is where the search last turned down.
            if x > (q[pivot + 1] + here) * 0.5 {
                pivot + 1
            } else {
                pivot
            }
        } else if pivot > 0 && x < (q[pivot - 1] + here) * 0.5 {
            pivot - 1
        } else {
            pivot
        };
        code as u8
    }
}

impl Codebook {
    /// [`nearest`](Self::nearest) in a few operations: the code of `x`'s bin (sign, octave, top 8
    /// mantissa bits) from a table, then one comparison with the midpoint to the next entry (ties to
    /// the even code, where the binary search ends). The same result for every f32, by construction (the table is built
    /// with the binary search, and each bin holds at most one rounding boundary) and by test.
    #[inline]
    pub fn nearest_fast(&self, x: f32) -> u8 {
        if x.is_nan() {
            return 0;
        }
        let c = self.brackets[bracket_bin(x)];
        if c == 255 {
            return c;
        }
        let mid = self.midpoints[c as usize];
        c + u8::from(x > mid || (x == mid && c % 2 == 1))
    }
}

/// PyTorch's float32 `linspace(start, end, steps)` (its scalar kernel): the first half counts up from
/// `start`, the second half down from `end`, in f32.
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                start + step * i as f32
            } else {
                end - step * (steps - i - 1) as f32
            }
        })
        .collect()
}

/// A block-quantized buffer: one code per element and one f32 absmax per [`QUANT_BLOCK`] elements.
#[derive(Debug)]
pub struct Quantized<'a> {
    /// One byte per element.
    pub codes: &'a mut [u8],
    /// `ceil(codes.len() / 256)` block scales.
    pub absmax: &'a mut [f32],
}

/// Number of blocks a buffer of `len` elements has.
pub fn quant_blocks(len: usize) -> usize {
    len.div_ceil(QUANT_BLOCK)
}

/// Quantizes one block in place of its codes: returns the block's absmax (the largest magnitude; NaN
/// is not expected). `values` and `codes` have the same length (at most [`QUANT_BLOCK`]).
///
/// With `keep_sign` (first moments), a code whose entry has the other sign than its value moves one
/// step towards the value's side, as bitsandbytes' optimizer kernels do, so a moment never flips sign.
#[inline]
pub(crate) fn quantize_block(
    values: &[f32],
    book: &Codebook,
    keep_sign: bool,
    codes: &mut [u8],
) -> f32 {
    let absmax = values.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    if absmax == 0.0 {
        codes.fill(book.zero_code());
        return absmax;
    }
    for (c, &v) in codes.iter_mut().zip(values) {
        let mut code = book.nearest_fast(v / absmax);
        if keep_sign && book.value(code).is_sign_negative() != v.is_sign_negative() {
            // Wrapping as bitsandbytes' unsigned char does (only a NaN value could reach the ends).
            code = if v > 0.0 {
                code.wrapping_add(1)
            } else {
                code.wrapping_sub(1)
            };
        }
        *c = code;
    }
    absmax
}

/// Quantizes `values` block-wise into `out` (codes and absmax of the right lengths, checked), without
/// the sign fix.
///
/// ```
/// use amp_kernels::cpu::{Codebook, Quantized, dequantize_blockwise, quantize_blockwise};
/// let values = [0.5f32, -1.0, 0.25, 0.0];
/// let (mut codes, mut absmax) = ([0u8; 4], [0.0f32; 1]);
/// let book = Codebook::signed();
/// quantize_blockwise(&values, book, Quantized { codes: &mut codes, absmax: &mut absmax });
/// assert_eq!(absmax[0], 1.0);
/// let mut back = [0.0f32; 4];
/// dequantize_blockwise(&codes, &absmax, book, &mut back);
/// assert_eq!(back[3], 0.0);
/// assert!((back[0] - 0.5).abs() < 0.01);
/// ```
#[track_caller]
pub fn quantize_blockwise(values: &[f32], book: &Codebook, out: Quantized<'_>) {
    check_lengths("quantize_blockwise", values.len(), out.codes, out.absmax);
    for ((v, c), a) in values
        .chunks(QUANT_BLOCK)
        .zip(out.codes.chunks_mut(QUANT_BLOCK))
        .zip(out.absmax.iter_mut())
    {
        *a = quantize_block(v, book, false, c);
    }
}

/// `out[i] = book[codes[i]] · absmax[i / 256]` (lengths checked).
#[track_caller]
pub fn dequantize_blockwise(codes: &[u8], absmax: &[f32], book: &Codebook, out: &mut [f32]) {
    if codes.len() != out.len() || absmax.len() != quant_blocks(codes.len()) {
        panic!(
            "dequantize_blockwise: {} codes, {} scales and {} outputs (expected {} scales and {} outputs)",
            codes.len(),
            absmax.len(),
            out.len(),
            quant_blocks(codes.len()),
            codes.len()
        );
    }
    for ((c, &a), o) in codes
        .chunks(QUANT_BLOCK)
        .zip(absmax)
        .zip(out.chunks_mut(QUANT_BLOCK))
    {
        for (o, &c) in o.iter_mut().zip(c) {
            *o = book.value(c) * a;
        }
    }
}

/// Panics (at the caller's line) unless `codes` has `len` entries and `absmax` one per block.
#[track_caller]
pub(crate) fn check_lengths(what: &str, len: usize, codes: &[u8], absmax: &[f32]) {
    if codes.len() != len || absmax.len() != quant_blocks(len) {
        panic!(
            "{what}: a buffer of {len} elements needs {len} codes and {} block scales, got {} and {}",
            quant_blocks(len),
            codes.len(),
            absmax.len()
        );
    }
}
