//! Shared helpers for the amp-kernels integration tests: a deterministic PRNG, per-type tolerances,
//! conversions between element slices and f64, and comparison helpers that name the first mismatch.
//!
//! Every test module includes this with `mod common;`; not every module uses every helper.
#![allow(dead_code)]

use amp_kernels::{Elem, Float, bf16, f16};

/// Odd sizes that are not multiples of any tile or unroll width in the kernels.
pub const ODD_SIZES: [usize; 6] = [1, 3, 7, 17, 33, 65];

/// A small deterministic PRNG: splitmix64 for bits, Box-Muller for normals.
pub struct Rng {
    state: u64,
    spare_normal: Option<f64>,
}

impl Rng {
    /// A generator seeded with `seed` (the same seed always yields the same stream).
    pub fn new(seed: u64) -> Self {
        Rng {
            state: seed,
            spare_normal: None,
        }
    }

    /// The next 64 random bits (splitmix64).
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform value in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// A uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A standard normal value (Box-Muller; the second value of each pair is kept for the next call).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        let u1 = 1.0 - self.uniform(); // (0, 1]: keeps ln finite
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        self.spare_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `n` normal values with standard deviation `scale`.
    pub fn normals(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| scale * self.normal()).collect()
    }
}

/// Per-type facts the tests need: a name for messages and the tolerances that fit the type.
pub trait TestFloat: Float {
    /// The type's name, for assertion messages.
    const NAME: &'static str;
    /// Relative tolerance of one result rounded to this type (a couple of units in the last place).
    const TOL: f64;
    /// Relative tolerance of arithmetic in this type's accumulation type (`f32` for f32/bf16/f16).
    const ACC_TOL: f64;
    /// The smallest positive subnormal: below the normal range rounding errors are absolute, up to half
    /// of it.
    const MIN_SUBNORMAL: f64;

    /// Tolerance for a result `want` rounded once to this type: relative, with an absolute floor for
    /// subnormal results.
    fn out_tol(want: f64) -> f64 {
        Self::TOL * want.abs() + Self::MIN_SUBNORMAL
    }
}

impl TestFloat for f64 {
    const NAME: &'static str = "f64";
    const TOL: f64 = 1e-12;
    const ACC_TOL: f64 = 1e-12;
    const MIN_SUBNORMAL: f64 = f64::from_bits(1);
}

impl TestFloat for f32 {
    const NAME: &'static str = "f32";
    const TOL: f64 = 1e-5;
    const ACC_TOL: f64 = 1e-5;
    const MIN_SUBNORMAL: f64 = f32::from_bits(1) as f64;
}

impl TestFloat for bf16 {
    const NAME: &'static str = "bf16";
    const TOL: f64 = 1e-2;
    const ACC_TOL: f64 = 1e-5;
    const MIN_SUBNORMAL: f64 = f32::from_bits(1 << 16) as f64; // bf16 bits 0x0001 widened: 2^-133
}

impl TestFloat for f16 {
    const NAME: &'static str = "f16";
    const TOL: f64 = 1e-3;
    const ACC_TOL: f64 = 1e-5;
    const MIN_SUBNORMAL: f64 = 1.0 / (1u64 << 24) as f64;
}

/// Rounds each f64 to `E`.
pub fn to_elems<E: Elem>(v: &[f64]) -> Vec<E> {
    v.iter().map(|&x| E::from_f64(x)).collect()
}

/// Widens each element to f64 (exact for every float type).
pub fn to_f64s<E: Elem>(v: &[E]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

/// `n` normal values of standard deviation `scale` rounded to `E`, plus the exact f64 values of the
/// rounded elements (what an f64 reference must start from).
pub fn random_elems<E: Elem>(rng: &mut Rng, n: usize, scale: f64) -> (Vec<E>, Vec<f64>) {
    let e: Vec<E> = to_elems(&rng.normals(n, scale));
    let f = to_f64s(&e);
    (e, f)
}

/// Like [`random_elems`] but uniform in `[lo, hi)`.
pub fn uniform_elems<E: Elem>(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> (Vec<E>, Vec<f64>) {
    let e: Vec<E> = (0..n).map(|_| E::from_f64(rng.range(lo, hi))).collect();
    let f = to_f64s(&e);
    (e, f)
}

/// Whether `got` matches `want` within `tol`: equal (infinities included), both NaN, or closer than `tol`.
pub fn close(got: f64, want: f64, tol: f64) -> bool {
    got == want || (got.is_nan() && want.is_nan()) || (got - want).abs() <= tol
}

/// Asserts `got[i]` is within `tol(i)` of `want[i]` for every `i` (see [`close`]), naming the first
/// element that is not.
#[track_caller]
pub fn assert_close(what: &str, got: &[f64], want: &[f64], tol: impl Fn(usize) -> f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: result has {} elements, expected {}",
        got.len(),
        want.len()
    );
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let t = tol(i);
        assert!(
            close(g, w, t),
            "{what}: element {i} is {g:e}, expected {w:e} (|diff| = {:e} > tol {t:e})",
            (g - w).abs()
        );
    }
}

/// Asserts `got` equals `want` exactly, treating two NaNs as equal, naming the first difference.
#[track_caller]
pub fn assert_exact(what: &str, got: &[f64], want: &[f64]) {
    assert_close(what, got, want, |_| 0.0);
}

/// The standard tolerance for a result of type `O` computed in `I`'s accumulation type:
/// `O::TOL · |want| + I::ACC_TOL · scale`, where `scale` bounds the magnitude of the intermediate terms
/// (`Σ|terms|` for sums, the inputs' magnitude for functions).
pub fn tol_for<I: TestFloat, O: TestFloat>(want: f64, scale: f64) -> f64 {
    O::out_tol(want) + I::ACC_TOL * scale
}

/// Sizes of a row-major shape's strides.
pub fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

/// The multi-index of flat position `flat` in a row-major `shape`.
pub fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        index[d] = flat % shape[d];
        flat /= shape[d];
    }
    index
}

/// Runs `f::<E>()` for each float type, so one `#[test]` covers f32, f64, bf16 and f16.
#[macro_export]
macro_rules! for_each_float {
    ($f:ident) => {{
        $f::<f32>();
        $f::<f64>();
        $f::<amp_kernels::bf16>();
        $f::<amp_kernels::f16>();
    }};
}
